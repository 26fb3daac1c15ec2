//! H.264 RTP depacketizer (RFC 6184, packetization mode 1: single NAL unit, STAP-A, FU-A): packets in, whole
//! access units out, in decode order.
//!
//! A small reorder buffer puts late packets back in place; a sequence gap that the buffer cannot fill damages the
//! access unit it falls in, which is dropped, and video then resumes only at the next keyframe (IDR). Sequence
//! numbers and timestamps are unwrapped to 64 bits. Parameter sets (SPS/PPS) come in-band or from
//! `sprop-parameter-sets`; they are kept out of the samples (they go in the init segment's `avcC`).
//! A parser of outside bytes: panic free, bounded (fuzz target `h264_depacketizer`).

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use rtp::packet::Packet;

/// Most packets held while waiting for a missing one.
pub const DEFAULT_REORDER_DEPTH: usize = 32;
/// Largest NAL unit reassembled from FU-A fragments.
const MAX_NAL_BYTES: usize = 8 << 20;
/// Most NAL units in one access unit.
const MAX_NALUS_PER_AU: usize = 256;

/// One picture's NAL units.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    /// RTP timestamp (90 kHz) unwrapped to 64 bits.
    pub ts: u64,
    /// Arrival of its first packet.
    pub arrival: Instant,
    /// NAL units without start codes or length prefixes (no SPS/PPS/AUD).
    pub nalus: Vec<Bytes>,
    /// Contains an IDR slice.
    pub keyframe: bool,
}

impl AccessUnit {
    /// The AVCC sample: each NAL unit with a 4-byte big-endian length prefix.
    pub fn to_avcc(&self) -> Bytes {
        let len: usize = self.nalus.iter().map(|n| n.len() + 4).sum();
        let mut out = BytesMut::with_capacity(len);
        for n in &self.nalus {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
        }
        out.freeze()
    }
}

/// Why access units were dropped (counted for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// A packet of the unit was lost.
    pub loss: u64,
    /// Waiting for a keyframe after a loss or at the start.
    pub waiting_for_keyframe: u64,
    /// A keyframe came before any SPS/PPS.
    pub no_parameter_sets: u64,
    /// Malformed payloads (bad STAP-A, FU-A without a start, oversize).
    pub malformed: u64,
}

/// Extends `value`, an RTP field `BITS` wide, to 64 bits: of the values with those low bits, the one nearest
/// `highest` (the highest so far, which it raises; the first is `value + 2^BITS`). One rule for sequence numbers
/// (16 bits) and timestamps (32 bits).
fn unwrap_nearest<const BITS: u32>(highest: &mut Option<u64>, value: u64) -> u64 {
    let Some(top) = *highest else {
        let v = value + (1 << BITS);
        *highest = Some(v);
        return v;
    };
    let base = top & !((1 << BITS) - 1);
    let candidates = [base.wrapping_sub(1 << BITS), base, base + (1 << BITS)];
    let v = candidates
        .iter()
        .map(|b| b + value)
        .min_by_key(|v| v.abs_diff(top))
        .unwrap_or(top);
    if v > top {
        *highest = Some(v);
    }
    v
}

/// Unwraps a 16-bit sequence number to 64 bits.
#[derive(Debug, Clone, Default)]
pub struct SeqUnwrapper {
    highest: Option<u64>,
}

impl SeqUnwrapper {
    /// The 64-bit number of `seq`: the one nearest the highest seen so far (the first is `seq + 2^16`).
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        unwrap_nearest::<16>(&mut self.highest, u64::from(seq))
    }
}

/// Unwraps a 32-bit RTP timestamp to 64 bits.
#[derive(Debug, Clone, Default)]
pub struct TsUnwrapper {
    highest: Option<u64>,
}

impl TsUnwrapper {
    /// The 64-bit timestamp of `ts`: the one nearest the highest seen so far (the first is `ts + 2^32`).
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        unwrap_nearest::<32>(&mut self.highest, u64::from(ts))
    }
}

