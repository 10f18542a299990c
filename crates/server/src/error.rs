//! The one error type of the API and its RFC 9457 `application/problem+json` form.
//!
//! Every error has a stable `code` that clients branch on; [`CODES`] lists them with their
//! titles, and `/problems/{code}` serves a short page for each. A 500 never says more than
//! "internal error" to the client; its cause is logged with the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One offending parameter of a request.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct InvalidParam {
    /// The parameter's path: `to`, `content.text`, `messages[3].channel`.
    pub name: String,
    pub reason: String,
}

/// An RFC 9457 problem document.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A relative URI of a page that explains the problem: `/problems/<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// Stable: clients branch on this, never on `detail`.
    pub code: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_params: Vec<InvalidParam>,
    /// Added to every problem by the request-id middleware.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Every error code the API answers with, its status and title.
pub const CODES: &[(&str, u16, &str, &str)] = &[
    ("malformed_json", 400, "Malformed JSON", "The body is not valid JSON. The detail names the line and column."),
    (
        "invalid_query",
        400,
        "Invalid query parameters",
        "A query parameter has the wrong form; `invalid_params` names it.",
    ),
    ("invalid_cursor", 400, "Invalid cursor", "Use the `next_cursor` of a previous page unchanged."),
    (
        "invalid_header",
        400,
        "Invalid header",
        "A header has the wrong form (for example an empty or over-long Idempotency-Key).",
    ),
    (
        "callback_malformed",
        400,
        "Malformed provider callback",
        "The callback is signed correctly but is not a payload of this provider.",
    ),
    (
        "callback_signature_invalid",
        401,
        "Provider callback signature invalid",
        "The provider's signature header is missing or does not match the body with this account's secret. \
         Nothing was stored.",
    ),
    (
        "callback_forbidden",
        403,
        "Provider verification refused",
        "The verification handshake's token is not this account's verify token.",
    ),
    ("unauthorized", 401, "Missing or invalid API key", "Send `Authorization: Bearer <key>` with an active API key."),
    (
        "forbidden",
        403,
        "API key lacks a scope",
        "The key is valid but lacks the scope this route needs; the detail names it.",
    ),
    ("not_found", 404, "Not found", "Nothing with that id exists in your workspace."),
    // routing
    (
        "no_route",
        422,
        "No channel can reach the contact",
        "With channel auto, no channel could carry this content to the contact now: invalid_params names each \
         channel and why it was passed over (no_identity, content_not_supported, no_channel_account, \
         whatsapp_window_closed).",
    ),
    (
        "invalid_route",
        422,
        "Invalid route",
        "A route needs 1 to 5 steps, each on a different channel account; every step but the last may say when \
         to move on (failed, or not_delivered / not_read within 30 to 172,800 seconds); the last step has no \
         condition. invalid_params names the step.",
    ),
    (
        "route_step_unreachable",
        422,
        "Route step cannot reach the recipient",
        "A step of the route is on a channel where the recipient has no address (a contact without an identity \
         there, or a phone number on web chat).",
    ),
    // conversations
    (
        "not_sandbox_account",
        422,
        "Not a sandbox account",
        "Only sandbox channel accounts can simulate received messages; real ones receive from their provider.",
    ),
    (
        "conversation_closed",
        409,
        "Conversation closed",
        "Only an open conversation can be assigned or handed over; a new message to its contact opens a new one.",
    ),
    ("method_not_allowed", 405, "Method not allowed", "The path exists but not with this method."),
    (
        "message_not_cancelable",
        409,
        "Message can no longer be canceled",
        "It has been handed to a provider or has ended.",
    ),
    (
        "message_in_flight",
        409,
        "Message is being sent",
        "A dispatcher is handing it to the provider right now; it can no longer be canceled.",
    ),
    (
        "message_not_inbound",
        409,
        "Not an inbound message",
        "Only messages customers sent (with a provider id and a channel account that still exists) can be marked \
         as read.",
    ),
    ("payload_too_large", 413, "Payload too large", "Request bodies are limited to 1 MiB."),
    ("unsupported_media_type", 415, "Unsupported media type", "Send `Content-Type: application/json`."),
    (
        "validation_failed",
        422,
        "Validation failed",
        "The request is well-formed but some values are not acceptable; `invalid_params` names them.",
    ),
    (
        "unknown_field",
        422,
        "Unknown field",
        "The body has a field this route does not know; `invalid_params` names it.",
    ),
    (
        "invalid_phone_number",
        422,
        "Invalid phone number",
        "The number is not valid for any region; write it with + and the country code, or give default_region.",
    ),
    (
        "channel_account_not_found",
        422,
        "Channel account not found",
        "The channel account does not exist in this workspace, or is for another channel.",
    ),
    // contacts
    (
        "invalid_identity",
        422,
        "Invalid identity",
        "Write identities as channel:address: sms:+4915112345678 (E.164 with its +), whatsapp:4915112345678, \
         rcs:+…, webchat:<visitor id of 1 to 128 visible ASCII characters>.",
    ),
    (
        "unknown_time_zone",
        422,
        "Unknown time zone",
        "Use an IANA time zone name such as Europe/Berlin or America/New_York.",
    ),
    ("invalid_locale", 422, "Invalid locale", "Use a BCP 47 tag such as en, pt-BR or zh-Hant-TW."),
    (
        "invalid_tag",
        422,
        "Invalid tag",
        "Tags are 1 to 64 of A-Z, a-z, 0-9, '_', ':', '.' and '-'; a contact has at most 50.",
    ),
    (
        "invalid_attributes",
        422,
        "Invalid attributes",
        "Attributes are a JSON object of at most 16 KiB (as compact JSON).",
    ),
    (
        "invalid_contact",
        422,
        "Invalid contact",
        "A field of the contact is unknown or has the wrong type; `invalid_params` names it.",
    ),
    (
        "identity_conflict",
        409,
        "Identity belongs to another contact",
        "An identity belongs to one contact of the workspace; the detail names its owner. Merge the two contacts, \
         or remove the identity from its owner first.",
    ),
    ("invalid_merge", 422, "Invalid merge", "A contact cannot be merged with itself."),
    (
        "invalid_import",
        422,
        "Import file refused",
        "The file cannot be imported as a whole (an unknown column, no identity column, not UTF-8); nothing was \
         stored. Problems of single rows are reported per row instead.",
    ),
    (
        "content_not_supported",
        422,
        "Content not supported on the channel",
        "SMS carries text and media links; WhatsApp text, templates, media, interactive messages, reactions and \
         locations; RCS text (with suggestions), media, rich cards and carousels; web chat all of them. Inbound-only \
         kinds (reply, other) cannot be sent.",
    ),
    (
        "reaction_target_not_found",
        422,
        "Message to react to not found",
        "A reaction's message_id names a Parley message (msg_…) that is not in this workspace or has no provider \
         id yet (it has not been sent, or was never received). Provider ids are passed through as they are.",
    ),
    // ---- messaging policy: consent, opt-outs, caps, the WhatsApp window ----
    (
        "recipient_opted_out",
        422,
        "Recipient opted out",
        "The recipient opted out of this purpose on this channel (STOP, or the API). The send was recorded as a \
         rejected message (`message_id`) and not handed to a provider. It stays so until they opt in again.",
    ),
    (
        "consent_required",
        422,
        "Consent required",
        "Marketing messages need the recipient's opt-in on the channel; record it with \
         POST /v1/contacts/{id}/consents. The send was recorded as a rejected message (`message_id`).",
    ),
    (
        "frequency_cap_exceeded",
        422,
        "Frequency cap exceeded",
        "The workspace's frequency cap for this purpose allows no more messages to this contact now (the \
         messaging policy's `cap_action` is `reject`). The send was recorded as a rejected message (`message_id`).",
    ),
    (
        "whatsapp_window_closed",
        422,
        "WhatsApp window closed",
        "Free-form WhatsApp messages may only follow a customer message by 24 hours; send an approved template \
         instead. The send was recorded as a rejected message (`message_id`) and not handed to Meta.",
    ),
    ("contact_not_found", 422, "Contact not found", "The message's contact_id is not a contact of this workspace."),
    (
        "no_identity_for_channel",
        422,
        "No address on the channel",
        "The contact has no identity (address) on the message's channel; add one or send on another channel.",
    ),
    (
        "read_receipts_not_supported",
        422,
        "Read reports not supported",
        "This channel account's provider cannot show the customer that a message was read (WhatsApp can).",
    ),
    ("unknown_provider", 422, "Unknown provider", "The provider is none of sandbox, whatsapp, rbm, smpp or twilio."),
    (
        "provider_channel_mismatch",
        422,
        "Provider does not serve the channel",
        "WhatsApp accounts serve whatsapp, RBM serves rcs, SMPP serves sms, Twilio serves sms and whatsapp; the \
         sandbox serves all.",
    ),
    (
        "invalid_channel_account_config",
        422,
        "Invalid channel account settings",
        "A setting or credential of the provider is missing or invalid; `invalid_params` names it.",
    ),
    (
        "credentials_unavailable",
        422,
        "Credentials cannot be stored",
        "The server has no sealing key for credentials; the operator sets `secrets.key` (or lets Parley create \
         the key file in its data directory).",
    ),
    ("no_channel_account", 422, "No channel account", "The workspace has no channel account for this channel."),
    (
        "idempotency_key_reused",
        422,
        "Idempotency key reused",
        "This Idempotency-Key was used in the last 24 hours with a different request.",
    ),
    ("too_many_messages", 422, "Too many messages", "A batch takes at most 1,000 messages."),
    (
        "invalid_last_event_id",
        422,
        "Unknown Last-Event-ID",
        "The Last-Event-ID is not an event of this workspace. Resume with the id of an event the stream \
         sent, or connect without the header to start from now.",
    ),
    (
        "webhook_url_invalid",
        422,
        "Invalid webhook URL",
        "The endpoint URL must be an absolute http(s) URL with a host, without user name or password, \
         at most 2,048 characters.",
    ),
    (
        "webhook_url_not_allowed",
        422,
        "Webhook URL not allowed",
        "The endpoint URL is, or resolves to, a loopback, private, link-local or metadata address. Use a \
         public address, or ask the operator to allow the range.",
    ),
    (
        "webhook_url_unresolvable",
        422,
        "Webhook URL cannot be resolved",
        "The endpoint's host name has no address. Check the name, or try again if its DNS is changing.",
    ),
    (
        "unknown_event_type",
        422,
        "Unknown event type",
        "An entry of event_types is neither a known event type, a family like `message.*`, nor `*`.",
    ),
    (
        "rate_limited",
        429,
        "Rate limited",
        "This API key sent more requests than its limit allows. Wait for the seconds in Retry-After; the \
         RateLimit-* headers of every answer show how much is left.",
    ),
    (
        "provider_error",
        502,
        "Provider error",
        "The provider refused the request or could not be reached; the detail has its error code.",
    ),
    ("internal_error", 500, "Internal error", "A bug on our side. It was logged with the request id."),
    (
        "unavailable",
        503,
        "Service unavailable",
        "The database cannot be reached or the server is shutting down. Try again shortly.",
    ),
];

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub invalid_params: Vec<InvalidParam>,
}

