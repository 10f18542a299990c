//! Parley's connectors: the code that hands an outbound message to a provider and reports what
//! the provider says about it later (receipts, inbound messages).
//!
//! The engine owns the durable state and calls [`Connector::send`] once per dispatch attempt; a
//! connector answers with a [`SendResult`] and reports asynchronous news through
//! [`ProviderEvents`]. A connector must never touch the store or the HTTP server's types: it knows
//! providers, not persistence or the API, so that each one can be tested alone against fixtures.
//! The [`sandbox`] connector is a deterministic fake carrier used by new workspaces, tests and
//! benchmarks.

pub mod ingress;
pub mod rbm;
pub mod sandbox;
pub mod smpp;
pub mod twilio;
pub mod whatsapp;

use parley_domain::{Channel, ChannelAccountId, Content, ErrorInfo, InboundMessage, MessageId, Millis, Receipt};
use std::sync::Arc;

pub use ingress::{IngressError, IngressOutcome, IngressReply, IngressRequest};

pub use sandbox::{SandboxConfig, SandboxConnector, Submission, SubmissionLedger, SubmissionOutcome};

/// One dispatch attempt of one outbound message.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundRequest {
    pub message_id: MessageId,
    pub channel_account_id: ChannelAccountId,
    /// The dispatch attempt, 1-based.
    pub attempt: i32,
    pub channel: Channel,
    /// E.164 for phone channels, or a web chat visitor id.
    pub to: String,
    pub from: Option<String>,
    pub content: Content,
    /// The message is worthless after this instant.
    pub expires_at: Millis,
}

/// A message a provider took and has not reported on yet (see [`Connector::resume`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AwaitingReceipt {
    pub message_id: MessageId,
    pub provider_message_id: String,
    pub channel: Channel,
    pub to: String,
}

/// The provider's immediate answer to a send.
#[derive(Clone, Debug, PartialEq)]
pub enum SendResult {
    /// The provider took the message; receipts will refer to `provider_message_id`. A message the
    /// provider split into several parts with ids of their own (SMPP) lists every part's id in
    /// `part_ids`, the first one being `provider_message_id`; it is empty otherwise.
    Accepted { provider_message_id: String, part_ids: Vec<String> },
    /// Not taken this time; trying again later may work (after `retry_after_ms`, if given).
    Transient { error: ErrorInfo, retry_after_ms: Option<i64> },
    /// Not taken, and trying again cannot help.
    Permanent { error: ErrorInfo },
}

impl SendResult {
    /// The provider took the message as one part.
    pub fn accepted(provider_message_id: impl Into<String>) -> SendResult {
        SendResult::Accepted { provider_message_id: provider_message_id.into(), part_ids: Vec::new() }
    }
}

/// What a credentials check found (`POST /v1/channel-accounts/{id}/check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// The provider accepted the credentials; `detail` says what was checked.
    Ok { detail: String },
    /// The provider refused them, or could not be reached.
    Failed { code: String, detail: String },
    /// The protocol has no way to check without sending.
    Unsupported,
}

/// Where connectors report what providers tell them asynchronously.
#[derive(Clone, Debug)]
pub struct ProviderEvents {
    pub receipts: tokio::sync::mpsc::UnboundedSender<Receipt>,
    pub inbound: tokio::sync::mpsc::UnboundedSender<InboundMessage>,
}

impl ProviderEvents {
    /// A pair of channels and the receivers the engine drains.
    pub fn channel() -> (
        ProviderEvents,
        tokio::sync::mpsc::UnboundedReceiver<Receipt>,
        tokio::sync::mpsc::UnboundedReceiver<InboundMessage>,
    ) {
        let (receipts, receipts_rx) = tokio::sync::mpsc::unbounded_channel();
        let (inbound, inbound_rx) = tokio::sync::mpsc::unbounded_channel();
        (ProviderEvents { receipts, inbound }, receipts_rx, inbound_rx)
    }
}