/// SPS and PPS from an fmtp line's `sprop-parameter-sets` (base64, comma separated).
pub fn sprop_parameter_sets(fmtp: &str) -> (Option<Bytes>, Option<Bytes>) {
    let Some(value) = fmtp_value(fmtp, "sprop-parameter-sets") else {
        return (None, None);
    };
    let mut sps = None;
    let mut pps = None;
    for part in value.split(',') {
        if let Ok(nal) = STANDARD.decode(part.trim()) {
            match nal.first().map(|b| b & 0x1f) {
                Some(7) => sps = Some(Bytes::from(nal)),
                Some(8) => pps = Some(Bytes::from(nal)),
                _ => {}
            }
        }
    }
    (sps, pps)
}

/// The value of `key` in an SDP fmtp line (`k=v;k=v`), keys compared without case.
pub fn fmtp_value<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

/// The depacketizer of one H.264 track.
#[derive(Debug)]
pub struct H264Depacketizer {
    reorder: BTreeMap<u64, (Packet, Instant)>,
    reorder_depth: usize,
    next_seq: Option<u64>,
    seqs: SeqUnwrapper,
    timestamps: TsUnwrapper,
    cur_ts: Option<u64>,
    cur_arrival: Option<Instant>,
    cur_nalus: Vec<Bytes>,
    cur_keyframe: bool,
    cur_damaged: bool,
    cur_marked: bool,
    fragment: Option<BytesMut>,
    waiting_keyframe: bool,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// Set when SPS or PPS changed since the last `take_parameter_change`.
    parameters_changed: bool,
    /// Access units dropped, by reason.
    pub drops: DropCounts,
}

impl H264Depacketizer {
    /// A depacketizer with optional out-of-band parameter sets.
    pub fn new(sps: Option<Bytes>, pps: Option<Bytes>) -> H264Depacketizer {
        H264Depacketizer {
            reorder: BTreeMap::new(),
            reorder_depth: DEFAULT_REORDER_DEPTH,
            next_seq: None,
            seqs: SeqUnwrapper::default(),
            timestamps: TsUnwrapper::default(),
            cur_ts: None,
            cur_arrival: None,
            cur_nalus: Vec::new(),
            cur_keyframe: false,
            cur_damaged: false,
            cur_marked: false,
            fragment: None,
            waiting_keyframe: true,
            parameters_changed: sps.is_some() || pps.is_some(),
            sps,
            pps,
            drops: DropCounts::default(),
        }
    }

    /// The current SPS and PPS.
    pub fn parameter_sets(&self) -> (Option<&Bytes>, Option<&Bytes>) {
        (self.sps.as_ref(), self.pps.as_ref())
    }

    /// Whether SPS/PPS changed since the last call (a new init segment is due).
    pub fn take_parameter_change(&mut self) -> bool {
        std::mem::take(&mut self.parameters_changed)
    }

    /// Takes one packet; returns the access units it completes.
    pub fn push(&mut self, packet: Packet, arrival: Instant) -> Vec<AccessUnit> {
        let mut out = Vec::new();
        let seq = self.seqs.unwrap(packet.header.sequence_number);
        match self.next_seq {
            Some(next) if seq < next => return out, // late duplicate or too late to use
            None => self.next_seq = Some(seq),
            _ => {}
        }
        self.reorder.entry(seq).or_insert((packet, arrival));
        self.release(&mut out, false);
        out
    }

    /// Releases every buffered packet (gaps count as losses) and the unit in progress.
    pub fn flush(&mut self) -> Vec<AccessUnit> {
        let mut out = Vec::new();
        self.release(&mut out, true);
        self.finish_unit(&mut out);
        out
    }

