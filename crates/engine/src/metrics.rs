//! What this process has done, for Prometheus: counters and histograms kept in memory by the
//! engine (and by the server, through [`Metrics::http_request`]), and gauges read from the store
//! at scrape time, rendered in the text exposition format, version 0.0.4.
//!
//! Why a small registry of our own rather than the `metrics` crate and its Prometheus exporter:
//! those record into one process-global recorder, and the test suite runs many Parley servers in
//! one process, whose counts would mix. Each [`Engine`] owns its [`Metrics`], so every server
//! reports only what it did. Every label set is small and fixed (channels, event kinds, provider
//! names, the router's route templates, provider error codes, capped), so a map per family behind
//! a read-write lock, with atomics for the values, is enough; the text format is a page of code,
//! and writing it here keeps exactly the 0.0.4 format (`prometheus-client` writes OpenMetrics).

use crate::Engine;
use parley_domain::{Channel, EventKind, Millis};
use parley_store::MetricsSnapshot;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of the duration histograms' buckets: from half a millisecond (a
/// cached read) to 30 s (a provider answering at the end of its lease).
const DURATION_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Provider error codes told apart, at most, across providers; later new ones count as `other`.
/// Connectors choose their codes, but a provider could pass its own through unbounded.
const MAX_ERROR_CODES: usize = 256;

