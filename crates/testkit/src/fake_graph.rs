//! A fake Meta Graph API (WhatsApp Cloud API) for tests: a real HTTP server on `127.0.0.1:0`
//! that checks requests the way the Cloud API does as far as Parley uses it, records every one,
//! and delivers status webhooks and inbound messages to Parley's hook URL, signed with
//! `X-Hub-Signature-256` as Meta signs them (escaped-unicode JSON, HMAC-SHA256 with the app
//! secret, computed here independently of the connector).
//!
//! - `POST /{version}/{phone_number_id}/messages`: `Authorization: Bearer <token>` (else 401 with
//!   the Graph error envelope, code 190); the number must be the fake's (else 400, code 100); a
//!   JSON body of the shape of Meta's OpenAPI (`messaging_product: "whatsapp"`, `to`,
//!   `recipient_type`, `type` and its object: `text`, `image`/`video`/`audio`/`document`/`sticker`
//!   with exactly one of `id`/`link` and `caption`/`filename` only where allowed, `template` with
//!   typed components and parameters, `interactive` `button`/`list`/`cta_url`, `reaction`,
//!   `location`, `contacts`). Unknown or misplaced fields and wrong types are refused with 400,
//!   code 100 and the reason in `error_data.details`. A read receipt
//!   (`{"status": "read", "message_id"}`) is answered `{"success": true}`. A taken message is
//!   answered with Meta's success shape (`contacts[{input, wa_id}]`, `messages[{id: "wamid.…"}]`)
//!   and, when [`FakeGraph::set_webhook_url`] was called, its statuses follow, each
//!   [`FakeGraph::set_status_delay`] apart: `sent`, `delivered`, `read` (with `conversation` and
//!   `pricing`).
//! - `GET /{version}/{phone_number_id}`: the number (`display_phone_number`, `verified_name`,
//!   `quality_rating`), same token check.
//!
//! Magic recipients (`to`, with or without `+`), in the 555-01xx block Parley's API accepts:
//!
//! | `to` | answer |
//! |---|---|
//! | `+12025550171` | 400, code 131026 (undeliverable: not a WhatsApp user) |
//! | `+12025550172` | first request 400, code 130429 (throughput reached); then taken |
//! | `+12025550173` | 400, code 131047 (outside the 24 h window) for anything but a template; templates are taken |
//! | `+12025550174` | taken; statuses `sent`, then `failed` with code 131026 |
//! | `+12025550175` | taken; no statuses |
//! | `+12025550176` | first request 400, code 131056 (pair rate limit); then taken |
//! | anything else | taken; statuses `sent`, `delivered`, `read` |

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const WABA_ID: &str = "102290129340398";
/// The business number, as webhooks write it (digits).
pub const DISPLAY_PHONE_NUMBER: &str = "15550783881";
pub const ACCESS_TOKEN: &str = "EAAfake-graph-access-token-0001";
pub const APP_SECRET: &str = "fake-graph-app-secret-0001";
pub const VERIFY_TOKEN: &str = "fake-graph-verify-token-0001";

/// Magic recipients (see the module docs).
pub mod magic {
    pub const UNDELIVERABLE: &str = "+12025550171";
    pub const RATE_LIMITED_ONCE: &str = "+12025550172";
    pub const WINDOW_CLOSED: &str = "+12025550173";
    pub const FAILS_LATER: &str = "+12025550174";
    pub const NO_STATUSES: &str = "+12025550175";
    pub const PAIR_LIMITED_ONCE: &str = "+12025550176";
}

/// One API request the fake got.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    /// The bearer token, if any.
    pub token: Option<String>,
    pub content_type: Option<String>,
    /// The JSON body (`Null` if none or not JSON).
    pub body: Value,
    /// What the fake answered.
    pub status: u16,
    pub response: Value,
}

