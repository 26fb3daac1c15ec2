//! Keyframe requests towards a publisher, throttled per layer.
//!
//! Viewers joining, switching layers or reporting loss ask for a keyframe; the publisher gets at most one PLI per
//! layer per interval (OBS ignores them anyway; browsers honour them). Requests are queued with `try_send` to the
//! publisher's RTCP task, so the fan-out never waits for the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

/// Asks one publisher layer (`media_ssrc`) for keyframes.
#[derive(Debug)]
pub struct KeyframeRequester {
    media_ssrc: u32,
    interval_ms: u64,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last request sent, plus one (0: never).
    last_ms: AtomicU64,
    tx: mpsc::Sender<u32>,
}

impl KeyframeRequester {
    /// A requester for `media_ssrc` sending on `tx` at most once per `interval_ms`.
    pub fn new(media_ssrc: u32, interval_ms: u64, tx: mpsc::Sender<u32>) -> KeyframeRequester {
        KeyframeRequester {
            media_ssrc,
            interval_ms,
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            tx,
        }
    }

    /// Requests a keyframe unless one was requested less than the interval ago. True when a request went out.
    pub fn request(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            return false;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false; // Someone else just sent one.
        }
        self.tx.try_send(self.media_ssrc).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_request_per_interval() {
        let (tx, mut rx) = mpsc::channel(8);
        let r = KeyframeRequester::new(42, 60_000, tx);
        assert!(r.request());
        assert!(!r.request());
        assert!(!r.request());
        assert_eq!(rx.try_recv().ok(), Some(42));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn zero_interval_sends_every_time() {
        let (tx, mut rx) = mpsc::channel(8);
        let r = KeyframeRequester::new(7, 0, tx);
        assert!(r.request());
        assert!(r.request());
        assert_eq!(rx.try_recv().ok(), Some(7));
        assert_eq!(rx.try_recv().ok(), Some(7));
    }
}
