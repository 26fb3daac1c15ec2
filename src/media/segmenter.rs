//! The segmenter: tap events in, CMAF segments out.
//!
//! Media segments start on a video keyframe and close at the first keyframe after the target duration (or when
//! they reach the size limit); audio-only broadcasts cut every target duration. Audio and video share one
//! timeline: each track's RTP clock is anchored at the arrival instant of its first packet (relative to the
//! broadcast's first packet), which is good to a few milliseconds of network jitter and needs no RTCP sender
//! reports. A sample's duration is the distance to the next sample of its track, so each track's timeline has no
//! gaps between segments; the last open sample of a track moves on to the next segment. A new init segment comes
//! before the first media segment and whenever the parameter sets, the resolution or the set of tracks change.
//! A lost publisher, a new SSRC (simulcast layer switch) or a new publisher is a discontinuity: the open segment
//! is closed, and video resumes at the next keyframe with timestamps that keep increasing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtp::packet::Packet;

use super::fmp4::{
    self, AUDIO_TIMESCALE, AUDIO_TRACK, AudioConfig, Sample, TrackFragment, VIDEO_TIMESCALE,
    VIDEO_TRACK, VideoConfig,
};
use super::h264::{AccessUnit, DropCounts, H264Depacketizer, TsUnwrapper, sprop_parameter_sets};
use super::{CodecInfo, MediaKind, Segment, SegmentKind, TapEvent, opus, sps};

/// How segments are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Segments close at the first keyframe after this duration.
    pub target_duration: Duration,
    /// A segment is closed when its samples reach this many bytes, keyframe or not.
    pub max_segment_bytes: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            target_duration: Duration::from_secs(2),
            max_segment_bytes: 8 << 20,
        }
    }
}

/// What the segmenter did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmenterCounters {
    /// Init segments made.
    pub init_segments: u64,
    /// Media segments made.
    pub media_segments: u64,
    /// Video access units dropped by the depacketizer, by reason.
    pub video_drops: DropCounts,
    /// Video packets of a codec the segmenter does not record (VP8, VP9, AV1: audio is recorded alone).
    pub unsupported_video_packets: u64,
    /// Audio packets that were not valid Opus.
    pub malformed_audio_packets: u64,
    /// Audio samples before the first video keyframe (not recorded, to start A/V together).
    pub audio_before_video: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    dts: u64,
    data: Bytes,
    keyframe: bool,
    /// Duration known from the payload (audio TOC), used when no next sample comes.
    natural: u32,
}

/// Maps one track's unwrapped RTP clock to the broadcast timeline (in the track's timescale).
#[derive(Debug, Clone, Copy)]
struct Anchor {
    first_rtp: u64,
    offset: u64,
}

#[derive(Debug, Default)]
struct TrackState {
    anchor: Option<Anchor>,
    ssrc: Option<u32>,
    open: Option<Pending>,
    done: Vec<Sample>,
    /// Decode time of the first sample in `done` (the fragment's tfdt).
    done_start: Option<u64>,
    done_bytes: usize,
    /// Last decode time handed out, to keep timestamps increasing across discontinuities.
    last_dts: Option<u64>,
    last_duration: u32,
}

impl TrackState {
    fn dts(&mut self, rtp: u64, arrival: Instant, epoch: Instant, timescale: u32) -> u64 {
        let anchor = *self.anchor.get_or_insert_with(|| {
            let since = arrival.saturating_duration_since(epoch);
            let mut offset = (since.as_secs_f64() * f64::from(timescale)) as u64;
            if let Some(last) = self.last_dts {
                offset = offset.max(last + 1);
            }
            Anchor {
                first_rtp: rtp,
                offset,
            }
        });
        let dts = anchor.offset + rtp.saturating_sub(anchor.first_rtp);
        match self.last_dts {
            Some(last) if dts <= last => last + 1,
            _ => dts,
        }
    }

    /// Adds a sample; the previous open one gets its duration.
    fn push(&mut self, sample: Pending) {
        if let Some(prev) = self.open.take() {
            let duration = sample
                .dts
                .saturating_sub(prev.dts)
                .clamp(1, u64::from(u32::MAX)) as u32;
            self.close(prev, duration);
        }
        self.last_dts = Some(sample.dts);
        self.open = Some(sample);
    }

    fn close(&mut self, sample: Pending, duration: u32) {
        if self.done.is_empty() {
            self.done_start = Some(sample.dts);
        }
        self.done_bytes += sample.data.len();
        self.last_duration = duration;
        self.done.push(Sample {
            duration,
            data: sample.data,
            keyframe: sample.keyframe,
        });
    }

