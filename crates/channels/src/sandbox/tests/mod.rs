//! Tests of the sandbox's behaviour as the engine sees it; helpers here, cases by theme.

mod delivery;
mod idempotency;
mod magic_recipients;

use super::*;
use parley_domain::E164;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

struct Rig {
    sandbox: Arc<SandboxConnector>,
    receipts: UnboundedReceiver<Receipt>,
    inbound: UnboundedReceiver<InboundMessage>,
    ledger: Arc<SubmissionLedger>,
}

/// The sandbox account of these tests: the same across "restarts" (a new rig on the same ledger).
fn account() -> ChannelAccountId {
    static ACCOUNT: std::sync::LazyLock<ChannelAccountId> = std::sync::LazyLock::new(ChannelAccountId::new);
    *ACCOUNT
}

fn rig(channel: Channel, config: SandboxConfig) -> Rig {
    rig_with(channel, config, Arc::new(SubmissionLedger::in_memory()))
}

fn rig_with(channel: Channel, config: SandboxConfig, ledger: Arc<SubmissionLedger>) -> Rig {
    let (events, receipts, inbound) = ProviderEvents::channel();
    let sandbox = Arc::new(SandboxConnector::new(account(), channel, config, events, ledger.clone()));
    Rig { sandbox, receipts, inbound, ledger }
}

fn request(channel: Channel, to: &str, attempt: i32, message_id: MessageId) -> OutboundRequest {
    OutboundRequest {
        message_id,
        channel_account_id: account(),
        attempt,
        channel,
        to: to.into(),
        from: None,
        content: Content::text("hello"),
        expires_at: Millis::now().plus_seconds(3600),
    }
}

fn provider_id(result: &SendResult) -> String {
    match result {
        SendResult::Accepted { provider_message_id, .. } => provider_message_id.clone(),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// The next receipt and when it came, relative to `start`; `None` if none comes within an hour.
async fn next_receipt(rx: &mut UnboundedReceiver<Receipt>, start: Instant) -> Option<(Receipt, Duration)> {
    let r = tokio::time::timeout(Duration::from_secs(3600), rx.recv()).await.ok().flatten()?;
    Some((r, start.elapsed()))
}

/// In the fictional block too, but with no magic attached.
const NORMAL: &str = "+12025550150";

const L: Duration = Duration::from_millis(50);
