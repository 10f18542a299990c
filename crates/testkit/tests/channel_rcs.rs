//! RCS over the `rbm` connector end to end: a channel account made through the API points at the
//! fake RBM; messages go out through the dispatcher, receipts and user messages come back as
//! signed Pub/Sub pushes to `/hooks/rbm/{id}`, on both backends.

mod common;

use common::*;
use parley_testkit::fake_rbm::{self, FakeRbm, magic};
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    text_and_card_are_delivered_then_read,
    a_user_reply_arrives_once,
    a_bad_signature_is_refused_and_stores_nothing,
    the_registration_handshake_echoes_the_secret,
    an_unreachable_number_fails_with_rcs_unreachable,
    auto_routing_asks_rbm_first_and_passes_over_a_number_without_rcs,
);

const WAIT: Duration = Duration::from_secs(15);
const PHONE: &str = "+12025550150";
const CLIENT_TOKEN: &str = "rcs-e2e-client-token";

/// An `rbm` account for the fake, the workspace's default for RCS; its id and hook URL.
async fn rbm_account(app: &TestApp, fake: &FakeRbm) -> (String, String) {
    let body = json!({
        "channel": "rcs",
        "provider": "rbm",
        "name": "RBM test agent",
        "config": fake.config_json(),
        "credentials": fake.credentials_json(CLIENT_TOKEN),
        "is_default": true,
    });
    let a = post(app, "/v1/channel-accounts", &body).await;
    assert_eq!(a.status, 201, "{a}");
    let id = a["id"].as_str().expect("account id").to_string();
    assert!(id.starts_with("cha_"), "{id}");
    assert!(a.text.find(CLIENT_TOKEN).is_none(), "the client token is never shown: {a}");
    let hook = app.url(&format!("/hooks/rbm/{id}"));
    (id, hook)
}

fn rcs(account: &str, to: &str, content: Value) -> Value {
    json!({"to": to, "channel": "rcs", "channel_account_id": account, "content": content})
}

/// The provider id of a sent message (Parley's id as a UUID).
fn provider_id(m: &Value) -> String {
    m["provider_message_id"].as_str().expect("provider_message_id").to_string()
}

async fn inbound(app: &TestApp) -> Vec<Value> {
    all_messages(app, "").await.into_iter().filter(|m| m["direction"] == "inbound").collect()
}

async fn text_and_card_are_delivered_then_read(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeRbm::start().await;
    let (account, hook) = rbm_account(&app, &fake).await;
    let text = id_of(&send(&app, &rcs(&account, PHONE, json!({"type": "text", "text": "Your order shipped"}))).await);
    let card = json!({"type": "card", "card": {
        "title": "Order 42", "description": "On its way",
        "media": {"url": "https://example.com/parcel.jpg", "height": "medium"},
        "suggestions": [{"type": "reply", "text": "Track", "postback_data": "track_42"}]
    }});
    let card = id_of(&send(&app, &rcs(&account, PHONE, card)).await);
    for id in [&text, &card] {
        let m = app.wait_for_status(id, &["sent"], WAIT).await;
        let pid = provider_id(&m);
        let parley_uuid = parley_domain::MessageId::parse(id).unwrap().uuid().hyphenated().to_string();
        assert_eq!(pid, parley_uuid, "RBM's messageId is Parley's id");
        assert_eq!(fake.push(&hook, CLIENT_TOKEN, &fake_rbm::delivered(PHONE, &pid)).await.status(), 200);
        let m = app.wait_for_status(id, &["delivered"], WAIT).await;
        assert_eq!(kinds(&m), ["accepted", "queued", "sending", "sent", "delivered"]);
        // A repeated push changes nothing.
        assert_eq!(fake.push(&hook, CLIENT_TOKEN, &fake_rbm::delivered(PHONE, &pid)).await.status(), 200);
        assert_eq!(fake.push(&hook, CLIENT_TOKEN, &fake_rbm::read(PHONE, &pid)).await.status(), 200);
        let m = app.wait_for_status(id, &["read"], WAIT).await;
        assert_eq!(m["status"], "read");
        // Typing says nothing to store.
        assert_eq!(fake.push(&hook, CLIENT_TOKEN, &fake_rbm::typing(PHONE)).await.status(), 200);
    }
    let sent = fake.accepted_messages();
    assert_eq!(sent.len(), 2, "each message reached RBM once");
    let bodies: Vec<&Value> = sent.iter().map(|r| &r.body["contentMessage"]).collect();
    assert!(bodies.iter().any(|b| b["text"] == "Your order shipped"), "{bodies:?}");
    let standalone = bodies.iter().find_map(|b| b.pointer("/richCard/standaloneCard")).expect("a rich card was sent");
    assert_eq!(standalone["cardContent"]["title"], "Order 42");
    assert_eq!(standalone["cardContent"]["media"]["contentInfo"]["fileUrl"], "https://example.com/parcel.jpg");
    assert_eq!(standalone["cardContent"]["suggestions"][0]["reply"]["postbackData"], "track_42");
    assert!(inbound(&app).await.is_empty(), "receipts and typing are not inbound messages");
    app.finish().await;
}

