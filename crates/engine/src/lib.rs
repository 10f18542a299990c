//! Parley's use cases and background workers.
//!
//! The [`Engine`] accepts outbound messages (durably, before anyone is told "accepted"), runs the
//! dispatcher that hands due messages to connectors under each channel account's rate limit and
//! in-flight cap, and records what providers say afterwards (receipts, inbound messages). It
//! depends on the domain, the store and the connectors, and never on HTTP types: the server
//! translates requests into calls here.

mod accept;
pub mod accounts;
pub mod analytics;
mod cache;
mod clock;
pub mod contacts;
pub mod conversations;
mod dispatch;
mod ingest;
mod metrics;
pub mod policy;
mod rate;
mod registry;
mod routing;
mod stream;
mod tenancy;
pub mod webhooks;

pub use accept::{
    AcceptOutcome, DEFAULT_VALIDITY_SECONDS, IdempotencyInput, MAX_VALIDITY_SECONDS, MIN_VALIDITY_SECONDS,
    RouteStepSpec, SendSpec,
};
pub use clock::Clock;
pub use dispatch::DispatchStats;
pub use metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};
pub use stream::{StreamEvent, StreamFilter, StreamSettings, StreamStart, Subscription};
pub use tenancy::{NewApiKey, hash_api_key};
pub use webhooks::WebhookSettings;

