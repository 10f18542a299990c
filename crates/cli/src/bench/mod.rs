//! `parley bench`: drive a Parley server with many keep-alive connections and report how many
//! messages per second it accepts and delivers, its latencies, its memory and where its CPU goes.
//!
//! By default the bench starts a server itself (this executable as `parley serve` on a free
//! loopback port, over a fresh SQLite file, or a fresh PostgreSQL database with `--database-url`)
//! with a workspace of its own whose sandbox accounts answer and deliver with no delay, so that
//! the figures measure Parley and not the fake carrier. With `--url` and `--key` it drives a
//! server that is already running instead.
//!
//! Scenarios: `throughput` (closed loop, as fast as possible, 20 s), `latency` (open loop at
//! 2,000 messages/s for 20 s), `sustained` (open loop at 5,000/s for 60 s: does delivery keep
//! up?), `insight` (the sustained load with one webhook receiver and 100 live-stream subscribers:
//! does every event reach every one of them, and what does that cost the send path?), `all`
//! (throughput, latency and sustained in turn, each on a fresh server). `--rate` and `--duration`
//! override a scenario's figures; `--webhook-receivers` and `--sse-subscribers` attach listeners to
//! any scenario.

mod cpu;
mod insight;
mod load;
mod report;
mod smsc;
mod stats;
mod target;

use anyhow::Context;
use bytes::Bytes;
use parley_domain::{MessageState, WorkspaceId};
use parley_store::{MessageStats, Store};
use report::{Delivery, Report, Requests, ScenarioReport, TimelinePoint};
use std::sync::Arc;
use std::time::Duration;
use target::Target;
use tokio::time::Instant;

/// The issue's targets (2-core machine, SQLite).
pub(crate) mod targets {
    pub const ACCEPTED_PER_S: f64 = 10_000.0;
    pub const DELIVERED_PER_S: f64 = 5_000.0;
    pub const SUSTAINED_SECONDS: f64 = 60.0;
    pub const P99_ACCEPT_MS: f64 = 25.0;
    pub const P99_AT_RATE: u64 = 2_000;
    pub const PEAK_RSS_MIB: f64 = 200.0;
    /// With webhooks and live-stream subscribers: the webhook backlog is gone this long after
    /// the sending stops …
    pub const WEBHOOK_DRAIN_SECONDS: f64 = 10.0;
    /// … and the send path keeps at least this share of its throughput without them.
    pub const SEND_PATH_KEPT: f64 = 0.8;
}

/// The message every request sends.
const BODY: &str = r#"{"to":"+4915123456789","channel":"sms","content":{"type":"text","text":"Your order #1234 has shipped and arrives Tuesday."}}"#;
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long the preflight message may take to be delivered.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Closed loop, as fast as possible, 20 s.
    Throughput,
    /// Open loop at 2,000 messages/s for 20 s: accept latency under a steady load.
    Latency,
    /// Open loop at 5,000 messages/s for 60 s: does delivery keep up with acceptance?
    Sustained,
    /// Open loop at 5,000 messages/s for 60 s with 1 webhook receiver and 100 SSE subscribers:
    /// does every event reach every one of them? (Compare the send path with `sustained`.)
    Insight,
    /// Throughput, latency and sustained in turn, each on a fresh server.
    All,
}

