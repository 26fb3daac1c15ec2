//! Arbitrary RTP payloads, sequence numbers, timestamps and markers into the H.264 depacketizer: never panic.
#![no_main]

use std::time::Instant;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zipiq::media::h264::H264Depacketizer;

fuzz_target!(|data: &[u8]| {
    let mut d = H264Depacketizer::new(None, None);
    let now = Instant::now();
    // Records: [seq u16][ts u32][flags u8][len u8][payload ...]
    let mut rest = data;
    while rest.len() >= 8 {
        let seq = u16::from_be_bytes([rest[0], rest[1]]);
        let ts = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let marker = rest[6] & 1 == 1;
        let len = usize::from(rest[7]).min(rest.len() - 8);
        let payload = Bytes::copy_from_slice(&rest[8..8 + len]);
        rest = &rest[8 + len..];
        let packet = rtp::packet::Packet {
            header: rtp::header::Header {
                sequence_number: seq,
                timestamp: ts,
                marker,
                ..Default::default()
            },
            payload,
        };
        for unit in d.push(packet, now) {
            let _ = unit.to_avcc();
        }
    }
    let _ = d.flush();
});
