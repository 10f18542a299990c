//! Every way a request can be wrong gets the right RFC 9457 problem, never a 5xx, on both
//! backends; a deterministic fuzz loop included.

mod common;

use common::*;
use parley_testkit::{Backend, TestApp, on_both_backends};
use reqwest::Method;
use serde_json::{Map, Value, json};

on_both_backends!(
    malformed_json_names_line_and_column,
    unknown_fields_are_named,
    unknown_nested_fields_are_named_with_their_path,
    wrong_types_are_named,
    wrong_types_of_enumerations_are_422_not_malformed_json,
    missing_fields_are_named,
    invalid_values_are_named,
    transport_level_errors,
    mutated_bodies_never_cause_a_server_error,
    nul_characters_never_cause_a_server_error,
);

fn valid() -> Value {
    json!({"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "hello"}})
}

fn with(field: &str, value: Value) -> Value {
    let mut body = valid();
    body[field] = value;
    body
}

async fn post_raw(app: &TestApp, path: &str, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
    let mut request = app.request(Method::POST, path).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    Answer::read(request.send().await.expect("POST")).await
}

async fn malformed_json_names_line_and_column(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let body = "{\n  \"to\": \"+12025550150\",\n  \"channel\": ,\n}";
    let a = post_raw(&app, "/v1/messages", Some("application/json"), body).await;
    let p = a.problem(400, "malformed_json");
    let detail = p["detail"].as_str().expect("detail");
    assert!(detail.contains("line 3") && detail.contains("column"), "{detail}");
    let trailing = format!("{} trailing", valid());
    let cut = r#"{"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "abc"#;
    for body in ["", "{", "{\"to\": \"+1", cut, &trailing, "nul", "{'to': 'x'}", "\u{feff}{}", "{\"to\" \"x\"}"] {
        let a = post_raw(&app, "/v1/messages", Some("application/json"), body.to_string()).await;
        let p = a.problem(400, "malformed_json");
        assert!(p["detail"].as_str().is_some_and(|d| d.contains("line") && d.contains("column")), "{body:?}: {p}");
    }
    // Invalid UTF-8 is malformed too.
    let a = post_raw(&app, "/v1/messages", Some("application/json"), b"{\"to\": \"\xff\xfe\"}".to_vec()).await;
    a.problem(400, "malformed_json");
    let a = post_raw(&app, "/v1/messages/batch", Some("application/json"), "{\"messages\": [}").await;
    a.problem(400, "malformed_json");
    let a = post_raw(&app, "/v1/api-keys", Some("application/json"), "{\"name\": }").await;
    a.problem(400, "malformed_json");
    app.finish().await;
}

/// Post each body and collect, rather than stop at, every answer that is not a `status` problem
/// with `code` naming `name`.
async fn expect_problems(app: &TestApp, path: &str, cases: &[(Value, u16, &str, &str)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (body, status, code, name) in cases {
        let a = post(app, path, body).await;
        let named = a.param_names().iter().any(|n| n == name);
        let shaped = a.header("content-type") == Some("application/problem+json") && a.json["request_id"].is_string();
        if a.status != *status || a.json["code"] != *code || !named || !shaped {
            wrong.push(format!("{body}\n    expected {status} {code} naming '{name}', got {a}"));
        }
    }
    wrong
}

async fn unknown_fields_are_named(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let a = post(&app, "/v1/messages", &with("colour", json!("red"))).await;
    let p = a.problem(422, "unknown_field");
    a.names("colour");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("colour")), "{p}");
    // Field names are case-sensitive.
    let mut shouting = valid();
    shouting.as_object_mut().expect("object").remove("to");
    shouting["TO"] = json!("+12025550150");
    post(&app, "/v1/messages", &shouting).await.problem(422, "unknown_field").names("TO");
    // In batch items, named with the item's index.
    let mut item = valid();
    item["colour"] = json!("red");
    let a = post(&app, "/v1/messages/batch", &json!({"messages": [item]})).await;
    a.problem(422, "validation_failed").names("messages[0].colour");
    assert!(all_messages(&app, "").await.is_empty());
    app.finish().await;
}

async fn unknown_nested_fields_are_named_with_their_path(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let content = |c: Value| with("content", c);
    let cases = [
        (content(json!({"type": "text", "text": "hi", "colour": "red"})), 422, "unknown_field", "content.colour"),
        (
            content(json!({"type": "media", "url": "https://x.example/a.png", "colour": "red"})),
            422,
            "unknown_field",
            "content.colour",
        ),
        (
            content(json!({"type": "template", "name": "a", "language": "en", "colour": 1})),
            422,
            "unknown_field",
            "content.colour",
        ),
    ];
    let wrong = expect_problems(&app, "/v1/messages", &cases).await;
    assert!(wrong.is_empty(), "unknown fields inside `content` are not named by their path:\n{}", wrong.join("\n"));
    app.finish().await;
}

async fn wrong_types_are_named(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let v = "validation_failed";
    let cases = [
        (with("to", json!(12025550150_i64)), 422, v, "to"),
        (with("to", json!(null)), 422, v, "to"),
        (with("channel", json!("fax")), 422, v, "channel"),
        (with("channel", json!("SMS")), 422, v, "channel"),
        (with("content", json!("hello")), 422, v, "content"),
        (with("content", json!({"type": "fax", "text": "x"})), 422, v, "content.type"),
        (with("content", json!({"caption": "no type"})), 422, v, "content.type"),
        (with("validity_seconds", json!("ten")), 422, v, "validity_seconds"),
        (with("validity_seconds", json!(1.5)), 422, v, "validity_seconds"),
        (with("metadata", json!({"a": 1})), 422, v, "metadata.a"),
        (with("metadata", json!(["a"])), 422, v, "metadata"),
        (with("send_at", json!(12)), 422, v, "send_at"),
        (with("client_reference", json!({})), 422, v, "client_reference"),
        (with("default_region", json!(49)), 422, v, "default_region"),
    ];
    let wrong = expect_problems(&app, "/v1/messages", &cases).await;
    assert!(wrong.is_empty(), "wrong types:\n{}", wrong.join("\n"));
    // A body that is not an object.
    for body in [json!([]), json!("text"), json!(null), json!(42)] {
        let a = post(&app, "/v1/messages", &body).await;
        a.problem(422, "validation_failed");
    }
    assert!(all_messages(&app, "").await.is_empty());
    app.finish().await;
}

/// Well-formed JSON with a value of the wrong type is a 422 naming the field, whatever the
/// field's type: enumerations (channel, content's type) included.
async fn wrong_types_of_enumerations_are_422_not_malformed_json(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let v = "validation_failed";
    let cases = [
        (with("channel", json!(1)), 422, v, "channel"),
        (with("channel", json!(true)), 422, v, "channel"),
        (with("channel", json!(["sms"])), 422, v, "channel"),
        (with("channel", json!(null)), 422, v, "channel"),
        (with("content", json!({"type": 5, "text": "x"})), 422, v, "content.type"),
    ];
    let mut wrong = expect_problems(&app, "/v1/messages", &cases).await;
    let keys = [(json!({"name": "k", "scopes": [1]}), 422, v, "scopes[0]")];
    wrong.extend(expect_problems(&app, "/v1/api-keys", &keys).await);
    let list = get(&app, "/v1/messages?channel=1").await;
    if list.status != 400 {
        wrong.push(format!("GET /v1/messages?channel=1 -> {list}"));
    }
    assert!(wrong.is_empty(), "valid JSON answered as malformed or unnamed:\n{}", wrong.join("\n"));
    app.finish().await;
}

async fn missing_fields_are_named(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let v = "validation_failed";
    let without = |field: &str| {
        let mut body = valid();
        body.as_object_mut().expect("object").remove(field);
        body
    };
    let cases = [
        (without("to"), 422, v, "to"),
        (without("channel"), 422, v, "channel"),
        (without("content"), 422, v, "content"),
        (with("content", json!({"type": "text"})), 422, v, "content.text"),
    ];
    let mut wrong = expect_problems(&app, "/v1/messages", &cases).await;
    wrong.extend(expect_problems(&app, "/v1/messages/batch", &[(json!({}), 422, v, "messages")]).await);
    wrong.extend(expect_problems(&app, "/v1/api-keys", &[(json!({"scopes": ["admin"]}), 422, v, "name")]).await);
    assert!(wrong.is_empty(), "missing fields are not named:\n{}", wrong.join("\n"));
    assert!(all_messages(&app, "").await.is_empty());
    app.finish().await;
}

async fn invalid_values_are_named(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let a = post(&app, "/v1/messages", &with("to", json!("12345"))).await;
    let p = a.problem(422, "invalid_phone_number");
    a.names("to");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("12345")), "the detail echoes the input: {p}");
    for to in ["", "+", "+1", "+999 123", "not a number", "+1 202 555 01", "+4915123456789012345678"] {
        post(&app, "/v1/messages", &with("to", json!(to))).await.problem(422, "invalid_phone_number");
    }
    // A visitor id with a space is not a web chat address.
    let a = post(
        &app,
        "/v1/messages",
        &json!({"to": "two words", "channel": "webchat", "content": {"type": "text", "text": "x"}}),
    )
    .await;
    a.problem(422, "validation_failed").names("to");
    // A national number without a region, and one with a wrong region.
    post(&app, "/v1/messages", &with("to", json!("0151 23456789"))).await.problem(422, "invalid_phone_number");
    let mut us = with("to", json!("0151 23456789"));
    us["default_region"] = json!("US");
    let a = post(&app, "/v1/messages", &us).await;
    let p = a.problem(422, "invalid_phone_number");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("US")), "{p}");

    for region in ["XX", "Germany", "", "D"] {
        let mut body = with("to", json!("0151 23456789"));
        body["default_region"] = json!(region);
        let a = post(&app, "/v1/messages", &body).await;
        assert_eq!(a.status, 422, "region {region:?}: {}", a.text);
        assert_problem_shape(&a);
        a.names("default_region");
    }
    let metadata: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    post(&app, "/v1/messages", &with("metadata", Value::Object(metadata)))
        .await
        .problem(422, "validation_failed")
        .names("metadata");
    let sixteen: Map<String, Value> = (0..16).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_eq!(
        post(&app, "/v1/messages", &with("metadata", Value::Object(sixteen))).await.status,
        202,
        "16 keys are fine"
    );
    post(&app, "/v1/messages", &with("metadata", json!({"k": "v".repeat(501)})))
        .await
        .problem(422, "validation_failed");
    post(&app, "/v1/messages", &with("metadata", json!({"": "v"}))).await.problem(422, "validation_failed");
    for send_at in ["tomorrow", "2026-11-27 14:05", "2026-11-27T14:05:00", "1732716300"] {
        post(&app, "/v1/messages", &with("send_at", json!(send_at)))
            .await
            .problem(422, "validation_failed")
            .names("send_at");
    }
    let far = rfc3339::format(rfc3339::now() + 91 * 86_400_000);
    post(&app, "/v1/messages", &with("send_at", json!(far))).await.problem(422, "validation_failed").names("send_at");
    for validity in [1, 4, 0, -5, 1_209_601, i64::MAX] {
        post(&app, "/v1/messages", &with("validity_seconds", json!(validity)))
            .await
            .problem(422, "validation_failed")
            .names("validity_seconds");
    }
    post(&app, "/v1/messages", &with("client_reference", json!("")))
        .await
        .problem(422, "validation_failed")
        .names("client_reference");
    post(&app, "/v1/messages", &with("client_reference", json!("r".repeat(257)))).await.names("client_reference");
    let mut long_text = valid();
    long_text["content"]["text"] = json!("x".repeat(4097));
    post(&app, "/v1/messages", &long_text).await.problem(422, "validation_failed").names("content.text");
    // Several problems are named together.
    let mut many = with("validity_seconds", json!(1));
    many["send_at"] = json!("soon");
    many["client_reference"] = json!("");
    let a = post(&app, "/v1/messages", &many).await;
    a.problem(422, "validation_failed");
    a.names("validity_seconds").names("send_at").names("client_reference");
    assert_eq!(all_messages(&app, "").await.len(), 1, "only the valid one was stored");
    app.finish().await;
}

