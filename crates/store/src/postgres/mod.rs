//! The PostgreSQL store, for several Parley processes sharing one database.
//!
//! Writes of `create_messages` go through group commit ([`create`]): a few writer tasks each take
//! up to [`create::MAX_BATCH`] queued requests and apply them in one transaction, one savepoint
//! per request when a batch has to be replayed request by request. The dispatch queue uses
//! `FOR UPDATE SKIP LOCKED` so that concurrent claimers never wait for, nor share, a job.
//!
//! Every transaction that records message events takes the feed lock ([`lock_feed`]) just before
//! inserting them and holds it to its commit. Event positions come from an identity column, so
//! without it a transaction could commit a smaller position after a reader of `events_after` had
//! moved past it, and that reader would never see the event.
//!
//! All SQL here is static text with bound parameters (no string building), checked at run time.

mod consent;
mod contacts;
mod conversations;
mod create;
mod provider;
mod queue;
mod read;
mod rows;
mod timeline;
mod webhooks;

use crate::{
    ApiKey, CancelOutcome, ChannelAccount, ClaimBatch, CreateMessages, CreateOutcome, DispatchOutcome, FeedEvent,
    InboundMessage, MessageFilter, MessageStats, Receipt, Result, Store, StoreError, WebhookAttempt, WebhookBacklog,
    WebhookDelivery, WebhookEndpoint, WebhookProgress, Workspace, WorkspaceEvent,
};
use async_trait::async_trait;
use parley_domain::{
    ApiKeyId, ChannelAccountId, EventId, Message, MessageId, Millis, WebhookAttemptId, WebhookEndpointId, WorkspaceId,
};
use sqlx::Executor;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use std::time::Duration;

/// Connections in the pool of one store.
const POOL_SIZE: u32 = 16;
/// Group-commit writer tasks; more than one so that one batch is built and sent while another
/// waits for its commit.
const WRITERS: usize = 3;

/// The first key of every advisory lock Parley takes (`'Parl'`), so that they stay apart from
/// the locks of other programs sharing the database.
const LOCK_CLASS: i32 = 0x5061_726c;
/// Second keys under [`LOCK_CLASS`].
const MIGRATION_LOCK: i32 = 1;
const FEED_LOCK: i32 = 2;
/// The first key of the per-(channel account, provider id) locks that keep a receipt from
/// slipping between a `sent` outcome and its commit (the second key is a hash of the pair).
const PROVIDER_ID_LOCK_CLASS: i32 = 0x5061_7270;

/// The migrations, in order; `version` is the number at the start of the file name.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_messages_by_status.sql")),
    (3, include_str!("../../migrations/postgres/0003_awaiting_receipt_index.sql")),
    (4, include_str!("../../migrations/postgres/0004_webhooks.sql")),
    (5, include_str!("../../migrations/postgres/0005_analytics_index.sql")),
    (6, include_str!("../../migrations/postgres/0006_channel_account_credentials.sql")),
    (7, include_str!("../../migrations/postgres/0007_message_parts.sql")),
    (8, include_str!("../../migrations/postgres/0008_message_contacts.sql")),
    (9, include_str!("../../migrations/postgres/0009_contacts.sql")),
    (10, include_str!("../../migrations/postgres/0010_consent.sql")),
    (11, include_str!("../../migrations/postgres/0011_conversations.sql")),
    (12, include_str!("../../migrations/postgres/0012_routes.sql")),
];

/// A [`Store`] on PostgreSQL.
pub struct PgStore {
    pool: PgPool,
    writer: create::GroupCommit,
    /// See [`crate::ConversationStore::set_conversation_idle_ms`].
    conversation_idle_ms: std::sync::atomic::AtomicI64,
}

impl PgStore {
    /// Connect to `url` (`postgres://user@host:port/db`), apply pending migrations and start the
    /// group-commit writers. Must be called inside a Tokio runtime.
    pub async fn open(url: &str) -> Result<PgStore> {
        let pool = connect(url, POOL_SIZE).await?;
        migrate_pool(&pool).await?;
        let writer = create::GroupCommit::start(pool.clone(), WRITERS);
        let idle_ms = parley_domain::conversation::DEFAULT_IDLE_SECONDS * 1000;
        Ok(PgStore { pool, writer, conversation_idle_ms: std::sync::atomic::AtomicI64::new(idle_ms) })
    }

