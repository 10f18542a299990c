//! Messages and their honest state machine.
//!
//! An outbound message moves forward only: accepted → scheduled → queued → sending → sent →
//! delivered → read, or ends in one of the final failure states (failed, undelivered, rejected,
//! expired, canceled). Every observation is recorded as a [`MessageEvent`] with a per-message
//! sequence number; an observation that would move the state backwards (a late `sent` receipt
//! after `delivered`) is still recorded, with `applied: false`, but the state stays.

use crate::route::Route;
use crate::{ChannelAccountId, ContactId, Content, ConversationId, EventId, MessageId, Millis, Purpose, WorkspaceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Whatsapp,
    Rcs,
    Webchat,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Sms, Channel::Whatsapp, Channel::Rcs, Channel::Webchat];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Rcs => "rcs",
            Channel::Webchat => "webchat",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the channel reports that the recipient read the message.
    pub fn has_read_receipts(self) -> bool {
        !matches!(self, Channel::Sms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "outbound" => Some(Direction::Outbound),
            "inbound" => Some(Direction::Inbound),
            _ => None,
        }
    }
}

/// The state of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Stored durably; nothing has been tried yet.
    Accepted,
    /// Waiting for its `send_at` (or a quiet-hours window).
    Scheduled,
    /// Due, waiting for a dispatcher.
    Queued,
    /// A dispatcher is handing it to the provider (or retrying after a transient error).
    Sending,
    /// The provider took it.
    Sent,
    /// The handset has it.
    Delivered,
    /// The recipient opened it (WhatsApp, RCS, web chat).
    Read,
    /// Final: the provider refused it, or a permanent error.
    Failed,
    /// Final: the provider took it but could not deliver it.
    Undelivered,
    /// Final: Parley refused it before sending (policy).
    Rejected,
    /// Final: its validity ran out before it could be sent.
    Expired,
    /// Final: canceled by the API before it was handed to a provider.
    Canceled,
    /// An inbound message, as received.
    Received,
}

impl MessageState {
    pub const ALL: [MessageState; 13] = [
        MessageState::Accepted,
        MessageState::Scheduled,
        MessageState::Queued,
        MessageState::Sending,
        MessageState::Sent,
        MessageState::Delivered,
        MessageState::Read,
        MessageState::Failed,
        MessageState::Undelivered,
        MessageState::Rejected,
        MessageState::Expired,
        MessageState::Canceled,
        MessageState::Received,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Accepted => "accepted",
            MessageState::Scheduled => "scheduled",
            MessageState::Queued => "queued",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::Read => "read",
            MessageState::Failed => "failed",
            MessageState::Undelivered => "undelivered",
            MessageState::Rejected => "rejected",
            MessageState::Expired => "expired",
            MessageState::Canceled => "canceled",
            MessageState::Received => "received",
        }
    }

    pub fn parse(s: &str) -> Option<MessageState> {
        MessageState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Progress along the happy path; failure states rank above everything before delivery.
    fn rank(self) -> u8 {
        match self {
            MessageState::Accepted => 0,
            MessageState::Scheduled => 1,
            MessageState::Queued => 2,
            MessageState::Sending => 3,
            MessageState::Sent => 4,
            MessageState::Delivered => 5,
            MessageState::Read => 6,
            MessageState::Received => 6,
            _ => 7,
        }
    }

    /// No further transition can apply: a failure state, `read`, or an inbound message.
    pub fn is_final(self) -> bool {
        self.rank() >= 6
    }

    /// A failure state (failed, undelivered, rejected, expired, canceled).
    pub fn is_failure(self) -> bool {
        self.rank() == 7
    }

    /// Whether an observation of `next` moves a message that is in `self` forward.
    ///
    /// Forward along the happy path only; a failure ends anything not yet delivered; nothing
    /// leaves a final state. `delivered` is not final (`read` may follow) but is past failing:
    /// a late `undelivered` after `delivered` is recorded without changing the state.
    pub fn can_advance_to(self, next: MessageState) -> bool {
        if self.is_final() || next == MessageState::Received || self == MessageState::Received {
            return false;
        }
        if next.is_failure() {
            return self.rank() < MessageState::Delivered.rank();
        }
        next.rank() > self.rank()
    }

    /// Whether the API may still cancel a message in this state (it has not been handed over).
    pub fn is_cancelable(self) -> bool {
        matches!(self, MessageState::Accepted | MessageState::Scheduled | MessageState::Queued | MessageState::Sending)
    }
}

