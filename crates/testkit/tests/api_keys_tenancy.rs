//! Workspaces never see each other; API keys are shown once, scoped and revocable; requests
//! without a valid key are refused. On both backends.

mod common;

use common::*;
use parley_domain::Scope;
use parley_testkit::{Backend, TestApp, on_both_backends};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

on_both_backends!(
    workspaces_cannot_see_each_other,
    api_keys_are_shown_once_and_scoped,
    revoked_keys_stop_working,
    api_key_requests_are_validated,
    missing_or_bad_credentials_are_401,
    unauthorized_answers_name_the_auth_scheme,
    channel_accounts_are_listed,
);

async fn workspace_b(app: &TestApp) -> (String, String) {
    let (b, accounts) = app.engine.create_workspace("B").await.expect("workspace B");
    assert_eq!(accounts.len(), 4, "a new workspace has a sandbox account per channel");
    let key = app.engine.create_api_key(b.id, "b admin", vec![Scope::Admin]).await.expect("key B");
    (b.id.to_string(), key.secret)
}

async fn workspaces_cannot_see_each_other(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let (b_id, b_key) = workspace_b(&app).await;
    let a_msg = id_of(&send(&app, &text_to("sms", "+12025550102", "for A's eyes")).await);
    let scheduled = id_of(
        &send(
            &app,
            &json!({"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "later"},
                "send_at": rfc3339::format(rfc3339::now() + 3_600_000)}),
        )
        .await,
    );
    let b_sent = post_as(&app, &b_key, "/v1/messages", &text_to("sms", "+12025550102", "for B's eyes")).await;
    assert_eq!(b_sent.status, 202, "{}", b_sent.text);
    assert_eq!(b_sent.json["workspace_id"], b_id);
    let b_msg = id_of(&b_sent.json);

    // B cannot read or cancel A's messages: 404, exactly as for an id that does not exist.
    let unknown = parley_domain::MessageId::new().to_string();
    let not_there = get_as(&app, &b_key, &format!("/v1/messages/{unknown}")).await;
    not_there.problem(404, "not_found");
    let other = get_as(&app, &b_key, &format!("/v1/messages/{a_msg}")).await;
    other.problem(404, "not_found");
    assert_eq!(other.json["detail"], not_there.json["detail"], "no hint that the message exists elsewhere");
    post_as(&app, &b_key, &format!("/v1/messages/{scheduled}/cancel"), &json!({})).await.problem(404, "not_found");
    assert_eq!(message(&app, &scheduled).await["status"], "scheduled", "B's cancel changed nothing");
    // A cannot read B's.
    get(&app, &format!("/v1/messages/{b_msg}")).await.problem(404, "not_found");

    // Lists and filters only show the caller's workspace.
    let a_list: Vec<String> = all_messages(&app, "").await.iter().map(id_of).collect();
    assert_eq!(a_list.len(), 2);
    assert!(!a_list.contains(&b_msg));
    let b_list = get_as(&app, &b_key, "/v1/messages").await;
    let b_ids: Vec<String> = b_list.json["data"].as_array().expect("data").iter().map(id_of).collect();
    assert_eq!(b_ids, [b_msg.as_str()]);
    let b_filtered = get_as(&app, &b_key, "/v1/messages?to=%2B12025550102").await;
    assert_eq!(b_filtered.json["data"].as_array().map(Vec::len), Some(1));
    // A's cursor does not open A's messages to B.
    let page = app.get_json("/v1/messages?limit=1").await;
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let b_page = get_as(&app, &b_key, &format!("/v1/messages?cursor={cursor}")).await;
    assert_eq!(b_page.status, 200);
    assert!(b_page.json["data"].as_array().expect("data").iter().all(|m| m["workspace_id"] == b_id));

    // The event feed, API keys and channel accounts are per workspace too.
    app.wait_for_status(&a_msg, &["sent"], Duration::from_secs(10)).await;
    let feed = get_as(&app, &b_key, "/v1/message-events").await;
    assert!(feed.json["data"].as_array().expect("data").iter().all(|e| e["message_id"] == b_msg.as_str()));
    let a_keys = app.get_json("/v1/api-keys").await;
    let a_key_id = a_keys["data"][0]["id"].as_str().expect("key id").to_string();
    let b_keys = get_as(&app, &b_key, "/v1/api-keys").await;
    assert!(b_keys.json["data"].as_array().expect("data").iter().all(|k| k["workspace_id"] == b_id));
    let revoke =
        app.http.delete(app.url(&format!("/v1/api-keys/{a_key_id}"))).bearer_auth(&b_key).send().await.expect("DELETE");
    Answer::read(revoke).await.problem(404, "not_found");
    assert_eq!(get(&app, "/v1/messages").await.status, 200, "A's key still works");
    let a_accounts = app.get_json("/v1/channel-accounts").await;
    let a_account = a_accounts["data"][0]["id"].as_str().expect("account id");
    get_as(&app, &b_key, &format!("/v1/channel-accounts/{a_account}")).await.problem(404, "not_found");
    let b_accounts = get_as(&app, &b_key, "/v1/channel-accounts").await;
    let b_account_ids: Vec<&str> =
        b_accounts.json["data"].as_array().expect("data").iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(b_account_ids.len(), 4);
    assert!(!b_account_ids.contains(&a_account));
    // Sending through A's account from B is refused as if the account did not exist.
    let through_a = json!({"to": "+12025550150", "channel": "sms", "channel_account_id": a_account,
        "content": {"type": "text", "text": "x"}});
    let smuggled = post_as(&app, &b_key, "/v1/messages", &through_a).await;
    assert_eq!(smuggled.status, 422, "{}", smuggled.text);
    app.finish().await;
}

