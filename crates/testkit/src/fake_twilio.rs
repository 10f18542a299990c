//! A fake Twilio for tests: a real HTTP server on `127.0.0.1:0` that speaks the 2010-04-01
//! Messages API as far as Parley uses it, checks requests the way Twilio does, records every one,
//! and then calls the message's `StatusCallback` with signed form posts, as Twilio would.
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`: HTTP Basic auth with the account SID
//!   and auth token, or an API key added with [`FakeTwilio::add_api_key`] (otherwise 401, code
//!   20003); the account in the path must be the fake's (404, 20404); a form body (anything else is
//!   read as no parameters). Then, like Twilio: `To` is required (21604) and must be E.164,
//!   optionally `whatsapp:`-prefixed (21211); `From` (21212 if not E.164) or a
//!   `MessagingServiceSid` (`MG` + 32 hex, else 404 20404) is required (21603); `Body` or
//!   `MediaUrl` or `ContentSid` is required (21602); `Body` is at most 1600 characters (21617);
//!   each `MediaUrl` is an http(s) URL (21620); `StatusCallback` is an http(s) URL (21609);
//!   `ValidityPeriod` is 1..=36000 and `Attempt` a positive integer (the fake answers 20001 for
//!   those). Unknown parameters are ignored, as Twilio does, but recorded.
//!   A taken message is answered `201` with a Twilio-shaped Message (`sid` `SM…`, or `MM…` with
//!   media; `status: queued`), and its status callbacks follow, each `callback_delay` apart,
//!   signed with `X-Twilio-Signature` over the `StatusCallback` URL as given.
//! - `GET /2010-04-01/Accounts/{AccountSid}.json`: the account (`status: active`), same auth.
//!
//! Magic recipients (`To`, with or without `whatsapp:`), in the 555-01xx block that
//! libphonenumber accepts (so Parley's API takes them) and that the sandbox does not use:
//!
//! | `To`           | answer                                                              |
//! |----------------|---------------------------------------------------------------------|
//! | `+12025550161` | 400, code 21211 (invalid `To`)                                      |
//! | `+12025550162` | 400, code 21610 (unsubscribed recipient)                            |
//! | `+12025550163` | 400, code 21614 (not a mobile number)                               |
//! | `+12025550164` | first request 429, code 20429, `Retry-After: 1`; then taken          |
//! | `+12025550165` | first request 500, code 20500; then taken                           |
//! | `+12025550166` | taken; callbacks `queued`, `sent`, `undelivered` (ErrorCode 30003)  |
//! | `+12025550167` | taken; callbacks `queued`, `failed` (ErrorCode 30008)               |
//! | `+12025550168` | taken; no callbacks                                                 |
//! | Twilio's test numbers `+15005550001`/`2`/`3`/`4`/`9` | 400 with 21211/21612/21408/21610/21614 |
//! | anything else  | taken; callbacks `queued`, `sent`, `delivered`                      |
//!
//! Signatures are computed here with this module's own HMAC-SHA1 code, not the connector's.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ACCOUNT_SID: &str = "ACfa4e0000000000000000000000000001";
pub const AUTH_TOKEN: &str = "fake-twilio-auth-token-0001";
/// The number messages without a `From` are sent from (the messaging service's pool).
pub const POOL_NUMBER: &str = "+15017122661";

/// Magic recipients (see the module docs).
pub mod magic {
    pub const INVALID_TO: &str = "+12025550161";
    pub const UNSUBSCRIBED: &str = "+12025550162";
    pub const NOT_MOBILE: &str = "+12025550163";
    pub const RATE_LIMITED_ONCE: &str = "+12025550164";
    pub const SERVER_ERROR_ONCE: &str = "+12025550165";
    pub const UNDELIVERED: &str = "+12025550166";
    pub const FAILED: &str = "+12025550167";
    pub const NO_CALLBACKS: &str = "+12025550168";
}

/// One API request the fake got.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    /// The Basic auth user name, if any.
    pub user: Option<String>,
    pub content_type: Option<String>,
    /// The form, in order.
    pub form: Vec<(String, String)>,
    /// What the fake answered.
    pub status: u16,
    pub response: Value,
}

impl ApiRequest {
    /// The first value of a form parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a form parameter.
    pub fn params(&self, name: &str) -> Vec<&str> {
        self.form.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// One status callback the fake made.
#[derive(Clone, Debug)]
pub struct Callback {
    pub url: String,
    pub message_sid: String,
    pub status: String,
    pub form: Vec<(String, String)>,
    /// The HTTP status it got, or `None` if the request failed.
    pub answered: Option<u16>,
}

struct State {
    account_sid: String,
    auth_token: String,
    api_keys: Mutex<Vec<(String, String)>>,
    requests: Mutex<Vec<ApiRequest>>,
    callbacks: Mutex<Vec<Callback>>,
    seen: Mutex<HashMap<String, u32>>,
    callback_delay: Mutex<Duration>,
    http: reqwest::Client,
}

pub struct FakeTwilio {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:{port}`: the connector's `base_url`.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    state: Arc<State>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeTwilio {
    /// A fake for [`ACCOUNT_SID`] with [`AUTH_TOKEN`].
    pub async fn start() -> FakeTwilio {
        Self::start_for(ACCOUNT_SID, AUTH_TOKEN).await
    }

    pub async fn start_for(account_sid: &str, auth_token: &str) -> FakeTwilio {
        let state = Arc::new(State {
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            api_keys: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            callbacks: Mutex::new(Vec::new()),
            seen: Mutex::new(HashMap::new()),
            callback_delay: Mutex::new(Duration::from_millis(20)),
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
        FakeTwilio {
            addr,
            base_url: format!("http://{addr}"),
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            state,
            _server: server,
        }
    }

    /// Accept `sid:secret` as API credentials too.
    pub fn add_api_key(&self, sid: &str, secret: &str) {
        self.state.api_keys.lock().expect("lock").push((sid.to_string(), secret.to_string()));
    }

    /// Time between a message's acceptance and each of its status callbacks (20 ms by default).
    pub fn set_callback_delay(&self, delay: Duration) {
        *self.state.callback_delay.lock().expect("lock") = delay;
    }

    /// A channel account config for this fake, sending from `from`.
    pub fn config(&self, from: &str) -> Value {
        json!({"account_sid": self.account_sid, "from": from, "base_url": self.base_url})
    }

    /// The channel account credentials for this fake.
    pub fn credentials(&self) -> Value {
        json!({"auth_token": self.auth_token})
    }

    /// Every API request so far.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// The requests that created a message for `to` (with or without a `whatsapp:` prefix).
    pub fn requests_to(&self, to: &str) -> Vec<ApiRequest> {
        self.requests().into_iter().filter(|r| r.param("To").is_some_and(|t| bare(t) == bare(to))).collect()
    }

    /// Every status callback made so far.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.state.callbacks.lock().expect("lock").clone()
    }

    /// Wait until `count` callbacks have been made (or panic after `within`).
    pub async fn wait_for_callbacks(&self, count: usize, within: Duration) -> Vec<Callback> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let callbacks = self.callbacks();
            if callbacks.len() >= count {
                return callbacks;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{} of {count} status callbacks within {within:?}: {callbacks:#?}", callbacks.len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Post a signed inbound SMS webhook to `url`, as Twilio does when `from` texts `to`; with
    /// `media`, `(url, content type)` pairs. Returns the message sid and the answer.
    pub async fn send_inbound_sms(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
        media: &[(&str, &str)],
    ) -> (String, reqwest::Response) {
        let (sid, params) = inbound_sms_params(&self.account_sid, from, to, body, media);
        let response = post_signed(&self.state.http, url, &self.auth_token, &params).await;
        (sid, response)
    }
}

/// The parameters of Twilio's incoming-message webhook; returns the new message sid too.
pub fn inbound_sms_params(
    account_sid: &str,
    from: &str,
    to: &str,
    body: &str,
    media: &[(&str, &str)],
) -> (String, Vec<(String, String)>) {
    let sid = format!("{}{}", if media.is_empty() { "SM" } else { "MM" }, uuid::Uuid::new_v4().simple());
    let mut params: Vec<(String, String)> = [
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", sid.as_str()),
        ("NumMedia", &media.len().to_string()),
        ("ToCity", ""),
        ("FromZip", ""),
        ("SmsSid", sid.as_str()),
        ("FromState", ""),
        ("SmsStatus", "received"),
        ("FromCity", ""),
        ("Body", body),
        ("FromCountry", "US"),
        ("To", to),
        ("ToZip", ""),
        ("NumSegments", "1"),
        ("MessageSid", sid.as_str()),
        ("AccountSid", account_sid),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (n, (url, content_type)) in media.iter().enumerate() {
        params.push((format!("MediaContentType{n}"), content_type.to_string()));
        params.push((format!("MediaUrl{n}"), url.to_string()));
    }
    (sid, params)
}

/// `X-Twilio-Signature` for a form post of `params` to `url` (sorted by name, then value;
/// repeated pairs once), computed independently of the connector.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (k, v) in params {
        sorted.entry(k).or_default().insert(v);
    }
    let mut data = url.to_string();
    for (k, values) in sorted {
        for v in values {
            data.push_str(k);
            data.push_str(v);
        }
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `application/x-www-form-urlencoded`, in order.
pub fn encode_form(params: &[(String, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Post `params` to `url` as Twilio does, signed with `auth_token`.
pub async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    auth_token: &str,
    params: &[(String, String)],
) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sign(auth_token, url, params))
        .header("user-agent", "TwilioProxy/1.1")
        .header("i-twilio-idempotency-token", uuid::Uuid::new_v4().to_string())
        .body(encode_form(params))
        .send()
        .await
        .expect("POST a Twilio callback")
}

fn bare(address: &str) -> &str {
    address.strip_prefix("whatsapp:").unwrap_or(address)
}

fn is_e164(value: &str) -> bool {
    let Some(digits) = bare(value).strip_prefix('+') else { return false };
    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

fn is_http_url(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

fn error(status: u16, code: u32, message: String) -> (u16, Value) {
    (
        status,
        json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}),
    )
}

fn rfc2822_now() -> String {
    jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn basic_user_password(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

async fn handle(state: Arc<State>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let form: Vec<(String, String)> =
        if content_type.as_deref().is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
            url::form_urlencoded::parse(&body).into_owned().collect()
        } else {
            Vec::new()
        };
    let credentials = basic_user_password(&headers);
    let (status, response, retry_after, plan) = answer(&state, &method, &path, credentials.as_ref(), &form);
    state.requests.lock().expect("lock").push(ApiRequest {
        method: method.to_string(),
        path,
        user: credentials.map(|(u, _)| u),
        content_type,
        form: form.clone(),
        status,
        response: response.clone(),
    });
    if let Some(plan) = plan {
        tokio::spawn(run_callbacks(state.clone(), plan));
    }
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=utf-8")
        .header("twilio-request-id", format!("RQ{}", uuid::Uuid::new_v4().simple()));
    if status == 401 {
        builder = builder.header("www-authenticate", "Basic realm=\"Twilio API\"");
    }
    if let Some(seconds) = retry_after {
        builder = builder.header("retry-after", seconds.to_string());
    }
    builder.body(Body::from(response.to_string())).expect("response")
}

/// The status callbacks one message will get.
struct Plan {
    url: String,
    sid: String,
    params: Vec<(String, String)>,
    statuses: Vec<(&'static str, Option<u32>)>,
}

type Answer = (u16, Value, Option<u64>, Option<Plan>);

fn answer(
    state: &State,
    method: &Method,
    path: &str,
    credentials: Option<&(String, String)>,
    form: &[(String, String)],
) -> Answer {
    let plain = |(status, body): (u16, Value)| (status, body, None, None);
    let authorised = credentials.is_some_and(|(user, password)| {
        (*user == state.account_sid && *password == state.auth_token)
            || state.api_keys.lock().expect("lock").iter().any(|(s, p)| s == user && p == password)
    });
    let Some(rest) = path.strip_prefix("/2010-04-01/Accounts/") else {
        return plain(error(404, 20404, format!("The requested resource {path} was not found")));
    };
    if !authorised {
        return plain(error(401, 20003, "Authenticate".into()));
    }
    let (account, tail) = match rest.split_once('/') {
        Some((account, tail)) => (account, Some(tail)),
        None => (rest.strip_suffix(".json").unwrap_or(rest), None),
    };
    if account != state.account_sid {
        return plain(error(404, 20404, format!("The requested resource {path} was not found")));
    }
    match (method.as_str(), tail) {
        ("GET", None) => plain((
            200,
            json!({
                "sid": state.account_sid,
                "friendly_name": "Fake Twilio account",
                "status": "active",
                "type": "Full",
                "owner_account_sid": state.account_sid,
                "date_created": rfc2822_now(),
                "date_updated": rfc2822_now(),
                "uri": format!("/2010-04-01/Accounts/{}.json", state.account_sid),
            }),
        )),
        ("POST", Some("Messages.json")) => create_message(state, form),
        _ => plain(error(404, 20404, format!("The requested resource {path} was not found"))),
    }
}

fn create_message(state: &State, form: &[(String, String)]) -> Answer {
    let plain = |(status, body): (u16, Value)| (status, body, None, None);
    let param = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let Some(to) = param("To").filter(|t| !t.is_empty()) else {
        return plain(error(400, 21604, "A 'To' phone number is required.".into()));
    };
    if !is_e164(to) {
        return plain(error(400, 21211, format!("The 'To' number {to} is not a valid phone number.")));
    }
    let from = param("From").filter(|f| !f.is_empty());
    let service = param("MessagingServiceSid").filter(|s| !s.is_empty());
    if from.is_none() && service.is_none() {
        return plain(error(400, 21603, "A 'From' phone number is required.".into()));
    }
    if let Some(from) = from
        && !is_e164(from)
    {
        return plain(error(
            400,
            21212,
            format!("The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."),
        ));
    }
    if let Some(service) = service
        && !(service.len() == 34 && service.starts_with("MG") && service[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return plain(error(404, 20404, format!("The requested resource /Services/{service} was not found")));
    }
    let body = param("Body").unwrap_or_default();
    let media: Vec<&str> = form.iter().filter(|(n, _)| n == "MediaUrl").map(|(_, v)| v.as_str()).collect();
    if body.is_empty() && media.is_empty() && param("ContentSid").is_none() {
        return plain(error(400, 21602, "Message body is required.".into()));
    }
    if body.chars().count() > 1600 {
        return plain(error(400, 21617, "The concatenated message body exceeds the 1600 character limit.".into()));
    }
    if media.len() > 10 || media.iter().any(|m| !is_http_url(m)) {
        return plain(error(400, 21620, "Invalid media URL(s).".into()));
    }
    let callback = param("StatusCallback");
    if let Some(url) = callback
        && !is_http_url(url)
    {
        return plain(error(400, 21609, format!("Invalid StatusCallback URL: {url}")));
    }
    if let Some(v) = param("ValidityPeriod")
        && !v.parse::<u32>().is_ok_and(|v| (1..=36_000).contains(&v))
    {
        return plain(error(400, 20001, format!("ValidityPeriod must be an integer from 1 to 36000, not {v}")));
    }
    if let Some(v) = param("Attempt")
        && !v.parse::<u32>().is_ok_and(|v| v >= 1)
    {
        return plain(error(400, 20001, format!("Attempt must be a positive integer, not {v}")));
    }
    let number = bare(to);
    let seen = {
        let mut seen = state.seen.lock().expect("lock");
        let n = seen.entry(number.to_string()).or_insert(0);
        *n += 1;
        *n
    };
    match number {
        magic::INVALID_TO | "+15005550001" => {
            return plain(error(400, 21211, format!("The 'To' number {to} is not a valid phone number.")));
        }
        "+15005550002" => {
            return plain(error(
                400,
                21612,
                format!(
                    "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number via SMS."
                ),
            ));
        }
        "+15005550003" => {
            return plain(error(
                400,
                21408,
                format!(
                    "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."
                ),
            ));
        }
        magic::UNSUBSCRIBED | "+15005550004" => {
            return plain(error(400, 21610, "Attempt to send to unsubscribed recipient".into()));
        }
        magic::NOT_MOBILE | "+15005550009" => {
            return plain(error(400, 21614, format!("'To' number {to} is not a valid mobile number")));
        }
        magic::RATE_LIMITED_ONCE if seen == 1 => {
            let (status, body) = error(429, 20429, "Too Many Requests".into());
            return (status, body, Some(1), None);
        }
        magic::SERVER_ERROR_ONCE if seen == 1 => {
            return plain(error(500, 20500, "Internal Server Error".into()));
        }
        _ => {}
    }
    let sid = format!("{}{}", if media.is_empty() { "SM" } else { "MM" }, uuid::Uuid::new_v4().simple());
    let from_used = from.map(str::to_string).unwrap_or_else(|| {
        if to.starts_with("whatsapp:") { format!("whatsapp:{POOL_NUMBER}") } else { POOL_NUMBER.to_string() }
    });
    let now = rfc2822_now();
    let message = json!({
        "account_sid": state.account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from_used,
        "messaging_service_sid": service,
        "num_media": media.len().to_string(),
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": format!("/2010-04-01/Accounts/{}/Messages/{sid}/Media.json", state.account_sid)},
        "to": to,
        "uri": format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", state.account_sid),
    });
    let statuses: Vec<(&'static str, Option<u32>)> = match number {
        magic::UNDELIVERED => vec![("queued", None), ("sent", None), ("undelivered", Some(30003))],
        magic::FAILED => vec![("queued", None), ("failed", Some(30008))],
        magic::NO_CALLBACKS => Vec::new(),
        _ => vec![("queued", None), ("sent", None), ("delivered", None)],
    };
    let plan = callback.filter(|_| !statuses.is_empty()).map(|url| {
        let mut params = vec![
            ("AccountSid".to_string(), state.account_sid.clone()),
            ("ApiVersion".to_string(), "2010-04-01".to_string()),
            ("From".to_string(), from_used.clone()),
            ("To".to_string(), to.to_string()),
            ("MessageSid".to_string(), sid.clone()),
            ("SmsSid".to_string(), sid.clone()),
        ];
        if let Some(service) = service {
            params.push(("MessagingServiceSid".to_string(), service.to_string()));
        }
        Plan { url: url.to_string(), sid: sid.clone(), params, statuses }
    });
    (201, message, None, plan)
}

async fn run_callbacks(state: Arc<State>, plan: Plan) {
    for (status, error_code) in plan.statuses {
        let delay = *state.callback_delay.lock().expect("lock");
        tokio::time::sleep(delay).await;
        let mut form = plan.params.clone();
        form.push(("SmsStatus".to_string(), status.to_string()));
        form.push(("MessageStatus".to_string(), status.to_string()));
        if let Some(code) = error_code {
            form.push(("ErrorCode".to_string(), code.to_string()));
        }
        if matches!(status, "delivered" | "undelivered") {
            form.push(("RawDlrDoneDate".to_string(), jiff::Timestamp::now().strftime("%y%m%d%H%M").to_string()));
        }
        let answered = state
            .http
            .post(&plan.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sign(&state.auth_token, &plan.url, &form))
            .header("user-agent", "TwilioProxy/1.1")
            .body(encode_form(&form))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        state.callbacks.lock().expect("lock").push(Callback {
            url: plan.url.clone(),
            message_sid: plan.sid.clone(),
            status: status.to_string(),
            form,
            answered,
        });
    }
}
