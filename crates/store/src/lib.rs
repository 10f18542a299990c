//! Parley's durable state.
//!
//! [`Store`] is the one interface the engine and the server use; [`sqlite::SqliteStore`] (the
//! embedded default) and [`postgres::PgStore`] (for several processes on one database) implement
//! it with the same behaviour, each with its own migrations that move in step. Both batch the
//! writes of concurrent callers into one transaction (group commit), so that a caller's `Ok`
//! means "committed" while the commit cost is shared. The dispatch job queue lives here too:
//! jobs are claimed with a lease and re-claimed when a lease runs out.
//!
//! This crate knows nothing of HTTP or of providers. Values come in already validated (domain
//! types); SQL never leaves this crate. Secrets are sealed ([`seal`]) before they are stored.

pub mod consent;
pub mod contacts;
pub mod conversations;
pub mod model;
mod parts;
pub mod postgres;
mod route;
pub mod seal;
pub mod sqlite;

pub use consent::*;
pub use contacts::*;
pub use conversations::*;
pub use model::*;

use async_trait::async_trait;
use parley_domain::{
    ApiKeyId, ChannelAccountId, EventId, Message, MessageId, Millis, WebhookAttemptId, WebhookEndpointId, WorkspaceId,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Open the store that `url` names: `sqlite://path/to/file.db` (or a plain path) or
/// `postgres://…`. Runs pending migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PgStore::open(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(path).await?))
    }
}

