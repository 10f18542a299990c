//! Typed, prefixed identifiers (`msg_…`, `evt_…`): a UUIDv7 inside, so that ids sort by creation
//! time, which cursor pagination relies on. Clients must treat them as opaque strings.

use std::fmt;
use std::str::FromStr;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a valid {kind} id (expected '{prefix}' followed by 32 hex digits)")]
pub struct IdError {
    pub input: String,
    pub kind: &'static str,
    pub prefix: &'static str,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, ordered after every id made earlier by this process.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            /// The smallest id that [`Self::new`] could make at `unix_millis`: every id made
            /// earlier sorts before it (UUIDv7 starts with its time), which lets records whose
            /// ids are times be purged by id.
            pub fn floor_at(unix_millis: i64) -> Self {
                let ms = u64::try_from(unix_millis).unwrap_or(0).min((1 << 48) - 1);
                let mut bytes = [0u8; 16];
                bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
                bytes[6] = 0x70;
                bytes[8] = 0x80;
                Self(uuid::Uuid::from_bytes(bytes))
            }

            pub fn from_uuid(uuid: uuid::Uuid) -> Self {
                Self(uuid)
            }

            pub fn uuid(&self) -> uuid::Uuid {
                self.0
            }

            pub fn parse(input: &str) -> Result<Self, IdError> {
                input
                    .strip_prefix($prefix)
                    .filter(|hex| hex.len() == 32)
                    .and_then(|hex| uuid::Uuid::try_parse(hex).ok())
                    .map(Self)
                    .ok_or_else(|| IdError { input: input.chars().take(80).collect(), kind: $kind, prefix: $prefix })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Built in one buffer and written at once: ids are formatted for every row the
                // store writes, and the formatting machinery costs more than the encoding.
                const PREFIX_LEN: usize = $prefix.len();
                let mut buf = [0u8; PREFIX_LEN + 32];
                buf[..PREFIX_LEN].copy_from_slice($prefix.as_bytes());
                self.0.simple().encode_lower(&mut buf[PREFIX_LEN..]);
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9a-f]{32}$")))
                    .examples([serde_json::json!(concat!($prefix, "0193a1b2c3d47e8f9a0b1c2d3e4f5a6b"))])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

typed_id!(/// A workspace (tenant).
    WorkspaceId, "wsp_", "workspace");
typed_id!(/// An outbound or inbound message.
    MessageId, "msg_", "message");
typed_id!(/// One event in a message's timeline.
    EventId, "evt_", "event");
typed_id!(/// An API key.
    ApiKeyId, "key_", "API key");
typed_id!(/// A channel account: one configured connection to a provider.
    ChannelAccountId, "cha_", "channel account");
typed_id!(/// A contact (a customer of the workspace).
    ContactId, "ctc_", "contact");
typed_id!(/// A conversation: one continuous thread with a contact across every channel.
    ConversationId, "cnv_", "conversation");
typed_id!(/// One record of the consent ledger (an opt-in or an opt-out).
    ConsentId, "cns_", "consent");
typed_id!(/// A webhook endpoint: a URL that receives the workspace's events.
    WebhookEndpointId, "wh_", "webhook endpoint");
typed_id!(/// One attempt to deliver one event to one webhook endpoint.
    WebhookAttemptId, "wha_", "webhook attempt");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_at_sorts_between_ids_made_before_and_after() {
        let before = WebhookAttemptId::new();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let floor = WebhookAttemptId::floor_at(now);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = WebhookAttemptId::new();
        assert!(before < floor && floor < after);
        assert!(before.to_string() < floor.to_string() && floor.to_string() < after.to_string());
        assert_eq!(WebhookAttemptId::parse(&floor.to_string()).unwrap(), floor);
        assert_eq!(floor.uuid().get_version_num(), 7);
    }

    #[test]
    fn ids_round_trip_and_sort_by_creation() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert!(a.to_string() < b.to_string());
        assert_eq!(MessageId::parse(&a.to_string()).unwrap(), a);
        assert!(a.to_string().starts_with("msg_"));
        assert_eq!(a.to_string().len(), 4 + 32);
    }

    #[test]
    fn ids_of_another_kind_or_garbage_are_refused() {
        let e = EventId::new().to_string();
        assert!(MessageId::parse(&e).is_err());
        assert!(MessageId::parse("msg_").is_err());
        assert!(MessageId::parse("msg_zz").is_err());
        assert!(MessageId::parse("").is_err());
        let err = MessageId::parse("msg_nothex0000000000000000000000000").unwrap_err();
        assert!(err.to_string().contains("message id"));
    }
}
