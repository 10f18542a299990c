//! Google RCS Business Messaging (RBM API v1): the `rbm` provider of the `rcs` channel.
//!
//! - **Auth**: the account's service-account key signs an RS256 JWT that `token_url` exchanges
//!   for an access token ([`auth`]); the token is cached until a minute before it expires and
//!   fetched again once when the API answers 401.
//! - **Send**: `POST {base_url}/v1/phones/{E.164}/agentMessages?messageId=…&agentId=…` with the
//!   body of [`body`]. The `messageId` is Parley's message id in the form Google requires, a
//!   UUID: `msg_0190…` is sent as `0190….-….` (the same 128 bits, hyphenated). Google ignores a
//!   second message with an id it has seen, so a retry after a lost answer cannot reach the
//!   phone twice; its `409 ALREADY_EXISTS` counts as accepted. The provider message id is that
//!   same UUID, which is what receipts carry as `messageId`.
//! - **Errors** are keyed on the `google.rpc.Status` `status` (never the message text), with the
//!   HTTP status as fallback: `NOT_FOUND`/404 → permanent `rcs_unreachable` (the number cannot be
//!   reached over RCS: routing falls back to SMS); `INVALID_ARGUMENT`/400 and other 4xx →
//!   permanent `rbm:<STATUS>`; `RESOURCE_EXHAUSTED`/429 and `UNAVAILABLE`, `INTERNAL`,
//!   `DEADLINE_EXCEEDED`/5xx → transient `rbm:<STATUS>`, after `Retry-After` when given.
//! - **Capabilities**: [`RbmConnector::capabilities`] asks `GET …/capabilities` and caches the
//!   answer (reachable with features, or unreachable) for `capability_cache_seconds`.
//! - **Callbacks** (`/hooks/rbm/{channel_account_id}`): see [`ingress`].

pub mod auth;
pub mod body;
pub mod ingress;

use crate::SendResult;
use crate::{CheckResult, ConfigError, Connector, IngressError, IngressOutcome, IngressRequest, OutboundRequest};
use auth::{AuthError, ServiceAccountKey, TokenSource};
use parley_domain::{Channel, ChannelAccountId, ErrorInfo, Millis};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The provider name of RBM on channel accounts.
pub const PROVIDER: &str = "rbm";
/// The error code of a send to a number RBM cannot reach (`404 NOT_FOUND`).
pub const UNREACHABLE_CODE: &str = "rcs_unreachable";
/// How long one API call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many numbers are kept in the capability cache.
const CAPABILITY_CACHE_MAX: usize = 10_000;

/// An RBM account's public settings (the channel account's provider config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbmConfig {
    /// The API's base URL (a regional host such as
    /// `https://europe-rcsbusinessmessaging.googleapis.com`, or a fake in tests).
    #[serde(default = "RbmConfig::default_base_url")]
    pub base_url: String,
    /// Where JWT assertions are exchanged for access tokens.
    #[serde(default = "RbmConfig::default_token_url")]
    pub token_url: String,
    /// The agent's id, such as `my-agent@rbm.goog`.
    pub agent_id: String,
    /// How long a capability answer is reused for the same number (0: never).
    #[serde(default = "RbmConfig::default_capability_cache_seconds")]
    pub capability_cache_seconds: u64,
}

impl RbmConfig {
    pub const DEFAULT_BASE_URL: &str = "https://rcsbusinessmessaging.googleapis.com";
    pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
    pub const DEFAULT_CAPABILITY_CACHE_SECONDS: u64 = 60;
    pub const MAX_CAPABILITY_CACHE_SECONDS: u64 = 86_400;

    fn default_base_url() -> String {
        Self::DEFAULT_BASE_URL.into()
    }

    fn default_token_url() -> String {
        Self::DEFAULT_TOKEN_URL.into()
    }

    fn default_capability_cache_seconds() -> u64 {
        Self::DEFAULT_CAPABILITY_CACHE_SECONDS
    }

    /// Read and check a channel account's JSON config; errors name the field.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ConfigError> {
        let mut config: RbmConfig = crate::parse_config(PROVIDER, json)?;
        config.validate()?;
        config.base_url = config.base_url.trim_end_matches('/').to_string();
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: &str| ConfigError::InvalidField {
            provider: PROVIDER,
            field: field.into(),
            reason: reason.into(),
        };
        for (field, value) in [("base_url", &self.base_url), ("token_url", &self.token_url)] {
            match url::Url::parse(value) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
                _ => return Err(bad(field, "must be an http(s) URL")),
            }
        }
        if self.agent_id.trim().is_empty() || self.agent_id.len() > 256 {
            return Err(bad("agent_id", "must be the agent's id, 1 to 256 characters"));
        }
        if self.capability_cache_seconds > Self::MAX_CAPABILITY_CACHE_SECONDS {
            return Err(bad("capability_cache_seconds", "must be at most 86400"));
        }
        Ok(())
    }
}