/// What one message event records. Most kinds are states; `attempt_failed` records a transient
/// error after which the message will be tried again (its state stays `sending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Accepted,
    Scheduled,
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
    Undelivered,
    Rejected,
    Expired,
    Canceled,
    Received,
    AttemptFailed,
    /// A routed message left its current step for the next one (the step failed, or was not
    /// delivered or read in time); the message is `queued` again, on the next step's channel.
    Fallback,
}

impl EventKind {
    pub const ALL: [EventKind; 15] = [
        EventKind::Accepted,
        EventKind::Scheduled,
        EventKind::Queued,
        EventKind::Sending,
        EventKind::Sent,
        EventKind::Delivered,
        EventKind::Read,
        EventKind::Failed,
        EventKind::Undelivered,
        EventKind::Rejected,
        EventKind::Expired,
        EventKind::Canceled,
        EventKind::Received,
        EventKind::AttemptFailed,
        EventKind::Fallback,
    ];

    /// Whether this event, applied to a routed message, ends its current step (a route whose
    /// step has a next one moves on instead of ending the message): the provider failed or could
    /// not deliver it, or Parley refused it at the hand-off (consent withdrawn meanwhile).
    pub fn ends_a_step(self) -> bool {
        matches!(self, EventKind::Failed | EventKind::Undelivered | EventKind::Rejected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AttemptFailed => "attempt_failed",
            EventKind::Fallback => "fallback",
            other => other.state().map(MessageState::as_str).unwrap_or("unknown"),
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "attempt_failed" => return Some(EventKind::AttemptFailed),
            "fallback" => return Some(EventKind::Fallback),
            _ => {}
        }
        MessageState::parse(s).map(EventKind::from)
    }

    /// The type of the event where Parley delivers it (SSE, webhooks): `message.<kind>`, e.g.
    /// `message.delivered`, `message.attempt_failed`.
    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::Accepted => "message.accepted",
            EventKind::Scheduled => "message.scheduled",
            EventKind::Queued => "message.queued",
            EventKind::Sending => "message.sending",
            EventKind::Sent => "message.sent",
            EventKind::Delivered => "message.delivered",
            EventKind::Read => "message.read",
            EventKind::Failed => "message.failed",
            EventKind::Undelivered => "message.undelivered",
            EventKind::Rejected => "message.rejected",
            EventKind::Expired => "message.expired",
            EventKind::Canceled => "message.canceled",
            EventKind::Received => "message.received",
            EventKind::AttemptFailed => "message.attempt_failed",
            EventKind::Fallback => "message.fallback",
        }
    }

    /// The kind whose [`EventKind::event_type`] is `s`.
    pub fn from_event_type(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.event_type() == s)
    }

    /// The state this event moves to, if it is a state.
    pub fn state(self) -> Option<MessageState> {
        Some(match self {
            EventKind::Accepted => MessageState::Accepted,
            EventKind::Scheduled => MessageState::Scheduled,
            EventKind::Queued => MessageState::Queued,
            EventKind::Sending => MessageState::Sending,
            EventKind::Sent => MessageState::Sent,
            EventKind::Delivered => MessageState::Delivered,
            EventKind::Read => MessageState::Read,
            EventKind::Failed => MessageState::Failed,
            EventKind::Undelivered => MessageState::Undelivered,
            EventKind::Rejected => MessageState::Rejected,
            EventKind::Expired => MessageState::Expired,
            EventKind::Canceled => MessageState::Canceled,
            EventKind::Received => MessageState::Received,
            EventKind::AttemptFailed | EventKind::Fallback => return None,
        })
    }
}

