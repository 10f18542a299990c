//! Rows to domain values and back. Reading never panics: a value that does not parse (an unknown
//! state, a malformed id, broken JSON) is reported as [`StoreError::Corrupt`].

use crate::{ApiKey, ChannelAccount, Result, StoreError, Workspace};
use parley_domain::{
    ApiKeyId, Channel, ChannelAccountId, Content, Direction, ErrorInfo, EventId, EventKind, IdError, Message,
    MessageEvent, MessageId, MessageState, Millis, Scopes, WorkspaceId,
};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use std::collections::BTreeMap;

/// The columns of `messages`, in the order [`message_from_row`] and [`insert_messages`] use.
macro_rules! message_columns {
    () => {
        "id, workspace_id, direction, channel, channel_account_id, to_address, from_address, status, content, \
         send_at, expires_at, validity_seconds, metadata, client_reference, provider_message_id, attempts, \
         error_code, error_detail, error_permanent, sequence, created_at, updated_at, contact_id, purpose, conversation_id, \
         route"
    };
}
pub(super) use message_columns;

/// The columns of `message_events` but `position`.
macro_rules! event_columns {
    () => {
        "id, message_id, workspace_id, sequence, kind, occurred_at, recorded_at, applied, attempt, \
         provider_message_id, error_code, error_detail, error_permanent, retry_at, details"
    };
}
pub(super) use event_columns;

pub(super) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} '{}' cannot be read", value.chars().take(80).collect::<String>()))
}

fn id<T>(row: &PgRow, column: &str, parse: fn(&str) -> Result<T, IdError>) -> Result<T> {
    let s: String = row.try_get(column)?;
    parse(&s).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn opt_millis(row: &PgRow, column: &str) -> Result<Option<Millis>> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(Millis))
}

fn millis(row: &PgRow, column: &str) -> Result<Millis> {
    Ok(Millis(row.try_get(column)?))
}

fn small<T: TryFrom<i64>>(row: &PgRow, column: &str) -> Result<T> {
    let n: i64 = row.try_get(column)?;
    T::try_from(n).map_err(|_| corrupt(column, &n.to_string()))
}

fn opt_small<T: TryFrom<i64>>(row: &PgRow, column: &str) -> Result<Option<T>> {
    match row.try_get::<Option<i64>, _>(column)? {
        None => Ok(None),
        Some(n) => T::try_from(n).map(Some).map_err(|_| corrupt(column, &n.to_string())),
    }
}

pub(super) fn parse_message_id(s: &str) -> Result<MessageId> {
    MessageId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn state(s: &str) -> Result<MessageState> {
    MessageState::parse(s).ok_or_else(|| corrupt("message state", s))
}

pub(super) fn channel(s: &str) -> Result<Channel> {
    Channel::parse(s).ok_or_else(|| corrupt("channel", s))
}

/// The `error_*` columns (prefixed or not) as one value: present when there is a code.
fn error_info(row: &PgRow) -> Result<Option<ErrorInfo>> {
    let code: Option<String> = row.try_get("error_code")?;
    let detail: Option<String> = row.try_get("error_detail")?;
    let permanent: Option<bool> = row.try_get("error_permanent")?;
    Ok(code.map(|code| ErrorInfo { code, detail: detail.unwrap_or_default(), permanent: permanent.unwrap_or(false) }))
}

pub(super) fn workspace_from_row(row: &PgRow) -> Result<Workspace> {
    Ok(Workspace {
        id: id(row, "id", WorkspaceId::parse)?,
        name: row.try_get("name")?,
        created_at: millis(row, "created_at")?,
    })
}

pub(super) fn api_key_from_row(row: &PgRow) -> Result<ApiKey> {
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKey {
        id: id(row, "id", ApiKeyId::parse)?,
        workspace_id: id(row, "workspace_id", WorkspaceId::parse)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        hash: row.try_get("hash")?,
        scopes: Scopes::from_stored(&scopes),
        created_at: millis(row, "created_at")?,
        revoked_at: opt_millis(row, "revoked_at")?,
    })
}

