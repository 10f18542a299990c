//! What the benchmark drives: a server it starts itself (the current executable as `parley
//! serve`, over a fresh SQLite file or a fresh PostgreSQL database, with a workspace whose
//! sandbox accounts answer and deliver at once), or a server that is already running.

use super::load::Endpoint;
use super::stats;
use anyhow::Context;
use parley_domain::{ApiKeyId, Channel, ChannelAccountId, Millis, Scope, Scopes, WorkspaceId};
use parley_store::{ApiKey, ChannelAccount, Store, Workspace};
use rand::Rng;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Server log lines kept for the report when something goes wrong.
const LOG_TAIL: usize = 20;
/// Variables that would make the child serve something else than what the bench prepared.
const CHILD_ENV_REMOVED: &[&str] = &[
    "PARLEY_CONFIG",
    "PARLEY_DATABASE_URL",
    "PARLEY_DATA_DIR",
    "PARLEY_LISTEN",
    "PARLEY_API",
    "PARLEY_WORKERS",
    "PARLEY_LOG_FORMAT",
    "PARLEY_LOG_LEVEL",
];

/// A server to benchmark and what is known about it.
pub struct Target {
    pub endpoint: Endpoint,
    /// `sqlite`, `postgres`, or `unknown` for a server started elsewhere without a database URL.
    pub backend: String,
    /// The store and workspace to count delivered messages in, when known.
    pub store: Option<Arc<dyn Store>>,
    pub workspace: Option<WorkspaceId>,
    /// The server's process id (for memory and CPU figures), when known.
    pub pid: Option<u32>,
    /// Whether the bench started the server itself.
    pub spawned: bool,
    server: Option<Child>,
    pub log: Arc<ServerLog>,
    pg: Option<(String, String)>,
    dir: Option<tempfile::TempDir>,
}

/// What the server wrote on stderr (JSON log lines at `warn` and above).
#[derive(Default)]
pub struct ServerLog {
    lines: Mutex<(u64, VecDeque<String>)>,
}

impl ServerLog {
    fn push(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            l.0 += 1;
            if l.1.len() == LOG_TAIL {
                l.1.pop_front();
            }
            l.1.push_back(line);
        }
    }

    /// Lines seen, and the last few.
    pub fn snapshot(&self) -> (u64, Vec<String>) {
        self.lines.lock().map(|l| (l.0, l.1.iter().cloned().collect())).unwrap_or_default()
    }
}

/// How the server stopped.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StopReport {
    pub seconds: f64,
    /// Stopped by SIGKILL after not stopping within 15 s of SIGTERM.
    pub killed: bool,
    pub exit: String,
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// `http://host:port[/prefix]` → the address to connect to, the Host header and the path of
/// `/v1/messages`.
pub async fn endpoint_for(url: &str, key: &str) -> anyhow::Result<Endpoint> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("'{url}' is not a URL"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "--url must start with http:// (the benchmark speaks plain HTTP/1.1)"
    );
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| format!("{host}:{port}"));
    Ok(Endpoint {
        addr,
        host: authority,
        path: format!("{}/v1/messages", uri.path().trim_end_matches('/')),
        authorization: format!("Bearer {key}"),
    })
}

fn new_secret() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let random: String = (0..32).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("pk_{random}")
}

