//! Events about the workspace (here `endpoint.disabled`) through the real server, on both
//! backends: they share the feed with message events, so another endpoint receives them as
//! signed webhooks, and the live stream shows them, filters them by type, leaves them out of a
//! channel filter and resumes past them with `Last-Event-ID`.

mod common;

use common::*;
use futures::StreamExt as _;
use parley_testkit::receiver::{Receiver, Reply};
use parley_testkit::{Backend, TestApp, on_both_backends, webhook_test_config};
use serde_json::{Value, json};
use std::pin::Pin;
use std::time::Duration;

on_both_backends!(
    a_disabled_endpoint_is_announced_to_the_other_endpoints_and_on_the_stream,
    endpoint_event_types_are_accepted_and_unknown_resources_refused,
);

const WAIT: Duration = Duration::from_secs(20);

type Body = Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A client of `GET /v1/stream`: (SSE id, SSE event, data) per message, keep-alives skipped.
struct SseClient {
    body: Body,
    buffer: String,
}

impl SseClient {
    async fn connect(app: &TestApp, query: &str, last_event_id: Option<&str>) -> SseClient {
        let mut request =
            reqwest::Client::new().get(format!("{}/v1/stream{query}", app.base_url)).bearer_auth(&app.admin_key);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET /v1/stream");
        assert_eq!(response.status(), 200, "GET /v1/stream{query}");
        SseClient { body: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next message, `None` if nothing came before `deadline`.
    async fn next_until(&mut self, deadline: tokio::time::Instant) -> Option<(String, String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), None);
                for line in block.lines() {
                    match line.split_once(": ") {
                        Some(("id", v)) => id = v.to_string(),
                        Some(("event", v)) => event = v.to_string(),
                        Some(("data", v)) => data = Some(serde_json::from_str(v).expect("data is JSON")),
                        _ => {}
                    }
                }
                match data {
                    Some(data) => return Some((id, event, data)),
                    None => continue,
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream")),
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<(String, String, Value)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_until(deadline).await {
                Some(event) => out.push(event),
                None => panic!("{} of {n} events came: {out:?}", out.len()),
            }
        }
        out
    }

    async fn assert_quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
        if let Some(event) = self.next_until(deadline).await {
            panic!("unexpected event {event:?}");
        }
    }
}

async fn create_endpoint(app: &TestApp, body: Value) -> Value {
    let a = post(app, "/v1/webhook-endpoints", &body).await;
    assert_eq!(a.status, 201, "create endpoint: {a}");
    a.json
}

