//! A webhook receiver for tests: a real HTTP server on a loopback address that records every
//! request and answers from a script, and checks Standard Webhooks signatures with its own
//! HMAC code (not Parley's), as a customer's receiver would.
//!
//! It listens on 127.0.0.2, not 127.0.0.1, so that tests can allow exactly that address in the
//! SSRF guard while 127.0.0.1 stays refused.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The address receivers listen on; allow it with [`RECEIVER_CIDR`].
pub const RECEIVER_IP: &str = "127.0.0.2";
pub const RECEIVER_CIDR: &str = "127.0.0.2/32";

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// What it answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// Whether one of the header's signatures is the HMAC of this request under `secret`
    /// (`whsec_…`), computed here independently of Parley.
    pub fn signed_with(&self, secret: &str) -> bool {
        verify_independently(secret, &self.webhook_id, &self.timestamp, &self.body, &self.signature)
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with a `Retry-After` of this many seconds.
    RetryAfter(u16, u64),
    /// 200 after this long.
    Slow(Duration),
    /// 200 with a body of this many bytes, streamed (never held in memory at once).
    Huge(usize),
}

struct State {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default_reply: Mutex<Reply>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Start a receiver that answers 204 unless scripted otherwise.
    pub async fn start() -> Receiver {
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default_reply: Mutex::new(Reply::Status(204)),
        });
        let listener = tokio::net::TcpListener::bind((RECEIVER_IP, 0)).await.expect("bind 127.0.0.2");
        let addr = listener.local_addr().expect("address");
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |headers: HeaderMap, body: bytes::Bytes| {
                let state = state.clone();
                async move { answer(&state, &headers, body).await }
            }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, _server: server }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer the next requests with these replies, in order, then with the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Answer every request not scripted with `reply`.
    pub fn set_default(&self, reply: Reply) {
        *self.state.default_reply.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Wait until `done` holds for the requests received so far.
    pub async fn wait_until(&self, within: Duration, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("the receiver did not see {what} within {within:?}; it got {} requests", received.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(state: &State, headers: &HeaderMap, body: bytes::Bytes) -> Response {
    let reply = state.script.lock().unwrap().pop_front().unwrap_or_else(|| state.default_reply.lock().unwrap().clone());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let status = match &reply {
        Reply::Status(s) | Reply::RetryAfter(s, _) => *s,
        Reply::Slow(_) | Reply::Huge(_) => 200,
    };
    state.received.lock().unwrap().push(Received {
        webhook_id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        status,
    });
    let mut response = match reply {
        Reply::Status(_) | Reply::RetryAfter(..) => Response::new(Body::from(format!("answered {status}"))),
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            Response::new(Body::from("slow but fine"))
        }
        Reply::Huge(bytes) => {
            const CHUNK: usize = 64 * 1024;
            let chunks = bytes.div_ceil(CHUNK);
            let stream = futures::stream::iter(
                (0..chunks).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'x'; CHUNK]))),
            );
            Response::new(Body::from_stream(stream))
        }
    };
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    if let Reply::RetryAfter(_, secs) = reply {
        response.headers_mut().insert("retry-after", secs.to_string().parse().expect("header"));
    }
    response
}

/// Standard Webhooks verification written from the spec: HMAC-SHA256 of `id.timestamp.body`
/// keyed with the base64 part of the secret; the header holds space-separated `v1,<base64>`.
pub fn verify_independently(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(key) = secret.strip_prefix("whsec_") else { return false };
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key) else { return false };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|sig| sig == expected)
}
