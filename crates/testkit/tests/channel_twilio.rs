//! The Twilio connector end to end, on both backends: a Twilio channel account created through
//! the API, messages sent to the fake Twilio (`parley_testkit::fake_twilio`) over HTTP, its
//! signed status callbacks and inbound SMS arriving at `/hooks/twilio/{id}` of the real server.

mod common;

use common::*;
use parley_channels::twilio::EMPTY_TWIML;
use parley_testkit::fake_twilio::{self, FakeTwilio, magic};
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    a_twilio_send_is_delivered_through_signed_status_callbacks,
    an_inbound_sms_arrives_as_an_inbound_message_once,
    a_bad_signature_is_401_and_stores_nothing,
    twilio_error_codes_fail_the_message_with_the_code,
    an_undelivered_callback_keeps_its_error_code,
    a_rate_limited_send_is_retried_after_retry_after,
    accounts_are_checked_locally_and_with_twilio,
);

const FROM: &str = "+15017122661";
const WAIT: Duration = Duration::from_secs(15);

/// A Twilio account on the fake, as the workspace's default SMS account; its id and callback URL.
async fn twilio_account(app: &TestApp, fake: &FakeTwilio) -> (String, String) {
    let a = post(
        app,
        "/v1/channel-accounts",
        &json!({
            "channel": "sms",
            "provider": "twilio",
            "name": "Twilio (fake)",
            "config": fake.config(FROM),
            "credentials": fake.credentials(),
            "is_default": true,
        }),
    )
    .await;
    assert_eq!(a.status, 201, "{a}");
    let id = a["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("cha_"), "{id}");
    assert!(!a.text.contains(&fake.auth_token), "credentials are never shown: {a}");
    let callback_url = a["callback_url"].as_str().expect("callback_url").to_string();
    assert_eq!(callback_url, app.url(&format!("/hooks/twilio/{id}")));
    (id, callback_url)
}

async fn a_twilio_send_is_delivered_through_signed_status_callbacks(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeTwilio::start().await;
    let (account, callback_url) = twilio_account(&app, &fake).await;
    let id = id_of(&send(&app, &text_to("sms", "+1 202 555 0150", "Hello from Parley 👋")).await);
    let m = app.wait_for_status(&id, &["delivered"], WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(m["channel_account_id"], account.as_str());
    let sid = m["provider_message_id"].as_str().expect("provider id");
    assert!(sid.starts_with("SM"), "{m}");
    let kinds = kinds(&m);
    assert_eq!(&kinds[kinds.len() - 2..], ["sent", "delivered"], "{kinds:?}");
    assert_eq!(event(&m, "delivered", 0)["provider_message_id"], sid);

    let requests = fake.requests_to("+12025550150");
    assert_eq!(requests.len(), 1, "handed over once");
    let r = &requests[0];
    assert_eq!(r.user.as_deref(), Some(fake_twilio::ACCOUNT_SID));
    assert_eq!(r.param("From"), Some(FROM));
    assert_eq!(r.param("Body"), Some("Hello from Parley 👋"));
    assert_eq!(r.param("StatusCallback"), Some(callback_url.as_str()));
    assert_eq!(r.param("ValidityPeriod"), None, "48 h of validity is beyond Twilio's 10 h: Twilio's default applies");

    // Every status callback (queued, sent, delivered) was accepted by Parley.
    let callbacks = fake.wait_for_callbacks(3, WAIT).await;
    assert!(callbacks.iter().all(|c| c.answered == Some(200)), "{callbacks:#?}");
    app.finish().await;
}

async fn an_inbound_sms_arrives_as_an_inbound_message_once(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeTwilio::start().await;
    let (account, callback_url) = twilio_account(&app, &fake).await;
    let (sid, params) =
        fake_twilio::inbound_sms_params(fake_twilio::ACCOUNT_SID, "+12025550150", FROM, "Hi Parley & co", &[]);
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let response = fake_twilio::post_signed(&http, &callback_url, &fake.auth_token, &params).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/xml");
        assert_eq!(response.text().await.expect("body"), EMPTY_TWIML);
    }
    let inbound = inbound_messages(&app).await;
    assert_eq!(inbound.len(), 1, "a repeated callback is stored once: {inbound:#?}");
    let m = &inbound[0];
    assert_eq!(m["provider_message_id"], sid.as_str());
    assert_eq!(m["status"], "received");
    assert_eq!(m["channel"], "sms");
    assert_eq!(m["channel_account_id"], account.as_str());
    assert_eq!(m["from"], "+12025550150");
    assert_eq!(m["content"]["type"], "text");
    assert_eq!(m["content"]["text"], "Hi Parley & co");

    // With media, through the fake's helper.
    let (media_sid, response) = fake
        .send_inbound_sms(&callback_url, "+12025550150", FROM, "look", &[("https://example.com/a.jpg", "image/jpeg")])
        .await;
    assert_eq!(response.status(), 200);
    let inbound = inbound_messages(&app).await;
    let m = inbound.iter().find(|m| m["provider_message_id"] == media_sid.as_str()).expect("media message");
    assert_eq!(m["content"]["type"], "media");
    assert_eq!(m["content"]["url"], "https://example.com/a.jpg");
    assert_eq!(m["content"]["caption"], "look");
    app.finish().await;
}

async fn a_bad_signature_is_401_and_stores_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeTwilio::start().await;
    let (_, callback_url) = twilio_account(&app, &fake).await;
    let (_, params) = fake_twilio::inbound_sms_params(fake_twilio::ACCOUNT_SID, "+12025550150", FROM, "forged", &[]);
    let http = reqwest::Client::new();

    let forged =
        Answer::read(fake_twilio::post_signed(&http, &callback_url, "not-the-auth-token", &params).await).await;
    forged.problem(401, "callback_signature_invalid");
    let unsigned = Answer::read(
        http.post(&callback_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fake_twilio::encode_form(&params))
            .send()
            .await
            .expect("POST"),
    )
    .await;
    unsigned.problem(401, "callback_signature_invalid");
    // Signed for another URL (another account's hook).
    let elsewhere = callback_url.replace("/hooks/twilio/", "/hooks/twilio/x");
    let signature = fake_twilio::sign(&fake.auth_token, &elsewhere, &params);
    let moved = Answer::read(
        http.post(&callback_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(fake_twilio::encode_form(&params))
            .send()
            .await
            .expect("POST"),
    )
    .await;
    moved.problem(401, "callback_signature_invalid");
    // A forged status callback changes nothing either.
    let status = vec![
        ("MessageSid".to_string(), "SM00000000000000000000000000000000".to_string()),
        ("MessageStatus".to_string(), "delivered".to_string()),
    ];
    let forged = Answer::read(fake_twilio::post_signed(&http, &callback_url, "nope", &status).await).await;
    forged.problem(401, "callback_signature_invalid");

    assert!(inbound_messages(&app).await.is_empty());
    let page = app.get_json("/v1/messages").await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(0), "{page}");
    app.finish().await;
}

