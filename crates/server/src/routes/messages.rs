//! `/v1/messages`: send (one or a batch), read, list and cancel outbound messages.

use crate::AppState;
use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{Auth, Invalid, JsonBytes, Query, from_value, idempotency_key, parse_json};
use crate::routes::{List, into_page, page_limit, read_cursor};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parley_domain::route::{MAX_MOVE_ON_SECONDS, MAX_ROUTE_STEPS, MIN_MOVE_ON_SECONDS};
use parley_domain::{
    Address, AddressError, Channel, ChannelAccountId, ContactId, Content, E164, Message, MessageId, MessageState,
    Millis, MoveOn, Purpose, Scope,
};
use parley_engine::{
    AcceptOutcome, EngineError, IdempotencyInput, MAX_VALIDITY_SECONDS, MIN_VALIDITY_SECONDS, RouteStepSpec, SendSpec,
};
use parley_store::{CancelOutcome, MessageFilter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub const MAX_BATCH: usize = 1000;
pub const MAX_METADATA_KEYS: usize = 16;
/// How far ahead `send_at` may lie.
pub const MAX_SCHEDULE_DAYS: i64 = 90;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_message, list_messages))
        .routes(routes!(send_batch))
        .routes(routes!(get_message))
        .routes(routes!(cancel_message))
        .routes(routes!(mark_read))
}

/// A message to send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"to": "+49 151 23456789", "channel": "sms", "content": {"type": "text", "text": "Your code is 123456"}}))]
pub struct SendMessageRequest {
    /// The recipient: a phone number in any common written form (normalised to E.164), or a web
    /// chat visitor id for `webchat`. Give either `to` or `contact_id`.
    #[serde(default)]
    pub to: Option<String>,
    /// Send to this contact (`ctc_…`) instead of an address: its most recent identity on the
    /// channel is used.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub contact_id: Option<String>,
    /// `sms`, `whatsapp`, `rcs`, `webchat`, or `auto` with `contact_id`: Parley chooses the
    /// contact's first preferred channel that can carry the content now (it has an address there,
    /// an account exists, and for free-form WhatsApp the 24-hour window is open), else WhatsApp,
    /// RCS, SMS, web chat in that order; the `accepted` event says which and why.
    #[serde(default)]
    pub channel: Option<ChannelChoice>,
    /// ISO 3166-1 alpha-2 region for numbers written without a country code (`DE`, `IN`).
    #[serde(default)]
    pub default_region: Option<String>,
    /// Send through this channel account instead of the workspace's default for the channel.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub channel_account_id: Option<String>,
    /// What to send. With a `route` whose every step has its own content it may be left out.
    #[serde(default)]
    pub content: Option<Content>,
    /// Send with fallback, instead of `channel`: up to 5 steps tried in order, each a channel
    /// (and optionally an account and its own content) with when to move on to the next one:
    /// `{"when": "failed"}` (the default), `{"when": "not_delivered", "within_seconds": 60}` or
    /// `{"when": "not_read", "within_seconds": 3600}` (30 to 172,800 seconds after the step's
    /// provider took it). One message, one id: each step is an attempt with its own provider id,
    /// and moving on is a `fallback` event. Steps the messaging policy refuses are left out.
    #[serde(default)]
    pub route: Option<Vec<RouteStepRequest>>,
    /// Send at this time (RFC 3339) instead of now; at most 90 days ahead.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<String>,
    /// Give up if it cannot be handed to the provider within this many seconds (counted from
    /// `send_at` or now): 5 to 1,209,600; default 172,800 (48 h).
    #[serde(default)]
    pub validity_seconds: Option<i64>,
    /// Up to 16 string pairs, returned with the message and its events.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Your own reference (at most 256 characters).
    #[serde(default)]
    pub client_reference: Option<String>,
    /// Why it is sent: `transactional` (the default), `marketing` (needs the recipient's opt-in
    /// and waits out quiet hours), or your own slug (`otp`, `account_alerts`; a-z, 0-9, _).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "transactional")]
    pub purpose: Option<String>,
    /// Hold the message while the contact's quiet hours last (`true`) or not (`false`). By
    /// default marketing waits and every other purpose goes at once.
    #[serde(default)]
    pub respect_quiet_hours: Option<bool>,
}

