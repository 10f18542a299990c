//! The embedded default: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so every write goes to a single writer thread that owns the
//! write connection and applies the writes of all concurrent callers in one transaction (group
//! commit): a caller's `Ok` comes after the `COMMIT` that contains its write, and one `fsync`
//! pays for the whole batch. Each caller's work runs inside its own `SAVEPOINT`, so one failing
//! write does not undo its neighbours. Reads run on a small pool of read-only connections.
//! Claiming dispatch jobs is a write too, which makes this the "single-writer path" that stands
//! in for PostgreSQL's `SKIP LOCKED`.

mod consent;
mod contacts;
mod conversations;
mod reads;
mod rows;
mod webhooks;
mod writes;

use crate::{
    ApiKey, CancelOutcome, ChannelAccount, ClaimBatch, CreateMessages, CreateOutcome, DispatchOutcome, FeedEvent,
    MessageFilter, MessageStats, Result, Store, StoreError, WebhookAttempt, WebhookBacklog, WebhookDelivery,
    WebhookEndpoint, WebhookProgress, Workspace, WorkspaceEvent,
};
use async_trait::async_trait;
use parley_domain::{
    ApiKeyId, ChannelAccountId, EventId, InboundMessage, Message, MessageId, Millis, Receipt, WebhookAttemptId,
    WebhookEndpointId, WorkspaceId,
};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_messages_by_status.sql")),
    (3, include_str!("../../migrations/sqlite/0003_awaiting_receipt_index.sql")),
    (4, include_str!("../../migrations/sqlite/0004_webhooks.sql")),
    (5, include_str!("../../migrations/sqlite/0005_analytics_index.sql")),
    (6, include_str!("../../migrations/sqlite/0006_channel_account_credentials.sql")),
    (7, include_str!("../../migrations/sqlite/0007_message_parts.sql")),
    (8, include_str!("../../migrations/sqlite/0008_message_contacts.sql")),
    (9, include_str!("../../migrations/sqlite/0009_contacts.sql")),
    (10, include_str!("../../migrations/sqlite/0010_consent.sql")),
    (11, include_str!("../../migrations/sqlite/0011_conversations.sql")),
    (12, include_str!("../../migrations/sqlite/0012_routes.sql")),
];

/// Writes applied in one transaction, at most.
const MAX_BATCH: usize = 1024;
const READERS: usize = 4;

/// A write waiting for the writer thread. It may run twice: once in the optimistic pass, and again
/// in its own savepoint if another write of the same batch failed (see [`writer_loop`]).
trait PendingWrite: Send {
    /// Apply the write to the open transaction, keeping its result; `false` if it failed.
    fn apply(&mut self, conn: &Connection) -> bool;
    /// Hand the result to the caller once the batch's transaction has ended.
    fn finish(self: Box<Self>, commit: &Result<()>);
}

struct Pending<T, F> {
    work: F,
    outcome: Option<Result<T>>,
    done: tokio::sync::oneshot::Sender<Result<T>>,
}