async fn twilio_error_codes_fail_the_message_with_the_code(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeTwilio::start().await;
    twilio_account(&app, &fake).await;
    for (to, code) in [(magic::UNSUBSCRIBED, "twilio:21610"), (magic::INVALID_TO, "twilio:21211")] {
        let id = id_of(&send(&app, &text_to("sms", to, "never")).await);
        let m = app.wait_for_status(&id, &["failed"], WAIT).await;
        assert_timeline_contiguous(&m);
        assert_eq!(kinds(&m), ["accepted", "queued", "sending", "failed"], "{m:#}");
        assert_eq!(m["error"]["code"], code);
        assert_eq!(m["error"]["permanent"], true);
        assert!(m["error"]["detail"].as_str().is_some_and(|d| d.contains("twilio.com/docs/errors")), "{m}");
        assert_eq!(m["attempts"], 1, "a permanent error is not retried");
        assert_eq!(fake.requests_to(to).len(), 1);
    }
    app.finish().await;
}

async fn an_undelivered_callback_keeps_its_error_code(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeTwilio::start().await;
    twilio_account(&app, &fake).await;
    let id = id_of(&send(&app, &text_to("sms", magic::UNDELIVERED, "lost")).await);
    let m = app.wait_for_status(&id, &["undelivered"], WAIT).await;
    assert_eq!(m["error"]["code"], "twilio:30003", "{m:#}");
    let undelivered = event(&m, "undelivered", 0);
    assert_eq!(undelivered["error"]["code"], "twilio:30003");
    let failed = id_of(&send(&app, &text_to("sms", magic::FAILED, "lost")).await);
    let m = app.wait_for_status(&failed, &["failed"], WAIT).await;
    assert_eq!(m["error"]["code"], "twilio:30008", "{m:#}");
    assert!(m["provider_message_id"].as_str().is_some_and(|s| s.starts_with("SM")), "taken, then failed: {m}");
    app.finish().await;
}

