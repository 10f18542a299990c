//! The figures of a run, as a table for people or as JSON (`--json`).

use super::cpu::{CpuUse, round1};
use super::insight::InsightReport;
use super::load::LoadOutcome;
use super::stats::{Summary, thousands};
use super::target::{StopReport, Target};
use super::{Plan, targets};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// An open-loop run can deliver at most its offered rate (less the last moment's backlog), so a
/// rate counts as kept up, and a "≥ rate" target as met, within this fraction of it.
const KEPT_UP: f64 = 0.99;

#[derive(Serialize)]
pub struct Report {
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Serialize)]
pub struct Requests {
    pub sent: u64,
    /// 2xx answers.
    pub accepted: u64,
    pub errors: u64,
    /// Non-2xx answers by status.
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Open loop: planned but never sent, because the server fell more than 60 s behind.
    pub not_sent: u64,
    pub first_error: Option<String>,
}

impl From<&LoadOutcome> for Requests {
    fn from(o: &LoadOutcome) -> Self {
        Requests {
            sent: o.sent,
            accepted: o.accepted,
            errors: o.errors,
            statuses: o.statuses.clone(),
            transport_errors: o.transport_errors,
            timeouts: o.timeouts,
            not_sent: o.not_sent,
            first_error: o.first_error.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the first request.
    pub t_s: f64,
    /// Messages of this run delivered by then.
    pub delivered: i64,
    /// Delivered per second since the previous point.
    pub per_s: Option<f64>,
}

/// What became of the accepted messages (counted in the database).
#[derive(Serialize)]
pub struct Delivery {
    pub delivered: i64,
    pub delivered_at_load_end: i64,
    /// Accepted but not delivered yet when the load ended.
    pub backlog_at_load_end: i64,
    /// Messages that ended without being delivered (failed, expired, …).
    pub ended_otherwise: i64,
    /// Delivered by the end of the load, per second of load.
    pub delivered_during_load_per_s: f64,
    /// Delivered messages over the time from the first request until the last was delivered
    /// (observed by polling every 250 ms).
    pub end_to_end_per_s: Option<f64>,
    pub end_to_end_seconds: Option<f64>,
    /// Time from the last answer of the load until the last delivery was observed.
    pub drain_seconds_after_load: f64,
    /// Every accepted message was delivered (or ended) within the drain timeout.
    pub drained: bool,
    /// Accepted → first `delivered` event, per message (server clock, ms resolution).
    pub latency: Summary,
    /// Delivered counts during the load (sustained scenario), and at its end.
    pub timeline: Vec<TimelinePoint>,
    /// The slowest window of the timeline, delivered per second.
    pub slowest_window_per_s: Option<f64>,
}

impl Delivery {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        delivered: i64,
        delivered_at_load_end: i64,
        accepted: i64,
        ended_otherwise: i64,
        load_seconds: f64,
        end_to_end_seconds: Option<f64>,
        drain_seconds_after_load: f64,
        drained: bool,
        latency: Summary,
        mut timeline: Vec<TimelinePoint>,
    ) -> Delivery {
        let mut previous = (0.0, 0);
        for point in &mut timeline {
            let dt = point.t_s - previous.0;
            if dt > 0.0 {
                point.per_s = Some(round1((point.delivered - previous.1) as f64 / dt));
            }
            previous = (point.t_s, point.delivered);
        }
        // With a timeline of one point (only the end of the load) there are no windows.
        let slowest_window_per_s =
            if timeline.len() > 1 { timeline.iter().filter_map(|p| p.per_s).reduce(f64::min) } else { None };
        Delivery {
            delivered,
            delivered_at_load_end,
            backlog_at_load_end: accepted - delivered_at_load_end,
            ended_otherwise,
            delivered_during_load_per_s: round1(delivered_at_load_end as f64 / load_seconds),
            end_to_end_per_s: end_to_end_seconds.map(|s| round1(delivered as f64 / s)),
            end_to_end_seconds: end_to_end_seconds.map(|s| (s * 100.0).round() / 100.0),
            drain_seconds_after_load: (drain_seconds_after_load * 100.0).round() / 100.0,
            drained,
            latency,
            timeline,
            slowest_window_per_s,
        }
    }
}

/// A figure beside the target for it.
#[derive(Serialize)]
pub struct TargetCheck {
    pub figure: String,
    pub target: String,
    pub measured: Option<f64>,
    pub met: Option<bool>,
}

#[derive(Serialize)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub backend: String,
    /// Started by the bench, or a running server (`--url`).
    pub server: &'static str,
    /// `closed` (as fast as possible) or `open` (fixed rate).
    pub load: &'static str,
    pub connections: usize,
    pub duration_s: f64,
    /// Open loop: the scheduled rate.
    pub rate_per_s: Option<u64>,
    pub load_average_before: Option<[f64; 3]>,
    pub requests: Requests,
    /// From the first request to the last answer.
    pub load_seconds: f64,
    pub accepted_per_s: f64,
    /// Request → 2xx answer; open loop: from the request's scheduled time.
    pub accept_latency: Summary,
    /// Open loop: request → 2xx answer from the actual send.
    pub accept_service_latency: Option<Summary>,
    pub delivery: Option<Delivery>,
    /// With webhook receivers or SSE subscribers: what they got.
    pub insight: Option<InsightReport>,
    /// Peak resident memory of the server process (VmHWM), MiB.
    pub peak_rss_mib: Option<f64>,
    /// CPU use while the load ran.
    pub cpu: CpuUse,
    /// Sustained scenario: acceptance and delivery during the load both within 1 % of the rate.
    pub kept_up: Option<bool>,
    pub targets: Vec<TargetCheck>,
    /// Lines the server logged (warnings and errors, JSON) and the last of them.
    pub server_log_lines: Option<u64>,
    pub server_log_tail: Vec<String>,
    pub server_stop: Option<StopReport>,
}

