//! `parley tail` against a running server (the test kit's, in this process): with `--from-start`
//! it prints the events recorded so far, then follows the live stream from the last of them,
//! one line per event (`--json`: the event envelope). On both backends.

use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

on_both_backends!(tail_prints_the_backlog_then_follows_the_stream);

/// A `parley tail` child, killed when dropped.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(app: &TestApp, extra: &[&str]) -> Tail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["tail", "--url", &app.base_url, "--key", &app.admin_key])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start parley tail");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Tail { child, lines }
    }

    /// The next `n` lines; panics if they do not come within 15 s.
    async fn take(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut out = Vec::new();
        while out.len() < n {
            match self.lines.try_recv() {
                Ok(line) => out.push(line),
                Err(_) if std::time::Instant::now() > deadline => panic!("only {} of {n} lines: {out:#?}", out.len()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        out
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(app: &TestApp, text: &str) -> String {
    let m = app.send_text("+12025550150", text).await;
    let id = m["id"].as_str().expect("id").to_string();
    app.wait_for_status(&id, &["delivered"], Duration::from_secs(10)).await;
    id
}

async fn tail_prints_the_backlog_then_follows_the_stream(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let before = send(&app, "before").await;
    let json = Tail::start(&app, &["--from-start", "--json"]);
    let text = Tail::start(&app, &["--from-start"]);
    // The backlog: the feed's items.
    let backlog: Vec<Value> = json.take(5).await.iter().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert!(backlog.iter().all(|e| e["message_id"] == before.as_str()), "{backlog:#?}");
    let lines = text.take(5).await;
    assert!(lines[0].contains(&before) && lines[0].contains("sms") && lines[0].ends_with("accepted"), "{lines:#?}");
    assert!(lines[4].contains("#5") && lines[4].ends_with("delivered"), "{lines:#?}");

    // Then the stream, after the last event of the backlog: envelopes, nothing twice.
    let after = send(&app, "after").await;
    let live: Vec<Value> = json.take(5).await.iter().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    let types: Vec<&str> = live.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["message.accepted", "message.queued", "message.sending", "message.sent", "message.delivered"]);
    for (i, e) in live.iter().enumerate() {
        assert_eq!(e["data"]["message"]["id"], after.as_str());
        assert_eq!(e["data"]["sequence"], i as i64 + 1);
        assert!(e["id"].as_str().is_some_and(|id| id.starts_with("evt_")));
    }
    let lines = text.take(5).await;
    assert!(lines.iter().all(|l| l.contains(&after)), "{lines:#?}");
    assert!(lines[3].contains("#4") && lines[3].ends_with(" sent"), "{lines:#?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(json.lines.try_recv().is_err() && text.lines.try_recv().is_err(), "no event twice");
    drop((json, text));
    app.finish().await;
}