/// Everything Parley keeps. Every method that writes is atomic: it commits all of its effects or
/// none. Every method scoped by a `WorkspaceId` never sees rows of another workspace.
#[async_trait]
pub trait Store: ContactStore + ConsentStore + ConversationStore + Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// A cheap round trip to the database (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    // ---- tenancy -------------------------------------------------------------------------

    async fn create_workspace(&self, workspace: &Workspace) -> Result<()>;
    async fn get_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>>;
    /// Oldest first.
    async fn list_workspaces(&self) -> Result<Vec<Workspace>>;

    async fn create_api_key(&self, key: &ApiKey) -> Result<()>;
    /// The key whose SHA-256 hash (lower-case hex) is `hash`, revoked or not.
    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;
    /// Newest first, revoked ones included.
    async fn list_api_keys(&self, workspace: WorkspaceId) -> Result<Vec<ApiKey>>;
    /// Sets `revoked_at` if the key exists in the workspace and is not revoked yet; returns the
    /// key as it is afterwards, or `None` when there is no such key in the workspace.
    async fn revoke_api_key(&self, workspace: WorkspaceId, id: ApiKeyId, now: Millis) -> Result<Option<ApiKey>>;

    /// Store a new account; when it `is_default`, the workspace's other accounts of its channel
    /// stop being the default, in the same transaction.
    async fn create_channel_account(&self, account: &ChannelAccount) -> Result<()>;
    /// Replace every changeable field (name, config, credentials and hint, limits, default,
    /// `updated_at`, `deleted_at`) of the account with this id in this workspace, unless it is
    /// deleted already; the default moves as on create. `false` when there is no such account.
    async fn update_channel_account(&self, account: &ChannelAccount) -> Result<bool>;
    /// The account, unless it is deleted.
    async fn get_channel_account(&self, workspace: WorkspaceId, id: ChannelAccountId)
    -> Result<Option<ChannelAccount>>;
    /// Every channel account of every workspace that is not deleted (the engine builds one
    /// connector per account).
    async fn all_channel_accounts(&self) -> Result<Vec<ChannelAccount>>;
    /// Oldest first, deleted ones left out.
    async fn list_channel_accounts(&self, workspace: WorkspaceId) -> Result<Vec<ChannelAccount>>;

    // ---- messages --------------------------------------------------------------------------

    /// Store new outbound messages with their first events and dispatch jobs, in one
    /// transaction, honouring the idempotency key if there is one (see [`CreateOutcome`]).
    /// Concurrent callers are batched into one commit; each caller gets its own outcome.
    async fn create_messages(&self, request: CreateMessages) -> Result<CreateOutcome>;

    /// One message of the workspace, with its events (oldest first) when `with_events`.
    async fn get_message(&self, workspace: WorkspaceId, id: MessageId, with_events: bool) -> Result<Option<Message>>;

    /// Messages of the workspace matching `filter`, newest first (by id), at most `limit`.
    async fn list_messages(&self, workspace: WorkspaceId, filter: &MessageFilter, limit: u32) -> Result<Vec<Message>>;

    /// Cancel a message that has not been handed to a provider: its job must exist and not be
    /// leased (or its lease has run out). Records a `canceled` event and deletes the job.
    async fn cancel_message(&self, workspace: WorkspaceId, id: MessageId, now: Millis) -> Result<CancelOutcome>;

    // ---- dispatch queue ----------------------------------------------------------------------

    /// Claim up to `limit` due jobs (`due_at <= now`, not leased or lease run out), oldest due
    /// first, for `owner` until `now + lease_ms`. See [`ClaimedJob`] for what happens to each.
    /// Several processes may call this at once on PostgreSQL; a job is never given to two
    /// callers while its lease holds.
    async fn claim_jobs(&self, owner: &str, now: Millis, lease_ms: i64, limit: u32) -> Result<ClaimBatch>;

    /// Apply what the dispatcher learned, in one transaction (see [`DispatchOutcome`]).
    async fn record_outcomes(&self, outcomes: Vec<DispatchOutcome>) -> Result<()>;

    /// Apply provider receipts (see [`Receipt`]); a receipt that matches no message yet is kept
    /// and applied when the message's `sent` outcome arrives. A receipt's `details` are kept on
    /// its event.
    ///
    /// A receipt for one part of a multi-part message (see [`OutcomeKind::Sent`]) is recorded on
    /// the message with `applied: false`, its part's provider id and `details` naming the part
    /// (`{"part": 2, "parts": 3}`, beside what the provider said), and the part's state is kept.
    /// The receipt that gives the last part a final state (delivered, read, or a failure) also
    /// records the message's own event, applied as any receipt: `delivered` when every part was
    /// delivered (or read), else the failure (with its error) of the first failed part.
    async fn record_receipts(&self, receipts: Vec<Receipt>) -> Result<()>;

    /// Store inbound messages (direction `inbound`, status `received`, one `received` event),
    /// each in its channel account's workspace. A message whose (channel account, provider id)
    /// is already stored is a duplicate and is skipped. Returns the messages stored now.
    async fn record_inbound(&self, messages: Vec<InboundMessage>) -> Result<Vec<Message>>;

    /// Outbound messages in state `sent` (taken by a provider, no receipt yet), of every
    /// workspace, ordered by id, after `after`, at most `limit`.
    async fn awaiting_receipts(&self, after: Option<MessageId>, limit: u32) -> Result<Vec<Message>>;

    /// Give back every job leased by `owner` (at shutdown), so others may take them at once.
    async fn release_leases(&self, owner: &str) -> Result<u64>;

    // ---- feeds and figures -------------------------------------------------------------------

    /// Events of the workspace recorded after the feed position `after`, in feed order, at most
    /// `limit`: message events and workspace events ([`FeedItem`]) alike. Positions are per store
    /// and increase with every event recorded.
    async fn events_after(&self, workspace: WorkspaceId, after: i64, limit: u32) -> Result<Vec<FeedEvent>>;

    /// The feed position of the workspace's newest event (0 when it has none): where a follower
    /// that wants only new events starts.
    async fn latest_event_position(&self, workspace: WorkspaceId) -> Result<i64>;

    /// The feed position of the event `id` if it is one of the workspace's (to resume a follower
    /// after the last event it saw); `None` for an unknown event or one of another workspace.
    async fn event_position(&self, workspace: WorkspaceId, id: EventId) -> Result<Option<i64>>;

    /// The workspace's messages among `ids`, each with its timeline (events oldest first), in
    /// no particular order; ids that are not the workspace's are left out. Two queries whatever
    /// the number of ids (the messages, then their events).
    async fn messages_with_events(&self, workspace: WorkspaceId, ids: &[MessageId]) -> Result<Vec<Message>>;

    /// Counts of the workspace's messages by state, and the due jobs waiting.
    async fn message_stats(&self, workspace: WorkspaceId) -> Result<MessageStats>;

    /// For every message of the workspace with a `delivered` event: milliseconds from its
    /// creation to its first `delivered` event (unordered).
    async fn delivery_latencies_ms(&self, workspace: WorkspaceId) -> Result<Vec<i64>>;

    /// For `/metrics`, across workspaces: messages by channel and state, and the dispatch jobs
    /// claimable at `now` (due, not held by a live lease) with the oldest one's due time. Read at
    /// every scrape, so it must stay cheap (see the backends for what each query costs).
    async fn metrics_snapshot(&self, now: Millis) -> Result<MetricsSnapshot>;

    /// Delete kept receipts (see [`Store::record_receipts`]) that arrived before `older_than`
    /// and still match no message: their `sent` outcome is never coming. Returns how many went.
    async fn purge_pending_receipts(&self, older_than: Millis) -> Result<u64>;

    /// Delete the part records (see [`Store::record_receipts`]) of messages created before
    /// `older_than`: a receipt for one of their parts after that is too late to matter. Returns
    /// how many parts went.
    async fn purge_message_parts(&self, older_than: Millis) -> Result<u64>;

    /// Delete idempotency records older than `older_than`. Returns how many went.
    async fn purge_idempotency(&self, older_than: Millis) -> Result<u64>;

    /// For analytics: one row per outbound message of the workspace with
    /// `from <= created_at < to`, ordered by `created_at`, then id (see [`AnalyticsRow`]). One
    /// query: the first `delivered` time and the reply check (an index probe of
    /// `messages_inbound_from`) are subqueries of it. Only the workspace's messages are read,
    /// and a reply counts only when it is the workspace's too.
    async fn outbound_analytics(&self, workspace: WorkspaceId, from: Millis, to: Millis) -> Result<Vec<AnalyticsRow>>;

    // ---- webhooks ----------------------------------------------------------------------------

    /// Store a new endpoint (not leased). A second endpoint with the same id is a `Conflict`.
    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()>;

    /// The workspace's endpoint `id`; `None` when the workspace has no such endpoint.
    async fn get_webhook_endpoint(
        &self,
        workspace: WorkspaceId,
        id: WebhookEndpointId,
    ) -> Result<Option<WebhookEndpoint>>;

    /// The workspace's endpoints, newest first (by id), those with an id before `before`, at
    /// most `limit`.
    async fn list_webhook_endpoints(
        &self,
        workspace: WorkspaceId,
        before: Option<WebhookEndpointId>,
        limit: u32,
    ) -> Result<Vec<WebhookEndpoint>>;

    /// Write every field of the workspace's endpoint `endpoint.id` except `id`, `workspace_id`
    /// and `created_at`; the cursor only moves forward (`MAX(cursor, endpoint.cursor)`). The lease
    /// is left as it is. `false` when the workspace has no such endpoint.
    async fn update_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<bool>;

    /// Delete the workspace's endpoint with its deliveries and attempts; `false` when none.
    async fn delete_webhook_endpoint(&self, workspace: WorkspaceId, id: WebhookEndpointId) -> Result<bool>;

    /// Take or renew, for `owner` until `now + lease_ms`, the lease of every enabled endpoint
    /// (of every workspace) that has no lease, whose lease ran out (`lease_until <= now`), or
    /// that `owner` holds already; return every enabled endpoint `owner` holds afterwards, by id.
    /// Several processes may call this at once on PostgreSQL; an endpoint is never held by two of
    /// them while its lease holds.
    async fn lease_webhook_endpoints(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Vec<WebhookEndpoint>>;

    /// Give back every endpoint lease `owner` holds (at shutdown); how many.
    async fn release_webhook_leases(&self, owner: &str) -> Result<u64>;

    /// Apply one pass of a deliverer in one transaction, if `owner` still holds the endpoint's
    /// lease (its lease owner is `owner`, run out or not); else, or when there is no such
    /// endpoint, nothing is written and the answer is `false`. See [`WebhookProgress`]: the
    /// cursor moves forward only, `failing_since` is replaced, attempts are added (one already
    /// stored, by id, is kept), retries are upserted, finished deliveries deleted, and `disable`
    /// disables the endpoint, clears its lease and stores its event.
    async fn record_webhook_progress(
        &self,
        endpoint: WebhookEndpointId,
        owner: &str,
        progress: WebhookProgress,
    ) -> Result<bool>;

    /// The endpoint's deliveries due at `now` (`next_attempt_at <= now`), soonest first, at most
    /// `limit`.
    async fn due_webhook_deliveries(
        &self,
        endpoint: WebhookEndpointId,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>>;

    /// Keep these deliveries, each replacing one of the same endpoint and event (redelivery). A
    /// delivery whose endpoint is not (any more) in its workspace is dropped.
    async fn schedule_webhook_deliveries(&self, deliveries: Vec<WebhookDelivery>) -> Result<()>;

    /// The attempts of the workspace's endpoint, newest first (by id), those before `before`,
    /// at most `limit`.
    async fn list_webhook_attempts(
        &self,
        workspace: WorkspaceId,
        endpoint: WebhookEndpointId,
        before: Option<WebhookAttemptId>,
        limit: u32,
    ) -> Result<Vec<WebhookAttempt>>;

    /// For `/metrics`: every endpoint's backlog (enabled or not), by endpoint id. Read at every
    /// scrape: one index range per endpoint.
    async fn webhook_backlog(&self) -> Result<Vec<WebhookBacklog>>;

    /// The workspace's feed events among `ids` (message or workspace events), with their feed
    /// positions (as [`Store::events_after`] gives them), in feed order; ids that are not the
    /// workspace's are left out.
    async fn feed_events_by_id(&self, workspace: WorkspaceId, ids: &[EventId]) -> Result<Vec<FeedEvent>>;

    /// Delete up to `limit` attempts whose id sorts before `before` (attempt ids grow with time,
    /// so `WebhookAttemptId::floor_at(t)` selects the attempts made before `t`). Returns how many
    /// went; the caller repeats while that is `limit`, keeping each transaction short.
    async fn purge_webhook_attempts(&self, before: WebhookAttemptId, limit: u32) -> Result<u64>;

    /// The workspace's events about itself (not about one message), newest first (by
    /// `created_at`, then id), at most `limit`.
    async fn list_workspace_events(&self, workspace: WorkspaceId, limit: u32) -> Result<Vec<WorkspaceEvent>>;

    /// Record these workspace events in one transaction, each with its position in the feed (so
    /// webhooks and the live stream deliver it). An event whose id is recorded already is kept as
    /// it was. For engine-level callers; a store write that describes its own change records its
    /// event in its own transaction instead.
    async fn record_workspace_events(&self, events: Vec<WorkspaceEvent>) -> Result<()>;
}
