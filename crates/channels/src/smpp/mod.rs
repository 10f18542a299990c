//! SMS over SMPP 3.4: one persistent transceiver bind per channel account.
//!
//! [`SmppConnector`] is built from the account's config ([`SmppConfig`]) and credentials
//! (`{"password": "…"}`, at most 8 characters, never logged). Building starts the bind in the
//! background ([`session`]); `shutdown()` unbinds. A send cuts the text into parts
//! ([`message`]), hands each part to the bind as a `submit_sm` and waits for the answers:
//! `Accepted` with the first part's SMSC id as `provider_message_id` and every part's id in
//! `part_ids` (empty for a single part), or the first refusal, mapped by [`classify`]. A retry
//! after a failure on a later part sends every part again.
//!
//! Receipts ([`receipt`]) and mobile-originated messages arrive as `deliver_sm` and go to
//! `ProviderEvents`.
//!
//! **command_status → SendResult** (codes as `smpp:0x%08x`):
//!
//! | status | meaning | result |
//! |---|---|---|
//! | 0x58 ESME_RTHROTTLED, 0x14 ESME_RMSGQFUL | slow down | `Transient`, `retry_after_ms` = `throttle_pause_ms`; the bind pauses as long |
//! | 0x04 RINVBNDSTS, 0x08 RSYSERR, 0x45 RSUBMITFAIL, 0x64 RX_T_APPN, 0xFE RDELIVERYFAILURE, 0xFF RUNKNOWNERR | temporary | `Transient` |
//! | 0x01 RINVMSGLEN, 0x02, 0x03, 0x06, 0x07, 0x0A RINVSRCADR, 0x0B RINVDSTADR, 0x0C, 0x33, 0x40, 0x42, 0x43 RINVESMCLASS, 0x44, 0x48–0x51 (TON/NPI), 0x53 RINVSYSTYP, 0x54, 0x55, 0x61, 0x62, 0x66 RX_R_APPN, 0xC0–0xC4 (TLVs) | the message as written is refused | `Permanent` |
//! | anything else (vendor codes such as 0x22) | unknown | `Transient`: the engine retries until the message's validity runs out; the session goes on |
//!
//! No answer in `response_timeout_ms`: `Transient` `smpp:timeout`. Link lost with the submit in
//! flight: `Transient` `smpp:link_down`. No bind at the moment: `Transient` `smpp:not_bound`.

pub mod message;
pub mod pdu;
pub mod receipt;
pub mod session;

use crate::{
    AccountSpec, CheckResult, ConfigError, Connector, ConnectorContext, OutboundRequest, ProviderEvents, SendResult,
};
use parley_domain::{Channel, ChannelAccountId, Content, ErrorInfo};
use receipt::IdConversion;
use serde::{Deserialize, Serialize};
use session::{Command, LinkState, Password, Session, SubmitOutcome};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// The provider name on channel accounts.
pub const PROVIDER: &str = "smpp";

/// An SMPP account's settings (public; the password is in the credentials).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmppConfig {
    /// The SMSC's host name or address (required).
    pub host: String,
    pub port: u16,
    /// The ESME's system_id (required, at most 15 characters).
    pub system_id: String,
    pub system_type: String,
    pub service_type: String,
    /// Sender when a message gives no `from`; an E.164 `from` is sent as TON 1 / NPI 1.
    pub source_addr: String,
    pub source_addr_ton: u8,
    pub source_addr_npi: u8,
    /// TON/NPI of recipients that are not E.164 (E.164 ones are always 1/1).
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    /// TLS on the bind (server certificate checked against the webpki roots).
    pub tls: bool,
    /// `submit_sm` in flight at once.
    pub window: usize,
    pub enquire_link_seconds: u64,
    pub response_timeout_ms: u64,
    /// `data_coding` of GSM-7 texts (sent unpacked); UCS-2 texts always use 8.
    pub data_coding_default: u8,
    /// Ask for delivery receipts (`registered_delivery` 1).
    pub delivery_receipts: bool,
    /// First reconnect delay; doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// How long ESME_RTHROTTLED / ESME_RMSGQFUL pause the bind.
    pub throttle_pause_ms: u64,
    /// How receipt ids relate to submit_sm_resp ids (see [`receipt::IdConversion`]).
    pub receipt_id_conversion: IdConversion,
}

