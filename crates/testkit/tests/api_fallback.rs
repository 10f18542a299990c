//! Routes with fallback through the real server, on both backends: WhatsApp → SMS when the
//! WhatsApp step fails, when it is reported undelivered, and when it is not delivered within
//! 60 s (the dispatcher's clock moved forward instead of waiting); the wait surviving a restart;
//! a late receipt of the step left recorded without messaging the customer again; and the
//! route's bad inputs refused with nothing stored.

mod common;

use common::*;
use parley_domain::{ChannelAccountId, MessageState, Millis, Receipt};
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    a_failed_whatsapp_step_falls_back_to_sms,
    an_undelivered_whatsapp_step_falls_back_and_each_step_keeps_its_provider_id,
    not_delivered_within_60_seconds_falls_back_once_and_a_late_receipt_changes_nothing,
    a_fallback_wait_survives_a_restart,
    a_route_to_a_contact_uses_each_channels_identity,
    a_step_the_policy_refuses_is_left_out,
    auto_falls_back_across_the_contacts_channels,
    bad_routes_are_refused_and_nothing_is_stored,
);

const CUSTOMER: &str = "+12025550150";
const WAIT: Duration = Duration::from_secs(15);

/// A sandbox WhatsApp account whose every send behaves as `every_send` says.
async fn whatsapp_account(app: &TestApp, every_send: &str) -> String {
    let body = json!({
        "channel": "whatsapp",
        "provider": "sandbox",
        "name": format!("WhatsApp ({every_send})"),
        "config": {"every_send": every_send, "receipt_latency_ms": 20},
    });
    let created = post(app, "/v1/channel-accounts", &body).await;
    assert_eq!(created.status, 201, "{created}");
    created.json["id"].as_str().unwrap().to_string()
}

fn route_body(whatsapp: &str, move_on: Value) -> Value {
    json!({
        "to": CUSTOMER,
        "content": {"type": "text", "text": "Your order has shipped"},
        "route": [
            {"channel": "whatsapp", "channel_account_id": whatsapp, "move_on": move_on},
            {"channel": "sms", "content": {"type": "text", "text": "Shipped! Track it in the app."}},
        ],
    })
}

/// The event types of the timeline with whether each was applied.
fn applied_kinds(m: &Value) -> Vec<(String, bool)> {
    events(m).iter().map(|e| (e["type"].as_str().unwrap().to_string(), e["applied"].as_bool().unwrap())).collect()
}

fn expect_fallen_back_to_sms(m: &Value, reason: &str) {
    assert_eq!(m["status"], "delivered", "{m:#}");
    assert_eq!((m["channel"].as_str(), m["to"].as_str()), (Some("sms"), Some(CUSTOMER)));
    assert_eq!(m["route"]["current_step"], 1);
    let steps = m["route"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["moved_on"], reason);
    assert!(steps[1]["started_at"].is_string() && steps[1]["sent_at"].is_string(), "{m:#}");
    let fallback = event(m, "fallback", 0);
    assert_eq!(fallback["details"]["fallback"]["reason"], reason);
    assert_eq!(fallback["details"]["fallback"]["to_channel"], "sms");
    assert_eq!(kinds(m).iter().filter(|k| *k == "fallback").count(), 1, "one fallback: {:?}", kinds(m));
    let sent = events(m).into_iter().rfind(|e| e["type"] == "sent").expect("a sent event");
    assert_eq!(sent["details"]["route_step"], 1);
    assert_eq!(event(m, "delivered", 0)["details"]["route_step"], 1);
    assert_timeline_contiguous(m);
}

async fn a_failed_whatsapp_step_falls_back_to_sms(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let whatsapp = whatsapp_account(&app, "permanent_failure").await;
    let accepted = send(&app, &route_body(&whatsapp, json!({"when": "failed"}))).await;
    assert_eq!((accepted.json_str("channel"), accepted.json_str("status")), ("whatsapp", "queued"));
    assert_eq!(accepted["route"]["steps"][1]["to"], CUSTOMER);

    let id = id_of(&accepted);
    app.wait_for_status(&id, &["delivered"], WAIT).await;
    let m = message(&app, &id).await;
    expect_fallen_back_to_sms(&m, "failed");
    // The refusal is recorded on the step, not as the message's end.
    let failed = event(&m, "failed", 0);
    assert_eq!(
        (failed["applied"].as_bool(), failed["error"]["code"].as_str()),
        (Some(false), Some("sandbox:permanent_failure"))
    );
    assert_eq!(failed["details"]["falls_back"], true);
    assert_eq!(m["route"]["steps"][0]["error"]["code"], "sandbox:permanent_failure");
    assert!(m.get("error").is_none(), "the message did not fail: {m:#}");
    // WhatsApp refused it (no acceptance); SMS took it once.
    assert_eq!(ledger_count(&app, &id), 1);
    assert_eq!(m["content"]["text"], "Your order has shipped");
    app.finish().await;
}