async fn api_keys_are_shown_once_and_scoped(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let created = post(&app, "/v1/api-keys", &json!({"name": "reporting", "scopes": ["messages:read"]})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let key = &created.json;
    let key_id = key["id"].as_str().expect("id");
    assert!(key_id.starts_with("key_"), "{key_id}");
    assert_eq!(created.header("location"), Some(format!("/v1/api-keys/{key_id}").as_str()));
    let secret = key["secret"].as_str().expect("the secret is shown at creation").to_string();
    assert!(secret.starts_with("pk_") && secret.len() >= 32, "{secret}");
    let prefix = key["prefix"].as_str().expect("prefix");
    assert!(secret.starts_with(prefix) && prefix.len() < secret.len(), "{prefix} is a visible start of the key");
    assert_eq!(key["name"], "reporting");
    assert_eq!(key["scopes"], json!(["messages:read"]));
    assert_eq!(key["workspace_id"], app.workspace_id.to_string());
    assert!(key.get("revoked_at").is_none());

    // Lists never show a secret, nor the hash.
    let list = app.get_json("/v1/api-keys").await;
    let keys = list["data"].as_array().expect("data");
    assert_eq!(keys.len(), 2, "the bootstrap key and the new one");
    assert!(keys.iter().any(|k| k["id"] == key_id));
    for k in keys {
        assert!(k.get("secret").is_none(), "{k}");
        assert!(k.get("hash").is_none(), "{k}");
    }
    assert!(!list.to_string().contains(&secret));

    // messages:read reads but does not write or administer.
    let sent = id_of(&send(&app, &text_to("sms", "+12025550102", "x")).await);
    assert_eq!(get_as(&app, &secret, "/v1/messages").await.status, 200);
    assert_eq!(get_as(&app, &secret, &format!("/v1/messages/{sent}")).await.status, 200);
    assert_eq!(get_as(&app, &secret, "/v1/channel-accounts").await.status, 200);
    let refused = post_as(&app, &secret, "/v1/messages", &text_to("sms", "+12025550150", "x")).await;
    let p = refused.problem(403, "forbidden");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("messages:write")), "{p}");
    post_as(&app, &secret, "/v1/messages/batch", &json!({"messages": [text_to("sms", "+12025550150", "x")]}))
        .await
        .problem(403, "forbidden");
    post_as(&app, &secret, &format!("/v1/messages/{sent}/cancel"), &json!({})).await.problem(403, "forbidden");
    post_as(&app, &secret, "/v1/api-keys", &json!({"name": "escalate", "scopes": ["admin"]}))
        .await
        .problem(403, "forbidden");
    get_as(&app, &secret, "/v1/api-keys").await.problem(403, "forbidden");
    assert_eq!(all_messages(&app, "").await.len(), 1, "the refused sends stored nothing");

    // messages:write sends but does not read.
    let writer = post(&app, "/v1/api-keys", &json!({"name": "sender", "scopes": ["messages:write"]})).await;
    assert_eq!(writer.status, 201);
    let writer = writer.json["secret"].as_str().expect("secret").to_string();
    let a = post_as(&app, &writer, "/v1/messages", &text_to("sms", "+12025550102", "from the writer")).await;
    assert_eq!(a.status, 202, "{}", a.text);
    get_as(&app, &writer, "/v1/messages").await.problem(403, "forbidden");
    get_as(&app, &writer, "/v1/api-keys").await.problem(403, "forbidden");

    // A key of both scopes does both.
    let both =
        post(&app, "/v1/api-keys", &json!({"name": "both", "scopes": ["messages:read", "messages:write"]})).await;
    assert_eq!(both.status, 201);
    assert_eq!(both.json["scopes"].as_array().map(Vec::len), Some(2));
    let both = both.json["secret"].as_str().expect("secret").to_string();
    assert_eq!(get_as(&app, &both, "/v1/messages").await.status, 200);
    assert_eq!(post_as(&app, &both, "/v1/messages", &text_to("sms", "+12025550102", "x")).await.status, 202);
    app.finish().await;
}

