//! The `/v1` routes, one module per resource, and what lists share.

pub mod analytics;
pub mod api_keys;
pub mod channel_accounts;
pub mod consents;
pub mod contacts;
pub mod conversations;
pub mod hooks;
pub mod message_events;
pub mod messages;
pub mod ops;
pub mod stream;
pub mod webhooks;

use crate::error::ApiError;
use base64::Engine as _;
use serde::Serialize;

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::new("invalid_query", format!("limit must be 1 to {MAX_LIMIT}, not {n}"))
            .with_param("limit", format!("1 to {MAX_LIMIT}"))),
    }
}

/// Cursors are opaque to clients: the position, base64url-encoded with a version tag.
pub fn encode_cursor(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{position}"))
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes).ok()?.strip_prefix("v1:").map(str::to_string)
}

/// The position a client's `cursor` stands for, read by `parse`; `None` without a cursor, and
/// 400 `invalid_cursor` for one this API did not give out.
pub fn read_cursor<T>(cursor: Option<&str>, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
    let Some(cursor) = cursor else { return Ok(None) };
    decode_cursor(cursor).and_then(|raw| parse(&raw)).map(Some).ok_or_else(|| {
        ApiError::new("invalid_cursor", "the cursor is not one this API gave out")
            .with_param("cursor", "not a valid cursor")
    })
}

/// A list page from rows read with `limit + 1`: the first `limit`, and the cursor of the next
/// page (the position of the last row kept) when there were more.
pub fn into_page<T, R>(mut rows: Vec<R>, limit: u32, position: impl Fn(&R) -> String) -> List<T>
where
    T: From<R>,
{
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(&position(r)))
    } else {
        None
    };
    List { data: rows.into_iter().map(T::from).collect(), next_cursor }
}
