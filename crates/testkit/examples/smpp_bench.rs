//! Throughput of one SMPP bind against the fake SMSC: `submit_sm` per second through the
//! connector with a window of 50, and whether every receipt comes back to an id Parley was given.
//!
//! `cargo run --release -p parley-testkit --example smpp_bench -- [messages] [senders] [window] [ack_delay_ms]`
//! (defaults 20000 200 50 0; `ack_delay_ms` delays every `submit_sm_resp`, like a round trip).

use parley_channels::smpp::{SmppConfig, SmppConnector};
use parley_channels::{Connector, OutboundRequest, ProviderEvents, SendResult};
use parley_domain::{Channel, ChannelAccountId, Content, MessageId, Millis};
use parley_testkit::smsc::{FakeSmsc, SmscConfig};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let messages = args.first().copied().unwrap_or(20_000) as usize;
    let senders = args.get(1).copied().unwrap_or(200) as usize;
    let window = args.get(2).copied().unwrap_or(50);
    let ack_delay = Duration::from_millis(args.get(3).copied().unwrap_or(0));
    let smsc =
        FakeSmsc::start(SmscConfig { receipt_delay: Duration::from_millis(5), ack_delay, ..SmscConfig::default() })
            .await?;
    let mut config = smsc.account_config();
    config["window"] = window.into();
    let (events, mut receipts, _inbound) = ProviderEvents::channel();
    let connector = Arc::new(SmppConnector::start(
        ChannelAccountId::new(),
        SmppConfig::from_json(&config).map_err(|e| e.to_string())?,
        &smsc.credentials(),
        events,
    )?);
    if !connector.wait_bound(Duration::from_secs(5)).await {
        return Err("no bind".into());
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (c, next) = (connector.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut other = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < messages {
                let request = OutboundRequest {
                    message_id: MessageId::new(),
                    channel_account_id: ChannelAccountId::new(),
                    attempt: 1,
                    channel: Channel::Sms,
                    to: "+4915123456789".into(),
                    from: None,
                    content: Content::text("Your order #1234 has shipped and arrives Tuesday."),
                    expires_at: Millis(i64::MAX),
                };
                match c.send(&request).await {
                    SendResult::Accepted { provider_message_id, .. } => ids.push(provider_message_id),
                    _ => other += 1,
                }
            }
            (ids, other)
        }));
    }
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for t in tasks {
        let (ids, other) = t.await?;
        accepted.extend(ids);
        refused += other;
    }
    let submit_elapsed = started.elapsed();
    let mut matched = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while matched < accepted.len() {
        match tokio::time::timeout_at(deadline, receipts.recv()).await {
            Ok(Some(r)) if accepted.contains(&r.provider_message_id) => matched += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let all_elapsed = started.elapsed();
    println!(
        "messages {messages}, senders {senders}, window {window}, ack delay {ack_delay:?}: accepted {} (refused {refused}) in {:.2} s = {:.0} submit_sm/s; \
         SMSC took {}; receipts matched {matched}/{} after {:.2} s",
        accepted.len(),
        submit_elapsed.as_secs_f64(),
        accepted.len() as f64 / submit_elapsed.as_secs_f64(),
        smsc.submitted_count(),
        accepted.len(),
        all_elapsed.as_secs_f64()
    );
    connector.shutdown();
    Ok(())
}