impl ApiError {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        let status = CODES
            .iter()
            .find(|(c, ..)| *c == code)
            .and_then(|(_, s, ..)| StatusCode::from_u16(*s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError { status, code, detail: detail.into(), invalid_params: Vec::new() }
    }

    pub fn with_param(mut self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.invalid_params.push(InvalidParam { name: name.into(), reason: reason.into() });
        self
    }

    pub fn with_params(mut self, params: Vec<InvalidParam>) -> Self {
        self.invalid_params.extend(params);
        self
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new("not_found", format!("{what} not found"))
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        ApiError::new("internal_error", "An internal error occurred; it has been logged with the request id.")
    }

    pub fn problem(&self) -> Problem {
        let title = CODES.iter().find(|(c, ..)| *c == self.code).map_or("Error", |(_, _, t, _)| t);
        Problem {
            type_: format!("/problems/{}", self.code),
            title: title.to_string(),
            status: self.status.as_u16(),
            code: self.code.to_string(),
            detail: self.detail.clone(),
            invalid_params: self.invalid_params.clone(),
            request_id: None,
        }
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<parley_engine::EngineError> for ApiError {
    fn from(e: parley_engine::EngineError) -> Self {
        ApiError::from(&e)
    }
}

/// Per-item errors of a batch are read by reference.
impl From<&parley_engine::EngineError> for ApiError {
    fn from(e: &parley_engine::EngineError) -> Self {
        use parley_engine::EngineError as E;
        match e {
            E::NoChannelAccount(channel) => {
                ApiError::new("no_channel_account", format!("no channel account for {channel}"))
                    .with_param("channel", "no channel account for this channel")
            }
            E::ChannelAccountNotFound(_) | E::ChannelAccountMismatch { .. } => {
                let detail = e.to_string();
                ApiError::new("channel_account_not_found", detail.clone()).with_param("channel_account_id", detail)
            }
            E::Webhook(parley_engine::webhooks::WebhookError::Url(refused)) => {
                ApiError::new(refused.code(), refused.to_string()).with_param("url", refused.to_string())
            }
            E::Webhook(parley_engine::webhooks::WebhookError::EventType(unknown)) => {
                ApiError::new("unknown_event_type", unknown.to_string()).with_param("event_types", unknown.to_string())
            }
            E::ReactionTargetNotFound(_) => {
                let detail = e.to_string();
                ApiError::new("reaction_target_not_found", detail.clone()).with_param("content.message_id", detail)
            }
            E::Contact(e) => crate::routes::contacts::contact_error(e),
            E::Conversation(e) => crate::routes::conversations::conversation_error(e),
            E::Policy(e) => crate::routes::consents::policy_error(e),
            E::Store(parley_store::StoreError::Closed) => ApiError::new("unavailable", "the server is shutting down"),
            E::Store(s) => ApiError::internal(s),
        }
    }
}

impl From<parley_store::StoreError> for ApiError {
    fn from(e: parley_store::StoreError) -> Self {
        match e {
            parley_store::StoreError::Closed => ApiError::new("unavailable", "the server is shutting down"),
            other => ApiError::internal(other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
