//! Choosing the channel of a send addressed to a contact with `channel: "auto"`.
//!
//! The contact's preferred channels come first, in its order, then WhatsApp, RCS, SMS and web
//! chat. A channel is passed over when the contact has no address on it, the content cannot be
//! sent on it, the workspace has no account for it, or (WhatsApp, free-form content, unless the
//! workspace leaves the window to Meta) the customer's last message to the account is more than
//! 24 hours old, or (RCS) the provider's capability check says the number has no RCS. The first
//! one left is used, and the message's `accepted` event says which and why the channels before it
//! were passed over; the channels left after it become its fallback route, each step moving on
//! when it fails.
//!
//! An explicit `route` lists the steps itself (see `parley_domain::route`); [`Engine::plan_route`]
//! resolves each step's account and address and applies the messaging policy to each: a step the
//! policy refuses (an opt-out on that channel, a closed WhatsApp window) is left out, and the
//! `accepted` event says so. Moving on between steps happens in the store, as the dispatcher and
//! the providers report.

use crate::policy::{PolicyError, Refusal, SendCheck, Verdict};
use crate::{Engine, Result, RouteStepSpec, SendSpec};
use parley_domain::policy::{MessagingPolicy, WhatsappWindowMode};
use parley_domain::{Address, Channel, Content, Millis, Route, RouteStep, WorkspaceId};
use parley_store::Contact;
use serde_json::{Map, Value, json};

/// An explicit route, resolved.
pub(crate) struct PlannedRoute {
    /// The recipient's contact, when Parley knows one.
    pub contact: Option<Contact>,
    /// The `details` of the `accepted` event: the steps kept and those left out, with why.
    pub details: Value,
    /// The route and when the policy holds it until (quiet hours); or, when the policy refused
    /// every step, the first step with its refusal.
    pub outcome: std::result::Result<(Route, Option<Millis>), (RouteStep, Refusal, String)>,
}

/// After the contact's own preferences, the richer channels first.
const DEFAULT_ORDER: [Channel; 4] = [Channel::Whatsapp, Channel::Rcs, Channel::Sms, Channel::Webchat];

impl Engine {
    /// The channels an automatically routed send may go on, best first, and the `details` of its
    /// `accepted` event (`{"routing": {"mode": "auto", "channel": …, "passed_over": {channel:
    /// reason}}}`, plus `"fallback": [channels]` when there is more than one). The send goes on the
    /// first; the others become its fallback route, each moving on when the one before fails (an
    /// RCS step fails with `rcs_unreachable` for a number without RCS).
    pub(crate) async fn choose_channels(
        &self,
        workspace: WorkspaceId,
        spec: &SendSpec,
    ) -> Result<(Vec<Channel>, Value)> {
        let id = spec.contact_id.ok_or_else(|| PolicyError::ContactNotFound("(none given)".into()))?;
        let contact = self.contact(workspace, id).await?.ok_or_else(|| PolicyError::ContactNotFound(id.to_string()))?;
        let mut order = contact.preferred_channels.clone();
        order.extend(DEFAULT_ORDER.iter().filter(|c| !contact.preferred_channels.contains(c)));
        let enforce_window = self.messaging_policy(workspace).await?.whatsapp_window == WhatsappWindowMode::Enforce;
        let mut passed_over = Map::new();
        let mut usable = Vec::new();
        for channel in order {
            let address = contact.newest_identity(channel).map(|i| i.address.clone());
            let reason = match address {
                None => Some("no_identity"),
                Some(_) if !spec.content.supported_on(channel) => Some("content_not_supported"),
                Some(address) => {
                    match self.inner.registry.resolve(self.store().as_ref(), workspace, channel, None).await {
                        Err(_) => Some("no_channel_account"),
                        Ok(entry)
                            if channel == Channel::Whatsapp
                                && enforce_window
                                && !matches!(spec.content, Content::Template { .. }) =>
                        {
                            let last = self.store().last_inbound_at(entry.account.id, &address).await?;
                            let at = spec.send_at.unwrap_or_else(Millis::now);
                            (!parley_domain::policy::whatsapp_window_open(last, at)).then_some("whatsapp_window_closed")
                        }
                        // RCS: a number the provider says has no RCS (RBM's capability check,
                        // cached per number) is passed over before anything is sent.
                        Ok(entry) if channel == Channel::Rcs => {
                            (entry.connector.reachable(&address).await == Some(false)).then_some("rcs_unreachable")
                        }
                        Ok(_) => None,
                    }
                }
            };
            match reason {
                Some(reason) if usable.is_empty() => {
                    passed_over.insert(channel.as_str().to_string(), Value::from(reason));
                }
                Some(_) => {}
                None => usable.push(channel),
            }
        }
        let Some(first) = usable.first() else {
            return Err(PolicyError::NoRoute { contact: id, passed_over }.into());
        };
        let mut details = json!({"routing": {"mode": "auto", "channel": first, "passed_over": passed_over}});
        if usable.len() > 1 {
            details["routing"]["fallback"] = json!(usable[1..]);
        }
        Ok((usable, details))
    }
}