/// One step of a route.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channel": "whatsapp", "move_on": {"when": "not_delivered", "within_seconds": 60}}))]
pub struct RouteStepRequest {
    pub channel: Channel,
    /// This channel account instead of the workspace's default for the channel.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub channel_account_id: Option<String>,
    /// This step's own content (a template on WhatsApp, plain text on SMS, …).
    #[serde(default)]
    pub content: Option<Content>,
    /// When to move on to the next step; `{"when": "failed"}` when left out. Not on the last step.
    #[serde(default)]
    pub move_on: Option<MoveOn>,
}

/// The channel a send asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelChoice {
    Sms,
    Whatsapp,
    Rcs,
    Webchat,
    /// Parley chooses, for a `contact_id`.
    Auto,
}

impl ChannelChoice {
    /// The channel asked for; `None` for `auto`.
    fn channel(self) -> Option<Channel> {
        match self {
            ChannelChoice::Sms => Some(Channel::Sms),
            ChannelChoice::Whatsapp => Some(Channel::Whatsapp),
            ChannelChoice::Rcs => Some(Channel::Rcs),
            ChannelChoice::Webchat => Some(Channel::Webchat),
            ChannelChoice::Auto => None,
        }
    }
}

/// Check a request and turn it into what the engine takes; `prefix` names fields of batch items.
fn validate(req: SendMessageRequest, prefix: &str) -> Result<SendSpec, ApiError> {
    let name = |field: &str| if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
    let contact_id = match (&req.to, req.contact_id.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new("validation_failed", "give either to or contact_id, not both")
                .with_param(name("contact_id"), "not with to"));
        }
        (None, None) => {
            return Err(ApiError::new("validation_failed", "the recipient is missing: give to or contact_id")
                .with_param(name("to"), "missing field `to` (or give contact_id)"));
        }
        (None, Some(raw)) => Some(ContactId::parse(raw).map_err(|e| {
            ApiError::new("validation_failed", e.to_string()).with_param(name("contact_id"), e.to_string())
        })?),
        (Some(_), None) => None,
    };
    let route = match req.route {
        None => None,
        Some(steps) => {
            if req.channel.is_some() || req.channel_account_id.is_some() {
                let reason = "give channel (and channel_account_id) or route, not both";
                return Err(ApiError::new("validation_failed", reason).with_param(name("route"), reason));
            }
            Some(validate_route(steps, &name)?)
        }
    };
    // Without its own `content`, a route whose every step has content sends the first step's.
    let first_own = route
        .as_ref()
        .filter(|steps| steps.iter().all(|s| s.content.is_some()))
        .and_then(|steps| steps[0].content.clone());
    let Some(content) = req.content.or(first_own) else {
        return Err(ApiError::new("validation_failed", "content: missing field `content`")
            .with_param(name("content"), "missing field `content`"));
    };
    let choice = match (req.channel, &route) {
        (Some(choice), _) => choice,
        (None, Some(steps)) => step_choice(steps[0].channel),
        (None, None) => {
            return Err(ApiError::new("validation_failed", "channel: missing field `channel`")
                .with_param(name("channel"), "missing field `channel` (or give route)"));
        }
    };
    let chosen = choice.channel();
    if chosen.is_none() && (contact_id.is_none() || req.channel_account_id.is_some()) {
        let reason = "auto needs contact_id, and chooses the channel's default account itself";
        return Err(ApiError::new("validation_failed", format!("channel {reason}")).with_param(name("channel"), reason));
    }
    // With `auto` there is no `to` to read (checked above); the engine chooses the channel.
    let channel = chosen.unwrap_or(Channel::Sms);
    let to = match req.to.as_deref().map(|to| Address::parse(channel, to, req.default_region.as_deref())) {
        None => None,
        Some(Ok(address)) => Some(address),
        Some(Err(e @ AddressError::InvalidPhoneNumber { .. })) => {
            return Err(
                ApiError::new("invalid_phone_number", e.to_string()).with_param(name("to"), "not a valid phone number")
            );
        }
        Some(Err(e @ AddressError::UnknownRegion(_))) => {
            return Err(
                ApiError::new("validation_failed", e.to_string()).with_param(name("default_region"), e.to_string())
            );
        }
        Some(Err(e)) => {
            return Err(ApiError::new("validation_failed", e.to_string()).with_param(name("to"), e.to_string()));
        }
    };
    if let (Some(steps), Some(_)) = (&route, &to) {
        // One address for every step: the phone channels share a number; web chat has visitors.
        let webchat = |s: &RouteStepSpec| s.channel == Channel::Webchat;
        if steps.iter().any(webchat) && !steps.iter().all(webchat) {
            let reason = "a route to one address cannot mix web chat with phone channels: send to a contact_id";
            return Err(ApiError::new("invalid_route", reason).with_param(name("route"), reason));
        }
    }
    let mut invalid = Invalid::default();
    // The channels the message's own content goes on: the chosen one (none for `auto`), or the
    // route's steps without content of their own.
    let carried_on: Vec<Channel> = match &route {
        Some(steps) => steps.iter().filter(|s| s.content.is_none()).map(|s| s.channel).collect(),
        None => chosen.into_iter().collect(),
    };
    if let Err(e) = content.validate() {
        invalid.add(name(&format!("content.{}", e.field)), e.reason);
    } else if let Some(channel) = carried_on.into_iter().find(|c| !content.supported_on(*c)) {
        let detail = format!("{} content cannot be sent on {}", content.kind(), channel.as_str());
        return Err(ApiError::new("content_not_supported", detail.clone()).with_param(name("content"), detail));
    }
    let channel_account_id = match req.channel_account_id.as_deref().map(ChannelAccountId::parse) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            invalid.add(name("channel_account_id"), e.to_string());
            None
        }
    };
    let now = Millis::now();
    let send_at = match req.send_at.as_deref().map(Millis::parse_rfc3339) {
        None => None,
        Some(Ok(at)) if at > now.plus_seconds(MAX_SCHEDULE_DAYS * 86_400) => {
            invalid.add(name("send_at"), format!("must be at most {MAX_SCHEDULE_DAYS} days ahead"));
            None
        }
        Some(Ok(at)) => Some(at),
        Some(Err(reason)) => {
            invalid.add(name("send_at"), reason);
            None
        }
    };
    if let Some(v) = req.validity_seconds.filter(|v| !(MIN_VALIDITY_SECONDS..=MAX_VALIDITY_SECONDS).contains(v)) {
        invalid
            .add(name("validity_seconds"), format!("{v} is outside {MIN_VALIDITY_SECONDS} to {MAX_VALIDITY_SECONDS}"));
    }
    let metadata = req.metadata.unwrap_or_default();
    if metadata.len() > MAX_METADATA_KEYS {
        invalid.add(name("metadata"), format!("has {} keys; at most {MAX_METADATA_KEYS} are allowed", metadata.len()));
    }
    for (k, v) in &metadata {
        if k.is_empty() || k.chars().count() > 40 || v.chars().count() > 500 {
            invalid.add(
                name(&format!("metadata.{}", k.chars().take(40).collect::<String>())),
                "keys need 1 to 40 characters and values at most 500",
            );
        }
    }
    if let Some(r) = req.client_reference.as_ref() {
        if r.is_empty() || r.chars().count() > 256 {
            invalid.add(name("client_reference"), format!("must be 1 to 256 characters, not {}", r.chars().count()));
        } else if r.chars().any(char::is_control) {
            invalid.add(name("client_reference"), "must not contain control characters");
        }
    }
    let purpose = match req.purpose.as_deref().map(Purpose::parse) {
        None => Purpose::transactional(),
        Some(Ok(purpose)) => purpose,
        Some(Err(e)) => {
            invalid.add(name("purpose"), e.to_string());
            Purpose::transactional()
        }
    };
    invalid.into_result()?;
    Ok(SendSpec {
        channel,
        to,
        channel_account_id,
        content,
        send_at,
        validity_seconds: req.validity_seconds,
        metadata,
        client_reference: req.client_reference,
        contact_id,
        purpose,
        respect_quiet_hours: req.respect_quiet_hours,
        auto_channel: chosen.is_none(),
        route,
    })
}