/// Measure a server: accepted and delivered messages per second, latencies, memory.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A preset: throughput, latency, sustained, insight or all (default: throughput, or a custom
    /// run when --rate is given).
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Keep-alive HTTP/1.1 connections sending at once.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load (default 20, or the scenario's).
    #[arg(long)]
    duration: Option<f64>,
    /// Messages per second on a fixed schedule (open loop); 0 = as fast as possible (closed loop).
    #[arg(long)]
    rate: Option<u64>,
    /// After the load, how long to wait for every accepted message to be delivered (seconds).
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
    /// Without --url: a PostgreSQL server on which to create (and afterwards drop) a fresh
    /// database for the bench; SQLite when absent. With --url: the running server's database,
    /// to count delivered messages (with --workspace).
    #[arg(long)]
    database_url: Option<String>,
    /// Drive a running server at this base URL instead of starting one.
    #[arg(long, requires = "key")]
    url: Option<String>,
    /// With --url: an API key with messages:write.
    #[arg(long, env = "PARLEY_KEY", hide_env_values = true)]
    key: Option<String>,
    /// With --url and --database-url: the key's workspace (wsp_…), whose messages are counted.
    #[arg(long, requires = "url")]
    workspace: Option<String>,
    /// With --url: the server's process id, for its peak memory and CPU figures.
    #[arg(long, requires = "url")]
    server_pid: Option<u32>,
    /// Local webhook receivers (on 127.0.0.2), each registered as an endpoint, that must get
    /// every event (default 0, or the scenario's: insight 1). Needs an admin key with --url.
    #[arg(long)]
    webhook_receivers: Option<usize>,
    /// Connections following GET /v1/stream during the run, each of which must get every event
    /// (default 0, or the scenario's: insight 100).
    #[arg(long)]
    sse_subscribers: Option<usize>,
    /// Do not fail the run when some requests were refused or failed.
    #[arg(long)]
    allow_errors: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// `sms` (the sandbox) or `sms-smpp`: SMS through an SMPP account bound to a minimal SMSC in
    /// the bench process (one transceiver bind, window 50; delivered = receipt matched).
    #[arg(long, value_enum, default_value = "sms")]
    channel: smsc::BenchChannel,
}

/// One scenario's load.
#[derive(Clone, Debug)]
struct Plan {
    name: &'static str,
    rate: u64,
    duration: Duration,
    /// Count delivered messages this often during the load (a timeline).
    sample_every: Option<Duration>,
    /// Webhook receivers and SSE subscribers attached during the run.
    webhook_receivers: usize,
    sse_subscribers: usize,
}