impl Default for SmppConfig {
    fn default() -> Self {
        SmppConfig {
            host: String::new(),
            port: 2775,
            system_id: String::new(),
            system_type: String::new(),
            service_type: String::new(),
            source_addr: String::new(),
            source_addr_ton: 5,
            source_addr_npi: 0,
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            tls: false,
            window: 50,
            enquire_link_seconds: 30,
            response_timeout_ms: 10_000,
            data_coding_default: 0,
            delivery_receipts: true,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 60_000,
            throttle_pause_ms: 1_000,
            receipt_id_conversion: IdConversion::Same,
        }
    }
}

impl SmppConfig {
    /// Read and check a channel account's JSON config; errors name the field.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ConfigError> {
        let config: SmppConfig = crate::parse_config(PROVIDER, json)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: &str| ConfigError::InvalidField {
            provider: PROVIDER,
            field: field.into(),
            reason: reason.into(),
        };
        if self.host.trim().is_empty() {
            return Err(bad("host", "is required"));
        }
        if self.port == 0 {
            return Err(bad("port", "must be 1 to 65535"));
        }
        if self.system_id.is_empty() || self.system_id.len() > 15 {
            return Err(bad("system_id", "must be 1 to 15 characters"));
        }
        if self.system_type.len() > 12 {
            return Err(bad("system_type", "must be at most 12 characters"));
        }
        if self.service_type.len() > 5 {
            return Err(bad("service_type", "must be at most 5 characters"));
        }
        if self.source_addr.len() > 20 {
            return Err(bad("source_addr", "must be at most 20 characters"));
        }
        if !(1..=1000).contains(&self.window) {
            return Err(bad("window", "must be 1 to 1000"));
        }
        if !(1..=3600).contains(&self.enquire_link_seconds) {
            return Err(bad("enquire_link_seconds", "must be 1 to 3600"));
        }
        if !(100..=300_000).contains(&self.response_timeout_ms) {
            return Err(bad("response_timeout_ms", "must be 100 to 300000"));
        }
        if self.data_coding_default == 8 {
            return Err(bad("data_coding_default", "is the coding of GSM-7 texts; 8 (UCS-2) is used on its own"));
        }
        if !(10..=3_600_000).contains(&self.reconnect_min_ms) || self.reconnect_max_ms > 3_600_000 {
            return Err(bad("reconnect_min_ms", "must be 10 to 3600000 (and reconnect_max_ms at most 3600000)"));
        }
        if self.throttle_pause_ms > 600_000 {
            return Err(bad("throttle_pause_ms", "must be at most 600000"));
        }
        Ok(())
    }

    fn template(&self) -> message::SubmitTemplate {
        message::SubmitTemplate {
            service_type: self.service_type.clone(),
            source_addr: self.source_addr.clone(),
            source_addr_ton: self.source_addr_ton,
            source_addr_npi: self.source_addr_npi,
            dest_addr_ton: self.dest_addr_ton,
            dest_addr_npi: self.dest_addr_npi,
            gsm7_data_coding: self.data_coding_default,
            registered_delivery: u8::from(self.delivery_receipts),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    password: String,
}

fn parse_credentials(json: &serde_json::Value) -> Result<Password, ConfigError> {
    let bad =
        |reason: String| ConfigError::InvalidField { provider: PROVIDER, field: "credentials.password".into(), reason };
    if json.is_null() {
        return Err(bad("is required".into()));
    }
    // The value itself must never appear in an error message.
    let c: Credentials =
        serde_json::from_value(json.clone()).map_err(|_| bad("credentials must be {\"password\": \"…\"}".into()))?;
    if c.password.len() > 8 || c.password.contains('\0') {
        return Err(bad("must be at most 8 characters (SMPP 3.4)".into()));
    }
    Ok(Password(c.password))
}

/// The SMPP connector of one channel account.
pub struct SmppConnector {
    account: ChannelAccountId,
    config: SmppConfig,
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<LinkState>,
    cancel: CancellationToken,
    reference: AtomicU8,
}

impl SmppConnector {
    /// Build from a channel account (what [`crate::build`] calls).
    pub fn from_spec(spec: &AccountSpec<'_>, ctx: &ConnectorContext) -> Result<SmppConnector, ConfigError> {
        let config = SmppConfig::from_json(spec.config)?;
        SmppConnector::start(spec.id, config, spec.credentials, ctx.events.clone())
    }

    /// Check the settings and start the bind in the background (needs a Tokio runtime).
    pub fn start(
        account: ChannelAccountId,
        config: SmppConfig,
        credentials: &serde_json::Value,
        events: ProviderEvents,
    ) -> Result<SmppConnector, ConfigError> {
        config.validate()?;
        let password = parse_credentials(credentials)?;
        let (tx, rx) = mpsc::channel(config.window.saturating_mul(4).max(64));
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
        let cancel = CancellationToken::new();
        let session = Session {
            account,
            config: config.clone(),
            password,
            events,
            commands: rx,
            state: state_tx,
            cancel: cancel.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(session.run());
            }
            Err(_) => {
                return Err(ConfigError::InvalidField {
                    provider: PROVIDER,
                    field: "(config)".into(),
                    reason: "an SMPP connector must be built inside a Tokio runtime".into(),
                });
            }
        }
        let seed = account.to_string().bytes().fold(0u8, |a, b| a.wrapping_add(b));
        Ok(SmppConnector { account, config, commands: tx, state: state_rx, cancel, reference: AtomicU8::new(seed) })
    }

    pub fn config(&self) -> &SmppConfig {
        &self.config
    }

    /// Whether the bind is up now.
    pub fn is_bound(&self) -> bool {
        *self.state.borrow() == LinkState::Bound
    }

    /// Wait until the bind is up (or `timeout` passes); `true` if it is.
    pub async fn wait_bound(&self, timeout: Duration) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s == LinkState::Bound)).await.is_ok_and(|r| r.is_ok())
    }

    async fn submit(&self, sm: pdu::Sm) -> SubmitOutcome {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Submit { sm, reply }).await.is_err() {
            return SubmitOutcome::NotBound("the connector is shut down".into());
        }
        rx.await.unwrap_or(SubmitOutcome::LinkDown)
    }
}