/// The channel choice a route's first step stands for.
fn step_choice(channel: Channel) -> ChannelChoice {
    match channel {
        Channel::Sms => ChannelChoice::Sms,
        Channel::Whatsapp => ChannelChoice::Whatsapp,
        Channel::Rcs => ChannelChoice::Rcs,
        Channel::Webchat => ChannelChoice::Webchat,
    }
}

/// Check a route's steps: 1 to 5, no channel account twice (a cycle), timeouts in bounds,
/// no condition on the last step, each step's own content valid for its channel.
fn validate_route(steps: Vec<RouteStepRequest>, name: &dyn Fn(&str) -> String) -> Result<Vec<RouteStepSpec>, ApiError> {
    if steps.is_empty() || steps.len() > MAX_ROUTE_STEPS {
        let reason = format!("a route has 1 to {MAX_ROUTE_STEPS} steps, not {}", steps.len());
        return Err(ApiError::new("invalid_route", reason.clone()).with_param(name("route"), reason));
    }
    let mut invalid = Invalid::default();
    let last = steps.len() - 1;
    let mut specs: Vec<RouteStepSpec> = Vec::with_capacity(steps.len());
    for (i, step) in steps.into_iter().enumerate() {
        let field = |f: &str| name(&format!("route[{i}]{f}"));
        let account = match step.channel_account_id.as_deref().map(ChannelAccountId::parse) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(e)) => {
                invalid.add(field(".channel_account_id"), e.to_string());
                None
            }
        };
        if let Some(j) = specs.iter().position(|s| s.channel == step.channel && s.channel_account_id == account) {
            invalid.add(field(""), format!("repeats step {j}: a route visits each channel account once"));
        }
        match (i == last, step.move_on.and_then(MoveOn::within_seconds)) {
            (true, _) if step.move_on.is_some() => {
                invalid.add(field(".move_on"), "the last step has no step to move on to");
            }
            (_, Some(s)) if !(MIN_MOVE_ON_SECONDS..=MAX_MOVE_ON_SECONDS).contains(&s) => {
                invalid.add(
                    field(".move_on.within_seconds"),
                    format!("{s} is outside {MIN_MOVE_ON_SECONDS} to {MAX_MOVE_ON_SECONDS}"),
                );
            }
            _ => {}
        }
        if let Some(content) = &step.content {
            if let Err(e) = content.validate() {
                invalid.add(field(&format!(".content.{}", e.field)), e.reason);
            } else if !content.supported_on(step.channel) {
                invalid.add(
                    field(".content"),
                    format!("{} content cannot be sent on {}", content.kind(), step.channel.as_str()),
                );
            }
        }
        specs.push(RouteStepSpec {
            channel: step.channel,
            channel_account_id: account,
            content: step.content,
            move_on: if i == last { None } else { Some(step.move_on.unwrap_or(MoveOn::Failed {})) },
        });
    }
    if !invalid.0.is_empty() {
        let detail = invalid.0.iter().map(|p| format!("{}: {}", p.name, p.reason)).collect::<Vec<_>>().join("; ");
        return Err(ApiError::new("invalid_route", detail).with_params(invalid.0));
    }
    Ok(specs)
}

