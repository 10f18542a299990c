//! `/v1/analytics/messages`: what became of the outbound messages created in a window, per
//! channel, day, template or channel account. The engine computes the figures
//! (`parley_engine::analytics`); this module checks the query and documents the answer.

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{Auth, Invalid, Query};
use axum::extract::State;
use parley_domain::{Millis, Scope};
use parley_engine::analytics::{self, AnalyticsGroup, AnalyticsReport, GroupBy, MAX_ANALYTICS_RANGE_DAYS, WindowError};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(message_analytics))
}

/// How the messages of the window are grouped.
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalyticsGroupBy {
    /// By channel; the key is the channel (`sms`, `whatsapp`, …).
    Channel,
    /// By the UTC calendar day of `created_at`; the key is the date (`2026-11-27`).
    Day,
    /// By template name; messages whose content is not a template form the group whose key is
    /// `null`.
    Template,
    /// By channel account; the key is its id (`cha_…`).
    ChannelAccount,
}

impl From<GroupBy> for AnalyticsGroupBy {
    fn from(g: GroupBy) -> Self {
        match g {
            GroupBy::Channel => AnalyticsGroupBy::Channel,
            GroupBy::Day => AnalyticsGroupBy::Day,
            GroupBy::Template => AnalyticsGroupBy::Template,
            GroupBy::ChannelAccount => AnalyticsGroupBy::ChannelAccount,
        }
    }
}

/// The window and the grouping of `GET /v1/analytics/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// Start of the window (RFC 3339), inclusive: outbound messages created at or after it.
    #[param(required = true, value_type = String, format = DateTime, example = "2026-11-01T00:00:00Z")]
    pub from: Option<String>,
    /// End of the window (RFC 3339), exclusive: outbound messages created before it. Later than
    /// `from`, and at most 366 days after it.
    #[param(required = true, value_type = String, format = DateTime, example = "2026-12-01T00:00:00Z")]
    pub to: Option<String>,
    /// Group the messages by this; without it the answer has one group (key `null`) with every
    /// message of the window.
    #[param(value_type = Option<AnalyticsGroupBy>)]
    pub group_by: Option<String>,
}

/// Outbound messages by their state now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalyticsStates {
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
    pub undelivered: u64,
    pub rejected: u64,
    pub expired: u64,
    pub canceled: u64,
    /// Not final yet: `accepted`, `scheduled`, `queued`, `sending` or `sent`.
    pub in_flight: u64,
}

/// Messages that ended in failure with one error code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalyticsFailureReason {
    /// The message's error code (`sandbox:permanent_failure`, `validity_expired`, …); `null` for
    /// failures that carry no code.
    #[schema(required = true)]
    pub code: Option<String>,
    pub count: u64,
}

/// Milliseconds from a message's creation to its first `delivered` event (the earliest
/// `occurred_at` of its `delivered` events), over the group's messages that have one, whatever
/// their state now. Percentiles by the nearest-rank method: the value at rank ⌈p/100 × count⌉ of
/// the ascending list; `null` when `count` is 0.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalyticsDeliveryTimes {
    /// Messages with a `delivered` event.
    pub count: u64,
    /// The median (rank ⌈0.5 × count⌉), in milliseconds.
    #[schema(required = true)]
    pub p50: Option<i64>,
    /// The 95th percentile (rank ⌈0.95 × count⌉), in milliseconds.
    #[schema(required = true)]
    pub p95: Option<i64>,
}

/// The figures of one group of outbound messages. A rate is a number from 0 to 1, or `null` when
/// its denominator is 0.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalyticsGroupFigures {
    /// The channel, day (`2026-11-27`, UTC), template name or channel account id; `null` for the
    /// one group of an ungrouped answer and for messages without a template.
    #[schema(required = true)]
    pub key: Option<String>,
    /// Outbound messages created in the window (in this group).
    pub messages: u64,
    pub states: AnalyticsStates,
    /// Messages that were replied to: an inbound message on the same channel account, from the
    /// message's `to`, was created within 24 hours after it (0 ≤ inbound `created_at` − message
    /// `created_at` < 24 h).
    pub replied: u64,
    /// Messages of channels with read receipts (all but SMS) that are `delivered` or `read`: the
    /// denominator of `read_rate`.
    pub read_receipt_deliveries: u64,
    /// (delivered + read) / (delivered + read + failed + undelivered + rejected + expired): of the
    /// messages that reached an outcome, the share that reached the recipient. Canceled messages
    /// (never handed to a provider) and those still in flight are not counted.
    #[schema(required = true)]
    pub delivery_rate: Option<f64>,
    /// read / (delivered + read), over messages of channels with read receipts only (SMS has
    /// none): `read` / `read_receipt_deliveries`.
    #[schema(required = true)]
    pub read_rate: Option<f64>,
    /// replied / messages.
    #[schema(required = true)]
    pub reply_rate: Option<f64>,
    /// Messages that ended `failed`, `undelivered`, `rejected` or `expired`, counted by error
    /// code, most frequent first (ties by code, `null` first).
    pub failure_reasons: Vec<AnalyticsFailureReason>,
    pub time_to_delivered_ms: AnalyticsDeliveryTimes,
}

