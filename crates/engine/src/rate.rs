//! A per-account send rate limit (GCRA, the "virtual scheduling" form of a token bucket) on
//! Tokio's clock, so that paused-time tests see the same pacing as production.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub struct RateLimit {
    interval: Duration,
    /// How far ahead of "now" the schedule may run: the burst allowance.
    burst: Duration,
    next: Mutex<Instant>,
}

impl RateLimit {
    pub fn per_second(rate: u32) -> Self {
        let rate = rate.max(1);
        let interval = Duration::from_nanos(1_000_000_000 / u64::from(rate));
        // Allow a burst of a tenth of a second's worth (at least one message).
        let burst = interval * (rate / 10).max(1);
        RateLimit { interval, burst, next: Mutex::new(Instant::now()) }
    }

    /// Take a slot: `Ok` if one is free now, otherwise how long until one is (nothing taken).
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut next) = self.next.lock() else { return Ok(()) };
        // `next` is the theoretical arrival time of the next message; it may run ahead of now by
        // at most the burst allowance.
        let tat = (*next).max(now);
        if tat > now + self.burst {
            return Err(tat - (now + self.burst));
        }
        *next = tat + self.interval;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate_after_a_small_burst() {
        let limit = RateLimit::per_second(100);
        let mut sent = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            match limit.try_acquire() {
                Ok(()) => sent += 1,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
        assert!((200..=212).contains(&sent), "sent {sent} in 2 s at 100/s");
    }

    #[tokio::test(start_paused = true)]
    async fn reports_the_wait() {
        let limit = RateLimit::per_second(1);
        assert!(limit.try_acquire().is_ok());
        assert!(limit.try_acquire().is_ok()); // burst of one
        let wait = limit.try_acquire().unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900), "{wait:?}");
    }
}
