//! The publisher's media: real H.264 and Opus made once with Debian's ffmpeg (libx264, libopus) into a cache
//! directory, then read and cut into RTP payloads ahead of time, so the send loop only clones `Arc`s.
//!
//! A [`Schedule`] is one loop of the file: every packet with its send offset, its RTP timestamp offset and a
//! fingerprint subscribers use to recognise it. Nothing here runs on the hot path.

pub mod h264;
pub mod ogg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::measure::fingerprint;

/// RTP payload budget: with the 12-byte header and the 16-byte AES-GCM tag a datagram stays under 1200 bytes.
pub const MAX_RTP_PAYLOAD: usize = 1150;
/// RTP clock rates.
pub const VIDEO_CLOCK: u64 = 90_000;
pub const AUDIO_CLOCK: u64 = 48_000;

/// Errors while making or reading the media.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot run {program}: {source} (install it: apt-get install ffmpeg)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("ffmpeg failed making {path}: {stderr}")]
    Ffmpeg { path: PathBuf, stderr: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("H.264: {0}")]
    H264(String),
    #[error("Ogg/Opus: {0}")]
    Ogg(String),
}

/// What to encode. The cache file names carry every field, so changing one makes new files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MediaSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub keyframe_interval_s: u32,
    pub audio_kbps: u32,
    pub seconds: u32,
}

impl MediaSpec {
    fn video_name(&self) -> String {
        format!(
            "h264-cb-{}x{}-{}fps-{}k-gop{}s-{}s.h264",
            self.width,
            self.height,
            self.fps,
            self.video_kbps,
            self.keyframe_interval_s,
            self.seconds
        )
    }

    fn audio_name(&self) -> String {
        format!("opus-48k-stereo-{}k-{}s.ogg", self.audio_kbps, self.seconds)
    }
}

/// Which track a packet belongs to (the index into per-track arrays everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Audio = 0,
    Video = 1,
}

/// One RTP packet of the loop.
#[derive(Debug, Clone)]
pub struct ScheduledPacket {
    pub track: Track,
    /// Send time from the start of the loop, in nanoseconds.
    pub at_ns: u64,
    /// RTP timestamp from the start of the loop, in the track's clock.
    pub rtp_offset: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    pub fingerprint: u64,
}

/// One loop of the media, in send order.
#[derive(Debug)]
pub struct Schedule {
    pub packets: Vec<ScheduledPacket>,
    /// Length of one loop.
    pub period_ns: u64,
    /// Length of one loop in each track's RTP clock (audio, video).
    pub period_ticks: [u32; 2],
    /// Packets per loop (audio, video).
    pub packets_per_loop: [usize; 2],
    /// Payload bytes per loop (audio, video).
    pub bytes_per_loop: [u64; 2],
    pub pictures: usize,
    pub keyframes: usize,
}