async fn an_undelivered_whatsapp_step_falls_back_and_each_step_keeps_its_provider_id(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let whatsapp = whatsapp_account(&app, "undeliverable").await;
    let body = route_body(&whatsapp, json!({"when": "not_delivered", "within_seconds": 3600}));
    let id = id_of(&send(&app, &body).await);
    app.wait_for_status(&id, &["delivered"], WAIT).await;
    let m = message(&app, &id).await;
    expect_fallen_back_to_sms(&m, "failed");
    let steps = m["route"]["steps"].as_array().unwrap();
    let (first, second) = (steps[0]["provider_message_id"].as_str(), steps[1]["provider_message_id"].as_str());
    assert!(first.is_some() && second.is_some() && first != second, "{m:#}");
    assert_eq!(m["provider_message_id"].as_str(), second);
    assert_eq!(event(&m, "undelivered", 0)["applied"], false);
    // One hand-off per step: WhatsApp took it (then could not deliver), SMS took it.
    assert_eq!(ledger_count(&app, &id), 2);
    app.finish().await;
}

/// The first step's provider id and account, from the message.
fn first_step(m: &Value) -> (ChannelAccountId, String) {
    let step = &m["route"]["steps"][0];
    (
        ChannelAccountId::parse(step["channel_account_id"].as_str().unwrap()).unwrap(),
        step["provider_message_id"].as_str().unwrap().to_string(),
    )
}

async fn not_delivered_within_60_seconds_falls_back_once_and_a_late_receipt_changes_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let whatsapp = whatsapp_account(&app, "no_receipt").await;
    let body = route_body(&whatsapp, json!({"when": "not_delivered", "within_seconds": 60}));
    let id = id_of(&send(&app, &body).await);
    let sent = app.wait_for_status(&id, &["sent"], WAIT).await;
    let deadline = millis(&sent["route"]["steps"][0]["sent_at"]) + 60_000;
    // Before the minute is up nothing moves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = message(&app, &id).await;
    assert_eq!((still["status"].as_str(), still["channel"].as_str()), (Some("sent"), Some("whatsapp")));

    app.engine.config().clock.advance(Duration::from_secs(61));
    app.wait_for_status(&id, &["delivered"], WAIT).await;
    let m = message(&app, &id).await;
    expect_fallen_back_to_sms(&m, "not_delivered");
    let fallback = event(&m, "fallback", 0);
    assert!(millis(&fallback["occurred_at"]) >= deadline, "not before the deadline: {fallback}");
    assert_eq!(m["content"]["text"], "Your order has shipped", "the message's own content stays");
    assert_eq!(ledger_count(&app, &id), 2);

    // WhatsApp's receipt comes after all: recorded on the message, which stays as it is.
    let (account, provider_id) = first_step(&m);
    let late = Receipt {
        channel_account_id: account,
        provider_message_id: provider_id.clone(),
        state: MessageState::Delivered,
        occurred_at: Millis::now(),
        error: None,
        details: None,
    };
    app.engine.store().record_receipts(vec![late]).await.unwrap();
    let after = wait_for_events(&app, &id, "delivered", 2, WAIT).await;
    let late = event(&after, "delivered", 1);
    assert_eq!(
        (late["applied"].as_bool(), late["provider_message_id"].as_str()),
        (Some(false), Some(provider_id.as_str()))
    );
    assert_eq!(
        (late["details"]["superseded"].as_bool(), late["details"]["route_step"].as_i64()),
        (Some(true), Some(0))
    );
    assert_eq!((after["status"].as_str(), after["channel"].as_str()), (Some("delivered"), Some("sms")));
    // Nothing more was sent, however long we wait.
    app.engine.config().clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ledger_count(&app, &id), 2);
    assert_eq!(applied_kinds(&message(&app, &id).await), applied_kinds(&after));
    app.finish().await;
}