impl ScenarioReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &Plan,
        target: &Target,
        connections: usize,
        load_average_before: Option<[f64; 3]>,
        requests: Requests,
        load_seconds: f64,
        accepted_per_s: f64,
        accept_latency: Summary,
        accept_service_latency: Option<Summary>,
        delivery: Option<Delivery>,
        insight: Option<InsightReport>,
        peak_rss_mib: Option<f64>,
        cpu: CpuUse,
        server_log_lines: Option<u64>,
        server_log_tail: Vec<String>,
    ) -> ScenarioReport {
        let open = plan.rate > 0;
        let kept_up = (open && (plan.name == "sustained" || plan.name == "insight")).then(|| {
            let rate = plan.rate as f64;
            requests.not_sent == 0
                && accepted_per_s >= KEPT_UP * rate
                && delivery.as_ref().is_some_and(|d| d.delivered_during_load_per_s >= KEPT_UP * rate)
        });
        let mut report = ScenarioReport {
            scenario: plan.name,
            backend: target.backend.clone(),
            server: if target.spawned { "started by the bench" } else { "running (--url)" },
            load: if open { "open" } else { "closed" },
            connections,
            duration_s: plan.duration.as_secs_f64(),
            rate_per_s: open.then_some(plan.rate),
            load_average_before,
            requests,
            load_seconds: (load_seconds * 1000.0).round() / 1000.0,
            accepted_per_s: round1(accepted_per_s),
            accept_latency,
            accept_service_latency,
            delivery,
            insight,
            peak_rss_mib: peak_rss_mib.map(round1),
            cpu,
            kept_up,
            targets: Vec::new(),
            server_log_lines,
            server_log_tail,
            server_stop: None,
        };
        report.targets = report.checks(plan);
        report
    }

    fn checks(&self, plan: &Plan) -> Vec<TargetCheck> {
        let check = |figure: &str, target: String, measured: Option<f64>, ok: &dyn Fn(f64) -> bool| TargetCheck {
            figure: figure.into(),
            target,
            measured,
            met: measured.map(ok),
        };
        let mut out = Vec::new();
        if plan.rate == 0 {
            out.push(check(
                "accepted msg/s",
                format!(">= {}", targets::ACCEPTED_PER_S),
                Some(self.accepted_per_s),
                &|v| v >= targets::ACCEPTED_PER_S,
            ));
        }
        if plan.rate == targets::P99_AT_RATE {
            out.push(check(
                "p99 accept latency ms",
                format!("<= {} at {}/s", targets::P99_ACCEPT_MS, targets::P99_AT_RATE),
                self.accept_latency.p99_ms,
                &|v| v <= targets::P99_ACCEPT_MS,
            ));
        }
        if plan.name == "sustained" {
            let long_enough = plan.duration.as_secs_f64() >= targets::SUSTAINED_SECONDS;
            // Offered at exactly the target rate, delivery can only come close to it: 1 % slack.
            let enough = if plan.rate as f64 >= targets::DELIVERED_PER_S {
                targets::DELIVERED_PER_S * KEPT_UP
            } else {
                targets::DELIVERED_PER_S
            };
            out.push(check(
                "delivered msg/s during the load",
                format!(">= {} for {} s (within 1 %)", targets::DELIVERED_PER_S, targets::SUSTAINED_SECONDS),
                self.delivery.as_ref().map(|d| d.delivered_during_load_per_s),
                &|v| long_enough && v >= enough,
            ));
        }
        if let Some(i) = &self.insight {
            out.extend(insight_checks(i, plan, self.accepted_per_s, self.delivery.as_ref()));
        }
        out.push(check("peak RSS MiB", format!("<= {}", targets::PEAK_RSS_MIB), self.peak_rss_mib, &|v| {
            v <= targets::PEAK_RSS_MIB
        }));
        out
    }

    /// Why this run must not pass, if it must not.
    pub fn failures(&self, allow_errors: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.requests.errors > 0 && !allow_errors {
            out.push(format!(
                "{}: {} of {} requests failed (first: {}); --allow-errors accepts that",
                self.scenario,
                self.requests.errors,
                self.requests.sent,
                self.requests.first_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(d) = &self.delivery
            && !d.drained
        {
            out.push(format!(
                "{}: only {} of {} accepted messages were delivered by the end of the drain timeout",
                self.scenario, d.delivered, self.requests.accepted
            ));
        }
        if let Some(i) = &self.insight
            && i.all_received == Some(false)
        {
            let expected = i.events_expected.unwrap_or(0);
            let receivers: Vec<String> = i.webhook_receivers.iter().map(|r| thousands(r.events)).collect();
            out.push(format!(
                "{}: not every event reached every listener within {} s: expected {} each; webhook receivers got {}; \
                 {} of {} SSE subscribers complete (fewest {})",
                self.scenario,
                i.waited_seconds,
                thousands(expected),
                if receivers.is_empty() { "–".into() } else { receivers.join(", ") },
                i.sse.complete,
                i.sse.subscribers,
                thousands(i.sse.min_events)
            ));
        }
        out
    }
}

/// The targets with webhooks and live streams: every event everywhere, the webhook backlog gone
/// within 10 s, and the send path (which the issue compares with a run without listeners).
fn insight_checks(
    i: &InsightReport,
    plan: &Plan,
    accepted_per_s: f64,
    delivery: Option<&Delivery>,
) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    if let Some(expected) = i.events_expected {
        let fewest = i
            .webhook_receivers
            .iter()
            .map(|r| r.events)
            .chain((i.sse.subscribers > 0).then_some(i.sse.min_events))
            .min();
        out.push(TargetCheck {
            figure: "events at every listener".into(),
            target: format!(
                "all {} at each of {} receivers and {} subscribers (fewest received)",
                thousands(expected),
                i.webhook_receivers.len(),
                i.sse.subscribers
            ),
            measured: fewest.map(|n| n as f64),
            met: i.all_received,
        });
    }
    if !i.webhook_receivers.is_empty() {
        let complete = i.webhook_receivers.iter().all(|r| r.complete != Some(false));
        out.push(TargetCheck {
            figure: "webhook backlog drained s".into(),
            target: format!("all delivered <= {} s after the sending stops", targets::WEBHOOK_DRAIN_SECONDS),
            measured: i.webhook_drain_seconds,
            met: Some(complete && i.webhook_drain_seconds.is_some_and(|s| s <= targets::WEBHOOK_DRAIN_SECONDS)),
        });
    }
    if plan.rate > 0 {
        // Without listeners the send path keeps up with the offered rate (the sustained target),
        // so 80 % of the rate is what a drop of at most 20 % leaves.
        let floor = plan.rate as f64 * targets::SEND_PATH_KEPT;
        let measured = delivery.map_or(accepted_per_s, |d| accepted_per_s.min(d.delivered_during_load_per_s));
        out.push(TargetCheck {
            figure: "send path msg/s (accepted, delivered)".into(),
            target: format!(
                ">= {} (at most {:.0} % below the rate; compare with a sustained run)",
                thousands(floor.round() as u64),
                (1.0 - targets::SEND_PATH_KEPT) * 100.0
            ),
            measured: Some(measured),
            met: Some(measured >= floor),
        });
    }
    out
}

/// The table rows of the webhook receivers and SSE subscribers.
fn insight_rows(i: &InsightReport, row: &mut dyn FnMut(&str, String)) {
    let secs = |s: Option<f64>| s.map_or("–".to_string(), |s| format!("{s:.2} s"));
    row(
        "events expected",
        match i.events_expected {
            Some(n) => format!("{} (5 per accepted message)", thousands(n)),
            None => "unknown (server at --url): waited until 5 s without a new event".into(),
        },
    );
    row("listeners attached in", format!("{:.2} s (before the load)", i.setup_seconds));
    for (n, r) in i.webhook_receivers.iter().enumerate() {
        let mut line = format!(
            "{} distinct events, {} requests ({} duplicates",
            thousands(r.events),
            thousands(r.requests),
            thousands(r.duplicates)
        );
        if r.without_id > 0 {
            let _ = write!(line, ", {} without webhook-id", thousands(r.without_id));
        }
        let _ = write!(line, "); last new event {} after the load", secs(r.last_event_after_load_s));
        if r.complete == Some(false) {
            line.push_str(" — INCOMPLETE");
        }
        row(&format!("webhook receiver {}", n + 1), line);
    }
    if i.sse.subscribers > 0 {
        let s = &i.sse;
        let complete = if i.events_expected.is_some() {
            format!("{} of {} complete", s.complete, s.subscribers)
        } else {
            format!("{}", s.subscribers)
        };
        row(
            "SSE subscribers",
            format!(
                "{complete}; events per subscriber min {} max {} ({} in all); {} ended early",
                thousands(s.min_events),
                thousands(s.max_events),
                thousands(s.total_events),
                s.ended_early
            ),
        );
        row("SSE slowest last event", format!("{} after the load", secs(s.slowest_last_event_after_load_s)));
        if let Some(why) = &s.first_end {
            row("SSE first stream ended", why.clone());
        }
    }
    let wait = if i.timed_out {
        format!("{:.1} s, then gave up: NOT EVERY EVENT CAME", i.waited_seconds)
    } else {
        format!("{:.1} s after the deliveries", i.waited_seconds)
    };
    row("waited for the events", wait);
}

/// The line printed (on stderr) as a scenario starts.
pub fn announce(plan: &Plan, target: &Target, connections: usize) -> String {
    let shape = if plan.rate > 0 {
        format!("open loop at {}/s", thousands(plan.rate))
    } else {
        "closed loop, as fast as possible".to_string()
    };
    let server = if target.spawned { "a fresh server" } else { "the server at --url" };
    let listeners = if plan.webhook_receivers + plan.sse_subscribers > 0 {
        format!(", {} webhook receivers, {} SSE subscribers", plan.webhook_receivers, plan.sse_subscribers)
    } else {
        String::new()
    };
    format!(
        "parley bench: {} on {server} ({}), {shape}, {connections} connections{listeners}, {} s …",
        plan.name,
        target.backend,
        plan.duration.as_secs_f64()
    )
}

fn rate(x: f64) -> String {
    thousands(x.round().max(0.0) as u64)
}

fn ms(x: Option<f64>) -> String {
    match x {
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => "–".into(),
    }
}

fn latency_line(s: &Summary) -> String {
    format!("p50 {}   p99 {}   max {}", ms(s.p50_ms), ms(s.p99_ms), ms(s.max_ms))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    }
}

