//! The dispatcher: claims due jobs with a lease, hands each message to its channel account's
//! connector under the account's rate limit and in-flight cap, and records what happened.
//!
//! Outcomes are written in batches by one writer task, so a burst of sends costs a few commits.
//! A job is only sent while its lease still has a safety margin left; a job that would have to
//! wait past that (rate limit, full in-flight window) is given back instead, so that no other
//! worker can claim it while this one might still be sending it.

use crate::Engine;
use crate::metrics::EventTally;
use crate::registry::AccountEntry;
use parley_channels::{OutboundRequest, SendResult};
use parley_domain::{Channel, ErrorInfo, Millis, backoff};
use parley_store::{ClaimedJob, DispatchOutcome, OutcomeKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// A send must start at least this long before its lease ends.
const LEASE_MARGIN_MS: i64 = 5_000;
const OUTCOME_BATCH: usize = 1024;

#[derive(Default)]
pub struct DispatchCounters {
    claimed: AtomicU64,
    sent: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    released: AtomicU64,
}

/// What this process's dispatcher has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    pub claimed: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub expired: u64,
    pub released: u64,
}

impl DispatchCounters {
    pub fn snapshot(&self) -> DispatchStats {
        DispatchStats {
            claimed: self.claimed.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
        }
    }

    fn count(&self, kind: &OutcomeKind) {
        let counter = match kind {
            OutcomeKind::Sent { .. } => &self.sent,
            OutcomeKind::Retry { .. } => &self.retried,
            OutcomeKind::Failed { .. } | OutcomeKind::Rejected { .. } => &self.failed,
            OutcomeKind::Expired { .. } => &self.expired,
            OutcomeKind::Release { .. } => &self.released,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn run(engine: Engine) {
    let config = engine.config().clone();
    let (outcome_tx, outcome_rx) = mpsc::unbounded_channel::<(Channel, DispatchOutcome)>();
    let writer = tokio::spawn(outcome_writer(engine.clone(), outcome_rx));
    let window = Arc::new(Semaphore::new(config.max_in_flight));
    let mut sends = JoinSet::new();
    let shutdown = engine.inner.shutdown.clone();

    while !shutdown.is_cancelled() {
        while sends.try_join_next().is_some() {}
        let capacity = window.available_permits().min(config.claim_batch as usize);
        if capacity == 0 {
            tokio::select! {
                _ = sends.join_next() => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let now = config.clock.now();
        let batch = match engine.store().claim_jobs(&config.worker_id, now, config.lease_ms, capacity as u32).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "claiming dispatch jobs failed; trying again in a second");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        let counters = &engine.inner.dispatch_stats;
        counters.expired.fetch_add(batch.expired.len() as u64, Ordering::Relaxed);
        counters.claimed.fetch_add(batch.jobs.len() as u64, Ordering::Relaxed);
        let claimed = batch.jobs.len();
        for job in batch.jobs {
            let Ok(permit) = window.clone().try_acquire_owned() else { break };
            let engine = engine.clone();
            let tx = outcome_tx.clone();
            sends.spawn(async move {
                let channel = job.message.channel;
                let outcome = send_one(&engine, job).await;
                engine.inner.dispatch_stats.count(&outcome.kind);
                let _ = tx.send((channel, outcome));
                drop(permit);
            });
        }
        if claimed < capacity {
            // Nothing more is due: sleep until new work is committed, the poll interval passes
            // (scheduled messages, retries, expired leases) or shutdown.
            tokio::select! {
                _ = engine.inner.work_ready.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(config.idle_poll_ms)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    // Shutdown: let in-flight sends finish within the grace period; whatever is left keeps its
    // lease and is given back by `Engine::shutdown` (release_leases).
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    if tokio::time::timeout(grace, async { while sends.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(left = sends.len(), "in-flight sends did not finish within the shutdown grace period");
        sends.abort_all();
    }
    drop(outcome_tx);
    let _ = writer.await;
}

/// One attempt of one claimed job, ending in the outcome to record.
async fn send_one(engine: &Engine, job: ClaimedJob) -> DispatchOutcome {
    let m = &job.message;
    let clock = &engine.config().clock;
    let outcome = |kind: OutcomeKind| DispatchOutcome {
        message_id: m.id,
        lease_owner: engine.config().worker_id.clone(),
        attempt: job.attempt,
        at: clock.now(),
        kind,
    };
    let entry = match engine.inner.registry.get(engine.store().as_ref(), m.channel_account_id).await {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return outcome(OutcomeKind::Failed {
                error: ErrorInfo {
                    code: "channel_account_unavailable".into(),
                    detail: format!("channel account {} does not exist or cannot be used", m.channel_account_id),
                    permanent: true,
                },
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot load channel accounts; giving the job back");
            return outcome(OutcomeKind::Release { due_at: Millis::now().plus_seconds(1) });
        }
    };
    match engine.consent_withdrawn(m, job.consent_changed_at).await {
        Ok(None) => {}
        Ok(Some(error)) => return outcome(OutcomeKind::Rejected { error }),
        Err(e) => {
            tracing::warn!(error = %e, message = %m.id, "cannot read the consent ledger; giving the job back");
            return outcome(OutcomeKind::Release { due_at: Millis::now().plus_seconds(1) });
        }
    }
    let send_by = job.lease_until.plus_millis(-LEASE_MARGIN_MS);
    let _permit = match wait_for_slot(engine, &entry, send_by).await {
        Ok(permit) => permit,
        Err(due_at) => return outcome(OutcomeKind::Release { due_at }),
    };
    let request = OutboundRequest {
        message_id: m.id,
        channel_account_id: m.channel_account_id,
        attempt: job.attempt,
        channel: m.channel,
        to: m.to.clone(),
        from: m.from.clone(),
        content: m.current_content().clone(),
        expires_at: m.expires_at,
    };
    // The provider must answer before the lease ends, or another worker could send again.
    let budget = (job.lease_until.0 - Millis::now().0 - 1_000).max(1_000) as u64;
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(Duration::from_millis(budget), entry.connector.send(&request)).await {
        Ok(result) => result,
        Err(_) => SendResult::Transient {
            error: ErrorInfo {
                code: "provider_timeout".into(),
                detail: format!("the provider did not answer within {budget} ms"),
                permanent: false,
            },
            retry_after_ms: None,
        },
    };
    let provider = entry.connector.provider();
    engine.inner.metrics.send_finished(m.channel, provider, started.elapsed());
    if let SendResult::Permanent { error } | SendResult::Transient { error, .. } = &result {
        engine.inner.metrics.provider_error(provider, &error.code);
    }
    let now = clock.now();
    outcome(match result {
        SendResult::Accepted { provider_message_id, part_ids } => OutcomeKind::Sent { provider_message_id, part_ids },
        SendResult::Permanent { error } => OutcomeKind::Failed { error },
        SendResult::Transient { error, retry_after_ms } => {
            let delay = backoff::retry_delay_ms(job.attempt.max(1) as u32, retry_after_ms, &mut rand::rng());
            let retry_at = now.plus_millis(delay);
            if retry_at >= m.expires_at {
                OutcomeKind::Expired {
                    error: ErrorInfo {
                        code: "validity_expired".into(),
                        detail: format!(
                            "the message's validity ends before the next attempt could be made (last error: {}: {})",
                            error.code, error.detail
                        ),
                        permanent: true,
                    },
                }
            } else {
                OutcomeKind::Retry { error, retry_at }
            }
        }
    })
}

/// Wait for the account's rate limit and in-flight window, but never past `send_by`: then the
/// job is given back, due when a slot is expected.
async fn wait_for_slot(
    engine: &Engine,
    entry: &AccountEntry,
    send_by: Millis,
) -> Result<tokio::sync::OwnedSemaphorePermit, Millis> {
    let shutdown = &engine.inner.shutdown;
    loop {
        if shutdown.is_cancelled() {
            return Err(Millis::now());
        }
        match entry.rate.try_acquire() {
            Ok(()) => break,
            Err(wait) => {
                let wake = Millis::now().plus_millis(wait.as_millis() as i64);
                if wake > send_by {
                    return Err(wake);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Err(Millis::now()),
                }
            }
        }
    }
    let left = (send_by.0 - Millis::now().0).max(0) as u64;
    tokio::select! {
        permit = tokio::time::timeout(Duration::from_millis(left), entry.in_flight.clone().acquire_owned()) => {
            match permit {
                Ok(Ok(permit)) => Ok(permit),
                _ => Err(Millis::now().plus_seconds(1)),
            }
        }
        _ = shutdown.cancelled() => Err(Millis::now()),
    }
}

/// Writes outcomes in batches: everything that arrived while the previous batch committed. Each
/// comes with its message's channel, for the event counters once it is committed.
async fn outcome_writer(engine: Engine, mut rx: mpsc::UnboundedReceiver<(Channel, DispatchOutcome)>) {
    let mut batch = Vec::with_capacity(OUTCOME_BATCH);
    while rx.recv_many(&mut batch, OUTCOME_BATCH).await > 0 {
        let mut delay = Duration::from_millis(100);
        loop {
            match engine.store().record_outcomes(batch.iter().map(|(_, o)| o.clone()).collect()).await {
                Ok(()) => {
                    let mut tally = EventTally::default();
                    for (channel, outcome) in &batch {
                        if let Some(kind) = outcome.kind.event() {
                            tally.add(*channel, kind);
                        }
                    }
                    engine.inner.metrics.record_events(&tally);
                    // A failed step of a route has its job due now, to move on.
                    if batch
                        .iter()
                        .any(|(_, o)| matches!(o.kind, OutcomeKind::Failed { .. } | OutcomeKind::Rejected { .. }))
                    {
                        engine.inner.work_ready.notify_one();
                    }
                    break;
                }
                Err(e) => {
                    // Until it is recorded the job stays leased; if this process dies now, the
                    // lease runs out and the message is tried again.
                    tracing::error!(error = %e, count = batch.len(), "recording dispatch outcomes failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}
