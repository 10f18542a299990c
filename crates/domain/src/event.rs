//! Events as Parley delivers them: one envelope wherever an event appears (the live stream's
//! `data:`, webhook bodies), carrying the message as it was right after the event, so that a
//! receiver can order and deduplicate by `sequence` without calling back.
//!
//! [`Message::as_of`] replays a message's timeline up to one of its events; it follows the rules
//! the store applies when it records events (see the store's timelines), so that the message of
//! an envelope is what `GET /v1/messages/{id}` answered right after that event.

use crate::{ErrorInfo, EventId, EventKind, Message, MessageEvent, MessageState, Millis, WorkspaceId};
use serde::{Deserialize, Serialize};

/// One event, as delivered: `{"id", "type", "created_at", "workspace_id", "data"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventEnvelope {
    /// The event's id (`evt_…`): unique, the same wherever the event is delivered. The live
    /// stream uses it as the SSE `id`, so `Last-Event-ID` resumes after it.
    pub id: EventId,
    /// `message.<kind>`: `message.queued`, `message.sent`, `message.delivered`,
    /// `message.attempt_failed`, …
    #[serde(rename = "type")]
    #[schema(example = "message.delivered")]
    pub event_type: String,
    /// When Parley recorded the event.
    pub created_at: Millis,
    pub workspace_id: WorkspaceId,
    pub data: MessageEventData,
}

/// The payload of a `message.*` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageEventData {
    /// The message resource as it was right after this event (without its timeline).
    pub message: Message,
    /// The event's number in the message's timeline (1, 2, 3, …): order and deduplicate by it.
    pub sequence: i64,
}

impl EventEnvelope {
    /// The envelope of `event`, one of `message`'s events; `message` carries its timeline
    /// (`events`) at least up to `event`, so that it can be shown as it was then.
    pub fn for_message_event(message: &Message, event: &MessageEvent) -> EventEnvelope {
        EventEnvelope {
            id: event.id,
            event_type: event.kind.event_type().to_string(),
            created_at: event.recorded_at,
            workspace_id: message.workspace_id,
            data: MessageEventData { message: message.as_of(event.sequence), sequence: event.sequence },
        }
    }
}

/// An event about the workspace rather than one message (`endpoint.disabled`,
/// `conversation.opened`, `contact.opted_out`, …), as delivered: the same envelope as
/// [`EventEnvelope`], with the resource at that moment as `data` (`{"endpoint": {…}}`,
/// `{"conversation": {…}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceEventEnvelope {
    pub id: EventId,
    /// `resource.past_tense_verb`, e.g. `endpoint.disabled`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When Parley recorded the event.
    pub created_at: Millis,
    pub workspace_id: WorkspaceId,
    /// A JSON object naming the resource.
    pub data: serde_json::Value,
}

impl Message {
    /// The message as it was right after its event `sequence`, replayed from its timeline
    /// (`events`) the way the store applies events: the state of the latest applied event that
    /// carries one; the error of the latest applied failure (or, while the message could still be
    /// sent, of the latest transient error), cleared by an applied `sent`; the provider id of
    /// the latest `sent` (or `received`) event; the highest attempt so far; `updated_at` the
    /// newest recording time. What no event records (content, recipient, …) is as it is now.
    /// The result has no timeline. Without a timeline, the message is returned as it is.
    pub fn as_of(&self, sequence: i64) -> Message {
        let mut then = self.without_events();
        let Some(events) = self.events.as_deref() else { return then };
        let mut status: Option<MessageState> = None;
        let mut error: Option<ErrorInfo> = None;
        let mut provider_message_id: Option<String> = None;
        let mut attempts = 0;
        let mut updated_at = self.created_at;
        let mut last = 0;
        // An inbound message may carry a provider id that no event of its timeline names.
        let events_name_provider_ids = events.iter().any(sets_provider_id);
        for e in events.iter().filter(|e| e.sequence <= sequence) {
            last = e.sequence;
            updated_at = updated_at.max(e.recorded_at);
            attempts = attempts.max(e.attempt.unwrap_or(0));
            if e.kind == EventKind::AttemptFailed && status.is_none_or(|s| s.can_advance_to(MessageState::Sent)) {
                error.clone_from(&e.error);
            }
            if let (true, Some(state)) = (e.applied, e.kind.state()) {
                status = Some(state);
                if state.is_failure() {
                    error.clone_from(&e.error);
                } else if state == MessageState::Sent {
                    error = None;
                }
            }
            if sets_provider_id(e) {
                provider_message_id.clone_from(&e.provider_message_id);
            }
        }
        if let Some(status) = status {
            then.status = status;
        }
        then.error = error;
        if events_name_provider_ids {
            then.provider_message_id = provider_message_id;
        }
        then.attempts = attempts;
        then.updated_at = updated_at;
        then.sequence = last;
        then
    }

