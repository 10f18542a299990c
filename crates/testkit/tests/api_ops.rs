//! The operational routes and cross-cutting headers: health, readiness, request ids, problem
//! pages and the OpenAPI document, through the real server on both backends.

mod common;

use common::*;
use parley_testkit::{Backend, TestApp, on_both_backends};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(health_and_readiness, request_ids_are_echoed_or_generated, problem_pages_and_openapi_document,);

fn valid() -> Value {
    json!({"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "hello"}})
}

async fn health_and_readiness(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    // No key needed.
    let health = Answer::read(app.http.get(app.url("/healthz")).send().await.expect("GET")).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json["status"], "ok");
    let ready = Answer::read(app.http.get(app.url("/readyz")).send().await.expect("GET")).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json["status"], "ok");
    let database = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(ready.json["database"], database);
    assert!(ready.header("x-request-id").is_some());
    app.finish().await;
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let echoed =
        app.request(Method::GET, "/v1/messages").header("x-request-id", "trace-abc-123").send().await.expect("GET");
    assert_eq!(echoed.headers()["x-request-id"], "trace-abc-123");
    let generated = app.get("/v1/messages").await;
    let id = generated.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert!(id.starts_with("req_") && id.len() > 10, "{id}");
    let other = app.get("/v1/messages").await.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert_ne!(id, other, "each request gets its own id");
    // In problems too: the body's request_id is the header's.
    let problem = Answer::read(
        app.request(Method::GET, "/v1/messages/nope")
            .header("x-request-id", "trace-for-a-problem")
            .send()
            .await
            .expect("GET"),
    )
    .await;
    problem.problem(404, "not_found");
    assert_eq!(problem.json["request_id"], "trace-for-a-problem");
    let generated = get(&app, "/v1/messages?limit=0").await;
    assert!(generated.json["request_id"].as_str().is_some_and(|r| r.starts_with("req_")));
    // Unusable ids are replaced, not echoed.
    for bad in ["has space", &"x".repeat(200)] {
        let r = app.request(Method::GET, "/healthz").header("x-request-id", bad).send().await.expect("GET");
        let got = r.headers()["x-request-id"].to_str().expect("ascii");
        assert!(got.starts_with("req_"), "{bad:?} -> {got}");
    }
    // On a 202 as well.
    let sent = app
        .request(Method::POST, "/v1/messages")
        .header("x-request-id", "send-1")
        .json(&valid())
        .send()
        .await
        .expect("POST");
    assert_eq!(sent.status(), 202);
    assert_eq!(sent.headers()["x-request-id"], "send-1");
    app.finish().await;
}

async fn problem_pages_and_openapi_document(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    // Every problem's `type` is a page that explains it.
    let a =
        post(&app, "/v1/messages", &json!({"to": "12345", "channel": "sms", "content": {"type": "text", "text": "x"}}))
            .await;
    let page_path = a.json["type"].as_str().expect("type").to_string();
    assert_eq!(page_path, "/problems/invalid_phone_number");
    let page = app.http.get(app.url(&page_path)).send().await.expect("GET");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().expect("ascii").starts_with("text/html"));
    let html = page.text().await.expect("body");
    assert!(html.contains("Invalid phone number") && html.contains("invalid_phone_number"), "{html}");
    for code in
        ["malformed_json", "unauthorized", "idempotency_key_reused", "too_many_messages", "message_not_cancelable"]
    {
        let r = app.http.get(app.url(&format!("/problems/{code}"))).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{code}");
    }
    let missing = app.http.get(app.url("/problems/no_such_code")).send().await.expect("GET");
    assert_eq!(missing.status(), 404);
    let escaped = app.http.get(app.url("/problems/%3Cscript%3E")).send().await.expect("GET");
    assert_eq!(escaped.status(), 404);
    assert!(!escaped.text().await.expect("body").contains("<script>"));

    // The OpenAPI document.
    let r = app.http.get(app.url("/openapi.json")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().expect("ascii").starts_with("application/json"));
    let doc: Value = r.json().await.expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/v1/messages",
        "/v1/messages/batch",
        "/v1/messages/{id}",
        "/v1/messages/{id}/cancel",
        "/v1/message-events",
        "/v1/api-keys",
        "/v1/api-keys/{id}",
        "/v1/channel-accounts",
        "/v1/channel-accounts/{id}",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    // Every documented operation exists on the server with that method.
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path.replace("{id}", "msg_00000000000000000000000000000000");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            if path == "/v1/stream" {
                // An event stream has no end to read to: its answer's status is enough.
                let r = app.request(method.clone(), &concrete).send().await.expect("GET /v1/stream");
                assert_eq!(r.status(), 200, "{method} {path}");
                continue;
            }
            let body = (method == Method::POST).then(|| json!({}));
            let a = call(&app, method.clone(), &concrete, body.as_ref()).await;
            assert_ne!(a.status, 405, "{method} {path} is documented but not served");
            assert!(a.status < 500, "{method} {path}: {}", a.text);
            if a.status == 404 {
                assert_ne!(a.json["detail"], "no such route", "{method} {path} is documented but not served");
            }
        }
    }
    app.finish().await;
}