async fn a_fallback_wait_survives_a_restart(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let whatsapp = whatsapp_account(&app, "no_receipt").await;
    let body = route_body(&whatsapp, json!({"when": "not_delivered", "within_seconds": 60}));
    let id = id_of(&send(&app, &body).await);
    app.wait_for_status(&id, &["sent"], WAIT).await;
    assert_eq!(ledger_count(&app, &id), 1);
    let db = app.stop().await;

    // A minute later, another process: the stored timer moves the message on, once.
    let app = TestApp::start_on(db, |config| config.clock.advance(Duration::from_secs(61))).await;
    app.wait_for_status(&id, &["delivered"], WAIT).await;
    let m = message(&app, &id).await;
    expect_fallen_back_to_sms(&m, "not_delivered");
    assert_eq!(ledger_count(&app, &id), 1, "this process sent the SMS step only");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ledger_count(&app, &id), 1);
    app.finish().await;
}

async fn a_route_to_a_contact_uses_each_channels_identity(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let contact =
        post(&app, "/v1/contacts", &json!({"identities": ["whatsapp:+4915123456789", "sms:+4915199999999"]})).await;
    assert_eq!(contact.status, 201, "{contact}");
    let body = json!({
        "contact_id": contact.json["id"],
        "route": [
            {"channel": "whatsapp", "content": {"type": "template", "name": "order_update", "language": "en"},
             "move_on": {"when": "not_read", "within_seconds": 600}},
            {"channel": "sms", "content": {"type": "text", "text": "Your order has shipped"}},
        ],
    });
    let m = send(&app, &body).await;
    assert_eq!((m.json_str("channel"), m.json_str("to")), ("whatsapp", "+4915123456789"));
    assert_eq!(m["route"]["steps"][1]["to"], "+4915199999999");
    assert_eq!(m["route"]["steps"][0]["move_on"], json!({"when": "not_read", "within_seconds": 600}));
    assert!(m["route"]["steps"][1].get("move_on").is_none());
    // Every step has its own content: the message's is the first step's.
    assert_eq!(m["content"]["type"], "template");
    assert_eq!(m["contact_id"], contact.json["id"]);
    let id = id_of(&m);
    // The sandbox reads WhatsApp messages: the route settles on its first step.
    let done = app.wait_for_status(&id, &["read"], WAIT).await;
    assert_eq!(done["route"]["current_step"], 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ledger_count(&app, &id), 1);
    let routing = event(&message(&app, &id).await, "accepted", 0)["details"]["routing"].clone();
    assert_eq!(routing["mode"], "route");

    // A contact without an identity on a step's channel cannot be routed there.
    let body = json!({"contact_id": contact.json["id"], "content": {"type": "text", "text": "hi"},
        "route": [{"channel": "sms"}, {"channel": "rcs"}]});
    post(&app, "/v1/messages", &body).await.problem(422, "route_step_unreachable").names("route[1]");
    app.finish().await;
}

async fn a_step_the_policy_refuses_is_left_out(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let contact =
        post(&app, "/v1/contacts", &json!({"identities": ["whatsapp:+4915123456789", "sms:+4915123456789"]})).await;
    // Nobody wrote on WhatsApp: free-form text there is refused, so the route starts on SMS.
    let body = json!({"contact_id": contact.json["id"], "content": {"type": "text", "text": "Hello"},
        "route": [{"channel": "whatsapp"}, {"channel": "sms"}]});
    let m = send(&app, &body).await;
    assert_eq!((m.json_str("channel"), m.json_str("status")), ("sms", "queued"));
    assert_eq!(m["route"]["steps"].as_array().map(Vec::len), Some(1));
    let id = id_of(&m);
    let routing = event(&message(&app, &id).await, "accepted", 0)["details"]["routing"].clone();
    assert_eq!(routing["left_out"], json!([{"step": 0, "channel": "whatsapp", "reason": "whatsapp_window_closed"}]));
    app.wait_for_status(&id, &["delivered"], WAIT).await;
    app.finish().await;
}

