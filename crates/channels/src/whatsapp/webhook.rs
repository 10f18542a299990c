//! Callbacks from Meta at `/hooks/whatsapp/{channel_account_id}`.
//!
//! - `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`: the subscription handshake.
//!   The token is compared with the `verify_token` credential in constant time; a match is
//!   answered with the challenge as plain text, anything else is [`IngressError::Forbidden`].
//! - `POST`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>` is checked in
//!   constant time before the body is parsed ([`IngressError::BadSignature`] otherwise). Then every
//!   entry, change, status and message of the body is read:
//!   - `statuses[]` become receipts: `sent`, `delivered`, `read`, `played` (a voice message
//!     listened to, recorded as `read`), `failed` (with `whatsapp:<code>` from `errors[0]`). The
//!     receipt's `details` keep the rest of the status object (`pricing`, `conversation`,
//!     `biz_opaque_callback_data`, `errors`, `recipient_id`, group fields…). Unknown statuses are
//!     acknowledged and skipped.
//!   - `messages[]` become inbound messages: `text` → text; `image`/`video`/`audio`/`document`/
//!     `sticker` → media (`media_id`, `mime_type`, `caption`, `filename`); `location` → location;
//!     `interactive` `button_reply`/`list_reply` and template `button` → reply (`payload` is the
//!     button or row id, or the button's payload); `reaction` → reaction (no emoji: removed);
//!     anything else (`contacts`, `order`, `system`, `unsupported`, an `interactive` of another
//!     kind, types Meta adds later) → `other` with the message object as received. None is dropped.
//!   - Changes of other fields (group lifecycle, `smb_message_echoes` of messages the business sent
//!     from its app, account and template updates) and changes for another phone number id than the
//!     account's are acknowledged and not stored.
//!
//! Addresses: the customer's `from` (digits) becomes `+<digits>` (other ids, such as a group or
//! user id, are kept as they are); `to` is the business number `metadata.display_phone_number`.

use super::WhatsAppConnector;
use crate::{IngressError, IngressOutcome, IngressReply, IngressRequest};
use hmac::{Hmac, Mac};
use parley_domain::{Content, InboundMessage, MediaKind, MessageState, Millis, Receipt};
use serde_json::Value;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The signature header's name (lower case, as [`IngressRequest`] keeps it).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// `sha256=<lower-case hex HMAC-SHA256(app_secret, body)>`, as Meta signs a webhook.
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: the error case cannot happen.
    match <HmacSha256 as Mac>::new_from_slice(app_secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// Check `X-Hub-Signature-256` over the raw body, in constant time.
pub fn verify_signature(app_secret: &str, header: Option<&str>, body: &[u8]) -> Result<(), IngressError> {
    let header = header.ok_or_else(|| IngressError::BadSignature("X-Hub-Signature-256 is missing".into()))?;
    let hex_part = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| IngressError::BadSignature("X-Hub-Signature-256 must start with sha256=".into()))?;
    let expected =
        hex::decode(hex_part).map_err(|_| IngressError::BadSignature("X-Hub-Signature-256 is not hex".into()))?;
    let mut mac = <HmacSha256 as Mac>::new_from_slice(app_secret.as_bytes())
        .map_err(|_| IngressError::BadSignature("the app secret cannot key HMAC-SHA256".into()))?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| IngressError::BadSignature("X-Hub-Signature-256 does not match the body".into()))
}

/// Equal strings, compared in time that does not depend on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn ingress(c: &WhatsAppConnector, request: &IngressRequest<'_>) -> Result<IngressOutcome, IngressError> {
    match request.method {
        "GET" => handshake(&c.credentials.verify_token, request),
        "POST" => {
            verify_signature(&c.credentials.app_secret, request.header(SIGNATURE_HEADER), request.body)?;
            parse(c, request)
        }
        _ => Err(IngressError::NotSupported),
    }
}

fn handshake(verify_token: &str, request: &IngressRequest<'_>) -> Result<IngressOutcome, IngressError> {
    let mode = request.query_param("hub.mode");
    let token = request.query_param("hub.verify_token");
    let challenge = request.query_param("hub.challenge");
    if mode.as_deref() != Some("subscribe") {
        return Err(IngressError::Forbidden("hub.mode must be subscribe".into()));
    }
    let Some(token) = token else {
        return Err(IngressError::Forbidden("hub.verify_token is missing".into()));
    };
    if !constant_time_eq(&token, verify_token) {
        return Err(IngressError::Forbidden("hub.verify_token does not match".into()));
    }
    let Some(challenge) = challenge else {
        return Err(IngressError::Forbidden("hub.challenge is missing".into()));
    };
    Ok(IngressOutcome::reply_only(IngressReply::text(challenge)))
}

