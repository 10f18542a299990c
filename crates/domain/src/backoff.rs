//! Retry timing for transient send failures: exponential backoff with full jitter, capped,
//! overridden by a provider's `Retry-After` when it gives one.

use rand::Rng;

/// First retry after about this long.
pub const BASE_DELAY_MS: i64 = 1_000;
/// No single wait is longer than this.
pub const MAX_DELAY_MS: i64 = 10 * 60 * 1_000;

/// How long to wait before attempt `attempt + 1`, after `attempt` (1-based) failed transiently.
/// The ceiling doubles per attempt; the wait is drawn between half the ceiling and the ceiling
/// ("equal jitter"), so retries of many messages spread out but never fire immediately.
pub fn retry_delay_ms(attempt: u32, retry_after_ms: Option<i64>, rng: &mut impl Rng) -> i64 {
    let exp = attempt.saturating_sub(1).min(20);
    let ceiling = BASE_DELAY_MS.saturating_mul(1_i64 << exp).min(MAX_DELAY_MS);
    let jittered = rng.random_range(ceiling / 2..=ceiling);
    match retry_after_ms {
        // The provider knows best when it will take more: wait exactly as long as it asked.
        Some(after) if after > 0 => after.min(24 * 3600 * 1000),
        _ => jittered,
    }
}

/// The longest `Retry-After` honoured: a provider asking for more is asked again after a day.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A `Retry-After` value: delay seconds, or an HTTP date (RFC 9110 §10.2.3) relative to
/// `now_secs`; at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now_secs: i64) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp().as_second();
    let secs = u64::try_from(at.saturating_sub(now_secs)).unwrap_or(0);
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A `Retry-After` header value as milliseconds from now (see [`parse_retry_after`]).
pub fn retry_after_ms(value: &str) -> Option<i64> {
    let now_secs = jiff::Timestamp::now().as_second();
    parse_retry_after(value, now_secs).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..30 {
            let ceiling = (BASE_DELAY_MS << (attempt - 1).min(20)).min(MAX_DELAY_MS);
            for _ in 0..50 {
                let d = retry_delay_ms(attempt, None, &mut rng);
                assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(retry_delay_ms(1, Some(30_000), &mut rng), 30_000);
        assert_eq!(retry_delay_ms(15, Some(2_000), &mut rng), 2_000);
    }

    #[test]
    fn retry_after_headers_read_seconds_and_dates_capped_at_a_day() {
        assert_eq!(retry_after_ms(" 120 "), Some(120_000));
        assert_eq!(retry_after_ms("9999999"), Some(24 * 3600 * 1000));
        assert_eq!(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0), "a date in the past: now");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", 1_445_412_480),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(retry_after_ms("soon"), None);
    }
}
