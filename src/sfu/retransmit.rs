//! A source's retransmission buffer: the last packets it forwarded, kept once for all of its viewers.
//!
//! Every viewer of a source gets the same packets (only SSRC, payload type, sequence number and timestamp differ,
//! and the viewer's munger maps those back and forth), so one ring of the source's packets answers every viewer's
//! NACKs. webrtc-rs's NACK responder keeps a ring per viewer track instead: at 512 packets that was 57 KiB per
//! viewer (heaptrack), for copies of the same headers. Slots are indexed by the source's sequence number; a lookup
//! checks the number, so a stale slot is never answered. The lock is a plain mutex held for one slot's update or
//! clone, never across an `.await`.

use std::sync::Mutex;

use rtp::packet::Packet;

/// The last `capacity` packets of one source, by sequence number.
#[derive(Debug)]
pub struct History {
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    slots: Box<[Option<Packet>]>,
    mask: u16,
    /// Highest sequence number inserted (serial arithmetic), once one was.
    last: Option<u16>,
}

impl History {
    /// A buffer of `capacity` packets, rounded up to a power of two (at least 1, at most 32768).
    pub fn new(capacity: u16) -> History {
        let size = capacity.clamp(1, 0x8000).next_power_of_two();
        History {
            ring: Mutex::new(Ring {
                slots: vec![None; usize::from(size)].into_boxed_slice(),
                mask: size - 1,
                last: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A poisoned lock only means a panic elsewhere; the ring stays consistent slot by slot.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `packet` (a clone: its payload is shared, not copied). Slots skipped by a gap are emptied, so a
    /// lookup never returns a packet from a lap ago.
    pub fn insert(&self, packet: &Packet) {
        let seq = packet.header.sequence_number;
        let mut ring = self.lock();
        let mask = ring.mask;
        if let Some(last) = ring.last {
            let ahead = seq.wrapping_sub(last);
            if ahead == 0 {
                return;
            }
            if ahead < 0x8000 {
                // Newer: clear what the gap skipped (at most one lap).
                let skipped = (ahead - 1).min(mask + 1);
                for i in 1..=skipped {
                    ring.slots[usize::from(last.wrapping_add(i) & mask)] = None;
                }
                ring.last = Some(seq);
            } else if last.wrapping_sub(seq) > mask {
                return; // Late, and older than the ring reaches: its slot belongs to a newer packet.
            }
        } else {
            ring.last = Some(seq);
        }
        ring.slots[usize::from(seq & mask)] = Some(packet.clone());
    }

    /// The packet with sequence number `seq`, if it is still kept.
    pub fn get(&self, seq: u16) -> Option<Packet> {
        let ring = self.lock();
        let last = ring.last?;
        if last.wrapping_sub(seq) > ring.mask {
            return None; // Newer than anything kept, or older than the ring reaches.
        }
        ring.slots[usize::from(seq & ring.mask)]
            .as_ref()
            .filter(|p| p.header.sequence_number == seq)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtp::header::Header;

    use super::*;

    fn packet(seq: u16) -> Packet {
        Packet {
            header: Header {
                sequence_number: seq,
                ..Default::default()
            },
            payload: Bytes::from(seq.to_be_bytes().to_vec()),
        }
    }

    fn payload(p: Option<Packet>) -> Option<u16> {
        p.map(|p| u16::from_be_bytes([p.payload[0], p.payload[1]]))
    }

    #[test]
    fn keeps_the_last_packets_and_forgets_older_ones() {
        let h = History::new(8);
        for seq in 0..20u16 {
            h.insert(&packet(seq));
        }
        for seq in 12..20u16 {
            assert_eq!(payload(h.get(seq)), Some(seq));
        }
        assert_eq!(h.get(11).map(|_| ()), None, "older than the ring");
        assert_eq!(h.get(20).map(|_| ()), None, "not sent yet");
    }

    #[test]
    fn wraps_around_the_sequence_space() {
        let h = History::new(4);
        for seq in [65_534u16, 65_535, 0, 1] {
            h.insert(&packet(seq));
        }
        assert_eq!(payload(h.get(65_534)), Some(65_534));
        assert_eq!(payload(h.get(1)), Some(1));
    }

    #[test]
    fn a_gap_empties_the_skipped_slots_and_late_packets_fill_them() {
        let h = History::new(8);
        h.insert(&packet(0));
        h.insert(&packet(1));
        h.insert(&packet(9)); // 2..=8 lost; slot of 1 is 9's, slot of 0 and 2.. emptied
        assert_eq!(h.get(1).map(|_| ()), None);
        assert_eq!(h.get(5).map(|_| ()), None);
        h.insert(&packet(5)); // arrives late
        assert_eq!(payload(h.get(5)), Some(5));
        h.insert(&packet(0)); // too late: its slot is 8's
        assert_eq!(h.get(0).map(|_| ()), None);
        assert_eq!(payload(h.get(9)), Some(9));
    }

    #[test]
    fn a_huge_jump_clears_everything_once() {
        let h = History::new(4);
        for seq in 0..4u16 {
            h.insert(&packet(seq));
        }
        h.insert(&packet(30_000));
        for seq in 0..4u16 {
            assert_eq!(h.get(seq).map(|_| ()), None);
        }
        assert_eq!(payload(h.get(30_000)), Some(30_000));
    }
}
