//! The hot path: one received packet out to every viewer of its source.
//!
//! A [`Forwarder`] belongs to one source (a publisher's audio track or one video layer) and is owned by that
//! source's task alone, so its viewer list and picture cache need no lock. Per packet it strips the publisher's
//! header extensions (their ids mean nothing to viewers), updates the cache of the current group of pictures,
//! then writes to each viewer's [`DownTrack`] in turn. The payload is one `Bytes` allocation shared by every
//! viewer and the cache. A viewer whose write fails loses that packet only; nobody waits for the side pipeline.

use std::sync::Arc;
use std::time::Instant;

use metrics::Counter;
use rtp::packet::Packet;

use super::downtrack::{DownTrack, WriteOutcome};
use super::keyframe::{VideoCodec, starts_keyframe};
use super::keyframe_request::KeyframeRequester;
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
    pub max_packets: usize,
    pub max_bytes: usize,
}

/// The packets since the last keyframe of one video source.
#[derive(Debug)]
pub struct GopCache {
    packets: Vec<Packet>,
    bytes: usize,
    keyframe_ts: Option<u32>,
    valid: bool,
    limits: GopLimits,
}

impl GopCache {
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

/// Counters of one forwarder, exported as metrics.
#[derive(Clone)]
pub struct ForwardMetrics {
    pub packets_in: Counter,
    pub bytes_in: Counter,
    pub packets_out: Counter,
    pub bytes_out: Counter,
    pub write_errors: Counter,
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
        }
    }
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
        }
    }

    /// Starts (or replaces) the copy of this source's packets to the recorder.
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// This forwarder's source id.
    pub fn source(&self) -> u64 {
        self.source
    }

    /// Viewers attached (including those waiting for a keyframe).
    pub fn viewer_count(&self) -> usize {
        self.entries.len()
    }

    /// The cache of the current group of pictures.
    pub fn gop(&self) -> &GopCache {
        &self.gop
    }

    /// Attaches a viewer's track.
    pub async fn attach(&mut self, track: Arc<DownTrack>, start: Start, now: Instant) {
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
                track.take_over(self.source, self.requester.clone());
                self.entries.push(Entry {
                    track,
                    awaiting_keyframe: false,
                });
            }
            Start::FromCache => {
                track.take_over(self.source, self.requester.clone());
                for packet in self.gop.packets() {
                    if let Ok(WriteOutcome::Sent) = track.write(self.source, packet, now).await {
                        self.metrics.packets_out.increment(1);
                        self.metrics
                            .bytes_out
                            .increment(packet.payload.len() as u64);
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
        self.metrics.packets_in.increment(1);
        self.metrics.bytes_in.increment(packet.payload.len() as u64);
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
                entry.track.take_over(self.source, self.requester.clone());
                entry.awaiting_keyframe = false;
            }
            match entry.track.write(self.source, &packet, now).await {
                Ok(WriteOutcome::Sent) => {
                    self.metrics.packets_out.increment(1);
                    self.metrics
                        .bytes_out
                        .increment(packet.payload.len() as u64);
                }
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
    }

    /// Detaches every viewer (the source ended).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
