//! A workspace's messaging policy, as pure rules: the consent ledger's records and how the
//! consent in force is read from them, keyword matching of inbound texts, quiet hours in a
//! contact's time zone (DST-correct), frequency caps and the WhatsApp customer-service window.
//!
//! The engine loads what these need from the store and applies them; nothing here does IO.

use crate::{Channel, ConsentId, ContactId, Millis, Purpose, WorkspaceId};
use jiff::civil::Time;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a ledger record writes "every channel" or "every purpose".
pub const ANY: &str = "*";

/// Meta's customer-service window: free-form WhatsApp messages may follow the customer's last
/// message for this long.
pub const WHATSAPP_WINDOW_MS: i64 = 24 * 3600 * 1000;

// ---- the consent ledger --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    OptedIn,
    OptedOut,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::OptedIn => "opted_in",
            ConsentStatus::OptedOut => "opted_out",
        }
    }

    pub fn parse(s: &str) -> Option<ConsentStatus> {
        [ConsentStatus::OptedIn, ConsentStatus::OptedOut].into_iter().find(|c| c.as_str() == s)
    }
}

/// Where a ledger record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    /// `POST /v1/contacts/{id}/consents` (or `DELETE /v1/opt-outs/…`).
    Api,
    /// An inbound keyword (STOP, START, …).
    Keyword,
    /// An import of consents given elsewhere.
    Import,
    /// `POST /v1/opt-outs`.
    OptOutApi,
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::Api => "api",
            ConsentSource::Keyword => "keyword",
            ConsentSource::Import => "import",
            ConsentSource::OptOutApi => "opt_out_api",
        }
    }

    pub fn parse(s: &str) -> Option<ConsentSource> {
        [ConsentSource::Api, ConsentSource::Keyword, ConsentSource::Import, ConsentSource::OptOutApi]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// The channel a record is about: one, or every channel (`*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelScope {
    All,
    One(Channel),
}

impl ChannelScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelScope::All => ANY,
            ChannelScope::One(c) => c.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<ChannelScope> {
        if s == ANY { Some(ChannelScope::All) } else { Channel::parse(s).map(ChannelScope::One) }
    }

    pub fn covers(self, channel: Channel) -> bool {
        self == ChannelScope::All || self == ChannelScope::One(channel)
    }
}

/// The purpose a record is about: one, or every purpose (`*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PurposeScope {
    All,
    One(Purpose),
}

impl PurposeScope {
    pub fn as_str(&self) -> &str {
        match self {
            PurposeScope::All => ANY,
            PurposeScope::One(p) => p.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<PurposeScope> {
        if s == ANY { Some(PurposeScope::All) } else { Purpose::parse(s).ok().map(PurposeScope::One) }
    }

    pub fn covers(&self, purpose: &Purpose) -> bool {
        match self {
            PurposeScope::All => true,
            PurposeScope::One(p) => p == purpose,
        }
    }
}

macro_rules! scope_as_string {
    ($t:ty, $example:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }
        impl utoipa::ToSchema for $t {}
    };
}
scope_as_string!(ChannelScope, "sms");
scope_as_string!(PurposeScope, "marketing");

/// One immutable record of the consent ledger.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Consent {
    pub id: ConsentId,
    #[serde(skip)]
    pub workspace_id: WorkspaceId,
    pub contact_id: ContactId,
    /// A channel, or `*` for every channel.
    pub channel: ChannelScope,
    /// A purpose, or `*` for every purpose.
    pub purpose: PurposeScope,
    pub status: ConsentStatus,
    pub source: ConsentSource,
    /// What proves it: the inbound message and its text for a keyword, the API key for a call.
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    /// The address it came from, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub recorded_at: Millis,
}

impl Consent {
    pub fn covers(&self, channel: Channel, purpose: &Purpose) -> bool {
        self.channel.covers(channel) && self.purpose.covers(purpose)
    }
}

/// The consent in force for (channel, purpose): the newest record that matches it exactly or by
/// wildcard (ids grow with time, so the newest is the greatest id). `None`: the ledger says
/// nothing about it.
pub fn consent_in_force<'a>(records: &'a [Consent], channel: Channel, purpose: &Purpose) -> Option<&'a Consent> {
    records.iter().filter(|r| r.covers(channel, purpose)).max_by_key(|r| r.id)
}

/// Why the ledger refuses a send, if it does: an opt-out in force, or marketing without an opt-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentRefusal {
    OptedOut,
    ConsentRequired,
}

