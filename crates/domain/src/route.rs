//! Routes with fallback: one message, tried on several channels in turn.
//!
//! A route is an ordered list of steps, each a channel (with its account, the recipient's address
//! there and optionally its own content) and a condition to move on to the next step: the step
//! `failed`, or it was not `delivered` / not `read` within a time after the provider took it. The
//! message keeps one id; each step is an attempt with its own provider id and events, and moving
//! on is recorded as a `fallback` event. The last step has no condition: what happens to it is
//! what happens to the message.
//!
//! The rules here are pure; the store applies them in the transactions that record what the
//! dispatcher and the providers report, so that a restart finds every pending decision in the
//! database (the dispatch job of a routed message stays until its route is settled).

use crate::message::Channel;
use crate::{ChannelAccountId, Content, ErrorInfo, MessageState, Millis};
use serde::{Deserialize, Serialize};

/// Bounds of a step's timeout: long enough for a receipt to arrive, short of the longest
/// validity a sender would want a fallback to wait for.
pub const MIN_MOVE_ON_SECONDS: u32 = 30;
pub const MAX_MOVE_ON_SECONDS: u32 = 48 * 3600;
/// Steps in one route, at most (one per channel account is already a lot).
pub const MAX_ROUTE_STEPS: usize = 5;

/// When to leave a step for the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "when", rename_all = "snake_case", deny_unknown_fields)]
pub enum MoveOn {
    /// The step failed: the provider refused it, or reported it undelivered. (A struct variant,
    /// so that a stray `within_seconds` is refused rather than ignored.)
    Failed {},
    /// The step failed, or no `delivered` receipt came within `within_seconds` after the
    /// provider took it.
    NotDelivered { within_seconds: u32 },
    /// The step failed, or no `read` receipt came within `within_seconds` after the provider
    /// took it.
    NotRead { within_seconds: u32 },
}

impl MoveOn {
    /// The timeout, for the conditions that have one.
    pub fn within_seconds(self) -> Option<u32> {
        match self {
            MoveOn::Failed {} => None,
            MoveOn::NotDelivered { within_seconds } | MoveOn::NotRead { within_seconds } => Some(within_seconds),
        }
    }

    /// Whether a message of a step in `status` has met what this condition waits for.
    fn satisfied_by(self, status: MessageState) -> bool {
        match self {
            MoveOn::Failed {} => matches!(status, MessageState::Sent | MessageState::Delivered | MessageState::Read),
            MoveOn::NotDelivered { .. } => matches!(status, MessageState::Delivered | MessageState::Read),
            MoveOn::NotRead { .. } => status == MessageState::Read,
        }
    }
}

/// Why a step was left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// The provider refused the step or reported it undelivered.
    Failed,
    /// No `delivered` receipt within the step's timeout.
    NotDelivered,
    /// No `read` receipt within the step's timeout.
    NotRead,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Failed => "failed",
            FallbackReason::NotDelivered => "not_delivered",
            FallbackReason::NotRead => "not_read",
        }
    }
}

/// One step of a route: where to send, and what happened there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteStep {
    pub channel: Channel,
    #[schema(value_type = String)]
    pub channel_account_id: ChannelAccountId,
    /// The recipient's address on this channel.
    pub to: String,
    /// This step's own content; without it the message's `content` is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// When to move on to the next step (none on the last step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_on: Option<MoveOn>,
    /// When this step became the message's current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// When the provider took this step's send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Millis>,
    /// The provider's id for this step's send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// The failure that ended this step, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Why the message left this step, once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_on: Option<FallbackReason>,
    /// When the message left this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_on_at: Option<Millis>,
}

impl RouteStep {
    /// A step not tried yet.
    pub fn new(
        channel: Channel,
        channel_account_id: ChannelAccountId,
        to: String,
        content: Option<Content>,
        move_on: Option<MoveOn>,
    ) -> RouteStep {
        RouteStep {
            channel,
            channel_account_id,
            to,
            content,
            move_on,
            started_at: None,
            sent_at: None,
            provider_message_id: None,
            error: None,
            moved_on: None,
            moved_on_at: None,
        }
    }
}

/// A message's route and the step it is on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Route {
    pub steps: Vec<RouteStep>,
    /// The index (from 0) of the step the message is on.
    pub current_step: usize,
}

/// What the dispatcher's job of a routed message is for, when it comes due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteDecision {
    /// The current step still has to be handed to its provider: send it.
    Send,
    /// Leave the current step for the next one, for this reason.
    FallBack(FallbackReason),
    /// Look again at this time (the current step's timeout has not run out yet).
    WaitUntil(Millis),
    /// Nothing is left to decide: the step met its condition, or the message ended.
    Settled,
}