impl From<MessageState> for EventKind {
    fn from(s: MessageState) -> Self {
        match s {
            MessageState::Accepted => EventKind::Accepted,
            MessageState::Scheduled => EventKind::Scheduled,
            MessageState::Queued => EventKind::Queued,
            MessageState::Sending => EventKind::Sending,
            MessageState::Sent => EventKind::Sent,
            MessageState::Delivered => EventKind::Delivered,
            MessageState::Read => EventKind::Read,
            MessageState::Failed => EventKind::Failed,
            MessageState::Undelivered => EventKind::Undelivered,
            MessageState::Rejected => EventKind::Rejected,
            MessageState::Expired => EventKind::Expired,
            MessageState::Canceled => EventKind::Canceled,
            MessageState::Received => EventKind::Received,
        }
    }
}

/// An error reported for a message or one of its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    /// A stable code: Parley's own (`validity_expired`) or the provider's, prefixed
    /// (`sandbox:permanent_failure`, `smpp:0x00000058`).
    pub code: String,
    pub detail: String,
    /// `true` when trying again cannot help.
    pub permanent: bool,
}

/// One entry of a message's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageEvent {
    pub id: EventId,
    pub message_id: MessageId,
    /// 1, 2, 3, … per message, in the order Parley recorded the events.
    pub sequence: i64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When it happened (for receipts: when the provider says it happened).
    pub occurred_at: Millis,
    /// When Parley recorded it.
    pub recorded_at: Millis,
    /// `false` when the event was recorded but did not change the message's state (a late or
    /// out-of-order receipt, or a transient error).
    pub applied: bool,
    /// The dispatch attempt (1-based) that this event belongs to, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// For `attempt_failed`: when the next attempt is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Millis>,
    /// What else the provider said with a receipt, as a JSON object (WhatsApp's pricing and
    /// conversation, an SMPP receipt's text); for a receipt about one part of a multi-part
    /// message, also which part (`"part"`, 1-based, of `"parts"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// A message resource. Outbound SMS also show `segments` and `encoding` (see
