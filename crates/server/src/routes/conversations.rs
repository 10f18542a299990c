//! `/v1/conversations`: one thread per contact across every channel, its timeline, replies,
//! assignment to agents and bots, hand-over and closing.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Auth, Invalid, JsonBytes, Query, idempotency_key, parse_json};
use crate::routes::messages::{accept_one, fingerprint};
use crate::routes::{List, into_page, page_limit, read_cursor};
use axum::extract::{Path, State};
use axum::response::Response;
use parley_domain::{
    ActivityKind, Assignee, AssigneeKind, Channel, ChannelAccountId, ContactId, Content, Conversation,
    ConversationActivity, ConversationId, ConversationStatus, Message, Millis, Purpose, Scope,
};
use parley_engine::conversations::{ConversationError, Reply};
use parley_engine::{IdempotencyInput, MAX_VALIDITY_SECONDS, MIN_VALIDITY_SECONDS};
use parley_store::{AssigneeFilter, ConversationFilter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_conversations))
        .routes(routes!(get_conversation))
        .routes(routes!(reply))
        .routes(routes!(close_conversation))
        .routes(routes!(assign_conversation))
        .routes(routes!(hand_off_conversation))
}

/// The problem a refused conversation request is answered with.
pub fn conversation_error(e: &ConversationError) -> ApiError {
    match e {
        ConversationError::NotFound(_) => ApiError::not_found("conversation"),
        ConversationError::Closed(_) => ApiError::new("conversation_closed", e.to_string()),
        ConversationError::NoIdentity { .. } => {
            ApiError::new("no_identity_for_channel", e.to_string()).with_param("channel", e.to_string())
        }
        ConversationError::ContactGone => ApiError::new("contact_not_found", e.to_string()),
    }
}

fn parse_id(raw: &str) -> ApiResult<ConversationId> {
    // An id that cannot be one of ours names nothing here: 404, as for any unknown id.
    ConversationId::parse(raw).map_err(|_| ApiError::not_found("conversation"))
}

/// One entry of a conversation's timeline: a message (of any channel) or an activity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineEntry {
    Message { at: Millis, message: Box<Message> },
    Activity { at: Millis, activity: ConversationActivity },
}

/// A conversation with its whole cross-channel timeline, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationWithTimeline {
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Messages of every channel and what happened to the conversation (opened, assigned, handed
    /// off, closed), in time order; the newest 500 messages at most.
    pub timeline: Vec<TimelineEntry>,
}

/// Filters and paging of `GET /v1/conversations`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListConversationsQuery {
    /// 1 to 1,000; default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub status: Option<ConversationStatus>,
    /// Conversations with at least one message on this channel.
    pub channel: Option<Channel>,
    /// `ctc_…`
    pub contact_id: Option<String>,
    /// `none` (unassigned), `agent` or `bot` (any of that kind), or `agent:<id>` / `bot:<id>`.
    pub assignee: Option<String>,
}

fn assignee_filter(raw: &str) -> Option<AssigneeFilter> {
    if raw == "none" {
        return Some(AssigneeFilter::Unassigned);
    }
    match raw.split_once(':') {
        None => AssigneeKind::parse(raw).map(AssigneeFilter::Kind),
        Some((kind, id)) => Assignee::new(AssigneeKind::parse(kind)?, id).ok().map(AssigneeFilter::Exactly),
    }
}

/// List conversations, newest first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations",
    params(ListConversationsQuery),
    responses(
        (status = 200, description = "A page of conversations", body = List<Conversation>),
        (status = 400, description = "Bad query parameter or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn list_conversations(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListConversationsQuery>,
) -> ApiResult<axum::Json<List<Conversation>>> {
    auth.require(Scope::MessagesRead)?;
    let limit = page_limit(q.limit)?;
    let before = read_cursor(q.cursor.as_deref(), |raw| ConversationId::parse(raw).ok())?;
    let contact_id = match q.contact_id.as_deref().map(ContactId::parse) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            return Err(ApiError::new("invalid_query", e.to_string()).with_param("contact_id", e.to_string()));
        }
    };
    let assignee = match q.assignee.as_deref() {
        None => None,
        Some(raw) => Some(assignee_filter(raw).ok_or_else(|| {
            ApiError::new("invalid_query", "assignee must be none, agent, bot, agent:<id> or bot:<id>")
                .with_param("assignee", "none, agent, bot, agent:<id> or bot:<id>")
        })?),
    };
    let filter = ConversationFilter { status: q.status, channel: q.channel, contact_id, assignee, before };
    let rows = state.engine.list_conversations(auth.workspace(), &filter, limit + 1).await?;
    Ok(axum::Json(into_page(rows, limit, |c: &Conversation| c.id.to_string())))
}