/// The request fingerprint that an idempotency key is bound to: the route and the body's JSON
/// in canonical form (keys sorted, no whitespace), so that formatting does not matter.
pub(crate) fn fingerprint(route: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body).map(|v| v.to_string()).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

fn json_response(status: u16, body: Vec<u8>, replayed: bool, location: Option<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() { "application/json" } else { PROBLEM_JSON };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

fn accepted_response(outcome: AcceptOutcome, location: Option<String>) -> ApiResult<Response> {
    match outcome {
        AcceptOutcome::Created { status, body } => Ok(json_response(status, body, false, location)),
        AcceptOutcome::Replayed { status, body } => {
            // The original answer names the message that was created the first time.
            let location = location.and_then(|_| {
                let id = serde_json::from_slice::<serde_json::Value>(&body).ok()?.get("id")?.as_str()?.to_string();
                Some(format!("/v1/messages/{id}"))
            });
            Ok(json_response(status, body, true, location))
        }
        AcceptOutcome::KeyReused => Err(ApiError::new(
            "idempotency_key_reused",
            "this Idempotency-Key was used in the last 24 hours with a different request",
        )
        .with_param("Idempotency-Key", "already used with a different request")),
    }
}

fn problem_bytes(e: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&e.problem()).unwrap_or_default()
}

