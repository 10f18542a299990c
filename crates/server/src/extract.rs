//! Request extractors that turn every way a request can be wrong into an [`ApiError`]: JSON
//! bodies (content type, size, syntax with line and column, unknown fields by name), query
//! strings, path ids, API keys and idempotency keys.

use crate::AppState;
use crate::error::{ApiError, InvalidParam};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use bytes::Bytes;
use parley_domain::{Scope, WorkspaceId};
use parley_store::ApiKey;
use serde::de::DeserializeOwned;

/// Request bodies are limited to this many bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Parse `bytes` as JSON into `T`, naming the offending field or position on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], prefix: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e, prefix, Some(bytes)))?;
    // Trailing characters after the JSON value are a syntax error too.
    de.end().map_err(|e| {
        ApiError::new(
            "malformed_json",
            format!("the body is not valid JSON: {} (line {}, column {})", strip_position(&e), e.line(), e.column()),
        )
    })?;
    Ok(value)
}

/// Turn a `serde_json::Value` into `T`, naming the offending field on error.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value, prefix: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| json_error(e, prefix, None))
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>, prefix: &str, body: Option<&[u8]>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let syntax = matches!(
        inner.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io
    );
    // serde reports some type mismatches (a number where an enumeration is expected) as syntax
    // errors; if the body is well-formed JSON, it is a value problem.
    if syntax && body.is_none_or(|b| serde_json::from_slice::<serde_json::Value>(b).is_err()) {
        return ApiError::new(
            "malformed_json",
            format!(
                "the body is not valid JSON: {} (line {}, column {})",
                strip_position(&inner),
                inner.line(),
                inner.column()
            ),
        );
    }
    let message = strip_position(&inner);
    let path = if path == "." { String::new() } else { path };
    let field = field_named_in(&message);
    // The path may or may not end with the field the message is about (it does for unknown
    // fields of plain structs, not of tagged enums, and never for missing fields).
    let path = match &field {
        Some(f) if path.rsplit('.').next() != Some(f.as_str()) => join_path(&path, f),
        _ => path,
    };
    let name = join_path(prefix, &path);
    let name = if name.is_empty() { "body".to_string() } else { name };
    if message.starts_with("unknown field `") {
        return ApiError::new("unknown_field", format!("unknown field '{name}'"))
            .with_param(name, format!("is not a known field ({message})"));
    }
    ApiError::new("validation_failed", format!("{name}: {message}")).with_param(name, message)
}

fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a}.{b}"),
    }
}

/// The field that serde's message is about: "unknown field `x`, expected …" or "missing field `x`".
fn field_named_in(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("missing field `"))?;
    Some(rest.split('`').next()?.to_string())
}

/// serde_json appends " at line X column Y"; we report the position separately.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The raw bytes of a JSON request body, with its content type and size checked.
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence != "application/json" && !(essence.starts_with("application/") && essence.ends_with("+json")) {
            return Err(ApiError::new(
                "unsupported_media_type",
                format!(
                    "expected Content-Type: application/json, got '{}'",
                    content_type.chars().take(64).collect::<String>()
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new("payload_too_large", format!("the body is larger than {MAX_BODY_BYTES} bytes"))
            } else {
                ApiError::new("malformed_json", format!("the body could not be read: {rejection}"))
            }
        })?;
        Ok(JsonBytes(bytes))
    }
}

/// A JSON body parsed into `T` (which should deny unknown fields).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes, "").map(Json)
    }
}

/// Query parameters parsed into `T`, errors naming the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let name = e.path().to_string();
            let reason = e.into_inner().to_string();
            let name = if name == "." { field_named_in(&reason).unwrap_or_else(|| "query".into()) } else { name };
            ApiError::new("invalid_query", format!("{name}: {reason}")).with_param(name, reason)
        })
    }
}

/// The caller's API key, checked. Use [`Auth::require`] for the route's scope.
#[derive(Clone, Debug)]
pub struct Auth {
    pub key: ApiKey,
}

impl Auth {
    pub fn workspace(&self) -> WorkspaceId {
        self.key.workspace_id
    }

    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.key.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::new("forbidden", format!("this API key lacks the '{}' scope", scope.as_str())))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(secret) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) else {
            return Err(ApiError::new("unauthorized", "send 'Authorization: Bearer <API key>'"));
        };
        let secret = secret.trim();
        if !secret.starts_with("pk_") || secret.len() > 128 {
            return Err(ApiError::new("unauthorized", "the API key is not valid"));
        }
        let Some(key) = state.engine.authenticate(secret).await? else {
            return Err(ApiError::new("unauthorized", "the API key is not valid or has been revoked"));
        };
        if let Some(limiter) = &state.rate_limiter {
            let quota = limiter.take(key.id, std::time::Instant::now());
            if let Some(slot) = parts.extensions.get::<crate::ratelimit::QuotaSlot>() {
                let _ = slot.0.set(quota);
            }
            if let Some(wait) = quota.retry_after_seconds {
                return Err(ApiError::new(
                    "rate_limited",
                    format!("this API key made more than {} requests in a burst; retry in {wait} s", quota.limit),
                ));
            }
        }
        Ok(Auth { key })
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
pub fn idempotency_key(parts: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = parts.get("idempotency-key") else { return Ok(None) };
    let ok = value.to_str().ok().filter(|v| !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic()));
    match ok {
        Some(v) => Ok(Some(v.to_string())),
        None => Err(ApiError::new("invalid_header", "Idempotency-Key must be 1 to 255 visible ASCII characters")
            .with_param("Idempotency-Key", "1 to 255 visible ASCII characters")),
    }
}

/// Collects validation problems so that one answer names all of them.
#[derive(Default)]
pub struct Invalid(pub Vec<InvalidParam>);

impl Invalid {
    pub fn add(&mut self, name: impl Into<String>, reason: impl Into<String>) {
        self.0.push(InvalidParam { name: name.into(), reason: reason.into() });
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let detail = self.0.iter().map(|p| format!("{}: {}", p.name, p.reason)).collect::<Vec<_>>().join("; ");
        Err(ApiError::new("validation_failed", detail).with_params(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        text: String,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        to: String,
        content: Inner,
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = parse_json::<Outer>(b"{\n  \"to\": \"x\",,\n}", "").unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert!(e.detail.contains("line 2"), "{}", e.detail);
        assert!(e.detail.contains("column"), "{}", e.detail);
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let e = parse_json::<Outer>(br#"{"to":"x","content":{"text":"a","colour":1}}"#, "").unwrap_err();
        assert_eq!(e.code, "unknown_field");
        assert_eq!(e.invalid_params[0].name, "content.colour");
        let e = parse_json::<Outer>(br#"{"to":"x","bogus":1,"content":{"text":"a"}}"#, "").unwrap_err();
        assert_eq!(e.invalid_params[0].name, "bogus");
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = parse_json::<Outer>(br#"{"to":5,"content":{"text":"a"}}"#, "").unwrap_err();
        assert_eq!(e.code, "validation_failed");
        assert_eq!(e.invalid_params[0].name, "to");
        let e = parse_json::<Outer>(br#"{"content":{"text":"a"}}"#, "").unwrap_err();
        assert!(e.detail.contains("missing field `to`"), "{}", e.detail);
    }
}