/// A workspace whose sandbox accounts answer at once and deliver at once (no read receipts),
/// with rate limits far above what the bench pushes, and a key with `admin` (to register the
/// bench's webhook endpoints), `messages:write` and `messages:read`. Returns the key.
async fn prepare_workspace(store: &dyn Store) -> anyhow::Result<(WorkspaceId, String)> {
    let now = Millis::now();
    let workspace = Workspace { id: WorkspaceId::new(), name: "parley bench".into(), created_at: now };
    store.create_workspace(&workspace).await?;
    for channel in Channel::ALL {
        store
            .create_channel_account(&ChannelAccount {
                id: ChannelAccountId::new(),
                workspace_id: workspace.id,
                channel,
                provider: "sandbox".into(),
                name: format!("Bench sandbox {}", channel.as_str()),
                config: serde_json::json!({"latency_ms": 0, "receipt_latency_ms": 0, "read_receipts": false}),
                rate_limit_per_second: 100_000,
                max_in_flight: 10_000,
                is_default: true,
                created_at: now,
                updated_at: now,
                credentials: None,
                credentials_hint: None,
                deleted_at: None,
            })
            .await?;
    }
    let secret = new_secret();
    store
        .create_api_key(&ApiKey {
            id: ApiKeyId::new(),
            workspace_id: workspace.id,
            name: "parley bench".into(),
            prefix: secret[..11].to_string(),
            hash: parley_engine::hash_api_key(&secret),
            scopes: Scopes::new(vec![Scope::Admin, Scope::MessagesWrite, Scope::MessagesRead]),
            created_at: now,
            revoked_at: None,
        })
        .await?;
    Ok((workspace.id, secret))
}

async fn pg_connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.with_context(|| format!("cannot connect to {}", redact(url)))
}

impl Target {
    fn empty(endpoint: Endpoint) -> Target {
        Target {
            endpoint,
            backend: "unknown".into(),
            store: None,
            workspace: None,
            pid: None,
            spawned: false,
            server: None,
            log: Arc::default(),
            pg: None,
            dir: None,
        }
    }

    /// A server started elsewhere. Delivered messages can be counted when `database_url` and
    /// `workspace` are given.
    pub async fn external(
        url: &str,
        key: &str,
        database_url: Option<&str>,
        workspace: Option<&str>,
        pid: Option<u32>,
    ) -> anyhow::Result<Target> {
        let mut target = Target::empty(endpoint_for(url, key).await?);
        target.pid = pid;
        if let Some(db) = database_url {
            let store = parley_store::open(db).await.with_context(|| format!("cannot open {}", redact(db)))?;
            target.backend = store.backend().to_string();
            if let Some(raw) = workspace {
                let id = WorkspaceId::parse(raw)?;
                anyhow::ensure!(
                    store.get_workspace(id).await?.is_some(),
                    "there is no workspace {id} in that database"
                );
                target.workspace = Some(id);
            }
            target.store = Some(store);
        }
        Ok(target)
    }