pub fn check_consent(records: &[Consent], channel: Channel, purpose: &Purpose) -> Result<(), ConsentRefusal> {
    match consent_in_force(records, channel, purpose).map(|r| r.status) {
        Some(ConsentStatus::OptedOut) => Err(ConsentRefusal::OptedOut),
        Some(ConsentStatus::OptedIn) => Ok(()),
        None if purpose.is_marketing() => Err(ConsentRefusal::ConsentRequired),
        None => Ok(()),
    }
}

// ---- keywords --------------------------------------------------------------------------------------

/// What an inbound keyword asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeywordAction {
    /// Opt out of every purpose on this channel.
    OptOut,
    /// Opt out of every purpose on every channel.
    OptOutAll,
    /// Opt back in on this channel.
    OptIn,
    Help,
}

/// The keywords of one language.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KeywordLists {
    pub opt_out: Vec<String>,
    pub opt_out_all: Vec<String>,
    pub opt_in: Vec<String>,
    pub help: Vec<String>,
}

/// An inbound text as compared with keywords: trimmed of surrounding whitespace and punctuation
/// (anything not a letter or digit), lower-cased, accents folded (`ARRÊT!` → `arret`), inner
/// whitespace collapsed.
pub fn normalize_keyword(text: &str) -> String {
    let trimmed = text.trim_matches(|c: char| !c.is_alphanumeric());
    let mut out = String::with_capacity(trimmed.len());
    let mut space = false;
    for c in trimmed.chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        match fold_accent(c) {
            Some(s) => out.push_str(s),
            None => out.push(c),
        }
    }
    out
}

/// The unaccented form of a lower-case Latin letter with a diacritic (Latin-1 and Latin
/// Extended-A, which covers the languages whose keywords carriers define).
fn fold_accent(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

// ---- the workspace's settings ------------------------------------------------------------------

/// Quiet hours: marketing waits while the contact's local time is in `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QuietHours {
    pub enabled: bool,
    /// `HH:MM`, local time of the contact.
    #[schema(example = "21:00")]
    pub start: String,
    /// `HH:MM`: when sending may start again.
    #[schema(example = "08:00")]
    pub end: String,
    /// The zone used for contacts that have none (IANA name).
    #[schema(example = "UTC")]
    pub default_time_zone: String,
}

impl Default for QuietHours {
    fn default() -> Self {
        QuietHours { enabled: true, start: "21:00".into(), end: "08:00".into(), default_time_zone: "UTC".into() }
    }
}

/// At most `max` messages of `purpose` to one contact in any `period_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    #[schema(value_type = String, example = "marketing")]
    pub purpose: Purpose,
    pub max: u32,
    pub period_seconds: i64,
}

/// What happens to a send over a frequency cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapAction {
    /// Refused with `frequency_cap_exceeded`.
    #[default]
    Reject,
    /// Scheduled for when the cap allows it.
    Defer,
}

/// Who keeps the WhatsApp customer-service window (free-form messages only within 24 hours of
/// the customer's last message to the number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhatsappWindowMode {
    /// Parley refuses free-form content to a number that has not written to the WhatsApp number
    /// in the last 24 hours (`whatsapp_window_closed`), before anything reaches Meta.
    #[default]
    Enforce,
    /// Parley does not check: Meta decides, and a closed window fails the message with Meta's
    /// 131047. For businesses whose customers also write through systems Parley does not see.
    Provider,
}

