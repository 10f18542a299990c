//! The Graph API error envelope and what each WhatsApp error code means for a send.
//!
//! A refused send answers `{"error": {"message", "type", "code", "error_subcode", "error_data":
//! {"details"}, "fbtrace_id", "is_transient", …}}`; a failed status webhook carries
//! `errors[{code, title, message, error_data: {details}}]`. Either becomes the Parley error code
//! `whatsapp:<code>` (`whatsapp:131047`). The class of a code decides what a send does:
//!
//! | class | codes | the send |
//! |---|---|---|
//! | retry | 1, 2, 131000, 131016, 135000 | transient, the engine's backoff |
//! | later | 131057 (maintenance, throughput upgrade) | transient, retry after 60 s |
//! | pause number | 130429 (throughput), 131048 (spam rate limit), 4, 17, 613, 80007 (call-rate limits) | transient; every send of the number waits (see [`Class::PauseNumber`]) |
//! | pause recipient | 131056 (pair rate limit) | transient; sends to that recipient wait 4^n s |
//! | needs template | 131047 (outside the 24 h window) | permanent: send a template instead |
//! | permanent | everything listed in [`TABLE`] as such, and unknown codes answered with a 4xx | permanent |
//!
//! An unknown code is transient when the envelope says `is_transient: true` or the HTTP status
//! is 429 or 5xx, permanent otherwise.

use parley_domain::ErrorInfo;
use serde::Deserialize;

/// What a code means for a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Try again with the engine's backoff.
    Retry,
    /// Try again, not before this many seconds.
    Later(u64),
    /// The number (or the app) is over a rate limit: pause every send of the number, first for
    /// this many seconds, doubling while it keeps happening.
    PauseNumber(u64),
    /// Too many messages to one recipient: pause sends to that recipient only.
    PauseRecipient,
    /// Outside the customer-service window: only a template can reach the recipient now.
    NeedsTemplate,
    /// Trying again cannot help.
    Permanent,
}

/// `(code, meaning, class)`, from Meta's error-code page as quoted in the protocol notes.
pub const TABLE: &[(i64, &str, Class)] = &[
    (0, "authentication exception", Class::Permanent),
    (1, "unknown API error", Class::Retry),
    (2, "API service temporarily unavailable", Class::Retry),
    (3, "the app lacks the capability", Class::Permanent),
    (4, "too many API calls from the app (call-rate limit)", Class::PauseNumber(60)),
    (10, "permission denied", Class::Permanent),
    (17, "too many API calls from the user (call-rate limit)", Class::PauseNumber(60)),
    (100, "invalid or missing parameter", Class::Permanent),
    (104, "an access token is required", Class::Permanent),
    (190, "the access token has expired or is invalid", Class::Permanent),
    (200, "permission denied", Class::Permanent),
    (368, "temporarily blocked for policy violations", Class::Permanent),
    (613, "call-rate limit reached", Class::PauseNumber(60)),
    (80007, "WhatsApp Business Account rate limit reached", Class::PauseNumber(60)),
    (130429, "Cloud API throughput reached (messages per second of the number)", Class::PauseNumber(1)),
    (130472, "the recipient's number is part of an experiment", Class::Permanent),
    (130497, "the business cannot message users in this country", Class::Permanent),
    (131000, "something went wrong", Class::Retry),
    (131005, "access denied", Class::Permanent),
    (131008, "a required parameter is missing", Class::Permanent),
    (131009, "a parameter value is not valid", Class::Permanent),
    (131016, "service unavailable", Class::Retry),
    (131021, "the recipient cannot be the sender", Class::Permanent),
    (131026, "undeliverable: not a WhatsApp user, terms not accepted, or an old client", Class::Permanent),
    (131031, "the business account is locked", Class::Permanent),
    (131042, "business eligibility payment issue", Class::Permanent),
    (131047, "more than 24 hours have passed since the customer last replied: send a template", Class::NeedsTemplate),
    (131048, "spam rate limit hit", Class::PauseNumber(60)),
    (131049, "held back to maintain healthy ecosystem engagement (marketing cap)", Class::Permanent),
    (131050, "the user stopped marketing messages", Class::Permanent),
    (131051, "unsupported message type", Class::Permanent),
    (131052, "media download error", Class::Permanent),
    (131053, "media upload error", Class::Permanent),
    (131056, "too many messages to this recipient in a short time (pair rate limit)", Class::PauseRecipient),
    (131057, "the account is in maintenance mode", Class::Later(60)),
    (132000, "the number of template parameters does not match", Class::Permanent),
    (132001, "the template does not exist in this language", Class::Permanent),
    (132005, "the template's text is too long once filled in", Class::Permanent),
    (132007, "the template's content violates a policy", Class::Permanent),
    (132012, "a template parameter's format is not valid", Class::Permanent),
    (132015, "the template is paused for low quality", Class::Permanent),
    (132016, "the template is disabled", Class::Permanent),
    (133010, "the phone number is not registered on the Cloud API", Class::Permanent),
    (135000, "generic user error", Class::Retry),
];

