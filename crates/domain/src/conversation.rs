//! Conversations: one continuous thread with a contact across every channel.
//!
//! Every inbound message, and every outbound message to a known contact, belongs to the
//! contact's open conversation, whatever its channel. A contact has at most one open conversation;
//! it closes after an idle time or when someone closes it, and the next message opens a new one.
//! Who handles it (a human agent or a bot) is its assignee; a hand-over is an assignment with a
//! note. What happened to a conversation besides its messages is kept as [`ConversationActivity`].

use crate::{Channel, ChannelAccountId, ContactId, ConversationId, Millis, WorkspaceId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    Open,
    Closed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Open => "open",
            ConversationStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<ConversationStatus> {
        match s {
            "open" => Some(ConversationStatus::Open),
            "closed" => Some(ConversationStatus::Closed),
            _ => None,
        }
    }
}

/// Why a conversation closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// No message for the idle time.
    Idle,
    /// Someone closed it (`POST /v1/conversations/{id}/close`).
    Closed,
    /// Its contact was merged into another one that had an open conversation of its own.
    Merged,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::Closed => "closed",
            CloseReason::Merged => "merged",
        }
    }

    pub fn parse(s: &str) -> Option<CloseReason> {
        match s {
            "idle" => Some(CloseReason::Idle),
            "closed" => Some(CloseReason::Closed),
            "merged" => Some(CloseReason::Merged),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssigneeKind {
    /// A human agent.
    Agent,
    /// An automated assistant.
    Bot,
}

impl AssigneeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AssigneeKind::Agent => "agent",
            AssigneeKind::Bot => "bot",
        }
    }

    pub fn parse(s: &str) -> Option<AssigneeKind> {
        match s {
            "agent" => Some(AssigneeKind::Agent),
            "bot" => Some(AssigneeKind::Bot),
            _ => None,
        }
    }
}

/// Who handles a conversation: an agent or a bot, named by the workspace's own id for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignee {
    pub kind: AssigneeKind,
    /// The workspace's id for the agent or bot (1 to 128 printable characters).
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an assignee id needs 1 to 128 printable characters")]
pub struct AssigneeError;

impl Assignee {
    pub fn new(kind: AssigneeKind, id: &str) -> Result<Assignee, AssigneeError> {
        let ok = (1..=128).contains(&id.chars().count()) && !id.chars().any(char::is_control) && id.trim() == id;
        if ok { Ok(Assignee { kind, id: id.to_string() }) } else { Err(AssigneeError) }
    }
}

/// A conversation resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conversation {
    /// `cnv_…`
    pub id: ConversationId,
    pub workspace_id: WorkspaceId,
    pub contact_id: ContactId,
    pub status: ConversationStatus,
    /// Who handles it; `null` when nobody does.
    pub assignee: Option<Assignee>,
    /// The channel of its newest message.
    pub last_channel: Channel,
    /// The channel and account the customer last wrote from (where a reply goes by default);
    /// `null` until the customer writes.
    pub last_inbound_channel: Option<Channel>,
    pub last_inbound_channel_account_id: Option<ChannelAccountId>,
    pub last_inbound_at: Option<Millis>,
    pub last_message_at: Millis,
    pub message_count: i64,
    pub opened_at: Millis,
    pub closed_at: Option<Millis>,
    pub close_reason: Option<CloseReason>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What happened to a conversation besides its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    Opened,
    /// Given to an assignee, or taken from one (`assignee: null`).
    Assigned,
    /// Handed over to another assignee, with a note.
    HandedOff,
    Closed,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Opened => "opened",
            ActivityKind::Assigned => "assigned",
            ActivityKind::HandedOff => "handed_off",
            ActivityKind::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<ActivityKind> {
        match s {
            "opened" => Some(ActivityKind::Opened),
            "assigned" => Some(ActivityKind::Assigned),
            "handed_off" => Some(ActivityKind::HandedOff),
            "closed" => Some(ActivityKind::Closed),
            _ => None,
        }
    }
}

/// One entry of a conversation's activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConversationActivity {
    #[serde(rename = "type")]
    pub kind: ActivityKind,
    pub at: Millis,
    /// For `assigned` and `handed_off`: the assignee afterwards (`null`: unassigned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Assignee>,
    /// For `handed_off`: the note for whoever takes over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For `closed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CloseReason>,
}

/// How long a conversation may be idle before it closes, when nothing else is configured.
pub const DEFAULT_IDLE_SECONDS: i64 = 24 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [ConversationStatus::Open, ConversationStatus::Closed] {
            assert_eq!(ConversationStatus::parse(s.as_str()), Some(s));
        }
        for r in [CloseReason::Idle, CloseReason::Closed, CloseReason::Merged] {
            assert_eq!(CloseReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for k in [ActivityKind::Opened, ActivityKind::Assigned, ActivityKind::HandedOff, ActivityKind::Closed] {
            assert_eq!(ActivityKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(AssigneeKind::parse("bot"), Some(AssigneeKind::Bot));
        assert_eq!(AssigneeKind::parse("human"), None);
    }

    #[test]
    fn assignee_ids_are_bounded_and_printable() {
        assert!(Assignee::new(AssigneeKind::Agent, "agent-7@support").is_ok());
        for bad in ["", " padded", "tab\there", &"x".repeat(129)] {
            assert_eq!(Assignee::new(AssigneeKind::Bot, bad), Err(AssigneeError), "{bad:?}");
        }
    }
}
