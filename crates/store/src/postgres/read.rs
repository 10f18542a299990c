//! Tenancy records, and the reads: messages, the feed, figures.

use super::map_write_error;
use super::rows::{self, event_columns, message_columns};
use crate::model::WORKSPACE_EVENT_KIND;
use crate::{
    ApiKey, ChannelAccount, FeedEvent, FeedItem, MessageFilter, MessageStats, MetricsSnapshot, Result, StoreError,
    Workspace, WorkspaceEvent,
};
use parley_domain::{ApiKeyId, ChannelAccountId, EventId, Message, MessageId, MessageState, Millis, WorkspaceId};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

macro_rules! api_key_columns {
    () => {
        "id, workspace_id, name, prefix, hash, scopes, created_at, revoked_at"
    };
}

macro_rules! channel_account_columns {
    () => {
        "id, workspace_id, channel, provider, name, config, rate_limit_per_second, max_in_flight, is_default, \
         created_at, updated_at, credentials, credentials_hint, deleted_at"
    };
}

pub(super) async fn create_workspace(pool: &PgPool, w: &Workspace) -> Result<()> {
    sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(w.id.to_string())
        .bind(&w.name)
        .bind(w.created_at.0)
        .execute(pool)
        .await
        .map_err(map_write_error)?;
    Ok(())
}

pub(super) async fn get_workspace(pool: &PgPool, id: WorkspaceId) -> Result<Option<Workspace>> {
    let row = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::workspace_from_row).transpose()
}

pub(super) async fn list_workspaces(pool: &PgPool) -> Result<Vec<Workspace>> {
    let rows =
        sqlx::query("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id").fetch_all(pool).await?;
    rows.iter().map(rows::workspace_from_row).collect()
}

pub(super) async fn create_api_key(pool: &PgPool, k: &ApiKey) -> Result<()> {
    sqlx::query(concat!("INSERT INTO api_keys (", api_key_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .bind(k.id.to_string())
        .bind(k.workspace_id.to_string())
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(k.scopes.to_stored())
        .bind(k.created_at.0)
        .bind(k.revoked_at.map(|t| t.0))
        .execute(pool)
        .await
        .map_err(map_write_error)?;
    Ok(())
}

pub(super) async fn find_api_key_by_hash(pool: &PgPool, hash: &str) -> Result<Option<ApiKey>> {
    let row = sqlx::query(concat!("SELECT ", api_key_columns!(), " FROM api_keys WHERE hash = $1"))
        .bind(hash)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::api_key_from_row).transpose()
}

pub(super) async fn list_api_keys(pool: &PgPool, workspace: WorkspaceId) -> Result<Vec<ApiKey>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        api_key_columns!(),
        " FROM api_keys WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(workspace.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter().map(rows::api_key_from_row).collect()
}

pub(super) async fn revoke_api_key(
    pool: &PgPool,
    workspace: WorkspaceId,
    id: ApiKeyId,
    now: Millis,
) -> Result<Option<ApiKey>> {
    let row = sqlx::query(concat!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE workspace_id = $1 AND id = $2 RETURNING ",
        api_key_columns!()
    ))
    .bind(workspace.to_string())
    .bind(id.to_string())
    .bind(now.0)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(rows::api_key_from_row).transpose()
}

