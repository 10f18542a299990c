//! Helpers shared by the HTTP API integration tests: reading answers, checking problem documents
//! and message timelines.
#![allow(dead_code)]

use parley_testkit::TestApp;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::time::Duration;

/// A finished HTTP exchange: status, headers and the body as JSON (`Value::Null` when it is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read the body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, text, json }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert that this is an RFC 9457 problem with `status` and `code`.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "expected {status} {code}, got: {}", self.text);
        assert_problem_shape(self);
        assert_eq!(self.json["code"], code, "problem code: {}", self.text);
        self
    }

    /// The names of the problem's `invalid_params`.
    pub fn param_names(&self) -> Vec<String> {
        self.json["invalid_params"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Assert that `invalid_params` names `name`.
    #[track_caller]
    pub fn names(&self, name: &str) -> &Self {
        assert!(self.param_names().iter().any(|n| n == name), "invalid_params should name '{name}': {}", self.text);
        self
    }
}

/// `answer["field"]` reads the JSON body.
impl std::ops::Index<&str> for Answer {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.json[key]
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

/// Every problem: `application/problem+json`, the RFC 9457 members, a `type` under
/// `/problems/`, and the request id of the answer.
#[track_caller]
pub fn assert_problem_shape(a: &Answer) {
    assert_eq!(a.header("content-type"), Some("application/problem+json"), "content type of: {}", a.text);
    let p = &a.json;
    assert!(p.is_object(), "problem body is not a JSON object: {}", a.text);
    let code = p["code"].as_str().expect("problem has a code");
    assert_eq!(p["type"], format!("/problems/{code}"), "{}", a.text);
    assert_eq!(p["status"], a.status, "{}", a.text);
    assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{}", a.text);
    assert!(p["detail"].as_str().is_some_and(|t| !t.is_empty()), "{}", a.text);
    let request_id = p["request_id"].as_str().expect("problem has a request_id");
    assert_eq!(Some(request_id), a.header("x-request-id"), "request_id matches the X-Request-Id header");
}

pub async fn call(app: &TestApp, method: Method, path: &str, body: Option<&Value>) -> Answer {
    let mut request = app.request(method, path);
    if let Some(body) = body {
        request = request.json(body);
    }
    Answer::read(request.send().await.expect("HTTP request")).await
}

pub async fn post(app: &TestApp, path: &str, body: &Value) -> Answer {
    call(app, Method::POST, path, Some(body)).await
}

pub async fn get(app: &TestApp, path: &str) -> Answer {
    call(app, Method::GET, path, None).await
}

/// `GET path` with a key other than the admin key.
pub async fn get_as(app: &TestApp, key: &str, path: &str) -> Answer {
    Answer::read(app.http.get(app.url(path)).bearer_auth(key).send().await.expect("GET")).await
}

pub async fn post_as(app: &TestApp, key: &str, path: &str, body: &Value) -> Answer {
    Answer::read(app.http.post(app.url(path)).bearer_auth(key).json(body).send().await.expect("POST")).await
}

/// A text message body.
pub fn text_to(channel: &str, to: &str, text: &str) -> Value {
    json!({"to": to, "channel": channel, "content": {"type": "text", "text": text}})
}

/// Send `body` to `POST /v1/messages`, expecting 202; the message resource.
pub async fn send(app: &TestApp, body: &Value) -> Value {
    let a = post(app, "/v1/messages", body).await;
    assert_eq!(a.status, 202, "send {body}: {}", a.text);
    a.json
}

pub fn id_of(m: &Value) -> String {
    m["id"].as_str().expect("message id").to_string()
}

/// The message with its events.
pub async fn message(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/v1/messages/{id}")).await
}

pub fn events(m: &Value) -> Vec<Value> {
    m["events"].as_array().cloned().unwrap_or_default()
}

/// The `nth` (0-based) event of type `kind` in a message's timeline.
pub fn event<'a>(m: &'a Value, kind: &str, nth: usize) -> &'a Value {
    let evs = m["events"].as_array().expect("events");
    evs.iter().filter(|e| e["type"] == kind).nth(nth).unwrap_or_else(|| panic!("no {kind} #{nth} in {m:#}"))
}

/// The workspace's inbound messages (newest first, at most 100).
pub async fn inbound_messages(app: &TestApp) -> Vec<Value> {
    let page = app.get_json("/v1/messages?limit=100").await;
    page["data"].as_array().expect("data").iter().filter(|m| m["direction"] == "inbound").cloned().collect()
}

