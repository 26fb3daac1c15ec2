//! A circuit breaker for one remote endpoint: closed (calls go through), open after `failure_threshold`
//! consecutive failures (calls are refused at once for `open_for`), then half-open (one trial call at a time;
//! success closes, failure opens again). Shared by every worker calling that endpoint; time is an input.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state, as exported in metrics (`zipiq_breaker_state`: 0 closed, 1 half-open, 2 open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// One trial call goes through; its outcome closes or opens the breaker again.
    HalfOpen,
    /// Calls are refused until `open_for` has passed.
    Open,
}

impl BreakerState {
    /// The value of `zipiq_breaker_state`: 0, 1 or 2.
    pub fn as_metric(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

/// One endpoint's breaker.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    failure_threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

/// Permission to make one call; report its outcome with [`Breaker::success`] or [`Breaker::failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// A normal call (breaker closed).
    Call,
    /// The one trial call of a half-open breaker.
    Trial,
}

impl Breaker {
    /// A closed breaker `name` that opens after `failure_threshold` consecutive failures, for `open_for`.
    pub fn new(name: &str, failure_threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            name: name.to_owned(),
            failure_threshold: failure_threshold.max(1),
            open_for,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                trial_in_flight: false,
            }),
        }
    }

    /// The endpoint this breaker guards.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state at `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open
                if inner
                    .opened_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.open_for) =>
            {
                BreakerState::HalfOpen
            }
            s => s,
        }
    }

    /// Asks to make a call at `now`. None: refused (open, or half-open with the trial already out).
    pub fn try_acquire(&self, now: Instant) -> Option<Permit> {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Some(Permit::Call),
            BreakerState::Open => {
                let elapsed = inner
                    .opened_at
                    .map(|t| now.saturating_duration_since(t))
                    .unwrap_or_default();
                if elapsed < self.open_for {
                    return None;
                }
                inner.state = BreakerState::HalfOpen;
                inner.trial_in_flight = true;
                Some(Permit::Trial)
            }
            BreakerState::HalfOpen => {
                if inner.trial_in_flight {
                    None
                } else {
                    inner.trial_in_flight = true;
                    Some(Permit::Trial)
                }
            }
        }
    }

    /// The call succeeded: the breaker closes.
    pub fn success(&self) {
        let mut inner = self.lock();
        inner.state = BreakerState::Closed;
        inner.consecutive_failures = 0;
        inner.opened_at = None;
        inner.trial_in_flight = false;
    }

    /// The call failed (timeout, 5xx, connection error) at `now`.
    pub fn failure(&self, now: Instant) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let trip = inner.state == BreakerState::HalfOpen
            || inner.consecutive_failures >= self.failure_threshold;
        inner.trial_in_flight = false;
        if trip {
            if inner.state != BreakerState::Open {
                tracing::warn!(endpoint = %self.name, failures = inner.consecutive_failures, "circuit breaker opened");
            }
            inner.state = BreakerState::Open;
            inner.opened_at = Some(now);
        }
    }

    /// A call whose outcome says nothing about the endpoint's health (e.g. a 402 for one wallet) frees the trial.
    pub fn neutral(&self) {
        self.lock().trial_in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_refuses_then_half_opens_with_one_trial() {
        let t0 = Instant::now();
        let b = Breaker::new("bundler", 3, Duration::from_secs(10));
        for _ in 0..2 {
            assert_eq!(b.try_acquire(t0), Some(Permit::Call));
            b.failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(5)), None);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(later), Some(Permit::Trial));
        assert_eq!(b.try_acquire(later), None, "only one trial at a time");
        b.failure(later);
        assert_eq!(
            b.state(later),
            BreakerState::Open,
            "a failed trial opens again"
        );
        let later2 = later + Duration::from_secs(10);
        assert_eq!(b.try_acquire(later2), Some(Permit::Trial));
        b.success();
        assert_eq!(b.state(later2), BreakerState::Closed);
        assert_eq!(b.try_acquire(later2), Some(Permit::Call));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let t0 = Instant::now();
        let b = Breaker::new("x", 2, Duration::from_secs(1));
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn neutral_outcome_frees_the_trial_without_closing() {
        let t0 = Instant::now();
        let b = Breaker::new("x", 1, Duration::from_secs(1));
        b.failure(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.try_acquire(t1), Some(Permit::Trial));
        b.neutral();
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(t1), Some(Permit::Trial));
    }
}
