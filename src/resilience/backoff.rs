//! Exponential backoff with full jitter: the n-th retry waits a random time in [base * 2^n / 2, base * 2^n],
//! capped, so many workers retrying one endpoint spread out instead of arriving together.

use std::time::Duration;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0 = first retry), with jitter drawn from `unit` in [0, 1).
    pub(crate) fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let exp = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
        let ceiling = self
            .base
            .as_millis()
            .saturating_mul(u128::from(exp))
            .min(self.max.as_millis()) as f64;
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_millis((ceiling / 2.0 + unit * ceiling / 2.0) as u64)
    }

    /// The delay before retry number `attempt`, with random jitter.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.delay_with(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay_with(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay_with(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay_with(3, 0.0), Duration::from_millis(400));
        assert_eq!(b.delay_with(30, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay_with(u32::MAX, 0.5), Duration::from_millis(7500));
        for attempt in 0..20 {
            let d = b.delay(attempt);
            assert!(d <= Duration::from_secs(10));
        }
    }
}
