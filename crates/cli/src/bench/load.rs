//! The load generator: `connections` keep-alive HTTP/1.1 connections (hyper's client), each
//! running a loop of `POST /v1/messages`.
//!
//! Closed loop (`rate` 0): every connection sends its next request as soon as the previous one is
//! answered, until the duration is over. Open loop (`rate` > 0): request *i* is due at
//! `start + i/rate` on a fixed grid; a free connection takes the next due request, waits for its
//! time and sends it. Its latency is measured from the *scheduled* time, so that a server that
//! falls behind shows its queueing in the figures instead of silently slowing the load down
//! (coordinated omission). The latency from the actual send is kept too ("service" latency).

use super::stats::{planned_requests, scheduled_offset};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A request that takes longer than this counts as an error (and its connection is replaced).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An open-loop run whose server falls so far behind stops this long after its planned end;
/// the requests it did not get to are reported as not sent.
const OPEN_LOOP_OVERRUN: Duration = Duration::from_secs(60);

/// Where and what to send.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// `/v1/messages`, after the base URL's path if it has one.
    pub path: String,
    pub authorization: String,
}

#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    pub connections: usize,
    pub duration: Duration,
    /// Requests per second, open loop; 0 for closed loop.
    pub rate: u64,
}

/// What the load phase saw.
#[derive(Debug)]
pub struct LoadOutcome {
    pub started: Instant,
    /// When the last answer came (or the load gave up).
    pub finished: Instant,
    /// Requests handed to a connection.
    pub sent: u64,
    /// 2xx answers.
    pub accepted: u64,
    /// Everything else: non-2xx answers, transport errors, timeouts.
    pub errors: u64,
    /// Non-2xx answers by status.
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Open loop: planned requests never sent because the run overran by too much.
    pub not_sent: u64,
    /// Latency of every 2xx answer, µs: from the scheduled time (open loop) or the send.
    pub latencies_us: Vec<u32>,
    /// Open loop: latency of every 2xx answer from the actual send, µs.
    pub service_us: Vec<u32>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl LoadOutcome {
    pub fn seconds(&self) -> f64 {
        self.finished.duration_since(self.started).as_secs_f64()
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {addr} timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One POST on `sender`: the status, and the body when it is not a success (for the report).
async fn post(sender: &mut Sender, endpoint: &Endpoint, body: Bytes) -> anyhow::Result<(StatusCode, Option<Bytes>)> {
    sender.ready().await?;
    let request = Request::post(endpoint.path.as_str())
        .header(header::HOST, endpoint.host.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, endpoint.authorization.as_str())
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, (!status.is_success()).then_some(body)))
}

/// One POST of the preflight check: the status and the body.
pub async fn post_once(endpoint: &Endpoint, body: Bytes) -> anyhow::Result<(StatusCode, Option<Bytes>)> {
    let mut sender = connect(endpoint.addr).await?;
    tokio::time::timeout(REQUEST_TIMEOUT, post(&mut sender, endpoint, body))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))?
}

/// Shared between the connection tasks.
struct Shared {
    endpoint: Endpoint,
    body: Bytes,
    spec: LoadSpec,
    start: Instant,
    /// Open loop: the index of the next request to take.
    next: AtomicU64,
    planned: u64,
}

#[derive(Default)]
struct ConnResult {
    sent: u64,
    accepted: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    timeouts: u64,
    latencies_us: Vec<u32>,
    service_us: Vec<u32>,
    last_answer: Option<Instant>,
    first_error: Option<String>,
}

