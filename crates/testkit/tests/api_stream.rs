//! The live event stream `GET /v1/stream` through the real server, on both backends: envelopes
//! in order with the message as it was, type and channel filters, refusals, tenancy, and resuming
//! with `Last-Event-ID` across a restart with every event exactly once.

mod common;

use common::*;
use futures::StreamExt as _;
use parley_domain::Scope;
use parley_testkit::{Backend, TestApp, on_both_backends};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

on_both_backends!(
    events_of_sent_messages_arrive_in_order_with_the_message_as_it_was,
    type_and_channel_filters,
    bad_filters_and_unknown_last_event_ids_are_refused,
    another_workspaces_events_never_appear,
    resuming_with_last_event_id_across_a_restart_loses_and_repeats_nothing,
);

const WAIT: Duration = Duration::from_secs(15);

/// One SSE message.
#[derive(Clone, Debug)]
struct SseEvent {
    id: String,
    event: String,
    data: Value,
}

impl SseEvent {
    fn message_id(&self) -> String {
        self.data["data"]["message"]["id"].as_str().expect("message id").to_string()
    }
}

type Body = Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// A client of `GET /v1/stream` that reads the body as it comes (`bytes_stream`) and splits it
/// into SSE messages; keep-alive comments are skipped.
struct SseClient {
    body: Body,
    buffer: String,
    /// Whether the server ended the stream.
    ended: bool,
}

impl SseClient {
    /// Connect with `key`, expecting 200 and an event stream.
    async fn connect(base_url: &str, key: &str, query: &str, last_event_id: Option<&str>) -> SseClient {
        let response = open(base_url, key, query, last_event_id).await;
        assert_eq!(response.status(), 200, "GET /v1/stream{query}");
        assert_eq!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("text/event-stream"),
            "content type"
        );
        let body = response.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec()));
        SseClient { body: Box::pin(body), buffer: String::new(), ended: false }
    }

    async fn of(app: &TestApp, query: &str) -> SseClient {
        SseClient::connect(&app.base_url, &app.admin_key, query, None).await
    }

    /// The next message, `None` when the stream ended or nothing came before `deadline`.
    async fn next_until(&mut self, deadline: tokio::time::Instant) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block) {
                    return Some(event);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream")),
                // A connection closed by a stopping server counts as the end too.
                Ok(Some(Err(_)) | None) => self.ended = true,
            }
        }
    }

    /// The next `n` messages; panics if they do not all come within [`WAIT`].
    async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_until(deadline).await {
                Some(event) => out.push(event),
                None => panic!(
                    "{} of {n} events came (ended: {}): {:?}",
                    out.len(),
                    self.ended,
                    out.iter().map(|e| &e.event).collect::<Vec<_>>()
                ),
            }
        }
        out
    }

    /// Nothing more comes for a while.
    async fn assert_quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
        if let Some(event) = self.next_until(deadline).await {
            panic!("unexpected event {} {}", event.event, event.data);
        }
    }

    /// Read until the server ends the stream.
    async fn assert_ends(&mut self) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut rest = Vec::new();
        while let Some(event) = self.next_until(deadline).await {
            rest.push(event);
        }
        assert!(self.ended, "the stream did not end");
        rest
    }
}

async fn open(base_url: &str, key: &str, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
    // No overall timeout: the body of a stream never ends by itself.
    let mut request = reqwest::Client::new().get(format!("{base_url}/v1/stream{query}")).bearer_auth(key);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.expect("GET /v1/stream")
}

/// One SSE block (`field: value` lines); `None` for a block without data (a keep-alive comment).
fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::new());
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = value.to_string(),
            "event" => event = value.to_string(),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = serde_json::from_str(&data.join("\n")).expect("data is JSON");
    Some(SseEvent { id, event, data })
}

/// The events of the stream that belong to message `id`.
fn of_message<'a>(events: &'a [SseEvent], id: &str) -> Vec<&'a SseEvent> {
    events.iter().filter(|e| e.message_id() == id).collect()
}

/// The message resource without its timeline, as an envelope carries it.
fn without_events(m: &Value) -> Value {
    let mut m = m.clone();
    m.as_object_mut().expect("object").remove("events");
    m
}

