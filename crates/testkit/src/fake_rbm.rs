//! A fake Google RBM API and OAuth2 token endpoint: a real HTTP server on `127.0.0.1:0` that
//! checks what the `rbm` connector sends the way Google would, and pushes signed Pub/Sub
//! envelopes to Parley's hook URL.
//!
//! - `POST /token`: the JWT-bearer grant. The assertion's RS256 signature is verified with the
//!   test key's public half, and its claims (`iss`, `scope`, `aud` = this URL, `iat`/`exp` at
//!   most an hour apart and current) and header (`kid`); the answer is an access token with
//!   `expires_in` ([`FakeRbm::set_token_lifetime`]).
//! - `POST /v1/phones/{E.164}/agentMessages?messageId=&agentId=`: bearer token, UUID
//!   `messageId`, the agent id, and the body's shape (exactly one of `text`, `fileName`,
//!   `richCard`, `contentInfo`; at most 11 suggestions, 4 per card; a carousel of 2 to 10 cards;
//!   `ttl` as `"<seconds>s"`). A repeated `messageId` gets `409 ALREADY_EXISTS`.
//! - `GET /v1/phones/{E.164}/capabilities?requestId=&agentId=`.
//!
//! Errors are `google.rpc.Status` bodies. Magic numbers (the fictional 555-01xx block):
//!
//! | number | send | capabilities |
//! |---|---|---|
//! | [`magic::UNREACHABLE`] `+12025550180` | `404 NOT_FOUND` | `404 NOT_FOUND` |
//! | [`magic::UNSUPPORTED`] `+12025550181` | `400 INVALID_ARGUMENT` | only `REVOCATION` |
//! | [`magic::RATE_LIMITED`] `+12025550182` | first try of each id: `429 RESOURCE_EXHAUSTED`, `Retry-After: 1` | as normal |
//! | [`magic::UNAVAILABLE`] `+12025550183` | first try of each id: `503 UNAVAILABLE` | as normal |
//! | anything else | `200` | every feature |
//!
//! The key pair under `crates/testkit/keys/` is a throwaway **test key** made for this fake.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The private half of the test key pair (PKCS#8 PEM). A test key: never use it for anything real.
pub const TEST_PRIVATE_KEY: &str = include_str!("../keys/rbm_test_key.pem");
/// The public half, with which the fake verifies JWTs.
pub const TEST_PUBLIC_KEY: &str = include_str!("../keys/rbm_test_key.pub.pem");
pub const CLIENT_EMAIL: &str = "parley-test@parley-rbm-test.iam.gserviceaccount.com";
pub const KEY_ID: &str = "fake-rbm-key-1";
pub const AGENT_ID: &str = "parley-test-agent@rbm.goog";
/// The default webhook client token of [`FakeRbm::credentials_json`].
pub const CLIENT_TOKEN: &str = "FAKERBMCLIENTTOKEN";
pub const SCOPE: &str = "https://www.googleapis.com/auth/rcsbusinessmessaging";

/// Numbers the fake answers in particular ways (see the module docs).
pub mod magic {
    pub const UNREACHABLE: &str = "+12025550180";
    pub const UNSUPPORTED: &str = "+12025550181";
    pub const RATE_LIMITED: &str = "+12025550182";
    pub const UNAVAILABLE: &str = "+12025550183";
}

/// One call to the fake's API (not the token endpoint).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// `agentMessages` or `capabilities`.
    pub kind: String,
    pub phone: String,
    pub query: HashMap<String, String>,
    pub body: Value,
    /// The status the fake answered.
    pub status: u16,
}

struct Inner {
    token_url: String,
    token_lifetime: u64,
    /// token → expiry (unix seconds).
    tokens: HashMap<String, u64>,
    token_requests: u32,
    /// Claims of every assertion that verified.
    assertions: Vec<Value>,
    requests: Vec<RecordedRequest>,
    taken: HashSet<String>,
    first_tries: HashSet<String>,
    next_token: u64,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake RBM; the server stops when this is dropped.
pub struct FakeRbm {
    pub base_url: String,
    pub token_url: String,
    inner: Shared,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRbm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn google_error(code: u16, status: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "status": status}});
    (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response()
}

