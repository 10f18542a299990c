//! Conversations: read them with their cross-channel timeline, reply in them, assign and hand
//! them over, close them; and the idle closer that ends the quiet ones.
//!
//! Messages join conversations in the store (see `parley_store::conversations`); an outbound
//! message to a contact gets its conversation here first ([`Engine::conversation_for_send`]), so
//! that the resource answered at acceptance already names it.

use crate::{Engine, EngineError, Result, SendSpec};
use parley_domain::{
    Address, Assignee, Channel, ChannelAccountId, CloseReason, ContactId, Content, Conversation, ConversationActivity,
    ConversationId, Message, Millis, Purpose, WorkspaceId,
};
use parley_store::{ConversationChange, ConversationFilter};
use std::collections::BTreeMap;
use std::time::Duration;

/// The newest messages a conversation's timeline shows, at most.
pub const TIMELINE_MESSAGES: u32 = 500;

/// Why a conversation request is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("conversation {0} not found in this workspace")]
    NotFound(ConversationId),
    #[error("conversation {0} is closed; a new message to its contact opens a new one")]
    Closed(ConversationId),
    /// A reply needs an address of the contact on the channel it goes to.
    #[error("the contact has no {channel} identity to reply to")]
    NoIdentity { channel: &'static str },
    #[error("the conversation's contact no longer exists")]
    ContactGone,
}

/// A conversation with its timeline: messages of every channel and what happened to it, in order.
#[derive(Clone, Debug)]
pub struct ConversationView {
    pub conversation: Conversation,
    /// Oldest first; the newest [`TIMELINE_MESSAGES`] at most.
    pub messages: Vec<Message>,
    pub activities: Vec<ConversationActivity>,
}

/// A reply in a conversation; unset fields follow the conversation.
#[derive(Clone, Debug)]
pub struct Reply {
    pub content: Content,
    /// Default: the channel the customer last wrote from, else the conversation's last channel.
    pub channel: Option<Channel>,
    /// Default: the account the customer last wrote to on that channel, else the channel's default.
    pub channel_account_id: Option<ChannelAccountId>,
    pub purpose: Purpose,
    pub validity_seconds: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub client_reference: Option<String>,
}

impl Engine {
    pub async fn list_conversations(
        &self,
        workspace: WorkspaceId,
        filter: &ConversationFilter,
        limit: u32,
    ) -> Result<Vec<Conversation>> {
        Ok(self.store().list_conversations(workspace, filter, limit).await?)
    }

    pub async fn conversation(&self, workspace: WorkspaceId, id: ConversationId) -> Result<Option<ConversationView>> {
        let Some(conversation) = self.store().get_conversation(workspace, id).await? else { return Ok(None) };
        let (messages, activities) = tokio::try_join!(
            self.store().conversation_messages(workspace, id, TIMELINE_MESSAGES),
            self.store().conversation_activities(workspace, id),
        )?;
        Ok(Some(ConversationView { conversation, messages, activities }))
    }

    /// The conversation an outbound message to `contact` joins: the contact's open one, opened
    /// now when there is none.
    pub async fn conversation_for_send(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        channel: Channel,
    ) -> Result<ConversationId> {
        Ok(self.store().ensure_open_conversation(workspace, contact, channel, Millis::now()).await?.id)
    }

    /// Turn a reply into the send it is: to the conversation's contact, on the channel the
    /// customer last wrote from (unless told otherwise), at the contact's newest address there.
    pub async fn reply_spec(&self, workspace: WorkspaceId, id: ConversationId, reply: Reply) -> Result<SendSpec> {
        let conversation =
            self.store().get_conversation(workspace, id).await?.ok_or(ConversationError::NotFound(id))?;
        let channel = reply.channel.or(conversation.last_inbound_channel).unwrap_or(conversation.last_channel);
        let contact = self.contact(workspace, conversation.contact_id).await?.ok_or(ConversationError::ContactGone)?;
        let identity =
            contact.newest_identity(channel).ok_or(ConversationError::NoIdentity { channel: channel.as_str() })?;
        let to = Address::parse(channel, &identity.address, None)
            .map_err(|_| ConversationError::NoIdentity { channel: channel.as_str() })?;
        let channel_account_id = reply.channel_account_id.or_else(|| {
            (conversation.last_inbound_channel == Some(channel))
                .then_some(conversation.last_inbound_channel_account_id)
                .flatten()
        });
        Ok(SendSpec {
            channel,
            to: Some(to),
            channel_account_id,
            content: reply.content,
            send_at: None,
            validity_seconds: reply.validity_seconds,
            metadata: reply.metadata,
            client_reference: reply.client_reference,
            contact_id: Some(contact.id),
            purpose: reply.purpose,
            // A reply answers the customer: it goes now unless its purpose says to wait.
            respect_quiet_hours: None,
            auto_channel: false,
            route: None,
        })
    }

    pub async fn close_conversation(&self, workspace: WorkspaceId, id: ConversationId) -> Result<Conversation> {
        match self.store().close_conversation(workspace, id, CloseReason::Closed, Millis::now()).await? {
            ConversationChange::Changed(c) | ConversationChange::Unchanged(c) => Ok(*c),
            ConversationChange::Closed(c) => Ok(*c),
            ConversationChange::NotFound => Err(ConversationError::NotFound(id).into()),
        }
    }

    /// Give the conversation to `assignee` (`None`: to nobody). With a `note`, a hand-over.
    pub async fn assign_conversation(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        assignee: Option<Assignee>,
        note: Option<String>,
    ) -> Result<Conversation> {
        match self.store().assign_conversation(workspace, id, assignee, note, Millis::now()).await? {
            ConversationChange::Changed(c) | ConversationChange::Unchanged(c) => Ok(*c),
            ConversationChange::Closed(_) => Err(ConversationError::Closed(id).into()),
            ConversationChange::NotFound => Err(ConversationError::NotFound(id).into()),
        }
    }
}

impl From<ConversationError> for EngineError {
    fn from(e: ConversationError) -> Self {
        EngineError::Conversation(e)
    }
}

/// How often the idle closer looks: often enough that a conversation closes within a small part
/// of its idle time, never more than every 30 seconds.
pub(crate) fn idle_scan_every(idle_seconds: i64) -> Duration {
    Duration::from_secs(u64::try_from(idle_seconds / 20).unwrap_or(1).clamp(1, 30))
}

/// Close conversations that went quiet. A message to an idle conversation's contact closes it
/// too, before opening the next one, so this only makes closing visible without a new message.
pub(crate) async fn close_idle(engine: Engine) {
    let shutdown = engine.shutdown_token();
    let every = idle_scan_every(engine.config().conversation_idle_seconds);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            match engine.store().close_idle_conversations(Millis::now(), 500).await {
                Ok(500) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not close idle conversations");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_scan_is_frequent_but_bounded() {
        assert_eq!(idle_scan_every(24 * 3600), Duration::from_secs(30));
        assert_eq!(idle_scan_every(60), Duration::from_secs(3));
        assert_eq!(idle_scan_every(5), Duration::from_secs(1));
    }
}
