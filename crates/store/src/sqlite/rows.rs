//! Turning SQLite rows into domain values. A value that does not parse is reported as
//! `StoreError::Corrupt`, never a panic.

use crate::{ApiKey, ChannelAccount, Result, StoreError, Workspace};
use parley_domain::{
    ApiKeyId, Channel, ChannelAccountId, Direction, ErrorInfo, EventId, EventKind, Message, MessageEvent, MessageId,
    MessageState, Millis, Route, Scopes, WorkspaceId,
};
use rusqlite::Row;

pub const MESSAGE_COLUMNS: &str = "id, workspace_id, direction, channel, channel_account_id, to_address, from_address, \
     status, content, send_at, expires_at, validity_seconds, metadata, client_reference, provider_message_id, attempts, \
     error_code, error_detail, error_permanent, sequence, created_at, updated_at, contact_id, purpose, conversation_id, \
     route";

/// The columns of [`Progress`], in its order.
pub const PROGRESS_COLUMNS: &str = "id, workspace_id, channel_account_id, status, sequence, attempts, \
     provider_message_id, error_code, error_detail, error_permanent, updated_at, expires_at, route";

/// The part of a message that its events and its dispatch change, and what recording them takes:
/// the writes that need no more load this instead of the whole message and its content.
#[derive(Clone, Debug)]
pub struct Progress {
    pub id: MessageId,
    pub workspace_id: WorkspaceId,
    pub channel_account_id: ChannelAccountId,
    pub status: MessageState,
    pub sequence: i64,
    pub attempts: i32,
    pub provider_message_id: Option<String>,
    pub error: Option<ErrorInfo>,
    pub updated_at: Millis,
    pub expires_at: Millis,
    /// The route of a message sent with fallback (see `parley_domain::route`).
    pub route: Option<Route>,
    /// The route changed and must be written back.
    pub route_changed: bool,
    /// An event just recorded a failure of a step that has a next one: the message will move on
    /// instead of ending, and its dispatch job stays (due now).
    pub falls_back: bool,
}

impl Progress {
    pub fn of(m: &Message) -> Progress {
        Progress {
            id: m.id,
            workspace_id: m.workspace_id,
            channel_account_id: m.channel_account_id,
            status: m.status,
            sequence: m.sequence,
            attempts: m.attempts,
            provider_message_id: m.provider_message_id.clone(),
            error: m.error.clone(),
            updated_at: m.updated_at,
            expires_at: m.expires_at,
            route: m.route.clone(),
            route_changed: false,
            falls_back: false,
        }
    }

    /// Copy this progress onto the whole message it was taken from.
    pub fn apply_to(self, m: &mut Message) {
        m.status = self.status;
        m.sequence = self.sequence;
        m.attempts = self.attempts;
        m.provider_message_id = self.provider_message_id;
        m.error = self.error;
        m.updated_at = self.updated_at;
        m.route = self.route;
    }
}

/// A message's route as stored (JSON), if it has one.
pub fn route(value: Option<String>) -> Result<Option<Route>> {
    value.map(|s| serde_json::from_str(&s).map_err(|_| corrupt("message route", &s))).transpose()
}

/// A row selected with [`PROGRESS_COLUMNS`].
pub fn progress(row: &Row<'_>) -> Result<Progress> {
    Ok(Progress {
        id: parse("message id", row.get(0)?, MessageId::parse)?,
        workspace_id: parse("workspace id", row.get(1)?, WorkspaceId::parse)?,
        channel_account_id: parse("channel account id", row.get(2)?, ChannelAccountId::parse)?,
        status: parse_opt("status", row.get(3)?, MessageState::parse)?,
        sequence: row.get(4)?,
        attempts: row.get(5)?,
        provider_message_id: row.get(6)?,
        error: error_info(row.get(7)?, row.get(8)?, row.get(9)?),
        updated_at: Millis(row.get(10)?),
        expires_at: Millis(row.get(11)?),
        route: route(row.get(12)?)?,
        route_changed: false,
        falls_back: false,
    })
}

pub const EVENT_COLUMNS: &str = "id, message_id, sequence, kind, occurred_at, recorded_at, applied, attempt, \
     provider_message_id, error_code, error_detail, error_permanent, retry_at, details";

/// How many columns [`EVENT_COLUMNS`] names: a query that selects more after them finds those
/// from this index on.
pub const EVENT_COLUMN_COUNT: usize = 14;

pub fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} '{value}'"))
}

/// The error of a write: a unique-key violation means the caller stored something twice
/// (`Conflict`, as on PostgreSQL); anything else is the database's trouble.
pub fn write_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, message)
            if matches!(
                failure.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            StoreError::Conflict(message.clone().unwrap_or_else(|| e.to_string()))
        }
        _ => e.into(),
    }
}

fn parse<T, E>(what: &str, value: String, f: impl FnOnce(&str) -> Result<T, E>) -> Result<T> {
    f(&value).map_err(|_| corrupt(what, &value))
}

fn parse_opt<T>(what: &str, value: String, f: impl FnOnce(&str) -> Option<T>) -> Result<T> {
    f(&value).ok_or_else(|| corrupt(what, &value))
}

fn error_info(code: Option<String>, detail: Option<String>, permanent: Option<bool>) -> Option<ErrorInfo> {
    code.map(|code| ErrorInfo { code, detail: detail.unwrap_or_default(), permanent: permanent.unwrap_or(false) })
}

