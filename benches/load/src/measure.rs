//! What the publisher and the subscribers share to measure, and the measuring itself: the phase of the run, a
//! ring of send instants per track indexed by sequence number, a fixed-size latency histogram, and per
//! subscriber track counters for loss.
//!
//! Everything here is used on the hot path: no allocation, no lock, no logging after construction.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Phases of a run, in order. Workers snapshot their counters when they see the phase change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Publisher up, subscribers joining, warm-up.
    Joining = 0,
    /// The measured window.
    Measuring = 1,
    /// The window is over; keep receiving but stop counting.
    Done = 2,
    /// Leave: workers return their reports, the publisher stops.
    Stop = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Joining,
            1 => Phase::Measuring,
            2 => Phase::Done,
            _ => Phase::Stop,
        }
    }
}

/// A 64-bit fingerprint of an RTP payload (its length and up to its first 64 bytes), the same on both sides
/// of the server because an SFU forwards payloads untouched. Never 0 (0 marks an empty ring slot).
pub fn fingerprint(payload: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (payload.len() as u64).wrapping_mul(K);
    let head = payload.get(..64).unwrap_or(payload);
    for chunk in head.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    h ^= h >> 29;
    if h == 0 { 1 } else { h }
}

/// Slots in a [`SentRing`]: every 16-bit sequence number has its own.
const RING_SLOTS: usize = 1 << 16;
/// How far back a subscriber searches for a payload it cannot place (about 15 s of 2.5 Mbit/s video).
pub const RESYNC_DEPTH: u16 = 4096;

#[derive(Default)]
struct SentSlot {
    sent_ns: AtomicU64,
    fingerprint: AtomicU64,
}

/// Send instants of one published track, by the publisher's sequence number. Written by the publisher thread,
/// read by subscriber workers.
pub struct SentRing {
    slots: Box<[SentSlot]>,
    /// Last sequence number written, or `u32::MAX` before the first.
    last: AtomicU32,
}

impl Default for SentRing {
    fn default() -> Self {
        SentRing {
            slots: (0..RING_SLOTS).map(|_| SentSlot::default()).collect(),
            last: AtomicU32::new(u32::MAX),
        }
    }
}

impl SentRing {
    /// Records that the packet `seq` with `fingerprint` was sent at `sent_ns` (since [`Shared::epoch`]).
    pub fn record(&self, seq: u16, fingerprint: u64, sent_ns: u64) {
        let slot = &self.slots[usize::from(seq)];
        slot.sent_ns.store(sent_ns, Ordering::Relaxed);
        // Release: a reader that sees this fingerprint sees the instant stored before it.
        slot.fingerprint.store(fingerprint, Ordering::Release);
        self.last.store(u32::from(seq), Ordering::Release);
    }

    /// The send instant of packet `seq` if its fingerprint is `fingerprint`.
    pub fn sent_ns(&self, seq: u16, fingerprint: u64) -> Option<u64> {
        let slot = &self.slots[usize::from(seq)];
        (slot.fingerprint.load(Ordering::Acquire) == fingerprint)
            .then(|| slot.sent_ns.load(Ordering::Relaxed))
    }

    /// The publisher's sequence number of the most recent packet with `fingerprint`, searching back `depth`
    /// packets from the last one sent.
    pub fn find(&self, fingerprint: u64, depth: u16) -> Option<u16> {
        let last = self.last.load(Ordering::Acquire);
        if last == u32::MAX {
            return None;
        }
        let last = last as u16;
        (0..depth).map(|back| last.wrapping_sub(back)).find(|&seq| {
            self.slots[usize::from(seq)]
                .fingerprint
                .load(Ordering::Acquire)
                == fingerprint
        })
    }
}

/// State shared by the control task, the publisher thread and the subscriber workers.
pub struct Shared {
    /// The clock every instant is measured on (one process, one clock).
    pub epoch: Instant,
    phase: AtomicU8,
    /// Send instants per track (audio, video).
    pub sent: [SentRing; 2],
    /// Packets published per track (audio, video).
    pub published: [AtomicU64; 2],
    /// Subscribers whose DTLS handshake completed.
    pub connected: AtomicU64,
    /// Subscribers that failed or disconnected after joining.
    pub lost_subscribers: AtomicU64,
    /// Keyframe requests (PLI/FIR) the publisher received.
    pub keyframe_requests: AtomicU64,
    /// Largest delay of a publisher packet behind its schedule during the window, in microseconds.
    pub publisher_lag_us: AtomicU64,
    /// Set by the publisher thread once its DTLS handshake completed.
    pub publisher_connected: AtomicU8,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            phase: AtomicU8::new(Phase::Joining as u8),
            sent: [SentRing::default(), SentRing::default()],
            published: [AtomicU64::new(0), AtomicU64::new(0)],
            connected: AtomicU64::new(0),
            lost_subscribers: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            publisher_lag_us: AtomicU64::new(0),
            publisher_connected: AtomicU8::new(0),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Nanoseconds from the epoch to `at` (0 before the epoch).
    pub fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// Exact below this many microseconds.
const LINEAR_US: u64 = 1024;
/// Sub-buckets per power of two above that (1.6 % resolution).
const SUB_BITS: u32 = 6;
const OCTAVES: usize = 30;
const BUCKETS: usize = LINEAR_US as usize + OCTAVES * (1 << SUB_BITS);

/// Latency histogram in microseconds: exact up to 1 ms, then 64 buckets per doubling up to about 12 days.
/// Fixed size (24 KiB), so recording never allocates.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("max", &self.max)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR_US {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros(); // >= 10
    let octave = (msb - 10) as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = ((us >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1)) as usize;
    LINEAR_US as usize + (octave << SUB_BITS) + sub
}

