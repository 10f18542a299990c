//! The time the webhook deliverer lives by: the system clock, plus an offset that tests move
//! forward to let days pass in a moment (an endpoint down for five days, a 24-hour secret
//! overlap) while real sockets keep real timeouts.

use parley_domain::Millis;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Cheap to clone; clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> Millis {
        Millis::now().plus_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Move this clock (and its clones) forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(duration_ms(by), Ordering::Relaxed);
    }
}

/// `d` in whole milliseconds, for arithmetic on [`Millis`] (saturating: settings may say "never").
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let clock = Clock::default();
        let other = clock.clone();
        let before = other.now().0;
        clock.advance(Duration::from_secs(3600));
        assert!(other.now().0 - before >= 3_600_000);
    }
}