    /// Closes the open sample with its natural (or last seen) duration.
    fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            let duration = if open.natural > 0 {
                open.natural
            } else {
                self.last_duration.max(1)
            };
            self.close(open, duration);
        }
    }

    fn take_fragment(&mut self, track_id: u32) -> Option<TrackFragment> {
        if self.done.is_empty() {
            return None;
        }
        let samples = std::mem::take(&mut self.done);
        self.done_bytes = 0;
        Some(TrackFragment {
            track_id,
            base_decode_time: self.done_start.take().unwrap_or(0),
            samples,
        })
    }

    fn done_duration(&self) -> u64 {
        self.done.iter().map(|s| u64::from(s.duration)).sum()
    }

    /// A discontinuity: the next packet anchors the track again.
    fn reanchor(&mut self) {
        self.anchor = None;
    }
}

/// Cuts one broadcast into CMAF segments.
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    epoch: Option<Instant>,
    audio_codec: Option<CodecInfo>,
    video_codec: Option<CodecInfo>,
    depacketizer: Option<H264Depacketizer>,
    audio_ts: TsUnwrapper,
    video: TrackState,
    audio: TrackState,
    /// Video has produced its first keyframe of the current run (audio waits for it).
    video_started: bool,
    /// The init configuration of the segments being cut, and whether its init segment was emitted.
    init: Option<(Option<VideoConfig>, Option<AudioConfig>)>,
    init_emitted: bool,
    /// The next segment does not start with a keyframe (size cut).
    next_not_independent: bool,
    next_seq: u64,
    fragment_seq: u32,
    /// What it did so far.
    pub counters: SegmenterCounters,
}

impl Segmenter {
    /// A segmenter that has seen nothing yet.
    pub fn new(config: SegmenterConfig) -> Segmenter {
        Segmenter {
            config,
            epoch: None,
            audio_codec: None,
            video_codec: None,
            depacketizer: None,
            audio_ts: TsUnwrapper::default(),
            video: TrackState::default(),
            audio: TrackState::default(),
            video_started: false,
            init: None,
            init_emitted: false,
            next_not_independent: false,
            next_seq: 0,
            fragment_seq: 1,
            counters: SegmenterCounters::default(),
        }
    }

    fn records_video(&self) -> bool {
        self.video_codec.as_ref().is_some_and(CodecInfo::is_h264)
    }

    fn records_audio(&self) -> bool {
        self.audio_codec.as_ref().is_some_and(CodecInfo::is_opus)
    }

    /// Takes one event; returns the segments it completes, in order.
    pub fn push(&mut self, event: TapEvent) -> Vec<Segment> {
        let mut out = Vec::new();
        match event {
            TapEvent::Started { audio, video } => {
                self.cut(&mut out, true);
                self.discontinuity();
                self.audio_codec = audio;
                self.video_codec = video;
                self.depacketizer = self.video_codec.as_ref().filter(|c| c.is_h264()).map(|c| {
                    let (sps, pps) = sprop_parameter_sets(&c.fmtp);
                    H264Depacketizer::new(sps, pps)
                });
            }
            TapEvent::Rtp {
                kind,
                packet,
                arrival,
            } => {
                self.epoch.get_or_insert(arrival);
                match kind {
                    MediaKind::Video => self.video_packet(packet, arrival, &mut out),
                    MediaKind::Audio => self.audio_packet(packet, arrival, &mut out),
                }
            }
            TapEvent::PublisherLost => {
                self.flush_video(&mut out);
                self.cut(&mut out, true);
                self.discontinuity();
            }
            TapEvent::End => {
                self.flush_video(&mut out);
                self.cut(&mut out, true);
            }
        }
        out
    }

    /// Same as pushing [`TapEvent::End`].
    pub fn finish(&mut self) -> Vec<Segment> {
        self.push(TapEvent::End)
    }

    fn discontinuity(&mut self) {
        self.video.reanchor();
        self.audio.reanchor();
        self.video.ssrc = None;
        self.audio.ssrc = None;
        self.audio_ts = TsUnwrapper::default();
        self.video_started = false;
        if let Some(d) = &self.depacketizer {
            let (sps, pps) = d.parameter_sets();
            let (sps, pps) = (sps.cloned(), pps.cloned());
            self.fold_drops();
            self.depacketizer = Some(H264Depacketizer::new(sps, pps));
        }
    }