    /// A copy without the timeline (cheaper than cloning it along).
    fn without_events(&self) -> Message {
        Message {
            id: self.id,
            workspace_id: self.workspace_id,
            direction: self.direction,
            channel: self.channel,
            channel_account_id: self.channel_account_id,
            to: self.to.clone(),
            from: self.from.clone(),
            contact_id: self.contact_id,
            conversation_id: self.conversation_id,
            purpose: self.purpose.clone(),
            status: self.status,
            content: self.content.clone(),
            send_at: self.send_at,
            expires_at: self.expires_at,
            validity_seconds: self.validity_seconds,
            metadata: self.metadata.clone(),
            client_reference: self.client_reference.clone(),
            provider_message_id: self.provider_message_id.clone(),
            attempts: self.attempts,
            error: self.error.clone(),
            sequence: self.sequence,
            created_at: self.created_at,
            updated_at: self.updated_at,
            route: None,
            events: None,
        }
    }
}

/// Events after which the message carries the provider's id: the provider took it, or it came
/// from the provider.
fn sets_provider_id(e: &MessageEvent) -> bool {
    matches!(e.kind, EventKind::Sent | EventKind::Received) && e.provider_message_id.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Channel, ChannelAccountId, Content, Direction, MessageId};
    use MessageState::*;
    use std::collections::BTreeMap;

    const T0: Millis = Millis(1_800_000_000_000);

    /// A timeline builder: each call appends the next event, recorded `sequence` seconds after T0.
    struct Timeline(Message);

    impl Timeline {
        fn new(status: MessageState) -> Timeline {
            Timeline(Message {
                id: MessageId::new(),
                workspace_id: WorkspaceId::new(),
                direction: Direction::Outbound,
                channel: Channel::Sms,
                channel_account_id: ChannelAccountId::new(),
                to: "+4915112345678".into(),
                from: None,
                status,
                content: Content::text("hello"),
                route: None,
                send_at: None,
                expires_at: T0.plus_seconds(3600),
                validity_seconds: 3600,
                metadata: BTreeMap::new(),
                client_reference: None,
                contact_id: None,
                conversation_id: None,
                purpose: None,
                provider_message_id: None,
                attempts: 0,
                error: None,
                sequence: 0,
                created_at: T0,
                updated_at: T0,
                events: Some(Vec::new()),
            })
        }

        fn add(
            mut self,
            kind: EventKind,
            applied: bool,
            attempt: Option<i32>,
            extra: impl FnOnce(&mut MessageEvent),
        ) -> Self {
            let events = self.0.events.get_or_insert_with(Vec::new);
            let sequence = events.len() as i64 + 1;
            let mut event = MessageEvent {
                id: EventId::new(),
                message_id: self.0.id,
                sequence,
                kind,
                occurred_at: T0.plus_seconds(sequence),
                recorded_at: T0.plus_seconds(sequence),
                applied,
                attempt,
                provider_message_id: None,
                error: None,
                retry_at: None,
                details: None,
            };
            extra(&mut event);
            events.push(event);
            self.0.sequence = sequence;
            self.0.updated_at = T0.plus_seconds(sequence);
            self
        }
    }

    fn error(code: &str, permanent: bool) -> ErrorInfo {
        ErrorInfo { code: code.into(), detail: format!("{code} happened"), permanent }
    }

    fn at(seconds: i64) -> Millis {
        T0.plus_seconds(seconds)
    }

    #[test]
    fn as_of_replays_a_scheduled_message_to_delivery_and_ignores_a_late_receipt() {
        let message = Timeline::new(Delivered)
            .add(EventKind::Accepted, true, None, |_| {})
            .add(EventKind::Scheduled, true, None, |_| {})
            .add(EventKind::Queued, true, None, |_| {})
            .add(EventKind::Sending, true, Some(1), |_| {})
            .add(EventKind::Sent, true, Some(1), |e| e.provider_message_id = Some("p-1".into()))
            .add(EventKind::Delivered, true, None, |e| e.provider_message_id = Some("p-1".into()))
            // A late `sent` receipt: recorded, not applied.
            .add(EventKind::Sent, false, None, |e| e.provider_message_id = Some("p-1".into()))
            .0;
        let message = Message { provider_message_id: Some("p-1".into()), attempts: 1, ..message };
        let expected = [
            (1, Accepted, None, 0),
            (2, Scheduled, None, 0),
            (3, Queued, None, 0),
            (4, Sending, None, 1),
            (5, Sent, Some("p-1"), 1),
            (6, Delivered, Some("p-1"), 1),
            (7, Delivered, Some("p-1"), 1),
        ];
        for (sequence, status, provider_id, attempts) in expected {
            let then = message.as_of(sequence);
            assert_eq!(then.status, status, "status after event {sequence}");
            assert_eq!(then.sequence, sequence);
            assert_eq!(then.updated_at, at(sequence), "updated_at after event {sequence}");
            assert_eq!(then.provider_message_id.as_deref(), provider_id, "provider id after event {sequence}");
            assert_eq!(then.attempts, attempts, "attempts after event {sequence}");
            assert_eq!(then.error, None);
            assert_eq!(then.events, None, "the message as of an event carries no timeline");
            assert_eq!((then.id, &then.to, &then.content), (message.id, &message.to, &message.content));
        }
        // After its last event, the message is as it is now.
        assert_eq!(message.as_of(7), Message { events: None, ..message.clone() });
        assert_eq!(message.as_of(100), message.as_of(7));
    }

    #[test]
    fn as_of_keeps_transient_errors_while_retrying_and_the_error_of_a_failure() {
        let transient = error("sandbox:throttled", false);
        let permanent = error("sandbox:permanent_failure", true);
        let failed = Timeline::new(Failed)
            .add(EventKind::Accepted, true, None, |_| {})
            .add(EventKind::Queued, true, None, |_| {})
            .add(EventKind::Sending, true, Some(1), |_| {})
            .add(EventKind::AttemptFailed, false, Some(1), |e| {
                e.error = Some(transient.clone());
                e.retry_at = Some(at(10));
            })
            .add(EventKind::Failed, true, Some(2), |e| e.error = Some(permanent.clone()))
            // A stale claim's `sent` after the failure: recorded, changes neither state nor error.
            .add(EventKind::Sent, false, Some(1), |e| e.provider_message_id = Some("p-late".into()))
            .0;
        let failed = Message {
            error: Some(permanent.clone()),
            attempts: 2,
            provider_message_id: Some("p-late".into()),
            ..failed
        };
        assert_eq!((failed.as_of(3).status, failed.as_of(3).error), (Sending, None));
        let retrying = failed.as_of(4);
        assert_eq!((retrying.status, retrying.error.as_ref(), retrying.attempts), (Sending, Some(&transient), 1));
        let ended = failed.as_of(5);
        assert_eq!((ended.status, ended.error.as_ref(), ended.attempts), (Failed, Some(&permanent), 2));
        assert_eq!(ended.provider_message_id, None, "no provider had it yet");
        assert_eq!(failed.as_of(6), Message { events: None, ..failed.clone() });

        // A retry that succeeds clears the transient error.
        let recovered = Timeline::new(Sent)
            .add(EventKind::Accepted, true, None, |_| {})
            .add(EventKind::Queued, true, None, |_| {})
            .add(EventKind::Sending, true, Some(1), |_| {})
            .add(EventKind::AttemptFailed, false, Some(1), |e| e.error = Some(transient.clone()))
            .add(EventKind::Sent, true, Some(2), |e| e.provider_message_id = Some("p-2".into()))
            .0;
        assert_eq!(recovered.as_of(4).error, Some(transient.clone()));
        let sent = recovered.as_of(5);
        assert_eq!(
            (sent.status, sent.error, sent.attempts, sent.provider_message_id.as_deref()),
            (Sent, None, 2, Some("p-2"))
        );
    }

    #[test]
    fn as_of_leaves_a_delivered_message_alone_on_a_late_failure() {
        let message = Timeline::new(Delivered)
            .add(EventKind::Accepted, true, None, |_| {})
            .add(EventKind::Queued, true, None, |_| {})
            .add(EventKind::Sending, true, Some(1), |_| {})
            .add(EventKind::Sent, true, Some(1), |e| e.provider_message_id = Some("p-1".into()))
            .add(EventKind::Delivered, true, None, |_| {})
            .add(EventKind::Undelivered, false, None, |e| e.error = Some(error("sandbox:undeliverable", true)))
            .0;
        let then = message.as_of(6);
        assert_eq!((then.status, then.error, then.sequence, then.updated_at), (Delivered, None, 6, at(6)));
    }

    #[test]
    fn as_of_keeps_the_provider_id_of_an_inbound_message() {
        let mut message = Timeline::new(Received).add(EventKind::Received, true, None, |_| {}).0;
        message.direction = Direction::Inbound;
        message.provider_message_id = Some("in-1".into());
        assert_eq!(message.as_of(1).provider_message_id.as_deref(), Some("in-1"));
        assert_eq!(message.as_of(1).status, Received);
    }

    #[test]
    fn the_envelope_carries_the_message_as_it_was() {
        let message = Timeline::new(Delivered)
            .add(EventKind::Accepted, true, None, |_| {})
            .add(EventKind::Queued, true, None, |_| {})
            .add(EventKind::Sending, true, Some(1), |_| {})
            .add(EventKind::Sent, true, Some(1), |e| e.provider_message_id = Some("p-1".into()))
            .add(EventKind::Delivered, true, None, |_| {})
            .0;
        let sent = &message.events.as_ref().expect("timeline")[3];
        let envelope = EventEnvelope::for_message_event(&message, sent);
        let json = serde_json::to_value(&envelope).expect("serialises");
        assert_eq!(json["id"], sent.id.to_string());
        assert_eq!(json["type"], "message.sent");
        assert_eq!(json["created_at"], at(4).to_string());
        assert_eq!(json["workspace_id"], message.workspace_id.to_string());
        assert_eq!(json["data"]["sequence"], 4);
        assert_eq!(json["data"]["message"]["status"], "sent");
        assert_eq!(json["data"]["message"]["sequence"], 4);
        assert_eq!(json["data"]["message"]["id"], message.id.to_string());
        assert!(json["data"]["message"].get("events").is_none(), "no timeline in an envelope: {json}");
        let back: EventEnvelope = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, envelope);
    }
}
