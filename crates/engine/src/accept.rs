//! Accepting outbound messages: choose the channel account, resolve the recipient (an address or
//! a contact), apply the messaging policy (consent, caps, quiet hours, the WhatsApp window), build
//! the message with its first events, and store it with its dispatch job, all before the caller
//! may say "accepted". A send the policy refuses is stored too, as a `rejected` message without a
//! job, so that the refusal can be looked up by its id.

use crate::metrics::EventTally;
use crate::policy::{PolicyError, SendCheck, Verdict};
use crate::{Engine, EngineError, Result};
use parley_domain::policy::MessagingPolicy;
use parley_domain::{
    Address, Channel, ChannelAccountId, ContactId, Content, Direction, ErrorInfo, EventId, EventKind, Message,
    MessageEvent, MessageId, MessageState, Millis, Purpose, WorkspaceId,
};
use parley_store::{CancelOutcome, Contact, CreateMessages, CreateOutcome, IdempotentRequest, NewOutbound};
use std::collections::BTreeMap;

/// How long a message stays worth sending when the request does not say.
pub const DEFAULT_VALIDITY_SECONDS: i64 = 48 * 3600;
pub const MIN_VALIDITY_SECONDS: i64 = 5;
pub const MAX_VALIDITY_SECONDS: i64 = 14 * 24 * 3600;

/// One validated send request.
#[derive(Clone, Debug)]
pub struct SendSpec {
    pub channel: Channel,
    /// The recipient's address; `None` when the send names `contact_id` instead (the contact's
    /// newest identity on the channel is used).
    pub to: Option<Address>,
    pub channel_account_id: Option<ChannelAccountId>,
    pub content: Content,
    pub send_at: Option<Millis>,
    pub validity_seconds: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub client_reference: Option<String>,
    /// The contact it is for, when known (the policy checks resolve it).
    pub contact_id: Option<ContactId>,
    /// Why it is sent (`transactional` unless the request says).
    pub purpose: Purpose,
    /// Hold it while the contact's quiet hours last: `None` follows the purpose (marketing
    /// waits, anything else goes at once).
    pub respect_quiet_hours: Option<bool>,
    /// `channel: "auto"`: the engine chooses the channel for the contact (see `routing`), and
    /// `channel` is only its starting value.
    pub auto_channel: bool,
    /// An explicit route with fallback (see `parley_domain::route`): its steps in order. `channel`,
    /// `channel_account_id` are then unused, and `content` is what steps without their own send.
    pub route: Option<Vec<RouteStepSpec>>,
}