/// The table printed for a scenario.
pub fn table(r: &ScenarioReport) -> String {
    let mut out = String::new();
    let shape = match r.rate_per_s {
        Some(rate) => format!("open loop at {}/s", thousands(rate)),
        None => "closed loop".into(),
    };
    let _ = writeln!(
        out,
        "\n== {} · {} · {shape} · {} connections · {} s ({})",
        r.scenario, r.backend, r.connections, r.duration_s, r.server
    );
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<30} {value}");
    };
    if let Some([a, b, c]) = r.load_average_before {
        row("load average before", format!("{a:.2} {b:.2} {c:.2}"));
    }
    let q = &r.requests;
    let mut requests = format!("{} sent, {} accepted, {} errors", thousands(q.sent), thousands(q.accepted), q.errors);
    if !q.statuses.is_empty() {
        let statuses: Vec<String> = q.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        let _ = write!(requests, " ({})", statuses.join(", "));
    }
    if q.transport_errors + q.timeouts > 0 {
        let _ = write!(requests, " ({} transport, {} timeouts)", q.transport_errors, q.timeouts);
    }
    if q.not_sent > 0 {
        let _ = write!(requests, ", {} not sent (server fell behind)", thousands(q.not_sent));
    }
    row("requests", requests);
    row("accepted", format!("{} msg/s over {:.2} s", rate(r.accepted_per_s), r.load_seconds));
    let from = if r.rate_per_s.is_some() { " (from schedule)" } else { "" };
    row(&format!("accept latency{from}"), latency_line(&r.accept_latency));
    if let Some(s) = &r.accept_service_latency {
        row("accept latency (from send)", latency_line(s));
    }
    match &r.delivery {
        Some(d) => {
            row(
                "delivered during the load",
                format!(
                    "{} msg/s ({} by the end of the load, backlog {})",
                    rate(d.delivered_during_load_per_s),
                    thousands(d.delivered_at_load_end.max(0) as u64),
                    thousands(d.backlog_at_load_end.max(0) as u64)
                ),
            );
            let e2e = match (d.end_to_end_per_s, d.end_to_end_seconds) {
                (Some(v), Some(s)) => format!(
                    "{} msg/s ({} in {s:.2} s; last delivery {:.2} s after the load)",
                    rate(v),
                    thousands(d.delivered.max(0) as u64),
                    d.drain_seconds_after_load
                ),
                _ => format!(
                    "NOT DRAINED: {} of {} delivered when the drain timeout ran out",
                    thousands(d.delivered.max(0) as u64),
                    thousands(q.accepted)
                ),
            };
            row("delivered end to end", e2e);
            if d.ended_otherwise > 0 {
                row("ended undelivered", thousands(d.ended_otherwise as u64));
            }
            row("accepted → delivered", latency_line(&d.latency));
            if d.timeline.len() > 1 {
                let points: Vec<String> =
                    d.timeline.iter().map(|p| format!("{:.0}s:{}", p.t_s, p.per_s.map_or("–".into(), rate))).collect();
                row("delivered/s by window", points.join("  "));
            }
        }
        None => row("delivered", "not counted (needs --database-url and --workspace with --url)".into()),
    }
    if let Some(i) = &r.insight {
        insight_rows(i, &mut row);
    }
    if let Some(kept) = r.kept_up {
        row("kept up", if kept { "yes".into() } else { "NO".into() });
    }
    row("peak RSS (server)", r.peak_rss_mib.map_or("–".into(), |m| format!("{m:.1} MiB")));
    let pct = |p: Option<f64>| p.map_or("–".into(), |p| format!("{p:.0} %"));
    row(
        "CPU during the load",
        format!(
            "server {}, bench {}, everything else {}; machine {} busy ({} cores; 100 % = one core)",
            pct(r.cpu.server_pct),
            pct(r.cpu.bench_pct),
            pct(r.cpu.others_pct),
            pct(r.cpu.machine_busy_pct),
            r.cpu.cores
        ),
    );
    if !r.cpu.server_threads.is_empty() {
        let threads: Vec<String> = r
            .cpu
            .server_threads
            .iter()
            .filter(|t| t.pct >= 1.0)
            .map(|t| format!("{} ×{} {:.0} %", t.name, t.threads, t.pct))
            .collect();
        row("server threads", threads.join(", "));
    }
    if !r.cpu.processes.is_empty() {
        let processes: Vec<String> =
            r.cpu.processes.iter().map(|p| format!("{} ×{} {:.0} %", p.name, p.threads, p.pct)).collect();
        row("busiest processes", processes.join(", "));
    }
    if let Some(n) = r.server_log_lines.filter(|n| *n > 0) {
        row(
            "server warnings/errors",
            format!("{n} log lines; last: {}", r.server_log_tail.last().cloned().unwrap_or_default()),
        );
    }
    if let Some(stop) = &r.server_stop {
        let how = if stop.killed { "killed after 15 s" } else { "stopped on SIGTERM" };
        row("server shutdown", format!("{how} in {:.2} s ({})", stop.seconds, stop.exit));
    }
    for t in &r.targets {
        let measured = t.measured.map_or("–".into(), |v| if v >= 100.0 { rate(v) } else { format!("{v:.1}") });
        row(&format!("target: {}", t.figure), format!("{} → {measured}: {}", t.target, verdict(t.met)));
    }
    out
}