async fn delete(app: &TestApp, key: &str, path: &str) -> Answer {
    Answer::read(app.http.delete(app.url(path)).bearer_auth(key).send().await.expect("DELETE")).await
}

async fn revoked_keys_stop_working(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let created =
        post(&app, "/v1/api-keys", &json!({"name": "temp", "scopes": ["messages:read", "messages:write"]})).await;
    assert_eq!(created.status, 201);
    let id = created.json["id"].as_str().expect("id").to_string();
    let secret = created.json["secret"].as_str().expect("secret").to_string();
    assert_eq!(get_as(&app, &secret, "/v1/messages").await.status, 200, "works before");
    let revoked = delete(&app, &app.admin_key, &format!("/v1/api-keys/{id}")).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert!(revoked.text.is_empty());
    // At once, even though the key was just used (and so cached).
    get_as(&app, &secret, "/v1/messages").await.problem(401, "unauthorized");
    post_as(&app, &secret, "/v1/messages", &text_to("sms", "+12025550150", "x")).await.problem(401, "unauthorized");
    let list = app.get_json("/v1/api-keys").await;
    let listed = list["data"].as_array().expect("data").iter().find(|k| k["id"] == id.as_str()).expect("still listed");
    assert!(listed["revoked_at"].is_string(), "{listed}");
    // Revoking again changes nothing; unknown and malformed ids are 404.
    assert_eq!(delete(&app, &app.admin_key, &format!("/v1/api-keys/{id}")).await.status, 204);
    let unknown = parley_domain::ApiKeyId::new().to_string();
    delete(&app, &app.admin_key, &format!("/v1/api-keys/{unknown}")).await.problem(404, "not_found");
    delete(&app, &app.admin_key, "/v1/api-keys/not-a-key").await.problem(404, "not_found");
    // A non-admin key cannot revoke.
    let reader = post(&app, "/v1/api-keys", &json!({"name": "r", "scopes": ["messages:read"]})).await;
    let reader_secret = reader.json["secret"].as_str().expect("secret").to_string();
    let admin_id = list["data"].as_array().expect("data").iter().find(|k| k["id"] != id.as_str()).expect("admin")["id"]
        .as_str()
        .expect("id")
        .to_string();
    delete(&app, &reader_secret, &format!("/v1/api-keys/{admin_id}")).await.problem(403, "forbidden");
    // An admin key can revoke itself, and is then locked out too.
    assert_eq!(delete(&app, &app.admin_key, &format!("/v1/api-keys/{admin_id}")).await.status, 204);
    get(&app, "/v1/messages").await.problem(401, "unauthorized");
    app.finish().await;
}

async fn api_key_requests_are_validated(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    post(&app, "/v1/api-keys", &json!({"name": "", "scopes": ["admin"]}))
        .await
        .problem(422, "validation_failed")
        .names("name");
    post(&app, "/v1/api-keys", &json!({"name": "x".repeat(101), "scopes": ["admin"]}))
        .await
        .problem(422, "validation_failed")
        .names("name");
    post(&app, "/v1/api-keys", &json!({"name": "none", "scopes": []}))
        .await
        .problem(422, "validation_failed")
        .names("scopes");
    post(&app, "/v1/api-keys", &json!({"name": "root", "scopes": ["root"]}))
        .await
        .problem(422, "validation_failed")
        .names("scopes[0]");
    post(&app, "/v1/api-keys", &json!({"name": "k", "scopes": ["admin"], "expires": "never"}))
        .await
        .problem(422, "unknown_field")
        .names("expires");
    let a = post(&app, "/v1/api-keys", &json!({"scopes": ["admin"]})).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_problem_shape(&a);
    assert_eq!(app.get_json("/v1/api-keys").await["data"].as_array().map(Vec::len), Some(1), "nothing was created");
    app.finish().await;
}