impl ApiRequest {
    /// The recipient of a send, as given.
    pub fn to(&self) -> Option<&str> {
        self.body["to"].as_str()
    }
}

/// One webhook the fake delivered.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub url: String,
    /// The message a status is about, or the inbound message's id.
    pub message_id: String,
    /// `sent`, `delivered`, `read`, `failed`, or `message` for an inbound message.
    pub kind: String,
    pub body: Vec<u8>,
    /// The HTTP status it got, or `None` if the request failed.
    pub answered: Option<u16>,
}

struct State {
    access_token: String,
    app_secret: String,
    webhook_url: Mutex<Option<String>>,
    status_delay: Mutex<Duration>,
    requests: Mutex<Vec<ApiRequest>>,
    webhooks: Mutex<Vec<Webhook>>,
    seen: Mutex<HashMap<String, u32>>,
    counter: Mutex<u64>,
    http: reqwest::Client,
}

pub struct FakeGraph {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:{port}`: the connector's `base_url`.
    pub base_url: String,
    state: Arc<State>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        let state = Arc::new(State {
            access_token: ACCESS_TOKEN.to_string(),
            app_secret: APP_SECRET.to_string(),
            webhook_url: Mutex::new(None),
            status_delay: Mutex::new(Duration::from_millis(20)),
            requests: Mutex::new(Vec::new()),
            webhooks: Mutex::new(Vec::new()),
            seen: Mutex::new(HashMap::new()),
            counter: Mutex::new(0),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client"),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("address");
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { handle(state, method, uri, headers, body).await }
            }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph { addr, base_url: format!("http://{addr}"), state, _server: server }
    }

    /// A channel account config for this fake.
    pub fn config(&self) -> Value {
        json!({"phone_number_id": PHONE_NUMBER_ID, "waba_id": WABA_ID, "base_url": self.base_url})
    }

    /// The channel account credentials for this fake.
    pub fn credentials(&self) -> Value {
        json!({"access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN})
    }

    /// Where webhooks go (the app's callback URL in Meta's dashboard); none until set.
    pub fn set_webhook_url(&self, url: &str) {
        *self.state.webhook_url.lock().expect("lock") = Some(url.to_string());
    }

    /// Time between a message's acceptance and each of its statuses (20 ms by default).
    pub fn set_status_delay(&self, delay: Duration) {
        *self.state.status_delay.lock().expect("lock") = delay;
    }

    /// Every API request so far.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// The send requests for `to` (with or without `+`).
    pub fn requests_to(&self, to: &str) -> Vec<ApiRequest> {
        let digits = to.trim_start_matches('+');
        self.requests().into_iter().filter(|r| r.to().is_some_and(|t| t.trim_start_matches('+') == digits)).collect()
    }

    /// Every webhook delivered so far.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.state.webhooks.lock().expect("lock").clone()
    }

    /// Wait until `count` webhooks have been delivered (or panic after `within`).
    pub async fn wait_for_webhooks(&self, count: usize, within: Duration) -> Vec<Webhook> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let webhooks = self.webhooks();
            if webhooks.len() >= count {
                return webhooks;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{} of {count} webhooks within {within:?}: {webhooks:#?}", webhooks.len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Post a signed webhook `payload` to the webhook URL, as Meta does.
    pub async fn deliver(&self, payload: &Value) -> reqwest::Response {
        let url = self.state.webhook_url.lock().expect("lock").clone().expect("set_webhook_url first");
        post_signed(&self.state.http, &url, &self.state.app_secret, payload).await
    }

    /// A customer (`from`, E.164) texts the business: the inbound webhook is delivered; returns
    /// the message id and Parley's answer.
    pub async fn send_inbound_text(&self, from: &str, text: &str) -> (String, reqwest::Response) {
        let id = next_wamid(&self.state);
        let message = json!({"from": from.trim_start_matches('+'), "id": id, "timestamp": now_secs(),
                             "type": "text", "text": {"body": text}});
        (id.clone(), self.send_inbound(from, message).await)
    }

    /// A customer taps a reply button (`id`, `title`) of the business's message `context_id`.
    pub async fn send_inbound_button_reply(
        &self,
        from: &str,
        context_id: &str,
        id: &str,
        title: &str,
    ) -> (String, reqwest::Response) {
        let wamid = next_wamid(&self.state);
        let message = json!({"context": {"from": DISPLAY_PHONE_NUMBER, "id": context_id},
            "from": from.trim_start_matches('+'), "id": wamid, "timestamp": now_secs(), "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}}});
        (wamid.clone(), self.send_inbound(from, message).await)
    }

    /// Deliver one inbound `message` object (Meta's shape) from `from`.
    pub async fn send_inbound(&self, from: &str, message: Value) -> reqwest::Response {
        let id = message["id"].as_str().unwrap_or("").to_string();
        let digits = from.trim_start_matches('+');
        let value = json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY_PHONE_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Test Customer"}, "wa_id": digits}],
            "messages": [message],
        });
        let payload = envelope(value);
        let url = self.state.webhook_url.lock().expect("lock").clone().expect("set_webhook_url first");
        let body = meta_json(&payload);
        let response = post_raw(&self.state.http, &url, &sign(&self.state.app_secret, &body), body.clone()).await;
        self.state.webhooks.lock().expect("lock").push(Webhook {
            url,
            message_id: id,
            kind: "message".into(),
            body,
            answered: Some(response.status().as_u16()),
        });
        response
    }

    /// The status webhook Meta sends about `message_id` (sent to `to`).
    pub fn status_payload(message_id: &str, to: &str, status: &str, errors: Option<Value>) -> Value {
        let mut s = json!({
            "id": message_id,
            "status": status,
            "timestamp": now_secs(),
            "recipient_id": to.trim_start_matches('+'),
        });
        if status != "failed" {
            s["conversation"] = json!({"id": "fa4e0000000000000000000000000001", "origin": {"type": "service"}});
            s["pricing"] = json!({"billable": true, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"});
        }
        if let Some(errors) = errors {
            s["errors"] = errors;
        }
        envelope(json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY_PHONE_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
            "statuses": [s],
        }))
    }
}

fn envelope(value: Value) -> Value {
    json!({"object": "whatsapp_business_account",
           "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}]})
}

fn now_secs() -> String {
    jiff::Timestamp::now().as_second().to_string()
}

fn next_wamid(state: &State) -> String {
    let mut n = state.counter.lock().expect("lock");
    *n += 1;
    // Meta's ids are base64 of an opaque structure; only the prefix matters to Parley.
    format!("wamid.HBgLZmFrZUdyYXBo{:016X}{}", *n, uuid::Uuid::new_v4().simple())
}

/// JSON as Meta writes it in webhooks: compact, every non-ASCII character escaped (`\u00e9`,
/// surrogate pairs beyond the BMP). Signatures are over these very bytes.
pub fn meta_json(value: &Value) -> Vec<u8> {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.into_bytes()
}

/// `sha256=<lower-case hex HMAC-SHA256(app_secret, body)>`: Meta's `X-Hub-Signature-256`.
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Post `payload` to `url` as Meta does, signed with `app_secret`.
pub async fn post_signed(http: &reqwest::Client, url: &str, app_secret: &str, payload: &Value) -> reqwest::Response {
    let body = meta_json(payload);
    post_raw(http, url, &sign(app_secret, &body), body).await
}

/// Post raw bytes with the given `X-Hub-Signature-256`.
pub async fn post_raw(http: &reqwest::Client, url: &str, signature: &str, body: Vec<u8>) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .header("user-agent", "facebookexternalua")
        .body(body)
        .send()
        .await
        .expect("POST a WhatsApp webhook")
}

/// The Graph error envelope.
fn graph_error(status: u16, code: i64, title: &str, details: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {
            "message": format!("(#{code}) {title}"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": format!("A{}", uuid::Uuid::new_v4().simple()),
        }}),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

async fn handle(state: Arc<State>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = bearer(&headers);
    let (status, response, plan) = answer(&state, &method, &path, token.as_deref(), content_type.as_deref(), &json);
    state.requests.lock().expect("lock").push(ApiRequest {
        method: method.to_string(),
        path,
        token,
        content_type,
        body: json,
        status,
        response: response.clone(),
    });
    if let Some(plan) = plan {
        tokio::spawn(run_statuses(state.clone(), plan));
    }
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=UTF-8")
        .header("x-fb-trace-id", uuid::Uuid::new_v4().simple().to_string());
    if status == 401 {
        builder = builder.header("www-authenticate", "OAuth \"Facebook Platform\" \"invalid_token\"");
    }
    builder.body(Body::from(response.to_string())).expect("response")
}

/// The statuses one message will get.
struct Plan {
    message_id: String,
    to: String,
    statuses: Vec<(&'static str, Option<Value>)>,
}

fn is_version(s: &str) -> bool {
    s.strip_prefix('v').and_then(|v| v.split_once('.')).is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
    })
}

fn answer(
    state: &State,
    method: &Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &Value,
) -> (u16, Value, Option<Plan>) {
    let plain = |(status, body): (u16, Value)| (status, body, None);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (version, number, tail) = match parts.as_slice() {
        [v, n] => (*v, *n, None),
        [v, n, t] => (*v, *n, Some(*t)),
        _ => return plain(graph_error(400, 100, "Unsupported request", &format!("unknown path {path}"))),
    };
    if !is_version(version) {
        return plain(graph_error(400, 2500, "Unknown path components", &format!("{version} is not a version")));
    }
    match token {
        None => return plain(graph_error(401, 104, "An access token is required to request this resource", "")),
        Some(t) if t != state.access_token => {
            return plain(graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token", ""));
        }
        Some(_) => {}
    }
    if number != PHONE_NUMBER_ID {
        return plain(graph_error(
            400,
            100,
            "Unsupported post request",
            &format!(
                "Object with ID '{number}' does not exist, cannot be loaded due to missing permissions, or does not support this operation"
            ),
        ));
    }
    match (method.as_str(), tail) {
        ("GET", None) => plain((
            200,
            json!({"verified_name": "Parley Test", "code_verification_status": "VERIFIED",
                   "display_phone_number": "+1 555-078-3881", "quality_rating": "GREEN",
                   "platform_type": "CLOUD_API", "throughput": {"level": "STANDARD"}, "id": PHONE_NUMBER_ID}),
        )),
        ("POST", Some("messages")) => {
            if !content_type.is_some_and(|c| c.starts_with("application/json")) {
                return plain(graph_error(400, 100, "Invalid parameter", "the body must be application/json"));
            }
            send(state, body)
        }
        _ => plain(graph_error(400, 100, "Unsupported request", &format!("{method} {path}"))),
    }
}

fn send(state: &State, body: &Value) -> (u16, Value, Option<Plan>) {
    let plain = |(status, body): (u16, Value)| (status, body, None);
    if let Err(details) = check_message(body) {
        return plain(graph_error(400, 100, "Invalid parameter", &details));
    }
    if body.get("status").is_some() {
        return plain((200, json!({"success": true})));
    }
    let to = body["to"].as_str().unwrap_or("").trim_start_matches('+').to_string();
    let e164 = format!("+{to}");
    let seen = {
        let mut seen = state.seen.lock().expect("lock");
        let n = seen.entry(e164.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let kind = body["type"].as_str().unwrap_or("text");
    match e164.as_str() {
        magic::UNDELIVERABLE => {
            return plain(graph_error(
                400,
                131026,
                "Message Undeliverable",
                "Message failed to send because the recipient is not a WhatsApp user.",
            ));
        }
        magic::RATE_LIMITED_ONCE if seen == 1 => {
            return plain(graph_error(400, 130429, "Rate limit hit", "Cloud API message throughput has been reached."));
        }
        magic::PAIR_LIMITED_ONCE if seen == 1 => {
            return plain(graph_error(
                400,
                131056,
                "(Business Account, Consumer Account) pair rate limit hit",
                "Too many messages sent from the sender phone number to the same recipient phone number in a short period of time.",
            ));
        }
        magic::WINDOW_CLOSED if kind != "template" => {
            return plain(graph_error(
                400,
                131047,
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            ));
        }
        _ => {}
    }
    let id = next_wamid(state);
    let mut message = json!({"id": id});
    if kind == "template" {
        message["message_status"] = json!("accepted");
    }
    let response = json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": body["to"], "wa_id": to}],
        "messages": [message],
    });
    let statuses: Vec<(&'static str, Option<Value>)> = match e164.as_str() {
        magic::NO_STATUSES => vec![],
        magic::FAILS_LATER => vec![
            ("sent", None),
            (
                "failed",
                Some(json!([{"code": 131026, "title": "Message undeliverable",
                    "message": "Message undeliverable",
                    "error_data": {"details": "Message Undeliverable."},
                    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}])),
            ),
        ],
        _ => vec![("sent", None), ("delivered", None), ("read", None)],
    };
    let plan = (!statuses.is_empty()).then_some(Plan { message_id: id, to: e164, statuses });
    (200, response, plan)
}

async fn run_statuses(state: Arc<State>, plan: Plan) {
    let Some(url) = state.webhook_url.lock().expect("lock").clone() else { return };
    for (status, errors) in plan.statuses {
        let delay = *state.status_delay.lock().expect("lock");
        tokio::time::sleep(delay).await;
        let payload = FakeGraph::status_payload(&plan.message_id, &plan.to, status, errors);
        let body = meta_json(&payload);
        let signature = sign(&state.app_secret, &body);
        let answered = state
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        state.webhooks.lock().expect("lock").push(Webhook {
            url: url.clone(),
            message_id: plan.message_id.clone(),
            kind: status.to_string(),
            body,
            answered,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The shapes of Meta's OpenAPI (`business-messaging-api_v23.0.yaml`) that Parley can send.

type Check = Result<(), String>;

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{at} must be an object"))
}

fn only(o: &Map<String, Value>, at: &str, allowed: &[&str]) -> Check {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{at}.{k} is not a valid parameter here")),
        None => Ok(()),
    }
}

fn string<'a>(o: &'a Map<String, Value>, at: &str, key: &str, max: usize) -> Result<&'a str, String> {
    match o.get(key) {
        Some(Value::String(s)) if s.chars().count() <= max => Ok(s),
        Some(Value::String(_)) => Err(format!("{at}.{key} is longer than {max} characters")),
        Some(_) => Err(format!("{at}.{key} must be a string")),
        None => Err(format!("{at}.{key} is required")),
    }
}

fn optional_string(o: &Map<String, Value>, at: &str, key: &str, max: usize) -> Check {
    if o.contains_key(key) {
        string(o, at, key, max)?;
    }
    Ok(())
}

fn number(o: &Map<String, Value>, at: &str, key: &str) -> Result<f64, String> {
    o.get(key).and_then(Value::as_f64).ok_or_else(|| format!("{at}.{key} must be a number"))
}

fn array<'a>(o: &'a Map<String, Value>, at: &str, key: &str) -> Result<&'a Vec<Value>, String> {
    o.get(key).and_then(Value::as_array).ok_or_else(|| format!("{at}.{key} must be an array"))
}

/// `{"id"}` or `{"link"}`, exactly one, plus the extra fields allowed.
fn media_object(v: &Value, at: &str, extra: &[&str]) -> Check {
    let o = object(v, at)?;
    let mut allowed = vec!["id", "link"];
    allowed.extend_from_slice(extra);
    only(o, at, &allowed)?;
    match (o.get("id"), o.get("link")) {
        (Some(Value::String(_)), None) | (None, Some(Value::String(_))) => {}
        _ => return Err(format!("{at} needs exactly one of id and link (strings)")),
    }
    for k in extra {
        optional_string(o, at, k, 1024)?;
    }
    Ok(())
}

fn check_message(body: &Value) -> Check {
    let o = object(body, "body")?;
    if o.get("messaging_product") != Some(&json!("whatsapp")) {
        return Err("messaging_product must be whatsapp".into());
    }
    if o.contains_key("status") {
        only(o, "body", &["messaging_product", "status", "message_id", "typing_indicator"])?;
        if o.get("status") != Some(&json!("read")) {
            return Err("status must be read".into());
        }
        string(o, "body", "message_id", 1024)?;
        return Ok(());
    }
    let kind = match o.get("type") {
        // Meta's own examples leave `type` out; the object present says it.
        None => ["text", "template", "interactive", "image", "video", "audio", "document", "sticker", "location"]
            .into_iter()
            .find(|k| o.contains_key(*k))
            .unwrap_or("text"),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("type must be a string".into()),
    };
    const KINDS: [&str; 11] = [
        "text",
        "audio",
        "document",
        "image",
        "location",
        "video",
        "sticker",
        "reaction",
        "interactive",
        "template",
        "contacts",
    ];
    if !KINDS.contains(&kind) {
        return Err(format!("type {kind} is not a message type"));
    }
    only(
        o,
        "body",
        &["messaging_product", "recipient_type", "to", "type", "context", "biz_opaque_callback_data", kind],
    )?;
    let to = string(o, "body", "to", 64)?;
    let digits = to.strip_prefix('+').unwrap_or(to);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("to must be a phone number".into());
    }
    if let Some(r) = o.get("recipient_type")
        && r != "individual"
        && r != "group"
    {
        return Err("recipient_type must be individual or group".into());
    }
    let payload = o.get(kind).ok_or_else(|| format!("the {kind} object is required for type {kind}"))?;
    match kind {
        "text" => {
            let t = object(payload, "text")?;
            only(t, "text", &["body", "preview_url"])?;
            if string(t, "text", "body", 4096)?.is_empty() {
                return Err("text.body must not be empty".into());
            }
            if t.get("preview_url").is_some_and(|p| !p.is_boolean()) {
                return Err("text.preview_url must be a boolean".into());
            }
        }
        "image" | "video" => media_object(payload, kind, &["caption"])?,
        "document" => media_object(payload, kind, &["caption", "filename"])?,
        "audio" | "sticker" => media_object(payload, kind, &[])?,
        "location" => {
            let l = object(payload, "location")?;
            only(l, "location", &["latitude", "longitude", "name", "address"])?;
            number(l, "location", "latitude")?;
            number(l, "location", "longitude")?;
            optional_string(l, "location", "name", 1000)?;
            optional_string(l, "location", "address", 1000)?;
        }
        "reaction" => {
            let r = object(payload, "reaction")?;
            only(r, "reaction", &["message_id", "emoji"])?;
            string(r, "reaction", "message_id", 1024)?;
            string(r, "reaction", "emoji", 16)?;
        }
        "template" => check_template(payload)?,
        "interactive" => check_interactive(payload)?,
        _ => {}
    }
    Ok(())
}

fn check_template(v: &Value) -> Check {
    let t = object(v, "template")?;
    only(t, "template", &["name", "language", "components"])?;
    string(t, "template", "name", 512)?;
    let language = object(t.get("language").unwrap_or(&Value::Null), "template.language")?;
    only(language, "template.language", &["code", "policy"])?;
    string(language, "template.language", "code", 64)?;
    let Some(components) = t.get("components") else { return Ok(()) };
    for (i, c) in components.as_array().ok_or("template.components must be an array")?.iter().enumerate() {
        let at = format!("template.components[{i}]");
        let c = object(c, &at)?;
        only(c, &at, &["type", "sub_type", "index", "parameters"])?;
        match c.get("type").and_then(Value::as_str) {
            Some("header" | "body") => {
                if c.contains_key("sub_type") || c.contains_key("index") {
                    return Err(format!("{at}: sub_type and index are for buttons"));
                }
            }
            Some("button") => {
                string(c, &at, "sub_type", 32)?;
                match c.get("index") {
                    Some(Value::String(s)) if s.parse::<u32>().is_ok() => {}
                    Some(Value::Number(n)) if n.is_u64() => {}
                    _ => return Err(format!("{at}.index must be a button position")),
                }
            }
            _ => return Err(format!("{at}.type must be header, body or button")),
        }
        for (j, p) in array(c, &at, "parameters")?.iter().enumerate() {
            check_parameter(p, &format!("{at}.parameters[{j}]"))?;
        }
    }
    Ok(())
}

fn check_parameter(v: &Value, at: &str) -> Check {
    let p = object(v, at)?;
    let kind = p.get("type").and_then(Value::as_str).ok_or_else(|| format!("{at}.type is required"))?;
    match kind {
        "text" => {
            only(p, at, &["type", "text", "parameter_name"])?;
            string(p, at, "text", 32768)?;
        }
        "payload" => {
            only(p, at, &["type", "payload"])?;
            string(p, at, "payload", 1024)?;
        }
        "coupon_code" => {
            only(p, at, &["type", "coupon_code"])?;
            string(p, at, "coupon_code", 15)?;
        }
        "currency" => {
            only(p, at, &["type", "currency", "parameter_name"])?;
            let c = object(p.get("currency").unwrap_or(&Value::Null), &format!("{at}.currency"))?;
            only(c, at, &["fallback_value", "code", "amount_1000"])?;
            string(c, at, "fallback_value", 1024)?;
            string(c, at, "code", 3)?;
            if !c.get("amount_1000").is_some_and(Value::is_i64) {
                return Err(format!("{at}.currency.amount_1000 must be an integer"));
            }
        }
        "date_time" => {
            only(p, at, &["type", "date_time", "parameter_name"])?;
            let d = object(p.get("date_time").unwrap_or(&Value::Null), &format!("{at}.date_time"))?;
            only(
                d,
                at,
                &["fallback_value", "calendar", "year", "month", "day_of_month", "day_of_week", "hour", "minute"],
            )?;
            string(d, at, "fallback_value", 1024)?;
        }
        "image" | "video" => {
            only(p, at, &["type", kind])?;
            media_object(p.get(kind).unwrap_or(&Value::Null), &format!("{at}.{kind}"), &[])?;
        }
        "document" => {
            only(p, at, &["type", kind])?;
            media_object(p.get(kind).unwrap_or(&Value::Null), &format!("{at}.document"), &["filename"])?;
        }
        "location" => {
            only(p, at, &["type", "location"])?;
            let l = object(p.get("location").unwrap_or(&Value::Null), &format!("{at}.location"))?;
            only(l, at, &["latitude", "longitude", "name", "address"])?;
            number(l, at, "latitude")?;
            number(l, at, "longitude")?;
        }
        "action" => {
            only(p, at, &["type", "action"])?;
            let a = object(p.get("action").unwrap_or(&Value::Null), &format!("{at}.action"))?;
            only(a, at, &["flow_token", "flow_action_data", "thumbnail_product_retailer_id"])?;
        }
        other => return Err(format!("{at}.type {other} is not a parameter type")),
    }
    Ok(())
}

fn check_interactive(v: &Value) -> Check {
    let i = object(v, "interactive")?;
    only(i, "interactive", &["type", "header", "body", "footer", "action"])?;
    let kind = i.get("type").and_then(Value::as_str).ok_or("interactive.type is required")?;
    if !matches!(kind, "button" | "list" | "cta_url") {
        // Catalog, product, flow and payment messages: Parley does not send them.
        return Ok(());
    }
    let body = object(i.get("body").unwrap_or(&Value::Null), "interactive.body")?;
    only(body, "interactive.body", &["text"])?;
    string(body, "interactive.body", "text", 1024)?;
    if let Some(footer) = i.get("footer") {
        let f = object(footer, "interactive.footer")?;
        only(f, "interactive.footer", &["text"])?;
        string(f, "interactive.footer", "text", 60)?;
    }
    if let Some(header) = i.get("header") {
        let h = object(header, "interactive.header")?;
        match h.get("type").and_then(Value::as_str) {
            Some("text") => {
                only(h, "interactive.header", &["type", "text"])?;
                string(h, "interactive.header", "text", 60)?;
            }
            Some(m @ ("image" | "video" | "document")) => {
                only(h, "interactive.header", &["type", m])?;
                let extra: &[&str] = if m == "document" { &["filename"] } else { &[] };
                media_object(h.get(m).unwrap_or(&Value::Null), "interactive.header", extra)?;
            }
            _ => return Err("interactive.header.type must be text, image, video or document".into()),
        }
    }
    let action = object(i.get("action").unwrap_or(&Value::Null), "interactive.action")?;
    match kind {
        "button" => {
            only(action, "interactive.action", &["buttons"])?;
            let buttons = array(action, "interactive.action", "buttons")?;
            if !(1..=3).contains(&buttons.len()) {
                return Err("interactive.action.buttons needs 1 to 3 buttons".into());
            }
            for b in buttons {
                let b = object(b, "interactive.action.buttons[]")?;
                only(b, "interactive.action.buttons[]", &["type", "reply"])?;
                if b.get("type") != Some(&json!("reply")) {
                    return Err("interactive.action.buttons[].type must be reply".into());
                }
                let r = object(b.get("reply").unwrap_or(&Value::Null), "interactive.action.buttons[].reply")?;
                only(r, "reply", &["id", "title"])?;
                string(r, "reply", "id", 256)?;
                string(r, "reply", "title", 20)?;
            }
        }
        "list" => {
            only(action, "interactive.action", &["button", "sections"])?;
            string(action, "interactive.action", "button", 20)?;
            let sections = array(action, "interactive.action", "sections")?;
            let rows: usize = sections.iter().filter_map(|s| s["rows"].as_array()).map(Vec::len).sum();
            if !(1..=10).contains(&sections.len()) || !(1..=10).contains(&rows) {
                return Err("interactive.action.sections: 1 to 10 sections, 1 to 10 rows in all".into());
            }
            for s in sections {
                let s = object(s, "section")?;
                only(s, "section", &["title", "rows"])?;
                optional_string(s, "section", "title", 24)?;
                for r in array(s, "section", "rows")? {
                    let r = object(r, "row")?;
                    only(r, "row", &["id", "title", "description"])?;
                    string(r, "row", "id", 200)?;
                    string(r, "row", "title", 24)?;
                    optional_string(r, "row", "description", 72)?;
                }
            }
        }
        "cta_url" => {
            only(action, "interactive.action", &["name", "parameters"])?;
            if action.get("name") != Some(&json!("cta_url")) {
                return Err("interactive.action.name must be cta_url".into());
            }
            let p = object(action.get("parameters").unwrap_or(&Value::Null), "interactive.action.parameters")?;
            only(p, "interactive.action.parameters", &["display_text", "url"])?;
            string(p, "interactive.action.parameters", "display_text", 20)?;
            string(p, "interactive.action.parameters", "url", 2048)?;
        }
        _ => {}
    }
    Ok(())
}