    fn fold_drops(&mut self) {
        if let Some(d) = &mut self.depacketizer {
            let drops = std::mem::take(&mut d.drops);
            let c = &mut self.counters.video_drops;
            c.loss += drops.loss;
            c.waiting_for_keyframe += drops.waiting_for_keyframe;
            c.no_parameter_sets += drops.no_parameter_sets;
            c.malformed += drops.malformed;
        }
    }

    fn flush_video(&mut self, out: &mut Vec<Segment>) {
        let units = match &mut self.depacketizer {
            Some(d) => d.flush(),
            None => Vec::new(),
        };
        for unit in units {
            self.video_unit(unit, out);
        }
        self.fold_drops();
    }

    fn video_packet(&mut self, packet: Packet, arrival: Instant, out: &mut Vec<Segment>) {
        if !self.records_video() {
            self.counters.unsupported_video_packets += 1;
            return;
        }
        let ssrc = packet.header.ssrc;
        if self.video.ssrc.is_some_and(|s| s != ssrc) {
            // Another layer or publisher: close what we have and start over at its next keyframe.
            self.flush_video(out);
            self.cut(out, true);
            self.video.reanchor();
            self.video_started = false;
            if let Some(d) = &self.depacketizer {
                let (sps, pps) = d.parameter_sets();
                let (sps, pps) = (sps.cloned(), pps.cloned());
                self.depacketizer = Some(H264Depacketizer::new(sps, pps));
            }
        }
        self.video.ssrc = Some(ssrc);
        let units = match &mut self.depacketizer {
            Some(d) => d.push(packet, arrival),
            None => return,
        };
        for unit in units {
            self.video_unit(unit, out);
        }
        self.fold_drops();
    }

    fn video_unit(&mut self, unit: AccessUnit, out: &mut Vec<Segment>) {
        let Some(epoch) = self.epoch else { return };
        let params_changed = self
            .depacketizer
            .as_mut()
            .is_some_and(H264Depacketizer::take_parameter_change);
        // The depacketizer already unwrapped the timestamp (and starts over with the track after a reset).
        let dts = self
            .video
            .dts(unit.ts, unit.arrival, epoch, VIDEO_TIMESCALE);
        if unit.keyframe {
            let long_enough = self.video.done_duration()
                + self
                    .video
                    .open
                    .as_ref()
                    .map_or(0, |o| dts.saturating_sub(o.dts))
                >= duration_ticks(self.config.target_duration, VIDEO_TIMESCALE);
            let must_cut = params_changed || !self.video_started || long_enough;
            if must_cut {
                // Close the previous picture at this keyframe's time, then cut before the keyframe.
                if let Some(prev) = self.video.open.take() {
                    let duration =
                        dts.saturating_sub(prev.dts).clamp(1, u64::from(u32::MAX)) as u32;
                    self.video.close(prev, duration);
                }
                self.cut(out, false);
                if params_changed || self.init.is_none() {
                    self.update_init();
                }
            }
            if !self.video_started {
                // Audio that came before the first picture is not recorded: A/V start together.
                let dropped = self.audio.done.len() + usize::from(self.audio.open.is_some());
                self.counters.audio_before_video += dropped as u64;
                self.audio.done.clear();
                self.audio.done_bytes = 0;
                self.audio.done_start = None;
                self.audio.open = None;
                self.video_started = true;
                self.next_not_independent = false;
            }
        } else if !self.video_started {
            return;
        }
        let data = unit.to_avcc();
        self.video.push(Pending {
            dts,
            data,
            keyframe: unit.keyframe,
            natural: 0,
        });
        if self.video.done_bytes + self.audio.done_bytes > self.config.max_segment_bytes {
            self.cut(out, false);
            self.next_not_independent = true;
        }
    }

    fn audio_packet(&mut self, packet: Packet, arrival: Instant, out: &mut Vec<Segment>) {
        if !self.records_audio() {
            return;
        }
        let Some(epoch) = self.epoch else { return };
        let Some(samples) = opus::packet_samples(&packet.payload) else {
            self.counters.malformed_audio_packets += 1;
            return;
        };
        let ssrc = packet.header.ssrc;
        if self.audio.ssrc.is_some_and(|s| s != ssrc) {
            self.audio.reanchor();
            self.audio_ts = TsUnwrapper::default();
        }
        self.audio.ssrc = Some(ssrc);
        let rtp = self.audio_ts.unwrap(packet.header.timestamp);
        let dts = self.audio.dts(rtp, arrival, epoch, AUDIO_TIMESCALE);
        if self.records_video() && !self.video_started {
            self.counters.audio_before_video += 1;
            return;
        }
        if self.init.is_none() {
            self.update_init();
        }
        self.audio.push(Pending {
            dts,
            data: packet.payload,
            keyframe: true,
            natural: samples,
        });
        if !self.records_video() {
            let long_enough = self.audio.done_duration()
                >= duration_ticks(self.config.target_duration, AUDIO_TIMESCALE);
            if long_enough || self.audio.done_bytes > self.config.max_segment_bytes {
                self.cut(out, false);
            }
        }
    }

