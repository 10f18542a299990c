//! What providers tell Parley about messages: receipts for outbound messages, and inbound
//! messages. Connectors produce these; the engine stores them.

use crate::{ChannelAccountId, Content, ErrorInfo, MessageState, Millis};

/// A provider's word on a message it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    pub channel_account_id: ChannelAccountId,
    /// The id the provider gave when it took the message.
    pub provider_message_id: String,
    /// `sent`, `delivered`, `read`, `undelivered` or `failed`.
    pub state: MessageState,
    /// When the provider says it happened.
    pub occurred_at: Millis,
    pub error: Option<ErrorInfo>,
    /// What else the provider said that a user may want (WhatsApp's pricing and conversation
    /// objects, an SMPP receipt's text), kept on the event as `details`.
    pub details: Option<serde_json::Value>,
}

/// A message a customer sent to one of the workspace's channel accounts.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundMessage {
    pub channel_account_id: ChannelAccountId,
    /// The provider's id for it; a second delivery of the same id is a duplicate.
    pub provider_message_id: String,
    /// The customer's address (E.164, or a web chat visitor id).
    pub from: String,
    /// The business address it was sent to, where the provider says.
    pub to: Option<String>,
    pub content: Content,
    pub received_at: Millis,
    /// The sender's contact, set by the engine before the message is stored (connectors leave
    /// it `None`).
    pub contact_id: Option<crate::ContactId>,
}
