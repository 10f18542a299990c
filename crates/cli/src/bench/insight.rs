//! Who listens while the bench sends: local webhook receivers (a registered endpoint each) and
//! live-stream subscribers (`GET /v1/stream`), and whether every event reached every one of them.
//!
//! A receiver is a small HTTP/1.1 server on 127.0.0.2 (a loopback address the spawned server is
//! told to allow: it refuses loopback endpoints otherwise) that answers 204 at once and keeps the
//! distinct `webhook-id`s it saw. A subscriber is one keep-alive connection reading the
//! Server-Sent Events as they come and counting their `id:` lines.

use super::cpu::round1;
use super::load::Endpoint;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Events of one SMS to the bench's sandbox: accepted, queued, sending, sent, delivered.
pub const EVENTS_PER_MESSAGE: u64 = 5;
/// The address the receivers listen on.
const RECEIVER_IP: [u8; 4] = [127, 0, 0, 2];
/// What the spawned server gets as `webhooks.allow_networks` (a JSON array, read by figment).
pub const ALLOW_NETWORKS: &str = r#"["127.0.0.2/32"]"#;
/// After the messages are delivered, how long to wait for the receivers and subscribers.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Without an expected count (a server at --url), stop waiting once nothing new came this long.
const QUIET: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// For the answer to a call of the API, and for a subscriber's response headers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// `evt_` and 32 hex digits → the 128 bits (kept instead of the 36-byte string).
pub fn parse_event_id(raw: &[u8]) -> Option<u128> {
    let hex = raw.strip_prefix(b"evt_")?;
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u128::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Counts the `id:` lines of an SSE stream fed in arbitrary pieces (a line may be split anywhere
/// between two chunks). Lines end with LF, CR or CRLF.
#[derive(Debug)]
pub struct SseCounter {
    /// At the start of a line, how many bytes of `id:` it began with so far; `None` inside a
    /// line that is not (or no longer) one.
    matched: Option<usize>,
    pub ids: u64,
}

impl Default for SseCounter {
    fn default() -> Self {
        SseCounter { matched: Some(0), ids: 0 }
    }
}

impl SseCounter {
    const FIELD: &'static [u8] = b"id:";

    /// Feed the next piece; the number of `id:` lines that began in it.
    pub fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let before = self.ids;
        while let Some((&b, rest)) = chunk.split_first() {
            match self.matched {
                Some(_) if b == b'\n' || b == b'\r' => {
                    self.matched = Some(0);
                    chunk = rest;
                }
                Some(k) => {
                    self.matched = if b != Self::FIELD[k] {
                        None
                    } else if k + 1 == Self::FIELD.len() {
                        self.ids += 1;
                        None
                    } else {
                        Some(k + 1)
                    };
                    chunk = rest;
                }
                // The rest of the line does not matter: skip to its end.
                None => match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                    Some(end) => {
                        self.matched = Some(0);
                        chunk = &chunk[end + 1..];
                    }
                    None => break,
                },
            }
        }
        self.ids - before
    }
}

async fn connect<B>(addr: SocketAddr) -> anyhow::Result<(SendRequest<B>, JoinHandle<()>)>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {addr} timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, task))
}

/// `/v1/…` under the base path of `--url`.
fn api_path(endpoint: &Endpoint, path: &str) -> String {
    format!("{}{path}", endpoint.path.strip_suffix("/v1/messages").unwrap_or(""))
}

/// One call of the API with the bench's key: the status and the body.
async fn call(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    json: Option<String>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let (mut sender, connection) = connect::<Full<Bytes>>(endpoint.addr).await?;
    let answer = async {
        sender.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(api_path(endpoint, path))
            .header(header::HOST, endpoint.host.as_str())
            .header(header::AUTHORIZATION, endpoint.authorization.as_str());
        if json.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let response = sender.send_request(request.body(Full::new(Bytes::from(json.unwrap_or_default())))?).await?;
        let status = response.status();
        anyhow::Ok((status, response.into_body().collect().await?.to_bytes()))
    };
    let outcome = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", ANSWER_TIMEOUT.as_secs()));
    connection.abort();
    outcome?
}