async fn transport_level_errors(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    // Over 1 MiB.
    let mut big = valid();
    big["content"]["text"] = json!("x".repeat(1024 * 1024 + 10));
    let a = post(&app, "/v1/messages", &big).await;
    a.problem(413, "payload_too_large");
    let a = post(&app, "/v1/messages/batch", &json!({"messages": [big]})).await;
    a.problem(413, "payload_too_large");
    // Not JSON.
    let a = post_raw(&app, "/v1/messages", Some("text/plain"), valid().to_string()).await;
    a.problem(415, "unsupported_media_type");
    let a = post_raw(&app, "/v1/messages", Some("application/x-www-form-urlencoded"), "to=%2B12025550150").await;
    a.problem(415, "unsupported_media_type");
    let a = post_raw(&app, "/v1/messages", None, valid().to_string()).await;
    a.problem(415, "unsupported_media_type");
    // JSON with parameters and +json types are JSON.
    let a = post_raw(&app, "/v1/messages", Some("application/json; charset=utf-8"), valid().to_string()).await;
    assert_eq!(a.status, 202, "{}", a.text);
    // Routes and methods.
    get(&app, "/v1/nothing-here").await.problem(404, "not_found");
    get(&app, "/v2/messages").await.problem(404, "not_found");
    let unauthenticated = Answer::read(app.http.get(app.url("/nope")).send().await.expect("GET")).await;
    unauthenticated.problem(404, "not_found");
    let a = call(&app, Method::DELETE, "/v1/messages", None).await;
    a.problem(405, "method_not_allowed");
    let allow = a.header("allow").unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "a 405 says what is allowed: {allow:?}");
    call(&app, Method::PUT, "/v1/messages/batch", Some(&valid())).await.problem(405, "method_not_allowed");
    call(&app, Method::GET, "/v1/messages/batch", None).await.problem(405, "method_not_allowed");
    call(&app, Method::GET, "/v1/messages/msg_x/cancel", None).await.problem(405, "method_not_allowed");
    call(&app, Method::PATCH, "/v1/api-keys", None).await.problem(405, "method_not_allowed");
    // Malformed ids in the path are unknown ids.
    for id in ["nope", "msg_", "msg_123", "key_0190f1f0000070008000000000000000", "msg_%00", "msg_%E2%9C%93"] {
        get(&app, &format!("/v1/messages/{id}")).await.problem(404, "not_found");
        post(&app, &format!("/v1/messages/{id}/cancel"), &json!({})).await.problem(404, "not_found");
    }
    // A valid message id under the wrong type prefix is not found either.
    let msg = id_of(&send(&app, &valid()).await);
    let as_key = msg.replacen("msg_", "key_", 1);
    get(&app, &format!("/v1/messages/{as_key}")).await.problem(404, "not_found");
    assert_eq!(get(&app, &format!("/v1/messages/{msg}")).await.status, 200);
    app.finish().await;
}