/// The meaning and class of a known code.
pub fn lookup(code: i64) -> Option<(&'static str, Class)> {
    TABLE.iter().find(|(c, _, _)| *c == code).map(|(_, m, class)| (*m, *class))
}

/// The class of a refused send: by the table, else by `is_transient` and the HTTP status.
pub fn classify(code: Option<i64>, is_transient: bool, http_status: u16) -> Class {
    if let Some((_, class)) = code.and_then(lookup) {
        return class;
    }
    if is_transient || http_status == 429 || http_status >= 500 { Class::Retry } else { Class::Permanent }
}

/// Parley's code for a WhatsApp error.
pub fn error_code(code: Option<i64>, http_status: u16) -> String {
    match code {
        Some(c) => format!("whatsapp:{c}"),
        None => format!("whatsapp:http_{http_status}"),
    }
}

/// The Graph API's error envelope.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub code: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub error_data: Option<serde_json::Value>,
    #[serde(default)]
    pub error_user_title: Option<String>,
    #[serde(default)]
    pub error_user_msg: Option<String>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
    #[serde(default)]
    pub is_transient: Option<bool>,
}

#[derive(Deserialize)]
struct Envelope {
    error: GraphError,
}

/// A number, or a string holding one (Meta is not consistent).
fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

impl GraphError {
    /// Read a Graph error body; `None` if it is not one.
    pub fn parse(body: &[u8]) -> Option<GraphError> {
        serde_json::from_slice::<Envelope>(body).ok().map(|e| e.error)
    }

    /// `error_data.details`, where given.
    pub fn details(&self) -> Option<&str> {
        self.error_data.as_ref().and_then(|d| d.get("details")).and_then(|d| d.as_str())
    }

    /// A one-line description for users: Meta's message and details, and the trace id.
    pub fn describe(&self, http_status: u16) -> String {
        let mut parts: Vec<String> = Vec::new();
        match (&self.message, self.code.and_then(lookup)) {
            (Some(m), _) if !m.is_empty() => parts.push(m.clone()),
            (_, Some((meaning, _))) => parts.push(meaning.to_string()),
            _ => parts.push(format!("HTTP {http_status}")),
        }
        if let Some(d) = self.details().filter(|d| !d.is_empty()) {
            parts.push(d.to_string());
        }
        if let Some(msg) = self.error_user_msg.as_deref().filter(|m| !m.is_empty()) {
            parts.push(msg.to_string());
        }
        let mut text = parts.join(": ");
        if let Some(trace) = &self.fbtrace_id {
            text.push_str(&format!(" (fbtrace_id {trace})"));
        }
        text
    }
}

/// The error of a failed status webhook (`statuses[].errors[0]`).
pub fn status_error(errors: Option<&serde_json::Value>) -> ErrorInfo {
    let first = errors.and_then(|e| e.as_array()).and_then(|a| a.first());
    let code = first.and_then(|e| e.get("code")).and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()));
    let text = |key: &str| first.and_then(|e| e.get(key)).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let details = first
        .and_then(|e| e.get("error_data"))
        .and_then(|d| d.get("details"))
        .and_then(|d| d.as_str())
        .filter(|s| !s.is_empty());
    let mut detail = text("title")
        .or_else(|| text("message"))
        .map(str::to_string)
        .or_else(|| code.and_then(lookup).map(|(m, _)| m.to_string()))
        .unwrap_or_else(|| "WhatsApp reported the message failed".to_string());
    if let Some(d) = details {
        detail = format!("{detail}: {d}");
    }
    ErrorInfo {
        code: match code {
            Some(c) => format!("whatsapp:{c}"),
            None => "whatsapp:failed".to_string(),
        },
        detail,
        permanent: true,
    }
}