/// Check the envelopes of one message against its timeline (`GET /v1/messages/{id}`): one per
/// event, in order, each with the message as it was right after the event.
#[track_caller]
fn assert_envelopes_match_timeline(events: &[&SseEvent], message: &Value, workspace_id: &str) {
    let timeline = common::events(message);
    assert_eq!(events.len(), timeline.len(), "one envelope per event of {}", message["id"]);
    let mut status = Value::Null;
    for (e, t) in events.iter().zip(&timeline) {
        let envelope = &e.data;
        let kind = t["type"].as_str().expect("type");
        assert_eq!(e.id, t["id"].as_str().expect("event id"), "SSE id is the event id");
        assert_eq!(envelope["id"], t["id"]);
        assert_eq!(e.event, format!("message.{kind}"), "SSE event is the type");
        assert_eq!(envelope["type"], e.event.as_str());
        assert_eq!(envelope["created_at"], t["recorded_at"]);
        assert_eq!(envelope["workspace_id"], workspace_id);
        assert_eq!(envelope["data"]["sequence"], t["sequence"]);
        let m = &envelope["data"]["message"];
        assert_eq!(m["sequence"], t["sequence"], "{envelope}");
        assert!(m.get("events").is_none(), "no timeline in an envelope: {envelope}");
        // An applied state event sets the status; anything else leaves it as it was.
        if t["applied"] == true && kind != "attempt_failed" {
            status = json!(kind);
        }
        assert_eq!(m["status"], status, "status after {kind} (#{}): {envelope}", t["sequence"]);
    }
    let last = events.last().expect("events");
    assert_eq!(last.data["data"]["message"], without_events(message), "after its last event, the message as it is");
}

async fn events_of_sent_messages_arrive_in_order_with_the_message_as_it_was(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let mut stream = SseClient::of(&app, "").await;
    let delivered = id_of(&send(&app, &text_to("sms", "+12025550150", "hello")).await);
    // Delivered, then a late `sent` receipt that changes nothing.
    let out_of_order = id_of(&send(&app, &text_to("sms", "+12025550105", "late receipt")).await);
    // A transient error, then sent and delivered on the second attempt.
    let flaky = id_of(&send(&app, &text_to("sms", "+12025550111", "flaky")).await);
    let refused = id_of(&send(&app, &text_to("sms", "+12025550101", "refused")).await);
    // accepted, queued, sending, sent, delivered (5) + the late sent (6) + attempt_failed (6) + failed (4)
    let events = stream.take(5 + 6 + 6 + 4).await;
    stream.assert_quiet().await;

    let workspace_id = app.workspace_id.to_string();
    for (id, kinds) in [
        (&delivered, vec!["accepted", "queued", "sending", "sent", "delivered"]),
        (&out_of_order, vec!["accepted", "queued", "sending", "sent", "delivered", "sent"]),
        (&flaky, vec!["accepted", "queued", "sending", "attempt_failed", "sent", "delivered"]),
        (&refused, vec!["accepted", "queued", "sending", "failed"]),
    ] {
        let message = message(&app, id).await;
        assert_eq!(common::kinds(&message), kinds, "{message:#}");
        assert_envelopes_match_timeline(&of_message(&events, id), &message, &workspace_id);
    }
    let late = of_message(&events, &out_of_order)[5];
    assert_eq!((late.event.as_str(), &late.data["data"]["message"]["status"]), ("message.sent", &json!("delivered")));
    let retried = of_message(&events, &flaky);
    assert_eq!(retried[3].data["data"]["message"]["error"]["code"], "sandbox:temporary_failure");
    assert!(retried[4].data["data"]["message"].get("error").is_none(), "sent clears the transient error");
    assert_eq!(retried[4].data["data"]["message"]["attempts"], 2);
    let failed = of_message(&events, &refused)[3];
    assert_eq!(failed.data["data"]["message"]["error"]["code"], "sandbox:permanent_failure");
    assert!(of_message(&events, &delivered)[2].data["data"]["message"].get("provider_message_id").is_none());
    assert!(of_message(&events, &delivered)[3].data["data"]["message"]["provider_message_id"].is_string());
    // The stream is in recording order, which keeps every message's own order.
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let feed = app.get_json("/v1/message-events?limit=1000").await;
    let feed_ids: Vec<&str> = feed["data"].as_array().expect("data").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, feed_ids, "the stream follows the feed");
    app.finish().await;
}

