//! Twilio Programmable Messaging (and any service that speaks its 2010-04-01 Messages API).
//!
//! **Send.** `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`, form-encoded, with
//! HTTP Basic auth (`account_sid:auth_token`, or `api_key_sid:api_key_secret`): `To`, `From`
//! and/or `MessagingServiceSid`, `Body` (text, or a media caption), `MediaUrl` (media),
//! `StatusCallback` (the account's callback URL), `ValidityPeriod` (the seconds left before the
//! message's `expires_at`, sent only within Twilio's 1..=36000) and `Attempt`. The answer's `sid`
//! becomes the provider message id; Twilio's error JSON (`code`, `message`, `more_info`,
//! `status`) becomes `twilio:<code>`, permanent or transient by the table in [`errors`].
//! Templates are refused before sending (`unsupported_content`): Twilio's Content API is not
//! supported yet.
//!
//! **Callbacks** (`/hooks/twilio/{channel_account_id}`): `X-Twilio-Signature` is checked with the
//! auth token over the URL Twilio called and the form parameters ([`signature`]). Status callbacks
//! become receipts (`sent`, `delivered`, `read`, `undelivered`, `failed`; `queued`, `sending`,
//! `accepted` and `scheduled` say nothing new and are only acknowledged), inbound messages become
//! inbound messages (text, or one message per media item). Every callback is answered with an
//! empty TwiML `<Response/>`. See [`callbacks`].
//!
//! **Channels.** `sms`, and `whatsapp` through Twilio's WhatsApp senders: on a `whatsapp` account
//! addresses are sent as `whatsapp:+…` and the prefix is taken off inbound addresses.
//!
//! **Config** (public): `account_sid` (`AC…`, required), `from` (E.164; `whatsapp:+…` allowed on
//! WhatsApp) and/or `messaging_service_sid` (`MG…`), `base_url` (default
//! `https://api.twilio.com`), `timeout_ms` (per request, default 30000).
//! **Credentials** (secret): `auth_token` (required: it signs callbacks), and optionally
//! `api_key_sid` (`SK…`) with `api_key_secret` to authenticate API calls with a key instead.
//! Credentials are never logged or shown in errors.

pub mod callbacks;
pub mod errors;
pub mod signature;

#[cfg(test)]
mod tests;

use crate::{
    CheckResult, ConfigError, Connector, IngressError, IngressOutcome, IngressRequest, OutboundRequest, SendResult,
};
use parley_domain::{Channel, ChannelAccountId, Content, ErrorInfo, Millis};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The provider name of Twilio on channel accounts.
pub const PROVIDER: &str = "twilio";

/// Twilio's REST API.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Twilio's bounds on `ValidityPeriod`, in seconds.
pub const VALIDITY_PERIOD_MIN_S: i64 = 1;
pub const VALIDITY_PERIOD_MAX_S: i64 = 36_000;

/// Twilio's limit on `Body`, in characters.
pub const MAX_BODY_CHARS: usize = 1600;

/// What Twilio is answered for every callback.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// A Twilio account's settings (the channel account's provider config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// `AC` and 32 hex digits.
    pub account_sid: String,
    /// The sender: an E.164 number (`whatsapp:+…` on WhatsApp). Needed unless
    /// `messaging_service_sid` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `MG` and 32 hex digits: Twilio picks the sender from the service's pool (or uses `from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    /// Where the API is: `https://api.twilio.com`, or a compatible service (a test fake).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// How long one API call may take, in milliseconds (1 to 120000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn bad(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidField { provider: PROVIDER, field: field.into(), reason: reason.into() }
}

