//! Read-only queries, run on the reader pool.

use super::rows::{self, API_KEY_COLUMNS, CHANNEL_ACCOUNT_COLUMNS, EVENT_COLUMNS, MESSAGE_COLUMNS};
use crate::{ApiKey, ChannelAccount, FeedEvent, MessageFilter, MessageStats, Result, Workspace};
use parley_domain::{Channel, ChannelAccountId, Message, MessageEvent, MessageId, MessageState, WorkspaceId};
use rusqlite::{Connection, OptionalExtension, params, types::Value};

pub fn get_workspace(c: &Connection, id: WorkspaceId) -> Result<Option<Workspace>> {
    let mut st = c.prepare_cached("SELECT id, name, created_at FROM workspaces WHERE id = ?1")?;
    let mut rows = st.query([id.to_string()])?;
    rows.next()?.map(rows::workspace).transpose()
}

pub fn list_workspaces(c: &Connection) -> Result<Vec<Workspace>> {
    let mut st = c.prepare_cached("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id")?;
    let mut rows = st.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(rows::workspace(row)?);
    }
    Ok(out)
}

pub fn find_api_key_by_hash(c: &Connection, hash: &str) -> Result<Option<ApiKey>> {
    let mut st = c.prepare_cached(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = ?1"))?;
    let mut rows = st.query([hash])?;
    rows.next()?.map(rows::api_key).transpose()
}

pub fn list_api_keys(c: &Connection, workspace: WorkspaceId) -> Result<Vec<ApiKey>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE workspace_id = ?1 ORDER BY created_at DESC, id DESC"
    ))?;
    let mut rows = st.query([workspace.to_string()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(rows::api_key(row)?);
    }
    Ok(out)
}

pub fn get_channel_account(
    c: &Connection,
    workspace: WorkspaceId,
    id: ChannelAccountId,
) -> Result<Option<ChannelAccount>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {CHANNEL_ACCOUNT_COLUMNS} FROM channel_accounts WHERE id = ?1 AND workspace_id = ?2"
    ))?;
    let mut rows = st.query([id.to_string(), workspace.to_string()])?;
    rows.next()?.map(rows::channel_account).transpose()
}

pub fn list_channel_accounts(c: &Connection, workspace: Option<WorkspaceId>) -> Result<Vec<ChannelAccount>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {CHANNEL_ACCOUNT_COLUMNS} FROM channel_accounts WHERE ?1 IS NULL OR workspace_id = ?1 \
         ORDER BY created_at, id"
    ))?;
    let mut rows = st.query([workspace.map(|w| w.to_string())])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(rows::channel_account(row)?);
    }
    Ok(out)
}

pub fn get_message(
    c: &Connection,
    workspace: WorkspaceId,
    id: MessageId,
    with_events: bool,
) -> Result<Option<Message>> {
    let mut st =
        c.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1 AND workspace_id = ?2"))?;
    let mut rows = st.query([id.to_string(), workspace.to_string()])?;
    let Some(mut message) = rows.next()?.map(rows::message).transpose()? else {
        return Ok(None);
    };
    if with_events {
        message.events = Some(events_of(c, id)?);
    }
    Ok(Some(message))
}

pub fn events_of(c: &Connection, id: MessageId) -> Result<Vec<MessageEvent>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM message_events WHERE message_id = ?1 ORDER BY sequence"
    ))?;
    let mut rows = st.query([id.to_string()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(rows::event(row)?);
    }
    Ok(out)
}

pub fn list_messages(c: &Connection, workspace: WorkspaceId, f: &MessageFilter, limit: u32) -> Result<Vec<Message>> {
    let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE workspace_id = ?");
    let mut args: Vec<Value> = vec![Value::Text(workspace.to_string())];
    if let Some(s) = f.status {
        sql.push_str(" AND status = ?");
        args.push(Value::Text(s.as_str().into()));
    }
    if let Some(ch) = f.channel {
        sql.push_str(" AND channel = ?");
        args.push(Value::Text(ch.as_str().into()));
    }
    if let Some(to) = &f.to {
        sql.push_str(" AND to_address = ?");
        args.push(Value::Text(to.clone()));
    }
    if let Some(from) = f.created_from {
        sql.push_str(" AND created_at >= ?");
        args.push(Value::Integer(from.0));
    }
    if let Some(to) = f.created_to {
        sql.push_str(" AND created_at < ?");
        args.push(Value::Integer(to.0));
    }
    if let Some(before) = f.before {
        sql.push_str(" AND id < ?");
        args.push(Value::Text(before.to_string()));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Value::Integer(i64::from(limit)));
    let mut st = c.prepare_cached(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(rows::message(row)?);
    }
    Ok(out)
}

pub fn events_after(c: &Connection, workspace: WorkspaceId, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
    let cols = EVENT_COLUMNS.split(", ").map(|col| format!("e.{col}")).collect::<Vec<_>>().join(", ");
    let mut st = c.prepare_cached(&format!(
        "SELECT {cols}, e.position, m.channel FROM message_events e JOIN messages m ON m.id = e.message_id \
         WHERE e.workspace_id = ?1 AND e.position > ?2 ORDER BY e.position LIMIT ?3"
    ))?;
    let mut rows = st.query(params![workspace.to_string(), after, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let channel: String = row.get(14)?;
        out.push(FeedEvent {
            event: rows::event(row)?,
            position: row.get(13)?,
            channel: Channel::parse(&channel).ok_or_else(|| rows::corrupt("channel", &channel))?,
        });
    }
    Ok(out)
}

pub fn message_stats(c: &Connection, workspace: WorkspaceId) -> Result<MessageStats> {
    let mut st = c.prepare_cached(
        "SELECT status, COUNT(*) FROM messages WHERE workspace_id = ?1 GROUP BY status ORDER BY status",
    )?;
    let mut rows = st.query([workspace.to_string()])?;
    let mut by_state = Vec::new();
    while let Some(row) = rows.next()? {
        let status: String = row.get(0)?;
        let state = MessageState::parse(&status).ok_or_else(|| rows::corrupt("status", &status))?;
        by_state.push((state, row.get(1)?));
    }
    let jobs_waiting = c
        .prepare_cached("SELECT COUNT(*) FROM dispatch_jobs WHERE workspace_id = ?1")?
        .query_row([workspace.to_string()], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    Ok(MessageStats { by_state, jobs_waiting })
}

pub fn delivery_latencies_ms(c: &Connection, workspace: WorkspaceId) -> Result<Vec<i64>> {
    let mut st = c.prepare_cached(
        "SELECT MIN(e.occurred_at) - m.created_at FROM message_events e JOIN messages m ON m.id = e.message_id \
         WHERE e.workspace_id = ?1 AND e.kind = 'delivered' GROUP BY e.message_id, m.created_at",
    )?;
    let mut rows = st.query([workspace.to_string()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(row.get(0)?);
    }
    Ok(out)
}

pub fn awaiting_receipts(c: &Connection, after: Option<MessageId>, limit: u32) -> Result<Vec<Message>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = 'sent' AND direction = 'outbound' AND id > ?1 \
         ORDER BY id LIMIT ?2"
    ))?;
    let mut rows = st.query(params![after.map_or_else(String::new, |id| id.to_string()), limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(rows::message(row)?);
    }
    Ok(out)
}
