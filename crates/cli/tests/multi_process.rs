//! Two `parley serve` processes on one PostgreSQL database share the dispatch queue without ever
//! handing a message to the carrier twice. Needs `PARLEY_TEST_POSTGRES_URL` (skipped with a note
//! when unset, failing under `CI=true`).
//!
//! Each process has its own data directory and so its own sandbox ledger. The sandbox's
//! "already accepted" memory is per process, so a message sent by both processes shows up as an
//! `accepted` line in each ledger: the check is on the union of both.

mod common;

use common::*;
use parley_testkit::Backend;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOTAL: usize = 10_000;
const CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_database_send_each_message_once() {
    let _heavy = HEAVY.lock().await;
    let Some(db) = Database::new(Backend::Postgres).await else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temporary directory");

    // One after the other, so that exactly one of them bootstraps the workspace.
    let mut a = tokio::task::block_in_place(|| Server::start(&dir.path().join("a"), &db, &[]));
    let key = a.admin_key.clone().expect("the first process over an empty database prints an admin key");
    let mut b = tokio::task::block_in_place(|| Server::start(&dir.path().join("b"), &db, &[]));
    assert_eq!(b.admin_key, None, "the second process finds the workspace and prints no key");
    assert_eq!((a.backend.as_str(), b.backend.as_str()), ("postgres", "postgres"));
    let targets = vec![
        Target { base_url: a.base_url.clone(), key: key.clone() },
        Target { base_url: b.base_url.clone(), key: key.clone() },
    ];

    let report = send_load(targets.clone(), TOTAL, CONCURRENCY, Arc::new(Progress::default())).await;
    assert!(
        report.rejected.is_empty() && report.transport_errors == 0,
        "every request must get a 202: {} transport errors, {} other answers, e.g. {:?}",
        report.transport_errors,
        report.rejected.len(),
        &report.rejected[..report.rejected.len().min(5)]
    );
    assert_eq!(report.accepted.len(), TOTAL);
    let ids = report.accepted_ids();
    assert_eq!(ids.len(), TOTAL, "every 202 carries a new message id");
    let via_a = report.accepted.iter().filter(|(_, t)| *t == 0).count();

    // Delivered, as seen through either process.
    let took_a = match wait_all_delivered(&targets[0], &ids, Duration::from_secs(120)).await {
        Ok(took) => took,
        Err(e) => panic!("{e}\n{}\n{}", a.diagnostics(), b.diagnostics()),
    };
    if let Err(e) = wait_all_delivered(&targets[1], &ids, Duration::from_secs(30)).await {
        panic!("through the second process: {e}");
    }

    let stop_a = tokio::task::block_in_place(|| a.stop_gracefully(Duration::from_secs(GRACE_SECONDS + 25)));
    let stop_b = tokio::task::block_in_place(|| b.stop_gracefully(Duration::from_secs(GRACE_SECONDS + 25)));

    let ledger_a = Ledger::read(&a.ledger_path());
    let ledger_b = Ledger::read(&b.ledger_path());
    let mut union = Ledger::read(&a.ledger_path());
    union.add(&b.ledger_path());
    union.assert_exactly_once(&ids);
    assert_eq!(union.accepted.len(), TOTAL, "the sandbox accepted only messages that got a 202");
    // Work accepted by one process and sent by the other: the queue is really shared.
    let crossed = report
        .accepted
        .iter()
        .filter(|(id, t)| if *t == 0 { ledger_b.accepted.contains_key(id) } else { ledger_a.accepted.contains_key(id) })
        .count();
    eprintln!(
        "two processes: {TOTAL} messages accepted in {:?} ({via_a} through a, {} through b), all delivered {took_a:?} \
         later; {crossed} were sent by the other process than the one that accepted them; process a handed {} to the sandbox ({} duplicates), process b {} ({} duplicates); stopped in \
         {stop_a:?} and {stop_b:?}; whole test {:?}",
        report.elapsed,
        TOTAL - via_a,
        ledger_a.accepted_lines(),
        ledger_a.duplicates,
        ledger_b.accepted_lines(),
        ledger_b.duplicates,
        started.elapsed()
    );
    assert!(
        ledger_a.accepted_lines() > 0 && ledger_b.accepted_lines() > 0,
        "both processes must dispatch work: a sent {}, b sent {}",
        ledger_a.accepted_lines(),
        ledger_b.accepted_lines()
    );
}