use parley_channels::SubmissionLedger;
use parley_store::{Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no channel account for {0} in this workspace")]
    NoChannelAccount(&'static str),
    #[error("channel account {0} not found in this workspace")]
    ChannelAccountNotFound(String),
    #[error("channel account {account} is for {actual}, not {requested}")]
    ChannelAccountMismatch { account: String, actual: &'static str, requested: &'static str },
    /// A reaction names a Parley message that does not exist here or has no provider id yet.
    #[error("message {0} to react to is not in this workspace or has not reached its provider yet")]
    ReactionTargetNotFound(String),
    /// A webhook endpoint's URL or event types are refused.
    #[error(transparent)]
    Webhook(#[from] webhooks::WebhookError),
    /// A contact request is refused.
    #[error(transparent)]
    Contact(#[from] contacts::ContactError),
    /// A conversation request is refused.
    #[error(transparent)]
    Conversation(conversations::ConversationError),
    /// A send is refused by the workspace's messaging policy (consent, quiet hours, caps, …).
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// How the engine's workers behave.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Names this process's leases; unique per process.
    pub worker_id: String,
    /// Run the dispatcher and the receipt writers in this process.
    pub run_workers: bool,
    /// Jobs claimed per claim.
    pub claim_batch: u32,
    /// How long a claim holds a job before another worker may take it.
    pub lease_ms: i64,
    /// Claimed jobs not yet finished, at most, across all channel accounts.
    pub max_in_flight: usize,
    /// How often an idle dispatcher looks for due jobs (scheduled messages, retries, expired
    /// leases); new sends of this process wake it at once.
    pub idle_poll_ms: u64,
    /// At shutdown, how long in-flight sends may take before their jobs are given back.
    pub shutdown_grace_ms: u64,
    /// Where the sandbox records every submission it receives (None: memory only).
    pub sandbox_ledger: Option<PathBuf>,
    /// The live event stream's pace and bounds.
    pub stream: StreamSettings,
    /// How webhooks are delivered (and which addresses endpoints may reach).
    pub webhooks: WebhookSettings,
    /// Seals channel account credentials at rest. Without one, accounts with credentials can
    /// be neither created nor used.
    pub sealing_key: Option<parley_store::seal::SealingKey>,
    /// The server's base URL as providers reach it (`https://parley.example.com`): the start of
    /// every callback URL given to a provider, and of the URL a signature is checked against.
    pub public_url: String,
    /// A conversation without a message for this long closes; the next message opens a new one.
    pub conversation_idle_seconds: i64,
    /// The time the dispatcher lives by: when jobs are due, when a route step's timeout runs out.
    /// Tests move it forward to let a fallback timeout pass in a moment.
    pub clock: Clock,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            worker_id: format!("w-{}", uuid_like()),
            run_workers: true,
            claim_batch: 512,
            lease_ms: 30_000,
            max_in_flight: 4096,
            idle_poll_ms: 100,
            shutdown_grace_ms: 10_000,
            sandbox_ledger: None,
            stream: StreamSettings::default(),
            webhooks: WebhookSettings::default(),
            sealing_key: None,
            public_url: "http://127.0.0.1:8080".into(),
            conversation_idle_seconds: parley_domain::conversation::DEFAULT_IDLE_SECONDS,
            clock: Clock::default(),
        }
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    let bytes: [u8; 8] = rand::rng().random();
    hex::encode(bytes)
}

/// The running core of Parley. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: EngineConfig,
    registry: registry::Registry,
    /// Wakes the dispatcher when new work was committed by this process.
    work_ready: tokio::sync::Notify,
    /// Stops the dispatcher.
    shutdown: CancellationToken,
    /// Stops the receipt and inbound writers, after the dispatcher has ended.
    writers_stop: CancellationToken,
    writer_tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    dispatch_stats: dispatch::DispatchCounters,
    auth_cache: tenancy::AuthCache,
    /// The workspaces' messaging policies, read again every few seconds.
    policy_cache: policy::PolicyCache,
    /// The live event stream's hubs.
    streams: stream::Streams,
    /// Counters and histograms of this engine (and its server), for `/metrics`.
    metrics: metrics::Metrics,
}

impl Engine {
    /// Build the engine over `store`. Call [`Engine::start`] to run its workers.
    pub async fn new(store: Arc<dyn Store>, config: EngineConfig) -> Result<Engine> {
        let ledger = Arc::new(
            SubmissionLedger::open(config.sandbox_ledger.clone())
                .map_err(|e| StoreError::Database(format!("cannot open the sandbox ledger: {e}")))?,
        );
        let (events, receipts_rx, inbound_rx) = parley_channels::ProviderEvents::channel();
        let registry = registry::Registry::new(ledger, events, config.sealing_key.clone(), config.public_url.clone());
        let streams = stream::Streams::new(config.stream.clone());
        store.set_conversation_idle_ms(config.conversation_idle_seconds.saturating_mul(1000));
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                config,
                registry,
                work_ready: tokio::sync::Notify::new(),
                shutdown: CancellationToken::new(),
                writers_stop: CancellationToken::new(),
                writer_tasks: tokio::sync::Mutex::new(Vec::new()),
                tasks: tokio::sync::Mutex::new(Vec::new()),
                dispatch_stats: Default::default(),
                auth_cache: Default::default(),
                policy_cache: Default::default(),
                streams,
                metrics: Default::default(),
            }),
        };
        engine.inner.registry.reload(engine.store().as_ref()).await?;
        let mut tasks = engine.inner.writer_tasks.lock().await;
        tasks.push(tokio::spawn(ingest::receipt_writer(engine.clone(), receipts_rx)));
        tasks.push(tokio::spawn(ingest::inbound_writer(engine.clone(), inbound_rx)));
        drop(tasks);
        Ok(engine)
    }

    /// Start the dispatcher (if this process runs workers).
    pub async fn start(&self) {
        if self.inner.config.run_workers {
            let mut tasks = self.inner.tasks.lock().await;
            tasks.push(tokio::spawn(dispatch::run(self.clone())));
            tasks.push(tokio::spawn(maintenance(self.clone())));
            tasks.push(tokio::spawn(refresh_accounts(self.clone())));
            tasks.push(tokio::spawn(resume_receipts(self.clone())));
            tasks.push(tokio::spawn(webhooks::deliver::run(self.clone())));
            tasks.push(tokio::spawn(conversations::close_idle(self.clone())));
        }
    }

    /// Stop claiming work, let in-flight sends finish (or give their jobs back), flush what was
    /// learned, and return when everything is stored.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.streams.close();
        self.inner.work_ready.notify_waiters();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().await);
        // The dispatcher first: it hands its last outcomes to the store before returning.
        for task in tasks {
            let _ = task.await;
        }
        self.inner.registry.shutdown();
        self.inner.writers_stop.cancel();
        let writers = std::mem::take(&mut *self.inner.writer_tasks.lock().await);
        for task in writers {
            let _ = task.await;
        }
        if let Err(e) = self.inner.store.release_leases(&self.inner.config.worker_id).await {
            tracing::warn!(error = %e, "could not release leases at shutdown");
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Every submission the sandbox connectors of this process received.
    pub fn sandbox_ledger(&self) -> &Arc<SubmissionLedger> {
        self.inner.registry.ledger()
    }

    /// Cancelled when the engine begins to shut down.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    pub fn dispatch_stats(&self) -> DispatchStats {
        self.inner.dispatch_stats.snapshot()
    }
}