/// How long a scrape waits for the store's figures before it answers without them.
const STORE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine's metrics. Recording is a read lock and an atomic add.
pub struct Metrics {
    http_requests: Family<(&'static str, String, u16), AtomicU64>,
    http_duration: Family<(&'static str, String), Histogram>,
    accepted: Family<Channel, AtomicU64>,
    events: Family<(Channel, EventKind), AtomicU64>,
    send_duration: Family<(Channel, &'static str), Histogram>,
    provider_errors: Family<(&'static str, String), AtomicU64>,
    webhook_attempts: Family<(String, &'static str), AtomicU64>,
    webhook_duration: Family<String, Histogram>,
    callbacks: Family<(String, &'static str), AtomicU64>,
    unmatched_receipts_dropped: AtomicU64,
}

/// Webhook endpoints told apart, at most; later ones count as `other`.
const MAX_ENDPOINTS: usize = 1000;

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: Family::new(
                "parley_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
                &["method", "route", "status"],
            ),
            http_duration: Family::new(
                "parley_http_request_duration_seconds",
                "Time to answer an HTTP request (until the response head), by method and route template.",
                &["method", "route"],
            ),
            accepted: Family::new(
                "parley_messages_accepted_total",
                "Outbound messages accepted (committed before the 202), by channel.",
                &["channel"],
            ),
            events: Family::new(
                "parley_message_events_total",
                "Message events recorded by this process, by channel and event type.",
                &["channel", "type"],
            ),
            send_duration: Family::new(
                "parley_send_duration_seconds",
                "Time a connector took to answer one send attempt, by channel and provider.",
                &["channel", "provider"],
            ),
            provider_errors: Family::new(
                "parley_provider_errors_total",
                "Errors providers answered to send attempts, by provider and error code.",
                &["provider", "code"],
            ),
            webhook_attempts: Family::new(
                "parley_webhook_attempts_total",
                "Webhook delivery attempts by endpoint and outcome (delivered, failed, gone).",
                &["endpoint", "outcome"],
            ),
            webhook_duration: Family::new(
                "parley_webhook_attempt_duration_seconds",
                "Time a webhook endpoint took to answer an attempt, by endpoint.",
                &["endpoint"],
            ),
            callbacks: Family::new(
                "parley_provider_callbacks_total",
                "Provider callbacks to /hooks for known accounts, by provider and outcome (accepted, \
                 bad_signature, forbidden, malformed, not_supported).",
                &["provider", "outcome"],
            ),
            unmatched_receipts_dropped: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// One HTTP request answered. `route` is the router's template (`/v1/messages/{id}`) or
    /// `unmatched`, never a raw path; methods other than the standard ones count as `other`.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.http_requests.with((method, route.to_string(), status), |c| c.fetch_add(1, Ordering::Relaxed));
        self.http_duration.with((method, route.to_string()), |h| h.observe(elapsed));
    }

    /// Events that were committed; `accepted` ones also count as accepted messages.
    pub(crate) fn record_events(&self, tally: &EventTally) {
        for &(channel, kind, n) in &tally.0 {
            self.events.with((channel, kind), |c| c.fetch_add(n, Ordering::Relaxed));
            if kind == EventKind::Accepted {
                self.accepted.with(channel, |c| c.fetch_add(n, Ordering::Relaxed));
            }
        }
    }

    /// One `Connector::send` that took `elapsed`.
    pub(crate) fn send_finished(&self, channel: Channel, provider: &'static str, elapsed: Duration) {
        self.send_duration.with((channel, provider), |h| h.observe(elapsed));
    }

    /// A provider answered a send with the error `code`.
    pub(crate) fn provider_error(&self, provider: &'static str, code: &str) {
        self.provider_errors.with_capped(
            (provider, code.to_string()),
            || (provider, "other".to_string()),
            MAX_ERROR_CODES,
            |c| c.fetch_add(1, Ordering::Relaxed),
        );
    }

    /// A provider callback for one of `provider`'s accounts ended with `outcome`. Only known
    /// accounts' providers are counted, so the label stays bounded.
    pub(crate) fn record_callback(&self, provider: &str, outcome: &'static str) {
        self.callbacks.with((provider.to_string(), outcome), |c| c.fetch_add(1, Ordering::Relaxed));
    }

    /// Receipts that matched no message for a week were deleted.
    pub(crate) fn unmatched_receipts_dropped(&self, n: u64) {
        self.unmatched_receipts_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// One webhook delivery attempt to `endpoint` that ended with `outcome` after `elapsed`.
    pub(crate) fn webhook_attempt(&self, endpoint: &str, outcome: &'static str, elapsed: Duration) {
        self.webhook_attempts.with_capped(
            (endpoint.to_string(), outcome),
            || ("other".to_string(), outcome),
            MAX_ENDPOINTS * 3,
            |c| c.fetch_add(1, Ordering::Relaxed),
        );
        self.webhook_duration.with_capped(
            endpoint.to_string(),
            || "other".to_string(),
            MAX_ENDPOINTS,
            |h| h.observe(elapsed),
        );
    }

    /// Every family in the text format, with the store's gauges when `store` has them (they are
    /// left without samples when the store could not be read, so that they go stale rather than
    /// read as zero).
    pub fn render(&self, store: Option<&MetricsSnapshot>, now: Millis) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.http_requests.render_counters(&mut out);
        self.http_duration.render_histograms(&mut out);
        self.accepted.render_counters(&mut out);
        self.events.render_counters(&mut out);
        self.send_duration.render_histograms(&mut out);
        self.provider_errors.render_counters(&mut out);
        self.webhook_attempts.render_counters(&mut out);
        self.webhook_duration.render_histograms(&mut out);
        self.callbacks.render_counters(&mut out);
        header(
            &mut out,
            "parley_unmatched_receipts_dropped_total",
            "Receipts deleted after a week without a message to match (unknown provider ids).",
            "counter",
        );
        let _ = writeln!(
            out,
            "parley_unmatched_receipts_dropped_total {}",
            self.unmatched_receipts_dropped.load(Ordering::Relaxed)
        );

        header(
            &mut out,
            "parley_messages",
            "Messages in the database by channel and current state, across workspaces.",
            "gauge",
        );
        for (channel, state, n) in store.map(|s| s.messages.as_slice()).unwrap_or_default() {
            sample(&mut out, "parley_messages", &[("channel", channel.as_str()), ("state", state.as_str())], *n);
        }
        let age_seconds = |s: &MetricsSnapshot| s.oldest_due_at.map_or(0, |due| (now.0 - due.0).max(0)) as f64 / 1000.0;
        let queue = [
            (
                "parley_dispatch_queue_depth",
                "Dispatch jobs due now and not held by a worker, across workspaces.",
                store.map(|s| s.due_jobs as f64),
            ),
            (
                "parley_dispatch_oldest_due_age_seconds",
                "How long the oldest of the due dispatch jobs has been due (0 when there is none).",
                store.map(age_seconds),
            ),
        ];
        for (name, help, value) in queue {
            header(&mut out, name, help, "gauge");
            if let Some(value) = value {
                sample(&mut out, name, &[], value);
            }
        }
        out
    }
}

impl Engine {
    /// The metrics of this engine, for the server to record HTTP requests into.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The text for `GET /metrics`: the counters and histograms of this process, and the store's
    /// current figures (left out, with a warning in the log, when the store does not answer).
    pub async fn render_metrics(&self) -> String {
        let now = Millis::now();
        let snapshot = match tokio::time::timeout(STORE_READ_TIMEOUT, self.store().metrics_snapshot(now)).await {
            Ok(Ok(snapshot)) => Some(snapshot),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: cannot read the store's figures");
                None
            }
            Err(_) => {
                tracing::warn!("metrics: the store's figures took longer than {STORE_READ_TIMEOUT:?}");
                None
            }
        };
        let mut out = self.inner.metrics.render(snapshot.as_ref(), now);
        let backlog = match tokio::time::timeout(STORE_READ_TIMEOUT, self.store().webhook_backlog()).await {
            Ok(Ok(backlog)) => Some(backlog),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: cannot read the webhook backlog");
                None
            }
            Err(_) => None,
        };
        render_webhook_backlog(&mut out, backlog.as_deref());
        out
    }
}

/// The webhook backlog gauges (no samples when the store could not be read).
fn render_webhook_backlog(out: &mut String, backlog: Option<&[parley_store::WebhookBacklog]>) {
    type Read = fn(&parley_store::WebhookBacklog) -> i64;
    let gauges: [(&str, &str, Read); 2] = [
        (
            "parley_webhook_backlog_events",
            "Events of the workspace not yet handled by the endpoint's deliverer, by endpoint.",
            |b| b.unhandled_events,
        ),
        ("parley_webhook_pending_retries", "Webhook deliveries waiting for a retry, by endpoint.", |b| {
            b.pending_retries
        }),
    ];
    for (name, help, value) in gauges {
        header(out, name, help, "gauge");
        for b in backlog.unwrap_or_default() {
            let enabled = if b.enabled { "true" } else { "false" };
            sample(out, name, &[("endpoint", &b.endpoint_id.to_string()), ("enabled", enabled)], value(b));
        }
    }
}

/// Events to count once they are committed, added up per (channel, kind) before the counters are
/// touched (a batch has few distinct pairs).
#[derive(Default)]
pub(crate) struct EventTally(Vec<(Channel, EventKind, u64)>);

impl EventTally {
    pub(crate) fn add(&mut self, channel: Channel, kind: EventKind) {
        match self.0.iter_mut().find(|(c, k, _)| *c == channel && *k == kind) {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((channel, kind, 1)),
        }
    }
}

fn method_label(method: &str) -> &'static str {
    const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    METHODS.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// The label values of one series, in the order of its family's label names.
trait LabelValues {
    fn label_values(&self) -> Vec<String>;
}

impl LabelValues for Channel {
    fn label_values(&self) -> Vec<String> {
        vec![self.as_str().into()]
    }
}

impl LabelValues for (Channel, EventKind) {
    fn label_values(&self) -> Vec<String> {
        vec![self.0.as_str().into(), self.1.as_str().into()]
    }
}

impl LabelValues for (Channel, &'static str) {
    fn label_values(&self) -> Vec<String> {
        vec![self.0.as_str().into(), self.1.into()]
    }
}

impl LabelValues for String {
    fn label_values(&self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl LabelValues for (String, &'static str) {
    fn label_values(&self) -> Vec<String> {
        vec![self.0.clone(), self.1.into()]
    }
}

impl LabelValues for (&'static str, String) {
    fn label_values(&self) -> Vec<String> {
        vec![self.0.into(), self.1.clone()]
    }
}

impl LabelValues for (&'static str, String, u16) {
    fn label_values(&self) -> Vec<String> {
        vec![self.0.into(), self.1.clone(), self.2.to_string()]
    }
}

/// One metric family: its series by label values.
struct Family<K, V> {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    series: RwLock<HashMap<K, V>>,
}

impl<K: Eq + Hash + LabelValues, V: Default> Family<K, V> {
    fn new(name: &'static str, help: &'static str, label_names: &'static [&'static str]) -> Self {
        Family { name, help, label_names, series: RwLock::new(HashMap::new()) }
    }

    /// Run `f` on the series of `key`, created on first use.
    fn with<R>(&self, key: K, f: impl FnOnce(&V) -> R) -> R {
        // Values are atomics, so a poisoned lock holds nothing half-written.
        if let Some(value) = self.series.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return f(value);
        }
        f(self.series.write().unwrap_or_else(PoisonError::into_inner).entry(key).or_default())
    }

    /// As [`Family::with`], but once the family has `cap` series a new key is replaced by
    /// `overflow()`.
    fn with_capped<R>(&self, key: K, overflow: impl FnOnce() -> K, cap: usize, f: impl FnOnce(&V) -> R) -> R {
        if let Some(value) = self.series.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return f(value);
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let key = if series.len() >= cap && !series.contains_key(&key) { overflow() } else { key };
        f(series.entry(key).or_default())
    }

    /// The series as (label pairs, value), ordered by label values so that the text is stable.
    fn collect<T>(&self, read: impl Fn(&V) -> T) -> Vec<(Vec<(&'static str, String)>, T)> {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<(Vec<String>, T)> = series.iter().map(|(k, v)| (k.label_values(), read(v))).collect();
        drop(series);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|(values, v)| (self.label_names.iter().copied().zip(values).collect(), v)).collect()
    }
}

impl<K: Eq + Hash + LabelValues> Family<K, AtomicU64> {
    fn render_counters(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        for (labels, n) in self.collect(|c| c.load(Ordering::Relaxed)) {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sample(out, self.name, &labels, n);
        }
    }
}

impl<K: Eq + Hash + LabelValues> Family<K, Histogram> {
    fn render_histograms(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let (bucket, sum, count) =
            (format!("{}_bucket", self.name), format!("{}_sum", self.name), format!("{}_count", self.name));
        let les: Vec<String> =
            DURATION_BUCKETS.iter().map(f64::to_string).chain(std::iter::once("+Inf".to_string())).collect();
        for (labels, (buckets, sum_seconds)) in self.collect(Histogram::read) {
            let mut labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut cumulative = 0;
            for (n, le) in buckets.iter().zip(&les) {
                cumulative += n;
                labels.push(("le", le));
                sample(out, &bucket, &labels, cumulative);
                labels.pop();
            }
            sample(out, &sum, &labels, sum_seconds);
            sample(out, &count, &labels, cumulative);
        }
    }
}

/// Durations in fixed buckets: counts per bucket (not cumulative; the last one is `+Inf`) and the
/// sum in nanoseconds, exact in an integer.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let i = DURATION_BUCKETS.iter().position(|le| seconds <= *le).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn read(&self) -> (Vec<u64>, f64) {
        let buckets = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        (buckets, self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            for ch in value.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    ch => out.push(ch),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_domain::MessageState;

    #[test]
    fn counters_histograms_and_gauges_render_in_the_text_format() {
        let m = Metrics::default();
        m.http_request("POST", "/v1/messages", 202, Duration::from_millis(3));
        m.http_request("POST", "/v1/messages", 202, Duration::from_millis(40));
        m.http_request("BREW", "unmatched", 404, Duration::from_secs(60));
        let mut tally = EventTally::default();
        tally.add(Channel::Sms, EventKind::Accepted);
        tally.add(Channel::Sms, EventKind::Queued);
        tally.add(Channel::Sms, EventKind::Accepted);
        m.record_events(&tally);
        m.provider_error("sandbox", "say \"no\"\\\n");
        let snapshot = MetricsSnapshot {
            messages: vec![(Channel::Sms, MessageState::Queued, 2)],
            due_jobs: 2,
            oldest_due_at: Some(Millis(1_000)),
        };
        let text = m.render(Some(&snapshot), Millis(3_500));
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        has("# TYPE parley_http_requests_total counter");
        has(r#"parley_http_requests_total{method="POST",route="/v1/messages",status="202"} 2"#);
        has(r#"parley_http_requests_total{method="other",route="unmatched",status="404"} 1"#);
        has("# TYPE parley_http_request_duration_seconds histogram");
        has(r#"parley_http_request_duration_seconds_bucket{method="POST",route="/v1/messages",le="0.0025"} 0"#);
        has(r#"parley_http_request_duration_seconds_bucket{method="POST",route="/v1/messages",le="0.005"} 1"#);
        has(r#"parley_http_request_duration_seconds_bucket{method="POST",route="/v1/messages",le="30"} 2"#);
        has(r#"parley_http_request_duration_seconds_bucket{method="POST",route="/v1/messages",le="+Inf"} 2"#);
        has(r#"parley_http_request_duration_seconds_sum{method="POST",route="/v1/messages"} 0.043"#);
        has(r#"parley_http_request_duration_seconds_count{method="POST",route="/v1/messages"} 2"#);
        has(r#"parley_http_request_duration_seconds_bucket{method="other",route="unmatched",le="30"} 0"#);
        has(r#"parley_messages_accepted_total{channel="sms"} 2"#);
        has(r#"parley_message_events_total{channel="sms",type="accepted"} 2"#);
        has(r#"parley_message_events_total{channel="sms",type="queued"} 1"#);
        has(r#"parley_provider_errors_total{provider="sandbox",code="say \"no\"\\\n"} 1"#);
        has(r#"parley_messages{channel="sms",state="queued"} 2"#);
        has("parley_dispatch_queue_depth 2");
        has("parley_dispatch_oldest_due_age_seconds 2.5");
        // Each family's samples follow its own HELP and TYPE lines.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap_or_default();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} is not in the family {family}");
            }
        }
    }

    #[test]
    fn without_the_store_the_gauges_have_no_samples_and_codes_are_capped() {
        let m = Metrics::default();
        for i in 0..MAX_ERROR_CODES + 10 {
            m.provider_error("sandbox", &format!("code-{i}"));
        }
        let text = m.render(None, Millis(0));
        assert!(text.contains("# TYPE parley_dispatch_queue_depth gauge"));
        assert!(!text.lines().any(|l| l.starts_with("parley_dispatch_queue_depth ")), "{text}");
        let errors = text.lines().filter(|l| l.starts_with("parley_provider_errors_total{")).count();
        assert_eq!(errors, MAX_ERROR_CODES + 1);
        assert!(text.contains(r#"parley_provider_errors_total{provider="sandbox",code="other"} 10"#));
    }
}
