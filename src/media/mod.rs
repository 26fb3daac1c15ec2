//! The side pipeline's media work: RTP from the live fan-out in, keyframe-aligned CMAF (fragmented MP4) segments
//! out, plus the HLS playlists that list them.
//!
//! Everything here is synchronous and does no I/O and reads no clock (arrival instants come in with the packets),
//! so the recorder runs it on its own task behind a bounded channel and tests feed it captures deterministically.
//! It never runs on the hot path and never blocks it.

pub(crate) mod bits;
pub mod capture;
pub(crate) mod fmp4;
pub mod h264;
pub mod hls;
pub mod opus;
pub mod segmenter;
pub mod source;
pub mod sps;

use std::time::{Duration, Instant};

use bytes::Bytes;

pub use segmenter::{Segmenter, SegmenterConfig, SegmenterCounters};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

/// A negotiated codec, as the SFU knows it from SDP.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodecInfo {
    /// `video/H264`, `audio/opus`, ... (case as negotiated).
    pub mime_type: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (0 for video).
    pub channels: u16,
    /// The SDP fmtp line (may carry `sprop-parameter-sets`).
    pub fmtp: String,
}

impl CodecInfo {
    /// Whether this is H.264.
    pub fn is_h264(&self) -> bool {
        self.mime_type.eq_ignore_ascii_case("video/h264")
    }

    /// Whether this is Opus.
    pub fn is_opus(&self) -> bool {
        self.mime_type.eq_ignore_ascii_case("audio/opus")
    }
}

/// What the SFU hands the recorder, in order, through a bounded channel.
#[derive(Debug, Clone)]
pub enum TapEvent {
    /// A publisher (re)connected with these tracks (either may be None).
    Started {
        /// The audio codec, if the publisher sends audio.
        audio: Option<CodecInfo>,
        /// The video codec, if the publisher sends video.
        video: Option<CodecInfo>,
    },
    /// One RTP packet of the recorded tracks; the payload is the fan-out's shared `Bytes`.
    Rtp {
        /// Which track.
        kind: MediaKind,
        /// The packet as received.
        packet: rtp::packet::Packet,
        /// When it arrived.
        arrival: Instant,
    },
    /// The publisher went away (it may come back within the grace period).
    PublisherLost,
    /// The broadcast ended: flush the last partial segment.
    End,
}

/// Init segment or media segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// The init segment: track set-up, no samples.
    Init,
    /// A media segment: samples.
    Media,
}

/// One output of the segmenter.
#[derive(Debug, Clone)]
pub struct Segment {
    /// 0, 1, 2, ... per broadcast, init segments included.
    pub seq: u64,
    /// Init or media segment.
    pub kind: SegmentKind,
    /// The segment's bytes (fMP4).
    pub bytes: Bytes,
    /// Media duration (zero for init segments).
    pub duration: Duration,
    /// Presentation time of the first and last sample since the broadcast started, in milliseconds.
    pub start_ms: u64,
    /// `start_ms` plus the segment's duration, in milliseconds.
    pub end_ms: u64,
    /// Whether the segment starts with a keyframe (or is audio only): decodable on its own.
    pub independent: bool,
}
