//! The WhatsApp Cloud API connector end to end, on both backends: a WhatsApp channel account
//! created through the API, messages sent to the fake Graph API (`parley_testkit::fake_graph`)
//! over HTTP, its signed status webhooks and inbound messages arriving at
//! `/hooks/whatsapp/{id}` of the real server.

mod common;

use common::*;
use parley_testkit::fake_graph::{self, FakeGraph, magic};
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    text_and_template_are_delivered_then_read_through_signed_status_webhooks,
    an_inbound_reply_arrives_as_an_inbound_message_once,
    a_bad_signature_is_401_and_stores_nothing,
    the_handshake_echoes_the_challenge_for_the_verify_token_only,
    outside_the_window_fails_the_message_with_its_code,
    an_undeliverable_recipient_fails_now_or_later_with_its_code,
    a_throughput_limit_is_waited_out_and_the_message_sent,
    the_account_is_checked_against_the_graph_api,
);

const WAIT: Duration = Duration::from_secs(15);
const CUSTOMER: &str = "+12025550150";

/// A WhatsApp account on the fake, as the workspace's default WhatsApp account, with the fake's
/// webhooks pointed at its hook; its id and callback URL.
async fn whatsapp_account(app: &TestApp, fake: &FakeGraph) -> (String, String) {
    let a = post(
        app,
        "/v1/channel-accounts",
        &json!({
            "channel": "whatsapp",
            "provider": "whatsapp",
            "name": "WhatsApp (fake Graph API)",
            "config": fake.config(),
            "credentials": fake.credentials(),
            "is_default": true,
        }),
    )
    .await;
    assert_eq!(a.status, 201, "{a}");
    let id = a["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("cha_"), "{id}");
    for secret in [fake_graph::ACCESS_TOKEN, fake_graph::APP_SECRET, fake_graph::VERIFY_TOKEN] {
        assert!(!a.text.contains(secret), "credentials are never shown: {a}");
    }
    let callback_url = app.url(&format!("/hooks/whatsapp/{id}"));
    if let Some(shown) = a["callback_url"].as_str() {
        assert_eq!(shown, callback_url);
    }
    fake.set_webhook_url(&callback_url);
    (id, callback_url)
}

async fn all(app: &TestApp) -> Vec<Value> {
    let page = app.get_json("/v1/messages?limit=100").await;
    page["data"].as_array().expect("data").clone()
}

async fn text_and_template_are_delivered_then_read_through_signed_status_webhooks(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let fake = FakeGraph::start().await;
    let (account, _) = whatsapp_account(&app, &fake).await;

    let text = id_of(
        &send(&app, &text_to("whatsapp", CUSTOMER, "Olá! Your order ships today: https://x.example/o/1 📦")).await,
    );
    let template = id_of(
        &send(
            &app,
            &json!({"to": "+1 202 555 0151", "channel": "whatsapp", "content": {
                "type": "template", "name": "order_shipped", "language": "en_US",
                "variables": {"1": "Ann", "2": "A-17"},
                "components": [
                    {"type": "header", "parameters": [{"type": "image", "url": "https://x.example/parcel.png"}]},
                    {"type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [{"type": "payload", "payload": "TRACK-A17"}]}
                ]}}),
        )
        .await,
    );
    for id in [&text, &template] {
        let m = app.wait_for_status(id, &["read"], WAIT).await;
        assert_timeline_contiguous(&m);
        assert_eq!(m["channel_account_id"], account.as_str());
        let wamid = m["provider_message_id"].as_str().expect("provider id");
        assert!(wamid.starts_with("wamid."), "{m}");
        let kinds = kinds(&m);
        assert_eq!(&kinds[kinds.len() - 3..], ["sent", "delivered", "read"], "{kinds:?}");
        assert_eq!(event(&m, "read", 0)["provider_message_id"], wamid);
    }

    // What reached Meta: bearer token, Meta's shapes.
    let r = &fake.requests_to(CUSTOMER)[0];
    assert_eq!(r.path, format!("/v23.0/{}/messages", fake_graph::PHONE_NUMBER_ID));
    assert_eq!(r.token.as_deref(), Some(fake_graph::ACCESS_TOKEN));
    assert_eq!(r.status, 200, "{:?}", r.response);
    assert_eq!(r.body["to"], "12025550150");
    assert_eq!(r.body["type"], "text");
    assert_eq!(r.body["text"]["preview_url"], true);
    assert_eq!(r.body["text"]["body"], "Olá! Your order ships today: https://x.example/o/1 📦");
    let t = &fake.requests_to("+12025550151")[0];
    assert_eq!(t.status, 200, "{:?}", t.response);
    assert_eq!(
        t.body["template"],
        json!({"name": "order_shipped", "language": {"code": "en_US"}, "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x.example/parcel.png"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-17"}]},
            {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "TRACK-A17"}]}
        ]})
    );
    // Every status webhook was accepted.
    let webhooks = fake.wait_for_webhooks(6, WAIT).await;
    assert!(webhooks.iter().all(|w| w.answered == Some(200)), "{webhooks:#?}");
    app.finish().await;
}