/// A small deterministic generator (xorshift64*), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn strange_value(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(u64::MAX),
        3 => json!(i64::MIN),
        4 => json!(-0.0),
        5 => json!(1e300),
        6 => json!(""),
        7 => json!("𝓤𝓷𝓲𝓬𝓸𝓭𝓮 \u{202e} RTL \u{0000} nul \u{200b}"),
        8 => json!("x".repeat(5000)),
        9 => json!([]),
        10 => json!({}),
        11 => json!([[[[[[[[[[["deep"]]]]]]]]]]]),
        12 => json!({"type": "text"}),
        13 => json!("+12025550150"),
        14 => json!("2026-11-27T14:05:00Z"),
        _ => json!({"nested": {"type": "media", "url": "https://x.example"}}),
    }
}

/// Change `body` in one random way.
fn mutate(rng: &mut Rng, body: &mut Value) {
    const FIELDS: [&str; 10] = [
        "to",
        "channel",
        "content",
        "default_region",
        "send_at",
        "validity_seconds",
        "metadata",
        "client_reference",
        "channel_account_id",
        "extra",
    ];
    let Some(obj) = body.as_object_mut() else { return };
    match rng.below(8) {
        0 => {
            let key = rng.pick(&FIELDS).to_string();
            obj.remove(&key);
        }
        1 | 2 => {
            let key = rng.pick(&FIELDS).to_string();
            obj.insert(key, strange_value(rng));
        }
        3 => {
            let content = obj.entry("content").or_insert_with(|| json!({}));
            if let Some(c) = content.as_object_mut() {
                let key = rng
                    .pick(&["type", "text", "url", "caption", "name", "language", "variables", "mime_type", "colour"])
                    .to_string();
                c.insert(key, strange_value(rng));
            }
        }
        4 => {
            let to = rng.pick(&[
                "+49 151 23456789",
                "٠١٥١٢٣٤٥٦٧٨٩",
                "+1 (202) 555-0101",
                "tel:+12025550150",
                "+12025550150;ext=1",
                "sandbox-fail",
                "𝟏𝟐𝟑",
            ]);
            obj.insert("to".into(), json!(to));
        }
        5 => {
            let channel = rng.pick(&["sms", "whatsapp", "rcs", "webchat", "SMS", "email", ""]);
            obj.insert("channel".into(), json!(channel));
        }
        6 => {
            let n = rng.below(40);
            let metadata: Map<String, Value> = (0..n).map(|i| (format!("ключ{i}"), json!("значение"))).collect();
            obj.insert("metadata".into(), Value::Object(metadata));
        }
        _ => {
            let depth = 1 + rng.below(300);
            let mut v = json!(1);
            for _ in 0..depth {
                v = json!([v]);
            }
            let key = rng.pick(&FIELDS).to_string();
            obj.insert(key, v);
        }
    }
}

