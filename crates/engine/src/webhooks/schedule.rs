//! When a failed webhook delivery is tried again: the Standard Webhooks schedule (immediately,
//! then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h after each failure), with jitter
//! so that endpoints that failed together are not all retried in the same instant, and at least
//! as late as the endpoint's `Retry-After` asks.

use rand::Rng;
use std::time::Duration;

/// The wait before each attempt; the first is the immediate one.
pub fn default_schedule() -> Vec<Duration> {
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    [0, 5, 5 * MIN, 30 * MIN, 2 * HOUR, 5 * HOUR, 10 * HOUR, 14 * HOUR, 20 * HOUR, 24 * HOUR]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// Jitter: each wait is moved by up to this fraction, either way.
const JITTER: f64 = 0.1;

pub use parley_domain::backoff::MAX_RETRY_AFTER;

/// The wait before the attempt after `attempts_made` failed ones, or `None` when the schedule is
/// spent. `retry_after` (from a 429 or 503) is a floor.
pub fn next_wait(schedule: &[Duration], attempts_made: usize, retry_after: Option<Duration>) -> Option<Duration> {
    let base = *schedule.get(attempts_made)?;
    let jittered = if base.is_zero() {
        base
    } else {
        let factor = 1.0 + rand::rng().random_range(-JITTER..=JITTER);
        base.mul_f64(factor)
    };
    Some(match retry_after {
        Some(floor) => jittered.max(floor.min(MAX_RETRY_AFTER)),
        None => jittered,
    })
}

pub use parley_domain::backoff::parse_retry_after;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_has_ten_attempts_and_then_ends() {
        let s = default_schedule();
        assert_eq!(s.len(), 10);
        assert_eq!(next_wait(&s, 0, None), Some(Duration::ZERO));
        for _ in 0..100 {
            let w = next_wait(&s, 1, None).unwrap();
            assert!(w >= Duration::from_millis(4500) && w <= Duration::from_millis(5500), "{w:?}");
            let w = next_wait(&s, 9, None).unwrap();
            assert!(w >= Duration::from_secs(24 * 3600 * 9 / 10), "{w:?}");
        }
        assert_eq!(next_wait(&s, 10, None), None);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let s = default_schedule();
        assert!(next_wait(&s, 1, Some(Duration::from_secs(120))).unwrap() >= Duration::from_secs(120));
        assert!(next_wait(&s, 1, Some(Duration::from_secs(1))).unwrap() >= Duration::from_millis(4500));
        assert_eq!(next_wait(&s, 1, Some(Duration::from_secs(999_999_999))).unwrap(), MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("30", 0), Some(Duration::from_secs(30)));
        // Fri, 27 Nov 2026 12:00:00 GMT is 1795780800.
        assert_eq!(parse_retry_after("Fri, 27 Nov 2026 12:01:00 GMT", 1_795_780_800), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Fri, 27 Nov 2026 11:00:00 GMT", 1_795_780_800), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