impl Route {
    pub fn step(&self) -> &RouteStep {
        &self.steps[self.current_step.min(self.steps.len().saturating_sub(1))]
    }

    fn step_mut(&mut self) -> &mut RouteStep {
        let i = self.current_step.min(self.steps.len().saturating_sub(1));
        &mut self.steps[i]
    }

    /// Whether there is a step after the current one.
    pub fn has_next(&self) -> bool {
        self.current_step + 1 < self.steps.len()
    }

    /// Whether a failure of the current step moves the message on rather than ending it.
    pub fn falls_back_on_failure(&self) -> bool {
        self.has_next()
    }

    /// The provider took the current step's send at `at` with this id. Returns when the
    /// dispatcher must look at the message again (the step's deadline, or `expires_at` when the
    /// step moves on only on failure), or `None` when the route ends here.
    pub fn sent(&mut self, provider_message_id: &str, at: Millis, expires_at: Millis) -> Option<Millis> {
        let step = self.step_mut();
        step.sent_at = Some(at);
        step.provider_message_id = Some(provider_message_id.to_string());
        self.watch_until(expires_at)
    }

    /// When a step that the provider took must be looked at again; `None` on the last step.
    pub fn watch_until(&self, expires_at: Millis) -> Option<Millis> {
        if !self.has_next() {
            return None;
        }
        let step = self.step();
        match (step.move_on.and_then(MoveOn::within_seconds), step.sent_at) {
            (Some(within), Some(sent_at)) => Some(sent_at.plus_seconds(i64::from(within)).min(expires_at)),
            _ => Some(expires_at),
        }
    }

    /// The current step failed with `error` (it has a next step): keep why, to move on when the
    /// job is next claimed.
    pub fn step_failed(&mut self, error: Option<ErrorInfo>) {
        let step = self.step_mut();
        step.error = Some(error.unwrap_or_else(|| ErrorInfo {
            code: "step_failed".into(),
            detail: "the provider reported the step as failed".into(),
            permanent: true,
        }));
    }

    /// What the job of a message in `status` on this route is for at `now`.
    pub fn decide(&self, status: MessageState, now: Millis, expires_at: Millis) -> RouteDecision {
        let step = self.step();
        if step.error.is_some() && step.moved_on.is_none() && self.has_next() {
            return if now >= expires_at {
                RouteDecision::Settled
            } else {
                RouteDecision::FallBack(FallbackReason::Failed)
            };
        }
        match status {
            MessageState::Accepted | MessageState::Scheduled | MessageState::Queued | MessageState::Sending => {
                RouteDecision::Send
            }
            MessageState::Sent | MessageState::Delivered | MessageState::Read if self.has_next() => {
                let move_on = step.move_on.unwrap_or(MoveOn::Failed {});
                if move_on.satisfied_by(status) && move_on.within_seconds().is_some() {
                    return RouteDecision::Settled;
                }
                let Some(deadline) = self.watch_until(expires_at) else { return RouteDecision::Settled };
                if now < deadline {
                    return RouteDecision::WaitUntil(deadline);
                }
                match move_on {
                    // Only a failure moves on, and none came before the message's validity ended.
                    MoveOn::Failed {} => RouteDecision::Settled,
                    _ if now >= expires_at => RouteDecision::Settled,
                    MoveOn::NotDelivered { .. } => RouteDecision::FallBack(FallbackReason::NotDelivered),
                    MoveOn::NotRead { .. } => RouteDecision::FallBack(FallbackReason::NotRead),
                }
            }
            _ => RouteDecision::Settled,
        }
    }

