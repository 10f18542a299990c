//! What the process-level tests of the `parley` binary share: a `parley serve` child process
//! that is always killed when the test ends, a runner for the other commands with a deadline,
//! a load generator with many keep-alive clients, a poller that waits for messages to be
//! delivered, and a reader of the sandbox's submission ledger.
//!
//! Everything waits by polling against a deadline (never a bare sleep), and every deadline is
//! generous: CI runs these tests on a loaded 2-core machine beside other tests.

#![allow(dead_code)]

use parley_testkit::{Backend, TestDb};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_parley");

/// The sandbox ledger's file name in a data directory.
pub const LEDGER_FILE: &str = "sandbox-submissions.log";

/// How long a server may take to print its address (migrations on a loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The dispatcher's lease in the tests: the minimum, so that jobs a killed process held are
/// taken again after 10 s rather than 30 s.
pub const LEASE_SECONDS: u64 = 10;

/// The shutdown grace period the servers of these tests get.
pub const GRACE_SECONDS: u64 = 5;

/// A normal recipient: the sandbox accepts and delivers.
pub const RECIPIENT: &str = "+4915123456789";

/// Serialises the heavy tests of one test binary: `cargo test` runs the tests of a binary on
/// parallel threads, and several load tests at once on 2 cores only make each of them slow.
/// (nextest runs every test in its own process; there this lock changes nothing.)
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh database for a test: a SQLite file in `dir`'s data directory, or a new PostgreSQL
/// database that is dropped when this is dropped (also when the test panics).
pub struct Database {
    pub backend: Backend,
    /// `--database-url` for PostgreSQL; `None` for SQLite (the file lives in the data dir).
    pub url: Option<String>,
    pg: Option<TestDb>,
}

impl Database {
    /// `None` when PostgreSQL is asked for and there is none (outside CI; under `CI=true` the
    /// test kit panics instead).
    pub async fn new(backend: Backend) -> Option<Database> {
        match backend {
            Backend::Sqlite => Some(Database { backend, url: None, pg: None }),
            Backend::Postgres => {
                let db = TestDb::new(Backend::Postgres).await?;
                Some(Database { backend, url: Some(db.url.clone()), pg: Some(db) })
            }
        }
    }

    /// `--database-url URL` for PostgreSQL, nothing for SQLite.
    pub fn args(&self) -> Vec<String> {
        match &self.url {
            Some(url) => vec!["--database-url".into(), url.clone()],
            None => Vec::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(db) = self.pg.take() {
            // Async clean-up from a destructor: on a thread of its own with its own runtime, so
            // that it works whether or not the dropping thread is inside a runtime.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_secs(30), db.drop_database()).await;
                    });
                }
            })
            .join();
        }
    }
}

/// Create, before any `parley serve`, a workspace whose default sandbox account for SMS has
/// `sms_sandbox_config` (e.g. `{"latency_ms": 300}`; the API cannot change accounts yet), then
/// an admin key for it with `parley keys create`. Returns the key. `serve` then finds the
/// workspace and bootstraps nothing.
pub async fn prepare_workspace(db: &Database, data_dir: &Path, sms_sandbox_config: Value) -> String {
    use parley_domain::{Channel, ChannelAccountId, Millis, WorkspaceId};
    use parley_store::{ChannelAccount, Workspace};
    std::fs::create_dir_all(data_dir).expect("create the data directory");
    let url = db.url.clone().unwrap_or_else(|| format!("sqlite://{}", data_dir.join("parley.db").display()));
    {
        let store = parley_store::open(&url).await.expect("open the store");
        let now = Millis::now();
        let workspace = Workspace { id: WorkspaceId::new(), name: "test".into(), created_at: now };
        store.create_workspace(&workspace).await.expect("create the workspace");
        for channel in Channel::ALL {
            let account = ChannelAccount {
                id: ChannelAccountId::new(),
                workspace_id: workspace.id,
                channel,
                provider: "sandbox".into(),
                name: format!("Sandbox {}", channel.as_str()),
                config: if channel == Channel::Sms { sms_sandbox_config.clone() } else { json!({}) },
                rate_limit_per_second: 100_000,
                max_in_flight: 10_000,
                is_default: true,
                created_at: now,
                updated_at: now,
                credentials: None,
                credentials_hint: None,
                deleted_at: None,
            };
            store.create_channel_account(&account).await.expect("create a channel account");
        }
    }
    let data_arg = data_dir.to_str().expect("a UTF-8 path").to_string();
    let mut args = vec!["keys".to_string(), "create".into(), "--data-dir".into(), data_arg];
    args.extend(db.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tokio::task::block_in_place(|| run_cli(&args, &[], data_dir, Duration::from_secs(60)));
    assert!(out.status.success(), "parley keys create failed\n{}", out.describe());
    let key = out.stdout.trim().to_string();
    assert!(key.starts_with("pk_"), "parley keys create prints the secret\n{}", out.describe());
    key
}

/// `PARLEY_*` variables of the environment the tests run in must not leak into the children
/// (a `PARLEY_LISTEN` of the developer's shell would change what is tested).
fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PARLEY_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("RUST_LOG");
}