/// A conversation with its whole cross-channel timeline.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation id (`cnv_…`)")),
    responses(
        (status = 200, description = "The conversation and its timeline", body = ConversationWithTimeline),
        (status = 404, description = "No such conversation in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn get_conversation(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ConversationWithTimeline>> {
    auth.require(Scope::MessagesRead)?;
    let id = parse_id(&id)?;
    let view =
        state.engine.conversation(auth.workspace(), id).await?.ok_or_else(|| ApiError::not_found("conversation"))?;
    let mut timeline: Vec<TimelineEntry> = view
        .messages
        .into_iter()
        .map(|m| TimelineEntry::Message { at: m.created_at, message: Box::new(m) })
        .chain(view.activities.into_iter().map(|a| TimelineEntry::Activity { at: a.at, activity: a }))
        .collect();
    // Stable: at one instant, `opened` comes before the message that opened it, and a message
    // before the `closed` that followed it.
    let rank = |e: &TimelineEntry| match e {
        TimelineEntry::Activity { activity, .. } if activity.kind == ActivityKind::Opened => 0,
        TimelineEntry::Message { .. } => 1,
        TimelineEntry::Activity { .. } => 2,
    };
    timeline.sort_by_key(|e| match e {
        TimelineEntry::Message { at, .. } | TimelineEntry::Activity { at, .. } => (*at, rank(e)),
    });
    Ok(axum::Json(ConversationWithTimeline { conversation: view.conversation, timeline }))
}

/// A reply in a conversation. Unset fields follow the conversation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    pub content: Content,
    /// Default: the channel the customer last wrote from, else the conversation's last channel.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// Default: the account the customer last wrote to on that channel.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub channel_account_id: Option<String>,
    /// `transactional` (the default) or another purpose, as for `POST /v1/messages`.
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub validity_seconds: Option<i64>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub client_reference: Option<String>,
}

fn validate_reply(req: ReplyRequest) -> ApiResult<Reply> {
    let mut invalid = Invalid::default();
    if let Err(e) = req.content.validate() {
        invalid.add(format!("content.{}", e.field), e.reason);
    }
    let channel_account_id = match req.channel_account_id.as_deref().map(ChannelAccountId::parse) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            invalid.add("channel_account_id", e.to_string());
            None
        }
    };
    let purpose = match req.purpose.as_deref().map(Purpose::parse) {
        None => Purpose::transactional(),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            invalid.add("purpose", e.to_string());
            Purpose::transactional()
        }
    };
    if let Some(v) = req.validity_seconds.filter(|v| !(MIN_VALIDITY_SECONDS..=MAX_VALIDITY_SECONDS).contains(v)) {
        invalid.add("validity_seconds", format!("{v} is outside {MIN_VALIDITY_SECONDS} to {MAX_VALIDITY_SECONDS}"));
    }
    let metadata = req.metadata.unwrap_or_default();
    if metadata.len() > 16 {
        invalid.add("metadata", format!("has {} keys; at most 16 are allowed", metadata.len()));
    }
    if req.client_reference.as_ref().is_some_and(|r| r.is_empty() || r.chars().count() > 256) {
        invalid.add("client_reference", "must be 1 to 256 characters");
    }
    invalid.into_result()?;
    Ok(Reply {
        content: req.content,
        channel: req.channel,
        channel_account_id,
        purpose,
        validity_seconds: req.validity_seconds,
        metadata,
        client_reference: req.client_reference,
    })
}

