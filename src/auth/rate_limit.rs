//! Keyed rate limits (GCRA, the "generic cell rate algorithm" of a token bucket refilled evenly): per client
//! address and per account, for login, sign-up, password reset and WHIP/WHEP requests.
//!
//! Time is an input (`check_at`), so tests step it without sleeping. One entry per key holds its theoretical
//! arrival time; entries older than now carry no information and are pruned, so memory follows the number of keys
//! active within one period. A full table refuses new keys (fail closed) rather than forgetting limits.
//! Never call this with a secret as the key: keys may appear in logs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{RateLimit, RateLimitsConfig};

/// Most keys one limiter tracks at once.
const MAX_KEYS: usize = 200_000;

/// The answer of a limiter that said no: how long until the next request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }
}

/// One limit applied to many keys.
#[derive(Debug)]
pub(crate) struct KeyedLimiter {
    /// Time between two requests at the sustained rate, in microseconds.
    interval_us: u64,
    /// How far ahead of now a key's arrival time may run (the burst), in microseconds.
    tolerance_us: u64,
    enabled: bool,
    state: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// Key -> theoretical arrival time, in microseconds since the limiter's epoch.
    tat: HashMap<String, u64>,
    checks_since_prune: u32,
}

impl KeyedLimiter {
    /// A limiter letting `limit.requests` requests through per `limit.per_seconds` seconds for each key.
    pub(crate) fn new(limit: RateLimit) -> KeyedLimiter {
        let enabled = limit.requests > 0 && limit.per_seconds > 0;
        let period_us = limit.per_seconds.saturating_mul(1_000_000);
        let interval_us = if enabled {
            (period_us / u64::from(limit.requests)).max(1)
        } else {
            0
        };
        KeyedLimiter {
            interval_us,
            tolerance_us: period_us.saturating_sub(interval_us),
            enabled,
            state: Mutex::new(Table::default()),
        }
    }

    /// Counts one request of `key` at `now_us` (microseconds on any monotonic clock that starts at 0 or later).
    pub(crate) fn check_at(&self, key: &str, now_us: u64) -> Result<(), Limited> {
        if !self.enabled {
            return Ok(());
        }
        let mut table = self.state.lock().unwrap_or_else(|p| p.into_inner());
        table.checks_since_prune += 1;
        if table.checks_since_prune >= 1024 || table.tat.len() >= MAX_KEYS {
            table.tat.retain(|_, tat| *tat > now_us);
            table.checks_since_prune = 0;
        }
        let known = table.tat.get(key).copied();
        if known.is_none() && table.tat.len() >= MAX_KEYS {
            metrics::counter!("zipiq_rate_limit_table_full_total").increment(1);
            return Err(Limited {
                retry_after: Duration::from_secs(1),
            });
        }
        let tat = known.unwrap_or(now_us).max(now_us);
        let ahead = tat - now_us;
        if ahead > self.tolerance_us {
            return Err(Limited {
                retry_after: Duration::from_micros(ahead - self.tolerance_us),
            });
        }
        table.tat.insert(key.to_owned(), tat + self.interval_us);
        Ok(())
    }

    /// Forgets keys whose arrival time has passed (`now_us`); returns how many.
    pub(crate) fn prune_at(&self, now_us: u64) -> usize {
        let mut table = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let before = table.tat.len();
        table.tat.retain(|_, tat| *tat > now_us);
        before - table.tat.len()
    }

    /// Keys currently tracked (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tat
            .len()
    }
}

/// What a request is doing, for choosing its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Login,
    Signup,
    Reset,
    Whip,
    Whep,
    /// PATCH of one WHIP/WHEP session (trickle ICE, ICE restart), keyed by the session.
    Patch,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::Signup => "signup",
            Action::Reset => "reset",
            Action::Whip => "whip",
            Action::Whep => "whep",
            Action::Patch => "patch",
        }
    }
}

/// Every configured limit, by action, per client address and per account.
#[derive(Debug)]
pub struct RateLimits {
    epoch: Instant,
    limiters: Vec<(Action, KeyedLimiter, KeyedLimiter)>,
}