async fn a_disabled_endpoint_is_announced_to_the_other_endpoints_and_on_the_stream(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, webhook_test_config).await else { return };
    let gone = Receiver::start().await;
    gone.set_default(Reply::Status(410));
    let watcher = Receiver::start().await;
    let dead = create_endpoint(&app, json!({"url": gone.url("/gone"), "event_types": ["message.accepted"]})).await;
    let dead_id = dead["id"].as_str().unwrap().to_string();
    let watching = create_endpoint(&app, json!({"url": watcher.url("/w"), "event_types": ["endpoint.*"]})).await;
    let secret = watching["secret"].as_str().unwrap().to_string();
    let mut endpoint_events = SseClient::connect(&app, "?types=endpoint.*", None).await;
    let mut sms_only = SseClient::connect(&app, "?types=endpoint.*,message.accepted&channel=sms", None).await;

    let first = id_of(&send(&app, &text_to("sms", "+12025550142", "anyone?")).await);

    // The other endpoint gets the event, signed, in the common envelope.
    let received = watcher.wait_until(WAIT, "endpoint.disabled", |r| !r.is_empty()).await;
    let webhook = &received[0];
    assert!(webhook.signed_with(&secret), "signed: {}", webhook.signature);
    let body = webhook.json();
    let event_id = body["id"].as_str().expect("event id").to_string();
    assert!(event_id.starts_with("evt_"), "{body}");
    assert_eq!(webhook.webhook_id, event_id, "webhook-id is the event id");
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["workspace_id"], app.workspace_id.to_string());
    assert!(body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    assert_eq!(body["data"]["endpoint"]["id"], dead_id.as_str());
    assert_eq!(body["data"]["endpoint"]["enabled"], false);
    assert_eq!(body["data"]["endpoint"]["disabled_reason"], "gone");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["created_at", "data", "id", "type", "workspace_id"], "{body}");
    let stored = app.engine.store().list_workspace_events(app.workspace_id, 10).await.expect("events");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id.to_string(), event_id);
    let disabled = get(&app, &format!("/v1/webhook-endpoints/{dead_id}")).await;
    assert_eq!((disabled.status, &disabled.json["enabled"]), (200, &json!(false)), "{disabled}");

    // The stream shows the same envelope; only message events pass a channel filter.
    let got = endpoint_events.take(1).await;
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), (event_id.as_str(), "endpoint.disabled"));
    assert_eq!(got[0].2, body);
    endpoint_events.assert_quiet().await;
    let got = sms_only.take(1).await;
    assert_eq!((got[0].1.as_str(), got[0].2["data"]["message"]["id"].as_str()), ("message.accepted", Some(&*first)));
    sms_only.assert_quiet().await;

    // Resuming after it gives exactly the feed after it: the rest of the first message's events
    // (those committed after the disable) and the next message's, never the event itself.
    app.wait_for_status(&first, &["delivered"], WAIT).await;
    let second = id_of(&send(&app, &text_to("sms", "+12025550143", "later")).await);
    app.wait_for_status(&second, &["delivered"], WAIT).await;
    let store = app.engine.store();
    let position = store
        .event_position(app.workspace_id, parley_domain::EventId::parse(&event_id).expect("event id"))
        .await
        .expect("position")
        .expect("the event is in the feed");
    let after: Vec<String> = store
        .events_after(app.workspace_id, position, 100)
        .await
        .expect("feed")
        .iter()
        .map(|e| e.id().to_string())
        .collect();
    assert!(after.len() >= 5, "at least the second message's five events: {after:?}");
    let mut resumed = SseClient::connect(&app, "", Some(&event_id)).await;
    let got = resumed.take(after.len()).await;
    resumed.assert_quiet().await;
    assert_eq!(got.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), after);
    assert_eq!(got.iter().filter(|e| e.2["data"]["message"]["id"] == second.as_str()).count(), 5);
    // Resuming after it on the endpoint stream: nothing else about endpoints happened.
    let mut resumed = SseClient::connect(&app, "?types=endpoint.*", Some(&event_id)).await;
    resumed.assert_quiet().await;

    // The message-event list leaves it out, and its cursor moves past it.
    let page = get(&app, "/v1/message-events?limit=1000").await;
    assert_eq!(page.status, 200, "{page}");
    let listed: Vec<&str> = page.json["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 10, "the two messages' events: {listed:?}");
    assert!(!listed.contains(&event_id.as_str()));
    // The watcher got that one event only (its filter is endpoint.*).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(watcher.received().len(), 1);
    // It can be sent again like any event, to the endpoints that want it.
    let watching_id = watching["id"].as_str().unwrap();
    let a = post(&app, &format!("/v1/webhook-events/{event_id}/redeliver"), &json!({})).await;
    assert_eq!((a.status, &a.json["endpoints"]), (202, &json!([watching_id])), "{a}");
    let again = watcher.wait_until(WAIT, "the event again", |r| r.len() >= 2).await;
    assert_eq!((again[1].webhook_id.as_str(), &again[1].body), (event_id.as_str(), &again[0].body));
    app.finish().await;
}

async fn endpoint_event_types_are_accepted_and_unknown_resources_refused(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, webhook_test_config).await else { return };
    let receiver = Receiver::start().await;
    let types = ["endpoint.disabled", "conversation.*", "conversation.assigned", "contact.opted_out", "message.*"];
    let created = create_endpoint(&app, json!({"url": receiver.url("/x"), "event_types": types})).await;
    assert_eq!(created["event_types"], json!(types));
    for bad in ["ticket.opened", "tickets.*", "contact.Opted", "message.exploded"] {
        let a = post(&app, "/v1/webhook-endpoints", &json!({"url": receiver.url("/y"), "event_types": [bad]})).await;
        a.problem(422, "unknown_event_type");
    }
    let ok = reqwest::Client::new()
        .get(format!("{}/v1/stream?types=conversation.*,contact.opted_in", app.base_url))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .expect("stream");
    assert_eq!(ok.status(), 200);
    drop(ok);
    let refused = get(&app, "/v1/stream?types=endpoint.*,ticket.opened").await;
    refused.problem(422, "validation_failed");
    app.finish().await;
}
