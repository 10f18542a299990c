//! `GET /metrics` through the real server on both backends: the Prometheus text format, the
//! counts of what this server did (each test's server counts only its own work), and the
//! database's figures read at scrape time.

mod common;

use common::*;
use parley_testkit::{Backend, TestApp, on_both_backends};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

on_both_backends!(metrics_count_sends_deliveries_failures_and_requests, metrics_can_be_switched_off);

const WAIT: Duration = Duration::from_secs(15);

async fn metrics_count_sends_deliveries_failures_and_requests(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let mut delivered = Vec::new();
    for to in ["+12025550150", "+12025550151", "+12025550152"] {
        delivered.push(id_of(&send(&app, &text_to("sms", to, "hello")).await));
    }
    // The sandbox refuses this one for good, with code sandbox:permanent_failure.
    let failing = id_of(&send(&app, &text_to("sms", "+12025550101", "fails")).await);
    for id in &delivered {
        app.wait_for_status(id, &["delivered"], WAIT).await;
    }
    app.wait_for_status(&failing, &["failed"], WAIT).await;
    let unmatched = get(&app, "/no/such/route-7f3a9c").await;
    assert_eq!(unmatched.status, 404);

    // Counters move right after their commit, which the API may show a moment earlier.
    let m = scrape_until(&app, |m| {
        m.value("parley_message_events_total", &[("channel", "sms"), ("type", "delivered")]) == Some(3.0)
            && m.value("parley_message_events_total", &[("channel", "sms"), ("type", "failed")]) == Some(1.0)
    })
    .await;
    let sms = |name: &str, labels: &[(&str, &str)]| {
        let mut all = vec![("channel", "sms")];
        all.extend_from_slice(labels);
        m.value(name, &all)
    };
    assert_eq!(sms("parley_messages_accepted_total", &[]), Some(4.0), "{}", m.text);
    for (kind, n) in [("accepted", 4.0), ("queued", 4.0), ("sent", 3.0), ("failed", 1.0), ("delivered", 3.0)] {
        assert_eq!(sms("parley_message_events_total", &[("type", kind)]), Some(n), "{kind} events: {}", m.text);
    }
    assert_eq!(sms("parley_message_events_total", &[("type", "read")]), None, "SMS has no read receipts");

    // HTTP: the sends by route template and status, with their durations.
    let sends = [("method", "POST"), ("route", "/v1/messages")];
    assert_eq!(m.value("parley_http_requests_total", &[sends[0], sends[1], ("status", "202")]), Some(4.0));
    let http = m.histogram("parley_http_request_duration_seconds", &sends);
    assert_eq!(http.count, 4.0, "{}", m.text);
    assert!(http.sum > 0.0, "{}", m.text);
    // Polling the messages counts by template; the raw paths never appear.
    let polls = [("method", "GET"), ("route", "/v1/messages/{id}"), ("status", "200")];
    assert!(m.value("parley_http_requests_total", &polls).is_some_and(|n| n >= 4.0), "{}", m.text);
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(m.value("parley_http_requests_total", &unmatched), Some(1.0), "{}", m.text);
    assert!(!m.text.contains("route-7f3a9c") && !m.text.contains(&failing), "raw paths leaked:\n{}", m.text);

    // Sends: every attempt timed; the permanent failure counted by its code.
    let send_time = m.histogram("parley_send_duration_seconds", &[("channel", "sms"), ("provider", "sandbox")]);
    assert_eq!(send_time.count, 4.0, "{}", m.text);
    let refused = [("provider", "sandbox"), ("code", "sandbox:permanent_failure")];
    assert_eq!(m.value("parley_provider_errors_total", &refused), Some(1.0), "{}", m.text);
    assert_eq!(m.samples_of("parley_provider_errors_total").len(), 1, "{}", m.text);

    // The database's figures: what was sent is delivered, nothing waits.
    assert_eq!(m.value("parley_messages", &[("channel", "sms"), ("state", "delivered")]), Some(3.0));
    assert_eq!(m.value("parley_messages", &[("channel", "sms"), ("state", "failed")]), Some(1.0));
    assert_eq!(m.samples_of("parley_messages").iter().map(|s| s.value).sum::<f64>(), 4.0, "{}", m.text);
    assert_eq!(m.value("parley_dispatch_queue_depth", &[]), Some(0.0));
    assert_eq!(m.value("parley_dispatch_oldest_due_age_seconds", &[]), Some(0.0));

    // A cancellation counts its event too.
    let send_at = rfc3339::format(rfc3339::now() + 3_600_000);
    let mut later = text_to("sms", "+12025550153", "later");
    later["send_at"] = serde_json::json!(send_at);
    let scheduled = id_of(&send(&app, &later).await);
    let canceled = post(&app, &format!("/v1/messages/{scheduled}/cancel"), &serde_json::json!({})).await;
    assert_eq!(canceled.status, 200, "{canceled}");
    let m = scrape_until(&app, |m| {
        m.value("parley_message_events_total", &[("channel", "sms"), ("type", "canceled")]) == Some(1.0)
    })
    .await;
    assert_eq!(m.value("parley_messages", &[("channel", "sms"), ("state", "canceled")]), Some(1.0));
    app.finish().await;
}

