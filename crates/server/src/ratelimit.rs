//! Per-API-key request rate limits, announced on every authenticated answer with
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`, and enforced with 429
//! `rate_limited` and `Retry-After`.
//!
//! Each key has a GCRA bucket (the "virtual scheduling" form of a token bucket): `burst`
//! requests at once, refilled at `per_second`. The `Auth` extractor takes a slot once it knows
//! the key; the [`headers`] middleware writes what it took onto the answer, whatever the handler
//! answered. Counting is per process: on several processes the limit is per key and process.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use parley_domain::ApiKeyId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The limit of every key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Sustained requests per second per key.
    pub per_second: u32,
    /// Requests a key may make at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings { per_second: 1000, burst: 2000 }
    }
}

/// What one request took from its key's bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
    /// Set when the request was refused: seconds to wait.
    pub retry_after_seconds: Option<u64>,
}

/// The buckets of a process.
pub struct RateLimiter {
    settings: RateLimitSettings,
    interval: Duration,
    /// Theoretical arrival time of the next request, per key.
    buckets: Mutex<HashMap<ApiKeyId, Instant>>,
    started: Instant,
}

/// Buckets idle this long are forgotten (they are full again anyway).
const FORGET_AFTER: Duration = Duration::from_secs(300);

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> RateLimiter {
        let per_second = settings.per_second.max(1);
        let settings = RateLimitSettings { per_second, burst: settings.burst.max(1) };
        RateLimiter {
            settings,
            interval: Duration::from_nanos(1_000_000_000 / u64::from(per_second)),
            buckets: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// Take a slot for `key` at `now`.
    pub fn take(&self, key: ApiKeyId, now: Instant) -> Quota {
        let window = self.interval * (self.settings.burst - 1);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > 10_000 {
            buckets.retain(|_, tat| *tat + FORGET_AFTER > now);
        }
        let tat = buckets.get(&key).copied().unwrap_or(self.started).max(now);
        let ahead = tat - now;
        if ahead > window {
            let wait = ahead - window;
            return Quota {
                limit: self.settings.burst,
                remaining: 0,
                reset_seconds: ceil_seconds(ahead),
                retry_after_seconds: Some(ceil_seconds(wait).max(1)),
            };
        }
        let next = tat + self.interval;
        buckets.insert(key, next);
        let used = (next - now).as_nanos().div_ceil(self.interval.as_nanos().max(1));
        let remaining = u64::from(self.settings.burst).saturating_sub(u64::try_from(used).unwrap_or(u64::MAX));
        Quota {
            limit: self.settings.burst,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_seconds: ceil_seconds(next - now),
            retry_after_seconds: None,
        }
    }
}

fn ceil_seconds(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000) as u64
}

/// Where the `Auth` extractor leaves the request's quota for [`headers`].
#[derive(Clone, Default)]
pub struct QuotaSlot(pub Arc<OnceLock<Quota>>);

/// Give every request a [`QuotaSlot`] and write what was taken from it onto the answer.
pub async fn headers(mut request: Request, next: Next) -> Response {
    let slot = QuotaSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(quota) = slot.0.get() {
        let headers = response.headers_mut();
        headers.insert("ratelimit-limit", HeaderValue::from(quota.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(quota.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(quota.reset_seconds));
        if let Some(wait) = quota.retry_after_seconds {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(wait));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(RateLimitSettings { per_second: 10, burst: 5 });
        let key = ApiKeyId::new();
        let now = Instant::now();
        let taken: Vec<Quota> = (0..5).map(|_| limiter.take(key, now)).collect();
        assert!(taken.iter().all(|q| q.retry_after_seconds.is_none()));
        assert_eq!(taken.iter().map(|q| q.remaining).collect::<Vec<_>>(), [4, 3, 2, 1, 0]);
        let refused = limiter.take(key, now);
        assert_eq!(refused.retry_after_seconds, Some(1));
        assert_eq!((refused.limit, refused.remaining), (5, 0));
        // A tenth of a second later one slot is back.
        let later = now + Duration::from_millis(100);
        assert!(limiter.take(key, later).retry_after_seconds.is_none());
        assert!(limiter.take(key, later).retry_after_seconds.is_some());
        // Other keys have buckets of their own.
        assert_eq!(limiter.take(ApiKeyId::new(), now).remaining, 4);
    }

    #[test]
    fn reset_is_the_time_to_a_full_bucket() {
        let limiter = RateLimiter::new(RateLimitSettings { per_second: 1, burst: 3 });
        let key = ApiKeyId::new();
        let now = Instant::now() + Duration::from_secs(10);
        assert_eq!(limiter.take(key, now).reset_seconds, 1);
        assert_eq!(limiter.take(key, now).reset_seconds, 2);
        let q = limiter.take(key, now);
        assert_eq!((q.remaining, q.reset_seconds), (0, 3));
        let refused = limiter.take(key, now);
        assert_eq!(refused.retry_after_seconds, Some(1));
    }
}
