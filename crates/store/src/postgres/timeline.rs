//! The messages one transaction moves forward: loaded (locked) once, changed in memory event by
//! event, and written back with all their new events in a few statements at the end.

use super::rows::{self, NewEvent};
use crate::Result;
use parley_domain::{ErrorInfo, EventId, EventKind, Message, MessageEvent, MessageId, Millis};
use sqlx::postgres::PgConnection;
use std::collections::{BTreeSet, HashMap};

/// What one observation records besides its kind.
#[derive(Default)]
pub(super) struct Observation {
    pub occurred_at: Millis,
    pub recorded_at: Millis,
    pub attempt: Option<i32>,
    pub provider_message_id: Option<String>,
    pub error: Option<ErrorInfo>,
    pub retry_at: Option<Millis>,
    pub details: Option<serde_json::Value>,
    /// Recorded without moving the message whatever its kind (a receipt for one of its parts).
    pub never_applied: bool,
}

#[derive(Default)]
pub(super) struct Timeline {
    messages: HashMap<MessageId, Message>,
    changed: BTreeSet<MessageId>,
    events: Vec<MessageEvent>,
}

impl Timeline {
    pub fn new(messages: Vec<Message>) -> Self {
        Timeline { messages: messages.into_iter().map(|m| (m.id, m)).collect(), ..Default::default() }
    }

    pub fn get(&self, id: MessageId) -> Option<&Message> {
        self.messages.get(&id)
    }

    /// Change a message without recording an event (attempts, provider id); it will be written back.
    pub fn edit(&mut self, id: MessageId) -> Option<&mut Message> {
        let message = self.messages.get_mut(&id)?;
        self.changed.insert(id);
        Some(message)
    }

    /// Record an observation of a loaded message. A state event is applied when the message's
    /// state can advance to it (then the state changes); `attempt_failed` never is. A failure that
    /// is applied sets the message's error. Returns whether the event was applied, or `None` when
    /// the message is not loaded.
    pub fn record(&mut self, id: MessageId, kind: EventKind, observation: Observation) -> Option<bool> {
        let message = self.messages.get_mut(&id)?;
        let applied =
            !observation.never_applied && kind.state().is_some_and(|next| message.status.can_advance_to(next));
        if applied && let Some(next) = kind.state() {
            message.status = next;
            // The error that ended the message (none for a cancel), replacing a transient one.
            if next.is_failure() {
                message.error.clone_from(&observation.error);
            }
        }
        message.sequence += 1;
        message.updated_at = message.updated_at.max(observation.recorded_at);
        self.events.push(MessageEvent {
            id: EventId::new(),
            message_id: id,
            sequence: message.sequence,
            kind,
            occurred_at: observation.occurred_at,
            recorded_at: observation.recorded_at,
            applied,
            attempt: observation.attempt,
            provider_message_id: observation.provider_message_id,
            error: observation.error,
            retry_at: observation.retry_at,
            details: observation.details,
        });
        self.changed.insert(id);
        Some(applied)
    }

    /// Write the changed messages back and insert the new events. Takes the feed lock, so it must
    /// be the last thing the transaction does before committing.
    pub async fn flush(&self, conn: &mut PgConnection) -> Result<()> {
        let changed: Vec<&Message> = self.changed.iter().filter_map(|id| self.messages.get(id)).collect();
        rows::update_messages(conn, &changed).await?;
        if self.events.is_empty() {
            return Ok(());
        }
        super::lock_feed(conn).await?;
        let events: Vec<NewEvent<'_>> = self
            .events
            .iter()
            .filter_map(|e| {
                self.messages.get(&e.message_id).map(|m| NewEvent { workspace_id: m.workspace_id, event: e })
            })
            .collect();
        rows::insert_events(conn, &events).await
    }

    pub fn into_message(mut self, id: MessageId) -> Option<Message> {
        self.messages.remove(&id)
    }

    pub fn message(&self, id: MessageId) -> Option<Message> {
        self.messages.get(&id).cloned()
    }
}