/// Damage the JSON text itself now and then.
fn corrupt_text(rng: &mut Rng, text: String) -> String {
    match rng.below(10) {
        0 => {
            let n = text.chars().count();
            text.chars().take(rng.below(n.max(1))).collect()
        }
        1 => text.replacen('"', "'", 1),
        2 => format!("{text}{text}"),
        3 => text.replacen(':', ": 99999999999999999999999999999999999999 , \"n\":", 1),
        4 => text.replacen('{', "{\"to\": \"dup\", ", 1),
        5 => text.replacen("\"", "\"\\ud800", 1),
        _ => text,
    }
}

async fn mutated_bodies_never_cause_a_server_error(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    let mut server_errors = Vec::new();
    for round in 0..200 {
        let mut body = valid();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut body);
        }
        let batch = rng.below(4) == 0;
        let (path, body) =
            if batch { ("/v1/messages/batch", json!({"messages": [body, valid()]})) } else { ("/v1/messages", body) };
        let text = corrupt_text(&mut rng, body.to_string());
        let a = post_raw(&app, path, Some("application/json"), text.clone()).await;
        *seen.entry(a.status).or_default() += 1;
        if a.status >= 500 {
            server_errors
                .push(format!("round {round}: POST {path} {} -> {a}", text.chars().take(300).collect::<String>()));
        } else if a.status >= 400 {
            assert_problem_shape(&a);
        } else {
            assert_eq!(a.status, 202, "round {round}: {}", a.text);
        }
    }
    // Query strings get the same treatment.
    for round in 0..60 {
        let key = rng.pick(&["limit", "cursor", "status", "channel", "to", "created_from", "created_to", "x"]);
        let value = rng.pick(&[
            "",
            "-1",
            "99999999999999999999",
            "%FF",
            "%00",
            "✓",
            "djE6",
            "djE6bXNnXw",
            "2026-02-30T00:00:00Z",
            "+1",
            "read",
        ]);
        let query = if rng.below(4) == 0 { format!("{key}={value}&{key}={value}") } else { format!("{key}={value}") };
        let a = get(&app, &format!("/v1/messages?{query}")).await;
        if a.status >= 500 {
            server_errors.push(format!("query round {round}: GET /v1/messages?{query} -> {a}"));
        } else if a.status != 200 {
            assert_problem_shape(&a);
        }
    }
    assert!(server_errors.is_empty(), "client input caused server errors:\n{}", server_errors.join("\n"));
    assert!(seen.len() >= 3, "the mutations exercise several answers: {seen:?}");
    // The server is still healthy afterwards.
    assert_eq!(send(&app, &valid()).await["status"], "queued");
    app.finish().await;
}