impl Engine {
    /// Resolve an explicit route (see the module docs). `policy` is `None` when the messaging
    /// policy does not apply.
    pub(crate) async fn plan_route(
        &self,
        workspace: WorkspaceId,
        spec: &SendSpec,
        steps: Vec<RouteStepSpec>,
        now: Millis,
        send_at: Option<Millis>,
        policy: Option<&MessagingPolicy>,
    ) -> Result<PlannedRoute> {
        let named = match spec.contact_id {
            Some(id) => {
                Some(self.contact(workspace, id).await?.ok_or_else(|| PolicyError::ContactNotFound(id.to_string()))?)
            }
            None => None,
        };
        let mut contact = named.clone();
        let mut kept: Vec<RouteStep> = Vec::new();
        let mut left_out = Vec::new();
        let mut first_refusal = None;
        let mut hold = None;
        for (i, step) in steps.into_iter().enumerate() {
            let account = self
                .inner
                .registry
                .resolve(self.store().as_ref(), workspace, step.channel, step.channel_account_id)
                .await?;
            let unreachable =
                |reason: String| PolicyError::RouteStepUnreachable { step: i, channel: step.channel.as_str(), reason };
            let address = match (&spec.to, &named) {
                (Some(to), _) => Address::parse(step.channel, to.as_str(), None)
                    .map_err(|e| unreachable(e.to_string()))?
                    .as_str()
                    .to_string(),
                (None, Some(c)) => {
                    c.newest_identity(step.channel).map(|identity| identity.address.clone()).ok_or_else(|| {
                        unreachable(format!("contact {} has no {} identity", c.id, step.channel.as_str()))
                    })?
                }
                (None, None) => return Err(PolicyError::ContactNotFound("(none given)".into()).into()),
            };
            if contact.is_none() {
                contact = self.contact_by_identity(workspace, step.channel, &address).await?;
            }
            let content: &Content = step.content.as_ref().unwrap_or(&spec.content);
            let verdict = match policy {
                None => Verdict::Go,
                Some(policy) => {
                    let check = SendCheck {
                        channel: step.channel,
                        account: account.account.id,
                        to: &address,
                        contact: contact.as_ref(),
                        purpose: &spec.purpose,
                        content,
                        now,
                        at: send_at.unwrap_or(now),
                        respect_quiet_hours: spec.respect_quiet_hours,
                    };
                    self.check_send(workspace, policy, check).await?
                }
            };
            let planned = RouteStep::new(step.channel, account.account.id, address, step.content, step.move_on);
            match verdict {
                Verdict::Refuse(refusal, detail) => {
                    left_out.push(json!({"step": i, "channel": step.channel, "reason": refusal.code()}));
                    first_refusal.get_or_insert((planned, refusal, detail));
                }
                Verdict::Hold(at) => {
                    hold.get_or_insert(at);
                    kept.push(planned);
                }
                Verdict::Go => kept.push(planned),
            }
        }
        let details = json!({"routing": {"mode": "route", "steps": kept.len(), "left_out": left_out}});
        let outcome = if kept.is_empty() {
            let refused = first_refusal.ok_or_else(|| PolicyError::RouteStepUnreachable {
                step: 0,
                channel: spec.channel.as_str(),
                reason: "the route has no steps".into(),
            })?;
            Err(refused)
        } else {
            if let Some(last) = kept.last_mut() {
                last.move_on = None;
            }
            kept[0].started_at = Some(now);
            Ok((Route { steps: kept, current_step: 0 }, hold))
        };
        Ok(PlannedRoute { contact, details, outcome })
    }
}
