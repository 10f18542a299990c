//! Parley's domain: the types and rules every other crate speaks in.
//!
//! Values are parsed at the edge into these types (`E164::parse`, `Content::validate`,
//! `MessageState`), and past the edge a value of the type is valid. This crate does no IO and
//! no async work and depends on no other Parley crate, so that its rules can be tested alone
//! (unit and property tests live beside the code).

pub mod address;
pub mod backoff;
pub mod contact;
pub mod content;
pub mod conversation;
pub mod event;
pub mod ids;
pub mod message;
pub mod policy;
pub mod provider;
pub mod purpose;
pub mod route;
pub mod scope;
pub mod segments;
pub mod time;
pub mod webhook;

pub use address::{Address, AddressError, E164};
pub use contact::{ContactFieldError, Identity, TimeZoneSource};
pub use content::{
    CardMedia, CardOrientation, CardWidth, Content, ContentError, InteractiveAction, InteractiveHeader, ListRow,
    ListSection, MediaHeight, MediaKind, ReplyButton, RichCard, Suggestion, TemplateComponent, TemplateComponentKind,
    TemplateParameter,
};
pub use conversation::{
    ActivityKind, Assignee, AssigneeKind, CloseReason, Conversation, ConversationActivity, ConversationStatus,
};
pub use event::{EventEnvelope, MessageEventData};
pub use ids::*;
pub use message::{Channel, Direction, ErrorInfo, EventKind, Message, MessageEvent, MessageState};
pub use provider::{InboundMessage, Receipt};
pub use purpose::{Purpose, PurposeError};
pub use route::{FallbackReason, MoveOn, Route, RouteDecision, RouteStep};
pub use scope::{Scope, Scopes};
pub use time::Millis;
pub use webhook::{SecretError, VerifyError, WebhookSecret};
