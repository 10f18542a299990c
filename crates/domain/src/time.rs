//! Time as stored: milliseconds since the Unix epoch, UTC. Both backends store `BIGINT`
//! milliseconds so that ordering, arithmetic and analytics are identical on SQLite and PostgreSQL;
//! the API renders them as RFC 3339 with a `Z`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A point in time, in whole milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Self {
        Millis(jiff::Timestamp::now().as_millisecond())
    }

    pub fn from_timestamp(ts: jiff::Timestamp) -> Self {
        Millis(ts.as_millisecond())
    }

    pub fn to_timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Millis(self.0.saturating_add(ms))
    }

    pub fn plus_seconds(self, s: i64) -> Self {
        self.plus_millis(s.saturating_mul(1000))
    }

    /// Parse an RFC 3339 timestamp with an offset (`2026-11-27T14:05:00Z`, `…+05:30`).
    pub fn parse_rfc3339(input: &str) -> Result<Self, String> {
        input
            .parse::<jiff::Timestamp>()
            .map(Self::from_timestamp)
            .map_err(|_| format!("'{input}' is not an RFC 3339 timestamp with an offset, like 2026-11-27T14:05:00Z"))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always three fractional digits and a Z: 2026-11-27T14:05:00.123Z
        let ts = self.to_timestamp();
        write!(f, "{}", ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Millis::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Millis {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime)))
            .examples([serde_json::json!("2026-11-27T14:05:00.123Z")])
            .into()
    }
}

impl utoipa::ToSchema for Millis {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339_utc_with_millis() {
        let m = Millis::parse_rfc3339("2026-11-27T14:05:00.123+01:00").unwrap();
        assert_eq!(m.to_string(), "2026-11-27T13:05:00.123Z");
        assert_eq!(Millis(0).to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn refuses_timestamps_without_offset() {
        assert!(Millis::parse_rfc3339("2026-11-27T14:05:00").is_err());
        assert!(Millis::parse_rfc3339("tomorrow").is_err());
    }
}