    fn release(&mut self, out: &mut Vec<AccessUnit>, everything: bool) {
        loop {
            let Some((&first, _)) = self.reorder.iter().next() else {
                return;
            };
            let Some(next) = self.next_seq else { return };
            let gap = first > next;
            if gap && !everything && self.reorder.len() <= self.reorder_depth {
                return; // Wait for the missing packet.
            }
            let Some((packet, arrival)) = self.reorder.remove(&first) else {
                return;
            };
            self.next_seq = Some(first + 1);
            self.process(packet, arrival, gap, out);
        }
    }

    fn process(&mut self, packet: Packet, arrival: Instant, gap: bool, out: &mut Vec<AccessUnit>) {
        let ts = self.timestamps.unwrap(packet.header.timestamp);
        let new_unit = self.cur_ts.is_some_and(|t| t != ts);
        if gap {
            self.fragment = None;
            if !new_unit || !self.cur_marked {
                self.cur_damaged = true;
            }
        }
        if new_unit {
            self.finish_unit(out);
            if gap {
                // The lost packets may have begun this unit too.
                self.cur_damaged = true;
            }
        }
        if self.cur_ts.is_none() {
            self.cur_ts = Some(ts);
            self.cur_arrival = Some(arrival);
        }
        self.depacketize(&packet.payload);
        if packet.header.marker {
            self.cur_marked = true;
            self.finish_unit(out);
        }
    }

    fn depacketize(&mut self, payload: &Bytes) {
        let Some(&header) = payload.first() else {
            return;
        };
        match header & 0x1f {
            1..=23 => self.nal(payload.clone()),
            24 => {
                // STAP-A: [header][size u16][NAL]...
                let mut rest = payload.slice(1..);
                while rest.len() >= 2 {
                    let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    if size == 0 || rest.len() < 2 + size {
                        self.drops.malformed += 1;
                        self.cur_damaged = true;
                        return;
                    }
                    self.nal(rest.slice(2..2 + size));
                    rest = rest.slice(2 + size..);
                }
            }
            28 => {
                let Some(&fu) = payload.get(1) else {
                    self.cur_damaged = true;
                    return;
                };
                let start = fu & 0x80 != 0;
                let end = fu & 0x40 != 0;
                if start {
                    let mut buf = BytesMut::with_capacity(payload.len() * 4);
                    buf.extend_from_slice(&[(header & 0xe0) | (fu & 0x1f)]);
                    buf.extend_from_slice(&payload[2..]);
                    self.fragment = Some(buf);
                } else if let Some(buf) = &mut self.fragment {
                    if buf.len() + payload.len() > MAX_NAL_BYTES {
                        self.fragment = None;
                        self.drops.malformed += 1;
                        self.cur_damaged = true;
                        return;
                    }
                    buf.extend_from_slice(&payload[2..]);
                } else {
                    // A middle or end fragment without its start: the start was lost.
                    self.cur_damaged = true;
                    return;
                }
                if end && let Some(buf) = self.fragment.take() {
                    self.nal(buf.freeze());
                }
            }
            _ => {
                // STAP-B, MTAP, FU-B are not used in packetization mode 1.
                self.drops.malformed += 1;
                self.cur_damaged = true;
            }
        }
    }

    fn nal(&mut self, nal: Bytes) {
        let Some(&h) = nal.first() else { return };
        match h & 0x1f {
            7 => {
                if self.sps.as_ref() != Some(&nal) {
                    self.sps = Some(nal);
                    self.parameters_changed = true;
                }
            }
            8 => {
                if self.pps.as_ref() != Some(&nal) {
                    self.pps = Some(nal);
                    self.parameters_changed = true;
                }
            }
            9 => {} // access unit delimiter
            t => {
                if t == 5 {
                    self.cur_keyframe = true;
                }
                if self.cur_nalus.len() < MAX_NALUS_PER_AU {
                    self.cur_nalus.push(nal);
                } else {
                    self.cur_damaged = true;
                }
            }
        }
    }

