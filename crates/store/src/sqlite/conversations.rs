//! [`crate::ConversationStore`] on SQLite, and how a message joins its contact's conversation in
//! the transaction that stores it ([`join`]).

use super::SqliteStore;
use super::rows::{self, MESSAGE_COLUMNS, write_error};
use crate::conversations::{conversation_event, idle_at};
use crate::{AssigneeFilter, ConversationChange, ConversationFilter, ConversationStore, Result};
use async_trait::async_trait;
use parley_domain::{
    ActivityKind, Assignee, AssigneeKind, Channel, ChannelAccountId, CloseReason, ContactId, Conversation,
    ConversationActivity, ConversationId, ConversationStatus, Direction, Message, Millis, WorkspaceId,
};
use rusqlite::{Connection, Row, params};
use std::sync::atomic::Ordering;

const COLUMNS: &str = "id, workspace_id, contact_id, status, assignee_kind, assignee_id, last_channel, \
     last_inbound_channel, last_inbound_channel_account_id, last_inbound_at, last_message_at, message_count, \
     opened_at, closed_at, close_reason, created_at, updated_at";

fn parse<T, E>(what: &str, value: String, f: impl FnOnce(&str) -> Result<T, E>) -> Result<T> {
    f(&value).map_err(|_| rows::corrupt(what, &value))
}

fn parse_opt<T>(what: &str, value: String, f: impl FnOnce(&str) -> Option<T>) -> Result<T> {
    f(&value).ok_or_else(|| rows::corrupt(what, &value))
}

fn assignee(kind: Option<String>, id: Option<String>) -> Result<Option<Assignee>> {
    match (kind, id) {
        (Some(kind), Some(id)) => {
            Ok(Some(Assignee { kind: parse_opt("assignee kind", kind, AssigneeKind::parse)?, id }))
        }
        _ => Ok(None),
    }
}

/// A row selected with [`COLUMNS`].
fn conversation(row: &Row<'_>) -> Result<Conversation> {
    Ok(Conversation {
        id: parse("conversation id", row.get(0)?, ConversationId::parse)?,
        workspace_id: parse("workspace id", row.get(1)?, WorkspaceId::parse)?,
        contact_id: parse("contact id", row.get(2)?, ContactId::parse)?,
        status: parse_opt("conversation status", row.get(3)?, ConversationStatus::parse)?,
        assignee: assignee(row.get(4)?, row.get(5)?)?,
        last_channel: parse_opt("channel", row.get(6)?, Channel::parse)?,
        last_inbound_channel: match row.get::<_, Option<String>>(7)? {
            Some(c) => Some(parse_opt("channel", c, Channel::parse)?),
            None => None,
        },
        last_inbound_channel_account_id: match row.get::<_, Option<String>>(8)? {
            Some(id) => Some(parse("channel account id", id, ChannelAccountId::parse)?),
            None => None,
        },
        last_inbound_at: row.get::<_, Option<i64>>(9)?.map(Millis),
        last_message_at: Millis(row.get(10)?),
        message_count: row.get(11)?,
        opened_at: Millis(row.get(12)?),
        closed_at: row.get::<_, Option<i64>>(13)?.map(Millis),
        close_reason: match row.get::<_, Option<String>>(14)? {
            Some(r) => Some(parse_opt("close reason", r, CloseReason::parse)?),
            None => None,
        },
        created_at: Millis(row.get(15)?),
        updated_at: Millis(row.get(16)?),
    })
}

fn get(c: &Connection, workspace: WorkspaceId, id: ConversationId) -> Result<Option<Conversation>> {
    let mut st =
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM conversations WHERE id = ?1 AND workspace_id = ?2"))?;
    let mut rows = st.query(params![id.to_string(), workspace.to_string()])?;
    rows.next()?.map(conversation).transpose()
}

fn open_of(c: &Connection, workspace: WorkspaceId, contact: ContactId) -> Result<Option<Conversation>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM conversations WHERE workspace_id = ?1 AND contact_id = ?2 AND status = 'open'"
    ))?;
    let mut rows = st.query(params![workspace.to_string(), contact.to_string()])?;
    rows.next()?.map(conversation).transpose()
}

fn insert_activity(c: &Connection, conversation: &Conversation, activity: &ConversationActivity) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO conversation_activities (id, conversation_id, workspace_id, kind, assignee_kind, assignee_id, \
         note, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        parley_domain::EventId::new().to_string(),
        conversation.id.to_string(),
        conversation.workspace_id.to_string(),
        activity.kind.as_str(),
        activity.assignee.as_ref().map(|a| a.kind.as_str()),
        activity.assignee.as_ref().map(|a| a.id.as_str()),
        activity.note,
        activity.reason.map(CloseReason::as_str),
        activity.at.0
    ])?;
    Ok(())
}