    /// The init configuration for what is being recorded now.
    fn update_init(&mut self) {
        let video = if self.records_video() {
            self.depacketizer.as_ref().and_then(|d| {
                let (sps_nal, pps_nal) = d.parameter_sets();
                let (sps_nal, pps_nal) = (sps_nal?.clone(), pps_nal?.clone());
                let parsed = sps::parse(&sps_nal)?;
                Some(VideoConfig {
                    sps: sps_nal,
                    pps: pps_nal,
                    width: parsed.width,
                    height: parsed.height,
                })
            })
        } else {
            None
        };
        let audio = self.records_audio().then(|| AudioConfig {
            channels: self
                .audio_codec
                .as_ref()
                .map(|c| c.channels.clamp(1, 2) as u8)
                .unwrap_or(2),
        });
        let next = (video, audio);
        if self.init.as_ref() != Some(&next) {
            self.init = Some(next);
            self.init_emitted = false;
        }
    }

    /// Emits the finished samples as a media segment (after an init segment when one is due).
    /// `close_open` also closes each track's open sample first (end of a run).
    fn cut(&mut self, out: &mut Vec<Segment>, close_open: bool) {
        if close_open {
            self.video.close_open();
            self.audio.close_open();
        }
        if self.video.done.is_empty() && self.audio.done.is_empty() {
            return;
        }
        let Some((video_cfg, audio_cfg)) = self.init.clone() else {
            // Nothing can be described without an init configuration: drop what was gathered.
            self.video.done.clear();
            self.audio.done.clear();
            return;
        };
        if !self.init_emitted {
            if video_cfg.is_none() && audio_cfg.is_none() {
                self.video.done.clear();
                self.audio.done.clear();
                return;
            }
            out.push(Segment {
                seq: self.next_seq,
                kind: SegmentKind::Init,
                bytes: fmp4::init_segment(video_cfg.as_ref(), audio_cfg.as_ref()),
                duration: Duration::ZERO,
                start_ms: 0,
                end_ms: 0,
                independent: true,
            });
            self.next_seq += 1;
            self.counters.init_segments += 1;
            self.init_emitted = true;
        }
        let video_duration = self.video.done_duration();
        let audio_duration = self.audio.done_duration();
        let mut tracks = Vec::with_capacity(2);
        let video = if video_cfg.is_some() {
            self.video.take_fragment(VIDEO_TRACK)
        } else {
            self.video.done.clear();
            None
        };
        let audio = if audio_cfg.is_some() {
            self.audio.take_fragment(AUDIO_TRACK)
        } else {
            self.audio.done.clear();
            None
        };
        let (start_ms, duration) = match (&video, &audio) {
            (Some(v), _) => (
                v.base_decode_time * 1000 / u64::from(VIDEO_TIMESCALE),
                Duration::from_micros(video_duration * 1_000_000 / u64::from(VIDEO_TIMESCALE)),
            ),
            (None, Some(a)) => (
                a.base_decode_time * 1000 / u64::from(AUDIO_TIMESCALE),
                Duration::from_micros(audio_duration * 1_000_000 / u64::from(AUDIO_TIMESCALE)),
            ),
            (None, None) => return,
        };
        let independent = video
            .as_ref()
            .is_none_or(|v| v.samples.first().is_some_and(|s| s.keyframe));
        tracks.extend(video);
        tracks.extend(audio);
        let bytes = fmp4::media_segment(self.fragment_seq, &tracks);
        self.fragment_seq = self.fragment_seq.wrapping_add(1);
        out.push(Segment {
            seq: self.next_seq,
            kind: SegmentKind::Media,
            bytes,
            duration,
            start_ms,
            end_ms: start_ms + duration.as_millis() as u64,
            independent,
        });
        self.next_seq += 1;
        self.counters.media_segments += 1;
    }
}

fn duration_ticks(d: Duration, timescale: u32) -> u64 {
    (d.as_secs_f64() * f64::from(timescale)) as u64
}