/// The problem an item refused by the engine is answered with. A send the messaging policy
/// refused was recorded as a `rejected` message: its id is the `message_id` extension member.
fn refusal(e: &EngineError) -> ItemProblem {
    let message_id = match e {
        EngineError::Policy(p) => p.message_id(),
        _ => None,
    };
    ItemProblem { problem: ApiError::from(e).problem(), message_id }
}

/// A problem document that may name the message recorded for the refused request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// The `rejected` message recorded for a send the messaging policy refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub message_id: Option<MessageId>,
}

/// Send a message.
///
/// Answers 202 once the message is stored durably: a crash after this answer does not lose it.
#[utoipa::path(post, path = "/v1/messages", tag = "messages",
    request_body = SendMessageRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 h; 1 to 255 visible ASCII characters")),
    responses(
        (status = 202, description = "Accepted; stored durably", body = Message,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is a replay"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks messages:write", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid values (invalid_phone_number, validation_failed, unknown_field, idempotency_key_reused, …)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn send_message(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    auth.require(Scope::MessagesWrite)?;
    let key = idempotency_key(&headers)?;
    let request: SendMessageRequest = parse_json(&body, "")?;
    let spec = validate(request, "")?;
    let idempotency = key.map(|key| IdempotencyInput { key, request_hash: fingerprint("POST /v1/messages", &body) });
    accept_one(&state, auth.workspace(), spec, idempotency).await
}

/// Accept one send and answer as `POST /v1/messages` does: 202 with the message and its
/// `Location`, or the problem of the refusal (with the `rejected` message's id when the policy
/// refused it); with an idempotency key, the first answer again.
pub(crate) async fn accept_one(
    state: &AppState,
    workspace: parley_domain::WorkspaceId,
    spec: SendSpec,
    idempotency: Option<IdempotencyInput>,
) -> ApiResult<Response> {
    let mut location = None;
    let outcome = state
        .engine
        .accept(workspace, vec![spec], idempotency, |items: &[Result<Message, EngineError>]| match items.first() {
            Some(Ok(m)) => {
                location = Some(format!("/v1/messages/{}", m.id));
                (202, serde_json::to_vec(m).unwrap_or_default())
            }
            Some(Err(e)) => {
                let problem = refusal(e);
                (problem.problem.status, serde_json::to_vec(&problem).unwrap_or_default())
            }
            None => (500, Vec::new()),
        })
        .await?;
    accepted_response(outcome, location)
}

/// Up to 1,000 messages in one request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(value_type = Vec<SendMessageRequest>)]
    pub messages: Vec<serde_json::Value>,
}

/// The answer for one item of a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// The item's position in the request, from 0.
    pub index: usize,
    /// 202 when accepted, else the status a single send would have answered.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemProblem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub data: Vec<BatchItem>,
    pub accepted: usize,
    pub rejected: usize,
}