pub(super) async fn create_channel_account(pool: &PgPool, a: &ChannelAccount) -> Result<()> {
    let config = serde_json::to_string(&a.config)
        .map_err(|e| StoreError::Database(format!("cannot serialise channel account config: {e}")))?;
    let mut tx = pool.begin().await?;
    take_default(&mut tx, a).await?;
    sqlx::query(concat!(
        "INSERT INTO channel_accounts (",
        channel_account_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(a.id.to_string())
    .bind(a.workspace_id.to_string())
    .bind(a.channel.as_str())
    .bind(&a.provider)
    .bind(&a.name)
    .bind(config)
    .bind(i64::from(a.rate_limit_per_second))
    .bind(i64::from(a.max_in_flight))
    .bind(a.is_default)
    .bind(a.created_at.0)
    .bind(a.updated_at.0)
    .bind(&a.credentials)
    .bind(a.credentials_hint.as_ref().map(|h| h.to_string()))
    .bind(a.deleted_at.map(|t| t.0))
    .execute(&mut *tx)
    .await
    .map_err(map_write_error)?;
    tx.commit().await?;
    Ok(())
}

/// When `a` is to be its channel's default, the workspace's other accounts of the channel stop
/// being it.
async fn take_default(conn: &mut sqlx::PgConnection, a: &ChannelAccount) -> Result<()> {
    if a.is_default && a.deleted_at.is_none() {
        sqlx::query(
            "UPDATE channel_accounts SET is_default = FALSE WHERE workspace_id = $1 AND channel = $2 AND id <> $3 \
             AND is_default",
        )
        .bind(a.workspace_id.to_string())
        .bind(a.channel.as_str())
        .bind(a.id.to_string())
        .execute(conn)
        .await?;
    }
    Ok(())
}

pub(super) async fn update_channel_account(pool: &PgPool, a: &ChannelAccount) -> Result<bool> {
    let config = serde_json::to_string(&a.config)
        .map_err(|e| StoreError::Database(format!("cannot serialise channel account config: {e}")))?;
    let mut tx = pool.begin().await?;
    let exists = sqlx::query(
        "SELECT 1 FROM channel_accounts WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(a.id.to_string())
    .bind(a.workspace_id.to_string())
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if !exists {
        return Ok(false);
    }
    take_default(&mut tx, a).await?;
    sqlx::query(
        "UPDATE channel_accounts SET name = $3, config = $4, rate_limit_per_second = $5, max_in_flight = $6, \
         is_default = $7, updated_at = $8, credentials = $9, credentials_hint = $10, deleted_at = $11 \
         WHERE id = $1 AND workspace_id = $2",
    )
    .bind(a.id.to_string())
    .bind(a.workspace_id.to_string())
    .bind(&a.name)
    .bind(config)
    .bind(i64::from(a.rate_limit_per_second))
    .bind(i64::from(a.max_in_flight))
    .bind(a.is_default && a.deleted_at.is_none())
    .bind(a.updated_at.0)
    .bind(&a.credentials)
    .bind(a.credentials_hint.as_ref().map(|h| h.to_string()))
    .bind(a.deleted_at.map(|t| t.0))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn get_channel_account(
    pool: &PgPool,
    workspace: WorkspaceId,
    id: ChannelAccountId,
) -> Result<Option<ChannelAccount>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        channel_account_columns!(),
        " FROM channel_accounts WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"
    ))
    .bind(workspace.to_string())
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(rows::channel_account_from_row).transpose()
}

pub(super) async fn all_channel_accounts(pool: &PgPool) -> Result<Vec<ChannelAccount>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        channel_account_columns!(),
        " FROM channel_accounts WHERE deleted_at IS NULL ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(rows::channel_account_from_row).collect()
}

pub(super) async fn list_channel_accounts(pool: &PgPool, workspace: WorkspaceId) -> Result<Vec<ChannelAccount>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        channel_account_columns!(),
        " FROM channel_accounts WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
    ))
    .bind(workspace.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter().map(rows::channel_account_from_row).collect()
}

pub(super) async fn get_message(
    pool: &PgPool,
    workspace: WorkspaceId,
    id: MessageId,
    with_events: bool,
) -> Result<Option<Message>> {
    let row = sqlx::query(concat!("SELECT ", message_columns!(), " FROM messages WHERE workspace_id = $1 AND id = $2"))
        .bind(workspace.to_string())
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut message = rows::message_from_row(&row)?;
    if with_events {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM message_events WHERE message_id = $1 ORDER BY sequence"
        ))
        .bind(id.to_string())
        .fetch_all(pool)
        .await?;
        message.events = Some(rows.iter().map(rows::event_from_row).collect::<Result<_>>()?);
    }
    Ok(Some(message))
}