    /// Start a server of our own over a fresh database: PostgreSQL when `admin_url` names a
    /// server (a database `parley_bench_<random>` is created on it), else SQLite in a temporary
    /// directory. Everything made is removed again by [`Target::cleanup`], also when starting
    /// fails half-way.
    pub async fn spawn(admin_url: Option<&str>) -> anyhow::Result<Target> {
        let placeholder = Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            host: String::new(),
            path: String::new(),
            authorization: String::new(),
        };
        let mut target = Target::empty(placeholder);
        target.spawned = true;
        match target.start(admin_url).await {
            Ok(()) => Ok(target),
            Err(e) => {
                let (_, tail) = target.log.snapshot();
                target.cleanup().await;
                if tail.is_empty() { Err(e) } else { Err(e.context(format!("the server said:\n{}", tail.join("\n")))) }
            }
        }
    }

    async fn start(&mut self, admin_url: Option<&str>) -> anyhow::Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("parley-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let data_dir = dir.path().to_path_buf();
        self.dir = Some(dir);
        let database_url = match admin_url {
            Some(admin) => {
                anyhow::ensure!(
                    admin.starts_with("postgres://") || admin.starts_with("postgresql://"),
                    "--database-url must be a postgres:// URL (SQLite is the default)"
                );
                let name = format!("parley_bench_{:016x}", rand::random::<u64>());
                let mut conn = pg_connect(admin).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("cannot create the database {name}"))?;
                use sqlx::Connection;
                let _ = conn.close().await;
                self.pg = Some((admin.to_string(), name.clone()));
                Some(parley_store::postgres::with_database(admin, &name))
            }
            None => None,
        };
        let store_url =
            database_url.clone().unwrap_or_else(|| format!("sqlite://{}", data_dir.join("parley.db").display()));
        let store =
            parley_store::open(&store_url).await.with_context(|| format!("cannot open {}", redact(&store_url)))?;
        self.backend = store.backend().to_string();
        let (workspace, key) = prepare_workspace(store.as_ref()).await.context("cannot prepare the bench workspace")?;
        self.store = Some(store);
        self.workspace = Some(workspace);

        let exe = std::env::current_exe().context("cannot find the parley executable")?;
        let mut command = Command::new(exe);
        command.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(&data_dir);
        command.arg("--log-format").arg("json");
        if let Some(url) = &database_url {
            command.arg("--database-url").arg(url);
        }
        for var in CHILD_ENV_REMOVED {
            command.env_remove(var);
        }
        // The temporary directory as working directory: no ./parley.toml is picked up.
        command.env("RUST_LOG", "warn").current_dir(&data_dir);
        // The bench drives one key far past the default per-key limit; the limiter still runs.
        command.env("PARLEY_RATE_LIMIT__PER_KEY_PER_SECOND", "1000000");
        command.env("PARLEY_RATE_LIMIT__PER_KEY_BURST", "1000000");
        // The bench's webhook receivers listen on 127.0.0.2, which the server refuses unless told.
        command.env("PARLEY_WEBHOOKS__ALLOW_NETWORKS", super::insight::ALLOW_NETWORKS);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().context("cannot start `parley serve`")?;
        self.pid = child.id();
        let stdout = child.stdout.take().context("no stdout of the server")?;
        let stderr = child.stderr.take().context("no stderr of the server")?;
        self.server = Some(child);
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.push(line);
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let listening = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("Parley is listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    return addr.parse::<SocketAddr>().with_context(|| format!("cannot read the address in '{line}'"));
                }
            }
            anyhow::bail!("the server exited before it listened")
        };
        let addr = tokio::time::timeout(START_TIMEOUT, listening)
            .await
            .map_err(|_| anyhow::anyhow!("the server did not listen within {} s", START_TIMEOUT.as_secs()))??;
        // Keep reading stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.endpoint = endpoint_for(&format!("http://{addr}"), &key).await?;
        Ok(())
    }

    /// Peak resident memory of the server so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        stats::status_kib(&status, "VmHWM")
    }

    /// Stop the server we started (SIGTERM; SIGKILL after 15 s), close the store, drop the
    /// PostgreSQL database and remove the temporary directory. Safe to call on a half-made target.
    pub async fn cleanup(&mut self) -> Option<StopReport> {
        let stop = match self.server.take() {
            Some(child) => Some(stop_server(child).await),
            None => None,
        };
        self.store = None;
        if let Some((admin, name)) = self.pg.take() {
            match pg_connect(&admin).await {
                Ok(mut conn) => {
                    if let Err(e) =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await
                    {
                        eprintln!("warning: could not drop the bench database {name}: {e}");
                    }
                    use sqlx::Connection;
                    let _ = conn.close().await;
                }
                Err(e) => eprintln!("warning: could not drop the bench database {name}: {e:#}"),
            }
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!("warning: could not remove {}: {e}", path.display());
            }
        }
        stop
    }
}

async fn stop_server(mut child: Child) -> StopReport {
    let began = Instant::now();
    if let Some(pid) = child.id() {
        // SIGTERM through kill(1): this crate has no unsafe code for libc::kill.
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
    }
    let (killed, status) = match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => (false, status),
        Err(_) => {
            let _ = child.start_kill();
            (true, child.wait().await)
        }
    };
    StopReport {
        seconds: began.elapsed().as_secs_f64(),
        killed,
        exit: match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown ({e})"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn endpoints() {
        let e = endpoint_for("http://127.0.0.1:8080", "pk_x").await.unwrap();
        assert_eq!(e.addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!((e.host.as_str(), e.path.as_str()), ("127.0.0.1:8080", "/v1/messages"));
        assert_eq!(e.authorization, "Bearer pk_x");
        let e = endpoint_for("http://127.0.0.1:9/parley/", "k").await.unwrap();
        assert_eq!(e.path, "/parley/v1/messages");
        assert!(endpoint_for("https://127.0.0.1", "k").await.is_err());
    }
}