/// `prefix` followed by exactly 32 hex digits.
fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34 && value.starts_with(prefix) && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `+` and 2 to 15 digits, the first not 0.
fn is_e164(value: &str) -> bool {
    let Some(digits) = value.strip_prefix('+') else { return false };
    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

impl TwilioConfig {
    pub const MAX_TIMEOUT_MS: u64 = 120_000;

    /// Read and check a channel account's JSON config for `channel`; errors name the field.
    pub fn from_json(json: &serde_json::Value, channel: Channel) -> Result<Self, ConfigError> {
        let mut config: TwilioConfig = crate::parse_config(PROVIDER, json)?;
        config.validate(channel)?;
        config.base_url = config.base_url.trim_end_matches('/').to_string();
        Ok(config)
    }

    pub fn validate(&self, channel: Channel) -> Result<(), ConfigError> {
        if !matches!(channel, Channel::Sms | Channel::Whatsapp) {
            return Err(bad(
                "(config)",
                format!("twilio serves the sms and whatsapp channels, not {}", channel.as_str()),
            ));
        }
        if !is_sid(&self.account_sid, "AC") {
            return Err(bad("account_sid", "must be 'AC' followed by 32 hex digits"));
        }
        if let Some(sid) = &self.messaging_service_sid
            && !is_sid(sid, "MG")
        {
            return Err(bad("messaging_service_sid", "must be 'MG' followed by 32 hex digits"));
        }
        match &self.from {
            Some(from) => {
                let number = match channel {
                    Channel::Whatsapp => from.strip_prefix("whatsapp:").unwrap_or(from),
                    _ => from,
                };
                if !is_e164(number) {
                    return Err(bad("from", "must be an E.164 number such as +14155552345"));
                }
            }
            None if self.messaging_service_sid.is_none() => {
                return Err(bad("from", "give 'from' or 'messaging_service_sid' (or both)"));
            }
            None => {}
        }
        if let Err(reason) = crate::check_base_url(&self.base_url) {
            return Err(bad("base_url", reason));
        }
        if self.timeout_ms == 0 || self.timeout_ms > Self::MAX_TIMEOUT_MS {
            return Err(bad("timeout_ms", format!("must be 1 to {}", Self::MAX_TIMEOUT_MS)));
        }
        Ok(())
    }
}

/// A Twilio account's secrets. Not `Debug`: they must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioCredentials {
    /// Signs callbacks; also the API password when no API key is given.
    pub auth_token: String,
    /// `SK…` and its secret: the API's user and password instead of the account SID and token.
    pub api_key: Option<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsJson {
    auth_token: Option<String>,
    api_key_sid: Option<String>,
    api_key_secret: Option<String>,
}

impl TwilioCredentials {
    /// Read the credentials; errors name the field (`credentials.auth_token`) but never a value.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ConfigError> {
        if !json.is_object() {
            return Err(bad(
                "credentials",
                "must be an object with 'auth_token' (and optionally 'api_key_sid' and 'api_key_secret')",
            ));
        }
        let parsed: CredentialsJson = serde_path_to_error::deserialize(json).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            if message.starts_with("unknown field") {
                // Names the field and the expected ones, never a value.
                bad(&format!("credentials.{path}"), message)
            } else {
                bad(&format!("credentials.{path}"), "must be a string")
            }
        })?;
        let auth_token = match parsed.auth_token {
            Some(token) if !token.trim().is_empty() => token,
            _ => {
                return Err(bad(
                    "credentials.auth_token",
                    "is required: Twilio signs its callbacks with the account's auth token",
                ));
            }
        };
        let api_key = match (parsed.api_key_sid, parsed.api_key_secret) {
            (None, None) => None,
            (Some(sid), Some(secret)) => {
                if !is_sid(&sid, "SK") {
                    return Err(bad("credentials.api_key_sid", "must be 'SK' followed by 32 hex digits"));
                }
                if secret.is_empty() {
                    return Err(bad("credentials.api_key_secret", "must not be empty"));
                }
                Some((sid, secret))
            }
            (Some(_), None) => return Err(bad("credentials.api_key_secret", "is required with api_key_sid")),
            (None, Some(_)) => return Err(bad("credentials.api_key_sid", "is required with api_key_secret")),
        };
        Ok(TwilioCredentials { auth_token, api_key })
    }
}

/// One Twilio account as a connector.
pub struct TwilioConnector {
    account_id: ChannelAccountId,
    channel: Channel,
    config: TwilioConfig,
    credentials: TwilioCredentials,
    /// `StatusCallback` of every send (none if empty).
    callback_url: Option<String>,
    http: reqwest::Client,
}

/// The parts of Twilio's Message resource the connector reads.
#[derive(Deserialize)]
struct MessageResource {
    sid: Option<String>,
}

/// An error as Twilio describes it (the legacy envelope or the RFC 9457 one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TwilioError {
    pub code: Option<u32>,
    pub message: Option<String>,
    pub more_info: Option<String>,
    pub status: Option<u16>,
}