/// The smallest value of a bucket.
fn bucket_floor(index: usize) -> u64 {
    if index < LINEAR_US as usize {
        return index as u64;
    }
    let rest = index - LINEAR_US as usize;
    let octave = (rest >> SUB_BITS) as u32;
    let sub = (rest & ((1 << SUB_BITS) - 1)) as u64;
    ((1 << SUB_BITS) | sub) << (octave + 10 - SUB_BITS)
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket_of(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the floor of the bucket holding it, capped by the maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_floor(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Counters of one received track at an instant: packets received and the highest extended sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxCount {
    pub received: u64,
    /// Highest extended sequence number seen, if any packet arrived.
    pub highest: Option<u64>,
}

/// One subscriber's view of one track: counts, the window's snapshots, and the mapping from the server's
/// sequence numbers to the publisher's (the server rewrites them with a constant offset per subscriber).
#[derive(Debug, Default)]
pub struct TrackRx {
    pub now: RxCount,
    pub window_start: Option<RxCount>,
    pub window_end: Option<RxCount>,
    /// Extended sequence number of the first packet received.
    first: Option<u64>,
    /// Server sequence number minus publisher sequence number, once known.
    offset: Option<u16>,
    /// Packets placed again after their fingerprint did not match the expected one.
    pub resyncs: u64,
    /// Packets in the window whose send instant could not be found.
    pub unmatched: u64,
}

impl TrackRx {
    /// Counts a received packet.
    pub fn count(&mut self, extended_seq: u64) {
        self.now.received += 1;
        self.first.get_or_insert(extended_seq);
        self.now.highest = Some(
            self.now
                .highest
                .map_or(extended_seq, |h| h.max(extended_seq)),
        );
    }

    /// The send instant (ns since the epoch) of the packet with server sequence number `seq` and payload
    /// `fingerprint`, learning or relearning the offset from the ring when needed.
    pub fn sent_ns(&mut self, ring: &SentRing, seq: u16, fingerprint: u64) -> Option<u64> {
        if let Some(offset) = self.offset
            && let Some(ns) = ring.sent_ns(seq.wrapping_sub(offset), fingerprint)
        {
            return Some(ns);
        }
        let Some(published) = ring.find(fingerprint, RESYNC_DEPTH) else {
            self.unmatched += 1;
            return None;
        };
        if self.offset.is_some() {
            self.resyncs += 1;
        }
        self.offset = Some(seq.wrapping_sub(published));
        ring.sent_ns(published, fingerprint)
    }

    /// (expected, received) in the window by sequence number, or `None` if no packet arrived in the window.
    pub fn window_counts(&self) -> Option<(u64, u64)> {
        let start = self.window_start.unwrap_or_default();
        let end = self.window_end?;
        let received = end.received.checked_sub(start.received)?;
        if received == 0 {
            return None;
        }
        let highest_end = end.highest?;
        let expected = match start.highest {
            Some(h) => highest_end.saturating_sub(h),
            // Nothing before the window: count from the first packet that came.
            None => (highest_end + 1).saturating_sub(self.first.unwrap_or(highest_end)),
        };
        Some((expected, received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let b = bucket_of(us);
            assert!(b >= last, "bucket order at {us}");
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= us, "{floor} <= {us}");
            assert!(
                us - floor <= us / 60 + 1,
                "within 1/64 at {us}: floor {floor}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for us in 1..=1000 {
            h.record(us);
        }
        assert_eq!(h.quantile(0.5), Some(500));
        assert_eq!(h.quantile(0.99), Some(990));
        assert_eq!(h.quantile(1.0), Some(1000));
        h.record(50_000);
        assert_eq!(h.max(), 50_000);
        assert!(Histogram::default().quantile(0.5).is_none());
        let mut merged = Histogram::default();
        merged.merge(&h);
        assert_eq!(merged.count(), 1001);
    }

    #[test]
    fn subscriber_learns_the_server_offset_and_follows_a_change() {
        let ring = SentRing::default();
        for seq in 100u16..200 {
            ring.record(seq, fingerprint(&seq.to_be_bytes()), u64::from(seq) * 10);
        }
        let mut track = TrackRx::default();
        // The server numbers packet 150 as 7.
        assert_eq!(
            track.sent_ns(&ring, 7, fingerprint(&150u16.to_be_bytes())),
            Some(1500)
        );
        assert_eq!(
            track.sent_ns(&ring, 8, fingerprint(&151u16.to_be_bytes())),
            Some(1510)
        );
        assert_eq!(track.resyncs, 0);
        // The server's offset changes (a publisher reconnect): found again by content.
        assert_eq!(
            track.sent_ns(&ring, 9000, fingerprint(&160u16.to_be_bytes())),
            Some(1600)
        );
        assert_eq!(track.resyncs, 1);
        assert_eq!(track.sent_ns(&ring, 1, 0xdead_beef), None);
        assert_eq!(track.unmatched, 1);
    }

    #[test]
    fn loss_window_counts_from_sequence_numbers() {
        let mut track = TrackRx::default();
        for seq in 1..=10 {
            track.count(seq);
        }
        track.window_start = Some(track.now);
        for seq in [11, 12, 14, 15] {
            track.count(seq);
        }
        track.window_end = Some(track.now);
        assert_eq!(track.window_counts(), Some((5, 4)));
        let empty = TrackRx {
            window_end: Some(RxCount::default()),
            ..TrackRx::default()
        };
        assert_eq!(empty.window_counts(), None);
    }

    #[test]
    fn fingerprints_differ_by_content_and_length_and_are_never_zero() {
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
        assert_ne!(fingerprint(&[0; 10]), fingerprint(&[0; 11]));
        assert_ne!(fingerprint(&[]), 0);
    }
}
