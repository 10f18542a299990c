//! The `parley` binary's commands as a user runs them: start-up configuration errors name the
//! bad key, and `migrate`, `keys create|list|revoke` and `send` work against a running server
//! (on SQLite, and on PostgreSQL with `PARLEY_TEST_POSTGRES_URL`).

mod common;

use common::*;
use parley_testkit::Backend;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `parley serve` expecting it to refuse to start; returns its stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> String {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let out = run_cli(&all, env, cwd, CLI_TIMEOUT);
    assert!(!out.status.success(), "`parley {}` with {env:?} should not start\n{}", all.join(" "), out.describe());
    assert!(!out.stdout.contains("Parley is listening"), "{}", out.describe());
    assert!(out.stderr.contains("error"), "the refusal is reported on stderr\n{}", out.describe());
    out.stderr
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let base = ["--listen", "127.0.0.1:0", "--data-dir", data_arg];

    let err = refused_start(&["--data-dir", data_arg], &[("PARLEY_LISTEN", "nonsense")], dir.path());
    assert!(err.contains("listen"), "PARLEY_LISTEN=nonsense must name 'listen': {err}");

    let mut args = base.to_vec();
    args.extend(["--database-url", "mysql://x"]);
    let err = refused_start(&args, &[], dir.path());
    assert!(err.contains("database_url"), "a mysql:// URL must name 'database_url': {err}");

    let err = refused_start(&base, &[("PARLEY_DATABASE_URL", "mysql://x")], dir.path());
    assert!(err.contains("database_url"), "PARLEY_DATABASE_URL=mysql://x must name 'database_url': {err}");

    let config = dir.path().join("custom.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlistn = \"typo\"\n").expect("write the config file");
    let mut args = base.to_vec();
    args.extend(["--config", config.to_str().expect("utf-8 path")]);
    let err = refused_start(&args, &[], dir.path());
    assert!(err.contains("listn"), "an unknown key in the --config file must be named: {err}");

    std::fs::write(&config, "[dispatcher]\nclaim_bach = 5\n").expect("write the config file");
    let err = refused_start(&args, &[], dir.path());
    assert!(err.contains("claim_bach"), "an unknown nested key must be named: {err}");

    std::fs::write(&config, "[dispatcher]\nlease_seconds = 1\n").expect("write the config file");
    let err = refused_start(&args, &[], dir.path());
    assert!(err.contains("dispatcher.lease_seconds"), "an out-of-range value must be named: {err}");

    let err = refused_start(&base, &[("PARLEY_DISPATCHER__MAX_IN_FLIGHT", "lots")], dir.path());
    assert!(err.contains("max_in_flight"), "a value of the wrong type must be named: {err}");

    let missing = dir.path().join("missing.toml");
    let mut args = base.to_vec();
    args.extend(["--config", missing.to_str().expect("utf-8 path")]);
    let err = refused_start(&args, &[], dir.path());
    assert!(err.contains("missing.toml"), "a missing --config file must be named: {err}");

    // `parley.toml` in the working directory is read by default.
    std::fs::write(dir.path().join("parley.toml"), "log_formt = \"json\"\n").expect("write parley.toml");
    let err = refused_start(&base, &[], dir.path());
    assert!(err.contains("log_formt"), "an unknown key in ./parley.toml must be named: {err}");

    assert!(!data.join("parley.db").exists(), "no database is created when the configuration is refused");
}

