//! What RBM posts to `/hooks/rbm/{channel_account_id}`.
//!
//! - **Registration handshake** `{"clientToken": "…", "secret": "…"}`: when `clientToken` equals
//!   the account's client token (compared in constant time) the answer is `200` with the secret
//!   as plain text; otherwise `403`.
//! - **Pub/Sub push envelope** `{"message": {"data": "<base64 JSON>", "messageId", …},
//!   "subscription"}` signed by `X-Goog-Signature` = base64(HMAC-SHA512(client token,
//!   base64-decoded `message.data`)). A missing or wrong signature is refused (401) before the
//!   data is parsed; nothing of it is stored.
//!
//! The decoded data, and what Parley makes of it:
//!
//! | data | result |
//! |---|---|
//! | user event `DELIVERED` / `READ` | receipt `delivered` / `read` for `messageId` (Parley's own message UUID, see the module docs) |
//! | user event `IS_TYPING` | nothing stored; `200` |
//! | server event `TTL_EXPIRATION_REVOKED` | receipt `undelivered`, error `rbm:TTL_EXPIRATION_REVOKED` (permanent): the `ttl` ran out before delivery and Google withdrew the message |
//! | server event `TTL_EXPIRATION_REVOKE_FAILED` | receipt `sent` (which changes no state) with the event in `details`: Google could not withdraw it, so `delivered` may still follow |
//! | any other event with a `messageId` | receipt `sent` with the event in `details` (kept on the timeline, changes nothing) |
//! | user message `text` | inbound `text` |
//! | user message `suggestionResponse` | inbound `reply` (`text`, `payload` = `postbackData`) |
//! | user message `location` | inbound `location` |
//! | user message `userFile` | inbound `media` (`url` = `fileUri`, `mime_type`, `filename`, `kind` from the MIME type) |
//! | any other user message, or an unknown shape | inbound `other` with the decoded data as `raw`: never dropped |
//!
//! Inbound messages carry RBM's `messageId` as their provider id. The store keeps one inbound
//! message per (channel account, provider id), so a push Google repeats — it delivers at least
//! once and retries anything not answered 200 for 7 days — stores nothing new: RBM's
//! recommended deduplication on (`messageId`, `senderPhoneNumber`) comes down to that, since one
//! account serves one agent and `messageId` is unique per message. Data for another agent (a
//! partner-level webhook serving several) is acknowledged and ignored.

use crate::{IngressError, IngressOutcome, IngressReply, IngressRequest};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use parley_domain::{ChannelAccountId, Content, ErrorInfo, InboundMessage, MediaKind, MessageState, Millis, Receipt};
use serde_json::{Value, json};
use sha2::Sha512;

type HmacSha512 = Hmac<Sha512>;