/// Speaks one provider's protocol for one channel account.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The provider's name as configured on channel accounts, e.g. `"sandbox"`.
    fn provider(&self) -> &'static str;

    /// Hand one attempt of a message to the provider.
    async fn send(&self, request: &OutboundRequest) -> SendResult;

    /// At start-up: messages this account's provider took before Parley last stopped and has not
    /// reported on yet. A provider that keeps its own state (every real carrier) reports on them
    /// by itself and ignores this; the in-process sandbox, whose receipt timers ended with the
    /// previous process, plans their receipts again. Receipts are safe to repeat: a state never
    /// moves backwards.
    fn resume(&self, _awaiting: Vec<AwaitingReceipt>) {}

    /// Stop background work (receipt timers, binds); called at shutdown and when the account is
    /// changed or deleted.
    fn shutdown(&self) {}

    /// A provider callback that arrived at `/hooks/{provider}/{channel_account_id}`: verify it
    /// (signature over the raw body, before parsing), then parse it into receipts and inbound
    /// messages. The engine stores what comes back before the reply is sent, so a provider that
    /// got a 2xx never has to send it again. Connectors without callbacks keep the default.
    fn ingress(&self, _request: &IngressRequest<'_>) -> Result<IngressOutcome, IngressError> {
        Err(IngressError::NotSupported)
    }

    /// Whether `to` can be reached on this account's channel at all, where the provider can say
    /// so without sending (RBM's capability check, cached): `Some(false)` for a number that is
    /// known not to be reachable, `None` when the provider cannot tell (send and see). Automatic
    /// routing passes over a channel answered `Some(false)`.
    async fn reachable(&self, _to: &str) -> Option<bool> {
        None
    }

    /// Check the account's credentials against the provider, where the protocol allows it
    /// without sending a message.
    async fn check(&self) -> CheckResult {
        CheckResult::Unsupported
    }

    /// Tell the provider that an inbound message (its provider id) has been read, where the
    /// channel shows that to the customer (WhatsApp's blue ticks).
    async fn mark_read(&self, _provider_message_id: &str) -> Result<(), ErrorInfo> {
        Err(ErrorInfo {
            code: "read_receipts_not_supported".into(),
            detail: format!("{} cannot report that a message was read", self.provider()),
            permanent: true,
        })
    }
}

/// What every connector may need from the process that runs it.
#[derive(Clone)]
pub struct ConnectorContext {
    pub events: ProviderEvents,
    /// The sandbox's record of submissions (shared so that tests can read it).
    pub ledger: Arc<SubmissionLedger>,
    /// One HTTP client (connection pool) for every HTTP connector of the process.
    pub http: reqwest::Client,
}

/// A channel account as a connector sees it: its settings and its opened credentials.
#[derive(Clone, Copy, Debug)]
pub struct AccountSpec<'a> {
    pub id: ChannelAccountId,
    pub channel: Channel,
    pub provider: &'a str,
    /// Public settings (JSON object, or `null` for all defaults).
    pub config: &'a serde_json::Value,
    /// Secrets (JSON object, or `null`); only ever held in memory in the clear.
    pub credentials: &'a serde_json::Value,
    /// Where the provider reaches this account's callbacks: the server's public base URL then
    /// `/hooks/{provider}/{channel_account_id}` (for providers told per send, like Twilio's
    /// `StatusCallback`).
    pub callback_url: &'a str,
}

/// Why a channel account's provider settings cannot make a connector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown provider '{0}' (known providers: {known})", known = PROVIDERS.join(", "))]
    UnknownProvider(String),
    #[error("invalid {provider} config: '{field}': {reason}")]
    InvalidField { provider: &'static str, field: String, reason: String },
}

/// The providers [`build`] knows.
pub const PROVIDERS: &[&str] =
    &[sandbox::PROVIDER, twilio::PROVIDER, rbm::PROVIDER, smpp::PROVIDER, whatsapp::PROVIDER];

/// Make the connector for a channel account from its provider name, settings and credentials.
/// Building validates both (a bad field is named) before anything else; a connector that keeps a
/// connection (an SMPP bind) then starts it in the background, and `shutdown` stops it. The engine
/// builds once per account change and serves the connector it built.
pub fn build(spec: AccountSpec<'_>, ctx: &ConnectorContext) -> Result<Arc<dyn Connector>, ConfigError> {
    match spec.provider {
        sandbox::PROVIDER => {
            let config = SandboxConfig::from_json(spec.config)?;
            Ok(Arc::new(SandboxConnector::new(spec.id, spec.channel, config, ctx.events.clone(), ctx.ledger.clone())))
        }
        twilio::PROVIDER => Ok(Arc::new(twilio::TwilioConnector::from_spec(spec, ctx.http.clone())?)),
        rbm::PROVIDER => Ok(Arc::new(rbm::RbmConnector::from_spec(&spec, ctx)?)),
        smpp::PROVIDER => Ok(Arc::new(smpp::SmppConnector::from_spec(&spec, ctx)?)),
        whatsapp::PROVIDER => Ok(Arc::new(whatsapp::WhatsAppConnector::from_spec(spec, ctx.http.clone())?)),
        other => Err(ConfigError::UnknownProvider(other.chars().take(64).collect())),
    }
}

/// Whether `provider` speaks for `channel` (`None`: an unknown provider).
pub fn serves(provider: &str, channel: Channel) -> Option<bool> {
    Some(match provider {
        "sandbox" => true,
        "smpp" => channel == Channel::Sms,
        "twilio" => matches!(channel, Channel::Sms | Channel::Whatsapp),
        "whatsapp" => channel == Channel::Whatsapp,
        "rbm" => channel == Channel::Rcs,
        _ => return None,
    })
}

