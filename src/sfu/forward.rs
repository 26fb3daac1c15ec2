//! The hot path: one received packet out to every viewer of its source.
//!
//! A [`Forwarder`] belongs to one source (a publisher's audio track or one video layer) and is owned by that
//! source's task alone, so its viewer list and picture cache need no lock. Per packet it strips the publisher's
//! header extensions (their ids mean nothing to viewers), updates the cache of the current group of pictures,
//! then writes to each viewer's [`DownTrack`] in turn. The payload is one `Bytes` allocation shared by every
//! viewer and the cache. A viewer whose write fails loses that packet only; nobody waits for the side pipeline.
//!
//! Viewers whose peer connections live on another media thread (see `media_threads`) are fed by a shard: a task on
//! that thread running a forwarder of its own (its own viewer list and picture cache, seeded from this one), to
//! which this forwarder hands each packet once, through a bounded queue it never waits on. One stream's writes
//! then run on every core in parallel instead of one after another on one.

use std::sync::Arc;
use std::time::Instant;

use metrics::Counter;
use rtp::packet::Packet;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::downtrack::{DownTrack, WriteOutcome};
use super::keyframe::{VideoCodec, starts_keyframe};
use super::keyframe_request::KeyframeRequester;
use super::retransmit::History;
use super::tap::Tap;

/// How a viewer attached to a source starts receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At once, from the next packet (audio).
    Now,
    /// From the cached group of pictures, so the first frame decodes without waiting for the next keyframe (a
    /// new viewer). Falls back to `AtKeyframe` when there is no complete cache.
    FromCache,
    /// At the next keyframe of this source (a layer switch or a returning publisher; the viewer keeps its
    /// current source until then).
    AtKeyframe,
}

/// Bounds of the group-of-pictures cache.
#[derive(Debug, Clone, Copy)]
pub struct GopLimits {
    /// Most packets kept.
    pub max_packets: usize,
    /// Most payload bytes kept.
    pub max_bytes: usize,
}

/// The packets since the last keyframe of one video source.
#[derive(Debug, Clone)]
pub struct GopCache {
    packets: Vec<Packet>,
    bytes: usize,
    keyframe_ts: Option<u32>,
    valid: bool,
    limits: GopLimits,
}

impl GopCache {
    /// An empty cache with these bounds.
    pub fn new(limits: GopLimits) -> GopCache {
        GopCache {
            packets: Vec::new(),
            bytes: 0,
            keyframe_ts: None,
            valid: false,
            limits,
        }
    }

    /// Adds a packet; a keyframe with a new timestamp starts a new group.
    pub fn push(&mut self, packet: &Packet, keyframe: bool) {
        if keyframe && self.keyframe_ts != Some(packet.header.timestamp) {
            self.packets.clear();
            self.bytes = 0;
            self.keyframe_ts = Some(packet.header.timestamp);
            self.valid = true;
        }
        if !self.valid {
            return;
        }
        if self.packets.len() >= self.limits.max_packets
            || self.bytes + packet.payload.len() > self.limits.max_bytes
        {
            // Too long a group: drop it rather than grow; the next keyframe starts a new one.
            self.packets.clear();
            self.bytes = 0;
            self.valid = false;
            return;
        }
        self.bytes += packet.payload.len();
        self.packets.push(packet.clone());
    }

    /// The cached group, starting with a keyframe, or nothing.
    pub fn packets(&self) -> &[Packet] {
        if self.valid { &self.packets } else { &[] }
    }
}

struct Entry {
    track: Arc<DownTrack>,
    awaiting_keyframe: bool,
}

