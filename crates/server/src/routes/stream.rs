//! `GET /v1/stream`: the workspace's events as they happen (message events, and events about the
//! workspace such as `endpoint.disabled`), as Server-Sent Events.
//!
//! Each SSE message is one event envelope: `id:` the event id, `event:` its type, `data:` the
//! envelope as JSON. A client that reconnects with `Last-Event-ID` continues right after that
//! event, with nothing lost and nothing repeated; an id the workspace does not have is refused
//! (422) rather than silently starting over. The engine does the following; this handler only
//! parses the request and frames the events.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Auth, Invalid, Query};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use parley_domain::{Channel, EventEnvelope, EventId, Scope};
use parley_engine::webhooks::EventTypeFilter;
use parley_engine::{StreamFilter, StreamStart, Subscription};
use serde::Deserialize;
use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A comment line this often keeps proxies and clients from taking a quiet stream for a dead one.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events written to a connection in one piece, at most, when several are waiting.
const BATCH_EVENTS: usize = 128;
const BATCH_BYTES: usize = 256 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated event types, exact (`message.delivered`, `endpoint.disabled`) or every type
    /// of a resource (`message.*`, `conversation.*`). Without it, every type.
    #[param(example = "message.delivered,message.failed")]
    pub types: Option<String>,
    /// Comma-separated channels (`sms`, `whatsapp`, `rcs`, `webchat`). Without it, every channel.
    /// Events about the workspace (`endpoint.disabled`, …) have no channel: with a channel filter
    /// they are left out.
    #[param(example = "sms,whatsapp")]
    pub channel: Option<String>,
}

/// Follow the workspace's events live (Server-Sent Events).
///
/// Starts with the events recorded after the request, or, with `Last-Event-ID`, right after that
/// event (also across server restarts): every event exactly once, in the order Parley recorded
/// them. Each message is `id: <event id>`, `event: <type>` and `data: <the event envelope>`; a
/// comment line every 15 seconds keeps the connection alive. A client that stops reading for
/// about 10 seconds loses its stream and should reconnect with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/stream", tag = "messages",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header,
            description = "Continue after this event (`evt_…`, the `id` of the last event received)."),
    ),
    responses(
        (status = 200, description = "A stream of events; each `data:` is one envelope", body = EventEnvelope,
            content_type = "text/event-stream"),
        (status = 422, description = "Unknown event type or channel (validation_failed), or a Last-Event-ID \
            that is not an event of this workspace (invalid_last_event_id)",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn stream(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Response> {
    auth.require(Scope::MessagesRead)?;
    let filter = filter(&q)?;
    let start = match last_event_id(&headers)? {
        None => StreamStart::Now,
        Some(id) => match state.engine.store().event_position(auth.workspace(), id).await? {
            Some(position) => StreamStart::After(position),
            None => return Err(unknown_last_event_id(&format!("no event {id} in this workspace"))),
        },
    };
    let subscription = state.engine.subscribe(auth.workspace(), start, filter).await?;
    let body = futures::stream::unfold(subscription, |mut subscription| async move {
        let chunk = next_chunk(&mut subscription).await?;
        Some((Ok::<_, Infallible>(chunk), subscription))
    });
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        // Proxies that buffer responses (nginx) would hold events back.
        (HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}

/// What to write next: the events waiting, in one piece (each is its SSE message, rendered once
/// for every subscriber), or a keep-alive comment after a quiet spell; `None` when the stream
/// ends. Writing what has piled up at once keeps a busy stream to a few writes per second
/// instead of one per event.
async fn next_chunk(subscription: &mut Subscription) -> Option<Bytes> {
    let first = match tokio::time::timeout(KEEP_ALIVE, subscription.next()).await {
        Err(_) => return Some(Bytes::from_static(b":\n\n")),
        Ok(event) => event?,
    };
    let Some(second) = subscription.try_next() else { return Some(first.sse.clone()) };
    let mut chunk = BytesMut::with_capacity(first.sse.len() * 8);
    chunk.extend_from_slice(&first.sse);
    chunk.extend_from_slice(&second.sse);
    let mut events = 2;
    while events < BATCH_EVENTS && chunk.len() < BATCH_BYTES {
        let Some(event) = subscription.try_next() else { break };
        chunk.extend_from_slice(&event.sse);
        events += 1;
    }
    Some(chunk.freeze())
}

/// The filters of the query; every unknown type and channel is named in one answer.
fn filter(q: &StreamQuery) -> ApiResult<StreamFilter> {
    let mut invalid = Invalid::default();
    // The same vocabulary as webhook endpoints' `event_types` (exact types, `message.*`,
    // `endpoint.*`, `*`); each entry is checked on its own so that every bad one is named.
    let types = q.types.as_deref().map(|raw| {
        let mut entries: Vec<String> = Vec::new();
        for item in items(raw) {
            match EventTypeFilter::parse(&[item]) {
                Ok(f) => entries.extend(f.into_entries()),
                Err(_) => invalid.add(
                    "types",
                    format!("'{}' is not an event type (message.delivered, message.*, endpoint.*, …)", clip(item)),
                ),
            }
        }
        if items(raw).next().is_none() {
            invalid.add("types", "name at least one event type, or leave the parameter out");
        }
        EventTypeFilter::from_stored(entries)
    });
    let channels = q.channel.as_deref().map(|raw| {
        let mut channels = HashSet::new();
        for item in items(raw) {
            match Channel::parse(item) {
                Some(channel) => {
                    channels.insert(channel);
                }
                None => {
                    invalid.add("channel", format!("'{}' is not a channel (sms, whatsapp, rcs, webchat)", clip(item)))
                }
            }
        }
        if items(raw).next().is_none() {
            invalid.add("channel", "name at least one channel, or leave the parameter out");
        }
        channels
    });
    invalid.into_result()?;
    Ok(StreamFilter { types, channels })
}

fn items(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Client input echoed in a problem, kept short.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The `Last-Event-ID` header, if sent (an empty one counts as not sent, as in the SSE spec).
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<EventId>> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    let text = value.to_str().map_err(|_| unknown_last_event_id("the Last-Event-ID header is not text"))?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    EventId::parse(text)
        .map(Some)
        .map_err(|_| unknown_last_event_id(&format!("'{}' is not an event id (evt_…)", clip(text))))
}

fn unknown_last_event_id(detail: &str) -> ApiError {
    ApiError::new(
        "invalid_last_event_id",
        format!("{detail}: send the id of an event this stream gave you, or no Last-Event-ID to start from now"),
    )
    .with_param("Last-Event-ID", "not an event of this workspace")
}