/// An RBM account's secrets (the channel account's credentials).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbmCredentials {
    /// The Google service-account JSON key.
    pub service_account: ServiceAccountKey,
    /// The webhook's client token: it answers the registration handshake and keys the
    /// `X-Goog-Signature` HMAC of every push.
    pub client_token: String,
}

impl std::fmt::Debug for RbmCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbmCredentials")
            .field("service_account", &self.service_account)
            .field("client_token", &"<redacted>")
            .finish()
    }
}

impl RbmCredentials {
    /// Read the credentials; errors name the field but never quote a value.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ConfigError> {
        let bad = |field: String, reason: String| ConfigError::InvalidField { provider: PROVIDER, field, reason };
        if json.is_null() {
            return Err(bad("credentials".into(), "are required: service_account and client_token".into()));
        }
        let credentials: RbmCredentials = serde_path_to_error::deserialize(json).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.inner().to_string();
            // serde quotes wrong values in its messages: keep only the ones that name fields.
            let reason = if inner.starts_with("missing field") || inner.starts_with("unknown field") {
                inner.split(" at line").next().unwrap_or(&inner).to_string()
            } else {
                "has the wrong type".to_string()
            };
            let field = if path == "." { "credentials".to_string() } else { format!("credentials.{path}") };
            bad(field, reason)
        })?;
        if credentials.client_token.is_empty() {
            return Err(bad("credentials.client_token".into(), "must not be empty".into()));
        }
        if credentials.service_account.client_email.trim().is_empty() {
            return Err(bad("credentials.service_account.client_email".into(), "must not be empty".into()));
        }
        Ok(credentials)
    }
}

/// What RBM says a number can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capabilities {
    /// Reachable over RBM, with these features (`RICHCARD_STANDALONE`, `ACTION_DIAL`, …).
    Reachable { features: Vec<String> },
    /// `404 NOT_FOUND`: not RCS-capable, RCS off, or the agent not launched on its carrier.
    Unreachable,
}

/// The RBM connector for one channel account.
pub struct RbmConnector {
    account_id: ChannelAccountId,
    config: RbmConfig,
    client_token: String,
    tokens: TokenSource,
    http: reqwest::Client,
    capability_cache: Mutex<HashMap<String, (Instant, Capabilities)>>,
}

impl std::fmt::Debug for RbmConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbmConnector")
            .field("account_id", &self.account_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A `google.rpc.Status` error answer: `{"error": {"code", "message", "status"}}`.
#[derive(Deserialize, Default)]
struct GoogleError {
    #[serde(default)]
    error: GoogleStatus,
}

#[derive(Deserialize, Default)]
struct GoogleStatus {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// A failed API call, keyed the way Google keys errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub http_status: u16,
    /// The `google.rpc.Status` `status`, or one derived from the HTTP status.
    pub status: String,
    pub message: String,
    pub retry_after_ms: Option<i64>,
}

/// The `status` Google uses for an HTTP status, when an answer has none.
fn status_for_http(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "UNKNOWN",
    }
}

impl ApiError {
    fn from_answer(http_status: u16, body: &str, retry_after: Option<&str>) -> ApiError {
        let parsed: GoogleError = serde_json::from_str(body).unwrap_or_default();
        let status = parsed
            .error
            .status
            .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .unwrap_or_else(|| status_for_http(http_status).to_string());
        let message: String = parsed.error.message.unwrap_or_default().chars().take(500).collect();
        let retry_after_ms = retry_after.and_then(parley_domain::backoff::retry_after_ms);
        ApiError { http_status, status, message, retry_after_ms }
    }

    /// Transient: trying again later may work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.status.as_str(),
            "RESOURCE_EXHAUSTED" | "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" | "ABORTED"
        ) || self.http_status == 429
            || self.http_status >= 500
    }

    /// The send outcome for this error.
    pub fn send_result(&self) -> SendResult {
        let detail = if self.message.is_empty() {
            format!("RBM answered {} {}", self.http_status, self.status)
        } else {
            format!("RBM answered {} {}: {}", self.http_status, self.status, self.message)
        };
        if self.status == "NOT_FOUND" || (self.http_status == 404 && !self.is_transient()) {
            return SendResult::Permanent {
                error: ErrorInfo {
                    code: UNREACHABLE_CODE.into(),
                    detail: format!("the number cannot be reached over RCS by this agent ({detail})"),
                    permanent: true,
                },
            };
        }
        let code = format!("rbm:{}", self.status);
        if self.is_transient() {
            SendResult::Transient {
                error: ErrorInfo { code, detail, permanent: false },
                retry_after_ms: self.retry_after_ms,
            }
        } else {
            SendResult::Permanent { error: ErrorInfo { code, detail, permanent: true } }
        }
    }
}

