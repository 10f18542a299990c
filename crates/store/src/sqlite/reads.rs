//! Read-only queries, run on the reader pool.

use super::rows::{self, API_KEY_COLUMNS, CHANNEL_ACCOUNT_COLUMNS, EVENT_COLUMNS, MESSAGE_COLUMNS};
use crate::model::WORKSPACE_EVENT_KIND;
use crate::{
    ApiKey, ChannelAccount, FeedEvent, FeedItem, MessageFilter, MessageStats, MetricsSnapshot, Result, Workspace,
    WorkspaceEvent,
};
use parley_domain::{
    Channel, ChannelAccountId, EventId, Message, MessageEvent, MessageId, MessageState, Millis, WorkspaceId,
};
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
        "SELECT {CHANNEL_ACCOUNT_COLUMNS} FROM channel_accounts WHERE id = ?1 AND workspace_id = ?2 \
         AND deleted_at IS NULL"
    ))?;
    let mut rows = st.query([id.to_string(), workspace.to_string()])?;
    rows.next()?.map(rows::channel_account).transpose()
}

pub fn list_channel_accounts(c: &Connection, workspace: Option<WorkspaceId>) -> Result<Vec<ChannelAccount>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {CHANNEL_ACCOUNT_COLUMNS} FROM channel_accounts WHERE (?1 IS NULL OR workspace_id = ?1) \
         AND deleted_at IS NULL ORDER BY created_at, id"
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

/// What a feed query selects after `e.`[`EVENT_COLUMNS`] and the position: the message's channel
/// (a message event) or the workspace event's body (a row of kind
/// [`crate::model::WORKSPACE_EVENT_KIND`]); read by [`feed_event`].
pub(super) const FEED_EXTRA_COLUMNS: &str = "m.channel, w.workspace_id, w.event_type, w.data, w.created_at";

/// The joins behind [`FEED_EXTRA_COLUMNS`]. Both are outer joins, so SQLite keeps `e` as the
/// outer loop (the `message_events_workspace` range); a row that finds neither is left out by
/// [`FEED_FOUND`].
pub(super) const FEED_JOINS: &str = "LEFT JOIN messages m ON m.id = e.message_id \
     LEFT JOIN workspace_events w ON e.kind = 'workspace_event' AND w.id = e.id";

/// A message event whose message is missing (never recorded so) is left out, as is a workspace
/// event row without its body.
pub(super) const FEED_FOUND: &str = "(m.id IS NOT NULL OR w.id IS NOT NULL)";

/// `e.`-prefixed [`EVENT_COLUMNS`].
pub(super) fn feed_event_columns() -> String {
    EVENT_COLUMNS.split(", ").map(|col| format!("e.{col}")).collect::<Vec<_>>().join(", ")
}

/// A row selected with [`feed_event_columns`], `e.position` and [`FEED_EXTRA_COLUMNS`].
pub(super) fn feed_event(row: &rusqlite::Row<'_>) -> Result<FeedEvent> {
    let n = rows::EVENT_COLUMN_COUNT;
    let position: i64 = row.get(n)?;
    let kind: String = row.get(3)?;
    if kind == WORKSPACE_EVENT_KIND {
        let id: String = row.get(0)?;
        let workspace: String = row.get(n + 2)?;
        let data: String = row.get(n + 4)?;
        return Ok(FeedEvent {
            position,
            item: FeedItem::Workspace(WorkspaceEvent {
                id: EventId::parse(&id).map_err(|_| rows::corrupt("event id", &id))?,
                workspace_id: WorkspaceId::parse(&workspace).map_err(|_| rows::corrupt("workspace id", &workspace))?,
                event_type: row.get(n + 3)?,
                data: serde_json::from_str(&data).map_err(|_| rows::corrupt("workspace event data", &data))?,
                created_at: Millis(row.get(n + 5)?),
            }),
        });
    }
    let channel: String = row.get(n + 1)?;
    Ok(FeedEvent {
        position,
        item: FeedItem::Message {
            channel: Channel::parse(&channel).ok_or_else(|| rows::corrupt("channel", &channel))?,
            event: rows::event(row)?,
        },
    })
}