impl RateLimits {
    pub fn new(config: &RateLimitsConfig) -> RateLimits {
        let pair = |action, ip: RateLimit, account: RateLimit| {
            (action, KeyedLimiter::new(ip), KeyedLimiter::new(account))
        };
        RateLimits {
            epoch: Instant::now(),
            limiters: vec![
                pair(Action::Login, config.login_per_ip, config.login_per_account),
                pair(
                    Action::Signup,
                    config.signup_per_ip,
                    config.signup_per_account,
                ),
                pair(Action::Reset, config.reset_per_ip, config.reset_per_account),
                pair(Action::Whip, config.whip_per_ip, config.whip_per_account),
                pair(Action::Whep, config.whep_per_ip, config.whep_per_account),
                // PATCHes count per address under WHIP/WHEP already; here per session.
                pair(
                    Action::Patch,
                    RateLimit {
                        requests: 0,
                        per_seconds: 0,
                    },
                    config.patch_per_session,
                ),
            ],
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn limiters(&self, action: Action) -> Option<&(Action, KeyedLimiter, KeyedLimiter)> {
        self.limiters.iter().find(|(a, _, _)| *a == action)
    }

    /// Forgets every key whose limit has refilled (its state says nothing any more). Returns how many.
    pub fn prune(&self) -> usize {
        let now = self.now_us();
        self.limiters
            .iter()
            .map(|(_, per_ip, per_account)| per_ip.prune_at(now) + per_account.prune_at(now))
            .sum()
    }

    /// Counts one request of `action` from address `ip`.
    pub fn check_ip(&self, action: Action, ip: IpAddr) -> Result<(), Limited> {
        let Some((_, per_ip, _)) = self.limiters(action) else {
            return Ok(());
        };
        per_ip
            .check_at(&ip_key(ip), self.now_us())
            .inspect_err(|_| count_refusal(action, "ip"))
    }

    /// Counts one request of `action` for the account named by `account` (an email, an owner id, a token id).
    pub fn check_account(&self, action: Action, account: &str) -> Result<(), Limited> {
        let Some((_, _, per_account)) = self.limiters(action) else {
            return Ok(());
        };
        per_account
            .check_at(account, self.now_us())
            .inspect_err(|_| count_refusal(action, "account"))
    }
}

/// Tells the first event of a burst from the rest: a key seen again within `quiet` of its last event belongs to
/// the same burst. For writing one audit row per burst of refused requests instead of one per request. Bounded:
/// past `MAX_KEYS` keys, those quiet for longer than `quiet` are forgotten, and if none are, every event counts as
/// a first (an audit row too many rather than one too few).
#[derive(Debug)]
pub struct Bursts {
    quiet: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl Bursts {
    pub fn new(quiet: Duration) -> Bursts {
        Bursts {
            quiet,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an event of `key` now starts a new burst.
    pub fn first_of_burst(&self, key: &str) -> bool {
        self.first_of_burst_at(key, Instant::now())
    }

    /// `first_of_burst` at `now`.
    pub fn first_of_burst_at(&self, key: &str, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= MAX_KEYS {
            let quiet = self.quiet;
            last.retain(|_, at| now.saturating_duration_since(*at) < quiet);
            if last.len() >= MAX_KEYS {
                return true;
            }
        }
        let first = last
            .get(key)
            .is_none_or(|at| now.saturating_duration_since(*at) >= self.quiet);
        last.insert(key.to_owned(), now);
        first
    }

    /// Forgets keys quiet for longer than the burst gap (the pruning task calls it).
    pub fn prune(&self) -> usize {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let before = last.len();
        last.retain(|_, at| now.saturating_duration_since(*at) < self.quiet);
        before - last.len()
    }
}

fn count_refusal(action: Action, scope: &'static str) {
    metrics::counter!("zipiq_rate_limited_total", "action" => action.as_str(), "scope" => scope)
        .increment(1);
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 (one subscriber usually holds a whole /64).
pub(crate) fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn limit(requests: u32, per_seconds: u64) -> KeyedLimiter {
        KeyedLimiter::new(RateLimit {
            requests,
            per_seconds,
        })
    }

    #[test]
    fn a_burst_of_the_limit_passes_then_the_next_waits_one_interval() {
        let l = limit(5, 60);
        for _ in 0..5 {
            assert!(l.check_at("a", 0).is_ok());
        }
        let refused = l.check_at("a", 0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(12));
        assert_eq!(refused.retry_after_secs(), 12);
        // One interval later exactly one more passes.
        assert!(l.check_at("a", 12 * SECOND).is_ok());
        assert!(l.check_at("a", 12 * SECOND).is_err());
    }

    #[test]
    fn keys_are_independent() {
        let l = limit(1, 10);
        assert!(l.check_at("a", 0).is_ok());
        assert!(l.check_at("a", 0).is_err());
        assert!(l.check_at("b", 0).is_ok());
    }

    #[test]
    fn refused_requests_do_not_push_the_wait_further() {
        let l = limit(2, 10);
        assert!(l.check_at("a", 0).is_ok());
        assert!(l.check_at("a", 0).is_ok());
        for _ in 0..100 {
            assert!(l.check_at("a", SECOND).is_err());
        }
        assert!(l.check_at("a", 5 * SECOND).is_ok());
    }

    #[test]
    fn zero_requests_means_no_limit() {
        let l = limit(0, 10);
        for _ in 0..10_000 {
            assert!(l.check_at("a", 0).is_ok());
        }
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn idle_keys_are_pruned() {
        let l = limit(10, 1);
        for i in 0..2000 {
            assert!(l.check_at(&format!("k{i}"), 0).is_ok());
        }
        // Long after, every old entry is stale; the next prune drops them.
        for i in 0..1024 {
            assert!(l.check_at(&format!("n{i}"), 100 * SECOND).is_ok());
        }
        assert!(l.tracked_keys() <= 1024, "{}", l.tracked_keys());
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7");
    }

    #[test]
    fn one_first_per_burst() {
        let b = Bursts::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(b.first_of_burst_at("a", t0));
        assert!(!b.first_of_burst_at("a", t0 + Duration::from_secs(5)));
        assert!(!b.first_of_burst_at("a", t0 + Duration::from_secs(14)));
        assert!(b.first_of_burst_at("b", t0), "keys are independent");
        assert!(
            b.first_of_burst_at("a", t0 + Duration::from_secs(25)),
            "after a quiet gap"
        );
    }
}
