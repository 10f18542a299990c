//! Where the CPU went while the load ran: the server's threads (grouped by name), the bench
//! itself, and the whole machine, from `/proc` (Linux; elsewhere the figures are absent).

use super::stats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux everywhere).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU counters at one moment.
pub struct Sample {
    at: Instant,
    server_threads: BTreeMap<u32, (String, u64)>,
    /// Every process of the machine: pid → (name, ticks).
    processes: BTreeMap<u32, (String, u64)>,
    bench: Option<u64>,
    machine: Option<(u64, u64)>,
}

/// CPU use between two samples, in percent of one core (200 % = both cores of a 2-core machine).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuUse {
    pub server_pct: Option<f64>,
    pub bench_pct: Option<f64>,
    /// All CPUs of the machine busy, in percent of the whole machine.
    pub machine_busy_pct: Option<f64>,
    /// CPU used by everything but the server and the bench, in percent of one core: the
    /// database server with PostgreSQL, and otherwise noise from other work on the machine
    /// (which short-lived processes that [`CpuUse::processes`] cannot see also show up in).
    pub others_pct: Option<f64>,
    pub cores: usize,
    /// The server's threads by name, busiest first.
    pub server_threads: Vec<ThreadGroup>,
    /// The busiest processes of the machine by name (the server is `parley`, and so is the
    /// bench; PostgreSQL's are `postgres`), busiest first: what else took CPU during the load.
    pub processes: Vec<ThreadGroup>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThreadGroup {
    pub name: String,
    pub threads: usize,
    pub pct: f64,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub fn sample(server: Option<u32>) -> Sample {
    let mut server_threads = BTreeMap::new();
    if let Some(pid) = server
        && let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task"))
    {
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(stat) = read(&format!("/proc/{pid}/task/{tid}/stat")).and_then(|s| stats::stat_cpu_ticks(&s)) {
                server_threads.insert(tid, stat);
            }
        }
    }
    let mut processes = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(stat) = read(&format!("/proc/{pid}/stat")).and_then(|s| stats::stat_cpu_ticks(&s)) {
                processes.insert(pid, stat);
            }
        }
    }
    Sample {
        at: Instant::now(),
        server_threads,
        processes,
        bench: read("/proc/self/stat").and_then(|s| stats::stat_cpu_ticks(&s)).map(|(_, t)| t),
        machine: read("/proc/stat").and_then(|s| stats::machine_cpu_ticks(&s)),
    }
}

pub fn between(before: &Sample, after: &Sample) -> CpuUse {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if seconds <= 0.0 {
        return CpuUse { cores, ..Default::default() };
    }
    let pct = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds * 100.0;
    // Threads (processes) that started during the load count from zero; those that ended are lost.
    let grouped = |before: &BTreeMap<u32, (String, u64)>, after: &BTreeMap<u32, (String, u64)>| {
        let mut groups: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for (id, (name, ticks)) in after {
            let earlier = before.get(id).map_or(0, |(_, t)| *t);
            let group = groups.entry(name.clone()).or_default();
            group.0 += 1;
            group.1 += ticks.saturating_sub(earlier);
        }
        let ticks: u64 = groups.values().map(|(_, t)| t).sum();
        let mut list: Vec<ThreadGroup> = groups
            .into_iter()
            .map(|(name, (threads, ticks))| ThreadGroup { name, threads, pct: round1(pct(ticks)) })
            .collect();
        list.sort_by(|a, b| b.pct.total_cmp(&a.pct));
        (ticks, list)
    };
    let (server_ticks, server_threads) = grouped(&before.server_threads, &after.server_threads);
    let (_, mut processes) = grouped(&before.processes, &after.processes);
    processes.retain(|p| p.pct >= 1.0);
    processes.truncate(8);
    let server_pct = (!after.server_threads.is_empty()).then(|| round1(pct(server_ticks)));
    let bench_pct = before.bench.zip(after.bench).map(|(b, a)| round1(pct(a.saturating_sub(b))));
    let machine_busy_pct = before.machine.zip(after.machine).and_then(|((b_busy, b_total), (a_busy, a_total))| {
        let total = a_total.saturating_sub(b_total);
        (total > 0).then(|| round1(a_busy.saturating_sub(b_busy) as f64 / total as f64 * 100.0))
    });
    let others_pct = machine_busy_pct
        .zip(bench_pct)
        .map(|(machine, bench)| round1((machine * cores as f64 - bench - server_pct.unwrap_or(0.0)).max(0.0)));
    CpuUse { server_pct, bench_pct, machine_busy_pct, others_pct, cores, server_threads, processes }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = read("/proc/loadavg")?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}
