//! The databases, fixtures and helpers.

pub use parley_domain::{
    ApiKeyId, Channel, ChannelAccountId, Content, Direction, ErrorInfo, EventId, EventKind, InboundMessage, Message,
    MessageEvent, MessageId, MessageState, Millis, Receipt, Scope, Scopes, WorkspaceId,
};
pub use parley_store::postgres::PgStore;
pub use parley_store::sqlite::SqliteStore;
pub use parley_store::{
    ApiKey, CancelOutcome, ChannelAccount, CreateMessages, CreateOutcome, DispatchOutcome, IDEMPOTENCY_TTL_MS,
    IdempotentRequest, MessageFilter, NewOutbound, OutcomeKind, Store, StoreError, Workspace,
};
pub use sqlx::{Connection, Executor, PgConnection};
pub use std::collections::{BTreeMap, HashSet};
pub use std::sync::Arc;

pub const T0: Millis = Millis(1_800_000_000_000);
pub const LEASE_MS: i64 = 30_000;

/// A PostgreSQL database of its own for one test, dropped (with its connections) when the value
/// is. Without `PARLEY_TEST_POSTGRES_URL` there is none: the test says so and passes, except on
/// CI (`CI=true`), where it fails.
pub struct TestDb {
    admin_url: String,
    name: String,
    pub url: String,
}

pub async fn test_db() -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("PARLEY_TEST_POSTGRES_URL") else {
        if matches!(std::env::var("CI").as_deref(), Ok("true" | "1")) {
            panic!("PARLEY_TEST_POSTGRES_URL must name a PostgreSQL server on CI");
        }
        eprintln!("note: PARLEY_TEST_POSTGRES_URL is not set; skipping this PostgreSQL test");
        return None;
    };
    let name = format!("parley_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url).await.expect("connect to PARLEY_TEST_POSTGRES_URL");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create the test database");
    admin.close().await.ok();
    let url = parley_store::postgres::with_database(&admin_url, &name);
    Some(TestDb { admin_url, name, url })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: use a runtime of its own.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(e) = admin.execute(sql.as_str()).await {
                        eprintln!("could not drop {name}: {e}");
                    }
                }
            });
        });
        let _ = dropper.join();
    }
}

/// The backends every contract test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database of one test: a fresh SQLite file in a directory of its own, or a PostgreSQL
/// database of its own. Both go away when the value is dropped.
pub enum Database {
    Sqlite { path: std::path::PathBuf, _dir: tempfile::TempDir },
    Postgres(TestDb),
}

impl Database {
    /// `None` when the backend is not available here (PostgreSQL without its URL, off CI).
    pub async fn create(backend: Backend) -> Option<Database> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::TempDir::new().expect("create a temporary directory");
                let path = dir.path().join("parley.db");
                Some(Database::Sqlite { path, _dir: dir })
            }
            Backend::Postgres => test_db().await.map(Database::Postgres),
        }
    }

    /// A new store on this database, as a process starting up would open it.
    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path.to_str().expect("a UTF-8 path")).await.expect("open the store"))
            }
            Database::Postgres(db) => Arc::new(PgStore::open(&db.url).await.expect("open the store")),
        }
    }

    /// The number of rows of `table`, read with plain SQL beside the store.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        match self {
            Database::Sqlite { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
                    conn.query_row(&sql, [], |r| r.get(0)).expect("count rows")
                })
                .await
                .unwrap()
            }
            Database::Postgres(db) => {
                let mut conn = PgConnection::connect(&db.url).await.expect("connect to the test database");
                let n = sqlx::query_scalar(&sql).fetch_one(&mut conn).await.expect("count rows");
                conn.close().await.ok();
                n
            }
        }
    }
}

pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub backend: Backend,
    pub ws: WorkspaceId,
    pub sms: ChannelAccountId,
    pub whatsapp: ChannelAccountId,
    // Last, so that the database goes after the store's connections.
    pub db: Database,
}