impl ConnResult {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Run the load: open the connections, then send for `spec.duration`.
pub async fn run(endpoint: Endpoint, body: Bytes, spec: LoadSpec) -> anyhow::Result<LoadOutcome> {
    anyhow::ensure!(spec.connections > 0, "--connections must be at least 1");
    // Every connection is open before the clock starts.
    let mut senders = Vec::with_capacity(spec.connections);
    let opening: Vec<_> = (0..spec.connections).map(|_| tokio::spawn(connect(endpoint.addr))).collect();
    for task in opening {
        senders.push(task.await??);
    }
    let planned = if spec.rate > 0 { planned_requests(spec.rate, spec.duration) } else { 0 };
    let shared = Arc::new(Shared { endpoint, body, spec, start: Instant::now(), next: AtomicU64::new(0), planned });
    let tasks: Vec<_> = senders.into_iter().map(|s| tokio::spawn(connection_loop(shared.clone(), s))).collect();
    let mut outcome = LoadOutcome {
        started: shared.start,
        finished: shared.start,
        sent: 0,
        accepted: 0,
        errors: 0,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        timeouts: 0,
        not_sent: 0,
        latencies_us: Vec::new(),
        service_us: Vec::new(),
        first_error: None,
    };
    for task in tasks {
        let r = task.await?;
        outcome.sent += r.sent;
        outcome.accepted += r.accepted;
        outcome.errors += r.errors;
        outcome.transport_errors += r.transport_errors;
        outcome.timeouts += r.timeouts;
        for (status, n) in r.statuses {
            *outcome.statuses.entry(status).or_default() += n;
        }
        outcome.latencies_us.extend(r.latencies_us);
        outcome.service_us.extend(r.service_us);
        if let Some(at) = r.last_answer {
            outcome.finished = outcome.finished.max(at);
        }
        if outcome.first_error.is_none() {
            outcome.first_error = r.first_error;
        }
    }
    if spec.rate > 0 {
        outcome.not_sent = planned.saturating_sub(outcome.sent);
    }
    // A closed loop ends at its deadline even if the last answers came a little earlier.
    let planned_end = shared.start + spec.duration;
    if spec.rate == 0 && outcome.finished < planned_end {
        outcome.finished = planned_end;
    }
    Ok(outcome)
}

async fn connection_loop(shared: Arc<Shared>, sender: Sender) -> ConnResult {
    let spec = shared.spec;
    let deadline = shared.start + spec.duration;
    let give_up = deadline + OPEN_LOOP_OVERRUN;
    let mut sender = Some(sender);
    let mut r = ConnResult::default();
    loop {
        let scheduled = if spec.rate == 0 {
            if Instant::now() >= deadline {
                break;
            }
            None
        } else {
            if Instant::now() >= give_up {
                break;
            }
            let index = shared.next.fetch_add(1, Ordering::Relaxed);
            if index >= shared.planned {
                break;
            }
            let at = shared.start + scheduled_offset(index, spec.rate);
            tokio::time::sleep_until(at).await;
            Some(at)
        };
        r.sent += 1;
        let mut current = match sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => match connect(shared.endpoint.addr).await {
                Ok(s) => s,
                Err(e) => {
                    r.transport_errors += 1;
                    r.error(format!("cannot connect: {e:#}"));
                    // Do not spin while the server is unreachable.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sent_at = Instant::now();
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, post(&mut current, &shared.endpoint, shared.body.clone())).await;
        let now = Instant::now();
        r.last_answer = Some(now);
        match answer {
            Ok(Ok((status, body))) => {
                sender = Some(current);
                if status.is_success() {
                    r.accepted += 1;
                    r.latencies_us.push(micros(now.duration_since(scheduled.unwrap_or(sent_at))));
                    if scheduled.is_some() {
                        r.service_us.push(micros(now.duration_since(sent_at)));
                    }
                } else {
                    *r.statuses.entry(status.as_u16()).or_default() += 1;
                    let body = body.map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned());
                    r.error(format!("{status}: {}", body.unwrap_or_default()));
                }
            }
            Ok(Err(e)) => {
                r.transport_errors += 1;
                r.error(format!("request failed: {e:#}"));
            }
            Err(_) => {
                r.timeouts += 1;
                r.error(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()));
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A minimal HTTP/1.1 server: answers every `fail_every`-th request (counted over all
    /// connections) with 503 and the others with 202.
    async fn server(fail_every: u64) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One whole request: headers, then Content-Length bytes of body.
                        let request_end = loop {
                            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                                let length: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse().ok())
                                    .unwrap_or(0);
                                if buffer.len() >= end + 4 + length {
                                    break end + 4 + length;
                                }
                            }
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        };
                        buffer.drain(..request_end);
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        let answer: &[u8] = if fail_every > 0 && n.is_multiple_of(fail_every) {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
                        } else {
                            b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"
                        };
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, host: addr.to_string(), path: "/v1/messages".into(), authorization: "Bearer pk_test".into() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_loop_sends_exactly_the_planned_requests_on_time() {
        let (addr, seen) = server(0).await;
        let spec = LoadSpec { connections: 4, duration: Duration::from_millis(500), rate: 200 };
        let outcome = run(endpoint(addr), Bytes::from_static(b"{}"), spec).await.unwrap();
        assert_eq!((outcome.sent, outcome.accepted, outcome.errors, outcome.not_sent), (100, 100, 0, 0));
        assert_eq!(seen.load(Ordering::SeqCst), 100);
        assert_eq!((outcome.latencies_us.len(), outcome.service_us.len()), (100, 100));
        // The last request is due at 495 ms: the load cannot end much before that.
        let seconds = outcome.seconds();
        assert!((0.45..5.0).contains(&seconds), "{seconds}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_closed_loop_runs_for_its_duration_and_counts_refusals() {
        let (addr, seen) = server(10).await;
        let spec = LoadSpec { connections: 3, duration: Duration::from_millis(300), rate: 0 };
        let outcome = run(endpoint(addr), Bytes::from_static(b"{}"), spec).await.unwrap();
        assert!(outcome.sent >= 10, "{outcome:?}");
        assert_eq!(outcome.sent, seen.load(Ordering::SeqCst));
        assert_eq!(outcome.sent, outcome.accepted + outcome.errors);
        assert_eq!(outcome.errors, outcome.sent / 10);
        assert_eq!(outcome.statuses.get(&503).copied().unwrap_or(0), outcome.errors);
        assert!(outcome.first_error.as_deref().is_some_and(|e| e.contains("503") && e.contains("busy")));
        assert_eq!(outcome.latencies_us.len() as u64, outcome.accepted);
        assert!(outcome.service_us.is_empty());
        assert!(outcome.seconds() >= 0.3);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_not_a_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let spec = LoadSpec { connections: 2, duration: Duration::from_millis(100), rate: 0 };
        assert!(run(endpoint(addr), Bytes::new(), spec).await.is_err());
    }
}
