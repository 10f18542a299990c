//! What one message costs the SQLite writer thread, end to end.
//!
//! Drives messages through the whole store lifecycle the way the engine does (accept one message
//! per request, claim in batches, record the `sent` outcomes and the `delivered` receipts in
//! batches), in rounds of a fixed size so that every run commits the same batches. It reports the
//! CPU time the writer thread used per message, read from `/proc`, which is steadier on a shared
//! machine than a throughput figure. Put the database on tmpfs to leave the disk out:
//!
//! ```sh
//! cargo run --release -p parley-store --example lifecycle_cost -- /dev/shm/cost.db 50000 64
//! ```

use parley_domain::{
    Channel, ChannelAccountId, Content, Direction, EventId, EventKind, Message, MessageEvent, MessageId, MessageState,
    Millis, Receipt, WorkspaceId,
};
use parley_store::sqlite::SqliteStore;
use parley_store::{ChannelAccount, CreateMessages, DispatchOutcome, NewOutbound, OutcomeKind, Store, Workspace};
use std::collections::BTreeMap;
use std::sync::Arc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "/dev/shm/parley-lifecycle-cost.db".into());
    let total: usize = args.next().map(|s| s.parse().expect("a message count")).unwrap_or(50_000);
    let round: usize = args.next().map(|s| s.parse().expect("a round size")).unwrap_or(64);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let store = Arc::new(SqliteStore::open(&path).await.expect("open the store"));
    let now = Millis::now();
    let ws = Workspace { id: WorkspaceId::new(), name: "cost".into(), created_at: now };
    store.create_workspace(&ws).await.unwrap();
    let account = ChannelAccount {
        id: ChannelAccountId::new(),
        workspace_id: ws.id,
        channel: Channel::Sms,
        provider: "sandbox".into(),
        name: "sms".into(),
        config: serde_json::json!({}),
        rate_limit_per_second: 100_000,
        max_in_flight: 10_000,
        is_default: true,
        created_at: now,
        updated_at: now,
        credentials: None,
        credentials_hint: None,
        deleted_at: None,
    };
    store.create_channel_account(&account).await.unwrap();

    let writer_before = writer_cpu_ms();
    let started = std::time::Instant::now();
    let mut done = 0;
    while done < total {
        let now = Millis::now();
        let accepts = (0..round).map(|i| {
            let store = store.clone();
            let message = outbound(ws.id, account.id, now, done + i);
            tokio::spawn(async move {
                let request = CreateMessages {
                    workspace_id: message.message.workspace_id,
                    messages: vec![message],
                    idempotency: None,
                    now,
                };
                store.create_messages(request).await.expect("accept")
            })
        });
        for accept in accepts.collect::<Vec<_>>() {
            accept.await.unwrap();
        }
        let claimed = store.claim_jobs("cost", Millis::now(), 30_000, round as u32).await.expect("claim");
        let at = Millis::now();
        let outcomes = claimed
            .jobs
            .iter()
            .map(|job| DispatchOutcome {
                message_id: job.message.id,
                lease_owner: "cost".into(),
                attempt: job.attempt,
                at,
                kind: OutcomeKind::Sent { provider_message_id: provider_id(job.message.id), part_ids: Vec::new() },
            })
            .collect();
        store.record_outcomes(outcomes).await.expect("outcomes");
        let receipts = claimed
            .jobs
            .iter()
            .map(|job| Receipt {
                channel_account_id: account.id,
                provider_message_id: provider_id(job.message.id),
                state: MessageState::Delivered,
                occurred_at: at,
                error: None,
                details: None,
            })
            .collect();
        store.record_receipts(receipts).await.expect("receipts");
        done += claimed.jobs.len();
    }
    let elapsed = started.elapsed();
    let writer_ms = writer_cpu_ms() - writer_before;
    let stats = store.message_stats(ws.id).await.unwrap();
    println!(
        "{done} messages in rounds of {round}: writer thread {:.1} µs CPU per message, {:.0} messages/s wall; {:?}",
        writer_ms as f64 * 1000.0 / done as f64,
        done as f64 / elapsed.as_secs_f64(),
        stats.by_state
    );
}

/// A random-looking provider id, as carriers hand out.
fn provider_id(id: MessageId) -> String {
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&id, &mut h);
    format!("prv_{:016x}", std::hash::Hasher::finish(&h))
}

fn outbound(ws: WorkspaceId, account: ChannelAccountId, now: Millis, n: usize) -> NewOutbound {
    let id = MessageId::new();
    let event = |sequence, kind| MessageEvent {
        id: EventId::new(),
        message_id: id,
        sequence,
        kind,
        occurred_at: now,
        recorded_at: now,
        applied: true,
        attempt: None,
        provider_message_id: None,
        error: None,
        retry_at: None,
        details: None,
    };
    NewOutbound {
        message: Message {
            id,
            workspace_id: ws,
            direction: Direction::Outbound,
            channel: Channel::Sms,
            channel_account_id: account,
            to: format!("+4915123{:06}", n % 1_000_000),
            from: None,
            status: MessageState::Queued,
            content: Content::text("Your parcel arrives today between 10:00 and 12:00."),
            send_at: None,
            expires_at: now.plus_seconds(3600),
            validity_seconds: 3600,
            metadata: BTreeMap::new(),
            client_reference: None,
            contact_id: None,
            conversation_id: None,
            purpose: None,
            provider_message_id: None,
            attempts: 0,
            error: None,
            sequence: 2,
            created_at: now,
            updated_at: now,
            route: None,
            events: None,
        },
        events: vec![event(1, EventKind::Accepted), event(2, EventKind::Queued)],
        due_at: now,
    }
}

/// CPU time (user + system) of the `parley-sqlite-writer` thread so far, in milliseconds.
fn writer_cpu_ms() -> u64 {
    let tick_ms = 10; // USER_HZ is 100 on Linux
    for task in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task").flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((name, rest)) = stat.split_once(") ") else { continue };
        if !name.ends_with("parley-sqlite-w") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (utime, stime): (u64, u64) = (fields[11].parse().unwrap_or(0), fields[12].parse().unwrap_or(0));
        return (utime + stime) * tick_ms;
    }
    panic!("no parley-sqlite-writer thread")
}
