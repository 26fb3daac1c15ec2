//! RTP numbering: 16-bit sequence numbers and 32-bit timestamps unwrapped to 64 bits, and the small reorder
//! buffer that puts packets back in sequence order before a depacketizer sees them.
//!
//! The buffer holds packets behind a gap until the missing one arrives (a late or retransmitted packet), until it
//! holds too many, or until a packet arrives too long after the first one held; then the gap is given up as a loss.
//! Time comes from the packets' arrival instants (no clock reads). Bounded memory, panic free on any numbering.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Unwraps a 16-bit sequence number to 64 bits (the value closest to the highest seen so far).
#[derive(Debug, Clone, Default)]
pub struct SeqUnwrapper {
    highest: Option<u64>,
}

impl SeqUnwrapper {
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let v = match self.highest {
            // Start one cycle up so that packets from just before the first one stay above zero.
            None => u64::from(seq) + (1 << 16),
            Some(highest) => closest(highest, u64::from(seq), 16),
        };
        if self.highest.is_none_or(|h| v > h) {
            self.highest = Some(v);
        }
        v
    }
}

/// Unwraps a 32-bit RTP timestamp to 64 bits (the value closest to the latest seen so far).
#[derive(Debug, Clone, Default)]
pub struct TsUnwrapper {
    last: Option<u64>,
}

impl TsUnwrapper {
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        let v = match self.last {
            None => u64::from(ts) + (1 << 32),
            Some(last) => closest(last, u64::from(ts), 32),
        };
        if self.last.is_none_or(|l| v > l) {
            self.last = Some(v);
        }
        v
    }
}

/// The value `cycle * 2^bits + low` closest to `reference`.
fn closest(reference: u64, low: u64, bits: u32) -> u64 {
    let cycle = 1u64 << bits;
    let base = reference & !(cycle - 1);
    [base.checked_sub(cycle), Some(base), base.checked_add(cycle)]
        .into_iter()
        .flatten()
        .filter_map(|b| b.checked_add(low))
        .min_by_key(|v| v.abs_diff(reference))
        .unwrap_or(reference)
}

/// Most packets held behind a gap before it is given up.
pub const DEFAULT_REORDER_DEPTH: usize = 256;
/// Longest wait for a missing packet (long enough for a NACK retransmission on most paths).
pub const DEFAULT_REORDER_WAIT: Duration = Duration::from_millis(200);

/// A packet released in sequence order.
#[derive(Debug, Clone)]
pub struct Ordered<T> {
    pub item: T,
    pub arrival: Instant,
    /// Unwrapped sequence number.
    pub seq: u64,
    /// Packets missing just before this one (given up as lost).
    pub lost_before: u64,
}

/// What the buffer threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderCounts {
    /// Packets that came after their place had been given up as lost.
    pub late: u64,
    /// Second copies of a packet.
    pub duplicate: u64,
}

/// Puts packets back in sequence order.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    seqs: SeqUnwrapper,
    next: Option<u64>,
    held: BTreeMap<u64, (T, Instant)>,
    depth: usize,
    max_wait: Duration,
    pub counts: ReorderCounts,
}

impl<T> ReorderBuffer<T> {
    pub fn new(depth: usize, max_wait: Duration) -> ReorderBuffer<T> {
        ReorderBuffer {
            seqs: SeqUnwrapper::default(),
            next: None,
            held: BTreeMap::new(),
            depth: depth.max(1),
            max_wait,
            counts: ReorderCounts::default(),
        }
    }

    /// Takes one packet; appends to `out` the packets that are now in order.
    pub fn push(&mut self, seq: u16, item: T, arrival: Instant, out: &mut Vec<Ordered<T>>) {
        let seq = self.seqs.unwrap(seq);
        let next = *self.next.get_or_insert(seq);
        if seq < next {
            self.counts.late += 1;
            return;
        }
        if self.held.contains_key(&seq) {
            self.counts.duplicate += 1;
            return;
        }
        self.held.insert(seq, (item, arrival));
        self.release(Some(arrival), out);
    }

    /// Releases everything held (remaining gaps count as losses).
    pub fn flush(&mut self, out: &mut Vec<Ordered<T>>) {
        self.release(None, out);
    }

