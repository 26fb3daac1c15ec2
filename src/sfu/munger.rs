//! RTP munger: rewrites a forwarded packet's sequence number and timestamp so each viewer sees one continuous
//! stream, across layer switches and publisher reconnects.
//!
//! Within one source the rewrite is a fixed offset (so reordering and retransmissions keep their order). When the
//! source changes, new offsets continue the sequence right after the last one sent and advance the timestamp by
//! the wall-clock time that passed. Pure and allocation free; time is an input.

use std::time::Instant;

/// Per viewer-track rewrite state.
#[derive(Debug, Clone)]
pub(crate) struct Munger {
    clock_rate: u32,
    /// Identifier of the source the offsets belong to (0: none yet).
    source: u64,
    seq_offset: u16,
    ts_offset: u32,
    /// The first outgoing sequence number of the current source.
    base_seq: u16,
    /// Highest sequence number sent so far, and the timestamp and instant that went with it.
    last_seq: u16,
    last_ts: u32,
    last_sent_at: Option<Instant>,
}

impl Munger {
    /// A munger for a track of `clock_rate` Hz whose output starts at `initial_seq` / `initial_ts`.
    pub(crate) fn new(clock_rate: u32, initial_seq: u16, initial_ts: u32) -> Munger {
        Munger {
            clock_rate: clock_rate.max(1),
            source: 0,
            seq_offset: 0,
            ts_offset: 0,
            base_seq: initial_seq,
            last_seq: initial_seq.wrapping_sub(1),
            last_ts: initial_ts,
            last_sent_at: None,
        }
    }

    /// Rewrites (`seq`, `ts`) of a packet from `source` received at `now`.
    pub(crate) fn rewrite(&mut self, source: u64, seq: u16, ts: u32, now: Instant) -> (u16, u32) {
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
        self.base_seq = next_seq;
        self.seq_offset = next_seq.wrapping_sub(seq);
        self.ts_offset = next_ts.wrapping_sub(ts);
    }

    /// The current source's sequence number of outgoing `out_seq`, when that packet was sent for the current
    /// source (between its first packet and the last one sent). A packet of an earlier source has no answer.
    pub(crate) fn source_seq(&self, out_seq: u16) -> Option<u16> {
        if self.source == 0 || self.last_sent_at.is_none() {
            return None;
        }
        let since_base = out_seq.wrapping_sub(self.base_seq);
        let span = self.last_seq.wrapping_sub(self.base_seq);
        (since_base <= span && span < 0x8000).then(|| out_seq.wrapping_sub(self.seq_offset))
    }

    /// The outgoing sequence number and timestamp of a packet of the current source, as `rewrite` made them,
    /// without changing anything (for a retransmission).
    pub(crate) fn outgoing(&self, seq: u16, ts: u32) -> (u16, u32) {
        (
            seq.wrapping_add(self.seq_offset),
            ts.wrapping_add(self.ts_offset),
        )
    }
}

/// Whether sequence number `a` comes after `b` (RFC 1982 serial arithmetic on 16 bits).
pub(crate) fn seq_newer(a: u16, b: u16) -> bool {
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
    fn sent_packets_of_the_current_source_map_back_and_older_ones_do_not() {
        let t0 = Instant::now();
        let mut m = Munger::new(90_000, 65_534, 0);
        assert_eq!(m.source_seq(65_534), None, "nothing sent yet");
        m.rewrite(1, 100, 1_000, t0); // out 65534
        m.rewrite(1, 101, 4_000, t0); // out 65535
        m.rewrite(1, 102, 7_000, t0); // out 0
        assert_eq!(m.source_seq(65_535), Some(101));
        assert_eq!(m.source_seq(0), Some(102));
        assert_eq!(m.outgoing(101, 4_000), (65_535, 3_000));
        assert_eq!(m.source_seq(1), None, "not sent yet");
        assert_eq!(m.source_seq(65_533), None, "before the first packet");
        // Another source takes over: the first source's packets no longer map.
        m.rewrite(2, 9_000, 50, t0 + Duration::from_millis(10));
        assert_eq!(m.source_seq(0), None);
        assert_eq!(m.source_seq(1), Some(9_000));
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
