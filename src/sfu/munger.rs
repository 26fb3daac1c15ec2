//! RTP munger: rewrites a forwarded packet's sequence number and timestamp so each viewer sees one continuous
//! stream, across layer switches and publisher reconnects.
//!
//! Within one source the rewrite is a fixed offset (so reordering and retransmissions keep their order). When the
//! source changes, new offsets continue the sequence right after the last one sent and advance the timestamp by
//! the wall-clock time that passed. Pure and allocation free; time is an input.

use std::time::Instant;

/// Per viewer-track rewrite state.
#[derive(Debug, Clone)]
pub struct Munger {
    clock_rate: u32,
    /// Identifier of the source the offsets belong to (0: none yet).
    source: u64,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest sequence number sent so far, and the timestamp and instant that went with it.
    last_seq: u16,
    last_ts: u32,
    last_sent_at: Option<Instant>,
}

impl Munger {
    /// A munger for a track of `clock_rate` Hz whose output starts at `initial_seq` / `initial_ts`.
    pub fn new(clock_rate: u32, initial_seq: u16, initial_ts: u32) -> Munger {
        Munger {
            clock_rate: clock_rate.max(1),
            source: 0,
            seq_offset: 0,
            ts_offset: 0,
            last_seq: initial_seq.wrapping_sub(1),
            last_ts: initial_ts,
            last_sent_at: None,
        }
    }

    /// The source currently feeding this track.
    pub fn source(&self) -> u64 {
        self.source
    }

    /// Rewrites (`seq`, `ts`) of a packet from `source` received at `now`.
    pub fn rewrite(&mut self, source: u64, seq: u16, ts: u32, now: Instant) -> (u16, u32) {
        if source != self.source {
            self.rebase(source, seq, ts, now);
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        // Track the highest sequence sent (serial number arithmetic) for the next rebase.
        if seq_newer(out_seq, self.last_seq) || self.last_sent_at.is_none() {
            self.last_seq = out_seq;
            self.last_ts = out_ts;
            self.last_sent_at = Some(now);
        }
        (out_seq, out_ts)
    }

    /// Makes `source`'s packet (`seq`, `ts`) the continuation of what was sent before.
    fn rebase(&mut self, source: u64, seq: u16, ts: u32, now: Instant) {
        let next_seq = self.last_seq.wrapping_add(1);
        let next_ts = match self.last_sent_at {
            Some(then) => {
                let elapsed = now.saturating_duration_since(then);
                let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u64;
                // At least one tick so the new picture never shares the old one's timestamp.
                self.last_ts
                    .wrapping_add(ticks.clamp(1, u64::from(u32::MAX)) as u32)
            }
            None => self.last_ts,
        };
        self.source = source;
        self.seq_offset = next_seq.wrapping_sub(seq);
        self.ts_offset = next_ts.wrapping_sub(ts);
    }
}

/// Whether sequence number `a` comes after `b` (RFC 1982 serial arithmetic on 16 bits).
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_source_keeps_relative_order_and_gaps() {
        let t0 = Instant::now();
        let mut m = Munger::new(90_000, 1000, 5000);
        assert_eq!(m.rewrite(1, 40_000, 7, t0), (1000, 5000));
        assert_eq!(m.rewrite(1, 40_001, 3007, t0), (1001, 8000));
        // A gap stays a gap (the viewer NACKs it), a late packet keeps its place.
        assert_eq!(m.rewrite(1, 40_003, 6007, t0), (1003, 11000));
        assert_eq!(m.rewrite(1, 40_002, 6007, t0), (1002, 11000));
    }

    #[test]
    fn source_switch_continues_sequence_and_advances_time() {
        let t0 = Instant::now();
        let mut m = Munger::new(90_000, 0, 0);
        m.rewrite(1, 100, 1_000, t0);
        let (s, t) = m.rewrite(1, 101, 4_000, t0);
        assert_eq!((s, t), (1, 3_000));
        // 100 ms later a different layer with unrelated numbers takes over.
        let (s2, t2) = m.rewrite(2, 60_000, 123_456, t0 + Duration::from_millis(100));
        assert_eq!(s2, 2);
        assert_eq!(t2, 3_000 + 9_000);
        let (s3, t3) = m.rewrite(2, 60_001, 126_456, t0 + Duration::from_millis(133));
        assert_eq!((s3, t3), (3, 12_000 + 3_000));
    }

    #[test]
    fn wraps_cleanly() {
        let t0 = Instant::now();
        let mut m = Munger::new(48_000, 65_535, u32::MAX - 10);
        assert_eq!(m.rewrite(7, 10, 0, t0), (65_535, u32::MAX - 10));
        assert_eq!(m.rewrite(7, 11, 960, t0), (0, 949));
        assert!(seq_newer(0, 65_535));
        assert!(!seq_newer(65_535, 0));
    }

    #[test]
    fn switch_at_the_same_instant_still_moves_time_forward() {
        let t0 = Instant::now();
        let mut m = Munger::new(90_000, 0, 0);
        m.rewrite(1, 5, 500, t0);
        let (_, t) = m.rewrite(2, 9, 9, t0);
        assert_eq!(t, 1);
    }
}
