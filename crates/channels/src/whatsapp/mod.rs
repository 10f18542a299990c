//! WhatsApp Business Platform, Cloud API (Meta Graph API v23).
//!
//! **Send.** `POST {base_url}/{api_version}/{phone_number_id}/messages` with
//! `Authorization: Bearer <access_token>` and a JSON body built by [`body`] (text, template,
//! media, interactive, reaction, location; shaped as the request examples of Meta's OpenAPI).
//! `messages[0].id` of the answer (`wamid.…`) becomes the provider message id. A refusal is the
//! Graph error envelope; its code becomes `whatsapp:<code>`, and [`errors`] says whether it is
//! retried, waited out or final (131047, outside the 24-hour window, is final: send a template).
//!
//! **Rate limits.** The engine paces each account at [`DEFAULT_RATE_PER_SECOND`] (Meta's default
//! throughput of a business number; declared for the engine in `crate::default_limits`). When Meta
//! still answers 130429 (throughput reached) or another call-rate limit, the whole number pauses:
//! every send answers `Transient` with the pause left as `retry_after_ms`, without calling Meta,
//! until the pause ends (1 s for 130429, doubling while it keeps happening, at most
//! [`MAX_PAUSE_MS`]). 131056 (pair rate limit) pauses only that recipient, 4^n seconds.
//!
//! **Read receipts.** [`Connector::mark_read`] posts `{"messaging_product": "whatsapp",
//! "status": "read", "message_id": …}` to the same endpoint.
//!
//! **Check.** `GET {base_url}/{api_version}/{phone_number_id}` with the token.
//!
//! **Callbacks** (`/hooks/whatsapp/{channel_account_id}`): the subscription handshake and signed
//! status and message webhooks; see [`webhook`].
//!
//! **Config** (public): `phone_number_id` (required), `waba_id` (optional), `base_url` (default
//! `https://graph.facebook.com`), `api_version` (default `v23.0`), `timeout_ms` (per request,
//! default 30000). **Credentials** (secret): `access_token` (sends), `app_secret` (signs
//! webhooks), `verify_token` (the subscription handshake). Credentials are never logged or shown
//! in errors.

pub mod body;
pub mod errors;
pub mod webhook;

#[cfg(test)]
mod tests;

