//! Fan-out bench: one received RTP packet forwarded to N viewers (N = 1, 10, 100, 1000) through zipIQ's hot path
//! (`Forwarder::forward` -> `DownTrack::write` -> the track's writer), with a writer that stands in for the peer
//! connection's interceptor/SRTP/socket stage and does nothing. Reports time per packet per viewer (criterion
//! throughput in elements = viewers) and heap allocations per forwarded packet (a counting allocator).
//! The `retransmit` group measures the source's retransmission buffer: insert (once per forwarded packet, for
//! all viewers), lookup, and a whole NACK answer through `DownTrack::retransmit` (munger inverse, lookup, write).
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
use zipiq::sfu::downtrack::DownTrack;
use zipiq::sfu::forward::{ForwardMetrics, Forwarder, GopLimits, Start};
use zipiq::sfu::keyframe::VideoCodec;
use zipiq::sfu::keyframe_request::KeyframeRequester;
use zipiq::sfu::retransmit::History;
use zipiq_client::h264_capability;

/// Counts heap allocations made by this process (a bench-only allocator: the crate's `unsafe_code` rule is lifted
/// for it, as a `GlobalAlloc` cannot be written without `unsafe`).
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[allow(unsafe_code)]
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
    last_seq: AtomicU64,
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
        self.last_seq
            .store(u64::from(pkt.header.sequence_number), Ordering::Relaxed);
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
    let f = Forwarder::new(
        1,
        Some(VideoCodec::H264),
        GopLimits {
            max_packets: 4096,
            max_bytes: 8 << 20,
        },
        requester,
        ForwardMetrics::new("video"),
    );
    // As the server runs a video source: with its retransmission buffer.
    let mut f = f.with_history(Arc::new(History::new(512)));
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

fn allocations_per(iterations: u64, mut f: impl FnMut()) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..iterations {
        f();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / iterations as f64
}

fn retransmit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("retransmit");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));

    let history = History::new(512);
    let packets: Vec<Packet> = (0..4096u16).map(packet).collect();
    // A received packet's payload becomes shared at its first clone (the forwarder's picture cache does that
    // before the buffer sees it); do it here so the count below is the buffer's own.
    packets.iter().for_each(|p| drop(p.clone()));
    let mut next = 0usize;
    let inserts = allocations_per(10_000, || {
        history.insert(&packets[next % packets.len()]);
        next += 1;
    });
    group.bench_function("insert", |b| {
        b.iter(|| {
            history.insert(&packets[next % packets.len()]);
            next += 1;
        })
    });
    // Every lookup hits: the last 512 inserted are kept.
    let last = (next - 1) as u16;
    let mut k = 0u16;
    let lookups = allocations_per(10_000, || {
        std::hint::black_box(history.get(last.wrapping_sub(k % 512)));
        k = k.wrapping_add(1);
    });
    group.bench_function("lookup", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            std::hint::black_box(history.get(last.wrapping_sub(k % 512)))
        })
    });

    // A NACK answered for one viewer: the track's munger maps the number back, the buffer gives the packet, the
    // writer gets it with the viewer's header.
    let mut f = rt.block_on(forwarder_with(1));
    let track = Arc::new(DownTrack::new(h264_capability(), "video", "bench"));
    let writer = Arc::new(NullWriter::default());
    track.bind_writer(42, 96, writer.clone());
    rt.block_on(async {
        f.attach(track.clone(), Start::Now, Instant::now()).await;
        for s in 0..1000u16 {
            f.forward(packet(s), Instant::now()).await;
        }
    });
    // The viewer's own numbers (what its NACK carries): the last one it got, and the 499 before it.
    let last_sent = writer.last_seq.load(Ordering::Relaxed) as u16;
    let mut answered = 0u64;
    let mut n = 0u16;
    let mut answer = || {
        n = n.wrapping_add(1);
        let out = rt.block_on(track.retransmit(last_sent.wrapping_sub(n % 500)));
        if matches!(out, Ok(true)) {
            answered += 1;
        }
    };
    let nacks = allocations_per(1000, &mut answer);
    group.bench_function("nack_answer", |b| b.iter(&mut answer));
    group.finish();
    println!(
        "retransmit: {inserts:.3} allocations per insert, {lookups:.3} per lookup, {nacks:.3} per NACK answered \
         (1.000 of them the boxed future of webrtc-rs's TrackLocalWriter); {answered} NACKs answered"
    );
    assert!(answered > 0, "the bench answers NACKs");
}

criterion_group!(benches, fanout, retransmit);
criterion_main!(benches);
