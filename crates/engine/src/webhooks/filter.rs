//! Which event types an endpoint (or a live stream) receives: exact types (`message.delivered`),
//! a family (`message.*`) or everything (`*`); an empty list means everything too.
//!
//! Message types are the [`EventKind`]s. Events about the workspace come from several parts of
//! Parley (endpoints, conversations, contacts), some newer than this list: for those resources any
//! well-formed `resource.past_tense_verb` is accepted, so that a filter written for a type this
//! process does not know yet is kept rather than refused.

use parley_domain::EventKind;

/// Event types about the workspace rather than one message, known today.
pub const WORKSPACE_EVENT_TYPES: [&str; 10] = [
    "endpoint.disabled",
    "conversation.opened",
    "conversation.assigned",
    "conversation.closed",
    "contact.created",
    "contact.updated",
    "contact.merged",
    "contact.deleted",
    "contact.opted_out",
    "contact.opted_in",
];

/// The resources events are about. `message` types are exactly the [`EventKind`]s; the others'
/// verbs are open (see the module comment).
pub const EVENT_RESOURCES: [&str; 4] = ["message", "endpoint", "conversation", "contact"];

/// Every event type known today, exact ones only.
pub fn known_event_types() -> impl Iterator<Item = &'static str> {
    EventKind::ALL.into_iter().map(EventKind::event_type).chain(WORKSPACE_EVENT_TYPES)
}

/// Whether `event_type` is a type an endpoint may ask for: a message event type, or
/// `<resource>.<verb>` for another known resource, the verb in lowercase letters, digits and `_`
/// (starting with a letter, at most 64 characters).
pub fn is_known_event_type(event_type: &str) -> bool {
    let Some((resource, verb)) = event_type.split_once('.') else { return false };
    match resource {
        "message" => EventKind::ALL.into_iter().any(|k| k.event_type() == event_type),
        _ if EVENT_RESOURCES.contains(&resource) => {
            verb.len() <= 64
                && verb.starts_with(|c: char| c.is_ascii_lowercase())
                && verb.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }
        _ => false,
    }
}

/// Why a filter entry is refused: the entry, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{entry}' {reason}")]
pub struct UnknownEventType {
    pub entry: String,
    pub reason: &'static str,
}

/// A checked list of event types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventTypeFilter {
    entries: Vec<String>,
}

/// At most this many entries in one filter.
pub const MAX_ENTRIES: usize = 64;

impl EventTypeFilter {
    /// Check every entry: a known type ([`is_known_event_type`]), `<resource>.*` for a known
    /// resource, or `*`.
    /// Duplicates are dropped, the order kept.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<EventTypeFilter, UnknownEventType> {
        if entries.len() > MAX_ENTRIES {
            return Err(UnknownEventType {
                entry: format!("{} entries", entries.len()),
                reason: "are too many (64 at most)",
            });
        }
        let mut out: Vec<String> = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref();
            let known = if entry == "*" {
                true
            } else if let Some(family) = entry.strip_suffix(".*") {
                EVENT_RESOURCES.contains(&family)
            } else {
                is_known_event_type(entry)
            };
            if !known {
                let entry: String = entry.chars().take(100).collect();
                return Err(UnknownEventType {
                    entry,
                    reason: "is not an event type (see the list in the API reference)",
                });
            }
            if !out.iter().any(|e| e == entry) {
                out.push(entry.to_owned());
            }
        }
        Ok(EventTypeFilter { entries: out })
    }

    /// A filter read back from the store (checked when it was written).
    pub fn from_stored(entries: Vec<String>) -> EventTypeFilter {
        EventTypeFilter { entries }
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<String> {
        self.entries
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.entries.is_empty()
            || self.entries.iter().any(|e| {
                e == "*"
                    || e == event_type
                    || e.strip_suffix(".*")
                        .is_some_and(|family| event_type.strip_prefix(family).is_some_and(|rest| rest.starts_with('.')))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_family_and_everything() {
        let f = EventTypeFilter::parse(&["message.delivered", "endpoint.*"]).unwrap();
        assert!(f.matches("message.delivered"));
        assert!(!f.matches("message.read"));
        assert!(f.matches("endpoint.disabled"));
        assert!(EventTypeFilter::parse(&["message.*"]).unwrap().matches("message.read"));
        assert!(!EventTypeFilter::parse(&["message.*"]).unwrap().matches("messages.read"));
        assert!(EventTypeFilter::parse(&["*"]).unwrap().matches("message.read"));
        assert!(EventTypeFilter::parse::<&str>(&[]).unwrap().matches("message.read"));
    }

    #[test]
    fn unknown_types_and_families_are_refused_by_name() {
        for bad in ["message.exploded", "delivered", "messages.*", "message.", "*.delivered", "", "message.**"] {
            let err = EventTypeFilter::parse(&[bad]).unwrap_err();
            assert_eq!(err.entry, bad);
        }
    }

    #[test]
    fn workspace_event_types_of_known_resources_are_accepted() {
        for t in known_event_types() {
            assert!(EventTypeFilter::parse(&[t]).is_ok(), "{t}");
        }
        let f = EventTypeFilter::parse(&["conversation.*", "contact.opted_out", "endpoint.reenabled"]).unwrap();
        assert!(f.matches("conversation.assigned"));
        assert!(f.matches("contact.opted_out"));
        assert!(!f.matches("contact.opted_in"));
        assert!(f.matches("endpoint.reenabled"));
        assert!(!f.matches("message.sent"));
        for bad in ["ticket.opened", "tickets.*", "contact.Opted_out", "contact.opted-out", "contact.1st", "contact."] {
            assert_eq!(EventTypeFilter::parse(&[bad]).unwrap_err().entry, bad);
        }
    }

    #[test]
    fn duplicates_are_dropped_in_order() {
        let f = EventTypeFilter::parse(&["message.read", "message.sent", "message.read"]).unwrap();
        assert_eq!(f.entries(), ["message.read", "message.sent"]);
    }
}