/// A running `parley serve`. Dropping it kills the process (SIGKILL) if it still runs.
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `sqlite` or `postgres`, as the server announced.
    pub backend: String,
    /// The admin key printed on the first start over an empty database.
    pub admin_key: Option<String>,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// What the server printed on stdout.
    stdout: Arc<Mutex<Vec<String>>>,
}

static SERVER_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// Start `parley serve --listen 127.0.0.1:0 --data-dir DATA_DIR [db args]` and wait until it
    /// listens. `env` adds environment variables. Its log (stderr) goes to a file beside
    /// `data_dir`, printed when a test fails.
    pub fn start(data_dir: &Path, db: &Database, env: &[(&str, &str)]) -> Server {
        std::fs::create_dir_all(data_dir).expect("create the data directory");
        let n = SERVER_COUNTER.fetch_add(1, Ordering::Relaxed);
        let log_path = data_dir
            .parent()
            .unwrap_or(data_dir)
            .join(format!("serve-{}-{n}.log", data_dir.file_name().and_then(|s| s.to_str()).unwrap_or("data")));
        let log = File::create(&log_path).expect("create the server log");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir).args(db.args());
        clean_env(&mut cmd);
        cmd.env("PARLEY_DISPATCHER__LEASE_SECONDS", LEASE_SECONDS.to_string())
            .env("PARLEY_DISPATCHER__IDLE_POLL_MS", "50")
            .env("PARLEY_DISPATCHER__SHUTDOWN_GRACE_SECONDS", GRACE_SECONDS.to_string())
            // These tests push thousands of sends through one key as fast as they can; the
            // per-key API limit has tests of its own.
            .env("PARLEY_RATE_LIMIT__PER_KEY_PER_SECOND", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // No `parley.toml` of the working directory may be picked up.
        cmd.current_dir(data_dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn parley serve");
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                // Keeps draining stdout for the life of the process.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = Server {
            child: Some(child),
            pid,
            base_url: String::new(),
            backend: String::new(),
            admin_key: None,
            data_dir: data_dir.to_path_buf(),
            log_path,
            stdout: lines,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("parley serve did not print its address within {START_TIMEOUT:?}\n{}", server.diagnostics());
            }
            match rx.recv_timeout(left.min(Duration::from_millis(250))) {
                Ok(line) => {
                    if let Some(key) = line.strip_prefix("Admin API key (shown once, store it now): ") {
                        server.admin_key = Some(key.trim().to_string());
                    }
                    if let Some(rest) = line.strip_prefix("Parley is listening on ") {
                        let (url, backend) = rest.split_once(' ').unwrap_or((rest, ""));
                        server.base_url = url.trim().to_string();
                        server.backend = backend.trim_matches(|c| c == '(' || c == ')').to_string();
                        return server;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = server.try_wait() {
                        panic!("parley serve exited with {status} before listening\n{}", server.diagnostics());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.wait_exit(Duration::from_secs(10));
                    panic!("parley serve closed stdout before listening (exit: {status:?})\n{}", server.diagnostics());
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The exit status, if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap it.
    pub fn kill9(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("the server process");
        let _ = child.kill();
        child.wait().expect("wait for the killed server")
    }

    /// SIGTERM, through `kill -TERM <pid>`.
    pub fn terminate(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed: {status}", self.pid);
    }

    /// Wait up to `within` for the process to end (polling).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for the exit; panics unless it exits 0 within `within`. Returns how
    /// long it took.
    pub fn stop_gracefully(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        self.terminate();
        match self.wait_exit(within) {
            Some(status) if status.success() => started.elapsed(),
            Some(status) => panic!("parley serve exited with {status} after SIGTERM\n{}", self.diagnostics()),
            None => panic!("parley serve did not exit within {within:?} of SIGTERM\n{}", self.diagnostics()),
        }
    }

    /// The lines the server printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The end of the server's log and its stdout, for failure messages.
    pub fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        format!(
            "--- stdout of parley serve (pid {}) ---\n{}\n--- last lines of {} ---\n{}",
            self.pid,
            self.stdout_lines().join("\n"),
            self.log_path.display(),
            tail.join("\n")
        )
    }

    /// The sandbox ledger of this server's data directory.
    pub fn ledger_path(&self) -> PathBuf {
        self.data_dir.join(LEDGER_FILE)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("{}", self.diagnostics());
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn describe(&self) -> String {
        format!("exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Run `parley ARGS` with `env` in `cwd` and wait for it (at most `within`, then it is killed
/// and the test fails).
pub fn run_cli(args: &[&str], env: &[(&str, &str)], cwd: &Path, within: Duration) -> CliOutput {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    clean_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn parley");
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().expect("stdout")));
    let err = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`parley {}` did not finish within {within:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                args.join(" "),
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOutput { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// An HTTP client with a pool of keep-alive connections.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .expect("http client")
}

/// Where the load goes: a server's base URL and a key.
#[derive(Clone, Debug)]
pub struct Target {
    pub base_url: String,
    pub key: String,
}

/// Counters a running load exposes, so that the test can act in the middle of it.
#[derive(Default)]
pub struct Progress {
    /// Requests answered 202.
    pub accepted: AtomicUsize,
    /// Set to stop: no new request is started (those in flight finish).
    pub stop: AtomicBool,
}

/// What a load ended with.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Ids of the messages answered 202, with the index of the target that accepted each.
    pub accepted: Vec<(String, usize)>,
    /// Requests that got no answer (connection refused or reset, timeout): the process died.
    pub transport_errors: usize,
    /// Answers other than 202: (status, body).
    pub rejected: Vec<(u16, String)>,
    /// Requests never started because the load was stopped.
    pub not_started: usize,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn accepted_ids(&self) -> HashSet<String> {
        self.accepted.iter().map(|(id, _)| id.clone()).collect()
    }
}

/// Send `total` text messages as fast as possible from `concurrency` clients, each on its own
/// keep-alive connection, client `c` talking to `targets[c % targets.len()]`. Stops starting
/// new requests when `progress.stop` is set.
pub async fn send_load(targets: Vec<Target>, total: usize, concurrency: usize, progress: Arc<Progress>) -> LoadReport {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<reqwest::Client> = targets.iter().map(|_| http_client()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..concurrency {
        let t = c % targets.len();
        let target = targets[t].clone();
        let http = clients[t].clone();
        let next = next.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut report = LoadReport::default();
            let url = format!("{}/v1/messages", target.base_url);
            loop {
                if progress.stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                let body = json!({"to": RECIPIENT, "channel": "sms", "content": {"type": "text", "text": format!("load #{i}")}});
                match http.post(&url).bearer_auth(&target.key).json(&body).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.bytes().await {
                            Ok(bytes) if status == 202 => {
                                let v: Value = serde_json::from_slice(&bytes).expect("a 202 body is JSON");
                                let id = v["id"].as_str().expect("a 202 body has an id").to_string();
                                report.accepted.push((id, t));
                                progress.accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(bytes) => report.rejected.push((status, String::from_utf8_lossy(&bytes).into_owned())),
                            // The answer was cut off: the message may or may not exist.
                            Err(_) => report.transport_errors += 1,
                        }
                    }
                    Err(_) => report.transport_errors += 1,
                }
            }
            report
        });
    }
    let mut report = LoadReport::default();
    while let Some(part) = tasks.join_next().await {
        let part = part.expect("a load task panicked");
        report.accepted.extend(part.accepted);
        report.transport_errors += part.transport_errors;
        report.rejected.extend(part.rejected);
    }
    let started_requests = next.load(Ordering::SeqCst).min(total);
    report.not_started = total - started_requests;
    report.elapsed = started.elapsed();
    report
}

/// Poll (bounded) until `progress.accepted >= n`; false if `within` passed or `done` is set.
pub async fn wait_for_accepted(progress: &Progress, n: usize, within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if progress.accepted.load(Ordering::SeqCst) >= n {
            return true;
        }
        if done() {
            return progress.accepted.load(Ordering::SeqCst) >= n;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// `GET path` with `key`, as JSON; `None` on a transport error or a non-200 answer (the caller
/// polls again).
pub async fn get_json(http: &reqwest::Client, url: &str, key: &str) -> Option<Value> {
    let response = http.get(url).bearer_auth(key).send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

/// The ids of every message of the workspace with `status`, paging through the whole list.
pub async fn ids_with_status(http: &reqwest::Client, target: &Target, status: &str) -> Option<HashSet<String>> {
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    for _page in 0..1_000 {
        let mut url = format!("{}/v1/messages?status={status}&limit=1000", target.base_url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get_json(http, &url, &target.key).await?;
        for m in page["data"].as_array()? {
            ids.insert(m["id"].as_str()?.to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Some(ids),
        }
    }
    panic!("more than 1,000 pages of {status} messages");
}

/// How many messages of the workspace are in each state.
pub async fn status_counts(http: &reqwest::Client, target: &Target) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut cursor: Option<String> = None;
    for _page in 0..1_000 {
        let mut url = format!("{}/v1/messages?limit=1000", target.base_url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let Some(page) = get_json(http, &url, &target.key).await else { break };
        for m in page["data"].as_array().into_iter().flatten() {
            *counts.entry(m["status"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    counts
}

/// How long [`wait_all_delivered`] waits without any new delivery before it gives up: longer
/// than a lease (10 s), the lease margin and a few retries on a loaded machine.
pub const STALL: Duration = Duration::from_secs(45);

/// Messages that did not reach `delivered` in time.
#[derive(Debug)]
pub struct Undelivered {
    pub missing: Vec<String>,
    /// Counts by status, a few examples with their timelines.
    pub description: String,
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// Poll until every message in `ids` is `delivered`; returns how long it took, or what is
/// missing after `within`.
pub async fn wait_all_delivered(
    target: &Target,
    ids: &HashSet<String>,
    within: Duration,
) -> Result<Duration, Undelivered> {
    let http = http_client();
    let started = Instant::now();
    let deadline = started + within;
    let mut missing: Vec<String> = ids.iter().cloned().collect();
    let mut last_progress = Instant::now();
    let mut stalled = false;
    loop {
        if let Some(delivered) = ids_with_status(&http, target, "delivered").await {
            let still: Vec<String> = ids.iter().filter(|id| !delivered.contains(*id)).cloned().collect();
            if still.is_empty() {
                return Ok(started.elapsed());
            }
            if still.len() < missing.len() {
                last_progress = Instant::now();
            }
            missing = still;
        }
        if Instant::now() >= deadline {
            break;
        }
        // Nothing delivered for longer than any lease, retry or receipt takes: give up early.
        if last_progress.elapsed() >= STALL {
            stalled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    missing.sort();
    let counts = status_counts(&http, target).await;
    let mut samples = String::new();
    for id in missing.iter().take(5) {
        let m = get_json(&http, &format!("{}/v1/messages/{id}", target.base_url), &target.key).await;
        let line = match m {
            Some(m) => {
                let events: Vec<String> = m["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!("{}@{}", e["type"].as_str().unwrap_or("?"), e["recorded_at"].as_str().unwrap_or("?"))
                    })
                    .collect();
                format!("status {}, attempts {}, events [{}]", m["status"], m["attempts"], events.join(", "))
            }
            None => "(not readable)".to_string(),
        };
        samples.push_str(&format!("\n  {id}: {line}"));
    }
    let description = format!(
        "{} of {} messages that got a 202 were not delivered within {:?}{}; all messages of the workspace by \
         status: {counts:?}; some of them:{samples}",
        missing.len(),
        ids.len(),
        started.elapsed(),
        if stalled { format!(" (none for the last {STALL:?})") } else { String::new() },
    );
    Err(Undelivered { missing, description })
}

/// The sandbox's record of submissions, read from one or more ledger files.
#[derive(Debug, Default)]
pub struct Ledger {
    /// `accepted` lines per message id.
    pub accepted: HashMap<String, usize>,
    pub duplicates: usize,
    /// `duplicate` lines per message id.
    pub duplicated: HashMap<String, usize>,
    pub transient: usize,
    pub permanent: usize,
    pub lines: usize,
}

impl Ledger {
    /// Read a ledger file (a missing file is an empty ledger). Every line must be
    /// `<message_id> <attempt> <outcome> <account>`: anything else (two appends interleaved, a
    /// torn line) fails the test. These loads send each message on one account, so a message id
    /// accepted twice is a message sent twice.
    pub fn read(path: &Path) -> Ledger {
        let mut ledger = Ledger::default();
        ledger.add(path);
        ledger
    }

    /// Add the lines of another ledger file.
    pub fn add(&mut self, path: &Path) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        assert!(text.is_empty() || text.ends_with('\n'), "{}: the last line is torn", path.display());
        for (n, line) in text.lines().enumerate() {
            let parts: Vec<&str> = line.split(' ').collect();
            let ok = parts.len() == 4
                && parts[0].starts_with("msg_")
                && parts[1].parse::<i32>().is_ok()
                && parts[3].starts_with("cha_");
            assert!(ok, "{}:{}: not a ledger line: {line:?}", path.display(), n + 1);
            self.lines += 1;
            match parts[2] {
                "accepted" => *self.accepted.entry(parts[0].to_string()).or_insert(0) += 1,
                "duplicate" => {
                    self.duplicates += 1;
                    *self.duplicated.entry(parts[0].to_string()).or_insert(0) += 1;
                }
                "transient" => self.transient += 1,
                "permanent" => self.permanent += 1,
                other => panic!("{}:{}: unknown outcome {other:?}", path.display(), n + 1),
            }
        }
    }

    pub fn accepted_lines(&self) -> usize {
        self.accepted.values().sum()
    }

    /// Ids with more than one `accepted` line: exactly-once broken.
    pub fn accepted_twice(&self) -> Vec<(String, usize)> {
        let mut twice: Vec<_> = self.accepted.iter().filter(|(_, n)| **n > 1).map(|(id, n)| (id.clone(), *n)).collect();
        twice.sort();
        twice
    }

    /// Check exactly-once for `ids` (each has exactly one `accepted` line) and that no id at all
    /// was accepted twice; the error names a few offenders.
    pub fn check_exactly_once(&self, ids: &HashSet<String>) -> Result<(), String> {
        let mut problems = Vec::new();
        let twice = self.accepted_twice();
        if !twice.is_empty() {
            problems.push(format!(
                "{} message ids were accepted by the sandbox more than once, e.g. {:?}",
                twice.len(),
                &twice[..twice.len().min(10)]
            ));
        }
        let mut never: Vec<&String> = ids.iter().filter(|id| !self.accepted.contains_key(*id)).collect();
        never.sort();
        if !never.is_empty() {
            problems.push(format!(
                "{} of {} messages that got a 202 were never accepted by the sandbox, e.g. {:?}",
                never.len(),
                ids.len(),
                &never[..never.len().min(10)]
            ));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// [`Ledger::check_exactly_once`], panicking.
    pub fn assert_exactly_once(&self, ids: &HashSet<String>) {
        if let Err(e) = self.check_exactly_once(ids) {
            panic!("{e}");
        }
    }
}
