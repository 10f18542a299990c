//! Recipient addresses: E.164 phone numbers for SMS, WhatsApp and RCS, and opaque visitor ids for
//! web chat. Numbers are accepted in any common written form and stored in E.164.

use crate::message::Channel;
use std::fmt;

/// A phone number in E.164 form (`+4915112345678`), valid for its region.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("'{input}' is not a valid phone number{}", region_hint(.region))]
    InvalidPhoneNumber { input: String, region: Option<String> },
    #[error("'{0}' is not a known region code (use an ISO 3166-1 alpha-2 code such as DE or IN)")]
    UnknownRegion(String),
    #[error("a web chat visitor id must be 1 to 128 visible ASCII characters")]
    InvalidVisitorId,
}

fn region_hint(region: &Option<String>) -> String {
    match region {
        Some(r) => format!(" (read with default region {r})"),
        None => " for any region (write it with a leading + and country code, or give default_region)".into(),
    }
}

impl E164 {
    /// Parse a number written in any common form: `+49 151 1234-5678`, `0049…`, `(0151) 12345678`
    /// with `default_region = "DE"`. The result is valid (not merely possible) for its region.
    pub fn parse(input: &str, default_region: Option<&str>) -> Result<Self, AddressError> {
        let region = match default_region {
            Some(code) => Some(
                code.to_ascii_uppercase()
                    .parse::<phonenumber::country::Id>()
                    .map_err(|_| AddressError::UnknownRegion(code.chars().take(16).collect()))?,
            ),
            None => None,
        };
        let invalid = || AddressError::InvalidPhoneNumber {
            input: input.chars().take(64).collect(),
            region: default_region.map(|r| r.to_ascii_uppercase()),
        };
        if input.len() > 64 || input.trim().is_empty() {
            return Err(invalid());
        }
        let number = phonenumber::parse(region, input).map_err(|_| invalid())?;
        if !phonenumber::is_valid(&number) {
            return Err(invalid());
        }
        Ok(E164(number.format().mode(phonenumber::Mode::E164).to_string()))
    }

    /// An already normalised value read back from the store.
    pub fn from_stored(value: String) -> Self {
        E164(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.0)
    }
}

/// Where an outbound message goes, already checked for its channel.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Address {
    Phone(E164),
    /// A web chat visitor id, chosen by the web chat widget.
    Visitor(String),
}

impl Address {
    /// Parse `input` as the address form that `channel` uses.
    pub fn parse(channel: Channel, input: &str, default_region: Option<&str>) -> Result<Self, AddressError> {
        match channel {
            Channel::Sms | Channel::Whatsapp | Channel::Rcs => E164::parse(input, default_region).map(Address::Phone),
            Channel::Webchat => {
                let ok = !input.is_empty() && input.len() <= 128 && input.bytes().all(|b| b.is_ascii_graphic());
                if ok { Ok(Address::Visitor(input.to_string())) } else { Err(AddressError::InvalidVisitorId) }
            }
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Address::Phone(n) => n.as_str(),
            Address::Visitor(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_written_forms_normalise_to_e164() {
        for (input, region) in [
            ("+49 151 1234 5678", None),
            ("+49 (0)151-12345678", None),
            ("0151 12345678", Some("DE")),
            ("0049 151 12345678", Some("de")),
        ] {
            assert_eq!(E164::parse(input, region).unwrap().as_str(), "+4915112345678", "{input}");
        }
        assert_eq!(E164::parse("(202) 555-0143", Some("US")).map(|n| n.0).unwrap_or_default().len(), 12);
        assert_eq!(E164::parse("+91 98765 43210", None).unwrap().as_str(), "+919876543210");
    }

    #[test]
    fn invalid_numbers_echo_the_input() {
        let err = E164::parse("12345", None).unwrap_err();
        assert!(err.to_string().contains("'12345'"));
        assert!(E164::parse("+1 555 0100", None).is_err());
        assert!(E164::parse("", None).is_err());
        assert!(E164::parse("not a number", Some("DE")).is_err());
        assert!(matches!(E164::parse("0151 12345678", Some("XX")), Err(AddressError::UnknownRegion(_))));
    }

    #[test]
    fn webchat_takes_visitor_ids() {
        assert_eq!(Address::parse(Channel::Webchat, "vis_123", None).unwrap().as_str(), "vis_123");
        assert!(Address::parse(Channel::Webchat, "has space", None).is_err());
        assert!(Address::parse(Channel::Webchat, "", None).is_err());
    }
}