fn clip(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned()
}

/// Register `url` as a webhook endpoint of the key's workspace; its id.
async fn create_endpoint(endpoint: &Endpoint, url: &str) -> anyhow::Result<String> {
    let json = serde_json::json!({"url": url, "description": "parley bench receiver"}).to_string();
    let (status, body) = call(endpoint, Method::POST, "/v1/webhook-endpoints", Some(json))
        .await
        .map_err(|e| e.context("POST /v1/webhook-endpoints failed"))?;
    match status {
        StatusCode::CREATED => {
            let value: serde_json::Value = serde_json::from_slice(&body)?;
            value["id"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("the new endpoint has no id"))
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => anyhow::bail!(
            "the key cannot register webhook endpoints (answered {status}: {}); --webhook-receivers needs a key \
             with the admin scope",
            clip(&body)
        ),
        StatusCode::UNPROCESSABLE_ENTITY if body.windows(15).any(|w| w == b"url_not_allowed") => anyhow::bail!(
            "the server refuses the receiver's address {url} ({}); it must run on this machine and allow \
             127.0.0.2/32 in webhooks.allow_networks (PARLEY_WEBHOOKS__ALLOW_NETWORKS='{ALLOW_NETWORKS}')",
            clip(&body)
        ),
        _ => anyhow::bail!("registering the webhook endpoint {url} was answered {status}: {}", clip(&body)),
    }
}

/// What a receiver saw.
#[derive(Default)]
struct Seen {
    ids: HashSet<u128>,
    /// When the last id not seen before came.
    last_new: Option<Instant>,
}

#[derive(Default)]
struct ReceiverCounts {
    requests: AtomicU64,
    /// Requests without a readable `webhook-id`.
    without_id: AtomicU64,
    seen: Mutex<Seen>,
}

impl ReceiverCounts {
    fn record(&self, id: Option<u128>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Some(id) = id else {
            self.without_id.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Ok(mut seen) = self.seen.lock()
            && seen.ids.insert(id)
        {
            seen.last_new = Some(Instant::now());
        }
    }

    /// Distinct ids and when the last new one came.
    fn distinct(&self) -> (u64, Option<Instant>) {
        self.seen.lock().map(|s| (s.ids.len() as u64, s.last_new)).unwrap_or_default()
    }
}

/// A webhook receiver: answers every request 204 at once.
struct Receiver {
    url: String,
    counts: Arc<ReceiverCounts>,
    /// Accepts connections; aborting it ends them all.
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind(SocketAddr::from((RECEIVER_IP, 0))).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on 127.0.0.2 for the webhook receiver ({e}); it needs Linux loopback")
        })?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let counts = Arc::new(ReceiverCounts::default());
        let task = tokio::spawn(serve_receiver(listener, counts.clone()));
        Ok(Receiver { url, counts, task })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_receiver(listener: TcpListener, counts: Arc<ReceiverCounts>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| receive(request, counts.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn receive(
    request: Request<Incoming>,
    counts: Arc<ReceiverCounts>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let id = request.headers().get("webhook-id").and_then(|v| parse_event_id(v.as_bytes()));
    // Read the (small) body so that the connection stays usable for the next delivery.
    let _ = request.into_body().collect().await;
    counts.record(id);
    let mut response = Response::new(Empty::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

#[derive(Default)]
struct SubscriberState {
    events: AtomicU64,
    last_event: Mutex<Option<Instant>>,
    /// Why the stream ended, if it did.
    ended: Mutex<Option<String>>,
}

/// One `GET /v1/stream`, read as it comes.
struct Subscriber {
    state: Arc<SubscriberState>,
    reader: JoinHandle<()>,
    connection: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.reader.abort();
        self.connection.abort();
    }
}

impl Subscriber {
    /// Open the stream; returns once the response headers came (the server subscribes before
    /// it answers, so every event recorded from then on is on its way).
    async fn start(endpoint: Endpoint) -> anyhow::Result<Subscriber> {
        let (mut sender, connection) = connect::<Empty<Bytes>>(endpoint.addr).await?;
        let request = Request::get(api_path(&endpoint, "/v1/stream"))
            .header(header::HOST, endpoint.host.as_str())
            .header(header::AUTHORIZATION, endpoint.authorization.as_str())
            .header(header::ACCEPT, "text/event-stream")
            .body(Empty::new())?;
        let headers = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            if response.status() != StatusCode::OK {
                let status = response.status();
                let body = tokio::time::timeout(Duration::from_secs(2), response.into_body().collect())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|b| clip(&b.to_bytes()))
                    .unwrap_or_default();
                anyhow::bail!("GET /v1/stream was answered {status}: {body}");
            }
            anyhow::Ok(response)
        };
        let response = match tokio::time::timeout(ANSWER_TIMEOUT, headers).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                connection.abort();
                return Err(e);
            }
            Err(_) => {
                connection.abort();
                anyhow::bail!("GET /v1/stream: no response headers within {} s", ANSWER_TIMEOUT.as_secs());
            }
        };
        let state = Arc::new(SubscriberState::default());
        let reader = tokio::spawn(read_stream(response.into_body(), sender, state.clone()));
        Ok(Subscriber { state, reader, connection })
    }
}