async fn type_and_channel_filters(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let mut delivered = SseClient::of(&app, "?types=message.delivered").await;
    let mut whatsapp = SseClient::of(&app, "?types=message.*&channel=whatsapp").await;
    let mut ended = SseClient::of(&app, "?types=message.sent,%20message.failed&channel=sms,rcs").await;
    let sms = id_of(&send(&app, &text_to("sms", "+12025550150", "sms")).await);
    let wa = id_of(&send(&app, &text_to("whatsapp", "+12025550151", "whatsapp")).await);
    let rcs = id_of(&send(&app, &text_to("rcs", "+12025550101", "rcs refused")).await);

    let got = delivered.take(2).await;
    delivered.assert_quiet().await;
    assert!(got.iter().all(|e| e.event == "message.delivered" && e.data["data"]["message"]["status"] == "delivered"));
    let mut messages: Vec<String> = got.iter().map(SseEvent::message_id).collect();
    messages.sort();
    assert_eq!(messages, {
        let mut m = vec![sms.clone(), wa.clone()];
        m.sort();
        m
    });

    let got = whatsapp.take(6).await;
    whatsapp.assert_quiet().await;
    let types: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        types,
        ["message.accepted", "message.queued", "message.sending", "message.sent", "message.delivered", "message.read"]
    );
    assert!(got.iter().all(|e| e.message_id() == wa && e.data["data"]["message"]["channel"] == "whatsapp"));

    let got = ended.take(2).await;
    ended.assert_quiet().await;
    let got: HashMap<String, String> = got.iter().map(|e| (e.message_id(), e.event.clone())).collect();
    assert_eq!(got, HashMap::from([(sms, "message.sent".to_string()), (rcs, "message.failed".to_string())]));
    app.finish().await;
}