impl<T: Send, F: FnMut(&Connection) -> Result<T> + Send> PendingWrite for Pending<T, F> {
    fn apply(&mut self, conn: &Connection) -> bool {
        let outcome = (self.work)(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, commit: &Result<()>) {
        let result = match (commit, self.outcome) {
            (Err(e), _) => Err(StoreError::Database(format!("commit failed: {e}"))),
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(StoreError::Database("the write was not applied".into())),
        };
        let _ = self.done.send(result);
    }
}

type WriteJob = Box<dyn PendingWrite>;

pub struct SqliteStore {
    writer: std::sync::mpsc::SyncSender<WriteJob>,
    /// See [`crate::ConversationStore::set_conversation_idle_ms`].
    conversation_idle_ms: Arc<std::sync::atomic::AtomicI64>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL lets readers run beside the writer; synchronous=FULL makes every commit durable on
    // power loss too, which group commit keeps affordable (one fsync per batch).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Every write runs in its own SAVEPOINT, and SQLite copies each page a savepoint first touches
    // into a sub-journal. On disk that sub-journal is a temporary file: a `pwrite` per page, about
    // a third of the writer's time under load. In memory it is a copy.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS parley_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM parley_migrations", [], |r| r.get(0))?;
    for (version, sql) in MIGRATIONS {
        if *version > current {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO parley_migrations (version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![version, Millis::now().0],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path` and apply pending migrations.
    pub async fn open(path: &str) -> Result<Self> {
        let path = PathBuf::from(path);
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?
    }

    fn open_blocking(path: PathBuf) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut write_conn = open_connection(&path)?;
        migrate(&mut write_conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = open_connection(&path)?;
            conn.pragma_update(None, "query_only", "ON")?;
            readers.push(conn);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<WriteJob>(MAX_BATCH * 8);
        std::thread::Builder::new()
            .name("parley-sqlite-writer".into())
            .spawn(move || writer_loop(write_conn, rx))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: tx,
            conversation_idle_ms: Arc::new(std::sync::atomic::AtomicI64::new(
                parley_domain::conversation::DEFAULT_IDLE_SECONDS * 1000,
            )),
            readers: Arc::new(Mutex::new(readers)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `work` in the next group-commit batch; its result is returned after the commit. `work`
    /// may run twice (the first run rolled back), so it must depend on nothing but the database.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (done, done_rx) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: WriteJob = Box::new(Pending { work, outcome: None, done });
        // The channel is bounded: when the writer falls behind, callers wait here (back-pressure)
        // on a blocking thread rather than growing memory without limit.
        let writer = self.writer.clone();
        match writer.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || writer.send(job).map_err(|_| StoreError::Closed))
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))??;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        done_rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `work` on a read connection.
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().map_err(|_| StoreError::Closed)?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = open_connection(&path)?;
                    c.pragma_update(None, "query_only", "ON")?;
                    c
                }
            };
            let result = work(&conn);
            if let Ok(mut pool) = readers.lock()
                && pool.len() < READERS * 4
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
    }
}

/// Apply `job` inside a savepoint of its own, so that its failure undoes its writes alone.
fn apply_in_savepoint(conn: &Connection, job: &mut WriteJob) -> Result<()> {
    conn.prepare_cached("SAVEPOINT w")?.execute([])?;
    if job.apply(conn) {
        conn.prepare_cached("RELEASE w")?.execute([])?;
    } else {
        conn.prepare_cached("ROLLBACK TO w")?.execute([])?;
        conn.prepare_cached("RELEASE w")?.execute([])?;
    }
    Ok(())
}

/// Group commit. The writes that are waiting form one batch and one transaction, first without
/// savepoints: a savepoint makes SQLite copy every page it touches, which costs more than most of
/// these writes themselves, and writes almost never fail. When one does fail, the transaction is
/// rolled back and the batch runs again with a savepoint around each write, so that the failure
/// undoes that write alone and the others commit.
fn writer_loop(conn: Connection, rx: std::sync::mpsc::Receiver<WriteJob>) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = run_batch(&conn, &mut batch);
        if let Err(e) = &committed {
            tracing::error!(error = %e, writes = batch.len(), "sqlite writer could not commit a batch");
        }
        for job in batch.drain(..) {
            job.finish(&committed);
        }
    }
}

fn run_batch(conn: &Connection, batch: &mut [WriteJob]) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    if !batch.iter_mut().all(|job| job.apply(conn)) {
        conn.execute_batch("ROLLBACK; BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            if let Err(e) = apply_in_savepoint(conn, job) {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    conn.execute_batch("COMMIT").inspect_err(|_| {
        let _ = conn.execute_batch("ROLLBACK");
    })?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await?;
        // The writer must be alive too, or nothing can be accepted.
        self.write(|_| Ok(())).await
    }

    async fn create_workspace(&self, workspace: &Workspace) -> Result<()> {
        let w = workspace.clone();
        self.write(move |c| writes::create_workspace(c, &w)).await
    }

    async fn get_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>> {
        self.read(move |c| reads::get_workspace(c, id)).await
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        self.read(reads::list_workspaces).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        let k = key.clone();
        self.write(move |c| writes::create_api_key(c, &k)).await
    }

    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let h = hash.to_string();
        self.read(move |c| reads::find_api_key_by_hash(c, &h)).await
    }

    async fn list_api_keys(&self, workspace: WorkspaceId) -> Result<Vec<ApiKey>> {
        self.read(move |c| reads::list_api_keys(c, workspace)).await
    }

    async fn revoke_api_key(&self, workspace: WorkspaceId, id: ApiKeyId, now: Millis) -> Result<Option<ApiKey>> {
        self.write(move |c| writes::revoke_api_key(c, workspace, id, now)).await
    }

    async fn create_channel_account(&self, account: &ChannelAccount) -> Result<()> {
        let a = account.clone();
        self.write(move |c| writes::create_channel_account(c, &a)).await
    }

    async fn update_channel_account(&self, account: &ChannelAccount) -> Result<bool> {
        let a = account.clone();
        self.write(move |c| writes::update_channel_account(c, &a)).await
    }

    async fn get_channel_account(
        &self,
        workspace: WorkspaceId,
        id: ChannelAccountId,
    ) -> Result<Option<ChannelAccount>> {
        self.read(move |c| reads::get_channel_account(c, workspace, id)).await
    }

    async fn all_channel_accounts(&self) -> Result<Vec<ChannelAccount>> {
        self.read(|c| reads::list_channel_accounts(c, None)).await
    }

    async fn list_channel_accounts(&self, workspace: WorkspaceId) -> Result<Vec<ChannelAccount>> {
        self.read(move |c| reads::list_channel_accounts(c, Some(workspace))).await
    }

    async fn create_messages(&self, request: CreateMessages) -> Result<CreateOutcome> {
        let idle_ms = self.conversation_idle_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.write(move |c| writes::create_messages(c, &request, idle_ms)).await
    }

    async fn get_message(&self, workspace: WorkspaceId, id: MessageId, with_events: bool) -> Result<Option<Message>> {
        self.read(move |c| reads::get_message(c, workspace, id, with_events)).await
    }

    async fn list_messages(&self, workspace: WorkspaceId, filter: &MessageFilter, limit: u32) -> Result<Vec<Message>> {
        let f = filter.clone();
        self.read(move |c| reads::list_messages(c, workspace, &f, limit)).await
    }

    async fn cancel_message(&self, workspace: WorkspaceId, id: MessageId, now: Millis) -> Result<CancelOutcome> {
        self.write(move |c| writes::cancel_message(c, workspace, id, now)).await
    }

    async fn claim_jobs(&self, owner: &str, now: Millis, lease_ms: i64, limit: u32) -> Result<ClaimBatch> {
        let owner = owner.to_string();
        self.write(move |c| writes::claim_jobs(c, &owner, now, lease_ms, limit)).await
    }

    async fn record_outcomes(&self, outcomes: Vec<DispatchOutcome>) -> Result<()> {
        self.write(move |c| writes::record_outcomes(c, &outcomes)).await
    }

    async fn record_receipts(&self, receipts: Vec<Receipt>) -> Result<()> {
        self.write(move |c| writes::record_receipts(c, &receipts, Millis::now())).await
    }

    async fn record_inbound(&self, messages: Vec<InboundMessage>) -> Result<Vec<Message>> {
        let idle_ms = self.conversation_idle_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.write(move |c| writes::record_inbound(c, &messages, idle_ms)).await
    }

    async fn awaiting_receipts(&self, after: Option<MessageId>, limit: u32) -> Result<Vec<Message>> {
        self.read(move |c| reads::awaiting_receipts(c, after, limit)).await
    }

    async fn release_leases(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_string();
        self.write(move |c| writes::release_leases(c, &owner)).await
    }

    async fn events_after(&self, workspace: WorkspaceId, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
        self.read(move |c| reads::events_after(c, workspace, after, limit)).await
    }

    async fn latest_event_position(&self, workspace: WorkspaceId) -> Result<i64> {
        self.read(move |c| {
            let position: Option<i64> = c
                .prepare_cached("SELECT MAX(position) FROM message_events WHERE workspace_id = ?1")?
                .query_row([workspace.to_string()], |r| r.get(0))?;
            Ok(position.unwrap_or(0))
        })
        .await
    }

    async fn event_position(&self, workspace: WorkspaceId, id: parley_domain::EventId) -> Result<Option<i64>> {
        self.read(move |c| reads::event_position(c, workspace, id)).await
    }

    async fn messages_with_events(&self, workspace: WorkspaceId, ids: &[MessageId]) -> Result<Vec<Message>> {
        let ids = ids.to_vec();
        self.read(move |c| reads::messages_with_events(c, workspace, &ids)).await
    }

    async fn message_stats(&self, workspace: WorkspaceId) -> Result<MessageStats> {
        self.read(move |c| reads::message_stats(c, workspace)).await
    }

    async fn delivery_latencies_ms(&self, workspace: WorkspaceId) -> Result<Vec<i64>> {
        self.read(move |c| reads::delivery_latencies_ms(c, workspace)).await
    }

    async fn metrics_snapshot(&self, now: Millis) -> Result<crate::MetricsSnapshot> {
        self.read(move |c| reads::metrics_snapshot(c, now)).await
    }

    async fn purge_webhook_attempts(&self, before: WebhookAttemptId, limit: u32) -> Result<u64> {
        let before = before.to_string();
        self.write(move |c| {
            let sql = "DELETE FROM webhook_attempts WHERE id IN \
                       (SELECT id FROM webhook_attempts WHERE id < ?1 ORDER BY id LIMIT ?2)";
            Ok(c.prepare_cached(sql)?.execute(rusqlite::params![before, limit])? as u64)
        })
        .await
    }

    async fn purge_pending_receipts(&self, older_than: Millis) -> Result<u64> {
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM pending_receipts WHERE received_at < ?1")?.execute([older_than.0])? as u64)
        })
        .await
    }

    async fn purge_message_parts(&self, older_than: Millis) -> Result<u64> {
        self.write(move |c| {
            Ok(c.prepare_cached(
                "DELETE FROM message_parts WHERE message_id IN (SELECT p.message_id FROM message_parts p \
                 JOIN messages m ON m.id = p.message_id WHERE m.created_at < ?1)",
            )?
            .execute([older_than.0])? as u64)
        })
        .await
    }

    async fn purge_idempotency(&self, older_than: Millis) -> Result<u64> {
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?.execute([older_than.0])? as u64)
        })
        .await
    }

    async fn outbound_analytics(
        &self,
        workspace: WorkspaceId,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<crate::AnalyticsRow>> {
        self.read(move |c| reads::outbound_analytics(c, workspace, from, to)).await
    }

    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()> {
        let e = endpoint.clone();
        self.write(move |c| webhooks::create_endpoint(c, &e)).await
    }

    async fn get_webhook_endpoint(
        &self,
        workspace: WorkspaceId,
        id: WebhookEndpointId,
    ) -> Result<Option<WebhookEndpoint>> {
        self.read(move |c| webhooks::get_endpoint(c, workspace, id)).await
    }

    async fn list_webhook_endpoints(
        &self,
        workspace: WorkspaceId,
        before: Option<WebhookEndpointId>,
        limit: u32,
    ) -> Result<Vec<WebhookEndpoint>> {
        self.read(move |c| webhooks::list_endpoints(c, workspace, before, limit)).await
    }

    async fn update_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<bool> {
        let e = endpoint.clone();
        self.write(move |c| webhooks::update_endpoint(c, &e)).await
    }

    async fn delete_webhook_endpoint(&self, workspace: WorkspaceId, id: WebhookEndpointId) -> Result<bool> {
        self.write(move |c| webhooks::delete_endpoint(c, workspace, id)).await
    }

    async fn lease_webhook_endpoints(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Vec<WebhookEndpoint>> {
        let owner = owner.to_string();
        self.write(move |c| webhooks::lease_endpoints(c, &owner, now, lease_ms)).await
    }

    async fn release_webhook_leases(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_string();
        self.write(move |c| webhooks::release_leases(c, &owner)).await
    }

    async fn record_webhook_progress(
        &self,
        endpoint: WebhookEndpointId,
        owner: &str,
        progress: WebhookProgress,
    ) -> Result<bool> {
        let owner = owner.to_string();
        self.write(move |c| webhooks::record_progress(c, endpoint, &owner, &progress)).await
    }

    async fn due_webhook_deliveries(
        &self,
        endpoint: WebhookEndpointId,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        self.read(move |c| webhooks::due_deliveries(c, endpoint, now, limit)).await
    }

    async fn schedule_webhook_deliveries(&self, deliveries: Vec<WebhookDelivery>) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        self.write(move |c| webhooks::schedule_deliveries(c, &deliveries)).await
    }

    async fn list_webhook_attempts(
        &self,
        workspace: WorkspaceId,
        endpoint: WebhookEndpointId,
        before: Option<WebhookAttemptId>,
        limit: u32,
    ) -> Result<Vec<WebhookAttempt>> {
        self.read(move |c| webhooks::list_attempts(c, workspace, endpoint, before, limit)).await
    }

    async fn webhook_backlog(&self) -> Result<Vec<WebhookBacklog>> {
        self.read(webhooks::backlog).await
    }

    async fn feed_events_by_id(&self, workspace: WorkspaceId, ids: &[EventId]) -> Result<Vec<FeedEvent>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        self.read(move |c| webhooks::feed_events_by_id(c, workspace, &ids)).await
    }

    async fn list_workspace_events(&self, workspace: WorkspaceId, limit: u32) -> Result<Vec<WorkspaceEvent>> {
        self.read(move |c| webhooks::list_workspace_events(c, workspace, limit)).await
    }

    async fn record_workspace_events(&self, events: Vec<WorkspaceEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(move |c| webhooks::record_workspace_events(c, &events)).await
    }
}