    /// Apply pending migrations to the database at `url` and disconnect (`parley migrate`).
    /// Several processes may run this at once: one applies, the others wait and find nothing to do.
    pub async fn migrate(url: &str) -> Result<()> {
        let pool = connect(url, 1).await?;
        let result = migrate_pool(&pool).await;
        pool.close().await;
        result
    }

    /// The connection pool, for callers that need plain SQL access (tests, tooling).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn connect(url: &str, size: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .map_err(|e| StoreError::Database(format!("cannot connect to PostgreSQL: {e}")))
}

/// Apply every migration not yet recorded in `parley_migrations`, all in one transaction under an
/// advisory lock, so that processes starting together neither race nor apply one twice.
async fn migrate_pool(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)").bind(LOCK_CLASS).bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    // Plain strings run as simple queries, which may hold several statements (a migration does).
    (&mut *tx)
        .execute(
            "CREATE TABLE IF NOT EXISTS parley_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM parley_migrations").fetch_all(&mut *tx).await?;
    let known = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        return Err(StoreError::Database(format!(
            "the database has migration {newer}, which this version of Parley does not know; use a newer Parley"
        )));
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        (&mut *tx).execute(*sql).await.map_err(|e| StoreError::Database(format!("migration {version} failed: {e}")))?;
        sqlx::query("INSERT INTO parley_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(Millis::now().0)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    tx.commit().await?;
    Ok(())
}

/// Take the feed lock until the end of the transaction (see the module comment). Call it right
/// before inserting events, after every other lock the transaction needs, and insert the events
/// last, so that it is held briefly and no transaction waits for another while holding it.
async fn lock_feed(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)").bind(LOCK_CLASS).bind(FEED_LOCK).execute(conn).await?;
    Ok(())
}

/// Lock the given (channel account, provider message id) pairs until the end of the transaction,
/// in a fixed order so that two transactions cannot deadlock on them.
async fn lock_provider_ids(conn: &mut PgConnection, pairs: &[(String, String)]) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<String> = pairs.iter().map(|(account, id)| format!("{account} {id}")).collect();
    keys.sort();
    keys.dedup();
    // A function scan yields the array in order, so the locks are taken in that order.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(k)) FROM UNNEST($2::text[]) AS t(k)")
        .bind(PROVIDER_ID_LOCK_CLASS)
        .bind(&keys)
        .execute(conn)
        .await?;
    Ok(())
}