/// What became of the outbound messages created in `[from, to)`, per group.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "from": "2026-11-01T00:00:00.000Z",
    "to": "2026-12-01T00:00:00.000Z",
    "group_by": "channel",
    "groups": [{
        "key": "whatsapp",
        "messages": 4,
        "states": {"delivered": 1, "read": 1, "failed": 1, "undelivered": 0, "rejected": 0, "expired": 0,
            "canceled": 0, "in_flight": 1},
        "replied": 1,
        "read_receipt_deliveries": 2,
        "delivery_rate": 0.6666666666666666,
        "read_rate": 0.5,
        "reply_rate": 0.25,
        "failure_reasons": [{"code": "sandbox:permanent_failure", "count": 1}],
        "time_to_delivered_ms": {"count": 2, "p50": 800, "p95": 2000}
    }]
}))]
pub struct MessageAnalytics {
    pub from: Millis,
    pub to: Millis,
    /// `null` when not grouped.
    #[schema(required = true)]
    pub group_by: Option<AnalyticsGroupBy>,
    /// Ordered by key (`null` first). Without `group_by` exactly one group, even for an empty
    /// window; with it, one group per key that has at least one message.
    pub groups: Vec<AnalyticsGroupFigures>,
}

impl From<AnalyticsGroup> for AnalyticsGroupFigures {
    fn from(g: AnalyticsGroup) -> Self {
        let s = g.states;
        AnalyticsGroupFigures {
            key: g.key,
            messages: g.messages,
            states: AnalyticsStates {
                delivered: s.delivered,
                read: s.read,
                failed: s.failed,
                undelivered: s.undelivered,
                rejected: s.rejected,
                expired: s.expired,
                canceled: s.canceled,
                in_flight: s.in_flight,
            },
            replied: g.replied,
            read_receipt_deliveries: g.read_receipt_base,
            delivery_rate: g.delivery_rate,
            read_rate: g.read_rate,
            reply_rate: g.reply_rate,
            failure_reasons: g
                .failure_reasons
                .into_iter()
                .map(|f| AnalyticsFailureReason { code: f.code, count: f.count })
                .collect(),
            time_to_delivered_ms: AnalyticsDeliveryTimes {
                count: g.time_to_delivered.count,
                p50: g.time_to_delivered.p50_ms,
                p95: g.time_to_delivered.p95_ms,
            },
        }
    }
}

impl From<AnalyticsReport> for MessageAnalytics {
    fn from(r: AnalyticsReport) -> Self {
        MessageAnalytics {
            from: r.from,
            to: r.to,
            group_by: r.group_by.map(AnalyticsGroupBy::from),
            groups: r.groups.into_iter().map(AnalyticsGroupFigures::from).collect(),
        }
    }
}

/// A required timestamp parameter, or the reason it is not acceptable.
fn timestamp(invalid: &mut Invalid, name: &str, value: Option<&str>) -> Option<Millis> {
    match value.map(Millis::parse_rfc3339) {
        None => {
            invalid.add(name, "is required: an RFC 3339 timestamp such as 2026-11-01T00:00:00Z");
            None
        }
        Some(Ok(at)) => Some(at),
        Some(Err(reason)) => {
            invalid.add(name, reason);
            None
        }
    }
}

/// Delivery, read and reply figures of outbound messages.
///
/// Counts the workspace's outbound messages created in `[from, to)` by their state now, with
/// delivery, read and reply rates, failures by error code and the time to delivery (p50, p95),
/// for all of them or per channel, UTC day, template or channel account. Figures are computed
/// when asked, from the messages as they are now: a message still in flight may be delivered
/// later and change them.
#[utoipa::path(get, path = "/v1/analytics/messages", tag = "analytics", params(AnalyticsQuery),
    responses(
        (status = 200, description = "The figures, per group", body = MessageAnalytics),
        (status = 400, description = "A query parameter this route does not know (invalid_query)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks messages:read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "from or to missing or not RFC 3339, to not later than from, a window over 366 days, or an unknown group_by (validation_failed, naming the parameter)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn message_analytics(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<AnalyticsQuery>,
) -> ApiResult<axum::Json<MessageAnalytics>> {
    auth.require(Scope::MessagesRead)?;
    let mut invalid = Invalid::default();
    let from = timestamp(&mut invalid, "from", q.from.as_deref());
    let to = timestamp(&mut invalid, "to", q.to.as_deref());
    if let (Some(from), Some(to)) = (from, to) {
        match analytics::check_window(from, to) {
            Ok(()) => {}
            Err(WindowError::Empty) => invalid.add("to", "must be later than from"),
            Err(WindowError::TooLong) => {
                invalid.add("to", format!("must be at most {MAX_ANALYTICS_RANGE_DAYS} days after from"))
            }
        }
    }
    let group_by = match q.group_by.as_deref() {
        None => None,
        Some(raw) => match GroupBy::parse(raw) {
            Some(g) => Some(g),
            None => {
                let known = GroupBy::ALL.map(GroupBy::as_str).join(", ");
                invalid.add(
                    "group_by",
                    format!("must be one of {known}, not '{}'", raw.chars().take(40).collect::<String>()),
                );
                None
            }
        },
    };
    invalid.into_result()?;
    let (Some(from), Some(to)) = (from, to) else {
        return Err(crate::error::ApiError::internal("window missing after validation"));
    };
    let report = state.engine.message_analytics(auth.workspace(), from, to, group_by).await?;
    Ok(axum::Json(MessageAnalytics::from(report)))
}
