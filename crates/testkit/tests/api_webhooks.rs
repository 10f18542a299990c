//! Webhooks through the real server, on both backends, to real HTTP receivers on a loopback
//! address: signed deliveries checked with an independent HMAC, retries on the schedule (time
//! moved forward with the deliverer's clock), 410, an endpoint down for days, a secret rotation
//! seen from the receiver, redelivery, bounded response reading, a slow endpoint beside a fast
//! one, the SSRF guard, and the endpoint API's validation and tenancy.

mod common;

use common::*;
use parley_domain::Scope;
use parley_testkit::receiver::{Received, Receiver, Reply};
use parley_testkit::{Backend, TestApp, on_both_backends, webhook_test_config};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

on_both_backends!(
    every_event_reaches_the_receiver_signed_once_each_with_its_sequence,
    a_failing_receiver_is_retried_on_the_schedule_until_it_succeeds,
    gone_disables_the_endpoint_and_records_why,
    an_endpoint_down_for_five_days_is_disabled,
    a_secret_rotation_signs_with_both_secrets_for_a_day,
    redeliver_sends_an_event_again,
    a_slow_endpoint_delays_no_other_and_huge_answers_are_cut_to_an_excerpt,
    urls_that_reach_private_networks_are_refused,
    endpoint_crud_validation_and_tenancy,
);

const WAIT: Duration = Duration::from_secs(20);

async fn start(backend: Backend) -> Option<TestApp> {
    TestApp::start_with(backend, webhook_test_config).await
}

async fn create_endpoint(app: &TestApp, body: Value) -> Value {
    let a = post(app, "/v1/webhook-endpoints", &body).await;
    assert_eq!(a.status, 201, "create endpoint: {a}");
    a.json
}