async fn bad_filters_and_unknown_last_event_ids_are_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let refused = |query: &'static str, last_event_id: Option<String>| {
        let (base, key) = (app.base_url.clone(), app.admin_key.clone());
        async move { Answer::read(open(&base, &key, query, last_event_id.as_deref()).await).await }
    };
    refused("?types=message.bogus", None).await.problem(422, "validation_failed").names("types");
    refused("?types=delivered", None).await.problem(422, "validation_failed").names("types");
    refused("?types=message.delivered,ticket.*", None).await.problem(422, "validation_failed").names("types");
    refused("?types=", None).await.problem(422, "validation_failed").names("types");
    refused("?channel=fax", None).await.problem(422, "validation_failed").names("channel");
    let both = refused("?types=message.nope&channel=sms,pigeon", None).await;
    both.problem(422, "validation_failed").names("types").names("channel");
    assert!(both.json["detail"].as_str().is_some_and(|d| d.contains("pigeon") && d.contains("message.nope")), "{both}");
    refused("?colour=red", None).await.problem(400, "invalid_query");

    // Resuming needs an event of this workspace: never a silent restart.
    let unknown = parley_domain::EventId::new().to_string();
    let a = refused("", Some(unknown.clone())).await;
    a.problem(422, "invalid_last_event_id").names("Last-Event-ID");
    assert!(a.json["detail"].as_str().is_some_and(|d| d.contains(&unknown)), "{a}");
    refused("", Some("garbage".into())).await.problem(422, "invalid_last_event_id");
    refused("", Some(parley_domain::MessageId::new().to_string())).await.problem(422, "invalid_last_event_id");
    let (b, _) = app.engine.create_workspace("B").await.expect("workspace B");
    let b_key = app.engine.create_api_key(b.id, "b", vec![Scope::Admin]).await.expect("key B").secret;
    let b_message = post_as(&app, &b_key, "/v1/messages", &text_to("sms", "+12025550150", "B")).await;
    assert_eq!(b_message.status, 202);
    let b_timeline = get_as(&app, &b_key, &format!("/v1/messages/{}", id_of(&b_message.json))).await;
    let b_event = common::events(&b_timeline.json)[0]["id"].as_str().expect("event id").to_string();
    refused("", Some(b_event)).await.problem(422, "invalid_last_event_id");

    // Keys: none is 401, one without messages:read is 403.
    let anonymous = reqwest::Client::new().get(app.url("/v1/stream")).send().await.expect("GET");
    Answer::read(anonymous).await.problem(401, "unauthorized");
    let writer = post(&app, "/v1/api-keys", &json!({"name": "sender", "scopes": ["messages:write"]})).await;
    let writer = writer.json["secret"].as_str().expect("secret").to_string();
    Answer::read(open(&app.base_url, &writer, "", None).await).await.problem(403, "forbidden");
    let reader = post(&app, "/v1/api-keys", &json!({"name": "reader", "scopes": ["messages:read"]})).await;
    let reader = reader.json["secret"].as_str().expect("secret").to_string();
    assert_eq!(open(&app.base_url, &reader, "", None).await.status(), 200);
    // The route is documented.
    let doc = call(&app, Method::GET, "/openapi.json", None).await;
    assert!(doc.json["paths"]["/v1/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
    app.finish().await;
}

async fn another_workspaces_events_never_appear(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let (b, _) = app.engine.create_workspace("B").await.expect("workspace B");
    let b_key = app.engine.create_api_key(b.id, "b", vec![Scope::Admin]).await.expect("key B").secret;
    let mut a_stream = SseClient::of(&app, "").await;
    let mut b_stream = SseClient::connect(&app.base_url, &b_key, "", None).await;
    let a_msg = id_of(&send(&app, &text_to("sms", "+12025550150", "for A")).await);
    let b_sent = post_as(&app, &b_key, "/v1/messages", &text_to("sms", "+12025550150", "for B")).await;
    assert_eq!(b_sent.status, 202, "{}", b_sent.text);
    let b_msg = id_of(&b_sent.json);
    let a_events = a_stream.take(5).await;
    let b_events = b_stream.take(5).await;
    a_stream.assert_quiet().await;
    b_stream.assert_quiet().await;
    assert!(a_events.iter().all(|e| e.message_id() == a_msg && e.data["workspace_id"] == app.workspace_id.to_string()));
    assert!(b_events.iter().all(|e| e.message_id() == b_msg && e.data["workspace_id"] == b.id.to_string()));
    app.finish().await;
}

async fn resuming_with_last_event_id_across_a_restart_loses_and_repeats_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let mut stream = SseClient::of(&app, "").await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(id_of(&send(&app, &text_to("sms", "+12025550150", &format!("before {i}"))).await));
    }
    let mut before = stream.take(4).await;
    // Delivered before the stop: the test's sandbox ledger lives in memory, so a restarted
    // process could not resume receipts for messages still waiting at `sent`.
    for id in &sent {
        app.wait_for_status(id, &["delivered"], WAIT).await;
    }
    // The server stops: the stream ends (with whatever it still had to say).
    let db = app.stop().await;
    before.extend(stream.assert_ends().await);
    let last_id = before.last().expect("events").id.clone();

    let app = TestApp::start_on(db, |_| {}).await;
    for i in 0..3 {
        sent.push(id_of(&send(&app, &text_to("sms", "+12025550150", &format!("after {i}"))).await));
    }
    for id in &sent {
        app.wait_for_status(id, &["delivered"], WAIT).await;
    }
    let feed = app.get_json("/v1/message-events?limit=1000").await;
    let feed_ids: Vec<String> =
        feed["data"].as_array().expect("data").iter().filter_map(|e| e["id"].as_str().map(str::to_string)).collect();
    assert!(feed_ids.len() >= 6 * 5, "every message delivered: {feed:#}");

    let mut resumed = SseClient::connect(&app.base_url, &app.admin_key, "", Some(&last_id)).await;
    let after = resumed.take(feed_ids.len() - before.len()).await;
    resumed.assert_quiet().await;
    let streamed: Vec<String> = before.iter().chain(&after).map(|e| e.id.clone()).collect();
    assert_eq!(streamed, feed_ids, "every event exactly once, in order, across the restart");
    // A filtered stream resumes after the same event too.
    let mut delivered =
        SseClient::connect(&app.base_url, &app.admin_key, "?types=message.delivered", Some(&last_id)).await;
    let expected = after.iter().filter(|e| e.event == "message.delivered").count();
    assert!(expected >= 3, "the messages sent after the restart were delivered after it");
    assert_eq!(delivered.take(expected).await.len(), expected);
    delivered.assert_quiet().await;
    app.finish().await;
}
