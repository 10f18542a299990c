//! Crash safety and graceful shutdown of the `parley` binary, on SQLite and on PostgreSQL
//! (`PARLEY_TEST_POSTGRES_URL`; skipped with a note when unset, failing under `CI=true`).
//!
//! Each test drives a real `parley serve` process with 32 keep-alive clients, interrupts it in
//! the middle of the load — `kill -9`, or SIGTERM — starts it again over the same data, and
//! checks the promise of a 202: every message that got one is delivered, and the sandbox carrier
//! received it exactly once (one `accepted` line in its submission ledger; a `duplicate` line is
//! a re-send after the crash that the carrier refused, which is allowed and reported).
//!
//! `kill -9` hits a sandbox that answers at once, so the crash falls between "the carrier took
//! it" and "Parley recorded that" for some messages: the re-sends after the restart must all be
//! refused as duplicates. SIGTERM hits a sandbox that takes 300 ms per send, so that hundreds of
//! sends are in flight: they must finish within the grace period, the process must exit 0, and
//! nothing may be sent again after the restart.

mod common;

use common::*;
use parley_testkit::Backend;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const TOTAL: usize = 5_000;
const CONCURRENCY: usize = 32;
/// How long the messages that got a 202 may take to be delivered after the restart. Jobs the
/// killed process held come back when their lease (10 s here) runs out.
const DELIVERY_BOUND: Duration = Duration::from_secs(120);
/// How long the sandbox takes to answer a send in the SIGTERM test.
const SEND_LATENCY: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interruption {
    /// SIGKILL: nothing is flushed, in-flight work is lost and must be recovered.
    Kill,
    /// SIGTERM: the server drains in-flight requests and sends and exits 0.
    Terminate,
}