/// `X-Goog-Signature` for a push whose `message.data` decodes to `data`:
/// base64(HMAC-SHA512(client token, data)).
pub fn sign(client_token: &str, data: &[u8]) -> String {
    match Hmac::<sha2::Sha512>::new_from_slice(client_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(data);
            STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length.
        Err(_) => String::new(),
    }
}

/// A Pub/Sub push envelope carrying `data`, as Google posts it.
pub fn envelope(data: &Value) -> Value {
    let raw = data.to_string();
    json!({
        "message": {
            "attributes": {},
            "data": STANDARD.encode(raw.as_bytes()),
            "messageId": uuid::Uuid::new_v4().simple().to_string(),
            "publishTime": parley_domain::Millis::now().to_timestamp().to_string(),
        },
        "subscription": "projects/rbm-parley-test/subscriptions/rbm-agent-subscription"
    })
}

fn event(phone: &str, kind: &str, message_id: Option<&str>) -> Value {
    let mut e = json!({
        "senderPhoneNumber": phone,
        "eventType": kind,
        "eventId": format!("Mx{}", uuid::Uuid::new_v4().simple()),
        "agentId": AGENT_ID,
        "sendTime": parley_domain::Millis::now().to_timestamp().to_string(),
    });
    if let Some(id) = message_id {
        e["messageId"] = json!(id);
    }
    e
}

/// A `DELIVERED` user event for the agent message `message_id`.
pub fn delivered(phone: &str, message_id: &str) -> Value {
    event(phone, "DELIVERED", Some(message_id))
}

/// A `READ` user event.
pub fn read(phone: &str, message_id: &str) -> Value {
    event(phone, "READ", Some(message_id))
}

/// An `IS_TYPING` user event.
pub fn typing(phone: &str) -> Value {
    event(phone, "IS_TYPING", None)
}

fn user_message(phone: &str, message_id: &str) -> Value {
    json!({
        "senderPhoneNumber": phone,
        "messageId": message_id,
        "sendTime": parley_domain::Millis::now().to_timestamp().to_string(),
        "agentId": AGENT_ID,
    })
}

/// A user's text message.
pub fn user_text(phone: &str, message_id: &str, text: &str) -> Value {
    let mut m = user_message(phone, message_id);
    m["text"] = json!(text);
    m
}

/// A tapped suggested reply.
pub fn suggestion_response(phone: &str, message_id: &str, text: &str, postback_data: &str) -> Value {
    let mut m = user_message(phone, message_id);
    m["suggestionResponse"] = json!({"postbackData": postback_data, "text": text, "type": "REPLY"});
    m
}

impl FakeRbm {
    pub async fn start() -> FakeRbm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake RBM");
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let token_url = format!("{base_url}/token");
        let inner = Arc::new(Mutex::new(Inner {
            token_url: token_url.clone(),
            token_lifetime: 3600,
            tokens: HashMap::new(),
            token_requests: 0,
            assertions: Vec::new(),
            requests: Vec::new(),
            taken: HashSet::new(),
            first_tries: HashSet::new(),
            next_token: 1,
        }));
        let router = Router::new()
            .route("/token", post(token))
            .route("/v1/phones/{phone}/agentMessages", post(agent_message))
            .route("/v1/phones/{phone}/capabilities", get(capabilities))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().expect("client");
        FakeRbm { base_url, token_url, inner, http, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The service-account JSON key of the test key pair.
    pub fn service_account_json(&self) -> Value {
        json!({
            "type": "service_account",
            "project_id": "parley-rbm-test",
            "private_key_id": KEY_ID,
            "private_key": TEST_PRIVATE_KEY,
            "client_email": CLIENT_EMAIL,
            "client_id": "100000000000000000000",
            "token_uri": self.token_url,
        })
    }

    /// Channel-account credentials for this fake, with `client_token` for the webhook.
    pub fn credentials_json(&self, client_token: &str) -> Value {
        json!({"service_account": self.service_account_json(), "client_token": client_token})
    }

    /// Channel-account config pointing the connector at this fake.
    pub fn config_json(&self) -> Value {
        json!({"base_url": self.base_url, "token_url": self.token_url, "agent_id": AGENT_ID})
    }

    /// Tokens issued from now on say they live this long.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.lock().token_lifetime = seconds;
    }

