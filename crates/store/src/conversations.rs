//! Conversations: the [`ConversationStore`] part of the store and what it takes.
//!
//! A contact has at most one open conversation (a partial unique index says so on both
//! backends). A message with a contact joins the contact's open conversation when it is stored:
//! an outbound message names the conversation the engine opened for it beforehand
//! ([`ConversationStore::ensure_open_conversation`]), so that the accepted resource already shows
//! it; an inbound message gets one in the transaction that stores it. A conversation whose last
//! message is older than the idle time is closed (then, or by the idle closer) before a new one
//! opens. Opening, assigning and closing record an activity and a workspace event
//! (`conversation.opened`, `conversation.assigned`, `conversation.closed`) in the same transaction.

use crate::Result;
use async_trait::async_trait;
use parley_domain::{
    Assignee, AssigneeKind, Channel, CloseReason, ContactId, Conversation, ConversationActivity, ConversationId,
    ConversationStatus, Message, Millis, WorkspaceId,
};

/// Filters of `GET /v1/conversations`. `before` is the cursor: only ids smaller than it.
#[derive(Clone, Debug, Default)]
pub struct ConversationFilter {
    pub status: Option<ConversationStatus>,
    /// Conversations with at least one message on this channel.
    pub channel: Option<Channel>,
    pub contact_id: Option<ContactId>,
    pub assignee: Option<AssigneeFilter>,
    pub before: Option<ConversationId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssigneeFilter {
    /// Nobody handles it.
    Unassigned,
    /// Any assignee of this kind.
    Kind(AssigneeKind),
    /// This assignee.
    Exactly(Assignee),
}

/// What became of a change asked of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum ConversationChange {
    /// Changed; the conversation as it is now.
    Changed(Box<Conversation>),
    /// Nothing to change (already closed, or already with that assignee); as it is.
    Unchanged(Box<Conversation>),
    NotFound,
    /// It is closed, and only open conversations can be assigned.
    Closed(Box<Conversation>),
}

/// The conversation part of [`crate::Store`]; both backends implement it with the same behaviour.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// How long a conversation may go without a message before it closes (process-wide; the
    /// engine sets it at start from its configuration).
    fn set_conversation_idle_ms(&self, idle_ms: i64);

    /// The contact's open conversation, opened now when it has none (or when its open one has
    /// been idle too long: that one is closed first, as of when it became idle). Safe under
    /// concurrency: callers racing for a contact with no open conversation get the same one.
    /// `channel` is the channel of the message about to join it.
    async fn ensure_open_conversation(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        channel: Channel,
        now: Millis,
    ) -> Result<Conversation>;

    async fn get_conversation(&self, workspace: WorkspaceId, id: ConversationId) -> Result<Option<Conversation>>;

    /// The workspace's conversations matching `filter`, newest first (by id), at most `limit`.
    async fn list_conversations(
        &self,
        workspace: WorkspaceId,
        filter: &ConversationFilter,
        limit: u32,
    ) -> Result<Vec<Conversation>>;

    /// The conversation's newest `limit` messages (every channel), oldest first.
    async fn conversation_messages(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        limit: u32,
    ) -> Result<Vec<Message>>;

    /// The conversation's activity, oldest first.
    async fn conversation_activities(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
    ) -> Result<Vec<ConversationActivity>>;

    /// Close an open conversation for `reason`.
    async fn close_conversation(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        reason: CloseReason,
        now: Millis,
    ) -> Result<ConversationChange>;

    /// Give an open conversation to `assignee` (`None`: to nobody); with a `note` it is a
    /// hand-over (activity `handed_off`). Both record `conversation.assigned`.
    async fn assign_conversation(
        &self,
        workspace: WorkspaceId,
        id: ConversationId,
        assignee: Option<Assignee>,
        note: Option<String>,
        now: Millis,
    ) -> Result<ConversationChange>;

    /// Close up to `limit` open conversations (of every workspace) idle at `now`; how many.
    async fn close_idle_conversations(&self, now: Millis, limit: u32) -> Result<u64>;
}

/// The workspace event of a conversation change: `conversation.<verb>` with the conversation
/// as it is afterwards.
pub(crate) fn conversation_event(verb: &str, conversation: &Conversation, at: Millis) -> Result<crate::WorkspaceEvent> {
    let data = serde_json::to_value(conversation)
        .map_err(|e| crate::StoreError::Database(format!("cannot serialise a conversation: {e}")))?;
    Ok(crate::WorkspaceEvent {
        id: parley_domain::EventId::new(),
        workspace_id: conversation.workspace_id,
        event_type: format!("conversation.{verb}"),
        data: serde_json::json!({ "conversation": data }),
        created_at: at,
    })
}

/// When an open conversation whose last message was at `last_message_at` becomes idle.
pub(crate) fn idle_at(last_message_at: Millis, idle_ms: i64) -> Millis {
    last_message_at.plus_millis(idle_ms)
}
