//! The pure parts of the benchmark: percentiles, the open-loop schedule, and reading figures out
//! of `/proc` text.

use serde::Serialize;
use std::time::Duration;

/// Nearest-rank percentile of `sorted` (ascending): the smallest value such that at least
/// `q` (0.0 to 1.0) of all values are at most it. `None` for no values.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99, p99.9 and max of a set of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl Summary {
    /// From latencies in microseconds.
    pub fn from_micros(values: Vec<u32>) -> Summary {
        Summary::from_ms(values.into_iter().map(|v| f64::from(v) / 1000.0).collect())
    }

    /// From latencies in milliseconds.
    pub fn from_millis(values: Vec<i64>) -> Summary {
        Summary::from_ms(values.into_iter().map(|v| v as f64).collect())
    }

    fn from_ms(mut values: Vec<f64>) -> Summary {
        values.sort_by(f64::total_cmp);
        let mean =
            (!values.is_empty()).then(|| (values.iter().sum::<f64>() / values.len() as f64 * 1000.0).round() / 1000.0);
        Summary {
            count: values.len(),
            p50_ms: percentile(&values, 0.50),
            p99_ms: percentile(&values, 0.99),
            p999_ms: percentile(&values, 0.999),
            max_ms: values.last().copied(),
            mean_ms: mean,
        }
    }
}

/// The open-loop schedule: request `index` (from 0) is due this long after the start, on a
/// fixed grid of `rate` requests per second (`rate` > 0).
pub fn scheduled_offset(index: u64, rate: u64) -> Duration {
    let rate = u128::from(rate.max(1));
    let nanos = u128::from(index) * 1_000_000_000 / rate;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How many requests an open-loop run of `duration` at `rate` per second sends.
pub fn planned_requests(rate: u64, duration: Duration) -> u64 {
    let nanos = u128::from(rate) * duration.as_nanos();
    u64::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

/// A `kB` figure (e.g. `VmHWM`) of a `/proc/<pid>/status` text, in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The name and the CPU time (user + system, in clock ticks) of a `/proc/<pid>/stat` or
/// `/proc/<pid>/task/<tid>/stat` text. The name is in parentheses and may hold spaces and
/// parentheses itself, so the fields are counted from the last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // After the name: state (field 3), ppid, …; utime is field 14 and stime field 15.
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Busy and total clock ticks of all CPUs from `/proc/stat` (idle and iowait are not busy).
pub fn machine_cpu_ticks(proc_stat: &str) -> Option<(u64, u64)> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest figures are already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// `n` with thousands separators: 12345 → "12,345".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), Some(50));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&values, 1.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        assert_eq!(percentile(&values, 0.001), Some(1));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
        assert_eq!(percentile(&[7u32], 0.99), Some(7));
        // 1,000 values: p99.9 is the 999th, not the maximum.
        let values: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&values, 0.999), Some(999));
        // Out-of-range quantiles are clamped instead of panicking.
        assert_eq!(percentile(&values, 1.5), Some(1000));
        assert_eq!(percentile(&values, -1.0), Some(1));
        assert_eq!(percentile(&values, f64::NAN), Some(1000));
    }

    #[test]
    fn summaries_convert_units_and_sort() {
        let s = Summary::from_micros(vec![3000, 1000, 2000, 100_000]);
        assert_eq!(s.count, 4);
        assert_eq!(s.p50_ms, Some(2.0));
        assert_eq!(s.p99_ms, Some(100.0));
        assert_eq!(s.max_ms, Some(100.0));
        assert_eq!(s.mean_ms, Some(26.5));
        let s = Summary::from_millis(vec![5, 1, 3]);
        assert_eq!((s.p50_ms, s.max_ms), (Some(3.0), Some(5.0)));
        assert_eq!(Summary::from_millis(vec![]), Summary::default());
    }

    #[test]
    fn the_open_loop_schedule_is_a_fixed_grid() {
        assert_eq!(scheduled_offset(0, 2000), Duration::ZERO);
        assert_eq!(scheduled_offset(1, 2000), Duration::from_micros(500));
        assert_eq!(scheduled_offset(2000, 2000), Duration::from_secs(1));
        assert_eq!(scheduled_offset(39_999, 2000), Duration::from_micros(19_999_500));
        // No drift over long runs: exact nanoseconds, not an accumulated interval.
        assert_eq!(scheduled_offset(300_000, 5000), Duration::from_secs(60));
        assert_eq!(scheduled_offset(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(scheduled_offset(3, 3), Duration::from_secs(1));
        // A zero rate is treated as 1/s rather than dividing by zero.
        assert_eq!(scheduled_offset(2, 0), Duration::from_secs(2));
        assert_eq!(planned_requests(2000, Duration::from_secs(20)), 40_000);
        assert_eq!(planned_requests(5000, Duration::from_secs(60)), 300_000);
        assert_eq!(planned_requests(3, Duration::from_millis(500)), 2);
        assert_eq!(planned_requests(0, Duration::from_secs(5)), 0);
        // Every planned request falls inside the run.
        let (rate, duration) = (2000, Duration::from_secs(20));
        assert!(scheduled_offset(planned_requests(rate, duration) - 1, rate) < duration);
    }

    #[test]
    fn proc_texts_are_read() {
        let status = "Name:\tparley\nVmPeak:\t  900000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   80000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(81234));
        assert_eq!(status_kib(status, "VmRSS"), Some(80000));
        assert_eq!(status_kib(status, "VmSwap"), None);
        let stat = "4242 (tokio-runtime-w) S 1 4242 4242 0 -1 4194368 100 0 0 0 1500 250 0 0 20 0 8 0 1 2 3";
        assert_eq!(stat_cpu_ticks(stat), Some(("tokio-runtime-w".to_string(), 1750)));
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 11 22 0 0 20 0 1 0 1 2 3";
        assert_eq!(stat_cpu_ticks(odd), Some(("a (b) c".to_string(), 33)));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        let proc_stat = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n";
        assert_eq!(machine_cpu_ticks(proc_stat), Some((161, 981)));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