async fn an_inbound_reply_arrives_as_an_inbound_message_once(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeGraph::start().await;
    let (account, _) = whatsapp_account(&app, &fake).await;
    let (wamid, response) = fake.send_inbound_text(CUSTOMER, "Café ☕ at 10?").await;
    assert_eq!(response.status(), 200);
    // Meta delivers again when unsure: stored once.
    let again = fake.webhooks().last().expect("delivered").body.clone();
    let repeat = fake_graph::post_raw(
        &reqwest::Client::new(),
        &app.url(&format!("/hooks/whatsapp/{account}")),
        &fake_graph::sign(fake_graph::APP_SECRET, &again),
        again,
    )
    .await;
    assert_eq!(repeat.status(), 200);
    let (button_id, response) = fake.send_inbound_button_reply(CUSTOMER, "wamid.earlier", "yes-10", "Yes, 10:00").await;
    assert_eq!(response.status(), 200);

    let inbound = inbound_messages(&app).await;
    assert_eq!(inbound.len(), 2, "a repeated webhook is stored once: {inbound:#?}");
    let text = inbound.iter().find(|m| m["provider_message_id"] == wamid.as_str()).expect("the text");
    assert_eq!(text["status"], "received");
    assert_eq!(text["channel"], "whatsapp");
    assert_eq!(text["channel_account_id"], account.as_str());
    assert_eq!(text["from"], CUSTOMER);
    assert_eq!(text["content"], json!({"type": "text", "text": "Café ☕ at 10?"}));
    let reply = inbound.iter().find(|m| m["provider_message_id"] == button_id.as_str()).expect("the reply");
    assert_eq!(reply["content"], json!({"type": "reply", "text": "Yes, 10:00", "payload": "yes-10"}));
    app.finish().await;
}

async fn a_bad_signature_is_401_and_stores_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeGraph::start().await;
    let (_, callback_url) = whatsapp_account(&app, &fake).await;
    let http = reqwest::Client::new();
    let inbound = json!({"object": "whatsapp_business_account", "entry": [{"id": fake_graph::WABA_ID, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": fake_graph::DISPLAY_PHONE_NUMBER, "phone_number_id": fake_graph::PHONE_NUMBER_ID},
                  "messages": [{"from": "12025550150", "id": "wamid.forged", "timestamp": "1700000000", "type": "text", "text": {"body": "forged"}}]}}]}]});
    let forged =
        Answer::read(fake_graph::post_signed(&http, &callback_url, "not-the-app-secret", &inbound).await).await;
    forged.problem(401, "callback_signature_invalid");
    let unsigned = Answer::read(
        http.post(&callback_url)
            .header("content-type", "application/json")
            .body(fake_graph::meta_json(&inbound))
            .send()
            .await
            .expect("POST"),
    )
    .await;
    unsigned.problem(401, "callback_signature_invalid");
    // Signed, then changed on the way.
    let body = fake_graph::meta_json(&inbound);
    let signature = fake_graph::sign(fake_graph::APP_SECRET, &body);
    let tampered = String::from_utf8(body).expect("utf-8").replace("forged", "FORGED").into_bytes();
    let tampered = Answer::read(fake_graph::post_raw(&http, &callback_url, &signature, tampered).await).await;
    tampered.problem(401, "callback_signature_invalid");
    // A forged status changes nothing either.
    let status = FakeGraph::status_payload("wamid.forged", CUSTOMER, "delivered", None);
    let forged = Answer::read(fake_graph::post_signed(&http, &callback_url, "nope", &status).await).await;
    forged.problem(401, "callback_signature_invalid");

    assert!(all(&app).await.is_empty(), "nothing stored");
    app.finish().await;
}