/// The message events a receiver got, as (message id, sequence, type) per webhook id.
fn deliveries(received: &[Received]) -> Vec<(String, String, i64, String)> {
    received
        .iter()
        .filter(|r| r.status < 300)
        .map(|r| {
            let body = r.json();
            (
                r.webhook_id.clone(),
                body["data"]["message"]["id"].as_str().unwrap_or_default().to_string(),
                body["data"]["sequence"].as_i64().unwrap_or_default(),
                body["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn attempts(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let page = get(app, &format!("/v1/webhook-endpoints/{endpoint}/attempts?limit=1000")).await;
    assert_eq!(page.status, 200, "{page}");
    page.json["data"].as_array().expect("attempts").clone()
}

async fn wait_for_attempts(app: &TestApp, endpoint: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = attempts(app, endpoint).await;
        if list.len() >= n {
            return list;
        }
        assert!(tokio::time::Instant::now() < deadline, "expected {n} attempts, have {}: {list:?}", list.len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn clock(app: &TestApp) -> &parley_engine::Clock {
    &app.engine.config().webhooks.clock
}

async fn every_event_reaches_the_receiver_signed_once_each_with_its_sequence(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    let all = Receiver::start().await;
    let delivered_only = Receiver::start().await;
    let endpoint = create_endpoint(&app, json!({"url": all.url("/all"), "description": "everything"})).await;
    let secret = endpoint["secret"].as_str().expect("secret shown at creation").to_string();
    assert!(secret.starts_with("whsec_"));
    create_endpoint(&app, json!({"url": delivered_only.url("/d"), "event_types": ["message.delivered"]})).await;

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(id_of(&send(&app, &text_to("sms", "+12025550140", &format!("hello {i}"))).await));
    }
    for id in &ids {
        app.wait_for_status(id, &["delivered"], WAIT).await;
    }
    // accepted, queued, sending, sent, delivered: five events per SMS.
    let received = all.wait_until(WAIT, "25 events", |r| r.len() >= 25).await;
    let got = deliveries(&received);
    let unique: HashSet<&String> = got.iter().map(|d| &d.0).collect();
    assert_eq!(unique.len(), got.len(), "no event twice");
    for r in &received {
        assert!(r.signed_with(&secret), "signature verifies independently: {}", r.signature);
        let body = r.json();
        assert_eq!(body["id"], r.webhook_id.as_str(), "webhook-id is the event id");
        assert_eq!(body["workspace_id"], app.workspace_id.to_string());
        let ts: i64 = r.timestamp.parse().expect("timestamp in seconds");
        assert!((ts - rfc3339::now() / 1000).abs() < 60, "timestamp is now-ish: {ts}");
    }
    for id in &ids {
        let message = message(&app, id).await;
        let mut sequences: Vec<(i64, String)> = got.iter().filter(|d| &d.1 == id).map(|d| (d.2, d.3.clone())).collect();
        sequences.sort();
        let expected: Vec<(i64, String)> = events(&message)
            .iter()
            .map(|e| (e["sequence"].as_i64().unwrap(), format!("message.{}", e["type"].as_str().unwrap())))
            .collect();
        assert_eq!(sequences, expected, "every event of {id} once, with its sequence");
    }
    let only = delivered_only.wait_until(WAIT, "5 delivered events", |r| r.len() >= 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(delivered_only.received().len(), 5, "the filtered endpoint gets delivered events only");
    assert!(only.iter().all(|r| r.json()["type"] == "message.delivered"));

    // The metrics count the attempts by endpoint and show the backlog drained (once the passes
    // that made them have committed).
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let wanted = [
        format!("parley_webhook_attempts_total{{endpoint=\"{endpoint_id}\",outcome=\"delivered\"}} 25"),
        format!("parley_webhook_attempt_duration_seconds_count{{endpoint=\"{endpoint_id}\"}} 25"),
        format!("parley_webhook_backlog_events{{endpoint=\"{endpoint_id}\",enabled=\"true\"}} 0"),
        format!("parley_webhook_pending_retries{{endpoint=\"{endpoint_id}\",enabled=\"true\"}} 0"),
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if wanted.iter().all(|line| metrics.contains(line)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{wanted:?} in:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.finish().await;
}

async fn a_failing_receiver_is_retried_on_the_schedule_until_it_succeeds(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(502), Reply::Status(500)]);
    let endpoint =
        create_endpoint(&app, json!({"url": receiver.url("/flaky"), "event_types": ["message.accepted"]})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_string();
    send(&app, &text_to("sms", "+12025550141", "retry me")).await;

    let first = wait_for_attempts(&app, &endpoint_id, 1).await;
    assert_eq!(first[0]["status_code"], 500);
    assert_eq!(first[0]["succeeded"], false);
    assert_eq!(first[0]["attempt"], 1);
    assert_eq!(first[0]["trigger"], "scheduled");
    assert_eq!(first[0]["response_excerpt"], "answered 500");
    let next = rfc3339::parse(first[0]["next_attempt_at"].as_str().expect("next attempt")).unwrap();
    let at = rfc3339::parse(first[0]["attempted_at"].as_str().unwrap()).unwrap();
    assert!((4_400..=5_600).contains(&(next - at)), "second attempt about 5 s later: {}", next - at);

    // Nothing happens before it is due; then each retry on its schedule.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(attempts(&app, &endpoint_id).await.len(), 1);
    for (advance, n, gap) in [(6, 2, 300_000), (6 * 60, 3, 1_800_000)] {
        clock(&app).advance(Duration::from_secs(advance));
        let list = wait_for_attempts(&app, &endpoint_id, n).await;
        let newest = &list[0];
        assert_eq!(newest["attempt"], n as i64);
        let next = rfc3339::parse(newest["next_attempt_at"].as_str().expect("next")).unwrap();
        let at = rfc3339::parse(newest["attempted_at"].as_str().unwrap()).unwrap();
        let jitter = gap / 10 + 100;
        assert!((next - at - gap).abs() <= jitter, "attempt {n}: next after {} ms", next - at);
    }
    clock(&app).advance(Duration::from_secs(35 * 60));
    let list = wait_for_attempts(&app, &endpoint_id, 4).await;
    assert_eq!(list[0]["attempt"], 4);
    assert_eq!(list[0]["succeeded"], true);
    assert_eq!(list[0]["status_code"], 204);
    assert!(list[0].get("next_attempt_at").is_none());
    let statuses: Vec<i64> = list.iter().rev().map(|a| a["status_code"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [500, 502, 500, 204]);
    let ids: HashSet<&str> = list.iter().map(|a| a["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "four attempts of one event");
    // Nothing more is owed: the endpoint recovered.
    clock(&app).advance(Duration::from_secs(24 * 3600));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 4);
    let endpoint = get(&app, &format!("/v1/webhook-endpoints/{endpoint_id}")).await;
    assert_eq!(endpoint["enabled"], true);
    assert!(endpoint.json.get("failing_since").is_none(), "{endpoint}");
    app.finish().await;
}

async fn gone_disables_the_endpoint_and_records_why(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(410));
    let endpoint =
        create_endpoint(&app, json!({"url": receiver.url("/gone"), "event_types": ["message.accepted"]})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_string();
    send(&app, &text_to("sms", "+12025550142", "anyone?")).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let disabled = loop {
        let e = get(&app, &format!("/v1/webhook-endpoints/{endpoint_id}")).await;
        if e["enabled"] == false {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "not disabled: {e}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(disabled["disabled_reason"], "gone");
    assert!(disabled["disabled_at"].is_string());
    let list = attempts(&app, &endpoint_id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status_code"], 410);
    assert!(list[0].get("next_attempt_at").is_none(), "no retry after 410");
    let events = app.engine.store().list_workspace_events(app.workspace_id, 10).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "endpoint.disabled");
    assert_eq!(events[0].data["endpoint"]["id"], endpoint_id.as_str());
    assert_eq!(events[0].data["endpoint"]["disabled_reason"], "gone");

    // Disabled: later events are not sent.
    send(&app, &text_to("sms", "+12025550142", "still there?")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);

    // Enabled again, it starts from new events.
    receiver.set_default(Reply::Status(200));
    let a = call(&app, Method::PATCH, &format!("/v1/webhook-endpoints/{endpoint_id}"), Some(&json!({"enabled": true})))
        .await;
    assert_eq!(a.status, 200, "{a}");
    assert!(a.json.get("disabled_reason").is_none(), "{a}");
    let id = id_of(&send(&app, &text_to("sms", "+12025550142", "back")).await);
    let received = receiver.wait_until(WAIT, "the new message", |r| r.len() >= 2).await;
    assert_eq!(received[1].json()["data"]["message"]["id"], id.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "what happened while disabled is not sent");
    app.finish().await;
}

async fn an_endpoint_down_for_five_days_is_disabled(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    // Nobody listens there: every attempt is refused at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.2:0").expect("bind");
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.2:{port}/down");
    let endpoint = create_endpoint(&app, json!({"url": url, "event_types": ["message.accepted"]})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_string();
    let mut seen = 0;
    // A message every 6 hours, for a little over 5 days.
    for step in 0..22 {
        send(&app, &text_to("sms", "+12025550143", &format!("day {step}"))).await;
        // A new attempt, or the endpoint disabled: once the clock has moved past five days, the
        // pass that finds the due retries may disable it before attempting anything.
        let deadline = tokio::time::Instant::now() + WAIT;
        let (list, e) = loop {
            let list = attempts(&app, &endpoint_id).await;
            let e = get(&app, &format!("/v1/webhook-endpoints/{endpoint_id}")).await;
            if list.len() > seen || e["enabled"] == false {
                break (list, e);
            }
            assert!(tokio::time::Instant::now() < deadline, "no new attempt at step {step}: {}", list.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        seen = list.len();
        assert!(list[0]["error"].as_str().is_some_and(|e| e.contains("connect")), "{}", list[0]);
        assert!(list[0].get("status_code").is_none());
        if e["enabled"] == false {
            assert_eq!(e["disabled_reason"], "failing");
            let since = rfc3339::parse(e["failing_since"].as_str().expect("failing since")).unwrap();
            let at = rfc3339::parse(e["disabled_at"].as_str().unwrap()).unwrap();
            assert!(at - since >= 5 * 24 * 3600 * 1000, "disabled after 5 days of failures");
            assert!(step >= 20, "not before 5 days (step {step})");
            let events = app.engine.store().list_workspace_events(app.workspace_id, 10).await.unwrap();
            assert_eq!(events[0].event_type, "endpoint.disabled");
            assert_eq!(events[0].data["endpoint"]["disabled_reason"], "failing");
            app.finish().await;
            return;
        }
        assert_eq!(e["enabled"], true, "still enabled at step {step}");
        assert!(e["failing_since"].is_string());
        clock(&app).advance(Duration::from_secs(6 * 3600));
    }
    panic!("the endpoint was not disabled after 5 days of failures");
}

async fn a_secret_rotation_signs_with_both_secrets_for_a_day(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    let receiver = Receiver::start().await;
    let endpoint =
        create_endpoint(&app, json!({"url": receiver.url("/rotating"), "event_types": ["message.accepted"]})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_string();
    let old = endpoint["secret"].as_str().unwrap().to_string();
    send(&app, &text_to("sms", "+12025550144", "before")).await;
    let r = receiver.wait_until(WAIT, "1 event", |r| !r.is_empty()).await;
    assert!(r[0].signed_with(&old));
    assert_eq!(r[0].signature.split(' ').count(), 1);

    let rotated = post(&app, &format!("/v1/webhook-endpoints/{endpoint_id}/rotate-secret"), &json!({})).await;
    assert_eq!(rotated.status, 200, "{rotated}");
    let new = rotated["secret"].as_str().expect("new secret shown").to_string();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());
    let shown = get(&app, &format!("/v1/webhook-endpoints/{endpoint_id}")).await;
    assert!(shown.json.get("secret").is_none(), "the secret is never shown again: {shown}");
    // Within a refresh the deliverer signs with both.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&app, &text_to("sms", "+12025550144", "during")).await;
    let r = receiver.wait_until(WAIT, "2 events", |r| r.len() >= 2).await;
    assert_eq!(r[1].signature.split(' ').count(), 2, "{}", r[1].signature);
    assert!(r[1].signed_with(&old) && r[1].signed_with(&new));

    clock(&app).advance(Duration::from_secs(25 * 3600));
    send(&app, &text_to("sms", "+12025550144", "after")).await;
    let r = receiver.wait_until(WAIT, "3 events", |r| r.len() >= 3).await;
    assert!(r[2].signed_with(&new));
    assert!(!r[2].signed_with(&old), "the old secret stops signing after 24 h");
    assert_eq!(r[2].signature.split(' ').count(), 1);
    app.finish().await;
}

async fn redeliver_sends_an_event_again(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    let receiver = Receiver::start().await;
    let endpoint =
        create_endpoint(&app, json!({"url": receiver.url("/again"), "event_types": ["message.accepted"]})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_string();
    send(&app, &text_to("sms", "+12025550145", "once more")).await;
    let r = receiver.wait_until(WAIT, "1 event", |r| !r.is_empty()).await;
    let event_id = r[0].webhook_id.clone();

    let a = post(&app, &format!("/v1/webhook-events/{event_id}/redeliver"), &json!({})).await;
    assert_eq!(a.status, 202, "{a}");
    assert_eq!(a["endpoints"], json!([endpoint_id]));
    let r = receiver.wait_until(WAIT, "the event again", |r| r.len() >= 2).await;
    assert_eq!(r[1].webhook_id, event_id);
    assert_eq!(r[1].body, r[0].body, "the same payload");
    // The attempt is recorded when its pass commits, just after the receiver answered.
    let list = wait_for_attempts(&app, &endpoint_id, 2).await;
    assert_eq!(list[0]["trigger"], "manual");
    assert_eq!(list[1]["trigger"], "scheduled");

    post(&app, &format!("/v1/webhook-events/{}/redeliver", parley_domain::EventId::new()), &json!({}))
        .await
        .problem(404, "not_found");
    post(&app, "/v1/webhook-events/nonsense/redeliver", &json!({})).await.problem(404, "not_found");
    app.finish().await;
}

async fn a_slow_endpoint_delays_no_other_and_huge_answers_are_cut_to_an_excerpt(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        webhook_test_config(c);
        c.webhooks.timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let slow = Receiver::start().await;
    slow.set_default(Reply::Slow(Duration::from_secs(30)));
    let huge = Receiver::start().await;
    huge.set_default(Reply::Huge(100 * 1024 * 1024));
    let fast = Receiver::start().await;
    let slow_ep = create_endpoint(&app, json!({"url": slow.url("/slow"), "event_types": ["message.accepted"]})).await;
    let huge_ep = create_endpoint(&app, json!({"url": huge.url("/huge"), "event_types": ["message.accepted"]})).await;
    create_endpoint(&app, json!({"url": fast.url("/fast"), "event_types": ["message.accepted"]})).await;
    let started = tokio::time::Instant::now();
    for i in 0..3 {
        send(&app, &text_to("sms", "+12025550146", &format!("m{i}"))).await;
    }
    fast.wait_until(WAIT, "3 events", |r| r.len() >= 3).await;
    assert!(started.elapsed() < Duration::from_secs(2), "the fast endpoint did not wait for the slow one");

    let list = wait_for_attempts(&app, huge_ep["id"].as_str().unwrap(), 3).await;
    for a in &list {
        assert_eq!(a["status_code"], 200);
        let excerpt = a["response_excerpt"].as_str().expect("excerpt");
        assert_eq!(excerpt.len(), 1024, "only an excerpt is read");
    }
    let list = wait_for_attempts(&app, slow_ep["id"].as_str().unwrap(), 3).await;
    for a in &list {
        assert_eq!(a["succeeded"], false);
        assert!(a["error"].as_str().is_some_and(|e| e.contains("no answer within 2 s")), "{a}");
        assert!(a["latency_ms"].as_i64().unwrap() >= 1900);
    }
    app.finish().await;
}

async fn urls_that_reach_private_networks_are_refused(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    for url in [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://localhost:8080/hook",
        "http://2130706433/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ] {
        let a = post(&app, "/v1/webhook-endpoints", &json!({"url": url})).await;
        a.problem(422, "webhook_url_not_allowed").names("url");
    }
    let a = post(&app, "/v1/webhook-endpoints", &json!({"url": "http://169.254.169.254/"})).await;
    assert!(a.json["detail"].as_str().unwrap().contains("metadata"), "{a}");
    for url in ["ftp://example.com/x", "not a url", "http://user:pw@example.com/", "http://", ""] {
        post(&app, "/v1/webhook-endpoints", &json!({"url": url}))
            .await
            .problem(422, "webhook_url_invalid")
            .names("url");
    }
    let long = format!("https://example.com/{}", "a".repeat(3000));
    post(&app, "/v1/webhook-endpoints", &json!({"url": long})).await.problem(422, "webhook_url_invalid");
    post(&app, "/v1/webhook-endpoints", &json!({"url": "http://no-such-host.invalid/"}))
        .await
        .problem(422, "webhook_url_unresolvable");
    // The allow-listed receiver address is accepted; a PATCH to a refused one is not.
    let receiver = Receiver::start().await;
    let e = create_endpoint(&app, json!({"url": receiver.url("/ok")})).await;
    let path = format!("/v1/webhook-endpoints/{}", e["id"].as_str().unwrap());
    call(&app, Method::PATCH, &path, Some(&json!({"url": "http://10.1.2.3/"})))
        .await
        .problem(422, "webhook_url_not_allowed");
    assert_eq!(get(&app, &path).await["url"], receiver.url("/ok"));
    app.finish().await;
}

async fn endpoint_crud_validation_and_tenancy(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    let receiver = Receiver::start().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let e =
            create_endpoint(&app, json!({"url": receiver.url(&format!("/{i}")), "description": format!("n{i}")})).await;
        assert_eq!(e["enabled"], true);
        assert_eq!(e["event_types"], json!([]));
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    let a = post(&app, "/v1/webhook-endpoints", &json!({"url": receiver.url("/x")})).await;
    assert!(a.header("location").is_some_and(|l| l.starts_with("/v1/webhook-endpoints/wh_")));

    // Lists: newest first, with a cursor.
    let first = get(&app, "/v1/webhook-endpoints?limit=2").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    assert!(first["data"][0].get("secret").is_none(), "lists never show secrets");
    let cursor = first["next_cursor"].as_str().expect("next cursor");
    let second = get(&app, &format!("/v1/webhook-endpoints?limit=2&cursor={cursor}")).await;
    assert_eq!(second["data"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());
    let all: Vec<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all[1..], [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    get(&app, "/v1/webhook-endpoints?cursor=bogus").await.problem(400, "invalid_cursor");

    // Merge patch: absent stays, null clears.
    let path = format!("/v1/webhook-endpoints/{}", ids[0]);
    let a = call(&app, Method::PATCH, &path, Some(&json!({"event_types": ["message.*", "message.read"]}))).await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a["event_types"], json!(["message.*", "message.read"]));
    assert_eq!(a["description"], "n0");
    let a = call(&app, Method::PATCH, &path, Some(&json!({"description": null, "enabled": false}))).await;
    assert!(a.json.get("description").is_none(), "{a}");
    assert_eq!(a["enabled"], false);
    assert!(a.json.get("disabled_reason").is_none(), "disabled by a person: no reason");

    // Bad input.
    for (body, code, param) in [
        (json!({"url": receiver.url("/"), "event_types": ["message.exploded"]}), "unknown_event_type", "event_types"),
        (json!({"url": receiver.url("/"), "event_types": ["messages.*"]}), "unknown_event_type", "event_types"),
        (json!({"url": receiver.url("/"), "secret": "whsec_abc"}), "unknown_field", "secret"),
        (json!({"url": receiver.url("/"), "description": "x".repeat(501)}), "validation_failed", "description"),
        (json!({"url": 42}), "validation_failed", "url"),
    ] {
        let a = post(&app, "/v1/webhook-endpoints", &body).await;
        assert_eq!(a.json["code"], code, "{body}: {a}");
        a.names(param);
    }
    call(&app, Method::PATCH, &path, Some(&json!({"event_types": ["nope"]}))).await.problem(422, "unknown_event_type");
    call(&app, Method::PATCH, &path, Some(&json!({"enabled": "yes"}))).await.problem(422, "validation_failed");

    // Keys: another workspace sees nothing; a key without admin is refused.
    let (b, _) = app.engine.create_workspace("B").await.expect("workspace B");
    let b_key = app.engine.create_api_key(b.id, "b", vec![Scope::Admin]).await.expect("key B").secret;
    get_as(&app, &b_key, &path).await.problem(404, "not_found");
    get_as(&app, &b_key, &format!("{path}/attempts")).await.problem(404, "not_found");
    assert_eq!(get_as(&app, &b_key, "/v1/webhook-endpoints").await["data"], json!([]));
    post_as(&app, &b_key, &format!("{path}/rotate-secret"), &json!({})).await.problem(404, "not_found");
    let sender = app.engine.create_api_key(app.workspace_id, "s", vec![Scope::MessagesWrite]).await.unwrap().secret;
    get_as(&app, &sender, "/v1/webhook-endpoints").await.problem(403, "forbidden");
    let b_delete = app.http.delete(app.url(&path)).bearer_auth(&b_key).send().await.unwrap();
    assert_eq!(b_delete.status(), 404);

    // Delete.
    assert_eq!(call(&app, Method::DELETE, &path, None).await.status, 204);
    get(&app, &path).await.problem(404, "not_found");
    assert_eq!(call(&app, Method::DELETE, &path, None).await.status, 404);
    get(&app, "/v1/webhook-endpoints/wh_nonsense").await.problem(404, "not_found");
    app.finish().await;
}