    /// Make every issued token invalid (the next API call gets 401).
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// How many token requests arrived (valid or not).
    pub fn token_requests(&self) -> u32 {
        self.lock().token_requests
    }

    /// The claims of every assertion that verified.
    pub fn assertions(&self) -> Vec<Value> {
        self.lock().assertions.clone()
    }

    /// Every API request, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The `agentMessages` requests the fake answered 200 to.
    pub fn accepted_messages(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().filter(|r| r.kind == "agentMessages" && r.status == 200).cloned().collect()
    }

    /// Post `data` to `hook_url` as a signed push, as Google does.
    pub async fn push(&self, hook_url: &str, client_token: &str, data: &Value) -> reqwest::Response {
        let raw = data.to_string();
        let body = envelope(data);
        self.http
            .post(hook_url)
            .header("content-type", "application/json")
            .header("x-goog-signature", sign(client_token, raw.as_bytes()))
            .body(body.to_string())
            .send()
            .await
            .expect("push to the hook")
    }

    /// Post `data` with a signature that does not match.
    pub async fn push_badly_signed(&self, hook_url: &str, data: &Value) -> reqwest::Response {
        let raw = data.to_string();
        self.http
            .post(hook_url)
            .header("content-type", "application/json")
            .header("x-goog-signature", sign("not-the-client-token", raw.as_bytes()))
            .body(envelope(data).to_string())
            .send()
            .await
            .expect("push to the hook")
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn token_error(description: &str) -> Response {
    let body = json!({"error": "invalid_grant", "error_description": description});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Check an assertion; its claims, or why not.
fn verify_assertion(assertion: &str, token_url: &str) -> Result<Value, String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else { return Err("not a JWT".into()) };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| "not base64url".to_string());
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|_| "header is not JSON")?;
    if header["alg"] != "RS256" || header["typ"] != "JWT" || header["kid"] != KEY_ID {
        return Err(format!("unexpected header {header}"));
    }
    let public = rsa::RsaPublicKey::from_public_key_pem(TEST_PUBLIC_KEY).map_err(|_| "bad test public key")?;
    let verifier = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(public);
    let sig = rsa::pkcs1v15::Signature::try_from(decode(signature)?.as_slice()).map_err(|_| "bad signature bytes")?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    verifier.verify(signed.as_bytes(), &sig).map_err(|_| "Invalid JWT Signature.".to_string())?;
    let claims: Value = serde_json::from_slice(&decode(claims)?).map_err(|_| "claims are not JSON")?;
    let now = now_secs();
    let (iat, exp) = (claims["iat"].as_u64().unwrap_or(0), claims["exp"].as_u64().unwrap_or(0));
    if claims["iss"] != CLIENT_EMAIL {
        return Err("Invalid issuer".into());
    }
    if claims["scope"] != SCOPE {
        return Err("Invalid scope".into());
    }
    if claims["aud"] != token_url {
        return Err("Invalid audience".into());
    }
    if exp <= iat || exp - iat > 3600 || exp <= now || iat > now + 300 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe".into());
    }
    Ok(claims)
}

