//! One delivery attempt over HTTP: POST the signed envelope, read at most an excerpt of the
//! answer, and say what it means for the retry schedule.
//!
//! The client resolves host names through the SSRF guard (every address the name has must be
//! allowed, and the connection goes to those very addresses), refuses IP literals the policy does
//! not open before connecting, follows no redirect, and gives every attempt a deadline.

use super::ssrf::UrlPolicy;
use parley_domain::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an attempt gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_excerpt: Option<String>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// 410 Gone: the receiver wants no more events; the endpoint is disabled.
    Gone,
    /// Try again later; `retry_after` from a 429 or 503.
    Failed { retry_after: Option<Duration> },
}

impl AttemptResult {
    /// An attempt that got no answer.
    pub fn failed(error: String, latency_ms: i64) -> AttemptResult {
        AttemptResult {
            status_code: None,
            error: Some(error),
            latency_ms,
            response_excerpt: None,
            verdict: Verdict::Failed { retry_after: None },
        }
    }
}

/// A request ready to send.
pub struct Delivery<'a> {
    pub url: &'a str,
    pub webhook_id: &'a str,
    pub timestamp_secs: i64,
    pub signature: &'a str,
    pub body: &'a str,
}

/// The HTTP client of the deliverer (one per engine: its connection pool is shared).
#[derive(Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
    policy: UrlPolicy,
    timeout: Duration,
    excerpt_bytes: usize,
}

impl WebhookClient {
    pub fn new(policy: UrlPolicy, timeout: Duration, excerpt_bytes: usize) -> reqwest::Result<WebhookClient> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            // The whole attempt's deadline is kept by `send` (one message for every kind of
            // lateness); this one only ends connections that never open.
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .user_agent(concat!("Parley-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookClient { client, policy, timeout, excerpt_bytes })
    }

    /// Why `url` must not be called at all: it is not a URL, or it names an address the policy
    /// refuses (host names are checked by the resolver at connection time; addresses written in
    /// the URL never reach it). Depends on the URL only, so the deliverer asks once per pass.
    pub fn refusal(&self, url: &str) -> Option<String> {
        let url = match url::Url::parse(url) {
            Ok(url) => url,
            Err(e) => return Some(format!("the URL is not valid: {e}")),
        };
        let ip = match url.host()? {
            url::Host::Ipv4(ip) => IpAddr::V4(ip),
            url::Host::Ipv6(ip) => IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        self.policy.refusal(ip).map(|class| format!("refused: {ip} is {class}"))
    }

    /// Send one attempt to a URL that [`WebhookClient::refusal`] let through. Never fails: every
    /// problem is an [`AttemptResult`] with an error.
    pub async fn send(&self, delivery: Delivery<'_>) -> AttemptResult {
        let started = Instant::now();
        let elapsed = |started: Instant| crate::clock::duration_ms(started.elapsed());
        let failed = AttemptResult::failed;
        let request = self
            .client
            .post(delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_ID, delivery.webhook_id)
            .header(HEADER_TIMESTAMP, delivery.timestamp_secs.to_string())
            .header(HEADER_SIGNATURE, delivery.signature)
            .body(delivery.body.to_owned());
        let answered = tokio::time::timeout(self.timeout, async {
            let mut response = request.send().await?;
            let latency_ms = elapsed(started);
            let excerpt = read_excerpt(&mut response, self.excerpt_bytes).await;
            Ok::<_, reqwest::Error>((response, latency_ms, excerpt))
        })
        .await;
        let (response, latency_ms, excerpt) = match answered {
            Err(_) => return failed(format!("no answer within {} s", self.timeout.as_secs()), elapsed(started)),
            Ok(Err(e)) => return failed(describe(&e), elapsed(started)),
            Ok(Ok(answered)) => answered,
        };
        let status = response.status();
        let (verdict, error) = if status.is_success() {
            (Verdict::Delivered, None)
        } else if status == reqwest::StatusCode::GONE {
            (Verdict::Gone, Some("410 Gone: the endpoint asked for no more events".to_owned()))
        } else {
            let retry_after = if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            {
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| super::schedule::parse_retry_after(v, jiff::Timestamp::now().as_second()))
            } else {
                None
            };
            let error = if status.is_redirection() {
                format!("answered {} (redirects are not followed)", status.as_u16())
            } else {
                format!("answered {}", status.as_u16())
            };
            (Verdict::Failed { retry_after }, Some(error))
        };
        AttemptResult { status_code: Some(status.as_u16()), error, latency_ms, response_excerpt: excerpt, verdict }
    }
}

/// The start of the body, at most `limit` bytes, as text; the rest is never read.
async fn read_excerpt(response: &mut reqwest::Response, limit: usize) -> Option<String> {
    let mut body: Vec<u8> = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if body.is_empty() {
        return None;
    }
    let mut text = String::from_utf8_lossy(&body).into_owned();
    // A cut in the middle of a UTF-8 sequence shows as U+FFFD at the end; drop it.
    if text.ends_with('\u{FFFD}') && body.len() == limit {
        text.pop();
    }
    Some(text)
}

/// A transport error in words, without the URL (which may hold a token in its query).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut cause: Option<&dyn std::error::Error> = e.source();
    let mut detail = String::new();
    while let Some(c) = cause {
        detail = c.to_string();
        cause = c.source();
    }
    let what = if e.is_connect() {
        "could not connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    if detail.is_empty() { what.to_owned() } else { format!("{what}: {detail}") }
}

/// Resolves host names for the client, keeping only answers the policy allows: a name with one
/// refused address is refused altogether (as at registration).
struct GuardedResolver {
    policy: UrlPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            if let Some(refused) = found.iter().find_map(|a| policy.refusal(a.ip()).map(|class| (a.ip(), class))) {
                return Err(format!("refused: {host} resolves to {} ({})", refused.0, refused.1).into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}