/// The event types of a message's timeline, oldest first.
pub fn kinds(m: &Value) -> Vec<String> {
    events(m).iter().map(|e| e["type"].as_str().unwrap_or("?").to_string()).collect()
}

/// Sequences are 1..n without gaps, `sequence` of the message is n, every event belongs to it.
#[track_caller]
pub fn assert_timeline_contiguous(m: &Value) {
    let evs = events(m);
    assert!(!evs.is_empty(), "message has events: {m}");
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["sequence"], i as i64 + 1, "sequence of event {i} in {m:#}");
        assert_eq!(e["message_id"], m["id"], "event belongs to the message");
        assert!(e["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "event id: {e}");
    }
    assert_eq!(m["sequence"], evs.len() as i64, "message.sequence is the newest event's: {m:#}");
}

/// Poll until the message's timeline has at least `times` events of type `kind`.
pub async fn wait_for_events(app: &TestApp, id: &str, kind: &str, times: usize, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = message(app, id).await;
        if kinds(&m).iter().filter(|k| *k == kind).count() >= times {
            return m;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("message {id} did not get {times} '{kind}' events within {within:?}: {:?}", kinds(&m));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Milliseconds since the epoch of an API timestamp.
#[track_caller]
pub fn millis(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    rfc3339::parse(text).unwrap_or_else(|| panic!("not the API's RFC 3339 form: {text}"))
}

/// The API's timestamp form `YYYY-MM-DDTHH:MM:SS.mmmZ`, read and written without a date crate.
pub mod rfc3339 {
    pub fn parse(s: &str) -> Option<i64> {
        let b = s.as_bytes();
        if b.len() != 24 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
            return None;
        }
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
        let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
        let (h, mi, se, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms)
    }

    pub fn format(millis: i64) -> String {
        let days = millis.div_euclid(86_400_000);
        let rest = millis.rem_euclid(86_400_000);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
        let (h, mi, s, ms) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }

    /// Now, in milliseconds since the epoch.
    pub fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }
}

/// The sandbox's count of accepted submissions for the message `id` (API form).
pub fn ledger_count(app: &TestApp, id: &str) -> usize {
    let id = parley_domain::MessageId::parse(id).expect("a message id");
    app.engine.sandbox_ledger().count_for(&id)
}

/// Every message of the workspace, following cursors.
pub async fn all_messages(app: &TestApp, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/messages?limit=1000{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(&path).await;
        out.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// The id of the workspace's default account for `channel` (a sandbox account in tests).
pub async fn default_account(app: &TestApp, channel: &str) -> String {
    let accounts = get(app, "/v1/channel-accounts").await;
    let found = accounts.json["data"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["channel"] == channel && a["is_default"] == true))
        .unwrap_or_else(|| panic!("a default {channel} account: {accounts}"));
    found["id"].as_str().expect("account id").to_string()
}

/// A sandbox SMS account of the app's workspace (not the default) that takes `latency_ms` to
/// answer each send: to make timing deterministic (retries past a validity, cancel races).
pub async fn slow_sms_account(app: &TestApp, latency_ms: u64) -> String {
    sandbox_sms_account(app, json!({"latency_ms": latency_ms}), 1000, 100).await
}

/// A sandbox SMS account of the app's workspace (not the default) with the given sandbox config,
/// rate limit (messages per second) and in-flight cap.
pub async fn sandbox_sms_account(
    app: &TestApp,
    config: Value,
    rate_limit_per_second: u32,
    max_in_flight: u32,
) -> String {
    let body = json!({
        "channel": "sms",
        "provider": "sandbox",
        "name": "Test sandbox sms",
        "config": config,
        "rate_limit_per_second": rate_limit_per_second,
        "max_in_flight": max_in_flight,
    });
    let created = post(app, "/v1/channel-accounts", &body).await;
    assert_eq!(created.status, 201, "create the sandbox account: {created}");
    created.json["id"].as_str().expect("account id").to_string()
}

/// Leave the WhatsApp customer-service window to Meta (messaging policy `whatsapp_window:
/// "provider"`): for tests about something else that send free-form WhatsApp text to numbers
/// that never wrote, which Parley otherwise refuses with `whatsapp_window_closed`.
pub async fn leave_whatsapp_window_to_meta(app: &TestApp) {
    let body = json!({"whatsapp_window": "provider"});
    let answer = call(app, Method::PATCH, "/v1/messaging-policy", Some(&body)).await;
    assert_eq!(answer.status, 200, "leave the WhatsApp window to Meta: {answer}");
}