/// One step of a route as the request gives it (checked: bounds, no account twice).
#[derive(Clone, Debug)]
pub struct RouteStepSpec {
    pub channel: Channel,
    pub channel_account_id: Option<ChannelAccountId>,
    pub content: Option<Content>,
    pub move_on: Option<parley_domain::MoveOn>,
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
    /// transaction as the messages and replayed for 24 h.
    ///
    /// An item the messaging policy refuses is an `Err` (`EngineError::Policy`, naming the
    /// message) and is stored as a `rejected` message all the same. Nothing is stored when no item
    /// could be accepted or recorded as refused (the answer is then not remembered either).
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
        self.accept_as(workspace, specs, idempotency, false, render).await
    }

    /// [`Engine::accept`]; with `exempt`, the messaging policy is not applied (the confirmation
    /// of a keyword must reach the contact who just opted out).
    pub(crate) async fn accept_as<R>(
        &self,
        workspace: WorkspaceId,
        specs: Vec<SendSpec>,
        idempotency: Option<IdempotencyInput>,
        exempt: bool,
        render: R,
    ) -> Result<AcceptOutcome>
    where
        R: FnOnce(&[Result<Message, EngineError>]) -> (u16, Vec<u8>),
    {
        let now = Millis::now();
        let mut items: Vec<Result<Message, EngineError>> = Vec::with_capacity(specs.len());
        let mut new = Vec::with_capacity(specs.len());
        // Loaded once per request, when the first item needs it.
        let mut policy = None;
        for spec in specs {
            let policy = if exempt { None } else { Some(&mut policy) };
            match self.build_outbound(workspace, spec, now, policy).await {
                Ok((outbound, None)) => {
                    items.push(Ok(outbound.message.clone()));
                    new.push(outbound);
                }
                Ok((outbound, Some(refused))) => {
                    items.push(Err(refused.into()));
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

    /// The recipient's address and contact: `to` and the contact that owns it (if any), or the
    /// contact `contact_id` and its newest identity on the channel.
    async fn resolve_recipient(&self, workspace: WorkspaceId, spec: &SendSpec) -> Result<(Address, Option<Contact>)> {
        if let Some(to) = &spec.to {
            let contact = self.contact_by_identity(workspace, spec.channel, to.as_str()).await?;
            return Ok((to.clone(), contact));
        }
        let Some(id) = spec.contact_id else {
            return Err(PolicyError::ContactNotFound("(none given)".into()).into());
        };
        let contact = self.contact(workspace, id).await?.ok_or_else(|| PolicyError::ContactNotFound(id.to_string()))?;
        let newest = contact
            .newest_identity(spec.channel)
            .and_then(|identity| Address::parse(spec.channel, &identity.address, None).ok());
        match newest {
            Some(address) => Ok((address, Some(contact))),
            None => {
                Err(PolicyError::NoIdentityForChannel { contact: contact.id, channel: spec.channel.as_str() }.into())
            }
        }
    }

    /// The message to store, and why the policy refused it if it did (it is then `rejected`).
    /// `policy` is `None` when the policy does not apply, else the request's policy once loaded.
    async fn build_outbound(
        &self,
        workspace: WorkspaceId,
        spec: SendSpec,
        now: Millis,
        policy: Option<&mut Option<std::sync::Arc<MessagingPolicy>>>,
    ) -> Result<(NewOutbound, Option<PolicyError>)> {
        let mut spec = spec;
        let mut routing = None;
        let mut auto_details = None;
        if spec.auto_channel {
            let (channels, details) = self.choose_channels(workspace, &spec).await?;
            spec.channel = channels[0];
            if channels.len() > 1 {
                let last = channels.len() - 1;
                let steps = channels.iter().enumerate().map(|(i, channel)| RouteStepSpec {
                    channel: *channel,
                    channel_account_id: None,
                    content: None,
                    move_on: (i < last).then_some(parley_domain::MoveOn::Failed {}),
                });
                spec.route = Some(steps.collect());
                auto_details = Some(details);
            } else {
                routing = Some(details);
            }
        }
        let policy = match policy {
            None => None,
            Some(slot) => Some(match slot {
                Some(p) => &**p,
                None => &**slot.insert(self.messaging_policy(workspace).await?),
            }),
        };
        let mut send_at = spec.send_at.filter(|at| *at > now);
        let mut refused = None;
        let mut route = None;
        let (account_id, to, contact, content) = match spec.route.take() {
            Some(steps) => {
                let planned = self.plan_route(workspace, &spec, steps, now, send_at, policy).await?;
                routing = Some(match auto_details.take() {
                    // Automatic routing says how it chose; the route adds the steps it left out.
                    Some(mut auto) => {
                        auto["routing"]["left_out"] = planned.details["routing"]["left_out"].clone();
                        auto
                    }
                    None => planned.details,
                });
                match planned.outcome {
                    Ok((planned_route, hold)) => {
                        send_at = hold.or(send_at);
                        let first = planned_route.step().clone();
                        spec.channel = first.channel;
                        route = Some(planned_route);
                        (first.channel_account_id, first.to, planned.contact, spec.content)
                    }
                    Err((first, refusal, detail)) => {
                        refused = Some((refusal, detail));
                        spec.channel = first.channel;
                        (first.channel_account_id, first.to, planned.contact, spec.content)
                    }
                }
            }
            None => {
                let account = self
                    .inner
                    .registry
                    .resolve(self.store().as_ref(), workspace, spec.channel, spec.channel_account_id)
                    .await?;
                let (to, contact) = self.resolve_recipient(workspace, &spec).await?;
                let content = self.resolve_reaction(workspace, spec.content).await?;
                if let Some(policy) = policy {
                    let check = SendCheck {
                        channel: spec.channel,
                        account: account.account.id,
                        to: to.as_str(),
                        contact: contact.as_ref(),
                        purpose: &spec.purpose,
                        content: &content,
                        now,
                        at: send_at.unwrap_or(now),
                        respect_quiet_hours: spec.respect_quiet_hours,
                    };
                    match self.check_send(workspace, policy, check).await? {
                        Verdict::Go => {}
                        Verdict::Hold(at) => send_at = Some(at),
                        Verdict::Refuse(refusal, detail) => refused = Some((refusal, detail)),
                    }
                }
                (account.account.id, to.as_str().to_string(), contact, content)
            }
        };
        // A message to a contact joins the contact's conversation, opened now if needed, so that
        // the answer already names it; a refused one never reached the customer and joins none.
        let conversation_id = match (&refused, &contact) {
            (None, Some(contact)) => Some(self.conversation_for_send(workspace, contact.id, spec.channel).await?),
            _ => None,
        };
        let validity = spec.validity_seconds.unwrap_or(DEFAULT_VALIDITY_SECONDS);
        let expires_at = send_at.unwrap_or(now).plus_seconds(validity);
        let id = MessageId::new();
        let second = match (&refused, send_at) {
            (Some(_), _) => EventKind::Rejected,
            (None, Some(_)) => EventKind::Scheduled,
            (None, None) => EventKind::Queued,
        };
        let error = refused.as_ref().map(|(refusal, detail)| ErrorInfo {
            code: refusal.code().to_string(),
            detail: detail.clone(),
            permanent: true,
        });
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
        let mut events = vec![event(1, EventKind::Accepted), event(2, second)];
        events[0].details = routing;
        events[1].error = error.clone();
        let message = Message {
            id,
            workspace_id: workspace,
            direction: Direction::Outbound,
            channel: spec.channel,
            channel_account_id: account_id,
            to,
            from: None,
            contact_id: contact.as_ref().map(|c| c.id),
            conversation_id,
            purpose: Some(spec.purpose),
            status: match second {
                EventKind::Rejected => MessageState::Rejected,
                EventKind::Scheduled => MessageState::Scheduled,
                _ => MessageState::Queued,
            },
            content,
            route,
            send_at: if refused.is_some() { spec.send_at } else { send_at.or(spec.send_at) },
            expires_at,
            validity_seconds: validity,
            metadata: spec.metadata,
            client_reference: spec.client_reference,
            provider_message_id: None,
            attempts: 0,
            error,
            sequence: 2,
            created_at: now,
            updated_at: now,
            events: None,
        };
        let refused = refused.map(|(refusal, detail)| PolicyError::Refused { refusal, detail, message_id: message.id });
        Ok((NewOutbound { message, events, due_at: send_at.unwrap_or(now) }, refused))
    }
}
