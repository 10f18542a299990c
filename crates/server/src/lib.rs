//! Parley's HTTP face: the `/v1` API, health and readiness, the OpenAPI document, problem pages.
//!
//! Handlers only orchestrate: extractors authenticate and parse (every failure becomes an RFC
//! 9457 problem with a stable code), the engine does the work, and the answer is the resource.
//! This crate never touches SQL and holds no state of its own beyond the [`AppState`].
//! [`serve`] is the one entry point, used by the binary and by tests with a port-0 listener.

pub mod error;
pub mod extract;
pub mod openapi;
pub mod ratelimit;
pub mod routes;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use error::{ApiError, PROBLEM_JSON};
use parley_engine::Engine;
use std::future::Future;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// The OpenAPI document, rendered once.
    pub openapi_json: bytes::Bytes,
    /// `GET /metrics` answers (else 404).
    pub metrics: bool,
    /// Per-key request limits (`None`: unlimited).
    pub rate_limiter: Option<std::sync::Arc<ratelimit::RateLimiter>>,
}

/// What the server offers beyond the API, as configured.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Serve `GET /metrics` (Prometheus text, no key needed) and count HTTP requests for it.
    pub metrics: bool,
    /// Requests per API key (`None`: unlimited).
    pub rate_limit: Option<ratelimit::RateLimitSettings>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions { metrics: true, rate_limit: Some(ratelimit::RateLimitSettings::default()) }
    }
}

/// The whole application with the default options.
pub fn app(engine: Engine) -> Router {
    app_with(engine, &ServerOptions::default())
}

/// The whole application: every route and the middleware around them.
pub fn app_with(engine: Engine, options: &ServerOptions) -> Router {
    let (api, mut doc) = openapi::api_router().split_for_parts();
    openapi::finish(&mut doc);
    let openapi_json = bytes::Bytes::from(serde_json::to_vec_pretty(&doc).unwrap_or_default());
    let rate_limiter = options.rate_limit.map(|settings| std::sync::Arc::new(ratelimit::RateLimiter::new(settings)));
    let state = AppState { engine: engine.clone(), openapi_json, metrics: options.metrics, rate_limiter };
    let app = api
        .merge(routes::ops::router())
        .fallback(|| async { ApiError::new("not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new("method_not_allowed", "this path does not take that method")
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            tracing::error!("a request handler panicked");
            ApiError::new("internal_error", "An internal error occurred; it has been logged.").into_response()
        }))
        .layer(middleware::from_fn(ratelimit::headers))
        .layer(middleware::from_fn(request_id))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ));
    // Outermost, so that it sees what the client sees (time-outs and panics included).
    if options.metrics { app.layer(middleware::from_fn_with_state(engine, http_metrics)) } else { app }
}

/// Count and time every request for `/metrics`. `Router::layer` runs this after routing, so the
/// route is the matched template (`/v1/messages/{id}`); an unmatched request counts as
/// `unmatched`, never by its raw path, which keeps the series bounded whatever clients send.
async fn http_metrics(State(engine): State<Engine>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    engine.metrics().http_request(method.as_str(), route, response.status().as_u16(), started.elapsed());
    response
}

/// Give every request an id (the client's `X-Request-Id` if it sent a sane one), echo it, log
/// the request with it, and put it into problem documents.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()));
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = std::time::Instant::now();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let status = response.status();
    let mut response = if response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == PROBLEM_JSON) {
        add_request_id(response, &id).await
    } else {
        response
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let _entered = span.enter();
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    }
    response
}

async fn add_request_id(response: Response, id: &str) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("request_id".into(), serde_json::Value::String(id.to_string()));
            serde_json::to_vec(&map).unwrap_or_else(|_| bytes.to_vec())
        }
        _ => bytes.to_vec(),
    };
    let mut response = Response::from_parts(parts, Body::from(body));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// Serve the API on `listener` until `shutdown` completes; then stop taking requests, finish the
/// ones in progress, and return. The engine is not stopped here (its owner does that after).
pub async fn serve(
    engine: Engine,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(engine, listener, ServerOptions::default(), shutdown).await
}

/// [`serve`] with `options`.
pub async fn serve_with(
    engine: Engine,
    listener: tokio::net::TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Open event streams never end by themselves and would hold the graceful shutdown up: they
    // are ended as soon as the server stops taking requests (clients resume with Last-Event-ID).
    let streams = engine.clone();
    let shutdown = async move {
        shutdown.await;
        streams.close_streams();
    };
    axum::serve(listener, app_with(engine, &options)).with_graceful_shutdown(shutdown).await
}