impl Drop for SmppConnector {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn err(code: String, detail: String, permanent: bool) -> ErrorInfo {
    ErrorInfo { code, detail, permanent }
}

/// The result for a refused or failed part (see the module's table).
pub fn classify(outcome: &SubmitOutcome, throttle_pause_ms: u64) -> SendResult {
    let transient = |code: &str, detail: String| SendResult::Transient {
        error: err(code.into(), detail, false),
        retry_after_ms: None,
    };
    match outcome {
        SubmitOutcome::Accepted(id) => SendResult::accepted(id.clone()),
        SubmitOutcome::Timeout => transient("smpp:timeout", "no submit_sm_resp in time".into()),
        SubmitOutcome::LinkDown => transient("smpp:link_down", "the SMPP link dropped before the answer".into()),
        SubmitOutcome::NotBound(why) => transient("smpp:not_bound", format!("no SMPP bind: {why}")),
        SubmitOutcome::Invalid(why) => SendResult::Permanent { error: err("smpp:invalid".into(), why.clone(), true) },
        SubmitOutcome::Refused(status) => {
            let code = format!("smpp:0x{status:08x}");
            let s = *status;
            if session::is_throttle(s) {
                return SendResult::Transient {
                    error: err(code, format!("the SMSC asks to slow down (0x{s:02x})"), false),
                    retry_after_ms: Some(i64::try_from(throttle_pause_ms).unwrap_or(i64::MAX)),
                };
            }
            let permanent = matches!(s, 0x01..=0x03 | 0x06 | 0x07 | 0x0A..=0x0C | 0x33 | 0x40 | 0x42..=0x44 | 0x48..=0x51
                | 0x53..=0x55 | 0x61 | 0x62 | 0x66 | 0xC0..=0xC4);
            let detail = format!("the SMSC refused the submit_sm with command_status 0x{s:08x}");
            if permanent {
                SendResult::Permanent { error: err(code, detail, true) }
            } else {
                SendResult::Transient { error: err(code, detail, false), retry_after_ms: None }
            }
        }
    }
}

#[async_trait::async_trait]
impl Connector for SmppConnector {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    async fn send(&self, request: &OutboundRequest) -> SendResult {
        if request.channel != Channel::Sms {
            return SendResult::Permanent {
                error: err(
                    "smpp:unsupported_channel".into(),
                    format!("SMPP sends SMS, not {}", request.channel.as_str()),
                    true,
                ),
            };
        }
        let Content::Text { text, .. } = &request.content else {
            return SendResult::Permanent {
                error: err("smpp:unsupported_content".into(), "SMPP sends text only".into(), true),
            };
        };
        let reference = self.reference.fetch_add(1, Ordering::Relaxed);
        let parts = match message::build(&self.config.template(), request.from.as_deref(), &request.to, text, reference)
        {
            Ok(p) => p,
            Err(e) => return SendResult::Permanent { error: err("smpp:invalid".into(), e.to_string(), true) },
        };
        let outcomes = futures_join(parts.into_iter().map(|sm| self.submit(sm)).collect()).await;
        let mut ids = Vec::with_capacity(outcomes.len());
        for o in &outcomes {
            match o {
                SubmitOutcome::Accepted(id) => ids.push(id.clone()),
                other => {
                    let result = classify(other, self.config.throttle_pause_ms);
                    tracing::debug!(account = %self.account, message = %request.message_id, outcome = ?other, "smpp: submit refused");
                    return result;
                }
            }
        }
        let first = ids.first().cloned().unwrap_or_default();
        let part_ids = if ids.len() > 1 { ids } else { Vec::new() };
        SendResult::Accepted { provider_message_id: first, part_ids }
    }