/// A unique-key violation means the caller stored something twice; anything else is the
/// database's trouble.
fn map_write_error(e: sqlx::Error) -> StoreError {
    match e.as_database_error() {
        Some(db) if db.code().as_deref() == Some("23505") => StoreError::Conflict(db.message().to_string()),
        _ => StoreError::Database(e.to_string()),
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_workspace(&self, workspace: &Workspace) -> Result<()> {
        read::create_workspace(&self.pool, workspace).await
    }

    async fn get_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>> {
        read::get_workspace(&self.pool, id).await
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        read::list_workspaces(&self.pool).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        read::create_api_key(&self.pool, key).await
    }

    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        read::find_api_key_by_hash(&self.pool, hash).await
    }

    async fn list_api_keys(&self, workspace: WorkspaceId) -> Result<Vec<ApiKey>> {
        read::list_api_keys(&self.pool, workspace).await
    }

    async fn revoke_api_key(&self, workspace: WorkspaceId, id: ApiKeyId, now: Millis) -> Result<Option<ApiKey>> {
        read::revoke_api_key(&self.pool, workspace, id, now).await
    }

    async fn create_channel_account(&self, account: &ChannelAccount) -> Result<()> {
        read::create_channel_account(&self.pool, account).await
    }

    async fn update_channel_account(&self, account: &ChannelAccount) -> Result<bool> {
        read::update_channel_account(&self.pool, account).await
    }

    async fn get_channel_account(
        &self,
        workspace: WorkspaceId,
        id: ChannelAccountId,
    ) -> Result<Option<ChannelAccount>> {
        read::get_channel_account(&self.pool, workspace, id).await
    }

    async fn all_channel_accounts(&self) -> Result<Vec<ChannelAccount>> {
        read::all_channel_accounts(&self.pool).await
    }

    async fn list_channel_accounts(&self, workspace: WorkspaceId) -> Result<Vec<ChannelAccount>> {
        read::list_channel_accounts(&self.pool, workspace).await
    }

    async fn create_messages(&self, request: CreateMessages) -> Result<CreateOutcome> {
        self.writer.submit(request).await
    }

    async fn get_message(&self, workspace: WorkspaceId, id: MessageId, with_events: bool) -> Result<Option<Message>> {
        read::get_message(&self.pool, workspace, id, with_events).await
    }

    async fn list_messages(&self, workspace: WorkspaceId, filter: &MessageFilter, limit: u32) -> Result<Vec<Message>> {
        read::list_messages(&self.pool, workspace, filter, limit).await
    }

    async fn cancel_message(&self, workspace: WorkspaceId, id: MessageId, now: Millis) -> Result<CancelOutcome> {
        queue::cancel_message(&self.pool, workspace, id, now).await
    }

    async fn claim_jobs(&self, owner: &str, now: Millis, lease_ms: i64, limit: u32) -> Result<ClaimBatch> {
        queue::claim_jobs(&self.pool, owner, now, lease_ms, limit).await
    }

    async fn record_outcomes(&self, outcomes: Vec<DispatchOutcome>) -> Result<()> {
        queue::record_outcomes(&self.pool, outcomes).await
    }

    async fn record_receipts(&self, receipts: Vec<Receipt>) -> Result<()> {
        provider::record_receipts(&self.pool, receipts).await
    }

    async fn record_inbound(&self, messages: Vec<InboundMessage>) -> Result<Vec<Message>> {
        let idle_ms = self.conversation_idle_ms.load(std::sync::atomic::Ordering::Relaxed);
        provider::record_inbound(&self.pool, messages, idle_ms).await
    }

    async fn awaiting_receipts(&self, after: Option<MessageId>, limit: u32) -> Result<Vec<Message>> {
        read::awaiting_receipts(&self.pool, after, limit).await
    }

    async fn release_leases(&self, owner: &str) -> Result<u64> {
        queue::release_leases(&self.pool, owner).await
    }

    async fn events_after(&self, workspace: WorkspaceId, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
        read::events_after(&self.pool, workspace, after, limit).await
    }

    async fn latest_event_position(&self, workspace: WorkspaceId) -> Result<i64> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT MAX(position) FROM message_events WHERE workspace_id = $1")
                .bind(workspace.to_string())
                .fetch_one(&self.pool)
                .await?;
        Ok(position.unwrap_or(0))
    }

    async fn event_position(&self, workspace: WorkspaceId, id: parley_domain::EventId) -> Result<Option<i64>> {
        read::event_position(&self.pool, workspace, id).await
    }

    async fn messages_with_events(&self, workspace: WorkspaceId, ids: &[MessageId]) -> Result<Vec<Message>> {
        read::messages_with_events(&self.pool, workspace, ids).await
    }

    async fn message_stats(&self, workspace: WorkspaceId) -> Result<MessageStats> {
        read::message_stats(&self.pool, workspace).await
    }

    async fn delivery_latencies_ms(&self, workspace: WorkspaceId) -> Result<Vec<i64>> {
        read::delivery_latencies_ms(&self.pool, workspace).await
    }

    async fn metrics_snapshot(&self, now: Millis) -> Result<crate::MetricsSnapshot> {
        read::metrics_snapshot(&self.pool, now).await
    }

    async fn purge_webhook_attempts(&self, before: WebhookAttemptId, limit: u32) -> Result<u64> {
        let sql = "DELETE FROM webhook_attempts WHERE id IN \
                   (SELECT id FROM webhook_attempts WHERE id < $1 ORDER BY id LIMIT $2)";
        let done = sqlx::query(sql).bind(before.to_string()).bind(i64::from(limit)).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn purge_pending_receipts(&self, older_than: Millis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM pending_receipts WHERE received_at < $1")
            .bind(older_than.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn purge_message_parts(&self, older_than: Millis) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM message_parts WHERE message_id IN (SELECT p.message_id FROM message_parts p \
             JOIN messages m ON m.id = p.message_id WHERE m.created_at < $1)",
        )
        .bind(older_than.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_idempotency(&self, older_than: Millis) -> Result<u64> {
        read::purge_idempotency(&self.pool, older_than).await
    }

    async fn outbound_analytics(
        &self,
        workspace: WorkspaceId,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<crate::AnalyticsRow>> {
        read::outbound_analytics(&self.pool, workspace, from, to).await
    }

    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()> {
        webhooks::create_endpoint(&self.pool, endpoint).await
    }

    async fn get_webhook_endpoint(
        &self,
        workspace: WorkspaceId,
        id: WebhookEndpointId,
    ) -> Result<Option<WebhookEndpoint>> {
        webhooks::get_endpoint(&self.pool, workspace, id).await
    }

    async fn list_webhook_endpoints(
        &self,
        workspace: WorkspaceId,
        before: Option<WebhookEndpointId>,
        limit: u32,
    ) -> Result<Vec<WebhookEndpoint>> {
        webhooks::list_endpoints(&self.pool, workspace, before, limit).await
    }

    async fn update_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<bool> {
        webhooks::update_endpoint(&self.pool, endpoint).await
    }

    async fn delete_webhook_endpoint(&self, workspace: WorkspaceId, id: WebhookEndpointId) -> Result<bool> {
        webhooks::delete_endpoint(&self.pool, workspace, id).await
    }

    async fn lease_webhook_endpoints(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Vec<WebhookEndpoint>> {
        webhooks::lease_endpoints(&self.pool, owner, now, lease_ms).await
    }

    async fn release_webhook_leases(&self, owner: &str) -> Result<u64> {
        webhooks::release_leases(&self.pool, owner).await
    }

    async fn record_webhook_progress(
        &self,
        endpoint: WebhookEndpointId,
        owner: &str,
        progress: WebhookProgress,
    ) -> Result<bool> {
        webhooks::record_progress(&self.pool, endpoint, owner, progress).await
    }

    async fn due_webhook_deliveries(
        &self,
        endpoint: WebhookEndpointId,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        webhooks::due_deliveries(&self.pool, endpoint, now, limit).await
    }

    async fn schedule_webhook_deliveries(&self, deliveries: Vec<WebhookDelivery>) -> Result<()> {
        webhooks::schedule_deliveries(&self.pool, deliveries).await
    }

    async fn list_webhook_attempts(
        &self,
        workspace: WorkspaceId,
        endpoint: WebhookEndpointId,
        before: Option<WebhookAttemptId>,
        limit: u32,
    ) -> Result<Vec<WebhookAttempt>> {
        webhooks::list_attempts(&self.pool, workspace, endpoint, before, limit).await
    }

    async fn webhook_backlog(&self) -> Result<Vec<WebhookBacklog>> {
        webhooks::backlog(&self.pool).await
    }

    async fn feed_events_by_id(&self, workspace: WorkspaceId, ids: &[EventId]) -> Result<Vec<FeedEvent>> {
        webhooks::feed_events_by_id(&self.pool, workspace, ids).await
    }

    async fn list_workspace_events(&self, workspace: WorkspaceId, limit: u32) -> Result<Vec<WorkspaceEvent>> {
        webhooks::list_workspace_events(&self.pool, workspace, limit).await
    }

    async fn record_workspace_events(&self, events: Vec<WorkspaceEvent>) -> Result<()> {
        webhooks::record_workspace_events(&self.pool, events).await
    }
}

/// `url` with its database name replaced by `database` (query string kept): for tools that
/// create a database of their own on a server (tests, the benchmark).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod url_tests {
    #[test]
    fn database_names_are_replaced() {
        assert_eq!(super::with_database("postgres://u@h:5/postgres", "x"), "postgres://u@h:5/x");
        assert_eq!(super::with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(super::with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    }
}