async fn interrupted_load(backend: Backend, interruption: Interruption) {
    let _heavy = HEAVY.lock().await;
    let Some(db) = Database::new(backend).await else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");

    // First run: load, interrupt in the middle. For SIGTERM the sandbox answers each send after
    // SEND_LATENCY, so that hundreds of sends are in flight when the signal arrives.
    let (mut first, key) = match interruption {
        Interruption::Kill => {
            let first = tokio::task::block_in_place(|| Server::start(&data_dir, &db, &[]));
            let key = first.admin_key.clone().expect("the first start over an empty database prints an admin key");
            (first, key)
        }
        Interruption::Terminate => {
            let config = json!({"latency_ms": SEND_LATENCY.as_millis() as u64});
            let key = prepare_workspace(&db, &data_dir, config).await;
            let first = tokio::task::block_in_place(|| Server::start(&data_dir, &db, &[]));
            assert_eq!(first.admin_key, None, "serve bootstraps nothing over an existing workspace");
            (first, key)
        }
    };
    assert_eq!(first.backend, db.name(), "the server runs on the backend it was given");
    let target = Target { base_url: first.base_url.clone(), key: key.clone() };
    let progress = Arc::new(Progress::default());
    let load = tokio::spawn(send_load(vec![target], TOTAL, CONCURRENCY, progress.clone()));
    let reached = wait_for_accepted(&progress, TOTAL / 2, Duration::from_secs(120), || load.is_finished()).await;
    assert!(
        reached,
        "the load did not reach {} accepted messages (it has {})\n{}",
        TOTAL / 2,
        progress.accepted.load(Ordering::SeqCst),
        first.diagnostics()
    );
    let interrupted_at = progress.accepted.load(Ordering::SeqCst);
    let mut shutdown_took = None;
    match interruption {
        Interruption::Kill => {
            let status = first.kill9();
            progress.stop.store(true, Ordering::SeqCst);
            assert!(!status.success(), "a SIGKILLed process does not exit 0: {status}");
        }
        Interruption::Terminate => {
            first.terminate();
            let sent_at = Instant::now();
            progress.stop.store(true, Ordering::SeqCst);
            // The process finishes in-flight sends within the grace period; draining HTTP
            // connections and flushing outcomes may add a little on a loaded machine.
            let bound = Duration::from_secs(GRACE_SECONDS + 15);
            let status = tokio::task::block_in_place(|| first.wait_exit(bound));
            let took = sent_at.elapsed();
            match status {
                Some(status) => {
                    assert!(
                        status.success(),
                        "after SIGTERM parley serve exited with {status}\n{}",
                        first.diagnostics()
                    )
                }
                None => panic!("parley serve did not exit within {bound:?} of SIGTERM\n{}", first.diagnostics()),
            }
            shutdown_took = Some(took);
        }
    }
    let report = load.await.expect("the load task");
    let load_done = started.elapsed();
    assert!(
        report.rejected.is_empty(),
        "{} requests were answered with something else than 202 before the interruption, e.g. {:?}",
        report.rejected.len(),
        &report.rejected[..report.rejected.len().min(5)]
    );
    let ids = report.accepted_ids();
    assert_eq!(ids.len(), report.accepted.len(), "every 202 carries a new message id");
    assert!(ids.len() >= TOTAL / 2, "{} messages got a 202", ids.len());
    let before_restart = Ledger::read(&first.ledger_path());
    drop(first);

    // Second run over the same data: no new admin key; the old one still works.
    let mut second = tokio::task::block_in_place(|| Server::start(&data_dir, &db, &[]));
    assert_eq!(second.admin_key, None, "a restart over an existing workspace prints no key");
    let target = Target { base_url: second.base_url.clone(), key };
    // Check everything before failing, so that one run tells the whole story.
    let mut failures = Vec::new();
    let delivered = wait_all_delivered(&target, &ids, DELIVERY_BOUND).await;
    let http = http_client();
    let counts = status_counts(&http, &target).await;
    let stopped_in = tokio::task::block_in_place(|| second.stop_gracefully(Duration::from_secs(GRACE_SECONDS + 25)));

    // Exactly once: read the ledger after the last process has exited.
    let ledger = Ledger::read(&second.ledger_path());
    if let Err(e) = ledger.check_exactly_once(&ids) {
        failures.push(e);
    }
    match &delivered {
        Ok(_) => {}
        Err(undelivered) => {
            let resent = undelivered.missing.iter().filter(|id| ledger.duplicated.contains_key(*id)).count();
            let accepted_before =
                undelivered.missing.iter().filter(|id| before_restart.accepted.contains_key(*id)).count();
            failures.push(format!(
                "{}; of these, {accepted_before} had been accepted by the sandbox before the {interruption:?} and \
                 {resent} were sent again after the restart (and refused as duplicates)",
                undelivered.description
            ));
        }
    }
    if interruption == Interruption::Terminate && ledger.duplicates > 0 {
        // A graceful stop finishes or gives back every send and records its outcome, so
        // nothing is handed to the carrier again after the restart.
        failures.push(format!("{} sends were repeated after a graceful shutdown", ledger.duplicates));
    }
    let extra = ledger.accepted.keys().filter(|id| !ids.contains(*id)).count();
    eprintln!(
        "{backend} / {interruption:?}: interrupted after {interrupted_at} 202s ({load_done:?} into the test); \
         load: {} accepted, {} transport errors, {} not started, {:?}; shutdown took {shutdown_took:?}; \
         sandbox before the restart: {} accepted, {} lines; after the restart: delivered {:?}; \
         messages by status: {counts:?}; ledger: {} accepted lines, {} duplicates, {} transient; \
         {extra} accepted ids without a 202 (committed, answer lost); second server stopped in {stopped_in:?}; \
         whole test {:?}",
        report.accepted.len(),
        report.transport_errors,
        report.not_started,
        report.elapsed,
        before_restart.accepted_lines(),
        before_restart.lines,
        delivered.as_ref().map_err(|u| format!("{} missing", u.missing.len())),
        ledger.accepted_lines(),
        ledger.duplicates,
        ledger.transient,
        started.elapsed(),
        backend = db.name(),
    );
    assert!(
        failures.is_empty(),
        "{} ({interruption:?}):\n{}\n{}",
        db.name(),
        failures.join("\n"),
        second.diagnostics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_the_middle_of_a_load_sqlite() {
    interrupted_load(Backend::Sqlite, Interruption::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_the_middle_of_a_load_postgres() {
    interrupted_load(Backend::Postgres, Interruption::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_in_the_middle_of_a_load_sqlite() {
    interrupted_load(Backend::Sqlite, Interruption::Terminate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_in_the_middle_of_a_load_postgres() {
    interrupted_load(Backend::Postgres, Interruption::Terminate).await;
}