/// A store on a fresh database of `backend`, with the workspace "Acme" and its SMS and WhatsApp
/// accounts; `None` when the backend is not available (see [`test_db`]).
pub async fn fixture(backend: Backend) -> Option<Fixture> {
    let db = Database::create(backend).await?;
    let store = db.open().await;
    assert_eq!(
        store.backend(),
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    let ws = workspace(store.as_ref(), "Acme").await;
    let sms = account(store.as_ref(), ws, Channel::Sms).await;
    let whatsapp = account(store.as_ref(), ws, Channel::Whatsapp).await;
    Some(Fixture { store, backend, ws, sms, whatsapp, db })
}

pub async fn workspace(store: &dyn Store, name: &str) -> WorkspaceId {
    let ws = Workspace { id: WorkspaceId::new(), name: name.into(), created_at: T0 };
    store.create_workspace(&ws).await.unwrap();
    ws.id
}

pub async fn account(store: &dyn Store, ws: WorkspaceId, channel: Channel) -> ChannelAccountId {
    let account = ChannelAccount {
        id: ChannelAccountId::new(),
        workspace_id: ws,
        channel,
        provider: "sandbox".into(),
        name: format!("{} account", channel.as_str()),
        config: serde_json::json!({"mode": "deliver"}),
        rate_limit_per_second: 50,
        max_in_flight: 10,
        is_default: true,
        created_at: T0,
        updated_at: T0,
        credentials: None,
        credentials_hint: None,
        deleted_at: None,
    };
    store.create_channel_account(&account).await.unwrap();
    account.id
}

pub fn event(message: MessageId, sequence: i64, kind: EventKind, at: Millis) -> MessageEvent {
    MessageEvent {
        id: EventId::new(),
        message_id: message,
        sequence,
        kind,
        occurred_at: at,
        recorded_at: at,
        applied: true,
        attempt: None,
        provider_message_id: None,
        error: None,
        retry_at: None,
        details: None,
    }
}

/// A new outbound message as the engine hands it over: accepted, then queued (or scheduled).
pub fn outbound(ws: WorkspaceId, account: ChannelAccountId, channel: Channel, to: &str, now: Millis) -> NewOutbound {
    outbound_at(ws, account, channel, to, now, None)
}

pub fn outbound_at(
    ws: WorkspaceId,
    account: ChannelAccountId,
    channel: Channel,
    to: &str,
    now: Millis,
    send_at: Option<Millis>,
) -> NewOutbound {
    let id = MessageId::new();
    let due_at = send_at.unwrap_or(now).max(now);
    let (status, second) = if due_at > now {
        (MessageState::Scheduled, EventKind::Scheduled)
    } else {
        (MessageState::Queued, EventKind::Queued)
    };
    NewOutbound {
        message: Message {
            id,
            workspace_id: ws,
            direction: Direction::Outbound,
            channel,
            channel_account_id: account,
            to: to.into(),
            from: None,
            status,
            content: Content::text(format!("hello {to}")),
            send_at,
            expires_at: due_at.plus_seconds(3600),
            validity_seconds: 3600,
            metadata: BTreeMap::from([("order".to_string(), "A-17".to_string())]),
            client_reference: Some("ref-1".into()),
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
        events: vec![event(id, 1, EventKind::Accepted, now), event(id, 2, second, now)],
        due_at,
    }
}

pub fn request(ws: WorkspaceId, messages: Vec<NewOutbound>, now: Millis) -> CreateMessages {
    CreateMessages { workspace_id: ws, messages, idempotency: None, now }
}

pub fn keyed(ws: WorkspaceId, messages: Vec<NewOutbound>, now: Millis, key: &str, hash: &str) -> CreateMessages {
    CreateMessages {
        workspace_id: ws,
        messages,
        idempotency: Some(IdempotentRequest {
            key: key.into(),
            request_hash: hash.into(),
            response_status: 202,
            response_body: format!("{{\"hash\":\"{hash}\"}}").into_bytes(),
        }),
        now,
    }
}

impl Fixture {
    /// The store a second process would use: on PostgreSQL another store on the same database;
    /// SQLite serves one process, so there it is the same store.
    pub async fn peer(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Sqlite => self.store.clone(),
            Backend::Postgres => self.db.open().await,
        }
    }

    /// Store one queued SMS message now; its id.
    pub async fn send(&self, to: &str, now: Millis) -> MessageId {
        let new = outbound(self.ws, self.sms, Channel::Sms, to, now);
        let id = new.message.id;
        assert_eq!(self.store.create_messages(request(self.ws, vec![new], now)).await.unwrap(), CreateOutcome::Created);
        id
    }

    pub async fn get(&self, id: MessageId) -> Message {
        self.store.get_message(self.ws, id, true).await.unwrap().expect("message exists")
    }

    /// Claim everything due at `now` for `owner`.
    pub async fn claim(&self, owner: &str, now: Millis) -> parley_store::ClaimBatch {
        self.store.claim_jobs(owner, now, LEASE_MS, 100).await.unwrap()
    }

    pub async fn outcome(&self, id: MessageId, owner: &str, attempt: i32, at: Millis, kind: OutcomeKind) {
        let outcome = DispatchOutcome { message_id: id, lease_owner: owner.into(), attempt, at, kind };
        self.store.record_outcomes(vec![outcome]).await.unwrap();
    }

    pub fn receipt(&self, provider_id: &str, state: MessageState, at: Millis) -> Receipt {
        Receipt {
            channel_account_id: self.sms,
            provider_message_id: provider_id.into(),
            state,
            occurred_at: at,
            error: state.is_failure().then(|| ErrorInfo {
                code: "sandbox:undeliverable".into(),
                detail: "the handset is off".into(),
                permanent: true,
            }),
            details: None,
        }
    }
}

pub fn kinds(message: &Message) -> Vec<(EventKind, bool)> {
    message.events.iter().flatten().map(|e| (e.kind, e.applied)).collect()
}

pub trait Status {
    fn status(&self) -> &'static str;
}

impl Status for CancelOutcome {
    fn status(&self) -> &'static str {
        match self {
            CancelOutcome::Canceled(_) => "canceled",
            CancelOutcome::NotFound => "not_found",
            CancelOutcome::NotCancelable(_) => "not_cancelable",
            CancelOutcome::InFlight => "in_flight",
        }
    }
}
