//! `/v1/message-events`: every message event of the workspace in the order Parley recorded
//! them, for followers such as `parley tail`. Poll with the `next_cursor` of the last page.
//!
//! The feed also holds events about the workspace (`endpoint.disabled`, …); this list is about
//! messages and leaves them out (the live stream and webhooks carry them), but its cursor moves
//! past them.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Auth, Query};
use crate::routes::{List, encode_cursor, page_limit, read_cursor};
use axum::extract::State;
use parley_domain::{Channel, MessageEvent, Scope};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_message_events))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedItem {
    pub channel: Channel,
    #[serde(flatten)]
    pub event: MessageEvent,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// 1 to 1,000; default 50.
    pub limit: Option<u32>,
    /// Continue after this cursor (from `next_cursor`). Without it the feed starts at the oldest
    /// event; with `from=now` it starts after the newest.
    pub cursor: Option<String>,
    /// `now`: skip everything recorded so far.
    pub from: Option<String>,
}

/// Message events in recording order, oldest first.
///
/// Unlike other lists, `next_cursor` is always set: it points after the last event returned (or
/// stays where it was when nothing is new), so a follower polls with it forever.
#[utoipa::path(get, path = "/v1/message-events", tag = "messages", params(FeedQuery),
    responses(
        (status = 200, description = "Events after the cursor", body = List<FeedItem>),
        (status = 400, description = "Bad cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn list_message_events(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<FeedQuery>,
) -> ApiResult<axum::Json<List<FeedItem>>> {
    auth.require(Scope::MessagesRead)?;
    let limit = page_limit(q.limit)?;
    let store = state.engine.store();
    let mut after = read_cursor(q.cursor.as_deref(), |p| p.parse::<i64>().ok())?.unwrap_or(0);
    match q.from.as_deref() {
        None => {}
        Some("now") => after = store.latest_event_position(auth.workspace()).await?,
        Some(other) => {
            return Err(ApiError::new("invalid_query", format!("from must be 'now', not '{other}'"))
                .with_param("from", "only 'now'"));
        }
    }
    let events = store.events_after(auth.workspace(), after, limit).await?;
    let position = events.last().map_or(after, |e| e.position);
    let data = events
        .into_iter()
        .filter_map(|e| match e.item {
            parley_store::FeedItem::Message { channel, event } => Some(FeedItem { channel, event }),
            parley_store::FeedItem::Workspace(_) => None,
        })
        .collect();
    Ok(axum::Json(List { data, next_cursor: Some(encode_cursor(&position.to_string())) }))
}
