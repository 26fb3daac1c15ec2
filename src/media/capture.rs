//! A small RTP capture format for fixtures and recordings of what the SFU hands the recorder:
//!
//! ```text
//! "ZQCAP1\n"  u32 LE header length  JSON header {"audio": CodecInfo|null, "video": CodecInfo|null}
//! records:    u64 LE arrival offset (microseconds)  u8 kind (0 audio, 1 video)  u16 LE length  RTP packet bytes
//! ```
//!
//! The parser is bounded and never panics on any input (fuzz target `capture_parse`).

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use serde::{Deserialize, Serialize};
use webrtc_util::{Marshal, Unmarshal};

use super::{CodecInfo, MediaKind, TapEvent};

const MAGIC: &[u8] = b"ZQCAP1\n";
const MAX_HEADER: usize = 64 * 1024;

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    /// The file does not start with the capture magic.
    #[error("not a zipIQ capture (bad magic)")]
    Magic,
    /// The file ends early.
    #[error("truncated capture")]
    Truncated,
    /// The header is not valid (says why).
    #[error("capture header: {0}")]
    Header(String),
    /// A record is not valid.
    #[error("record {index}: {reason}")]
    Record {
        /// The record's position.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The codecs of a capture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHeader {
    /// The audio codec, if the capture has audio.
    pub audio: Option<CodecInfo>,
    /// The video codec, if the capture has video.
    pub video: Option<CodecInfo>,
}

/// One captured packet.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the packet arrived, from the start of the capture.
    pub at: Duration,
    /// Which track.
    pub kind: MediaKind,
    /// The packet.
    pub packet: rtp::packet::Packet,
}

/// A whole capture.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// The codecs.
    pub header: CaptureHeader,
    /// The packets, in arrival order.
    pub records: Vec<Record>,
}

impl Capture {
    /// Parses a capture.
    pub fn parse(data: &[u8]) -> Result<Capture, CaptureError> {
        let mut buf = data;
        if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
            return Err(CaptureError::Magic);
        }
        buf.advance(MAGIC.len());
        if buf.len() < 4 {
            return Err(CaptureError::Truncated);
        }
        let header_len = buf.get_u32_le() as usize;
        if header_len > MAX_HEADER || buf.len() < header_len {
            return Err(CaptureError::Truncated);
        }
        let header: CaptureHeader = serde_json::from_slice(&buf[..header_len])
            .map_err(|e| CaptureError::Header(e.to_string()))?;
        buf.advance(header_len);
        let mut records = Vec::new();
        while !buf.is_empty() {
            let index = records.len();
            if buf.len() < 11 {
                return Err(CaptureError::Truncated);
            }
            let at = Duration::from_micros(buf.get_u64_le());
            let kind = match buf.get_u8() {
                0 => MediaKind::Audio,
                1 => MediaKind::Video,
                k => {
                    return Err(CaptureError::Record {
                        index,
                        reason: format!("unknown kind {k}"),
                    });
                }
            };
            let len = usize::from(buf.get_u16_le());
            if buf.len() < len {
                return Err(CaptureError::Truncated);
            }
            let mut raw = Bytes::copy_from_slice(&buf[..len]);
            buf.advance(len);
            let packet =
                rtp::packet::Packet::unmarshal(&mut raw).map_err(|e| CaptureError::Record {
                    index,
                    reason: e.to_string(),
                })?;
            records.push(Record { at, kind, packet });
        }
        Ok(Capture { header, records })
    }

    /// Writes the capture.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CaptureError> {
        let header =
            serde_json::to_vec(&self.header).map_err(|e| CaptureError::Header(e.to_string()))?;
        let mut out = Vec::with_capacity(header.len() + self.records.len() * 1200);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for (index, r) in self.records.iter().enumerate() {
            let raw = r.packet.marshal().map_err(|e| CaptureError::Record {
                index,
                reason: e.to_string(),
            })?;
            let len = u16::try_from(raw.len()).map_err(|_| CaptureError::Record {
                index,
                reason: "packet over 64 KiB".into(),
            })?;
            out.extend_from_slice(&(r.at.as_micros() as u64).to_le_bytes());
            out.push(match r.kind {
                MediaKind::Audio => 0,
                MediaKind::Video => 1,
            });
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&raw);
        }
        Ok(out)
    }

    /// The capture as the tap events the SFU would send, arriving from `start`.
    pub fn events(&self, start: Instant) -> Vec<TapEvent> {
        let mut events = Vec::with_capacity(self.records.len() + 2);
        events.push(TapEvent::Started {
            audio: self.header.audio.clone(),
            video: self.header.video.clone(),
        });
        for r in &self.records {
            events.push(TapEvent::Rtp {
                kind: r.kind,
                packet: r.packet.clone(),
                arrival: start + r.at,
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Capture {
        Capture {
            header: CaptureHeader {
                audio: Some(CodecInfo {
                    mime_type: "audio/opus".into(),
                    clock_rate: 48_000,
                    channels: 2,
                    fmtp: String::new(),
                }),
                video: None,
            },
            records: (0..3)
                .map(|i| Record {
                    at: Duration::from_millis(20 * i),
                    kind: MediaKind::Audio,
                    packet: rtp::packet::Packet {
                        header: rtp::header::Header {
                            version: 2,
                            sequence_number: i as u16,
                            timestamp: 960 * i as u32,
                            ssrc: 7,
                            payload_type: 111,
                            ..Default::default()
                        },
                        payload: Bytes::from(vec![0xf8, i as u8]),
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = sample().to_bytes().unwrap();
        let back = Capture::parse(&bytes).unwrap();
        assert_eq!(back.header, sample().header);
        assert_eq!(back.records.len(), 3);
        assert_eq!(back.records[2].packet.header.timestamp, 1920);
        assert_eq!(back.records[2].at, Duration::from_millis(40));
        assert_eq!(back.events(Instant::now()).len(), 4);
    }

    #[test]
    fn truncations_and_garbage_are_errors() {
        let bytes = sample().to_bytes().unwrap();
        let header_end = MAGIC.len() + 4 + serde_json::to_vec(&sample().header).unwrap().len();
        for cut in 0..bytes.len() {
            if let Ok(c) = Capture::parse(&bytes[..cut]) {
                assert!(cut >= header_end && c.records.len() < 3, "cut at {cut}")
            }
        }
        assert_eq!(Capture::parse(b"nope").unwrap_err(), CaptureError::Magic);
        let mut bad = bytes.clone();
        let kind_at = MAGIC.len() + 4 + serde_json::to_vec(&sample().header).unwrap().len() + 8;
        bad[kind_at] = 9;
        assert!(matches!(
            Capture::parse(&bad),
            Err(CaptureError::Record { .. })
        ));
    }
}