pub(super) async fn list_messages(
    pool: &PgPool,
    workspace: WorkspaceId,
    filter: &MessageFilter,
    limit: u32,
) -> Result<Vec<Message>> {
    // One statement for every filter combination: an absent filter is a NULL parameter.
    let rows = sqlx::query(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE workspace_id = $1 \
         AND ($2::text IS NULL OR status = $2) \
         AND ($3::text IS NULL OR channel = $3) \
         AND ($4::text IS NULL OR to_address = $4) \
         AND ($5::bigint IS NULL OR created_at >= $5) \
         AND ($6::bigint IS NULL OR created_at < $6) \
         AND ($7::text IS NULL OR id < $7) \
         ORDER BY id DESC LIMIT $8"
    ))
    .bind(workspace.to_string())
    .bind(filter.status.map(MessageState::as_str))
    .bind(filter.channel.map(|c| c.as_str()))
    .bind(filter.to.as_deref())
    .bind(filter.created_from.map(|t| t.0))
    .bind(filter.created_to.map(|t| t.0))
    .bind(filter.before.map(|id| id.to_string()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(rows::message_from_row).collect()
}

pub(super) async fn awaiting_receipts(pool: &PgPool, after: Option<MessageId>, limit: u32) -> Result<Vec<Message>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE status = 'sent' AND direction = 'outbound' AND id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after.map_or_else(String::new, |id| id.to_string()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(rows::message_from_row).collect()
}

/// The start of a feed query, up to its `WHERE` (completed by the caller, then `ORDER BY
/// e.position`): the event row, its position, the message's channel (a message event) and the
/// workspace event's body (a row of kind [`crate::model::WORKSPACE_EVENT_KIND`]), read by
/// [`feed_event_from_row`]. A message event whose message is missing (never recorded so) is left
/// out, as is a workspace event row without its body.
macro_rules! feed_select {
    () => {
        "SELECT e.position, m.channel, e.id, e.message_id, e.workspace_id, e.sequence, e.kind, e.occurred_at, \
         e.recorded_at, e.applied, e.attempt, e.provider_message_id, e.error_code, e.error_detail, \
         e.error_permanent, e.retry_at, e.details, w.event_type AS w_event_type, w.data AS w_data, \
         w.created_at AS w_created_at \
         FROM message_events AS e LEFT JOIN messages AS m ON m.id = e.message_id \
         LEFT JOIN workspace_events AS w ON e.kind = 'workspace_event' AND w.id = e.id \
         WHERE (m.id IS NOT NULL OR w.id IS NOT NULL) AND "
    };
}
pub(super) use feed_select;

/// A row selected with [`feed_select`].
pub(super) fn feed_event_from_row(row: &PgRow) -> Result<FeedEvent> {
    let position: i64 = row.try_get("position")?;
    let kind: String = row.try_get("kind")?;
    if kind == WORKSPACE_EVENT_KIND {
        let id: String = row.try_get("id")?;
        let workspace: String = row.try_get("workspace_id")?;
        let data: String = row.try_get("w_data")?;
        return Ok(FeedEvent {
            position,
            item: FeedItem::Workspace(WorkspaceEvent {
                id: EventId::parse(&id).map_err(|_| rows::corrupt("event id", &id))?,
                workspace_id: WorkspaceId::parse(&workspace).map_err(|_| rows::corrupt("workspace id", &workspace))?,
                event_type: row.try_get("w_event_type")?,
                data: serde_json::from_str(&data).map_err(|_| rows::corrupt("workspace event data", &data))?,
                created_at: Millis(row.try_get("w_created_at")?),
            }),
        });
    }
    Ok(FeedEvent {
        position,
        item: FeedItem::Message {
            channel: rows::channel(&row.try_get::<String, _>("channel")?)?,
            event: rows::event_from_row(row)?,
        },
    })
}

pub(super) async fn events_after(
    pool: &PgPool,
    workspace: WorkspaceId,
    after: i64,
    limit: u32,
) -> Result<Vec<FeedEvent>> {
    let rows =
        sqlx::query(concat!(feed_select!(), "e.workspace_id = $1 AND e.position > $2 ORDER BY e.position LIMIT $3"))
            .bind(workspace.to_string())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
    rows.iter().map(feed_event_from_row).collect()
}

pub(super) async fn message_stats(pool: &PgPool, workspace: WorkspaceId) -> Result<MessageStats> {
    let rows = sqlx::query("SELECT status, count(*) AS n FROM messages WHERE workspace_id = $1 GROUP BY status")
        .bind(workspace.to_string())
        .fetch_all(pool)
        .await?;
    let mut by_state = Vec::with_capacity(rows.len());
    for row in &rows {
        by_state.push((rows::state(&row.try_get::<String, _>("status")?)?, row.try_get::<i64, _>("n")?));
    }
    // By name, as the SQLite store gives them, whatever order the database grouped in.
    by_state.sort_by_key(|(state, _)| state.as_str());
    let jobs_waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM dispatch_jobs WHERE workspace_id = $1")
        .bind(workspace.to_string())
        .fetch_one(pool)
        .await?;
    Ok(MessageStats { by_state, jobs_waiting })
}

/// Messages by (channel, state) across workspaces, and the claimable due jobs. The GROUP BY reads
/// every row of `messages` (no index holds channel and status): a scan per scrape, acceptable
/// for now; counters kept by the writers would make it constant-time when tables grow large.
/// The jobs are a range of the `dispatch_jobs_due` index.
pub(super) async fn metrics_snapshot(pool: &PgPool, now: Millis) -> Result<MetricsSnapshot> {
    let rows = sqlx::query("SELECT channel, status, count(*) AS n FROM messages GROUP BY channel, status")
        .fetch_all(pool)
        .await?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        messages.push((
            rows::channel(&row.try_get::<String, _>("channel")?)?,
            rows::state(&row.try_get::<String, _>("status")?)?,
            row.try_get::<i64, _>("n")?,
        ));
    }
    messages.sort_by_key(|(channel, state, _)| (channel.as_str(), state.as_str()));
    let (due_jobs, oldest_due_at): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), min(due_at) FROM dispatch_jobs \
         WHERE due_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)",
    )
    .bind(now.0)
    .fetch_one(pool)
    .await?;
    Ok(MetricsSnapshot { messages, due_jobs, oldest_due_at: oldest_due_at.map(Millis) })
}