/// A workspace's messaging policy (`GET/PATCH /v1/messaging-policy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingPolicy {
    pub quiet_hours: QuietHours,
    pub frequency_caps: Vec<FrequencyCap>,
    pub cap_action: CapAction,
    /// Keywords per language (`en`, `fr`, …), compared case-, accent- and punctuation-insensitively.
    pub keywords: BTreeMap<String, KeywordLists>,
    /// Sent in answer to HELP.
    pub help_text: String,
    /// Sent once when a contact opts out by keyword.
    pub opt_out_reply: String,
    /// Sent once when a contact opts back in by keyword.
    pub opt_in_reply: String,
    /// Whether Parley enforces the WhatsApp customer-service window itself.
    pub whatsapp_window: WhatsappWindowMode,
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Default for MessagingPolicy {
    fn default() -> Self {
        let mut keywords = BTreeMap::new();
        keywords.insert(
            "en".to_string(),
            KeywordLists {
                opt_out: words(&["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]),
                opt_out_all: words(&["STOPALL"]),
                opt_in: words(&["START", "UNSTOP", "YES"]),
                help: words(&["HELP", "INFO"]),
            },
        );
        keywords.insert(
            "fr".to_string(),
            KeywordLists {
                opt_out: words(&["ARRET", "ARRÊT"]),
                opt_out_all: Vec::new(),
                opt_in: words(&["DEMARRER"]),
                help: words(&["AIDE"]),
            },
        );
        MessagingPolicy {
            quiet_hours: QuietHours::default(),
            frequency_caps: Vec::new(),
            cap_action: CapAction::Reject,
            keywords,
            help_text: "Reply STOP to unsubscribe, START to subscribe again.".into(),
            opt_out_reply: "You are unsubscribed and will receive no more messages. Reply START to resubscribe.".into(),
            opt_in_reply: "You are subscribed again. Reply STOP to unsubscribe, HELP for help.".into(),
            whatsapp_window: WhatsappWindowMode::Enforce,
        }
    }
}

/// A field of the policy that is not acceptable, named as in the API (`quiet_hours.start`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PolicyFieldError {
    pub field: String,
    pub reason: String,
}

pub const MIN_CAP_PERIOD_SECONDS: i64 = 60;
pub const MAX_CAP_PERIOD_SECONDS: i64 = 90 * 86_400;
const MAX_KEYWORDS: usize = 50;
const MAX_REPLY_CHARS: usize = 320;

/// Parse `HH:MM` (24-hour clock).
pub fn parse_clock(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
    Time::new(h, m, 0, 0).ok()
}

impl MessagingPolicy {
    /// Every field that is not acceptable (empty when the policy is valid).
    pub fn validate(&self) -> Vec<PolicyFieldError> {
        let mut errors = Vec::new();
        let mut bad = |field: String, reason: String| errors.push(PolicyFieldError { field, reason });
        for (field, value) in [("start", &self.quiet_hours.start), ("end", &self.quiet_hours.end)] {
            if parse_clock(value).is_none() {
                bad(
                    format!("quiet_hours.{field}"),
                    format!("'{value}' is not a time of day as HH:MM (00:00 to 23:59)"),
                );
            }
        }
        if TimeZone::get(&self.quiet_hours.default_time_zone).is_err() {
            bad(
                "quiet_hours.default_time_zone".into(),
                format!("'{}' is not a known IANA time zone", self.quiet_hours.default_time_zone),
            );
        }
        for (i, cap) in self.frequency_caps.iter().enumerate() {
            if cap.max == 0 {
                bad(format!("frequency_caps[{i}].max"), "must be at least 1".into());
            }
            if !(MIN_CAP_PERIOD_SECONDS..=MAX_CAP_PERIOD_SECONDS).contains(&cap.period_seconds) {
                bad(
                    format!("frequency_caps[{i}].period_seconds"),
                    format!("must be {MIN_CAP_PERIOD_SECONDS} to {MAX_CAP_PERIOD_SECONDS} (90 days)"),
                );
            }
            if self.frequency_caps[..i]
                .iter()
                .any(|c| c.purpose == cap.purpose && c.period_seconds == cap.period_seconds)
            {
                bad(format!("frequency_caps[{i}]"), "repeats the purpose and period of an earlier cap".into());
            }
        }
        for (language, lists) in &self.keywords {
            let valid_language = (2..=8).contains(&language.len())
                && language.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                && !language.starts_with('-');
            if !valid_language {
                bad(format!("keywords.{language}"), "languages are written like en, fr or pt-br".into());
            }
            for (name, list) in [
                ("opt_out", &lists.opt_out),
                ("opt_out_all", &lists.opt_out_all),
                ("opt_in", &lists.opt_in),
                ("help", &lists.help),
            ] {
                if list.len() > MAX_KEYWORDS {
                    bad(format!("keywords.{language}.{name}"), format!("at most {MAX_KEYWORDS} keywords"));
                }
                for (j, word) in list.iter().enumerate() {
                    let normal = normalize_keyword(word);
                    if normal.is_empty() || normal.chars().count() > 32 {
                        bad(
                            format!("keywords.{language}.{name}[{j}]"),
                            "a keyword needs 1 to 32 letters or digits".into(),
                        );
                    }
                }
            }
        }
        for (field, text) in [
            ("help_text", &self.help_text),
            ("opt_out_reply", &self.opt_out_reply),
            ("opt_in_reply", &self.opt_in_reply),
        ] {
            let n = text.trim().chars().count();
            if n == 0 || n > MAX_REPLY_CHARS {
                bad(field.into(), format!("must be 1 to {MAX_REPLY_CHARS} characters"));
            }
        }
        errors
    }

    /// What an inbound text asks for, if it is one of the keywords (whole text, normalised).
    /// When a word is in several lists, opting out wins over opting in, and both over help.
    pub fn keyword_action(&self, text: &str) -> Option<KeywordAction> {
        let normal = normalize_keyword(text);
        if normal.is_empty() {
            return None;
        }
        let has = |pick: fn(&KeywordLists) -> &Vec<String>| {
            self.keywords.values().any(|lists| pick(lists).iter().any(|w| normalize_keyword(w) == normal))
        };
        if has(|l| &l.opt_out_all) {
            Some(KeywordAction::OptOutAll)
        } else if has(|l| &l.opt_out) {
            Some(KeywordAction::OptOut)
        } else if has(|l| &l.opt_in) {
            Some(KeywordAction::OptIn)
        } else if has(|l| &l.help) {
            Some(KeywordAction::Help)
        } else {
            None
        }
    }

    /// The caps that apply to `purpose`.
    pub fn caps_for<'a>(&'a self, purpose: &'a Purpose) -> impl Iterator<Item = &'a FrequencyCap> + 'a {
        self.frequency_caps.iter().filter(move |c| &c.purpose == purpose)
    }
}

