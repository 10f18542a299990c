//! Each channel account's rate limit and in-flight cap hold, on both backends: the times at which
//! the provider took the messages (their `sent` events) show the pacing.

mod common;

use common::*;
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::json;
use std::time::Duration;

on_both_backends!(rate_limit_paces_the_hand_off, in_flight_cap_bounds_concurrent_sends);

/// Send `n` messages through `account` in one batch and return their `sent` times, sorted.
async fn sent_times(app: &TestApp, account: &str, n: usize) -> Vec<i64> {
    let items: Vec<_> = (0..n)
        .map(|i| {
            json!({"to": format!("+120255501{:02}", 50 + i % 40), "channel": "sms", "channel_account_id": account,
                   "content": {"type": "text", "text": format!("paced {i}")}})
        })
        .collect();
    let a = post(app, "/v1/messages/batch", &json!({ "messages": items })).await;
    assert_eq!(a.status, 202, "{}", a.text);
    let ids: Vec<String> = a.json["data"].as_array().expect("data").iter().map(|d| id_of(&d["message"])).collect();
    let mut times = Vec::new();
    for id in ids {
        let m = wait_for_events(app, &id, "sent", 1, Duration::from_secs(30)).await;
        let sent = events(&m).into_iter().find(|e| e["type"] == "sent").expect("sent event");
        times.push(millis(&sent["occurred_at"]));
    }
    times.sort_unstable();
    times
}

async fn rate_limit_paces_the_hand_off(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    // 10 per second with a burst of one: 21 messages need at least ~1.9 s from the first to the last.
    let account = sandbox_sms_account(&app, json!({}), 10, 100).await;
    let times = sent_times(&app, &account, 21).await;
    let span = times[times.len() - 1] - times[0];
    assert!(span >= 1_800, "21 messages at 10/s were handed over within {span} ms");
    // And no one-second window holds more than the rate plus the burst.
    for (i, t) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|u| **u < t + 1_000).count();
        assert!(within <= 12, "{within} messages handed over within one second at 10/s");
    }
    app.finish().await;
}

async fn in_flight_cap_bounds_concurrent_sends(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    // Each send takes 200 ms and at most 2 may wait for the provider at once: 10 messages take
    // at least 5 rounds of 200 ms.
    let account = sandbox_sms_account(&app, json!({"latency_ms": 200}), 1000, 2).await;
    let times = sent_times(&app, &account, 10).await;
    let span = times[times.len() - 1] - times[0];
    assert!(span >= 700, "10 sends of 200 ms with 2 in flight finished within {span} ms");
    for (i, t) in times.iter().enumerate() {
        let together = times[i..].iter().take_while(|u| **u < t + 150).count();
        assert!(together <= 2, "{together} sends finished within 150 ms with an in-flight cap of 2");
    }
    app.finish().await;
}