/// The `X-Goog-Signature` of a push whose `message.data` decodes to `data`.
pub fn signature(client_token: &[u8], data: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = match HmacSha512::new_from_slice(client_token) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(data);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Check `header` (base64) against the HMAC of `data`, in constant time.
pub fn verify_signature(client_token: &[u8], data: &[u8], header: Option<&str>) -> Result<(), IngressError> {
    let header = header.ok_or_else(|| IngressError::BadSignature("X-Goog-Signature is missing".into()))?;
    let given = STANDARD
        .decode(header.trim())
        .map_err(|_| IngressError::BadSignature("X-Goog-Signature is not base64".into()))?;
    let mut mac = HmacSha512::new_from_slice(client_token)
        .map_err(|_| IngressError::BadSignature("no client token to check with".into()))?;
    mac.update(data);
    mac.verify_slice(&given).map_err(|_| IngressError::BadSignature("X-Goog-Signature does not match".into()))
}

/// Equal, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verify and read one callback.
pub fn handle(
    account: ChannelAccountId,
    agent_id: &str,
    client_token: &[u8],
    request: &IngressRequest<'_>,
) -> Result<IngressOutcome, IngressError> {
    if request.method != "POST" {
        return Err(IngressError::NotSupported);
    }
    let body: Value = serde_json::from_slice(request.body)
        .map_err(|_| IngressError::Malformed("the body is not a JSON object".into()))?;
    if let Some(token) = body.get("clientToken") {
        return handshake(client_token, token, body.get("secret"));
    }
    let Some(data_b64) = body.pointer("/message/data").and_then(Value::as_str) else {
        return Err(IngressError::Malformed("neither a registration handshake nor a Pub/Sub push envelope".into()));
    };
    let data = STANDARD
        .decode(data_b64.trim())
        .map_err(|_| IngressError::BadSignature("message.data is not base64, so it cannot be verified".into()))?;
    verify_signature(client_token, &data, request.header("x-goog-signature"))?;
    let decoded: Value = serde_json::from_slice(&data).unwrap_or_else(|_| {
        // Signed by Google but not JSON: kept as text rather than refused (a refusal is retried
        // for a week).
        json!({ "undecodable": String::from_utf8_lossy(&data) })
    });
    let envelope_id = body.pointer("/message/messageId").and_then(Value::as_str).unwrap_or("");
    Ok(interpret(account, agent_id, &decoded, envelope_id, request.received_at))
}

fn handshake(client_token: &[u8], token: &Value, secret: Option<&Value>) -> Result<IngressOutcome, IngressError> {
    let given = token.as_str().unwrap_or("");
    if !constant_time_eq(given.as_bytes(), client_token) {
        return Err(IngressError::Forbidden("clientToken does not match the account's client token".into()));
    }
    let secret = secret.and_then(Value::as_str).unwrap_or("");
    Ok(IngressOutcome::reply_only(IngressReply::text(secret)))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn time_of(v: &Value, fallback: Millis) -> Millis {
    str_of(v, "sendTime").and_then(|t| Millis::parse_rfc3339(t).ok()).unwrap_or(fallback)
}

/// What a verified push's decoded data means.
pub fn interpret(
    account: ChannelAccountId,
    agent_id: &str,
    data: &Value,
    envelope_id: &str,
    received_at: Millis,
) -> IngressOutcome {
    let mut outcome = IngressOutcome::reply_only(IngressReply::ok());
    if let Some(other_agent) = str_of(data, "agentId")
        && other_agent != agent_id
    {
        tracing::debug!(account = %account, "RBM push for another agent; ignored");
        return outcome;
    }
    let occurred_at = time_of(data, received_at);
    let message_id = str_of(data, "messageId");
    let phone = str_of(data, "senderPhoneNumber").or_else(|| str_of(data, "phoneNumber")).unwrap_or("");
    let receipt =
        |provider_message_id: &str, state: MessageState, error: Option<ErrorInfo>, details: Option<Value>| Receipt {
            channel_account_id: account,
            provider_message_id: provider_message_id.to_string(),
            state,
            occurred_at,
            error,
            details,
        };
    if let Some(event_type) = str_of(data, "eventType") {
        let details = Some(json!({ "rbm_event": event_type, "event_id": str_of(data, "eventId") }));
        match (event_type, message_id) {
            ("IS_TYPING", _) => {}
            ("DELIVERED", Some(id)) => outcome.receipts.push(receipt(id, MessageState::Delivered, None, details)),
            ("READ", Some(id)) => outcome.receipts.push(receipt(id, MessageState::Read, None, details)),
            ("TTL_EXPIRATION_REVOKED", Some(id)) => {
                let error = ErrorInfo {
                    code: "rbm:TTL_EXPIRATION_REVOKED".into(),
                    detail: "the message's ttl ran out before it was delivered; RBM withdrew it".into(),
                    permanent: true,
                };
                outcome.receipts.push(receipt(id, MessageState::Undelivered, Some(error), details));
            }
            (_, Some(id)) => {
                // TTL_EXPIRATION_REVOKE_FAILED and events Parley does not know: kept on the
                // message's timeline without moving its state.
                outcome.receipts.push(receipt(id, MessageState::Sent, None, Some(json!({ "rbm_event": data }))))
            }
            (_, None) => {
                let id = str_of(data, "eventId").unwrap_or(envelope_id);
                outcome.inbound.push(inbound(
                    account,
                    id,
                    phone,
                    Content::Other { kind: format!("rbm_event:{event_type}"), raw: data.clone() },
                    occurred_at,
                ));
            }
        }
        return outcome;
    }
    let id = message_id.unwrap_or(envelope_id);
    let content = user_content(data);
    outcome.inbound.push(inbound(account, id, phone, content, occurred_at));
    outcome
}

fn inbound(account: ChannelAccountId, id: &str, from: &str, content: Content, at: Millis) -> InboundMessage {
    InboundMessage {
        channel_account_id: account,
        provider_message_id: id.to_string(),
        from: from.to_string(),
        to: None,
        content,
        received_at: at,
        contact_id: None,
    }
}

/// The content of a user message.
fn user_content(data: &Value) -> Content {
    if let Some(text) = data.get("text").and_then(Value::as_str) {
        return Content::text(text);
    }
    if let Some(response) = data.get("suggestionResponse").filter(|v| v.is_object()) {
        let text = str_of(response, "text").unwrap_or("").to_string();
        let payload = str_of(response, "postbackData").map(str::to_string);
        return Content::Reply { text, payload };
    }
    if let Some(location) = data.get("location")
        && let (Some(latitude), Some(longitude)) =
            (location.get("latitude").and_then(Value::as_f64), location.get("longitude").and_then(Value::as_f64))
    {
        return Content::Location { latitude, longitude, name: None, address: None };
    }
    if let Some(payload) = data.pointer("/userFile/payload")
        && let Some(uri) = str_of(payload, "fileUri")
    {
        let mime_type = str_of(payload, "mimeType").map(str::to_string);
        let filename = str_of(payload, "fileName").map(str::to_string);
        return Content::Media {
            url: Some(uri.to_string()),
            media_id: None,
            kind: Some(MediaKind::guess(mime_type.as_deref(), Some(uri))),
            caption: None,
            mime_type,
            filename,
        };
    }
    let kind = ["userFile", "location", "suggestionResponse"]
        .into_iter()
        .find(|k| data.get(*k).is_some())
        .map(|k| format!("rbm:{k}"))
        .unwrap_or_else(|| "rbm_message".to_string());
    Content::Other { kind, raw: data.clone() }
}