/// A provider's default send limits: (messages per second, sends awaiting an answer at once).
/// WhatsApp Cloud API numbers start at 80 messages/s; an SMPP bind's window is typically 10–50;
/// Twilio queues what exceeds a sender's rate, so its limit is mostly a politeness; RBM allows
/// bursts well above this.
pub fn default_limits(provider: &str) -> (u32, u32) {
    match provider {
        "sandbox" => (100_000, 10_000),
        "whatsapp" => (80, 80),
        "smpp" => (100, 50),
        "twilio" => (25, 50),
        "rbm" => (100, 100),
        _ => (10, 10),
    }
}

/// A reqwest error's message and causes, without its URL (errors are shown to users as they
/// are; the URL is harmless but noise).
pub(crate) struct DisplayWithoutUrl<'a>(&'a reqwest::Error);

impl std::fmt::Display for DisplayWithoutUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.0.is_timeout() {
            "timed out"
        } else if self.0.is_connect() {
            "could not connect"
        } else if self.0.is_body() || self.0.is_decode() {
            "could not read the answer"
        } else {
            "request failed"
        };
        write!(f, "{kind}")?;
        let mut source = std::error::Error::source(self.0);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Why a provider's base URL setting is refused: it must be an absolute `http(s)://` URL with a
/// host, and nothing that would change what a path appended to it means.
pub(crate) fn check_base_url(value: &str) -> Result<(), &'static str> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
                Err("must not carry a query, a fragment or user info")
            } else {
                Ok(())
            }
        }
        _ => Err("must be an http:// or https:// URL"),
    }
}

/// Deserialize a connector's settings, naming the offending field on error. `null` means "all
/// defaults".
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    provider: &'static str,
    json: &serde_json::Value,
) -> Result<T, ConfigError> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let json = if json.is_null() { &empty } else { json };
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.inner().to_string();
        let field = if path == "." { "(config)".to_string() } else { path };
        ConfigError::InvalidField { provider, field, reason }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn try_build(provider: &str, config: serde_json::Value) -> Result<Arc<dyn Connector>, ConfigError> {
        let (events, _r, _i) = ProviderEvents::channel();
        let ctx =
            ConnectorContext { events, ledger: Arc::new(SubmissionLedger::in_memory()), http: reqwest::Client::new() };
        let spec = AccountSpec {
            id: ChannelAccountId::new(),
            channel: Channel::Sms,
            provider,
            config: &config,
            credentials: &serde_json::Value::Null,
            callback_url: "http://127.0.0.1:8080/hooks/test/cha_test",
        };
        build(spec, &ctx)
    }

    #[tokio::test]
    async fn build_knows_the_sandbox() {
        let c = try_build("sandbox", json!({})).unwrap();
        assert_eq!(c.provider(), "sandbox");
        assert!(try_build("sandbox", serde_json::Value::Null).is_ok());
        assert!(try_build("sandbox", json!({"latency_ms": 5, "auto_reply": "hi", "seed": 7})).is_ok());
    }

    #[test]
    fn build_refuses_an_unknown_provider_by_name() {
        let err = try_build("carrier-pigeon", json!({})).err().unwrap();
        assert_eq!(err, ConfigError::UnknownProvider("carrier-pigeon".into()));
        assert!(err.to_string().contains("'carrier-pigeon'"), "{err}");
        assert!(err.to_string().contains("sandbox"), "{err}");
    }

    #[test]
    fn build_names_the_bad_field() {
        let field_of = |config: serde_json::Value| match try_build("sandbox", config).err().unwrap() {
            ConfigError::InvalidField { provider, field, reason } => {
                assert_eq!(provider, "sandbox");
                (field, reason)
            }
            other => panic!("{other:?}"),
        };
        let (field, reason) = field_of(json!({"latency_ms": "slow"}));
        assert_eq!(field, "latency_ms", "{reason}");
        let (field, _) = field_of(json!({"read_receipts": 1}));
        assert_eq!(field, "read_receipts");
        let (field, reason) = field_of(json!({"latency": 5}));
        assert_eq!(field, "latency", "{reason}");
        assert!(reason.contains("unknown field"), "{reason}");
        let (field, _) = field_of(json!({"receipt_latency_ms": -1}));
        assert_eq!(field, "receipt_latency_ms");
        let (field, _) = field_of(json!({"auto_reply": ""}));
        assert_eq!(field, "auto_reply");
        let (field, _) = field_of(json!({"latency_ms": 600_000}));
        assert_eq!(field, "latency_ms");
        let (field, _) = field_of(json!("fast"));
        assert_eq!(field, "(config)");
        let err = try_build("sandbox", json!({"seed": "x"})).err().unwrap();
        assert!(err.to_string().starts_with("invalid sandbox config: 'seed': "), "{err}");
    }
}