async fn auto_falls_back_across_the_contacts_channels(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let whatsapp = default_account(&app, "whatsapp").await;
    let number = "+4915123456789";
    let contact =
        post(&app, "/v1/contacts", &json!({"identities": [format!("whatsapp:{number}"), format!("sms:{number}")]}))
            .await;
    // The customer writes on WhatsApp (the window opens), then WhatsApp goes down.
    let inbound = post(
        &app,
        &format!("/v1/channel-accounts/{whatsapp}/simulate-inbound"),
        &json!({"from": number, "content": {"type": "text", "text": "Where is my order?"}}),
    )
    .await;
    assert_eq!(inbound.status, 201, "{inbound}");
    let down = call(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/channel-accounts/{whatsapp}"),
        Some(&json!({"config": {"every_send": "permanent_failure"}})),
    )
    .await;
    assert_eq!(down.status, 200, "{down}");

    let body =
        json!({"contact_id": contact.json["id"], "channel": "auto", "content": {"type": "text", "text": "On its way"}});
    let m = send(&app, &body).await;
    assert_eq!(m.json_str("channel"), "whatsapp");
    let id = id_of(&m);
    let routing = event(&message(&app, &id).await, "accepted", 0)["details"]["routing"].clone();
    assert_eq!((routing["mode"].as_str(), routing["fallback"].clone()), (Some("auto"), json!(["sms"])));
    let done = app.wait_for_status(&id, &["delivered"], WAIT).await;
    assert_eq!((done.json_str("channel"), done["route"]["steps"][0]["moved_on"].as_str()), ("sms", Some("failed")));
    assert_eq!(ledger_count(&app, &id), 1, "only SMS took it");
    app.finish().await;
}

async fn bad_routes_are_refused_and_nothing_is_stored(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let text = json!({"type": "text", "text": "hi"});
    let with_route = |route: Value| json!({"to": CUSTOMER, "content": text, "route": route});
    let cases = [
        (with_route(json!([])), "invalid_route", "route"),
        (with_route(Value::Array(vec![json!({"channel": "sms"}); 6])), "invalid_route", "route"),
        (
            with_route(json!([{"channel": "sms"}, {"channel": "whatsapp"}, {"channel": "sms"}])),
            "invalid_route",
            "route[2]",
        ),
        (
            with_route(
                json!([{"channel": "whatsapp", "move_on": {"when": "not_delivered", "within_seconds": 10}}, {"channel": "sms"}]),
            ),
            "invalid_route",
            "route[0].move_on.within_seconds",
        ),
        (
            with_route(
                json!([{"channel": "whatsapp", "move_on": {"when": "not_read", "within_seconds": 172_801}}, {"channel": "sms"}]),
            ),
            "invalid_route",
            "route[0].move_on.within_seconds",
        ),
        (
            with_route(json!([{"channel": "whatsapp"}, {"channel": "sms", "move_on": {"when": "failed"}}])),
            "invalid_route",
            "route[1].move_on",
        ),
        (
            with_route(
                json!([{"channel": "sms", "content": {"type": "template", "name": "x", "language": "en"}}, {"channel": "whatsapp"}]),
            ),
            "invalid_route",
            "route[0].content",
        ),
        (with_route(json!([{"channel": "webchat"}, {"channel": "sms"}])), "invalid_route", "route"),
        (
            json!({"to": CUSTOMER, "channel": "sms", "content": text, "route": [{"channel": "sms"}]}),
            "validation_failed",
            "route",
        ),
        (json!({"to": CUSTOMER, "route": [{"channel": "sms"}]}), "validation_failed", "content"),
    ];
    for (body, code, param) in &cases {
        let answer = post(&app, "/v1/messages", body).await;
        answer.problem(422, code).names(param);
    }
    // A condition that does not exist, and a timeout on `failed`, are malformed values.
    for move_on in [json!({"when": "later"}), json!({"when": "failed", "within_seconds": 60})] {
        let body = with_route(json!([{"channel": "whatsapp", "move_on": move_on}, {"channel": "sms"}]));
        let answer = post(&app, "/v1/messages", &body).await;
        assert_eq!(answer.status, 422, "{answer}");
    }
    assert!(all_messages(&app, "").await.is_empty(), "nothing was stored");
    app.finish().await;
}

trait JsonStr {
    fn json_str(&self, key: &str) -> &str;
}

impl JsonStr for Value {
    fn json_str(&self, key: &str) -> &str {
        self[key].as_str().unwrap_or_default()
    }
}