use crate::{
    CheckResult, ConfigError, Connector, IngressError, IngressOutcome, IngressRequest, OutboundRequest, SendResult,
};
use errors::{Class, GraphError};
use parley_domain::{Channel, ChannelAccountId, ErrorInfo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The provider name of the WhatsApp Cloud API on channel accounts.
pub const PROVIDER: &str = "whatsapp";

/// Meta's Graph API.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";

/// The Graph API version this connector speaks.
pub const DEFAULT_API_VERSION: &str = "v23.0";

/// A business number's default throughput (messages per second, inbound and outbound), which the
/// engine's per-account rate limit uses (`crate::default_limits("whatsapp")`).
pub const DEFAULT_RATE_PER_SECOND: u32 = 80;

/// The longest a rate-limit pause of the whole number lasts.
pub const MAX_PAUSE_MS: u64 = 300_000;

/// The longest a pause of one recipient lasts (4^4 s).
pub const MAX_RECIPIENT_PAUSE_MS: u64 = 256_000;

/// A WhatsApp Cloud API number's settings (the channel account's provider config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// The business phone number's id in the Graph API (digits).
    pub phone_number_id: String,
    /// The WhatsApp Business Account's id (digits), for reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waba_id: Option<String>,
    /// Where the Graph API is: `https://graph.facebook.com`, or a compatible fake.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The Graph API version, such as `v23.0`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// How long one API call may take, in milliseconds (1 to 120000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.to_string()
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn bad(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidField { provider: PROVIDER, field: field.into(), reason: reason.into() }
}

fn is_graph_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

impl WhatsAppConfig {
    pub const MAX_TIMEOUT_MS: u64 = 120_000;

    /// Read and check a channel account's JSON config; errors name the field.
    pub fn from_json(json: &serde_json::Value, channel: Channel) -> Result<Self, ConfigError> {
        let mut config: WhatsAppConfig = crate::parse_config(PROVIDER, json).map_err(|e| match e {
            // A missing field is named by serde's message, not by the path.
            ConfigError::InvalidField { provider, field, reason } if field == "(config)" => {
                let named = reason.strip_prefix("missing field `").and_then(|r| r.split('`').next());
                let field = named.map_or(field, str::to_string);
                ConfigError::InvalidField { provider, field, reason }
            }
            other => other,
        })?;
        config.validate(channel)?;
        config.base_url = config.base_url.trim_end_matches('/').to_string();
        Ok(config)
    }

    pub fn validate(&self, channel: Channel) -> Result<(), ConfigError> {
        if channel != Channel::Whatsapp {
            return Err(bad("(config)", format!("whatsapp serves the whatsapp channel, not {}", channel.as_str())));
        }
        if !is_graph_id(&self.phone_number_id) {
            return Err(bad("phone_number_id", "must be the number's Graph API id: 1 to 32 digits"));
        }
        if let Some(waba) = &self.waba_id
            && !is_graph_id(waba)
        {
            return Err(bad("waba_id", "must be the WhatsApp Business Account's id: 1 to 32 digits"));
        }
        let version_ok = self.api_version.strip_prefix('v').and_then(|v| v.split_once('.')).is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        if !version_ok {
            return Err(bad("api_version", "must be a Graph API version such as v23.0"));
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

/// A number's secrets. Not `Debug`: they must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WhatsAppCredentials {
    /// A system user's (or the app's) access token with `whatsapp_business_messaging`.
    pub access_token: String,
    /// The Meta app's secret: it signs webhooks (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// The token Meta echoes in the subscription handshake.
    pub verify_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsJson {
    access_token: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
}

impl WhatsAppCredentials {
    /// Read the credentials; errors name the field (`credentials.access_token`) but never a value.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ConfigError> {
        if !json.is_object() {
            return Err(bad("credentials", "must be an object with 'access_token', 'app_secret' and 'verify_token'"));
        }
        let parsed: CredentialsJson = serde_path_to_error::deserialize(json).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            if message.starts_with("unknown field") {
                bad(&format!("credentials.{path}"), message)
            } else {
                bad(&format!("credentials.{path}"), "must be a string")
            }
        })?;
        let need = |v: Option<String>, field: &str, why: &str| match v {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(bad(&format!("credentials.{field}"), format!("is required: {why}"))),
        };
        Ok(WhatsAppCredentials {
            access_token: need(parsed.access_token, "access_token", "it authorises every call to the Graph API")?,
            app_secret: need(parsed.app_secret, "app_secret", "Meta signs its webhooks with the app secret")?,
            verify_token: need(
                parsed.verify_token,
                "verify_token",
                "Meta sends it when the webhook subscription is verified",
            )?,
        })
    }
}

/// A pause of the number or of one recipient.
#[derive(Clone, Debug)]
struct Pause {
    until: Instant,
    /// How many rate-limit answers in a row (the next pause grows with it).
    hits: u32,
    /// The error that caused it (`whatsapp:130429`).
    code: String,
    detail: String,
}

#[derive(Default)]
struct Pauses {
    number: Option<Pause>,
    recipients: HashMap<String, Pause>,
}

/// One WhatsApp business number as a connector.
pub struct WhatsAppConnector {
    pub(crate) account_id: ChannelAccountId,
    pub(crate) config: WhatsAppConfig,
    pub(crate) credentials: WhatsAppCredentials,
    http: reqwest::Client,
    pauses: Mutex<Pauses>,
}

/// The parts of a send's answer the connector reads.
#[derive(Deserialize)]
struct SendAnswer {
    #[serde(default)]
    messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: Option<String>,
}

impl WhatsAppConnector {
    pub fn new(
        account_id: ChannelAccountId,
        config: WhatsAppConfig,
        credentials: WhatsAppCredentials,
        http: reqwest::Client,
    ) -> WhatsAppConnector {
        WhatsAppConnector { account_id, config, credentials, http, pauses: Mutex::new(Pauses::default()) }
    }

    /// Build from a channel account's config and credentials.
    pub fn from_spec(spec: crate::AccountSpec<'_>, http: reqwest::Client) -> Result<WhatsAppConnector, ConfigError> {
        let config = WhatsAppConfig::from_json(spec.config, spec.channel)?;
        let credentials = WhatsAppCredentials::from_json(spec.credentials)?;
        Ok(WhatsAppConnector::new(spec.id, config, credentials, http))
    }

    pub fn config(&self) -> &WhatsAppConfig {
        &self.config
    }

    /// `{base_url}/{api_version}/{phone_number_id}/messages`.
    pub fn messages_url(&self) -> String {
        format!("{}/messages", self.number_url())
    }

    /// `{base_url}/{api_version}/{phone_number_id}`.
    pub fn number_url(&self) -> String {
        format!("{}/{}/{}", self.config.base_url, self.config.api_version, self.config.phone_number_id)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn pauses(&self) -> std::sync::MutexGuard<'_, Pauses> {
        self.pauses.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pause a send to `recipient` must wait out now, if any.
    fn paused(&self, recipient: &str, now: Instant) -> Option<SendResult> {
        let pauses = self.pauses();
        let active = |p: &Pause| (p.until > now).then(|| p.clone());
        let pause =
            pauses.number.as_ref().and_then(active).or_else(|| pauses.recipients.get(recipient).and_then(active))?;
        let left_ms = i64::try_from(pause.until.duration_since(now).as_millis()).unwrap_or(i64::MAX).max(1);
        Some(SendResult::Transient {
            error: ErrorInfo {
                code: pause.code,
                detail: format!("{} (paused for {left_ms} ms more, not sent)", pause.detail),
                permanent: false,
            },
            retry_after_ms: Some(left_ms),
        })
    }

    /// A send went through: the rate-limit pauses stop growing.
    fn succeeded(&self, recipient: &str) {
        let mut pauses = self.pauses();
        pauses.number = None;
        pauses.recipients.remove(recipient);
    }

    /// Pause the number after a rate-limit answer; the length of the pause.
    fn pause_number(&self, base_s: u64, retry_after_s: Option<u64>, code: &str, detail: &str, now: Instant) -> u64 {
        let mut pauses = self.pauses();
        let hits = pauses.number.as_ref().map_or(0, |p| p.hits).saturating_add(1);
        let grown = base_s.saturating_mul(1000).saturating_mul(1u64 << (hits - 1).min(16));
        let ms = grown.max(retry_after_s.unwrap_or(0).saturating_mul(1000)).min(MAX_PAUSE_MS);
        pauses.number =
            Some(Pause { until: now + Duration::from_millis(ms), hits, code: code.into(), detail: detail.into() });
        ms
    }

    /// Pause one recipient after a pair-rate-limit answer: 4, 16, 64, 256 s.
    fn pause_recipient(&self, recipient: &str, code: &str, detail: &str, now: Instant) -> u64 {
        let mut pauses = self.pauses();
        // Forget recipients whose pause ended long ago.
        pauses.recipients.retain(|_, p| p.until + Duration::from_secs(3600) > now);
        let hits = pauses.recipients.get(recipient).map_or(0, |p| p.hits).saturating_add(1);
        let ms = 4u64.saturating_pow(hits.min(4)).saturating_mul(1000).min(MAX_RECIPIENT_PAUSE_MS);
        pauses.recipients.insert(
            recipient.to_string(),
            Pause { until: now + Duration::from_millis(ms), hits, code: code.into(), detail: detail.into() },
        );
        ms
    }

    /// What Meta's answer to a send means (and the pauses it starts).
    pub fn answer(&self, recipient: &str, http_status: u16, retry_after: Option<&str>, body: &[u8]) -> SendResult {
        if (200..300).contains(&http_status) {
            let id = serde_json::from_slice::<SendAnswer>(body)
                .ok()
                .and_then(|a| a.messages.into_iter().next())
                .and_then(|m| m.id)
                .filter(|id| !id.is_empty());
            return match id {
                Some(id) => {
                    self.succeeded(recipient);
                    SendResult::accepted(id)
                }
                // Meta took it but the answer is unreadable: trying again could send it twice.
                None => SendResult::Permanent {
                    error: ErrorInfo {
                        code: "whatsapp:unexpected_response".into(),
                        detail: format!("the Graph API answered {http_status} without messages[0].id"),
                        permanent: true,
                    },
                },
            };
        }
        let graph = GraphError::parse(body).unwrap_or_default();
        let code = errors::error_code(graph.code, http_status);
        let mut detail = graph.describe(http_status);
        if graph.code.is_none() && graph.message.is_none() {
            let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
            if !text.trim().is_empty() {
                detail = format!("HTTP {http_status}: {text}");
            }
        }
        let retry_after_s = retry_after
            .and_then(parley_domain::backoff::retry_after_ms)
            .map(|ms| u64::try_from(ms).unwrap_or(0) / 1000);
        let transient = |retry_after_ms: Option<u64>, error: ErrorInfo| SendResult::Transient {
            error,
            retry_after_ms: retry_after_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        };
        let now = Instant::now();
        match errors::classify(graph.code, graph.is_transient.unwrap_or(false), http_status) {
            Class::Retry => {
                transient(retry_after_s.map(|s| s.saturating_mul(1000)), ErrorInfo { code, detail, permanent: false })
            }
            Class::Later(s) => transient(
                Some(retry_after_s.unwrap_or(s).saturating_mul(1000)),
                ErrorInfo { code, detail, permanent: false },
            ),
            Class::PauseNumber(base) => {
                let ms = self.pause_number(base, retry_after_s, &code, &detail, now);
                transient(Some(ms), ErrorInfo { code, detail, permanent: false })
            }
            Class::PauseRecipient => {
                let ms = self.pause_recipient(recipient, &code, &detail, now);
                transient(Some(ms), ErrorInfo { code, detail, permanent: false })
            }
            Class::NeedsTemplate => SendResult::Permanent {
                error: ErrorInfo {
                    code,
                    detail: format!(
                        "{detail} (outside the 24-hour customer service window: only a template message can be sent)"
                    ),
                    permanent: true,
                },
            },
            Class::Permanent => SendResult::Permanent { error: ErrorInfo { code, detail, permanent: true } },
        }
    }

    fn network_error(e: &reqwest::Error) -> ErrorInfo {
        let code = if e.is_timeout() { "whatsapp:timeout" } else { "whatsapp:network" };
        ErrorInfo {
            code: code.into(),
            detail: format!("calling the Graph API failed: {}", crate::DisplayWithoutUrl(e)),
            permanent: false,
        }
    }

    async fn post_json(&self, body: &serde_json::Value) -> Result<(u16, Option<String>, bytes::Bytes), reqwest::Error> {
        let response = self
            .http
            .post(self.messages_url())
            .bearer_auth(&self.credentials.access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout())
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = response.bytes().await?;
        Ok((status, retry_after, bytes))
    }
}

#[async_trait::async_trait]
impl Connector for WhatsAppConnector {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    async fn send(&self, request: &OutboundRequest) -> SendResult {
        let recipient = body::recipient(&request.to);
        if let Some(waiting) = self.paused(&recipient, Instant::now()) {
            return waiting;
        }
        let json = match body::message(&request.to, &request.content) {
            Ok(json) => json,
            Err(body::Unsendable(detail)) => {
                return SendResult::Permanent {
                    error: ErrorInfo { code: "unsupported_content".into(), detail, permanent: true },
                };
            }
        };
        match self.post_json(&json).await {
            Ok((status, retry_after, bytes)) => self.answer(&recipient, status, retry_after.as_deref(), &bytes),
            Err(e) => SendResult::Transient { error: Self::network_error(&e), retry_after_ms: None },
        }
    }

    fn ingress(&self, request: &IngressRequest<'_>) -> Result<IngressOutcome, IngressError> {
        webhook::ingress(self, request)
    }

    async fn check(&self) -> CheckResult {
        let response = self
            .http
            .get(self.number_url())
            .bearer_auth(&self.credentials.access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let error = Self::network_error(&e);
                return CheckResult::Failed { code: error.code, detail: error.detail };
            }
        };
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        if (200..300).contains(&status) {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let text = |k: &str| json.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let mut detail = format!("phone number {} is reachable", self.config.phone_number_id);
            let (number, name, quality) = (text("display_phone_number"), text("verified_name"), text("quality_rating"));
            if !number.is_empty() {
                detail = format!("{detail}: {number}");
            }
            if !name.is_empty() {
                detail = format!("{detail} ({name})");
            }
            if !quality.is_empty() {
                detail = format!("{detail}, quality {quality}");
            }
            return CheckResult::Ok { detail };
        }
        let graph = GraphError::parse(&body).unwrap_or_default();
        CheckResult::Failed { code: errors::error_code(graph.code, status), detail: graph.describe(status) }
    }

    async fn mark_read(&self, provider_message_id: &str) -> Result<(), ErrorInfo> {
        match self.post_json(&body::mark_read(provider_message_id)).await {
            Ok((status, _, _)) if (200..300).contains(&status) => Ok(()),
            Ok((status, _, bytes)) => {
                let graph = GraphError::parse(&bytes).unwrap_or_default();
                let class = errors::classify(graph.code, graph.is_transient.unwrap_or(false), status);
                Err(ErrorInfo {
                    code: errors::error_code(graph.code, status),
                    detail: graph.describe(status),
                    permanent: matches!(class, Class::Permanent | Class::NeedsTemplate),
                })
            }
            Err(e) => Err(Self::network_error(&e)),
        }
    }
}
