//! What Twilio posts to `/hooks/twilio/{channel_account_id}`: status callbacks (the
//! `StatusCallback` of each send) and inbound messages (the number's or service's incoming
//! message webhook).
//!
//! 1. `X-Twilio-Signature` is checked first (missing or wrong: `BadSignature`, nothing stored):
//!    over the URL and the form parameters for a form `POST`; over the URL alone for a `GET`
//!    (its parameters are in the URL) and for a JSON body (whose hash the URL carries as
//!    `bodySHA256`).
//! 2. The form is then read strictly: bad percent-encoding or bytes that are not UTF-8 are
//!    `Malformed`.
//! 3. A form with `MessageStatus` (other than `received`/`receiving`) is a status callback:
//!
//!    | `MessageStatus`                         | receipt                                    |
//!    |-----------------------------------------|--------------------------------------------|
//!    | `queued`, `accepted`, `scheduled`, `sending` | none (nothing new: Parley has it `sent`) |
//!    | `sent`                                  | `sent`                                     |
//!    | `delivered`, `partially_delivered`      | `delivered`                                |
//!    | `read`                                  | `read`                                     |
//!    | `undelivered`                           | `undelivered`, error `twilio:<ErrorCode>`  |
//!    | `failed`                                | `failed`, error `twilio:<ErrorCode>`       |
//!    | `canceled`                              | `failed`, error `twilio:canceled`          |
//!    | anything else                           | none (acknowledged)                        |
//!
//!    Every parameter Twilio sent (`ErrorCode`, `ApiVersion`, `RawDlrDoneDate`, …) is kept in the
//!    receipt's `details`.
//! 4. Otherwise a form with `Body` or `NumMedia` is an inbound message: text, or media (`MediaUrl0`
//!    with `MediaContentType0` and the body as caption). Each further media item becomes a message
//!    of its own, with the provider id `{MessageSid}#{n}`.
//! 5. Anything else is `Malformed`. Every accepted callback is answered with an empty TwiML
//!    `<Response/>`.

use super::{EMPTY_TWIML, TwilioConnector, errors, signature};
use crate::{IngressError, IngressOutcome, IngressReply, IngressRequest};
use parley_domain::{Content, ErrorInfo, InboundMessage, MediaKind, MessageState, Receipt};
use std::collections::BTreeMap;

/// Read and answer one callback.
pub(crate) fn ingress(
    connector: &TwilioConnector,
    request: &IngressRequest<'_>,
) -> Result<IngressOutcome, IngressError> {
    let params = verified_params(connector.auth_token(), request)?;
    let outcome = parse(connector, request, &params)?;
    Ok(outcome)
}

/// Check the signature, then read the parameters.
fn verified_params(auth_token: &str, request: &IngressRequest<'_>) -> Result<Vec<(String, String)>, IngressError> {
    let Some(signature) = request.header("x-twilio-signature") else {
        return Err(IngressError::BadSignature("the X-Twilio-Signature header is missing".into()));
    };
    let refused = || IngressError::BadSignature("X-Twilio-Signature does not sign this request".into());
    match request.method {
        "POST" => {
            if let Some(hash) = request.query_param("bodySHA256") {
                if !signature::verify(auth_token, request.url, &[], signature)
                    || !signature::body_hash_matches(&hash, request.body)
                {
                    return Err(refused());
                }
                return Err(IngressError::Malformed("a JSON callback is not a Twilio Messaging callback".into()));
            }
            // Lenient decoding for the check (what was signed), strict decoding afterwards.
            let lenient: Vec<(String, String)> = url::form_urlencoded::parse(request.body).into_owned().collect();
            if !signature::verify(auth_token, request.url, &lenient, signature) {
                return Err(refused());
            }
            decode_form(request.body).map_err(IngressError::Malformed)
        }
        "GET" => {
            if !signature::verify(auth_token, request.url, &[], signature) {
                return Err(refused());
            }
            decode_form(request.query.as_bytes()).map_err(IngressError::Malformed)
        }
        _ => Err(IngressError::NotSupported),
    }
}

/// Decode `application/x-www-form-urlencoded` strictly: every `%` starts two hex digits, and
/// every name and value is UTF-8.
pub fn decode_form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (index, part) in body.split(|b| *b == b'&').enumerate() {
        if part.is_empty() {
            continue;
        }
        let (name, value) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        let name = decode_component(name).map_err(|e| format!("form field {}: {e}", index + 1))?;
        let value = decode_component(value).map_err(|e| format!("form field {} ('{name}'): {e}", index + 1))?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn decode_component(raw: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or("a '%' is not followed by two hex digits")?;
                let text = std::str::from_utf8(hex).map_err(|_| "a '%' is not followed by two hex digits")?;
                let byte = u8::from_str_radix(text, 16).map_err(|_| "a '%' is not followed by two hex digits")?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_string())
}

/// The parameters by name (the first value of a repeated name).
struct Params<'a> {
    all: &'a [(String, String)],
}

impl<'a> Params<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.all.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn non_empty(&self, name: &str) -> Option<&'a str> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    /// Every parameter as JSON: a string, or an array of the values of a repeated name.
    fn to_json(&self) -> serde_json::Value {
        let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, value) in self.all {
            map.entry(name.as_str()).or_default().push(value.as_str());
        }
        let object = map
            .into_iter()
            .map(|(name, values)| {
                let value = if values.len() == 1 {
                    serde_json::Value::String(values[0].to_string())
                } else {
                    serde_json::Value::Array(values.into_iter().map(|v| serde_json::Value::String(v.into())).collect())
                };
                (name.to_string(), value)
            })
            .collect();
        serde_json::Value::Object(object)
    }
}