async fn read_stream(mut body: Incoming, sender: SendRequest<Empty<Bytes>>, state: Arc<SubscriberState>) {
    // Held so that the connection is not given up while the stream runs.
    let _sender = sender;
    let mut counter = SseCounter::default();
    let why = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let new = counter.feed(data);
                    if new > 0 {
                        state.events.fetch_add(new, Ordering::Relaxed);
                        if let Ok(mut last) = state.last_event.lock() {
                            *last = Some(Instant::now());
                        }
                    }
                }
            }
            Some(Err(e)) => break format!("the stream broke: {e}"),
            None => break "the server ended the stream".to_string(),
        }
    };
    if let Ok(mut ended) = state.ended.lock() {
        *ended = Some(why);
    }
}

/// The receivers and subscribers of one run.
pub struct Insight {
    receivers: Vec<Receiver>,
    /// The endpoints registered for the receivers (removed again by [`Insight::finish`]).
    endpoint_ids: Vec<String>,
    subscribers: Vec<Subscriber>,
    /// From the first registration until every subscriber had its response headers.
    setup_seconds: f64,
}

/// One receiver's figures.
#[derive(Debug, Serialize)]
pub struct ReceiverFigures {
    pub url: String,
    /// Distinct `webhook-id`s.
    pub events: u64,
    /// Requests received, repeats included.
    pub requests: u64,
    /// Requests for an event already received.
    pub duplicates: u64,
    /// Requests without a readable `webhook-id`.
    pub without_id: u64,
    /// Every expected event came (unknown for a server at --url).
    pub complete: Option<bool>,
    /// From the load's last answer until the last new event came (0 if before).
    pub last_event_after_load_s: Option<f64>,
}

/// The subscribers' figures.
#[derive(Debug, Serialize)]
pub struct SubscriberFigures {
    pub subscribers: usize,
    /// Subscribers that got every expected event.
    pub complete: usize,
    /// Subscribers whose stream ended before the bench closed it.
    pub ended_early: usize,
    pub min_events: u64,
    pub max_events: u64,
    pub total_events: u64,
    /// From the load's last answer until the slowest subscriber had its last event.
    pub slowest_last_event_after_load_s: Option<f64>,
    /// Why the first stream that ended early ended.
    pub first_end: Option<String>,
}

