//! Accepting outbound messages: choose the channel account, build the message with its first
//! events, and store it with its dispatch job, all before the caller may say "accepted".

use crate::metrics::EventTally;
use crate::{Engine, EngineError, Result};
use parley_domain::{
    Address, Channel, ChannelAccountId, Content, Direction, EventId, EventKind, Message, MessageEvent, MessageId,
    MessageState, Millis, WorkspaceId,
};
use parley_store::{CancelOutcome, CreateMessages, CreateOutcome, IdempotentRequest, NewOutbound};
use std::collections::BTreeMap;

/// How long a message stays worth sending when the request does not say.
pub const DEFAULT_VALIDITY_SECONDS: i64 = 48 * 3600;
pub const MIN_VALIDITY_SECONDS: i64 = 5;
pub const MAX_VALIDITY_SECONDS: i64 = 14 * 24 * 3600;

/// One validated send request.
#[derive(Clone, Debug)]
pub struct SendSpec {
    pub channel: Channel,
    pub to: Address,
    pub channel_account_id: Option<ChannelAccountId>,
    pub content: Content,
    pub send_at: Option<Millis>,
    pub validity_seconds: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub client_reference: Option<String>,
}

/// An idempotency key and the fingerprint of the request it came with.
#[derive(Clone, Debug)]
pub struct IdempotencyInput {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug)]
pub enum AcceptOutcome {
    /// Stored (those items that could be); the response rendered for this request.
    Created { status: u16, body: Vec<u8> },
    /// The same request came with this key before: its original response.
    Replayed { status: u16, body: Vec<u8> },
    /// The key came before with a different request.
    KeyReused,
}

impl Engine {
    /// Cancel a message that has not been handed to a provider yet (see
    /// `Store::cancel_message`), counting the `canceled` event for `/metrics`.
    pub async fn cancel_message(&self, workspace: WorkspaceId, id: MessageId) -> Result<CancelOutcome> {
        let outcome = self.store().cancel_message(workspace, id, Millis::now()).await?;
        if let CancelOutcome::Canceled(message) = &outcome {
            let mut tally = EventTally::default();
            tally.add(message.channel, EventKind::Canceled);
            self.inner.metrics.record_events(&tally);
        }
        Ok(outcome)
    }

    /// Accept `specs` for `workspace`. `render` turns the per-item results into the HTTP status
    /// and body of the answer; with an idempotency key that answer is stored in the same
    /// transaction as the messages and replayed for 24 h. Nothing is stored when no item could be
    /// accepted (the answer is then not remembered either).
    pub async fn accept<R>(
        &self,
        workspace: WorkspaceId,
        specs: Vec<SendSpec>,
        idempotency: Option<IdempotencyInput>,
        render: R,
    ) -> Result<AcceptOutcome>
    where
        R: FnOnce(&[Result<Message, EngineError>]) -> (u16, Vec<u8>),
    {
        let now = Millis::now();
        let mut items: Vec<Result<Message, EngineError>> = Vec::with_capacity(specs.len());
        let mut new = Vec::with_capacity(specs.len());
        for spec in specs {
            match self.build_outbound(workspace, spec, now).await {
                Ok(outbound) => {
                    items.push(Ok(outbound.message.clone()));
                    new.push(outbound);
                }
                Err(e) => items.push(Err(e)),
            }
        }
        let (status, body) = render(&items);
        if new.is_empty() {
            return Ok(AcceptOutcome::Created { status, body });
        }
        let mut tally = EventTally::default();
        for outbound in &new {
            for event in &outbound.events {
                tally.add(outbound.message.channel, event.kind);
            }
        }
        let request = CreateMessages {
            workspace_id: workspace,
            messages: new,
            idempotency: idempotency.map(|i| IdempotentRequest {
                key: i.key,
                request_hash: i.request_hash,
                response_status: status,
                response_body: body.clone(),
            }),
            now,
        };
        match self.store().create_messages(request).await? {
            CreateOutcome::Created => {
                self.inner.work_ready.notify_one();
                self.inner.metrics.record_events(&tally);
                Ok(AcceptOutcome::Created { status, body })
            }
            CreateOutcome::Replayed { status, body } => Ok(AcceptOutcome::Replayed { status, body }),
            CreateOutcome::KeyReused => Ok(AcceptOutcome::KeyReused),
        }
    }

    /// A reaction may name the message it reacts to by Parley's id (`msg_…`): the provider
    /// knows it by its own id, which is put in its place here.
    async fn resolve_reaction(&self, workspace: WorkspaceId, content: Content) -> Result<Content> {
        let Content::Reaction { message_id, emoji } = content else { return Ok(content) };
        let Ok(id) = MessageId::parse(&message_id) else { return Ok(Content::Reaction { message_id, emoji }) };
        let target = self.store().get_message(workspace, id, false).await?;
        match target.and_then(|m| m.provider_message_id) {
            Some(provider_id) => Ok(Content::Reaction { message_id: provider_id, emoji }),
            None => Err(EngineError::ReactionTargetNotFound(message_id)),
        }
    }

    async fn build_outbound(&self, workspace: WorkspaceId, spec: SendSpec, now: Millis) -> Result<NewOutbound> {
        let account = self
            .inner
            .registry
            .resolve(self.store().as_ref(), workspace, spec.channel, spec.channel_account_id)
            .await?;
        let send_at = spec.send_at.filter(|at| *at > now);
        let validity = spec.validity_seconds.unwrap_or(DEFAULT_VALIDITY_SECONDS);
        let expires_at = send_at.unwrap_or(now).plus_seconds(validity);
        let id = MessageId::new();
        let second = if send_at.is_some() { EventKind::Scheduled } else { EventKind::Queued };
        let event = |sequence: i64, kind: EventKind| MessageEvent {
            id: EventId::new(),
            message_id: id,
            sequence,
            kind,
            occurred_at: now,
            recorded_at: now,
            applied: true,
            attempt: None,
            provider_message_id: None,
            error: None,
            retry_at: None,
            details: None,
        };
        let events = vec![event(1, EventKind::Accepted), event(2, second)];
        let message = Message {
            id,
            workspace_id: workspace,
            direction: Direction::Outbound,
            channel: spec.channel,
            channel_account_id: account.account.id,
            to: spec.to.as_str().to_string(),
            from: None,
            status: if send_at.is_some() { MessageState::Scheduled } else { MessageState::Queued },
            content: self.resolve_reaction(workspace, spec.content).await?,
            send_at: spec.send_at,
            expires_at,
            validity_seconds: validity,
            metadata: spec.metadata,
            client_reference: spec.client_reference,
            provider_message_id: None,
            attempts: 0,
            error: None,
            sequence: 2,
            created_at: now,
            updated_at: now,
            events: None,
        };
        Ok(NewOutbound { message, events, due_at: send_at.unwrap_or(now) })
    }
}
