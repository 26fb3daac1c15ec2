//! Arbitrary RTP packets (audio and video, any numbering, any payload) through the whole segmenter: never panic,
//! and every media segment it emits has consistent box sizes.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zipiq::media::source::default_codecs;
use zipiq::media::{MediaKind, SegmentKind, Segmenter, SegmenterConfig, TapEvent};

fuzz_target!(|data: &[u8]| {
    let codecs = default_codecs();
    let mut s = Segmenter::new(SegmenterConfig {
        target_duration: Duration::from_millis(200),
        max_segment_bytes: 64 * 1024,
    });
    let start = Instant::now();
    let mut out = s.push(TapEvent::Started {
        audio: codecs.audio,
        video: codecs.video,
    });
    // Records: [kind/flags u8][seq u16][ts u32][ssrc u8][ms u8][len u8][payload]
    let mut rest = data;
    let mut at = Duration::ZERO;
    while rest.len() >= 10 {
        let flags = rest[0];
        let seq = u16::from_be_bytes([rest[1], rest[2]]);
        let ts = u32::from_be_bytes([rest[3], rest[4], rest[5], rest[6]]);
        let ssrc = u32::from(rest[7] & 3);
        at += Duration::from_millis(u64::from(rest[8]));
        let len = usize::from(rest[9]).min(rest.len() - 10);
        let payload = Bytes::copy_from_slice(&rest[10..10 + len]);
        rest = &rest[10 + len..];
        if flags & 0x80 != 0 {
            out.extend(s.push(TapEvent::PublisherLost));
            continue;
        }
        let kind = if flags & 1 == 1 {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let packet = rtp::packet::Packet {
            header: rtp::header::Header {
                sequence_number: seq,
                timestamp: ts,
                marker: flags & 2 == 2,
                ssrc,
                ..Default::default()
            },
            payload,
        };
        out.extend(s.push(TapEvent::Rtp {
            kind,
            packet,
            arrival: start + at,
        }));
    }
    out.extend(s.finish());
    for seg in out.iter().filter(|s| s.kind == SegmentKind::Media) {
        // Top-level boxes must tile the segment exactly.
        let b = &seg.bytes;
        let mut i = 0usize;
        while i + 8 <= b.len() {
            let size = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
            assert!(size >= 8 && i + size <= b.len());
            i += size;
        }
        assert_eq!(i, b.len());
    }
});