/// Reply in a conversation: a message to its contact, on the channel the customer last wrote
/// from unless told otherwise, through the same checks as `POST /v1/messages`.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations",
    params(
        ("id" = String, Path, description = "The conversation id (`cnv_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 h"),
    ),
    request_body = ReplyRequest,
    responses(
        (status = 202, description = "Accepted; stored durably", body = Message),
        (status = 404, description = "No such conversation in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid values, no_identity_for_channel, or refused by policy", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn reply(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    auth.require(Scope::MessagesWrite)?;
    let id = parse_id(&id)?;
    let key = idempotency_key(&headers)?;
    let request: ReplyRequest = parse_json(&body, "")?;
    let spec = state.engine.reply_spec(auth.workspace(), id, validate_reply(request)?).await?;
    if !spec.content.supported_on(spec.channel) {
        let detail = format!("{} content cannot be sent on {}", spec.content.kind(), spec.channel.as_str());
        return Err(ApiError::new("content_not_supported", detail.clone()).with_param("content", detail));
    }
    let route = format!("POST /v1/conversations/{id}/messages");
    let idempotency = key.map(|key| IdempotencyInput { key, request_hash: fingerprint(&route, &body) });
    accept_one(&state, auth.workspace(), spec, idempotency).await
}

/// Close a conversation now. The next message to or from its contact opens a new one.
#[utoipa::path(post, path = "/v1/conversations/{id}/close", tag = "conversations",
    params(("id" = String, Path, description = "The conversation id (`cnv_…`)")),
    responses(
        (status = 200, description = "Closed (or already closed)", body = Conversation),
        (status = 404, description = "No such conversation in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn close_conversation(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Conversation>> {
    auth.require(Scope::MessagesWrite)?;
    let id = parse_id(&id)?;
    Ok(axum::Json(state.engine.close_conversation(auth.workspace(), id).await?))
}

/// Who should handle the conversation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// `{"kind": "agent" | "bot", "id": "…"}`, or `null` to take it from whoever has it.
    pub assignee: Option<Assignee>,
}

/// A hand-over: to whom, and what they need to know.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffRequest {
    /// `{"kind": "agent" | "bot", "id": "…"}`: a bot handing over to an agent, or back.
    pub to: Assignee,
    /// What the next assignee needs to know (1 to 4,000 characters).
    pub note: String,
}

fn checked_assignee(assignee: Assignee, field: &str) -> ApiResult<Assignee> {
    Assignee::new(assignee.kind, &assignee.id)
        .map_err(|e| ApiError::new("validation_failed", e.to_string()).with_param(format!("{field}.id"), e.to_string()))
}

/// Assign the conversation to an agent or a bot, or to nobody. Records `conversation.assigned`.
#[utoipa::path(post, path = "/v1/conversations/{id}/assign", tag = "conversations",
    params(("id" = String, Path, description = "The conversation id (`cnv_…`)")),
    request_body = AssignRequest,
    responses(
        (status = 200, description = "Assigned", body = Conversation),
        (status = 404, description = "No such conversation in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "conversation_closed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn assign_conversation(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> ApiResult<axum::Json<Conversation>> {
    auth.require(Scope::MessagesWrite)?;
    let id = parse_id(&id)?;
    let request: AssignRequest = parse_json(&body, "")?;
    let assignee = request.assignee.map(|a| checked_assignee(a, "assignee")).transpose()?;
    Ok(axum::Json(state.engine.assign_conversation(auth.workspace(), id, assignee, None).await?))
}

/// Hand the conversation over (a bot to an agent, or back) with a note for whoever takes it.
/// Records `conversation.assigned` with the note.
#[utoipa::path(post, path = "/v1/conversations/{id}/handoff", tag = "conversations",
    params(("id" = String, Path, description = "The conversation id (`cnv_…`)")),
    request_body = HandoffRequest,
    responses(
        (status = 200, description = "Handed over", body = Conversation),
        (status = 404, description = "No such conversation in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "conversation_closed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn hand_off_conversation(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> ApiResult<axum::Json<Conversation>> {
    auth.require(Scope::MessagesWrite)?;
    let id = parse_id(&id)?;
    let request: HandoffRequest = parse_json(&body, "")?;
    let to = checked_assignee(request.to, "to")?;
    let note = request.note.trim();
    if note.is_empty() || note.chars().count() > 4000 {
        return Err(ApiError::new("validation_failed", "note must have 1 to 4,000 characters")
            .with_param("note", "1 to 4,000 characters"));
    }
    Ok(axum::Json(state.engine.assign_conversation(auth.workspace(), id, Some(to), Some(note.to_string())).await?))
}
