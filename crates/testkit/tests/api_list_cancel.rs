//! Reading, listing (cursors, filters), canceling messages and following the event feed through
//! the real HTTP API, on both backends.

mod common;

use common::*;
use parley_testkit::{Backend, TestApp, on_both_backends};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    list_is_newest_first_with_limit,
    cursor_pagination_has_no_gaps_or_duplicates,
    pagination_is_stable_under_concurrent_inserts,
    list_filters,
    list_rejects_bad_queries,
    scheduled_message_can_be_canceled_once,
    sent_and_unknown_messages_cannot_be_canceled,
    cancel_racing_the_dispatcher_never_sends_a_canceled_message,
    message_events_feed_follows_every_event,
);

const WAIT: Duration = Duration::from_secs(10);

/// Send `n` SMS texts `"{prefix}{i}"` one by one; their ids in sending order.
async fn send_many(app: &TestApp, n: usize, prefix: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(id_of(&send(app, &text_to("sms", "+12025550102", &format!("{prefix}{i}"))).await));
    }
    ids
}

fn ids_of(page: &Value) -> Vec<String> {
    page["data"].as_array().expect("data").iter().map(id_of).collect()
}

async fn list_is_newest_first_with_limit(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let empty = app.get_json("/v1/messages").await;
    assert_eq!(empty, json!({"data": [], "next_cursor": null}));
    let sent = send_many(&app, 5, "m").await;
    let page = app.get_json("/v1/messages").await;
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(ids_of(&page), newest_first);
    assert!(page["next_cursor"].is_null());
    let created: Vec<i64> = page["data"].as_array().expect("data").iter().map(|m| millis(&m["created_at"])).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
    assert!(page["data"][0].get("events").is_none(), "lists carry no timelines");

    let two = app.get_json("/v1/messages?limit=2").await;
    assert_eq!(ids_of(&two), newest_first[..2]);
    assert!(two["next_cursor"].is_string());
    let one = app.get_json("/v1/messages?limit=1").await;
    assert_eq!(ids_of(&one), newest_first[..1]);
    let all = app.get_json("/v1/messages?limit=1000").await;
    assert_eq!(ids_of(&all).len(), 5);
    assert!(all["next_cursor"].is_null());
    let exact = app.get_json("/v1/messages?limit=5").await;
    assert_eq!(ids_of(&exact).len(), 5);
    assert!(exact["next_cursor"].is_null(), "no next page when exactly `limit` are left");
    app.finish().await;
}

async fn pages(app: &TestApp, limit: u32, mut between: impl AsyncFnMut(usize)) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    for n in 0.. {
        let path = match &cursor {
            Some(c) => format!("/v1/messages?limit={limit}&cursor={c}"),
            None => format!("/v1/messages?limit={limit}"),
        };
        let page = app.get_json(&path).await;
        let page_ids = ids_of(&page);
        sizes.push(page_ids.len());
        ids.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(n < 100, "pagination does not end");
        between(n).await;
    }
    (ids, sizes)
}

