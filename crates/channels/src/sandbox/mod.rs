//! The sandbox: a fake carrier that behaves like a real one, deterministically. Every new
//! workspace gets a sandbox account for each channel; tests and benchmarks run against it.
//!
//! A send is answered after `latency_ms`. An accepted message gets a provider id `sbx_<24 hex>`
//! derived from the message id and the seed (the same id every time, across restarts), then a
//! `delivered` receipt after `receipt_latency_ms` and, on WhatsApp, RCS and web chat with
//! `read_receipts`, a `read` receipt one more `receipt_latency_ms` later. With `auto_reply`, an
//! inbound text from the recipient arrives one `receipt_latency_ms` after delivery.
//!
//! Like idempotent carriers (Google RBM keys on the message id the same way), the sandbox never
//! takes a message id twice: a second send of an accepted id answers `Accepted` with the same
//! provider id and is recorded as `duplicate` in the [`SubmissionLedger`], the evidence that
//! Parley hands each message over exactly once.
//!
//! Magic recipients. The phone numbers are in the North American 555-0100..555-0199 block, which
//! is reserved for fiction and which libphonenumber accepts as valid (the UK drama range
//! +44 7700 900xxx is not valid there). The rest of the block, e.g. `+12025550150`, behaves
//! normally: use it for recipients that must not be real people.
//!
//! | phone number   | web chat visitor        | behaviour                                                          |
//! |----------------|-------------------------|--------------------------------------------------------------------|
//! | `+12025550101` | `sandbox-fail`          | `Permanent`, code `sandbox:permanent_failure`                      |
//! | `+12025550102` | `sandbox-no-receipt`    | accepted, then never a receipt                                     |
//! | `+12025550103` | `sandbox-rate-limited`  | attempt 1: `Transient`, `sandbox:rate_limited`, retry after 2000 ms |
//! | `+12025550104` | `sandbox-undeliverable` | accepted, then `undelivered` with `sandbox:undeliverable`          |
//! | `+12025550105` | `sandbox-out-of-order`  | accepted, then `read` (if it applies), `delivered`, a late `sent`  |
//! | `+12025550111` | `sandbox-flaky-1`       | attempt 1: `Transient`, `sandbox:temporary_failure`; then accepted |
//! | `+12025550112` | `sandbox-flaky-2`       | attempts 1–2: `Transient`, `sandbox:temporary_failure`; then accepted |
//! | `+12025550113` | `sandbox-flaky-3`       | attempts 1–3: `Transient`, `sandbox:temporary_failure`; then accepted |
//! | anything else  | anything else           | accepted, `delivered`, `read` where read receipts apply            |
//!
//! Failures are decided by the request's `attempt` number, not by a counter in memory, so that a
//! restarted process sees the same behaviour. `docs/sandbox.md` at the repository root
//! has the same table and the details.

mod ledger;
mod timer;

pub use ledger::{Submission, SubmissionLedger, SubmissionOutcome};

use crate::{AwaitingReceipt, ConfigError, Connector, OutboundRequest, ProviderEvents, SendResult};
use ledger::Recorded;
use parley_domain::{
    Channel, ChannelAccountId, Content, ErrorInfo, InboundMessage, MessageId, MessageState, Millis, Receipt,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use timer::{Emission, Timer};
use tokio_util::sync::CancellationToken;

/// The provider name of the sandbox on channel accounts.
pub const PROVIDER: &str = "sandbox";

/// Recipients that make the sandbox misbehave on purpose (see the module docs).
pub mod magic {
    pub const PERMANENT_FAILURE: &str = "+12025550101";
    pub const NO_RECEIPT: &str = "+12025550102";
    pub const RATE_LIMITED: &str = "+12025550103";
    pub const UNDELIVERABLE: &str = "+12025550104";
    pub const OUT_OF_ORDER: &str = "+12025550105";
    /// Fails transiently on attempt 1, then succeeds.
    pub const FAILS_ONCE: &str = "+12025550111";
    /// Fails transiently on attempts 1 and 2, then succeeds.
    pub const FAILS_TWICE: &str = "+12025550112";
    /// Fails transiently on attempts 1 to 3, then succeeds.
    pub const FAILS_THRICE: &str = "+12025550113";

    pub const WEBCHAT_PERMANENT_FAILURE: &str = "sandbox-fail";
    pub const WEBCHAT_NO_RECEIPT: &str = "sandbox-no-receipt";
    pub const WEBCHAT_RATE_LIMITED: &str = "sandbox-rate-limited";
    pub const WEBCHAT_UNDELIVERABLE: &str = "sandbox-undeliverable";
    pub const WEBCHAT_OUT_OF_ORDER: &str = "sandbox-out-of-order";
    pub const WEBCHAT_FAILS_ONCE: &str = "sandbox-flaky-1";
    pub const WEBCHAT_FAILS_TWICE: &str = "sandbox-flaky-2";
    pub const WEBCHAT_FAILS_THRICE: &str = "sandbox-flaky-3";
}

/// How long a rate-limited recipient asks the sender to wait.
pub const RATE_LIMIT_RETRY_AFTER_MS: i64 = 2000;

/// A sandbox account's settings (the channel account's provider config). Every field has a
/// default, so `{}` is a complete config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Delay before a send is answered. At most 60000.
    pub latency_ms: u64,
    /// Delay of each receipt after the previous step (acceptance, delivery). At most 3600000.
    pub receipt_latency_ms: u64,
    /// Report `read` on channels that have read receipts (never on SMS).
    pub read_receipts: bool,
    /// If set, the recipient answers every delivered message with this text.
    pub auto_reply: Option<String>,
    /// Everything that looks random (provider ids) is derived from this seed.
    pub seed: u64,
    /// Make every recipient behave like one of the magic numbers: the account as a whole is
    /// down, or never confirms delivery (to try fallback routes in the sandbox).
    pub every_send: EverySend,
}