/// Record what happened: the activity, and the workspace event that tells webhooks and streams.
fn record(
    c: &Connection,
    conversation: &Conversation,
    verb: &str,
    activity: ConversationActivity,
    note: Option<&str>,
) -> Result<()> {
    insert_activity(c, conversation, &activity)?;
    let mut event = conversation_event(verb, conversation, activity.at)?;
    if let (Some(note), Some(data)) = (note, event.data.as_object_mut()) {
        data.insert("note".into(), serde_json::Value::String(note.to_string()));
    }
    super::webhooks::insert_workspace_event(c, &event)
}

fn activity(kind: ActivityKind, at: Millis) -> ConversationActivity {
    ConversationActivity { kind, at, assignee: None, note: None, reason: None }
}

fn close(c: &Connection, mut conversation: Conversation, reason: CloseReason, at: Millis) -> Result<Conversation> {
    c.prepare_cached(
        "UPDATE conversations SET status = 'closed', closed_at = ?2, close_reason = ?3, updated_at = ?2 WHERE id = ?1",
    )?
    .execute(params![conversation.id.to_string(), at.0, reason.as_str()])?;
    conversation.status = ConversationStatus::Closed;
    conversation.closed_at = Some(at);
    conversation.close_reason = Some(reason);
    conversation.updated_at = at;
    record(
        c,
        &conversation,
        "closed",
        ConversationActivity { reason: Some(reason), ..activity(ActivityKind::Closed, at) },
        None,
    )?;
    Ok(conversation)
}

/// The contact's open conversation, opened now if it has none or its open one is idle (closed
/// first, as of when it became idle).
pub(super) fn ensure_open(
    c: &Connection,
    workspace: WorkspaceId,
    contact: ContactId,
    channel: Channel,
    idle_ms: i64,
    now: Millis,
) -> Result<Conversation> {
    if let Some(open) = open_of(c, workspace, contact)? {
        let idle = idle_at(open.last_message_at, idle_ms);
        if now < idle {
            return Ok(open);
        }
        close(c, open, CloseReason::Idle, idle)?;
    }
    let conversation = Conversation {
        id: ConversationId::new(),
        workspace_id: workspace,
        contact_id: contact,
        status: ConversationStatus::Open,
        assignee: None,
        last_channel: channel,
        last_inbound_channel: None,
        last_inbound_channel_account_id: None,
        last_inbound_at: None,
        last_message_at: now,
        message_count: 0,
        opened_at: now,
        closed_at: None,
        close_reason: None,
        created_at: now,
        updated_at: now,
    };
    c.prepare_cached(&format!(
        "INSERT INTO conversations ({COLUMNS}) VALUES (?1, ?2, ?3, 'open', NULL, NULL, ?4, NULL, NULL, NULL, ?5, 0, \
         ?5, NULL, NULL, ?5, ?5)"
    ))?
    .execute(params![conversation.id.to_string(), workspace.to_string(), contact.to_string(), channel.as_str(), now.0])
    .map_err(write_error)?;
    record(c, &conversation, "opened", activity(ActivityKind::Opened, now), None)?;
    Ok(conversation)
}

/// Count a message about to be stored in its contact's conversation: an outbound message in the
/// one it names (the engine opened it beforehand, see
/// [`crate::ConversationStore::ensure_open_conversation`]; one that names none, or was refused
/// before sending, joins none), an inbound one in the contact's open conversation, opened now if
/// needed.
pub(super) fn join(c: &Connection, m: &mut Message, idle_ms: i64) -> Result<()> {
    let Some(contact) = m.contact_id else { return Ok(()) };
    let id = match (m.direction, m.conversation_id) {
        (Direction::Outbound, Some(_)) if m.status.is_final() => return Ok(()),
        (Direction::Outbound, None) => return Ok(()),
        (_, Some(id)) => id,
        (Direction::Inbound, None) => ensure_open(c, m.workspace_id, contact, m.channel, idle_ms, m.created_at)?.id,
    };
    m.conversation_id = Some(id);
    let inbound = m.direction == Direction::Inbound;
    c.prepare_cached(
        "UPDATE conversations SET message_count = message_count + 1, \
         last_message_at = MAX(last_message_at, ?2), last_channel = ?3, updated_at = MAX(updated_at, ?2), \
         last_inbound_channel = CASE WHEN ?4 THEN ?3 ELSE last_inbound_channel END, \
         last_inbound_channel_account_id = CASE WHEN ?4 THEN ?5 ELSE last_inbound_channel_account_id END, \
         last_inbound_at = CASE WHEN ?4 THEN MAX(COALESCE(last_inbound_at, 0), ?2) ELSE last_inbound_at END \
         WHERE id = ?1",
    )?
    .execute(params![
        id.to_string(),
        m.created_at.0,
        m.channel.as_str(),
        inbound,
        m.channel_account_id.to_string()
    ])?;
    Ok(())
}