/// How long a receipt that matches no message is kept: its message's `sent` outcome commits
/// within moments of the provider's answer, so one that has not come in a week never will.
const PENDING_RECEIPT_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// Periodic clean-up: idempotency keys are kept for 24 hours, receipts that match no message for
/// a week, webhook attempts for the configured retention (30 days by default), then deleted.
/// How long the parts of a multi-part message are kept for their receipts.
const MESSAGE_PARTS_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// Channel accounts changed through another process reach this one within this time.
const ACCOUNT_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

async fn refresh_accounts(engine: Engine) {
    let shutdown = engine.inner.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ACCOUNT_REFRESH) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = engine.inner.registry.reload(engine.store().as_ref()).await {
            tracing::warn!(error = %e, "could not reload channel accounts");
        }
    }
}

async fn maintenance(engine: Engine) {
    let shutdown = engine.inner.shutdown.clone();
    loop {
        purge_webhook_attempts(&engine, &shutdown).await;
        let cutoff = parley_domain::Millis::now().plus_millis(-PENDING_RECEIPT_TTL_MS);
        match engine.store().purge_pending_receipts(cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                engine.inner.metrics.unmatched_receipts_dropped(n);
                tracing::info!(purged = n, "receipts that matched no message for a week deleted");
            }
            Err(e) => tracing::warn!(error = %e, "could not delete old unmatched receipts"),
        }
        let cutoff = parley_domain::Millis::now().plus_millis(-MESSAGE_PARTS_TTL_MS);
        match engine.store().purge_message_parts(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "part records of month-old messages deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete old message parts"),
        }
        let cutoff = parley_domain::Millis::now().plus_millis(-parley_store::IDEMPOTENCY_TTL_MS);
        match engine.store().purge_idempotency(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete expired idempotency keys"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Delete the webhook attempts older than the retention, a slice at a time.
async fn purge_webhook_attempts(engine: &Engine, shutdown: &CancellationToken) {
    const SLICE: u32 = 10_000;
    let settings = &engine.config().webhooks;
    let retention = clock::duration_ms(settings.attempt_retention);
    let before = parley_domain::WebhookAttemptId::floor_at(settings.clock.now().0.saturating_sub(retention));
    let mut purged = 0;
    while !shutdown.is_cancelled() {
        match engine.store().purge_webhook_attempts(before, SLICE).await {
            Ok(n) => {
                purged += n;
                if n < u64::from(SLICE) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not delete old webhook attempts");
                break;
            }
        }
    }
    if purged > 0 {
        tracing::debug!(purged, "old webhook attempts deleted");
    }
}

/// At start-up, hand every message still waiting for a receipt to its connector (see
/// `Connector::resume`), so that receipts owed when the previous process stopped still come.
async fn resume_receipts(engine: Engine) {
    const PAGE: u32 = 1000;
    let mut after = None;
    let mut resumed = 0usize;
    loop {
        let page = match engine.store().awaiting_receipts(after, PAGE).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the messages waiting for receipts");
                return;
            }
        };
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let mut by_account: std::collections::HashMap<_, Vec<parley_channels::AwaitingReceipt>> = Default::default();
        for m in &page {
            if let Some(provider_message_id) = &m.provider_message_id {
                by_account.entry(m.channel_account_id).or_default().push(parley_channels::AwaitingReceipt {
                    message_id: m.id,
                    provider_message_id: provider_message_id.clone(),
                    channel: m.channel,
                    to: m.to.clone(),
                });
            }
        }
        for (account, awaiting) in by_account {
            if let Ok(Some(entry)) = engine.inner.registry.get(engine.store().as_ref(), account).await {
                resumed += awaiting.len();
                entry.connector.resume(awaiting);
            }
        }
        if page.len() < PAGE as usize || engine.inner.shutdown.is_cancelled() {
            break;
        }
    }
    if resumed > 0 {
        tracing::info!(messages = resumed, "handed messages waiting for receipts back to their connectors");
    }
}
