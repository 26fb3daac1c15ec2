//! Segmenter bench: a real RTP capture (H.264 360p + Opus, made by `scripts/make-fixtures` with Debian's ffmpeg)
//! pushed through `Segmenter` (depacketize, cut on keyframes, mux CMAF fMP4) at full speed, beside the raw sha2-256
//! of the same RTP payload bytes in the same run (the floor of any content addressing that follows). Throughput is
//! in bytes of RTP payload in.
//!
//! Target (issue: live chunking): with IPFS add, the whole side path keeps up with 100 simultaneous 6 Mbit/s
//! streams on one core, i.e. 75 MB/s of RTP in.
//!
//! Run: `cargo bench --bench segmenter`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use zipiq::media::capture::Capture;
use zipiq::media::segmenter::{Segmenter, SegmenterConfig};
use zipiq::media::{MediaKind, TapEvent};

fn capture() -> Capture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/h264-opus-360p.zqcap");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Capture::parse(&data).expect("fixture parses")
}

/// The capture as tap events: Started, every packet (arrival = capture time), End.
fn events(capture: &Capture, base: Instant) -> Vec<TapEvent> {
    let mut out = Vec::with_capacity(capture.records.len() + 2);
    out.push(TapEvent::Started {
        audio: capture.header.audio.clone(),
        video: capture.header.video.clone(),
    });
    for r in &capture.records {
        out.push(TapEvent::Rtp {
            kind: r.kind,
            packet: r.packet.clone(),
            arrival: base + r.at,
        });
    }
    out.push(TapEvent::End);
    out
}

fn segmenter(c: &mut Criterion) {
    let capture = capture();
    let payload_bytes: u64 = capture
        .records
        .iter()
        .map(|r| r.packet.payload.len() as u64)
        .sum();
    let video_packets = capture
        .records
        .iter()
        .filter(|r| r.kind == MediaKind::Video)
        .count();
    eprintln!(
        "capture: {} packets ({video_packets} video), {payload_bytes} payload bytes, {:?} long",
        capture.records.len(),
        capture.records.last().map(|r| r.at).unwrap_or_default()
    );
    let base = Instant::now();
    let mut group = c.benchmark_group("segmenter");
    group.throughput(Throughput::Bytes(payload_bytes));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("sha256_of_payloads", |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            for r in &capture.records {
                h.update(&r.packet.payload);
            }
            h.finalize()
        })
    });
    group.bench_function("capture_to_cmaf_segments", |b| {
        b.iter_batched(
            || events(&capture, base),
            |events| {
                let mut s = Segmenter::new(SegmenterConfig {
                    target_duration: Duration::from_secs(2),
                    max_segment_bytes: 8 * 1024 * 1024,
                });
                let mut bytes = 0usize;
                for e in events {
                    for seg in s.push(e) {
                        bytes += seg.bytes.len();
                    }
                }
                for seg in s.finish() {
                    bytes += seg.bytes.len();
                }
                assert!(bytes > 0, "segments came out");
                bytes
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, segmenter);
criterion_main!(benches);