/// How every send of a sandbox account behaves, whatever its recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EverySend {
    /// As its recipient says (the magic numbers), else normally.
    #[default]
    ByRecipient,
    /// Refused permanently (`sandbox:permanent_failure`).
    PermanentFailure,
    /// Accepted, then never a receipt.
    NoReceipt,
    /// Accepted, then `undelivered` (`sandbox:undeliverable`).
    Undeliverable,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            latency_ms: 0,
            receipt_latency_ms: 50,
            read_receipts: true,
            auto_reply: None,
            seed: 0,
            every_send: EverySend::ByRecipient,
        }
    }
}

impl SandboxConfig {
    pub const MAX_LATENCY_MS: u64 = 60_000;
    pub const MAX_RECEIPT_LATENCY_MS: u64 = 3_600_000;

    /// Read and check a channel account's JSON config; errors name the field.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ConfigError> {
        let config: SandboxConfig = crate::parse_config(PROVIDER, json)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |field: &str, reason: String| ConfigError::InvalidField { provider: PROVIDER, field: field.into(), reason };
        if self.latency_ms > Self::MAX_LATENCY_MS {
            return Err(bad(
                "latency_ms",
                format!("{} is more than the maximum of {}", self.latency_ms, Self::MAX_LATENCY_MS),
            ));
        }
        if self.receipt_latency_ms > Self::MAX_RECEIPT_LATENCY_MS {
            return Err(bad(
                "receipt_latency_ms",
                format!("{} is more than the maximum of {}", self.receipt_latency_ms, Self::MAX_RECEIPT_LATENCY_MS),
            ));
        }
        if let Some(text) = &self.auto_reply
            && Content::text(text.clone()).validate().is_err()
        {
            return Err(bad("auto_reply", "must be 1 to 4096 characters and not blank".into()));
        }
        Ok(())
    }
}

/// What a recipient makes the sandbox do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Normal,
    PermanentFailure,
    /// Transient failure while `attempt <= n`.
    Flaky(i32),
    NoReceipt,
    RateLimited,
    Undeliverable,
    OutOfOrder,
}

impl Behaviour {
    /// What a send to `to` does on an account whose sends all behave as `every` says.
    fn for_send(every: EverySend, to: &str) -> Behaviour {
        match every {
            EverySend::ByRecipient => Behaviour::for_recipient(to),
            EverySend::PermanentFailure => Behaviour::PermanentFailure,
            EverySend::NoReceipt => Behaviour::NoReceipt,
            EverySend::Undeliverable => Behaviour::Undeliverable,
        }
    }

    fn for_recipient(to: &str) -> Behaviour {
        use magic::*;
        match to {
            PERMANENT_FAILURE | WEBCHAT_PERMANENT_FAILURE => Behaviour::PermanentFailure,
            NO_RECEIPT | WEBCHAT_NO_RECEIPT => Behaviour::NoReceipt,
            RATE_LIMITED | WEBCHAT_RATE_LIMITED => Behaviour::RateLimited,
            UNDELIVERABLE | WEBCHAT_UNDELIVERABLE => Behaviour::Undeliverable,
            OUT_OF_ORDER | WEBCHAT_OUT_OF_ORDER => Behaviour::OutOfOrder,
            FAILS_ONCE | WEBCHAT_FAILS_ONCE => Behaviour::Flaky(1),
            FAILS_TWICE | WEBCHAT_FAILS_TWICE => Behaviour::Flaky(2),
            FAILS_THRICE | WEBCHAT_FAILS_THRICE => Behaviour::Flaky(3),
            _ => Behaviour::Normal,
        }
    }

