//! Choosing the channel of a send addressed to a contact with `channel: "auto"`.
//!
//! The contact's preferred channels come first, in its order, then WhatsApp, RCS, SMS and web
//! chat. A channel is passed over when the contact has no address on it, the content cannot be
//! sent on it, the workspace has no account for it, or (WhatsApp, free-form content) the
//! customer's last message to the account is more than 24 hours old. The first one left is used,
//! and the message's `accepted` event says which and why the others were passed over.
//!
//! Fallback to a later channel after a failure or a timeout is not part of this yet.

use crate::policy::PolicyError;
use crate::{Engine, Result, SendSpec};
use parley_domain::{Channel, Content, Millis, WorkspaceId};
use serde_json::{Map, Value, json};

/// After the contact's own preferences, the richer channels first.
const DEFAULT_ORDER: [Channel; 4] = [Channel::Whatsapp, Channel::Rcs, Channel::Sms, Channel::Webchat];

impl Engine {
    /// The channel an automatically routed send goes on, and the `details` of its `accepted`
    /// event (`{"routing": {"mode": "auto", "channel": …, "passed_over": {channel: reason}}}`).
    pub(crate) async fn choose_channel(&self, workspace: WorkspaceId, spec: &SendSpec) -> Result<(Channel, Value)> {
        let id = spec.contact_id.ok_or_else(|| PolicyError::ContactNotFound("(none given)".into()))?;
        let contact = self.contact(workspace, id).await?.ok_or_else(|| PolicyError::ContactNotFound(id.to_string()))?;
        let mut order = contact.preferred_channels.clone();
        order.extend(DEFAULT_ORDER.iter().filter(|c| !contact.preferred_channels.contains(c)));
        let mut passed_over = Map::new();
        for channel in order {
            let address = contact.newest_identity(channel).map(|i| i.address.clone());
            let reason = match address {
                None => Some("no_identity"),
                Some(_) if !spec.content.supported_on(channel) => Some("content_not_supported"),
                Some(address) => {
                    match self.inner.registry.resolve(self.store().as_ref(), workspace, channel, None).await {
                        Err(_) => Some("no_channel_account"),
                        Ok(entry)
                            if channel == Channel::Whatsapp && !matches!(spec.content, Content::Template { .. }) =>
                        {
                            let last = self.store().last_inbound_at(entry.account.id, &address).await?;
                            let at = spec.send_at.unwrap_or_else(Millis::now);
                            (!parley_domain::policy::whatsapp_window_open(last, at)).then_some("whatsapp_window_closed")
                        }
                        Ok(_) => None,
                    }
                }
            };
            match reason {
                Some(reason) => {
                    passed_over.insert(channel.as_str().to_string(), Value::from(reason));
                }
                None => {
                    let details = json!({"routing": {"mode": "auto", "channel": channel, "passed_over": passed_over}});
                    return Ok((channel, details));
                }
            }
        }
        Err(PolicyError::NoRoute { contact: id, passed_over }.into())
    }
}