async fn the_handshake_echoes_the_challenge_for_the_verify_token_only(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeGraph::start().await;
    let (_, callback_url) = whatsapp_account(&app, &fake).await;
    let http = reqwest::Client::new();
    let ok = http
        .get(format!(
            "{callback_url}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={}",
            fake_graph::VERIFY_TOKEN
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status(), 200);
    assert!(ok.headers()["content-type"].to_str().is_ok_and(|c| c.starts_with("text/plain")));
    assert_eq!(ok.text().await.expect("body"), "1158201444");
    let wrong = Answer::read(
        http.get(format!("{callback_url}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess"))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    wrong.problem(403, "callback_forbidden");
    assert!(!wrong.text.contains("1158201444"));
    app.finish().await;
}

async fn outside_the_window_fails_the_message_with_its_code(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeGraph::start().await;
    whatsapp_account(&app, &fake).await;
    // By default Parley keeps the window itself: this customer never wrote, so free-form text is
    // refused before anything reaches Meta.
    let refused = post(&app, "/v1/messages", &text_to("whatsapp", magic::WINDOW_CLOSED, "are you there?")).await;
    refused.problem(422, "whatsapp_window_closed");
    assert!(fake.requests_to(magic::WINDOW_CLOSED).is_empty());
    // Left to Meta, the send goes out and fails with Meta's code.
    leave_whatsapp_window_to_meta(&app).await;
    let id = id_of(&send(&app, &text_to("whatsapp", magic::WINDOW_CLOSED, "are you there?")).await);
    let m = app.wait_for_status(&id, &["failed"], WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(kinds(&m), ["accepted", "queued", "sending", "failed"], "{m:#}");
    assert_eq!(m["error"]["code"], "whatsapp:131047");
    assert_eq!(m["error"]["permanent"], true);
    assert!(m["error"]["detail"].as_str().is_some_and(|d| d.contains("template")), "{m}");
    assert_eq!(m["attempts"], 1, "a permanent error is not retried");
    assert_eq!(fake.requests_to(magic::WINDOW_CLOSED).len(), 1);
    // A template still reaches the customer.
    let template = json!({"to": magic::WINDOW_CLOSED, "channel": "whatsapp",
                          "content": {"type": "template", "name": "hello_world", "language": "en_US"}});
    let id = id_of(&send(&app, &template).await);
    app.wait_for_status(&id, &["read"], WAIT).await;
    app.finish().await;
}

async fn an_undeliverable_recipient_fails_now_or_later_with_its_code(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let fake = FakeGraph::start().await;
    whatsapp_account(&app, &fake).await;
    let now = id_of(&send(&app, &text_to("whatsapp", magic::UNDELIVERABLE, "hi")).await);
    let m = app.wait_for_status(&now, &["failed"], WAIT).await;
    assert_eq!(m["error"]["code"], "whatsapp:131026");
    assert_eq!(m["attempts"], 1);
    let later = id_of(&send(&app, &text_to("whatsapp", magic::FAILS_LATER, "hi")).await);
    let m = app.wait_for_status(&later, &["failed"], WAIT).await;
    assert_timeline_contiguous(&m);
    let kinds = kinds(&m);
    assert_eq!(&kinds[kinds.len() - 2..], ["sent", "failed"], "{kinds:?}");
    assert_eq!(m["error"]["code"], "whatsapp:131026");
    assert!(m["error"]["detail"].as_str().is_some_and(|d| d.contains("undeliverable")), "{m}");
    app.finish().await;
}

async fn a_throughput_limit_is_waited_out_and_the_message_sent(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let fake = FakeGraph::start().await;
    whatsapp_account(&app, &fake).await;
    let id = id_of(&send(&app, &text_to("whatsapp", magic::RATE_LIMITED_ONCE, "hi")).await);
    let m = app.wait_for_status(&id, &["sent", "delivered", "read"], WAIT).await;
    let attempt_failed = event(&m, "attempt_failed", 0);
    assert_eq!(attempt_failed["error"]["code"], "whatsapp:130429", "{m:#}");
    assert_eq!(attempt_failed["error"]["permanent"], false);
    let pause = millis(&attempt_failed["retry_at"]) - millis(&attempt_failed["occurred_at"]);
    assert!((900..=1300).contains(&pause), "the number pauses 1 s after a 130429: {pause}");
    let requests = fake.requests_to(magic::RATE_LIMITED_ONCE);
    assert_eq!(requests.len(), 2, "the pause was waited out, then sent once");
    assert_eq!(requests[0].status, 400);
    assert_eq!(requests[1].status, 200);
    app.finish().await;
}

async fn the_account_is_checked_against_the_graph_api(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeGraph::start().await;
    let (id, _) = whatsapp_account(&app, &fake).await;
    let a = post(&app, &format!("/v1/channel-accounts/{id}/check"), &json!({})).await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a["status"], "ok", "{a}");
    assert!(a["detail"].as_str().is_some_and(|d| d.contains("Parley Test")), "{a}");
    let get = fake.requests().into_iter().find(|r| r.method == "GET").expect("a GET of the number");
    assert_eq!(get.path, format!("/v23.0/{}", fake_graph::PHONE_NUMBER_ID));
    assert_eq!(get.token.as_deref(), Some(fake_graph::ACCESS_TOKEN));
    app.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The connector against the fake directly (no server, no database).

fn connector(fake: &FakeGraph, credentials: Value) -> parley_channels::whatsapp::WhatsAppConnector {
    let config = fake.config();
    let spec = parley_channels::AccountSpec {
        id: parley_domain::ChannelAccountId::new(),
        channel: parley_domain::Channel::Whatsapp,
        provider: "whatsapp",
        config: &config,
        credentials: &credentials,
        callback_url: "",
    };
    parley_channels::whatsapp::WhatsAppConnector::from_spec(spec, reqwest::Client::new()).expect("connector")
}

fn outbound(to: &str, content: parley_domain::Content) -> parley_channels::OutboundRequest {
    parley_channels::OutboundRequest {
        message_id: parley_domain::MessageId::new(),
        channel_account_id: parley_domain::ChannelAccountId::new(),
        attempt: 1,
        channel: parley_domain::Channel::Whatsapp,
        to: to.into(),
        from: None,
        content,
        expires_at: parley_domain::Millis(i64::MAX),
    }
}

/// The fake's shape checks agree with Meta's own examples: every request example of the OpenAPI
/// is taken, except the one whose parameters are booleans where the schema says string.
#[tokio::test]
async fn the_fake_takes_every_request_example_of_meta_s_openapi() {
    let fake = FakeGraph::start().await;
    let examples: Value =
        serde_json::from_str(include_str!("../../channels/tests/fixtures/whatsapp/send_message_requests.json"))
            .expect("examples");
    let http = reqwest::Client::new();
    let url = format!("{}/v23.0/{}/messages", fake.base_url, fake_graph::PHONE_NUMBER_ID);
    for (name, example) in examples.as_object().expect("object") {
        let mut body = example.clone();
        if body.get("to").is_some() {
            body["to"] = json!("16505551234");
        }
        let answer = http.post(&url).bearer_auth(fake_graph::ACCESS_TOKEN).json(&body).send().await.expect("POST");
        let status = answer.status().as_u16();
        let answer: Value = answer.json().await.expect("JSON");
        if name == "Send Sample Issue Resolution Template" {
            assert_eq!(status, 400, "{name}: {answer}");
            assert_eq!(answer["error"]["code"], 100);
        } else {
            assert_eq!(status, 200, "{name}: {answer}");
        }
    }
    // Without the right token: Meta's 401.
    let answer = http.post(&url).bearer_auth("wrong").json(&json!({})).send().await.expect("POST");
    assert_eq!(answer.status(), 401);
    let answer: Value = answer.json().await.expect("JSON");
    assert_eq!(answer["error"]["code"], 190);
}

#[tokio::test]
async fn the_connector_sends_every_kind_and_marks_read_through_the_fake() {
    use parley_channels::{Connector, SendResult};
    use parley_domain::{Content, InteractiveAction, MediaKind, ReplyButton};
    let fake = FakeGraph::start().await;
    let c = connector(&fake, fake.credentials());
    let contents = [
        Content::text("plain"),
        Content::Template {
            name: "hello_world".into(),
            language: "en_US".into(),
            variables: [("first_name".to_string(), "Ann".to_string())].into_iter().collect(),
            components: vec![],
        },
        Content::Media {
            url: None,
            media_id: Some("1003383421387256".into()),
            kind: Some(MediaKind::Document),
            caption: Some("invoice".into()),
            mime_type: Some("application/pdf".into()),
            filename: Some("invoice.pdf".into()),
        },
        Content::Media {
            url: Some("https://x.example/s.webp".into()),
            media_id: None,
            kind: Some(MediaKind::Sticker),
            caption: None,
            mime_type: None,
            filename: None,
        },
        Content::Interactive {
            header: None,
            body: "Pick".into(),
            footer: Some("f".into()),
            action: InteractiveAction::Buttons { buttons: vec![ReplyButton { id: "a".into(), title: "A".into() }] },
        },
        Content::Interactive {
            header: None,
            body: "Visit".into(),
            footer: None,
            action: InteractiveAction::CtaUrl { display_text: "Open".into(), url: "https://x.example".into() },
        },
        Content::Reaction { message_id: "wamid.X".into(), emoji: "👍".into() },
        Content::Location { latitude: 1.5, longitude: 2.5, name: None, address: None },
    ];
    for content in contents {
        let result = c.send(&outbound(CUSTOMER, content.clone())).await;
        assert!(
            matches!(&result, SendResult::Accepted { provider_message_id, .. } if provider_message_id.starts_with("wamid.")),
            "{content:?}: {result:?}; the fake said {:?}",
            fake.requests().last().map(|r| r.response.clone())
        );
    }
    c.mark_read("wamid.inbound").await.expect("marked read");
    let last = fake.requests().last().cloned().expect("a request");
    assert_eq!(last.body, json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.inbound"}));
    assert_eq!(last.response, json!({"success": true}));

    // A wrong token is final, and named by Meta's code.
    let mut wrong = fake.credentials();
    wrong["access_token"] = json!("expired");
    let c = connector(&fake, wrong);
    match c.send(&outbound(CUSTOMER, Content::text("x"))).await {
        SendResult::Permanent { error } => assert_eq!(error.code, "whatsapp:190"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.check().await, parley_channels::CheckResult::Failed { code, .. } if code == "whatsapp:190"));
    assert!(c.mark_read("wamid.inbound").await.is_err_and(|e| e.permanent));
}

#[tokio::test]
async fn a_pair_rate_limit_pauses_only_that_recipient_against_the_fake() {
    use parley_channels::{Connector, SendResult};
    let fake = FakeGraph::start().await;
    let c = connector(&fake, fake.credentials());
    let text = || parley_domain::Content::text("hi");
    match c.send(&outbound(magic::PAIR_LIMITED_ONCE, text())).await {
        SendResult::Transient { error, retry_after_ms } => {
            assert_eq!(error.code, "whatsapp:131056");
            assert_eq!(retry_after_ms, Some(4000));
        }
        other => panic!("{other:?}"),
    }
    // Paused: answered without calling Meta.
    assert!(matches!(c.send(&outbound(magic::PAIR_LIMITED_ONCE, text())).await, SendResult::Transient { .. }));
    assert_eq!(fake.requests_to(magic::PAIR_LIMITED_ONCE).len(), 1);
    // Others go on.
    assert!(matches!(c.send(&outbound(CUSTOMER, text())).await, SendResult::Accepted { .. }));
}