/// [`Message::sms_segments`]); they are worked out from the content whenever the resource is
/// written, not stored.
#[derive(Clone, Debug, PartialEq, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub workspace_id: WorkspaceId,
    pub direction: Direction,
    pub channel: Channel,
    pub channel_account_id: ChannelAccountId,
    /// E.164 for phone channels; a visitor id for web chat.
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The contact it was sent to or came from, when Parley knows one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<ContactId>,
    /// The contact's conversation it belongs to (every message with a contact has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// Why it is sent (outbound only): decides the consent it needs and the policy it follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    pub status: MessageState,
    pub content: Content,
    /// The route of a message sent with fallback: its steps, what happened on each, and the step
    /// it is on (`channel`, `channel_account_id` and `to` are that step's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_at: Option<Millis>,
    /// After this instant the message is not sent any more (it becomes `expired`).
    pub expires_at: Millis,
    pub validity_seconds: i64,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// Dispatch attempts made so far.
    pub attempts: i32,
    /// The error that ended the message, or the latest transient one while it is retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The sequence number of the newest event.
    pub sequence: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The timeline, oldest first (only on `GET /v1/messages/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<MessageEvent>>,
}

impl Message {
    /// For an outbound SMS: the encoding its text needs (`gsm7` when every character is in the
    /// GSM 03.38 alphabet, `ucs2` otherwise) and how many SMS it takes.
    pub fn sms_segments(&self) -> Option<(crate::segments::Encoding, usize)> {
        (self.channel == Channel::Sms && self.direction == Direction::Outbound)
            .then(|| crate::segments::count(&self.current_content().preview_text()))
    }

    /// What is sent now: the current route step's own content, or the message's.
    pub fn current_content(&self) -> &Content {
        self.route.as_ref().and_then(|r| r.step().content.as_ref()).unwrap_or(&self.content)
    }
}

// Written by hand rather than derived so that the resource can carry `segments` and `encoding`,
// which are worked out rather than stored. The keys and their order are the fields'.
impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("workspace_id", &self.workspace_id)?;
        map.serialize_entry("direction", &self.direction)?;
        map.serialize_entry("channel", &self.channel)?;
        map.serialize_entry("channel_account_id", &self.channel_account_id)?;
        map.serialize_entry("to", &self.to)?;
        if let Some(from) = &self.from {
            map.serialize_entry("from", from)?;
        }
        if let Some(contact_id) = &self.contact_id {
            map.serialize_entry("contact_id", contact_id)?;
        }
        if let Some(conversation_id) = &self.conversation_id {
            map.serialize_entry("conversation_id", conversation_id)?;
        }
        if let Some(purpose) = &self.purpose {
            map.serialize_entry("purpose", purpose)?;
        }
        map.serialize_entry("status", &self.status)?;
        map.serialize_entry("content", &self.content)?;
        if let Some(route) = &self.route {
            map.serialize_entry("route", route)?;
        }
        if let Some((encoding, segments)) = self.sms_segments() {
            map.serialize_entry("segments", &segments)?;
            map.serialize_entry("encoding", encoding.as_str())?;
        }
        if let Some(send_at) = &self.send_at {
            map.serialize_entry("send_at", send_at)?;
        }
        map.serialize_entry("expires_at", &self.expires_at)?;
        map.serialize_entry("validity_seconds", &self.validity_seconds)?;
        map.serialize_entry("metadata", &self.metadata)?;
        if let Some(reference) = &self.client_reference {
            map.serialize_entry("client_reference", reference)?;
        }
        if let Some(provider_id) = &self.provider_message_id {
            map.serialize_entry("provider_message_id", provider_id)?;
        }
        map.serialize_entry("attempts", &self.attempts)?;
        if let Some(error) = &self.error {
            map.serialize_entry("error", error)?;
        }
        map.serialize_entry("sequence", &self.sequence)?;
        map.serialize_entry("created_at", &self.created_at)?;
        map.serialize_entry("updated_at", &self.updated_at)?;
        if let Some(events) = &self.events {
            map.serialize_entry("events", events)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageState::*;

    #[test]
    fn happy_path_moves_forward_only() {
        let path = [Accepted, Scheduled, Queued, Sending, Sent, Delivered, Read];
        for (i, a) in path.iter().enumerate() {
            for (j, b) in path.iter().enumerate() {
                assert_eq!(a.can_advance_to(*b), j > i, "{a:?} -> {b:?}");
            }
        }
    }

    #[test]
    fn failures_end_undelivered_messages_only() {
        assert!(Sent.can_advance_to(Undelivered));
        assert!(Queued.can_advance_to(Canceled));
        assert!(!Delivered.can_advance_to(Undelivered));
        assert!(!Read.can_advance_to(Failed));
        for f in [Failed, Undelivered, Rejected, Expired, Canceled] {
            for s in MessageState::ALL {
                assert!(!f.can_advance_to(s), "{f:?} -> {s:?}");
            }
        }
    }

    #[test]
    fn event_kinds_round_trip() {
        for s in MessageState::ALL {
            let k = EventKind::from(s);
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(k.state(), Some(s));
        }
        assert_eq!(EventKind::parse("attempt_failed"), Some(EventKind::AttemptFailed));
        assert_eq!(EventKind::parse("fallback"), Some(EventKind::Fallback));
    }

    #[test]
    fn event_types_are_message_dot_kind() {
        for k in EventKind::ALL {
            assert_eq!(k.event_type(), format!("message.{}", k.as_str()));
            assert_eq!(EventKind::from_event_type(k.event_type()), Some(k));
        }
        assert_eq!(EventKind::Delivered.event_type(), "message.delivered");
        assert_eq!(EventKind::from_event_type("delivered"), None);
        assert_eq!(EventKind::from_event_type("message.*"), None);
    }
}