/// What the receivers and subscribers got.
#[derive(Debug, Serialize)]
pub struct InsightReport {
    /// 5 × accepted messages (a spawned server); unknown for a server at --url.
    pub events_expected: Option<u64>,
    pub webhook_receivers: Vec<ReceiverFigures>,
    /// The slowest receiver's last new event after the load; `None` when one missed events.
    pub webhook_drain_seconds: Option<f64>,
    pub sse: SubscriberFigures,
    /// The slowest subscriber's last event after the load; `None` when one missed events.
    pub sse_drain_seconds: Option<f64>,
    /// Every expected event reached every receiver and every subscriber.
    pub all_received: Option<bool>,
    /// Registering the endpoints and opening the streams (before the load).
    pub setup_seconds: f64,
    /// How long the bench waited for the events after the messages were delivered.
    pub waited_seconds: f64,
    /// The wait ran out before every expected event came.
    pub timed_out: bool,
}

fn after(at: Option<Instant>, load_end: Instant) -> Option<f64> {
    at.map(|at| (at.saturating_duration_since(load_end).as_secs_f64() * 100.0).round() / 100.0)
}

impl Insight {
    /// Start `receivers` receivers (each registered as an endpoint) and `subscribers` streams.
    pub async fn start(endpoint: &Endpoint, receivers: usize, subscribers: usize) -> anyhow::Result<Insight> {
        let began = Instant::now();
        let mut insight =
            Insight { receivers: Vec::new(), endpoint_ids: Vec::new(), subscribers: Vec::new(), setup_seconds: 0.0 };
        let setup = async {
            for _ in 0..receivers {
                let receiver = Receiver::start().await?;
                insight.endpoint_ids.push(create_endpoint(endpoint, &receiver.url).await?);
                insight.receivers.push(receiver);
            }
            let opening: Vec<_> = (0..subscribers).map(|_| tokio::spawn(Subscriber::start(endpoint.clone()))).collect();
            let mut first_error = None;
            let mut failed = 0;
            for task in opening {
                match task.await.map_err(anyhow::Error::from).and_then(|r| r) {
                    Ok(s) => insight.subscribers.push(s),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e.context(format!("{failed} of {subscribers} SSE subscribers could not subscribe")));
            }
            anyhow::Ok(())
        };
        match setup.await {
            Ok(()) => {
                insight.setup_seconds = (began.elapsed().as_secs_f64() * 100.0).round() / 100.0;
                Ok(insight)
            }
            Err(e) => {
                insight.finish(endpoint).await;
                Err(e)
            }
        }
    }