async fn cursor_pagination_has_no_gaps_or_duplicates(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let sent = send_many(&app, 25, "p").await;
    let (ids, sizes) = pages(&app, 10, async |_| {}).await;
    assert_eq!(sizes, [10, 10, 5]);
    let expected: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(ids, expected, "every message once, newest first");
    // Cursors are opaque, URL-safe strings.
    let first = app.get_json("/v1/messages?limit=10").await;
    let cursor = first["next_cursor"].as_str().expect("cursor");
    assert!(cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{cursor}");
    assert!(!cursor.contains("msg_"), "cursors do not expose ids: {cursor}");
    // A cursor can be used again and gives the same page.
    let again = app.get_json(&format!("/v1/messages?limit=10&cursor={cursor}")).await;
    let again2 = app.get_json(&format!("/v1/messages?limit=10&cursor={cursor}")).await;
    assert_eq!(ids_of(&again), ids_of(&again2));
    assert_eq!(ids_of(&again), expected[10..20]);
    app.finish().await;
}

async fn pagination_is_stable_under_concurrent_inserts(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let sent = send_many(&app, 25, "s").await;
    let expected: Vec<String> = sent.iter().rev().cloned().collect();
    // Insert while paging: a batch of new messages, and concurrently some single sends.
    let app_ref = &app;
    let (ids, sizes) = pages(&app, 10, async move |n| {
        let batch: Vec<Value> = (0..5).map(|i| text_to("sms", "+12025550102", &format!("new{n}-{i}"))).collect();
        let inserts = async {
            let a = post(app_ref, "/v1/messages/batch", &json!({"messages": batch})).await;
            assert_eq!(a.status, 202, "{}", a.text);
        };
        let single = text_to("sms", "+12025550102", "new");
        let singles = futures::future::join_all((0..3).map(|_| send(app_ref, &single)));
        let read = app_ref.get_json("/v1/messages?limit=3");
        let _ = tokio::join!(inserts, singles, read);
    })
    .await;
    assert_eq!(sizes, [10, 10, 5], "new messages do not shift later pages");
    assert_eq!(ids, expected, "no gaps, no duplicates, no newcomers in later pages");
    assert_eq!(all_messages(&app, "").await.len(), 25 + 2 * 8);
    app.finish().await;
}

async fn list_filters(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let de = id_of(&send(&app, &text_to("sms", "+49 151 23456789", "de")).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let failing = id_of(&send(&app, &text_to("sms", "+12025550101", "fails")).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let wa = id_of(&send(&app, &text_to("whatsapp", "+4915123456789", "wa")).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let web = id_of(&send(&app, &text_to("webchat", "visitor-7", "web")).await);
    app.wait_for_status(&de, &["delivered"], WAIT).await;
    app.wait_for_status(&failing, &["failed"], WAIT).await;
    app.wait_for_status(&wa, &["read"], WAIT).await;
    app.wait_for_status(&web, &["read"], WAIT).await;

    let list = async |query: &[(&str, &str)]| -> Vec<String> {
        let response = app.request(Method::GET, "/v1/messages").query(query).send().await.expect("GET");
        let a = Answer::read(response).await;
        assert_eq!(a.status, 200, "{query:?}: {}", a.text);
        ids_of(&a.json)
    };
    assert_eq!(list(&[("status", "failed")]).await, [failing.as_str()]);
    assert_eq!(list(&[("status", "read")]).await, [web.clone(), wa.clone()]);
    assert_eq!(list(&[("status", "delivered")]).await, [de.as_str()]);
    assert!(list(&[("status", "queued")]).await.is_empty());
    assert_eq!(list(&[("channel", "whatsapp")]).await, [wa.as_str()]);
    assert_eq!(list(&[("channel", "sms")]).await, [failing.clone(), de.clone()]);
    assert_eq!(list(&[("channel", "sms"), ("status", "failed")]).await, [failing.as_str()]);
    assert!(list(&[("channel", "rcs")]).await.is_empty());
    // The recipient in any written form with a country code.
    for form in ["+4915123456789", "+49 151 23456789", "+49 (151) 234-56789", "+49-151-2345-6789"] {
        assert_eq!(list(&[("to", form)]).await, [wa.clone(), de.clone()], "to={form}");
    }
    assert_eq!(list(&[("to", "+4915123456789"), ("channel", "sms")]).await, [de.as_str()]);
    assert_eq!(list(&[("to", "visitor-7")]).await, [web.as_str()]);
    assert!(list(&[("to", "+12025550150")]).await.is_empty());

    // Created range: from is inclusive, to is exclusive.
    let t_failing = message(&app, &failing).await["created_at"].as_str().expect("created_at").to_string();
    let t_wa = message(&app, &wa).await["created_at"].as_str().expect("created_at").to_string();
    assert_eq!(list(&[("created_from", &t_failing)]).await, [web.clone(), wa.clone(), failing.clone()]);
    assert_eq!(list(&[("created_to", &t_failing)]).await, [de.as_str()]);
    assert_eq!(list(&[("created_from", &t_failing), ("created_to", &t_wa)]).await, [failing.as_str()]);
    assert_eq!(
        list(&[("created_from", &t_failing), ("created_to", &t_wa), ("channel", "whatsapp")]).await,
        Vec::<String>::new()
    );
    // Any RFC 3339 offset is understood.
    let later = rfc3339::format(millis(&json!(t_wa)) + 1);
    assert_eq!(list(&[("created_from", &later)]).await, [web.as_str()]);
    let far = "2999-01-01T00:00:00+02:00";
    assert!(list(&[("created_from", far)]).await.is_empty());
    assert_eq!(list(&[("created_to", far)]).await.len(), 4);
    // Filters and pages together.
    let first = app.get_json("/v1/messages?status=read&limit=1").await;
    assert_eq!(ids_of(&first), [web.as_str()]);
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let second = app.get_json(&format!("/v1/messages?status=read&limit=1&cursor={cursor}")).await;
    assert_eq!(ids_of(&second), [wa.as_str()]);
    assert!(second["next_cursor"].is_null());
    app.finish().await;
}

async fn list_rejects_bad_queries(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    send_many(&app, 2, "q").await;
    let a = get(&app, "/v1/messages?cursor=not-a-cursor").await;
    a.problem(400, "invalid_cursor").names("cursor");
    // Well-formed base64 that this API did not give out.
    let a = get(&app, "/v1/messages?cursor=aGVsbG8").await;
    a.problem(400, "invalid_cursor");
    let a = get(&app, "/v1/messages?cursor=").await;
    a.problem(400, "invalid_cursor");
    for limit in ["0", "5000", "1001", "-1", "ten", ""] {
        let a = get(&app, &format!("/v1/messages?limit={limit}")).await;
        a.problem(400, "invalid_query").names("limit");
    }
    let a = get(&app, "/v1/messages?colour=red").await;
    a.problem(400, "invalid_query").names("colour");
    let a = get(&app, "/v1/messages?status=lost").await;
    a.problem(400, "invalid_query").names("status");
    let a = get(&app, "/v1/messages?channel=fax").await;
    a.problem(400, "invalid_query").names("channel");
    let a = get(&app, "/v1/messages?created_from=yesterday").await;
    a.problem(400, "invalid_query").names("created_from");
    let a = get(&app, "/v1/messages?created_to=2026-13-45").await;
    a.problem(400, "invalid_query").names("created_to");
    // The same checks on the event feed.
    let a = get(&app, "/v1/message-events?cursor=zzz").await;
    a.problem(400, "invalid_cursor");
    let a = get(&app, "/v1/message-events?limit=0").await;
    a.problem(400, "invalid_query").names("limit");
    let a = get(&app, "/v1/message-events?from=yesterday").await;
    a.problem(400, "invalid_query").names("from");
    app.finish().await;
}

async fn scheduled_message_can_be_canceled_once(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let send_at = rfc3339::format(rfc3339::now() + 3_600_000);
    let body = json!({"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "later"}, "send_at": send_at, "validity_seconds": 60});
    let m = send(&app, &body).await;
    let id = id_of(&m);
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["send_at"], send_at);
    assert_eq!(millis(&m["expires_at"]), millis(&m["send_at"]) + 60_000, "validity counts from send_at");
    let stored = message(&app, &id).await;
    assert_eq!(kinds(&stored), ["accepted", "scheduled"]);
    assert_eq!(all_messages(&app, "&status=scheduled").await.len(), 1);

    let a = post(&app, &format!("/v1/messages/{id}/cancel"), &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["status"], "canceled");
    assert_eq!(a.json["id"], id);
    let canceled = message(&app, &id).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(kinds(&canceled), ["accepted", "scheduled", "canceled"]);
    assert_timeline_contiguous(&canceled);

    let again = post(&app, &format!("/v1/messages/{id}/cancel"), &json!({})).await;
    let p = again.problem(409, "message_not_cancelable");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("canceled")), "{p}");
    // A cancel without a body works as well.
    let bare =
        Answer::read(app.request(Method::POST, &format!("/v1/messages/{id}/cancel")).send().await.expect("POST")).await;
    bare.problem(409, "message_not_cancelable");
    assert_eq!(message(&app, &id).await["sequence"], 3, "refused cancels record nothing");

    // The dispatcher never picks it up, and the sandbox never sees it.
    let other = id_of(&send(&app, &text_to("sms", "+12025550150", "now")).await);
    app.wait_for_status(&other, &["delivered"], WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(message(&app, &id).await["status"], "canceled");
    assert_eq!(ledger_count(&app, &id), 0);
    app.finish().await;
}

async fn sent_and_unknown_messages_cannot_be_canceled(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let id = id_of(&send(&app, &text_to("sms", "+12025550150", "fast")).await);
    app.wait_for_status(&id, &["delivered"], WAIT).await;
    let a = post(&app, &format!("/v1/messages/{id}/cancel"), &json!({})).await;
    let p = a.problem(409, "message_not_cancelable");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("delivered")), "{p}");
    assert_eq!(message(&app, &id).await["status"], "delivered");

    let failed = id_of(&send(&app, &text_to("sms", "+12025550101", "nope")).await);
    app.wait_for_status(&failed, &["failed"], WAIT).await;
    post(&app, &format!("/v1/messages/{failed}/cancel"), &json!({})).await.problem(409, "message_not_cancelable");

    let unknown = parley_domain::MessageId::new().to_string();
    post(&app, &format!("/v1/messages/{unknown}/cancel"), &json!({})).await.problem(404, "not_found");
    post(&app, "/v1/messages/msg_nonsense/cancel", &json!({})).await.problem(404, "not_found");
    get(&app, &format!("/v1/messages/{unknown}")).await.problem(404, "not_found");
    app.finish().await;
}

async fn cancel_racing_the_dispatcher_never_sends_a_canceled_message(backend: Backend) {
    // One send at a time, 30 ms each: the dispatcher works through the batch while the cancels
    // arrive, so some find their message queued, some in flight, some already sent.
    let Some(app) = TestApp::start_with(backend, |c| c.max_in_flight = 1).await else { return };
    let account = slow_sms_account(&app, 30).await;
    let batch: Vec<Value> = (0..40)
        .map(|i| {
            json!({"to": "+12025550150", "channel": "sms", "channel_account_id": account,
            "content": {"type": "text", "text": format!("race {i}")}})
        })
        .collect();
    let a = post(&app, "/v1/messages/batch", &json!({"messages": batch})).await;
    assert_eq!(a.status, 202, "{}", a.text);
    let ids: Vec<String> = a.json["data"].as_array().expect("data").iter().map(|i| id_of(&i["message"])).collect();
    let empty = json!({});
    let paths: Vec<String> = ids.iter().map(|id| format!("/v1/messages/{id}/cancel")).collect();
    let cancels = paths.iter().map(|path| post(&app, path, &empty));
    let answers = futures::future::join_all(cancels).await;
    let mut canceled = 0;
    for (id, answer) in ids.iter().zip(&answers) {
        match answer.status {
            200 => {
                canceled += 1;
                assert_eq!(answer.json["status"], "canceled");
            }
            409 => {
                assert_problem_shape(answer);
                let code = answer.json["code"].as_str().unwrap_or_default();
                assert!(code == "message_in_flight" || code == "message_not_cancelable", "{answer}");
                app.wait_for_status(id, &["delivered"], WAIT).await;
            }
            other => panic!("cancel of {id} answered {other}: {answer}"),
        }
    }
    // Whatever won the race, a canceled message stays canceled and never reaches the sandbox.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, answer) in ids.iter().zip(&answers) {
        let m = message(&app, id).await;
        assert_timeline_contiguous(&m);
        if answer.status == 200 {
            assert_eq!(m["status"], "canceled", "{m:#}");
            assert_eq!(kinds(&m).last().map(String::as_str), Some("canceled"));
            assert_eq!(ledger_count(&app, id), 0, "canceled message {id} was handed to the sandbox");
        } else {
            assert_eq!(ledger_count(&app, id), 1);
        }
    }
    eprintln!("{canceled} of {} cancels won the race", ids.len());
    assert!(canceled > 0, "no cancel found its message still queued");
    app.finish().await;
}

async fn message_events_feed_follows_every_event(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let start = app.get_json("/v1/message-events?from=now").await;
    assert_eq!(start["data"], json!([]));
    let cursor = start["next_cursor"].as_str().expect("the feed always has a cursor").to_string();
    let id = id_of(&send(&app, &text_to("whatsapp", "+12025550150", "feed")).await);
    let m = app.wait_for_status(&id, &["read"], WAIT).await;
    let feed = app.get_json(&format!("/v1/message-events?cursor={cursor}")).await;
    let items = feed["data"].as_array().expect("data");
    let feed_kinds: Vec<&str> = items.iter().map(|e| e["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(feed_kinds, kinds(&m).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(items.iter().all(|e| e["channel"] == "whatsapp" && e["message_id"] == id.as_str()));
    let next = feed["next_cursor"].as_str().expect("cursor");
    let empty = app.get_json(&format!("/v1/message-events?cursor={next}")).await;
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["next_cursor"], next, "an empty poll keeps the cursor");
    app.finish().await;
}
