//! Fan-out bench: one received RTP packet forwarded to N viewers (N = 1, 10, 100, 1000) through zipIQ's hot path
//! (`Forwarder::forward` -> `DownTrack::write` -> the track's writer), with a writer that stands in for the peer
//! connection's interceptor/SRTP/socket stage and does nothing. Reports time per packet per viewer (criterion
//! throughput in elements = viewers) and heap allocations per forwarded packet (a counting allocator).
//!
//! Run: `cargo bench --bench fanout`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtp::header::Header;
use rtp::packet::Packet;
use tokio::sync::mpsc;
use webrtc::interceptor::Attributes;
use webrtc::track::track_local::TrackLocalWriter;
use zipiq::client::h264_capability;
use zipiq::sfu::downtrack::DownTrack;
use zipiq::sfu::forward::{ForwardMetrics, Forwarder, GopLimits, Start};
use zipiq::sfu::keyframe::VideoCodec;
use zipiq::sfu::keyframe_request::KeyframeRequester;

/// Counts heap allocations made by this process.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Stands in for the peer connection: counts what it is given.
#[derive(Debug, Default)]
struct NullWriter {
    bytes: AtomicU64,
}

#[async_trait]
impl TrackLocalWriter for NullWriter {
    async fn write_rtp_with_attributes(
        &self,
        pkt: &Packet,
        _attr: &Attributes,
    ) -> webrtc::error::Result<usize> {
        self.bytes
            .fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
        Ok(pkt.payload.len())
    }
}

fn packet(seq: u16) -> Packet {
    Packet {
        header: Header {
            version: 2,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc: 0x1234,
            payload_type: 96,
            ..Default::default()
        },
        // A non-IDR H.264 slice of a typical size.
        payload: Bytes::from(vec![0x41u8; 1100]),
    }
}

async fn forwarder_with(viewers: usize) -> Forwarder {
    let (tx, _rx) = mpsc::channel(16);
    let requester = Arc::new(KeyframeRequester::new(1, 1000, tx));
    let mut f = Forwarder::new(
        1,
        Some(VideoCodec::H264),
        GopLimits {
            max_packets: 4096,
            max_bytes: 8 << 20,
        },
        requester,
        ForwardMetrics::new("video"),
    );
    let writer: Arc<dyn TrackLocalWriter + Send + Sync> = Arc::new(NullWriter::default());
    for i in 0..viewers {
        let track = Arc::new(DownTrack::new(h264_capability(), "video", "bench"));
        track.bind_writer(1000 + i as u32, 96, writer.clone());
        f.attach(track, Start::Now, Instant::now()).await;
    }
    f
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("fanout");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for viewers in [1usize, 10, 100, 1000] {
        let mut f = rt.block_on(forwarder_with(viewers));
        // Allocations per forwarded packet, after a warm-up that fills the picture cache's capacity.
        rt.block_on(async {
            for s in 0..5000u16 {
                f.forward(packet(s), Instant::now()).await;
            }
        });
        let packets = 2000u64;
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        rt.block_on(async {
            for s in 0..packets as u16 {
                f.forward(packet(s), Instant::now()).await;
            }
        });
        let total = ALLOCATIONS.load(Ordering::Relaxed) - before;
        // Per received packet: its payload (made in `packet()`, as webrtc-rs does when it reads one) and the
        // `Bytes` promotion to a shared buffer on its first clone. Per forwarded packet: what is left.
        let per_received = 2.0;
        let per_forwarded =
            (total as f64 - per_received * packets as f64) / (packets as f64 * viewers as f64);
        println!(
            "fanout/{viewers}: {per_forwarded:.3} heap allocations per forwarded packet \
             (1.000 is the boxed future of webrtc-rs's async-trait TrackLocalWriter; zipIQ's own code: {:.3}); \
             {per_received} per received packet",
            per_forwarded - 1.0
        );
        group.throughput(Throughput::Elements(viewers as u64));
        group.bench_with_input(BenchmarkId::from_parameter(viewers), &viewers, |b, _| {
            b.iter_custom(|iters| {
                let pkts: Vec<Packet> = (0..iters).map(|i| packet(i as u16)).collect();
                rt.block_on(async {
                    let start = Instant::now();
                    for p in pkts {
                        f.forward(p, start).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