async fn a_user_reply_arrives_once(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeRbm::start().await;
    let (account, hook) = rbm_account(&app, &fake).await;
    let text = fake_rbm::user_text(PHONE, "MsUserText1", "Where is my parcel?");
    let tap = fake_rbm::suggestion_response(PHONE, "MsUserTap1", "Track", "track_42");
    for data in [&text, &tap, &text, &tap] {
        assert_eq!(fake.push(&hook, CLIENT_TOKEN, data).await.status(), 200);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        let got = inbound(&app).await;
        if got.len() >= 2 || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // Give a wrongly stored duplicate time to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_again = inbound(&app).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got_again.len(), 2, "duplicates store nothing new: {got_again:#?}");
    for m in &got {
        assert_eq!(m["status"], "received");
        assert_eq!(m["channel"], "rcs");
        assert_eq!(m["channel_account_id"], account.as_str());
    }
    let contents: Vec<&Value> = got.iter().map(|m| &m["content"]).collect();
    assert!(contents.contains(&&json!({"type": "text", "text": "Where is my parcel?"})), "{contents:?}");
    assert!(contents.contains(&&json!({"type": "reply", "text": "Track", "payload": "track_42"})), "{contents:?}");
    app.finish().await;
}

async fn a_bad_signature_is_refused_and_stores_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeRbm::start().await;
    let (account, hook) = rbm_account(&app, &fake).await;
    let id = id_of(&send(&app, &rcs(&account, PHONE, json!({"type": "text", "text": "hi"}))).await);
    let m = app.wait_for_status(&id, &["sent"], WAIT).await;
    let pid = provider_id(&m);
    let forged = fake.push_badly_signed(&hook, &fake_rbm::delivered(PHONE, &pid)).await;
    let forged = Answer::read(forged).await;
    forged.problem(401, "callback_signature_invalid");
    let unsigned = Answer::read(
        app.http
            .post(&hook)
            .header("content-type", "application/json")
            .body(fake_rbm::envelope(&fake_rbm::user_text(PHONE, "MsForged", "hello")).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    unsigned.problem(401, "callback_signature_invalid");
    let forged_text = fake.push_badly_signed(&hook, &fake_rbm::user_text(PHONE, "MsForged2", "hello")).await;
    assert_eq!(forged_text.status(), 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = message(&app, &id).await;
    assert_eq!(m["status"], "sent", "a forged receipt changes nothing");
    assert!(inbound(&app).await.is_empty(), "a forged message is not stored");
    // Another account's hook, or none at all.
    let nowhere = app.url("/hooks/rbm/cha_0190a1b2c3d4e5f60718293a4b5c6d7e");
    assert_eq!(fake.push(&nowhere, CLIENT_TOKEN, &fake_rbm::delivered(PHONE, &pid)).await.status(), 404);
    app.finish().await;
}

async fn the_registration_handshake_echoes_the_secret(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeRbm::start().await;
    let (_, hook) = rbm_account(&app, &fake).await;
    let ok = app.http.post(&hook).json(&json!({"clientToken": CLIENT_TOKEN, "secret": "s3cr3t-1234"})).send().await;
    let ok = ok.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(ok.text().await.unwrap(), "s3cr3t-1234");
    let wrong = app.http.post(&hook).json(&json!({"clientToken": "guess", "secret": "s3cr3t-1234"})).send().await;
    Answer::read(wrong.unwrap()).await.problem(403, "callback_forbidden");
    app.finish().await;
}

async fn an_unreachable_number_fails_with_rcs_unreachable(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeRbm::start().await;
    let (account, _) = rbm_account(&app, &fake).await;
    let id = id_of(&send(&app, &rcs(&account, magic::UNREACHABLE, json!({"type": "text", "text": "hi"}))).await);
    let m = app.wait_for_status(&id, &["failed"], WAIT).await;
    assert_eq!(kinds(&m), ["accepted", "queued", "sending", "failed"]);
    assert_eq!(m["error"]["code"], "rcs_unreachable");
    assert_eq!(m["error"]["permanent"], true);
    assert_eq!(m["attempts"], 1);
    let check = post(&app, &format!("/v1/channel-accounts/{account}/check"), &json!({})).await;
    assert_eq!(check.status, 200, "{check}");
    assert_eq!(check["status"], "ok", "{check}");
    assert!(fake.token_requests() >= 1);
    app.finish().await;
}

async fn auto_routing_asks_rbm_first_and_passes_over_a_number_without_rcs(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeRbm::start().await;
    rbm_account(&app, &fake).await;
    let contact = |number: &str| json!({"identities": [format!("rcs:{number}"), format!("sms:{number}")]});
    let without_rcs = post(&app, "/v1/contacts", &contact(magic::UNREACHABLE)).await;
    assert_eq!(without_rcs.status, 201, "{without_rcs}");
    let with_rcs = post(&app, "/v1/contacts", &contact(PHONE)).await;
    assert_eq!(with_rcs.status, 201, "{with_rcs}");
    let auto = |contact: &Answer| json!({"contact_id": contact["id"], "channel": "auto", "content": {"type": "text", "text": "Your parcel"}});
    // RBM says the number has no RCS: the message goes by SMS and RBM never gets it.
    let m = send(&app, &auto(&without_rcs)).await;
    assert_eq!(m["channel"], "sms", "{m}");
    let m = app.wait_for_status(&id_of(&m), &["delivered"], WAIT).await;
    assert_eq!(
        event(&m, "accepted", 0)["details"]["routing"],
        json!({"mode": "auto", "channel": "sms", "passed_over": {"whatsapp": "no_identity", "rcs": "rcs_unreachable"}})
    );
    let asked: Vec<_> = fake.requests().into_iter().filter(|r| r.phone == magic::UNREACHABLE).collect();
    assert_eq!(asked.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(), ["capabilities"], "only asked, never sent");
    // A second message within the cache time does not ask again.
    send(&app, &auto(&without_rcs)).await;
    let asked = fake.requests().into_iter().filter(|r| r.phone == magic::UNREACHABLE).count();
    assert_eq!(asked, 1, "the capability answer is cached");
    // A number with RCS goes on RCS, with SMS as its fallback.
    let m = send(&app, &auto(&with_rcs)).await;
    assert_eq!(m["channel"], "rcs", "{m}");
    let m = app.wait_for_status(&id_of(&m), &["sent"], WAIT).await;
    assert_eq!(event(&m, "accepted", 0)["details"]["routing"]["fallback"], json!(["sms"]));
    assert_eq!(fake.accepted_messages().len(), 1, "RBM got the one message for the number with RCS");
    app.finish().await;
}