/// Apply an RFC 7396 JSON merge patch to `target`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    if let serde_json::Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(serde_json::Value::Null), value);
            }
        }
    }
}

// ---- quiet hours -----------------------------------------------------------------------------------

/// When a message that would go at `at` may go, given quiet hours `[start, end)` in `tz`: `None`
/// when `at` is outside them (or `start == end`: no quiet hours), else the next time the local
/// clock shows `end`. A wall-clock `end` that does not exist that day (a DST gap) or exists twice
/// is resolved with jiff's compatible disambiguation (after the gap; the earlier of the two), and
/// never to a time before `at`.
pub fn quiet_hours_release(at: jiff::Timestamp, tz: &TimeZone, start: Time, end: Time) -> Option<jiff::Timestamp> {
    if start == end {
        return None;
    }
    let local = tz.to_datetime(at);
    let t = local.time();
    let wraps = start > end;
    let inside = if wraps { t >= start || t < end } else { t >= start && t < end };
    if !inside {
        return None;
    }
    let mut date = local.date();
    if wraps && t >= start {
        date = date.tomorrow().ok()?;
    }
    let ambiguous = tz.to_ambiguous_timestamp(date.to_datetime(end));
    let opening = ambiguous.compatible().ok()?;
    if opening > at {
        return Some(opening);
    }
    // `at` is in the second pass of a repeated hour and `end` was in the first: the clock shows
    // `end` again in the second pass.
    ambiguous.later().ok().filter(|later| *later > at)
}

// ---- frequency caps and the WhatsApp window ----------------------------------------------------

/// Under a cap of `max` per `period_ms`, with the counted messages' creation times newest first
/// (at most `max` of them are needed): `None` when one more is allowed now, else when it will be
/// (the `max`-th newest leaves the period).
pub fn cap_release(newest_first: &[Millis], max: u32, period_ms: i64) -> Option<Millis> {
    let max = usize::try_from(max).ok()?;
    if max == 0 {
        return None;
    }
    newest_first.get(max - 1).map(|t| t.plus_millis(period_ms))
}