impl BenchArgs {
    fn plans(&self) -> anyhow::Result<Vec<Plan>> {
        let preset = |name, rate, seconds: u64, sample: Option<u64>| Plan {
            name,
            rate,
            duration: Duration::from_secs(seconds),
            sample_every: sample.map(Duration::from_secs),
            webhook_receivers: 0,
            sse_subscribers: 0,
        };
        let throughput = preset("throughput", 0, 20, None);
        let latency = preset("latency", targets::P99_AT_RATE, 20, None);
        let sustained = preset("sustained", 5_000, 60, Some(10));
        let insight = Plan { webhook_receivers: 1, sse_subscribers: 100, ..preset("insight", 5_000, 60, Some(10)) };
        let mut plans = match self.scenario {
            Some(Scenario::Throughput) => vec![throughput],
            Some(Scenario::Latency) => vec![latency],
            Some(Scenario::Sustained) => vec![sustained],
            Some(Scenario::Insight) => vec![insight],
            Some(Scenario::All) => vec![throughput, latency, sustained],
            None if self.rate.is_some_and(|r| r > 0) => vec![preset("custom", 0, 20, None)],
            None => vec![throughput],
        };
        for plan in &mut plans {
            if let Some(rate) = self.rate {
                plan.rate = rate;
            }
            if let Some(seconds) = self.duration {
                anyhow::ensure!(
                    seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0,
                    "--duration must be more than 0 and at most 86400 seconds"
                );
                plan.duration = Duration::from_secs_f64(seconds);
            }
            if let Some(n) = self.webhook_receivers {
                plan.webhook_receivers = n;
            }
            if let Some(n) = self.sse_subscribers {
                plan.sse_subscribers = n;
            }
        }
        anyhow::ensure!(self.webhook_receivers.is_none_or(|n| n <= 100), "--webhook-receivers must be at most 100");
        anyhow::ensure!(self.sse_subscribers.is_none_or(|n| n <= 10_000), "--sse-subscribers must be at most 10000");
        anyhow::ensure!(self.connections > 0 && self.connections <= 10_000, "--connections must be 1 to 10000");
        anyhow::ensure!(self.rate.is_none_or(|r| r <= 1_000_000), "--rate must be at most 1000000");
        Ok(plans)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plans = args.plans()?;
    let mut report = Report { scenarios: Vec::new() };
    let mut failures = Vec::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    for plan in &plans {
        let mut target = match &args.url {
            Some(url) => Target::external(
                url,
                args.key.as_deref().unwrap_or_default(),
                args.database_url.as_deref(),
                args.workspace.as_deref(),
                args.server_pid,
            )
            .await
            .context("cannot use the server at --url")?,
            None => Target::spawn(args.database_url.as_deref()).await.context("cannot start a server to benchmark")?,
        };
        eprintln!("{}", report::announce(plan, &target, args.connections));
        let smsc = match smsc::attach(args.channel, &target.endpoint).await {
            Ok(s) => s,
            Err(e) => {
                target.cleanup().await;
                return Err(e.context("cannot attach the bench SMSC"));
            }
        };
        let outcome = tokio::select! {
            r = measure(&target, plan, &args) => r,
            _ = &mut interrupted => Err(anyhow::anyhow!("interrupted")),
        };
        let stop = target.cleanup().await;
        if let Some(smsc) = &smsc {
            eprintln!("{}", smsc.summary());
        }
        let mut scenario = match outcome {
            Ok(s) => s,
            Err(e) => {
                if !report.scenarios.is_empty() && !args.json {
                    eprintln!("(the scenarios before this one finished; their figures are above)");
                }
                return Err(e.context(format!("scenario {} failed", plan.name)));
            }
        };
        scenario.server_stop = stop;
        failures.extend(scenario.failures(args.allow_errors));
        if !args.json {
            println!("{}", report::table(&scenario));
        }
        report.scenarios.push(scenario);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if failures.is_empty() { Ok(()) } else { anyhow::bail!("{}", failures.join("; ")) }
}

fn delivered(s: &MessageStats) -> i64 {
    s.count(MessageState::Delivered) + s.count(MessageState::Read)
}

/// Messages that ended without being delivered.
fn ended_otherwise(s: &MessageStats) -> i64 {
    [
        MessageState::Failed,
        MessageState::Undelivered,
        MessageState::Rejected,
        MessageState::Expired,
        MessageState::Canceled,
    ]
    .into_iter()
    .map(|state| s.count(state))
    .sum()
}

/// Send one message and, when the database is at hand, wait until every message of the
/// workspace has settled (so that the counts of the run start from a quiet workspace).
async fn preflight(target: &Target, body: Bytes) -> anyhow::Result<Option<MessageStats>> {
    let (status, answer) = load::post_once(&target.endpoint, body).await.context("the first request failed")?;
    if !status.is_success() {
        let answer = answer.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        anyhow::bail!("the first request was answered {status}: {answer}");
    }
    let (Some(store), Some(workspace)) = (&target.store, target.workspace) else { return Ok(None) };
    let deadline = Instant::now() + PREFLIGHT_TIMEOUT;
    loop {
        let s = store.message_stats(workspace).await?;
        if delivered(&s) + ended_otherwise(&s) + s.count(MessageState::Received) >= s.total() {
            if target.spawned && delivered(&s) == 0 {
                anyhow::bail!("the first message ended without being delivered: {:?}", s.by_state);
            }
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            if target.spawned {
                anyhow::bail!("the first message was not delivered within {} s", PREFLIGHT_TIMEOUT.as_secs());
            }
            eprintln!(
                "warning: the workspace still has messages in flight; the delivered counts may include some of them"
            );
            return Ok(Some(s));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Count delivered messages every `every` until told to stop.
fn spawn_sampler(
    store: Arc<dyn Store>,
    workspace: WorkspaceId,
    baseline: i64,
    started: Instant,
    every: Duration,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Vec<TimelinePoint>>) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut points = Vec::new();
        let mut next = started + every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = &mut stopped => return points,
            }
            let at = Instant::now();
            if let Ok(s) = store.message_stats(workspace).await {
                points.push(TimelinePoint {
                    t_s: cpu::round1(at.duration_since(started).as_secs_f64()),
                    delivered: delivered(&s) - baseline,
                    per_s: None,
                });
            }
            next += every;
        }
    });
    (stop, task)
}