pub(super) fn channel_account_from_row(row: &PgRow) -> Result<ChannelAccount> {
    let config: String = row.try_get("config")?;
    Ok(ChannelAccount {
        id: id(row, "id", ChannelAccountId::parse)?,
        workspace_id: id(row, "workspace_id", WorkspaceId::parse)?,
        channel: channel(&row.try_get::<String, _>("channel")?)?,
        provider: row.try_get("provider")?,
        name: row.try_get("name")?,
        config: serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("channel account config: {e}")))?,
        rate_limit_per_second: small(row, "rate_limit_per_second")?,
        max_in_flight: small(row, "max_in_flight")?,
        is_default: row.try_get("is_default")?,
        created_at: millis(row, "created_at")?,
        updated_at: millis(row, "updated_at")?,
        credentials: row.try_get("credentials")?,
        credentials_hint: match row.try_get::<Option<String>, _>("credentials_hint")? {
            Some(hint) => Some(
                serde_json::from_str(&hint)
                    .map_err(|e| StoreError::Corrupt(format!("channel account credentials hint: {e}")))?,
            ),
            None => None,
        },
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(Millis),
    })
}

/// A `messages` row (selected with [`message_columns`]), without its events.
pub(super) fn message_from_row(row: &PgRow) -> Result<Message> {
    let direction: String = row.try_get("direction")?;
    let content: String = row.try_get("content")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(Message {
        id: id(row, "id", MessageId::parse)?,
        workspace_id: id(row, "workspace_id", WorkspaceId::parse)?,
        direction: Direction::parse(&direction).ok_or_else(|| corrupt("direction", &direction))?,
        channel: channel(&row.try_get::<String, _>("channel")?)?,
        channel_account_id: id(row, "channel_account_id", ChannelAccountId::parse)?,
        to: row.try_get("to_address")?,
        from: row.try_get("from_address")?,
        status: state(&row.try_get::<String, _>("status")?)?,
        content: serde_json::from_str::<Content>(&content)
            .map_err(|e| StoreError::Corrupt(format!("message content: {e}")))?,
        send_at: opt_millis(row, "send_at")?,
        expires_at: millis(row, "expires_at")?,
        validity_seconds: row.try_get("validity_seconds")?,
        metadata: serde_json::from_str::<BTreeMap<String, String>>(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("message metadata: {e}")))?,
        client_reference: row.try_get("client_reference")?,
        provider_message_id: row.try_get("provider_message_id")?,
        attempts: small(row, "attempts")?,
        error: error_info(row)?,
        sequence: row.try_get("sequence")?,
        created_at: millis(row, "created_at")?,
        updated_at: millis(row, "updated_at")?,
        contact_id: match row.try_get::<Option<String>, _>("contact_id")? {
            Some(s) => {
                Some(parley_domain::ContactId::parse(&s).map_err(|e| StoreError::Corrupt(format!("contact_id: {e}")))?)
            }
            None => None,
        },
        purpose: match row.try_get::<Option<String>, _>("purpose")? {
            Some(s) => Some(parley_domain::Purpose::parse(&s).map_err(|_| corrupt("purpose", &s))?),
            None => None,
        },
        conversation_id: match row.try_get::<Option<String>, _>("conversation_id")? {
            Some(s) => Some(
                parley_domain::ConversationId::parse(&s)
                    .map_err(|e| StoreError::Corrupt(format!("conversation_id: {e}")))?,
            ),
            None => None,
        },
        route: match row.try_get::<Option<String>, _>("route")? {
            Some(s) => Some(serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("message route: {e}")))?),
            None => None,
        },
        events: None,
    })
}

/// A `message_events` row (selected with [`event_columns`]).
pub(super) fn event_from_row(row: &PgRow) -> Result<MessageEvent> {
    let kind: String = row.try_get("kind")?;
    Ok(MessageEvent {
        id: id(row, "id", EventId::parse)?,
        message_id: id(row, "message_id", MessageId::parse)?,
        sequence: row.try_get("sequence")?,
        kind: EventKind::parse(&kind).ok_or_else(|| corrupt("event kind", &kind))?,
        occurred_at: millis(row, "occurred_at")?,
        recorded_at: millis(row, "recorded_at")?,
        applied: row.try_get("applied")?,
        attempt: opt_small(row, "attempt")?,
        provider_message_id: row.try_get("provider_message_id")?,
        error: error_info(row)?,
        retry_at: opt_millis(row, "retry_at")?,
        details: crate::parts::parse_details(row.try_get("details")?)?,
    })
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("cannot serialise {what}: {e}")))
}

