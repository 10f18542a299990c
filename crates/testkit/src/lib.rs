//! What Parley's integration tests share.
//!
//! [`TestApp::start`] runs the real server on `127.0.0.1:0` over a fresh database — a SQLite
//! file in a temporary directory, or a new PostgreSQL database on the server that
//! `PARLEY_TEST_POSTGRES_URL` names — with a bootstrapped workspace and its admin key.
//! [`on_both_backends!`] turns one async test function into a test per backend. Without
//! `PARLEY_TEST_POSTGRES_URL` the PostgreSQL half is skipped with a note, unless `CI=true`, where
//! it fails: CI must never pass by skipping.

pub mod fake_graph;
pub mod fake_rbm;
pub mod fake_twilio;
pub mod receiver;
pub mod smsc;

use parley_domain::WorkspaceId;
use parley_engine::{Engine, EngineConfig};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test, removed when dropped (SQLite) or on [`TestDb::drop_database`].
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

/// The PostgreSQL server for tests, if there is one.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("PARLEY_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but PARLEY_TEST_POSTGRES_URL is not set: PostgreSQL tests must not be skipped on CI");
            }
            eprintln!("note: PARLEY_TEST_POSTGRES_URL is not set; skipping the PostgreSQL half of this test");
            None
        }
    }
}

impl TestDb {
    /// `None` when the backend is PostgreSQL and no server is configured (outside CI).
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("parley.db").display());
                Some(TestDb { url, backend, _dir: Some(dir), pg: None })
            }
            Backend::Postgres => {
                let admin = postgres_admin_url()?;
                let name = format!("parley_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = connect(&admin).await;
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
                let url = parley_store::postgres::with_database(&admin, &name);
                Some(TestDb { url, backend, _dir: None, pg: Some((admin, name)) })
            }
        }
    }

    /// A directory that lives as long as this database (SQLite only), for other files of a test.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// Remove a PostgreSQL test database (SQLite files go with the temporary directory).
    pub async fn drop_database(&self) {
        if let Some((admin, name)) = &self.pg {
            let mut conn = connect(admin).await;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
        }
    }
}

async fn connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.expect("connect to the test PostgreSQL server")
}

/// A running Parley: real HTTP server on a loopback port, real engine, real database.
/// Engine settings for webhook tests: the receivers' address (127.0.0.2, see [`receiver`]) is
/// allowed by the SSRF guard, and endpoints are picked up and polled quickly.
/// The key that seals credentials in tests: fixed, so that a restarted app opens what the
/// previous one sealed.
pub fn test_sealing_key() -> parley_store::seal::SealingKey {
    parley_store::seal::SealingKey::from_base64("cGFybGV5LXRlc3Qtc2VhbGluZy1rZXktMzItYnl0ZXM=").expect("test key")
}

pub fn webhook_test_config(config: &mut EngineConfig) {
    let cidr = receiver::RECEIVER_CIDR.parse().expect("CIDR");
    config.webhooks.policy = parley_engine::webhooks::UrlPolicy::new(vec![cidr]);
    config.webhooks.refresh = Duration::from_millis(100);
    config.webhooks.poll = Duration::from_millis(20);
    config.webhooks.timeout = Duration::from_secs(5);
}

pub struct TestApp {
    pub base_url: String,
    pub admin_key: String,
    pub workspace_id: WorkspaceId,
    pub engine: Engine,
    pub http: reqwest::Client,
    pub db: Arc<TestDb>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::start_with(backend, |_| {}).await
    }

    /// Start with the engine configuration adjusted by `configure`.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut EngineConfig)) -> Option<TestApp> {
        let db = Arc::new(TestDb::new(backend).await?);
        Some(Self::start_on(db, configure).await)
    }

    /// Start with the server's `options` (e.g. metrics switched off).
    pub async fn start_with_server(backend: Backend, options: parley_server::ServerOptions) -> Option<TestApp> {
        let db = Arc::new(TestDb::new(backend).await?);
        Some(Self::start_full(db, |_| {}, options).await)
    }

    /// Start on an existing database (to restart over the same data).
    pub async fn start_on(db: Arc<TestDb>, configure: impl FnOnce(&mut EngineConfig)) -> TestApp {
        Self::start_full(db, configure, parley_server::ServerOptions::default()).await
    }

    /// Start on `db`, with the engine configuration adjusted by `configure` and the server's `options`.
    pub async fn start_full(
        db: Arc<TestDb>,
        configure: impl FnOnce(&mut EngineConfig),
        options: parley_server::ServerOptions,
    ) -> TestApp {
        let store = parley_store::open(&db.url).await.expect("open the test store");
        // Bound first, so that callback URLs given to providers name this server.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let mut config = EngineConfig {
            idle_poll_ms: 20,
            shutdown_grace_ms: 2_000,
            public_url: base_url.clone(),
            sealing_key: Some(test_sealing_key()),
            ..Default::default()
        };
        configure(&mut config);
        let engine = Engine::new(store, config).await.expect("engine");
        let (workspace_id, admin_key) = match engine.bootstrap().await.expect("bootstrap") {
            Some((w, k)) => (w.id, k.secret),
            None => {
                let w = engine.store().list_workspaces().await.expect("workspaces")[0].clone();
                let k =
                    engine.create_api_key(w.id, "test admin", vec![parley_domain::Scope::Admin]).await.expect("key");
                (w.id, k.secret)
            }
        };
        engine.start().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_engine = engine.clone();
        let server = tokio::spawn(async move {
            let _ = parley_server::serve_with(server_engine, listener, options, async {
                let _ = stopped.await;
            })
            .await;
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        TestApp { base_url, admin_key, workspace_id, engine, http, db, stop: Some(stop), server: Some(server) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A request with the admin key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(&self.admin_key)
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path).json(body).send().await.expect("POST")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path).send().await.expect("GET")
    }

    /// `GET path` expecting 200, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON body")
    }

    /// Send a text message over SMS to `to`; returns the 202 body.
    pub async fn send_text(&self, to: &str, text: &str) -> serde_json::Value {
        let response = self
            .post(
                "/v1/messages",
                &serde_json::json!({"to": to, "channel": "sms", "content": {"type": "text", "text": text}}),
            )
            .await;
        assert_eq!(response.status(), 202, "send to {to}");
        response.json().await.expect("JSON body")
    }

    /// Poll `GET /v1/messages/{id}` until its status is one of `states` (or panic after `within`).
    pub async fn wait_for_status(&self, id: &str, states: &[&str], within: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = self.get_json(&format!("/v1/messages/{id}")).await;
            if states.iter().any(|s| m["status"] == *s) {
                return m;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("message {id} did not reach {states:?} within {within:?}; it is {}", m["status"]);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stop the server and the engine (in-flight work finishes or is given back). The database
    /// stays, for [`TestApp::start_on`].
    pub async fn stop(mut self) -> Arc<TestDb> {
        self.shutdown().await;
        self.db.clone()
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.engine.shutdown().await;
    }

    /// Stop and remove the database.
    pub async fn finish(mut self) {
        self.shutdown().await;
        self.db.drop_database().await;
    }
}

/// Turn async test functions `async fn name(backend: Backend)` into one test per backend:
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}
