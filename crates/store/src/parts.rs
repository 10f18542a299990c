//! Multi-part messages: what a receipt for one part does, the same on both backends.
//!
//! A message the provider split into parts (SMPP long SMS) has one `message_parts` row per part,
//! keyed by (channel account, the part's provider id). A receipt for a part is recorded on the
//! message without moving it, and its state is kept on the part; the receipt that gives the last
//! part a final state also resolves the message (see [`crate::Store::record_receipts`]).

use parley_domain::{ErrorInfo, MessageState};

/// One part of a message, as kept.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub provider_message_id: String,
    /// 1-based.
    pub index: i32,
    pub count: i32,
    /// The furthest state its receipts reported (`None`: none yet).
    pub state: Option<MessageState>,
    /// The error of a failed part.
    pub error: Option<ErrorInfo>,
}

/// What a receipt did to the parts of its message.
#[derive(Debug)]
pub(crate) struct PartReceipt {
    pub index: i32,
    pub count: i32,
    /// The part's state (and error) changed: it must be written back.
    pub changed: bool,
    /// Every part is final now, and was not before: the message's own event.
    pub resolution: Option<Resolution>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Resolution {
    pub state: MessageState,
    pub error: Option<ErrorInfo>,
}

/// A part has its last word: delivered, read, or a failure.
fn is_final(state: MessageState) -> bool {
    matches!(state, MessageState::Delivered | MessageState::Read) || state.is_failure()
}

/// Apply a receipt (`state`, `error`) for the part `provider_id` to `parts` (every part of one
/// message). A part's state moves as a message's does (`MessageState::can_advance_to`), so a
/// receipt that repeats or goes back changes nothing. `None` when no part has that id.
pub(crate) fn apply(
    parts: &mut [Part],
    provider_id: &str,
    state: MessageState,
    error: Option<&ErrorInfo>,
) -> Option<PartReceipt> {
    let all_final = |parts: &[Part]| parts.iter().all(|p| p.state.is_some_and(is_final));
    let before = all_final(parts);
    let part = parts.iter_mut().find(|p| p.provider_message_id == provider_id)?;
    let changed = part.state.is_none_or(|current| current.can_advance_to(state));
    if changed {
        part.state = Some(state);
        part.error = if state.is_failure() { error.cloned() } else { None };
    }
    let (index, count) = (part.index, part.count);
    let resolution = (!before && all_final(parts)).then(|| resolve(parts));
    Some(PartReceipt { index, count, changed, resolution })
}

/// The message's state once every part is final: delivered if every part was, else the first
/// failed part's failure.
fn resolve(parts: &[Part]) -> Resolution {
    let mut ordered: Vec<&Part> = parts.iter().collect();
    ordered.sort_by_key(|p| p.index);
    match ordered.into_iter().find(|p| p.state.is_some_and(MessageState::is_failure)) {
        Some(Part { state: Some(state), error, .. }) => Resolution { state: *state, error: error.clone() },
        _ => Resolution { state: MessageState::Delivered, error: None },
    }
}

/// The details of a part's event: what the provider said (an object's fields, or anything else
/// under `"provider"`), with `"part"` and `"parts"`.
pub(crate) fn part_details(details: Option<&serde_json::Value>, index: i32, count: i32) -> serde_json::Value {
    let mut object = match details {
        Some(serde_json::Value::Object(map)) => map.clone(),
        Some(other) => serde_json::Map::from_iter([("provider".to_string(), other.clone())]),
        None => serde_json::Map::new(),
    };
    object.insert("part".into(), index.into());
    object.insert("parts".into(), count.into());
    serde_json::Value::Object(object)
}

/// The parts of a `sent` outcome: `None` for a single part (no id, or one).
pub(crate) fn of_outcome(part_ids: &[String]) -> Option<Vec<Part>> {
    if part_ids.len() < 2 {
        return None;
    }
    let count = i32::try_from(part_ids.len()).unwrap_or(i32::MAX);
    Some(
        part_ids
            .iter()
            .zip(1..)
            .map(|(id, index)| Part { provider_message_id: id.clone(), index, count, state: None, error: None })
            .collect(),
    )
}

/// Read a stored JSON `details` column.
pub(crate) fn parse_details(raw: Option<String>) -> crate::Result<Option<serde_json::Value>> {
    raw.map(|raw| {
        serde_json::from_str(&raw)
            .map_err(|_| crate::StoreError::Corrupt(format!("details '{}'", raw.chars().take(80).collect::<String>())))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageState::*;

    fn parts(n: i32) -> Vec<Part> {
        (1..=n)
            .map(|i| Part { provider_message_id: format!("p{i}"), index: i, count: n, state: None, error: None })
            .collect()
    }

    #[test]
    fn the_last_final_part_resolves_once() {
        let mut p = parts(3);
        assert!(apply(&mut p, "p3", Delivered, None).unwrap().resolution.is_none());
        assert!(apply(&mut p, "p1", Sent, None).unwrap().resolution.is_none());
        assert!(apply(&mut p, "p1", Delivered, None).unwrap().resolution.is_none());
        let last = apply(&mut p, "p2", Delivered, None).unwrap();
        assert_eq!((last.index, last.count), (2, 3));
        assert_eq!(last.resolution, Some(Resolution { state: Delivered, error: None }));
        let again = apply(&mut p, "p2", Delivered, None).unwrap();
        assert!(!again.changed && again.resolution.is_none());
        assert!(apply(&mut p, "p9", Delivered, None).is_none());
    }

    #[test]
    fn a_failed_part_fails_the_message() {
        let mut p = parts(2);
        let error = ErrorInfo { code: "x".into(), detail: "y".into(), permanent: true };
        apply(&mut p, "p2", Undelivered, Some(&error));
        let last = apply(&mut p, "p1", Delivered, None).unwrap();
        assert_eq!(last.resolution, Some(Resolution { state: Undelivered, error: Some(error) }));
    }

    #[test]
    fn details_name_the_part() {
        assert_eq!(part_details(None, 2, 3), serde_json::json!({"part": 2, "parts": 3}));
        assert_eq!(
            part_details(Some(&serde_json::json!({"text": "stat:DELIVRD"})), 1, 2),
            serde_json::json!({"text": "stat:DELIVRD", "part": 1, "parts": 2})
        );
        assert_eq!(
            part_details(Some(&serde_json::json!("x")), 1, 2),
            serde_json::json!({"provider": "x", "part": 1, "parts": 2})
        );
        assert!(of_outcome(&["a".into()]).is_none());
        assert_eq!(of_outcome(&["a".into(), "b".into()]).map(|p| p.len()), Some(2));
    }
}
