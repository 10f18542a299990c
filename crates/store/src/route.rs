//! What both backends share about routed messages (see `parley_domain::route`): how a route is
//! stored, and what the events of a routed message say about the step they belong to.

use crate::{Result, StoreError};
use parley_domain::Route;
use serde_json::{Map, Value};

/// A route as stored in `messages.route`.
pub(crate) fn to_json(route: &Route) -> Result<String> {
    serde_json::to_string(route).map_err(|e| StoreError::Database(format!("cannot serialise a route: {e}")))
}

fn object(details: Option<Value>) -> Map<String, Value> {
    match details {
        Some(Value::Object(map)) => map,
        Some(other) => Map::from_iter([("provider".to_string(), other)]),
        None => Map::new(),
    }
}

/// The `details` of an event of a routed message: what they said, plus the step (`route_step`,
/// from 0) unless they name one already, and `falls_back: true` on the failure of a step that
/// has a next one.
pub(crate) fn step_details(details: Option<Value>, step: usize, falls_back: bool) -> Value {
    let mut map = object(details);
    map.entry("route_step").or_insert(Value::from(step));
    if falls_back {
        map.insert("falls_back".into(), Value::Bool(true));
    }
    Value::Object(map)
}

/// The `details` of a receipt for a step its message has left: recorded, never applied.
pub(crate) fn superseded_details(details: Option<Value>, step: i64) -> Value {
    let mut map = object(details);
    map.insert("route_step".into(), Value::from(step));
    map.insert("superseded".into(), Value::Bool(true));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn details_name_the_step_without_losing_what_the_provider_said() {
        assert_eq!(step_details(None, 1, false), json!({"route_step": 1}));
        assert_eq!(
            step_details(Some(json!({"part": 2, "parts": 3})), 0, true),
            json!({"part": 2, "parts": 3, "route_step": 0, "falls_back": true})
        );
        assert_eq!(step_details(Some(json!({"route_step": 0, "superseded": true})), 1, false)["route_step"], 0);
        assert_eq!(superseded_details(Some(json!({"pricing": {}})), 0)["superseded"], true);
    }
}