    fn finish_unit(&mut self, out: &mut Vec<AccessUnit>) {
        let Some(ts) = self.cur_ts.take() else {
            self.reset_unit();
            return;
        };
        let arrival = self.cur_arrival.take();
        let nalus = std::mem::take(&mut self.cur_nalus);
        let keyframe = self.cur_keyframe;
        let damaged = self.cur_damaged || self.fragment.is_some();
        self.reset_unit();
        if damaged {
            // Even a unit whose every packet was lost leaves a damaged reference chain behind it.
            self.drops.loss += 1;
            self.waiting_keyframe = true;
            return;
        }
        if nalus.is_empty() {
            return; // Parameter sets only.
        }
        if self.waiting_keyframe && !keyframe {
            self.drops.waiting_for_keyframe += 1;
            return;
        }
        if keyframe && (self.sps.is_none() || self.pps.is_none()) {
            self.drops.no_parameter_sets += 1;
            self.waiting_keyframe = true;
            return;
        }
        self.waiting_keyframe = false;
        if let Some(arrival) = arrival {
            out.push(AccessUnit {
                ts,
                arrival,
                nalus,
                keyframe,
            });
        }
    }

    fn reset_unit(&mut self) {
        self.cur_nalus.clear();
        self.cur_keyframe = false;
        self.cur_damaged = false;
        self.cur_marked = false;
        self.fragment = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp::header::Header;

    #[test]
    fn sequence_numbers_unwrap_across_the_16_bit_wrap_both_ways() {
        let mut u = SeqUnwrapper::default();
        let a = u.unwrap(65_534);
        assert_eq!(u.unwrap(65_535), a + 1);
        assert_eq!(u.unwrap(0), a + 2);
        assert_eq!(
            u.unwrap(65_535),
            a + 1,
            "a late packet from before the wrap"
        );
        assert_eq!(u.unwrap(1), a + 3);
    }

    #[test]
    fn timestamps_unwrap_across_the_32_bit_wrap() {
        let mut u = TsUnwrapper::default();
        let a = u.unwrap(u32::MAX - 1000);
        assert_eq!(u.unwrap(2000), a + 3001);
        assert_eq!(
            u.unwrap(u32::MAX - 500),
            a + 500,
            "reordered, before the wrap"
        );
    }

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Packet {
        Packet {
            header: Header {
                sequence_number: seq,
                timestamp: ts,
                marker,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    const SPS: [u8; 4] = [0x67, 0x42, 0xc0, 0x1e];
    const PPS: [u8; 3] = [0x68, 0xce, 0x3c];

    /// An IDR picture as STAP-A(SPS, PPS) + FU-A(IDR) in three fragments.
    fn keyframe(seq: u16, ts: u32) -> Vec<Packet> {
        let mut stap = vec![0x78];
        for nal in [&SPS[..], &PPS[..]] {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        vec![
            pkt(seq, ts, false, &stap),
            pkt(seq.wrapping_add(1), ts, false, &[0x7c, 0x85, 1, 2]),
            pkt(seq.wrapping_add(2), ts, false, &[0x7c, 0x05, 3, 4]),
            pkt(seq.wrapping_add(3), ts, true, &[0x7c, 0x45, 5]),
        ]
    }

    fn run(d: &mut H264Depacketizer, packets: Vec<Packet>) -> Vec<AccessUnit> {
        let now = Instant::now();
        let mut out = Vec::new();
        for p in packets {
            out.extend(d.push(p, now));
        }
        out
    }

    #[test]
    fn stap_a_and_fu_a_make_one_keyframe_with_parameter_sets_kept_aside() {
        let mut d = H264Depacketizer::new(None, None);
        let aus = run(&mut d, keyframe(100, 9000));
        assert_eq!(aus.len(), 1);
        assert!(aus[0].keyframe);
        assert_eq!(
            aus[0].nalus,
            vec![Bytes::from_static(&[0x65, 1, 2, 3, 4, 5])]
        );
        assert_eq!(d.parameter_sets().0.map(|b| &b[..]), Some(&SPS[..]));
        assert!(d.take_parameter_change());
        assert!(!d.take_parameter_change());
        assert_eq!(&aus[0].to_avcc()[..], &[0, 0, 0, 6, 0x65, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn delta_frames_before_any_keyframe_are_dropped() {
        let mut d = H264Depacketizer::new(None, None);
        let aus = run(&mut d, vec![pkt(1, 0, true, &[0x41, 9])]);
        assert!(aus.is_empty());
        assert_eq!(d.drops.waiting_for_keyframe, 1);
    }

    #[test]
    fn reordered_packets_are_put_back_in_place() {
        let mut d = H264Depacketizer::new(None, None);
        let mut k = keyframe(10, 0);
        k.swap(1, 2);
        let mut packets = k;
        packets.push(pkt(14, 3000, true, &[0x41, 7]));
        let aus = run(&mut d, packets);
        assert_eq!(aus.len(), 2, "{:?}", d.drops);
        assert_eq!(aus[0].nalus[0], Bytes::from_static(&[0x65, 1, 2, 3, 4, 5]));
    }

    #[test]
    fn a_loss_drops_the_damaged_unit_and_waits_for_the_next_keyframe() {
        let mut d = H264Depacketizer::new(None, None);
        let mut packets = keyframe(0, 0);
        packets.push(pkt(4, 3000, true, &[0x41, 1]));
        // Packet 5 (first half of the next picture) is lost for good.
        packets.push(pkt(6, 6000, true, &[0x7c, 0x41, 9]));
        packets.push(pkt(7, 9000, true, &[0x41, 2]));
        // Enough later packets to give up waiting for 5.
        let mut seq = 8u16;
        let mut ts = 12_000u32;
        for _ in 0..40 {
            packets.push(pkt(seq, ts, true, &[0x41, 3]));
            seq += 1;
            ts += 3000;
        }
        packets.extend(keyframe(seq, ts));
        let mut aus = run(&mut d, packets);
        aus.extend(d.flush());
        assert_eq!(
            aus.len(),
            3,
            "keyframe, delta, next keyframe: {:?}",
            d.drops
        );
        assert!(aus[0].keyframe && !aus[1].keyframe && aus[2].keyframe);
        assert_eq!(d.drops.loss, 1);
        assert_eq!(d.drops.waiting_for_keyframe, 41);
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let mut d = H264Depacketizer::new(None, None);
        let mut packets = keyframe(65_534, u32::MAX - 1000);
        packets.push(pkt(2, 2000, true, &[0x41, 1]));
        let aus = run(&mut d, packets);
        assert_eq!(aus.len(), 2);
        assert_eq!(aus[1].ts - aus[0].ts, 3001);
    }

    #[test]
    fn sprop_parameter_sets_are_read_from_fmtp() {
        let (sps, pps) = sprop_parameter_sets(
            "packetization-mode=1;sprop-parameter-sets=Z0LAHg==,aM48gA==;profile-level-id=42c01e",
        );
        assert_eq!(sps.as_deref(), Some(&[0x67, 0x42, 0xc0, 0x1e][..]));
        assert_eq!(pps.as_deref(), Some(&[0x68, 0xce, 0x3c, 0x80][..]));
        let mut d = H264Depacketizer::new(sps, pps);
        let aus = run(&mut d, vec![pkt(1, 0, true, &[0x65, 1])]);
        assert_eq!(
            aus.len(),
            1,
            "keyframe decodable with out-of-band parameter sets"
        );
    }

    #[test]
    fn malformed_payloads_never_panic() {
        let mut d = H264Depacketizer::new(None, None);
        let now = Instant::now();
        for i in 0..2000u32 {
            let len = (i % 13) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|j| (i.wrapping_mul(31) as u8).wrapping_add(j as u8 * 17))
                .collect();
            let _ = d.push(pkt(i as u16, i / 3, i % 5 == 0, &bytes), now);
        }
        let _ = d.flush();
    }
}
