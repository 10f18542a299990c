//! The channel-accounts API through the real server, on both backends: credentials sealed at
//! rest and shown only as a hint, validation naming the field, the default moving between
//! accounts, changes and deletion taking effect at once, tenancy, and the provider-callback
//! route's refusals.

mod common;

use common::*;
use parley_domain::{ChannelAccountId, Scope};
use parley_testkit::{Backend, TestApp, on_both_backends, test_sealing_key};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

on_both_backends!(
    credentials_are_sealed_at_rest_and_shown_only_as_a_hint,
    bad_accounts_are_refused_naming_the_field,
    a_new_default_account_takes_its_channels_sends,
    changes_and_deletion_take_effect_at_once,
    accounts_are_invisible_to_other_workspaces_and_need_admin_to_change,
    callbacks_for_unknown_or_mismatched_accounts_are_404,
    read_reports_need_an_inbound_message_and_a_channel_that_shows_them,
);

const SECRET: &str = "very-secret-token-0123456789";

async fn create(app: &TestApp, body: serde_json::Value) -> serde_json::Value {
    let a = post(app, "/v1/channel-accounts", &body).await;
    assert_eq!(a.status, 201, "create account: {a}");
    a.json
}

async fn credentials_are_sealed_at_rest_and_shown_only_as_a_hint(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let account = create(
        &app,
        json!({"channel": "sms", "provider": "sandbox", "name": "With secrets", "config": {"latency_ms": 1},
               "credentials": {"api_token": SECRET, "pin": "1234"}}),
    )
    .await;
    let id = account["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("cha_"), "{account}");
    assert_eq!(account["credentials_hint"], json!({"api_token": "…6789", "pin": "…"}));
    assert_eq!(account["config"], json!({"latency_ms": 1}));
    assert_eq!(account["callback_url"], json!(format!("{}/hooks/sandbox/{id}", app.base_url)));
    assert!(!account.to_string().contains(SECRET), "{account}");
    // Defaults of the provider when no limits are given.
    assert_eq!(account["rate_limit_per_second"], 100_000);
    assert_eq!(account["is_default"], false);

    let fetched = get(&app, &format!("/v1/channel-accounts/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert!(!fetched.json.to_string().contains(SECRET));
    let listed = get(&app, "/v1/channel-accounts").await;
    assert!(!listed.json.to_string().contains(SECRET));
    assert!(listed.json["data"].as_array().unwrap().iter().any(|a| a["id"] == id.as_str()));

    // At rest: sealed, bound to the account, opened only with the key.
    let stored = app
        .engine
        .store()
        .get_channel_account(app.workspace_id, ChannelAccountId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let sealed = stored.credentials.clone().expect("sealed credentials");
    assert!(sealed.starts_with("v1.") && !sealed.contains(SECRET) && !stored.config.to_string().contains(SECRET));
    let opened = test_sealing_key().open(&id, &sealed).expect("opens with the key");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&opened).unwrap()["api_token"], SECRET);
    assert!(test_sealing_key().open("cha_other", &sealed).is_err());

    // The account works, and keeps working after a restart (the credentials open again).
    let m = send(
        &app,
        &json!({"to": "+12025550150", "channel": "sms", "channel_account_id": id, "content": {"text": "hi"}}),
    )
    .await;
    app.wait_for_status(&id_of(&m), &["delivered"], Duration::from_secs(10)).await;
    let db = app.stop().await;
    let app = TestApp::start_on(db, |_| {}).await;
    let m = send(
        &app,
        &json!({"to": "+12025550150", "channel": "sms", "channel_account_id": id, "content": {"text": "again"}}),
    )
    .await;
    app.wait_for_status(&id_of(&m), &["delivered"], Duration::from_secs(10)).await;
    app.finish().await;
}

async fn bad_accounts_are_refused_naming_the_field(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let base = json!({"channel": "sms", "provider": "sandbox", "name": "x"});
    let with = |patch: serde_json::Value| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    post(&app, "/v1/channel-accounts", &with(json!({"provider": "carrier-pigeon"})))
        .await
        .problem(422, "unknown_provider")
        .names("provider");
    post(&app, "/v1/channel-accounts", &with(json!({"provider": "whatsapp"})))
        .await
        .problem(422, "provider_channel_mismatch")
        .names("channel");
    post(&app, "/v1/channel-accounts", &with(json!({"config": {"latency_ms": "slow"}})))
        .await
        .problem(422, "invalid_channel_account_config")
        .names("latency_ms");
    post(&app, "/v1/channel-accounts", &with(json!({"config": {"no_such_setting": 1}})))
        .await
        .problem(422, "invalid_channel_account_config")
        .names("no_such_setting");
    post(&app, "/v1/channel-accounts", &with(json!({"name": ""})))
        .await
        .problem(422, "validation_failed")
        .names("name");
    post(&app, "/v1/channel-accounts", &with(json!({"rate_limit_per_second": 0})))
        .await
        .problem(422, "validation_failed")
        .names("rate_limit_per_second");
    post(&app, "/v1/channel-accounts", &with(json!({"credentials": "secret"})))
        .await
        .problem(422, "validation_failed")
        .names("credentials");
    post(&app, "/v1/channel-accounts", &with(json!({"channel": "pigeon"}))).await.problem(422, "validation_failed");
    post(&app, "/v1/channel-accounts", &with(json!({"colour": "blue"}))).await.problem(422, "unknown_field");
    // Nothing was created by any of them: the workspace still has its four sandbox accounts.
    let listed = get(&app, "/v1/channel-accounts").await;
    assert_eq!(listed.json["data"].as_array().unwrap().len(), 4, "{}", listed.json);
    app.finish().await;
}

async fn a_new_default_account_takes_its_channels_sends(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let old_default = get(&app, "/v1/channel-accounts").await.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["channel"] == "sms" && a["is_default"] == true)
        .unwrap()["id"]
        .clone();
    let account =
        create(&app, json!({"channel": "sms", "provider": "sandbox", "name": "New default", "is_default": true})).await;
    assert_eq!(account["is_default"], true);
    let m = send(&app, &text_to("sms", "+12025550150", "which account?")).await;
    assert_eq!(m["channel_account_id"], account["id"], "{m}");
    let old = get(&app, &format!("/v1/channel-accounts/{}", old_default.as_str().unwrap())).await;
    assert_eq!(old.json["is_default"], false, "{}", old.json);
    // Other channels keep their defaults.
    let w = send(&app, &text_to("whatsapp", "+12025550150", "hi")).await;
    assert_ne!(w["channel_account_id"], account["id"]);
    app.finish().await;
}

async fn changes_and_deletion_take_effect_at_once(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let account = create(
        &app,
        json!({"channel": "sms", "provider": "sandbox", "name": "Changing",
        "credentials": {"api_token": SECRET}}),
    )
    .await;
    let id = account["id"].as_str().unwrap().to_string();
    let path = format!("/v1/channel-accounts/{id}");

    // A bad change is refused and changes nothing.
    let refused = call(&app, Method::PATCH, &path, Some(&json!({"config": {"latency_ms": -5}}))).await;
    refused.problem(422, "invalid_channel_account_config").names("latency_ms");
    assert_eq!(get(&app, &path).await.json["config"], json!({}));

    // A good one is answered with the account as it is now; the credentials stay unless replaced.
    let changed = call(
        &app,
        Method::PATCH,
        &path,
        Some(&json!({"name": "Renamed", "config": {"auto_reply": "thanks"}, "max_in_flight": 7})),
    )
    .await;
    assert_eq!(changed.status, 200, "{changed}");
    assert_eq!(changed.json["name"], "Renamed");
    assert_eq!(changed.json["max_in_flight"], 7);
    assert_eq!(changed.json["credentials_hint"], json!({"api_token": "…6789"}));
    // The new config is in force: the sandbox now answers with an auto-reply.
    let m = send(
        &app,
        &json!({"to": "+12025550150", "channel": "sms", "channel_account_id": id, "content": {"text": "hi"}}),
    )
    .await;
    app.wait_for_status(&id_of(&m), &["delivered"], Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let inbound: Vec<_> =
            all_messages(&app, "").await.into_iter().filter(|m| m["direction"] == "inbound").collect();
        if inbound.iter().any(|i| i["content"]["text"] == "thanks" && i["channel_account_id"] == id.as_str()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no auto-reply: {inbound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replaced =
        call(&app, Method::PATCH, &path, Some(&json!({"credentials": {"api_token": "another-token-abcd"}}))).await;
    assert_eq!(replaced.json["credentials_hint"], json!({"api_token": "…abcd"}));

    // Deleted: gone from the API, refused for sends, and its callbacks are 404.
    let deleted = call(&app, Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, 204);
    get(&app, &path).await.problem(404, "not_found");
    call(&app, Method::DELETE, &path, None).await.problem(404, "not_found");
    call(&app, Method::PATCH, &path, Some(&json!({"name": "zombie"}))).await.problem(404, "not_found");
    let refused = post(
        &app,
        "/v1/messages",
        &json!({"to": "+12025550150", "channel": "sms", "channel_account_id": id,
        "content": {"text": "hi"}}),
    )
    .await;
    refused.problem(422, "channel_account_not_found");
    let hook = app.http.post(app.url(&format!("/hooks/sandbox/{id}"))).body("{}").send().await.unwrap();
    assert_eq!(hook.status(), 404);
    app.finish().await;
}

async fn accounts_are_invisible_to_other_workspaces_and_need_admin_to_change(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let account = create(&app, json!({"channel": "sms", "provider": "sandbox", "name": "Mine"})).await;
    let path = format!("/v1/channel-accounts/{}", account["id"].as_str().unwrap());
    let (other, _) = app.engine.create_workspace("other").await.unwrap();
    let stranger = app.engine.create_api_key(other.id, "stranger", vec![Scope::Admin]).await.unwrap().secret;
    get_as(&app, &stranger, &path).await.problem(404, "not_found");
    let a =
        app.http.patch(app.url(&path)).bearer_auth(&stranger).json(&json!({"name": "stolen"})).send().await.unwrap();
    assert_eq!(a.status(), 404);
    let a = app.http.delete(app.url(&path)).bearer_auth(&stranger).send().await.unwrap();
    assert_eq!(a.status(), 404);
    let a = post_as(&app, &stranger, &format!("{path}/check"), &json!({})).await;
    a.problem(404, "not_found");
    assert_eq!(get(&app, &path).await.json["name"], "Mine");

    let reader = app.engine.create_api_key(app.workspace_id, "reader", vec![Scope::MessagesRead]).await.unwrap().secret;
    assert_eq!(get_as(&app, &reader, &path).await.status, 200);
    post_as(&app, &reader, "/v1/channel-accounts", &json!({"channel": "sms", "provider": "sandbox", "name": "x"}))
        .await
        .problem(403, "forbidden");
    post_as(&app, &reader, &format!("{path}/check"), &json!({})).await.problem(403, "forbidden");

    // The sandbox cannot check credentials without sending.
    let check = post(&app, &format!("{path}/check"), &json!({})).await;
    assert_eq!(check.status, 200);
    assert_eq!(check.json["status"], "unsupported");
    app.finish().await;
}

async fn callbacks_for_unknown_or_mismatched_accounts_are_404(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let account = create(&app, json!({"channel": "sms", "provider": "sandbox", "name": "No callbacks"})).await;
    let id = account["id"].as_str().unwrap();
    for path in [
        format!("/hooks/sandbox/{id}"),
        format!("/hooks/whatsapp/{id}"),
        format!("/hooks/sandbox/{}", ChannelAccountId::new()),
        "/hooks/sandbox/not-an-id".to_string(),
    ] {
        let a = app.http.post(app.url(&path)).body("{\"x\":1}").send().await.unwrap();
        let a = Answer::read(a).await;
        a.problem(404, "not_found");
        let a = Answer::read(app.http.get(app.url(&path)).send().await.unwrap()).await;
        a.problem(404, "not_found");
    }
    // Oversized bodies are refused before any parsing.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let a = app.http.post(app.url(&format!("/hooks/sandbox/{id}"))).body(big).send().await.unwrap();
    assert_eq!(a.status(), 413);
    app.finish().await;
}

async fn read_reports_need_an_inbound_message_and_a_channel_that_shows_them(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let account = sandbox_sms_account(&app, json!({"auto_reply": "got it"}), 1000, 100).await;
    let out = send(
        &app,
        &json!({"to": "+12025550150", "channel": "sms", "channel_account_id": account,
        "content": {"text": "hello"}}),
    )
    .await;
    let out_id = id_of(&out);
    app.wait_for_status(&out_id, &["delivered"], Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let inbound = loop {
        let found = all_messages(&app, "").await.into_iter().find(|m| m["direction"] == "inbound");
        if let Some(m) = found {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "no inbound reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    post(&app, &format!("/v1/messages/{out_id}/read"), &json!({})).await.problem(409, "message_not_inbound");
    // The sandbox (like SMS) cannot show the customer a read report.
    post(&app, &format!("/v1/messages/{}/read", id_of(&inbound)), &json!({}))
        .await
        .problem(422, "read_receipts_not_supported");
    post(&app, &format!("/v1/messages/{}/read", parley_domain::MessageId::new()), &json!({}))
        .await
        .problem(404, "not_found");
    app.finish().await;
}