/// Seconds since the epoch, as Meta writes them (a string, sometimes a number).
fn timestamp(v: Option<&Value>) -> Option<Millis> {
    let secs = match v? {
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    secs.checked_mul(1000).map(Millis)
}

/// `+<digits>` for a phone number given as digits; anything else as it is.
fn address(raw: &str) -> String {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) { format!("+{raw}") } else { raw.to_string() }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn string_of(v: &Value, key: &str) -> Option<String> {
    str_of(v, key).map(str::to_string)
}

fn parse(c: &WhatsAppConnector, request: &IngressRequest<'_>) -> Result<IngressOutcome, IngressError> {
    let json: Value = serde_json::from_slice(request.body)
        .map_err(|e| IngressError::Malformed(format!("the body is not JSON: {e}")))?;
    let entries = json
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| IngressError::Malformed("no entry array: not a WhatsApp webhook".into()))?;
    let mut outcome = IngressOutcome::reply_only(IngressReply::ok());
    for entry in entries {
        let Some(changes) = entry.get("changes").and_then(Value::as_array) else { continue };
        for change in changes {
            let field = str_of(change, "field").unwrap_or("messages");
            let Some(value) = change.get("value") else { continue };
            if field != "messages" {
                tracing::debug!(account = %c.account_id, field, "whatsapp webhook change not stored");
                continue;
            }
            let metadata = value.get("metadata");
            if let Some(id) = metadata.and_then(|m| str_of(m, "phone_number_id"))
                && id != c.config.phone_number_id
            {
                tracing::warn!(
                    account = %c.account_id,
                    phone_number_id = id,
                    "whatsapp webhook for another phone number skipped: give each number its own callback URL"
                );
                continue;
            }
            let business = metadata.and_then(|m| str_of(m, "display_phone_number")).map(address);
            for status in value.get("statuses").and_then(Value::as_array).into_iter().flatten() {
                if let Some(receipt) = receipt(c, status, request.received_at)? {
                    outcome.receipts.push(receipt);
                }
            }
            for message in value.get("messages").and_then(Value::as_array).into_iter().flatten() {
                outcome.inbound.push(inbound(c, message, business.clone(), request.received_at)?);
            }
        }
    }
    Ok(outcome)
}

fn receipt(c: &WhatsAppConnector, status: &Value, received_at: Millis) -> Result<Option<Receipt>, IngressError> {
    let id = str_of(status, "id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IngressError::Malformed("a status without id".into()))?;
    let name = str_of(status, "status").unwrap_or("");
    let state = match name {
        "sent" => MessageState::Sent,
        "delivered" => MessageState::Delivered,
        "read" | "played" => MessageState::Read,
        "failed" => MessageState::Failed,
        other => {
            tracing::debug!(account = %c.account_id, status = other, "whatsapp status not recorded");
            return Ok(None);
        }
    };
    let error = (state == MessageState::Failed).then(|| super::errors::status_error(status.get("errors")));
    let mut details = status.as_object().cloned().unwrap_or_default();
    details.remove("id");
    details.remove("timestamp");
    Ok(Some(Receipt {
        channel_account_id: c.account_id,
        provider_message_id: id.to_string(),
        state,
        occurred_at: timestamp(status.get("timestamp")).unwrap_or(received_at),
        error,
        details: Some(Value::Object(details)),
    }))
}

fn inbound(
    c: &WhatsAppConnector,
    message: &Value,
    to: Option<String>,
    received_at: Millis,
) -> Result<InboundMessage, IngressError> {
    let id = str_of(message, "id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IngressError::Malformed("a message without id".into()))?;
    let from = str_of(message, "from")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IngressError::Malformed(format!("message {id} has no from")))?;
    Ok(InboundMessage {
        channel_account_id: c.account_id,
        provider_message_id: id.to_string(),
        from: address(from),
        to,
        content: content(message),
        received_at: timestamp(message.get("timestamp")).unwrap_or(received_at),
        contact_id: None,
    })
}

/// What an inbound message says, in Parley's terms; `other` for what Parley does not model.
pub fn content(message: &Value) -> Content {
    let kind = str_of(message, "type").unwrap_or("unknown");
    let other = || Content::Other { kind: kind.to_string(), raw: message.clone() };
    let object = message.get(kind);
    match kind {
        "text" => match object.and_then(|t| str_of(t, "body")) {
            Some(body) => Content::text(body),
            None => other(),
        },
        "image" | "video" | "audio" | "document" | "sticker" => {
            let Some(media) = object else { return other() };
            let media_id = string_of(media, "id");
            let url =
                if media_id.is_none() { string_of(media, "url").or_else(|| string_of(media, "link")) } else { None };
            if media_id.is_none() && url.is_none() {
                return other();
            }
            Content::Media {
                url,
                media_id,
                kind: MediaKind::parse(kind),
                caption: string_of(media, "caption"),
                mime_type: string_of(media, "mime_type"),
                filename: string_of(media, "filename"),
            }
        }
        "location" => {
            let Some(loc) = object else { return other() };
            let coordinate =
                |key: &str| loc.get(key).and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
            match (coordinate("latitude"), coordinate("longitude")) {
                (Some(latitude), Some(longitude)) => Content::Location {
                    latitude,
                    longitude,
                    name: string_of(loc, "name"),
                    address: string_of(loc, "address"),
                },
                _ => other(),
            }
        }
        "reaction" => {
            let Some(r) = object else { return other() };
            match str_of(r, "message_id") {
                Some(target) => Content::Reaction {
                    message_id: target.to_string(),
                    emoji: string_of(r, "emoji").unwrap_or_default(),
                },
                None => other(),
            }
        }
        "button" => {
            let Some(b) = object else { return other() };
            let text = string_of(b, "text").or_else(|| string_of(b, "payload"));
            match text {
                Some(text) => Content::Reply { text, payload: string_of(b, "payload") },
                None => other(),
            }
        }
        "interactive" => {
            let Some(i) = object else { return other() };
            let reply = match str_of(i, "type") {
                Some(t @ ("button_reply" | "list_reply")) => i.get(t),
                _ => None,
            };
            match reply.and_then(|r| Some((string_of(r, "title")?, string_of(r, "id")))) {
                Some((text, payload)) => Content::Reply { text, payload },
                None => other(),
            }
        }
        _ => other(),
    }
}