pub(super) async fn delivery_latencies_ms(pool: &PgPool, workspace: WorkspaceId) -> Result<Vec<i64>> {
    let latencies: Vec<i64> = sqlx::query_scalar(
        "SELECT min(e.occurred_at) - m.created_at FROM message_events AS e JOIN messages AS m ON m.id = e.message_id \
         WHERE e.workspace_id = $1 AND e.kind = 'delivered' AND (e.details IS NULL OR NOT (e.details::jsonb ? 'part')) GROUP BY m.id, m.created_at",
    )
    .bind(workspace.to_string())
    .fetch_all(pool)
    .await?;
    Ok(latencies)
}

pub(super) async fn purge_idempotency(pool: &PgPool, older_than: Millis) -> Result<u64> {
    let done =
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(older_than.0).execute(pool).await?;
    Ok(done.rows_affected())
}

pub(super) async fn event_position(
    pool: &PgPool,
    workspace: WorkspaceId,
    id: parley_domain::EventId,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT position FROM message_events WHERE id = $1 AND workspace_id = $2")
        .bind(id.to_string())
        .bind(workspace.to_string())
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn messages_with_events(
    pool: &PgPool,
    workspace: WorkspaceId,
    ids: &[MessageId],
) -> Result<Vec<Message>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.iter().map(MessageId::to_string).collect();
    let rows = sqlx::query(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE workspace_id = $1 AND id = ANY($2::text[])"
    ))
    .bind(workspace.to_string())
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut messages = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let m = rows::message_from_row(row)?;
        messages.insert(m.id, m);
    }
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<String> = messages.keys().map(MessageId::to_string).collect();
    let rows = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM message_events WHERE message_id = ANY($1::text[]) ORDER BY message_id, sequence"
    ))
    .bind(&found)
    .fetch_all(pool)
    .await?;
    for row in &rows {
        let event = rows::event_from_row(row)?;
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
pub(super) async fn outbound_analytics(
    pool: &PgPool,
    workspace: WorkspaceId,
    from: Millis,
    to: Millis,
) -> Result<Vec<crate::AnalyticsRow>> {
    let rows = sqlx::query(
        "SELECT m.id, m.channel, m.channel_account_id, \
         CASE WHEN m.content::json ->> 'type' = 'template' THEN m.content::json ->> 'name' END AS template, \
         m.status, m.error_code, m.created_at, \
         (SELECT min(e.occurred_at) FROM message_events AS e WHERE e.message_id = m.id AND e.kind = 'delivered' AND (e.details IS NULL OR NOT (e.details::jsonb ? 'part'))) \
           AS first_delivered_at, \
         EXISTS (SELECT 1 FROM messages AS i WHERE i.direction = 'inbound' \
                 AND i.channel_account_id = m.channel_account_id AND i.from_address = m.to_address \
                 AND i.created_at >= m.created_at AND i.created_at < m.created_at + $4 \
                 AND i.workspace_id = m.workspace_id) AS replied \
         FROM messages AS m \
         WHERE m.workspace_id = $1 AND m.direction = 'outbound' AND m.created_at >= $2 AND m.created_at < $3 \
         ORDER BY m.created_at, m.id",
    )
    .bind(workspace.to_string())
    .bind(from.0)
    .bind(to.0)
    .bind(crate::REPLY_WINDOW_MS)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let account: String = row.try_get("channel_account_id")?;
            Ok(crate::AnalyticsRow {
                id: rows::parse_message_id(&row.try_get::<String, _>("id")?)?,
                channel: rows::channel(&row.try_get::<String, _>("channel")?)?,
                channel_account_id: ChannelAccountId::parse(&account)
                    .map_err(|_| rows::corrupt("channel account id", &account))?,
                template: row.try_get("template")?,
                status: rows::state(&row.try_get::<String, _>("status")?)?,
                error_code: row.try_get("error_code")?,
                created_at: Millis(row.try_get("created_at")?),
                first_delivered_at: row.try_get::<Option<i64>, _>("first_delivered_at")?.map(Millis),
                replied: row.try_get("replied")?,
            })
        })
        .collect()
}