/// Send up to 1,000 messages.
///
/// Each item is checked and answered on its own; the accepted ones are stored in one
/// transaction. Answers 202 when at least one item was accepted, else 422 naming every problem.
#[utoipa::path(post, path = "/v1/messages/batch", tag = "messages",
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 h")),
    responses(
        (status = 202, description = "At least one item accepted", body = BatchResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No item accepted, or more than 1,000 items", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn send_batch(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    auth.require(Scope::MessagesWrite)?;
    let key = idempotency_key(&headers)?;
    let request: BatchRequest = parse_json(&body, "")?;
    if request.messages.len() > MAX_BATCH {
        return Err(ApiError::new(
            "too_many_messages",
            format!("{} messages; a batch takes at most {MAX_BATCH}", request.messages.len()),
        )
        .with_param("messages", format!("at most {MAX_BATCH} items")));
    }
    if request.messages.is_empty() {
        return Err(
            ApiError::new("validation_failed", "the batch is empty").with_param("messages", "at least one item")
        );
    }
    // Check every item first; only the valid ones go to the engine.
    let mut slots: Vec<Result<usize, ApiError>> = Vec::with_capacity(request.messages.len());
    let mut specs = Vec::new();
    for (i, item) in request.messages.into_iter().enumerate() {
        let prefix = format!("messages[{i}]");
        match from_value::<SendMessageRequest>(item, &prefix).and_then(|r| validate(r, &prefix)) {
            Ok(spec) => {
                slots.push(Ok(specs.len()));
                specs.push(spec);
            }
            Err(e) => slots.push(Err(e)),
        }
    }
    if specs.is_empty() {
        return Err(no_item_accepted(slots.into_iter().filter_map(Result::err).collect()));
    }
    let idempotency =
        key.map(|key| IdempotencyInput { key, request_hash: fingerprint("POST /v1/messages/batch", &body) });
    let outcome = state
        .engine
        .accept(auth.workspace(), specs, idempotency, |items: &[Result<Message, EngineError>]| {
            let data: Vec<BatchItem> = slots
                .iter()
                .enumerate()
                .map(|(index, slot)| {
                    let result = match slot {
                        Ok(k) => match items.get(*k) {
                            Some(Ok(m)) => Ok(m.clone()),
                            Some(Err(e)) => Err(refusal(e)),
                            None => Err(ItemProblem {
                                problem: ApiError::internal("batch item missing").problem(),
                                message_id: None,
                            }),
                        },
                        Err(e) => Err(ItemProblem { problem: e.problem(), message_id: None }),
                    };
                    match result {
                        Ok(m) => BatchItem { index, status: 202, message: Some(m), error: None },
                        Err(e) => BatchItem { index, status: e.problem.status, message: None, error: Some(e) },
                    }
                })
                .collect();
            let accepted = data.iter().filter(|d| d.message.is_some()).count();
            let response = BatchResponse { rejected: data.len() - accepted, accepted, data };
            if accepted == 0 {
                // An item refused by the messaging policy names no parameter: it is named by its
                // position, with its code and the rejected message it was recorded as.
                let params = response
                    .data
                    .into_iter()
                    .filter_map(|d| d.error.map(|e| (d.index, e)))
                    .flat_map(|(index, e)| match e.message_id {
                        Some(id) => vec![crate::error::InvalidParam {
                            name: format!("messages[{index}]"),
                            reason: format!(
                                "{}: {} (recorded as the rejected message {id})",
                                e.problem.code, e.problem.detail
                            ),
                        }],
                        None => e.problem.invalid_params,
                    })
                    .collect();
                let e =
                    ApiError::new("validation_failed", "no message of the batch could be accepted").with_params(params);
                return (422, problem_bytes(&e));
            }
            (202, serde_json::to_vec(&response).unwrap_or_default())
        })
        .await?;
    accepted_response(outcome, None)
}

fn no_item_accepted(errors: Vec<ApiError>) -> ApiError {
    let params = errors.iter().flat_map(|e| e.invalid_params.clone()).collect();
    let detail = errors.iter().map(|e| e.detail.as_str()).take(5).collect::<Vec<_>>().join("; ");
    ApiError::new("validation_failed", format!("no message of the batch could be accepted: {detail}"))
        .with_params(params)
}

fn parse_message_id(raw: &str) -> ApiResult<MessageId> {
    // A malformed id cannot exist: answer as for any unknown id.
    MessageId::parse(raw).map_err(|_| ApiError::not_found("message"))
}

/// A message with its event timeline.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "The message id (`msg_…`)")),
    responses(
        (status = 200, description = "The message with `events`, oldest first", body = Message),
        (status = 404, description = "No such message in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn get_message(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Message>> {
    auth.require(Scope::MessagesRead)?;
    let id = parse_message_id(&id)?;
    let message = state.engine.store().get_message(auth.workspace(), id, true).await?;
    message.map(axum::Json).ok_or_else(|| ApiError::not_found("message"))
}

/// Filters and paging of `GET /v1/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListMessagesQuery {
    /// 1 to 1,000; default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub status: Option<MessageState>,
    pub channel: Option<Channel>,
    /// Recipient; phone numbers are compared in E.164.
    pub to: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_from: Option<Millis>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_to: Option<Millis>,
}

/// List messages, newest first.
#[utoipa::path(get, path = "/v1/messages", tag = "messages",
    params(ListMessagesQuery),
    responses(
        (status = 200, description = "A page of messages", body = List<Message>),
        (status = 400, description = "Bad query parameter or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn list_messages(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListMessagesQuery>,
) -> ApiResult<axum::Json<List<Message>>> {
    auth.require(Scope::MessagesRead)?;
    let limit = page_limit(q.limit)?;
    let before = read_cursor(q.cursor.as_deref(), |raw| MessageId::parse(raw).ok())?;
    if q.to.as_ref().is_some_and(|to| to.len() > 128 || to.chars().any(char::is_control)) {
        return Err(ApiError::new(
            "invalid_query",
            "to must be a phone number or visitor id of at most 128 characters",
        )
        .with_param("to", "a phone number or visitor id"));
    }
    let to = q.to.map(|to| E164::parse(&to, None).map(|n| n.as_str().to_string()).unwrap_or(to));
    let filter = MessageFilter {
        status: q.status,
        channel: q.channel,
        to,
        created_from: q.created_from,
        created_to: q.created_to,
        before,
    };
    let rows = state.engine.store().list_messages(auth.workspace(), &filter, limit + 1).await?;
    Ok(axum::Json(into_page(rows, limit, |m| m.id.to_string())))
}

/// Cancel a message that has not been handed to a provider yet.
#[utoipa::path(post, path = "/v1/messages/{id}/cancel", tag = "messages",
    params(("id" = String, Path, description = "The message id (`msg_…`)")),
    responses(
        (status = 200, description = "Canceled", body = Message),
        (status = 404, description = "No such message in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too late: message_not_cancelable or message_in_flight", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn cancel_message(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Message>> {
    auth.require(Scope::MessagesWrite)?;
    let id = parse_message_id(&id)?;
    match state.engine.cancel_message(auth.workspace(), id).await? {
        CancelOutcome::Canceled(m) => Ok(axum::Json(*m)),
        CancelOutcome::NotFound => Err(ApiError::not_found("message")),
        CancelOutcome::NotCancelable(status) => Err(ApiError::new(
            "message_not_cancelable",
            format!("the message is {} and can no longer be canceled", status.as_str()),
        )),
        CancelOutcome::InFlight => {
            Err(ApiError::new("message_in_flight", "the message is being handed to the provider right now"))
        }
    }
}

/// Tell the customer that their inbound message was read (WhatsApp's blue ticks; a no-op
/// nowhere: channels that cannot show it answer `read_receipts_not_supported`).
#[utoipa::path(post, path = "/v1/messages/{id}/read", tag = "messages",
    params(("id" = String, Path, description = "The inbound message's id (`msg_…`)")),
    responses(
        (status = 204, description = "The provider took the read report"),
        (status = 404, description = "No such message in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not an inbound message (`message_not_inbound`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The channel cannot show reads (`read_receipts_not_supported`)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider refused or could not be reached (`provider_error`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn mark_read(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    use parley_engine::accounts::MarkReadError;
    auth.require(Scope::MessagesWrite)?;
    let id = parse_message_id(&id)?;
    match state.engine.mark_read(auth.workspace(), id).await? {
        None => Err(ApiError::not_found("message")),
        Some(Ok(())) => Ok(StatusCode::NO_CONTENT),
        Some(Err(e @ (MarkReadError::NotInbound | MarkReadError::AccountUnavailable))) => {
            Err(ApiError::new("message_not_inbound", e.to_string()))
        }
        Some(Err(MarkReadError::Provider(error))) if error.code == "read_receipts_not_supported" => {
            Err(ApiError::new("read_receipts_not_supported", error.detail))
        }
        Some(Err(MarkReadError::Provider(error))) => {
            Err(ApiError::new("provider_error", format!("{}: {}", error.code, error.detail)))
        }
    }
}