pub fn events_after(c: &Connection, workspace: WorkspaceId, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
    let cols = feed_event_columns();
    let mut st = c.prepare_cached(&format!(
        "SELECT {cols}, e.position, {FEED_EXTRA_COLUMNS} FROM message_events e {FEED_JOINS} \
         WHERE e.workspace_id = ?1 AND e.position > ?2 AND {FEED_FOUND} ORDER BY e.position LIMIT ?3"
    ))?;
    let mut rows = st.query(params![workspace.to_string(), after, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(feed_event(row)?);
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

/// Messages by (channel, state) across workspaces, and the claimable due jobs. The GROUP BY reads
/// every row of `messages` (no index holds channel and status): a scan per scrape, fine at the
/// sizes one SQLite file serves today; counters kept by the writers would make it constant-time.
/// The jobs are a range of the `dispatch_jobs_due` index.
pub fn metrics_snapshot(c: &Connection, now: Millis) -> Result<MetricsSnapshot> {
    let mut st = c.prepare_cached("SELECT channel, status, COUNT(*) FROM messages GROUP BY channel, status")?;
    let mut rows = st.query([])?;
    let mut messages = Vec::new();
    while let Some(row) = rows.next()? {
        let (channel, status): (String, String) = (row.get(0)?, row.get(1)?);
        messages.push((
            Channel::parse(&channel).ok_or_else(|| rows::corrupt("channel", &channel))?,
            MessageState::parse(&status).ok_or_else(|| rows::corrupt("status", &status))?,
            row.get(2)?,
        ));
    }
    messages.sort_by_key(|(channel, state, _)| (channel.as_str(), state.as_str()));
    let (due_jobs, oldest_due_at): (i64, Option<i64>) = c
        .prepare_cached(
            "SELECT COUNT(*), MIN(due_at) FROM dispatch_jobs \
             WHERE due_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)",
        )?
        .query_row([now.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(MetricsSnapshot { messages, due_jobs, oldest_due_at: oldest_due_at.map(Millis) })
}

pub fn delivery_latencies_ms(c: &Connection, workspace: WorkspaceId) -> Result<Vec<i64>> {
    let mut st = c.prepare_cached(
        "SELECT MIN(e.occurred_at) - m.created_at FROM message_events e JOIN messages m ON m.id = e.message_id \
         WHERE e.workspace_id = ?1 AND e.kind = 'delivered' AND json_extract(e.details, '$.part') IS NULL GROUP BY e.message_id, m.created_at",
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

pub fn event_position(c: &Connection, workspace: WorkspaceId, id: parley_domain::EventId) -> Result<Option<i64>> {
    Ok(c.prepare_cached("SELECT position FROM message_events WHERE id = ?1 AND workspace_id = ?2")?
        .query_row([id.to_string(), workspace.to_string()], |r| r.get(0))
        .optional()?)
}

/// The ids travel as one JSON array parameter (`json_each`), so that any number of them is one
/// prepared statement and no statement runs into SQLite's limit on parameters.
pub fn messages_with_events(c: &Connection, workspace: WorkspaceId, ids: &[MessageId]) -> Result<Vec<Message>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = |ids: &mut dyn Iterator<Item = MessageId>| {
        serde_json::Value::Array(ids.map(|id| serde_json::Value::String(id.to_string())).collect()).to_string()
    };
    let mut st = c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN (SELECT value FROM json_each(?1)) AND workspace_id = ?2"
    ))?;
    let mut found = st.query(params![list(&mut ids.iter().copied()), workspace.to_string()])?;
    let mut messages = std::collections::HashMap::new();
    while let Some(row) = found.next()? {
        let m = rows::message(row)?;
        messages.insert(m.id, m);
    }
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let mut st = c.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM message_events WHERE message_id IN (SELECT value FROM json_each(?1)) \
         ORDER BY message_id, sequence"
    ))?;
    let mut found = st.query([list(&mut messages.keys().copied())])?;
    while let Some(row) = found.next()? {
        let event = rows::event(row)?;
        if let Some(m) = messages.get_mut(&event.message_id) {
            m.events.get_or_insert_with(Vec::new).push(event);
        }
    }
    Ok(messages
        .into_values()
        .map(|mut m| {
            m.events.get_or_insert_with(Vec::new);
            m
        })
        .collect())
}

/// See [`crate::Store::outbound_analytics`]. The window is a range of `messages_outbound_created`;
/// the first `delivered` time is a probe of `message_events`' (message_id, sequence) key and the
/// reply check one of `messages_inbound_from`.
pub fn outbound_analytics(
    c: &Connection,
    workspace: WorkspaceId,
    from: Millis,
    to: Millis,
) -> Result<Vec<crate::AnalyticsRow>> {
    let mut st = c.prepare_cached(
        "SELECT m.id, m.channel, m.channel_account_id, \
         CASE WHEN json_extract(m.content, '$.type') = 'template' THEN json_extract(m.content, '$.name') END, \
         m.status, m.error_code, m.created_at, \
         (SELECT MIN(e.occurred_at) FROM message_events e WHERE e.message_id = m.id AND e.kind = 'delivered' AND json_extract(e.details, '$.part') IS NULL), \
         EXISTS (SELECT 1 FROM messages i WHERE i.direction = 'inbound' \
                 AND i.channel_account_id = m.channel_account_id AND i.from_address = m.to_address \
                 AND i.created_at >= m.created_at AND i.created_at < m.created_at + ?4 \
                 AND i.workspace_id = m.workspace_id) \
         FROM messages m \
         WHERE m.workspace_id = ?1 AND m.direction = 'outbound' AND m.created_at >= ?2 AND m.created_at < ?3 \
         ORDER BY m.created_at, m.id",
    )?;
    let mut rows = st.query(params![workspace.to_string(), from.0, to.0, crate::REPLY_WINDOW_MS])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let (id, channel, account, status): (String, String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(4)?);
        out.push(crate::AnalyticsRow {
            id: MessageId::parse(&id).map_err(|_| rows::corrupt("message id", &id))?,
            channel: Channel::parse(&channel).ok_or_else(|| rows::corrupt("channel", &channel))?,
            channel_account_id: ChannelAccountId::parse(&account)
                .map_err(|_| rows::corrupt("channel account id", &account))?,
            template: row.get(3)?,
            status: MessageState::parse(&status).ok_or_else(|| rows::corrupt("status", &status))?,
            error_code: row.get(5)?,
            created_at: Millis(row.get(6)?),
            first_delivered_at: row.get::<_, Option<i64>>(7)?.map(Millis),
            replied: row.get(8)?,
        });
    }
    Ok(out)
}
