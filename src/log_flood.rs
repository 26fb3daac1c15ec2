//! A bound on log lines that outside input can trigger. Junk UDP datagrams, offers full of candidates or a
//! flooded session can each make the same line thousands of times a second; past `log.rate_limit` events per kind
//! (a kind is one place in the code: level, target, file and line, including the `log` records of webrtc-rs) within
//! its window, events are dropped and counted (`zipiq_log_events_suppressed_total{target}`), and a summary line
//! "log events suppressed" says how many of which kind at the end of each window. Audit events are never dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};

use crate::config::LogRateLimit;

/// The target of the summary lines (never limited itself).
const SUMMARY_TARGET: &str = "zipiq::log_flood";

/// Counts per kind of event.
#[derive(Debug)]
pub(crate) struct FloodGuard {
    events: u32,
    window: Duration,
    kinds: Mutex<HashMap<String, Kind>>,
}

#[derive(Debug)]
struct Kind {
    target: String,
    started: Instant,
    seen: u32,
    suppressed: u64,
}

impl FloodGuard {
    /// At most `limit.events` events of one kind per `limit.per_seconds` seconds (events = 0: no limit).
    pub(crate) fn new(limit: LogRateLimit) -> Arc<FloodGuard> {
        Arc::new(FloodGuard {
            events: limit.events,
            window: Duration::from_secs(limit.per_seconds.max(1)),
            kinds: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kind>> {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an event of `kind` (from `target`) may be written at `now`; counts it either way.
    pub(crate) fn allow(&self, kind: &str, target: &str, now: Instant) -> bool {
        if self.events == 0 || target == "audit" || target == SUMMARY_TARGET {
            return true;
        }
        let mut kinds = self.lock();
        let entry = kinds.entry(kind.to_owned()).or_insert_with(|| Kind {
            target: target.to_owned(),
            started: now,
            seen: 0,
            suppressed: 0,
        });
        if now.duration_since(entry.started) >= self.window && entry.suppressed == 0 {
            entry.started = now;
            entry.seen = 0;
        }
        entry.seen = entry.seen.saturating_add(1);
        if entry.seen <= self.events {
            return true;
        }
        entry.suppressed += 1;
        metrics::counter!("zipiq_log_events_suppressed_total", "target" => entry.target.clone())
            .increment(1);
        false
    }

    /// Takes the kinds whose window is over and that had events suppressed: (kind, target, suppressed). Their
    /// windows start again.
    pub(crate) fn take_summaries(&self, now: Instant) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        let mut kinds = self.lock();
        kinds.retain(|kind, k| {
            if now.duration_since(k.started) < self.window {
                return true;
            }
            if k.suppressed > 0 {
                out.push((kind.clone(), k.target.clone(), k.suppressed));
            }
            // Forget quiet kinds; a kind seen again starts a fresh window.
            false
        });
        out
    }

    /// Writes the summaries every window, on a thread of its own (no runtime needed; it lives as long as the
    /// process, as the log subscriber does).
    pub(crate) fn spawn_summaries(self: &Arc<Self>) {
        let guard = Arc::downgrade(self);
        let window = self.window;
        let _ = std::thread::Builder::new()
            .name("zipiq-log-flood".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(window.min(Duration::from_secs(1)));
                    let Some(guard) = guard.upgrade() else { return };
                    for (kind, target, suppressed) in guard.take_summaries(Instant::now()) {
                        tracing::warn!(target: SUMMARY_TARGET, kind = %kind, source = %target, suppressed, "log events suppressed");
                    }
                }
            });
    }
}

/// The tracing layer that asks the guard about every event.
pub(crate) struct FloodLayer {
    guard: Arc<FloodGuard>,
}

impl FloodLayer {
    pub(crate) fn new(guard: Arc<FloodGuard>) -> FloodLayer {
        FloodLayer { guard }
    }
}

impl<S: Subscriber> Layer<S> for FloodLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        // `log` records all share one callsite: their own target, file and line tell them apart.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let kind = format!(
            "{} {} {}:{}",
            meta.level(),
            meta.target(),
            meta.file().unwrap_or("?"),
            meta.line().unwrap_or(0)
        );
        self.guard.allow(&kind, meta.target(), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(events: u32, per_seconds: u64) -> Arc<FloodGuard> {
        FloodGuard::new(LogRateLimit {
            events,
            per_seconds,
        })
    }

    #[test]
    fn a_flood_of_one_kind_is_cut_and_summarised() {
        let g = guard(3, 10);
        let t0 = Instant::now();
        let passed = (0..1000)
            .filter(|_| g.allow("WARN x a.rs:1", "x", t0))
            .count();
        assert_eq!(passed, 3);
        assert!(
            g.allow("WARN x a.rs:2", "x", t0),
            "other kinds are not affected"
        );
        assert!(g.take_summaries(t0 + Duration::from_secs(1)).is_empty());
        let summaries = g.take_summaries(t0 + Duration::from_secs(10));
        assert_eq!(
            summaries,
            vec![("WARN x a.rs:1".to_owned(), "x".to_owned(), 997)]
        );
        // A new window lets the kind through again.
        assert!(g.allow("WARN x a.rs:1", "x", t0 + Duration::from_secs(11)));
    }

    #[test]
    fn audit_events_and_zero_limits_pass() {
        let g = guard(1, 10);
        let t0 = Instant::now();
        assert!((0..100).all(|_| g.allow("INFO audit a.rs:1", "audit", t0)));
        let off = guard(0, 10);
        assert!((0..100).all(|_| off.allow("WARN x a.rs:1", "x", t0)));
    }
}