    /// The refusal for this attempt, if any (`None`: accept).
    fn refusal(self, request: &OutboundRequest) -> Option<SendResult> {
        let error = |code: &str, detail: String, permanent: bool| ErrorInfo { code: code.into(), detail, permanent };
        match self {
            Behaviour::PermanentFailure => Some(SendResult::Permanent {
                error: error(
                    "sandbox:permanent_failure",
                    format!("the sandbox always refuses messages to {}", request.to),
                    true,
                ),
            }),
            Behaviour::Flaky(n) if request.attempt <= n => Some(SendResult::Transient {
                error: error(
                    "sandbox:temporary_failure",
                    format!("temporary failure on attempt {} ({} refuses the first {n})", request.attempt, request.to),
                    false,
                ),
                retry_after_ms: None,
            }),
            Behaviour::RateLimited if request.attempt <= 1 => Some(SendResult::Transient {
                error: error(
                    "sandbox:rate_limited",
                    format!("rate limited: try again in {RATE_LIMIT_RETRY_AFTER_MS} ms"),
                    false,
                ),
                retry_after_ms: Some(RATE_LIMIT_RETRY_AFTER_MS),
            }),
            _ => None,
        }
    }
}

/// The sandbox connector for one channel account.
pub struct SandboxConnector {
    account_id: ChannelAccountId,
    channel: Channel,
    config: SandboxConfig,
    events: ProviderEvents,
    ledger: Arc<SubmissionLedger>,
    /// Started on first use, so that `new` needs no Tokio runtime.
    timer: OnceLock<Timer>,
    cancel: CancellationToken,
}