impl TwilioError {
    /// Read an error body; `None` if it is not Twilio's JSON.
    pub fn parse(body: &[u8]) -> Option<TwilioError> {
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        let obj = json.as_object()?;
        let code = obj.get("code").and_then(|c| match c {
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        let text = |key: &str| obj.get(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
        let message = text("message").or_else(|| text("detail")).or_else(|| text("title"));
        let more_info = text("more_info").or_else(|| text("type"));
        let status = obj.get("status").and_then(|s| s.as_u64()).and_then(|s| u16::try_from(s).ok());
        if code.is_none() && message.is_none() {
            return None;
        }
        Some(TwilioError { code, message, more_info, status })
    }
}

impl TwilioConnector {
    pub fn new(
        account_id: ChannelAccountId,
        channel: Channel,
        config: TwilioConfig,
        credentials: TwilioCredentials,
        callback_url: &str,
        http: reqwest::Client,
    ) -> TwilioConnector {
        let callback_url = Some(callback_url.to_string()).filter(|u| !u.is_empty());
        TwilioConnector { account_id, channel, config, credentials, callback_url, http }
    }

    /// Build from a channel account's config and credentials.
    pub fn from_spec(spec: crate::AccountSpec<'_>, http: reqwest::Client) -> Result<TwilioConnector, ConfigError> {
        let config = TwilioConfig::from_json(spec.config, spec.channel)?;
        let credentials = TwilioCredentials::from_json(spec.credentials)?;
        Ok(TwilioConnector::new(spec.id, spec.channel, config, credentials, spec.callback_url, http))
    }

    pub fn config(&self) -> &TwilioConfig {
        &self.config
    }

    pub(crate) fn account_id(&self) -> ChannelAccountId {
        self.account_id
    }

    pub(crate) fn auth_token(&self) -> &str {
        &self.credentials.auth_token
    }

    fn basic_auth(&self) -> (&str, &str) {
        match &self.credentials.api_key {
            Some((sid, secret)) => (sid, secret),
            None => (&self.config.account_sid, &self.credentials.auth_token),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// The Messages endpoint.
    pub fn messages_url(&self) -> String {
        format!("{}/2010-04-01/Accounts/{}/Messages.json", self.config.base_url, self.config.account_sid)
    }

    /// An address as Twilio wants it on this channel (`whatsapp:+…` on WhatsApp).
    fn address(&self, address: &str) -> String {
        match self.channel {
            Channel::Whatsapp if !address.starts_with("whatsapp:") => format!("whatsapp:{address}"),
            _ => address.to_string(),
        }
    }

    /// The form of a send, in order; or why it cannot be sent.
    pub fn form(&self, request: &OutboundRequest, now: Millis) -> Result<Vec<(&'static str, String)>, SendResult> {
        let permanent = |code: &str, detail: String| SendResult::Permanent {
            error: ErrorInfo { code: code.into(), detail, permanent: true },
        };
        let mut form: Vec<(&'static str, String)> = vec![("To", self.address(&request.to))];
        if let Some(from) = request.from.as_deref().or(self.config.from.as_deref()) {
            form.push(("From", self.address(from)));
        }
        if let Some(sid) = &self.config.messaging_service_sid {
            form.push(("MessagingServiceSid", sid.clone()));
        }
        let body = match &request.content {
            Content::Text { text, suggestions } if suggestions.is_empty() => Some(text.as_str()),
            Content::Media { url: Some(url), caption, .. } => {
                form.push(("MediaUrl", url.clone()));
                caption.as_deref()
            }
            Content::Media { .. } => {
                return Err(permanent(
                    "unsupported_content",
                    "Twilio fetches media from a URL: give the media's url (a provider media id cannot be sent)".into(),
                ));
            }
            Content::Text { .. } => {
                return Err(permanent(
                    "unsupported_content",
                    "the twilio connector cannot send suggestions: send the text without them".into(),
                ));
            }
            other => {
                return Err(permanent(
                    "unsupported_content",
                    format!("the twilio connector sends text and media, not {} content", other.kind()),
                ));
            }
        };
        if let Some(body) = body {
            let chars = body.chars().count();
            if chars > MAX_BODY_CHARS {
                return Err(permanent(
                    "content_too_long",
                    format!("Twilio takes at most {MAX_BODY_CHARS} characters in a message body; this one has {chars}"),
                ));
            }
            form.push(("Body", body.to_string()));
        }
        if let Some(callback) = &self.callback_url {
            form.push(("StatusCallback", callback.clone()));
        }
        // Round up: a message with 0.5 s left may still go out within its validity.
        let left_ms = request.expires_at.0.saturating_sub(now.0);
        let left_s = left_ms.saturating_add(999) / 1000;
        if (VALIDITY_PERIOD_MIN_S..=VALIDITY_PERIOD_MAX_S).contains(&left_s) {
            form.push(("ValidityPeriod", left_s.to_string()));
        }
        if request.attempt > 0 {
            form.push(("Attempt", request.attempt.to_string()));
        }
        Ok(form)
    }

    /// What Twilio's answer to a send means.
    pub fn answer(http_status: u16, retry_after: Option<&str>, body: &[u8]) -> SendResult {
        if !(200..300).contains(&http_status) {
            return Self::refusal(http_status, retry_after, body);
        }
        match serde_json::from_slice::<MessageResource>(body).ok().and_then(|m| m.sid) {
            Some(sid) if !sid.is_empty() => SendResult::accepted(sid),
            // Twilio took it but its answer is unreadable: trying again could send it twice.
            _ => SendResult::Permanent {
                error: ErrorInfo {
                    code: "twilio:unexpected_response".into(),
                    detail: format!("Twilio answered {http_status} without a message sid"),
                    permanent: true,
                },
            },
        }
    }

    /// What a non-2xx answer means.
    pub fn refusal(http_status: u16, retry_after: Option<&str>, body: &[u8]) -> SendResult {
        let error = TwilioError::parse(body).unwrap_or_default();
        let code = errors::error_code(error.code, http_status);
        let transient = errors::is_transient(error.code, http_status);
        let meaning = error.code.and_then(errors::lookup).map(|(m, _)| m);
        let mut detail = match (&error.message, meaning) {
            (Some(message), _) => message.clone(),
            (None, Some(meaning)) => meaning.to_string(),
            (None, None) => {
                let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
                if text.trim().is_empty() {
                    format!("HTTP {http_status}")
                } else {
                    format!("HTTP {http_status}: {text}")
                }
            }
        };
        if let Some(more) = &error.more_info {
            detail = format!("{detail} ({more})");
        }
        let error = ErrorInfo { code, detail, permanent: !transient };
        if transient {
            let retry_after_ms = retry_after.and_then(parley_domain::backoff::retry_after_ms);
            SendResult::Transient { error, retry_after_ms }
        } else {
            SendResult::Permanent { error }
        }
    }

    fn network_error(e: &reqwest::Error) -> SendResult {
        let code = if e.is_timeout() { "twilio:timeout" } else { "twilio:network" };
        // Without the URL: it is harmless, but errors are shown to users as they are.
        let detail = format!("calling Twilio failed: {}", crate::DisplayWithoutUrl(e));
        SendResult::Transient { error: ErrorInfo { code: code.into(), detail, permanent: false }, retry_after_ms: None }
    }
}

/// `application/x-www-form-urlencoded`, in the given order (names may repeat).
pub fn encode_form(form: &[(&str, String)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in form {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

#[async_trait::async_trait]
impl Connector for TwilioConnector {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    async fn send(&self, request: &OutboundRequest) -> SendResult {
        let form = match self.form(request, Millis::now()) {
            Ok(form) => form,
            Err(refused) => return refused,
        };
        let (user, password) = self.basic_auth();
        let response = self
            .http
            .post(self.messages_url())
            .basic_auth(user, Some(password))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout())
            .body(encode_form(&form))
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Self::network_error(&e),
        };
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Self::network_error(&e),
        };
        Self::answer(status, retry_after.as_deref(), &body)
    }

    fn ingress(&self, request: &IngressRequest<'_>) -> Result<IngressOutcome, IngressError> {
        callbacks::ingress(self, request)
    }

    async fn check(&self) -> CheckResult {
        let url = format!("{}/2010-04-01/Accounts/{}.json", self.config.base_url, self.config.account_sid);
        let (user, password) = self.basic_auth();
        let response = match self
            .http
            .get(url)
            .basic_auth(user, Some(password))
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return CheckResult::Failed {
                    code: if e.is_timeout() { "twilio:timeout" } else { "twilio:network" }.into(),
                    detail: format!("calling Twilio failed: {}", crate::DisplayWithoutUrl(&e)),
                };
            }
        };
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        if (200..300).contains(&status) {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let state = json["status"].as_str().unwrap_or("active");
            let name = json["friendly_name"].as_str().unwrap_or("");
            return if state == "active" {
                CheckResult::Ok { detail: format!("account {} ({name}) is active", self.config.account_sid) }
            } else {
                CheckResult::Failed {
                    code: format!("twilio:account_{state}"),
                    detail: format!("account {} is {state}", self.config.account_sid),
                }
            };
        }
        match Self::refusal(status, None, &body) {
            SendResult::Transient { error, .. } | SendResult::Permanent { error } => {
                CheckResult::Failed { code: error.code, detail: error.detail }
            }
            SendResult::Accepted { .. } => {
                CheckResult::Failed { code: "twilio:unexpected_response".into(), detail: String::new() }
            }
        }
    }
}