async fn token(State(inner): State<Shared>, body: bytes::Bytes) -> Response {
    let fields = form(&body);
    let token_url = {
        let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
        s.token_requests += 1;
        s.token_url.clone()
    };
    if fields.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        let body = json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let Some(assertion) = fields.get("assertion") else { return token_error("missing assertion") };
    let claims = match verify_assertion(assertion, &token_url) {
        Ok(c) => c,
        Err(why) => return token_error(&why),
    };
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = format!("ya29.fake-{}-{}", s.next_token, uuid::Uuid::new_v4().simple());
    s.next_token += 1;
    let lifetime = s.token_lifetime;
    s.tokens.insert(token.clone(), now_secs() + lifetime);
    s.assertions.push(claims);
    axum::Json(json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"})).into_response()
}

fn authorised(inner: &Inner, headers: &HeaderMap) -> bool {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    token.and_then(|t| inner.tokens.get(t)).is_some_and(|exp| *exp > now_secs())
}

/// The reason `body` is not an AgentMessage Google would take, if any.
fn check_agent_message(body: &Value) -> Result<(), String> {
    let Some(content) = body.get("contentMessage").and_then(Value::as_object) else {
        return Err("contentMessage is required".into());
    };
    let kinds: Vec<&str> =
        ["text", "fileName", "richCard", "contentInfo"].into_iter().filter(|k| content.contains_key(*k)).collect();
    if kinds.len() != 1 {
        return Err(format!(
            "contentMessage needs exactly one of text, fileName, richCard, contentInfo; has {kinds:?}"
        ));
    }
    for key in content.keys() {
        if !["text", "fileName", "richCard", "contentInfo", "suggestions"].contains(&key.as_str()) {
            return Err(format!("Unknown name \"{key}\" at 'agent_message.content_message'"));
        }
    }
    if let Some(text) = content.get("text") {
        let n = text.as_str().map(|t| t.chars().count()).ok_or("text must be a string")?;
        if n == 0 || n > 3072 {
            return Err("text must be 1 to 3072 characters".into());
        }
    }
    check_suggestions(content.get("suggestions"), 11)?;
    if let Some(card) = content.get("richCard") {
        match (card.get("standaloneCard"), card.get("carouselCard")) {
            (Some(s), None) => {
                if !matches!(s["cardOrientation"].as_str(), Some("VERTICAL" | "HORIZONTAL")) {
                    return Err("cardOrientation must be VERTICAL or HORIZONTAL".into());
                }
                check_card(&s["cardContent"])?;
            }
            (None, Some(c)) => {
                if !matches!(c["cardWidth"].as_str(), Some("SMALL" | "MEDIUM")) {
                    return Err("cardWidth must be SMALL or MEDIUM".into());
                }
                let cards = c["cardContents"].as_array().ok_or("cardContents is required")?;
                if !(2..=10).contains(&cards.len()) {
                    return Err("a carousel has 2 to 10 cards".into());
                }
                cards.iter().try_for_each(check_card)?;
            }
            _ => return Err("richCard needs exactly one of standaloneCard, carouselCard".into()),
        }
    }
    if let Some(info) = content.get("contentInfo")
        && info["fileUrl"].as_str().is_none_or(|u| !u.starts_with("https://"))
    {
        return Err("contentInfo.fileUrl must be an https URL".into());
    }
    if let Some(ttl) = body.get("ttl") {
        let ok = ttl
            .as_str()
            .and_then(|t| t.strip_suffix('s'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        if !ok {
            return Err("ttl must be a duration such as \"3600s\"".into());
        }
    }
    Ok(())
}

fn check_card(card: &Value) -> Result<(), String> {
    if !card.is_object() {
        return Err("cardContent is required".into());
    }
    if card.get("title").is_none() && card.get("description").is_none() && card.get("media").is_none() {
        return Err("a card needs a title, a description or media".into());
    }
    if let Some(media) = card.get("media") {
        if !matches!(media["height"].as_str(), Some("SHORT" | "MEDIUM" | "TALL")) {
            return Err("media.height must be SHORT, MEDIUM or TALL".into());
        }
        if media.pointer("/contentInfo/fileUrl").and_then(Value::as_str).is_none() && media.get("fileName").is_none() {
            return Err("media needs contentInfo.fileUrl or fileName".into());
        }
    }
    check_suggestions(card.get("suggestions"), 4)
}

fn check_suggestions(suggestions: Option<&Value>, max: usize) -> Result<(), String> {
    let Some(list) = suggestions else { return Ok(()) };
    let list = list.as_array().ok_or("suggestions must be a list")?;
    if list.len() > max {
        return Err(format!("at most {max} suggestions; got {}", list.len()));
    }
    for s in list {
        match (s.get("reply"), s.get("action")) {
            (Some(r), None) => {
                if r["text"].as_str().is_none() || r["postbackData"].as_str().is_none() {
                    return Err("a reply needs text and postbackData".into());
                }
            }
            (None, Some(a)) => {
                let actions = [
                    "dialAction",
                    "viewLocationAction",
                    "createCalendarEventAction",
                    "openUrlAction",
                    "shareLocationAction",
                ];
                let n = actions.iter().filter(|k| a.get(**k).is_some()).count();
                if n != 1 || a["text"].as_str().is_none() || a["postbackData"].as_str().is_none() {
                    return Err("an action needs text, postbackData and exactly one action".into());
                }
            }
            _ => return Err("a suggestion is a reply or an action".into()),
        }
    }
    Ok(())
}

fn common_checks(
    inner: &Inner,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    id_param: &str,
) -> Option<Response> {
    if !authorised(inner, headers) {
        return Some(google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        ));
    }
    if query.get("agentId").map(String::as_str) != Some(AGENT_ID) {
        return Some(google_error(400, "INVALID_ARGUMENT", "agentId is missing or unknown"));
    }
    if query.get(id_param).is_none_or(|id| uuid::Uuid::try_parse(id).is_err() || id.len() != 36) {
        return Some(google_error(400, "INVALID_ARGUMENT", &format!("{id_param} must be a UUID")));
    }
    None
}

fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

async fn agent_message(
    State(inner): State<Shared>,
    Path(phone): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let message_id = query.get("messageId").cloned().unwrap_or_default();
    let response = if let Some(refusal) = common_checks(&s, &headers, &query, "messageId") {
        refusal
    } else if !is_e164(&phone) {
        google_error(400, "INVALID_ARGUMENT", "the phone number is not E.164")
    } else if let Err(why) = check_agent_message(&body) {
        google_error(400, "INVALID_ARGUMENT", &why)
    } else if s.taken.contains(&message_id) {
        google_error(409, "ALREADY_EXISTS", "Requested entity already exists")
    } else if phone == magic::UNREACHABLE {
        google_error(404, "NOT_FOUND", "Requested entity was not found.")
    } else if phone == magic::UNSUPPORTED {
        google_error(400, "INVALID_ARGUMENT", "The user's device does not support this message.")
    } else if phone == magic::RATE_LIMITED && s.first_tries.insert(message_id.clone()) {
        let mut r = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.");
        r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        r
    } else if phone == magic::UNAVAILABLE && s.first_tries.insert(message_id.clone()) {
        google_error(503, "UNAVAILABLE", "The service is currently unavailable.")
    } else {
        s.taken.insert(message_id.clone());
        let answer = json!({
            "name": format!("phones/{phone}/agentMessages/{message_id}"),
            "sendTime": parley_domain::Millis::now().to_timestamp().to_string(),
            "contentMessage": body["contentMessage"],
        });
        axum::Json(answer).into_response()
    };
    s.requests.push(RecordedRequest {
        method: "POST".into(),
        kind: "agentMessages".into(),
        phone,
        query,
        body,
        status: response.status().as_u16(),
    });
    response
}

async fn capabilities(
    State(inner): State<Shared>,
    Path(phone): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let response = if let Some(refusal) = common_checks(&s, &headers, &query, "requestId") {
        refusal
    } else if phone == magic::UNREACHABLE {
        google_error(404, "NOT_FOUND", "Requested entity was not found.")
    } else if phone == magic::UNSUPPORTED {
        axum::Json(json!({"features": ["REVOCATION"]})).into_response()
    } else {
        axum::Json(json!({"features": [
            "REVOCATION", "RICHCARD_STANDALONE", "RICHCARD_CAROUSEL", "ACTION_CREATE_CALENDAR_EVENT",
            "ACTION_DIAL", "ACTION_OPEN_URL", "ACTION_SHARE_LOCATION", "ACTION_VIEW_LOCATION"
        ]}))
        .into_response()
    };
    s.requests.push(RecordedRequest {
        method: "GET".into(),
        kind: "capabilities".into(),
        phone,
        query,
        body: Value::Null,
        status: response.status().as_u16(),
    });
    response
}