/// NUL characters are valid in JSON strings and in URLs; some databases refuse them in text.
async fn nul_characters_never_cause_a_server_error(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let nul = "a\u{0000}b";
    let mut bodies = vec![
        with("client_reference", json!(nul)),
        with("metadata", json!({"k": nul})),
        with("metadata", json!({nul: "v"})),
        with("content", json!({"type": "text", "text": nul})),
        with("content", json!({"type": "media", "url": "https://x.example/a.png", "caption": nul})),
        with("content", json!({"type": "template", "name": "t", "language": "en", "variables": {"1": nul}})),
        with("to", json!(nul)),
        json!({"to": nul, "channel": "webchat", "content": {"type": "text", "text": "x"}}),
    ];
    bodies.push(json!({"messages": [bodies[0].clone()]}));
    let mut server_errors = Vec::new();
    for body in &bodies {
        let path = if body.get("messages").is_some() { "/v1/messages/batch" } else { "/v1/messages" };
        let a = post(&app, path, body).await;
        if a.status >= 500 || !(a.status == 202 || a.status == 422) {
            server_errors.push(format!("POST {path} {body} -> {a}"));
        } else if a.status == 202 && path == "/v1/messages" {
            // What was accepted reads back as sent.
            let m = message(&app, &id_of(&a.json)).await;
            for field in ["client_reference", "metadata", "content"] {
                if m[field] != a.json[field] {
                    server_errors.push(format!("{field} did not round-trip: {} vs {}", m[field], a.json[field]));
                }
            }
        }
    }
    for query in ["to=%00", "to=a%00b", "cursor=%00", "status=%00"] {
        let a = get(&app, &format!("/v1/messages?{query}")).await;
        if a.status >= 500 {
            server_errors.push(format!("GET /v1/messages?{query} -> {a}"));
        }
    }
    let a =
        post_raw(&app, "/v1/api-keys", Some("application/json"), json!({"name": nul, "scopes": ["admin"]}).to_string())
            .await;
    if a.status >= 500 {
        server_errors.push(format!("POST /v1/api-keys with a NUL in the name -> {a}"));
    }
    assert!(server_errors.is_empty(), "NUL characters:\n{}", server_errors.join("\n"));
    app.finish().await;
}