/// Insert whole messages, in one statement.
pub(super) async fn insert_messages(conn: &mut PgConnection, messages: &[&Message]) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let n = messages.len();
    let mut ids = Vec::with_capacity(n);
    let mut workspaces = Vec::with_capacity(n);
    let mut directions = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut accounts = Vec::with_capacity(n);
    let mut tos = Vec::with_capacity(n);
    let mut froms = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut contents = Vec::with_capacity(n);
    let mut send_ats = Vec::with_capacity(n);
    let mut expires = Vec::with_capacity(n);
    let mut validities = Vec::with_capacity(n);
    let mut metadatas = Vec::with_capacity(n);
    let mut references = Vec::with_capacity(n);
    let mut provider_ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut error_codes = Vec::with_capacity(n);
    let mut error_details = Vec::with_capacity(n);
    let mut error_permanents = Vec::with_capacity(n);
    let mut sequences = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    let mut contacts = Vec::with_capacity(n);
    let mut purposes = Vec::with_capacity(n);
    let mut conversations = Vec::with_capacity(n);
    let mut routes = Vec::with_capacity(n);
    for m in messages {
        ids.push(m.id.to_string());
        workspaces.push(m.workspace_id.to_string());
        directions.push(m.direction.as_str());
        channels.push(m.channel.as_str());
        accounts.push(m.channel_account_id.to_string());
        tos.push(m.to.as_str());
        froms.push(m.from.as_deref());
        statuses.push(m.status.as_str());
        contents.push(to_json(&m.content, "message content")?);
        send_ats.push(m.send_at.map(|t| t.0));
        expires.push(m.expires_at.0);
        validities.push(m.validity_seconds);
        metadatas.push(to_json(&m.metadata, "message metadata")?);
        references.push(m.client_reference.as_deref());
        provider_ids.push(m.provider_message_id.as_deref());
        attempts.push(i64::from(m.attempts));
        error_codes.push(m.error.as_ref().map(|e| e.code.as_str()));
        error_details.push(m.error.as_ref().map(|e| e.detail.as_str()));
        error_permanents.push(m.error.as_ref().map(|e| e.permanent));
        sequences.push(m.sequence);
        created.push(m.created_at.0);
        updated.push(m.updated_at.0);
        contacts.push(m.contact_id.map(|id| id.to_string()));
        purposes.push(m.purpose.as_ref().map(|p| p.as_str()));
        conversations.push(m.conversation_id.map(|id| id.to_string()));
        routes.push(m.route.as_ref().map(|r| to_json(r, "message route")).transpose()?);
    }
    sqlx::query(concat!(
        "INSERT INTO messages (",
        message_columns!(),
        ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], \
         $14::text[], $15::text[], $16::bigint[], $17::text[], $18::text[], $19::boolean[], $20::bigint[], \
         $21::bigint[], $22::bigint[], $23::text[], $24::text[], $25::text[], $26::text[])"
    ))
    .bind(ids)
    .bind(workspaces)
    .bind(directions)
    .bind(channels)
    .bind(accounts)
    .bind(tos)
    .bind(froms)
    .bind(statuses)
    .bind(contents)
    .bind(send_ats)
    .bind(expires)
    .bind(validities)
    .bind(metadatas)
    .bind(references)
    .bind(provider_ids)
    .bind(attempts)
    .bind(error_codes)
    .bind(error_details)
    .bind(error_permanents)
    .bind(sequences)
    .bind(created)
    .bind(updated)
    .bind(contacts)
    .bind(purposes)
    .bind(conversations)
    .bind(routes)
    .execute(conn)
    .await
    .map_err(super::map_write_error)?;
    Ok(())
}

/// Write back what changes on a message after it is stored: state, sequence, attempts, provider
/// id, error and `updated_at`. `messages` must not name one message twice.
pub(super) async fn update_messages(conn: &mut PgConnection, messages: &[&Message]) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let n = messages.len();
    let mut ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut provider_ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut error_codes = Vec::with_capacity(n);
    let mut error_details = Vec::with_capacity(n);
    let mut error_permanents = Vec::with_capacity(n);
    let mut sequences = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    for m in messages {
        ids.push(m.id.to_string());
        statuses.push(m.status.as_str());
        provider_ids.push(m.provider_message_id.as_deref());
        attempts.push(i64::from(m.attempts));
        error_codes.push(m.error.as_ref().map(|e| e.code.as_str()));
        error_details.push(m.error.as_ref().map(|e| e.detail.as_str()));
        error_permanents.push(m.error.as_ref().map(|e| e.permanent));
        sequences.push(m.sequence);
        updated.push(m.updated_at.0);
    }
    sqlx::query(
        "UPDATE messages AS m SET status = u.status, provider_message_id = u.provider_message_id, \
         attempts = u.attempts, error_code = u.error_code, error_detail = u.error_detail, \
         error_permanent = u.error_permanent, sequence = u.sequence, updated_at = u.updated_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::boolean[], \
         $8::bigint[], $9::bigint[]) \
         AS u(id, status, provider_message_id, attempts, error_code, error_detail, error_permanent, sequence, updated_at) \
         WHERE m.id = u.id",
    )
    .bind(ids)
    .bind(statuses)
    .bind(provider_ids)
    .bind(attempts)
    .bind(error_codes)
    .bind(error_details)
    .bind(error_permanents)
    .bind(sequences)
    .bind(updated)
    .execute(conn)
    .await?;
    Ok(())
}