/// An address without the channel prefix Twilio puts on WhatsApp addresses.
fn bare(address: &str) -> String {
    address.strip_prefix("whatsapp:").unwrap_or(address).to_string()
}

fn reply() -> IngressReply {
    IngressReply::xml(EMPTY_TWIML)
}

fn parse(
    connector: &TwilioConnector,
    request: &IngressRequest<'_>,
    all: &[(String, String)],
) -> Result<IngressOutcome, IngressError> {
    let params = Params { all };
    let status = params.non_empty("MessageStatus").map(|s| s.to_ascii_lowercase());
    let is_status = status.as_deref().is_some_and(|s| s != "received" && s != "receiving");
    if is_status {
        let receipt = receipt(connector, request, &params, status.as_deref().unwrap_or_default())?;
        return Ok(IngressOutcome { reply: reply(), receipts: receipt.into_iter().collect(), inbound: Vec::new() });
    }
    if params.get("Body").is_some() || params.get("NumMedia").is_some() {
        let inbound = inbound(connector, request, &params)?;
        return Ok(IngressOutcome { reply: reply(), receipts: Vec::new(), inbound });
    }
    Err(IngressError::Malformed(
        "neither a status callback (MessageStatus) nor an inbound message (Body, NumMedia)".into(),
    ))
}

/// The message's sid, under any of the names Twilio has used for it.
fn message_sid<'a>(params: &Params<'a>) -> Result<&'a str, IngressError> {
    params
        .non_empty("MessageSid")
        .or_else(|| params.non_empty("SmsMessageSid"))
        .or_else(|| params.non_empty("SmsSid"))
        .ok_or_else(|| IngressError::Malformed("MessageSid is missing".into()))
}

fn receipt(
    connector: &TwilioConnector,
    request: &IngressRequest<'_>,
    params: &Params<'_>,
    status: &str,
) -> Result<Option<Receipt>, IngressError> {
    let sid = message_sid(params)?;
    let state = match status {
        "sent" => MessageState::Sent,
        "delivered" | "partially_delivered" => MessageState::Delivered,
        "read" => MessageState::Read,
        "undelivered" => MessageState::Undelivered,
        "failed" | "canceled" => MessageState::Failed,
        // queued, accepted, scheduled, sending, and statuses Twilio may add: nothing to record.
        _ => return Ok(None),
    };
    let error = match state {
        MessageState::Undelivered | MessageState::Failed => {
            let code = params.non_empty("ErrorCode").and_then(|c| c.trim().parse::<u32>().ok());
            let (code, detail) = match (code, status) {
                (Some(code), _) => {
                    let meaning =
                        errors::lookup(code).map_or_else(|| format!("Twilio error {code}"), |(m, _)| m.into());
                    (errors::error_code(Some(code), 0), meaning)
                }
                (None, "canceled") => ("twilio:canceled".to_string(), "the message was canceled at Twilio".to_string()),
                (None, other) => (format!("twilio:{other}"), format!("Twilio reports the message {other}")),
            };
            Some(ErrorInfo { code, detail, permanent: true })
        }
        _ => None,
    };
    Ok(Some(Receipt {
        channel_account_id: connector.account_id(),
        provider_message_id: sid.to_string(),
        state,
        occurred_at: request.received_at,
        error,
        details: Some(params.to_json()),
    }))
}

fn inbound(
    connector: &TwilioConnector,
    request: &IngressRequest<'_>,
    params: &Params<'_>,
) -> Result<Vec<InboundMessage>, IngressError> {
    let sid = message_sid(params)?;
    let from = params.non_empty("From").ok_or_else(|| IngressError::Malformed("From is missing".into()))?;
    let to = params.non_empty("To").map(bare);
    let body = params.get("Body").unwrap_or_default();
    let num_media = match params.non_empty("NumMedia") {
        None => 0,
        Some(n) => n.trim().parse::<usize>().ok().filter(|n| *n <= 100).ok_or_else(|| {
            IngressError::Malformed(format!("NumMedia '{}' is not a count", n.chars().take(16).collect::<String>()))
        })?,
    };
    let message = |provider_message_id: String, content: Content| InboundMessage {
        channel_account_id: connector.account_id(),
        provider_message_id,
        from: bare(from),
        to: to.clone(),
        content,
        received_at: request.received_at,
        contact_id: None,
    };
    if num_media == 0 {
        return Ok(vec![message(sid.to_string(), Content::text(body))]);
    }
    let mut messages = Vec::with_capacity(num_media);
    for n in 0..num_media {
        let url = params
            .non_empty(&format!("MediaUrl{n}"))
            .ok_or_else(|| IngressError::Malformed(format!("NumMedia is {num_media} but MediaUrl{n} is missing")))?;
        let mime_type = params.non_empty(&format!("MediaContentType{n}")).map(str::to_string);
        let caption = if n == 0 { Some(body.to_string()).filter(|b| !b.trim().is_empty()) } else { None };
        let content = Content::Media {
            url: Some(url.to_string()),
            media_id: None,
            kind: Some(MediaKind::guess(mime_type.as_deref(), Some(url))),
            caption,
            mime_type,
            filename: None,
        };
        let id = if n == 0 { sid.to_string() } else { format!("{sid}#{n}") };
        messages.push(message(id, content));
    }
    Ok(messages)
}
