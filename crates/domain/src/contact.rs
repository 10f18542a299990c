//! Contacts' rules: identities (`sms:+4915112345678`), and the checks on a contact's fields
//! (attributes, tags, locale, time zone), including the time zone guessed from a phone number.
//!
//! An identity is a (channel, address) pair: phone channels (sms, whatsapp, rcs) hold E.164
//! numbers with their `+`, web chat holds the widget's visitor id. Everything here is pure, so
//! the API, the importer and the engine apply the very same rules.

use crate::address::{Address, AddressError};
use crate::message::Channel;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Attributes are a JSON object of at most this many bytes (as compact JSON).
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Tags per contact, at most.
pub const MAX_TAGS: usize = 50;
/// Characters per tag, at most.
pub const MAX_TAG_LEN: usize = 64;
/// Characters of a display name, at most.
pub const MAX_NAME_LEN: usize = 256;
/// Identities per contact, at most (a request can name no more).
pub const MAX_IDENTITIES: usize = 50;

/// Why a contact's field is refused. Each names the field and echoes (a bounded part of) the
/// input, so the API can say which value was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactFieldError {
    #[error("'{input}' is not an identity: {reason}")]
    InvalidIdentity { input: String, reason: String },
    #[error("attributes must be a JSON object")]
    AttributesNotObject,
    #[error("attributes are {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES} are allowed")]
    AttributesTooLarge { size: usize },
    #[error("'{0}' is not a valid tag: 1 to 64 of A-Z, a-z, 0-9, '_', ':', '.' and '-'")]
    InvalidTag(String),
    #[error("{0} tags given; at most {MAX_TAGS} are allowed")]
    TooManyTags(usize),
    #[error("'{0}' is not a valid locale: use a BCP 47 tag such as 'en', 'pt-BR' or 'zh-Hant-TW'")]
    InvalidLocale(String),
    #[error("'{0}' is not a known IANA time zone (such as 'Europe/Berlin' or 'America/New_York')")]
    UnknownTimeZone(String),
    #[error("the name must be 1 to {MAX_NAME_LEN} characters without control characters")]
    InvalidName,
}

impl ContactFieldError {
    /// The request field the error is about (`identities`, `tags`, …).
    pub fn field(&self) -> &'static str {
        match self {
            ContactFieldError::InvalidIdentity { .. } => "identities",
            ContactFieldError::AttributesNotObject | ContactFieldError::AttributesTooLarge { .. } => "attributes",
            ContactFieldError::InvalidTag(_) | ContactFieldError::TooManyTags(_) => "tags",
            ContactFieldError::InvalidLocale(_) => "locale",
            ContactFieldError::UnknownTimeZone(_) => "time_zone",
            ContactFieldError::InvalidName => "name",
        }
    }
}

/// A (channel, address) pair that belongs to one contact of a workspace. Built by
/// [`Identity::new`] or [`Identity::parse`], which normalise the address (E.164 with `+` for phone
/// channels), so two spellings of one number are one identity.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Identity {
    pub channel: Channel,
    pub address: String,
}

impl Identity {
    /// Check and normalise `address` for `channel`. WhatsApp ids come without a `+`
    /// (`4915112345678`), so for WhatsApp a bare run of digits is read as a number with its
    /// country code; SMS and RCS numbers need the `+` (or `00`, read as `+`), as a bare national number would
    /// be read in the wrong country.
    pub fn new(channel: Channel, address: &str) -> Result<Identity, ContactFieldError> {
        let trimmed = address.trim();
        let bare_whatsapp_id = channel == Channel::Whatsapp
            && !trimmed.starts_with('0')
            && !trimmed.is_empty()
            && trimmed.bytes().all(|b| b.is_ascii_digit());
        let parsed = if bare_whatsapp_id {
            Address::parse(channel, &format!("+{trimmed}"), None)
        } else if channel != Channel::Webchat
            && let Some(international) = trimmed.strip_prefix("00")
        {
            // The international prefix most of the world dials, without a region to read it by.
            Address::parse(channel, &format!("+{international}"), None)
        } else {
            Address::parse(channel, if channel == Channel::Webchat { address } else { trimmed }, None)
        };
        match parsed {
            Ok(a) => Ok(Identity { channel, address: a.as_str().to_string() }),
            Err(e) => Err(ContactFieldError::InvalidIdentity {
                input: format!("{}:{}", channel.as_str(), bounded(address, 128)),
                reason: identity_reason(channel, &e),
            }),
        }
    }