async fn missing_or_bad_credentials_are_401(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let body = text_to("sms", "+12025550150", "x");
    let routes: [(Method, &str); 6] = [
        (Method::GET, "/v1/messages"),
        (Method::POST, "/v1/messages"),
        (Method::GET, "/v1/api-keys"),
        (Method::GET, "/v1/channel-accounts"),
        (Method::GET, "/v1/message-events"),
        (Method::POST, "/v1/messages/batch"),
    ];
    let lookalike = format!("pk_{}", "A".repeat(32));
    let bad_headers: Vec<Option<String>> = vec![
        None,
        Some("Bearer garbage".into()),
        Some(format!("Bearer {lookalike}")),
        Some("Bearer ".into()),
        Some(format!("Basic {}", app.admin_key)),
        Some(app.admin_key.clone()),
        Some(format!("Bearer {}x", app.admin_key)),
        Some(format!("Bearer pk_{}", "x".repeat(500))),
    ];
    for (method, path) in &routes {
        for header in &bad_headers {
            let mut request = app.http.request(method.clone(), app.url(path));
            if let Some(h) = header {
                request = request.header("authorization", h);
            }
            if *method == Method::POST {
                request = request.json(&body);
            }
            let a = Answer::read(request.send().await.expect("request")).await;
            a.problem(401, "unauthorized");
        }
    }
    assert!(all_messages(&app, "").await.is_empty());
    // The scheme name is case-insensitive.
    let lower = app.http.get(app.url("/v1/messages")).header("authorization", format!("bearer {}", app.admin_key));
    assert_eq!(lower.send().await.expect("GET").status(), 200);
    app.finish().await;
}

async fn channel_accounts_are_listed(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let list = app.get_json("/v1/channel-accounts").await;
    assert!(list["next_cursor"].is_null());
    let accounts = list["data"].as_array().expect("data");
    assert_eq!(accounts.len(), 4);
    let mut channels: Vec<&str> = accounts.iter().filter_map(|a| a["channel"].as_str()).collect();
    channels.sort();
    assert_eq!(channels, ["rcs", "sms", "webchat", "whatsapp"]);
    for a in accounts {
        assert!(a["id"].as_str().is_some_and(|id| id.starts_with("cha_")), "{a}");
        assert_eq!(a["provider"], "sandbox");
        assert_eq!(a["is_default"], true);
        assert!(a["rate_limit_per_second"].as_u64().is_some_and(|r| r > 0));
        assert_eq!(a["config"], serde_json::json!({}), "{a}");
        assert!(a.get("credentials").is_none() && a.get("credentials_hint").is_none(), "{a}");
        let one = app.get_json(&format!("/v1/channel-accounts/{}", a["id"].as_str().expect("id"))).await;
        assert_eq!(&one, a);
    }
    // A send without an account uses the channel's default.
    let m = send(&app, &text_to("rcs", "+12025550102", "x")).await;
    let rcs = accounts.iter().find(|a| a["channel"] == "rcs").expect("rcs account");
    assert_eq!(m["channel_account_id"], rcs["id"]);
    let unknown = parley_domain::ChannelAccountId::new().to_string();
    get(&app, &format!("/v1/channel-accounts/{unknown}")).await.problem(404, "not_found");
    get(&app, "/v1/channel-accounts/nope").await.problem(404, "not_found");
    app.finish().await;
}

/// RFC 9110 section 15.5.2: a 401 carries `WWW-Authenticate` with the scheme to use.
async fn unauthorized_answers_name_the_auth_scheme(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let a = Answer::read(app.http.get(app.url("/v1/messages")).send().await.expect("GET")).await;
    a.problem(401, "unauthorized");
    let challenge = a.header("www-authenticate").unwrap_or_default();
    assert!(challenge.to_ascii_lowercase().starts_with("bearer"), "WWW-Authenticate: {challenge:?}");
    app.finish().await;
}
