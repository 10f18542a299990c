//! Why a message is sent: its purpose decides which consent it needs and whether quiet hours and
//! frequency caps hold it back (`transactional` needs no opt-in; `marketing` does).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A message's purpose: a lower-case slug (`transactional`, `marketing`, `otp`, …), 1 to 32
/// characters of `a-z`, `0-9` and `_`, starting with a letter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "transactional", pattern = "^[a-z][a-z0-9_]{0,31}$")]
pub struct Purpose(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid purpose: 1 to 32 of a-z, 0-9 and _, starting with a letter")]
pub struct PurposeError(pub String);

impl Purpose {
    pub const TRANSACTIONAL: &'static str = "transactional";
    pub const MARKETING: &'static str = "marketing";

    pub fn parse(s: &str) -> Result<Purpose, PurposeError> {
        let valid = (1..=32).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid { Ok(Purpose(s.to_string())) } else { Err(PurposeError(s.chars().take(64).collect())) }
    }

    /// What a send is when the request does not say.
    pub fn transactional() -> Purpose {
        Purpose(Self::TRANSACTIONAL.to_string())
    }

    pub fn marketing() -> Purpose {
        Purpose(Self::MARKETING.to_string())
    }

    /// Marketing needs the recipient's opt-in, and waits out quiet hours by default.
    pub fn is_marketing(&self) -> bool {
        self.0 == Self::MARKETING
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Purpose {
    fn default() -> Self {
        Purpose::transactional()
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Purpose {
    type Error = PurposeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Purpose::parse(&s)
    }
}

impl From<Purpose> for String {
    fn from(p: Purpose) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_parse_and_anything_else_is_refused() {
        for ok in ["transactional", "marketing", "otp", "a", "account_alerts_2"] {
            assert_eq!(Purpose::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "Marketing", "2fa", "_x", "with space", "ümlaut", &"x".repeat(33)] {
            assert!(Purpose::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Purpose::marketing().is_marketing());
        assert!(!Purpose::default().is_marketing());
        assert_eq!(serde_json::to_string(&Purpose::marketing()).unwrap(), "\"marketing\"");
        assert!(serde_json::from_str::<Purpose>("\"Bad\"").is_err());
    }
}