    /// Parse `channel:address` (`sms:+4915112345678`, `whatsapp:4915112345678`,
    /// `webchat:vis_42`).
    pub fn parse(input: &str) -> Result<Identity, ContactFieldError> {
        let invalid = |reason: &str| ContactFieldError::InvalidIdentity {
            input: bounded(input, 160),
            reason: reason.to_string(),
        };
        let (channel, address) =
            input.split_once(':').ok_or_else(|| invalid("write it as channel:address, such as sms:+4915112345678"))?;
        let channel = Channel::parse(channel)
            .ok_or_else(|| invalid("the channel must be one of sms, whatsapp, rcs and webchat"))?;
        Identity::new(channel, address)
    }

    /// A value read back from the store, normalised when it was written.
    pub fn from_stored(channel: Channel, address: String) -> Identity {
        Identity { channel, address }
    }

    /// The time zone of the number's country when that country has only one (see
    /// [`guess_time_zone`]); `None` for web chat and for countries with several zones.
    pub fn guessed_time_zone(&self) -> Option<&'static str> {
        match self.channel {
            Channel::Webchat => None,
            _ => guess_time_zone(&self.address),
        }
    }
}

fn identity_reason(channel: Channel, e: &AddressError) -> String {
    match (channel, e) {
        (Channel::Webchat, _) => "a web chat visitor id is 1 to 128 visible ASCII characters, without spaces".into(),
        (Channel::Whatsapp, _) => "not a valid phone number with its country code".into(),
        _ => "not a valid phone number; write it in E.164 with its + and country code".into(),
    }
}

fn bounded(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.channel.as_str(), self.address)
    }
}

impl std::str::FromStr for Identity {
    type Err = ContactFieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Identity::parse(s)
    }
}

impl Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Identity::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether a contact's time zone was given by the workspace or guessed by Parley from a phone
/// number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeZoneSource {
    Given,
    Guessed,
}

impl TimeZoneSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeZoneSource::Given => "given",
            TimeZoneSource::Guessed => "guessed",
        }
    }

    pub fn parse(s: &str) -> Option<TimeZoneSource> {
        match s {
            "given" => Some(TimeZoneSource::Given),
            "guessed" => Some(TimeZoneSource::Guessed),
            _ => None,
        }
    }
}

/// Check attributes: a JSON object of at most [`MAX_ATTRIBUTES_BYTES`] as compact JSON.
pub fn validate_attributes(value: &serde_json::Value) -> Result<(), ContactFieldError> {
    if !value.is_object() {
        return Err(ContactFieldError::AttributesNotObject);
    }
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(ContactFieldError::AttributesTooLarge { size });
    }
    Ok(())
}

/// Whether `tag` is 1 to [`MAX_TAG_LEN`] of `A-Za-z0-9_:.-`.
pub fn is_valid_tag(tag: &str) -> bool {
    (1..=MAX_TAG_LEN).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'))
}

/// Check tags and drop repeats (keeping the first), in the given order; at most [`MAX_TAGS`].
pub fn normalize_tags<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>, ContactFieldError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.as_ref();
        if !is_valid_tag(tag) {
            return Err(ContactFieldError::InvalidTag(bounded(tag, 80)));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_string());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(ContactFieldError::TooManyTags(out.len()));
    }
    Ok(out)
}