    fn shutdown(&self) {
        self.cancel.cancel();
    }

    async fn check(&self) -> CheckResult {
        let mut rx = self.state.clone();
        let wait = Duration::from_millis(self.config.response_timeout_ms.min(5_000));
        let _ = tokio::time::timeout(wait, rx.wait_for(|s| *s != LinkState::Connecting)).await;
        let state = rx.borrow().clone();
        match state {
            LinkState::Bound => CheckResult::Ok {
                detail: format!("bound as {} to {}:{}", self.config.system_id, self.config.host, self.config.port),
            },
            LinkState::Connecting => CheckResult::Failed {
                code: "smpp:not_bound".into(),
                detail: format!("still connecting to {}:{}", self.config.host, self.config.port),
            },
            LinkState::Down(why) => CheckResult::Failed { code: "smpp:not_bound".into(), detail: why },
        }
    }
}

/// Await every future, in order (the parts are submitted together, so they share the window).
async fn futures_join<F: std::future::Future<Output = SubmitOutcome>>(futs: Vec<F>) -> Vec<SubmitOutcome> {
    let mut handles = Vec::with_capacity(futs.len());
    for f in futs {
        handles.push(Box::pin(f));
    }
    let mut out = Vec::with_capacity(handles.len());
    // Driven together, so that every part is queued before the first answer comes back.
    let mut pending: Vec<Option<SubmitOutcome>> = vec![None; handles.len()];
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, h) in handles.iter_mut().enumerate() {
            if pending[i].is_none() {
                match h.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => pending[i] = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    for p in pending {
        out.push(p.unwrap_or(SubmitOutcome::LinkDown));
    }
    out
}

#[cfg(test)]
mod tests;