async fn metrics_can_be_switched_off(backend: Backend) {
    let options = parley_server::ServerOptions { metrics: false, ..Default::default() };
    let Some(app) = TestApp::start_with_server(backend, options).await else { return };
    send(&app, &text_to("sms", "+12025550150", "hello")).await;
    let off = Answer::read(app.http.get(app.url("/metrics")).send().await.expect("GET")).await;
    off.problem(404, "not_found");
    let health = Answer::read(app.http.get(app.url("/healthz")).send().await.expect("GET")).await;
    assert_eq!(health.status, 200);
    app.finish().await;
}

/// Scrape until `ready` holds (or fail after [`WAIT`]); every scrape must parse.
async fn scrape_until(app: &TestApp, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = scrape(app).await;
        if ready(&m) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics did not reach the expected counts:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET /metrics` without a key, parsed.
async fn scrape(app: &TestApp) -> Metrics {
    let response = app.http.get(app.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ASCII").to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    Metrics::parse(&response.text().await.expect("the body"))
}

struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A series' labels other than `le`, in order.
type Labels = Vec<(String, String)>;

struct Histogram {
    count: f64,
    sum: f64,
}

/// A scrape in the Prometheus text format 0.0.4, checked while it is read: every line is a
/// `# HELP`, a `# TYPE` or a sample `name{label="value",…} value`; every sample's family has its
/// HELP and TYPE before its samples; histograms have cumulative buckets ending in `+Inf` that
/// equal their `_count`.
struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut help: HashMap<String, String> = HashMap::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, doc) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
                assert!(valid_name(name) && !doc.is_empty(), "bad HELP line: {line}");
                assert!(help.insert(name.into(), doc.into()).is_none(), "second HELP for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without type: {line}"));
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
                assert!(help.contains_key(name), "TYPE before HELP for {name}");
                assert!(types.insert(name.into(), kind.into()).is_none(), "second TYPE for {name}");
            } else {
                assert!(!line.starts_with('#') && !line.trim().is_empty(), "unexpected line: {line:?}");
                let sample = parse_sample(line);
                let family = family_of(&sample.name, &types);
                assert!(help.contains_key(&family) && types.contains_key(&family), "no HELP/TYPE before: {line}");
                if types[&family] == "counter" {
                    assert!(family.ends_with("_total"), "counter {family} should end in _total");
                }
                samples.push(sample);
            }
        }
        let m = Metrics { text: text.into(), samples };
        for (family, kind) in &types {
            if kind == "histogram" {
                m.check_histograms(family);
            }
        }
        m
    }

    fn samples_of(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The value of the sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    fn histogram(&self, family: &str, labels: &[(&str, &str)]) -> Histogram {
        let count = self.value(&format!("{family}_count"), labels);
        let sum = self.value(&format!("{family}_sum"), labels);
        let (Some(count), Some(sum)) = (count, sum) else {
            panic!("no {family}{labels:?} histogram in:\n{}", self.text)
        };
        Histogram { count, sum }
    }

    /// Per label set: buckets present, cumulative, ending in `+Inf` = `_count`.
    fn check_histograms(&self, family: &str) {
        let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for s in self.samples_of(&format!("{family}_bucket")) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").unwrap_or_else(|| panic!("bucket without le in {family}"));
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le is a number") };
            buckets.entry(labels.into_iter().collect()).or_default().push((le, s.value));
        }
        for (labels, series) in buckets {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert!(series.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{family}{labels:?}: {series:?}");
            let last = series.last().expect("buckets");
            assert_eq!(last.0, f64::INFINITY, "{family}{labels:?} ends in +Inf");
            assert_eq!(Some(last.1), self.value(&format!("{family}_count"), &labels), "{family}{labels:?}");
            assert!(self.value(&format!("{family}_sum"), &labels).is_some(), "{family}{labels:?} has a _sum");
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample belongs to: itself, or a histogram's family without its suffix.
fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram" || t == "summary")
        {
            return base.into();
        }
    }
    name.into()
}

/// `name{a="x",b="y"} value` (labels optional, escapes `\\`, `\"`, `\n`).
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(valid_name(name), "bad metric name in: {line}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).expect("labels end");
            if inner[start..].starts_with('}') {
                rest = &inner[start + 1..];
                break;
            }
            let eq = inner[start..].find("=\"").map(|i| start + i).unwrap_or_else(|| panic!("bad label: {line}"));
            let label = &inner[start..eq];
            assert!(valid_name(label) && !label.contains(':'), "bad label name {label:?} in: {line}");
            while chars.peek().is_some_and(|(i, _)| *i < eq + 2) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().unwrap_or_else(|| panic!("unterminated label value: {line}")) {
                    (_, '"') => break,
                    (_, '\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in: {line}"),
                    },
                    (_, c) => value.push(c),
                }
            }
            assert!(labels.insert(label.to_string(), value).is_none(), "label {label} twice in: {line}");
            if chars.peek().is_some_and(|(_, c)| *c == ',') {
                chars.next();
            }
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value: {line}"));
    let value = value.split(' ').next().unwrap_or_default();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value {v:?} in: {line}")),
    };
    Sample { name: name.into(), labels, value }
}