/// After `from` was merged into `into`: `from`'s conversations become `into`'s; if both had an
/// open one, `from`'s closes (reason `merged`).
pub(super) fn on_contacts_merged(
    c: &Connection,
    workspace: WorkspaceId,
    from: ContactId,
    into: ContactId,
    now: Millis,
) -> Result<()> {
    if let (Some(theirs), Some(_)) = (open_of(c, workspace, from)?, open_of(c, workspace, into)?) {
        close(c, theirs, CloseReason::Merged, now)?;
    }
    c.prepare_cached(
        "UPDATE conversations SET contact_id = ?3, updated_at = ?4 WHERE workspace_id = ?1 AND contact_id = ?2",
    )?
    .execute(params![workspace.to_string(), from.to_string(), into.to_string(), now.0])?;
    Ok(())
}

fn assign(
    c: &Connection,
    workspace: WorkspaceId,
    id: ConversationId,
    assignee: Option<Assignee>,
    note: Option<String>,
    now: Millis,
) -> Result<ConversationChange> {
    let Some(mut conversation) = get(c, workspace, id)? else { return Ok(ConversationChange::NotFound) };
    if conversation.status == ConversationStatus::Closed {
        return Ok(ConversationChange::Closed(Box::new(conversation)));
    }
    if note.is_none() && conversation.assignee == assignee {
        return Ok(ConversationChange::Unchanged(Box::new(conversation)));
    }
    c.prepare_cached("UPDATE conversations SET assignee_kind = ?2, assignee_id = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![
        id.to_string(),
        assignee.as_ref().map(|a| a.kind.as_str()),
        assignee.as_ref().map(|a| a.id.as_str()),
        now.0
    ])?;
    conversation.assignee = assignee.clone();
    conversation.updated_at = now;
    let kind = if note.is_some() { ActivityKind::HandedOff } else { ActivityKind::Assigned };
    let entry = ConversationActivity { assignee, note: note.clone(), ..activity(kind, now) };
    record(c, &conversation, "assigned", entry, note.as_deref())?;
    Ok(ConversationChange::Changed(Box::new(conversation)))
}

fn close_by_request(
    c: &Connection,
    workspace: WorkspaceId,
    id: ConversationId,
    reason: CloseReason,
    now: Millis,
) -> Result<ConversationChange> {
    match get(c, workspace, id)? {
        None => Ok(ConversationChange::NotFound),
        Some(conversation) if conversation.status == ConversationStatus::Closed => {
            Ok(ConversationChange::Unchanged(Box::new(conversation)))
        }
        Some(conversation) => Ok(ConversationChange::Changed(Box::new(close(c, conversation, reason, now)?))),
    }
}

fn close_idle(c: &Connection, idle_ms: i64, now: Millis, limit: u32) -> Result<u64> {
    let idle: Vec<Conversation> = {
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM conversations WHERE status = 'open' AND last_message_at <= ?1 \
             ORDER BY last_message_at LIMIT ?2"
        ))?;
        let mut rows = st.query(params![now.0 - idle_ms, limit])?;
        let mut found = Vec::new();
        while let Some(row) = rows.next()? {
            found.push(conversation(row)?);
        }
        found
    };
    let closed = idle.len() as u64;
    for conversation in idle {
        let at = idle_at(conversation.last_message_at, idle_ms);
        close(c, conversation, CloseReason::Idle, at)?;
    }
    Ok(closed)
}