async fn a_rate_limited_send_is_retried_after_retry_after(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeTwilio::start().await;
    twilio_account(&app, &fake).await;
    let id = id_of(&send(&app, &text_to("sms", magic::RATE_LIMITED_ONCE, "soon")).await);
    let m = app.wait_for_status(&id, &["delivered"], WAIT).await;
    let failed = event(&m, "attempt_failed", 0);
    assert_eq!(failed["error"]["code"], "twilio:20429");
    assert_eq!(failed["error"]["permanent"], false);
    let at = millis(&failed["occurred_at"]);
    let retry_at = millis(&failed["retry_at"]);
    assert!((900..=1200).contains(&(retry_at - at)), "Retry-After: 1 is honoured: {}", retry_at - at);
    assert_eq!(m["attempts"], 2);
    let requests = fake.requests_to(magic::RATE_LIMITED_ONCE);
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 201]);
    assert_eq!(requests[1].param("Attempt"), Some("2"));
    app.finish().await;
}

async fn accounts_are_checked_locally_and_with_twilio(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeTwilio::start().await;
    let create = |config: Value, credentials: Value| json!({"channel": "sms", "provider": "twilio", "name": "t", "config": config, "credentials": credentials});
    // Bad settings and credentials are named, and no secret is echoed.
    let bad =
        post(&app, "/v1/channel-accounts", &create(json!({"account_sid": "AC1", "from": FROM}), fake.credentials()))
            .await;
    assert_eq!(bad.status, 422, "{bad}");
    assert_eq!(bad["code"], "invalid_channel_account_config", "{bad}");
    assert!(bad.text.contains("account_sid"), "{bad}");
    let bad = post(&app, "/v1/channel-accounts", &create(fake.config(FROM), json!({"auth_token": 8675309}))).await;
    assert_eq!(bad.status, 422, "{bad}");
    assert!(bad.text.contains("credentials.auth_token"), "{bad}");
    assert!(!bad.text.contains("8675309"), "{bad}");
    // A good account checks out against the fake; one with a wrong token does not.
    let good = post(&app, "/v1/channel-accounts", &create(fake.config(FROM), fake.credentials())).await;
    assert_eq!(good.status, 201, "{good}");
    let check = post(&app, &format!("/v1/channel-accounts/{}/check", good["id"].as_str().unwrap()), &json!({})).await;
    assert_eq!(check.status, 200, "{check}");
    assert_eq!(check["status"], "ok", "{check}");
    let wrong = post(&app, "/v1/channel-accounts", &create(fake.config(FROM), json!({"auth_token": "wrong"}))).await;
    assert_eq!(wrong.status, 201, "{wrong}");
    let check = post(&app, &format!("/v1/channel-accounts/{}/check", wrong["id"].as_str().unwrap()), &json!({})).await;
    assert_eq!(check["status"], "failed", "{check}");
    assert_eq!(check["code"], "twilio:20003", "{check}");
    app.finish().await;
}