/// Whether free-form WhatsApp content may be sent at `now` after the customer's last message at
/// `last_inbound` (the window closes exactly 24 hours after it).
pub fn whatsapp_window_open(last_inbound: Option<Millis>, now: Millis) -> bool {
    last_inbound.is_some_and(|last| now.0 < last.0.saturating_add(WHATSAPP_WINDOW_MS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn release(at: &str, zone: &str) -> Option<String> {
        let tz = TimeZone::get(zone).unwrap();
        quiet_hours_release(ts(at), &tz, Time::constant(21, 0, 0, 0), Time::constant(8, 0, 0, 0)).map(|t| t.to_string())
    }

    #[test]
    fn new_york_quiet_hours_across_both_dst_changes() {
        // 2026-03-08: clocks go from 02:00 EST to 03:00 EDT. 22:00 EST on the 7th waits for 08:00 EDT.
        assert_eq!(release("2026-03-08T03:00:00Z", "America/New_York").as_deref(), Some("2026-03-08T12:00:00Z"));
        // 2026-11-01: clocks go from 02:00 EDT back to 01:00 EST. 23:00 EDT waits for 08:00 EST.
        assert_eq!(release("2026-11-01T03:00:00Z", "America/New_York").as_deref(), Some("2026-11-01T13:00:00Z"));
        // Inside the repeated hour (01:30 EST, second pass) still waits for 08:00 EST.
        assert_eq!(release("2026-11-01T06:30:00Z", "America/New_York").as_deref(), Some("2026-11-01T13:00:00Z"));
        // 12:00 local: not quiet.
        assert_eq!(release("2026-11-01T17:00:00Z", "America/New_York"), None);
        // Exactly 08:00 is open, exactly 21:00 is quiet.
        assert_eq!(release("2026-11-02T13:00:00Z", "America/New_York"), None);
        assert_eq!(release("2026-11-03T02:00:00Z", "America/New_York").as_deref(), Some("2026-11-03T13:00:00Z"));
        assert_eq!(release("2026-11-03T12:59:59.999Z", "America/New_York").as_deref(), Some("2026-11-03T13:00:00Z"));
    }

    #[test]
    fn kolkata_has_no_dst_and_a_half_hour_offset() {
        // 23:30 IST (+05:30) waits for 08:00 IST = 02:30Z.
        assert_eq!(release("2026-06-01T18:00:00Z", "Asia/Kolkata").as_deref(), Some("2026-06-02T02:30:00Z"));
        // 07:59 IST waits one minute.
        assert_eq!(release("2026-06-02T02:29:00Z", "Asia/Kolkata").as_deref(), Some("2026-06-02T02:30:00Z"));
        assert_eq!(release("2026-06-02T02:30:00Z", "Asia/Kolkata"), None);
    }

    #[test]
    fn lord_howe_shifts_by_half_an_hour() {
        // 2026-04-05 02:00 LHDT (+11) becomes 01:30 LHST (+10:30). 22:00 LHDT on the 4th
        // (11:00Z) waits for 08:00 LHST on the 5th = 21:30Z on the 4th.
        assert_eq!(release("2026-04-04T11:00:00Z", "Australia/Lord_Howe").as_deref(), Some("2026-04-04T21:30:00Z"));
        // 2026-10-04 02:00 LHST (+10:30) becomes 02:30 LHDT (+11). 22:00 LHST on the 3rd
        // (11:30Z) waits for 08:00 LHDT on the 4th = 21:00Z on the 3rd.
        assert_eq!(release("2026-10-03T11:30:00Z", "Australia/Lord_Howe").as_deref(), Some("2026-10-03T21:00:00Z"));
    }

    #[test]
    fn an_opening_inside_a_gap_or_fold_is_resolved_compatibly() {
        let tz = TimeZone::get("America/New_York").unwrap();
        // Quiet 00:00–02:30 on 2026-03-08: 02:30 does not exist; compatible gives 03:30 EDT.
        let at = ts("2026-03-08T06:00:00Z"); // 01:00 EST
        let open = quiet_hours_release(at, &tz, Time::constant(0, 0, 0, 0), Time::constant(2, 30, 0, 0));
        assert_eq!(open.unwrap().to_string(), "2026-03-08T07:30:00Z");
        // Quiet 00:00–01:30 on 2026-11-01: 01:30 exists twice; the first (EDT) is taken.
        let at = ts("2026-11-01T04:30:00Z"); // 00:30 EDT
        let open = quiet_hours_release(at, &tz, Time::constant(0, 0, 0, 0), Time::constant(1, 30, 0, 0));
        assert_eq!(open.unwrap().to_string(), "2026-11-01T05:30:00Z");
        // Already in the second 01:00 hour (01:10 EST): the second 01:30.
        let at = ts("2026-11-01T06:10:00Z");
        let open = quiet_hours_release(at, &tz, Time::constant(0, 0, 0, 0), Time::constant(1, 30, 0, 0));
        assert_eq!(open.unwrap().to_string(), "2026-11-01T06:30:00Z");
        // start == end: no quiet hours.
        assert_eq!(quiet_hours_release(at, &tz, Time::constant(8, 0, 0, 0), Time::constant(8, 0, 0, 0)), None);
    }

    #[test]
    fn keywords_match_whole_normalised_texts() {
        let p = MessagingPolicy::default();
        for text in ["STOP", "stop", "Stop!", "  sToP. ", "\"STOP\"", "stop!!!", "Arrêt", "ARRET", "arret."] {
            assert_eq!(p.keyword_action(text), Some(KeywordAction::OptOut), "{text:?}");
        }
        assert_eq!(p.keyword_action("StopAll!"), Some(KeywordAction::OptOutAll));
        assert_eq!(p.keyword_action("start"), Some(KeywordAction::OptIn));
        assert_eq!(p.keyword_action("Yes."), Some(KeywordAction::OptIn));
        assert_eq!(p.keyword_action("help?"), Some(KeywordAction::Help));
        for text in ["please stop", "stopp", "", "!!!", "STOP sending"] {
            assert_eq!(p.keyword_action(text), None, "{text:?}");
        }
        assert_eq!(normalize_keyword("  Ça   Va! "), "ca va");
    }

    #[test]
    fn the_newest_covering_record_is_in_force() {
        let contact = ContactId::new();
        let record = |channel: ChannelScope, purpose: PurposeScope, status| Consent {
            id: ConsentId::new(),
            workspace_id: WorkspaceId::new(),
            contact_id: contact,
            channel,
            purpose,
            status,
            source: ConsentSource::Api,
            evidence: serde_json::json!({}),
            address: None,
            recorded_at: Millis(0),
        };
        let marketing = Purpose::marketing();
        let tx = Purpose::transactional();
        assert_eq!(check_consent(&[], Channel::Sms, &marketing), Err(ConsentRefusal::ConsentRequired));
        assert_eq!(check_consent(&[], Channel::Sms, &tx), Ok(()));
        let mut ledger =
            vec![record(ChannelScope::One(Channel::Sms), PurposeScope::One(marketing.clone()), ConsentStatus::OptedIn)];
        assert_eq!(check_consent(&ledger, Channel::Sms, &marketing), Ok(()));
        assert_eq!(check_consent(&ledger, Channel::Whatsapp, &marketing), Err(ConsentRefusal::ConsentRequired));
        ledger.push(record(ChannelScope::One(Channel::Sms), PurposeScope::All, ConsentStatus::OptedOut));
        assert_eq!(check_consent(&ledger, Channel::Sms, &marketing), Err(ConsentRefusal::OptedOut));
        assert_eq!(check_consent(&ledger, Channel::Sms, &tx), Err(ConsentRefusal::OptedOut));
        assert_eq!(check_consent(&ledger, Channel::Whatsapp, &tx), Ok(()));
        ledger.push(record(ChannelScope::All, PurposeScope::All, ConsentStatus::OptedOut));
        assert_eq!(check_consent(&ledger, Channel::Whatsapp, &tx), Err(ConsentRefusal::OptedOut));
        ledger.push(record(ChannelScope::One(Channel::Sms), PurposeScope::All, ConsentStatus::OptedIn));
        assert_eq!(check_consent(&ledger, Channel::Sms, &marketing), Ok(()));
        assert_eq!(check_consent(&ledger, Channel::Whatsapp, &tx), Err(ConsentRefusal::OptedOut));
    }

    #[test]
    fn caps_and_the_whatsapp_window() {
        let times = [Millis(5_000), Millis(3_000), Millis(1_000)];
        assert_eq!(cap_release(&times[..1], 2, 10_000), None);
        assert_eq!(cap_release(&times[..2], 2, 10_000), Some(Millis(13_000)));
        assert_eq!(cap_release(&times, 1, 10_000), Some(Millis(15_000)));
        let last = Millis(1_000_000);
        assert!(whatsapp_window_open(Some(last), last.plus_millis(WHATSAPP_WINDOW_MS - 1)));
        assert!(!whatsapp_window_open(Some(last), last.plus_millis(WHATSAPP_WINDOW_MS)));
        assert!(!whatsapp_window_open(None, last));
    }

    #[test]
    fn policies_are_validated_and_patched() {
        assert_eq!(MessagingPolicy::default().validate(), vec![]);
        let mut p = MessagingPolicy::default();
        p.quiet_hours.start = "25:00".into();
        p.quiet_hours.default_time_zone = "Mars/Olympus".into();
        p.frequency_caps.push(FrequencyCap { purpose: Purpose::marketing(), max: 0, period_seconds: 30 });
        let fields: Vec<_> = p.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "quiet_hours.start",
                "quiet_hours.default_time_zone",
                "frequency_caps[0].max",
                "frequency_caps[0].period_seconds"
            ]
        );
        let mut v = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut v, &serde_json::json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(v, serde_json::json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }
}