/// Write back the route of routed messages with their current step's channel, account and
/// address (which a fallback changes).
pub(super) async fn update_routes(conn: &mut PgConnection, messages: &[&Message]) -> Result<()> {
    let mut ids = Vec::new();
    let mut routes = Vec::new();
    let mut channels = Vec::new();
    let mut accounts = Vec::new();
    let mut tos = Vec::new();
    for m in messages {
        let Some(route) = &m.route else { continue };
        ids.push(m.id.to_string());
        routes.push(crate::route::to_json(route)?);
        channels.push(m.channel.as_str());
        accounts.push(m.channel_account_id.to_string());
        tos.push(m.to.as_str());
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE messages AS m SET route = u.route, channel = u.channel, channel_account_id = u.account, \
         to_address = u.to_address \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
         AS u(id, route, channel, account, to_address) WHERE m.id = u.id",
    )
    .bind(ids)
    .bind(routes)
    .bind(channels)
    .bind(accounts)
    .bind(tos)
    .execute(conn)
    .await?;
    Ok(())
}

/// An event to insert, with the workspace of its message.
pub(super) struct NewEvent<'a> {
    pub workspace_id: WorkspaceId,
    pub event: &'a MessageEvent,
}

/// Insert events in one statement; their feed positions follow the order given. The caller must
/// hold the feed lock ([`super::lock_feed`]).
pub(super) async fn insert_events(conn: &mut PgConnection, events: &[NewEvent<'_>]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len();
    let mut ids = Vec::with_capacity(n);
    let mut message_ids = Vec::with_capacity(n);
    let mut workspaces = Vec::with_capacity(n);
    let mut sequences = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut occurred = Vec::with_capacity(n);
    let mut recorded = Vec::with_capacity(n);
    let mut applied = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut provider_ids = Vec::with_capacity(n);
    let mut error_codes = Vec::with_capacity(n);
    let mut error_details = Vec::with_capacity(n);
    let mut error_permanents = Vec::with_capacity(n);
    let mut retry_ats = Vec::with_capacity(n);
    let mut details = Vec::with_capacity(n);
    for NewEvent { workspace_id, event: e } in events {
        ids.push(e.id.to_string());
        message_ids.push(e.message_id.to_string());
        workspaces.push(workspace_id.to_string());
        sequences.push(e.sequence);
        kinds.push(e.kind.as_str());
        occurred.push(e.occurred_at.0);
        recorded.push(e.recorded_at.0);
        applied.push(e.applied);
        attempts.push(e.attempt.map(i64::from));
        provider_ids.push(e.provider_message_id.as_deref());
        error_codes.push(e.error.as_ref().map(|e| e.code.as_str()));
        error_details.push(e.error.as_ref().map(|e| e.detail.as_str()));
        error_permanents.push(e.error.as_ref().map(|e| e.permanent));
        retry_ats.push(e.retry_at.map(|t| t.0));
        details.push(e.details.as_ref().map(ToString::to_string));
    }
    sqlx::query(concat!(
        "INSERT INTO message_events (",
        event_columns!(),
        ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], \
         $7::bigint[], $8::boolean[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::boolean[], \
         $14::bigint[], $15::text[])"
    ))
    .bind(ids)
    .bind(message_ids)
    .bind(workspaces)
    .bind(sequences)
    .bind(kinds)
    .bind(occurred)
    .bind(recorded)
    .bind(applied)
    .bind(attempts)
    .bind(provider_ids)
    .bind(error_codes)
    .bind(error_details)
    .bind(error_permanents)
    .bind(retry_ats)
    .bind(details)
    .execute(conn)
    .await
    .map_err(super::map_write_error)?;
    Ok(())
}

/// Load messages by id, locking their rows until the end of the transaction (in id order, so
/// that two transactions lock them in the same order).
pub(super) async fn lock_messages(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<Message>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.iter().map(message_from_row).collect()
}
