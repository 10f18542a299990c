//! [`crate::ConversationStore`] on PostgreSQL, and how messages join their contact's
//! conversation in the transaction that stores them.
//!
//! Lock order: conversation rows first (by id where there are several), the feed last. So the
//! workspace events a change records are collected and inserted at the end of its transaction,
//! after every conversation row it touches.

use super::PgStore;
use super::rows::{self, message_columns};
use crate::conversations::{conversation_event, idle_at};
use crate::{
    AssigneeFilter, ConversationChange, ConversationFilter, ConversationStore, Result, StoreError, WorkspaceEvent,
};
use async_trait::async_trait;
use parley_domain::{
    ActivityKind, Assignee, AssigneeKind, Channel, ChannelAccountId, CloseReason, ContactId, Conversation,
    ConversationActivity, ConversationId, ConversationStatus, Direction, Message, Millis, WorkspaceId,
};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{PgPool, Row};
use std::sync::atomic::Ordering;

macro_rules! columns {
    () => {
        "id, workspace_id, contact_id, status, assignee_kind, assignee_id, last_channel, last_inbound_channel, \
         last_inbound_channel_account_id, last_inbound_at, last_message_at, message_count, opened_at, closed_at, \
         close_reason, created_at, updated_at"
    };
}

fn parsed<T, E: std::fmt::Display>(row: &PgRow, column: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<T> {
    let s: String = row.try_get(column)?;
    parse(&s).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn known<T>(row: &PgRow, column: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T> {
    let s: String = row.try_get(column)?;
    parse(&s).ok_or_else(|| rows::corrupt(column, &s))
}

fn optional<T>(row: &PgRow, column: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>> {
    match row.try_get::<Option<String>, _>(column)? {
        Some(s) => parse(&s).map(Some).ok_or_else(|| rows::corrupt(column, &s)),
        None => Ok(None),
    }
}

fn assignee(row: &PgRow) -> Result<Option<Assignee>> {
    let kind = optional(row, "assignee_kind", AssigneeKind::parse)?;
    let id: Option<String> = row.try_get("assignee_id")?;
    Ok(kind.zip(id).map(|(kind, id)| Assignee { kind, id }))
}

fn conversation(row: &PgRow) -> Result<Conversation> {
    Ok(Conversation {
        id: parsed(row, "id", ConversationId::parse)?,
        workspace_id: parsed(row, "workspace_id", WorkspaceId::parse)?,
        contact_id: parsed(row, "contact_id", ContactId::parse)?,
        status: known(row, "status", ConversationStatus::parse)?,
        assignee: assignee(row)?,
        last_channel: known(row, "last_channel", Channel::parse)?,
        last_inbound_channel: optional(row, "last_inbound_channel", Channel::parse)?,
        last_inbound_channel_account_id: optional(row, "last_inbound_channel_account_id", |s| {
            ChannelAccountId::parse(s).ok()
        })?,
        last_inbound_at: row.try_get::<Option<i64>, _>("last_inbound_at")?.map(Millis),
        last_message_at: Millis(row.try_get("last_message_at")?),
        message_count: row.try_get("message_count")?,
        opened_at: Millis(row.try_get("opened_at")?),
        closed_at: row.try_get::<Option<i64>, _>("closed_at")?.map(Millis),
        close_reason: optional(row, "close_reason", CloseReason::parse)?,
        created_at: Millis(row.try_get("created_at")?),
        updated_at: Millis(row.try_get("updated_at")?),
    })
}

async fn get(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    id: ConversationId,
    lock: bool,
) -> Result<Option<Conversation>> {
    let sql = if lock {
        concat!("SELECT ", columns!(), " FROM conversations WHERE id = $1 AND workspace_id = $2 FOR UPDATE")
    } else {
        concat!("SELECT ", columns!(), " FROM conversations WHERE id = $1 AND workspace_id = $2")
    };
    let row = sqlx::query(sql).bind(id.to_string()).bind(workspace.to_string()).fetch_optional(conn).await?;
    row.as_ref().map(conversation).transpose()
}

async fn open_of(conn: &mut PgConnection, workspace: WorkspaceId, contact: ContactId) -> Result<Option<Conversation>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM conversations WHERE workspace_id = $1 AND contact_id = $2 AND status = 'open' FOR UPDATE"
    ))
    .bind(workspace.to_string())
    .bind(contact.to_string())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(conversation).transpose()
}

/// Changes of one transaction: activities go in at once, workspace events at the end (feed last).
#[derive(Default)]
struct Changes {
    events: Vec<WorkspaceEvent>,
}

impl Changes {
    async fn record(
        &mut self,
        conn: &mut PgConnection,
        conversation: &Conversation,
        verb: &str,
        activity: ConversationActivity,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO conversation_activities (id, conversation_id, workspace_id, kind, assignee_kind, assignee_id, \
             note, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(parley_domain::EventId::new().to_string())
        .bind(conversation.id.to_string())
        .bind(conversation.workspace_id.to_string())
        .bind(activity.kind.as_str())
        .bind(activity.assignee.as_ref().map(|a| a.kind.as_str()))
        .bind(activity.assignee.as_ref().map(|a| a.id.clone()))
        .bind(activity.note.clone())
        .bind(activity.reason.map(CloseReason::as_str))
        .bind(activity.at.0)
        .execute(conn)
        .await?;
        let mut event = conversation_event(verb, conversation, activity.at)?;
        if let (Some(note), Some(data)) = (&activity.note, event.data.as_object_mut()) {
            data.insert("note".into(), serde_json::Value::String(note.clone()));
        }
        self.events.push(event);
        Ok(())
    }

    async fn finish(self, conn: &mut PgConnection) -> Result<()> {
        insert_events(conn, &self.events).await
    }
}

fn activity(kind: ActivityKind, at: Millis) -> ConversationActivity {
    ConversationActivity { kind, at, assignee: None, note: None, reason: None }
}

async fn close(
    conn: &mut PgConnection,
    changes: &mut Changes,
    mut conversation: Conversation,
    reason: CloseReason,
    at: Millis,
) -> Result<Conversation> {
    sqlx::query(
        "UPDATE conversations SET status = 'closed', closed_at = $2, close_reason = $3, updated_at = $2 WHERE id = $1",
    )
    .bind(conversation.id.to_string())
    .bind(at.0)
    .bind(reason.as_str())
    .execute(&mut *conn)
    .await?;
    conversation.status = ConversationStatus::Closed;
    conversation.closed_at = Some(at);
    conversation.close_reason = Some(reason);
    conversation.updated_at = at;
    let entry = ConversationActivity { reason: Some(reason), ..activity(ActivityKind::Closed, at) };
    changes.record(conn, &conversation, "closed", entry).await?;
    Ok(conversation)
}

/// See [`ConversationStore::ensure_open_conversation`]. Two callers racing for a contact without
/// an open conversation both insert; the unique index lets one win, the other takes its row.
async fn ensure_open(
    conn: &mut PgConnection,
    changes: &mut Changes,
    workspace: WorkspaceId,
    contact: ContactId,
    channel: Channel,
    idle_ms: i64,
    now: Millis,
) -> Result<Conversation> {
    if let Some(open) = open_of(conn, workspace, contact).await? {
        let idle = idle_at(open.last_message_at, idle_ms);
        if now < idle {
            return Ok(open);
        }
        close(conn, changes, open, CloseReason::Idle, idle).await?;
    }
    let id = ConversationId::new();
    let inserted = sqlx::query(concat!(
        "INSERT INTO conversations (",
        columns!(),
        ") VALUES ($1, $2, $3, 'open', NULL, NULL, $4, NULL, NULL, NULL, $5, 0, $5, NULL, NULL, $5, $5) \
         ON CONFLICT (workspace_id, contact_id) WHERE status = 'open' DO NOTHING"
    ))
    .bind(id.to_string())
    .bind(workspace.to_string())
    .bind(contact.to_string())
    .bind(channel.as_str())
    .bind(now.0)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let conversation = open_of(conn, workspace, contact)
        .await?
        .ok_or_else(|| StoreError::Conflict("the contact's open conversation closed while opening one".into()))?;
    if inserted {
        changes.record(conn, &conversation, "opened", activity(ActivityKind::Opened, now)).await?;
    }
    Ok(conversation)
}

/// Put inbound messages about to be stored into their contacts' conversations (opened where
/// needed) and count them there. Returns the workspace events to insert with the messages'.
pub(super) async fn join_inbound(
    conn: &mut PgConnection,
    messages: &mut [Message],
    idle_ms: i64,
) -> Result<Vec<WorkspaceEvent>> {
    let mut changes = Changes::default();
    // Contacts in id order, so that two transactions lock their conversations in the same order.
    let mut order: Vec<usize> = (0..messages.len()).filter(|i| messages[*i].contact_id.is_some()).collect();
    order.sort_by_key(|i| messages[*i].contact_id.map(|c| c.to_string()));
    for i in order {
        let m = &messages[i];
        let Some(contact) = m.contact_id else { continue };
        let conversation =
            ensure_open(conn, &mut changes, m.workspace_id, contact, m.channel, idle_ms, m.created_at).await?;
        let m = &mut messages[i];
        m.conversation_id = Some(conversation.id);
        sqlx::query(
            "UPDATE conversations SET message_count = message_count + 1, \
             last_message_at = GREATEST(last_message_at, $2), last_channel = $3, updated_at = GREATEST(updated_at, $2), \
             last_inbound_channel = $3, last_inbound_channel_account_id = $4, \
             last_inbound_at = GREATEST(COALESCE(last_inbound_at, 0), $2) WHERE id = $1",
        )
        .bind(conversation.id.to_string())
        .bind(m.created_at.0)
        .bind(m.channel.as_str())
        .bind(m.channel_account_id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(changes.events)
}

/// Count outbound messages about to be stored in the conversations they name (the engine opened
/// them beforehand), locking those conversations in id order.
pub(super) async fn count_outbound(conn: &mut PgConnection, messages: &[&Message]) -> Result<()> {
    let joined: Vec<&&Message> = messages
        .iter()
        .filter(|m| m.direction == Direction::Outbound && m.conversation_id.is_some() && !m.status.is_final())
        .collect();
    if joined.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = joined.iter().filter_map(|m| m.conversation_id.map(|id| id.to_string())).collect();
    let ats: Vec<i64> = joined.iter().map(|m| m.created_at.0).collect();
    let channels: Vec<&str> = joined.iter().map(|m| m.channel.as_str()).collect();
    sqlx::query("SELECT id FROM conversations WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE conversations c SET message_count = c.message_count + t.n, \
         last_message_at = GREATEST(c.last_message_at, t.at), last_channel = t.channel, \
         updated_at = GREATEST(c.updated_at, t.at) \
         FROM (SELECT id, COUNT(*) AS n, MAX(at) AS at, (ARRAY_AGG(channel ORDER BY at DESC))[1] AS channel \
               FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS u(id, at, channel) GROUP BY id) t \
         WHERE c.id = t.id",
    )
    .bind(ids)
    .bind(ats)
    .bind(channels)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// After `from` was merged into `into`: `from`'s conversations become `into`'s; if both had an
/// open one, `from`'s closes (reason `merged`). Returns the workspace events to insert.
pub(super) async fn on_contacts_merged(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    from: ContactId,
    into: ContactId,
    now: Millis,
) -> Result<Vec<WorkspaceEvent>> {
    let mut changes = Changes::default();
    let (first, second) = if from.to_string() < into.to_string() { (from, into) } else { (into, from) };
    let a = open_of(conn, workspace, first).await?;
    let b = open_of(conn, workspace, second).await?;
    let (theirs, ours) = if first == from { (a, b) } else { (b, a) };
    if let (Some(theirs), Some(_)) = (theirs, ours) {
        close(conn, &mut changes, theirs, CloseReason::Merged, now).await?;
    }
    sqlx::query(
        "UPDATE conversations SET contact_id = $3, updated_at = $4 WHERE workspace_id = $1 AND contact_id = $2",
    )
    .bind(workspace.to_string())
    .bind(from.to_string())
    .bind(into.to_string())
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(changes.events)
}

/// Insert workspace events collected by [`join_inbound`] or [`on_contacts_merged`].
pub(super) async fn insert_events(conn: &mut PgConnection, events: &[WorkspaceEvent]) -> Result<()> {
    for event in events {
        super::webhooks::insert_workspace_event(&mut *conn, event).await?;
    }
    Ok(())
}

async fn list(
    pool: &PgPool,
    workspace: WorkspaceId,
    filter: &ConversationFilter,
    limit: u32,
) -> Result<Vec<Conversation>> {
    let mut query =
        sqlx::QueryBuilder::new(concat!("SELECT ", columns!(), " FROM conversations WHERE workspace_id = "));
    query.push_bind(workspace.to_string());
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(contact) = filter.contact_id {
        query.push(" AND contact_id = ").push_bind(contact.to_string());
    }
    match &filter.assignee {
        None => {}
        Some(AssigneeFilter::Unassigned) => {
            query.push(" AND assignee_kind IS NULL");
        }
        Some(AssigneeFilter::Kind(kind)) => {
            query.push(" AND assignee_kind = ").push_bind(kind.as_str());
        }
        Some(AssigneeFilter::Exactly(a)) => {
            query.push(" AND assignee_kind = ").push_bind(a.kind.as_str());
            query.push(" AND assignee_id = ").push_bind(a.id.clone());
        }
    }
    if let Some(channel) = filter.channel {
        query
            .push(" AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id AND m.channel = ")
            .push_bind(channel.as_str())
            .push(")");
    }
    if let Some(before) = filter.before {
        query.push(" AND id < ").push_bind(before.to_string());
    }
    query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
    let rows = query.build().fetch_all(pool).await?;
    rows.iter().map(conversation).collect()
}

#[async_trait]
impl ConversationStore for PgStore {
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
        // Most sends find the conversation open: one plain read, no transaction or row lock.
        let open = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM conversations WHERE workspace_id = $1 AND contact_id = $2 AND status = 'open'"
        ))
        .bind(workspace.to_string())
        .bind(contact.to_string())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(open) = open.as_ref().map(conversation).transpose()?
            && now < idle_at(open.last_message_at, idle_ms)
        {
            return Ok(open);
        }
        let mut tx = self.pool.begin().await?;
        let mut changes = Changes::default();
        let conversation = ensure_open(&mut tx, &mut changes, workspace, contact, channel, idle_ms, now).await?;
        changes.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(conversation)
    }

    async fn get_conversation(&self, workspace: WorkspaceId, id: ConversationId) -> Result<Option<Conversation>> {
        let mut conn = self.pool.acquire().await?;
        get(&mut conn, workspace, id, false).await
    }

    async fn list_conversations(
        &self,
        workspace: WorkspaceId,
        filter: &ConversationFilter,
        limit: u32,
    ) -> Result<Vec<Conversation>> {
        list(&self.pool, workspace, filter, limit).await
    }

    async fn conversation_messages(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conversation_id = $1 AND workspace_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(id.to_string())
        .bind(workspace.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut messages = rows.iter().map(rows::message_from_row).collect::<Result<Vec<_>>>()?;
        messages.reverse();
        Ok(messages)
    }

    async fn conversation_activities(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
    ) -> Result<Vec<ConversationActivity>> {
        let rows = sqlx::query(
            "SELECT kind, at, assignee_kind, assignee_id, note, reason FROM conversation_activities \
             WHERE conversation_id = $1 AND workspace_id = $2 ORDER BY at, id",
        )
        .bind(id.to_string())
        .bind(workspace.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ConversationActivity {
                    kind: known(row, "kind", ActivityKind::parse)?,
                    at: Millis(row.try_get("at")?),
                    assignee: assignee(row)?,
                    note: row.try_get("note")?,
                    reason: optional(row, "reason", CloseReason::parse)?,
                })
            })
            .collect()
    }

    async fn close_conversation(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        reason: CloseReason,
        now: Millis,
    ) -> Result<ConversationChange> {
        let mut tx = self.pool.begin().await?;
        let Some(conversation) = get(&mut tx, workspace, id, true).await? else {
            return Ok(ConversationChange::NotFound);
        };
        if conversation.status == ConversationStatus::Closed {
            return Ok(ConversationChange::Unchanged(Box::new(conversation)));
        }
        let mut changes = Changes::default();
        let closed = close(&mut tx, &mut changes, conversation, reason, now).await?;
        changes.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(ConversationChange::Changed(Box::new(closed)))
    }

    async fn assign_conversation(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        assignee: Option<Assignee>,
        note: Option<String>,
        now: Millis,
    ) -> Result<ConversationChange> {
        let mut tx = self.pool.begin().await?;
        let Some(mut conversation) = get(&mut tx, workspace, id, true).await? else {
            return Ok(ConversationChange::NotFound);
        };
        if conversation.status == ConversationStatus::Closed {
            return Ok(ConversationChange::Closed(Box::new(conversation)));
        }
        if note.is_none() && conversation.assignee == assignee {
            return Ok(ConversationChange::Unchanged(Box::new(conversation)));
        }
        sqlx::query("UPDATE conversations SET assignee_kind = $2, assignee_id = $3, updated_at = $4 WHERE id = $1")
            .bind(id.to_string())
            .bind(assignee.as_ref().map(|a| a.kind.as_str()))
            .bind(assignee.as_ref().map(|a| a.id.clone()))
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        conversation.assignee = assignee.clone();
        conversation.updated_at = now;
        let kind = if note.is_some() { ActivityKind::HandedOff } else { ActivityKind::Assigned };
        let mut changes = Changes::default();
        changes
            .record(&mut tx, &conversation, "assigned", ConversationActivity { assignee, note, ..activity(kind, now) })
            .await?;
        changes.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(ConversationChange::Changed(Box::new(conversation)))
    }

    async fn close_idle_conversations(&self, now: Millis, limit: u32) -> Result<u64> {
        let idle_ms = self.conversation_idle_ms.load(Ordering::Relaxed);
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: a conversation busy with a new message right now is not idle anyway.
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM conversations WHERE status = 'open' AND last_message_at <= $1 \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(now.0 - idle_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let idle = rows.iter().map(conversation).collect::<Result<Vec<_>>>()?;
        let closed = idle.len() as u64;
        let mut changes = Changes::default();
        for conversation in idle {
            let at = idle_at(conversation.last_message_at, idle_ms);
            close(&mut tx, &mut changes, conversation, CloseReason::Idle, at).await?;
        }
        changes.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(closed)
    }
}