/// `parley ARGS` expecting success; returns its stdout and stderr.
fn cli_ok(args: &[String], cwd: &Path) -> CliOutput {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_cli(&args, &[], cwd, CLI_TIMEOUT);
    assert!(out.status.success(), "`parley {}` failed\n{}", args.join(" "), out.describe());
    out
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

async fn round_trip(backend: Backend) {
    let Some(db) = Database::new(backend).await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data directory");
    let mut db_args = strings(&["--data-dir", data.to_str().expect("utf-8 path")]);
    db_args.extend(db.args());
    let with_db = |args: &[&str]| {
        let mut all = strings(args);
        all.extend(db_args.iter().cloned());
        all
    };

    tokio::task::block_in_place(|| {
        // `migrate` on an empty database, before anything else.
        let out = cli_ok(&with_db(&["migrate"]), dir.path());
        assert!(out.stdout.contains(db.name()), "migrate names the backend: {}", out.describe());
        if backend == Backend::Sqlite {
            assert!(data.join("parley.db").exists(), "migrate creates the SQLite database");
        }
    });

    let mut server = tokio::task::block_in_place(|| Server::start(&data, &db, &[]));
    let admin = server.admin_key.clone().expect("migrate creates no workspace, so the first serve prints a key");
    let http = http_client();

    let (secret, key_id) = tokio::task::block_in_place(|| {
        // `migrate` again, with the server running: nothing to do, still exit 0.
        cli_ok(&with_db(&["migrate"]), dir.path());
        let out = cli_ok(
            &with_db(&["keys", "create", "--name", "round trip", "--scopes", "messages:write,messages:read"]),
            dir.path(),
        );
        let secret = out.stdout.trim().to_string();
        assert!(secret.starts_with("pk_") && !secret.contains(char::is_whitespace), "{}", out.describe());
        let key_id = out
            .stderr
            .split_whitespace()
            .find(|w| w.starts_with("key_"))
            .unwrap_or_else(|| panic!("keys create names the key id on stderr\n{}", out.describe()))
            .to_string();
        let out = cli_ok(&with_db(&["keys", "list"]), dir.path());
        let line = out.stdout.lines().find(|l| l.contains(&key_id)).unwrap_or_else(|| panic!("{}", out.describe()));
        assert!(line.contains("round trip") && line.contains("active"), "{line}");
        assert!(!out.stdout.contains(&secret), "keys list never shows a secret");
        assert!(out.stdout.lines().count() >= 2, "the bootstrap key is listed too\n{}", out.describe());
        (secret, key_id)
    });

    // `parley send` with the new key, then the message is delivered.
    let base_url = server.base_url.clone();
    let send = |key: &str, to: &str| {
        let args = ["send", "--url", &base_url, "--key", key, "--to", to, "--text", "hello from the CLI"];
        tokio::task::block_in_place(|| run_cli(&args, &[], dir.path(), CLI_TIMEOUT))
    };
    let out = send(&secret, "+49 151 23456789");
    assert!(out.status.success(), "parley send failed\n{}", out.describe());
    let message: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.describe()));
    let id = message["id"].as_str().expect("the message id").to_string();
    assert_eq!(message["to"], RECIPIENT, "the number is normalised to E.164");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = get_json(&http, &server.url(&format!("/v1/messages/{id}")), &admin).await;
        if m.as_ref().is_some_and(|m| m["status"] == "delivered") {
            break;
        }
        assert!(Instant::now() < deadline, "{id} was not delivered within 60 s: {m:?}\n{}", server.diagnostics());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A bad number: `send` exits non-zero with the problem's code.
    let out = send(&secret, "12");
    assert!(!out.status.success(), "{}", out.describe());
    assert!(out.stderr.contains("invalid_phone_number"), "{}", out.describe());

    // Revoke from the command line while the server runs: the server refuses the key within its
    // authentication cache time (a few seconds).
    tokio::task::block_in_place(|| {
        let out = cli_ok(&with_db(&["keys", "revoke", &key_id]), dir.path());
        assert!(out.stdout.contains(&key_id), "{}", out.describe());
        let out = cli_ok(&with_db(&["keys", "list"]), dir.path());
        let line = out.stdout.lines().find(|l| l.contains(&key_id)).unwrap_or_else(|| panic!("{}", out.describe()));
        assert!(line.contains("revoked"), "{line}");
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = http.get(server.url("/v1/messages?limit=1")).bearer_auth(&secret).send().await.map(|r| r.status());
        if status.as_ref().is_ok_and(|s| s.as_u16() == 401) {
            break;
        }
        assert!(Instant::now() < deadline, "the revoked key still works after 30 s: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = send(&secret, RECIPIENT);
    assert!(!out.status.success() && out.stderr.contains("401"), "a revoked key cannot send\n{}", out.describe());
    tokio::task::block_in_place(|| {
        let out = run_cli(
            &with_db(&["keys", "revoke", "key_nonsense"]).iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
            dir.path(),
            CLI_TIMEOUT,
        );
        assert!(!out.status.success(), "revoking a malformed key id fails\n{}", out.describe());
    });

    tokio::task::block_in_place(|| server.stop_gracefully(Duration::from_secs(GRACE_SECONDS + 25)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_send_and_migrate_round_trip_sqlite() {
    round_trip(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_send_and_migrate_round_trip_postgres() {
    round_trip(Backend::Postgres).await;
}