    /// Releases in order; with `now` = None, gaps are given up at once.
    fn release(&mut self, now: Option<Instant>, out: &mut Vec<Ordered<T>>) {
        while let Some(entry) = self.held.first_entry() {
            let Some(next) = self.next else { return };
            let seq = *entry.key();
            let lost_before = seq.saturating_sub(next);
            if lost_before > 0 {
                let waited_long = now.is_some_and(|now| {
                    now.saturating_duration_since(entry.get().1) >= self.max_wait
                });
                let give_up = now.is_none() || self.held.len() > self.depth || waited_long;
                if !give_up {
                    return;
                }
            }
            let (item, arrival) = entry.remove();
            self.next = Some(seq + 1);
            out.push(Ordered {
                item,
                arrival,
                seq,
                lost_before,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(buffer: &mut ReorderBuffer<u16>, seqs: &[u16], at: Instant) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        for &s in seqs {
            buffer.push(s, s, at, &mut out);
        }
        out.into_iter().map(|o| (o.item, o.lost_before)).collect()
    }

    #[test]
    fn sequence_numbers_unwrap_across_the_16_bit_wrap_both_ways() {
        let mut u = SeqUnwrapper::default();
        let a = u.unwrap(65_534);
        assert_eq!(u.unwrap(65_535), a + 1);
        assert_eq!(u.unwrap(0), a + 2);
        assert_eq!(u.unwrap(65_535), a + 1, "a late packet from before the wrap");
        assert_eq!(u.unwrap(1), a + 3);
    }

    #[test]
    fn timestamps_unwrap_across_the_32_bit_wrap() {
        let mut u = TsUnwrapper::default();
        let a = u.unwrap(u32::MAX - 1000);
        assert_eq!(u.unwrap(2000), a + 3001);
        assert_eq!(u.unwrap(u32::MAX - 500), a + 500, "reordered, before the wrap");
    }

    #[test]
    fn out_of_order_packets_come_out_in_order() {
        let mut b = ReorderBuffer::new(8, Duration::from_secs(1));
        let got = run(&mut b, &[10, 12, 11, 14, 13, 15], Instant::now());
        assert_eq!(
            got,
            vec![(10, 0), (11, 0), (12, 0), (13, 0), (14, 0), (15, 0)]
        );
    }

    #[test]
    fn a_gap_is_given_up_when_the_buffer_is_full() {
        let mut b = ReorderBuffer::new(3, Duration::from_secs(1));
        let now = Instant::now();
        assert_eq!(run(&mut b, &[1, 3, 4, 5], now), vec![(1, 0)]);
        assert_eq!(run(&mut b, &[6], now), vec![(3, 1), (4, 0), (5, 0), (6, 0)]);
        assert_eq!(run(&mut b, &[2], now), vec![], "too late");
        assert_eq!(b.counts.late, 1);
    }

    #[test]
    fn a_gap_is_given_up_after_the_wait() {
        let mut b = ReorderBuffer::new(100, Duration::from_millis(200));
        let t0 = Instant::now();
        let mut out = Vec::new();
        b.push(1, 1, t0, &mut out);
        b.push(3, 3, t0, &mut out);
        b.push(4, 4, t0 + Duration::from_millis(100), &mut out);
        assert_eq!(out.len(), 1);
        b.push(5, 5, t0 + Duration::from_millis(200), &mut out);
        let got: Vec<(u16, u64)> = out.iter().map(|o| (o.item, o.lost_before)).collect();
        assert_eq!(got, vec![(1, 0), (3, 1), (4, 0), (5, 0)]);
    }

    #[test]
    fn duplicates_are_dropped_and_flush_releases_everything() {
        let mut b = ReorderBuffer::new(100, Duration::from_secs(1));
        let now = Instant::now();
        assert_eq!(run(&mut b, &[7, 9, 9], now), vec![(7, 0)]);
        assert_eq!(b.counts.duplicate, 1);
        let mut out = Vec::new();
        b.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].item, out[0].lost_before), (9, 1));
    }

    #[test]
    fn reordering_across_the_wrap() {
        let mut b = ReorderBuffer::new(8, Duration::from_secs(1));
        let got = run(&mut b, &[65_534, 0, 65_535, 1], Instant::now());
        assert_eq!(got, vec![(65_534, 0), (65_535, 0), (0, 0), (1, 0)]);
    }
}
