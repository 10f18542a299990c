//! The test database, fixtures and helpers.

pub use parley_domain::{
    ApiKeyId, Channel, ChannelAccountId, Content, Direction, ErrorInfo, EventId, EventKind, InboundMessage, Message,
    MessageEvent, MessageId, MessageState, Millis, Receipt, Scope, Scopes, WorkspaceId,
};
pub use parley_store::postgres::PgStore;
pub use parley_store::{
    ApiKey, CancelOutcome, ChannelAccount, CreateMessages, CreateOutcome, DispatchOutcome, IDEMPOTENCY_TTL_MS,
    IdempotentRequest, MessageFilter, NewOutbound, OutcomeKind, Store, StoreError, Workspace,
};
pub use sqlx::{Connection, Executor, PgConnection};
pub use std::collections::{BTreeMap, HashSet};
pub use std::sync::Arc;

pub const T0: Millis = Millis(1_800_000_000_000);
pub const LEASE_MS: i64 = 30_000;

/// A database of its own for one test, dropped (with its connections) when the value is.
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
    let url = with_database(&admin_url, &name);
    Some(TestDb { admin_url, name, url })
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    format!("{}/{db}{query}", &base[..path])
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

pub struct Fixture {
    pub store: Arc<PgStore>,
    pub ws: WorkspaceId,
    pub sms: ChannelAccountId,
    pub whatsapp: ChannelAccountId,
    // Last, so that the database is dropped after the store's connections.
    pub db: TestDb,
}

pub async fn fixture() -> Option<Fixture> {
    let db = test_db().await?;
    let store = Arc::new(PgStore::open(&db.url).await.expect("open the store"));
    let ws = workspace(&store, "Acme").await;
    let sms = account(&store, ws, Channel::Sms).await;
    let whatsapp = account(&store, ws, Channel::Whatsapp).await;
    Some(Fixture { store, ws, sms, whatsapp, db })
}

pub async fn workspace(store: &PgStore, name: &str) -> WorkspaceId {
    let ws = Workspace { id: WorkspaceId::new(), name: name.into(), created_at: T0 };
    store.create_workspace(&ws).await.unwrap();
    ws.id
}

pub async fn account(store: &PgStore, ws: WorkspaceId, channel: Channel) -> ChannelAccountId {
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
            content: Content::Text { text: format!("hello {to}") },
            send_at,
            expires_at: due_at.plus_seconds(3600),
            validity_seconds: 3600,
            metadata: BTreeMap::from([("order".to_string(), "A-17".to_string())]),
            client_reference: Some("ref-1".into()),
            provider_message_id: None,
            attempts: 0,
            error: None,
            sequence: 2,
            created_at: now,
            updated_at: now,
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