/// Check a display name: 1 to [`MAX_NAME_LEN`] characters, no control characters; surrounding
/// white space is trimmed.
pub fn normalize_name(name: &str) -> Result<String, ContactFieldError> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ContactFieldError::InvalidName);
    }
    Ok(name.to_string())
}

/// Check a locale and write it in its usual case: a BCP 47 language tag of a 2–3 letter
/// language, an optional 4-letter script and an optional region (2 letters or 3 digits):
/// `en`, `pt-BR`, `zh-Hant-TW`, `es-419`. `pt_br` becomes `pt-BR`.
pub fn normalize_locale(input: &str) -> Result<String, ContactFieldError> {
    let invalid = || ContactFieldError::InvalidLocale(bounded(input, 40));
    if input.len() > 16 {
        return Err(invalid());
    }
    let mut parts = input.split(['-', '_']);
    let language = parts.next().filter(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()));
    let mut out = language.ok_or_else(invalid)?.to_ascii_lowercase();
    let mut rest: Vec<&str> = parts.collect();
    if let Some(script) = rest.first().filter(|s| s.len() == 4 && s.bytes().all(|b| b.is_ascii_alphabetic())) {
        out.push('-');
        out.push_str(&script[..1].to_ascii_uppercase());
        out.push_str(&script[1..].to_ascii_lowercase());
        rest.remove(0);
    }
    if let Some(region) = rest.first() {
        let letters = region.len() == 2 && region.bytes().all(|b| b.is_ascii_alphabetic());
        let digits = region.len() == 3 && region.bytes().all(|b| b.is_ascii_digit());
        if !(letters || digits) {
            return Err(invalid());
        }
        out.push('-');
        out.push_str(&region.to_ascii_uppercase());
        rest.remove(0);
    }
    if !rest.is_empty() {
        return Err(invalid());
    }
    Ok(out)
}

/// Check that `input` names a time zone of the IANA database this machine knows, and return its
/// name as the database writes it (`europe/berlin` becomes `Europe/Berlin`).
pub fn normalize_time_zone(input: &str) -> Result<String, ContactFieldError> {
    let unknown = || ContactFieldError::UnknownTimeZone(bounded(input, 64));
    // Only names: jiff also reads POSIX TZ strings and offsets elsewhere, but `get` takes names,
    // and an empty or absurdly long one is refused before looking.
    if input.is_empty() || input.len() > 64 {
        return Err(unknown());
    }
    let zone = jiff::tz::TimeZone::get(input).map_err(|_| unknown())?;
    Ok(zone.iana_name().unwrap_or(input).to_string())
}

/// The time zone of an E.164 number's country, when the country has exactly one; `None` when it
/// has several (the United States, Brazil, Russia, …) or the number's country is not known.
pub fn guess_time_zone(e164: &str) -> Option<&'static str> {
    let number = phonenumber::parse(None, e164).ok()?;
    let region = number.country().id()?;
    let code: &str = region.as_ref();
    SINGLE_ZONE_COUNTRIES.iter().find(|(c, _)| *c == code).map(|(_, zone)| *zone)
}

