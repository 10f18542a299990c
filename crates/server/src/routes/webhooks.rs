//! `/v1/webhook-endpoints` and `/v1/webhook-events/{id}/redeliver`: where the workspace's events
//! are delivered, signed per Standard Webhooks (admin scope). An endpoint's signing secret is
//! shown when it is created and when it is rotated, never otherwise.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Auth, Invalid, Json, Query};
use crate::routes::{List, into_page, page_limit, read_cursor};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use parley_domain::{EventId, Millis, Scope, WebhookAttemptId, WebhookEndpointId};
use parley_engine::webhooks::{EndpointChanges, NewEndpoint};
use parley_store::{WebhookAttempt, WebhookEndpoint};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_attempts))
        .routes(routes!(redeliver_event))
}

/// A webhook endpoint as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointResource {
    /// `wh_…`
    pub id: WebhookEndpointId,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The event types it receives (exact, `message.*`, or `*`); empty means all.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why Parley disabled it: `gone` (it answered 410) or `failing` (every attempt failed for 5
    /// days). Absent when enabled or disabled by a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<Millis>,
    /// Since when every attempt has failed (absent after a success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Millis>,
    /// Until then, deliveries are signed with the previous secret too (after a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<Millis>,
    /// The signing secret (`whsec_…`). Only in the answers to creation and rotation: store it
    /// now, it is not shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl From<WebhookEndpoint> for WebhookEndpointResource {
    fn from(e: WebhookEndpoint) -> Self {
        let now = Millis::now();
        WebhookEndpointResource {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            disabled_at: e.disabled_at,
            failing_since: e.failing_since,
            previous_secret_expires_at: e.previous_secret_expires_at.filter(|until| *until > now),
            secret: None,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// `https://…` (or `http://…`); it must resolve to public addresses unless the operator
    /// allows more. Redirects are not followed.
    pub url: String,
    /// At most 500 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Exact types (`message.delivered`), families (`message.*`) or `*`; empty or absent: all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A JSON Merge Patch of an endpoint: absent fields stay, `description: null` clears it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointRequest {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Enabling a disabled endpoint starts it from the events recorded from then on.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A field that is present (maybe `null`) as `Some`, so that `null` can mean "clear".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn check_description(description: Option<&str>, invalid: &mut Invalid) {
    if let Some(d) = description
        && (d.chars().count() > 500 || d.chars().any(char::is_control))
    {
        invalid.add("description", "at most 500 characters, without control characters");
    }
}

/// Register a webhook endpoint. It receives the events recorded from now on; the answer holds
/// its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", request_body = CreateEndpointRequest,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = WebhookEndpointResource),
        (status = 403, description = "The key lacks admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or refused URL (`webhook_url_invalid`, `webhook_url_not_allowed`, \
            `webhook_url_unresolvable`), unknown event type (`unknown_event_type`)", body = Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn create_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Json(req): Json<CreateEndpointRequest>,
) -> ApiResult<impl IntoResponse> {
    auth.require(Scope::Admin)?;
    let mut invalid = Invalid::default();
    check_description(req.description.as_deref(), &mut invalid);
    invalid.into_result()?;
    let description = req.description.filter(|d| !d.trim().is_empty());
    let new = NewEndpoint { url: req.url, description, event_types: req.event_types, enabled: req.enabled };
    let endpoint = state.engine.create_webhook_endpoint(auth.workspace(), new).await?;
    let location = format!("/v1/webhook-endpoints/{}", endpoint.id);
    let secret = endpoint.secret.clone();
    let mut resource = WebhookEndpointResource::from(endpoint);
    resource.secret = Some(secret);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(resource)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1 to 1,000 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The workspace's webhook endpoints, newest first.
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks", params(PageQuery),
    responses(
        (status = 200, description = "A page of endpoints", body = List<WebhookEndpointResource>),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn list_endpoints(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<List<WebhookEndpointResource>>> {
    auth.require(Scope::Admin)?;
    let limit = page_limit(q.limit)?;
    let before = read_cursor(q.cursor.as_deref(), |raw| WebhookEndpointId::parse(raw).ok())?;
    let rows = state.engine.store().list_webhook_endpoints(auth.workspace(), before, limit + 1).await?;
    Ok(axum::Json(into_page(rows, limit, |e| e.id.to_string())))
}

fn endpoint_id(id: &str) -> ApiResult<WebhookEndpointId> {
    WebhookEndpointId::parse(id).map_err(|_| ApiError::not_found("webhook endpoint"))
}

/// One webhook endpoint (without its secret).
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id (`wh_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookEndpointResource),
        (status = 404, description = "No such endpoint in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn get_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<WebhookEndpointResource>> {
    auth.require(Scope::Admin)?;
    match state.engine.store().get_webhook_endpoint(auth.workspace(), endpoint_id(&id)?).await? {
        Some(endpoint) => Ok(axum::Json(endpoint.into())),
        None => Err(ApiError::not_found("webhook endpoint")),
    }
}

/// Change an endpoint (JSON Merge Patch).
#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", request_body = UpdateEndpointRequest,
    params(("id" = String, Path, description = "The endpoint id (`wh_…`)")),
    responses(
        (status = 200, description = "The endpoint as it is now", body = WebhookEndpointResource),
        (status = 404, description = "No such endpoint in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or refused URL, unknown event type", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn update_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(req): Json<UpdateEndpointRequest>,
) -> ApiResult<axum::Json<WebhookEndpointResource>> {
    auth.require(Scope::Admin)?;
    let id = endpoint_id(&id)?;
    let mut invalid = Invalid::default();
    check_description(req.description.as_ref().and_then(Option::as_deref), &mut invalid);
    invalid.into_result()?;
    let changes = EndpointChanges {
        url: req.url,
        description: req.description.map(|d| d.filter(|d| !d.trim().is_empty())),
        event_types: req.event_types,
        enabled: req.enabled,
    };
    match state.engine.update_webhook_endpoint(auth.workspace(), id, changes).await? {
        Some(endpoint) => Ok(axum::Json(endpoint.into())),
        None => Err(ApiError::not_found("webhook endpoint")),
    }
}

/// Delete an endpoint, with its pending retries and its attempt log.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id (`wh_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn delete_endpoint(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    auth.require(Scope::Admin)?;
    if state.engine.store().delete_webhook_endpoint(auth.workspace(), endpoint_id(&id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}

/// Give the endpoint a new signing secret. For 24 hours the old secret signs too (the
/// `webhook-signature` header carries both), so receivers can switch without missing an event.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id (`wh_…`)")),
    responses(
        (status = 200, description = "Rotated; `secret` is the new one, shown only now", body = WebhookEndpointResource),
        (status = 404, description = "No such endpoint in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn rotate_secret(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<WebhookEndpointResource>> {
    auth.require(Scope::Admin)?;
    match state.engine.rotate_webhook_secret(auth.workspace(), endpoint_id(&id)?).await? {
        Some(endpoint) => {
            let secret = endpoint.secret.clone();
            let mut resource = WebhookEndpointResource::from(endpoint);
            resource.secret = Some(secret);
            Ok(axum::Json(resource))
        }
        None => Err(ApiError::not_found("webhook endpoint")),
    }
}

/// One delivery attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookAttemptResource {
    /// `wha_…`
    pub id: WebhookAttemptId,
    pub endpoint_id: WebhookEndpointId,
    pub event_id: EventId,
    pub event_type: String,
    /// 1 for the first attempt of a delivery, +1 for each retry.
    pub attempt: i32,
    /// `scheduled` (the feed or a retry) or `manual` (a redelivery).
    pub trigger: &'static str,
    /// The HTTP status answered; absent when there was no answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub succeeded: bool,
    /// Why there was no answer (timeout, refused connection, refused address) or what the
    /// answer meant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: i64,
    /// The start of the response body (at most 1 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    pub attempted_at: Millis,
    /// When the next attempt is due; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Millis>,
}

impl From<WebhookAttempt> for WebhookAttemptResource {
    fn from(a: WebhookAttempt) -> Self {
        WebhookAttemptResource {
            id: a.id,
            endpoint_id: a.endpoint_id,
            event_id: a.event_id,
            event_type: a.event_type,
            attempt: a.attempt,
            trigger: if a.manual { "manual" } else { "scheduled" },
            status_code: a.status_code,
            succeeded: a.succeeded,
            error: a.error,
            latency_ms: a.latency_ms,
            response_excerpt: a.response_excerpt,
            attempted_at: a.attempted_at,
            next_attempt_at: a.next_attempt_at,
        }
    }
}

/// The endpoint's delivery attempts, newest first.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/attempts", tag = "webhooks", params(
        ("id" = String, Path, description = "The endpoint id (`wh_…`)"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of attempts", body = List<WebhookAttemptResource>),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn list_attempts(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<List<WebhookAttemptResource>>> {
    auth.require(Scope::Admin)?;
    let id = endpoint_id(&id)?;
    let limit = page_limit(q.limit)?;
    let before = read_cursor(q.cursor.as_deref(), |raw| WebhookAttemptId::parse(raw).ok())?;
    let Some(rows) = state.engine.webhook_attempts(auth.workspace(), id, before, limit + 1).await? else {
        return Err(ApiError::not_found("webhook endpoint"));
    };
    Ok(axum::Json(into_page(rows, limit, |a| a.id.to_string())))
}

/// The endpoints a redelivery goes to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RedeliveryResource {
    pub event_id: EventId,
    /// Every enabled endpoint that wants the event's type (may be empty).
    pub endpoints: Vec<WebhookEndpointId>,
}

/// Deliver an event again, now, to every enabled endpoint that wants its type; a failed
/// redelivery is retried on the usual schedule.
#[utoipa::path(post, path = "/v1/webhook-events/{id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "The event id (`evt_…`)")),
    responses(
        (status = 202, description = "Scheduled", body = RedeliveryResource),
        (status = 404, description = "No such event in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn redeliver_event(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<RedeliveryResource>)> {
    auth.require(Scope::Admin)?;
    let id = EventId::parse(&id).map_err(|_| ApiError::not_found("event"))?;
    match state.engine.redeliver_event(auth.workspace(), id).await? {
        Some(r) => {
            Ok((StatusCode::ACCEPTED, axum::Json(RedeliveryResource { event_id: r.event_id, endpoints: r.endpoints })))
        }
        None => Err(ApiError::not_found("event")),
    }
}
