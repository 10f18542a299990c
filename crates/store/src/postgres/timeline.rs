//! The messages one transaction moves forward: loaded (locked) once, changed in memory event by
//! event, and written back with all their new events in a few statements at the end.

use super::rows::{self, NewEvent};
use crate::Result;
use parley_domain::{
    ErrorInfo, EventId, EventKind, FallbackReason, Message, MessageEvent, MessageId, MessageState, Millis,
};
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
    /// Routed messages whose route (and maybe current step) changed: written back with it.
    routed: BTreeSet<MessageId>,
    /// Routed messages whose current step failed with a step after it: their jobs come due now,
    /// to move on (see `parley_domain::route`).
    falling_back: BTreeSet<MessageId>,
    /// Provider ids of the steps messages left: (channel account, provider id, message, step).
    superseded: Vec<(String, String, MessageId, usize)>,
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
    ///
    /// On a route, a failure of a step that has a next one is recorded without ending the message:
    /// the step keeps the error and the job comes due at [`Timeline::flush`], to move on. Events of
    /// a routed message name their step in `details` (`route_step`).
    pub fn record(&mut self, id: MessageId, kind: EventKind, observation: Observation) -> Option<bool> {
        let message = self.messages.get_mut(&id)?;
        let mut applied =
            !observation.never_applied && kind.state().is_some_and(|next| message.status.can_advance_to(next));
        let mut details = observation.details;
        if let Some(route) = message.route.as_mut() {
            let step_failed = applied && kind.ends_a_step() && route.falls_back_on_failure();
            if step_failed {
                applied = false;
                route.step_failed(observation.error.clone());
                self.routed.insert(id);
                self.falling_back.insert(id);
            }
            if kind != EventKind::Fallback {
                details = Some(crate::route::step_details(details, route.current_step, step_failed));
            }
        }
        if kind == EventKind::Fallback {
            applied = true;
            message.status = MessageState::Queued;
            message.error = None;
        } else if applied && let Some(next) = kind.state() {
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
            details,
        });
        self.changed.insert(id);
        Some(applied)
    }

    /// Whether the current step of this message failed in this transaction and it moves on.
    pub fn falls_back(&self, id: MessageId) -> bool {
        self.falling_back.contains(&id)
    }

    /// The provider took the current step of a routed message: when its job must be looked at
    /// again (see [`parley_domain::Route::sent`]); `None` when it is not routed or this is its
    /// last step.
    pub fn route_sent(&mut self, id: MessageId, provider_message_id: &str, at: Millis) -> Option<Millis> {
        let message = self.messages.get_mut(&id)?;
        let expires_at = message.expires_at;
        let route = message.route.as_mut()?;
        self.routed.insert(id);
        route.sent(provider_message_id, at, expires_at)
    }

    /// Move a routed message on to its next step at `now` (see `parley_domain::route`): the
    /// message takes the step's channel, account and address, and a `fallback` event puts it back
    /// to `queued`. The left step's provider id is kept for late receipts at [`Timeline::flush`].
    pub fn fall_back(&mut self, id: MessageId, reason: FallbackReason, now: Millis) {
        let Some(message) = self.messages.get_mut(&id) else { return };
        let Some(route) = message.route.as_mut() else { return };
        let left = route.current_step;
        let details = route.advance(reason, now);
        let step = route.step().clone();
        if let Some(provider_id) = message.provider_message_id.take() {
            self.superseded.push((message.channel_account_id.to_string(), provider_id, id, left));
        }
        message.channel = step.channel;
        message.channel_account_id = step.channel_account_id;
        message.to = step.to;
        message.attempts = 0;
        self.routed.insert(id);
        let observation =
            Observation { occurred_at: now, recorded_at: now, details: Some(details), ..Observation::default() };
        self.record(id, EventKind::Fallback, observation);
    }

    /// Write the changed messages back and insert the new events. Takes the feed lock, so it must
    /// be the last thing the transaction does before committing.
    pub async fn flush(&self, conn: &mut PgConnection) -> Result<()> {
        let changed: Vec<&Message> = self.changed.iter().filter_map(|id| self.messages.get(id)).collect();
        rows::update_messages(conn, &changed).await?;
        if !self.routed.is_empty() {
            let routed: Vec<&Message> = self.routed.iter().filter_map(|id| self.messages.get(id)).collect();
            rows::update_routes(conn, &routed).await?;
            self.keep_superseded(conn).await?;
        }
        if !self.falling_back.is_empty() {
            let ids: Vec<String> = self.falling_back.iter().map(ToString::to_string).collect();
            let now = Millis::now();
            sqlx::query(
                "UPDATE dispatch_jobs SET due_at = $2, lease_owner = NULL, lease_until = NULL, attempt = 0 \
                 WHERE message_id = ANY($1::text[])",
            )
            .bind(ids)
            .bind(now.0)
            .execute(&mut *conn)
            .await?;
        }
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

    /// Keep the provider ids of the steps left in this transaction, their parts' too, and drop
    /// those parts (the message's parts are now its next step's).
    async fn keep_superseded(&self, conn: &mut PgConnection) -> Result<()> {
        if self.superseded.is_empty() {
            return Ok(());
        }
        let accounts: Vec<&str> = self.superseded.iter().map(|(a, _, _, _)| a.as_str()).collect();
        let provider_ids: Vec<&str> = self.superseded.iter().map(|(_, p, _, _)| p.as_str()).collect();
        let messages: Vec<String> = self.superseded.iter().map(|(_, _, m, _)| m.to_string()).collect();
        let steps: Vec<i64> = self.superseded.iter().map(|(_, _, _, s)| *s as i64).collect();
        sqlx::query(
            "INSERT INTO superseded_sends (channel_account_id, provider_message_id, message_id, step) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) \
             ON CONFLICT (channel_account_id, provider_message_id) \
             DO UPDATE SET message_id = excluded.message_id, step = excluded.step",
        )
        .bind(&accounts)
        .bind(&provider_ids)
        .bind(&messages)
        .bind(&steps)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO superseded_sends (channel_account_id, provider_message_id, message_id, step) \
             SELECT p.channel_account_id, p.provider_message_id, p.message_id, s.step FROM message_parts AS p \
             JOIN UNNEST($1::text[], $2::bigint[]) AS s(message_id, step) ON s.message_id = p.message_id \
             ON CONFLICT (channel_account_id, provider_message_id) \
             DO UPDATE SET message_id = excluded.message_id, step = excluded.step",
        )
        .bind(&messages)
        .bind(&steps)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM message_parts WHERE message_id = ANY($1::text[])")
            .bind(&messages)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    pub fn into_message(mut self, id: MessageId) -> Option<Message> {
        self.messages.remove(&id)
    }

    pub fn message(&self, id: MessageId) -> Option<Message> {
        self.messages.get(&id).cloned()
    }
}