/// Countries (ISO 3166-1 alpha-2) with a single time zone, and that zone. Countries with several
/// zones are left out on purpose: guessing one of them would be wrong for part of the country.
const SINGLE_ZONE_COUNTRIES: &[(&str, &str)] = &[
    // Europe
    ("AD", "Europe/Andorra"),
    ("AL", "Europe/Tirane"),
    ("AT", "Europe/Vienna"),
    ("BA", "Europe/Sarajevo"),
    ("BE", "Europe/Brussels"),
    ("BG", "Europe/Sofia"),
    ("BY", "Europe/Minsk"),
    ("CH", "Europe/Zurich"),
    ("CY", "Asia/Nicosia"),
    ("CZ", "Europe/Prague"),
    ("DE", "Europe/Berlin"),
    ("DK", "Europe/Copenhagen"),
    ("EE", "Europe/Tallinn"),
    ("FI", "Europe/Helsinki"),
    ("FR", "Europe/Paris"),
    ("GB", "Europe/London"),
    ("GR", "Europe/Athens"),
    ("HR", "Europe/Zagreb"),
    ("HU", "Europe/Budapest"),
    ("IE", "Europe/Dublin"),
    ("IS", "Atlantic/Reykjavik"),
    ("IT", "Europe/Rome"),
    ("LI", "Europe/Vaduz"),
    ("LT", "Europe/Vilnius"),
    ("LU", "Europe/Luxembourg"),
    ("LV", "Europe/Riga"),
    ("MC", "Europe/Monaco"),
    ("MD", "Europe/Chisinau"),
    ("ME", "Europe/Podgorica"),
    ("MK", "Europe/Skopje"),
    ("MT", "Europe/Malta"),
    ("NL", "Europe/Amsterdam"),
    ("NO", "Europe/Oslo"),
    ("PL", "Europe/Warsaw"),
    ("RO", "Europe/Bucharest"),
    ("RS", "Europe/Belgrade"),
    ("SE", "Europe/Stockholm"),
    ("SI", "Europe/Ljubljana"),
    ("SK", "Europe/Bratislava"),
    ("SM", "Europe/San_Marino"),
    ("TR", "Europe/Istanbul"),
    ("UA", "Europe/Kyiv"),
    // Middle East, Asia, Oceania
    ("AE", "Asia/Dubai"),
    ("AF", "Asia/Kabul"),
    ("AM", "Asia/Yerevan"),
    ("AZ", "Asia/Baku"),
    ("BD", "Asia/Dhaka"),
    ("BH", "Asia/Bahrain"),
    ("BN", "Asia/Brunei"),
    ("BT", "Asia/Thimphu"),
    ("CN", "Asia/Shanghai"),
    ("GE", "Asia/Tbilisi"),
    ("HK", "Asia/Hong_Kong"),
    ("IL", "Asia/Jerusalem"),
    ("IN", "Asia/Kolkata"),
    ("IQ", "Asia/Baghdad"),
    ("IR", "Asia/Tehran"),
    ("JO", "Asia/Amman"),
    ("JP", "Asia/Tokyo"),
    ("KG", "Asia/Bishkek"),
    ("KH", "Asia/Phnom_Penh"),
    ("KR", "Asia/Seoul"),
    ("KW", "Asia/Kuwait"),
    ("LA", "Asia/Vientiane"),
    ("LB", "Asia/Beirut"),
    ("LK", "Asia/Colombo"),
    ("MM", "Asia/Yangon"),
    ("MO", "Asia/Macau"),
    ("MV", "Indian/Maldives"),
    ("MY", "Asia/Kuala_Lumpur"),
    ("NP", "Asia/Kathmandu"),
    ("OM", "Asia/Muscat"),
    ("PH", "Asia/Manila"),
    ("PK", "Asia/Karachi"),
    ("QA", "Asia/Qatar"),
    ("SA", "Asia/Riyadh"),
    ("SG", "Asia/Singapore"),
    ("SY", "Asia/Damascus"),
    ("TH", "Asia/Bangkok"),
    ("TJ", "Asia/Dushanbe"),
    ("TM", "Asia/Ashgabat"),
    ("TW", "Asia/Taipei"),
    ("UZ", "Asia/Tashkent"),
    ("VN", "Asia/Ho_Chi_Minh"),
    ("YE", "Asia/Aden"),
    ("FJ", "Pacific/Fiji"),
    ("PG", "Pacific/Port_Moresby"),
    ("WS", "Pacific/Apia"),
    // Africa
    ("AO", "Africa/Luanda"),
    ("BF", "Africa/Ouagadougou"),
    ("BI", "Africa/Bujumbura"),
    ("BJ", "Africa/Porto-Novo"),
    ("BW", "Africa/Gaborone"),
    ("CI", "Africa/Abidjan"),
    ("CM", "Africa/Douala"),
    ("DZ", "Africa/Algiers"),
    ("EG", "Africa/Cairo"),
    ("ET", "Africa/Addis_Ababa"),
    ("GH", "Africa/Accra"),
    ("GM", "Africa/Banjul"),
    ("GN", "Africa/Conakry"),
    ("KE", "Africa/Nairobi"),
    ("LR", "Africa/Monrovia"),
    ("LS", "Africa/Maseru"),
    ("LY", "Africa/Tripoli"),
    ("MA", "Africa/Casablanca"),
    ("MG", "Indian/Antananarivo"),
    ("ML", "Africa/Bamako"),
    ("MU", "Indian/Mauritius"),
    ("MW", "Africa/Blantyre"),
    ("MZ", "Africa/Maputo"),
    ("NA", "Africa/Windhoek"),
    ("NE", "Africa/Niamey"),
    ("NG", "Africa/Lagos"),
    ("RW", "Africa/Kigali"),
    ("SD", "Africa/Khartoum"),
    ("SN", "Africa/Dakar"),
    ("SO", "Africa/Mogadishu"),
    ("SZ", "Africa/Mbabane"),
    ("TG", "Africa/Lome"),
    ("TN", "Africa/Tunis"),
    ("TZ", "Africa/Dar_es_Salaam"),
    ("UG", "Africa/Kampala"),
    ("ZA", "Africa/Johannesburg"),
    ("ZM", "Africa/Lusaka"),
    ("ZW", "Africa/Harare"),
    // The Americas
    ("BO", "America/La_Paz"),
    ("BS", "America/Nassau"),
    ("BZ", "America/Belize"),
    ("CO", "America/Bogota"),
    ("CR", "America/Costa_Rica"),
    ("CU", "America/Havana"),
    ("DO", "America/Santo_Domingo"),
    ("GT", "America/Guatemala"),
    ("GY", "America/Guyana"),
    ("HN", "America/Tegucigalpa"),
    ("HT", "America/Port-au-Prince"),
    ("JM", "America/Jamaica"),
    ("NI", "America/Managua"),
    ("PA", "America/Panama"),
    ("PE", "America/Lima"),
    ("PR", "America/Puerto_Rico"),
    ("PY", "America/Asuncion"),
    ("SR", "America/Paramaribo"),
    ("SV", "America/El_Salvador"),
    ("TT", "America/Port_of_Spain"),
    ("UY", "America/Montevideo"),
    ("VE", "America/Caracas"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identities_parse_and_normalise() {
        let sms = Identity::parse("sms:+49 151 1234 5678").unwrap();
        assert_eq!(sms, Identity { channel: Channel::Sms, address: "+4915112345678".into() });
        assert_eq!(sms.to_string(), "sms:+4915112345678");
        // WhatsApp ids come without the +.
        assert_eq!(Identity::parse("whatsapp:4915112345678").unwrap().to_string(), "whatsapp:+4915112345678");
        assert_eq!(Identity::parse("whatsapp:+4915112345678").unwrap().to_string(), "whatsapp:+4915112345678");
        assert_eq!(Identity::parse("rcs:+1 202-555-0143").unwrap().address, "+12025550143");
        assert_eq!(Identity::parse("webchat:vis_42").unwrap().address, "vis_42");
        assert_eq!(Identity::new(Channel::Sms, "0049 151 12345678").unwrap().address, "+4915112345678");
    }

    #[test]
    fn malformed_identities_say_why() {
        for input in ["", "sms", "fax:+4915112345678", "sms:4915112345678", "sms:+1 555 0100", "webchat:has space"] {
            let err = Identity::parse(input).unwrap_err();
            assert!(matches!(err, ContactFieldError::InvalidIdentity { .. }), "{input}");
            assert_eq!(err.field(), "identities");
        }
        let err = Identity::parse("fax:123").unwrap_err().to_string();
        assert!(err.contains("'fax:123'") && err.contains("sms, whatsapp, rcs and webchat"), "{err}");
        assert!(Identity::parse(&format!("webchat:{}", "v".repeat(129))).is_err());
        assert!(Identity::parse(&format!("webchat:{}", "v".repeat(128))).is_ok());
    }

    #[test]
    fn identities_serialise_as_strings() {
        let id = Identity::parse("sms:+4915112345678").unwrap();
        assert_eq!(serde_json::to_value(&id).unwrap(), json!("sms:+4915112345678"));
        let back: Identity = serde_json::from_value(json!("whatsapp:4915112345678")).unwrap();
        assert_eq!(back.address, "+4915112345678");
    }

    #[test]
    fn time_zones_are_guessed_only_for_single_zone_countries() {
        assert_eq!(Identity::parse("sms:+4915112345678").unwrap().guessed_time_zone(), Some("Europe/Berlin"));
        assert_eq!(Identity::parse("whatsapp:919876543210").unwrap().guessed_time_zone(), Some("Asia/Kolkata"));
        // Several zones: no guess.
        assert_eq!(guess_time_zone("+12025550143"), None);
        assert_eq!(guess_time_zone("+5511987654321"), None);
        assert_eq!(Identity::parse("webchat:vis_1").unwrap().guessed_time_zone(), None);
    }

    #[test]
    fn every_guessable_zone_is_known_here() {
        for (country, zone) in SINGLE_ZONE_COUNTRIES {
            assert_eq!(normalize_time_zone(zone).as_deref(), Ok(*zone), "{country}");
            assert!(country.parse::<phonenumber::country::Id>().is_ok(), "{country}");
        }
    }

    #[test]
    fn time_zones_must_be_known() {
        assert_eq!(normalize_time_zone("Europe/Berlin").unwrap(), "Europe/Berlin");
        assert_eq!(normalize_time_zone("America/New_York").unwrap(), "America/New_York");
        for bad in ["", "Mars/Olympus_Mons", "Europe/Berln", "+02:00", "../../../etc/passwd", "/etc/localtime"] {
            assert_eq!(normalize_time_zone(bad), Err(ContactFieldError::UnknownTimeZone(bad.into())), "{bad}");
        }
    }

    #[test]
    fn locales_are_checked_and_cased() {
        for (input, want) in [
            ("en", "en"),
            ("pt-BR", "pt-BR"),
            ("pt_br", "pt-BR"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("fil", "fil"),
        ] {
            assert_eq!(normalize_locale(input).unwrap(), want, "{input}");
        }
        for bad in ["", "e", "english", "en-", "en-USA", "en-US-x", "12"] {
            assert!(normalize_locale(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_are_checked_and_deduplicated() {
        assert_eq!(normalize_tags(&["vip", "plan:gold", "vip", "a.b-c_d"]).unwrap(), ["vip", "plan:gold", "a.b-c_d"]);
        assert_eq!(normalize_tags(&["has space"]), Err(ContactFieldError::InvalidTag("has space".into())));
        assert!(normalize_tags(&[""]).is_err());
        assert!(normalize_tags(&["x".repeat(65)]).is_err());
        let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
        assert_eq!(normalize_tags(&many), Err(ContactFieldError::TooManyTags(51)));
        assert_eq!(normalize_tags(&many[..50]).unwrap().len(), 50);
    }

    #[test]
    fn attributes_are_bounded_objects() {
        assert!(validate_attributes(&json!({"plan": "gold", "seats": 3})).is_ok());
        assert_eq!(validate_attributes(&json!([1, 2])), Err(ContactFieldError::AttributesNotObject));
        let big = json!({"blob": "x".repeat(MAX_ATTRIBUTES_BYTES)});
        assert!(matches!(validate_attributes(&big), Err(ContactFieldError::AttributesTooLarge { .. })));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(normalize_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(normalize_name("   "), Err(ContactFieldError::InvalidName));
        assert_eq!(normalize_name("a\u{0}b"), Err(ContactFieldError::InvalidName));
        assert!(normalize_name(&"é".repeat(256)).is_ok());
    }
}