    /// Leave the current step for the next one at `now`. Returns the `details` of the `fallback`
    /// event: the steps and channels on either side, the reason and the failed step's error.
    pub fn advance(&mut self, reason: FallbackReason, now: Millis) -> serde_json::Value {
        let from = self.current_step;
        let left = self.step_mut();
        left.moved_on = Some(reason);
        left.moved_on_at = Some(now);
        let (from_channel, error, provider_message_id) =
            (left.channel, left.error.clone(), left.provider_message_id.clone());
        self.current_step = (from + 1).min(self.steps.len().saturating_sub(1));
        let next = self.step_mut();
        next.started_at = Some(now);
        let mut details = serde_json::json!({
            "fallback": {
                "from_step": from,
                "to_step": from + 1,
                "from_channel": from_channel,
                "to_channel": next.channel,
                "reason": reason,
            }
        });
        if let Some(error) = error {
            details["fallback"]["error"] = serde_json::json!(error);
        }
        if let Some(id) = provider_message_id {
            details["fallback"]["from_provider_message_id"] = serde_json::json!(id);
        }
        details
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(move_on: MoveOn) -> Route {
        let account = ChannelAccountId::new();
        Route {
            steps: vec![
                RouteStep::new(Channel::Whatsapp, account, "+12025550150".into(), None, Some(move_on)),
                RouteStep::new(Channel::Sms, ChannelAccountId::new(), "+12025550150".into(), None, None),
            ],
            current_step: 0,
        }
    }

    #[test]
    fn move_on_reads_as_documented() {
        let m: MoveOn = serde_json::from_str(r#"{"when":"not_delivered","within_seconds":60}"#).unwrap();
        assert_eq!(m, MoveOn::NotDelivered { within_seconds: 60 });
        assert_eq!(serde_json::from_str::<MoveOn>(r#"{"when":"failed"}"#).unwrap(), MoveOn::Failed {});
        assert!(serde_json::from_str::<MoveOn>(r#"{"when":"failed","within_seconds":3}"#).is_err());
        assert!(serde_json::from_str::<MoveOn>(r#"{"when":"later"}"#).is_err());
    }

    #[test]
    fn a_timed_step_waits_for_its_deadline_then_moves_on() {
        let t0 = Millis(1_000_000);
        let expires = t0.plus_seconds(3600);
        let mut r = route(MoveOn::NotDelivered { within_seconds: 60 });
        assert_eq!(r.decide(MessageState::Sending, t0, expires), RouteDecision::Send);
        let deadline = r.sent("wamid.1", t0, expires).unwrap();
        assert_eq!(deadline, t0.plus_seconds(60));
        assert_eq!(r.decide(MessageState::Sent, t0.plus_seconds(59), expires), RouteDecision::WaitUntil(deadline));
        assert_eq!(
            r.decide(MessageState::Sent, deadline, expires),
            RouteDecision::FallBack(FallbackReason::NotDelivered)
        );
        assert_eq!(r.decide(MessageState::Delivered, deadline, expires), RouteDecision::Settled);
        // Past the validity nothing more is sent.
        assert_eq!(r.decide(MessageState::Sent, expires, expires), RouteDecision::Settled);
    }

    #[test]
    fn not_read_needs_read_and_failed_only_moves_on_failure() {
        let t0 = Millis(5_000_000);
        let expires = t0.plus_seconds(7200);
        let mut r = route(MoveOn::NotRead { within_seconds: 300 });
        r.sent("x", t0, expires);
        let after = t0.plus_seconds(301);
        assert_eq!(r.decide(MessageState::Delivered, after, expires), RouteDecision::FallBack(FallbackReason::NotRead));
        assert_eq!(r.decide(MessageState::Read, after, expires), RouteDecision::Settled);

        let mut r = route(MoveOn::Failed {});
        assert_eq!(r.sent("y", t0, expires), Some(expires));
        assert_eq!(r.decide(MessageState::Sent, after, expires), RouteDecision::WaitUntil(expires));
        assert_eq!(r.decide(MessageState::Sent, expires, expires), RouteDecision::Settled);
        r.step_failed(None);
        assert_eq!(r.decide(MessageState::Sent, after, expires), RouteDecision::FallBack(FallbackReason::Failed));
    }

    #[test]
    fn advancing_records_the_step_left_and_starts_the_next() {
        let t0 = Millis(9_000_000);
        let mut r = route(MoveOn::Failed {});
        r.sent("wamid.9", t0, t0.plus_seconds(60));
        r.step_failed(Some(ErrorInfo {
            code: "whatsapp:131026".into(),
            detail: "undeliverable".into(),
            permanent: true,
        }));
        let details = r.advance(FallbackReason::Failed, t0.plus_seconds(5));
        assert_eq!(r.current_step, 1);
        assert!(!r.has_next());
        assert_eq!(r.steps[0].moved_on, Some(FallbackReason::Failed));
        assert_eq!(r.steps[1].started_at, Some(t0.plus_seconds(5)));
        assert_eq!(details["fallback"]["to_channel"], "sms");
        assert_eq!(details["fallback"]["error"]["code"], "whatsapp:131026");
        assert_eq!(details["fallback"]["from_provider_message_id"], "wamid.9");
        // The last step: a failure ends the message.
        assert!(!r.falls_back_on_failure());
        assert_eq!(r.watch_until(t0), None);
    }
}