async fn measure(target: &Target, plan: &Plan, args: &BenchArgs) -> anyhow::Result<ScenarioReport> {
    let body = Bytes::from_static(BODY.as_bytes());
    let baseline = preflight(target, body.clone()).await?;
    // After the preflight: its events are not counted. Every stream is open before the load.
    let insight = if plan.webhook_receivers + plan.sse_subscribers > 0 {
        let attached = insight::Insight::start(&target.endpoint, plan.webhook_receivers, plan.sse_subscribers)
            .await
            .context("cannot attach the webhook receivers and SSE subscribers")?;
        Some(attached)
    } else {
        None
    };
    let outcome = load_and_count(target, plan, args, body, baseline, insight.as_ref()).await;
    if let Some(attached) = insight {
        attached.finish(&target.endpoint).await;
    }
    outcome
}

/// The load, then the deliveries and the events of the accepted messages.
async fn load_and_count(
    target: &Target,
    plan: &Plan,
    args: &BenchArgs,
    body: Bytes,
    baseline: Option<MessageStats>,
    insight: Option<&insight::Insight>,
) -> anyhow::Result<ScenarioReport> {
    let counting = match (&target.store, target.workspace, &baseline) {
        (Some(store), Some(ws), Some(base)) => Some((store.clone(), ws, base.clone())),
        _ => None,
    };
    let load_average = cpu::load_average();
    let spec = load::LoadSpec { connections: args.connections, duration: plan.duration, rate: plan.rate };
    let cpu_before = cpu::sample(target.pid);
    let sampler = match (&counting, plan.sample_every) {
        (Some((store, ws, base)), Some(every)) => {
            Some(spawn_sampler(store.clone(), *ws, delivered(base), Instant::now(), every))
        }
        _ => None,
    };
    let outcome = load::run(target.endpoint.clone(), body, spec).await?;
    let cpu_use = cpu::between(&cpu_before, &cpu::sample(target.pid));
    let load_seconds = outcome.seconds();
    let accepted_per_s = outcome.accepted as f64 / load_seconds;

    let mut timeline = match sampler {
        Some((stop, task)) => {
            let _ = stop.send(());
            task.await.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let delivery = match &counting {
        Some((store, ws, base)) => {
            let at_load_end = delivered(&store.message_stats(*ws).await?) - delivered(base);
            if plan.sample_every.is_some() {
                // A sample taken just as the load ended would make a window of no length.
                timeline.retain(|p| p.t_s < load_seconds - 0.5);
                timeline.push(TimelinePoint { t_s: cpu::round1(load_seconds), delivered: at_load_end, per_s: None });
            }
            let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
            let accepted = i64::try_from(outcome.accepted).unwrap_or(i64::MAX);
            let (done_at, drained, last) = loop {
                let now = Instant::now();
                let s = store.message_stats(*ws).await?;
                let done = delivered(&s) - delivered(base);
                let other = ended_otherwise(&s) - ended_otherwise(base);
                if done + other >= accepted {
                    break (now, true, s);
                }
                if now >= deadline {
                    break (now, false, s);
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            };
            let total_delivered = delivered(&last) - delivered(base);
            let end_to_end_seconds = done_at.duration_since(outcome.started).as_secs_f64();
            let latencies = store.delivery_latencies_ms(*ws).await?;
            Some(Delivery::new(
                total_delivered,
                at_load_end,
                accepted,
                ended_otherwise(&last) - ended_otherwise(base),
                load_seconds,
                drained.then_some(end_to_end_seconds),
                done_at.duration_since(outcome.finished).as_secs_f64(),
                drained,
                stats::Summary::from_millis(latencies),
                timeline,
            ))
        }
        None => None,
    };
    let insight = match insight {
        Some(attached) => {
            // A server at --url may send other events, or other events per message.
            let expected = target.spawned.then(|| outcome.accepted * insight::EVENTS_PER_MESSAGE);
            Some(attached.wait(expected, outcome.finished, insight::WAIT_TIMEOUT).await)
        }
        None => None,
    };
    let (log_lines, log_tail) = target.log.snapshot();
    Ok(ScenarioReport::new(
        plan,
        target,
        args.connections,
        load_average,
        Requests::from(&outcome),
        load_seconds,
        accepted_per_s,
        stats::Summary::from_micros(outcome.latencies_us),
        (plan.rate > 0).then(|| stats::Summary::from_micros(outcome.service_us)),
        delivery,
        insight,
        target.peak_rss_kib().map(|kib| kib as f64 / 1024.0),
        cpu_use,
        target.spawned.then_some(log_lines),
        log_tail,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plans(args: &[&str]) -> anyhow::Result<Vec<Plan>> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        cli.bench.plans()
    }

    #[test]
    fn scenarios_and_overrides() {
        let p = plans(&[]).unwrap();
        assert_eq!((p.len(), p[0].name, p[0].rate, p[0].duration.as_secs()), (1, "throughput", 0, 20));
        let p = plans(&["--scenario", "latency"]).unwrap();
        assert_eq!((p[0].rate, p[0].duration.as_secs()), (2000, 20));
        let p = plans(&["--scenario", "sustained"]).unwrap();
        assert_eq!((p[0].rate, p[0].duration.as_secs(), p[0].sample_every), (5000, 60, Some(Duration::from_secs(10))));
        let p = plans(&["--scenario", "all", "--duration", "2.5"]).unwrap();
        let names: Vec<_> = p.iter().map(|p| p.name).collect();
        assert_eq!(names, ["throughput", "latency", "sustained"]);
        assert!(p.iter().all(|p| p.duration == Duration::from_millis(2500)));
        let p = plans(&["--scenario", "insight"]).unwrap();
        assert_eq!((p.len(), p[0].name, p[0].rate, p[0].duration.as_secs()), (1, "insight", 5000, 60));
        assert_eq!((p[0].webhook_receivers, p[0].sse_subscribers), (1, 100));
        assert_eq!(p[0].sample_every, Some(Duration::from_secs(10)));
        let p =
            plans(&["--scenario", "insight", "--duration", "10", "--rate", "1000", "--sse-subscribers", "3"]).unwrap();
        assert_eq!(
            (p[0].rate, p[0].duration.as_secs(), p[0].webhook_receivers, p[0].sse_subscribers),
            (1000, 10, 1, 3)
        );
        // The other presets have no listeners unless asked; `all` stays the three scenarios.
        let p = plans(&["--scenario", "all"]).unwrap();
        assert!(p.iter().all(|p| p.webhook_receivers == 0 && p.sse_subscribers == 0));
        let p = plans(&["--scenario", "sustained", "--webhook-receivers", "2"]).unwrap();
        assert_eq!((p[0].name, p[0].webhook_receivers, p[0].sse_subscribers), ("sustained", 2, 0));
        assert!(plans(&["--webhook-receivers", "101"]).is_err());
        assert!(plans(&["--sse-subscribers", "10001"]).is_err());
        let p = plans(&["--rate", "300"]).unwrap();
        assert_eq!((p[0].name, p[0].rate), ("custom", 300));
        assert!(plans(&["--duration", "0"]).is_err());
        assert!(plans(&["--connections", "0"]).is_err());
        // --url needs a key; --workspace only makes sense with --url.
        assert!(plans(&["--url", "http://127.0.0.1:1"]).is_err() || std::env::var("PARLEY_KEY").is_ok());
        assert!(plans(&["--workspace", "wsp_x"]).is_err());
    }

    #[test]
    fn timeline_windows() {
        let point = |t_s, delivered| TimelinePoint { t_s, delivered, per_s: None };
        let d = Delivery::new(
            1000,
            900,
            1000,
            0,
            30.0,
            Some(31.0),
            1.0,
            true,
            stats::Summary::default(),
            vec![point(10.0, 300), point(20.0, 500), point(30.0, 900)],
        );
        let rates: Vec<_> = d.timeline.iter().map(|p| p.per_s).collect();
        assert_eq!(rates, [Some(30.0), Some(20.0), Some(40.0)]);
        assert_eq!(d.slowest_window_per_s, Some(20.0));
        assert_eq!((d.backlog_at_load_end, d.delivered_during_load_per_s), (100, 30.0));
        assert_eq!(d.end_to_end_per_s, Some(32.3));
    }
}