fn list(c: &Connection, workspace: WorkspaceId, filter: &ConversationFilter, limit: u32) -> Result<Vec<Conversation>> {
    let mut sql = format!("SELECT {COLUMNS} FROM conversations WHERE workspace_id = ?");
    let mut args: Vec<rusqlite::types::Value> = vec![workspace.to_string().into()];
    if let Some(status) = filter.status {
        sql.push_str(" AND status = ?");
        args.push(status.as_str().to_string().into());
    }
    if let Some(contact) = filter.contact_id {
        sql.push_str(" AND contact_id = ?");
        args.push(contact.to_string().into());
    }
    match &filter.assignee {
        None => {}
        Some(AssigneeFilter::Unassigned) => sql.push_str(" AND assignee_kind IS NULL"),
        Some(AssigneeFilter::Kind(kind)) => {
            sql.push_str(" AND assignee_kind = ?");
            args.push(kind.as_str().to_string().into());
        }
        Some(AssigneeFilter::Exactly(a)) => {
            sql.push_str(" AND assignee_kind = ? AND assignee_id = ?");
            args.push(a.kind.as_str().to_string().into());
            args.push(a.id.clone().into());
        }
    }
    if let Some(channel) = filter.channel {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id AND m.channel = ?)",
        );
        args.push(channel.as_str().to_string().into());
    }
    if let Some(before) = filter.before {
        sql.push_str(" AND id < ?");
        args.push(before.to_string().into());
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(i64::from(limit).into());
    let mut st = c.prepare_cached(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(args))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(conversation(row)?);
    }
    Ok(found)
}

fn messages(c: &Connection, workspace: WorkspaceId, id: ConversationId, limit: u32) -> Result<Vec<Message>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND workspace_id = ?2 \
         ORDER BY created_at DESC, id DESC LIMIT ?3"
    ))?;
    let mut rows = st.query(params![id.to_string(), workspace.to_string(), limit])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(rows::message(row)?);
    }
    found.reverse();
    Ok(found)
}

fn activities(c: &Connection, workspace: WorkspaceId, id: ConversationId) -> Result<Vec<ConversationActivity>> {
    let mut st = c.prepare_cached(
        "SELECT kind, at, assignee_kind, assignee_id, note, reason FROM conversation_activities \
         WHERE conversation_id = ?1 AND workspace_id = ?2 ORDER BY at, id",
    )?;
    let mut rows = st.query(params![id.to_string(), workspace.to_string()])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(ConversationActivity {
            kind: parse_opt("activity kind", row.get(0)?, ActivityKind::parse)?,
            at: Millis(row.get(1)?),
            assignee: assignee(row.get(2)?, row.get(3)?)?,
            note: row.get(4)?,
            reason: match row.get::<_, Option<String>>(5)? {
                Some(r) => Some(parse_opt("close reason", r, CloseReason::parse)?),
                None => None,
            },
        });
    }
    Ok(found)
}

#[async_trait]
impl ConversationStore for SqliteStore {
    fn set_conversation_idle_ms(&self, idle_ms: i64) {
        self.conversation_idle_ms.store(idle_ms, Ordering::Relaxed);
    }

    async fn ensure_open_conversation(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        channel: Channel,
        now: Millis,
    ) -> Result<Conversation> {
        let idle_ms = self.conversation_idle_ms.load(Ordering::Relaxed);
        // Most sends find the conversation open: a read spares the single writer a turn.
        if let Some(open) = self.read(move |c| open_of(c, workspace, contact)).await?
            && now < idle_at(open.last_message_at, idle_ms)
        {
            return Ok(open);
        }
        self.write(move |c| ensure_open(c, workspace, contact, channel, idle_ms, now)).await
    }

    async fn get_conversation(&self, workspace: WorkspaceId, id: ConversationId) -> Result<Option<Conversation>> {
        self.read(move |c| get(c, workspace, id)).await
    }

    async fn list_conversations(
        &self,
        workspace: WorkspaceId,
        filter: &ConversationFilter,
        limit: u32,
    ) -> Result<Vec<Conversation>> {
        let filter = filter.clone();
        self.read(move |c| list(c, workspace, &filter, limit)).await
    }

    async fn conversation_messages(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        limit: u32,
    ) -> Result<Vec<Message>> {
        self.read(move |c| messages(c, workspace, id, limit)).await
    }

    async fn conversation_activities(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
    ) -> Result<Vec<ConversationActivity>> {
        self.read(move |c| activities(c, workspace, id)).await
    }

    async fn close_conversation(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        reason: CloseReason,
        now: Millis,
    ) -> Result<ConversationChange> {
        self.write(move |c| close_by_request(c, workspace, id, reason, now)).await
    }

    async fn assign_conversation(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        assignee: Option<Assignee>,
        note: Option<String>,
        now: Millis,
    ) -> Result<ConversationChange> {
        self.write(move |c| assign(c, workspace, id, assignee.clone(), note.clone(), now)).await
    }

    async fn close_idle_conversations(&self, now: Millis, limit: u32) -> Result<u64> {
        let idle_ms = self.conversation_idle_ms.load(Ordering::Relaxed);
        self.write(move |c| close_idle(c, idle_ms, now, limit)).await
    }
}