/// Payload bytes forwarded to viewers by every forwarder of the process, read by the cluster's heartbeat for the
/// node's egress rate (the metrics facade cannot be read back). Added once per packet, like the counters below.
static FORWARDED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Payload bytes forwarded to viewers since the process started.
pub fn forwarded_bytes() -> u64 {
    FORWARDED_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counters of one forwarder, exported as metrics.
#[derive(Clone)]
pub struct ForwardMetrics {
    /// Packets received from the source (`zipiq_rtp_received_packets_total`).
    pub packets_in: Counter,
    /// Bytes received from the source (`zipiq_rtp_received_bytes_total`).
    pub bytes_in: Counter,
    /// Packets sent to viewers, one per viewer (`zipiq_rtp_forwarded_packets_total`).
    pub packets_out: Counter,
    /// Bytes sent to viewers (`zipiq_rtp_forwarded_bytes_total`).
    pub bytes_out: Counter,
    /// Packets a write to a viewer failed to send (`zipiq_rtp_dropped_packets_total{reason="write_error"}`).
    pub write_errors: Counter,
    /// Packets a shard's queue had no room for (that thread's viewers miss them).
    pub shard_full: Counter,
}

impl ForwardMetrics {
    /// Counters labelled with the media kind.
    pub fn new(kind: &'static str) -> ForwardMetrics {
        ForwardMetrics {
            packets_in: metrics::counter!("zipiq_rtp_received_packets_total", "kind" => kind),
            bytes_in: metrics::counter!("zipiq_rtp_received_bytes_total", "kind" => kind),
            packets_out: metrics::counter!("zipiq_rtp_forwarded_packets_total", "kind" => kind),
            bytes_out: metrics::counter!("zipiq_rtp_forwarded_bytes_total", "kind" => kind),
            write_errors: metrics::counter!("zipiq_rtp_dropped_packets_total", "reason" => "write_error"),
            shard_full: metrics::counter!("zipiq_rtp_dropped_packets_total", "reason" => "shard_full"),
        }
    }
}

/// Packets a shard's queue holds before the forwarder drops packets for that thread's viewers: 4096 is over ten
/// seconds of a 2.5 Mbit/s stream, far more than any keyframe burst.
const SHARD_QUEUE_PACKETS: usize = 4096;

/// The media threads a forwarder may hand viewers to.
#[derive(Clone)]
pub struct ShardPlan {
    /// The thread the forwarder itself runs on (its viewers there are written to directly).
    pub home: usize,
    /// Every media thread's runtime, by index (`DownTrack::thread`).
    pub threads: Arc<[Handle]>,
}

/// What a forwarder hands its shard on another thread.
enum ShardMessage {
    Packet(Packet, Instant),
    Attach(Arc<DownTrack>, Start),
}

/// Fans one source out to its viewers.
pub struct Forwarder {
    source: u64,
    video: Option<VideoCodec>,
    gop: GopCache,
    entries: Vec<Entry>,
    requester: Arc<KeyframeRequester>,
    metrics: ForwardMetrics,
    tap: Option<Tap>,
    /// Where viewers of other threads go (None: every viewer is fed here).
    plan: Option<ShardPlan>,
    /// The queue to the shard on each thread, by thread index, once it has had a viewer.
    shards: Vec<Option<mpsc::Sender<ShardMessage>>>,
    /// False in a shard: the home forwarder counts the packets received and fills the history.
    counts_input: bool,
    /// What this source sent lately, for viewers' NACKs (shared with its shards).
    history: Option<Arc<History>>,
}

impl Forwarder {
    /// A forwarder for source id `source` (non-zero, unique in the process). `video` is None for audio.
    pub fn new(
        source: u64,
        video: Option<VideoCodec>,
        limits: GopLimits,
        requester: Arc<KeyframeRequester>,
        metrics: ForwardMetrics,
    ) -> Forwarder {
        Forwarder {
            source,
            video,
            gop: GopCache::new(limits),
            entries: Vec::new(),
            requester,
            metrics,
            tap: None,
            plan: None,
            shards: Vec::new(),
            counts_input: true,
            history: None,
        }
    }

    /// Keeps what this source forwards in `history`, so its viewers' NACKs are answered from there.
    pub fn with_history(mut self, history: Arc<History>) -> Forwarder {
        self.history = Some(history);
        self
    }

    /// Lets this forwarder feed viewers of other media threads through shards on those threads.
    pub fn with_shards(mut self, plan: ShardPlan) -> Forwarder {
        self.shards = (0..plan.threads.len()).map(|_| None).collect();
        self.plan = Some(plan);
        self
    }

    /// The thread of `track` when it is another than this forwarder's own.
    fn remote_thread(&self, track: &DownTrack) -> Option<usize> {
        let plan = self.plan.as_ref()?;
        let thread = track.thread();
        (thread != plan.home && thread < plan.threads.len()).then_some(thread)
    }

    /// The queue to the shard on `thread`, starting the shard (seeded with the picture cache) on first use.
    fn shard(&mut self, thread: usize) -> Option<mpsc::Sender<ShardMessage>> {
        if let Some(Some(tx)) = self.shards.get(thread)
            && !tx.is_closed()
        {
            return Some(tx.clone());
        }
        let handle = self.plan.as_ref()?.threads.get(thread)?.clone();
        let (tx, rx) = mpsc::channel(SHARD_QUEUE_PACKETS);
        let shard = Forwarder {
            source: self.source,
            video: self.video,
            gop: self.gop.clone(),
            entries: Vec::new(),
            requester: self.requester.clone(),
            metrics: self.metrics.clone(),
            tap: None,
            plan: None,
            shards: Vec::new(),
            counts_input: false,
            history: self.history.clone(),
        };
        handle.spawn(run_shard(shard, rx).in_current_span());
        *self.shards.get_mut(thread)? = Some(tx.clone());
        Some(tx)
    }

    /// Starts (or replaces) the copy of this source's packets to the recorder.
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// This forwarder's source id.
    pub fn source(&self) -> u64 {
        self.source
    }

    /// Viewers attached here (including those waiting for a keyframe), not counting those of shards.
    pub fn viewer_count(&self) -> usize {
        self.entries.len()
    }

    /// The cache of the current group of pictures.
    pub fn gop(&self) -> &GopCache {
        &self.gop
    }

    /// Attaches a viewer's track (to the shard of its thread when that is another one).
    pub async fn attach(&mut self, track: Arc<DownTrack>, start: Start, now: Instant) {
        if let Some(thread) = self.remote_thread(&track) {
            let sent = self.shard(thread).is_some_and(|tx| {
                tx.try_send(ShardMessage::Attach(track.clone(), start))
                    .is_ok()
            });
            if !sent {
                // That thread is over ten seconds behind (or stopping): this viewer could not be served anyway.
                tracing::warn!(
                    source = self.source,
                    thread,
                    "media thread queue full; viewer dropped"
                );
                track.close();
            }
            return;
        }
        if self.entries.iter().any(|e| Arc::ptr_eq(&e.track, &track)) {
            return;
        }
        let start = match (start, self.video) {
            (_, None) => Start::Now,
            (Start::FromCache, Some(_)) if self.gop.packets().is_empty() => Start::AtKeyframe,
            (s, Some(_)) => s,
        };
        match start {
            Start::Now => {
                track.take_over(self.source, self.requester.clone(), self.history.clone());
                self.entries.push(Entry {
                    track,
                    awaiting_keyframe: false,
                });
            }
            Start::FromCache => {
                track.take_over(self.source, self.requester.clone(), self.history.clone());
                for packet in self.gop.packets() {
                    if let Ok(WriteOutcome::Sent) = track.write(self.source, packet, now).await {
                        self.metrics.packets_out.increment(1);
                        self.metrics
                            .bytes_out
                            .increment(packet.payload.len() as u64);
                        FORWARDED_BYTES.fetch_add(
                            packet.payload.len() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                }
                self.entries.push(Entry {
                    track,
                    awaiting_keyframe: false,
                });
            }
            Start::AtKeyframe => {
                self.requester.request();
                self.entries.push(Entry {
                    track,
                    awaiting_keyframe: true,
                });
            }
        }
    }

    /// Forwards one packet received from the publisher to every attached viewer.
    pub async fn forward(&mut self, mut packet: Packet, now: Instant) {
        if self.counts_input {
            self.metrics.packets_in.increment(1);
            self.metrics.bytes_in.increment(packet.payload.len() as u64);
        }
        if packet.payload.is_empty() {
            return; // Padding-only probes carry nothing for viewers.
        }
        // The publisher's extension ids mean nothing to viewers; dropping them also makes clones allocation free.
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.padding = false;
        let keyframe = self
            .video
            .is_some_and(|codec| starts_keyframe(codec, &packet.payload));
        if self.video.is_some() {
            self.gop.push(&packet, keyframe);
        }
        if let Some(tap) = &self.tap {
            tap.offer(self.source, &packet, now);
        }
        if self.counts_input
            && let Some(history) = &self.history
        {
            history.insert(&packet);
        }
        // Shards first, so the other threads write while this one does.
        for tx in self.shards.iter().flatten() {
            if tx
                .try_send(ShardMessage::Packet(packet.clone(), now))
                .is_err()
            {
                self.metrics.shard_full.increment(1);
            }
        }
        // Counted once per packet, not per viewer: the counters are shared by every media thread.
        let mut sent = 0u64;
        let mut i = 0;
        while i < self.entries.len() {
            let entry = &mut self.entries[i];
            if entry.track.is_closed() {
                self.entries.swap_remove(i);
                continue;
            }
            if entry.awaiting_keyframe {
                if !keyframe {
                    i += 1;
                    continue;
                }
                entry
                    .track
                    .take_over(self.source, self.requester.clone(), self.history.clone());
                entry.awaiting_keyframe = false;
            }
            match entry.track.write(self.source, &packet, now).await {
                Ok(WriteOutcome::Sent) => sent += 1,
                Ok(WriteOutcome::NotActive) => {
                    // Another source took this viewer over (layer switch, returning publisher).
                    self.entries.swap_remove(i);
                    continue;
                }
                Ok(WriteOutcome::Unbound) => {}
                Err(_) => self.metrics.write_errors.increment(1),
            }
            i += 1;
        }
        if sent > 0 {
            self.metrics.packets_out.increment(sent);
            self.metrics
                .bytes_out
                .increment(sent * packet.payload.len() as u64);
            FORWARDED_BYTES.fetch_add(
                sent * packet.payload.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Detaches every viewer (the source ended); shards end once they have drained their queue.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.shards.iter_mut().for_each(|s| *s = None);
    }
}

/// A shard: feeds one source's viewers on this media thread, until the home forwarder drops its queue.
async fn run_shard(mut forwarder: Forwarder, mut queue: mpsc::Receiver<ShardMessage>) {
    while let Some(message) = queue.recv().await {
        match message {
            ShardMessage::Packet(packet, now) => forwarder.forward(packet, now).await,
            ShardMessage::Attach(track, start) => {
                forwarder.attach(track, start, Instant::now()).await
            }
        }
    }
    forwarder.clear();
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use rtp::header::Header;
    use webrtc::interceptor::Attributes;
    use webrtc::track::track_local::TrackLocalWriter;

    use super::*;
    use crate::sfu::media_threads::MediaThreads;

    /// Records the payloads it is given and the thread that wrote them.
    #[derive(Debug, Default)]
    struct Recorder {
        got: Mutex<Vec<(Bytes, Option<String>)>>,
    }

    #[async_trait]
    impl TrackLocalWriter for Recorder {
        async fn write_rtp_with_attributes(
            &self,
            pkt: &Packet,
            _attr: &Attributes,
        ) -> webrtc::error::Result<usize> {
            let thread = std::thread::current().name().map(str::to_owned);
            self.got.lock().unwrap().push((pkt.payload.clone(), thread));
            Ok(pkt.payload.len())
        }
    }

    fn packet(seq: u16, payload: &[u8]) -> Packet {
        Packet {
            header: Header {
                version: 2,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ssrc: 7,
                payload_type: 96,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn viewer(thread: usize, ssrc: u32) -> (Arc<DownTrack>, Arc<Recorder>) {
        let track = Arc::new(
            DownTrack::new(zipiq_client::h264_capability(), "video", "t").on_thread(thread),
        );
        let recorder = Arc::new(Recorder::default());
        track.bind_writer(ssrc, 96, recorder.clone());
        (track, recorder)
    }

    fn forwarder(threads: &MediaThreads) -> Forwarder {
        let (tx, _rx) = mpsc::channel(8);
        Forwarder::new(
            1,
            Some(VideoCodec::H264),
            GopLimits {
                max_packets: 100,
                max_bytes: 1 << 20,
            },
            Arc::new(KeyframeRequester::new(1, 1000, tx)),
            ForwardMetrics::new("video"),
        )
        .with_shards(ShardPlan {
            home: 0,
            threads: threads.handles(),
        })
    }

    async fn wait_for(recorder: &Recorder, count: usize) -> Vec<(Bytes, Option<String>)> {
        for _ in 0..500 {
            if recorder.got.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        recorder.got.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn viewers_of_another_thread_get_every_packet_there_in_order() {
        let threads = MediaThreads::start(2, true).unwrap();
        let mut f = forwarder(&threads);
        let (local, local_got) = viewer(0, 10);
        let (remote, remote_got) = viewer(1, 11);
        let now = Instant::now();
        f.attach(local, Start::Now, now).await;
        f.attach(remote, Start::Now, now).await;
        let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![0x41, i, i, i]).collect();
        for (i, p) in payloads.iter().enumerate() {
            f.forward(packet(i as u16, p), Instant::now()).await;
        }
        let here = wait_for(&local_got, 50).await;
        let there = wait_for(&remote_got, 50).await;
        let bytes =
            |v: &[(Bytes, Option<String>)]| v.iter().map(|(b, _)| b.to_vec()).collect::<Vec<_>>();
        assert_eq!(bytes(&here), payloads);
        assert_eq!(bytes(&there), payloads);
        // The remote viewer was written to on its own media thread, the local one here.
        assert!(
            there
                .iter()
                .all(|(_, t)| t.as_deref() == Some("zipiq-media-1"))
        );
        assert!(
            here.iter()
                .all(|(_, t)| t.as_deref() != Some("zipiq-media-1"))
        );
        assert_eq!(f.viewer_count(), 1);
    }

    #[tokio::test]
    async fn a_new_viewer_on_another_thread_starts_from_the_cached_keyframe() {
        let threads = MediaThreads::start(2, true).unwrap();
        let mut f = forwarder(&threads);
        // No viewer yet: the cache fills from the keyframe on.
        f.forward(packet(1, &[0x41, 0]), Instant::now()).await;
        f.forward(packet(2, &[0x65, 1]), Instant::now()).await; // IDR
        f.forward(packet(3, &[0x41, 2]), Instant::now()).await;
        let (remote, remote_got) = viewer(1, 11);
        f.attach(remote, Start::FromCache, Instant::now()).await;
        f.forward(packet(4, &[0x41, 3]), Instant::now()).await;
        let got = wait_for(&remote_got, 3).await;
        let bytes: Vec<Vec<u8>> = got.iter().map(|(b, _)| b.to_vec()).collect();
        assert_eq!(bytes, vec![vec![0x65, 1], vec![0x41, 2], vec![0x41, 3]]);
    }

    #[tokio::test]
    async fn a_closed_remote_viewer_is_dropped_and_the_others_go_on() {
        let threads = MediaThreads::start(2, true).unwrap();
        let mut f = forwarder(&threads);
        let (a, a_got) = viewer(1, 11);
        let (b, b_got) = viewer(1, 12);
        f.attach(a.clone(), Start::Now, Instant::now()).await;
        f.attach(b, Start::Now, Instant::now()).await;
        f.forward(packet(1, &[0x41, 1]), Instant::now()).await;
        assert_eq!(wait_for(&a_got, 1).await.len(), 1);
        a.close();
        f.forward(packet(2, &[0x41, 2]), Instant::now()).await;
        assert_eq!(wait_for(&b_got, 2).await.len(), 2);
        assert_eq!(a_got.got.lock().unwrap().len(), 1);
    }
}