    /// Wait until every receiver and subscriber has `expected` events (or, when unknown, until
    /// nothing new came for 5 s), at most `timeout`; then their figures, times measured from
    /// `load_end`.
    pub async fn wait(&self, expected: Option<u64>, load_end: Instant, timeout: Duration) -> InsightReport {
        let began = Instant::now();
        let deadline = began + timeout;
        let timed_out = loop {
            let now = Instant::now();
            let receivers: Vec<_> = self.receivers.iter().map(|r| r.counts.distinct()).collect();
            let done = match expected {
                Some(e) => {
                    receivers.iter().all(|(n, _)| *n >= e)
                        && self.subscribers.iter().all(|s| {
                            s.state.events.load(Ordering::Relaxed) >= e
                                || s.state.ended.lock().map(|x| x.is_some()).unwrap_or(true)
                        })
                }
                None => {
                    let last = receivers
                        .iter()
                        .filter_map(|(_, at)| *at)
                        .chain(self.subscribers.iter().filter_map(|s| s.state.last_event.lock().ok().and_then(|l| *l)))
                        .fold(began, Instant::max);
                    now.duration_since(last) >= QUIET
                }
            };
            if done {
                break false;
            }
            if now >= deadline {
                break expected.is_some();
            }
            tokio::time::sleep(POLL).await;
        };
        let waited_seconds = round1(began.elapsed().as_secs_f64());
        let webhook_receivers: Vec<ReceiverFigures> = self
            .receivers
            .iter()
            .map(|r| {
                let (events, last_new) = r.counts.distinct();
                let requests = r.counts.requests.load(Ordering::Relaxed);
                let without_id = r.counts.without_id.load(Ordering::Relaxed);
                ReceiverFigures {
                    url: r.url.clone(),
                    events,
                    requests,
                    duplicates: requests - without_id - events,
                    without_id,
                    complete: expected.map(|e| events >= e),
                    last_event_after_load_s: after(last_new, load_end),
                }
            })
            .collect();
        let counts: Vec<(u64, Option<Instant>, Option<String>)> = self
            .subscribers
            .iter()
            .map(|s| {
                (
                    s.state.events.load(Ordering::Relaxed),
                    s.state.last_event.lock().ok().and_then(|l| *l),
                    s.state.ended.lock().ok().and_then(|e| e.clone()),
                )
            })
            .collect();
        let complete = counts.iter().filter(|(n, _, _)| expected.is_none_or(|e| *n >= e)).count();
        let sse = SubscriberFigures {
            subscribers: counts.len(),
            complete: if expected.is_some() { complete } else { 0 },
            ended_early: counts.iter().filter(|(_, _, ended)| ended.is_some()).count(),
            min_events: counts.iter().map(|c| c.0).min().unwrap_or(0),
            max_events: counts.iter().map(|c| c.0).max().unwrap_or(0),
            total_events: counts.iter().map(|c| c.0).sum(),
            slowest_last_event_after_load_s: after(counts.iter().filter_map(|c| c.1).max(), load_end),
            first_end: counts.iter().find_map(|c| c.2.clone()),
        };
        let receivers_complete = webhook_receivers.iter().all(|r| r.complete != Some(false));
        let subscribers_complete = expected.is_none() || complete == counts.len();
        let slowest_receiver = webhook_receivers.iter().filter_map(|r| r.last_event_after_load_s).reduce(f64::max);
        InsightReport {
            events_expected: expected,
            webhook_drain_seconds: if receivers_complete && !webhook_receivers.is_empty() {
                slowest_receiver.or(Some(0.0))
            } else {
                None
            },
            sse_drain_seconds: if subscribers_complete && !counts.is_empty() {
                sse.slowest_last_event_after_load_s.or(Some(0.0))
            } else {
                None
            },
            all_received: expected.map(|_| receivers_complete && subscribers_complete),
            webhook_receivers,
            sse,
            setup_seconds: self.setup_seconds,
            waited_seconds,
            timed_out,
        }
    }

