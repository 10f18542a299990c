//! Operations: health, readiness, metrics, the OpenAPI document and the problem pages.

use crate::AppState;
use crate::error::{ApiError, CODES};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi)).route("/problems/{code}", get(problem_page))
}

/// Health, readiness and metrics, documented in the OpenAPI document.
pub fn documented_router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(readyz))
        .routes(utoipa_axum::routes!(metrics))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'static str>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> impl IntoResponse {
    axum::Json(Health { status: "ok", database: None })
}

/// The process can serve: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready; `database` names the backend", body = Health),
    (status = 503, description = "The database does not answer", body = crate::error::Problem, content_type = "application/problem+json"),
))]
async fn readyz(State(state): State<AppState>) -> Response {
    let backend = state.engine.store().backend();
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.engine.store().ping()).await {
        Ok(Ok(())) => axum::Json(Health { status: "ok", database: Some(backend) }).into_response(),
        Ok(Err(e)) => ApiError::new("unavailable", format!("the database does not answer: {e}")).into_response(),
        Err(_) => ApiError::new("unavailable", "the database did not answer within 2 s").into_response(),
    }
}

/// Prometheus metrics (text exposition format 0.0.4).
///
/// Counted by this process: HTTP requests, accepted messages, message events, send durations and
/// provider errors; read from the database at each scrape: messages by channel and state, and the
/// dispatch queue. No key needed; switched off with `metrics.enabled = false`, then 404.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses(
    (status = 200, description = "Prometheus text exposition format, version 0.0.4", body = String, content_type = "text/plain"),
    (status = 404, description = "Metrics are switched off in this process's configuration", body = crate::error::Problem, content_type = "application/problem+json"),
))]
async fn metrics(State(state): State<AppState>) -> Response {
    if !state.metrics {
        return ApiError::new("not_found", "no such route").into_response();
    }
    let text = state.engine.render_metrics().await;
    ([(header::CONTENT_TYPE, parley_engine::METRICS_CONTENT_TYPE)], text).into_response()
}

async fn openapi(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi_json.clone()).into_response()
}

/// A short page per error code, which problem documents link to as their `type`.
async fn problem_page(Path(code): Path<String>) -> Response {
    match CODES.iter().find(|(c, ..)| *c == code) {
        Some((code, status, title, help)) => Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>HTTP {status}, code <code>{code}</code>.</p><p>{help}</p></body></html>"
        ))
        .into_response(),
        None => (StatusCode::NOT_FOUND, Html("<!doctype html><p>No such problem type.</p>")).into_response(),
    }
}