impl SandboxConnector {
    pub fn new(
        account_id: ChannelAccountId,
        channel: Channel,
        config: SandboxConfig,
        events: ProviderEvents,
        ledger: Arc<SubmissionLedger>,
    ) -> Self {
        SandboxConnector {
            account_id,
            channel,
            config,
            events,
            ledger,
            timer: OnceLock::new(),
            cancel: CancellationToken::new(),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    pub fn ledger(&self) -> &Arc<SubmissionLedger> {
        &self.ledger
    }

    /// The provider id this sandbox gives `message_id`: `sbx_` and 24 hex digits of
    /// sha256(message id, seed), so it is the same on every send and after a restart. Another
    /// sandbox account (a route's next step) gives the same message another id, as another
    /// carrier would.
    pub fn provider_message_id(&self, message_id: &MessageId) -> String {
        let account = format!("{}:", self.account_id);
        format!("sbx_{}", self.derive(account.as_bytes(), message_id))
    }

    /// The provider id of the auto-reply to `message_id`.
    pub fn inbound_message_id(&self, message_id: &MessageId) -> String {
        format!("sbx_in_{}", self.derive(b"in:", message_id))
    }

    fn derive(&self, tag: &[u8], message_id: &MessageId) -> String {
        let mut hash = Sha256::new();
        hash.update(tag);
        hash.update(message_id.to_string().as_bytes());
        hash.update(self.config.seed.to_le_bytes());
        let digest = hash.finalize();
        hex::encode(&digest[..12])
    }

    fn reads_apply(&self, channel: Channel) -> bool {
        self.config.read_receipts && channel.has_read_receipts()
    }

    /// What the carrier reports after accepting, as (steps of `receipt_latency_ms`, emission),
    /// in the order they must arrive.
    fn plan(&self, behaviour: Behaviour, request: &OutboundRequest, provider_message_id: &str) -> Vec<(u64, Emission)> {
        let latency = i64::try_from(self.config.receipt_latency_ms).unwrap_or(i64::MAX);
        let accepted_at = Millis::now();
        let at = |step: u64| accepted_at.plus_millis(latency.saturating_mul(step as i64));
        let receipt = |state: MessageState, occurred_at: Millis, error: Option<ErrorInfo>| {
            Emission::Receipt(Receipt {
                channel_account_id: self.account_id,
                provider_message_id: provider_message_id.to_string(),
                state,
                occurred_at,
                error,
                details: None,
            })
        };
        let reads = self.reads_apply(request.channel);
        let mut plan = Vec::with_capacity(4);
        let delivered_step = match behaviour {
            Behaviour::NoReceipt | Behaviour::PermanentFailure => return plan,
            Behaviour::Undeliverable => {
                let error = ErrorInfo {
                    code: "sandbox:undeliverable".into(),
                    detail: format!("the sandbox could not deliver to {}", request.to),
                    permanent: true,
                };
                plan.push((1, receipt(MessageState::Undelivered, at(1), Some(error))));
                return plan;
            }
            Behaviour::OutOfOrder => {
                let mut step = 1;
                if reads {
                    plan.push((step, receipt(MessageState::Read, at(step), None)));
                    step += 1;
                }
                plan.push((step, receipt(MessageState::Delivered, at(step), None)));
                // Late, and saying it happened at acceptance, as a lagging carrier would.
                plan.push((step + 1, receipt(MessageState::Sent, accepted_at, None)));
                step
            }
            Behaviour::Normal | Behaviour::Flaky(_) | Behaviour::RateLimited => {
                plan.push((1, receipt(MessageState::Delivered, at(1), None)));
                if reads {
                    plan.push((2, receipt(MessageState::Read, at(2), None)));
                }
                1
            }
        };
        if let Some(text) = &self.config.auto_reply {
            let step = delivered_step + 1;
            plan.push((
                step,
                Emission::Inbound(InboundMessage {
                    channel_account_id: self.account_id,
                    provider_message_id: self.inbound_message_id(&request.message_id),
                    from: request.to.clone(),
                    to: None,
                    content: Content::text(text.clone()),
                    received_at: at(step),
                    contact_id: None,
                }),
            ));
        }
        plan
    }

    fn schedule(&self, plan: Vec<(u64, Emission)>) {
        if self.config.receipt_latency_ms == 0 {
            for (_, emission) in plan {
                emission.emit(&self.events);
            }
            return;
        }
        let timer = self.timer.get_or_init(|| Timer::start(self.events.clone(), self.cancel.clone()));
        let start = tokio::time::Instant::now();
        let step = Duration::from_millis(self.config.receipt_latency_ms);
        for (n, emission) in plan {
            let delay = step.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
            timer.schedule(start + delay, emission);
        }
    }
}

#[async_trait::async_trait]
impl Connector for SandboxConnector {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    async fn send(&self, request: &OutboundRequest) -> SendResult {
        if self.config.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.latency_ms)).await;
        }
        if request.channel != self.channel {
            tracing::debug!(account = %self.account_id, expected = self.channel.as_str(), got = request.channel.as_str(),
                "sandbox send for another channel than the account's");
        }
        let behaviour = Behaviour::for_send(self.config.every_send, &request.to);
        let refusal = behaviour.refusal(request);
        let proposed = match &refusal {
            None => SubmissionOutcome::Accepted,
            Some(SendResult::Permanent { .. }) => SubmissionOutcome::Permanent,
            Some(_) => SubmissionOutcome::Transient,
        };
        let provider_message_id = self.provider_message_id(&request.message_id);
        match self.ledger.submit(request.message_id, self.account_id, request.attempt, proposed) {
            Err(e) => {
                tracing::warn!(error = %e, message_id = %request.message_id, "sandbox ledger write failed; refusing the send");
                SendResult::Transient {
                    error: ErrorInfo {
                        code: "sandbox:ledger_unavailable".into(),
                        detail: "the sandbox could not record the submission".into(),
                        permanent: false,
                    },
                    retry_after_ms: None,
                }
            }
            Ok(Recorded::Duplicate { reschedule }) => {
                if reschedule {
                    self.schedule(self.plan(behaviour, request, &provider_message_id));
                }
                SendResult::accepted(provider_message_id)
            }
            Ok(Recorded::As(SubmissionOutcome::Accepted)) => {
                self.schedule(self.plan(behaviour, request, &provider_message_id));
                SendResult::accepted(provider_message_id)
            }
            // Transient or permanent: `refusal` is what was recorded.
            Ok(Recorded::As(_)) => refusal.unwrap_or(SendResult::accepted(provider_message_id)),
        }
    }

    fn resume(&self, awaiting: Vec<AwaitingReceipt>) {
        for a in awaiting {
            // Only what this carrier really took, under the id it gave.
            if !self.ledger.is_accepted(&a.message_id, self.account_id)
                || a.provider_message_id != self.provider_message_id(&a.message_id)
            {
                continue;
            }
            let request = OutboundRequest {
                message_id: a.message_id,
                channel_account_id: self.account_id,
                attempt: 0,
                channel: a.channel,
                to: a.to.clone(),
                from: None,
                content: Content::text(String::new()),
                expires_at: Millis::now(),
            };
            self.schedule(self.plan(
                Behaviour::for_send(self.config.every_send, &a.to),
                &request,
                &a.provider_message_id,
            ));
        }
    }

    fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for SandboxConnector {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests;