/// Makes the media files in `dir` if they are missing (with ffmpeg) and returns their paths (video, audio).
pub fn ensure_files(dir: &Path, spec: &MediaSpec) -> Result<(PathBuf, PathBuf), MediaError> {
    std::fs::create_dir_all(dir).map_err(|source| MediaError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let video = dir.join(spec.video_name());
    let audio = dir.join(spec.audio_name());
    let seconds = spec.seconds.to_string();
    if !video.exists() {
        eprintln!(
            "zipiq-load: encoding {} with ffmpeg/libx264 (once; cached in {})",
            spec.video_name(),
            dir.display()
        );
        let gop = (spec.fps * spec.keyframe_interval_s).max(1).to_string();
        let rate = format!("{}k", spec.video_kbps);
        // Temporal noise over the test pattern keeps the picture hard to compress, so the encoder really
        // spends the bitrate, like a camera does.
        let source = format!(
            "testsrc2=size={}x{}:rate={},noise=alls=12:allf=t",
            spec.width, spec.height, spec.fps
        );
        #[rustfmt::skip]
        let args: Vec<&str> = vec![
            "-f", "lavfi", "-i", &source, "-t", &seconds, "-c:v", "libx264", "-profile:v", "baseline",
            "-preset", "veryfast", "-tune", "zerolatency", "-bf", "0", "-g", &gop, "-keyint_min", &gop,
            "-sc_threshold", "0", "-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate, "-x264-params",
            "aud=1:repeat-headers=1", "-pix_fmt", "yuv420p", "-f", "h264",
        ];
        run_ffmpeg(&args, &video)?;
    }
    if !audio.exists() {
        eprintln!(
            "zipiq-load: encoding {} with ffmpeg/libopus (once)",
            spec.audio_name()
        );
        let rate = format!("{}k", spec.audio_kbps);
        // Pink noise: every Opus packet differs, so subscribers can tell packets apart by content.
        #[rustfmt::skip]
        let args: Vec<&str> = vec![
            "-f", "lavfi", "-i", "anoisesrc=color=pink:sample_rate=48000:amplitude=0.2", "-t",
            &seconds, "-ac", "2", "-c:a", "libopus", "-b:a", &rate, "-frame_duration", "20",
            "-application", "audio", "-f", "ogg",
        ];
        run_ffmpeg(&args, &audio)?;
    }
    Ok((video, audio))
}

/// Runs ffmpeg into a temporary file next to `out` and renames it into place, so a half-made file is never used.
fn run_ffmpeg(args: &[&str], out: &Path) -> Result<(), MediaError> {
    let tmp = out.with_extension("partial");
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .arg(&tmp)
        .output()
        .map_err(|source| MediaError::Spawn {
            program: "ffmpeg".into(),
            source,
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(MediaError::Ffmpeg {
            path: out.to_owned(),
            stderr: stderr.chars().take(2000).collect(),
        });
    }
    std::fs::rename(&tmp, out).map_err(|source| MediaError::Io {
        path: out.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, MediaError> {
    std::fs::read(path).map_err(|source| MediaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads the files and builds one loop of packets: video pictures at `fps`, audio packets at their own
/// durations, both cut to the video's length so the loop stays in sync.
pub fn load(video: &Path, audio: &Path, fps: u32) -> Result<Schedule, MediaError> {
    let fps = u64::from(fps.max(1));
    let stream = read(video)?;
    let nal_units = h264::split_nal_units(&stream);
    let units = h264::access_units(&nal_units)?;
    let pictures = units.len();
    let period_ns = pictures as u64 * 1_000_000_000 / fps;
    let video_ticks = pictures as u64 * VIDEO_CLOCK / fps;

    let mut packets = Vec::new();
    let mut bytes_per_loop = [0u64; 2];
    let mut packets_per_loop = [0usize; 2];
    let mut keyframes = 0;
    for (n, unit) in units.iter().enumerate() {
        keyframes += usize::from(unit.keyframe);
        let n = n as u64;
        for payload in h264::packetize(unit, MAX_RTP_PAYLOAD) {
            bytes_per_loop[1] += payload.bytes.len() as u64;
            packets_per_loop[1] += 1;
            packets.push(ScheduledPacket {
                track: Track::Video,
                at_ns: n * 1_000_000_000 / fps,
                rtp_offset: (n * VIDEO_CLOCK / fps) as u32,
                marker: payload.marker,
                fingerprint: fingerprint(&payload.bytes),
                payload: payload.bytes.into(),
            });
        }
    }

    let audio_ticks = period_ns * AUDIO_CLOCK / 1_000_000_000;
    let mut samples: u64 = 0;
    for packet in ogg::opus_packets(&read(audio)?)? {
        let duration = ogg::opus_packet_samples(&packet)
            .ok_or_else(|| MediaError::Ogg("an Opus packet has a malformed TOC".into()))?;
        if samples + u64::from(duration) > audio_ticks {
            break;
        }
        bytes_per_loop[0] += packet.len() as u64;
        packets_per_loop[0] += 1;
        packets.push(ScheduledPacket {
            track: Track::Audio,
            at_ns: samples * 1_000_000_000 / AUDIO_CLOCK,
            rtp_offset: samples as u32,
            marker: false,
            fingerprint: fingerprint(&packet),
            payload: packet.into(),
        });
        samples += u64::from(duration);
    }
    // Stable: video packets of one picture keep their order.
    packets.sort_by_key(|p| p.at_ns);
    Ok(Schedule {
        packets,
        period_ns,
        period_ticks: [audio_ticks as u32, video_ticks as u32],
        packets_per_loop,
        bytes_per_loop,
        pictures,
        keyframes,
    })
}