/// Why an API call gave no answer to interpret.
enum CallError {
    Auth(AuthError),
    Network(String),
    Api(ApiError),
}

impl CallError {
    fn send_result(&self) -> SendResult {
        match self {
            CallError::Auth(e) if e.permanent => SendResult::Permanent {
                error: ErrorInfo { code: e.code.into(), detail: e.detail.clone(), permanent: true },
            },
            CallError::Auth(e) => SendResult::Transient {
                error: ErrorInfo { code: e.code.into(), detail: e.detail.clone(), permanent: false },
                retry_after_ms: None,
            },
            CallError::Network(detail) => SendResult::Transient {
                error: ErrorInfo { code: "rbm:network".into(), detail: detail.clone(), permanent: false },
                retry_after_ms: None,
            },
            CallError::Api(e) => e.send_result(),
        }
    }

    fn error_info(&self) -> ErrorInfo {
        match self.send_result() {
            SendResult::Permanent { error } | SendResult::Transient { error, .. } => error,
            SendResult::Accepted { .. } => {
                ErrorInfo { code: "rbm:unknown".into(), detail: String::new(), permanent: false }
            }
        }
    }
}

/// A successful API answer.
struct Answer {
    body: String,
}

/// RBM wants numbers as `+` and digits.
fn is_e164(to: &str) -> bool {
    to.strip_prefix('+').is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// A fresh random UUID (v4), for `requestId`.
fn random_uuid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

impl RbmConnector {
    /// Build the connector (checks config and credentials; contacts nobody).
    pub fn new(
        account_id: ChannelAccountId,
        config: RbmConfig,
        credentials: RbmCredentials,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let private_key = auth::parse_private_key(&credentials.service_account.private_key).map_err(|reason| {
            ConfigError::InvalidField {
                provider: PROVIDER,
                field: "credentials.service_account.private_key".into(),
                reason,
            }
        })?;
        let tokens = TokenSource::new(&credentials.service_account, private_key, &config.token_url, http.clone());
        Ok(RbmConnector {
            account_id,
            config,
            client_token: credentials.client_token,
            tokens,
            http,
            capability_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Build from a channel account's JSON config and credentials.
    pub fn from_spec(spec: &crate::AccountSpec<'_>, ctx: &crate::ConnectorContext) -> Result<Self, ConfigError> {
        if spec.channel != Channel::Rcs {
            return Err(ConfigError::InvalidField {
                provider: PROVIDER,
                field: "channel".into(),
                reason: format!("rbm serves the rcs channel, not {}", spec.channel.as_str()),
            });
        }
        let config = RbmConfig::from_json(spec.config)?;
        let credentials = RbmCredentials::from_json(spec.credentials)?;
        RbmConnector::new(spec.id, config, credentials, ctx.http.clone())
    }

    pub fn config(&self) -> &RbmConfig {
        &self.config
    }

    pub fn account_id(&self) -> ChannelAccountId {
        self.account_id
    }

    /// The `messageId` (and provider message id) of a Parley message: its UUID, hyphenated.
    pub fn rbm_message_id(message_id: &parley_domain::MessageId) -> String {
        message_id.uuid().hyphenated().to_string()
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<url::Url, CallError> {
        let mut url = url::Url::parse(&self.config.base_url).map_err(|_| CallError::Network("bad base_url".into()))?;
        url.path_segments_mut().map_err(|_| CallError::Network("bad base_url".into()))?.pop_if_empty().extend(segments);
        url.query_pairs_mut().extend_pairs(query);
        Ok(url)
    }

    /// One authorised call; a 401 drops the token and tries once more with a new one.
    async fn call(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, CallError> {
        let mut refreshed = false;
        loop {
            let token = self.tokens.token().await.map_err(CallError::Auth)?;
            let mut request =
                self.http.request(method.clone(), url.clone()).bearer_auth(&token).timeout(REQUEST_TIMEOUT);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response =
                request.send().await.map_err(|e| CallError::Network(format!("RBM {}", auth::without_url(&e))))?;
            let status = response.status().as_u16();
            let retry_after =
                response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
            let text = response
                .text()
                .await
                .map_err(|e| CallError::Network(format!("RBM answer: {}", auth::without_url(&e))))?;
            if (200..300).contains(&status) {
                return Ok(Answer { body: text });
            }
            if status == 401 && !refreshed {
                tracing::debug!(account = %self.account_id, "RBM refused the access token; fetching a new one");
                self.tokens.invalidate(&token).await;
                refreshed = true;
                continue;
            }
            return Err(CallError::Api(ApiError::from_answer(status, &text, retry_after.as_deref())));
        }
    }

    /// What RBM says `e164` can do, from the cache when asked within `capability_cache_seconds`.
    /// Routing uses this to choose RCS or SMS before sending.
    pub async fn capabilities(&self, e164: &str) -> Result<Capabilities, ErrorInfo> {
        if !is_e164(e164) {
            return Err(ErrorInfo {
                code: "rbm:invalid_recipient".into(),
                detail: "RBM needs an E.164 phone number".into(),
                permanent: true,
            });
        }
        let ttl = Duration::from_secs(self.config.capability_cache_seconds);
        if !ttl.is_zero()
            && let Ok(cache) = self.capability_cache.lock()
            && let Some((at, caps)) = cache.get(e164)
            && at.elapsed() < ttl
        {
            return Ok(caps.clone());
        }
        let request_id = random_uuid();
        let url = self
            .url(
                &["v1", "phones", e164, "capabilities"],
                &[("requestId", &request_id), ("agentId", &self.config.agent_id)],
            )
            .map_err(|e| e.error_info())?;
        let caps = match self.call(reqwest::Method::GET, url, None).await {
            Ok(answer) => {
                let features = serde_json::from_str::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| {
                        v["features"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
                    })
                    .unwrap_or_default();
                Capabilities::Reachable { features }
            }
            Err(CallError::Api(e)) if e.status == "NOT_FOUND" => Capabilities::Unreachable,
            Err(e) => return Err(e.error_info()),
        };
        if !ttl.is_zero()
            && let Ok(mut cache) = self.capability_cache.lock()
        {
            if cache.len() >= CAPABILITY_CACHE_MAX {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= CAPABILITY_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(e164.to_string(), (Instant::now(), caps.clone()));
        }
        Ok(caps)
    }
}

#[async_trait::async_trait]
impl Connector for RbmConnector {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    async fn send(&self, request: &OutboundRequest) -> SendResult {
        let permanent = |code: &str, detail: String| SendResult::Permanent {
            error: ErrorInfo { code: code.into(), detail, permanent: true },
        };
        if !is_e164(&request.to) {
            return permanent("rbm:invalid_recipient", "RBM needs an E.164 phone number".into());
        }
        let ttl = body::ttl_seconds(request.expires_at.0, Millis::now().0);
        let message = match body::agent_message(&request.content, ttl) {
            Ok(m) => m,
            Err(e) => return permanent(e.code, e.detail),
        };
        let message_id = Self::rbm_message_id(&request.message_id);
        let url = match self.url(
            &["v1", "phones", &request.to, "agentMessages"],
            &[("messageId", &message_id), ("agentId", &self.config.agent_id)],
        ) {
            Ok(u) => u,
            Err(e) => return e.send_result(),
        };
        match self.call(reqwest::Method::POST, url, Some(&message)).await {
            Ok(_) => SendResult::accepted(message_id),
            // The id was taken before: an earlier attempt got through and its answer was lost.
            Err(CallError::Api(e)) if e.status == "ALREADY_EXISTS" || e.http_status == 409 => {
                tracing::debug!(account = %self.account_id, message_id = %request.message_id,
                    "RBM already has this messageId; counting the send as accepted");
                SendResult::accepted(message_id)
            }
            Err(e) => {
                if let CallError::Api(api) = &e
                    && api.status == "NOT_FOUND"
                    && let Ok(mut cache) = self.capability_cache.lock()
                    && self.config.capability_cache_seconds > 0
                    && cache.len() < CAPABILITY_CACHE_MAX
                {
                    cache.insert(request.to.clone(), (Instant::now(), Capabilities::Unreachable));
                }
                e.send_result()
            }
        }
    }

    fn ingress(&self, request: &IngressRequest<'_>) -> Result<IngressOutcome, IngressError> {
        ingress::handle(self.account_id, &self.config.agent_id, self.client_token.as_bytes(), request)
    }

    async fn reachable(&self, to: &str) -> Option<bool> {
        match self.capabilities(to).await {
            Ok(Capabilities::Reachable { .. }) => Some(true),
            Ok(Capabilities::Unreachable) => Some(false),
            // An error of the check (a timeout, a refused token) says nothing about the number.
            Err(_) => None,
        }
    }

    async fn check(&self) -> CheckResult {
        match self.tokens.token().await {
            Ok(_) => {
                CheckResult::Ok { detail: format!("obtained an RBM access token for {}", self.tokens.client_email()) }
            }
            Err(e) => CheckResult::Failed { code: e.code.into(), detail: e.detail },
        }
    }
}

#[cfg(test)]
mod tests;