/// A message row selected with [`MESSAGE_COLUMNS`] (raw values first, so that a bad value is an
/// error of ours rather than of the row API).
pub fn message(row: &Row<'_>) -> Result<Message> {
    let content: String = row.get(8)?;
    let metadata: String = row.get(12)?;
    Ok(Message {
        id: parse("message id", row.get(0)?, MessageId::parse)?,
        workspace_id: parse("workspace id", row.get(1)?, WorkspaceId::parse)?,
        direction: parse_opt("direction", row.get(2)?, Direction::parse)?,
        channel: parse_opt("channel", row.get(3)?, Channel::parse)?,
        channel_account_id: parse("channel account id", row.get(4)?, ChannelAccountId::parse)?,
        to: row.get(5)?,
        from: row.get(6)?,
        status: parse_opt("status", row.get(7)?, MessageState::parse)?,
        content: serde_json::from_str(&content).map_err(|_| corrupt("content", &content))?,
        send_at: row.get::<_, Option<i64>>(9)?.map(Millis),
        expires_at: Millis(row.get(10)?),
        validity_seconds: row.get(11)?,
        metadata: serde_json::from_str(&metadata).map_err(|_| corrupt("metadata", &metadata))?,
        client_reference: row.get(13)?,
        provider_message_id: row.get(14)?,
        attempts: row.get(15)?,
        error: error_info(row.get(16)?, row.get(17)?, row.get(18)?),
        sequence: row.get(19)?,
        created_at: Millis(row.get(20)?),
        updated_at: Millis(row.get(21)?),
        contact_id: match row.get::<_, Option<String>>(22)? {
            Some(id) => Some(parse("contact id", id, parley_domain::ContactId::parse)?),
            None => None,
        },
        purpose: match row.get::<_, Option<String>>(23)? {
            Some(p) => Some(parse("purpose", p, parley_domain::Purpose::parse)?),
            None => None,
        },
        conversation_id: match row.get::<_, Option<String>>(24)? {
            Some(id) => Some(parse("conversation id", id, parley_domain::ConversationId::parse)?),
            None => None,
        },
        route: route(row.get(25)?)?,
        events: None,
    })
}

/// An event row selected with [`EVENT_COLUMNS`].
pub fn event(row: &Row<'_>) -> Result<MessageEvent> {
    Ok(MessageEvent {
        id: parse("event id", row.get(0)?, EventId::parse)?,
        message_id: parse("message id", row.get(1)?, MessageId::parse)?,
        sequence: row.get(2)?,
        kind: parse_opt("event kind", row.get(3)?, EventKind::parse)?,
        occurred_at: Millis(row.get(4)?),
        recorded_at: Millis(row.get(5)?),
        applied: row.get(6)?,
        attempt: row.get(7)?,
        provider_message_id: row.get(8)?,
        error: error_info(row.get(9)?, row.get(10)?, row.get(11)?),
        retry_at: row.get::<_, Option<i64>>(12)?.map(Millis),
        details: crate::parts::parse_details(row.get(13)?)?,
    })
}

pub fn workspace(row: &Row<'_>) -> Result<Workspace> {
    Ok(Workspace {
        id: parse("workspace id", row.get(0)?, WorkspaceId::parse)?,
        name: row.get(1)?,
        created_at: Millis(row.get(2)?),
    })
}

pub const API_KEY_COLUMNS: &str = "id, workspace_id, name, prefix, hash, scopes, created_at, revoked_at";

pub fn api_key(row: &Row<'_>) -> Result<ApiKey> {
    let scopes: String = row.get(5)?;
    Ok(ApiKey {
        id: parse("API key id", row.get(0)?, ApiKeyId::parse)?,
        workspace_id: parse("workspace id", row.get(1)?, WorkspaceId::parse)?,
        name: row.get(2)?,
        prefix: row.get(3)?,
        hash: row.get(4)?,
        scopes: Scopes::from_stored(&scopes),
        created_at: Millis(row.get(6)?),
        revoked_at: row.get::<_, Option<i64>>(7)?.map(Millis),
    })
}

pub const CHANNEL_ACCOUNT_COLUMNS: &str = "id, workspace_id, channel, provider, name, config, rate_limit_per_second, \
     max_in_flight, is_default, created_at, updated_at, credentials, credentials_hint, deleted_at";

pub fn channel_account(row: &Row<'_>) -> Result<ChannelAccount> {
    let config: String = row.get(5)?;
    Ok(ChannelAccount {
        id: parse("channel account id", row.get(0)?, ChannelAccountId::parse)?,
        workspace_id: parse("workspace id", row.get(1)?, WorkspaceId::parse)?,
        channel: parse_opt("channel", row.get(2)?, Channel::parse)?,
        provider: row.get(3)?,
        name: row.get(4)?,
        config: serde_json::from_str(&config).map_err(|_| corrupt("channel account config", &config))?,
        rate_limit_per_second: row.get(6)?,
        max_in_flight: row.get(7)?,
        is_default: row.get(8)?,
        created_at: Millis(row.get(9)?),
        updated_at: Millis(row.get(10)?),
        credentials: row.get(11)?,
        credentials_hint: match row.get::<_, Option<String>>(12)? {
            Some(hint) => {
                Some(serde_json::from_str(&hint).map_err(|_| corrupt("channel account credentials hint", &hint))?)
            }
            None => None,
        },
        deleted_at: row.get::<_, Option<i64>>(13)?.map(Millis),
    })
}
