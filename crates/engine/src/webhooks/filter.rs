//! Which event types an endpoint receives: exact types (`message.delivered`), a family
//! (`message.*`) or everything (`*`); an empty list means everything too.

use parley_domain::EventKind;

/// Event types about the workspace rather than one message.
pub const WORKSPACE_EVENT_TYPES: [&str; 1] = ["endpoint.disabled"];

/// Every event type a webhook may ask for, exact ones only.
pub fn known_event_types() -> impl Iterator<Item = &'static str> {
    EventKind::ALL.into_iter().map(EventKind::event_type).chain(WORKSPACE_EVENT_TYPES)
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
    /// Check every entry: an exact known type, `<family>.*` for a family that exists, or `*`.
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
                known_event_types().any(|t| t.split_once('.').is_some_and(|(f, _)| f == family))
            } else {
                known_event_types().any(|t| t == entry)
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
    fn duplicates_are_dropped_in_order() {
        let f = EventTypeFilter::parse(&["message.read", "message.sent", "message.read"]).unwrap();
        assert_eq!(f.entries(), ["message.read", "message.sent"]);
    }
}