    /// Close the streams, remove the endpoints (a server at --url keeps its database), stop the
    /// receivers. Before the server stops: open streams would hold up its graceful shutdown.
    pub async fn finish(mut self, endpoint: &Endpoint) {
        self.subscribers.clear();
        for id in std::mem::take(&mut self.endpoint_ids) {
            match call(endpoint, Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), None).await {
                Ok((status, _)) if status.is_success() => {}
                Ok((status, body)) => {
                    eprintln!("warning: could not remove the bench's webhook endpoint {id}: {status} {}", clip(&body))
                }
                Err(e) => eprintln!("warning: could not remove the bench's webhook endpoint {id}: {e:#}"),
            }
        }
        self.receivers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn event_ids() {
        let id = "evt_0190a1b2c3d4e5f60718293a4b5c6d7e";
        assert_eq!(parse_event_id(id.as_bytes()), Some(0x0190a1b2c3d4e5f60718293a4b5c6d7e));
        assert_eq!(parse_event_id(b"evt_0190A1B2C3D4E5F60718293A4B5C6D7E"), Some(0x0190a1b2c3d4e5f60718293a4b5c6d7e));
        assert_eq!(parse_event_id(b"evt_ffffffffffffffffffffffffffffffff"), Some(u128::MAX));
        for bad in [
            &b"msg_0190a1b2c3d4e5f60718293a4b5c6d7e"[..],
            b"evt_0190a1b2c3d4e5f60718293a4b5c6d7",
            b"evt_0190a1b2c3d4e5f60718293a4b5c6d7e0",
            b"evt_+190a1b2c3d4e5f60718293a4b5c6d7e",
            b"evt_0190a1b2c3d4e5f60718293a4b5c6d7g",
            b"",
        ] {
            assert_eq!(parse_event_id(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let fresh = parley_domain::EventId::new();
        assert_eq!(parse_event_id(fresh.to_string().as_bytes()), Some(fresh.uuid().as_u128()));
    }

    const STREAM: &str = ": keep-alive\n\nid: evt_1\nevent: message.accepted\ndata: {\"id\":\"x\"}\n\n\
        id:evt_2\r\nevent: message.queued\r\ndata: {\"note\":\"id: inside data\"}\r\n\r\n\
        data: {}\nid: evt_3\n\n:id: a comment\n\n xid: no\nid\n\n";

    #[test]
    fn sse_ids_at_once_and_in_every_split() {
        let mut c = SseCounter::default();
        assert_eq!(c.feed(STREAM.as_bytes()), 3);
        assert_eq!(c.ids, 3);
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let mut c = SseCounter::default();
            let n = c.feed(&bytes[..cut]) + c.feed(&bytes[cut..]);
            assert_eq!((n, c.ids), (3, 3), "cut at {cut}");
        }
        // One byte at a time, and twice in a row.
        let mut c = SseCounter::default();
        for b in bytes.iter().chain(bytes) {
            c.feed(std::slice::from_ref(b));
        }
        assert_eq!(c.ids, 6);
        // A line cut right after "id" and before ":".
        let mut c = SseCounter::default();
        assert_eq!(c.feed(b"data: x\nid"), 0);
        assert_eq!(c.feed(b": evt_9\n"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_receiver_counts_requests_and_distinct_ids() {
        let receiver = Receiver::start().await.unwrap();
        let addr: SocketAddr =
            receiver.url.strip_prefix("http://").and_then(|s| s.strip_suffix("/hook")).unwrap().parse().unwrap();
        let (mut sender, _connection) = connect::<Full<Bytes>>(addr).await.unwrap();
        for id in [
            "evt_0000000000000000000000000000000a",
            "evt_0000000000000000000000000000000b",
            "evt_0000000000000000000000000000000a",
            "nonsense",
        ] {
            sender.ready().await.unwrap();
            let request = Request::post("/hook")
                .header(header::HOST, addr.to_string())
                .header("webhook-id", id)
                .body(Full::new(Bytes::from_static(b"{\"id\":\"evt\"}")))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
        }
        assert_eq!(receiver.counts.requests.load(Ordering::Relaxed), 4);
        assert_eq!(receiver.counts.without_id.load(Ordering::Relaxed), 1);
        let (distinct, last) = receiver.counts.distinct();
        assert_eq!(distinct, 2);
        assert!(last.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_count_the_events_of_a_stream_and_notice_its_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut head).await;
            // No length: the body runs until the connection closes.
            socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n").await.unwrap();
            for piece in STREAM.as_bytes().chunks(7) {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let endpoint = Endpoint {
            addr,
            host: addr.to_string(),
            path: "/v1/messages".into(),
            authorization: "Bearer pk_test".into(),
        };
        let insight = Insight {
            receivers: Vec::new(),
            endpoint_ids: Vec::new(),
            subscribers: vec![Subscriber::start(endpoint).await.unwrap()],
            setup_seconds: 0.0,
        };
        let report = insight.wait(Some(3), Instant::now(), Duration::from_secs(10)).await;
        assert!(!report.timed_out);
        assert_eq!((report.sse.min_events, report.sse.complete, report.all_received), (3, 1, Some(true)));
        // The server closes the connection after the last event.
        let deadline = Instant::now() + Duration::from_secs(5);
        while insight.subscribers[0].state.ended.lock().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = insight.wait(Some(4), Instant::now(), Duration::from_millis(300)).await;
        assert_eq!((report.sse.ended_early, report.sse.complete, report.all_received), (1, 0, Some(false)));
        assert!(report.sse.first_end.is_some());
    }
}
