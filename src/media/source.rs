//! Media files turned into RTP, the way a WHIP client sends them: an H.264 Annex-B elementary stream split into
//! access units and packetized (RFC 6184 mode 1, via the `rtp` crate's payloader), and Opus packets read from an
//! Ogg file (RFC 7845), one per RTP packet. Used by `examples/make_capture.rs` to make the capture fixtures
//! (`scripts/make-fixtures`). Both readers take outside bytes: bounded and panic free (fuzz target `media_source`).

use std::time::Duration;

use bytes::Bytes;
use rtp::codecs::h264::H264Payloader;
use rtp::codecs::opus::OpusPayloader;
use rtp::header::Header;
use rtp::packet::Packet;
use rtp::packetizer::Payloader;

use super::capture::{Capture, CaptureHeader, Record};
use super::{CodecInfo, MediaKind, opus};

/// Why a media file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// The input is not an Ogg stream.
    #[error("not an Ogg stream")]
    NotOgg,
    /// An Ogg page ends early.
    #[error("truncated Ogg page")]
    Truncated,
    /// The Ogg stream is not Opus.
    #[error("not an Ogg Opus stream")]
    NotOpus,
    /// The RTP packetizer failed (says why).
    #[error("packetizing: {0}")]
    Packetize(String),
}

/// Splits an Annex-B byte stream into NAL units (start codes removed).
pub fn annexb_nal_units(data: &[u8]) -> Vec<Bytes> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
        // A 4-byte start code leaves a zero at the end of the previous NAL.
        while end > start && data[end - 1] == 0 && starts.get(n + 1).is_some() {
            end -= 1;
        }
        if end > start {
            nals.push(Bytes::copy_from_slice(&data[start..end]));
        }
    }
    nals
}

/// Groups NAL units into access units (each a list of NALs): a new unit begins at an access unit delimiter, or at
/// parameter sets / SEI / a slice starting a new picture (first_mb_in_slice = 0) after a slice.
pub fn access_units(nals: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut units: Vec<Vec<Bytes>> = Vec::new();
    let mut current: Vec<Bytes> = Vec::new();
    let mut has_slice = false;
    for nal in nals {
        let Some(&h) = nal.first() else { continue };
        let t = h & 0x1f;
        let first_slice_of_picture =
            matches!(t, 1 | 5) && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        let starts_new = t == 9 || (has_slice && (matches!(t, 6..=8) || first_slice_of_picture));
        if starts_new && !current.is_empty() {
            units.push(std::mem::take(&mut current));
            has_slice = false;
        }
        if t == 9 {
            continue;
        }
        if matches!(t, 1 | 5) {
            has_slice = true;
        }
        current.push(nal);
    }
    if !current.is_empty() {
        units.push(current);
    }
    units
}

/// Reads the Opus packets of an Ogg Opus file (header packets skipped).
pub fn ogg_opus_packets(mut data: &[u8]) -> Result<Vec<Bytes>, SourceError> {
    let mut packets = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut index = 0usize;
    if !data.starts_with(b"OggS") {
        return Err(SourceError::NotOgg);
    }
    while !data.is_empty() {
        if data.len() < 27 || &data[..4] != b"OggS" {
            return Err(SourceError::Truncated);
        }
        let segments = usize::from(data[26]);
        if data.len() < 27 + segments {
            return Err(SourceError::Truncated);
        }
        let lacing = &data[27..27 + segments];
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let mut body = data
            .get(27 + segments..27 + segments + body_len)
            .ok_or(SourceError::Truncated)?;
        for &l in lacing {
            let (part, rest) = body.split_at(usize::from(l));
            partial.extend_from_slice(part);
            body = rest;
            if l < 255 {
                let packet = std::mem::take(&mut partial);
                match index {
                    0 if !packet.starts_with(b"OpusHead") => return Err(SourceError::NotOpus),
                    0 | 1 => {}
                    _ => packets.push(Bytes::from(packet)),
                }
                index += 1;
            }
        }
        data = &data[27 + segments + body_len..];
    }
    Ok(packets)
}

/// The codecs zipIQ's own client and OBS use, as captures record them.
pub fn default_codecs() -> CaptureHeader {
    CaptureHeader {
        audio: Some(CodecInfo {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            fmtp: "minptime=10;useinbandfec=1".into(),
        }),
        video: Some(CodecInfo {
            mime_type: "video/H264".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
        }),
    }
}

/// RTP numbering of a packetized track.
#[derive(Debug, Clone, Copy)]
pub struct Numbering {
    /// The track's SSRC.
    pub ssrc: u32,
    /// The first packet's sequence number.
    pub first_seq: u16,
    /// The first packet's RTP timestamp.
    pub first_ts: u32,
}

/// Packetizes access units at `fps` and Opus packets into one capture, interleaved by send time.
pub fn packetize(
    video: &[Vec<Bytes>],
    fps: u32,
    audio: &[Bytes],
    video_numbering: Numbering,
    audio_numbering: Numbering,
    mtu: usize,
) -> Result<Capture, SourceError> {
    let mut records = Vec::new();
    let mut payloader = H264Payloader::default();
    let mut seq = video_numbering.first_seq;
    let frame_ticks = 90_000 / fps.max(1);
    for (n, unit) in video.iter().enumerate() {
        let mut annexb = Vec::new();
        for nal in unit {
            annexb.extend_from_slice(&[0, 0, 0, 1]);
            annexb.extend_from_slice(nal);
        }
        let payloads = payloader
            .payload(mtu, &Bytes::from(annexb))
            .map_err(|e| SourceError::Packetize(e.to_string()))?;
        let ts = video_numbering
            .first_ts
            .wrapping_add(frame_ticks.wrapping_mul(n as u32));
        let at = Duration::from_micros(n as u64 * 1_000_000 / u64::from(fps.max(1)));
        let count = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            records.push(Record {
                at,
                kind: MediaKind::Video,
                packet: packet(video_numbering.ssrc, 96, seq, ts, i + 1 == count, payload),
            });
            seq = seq.wrapping_add(1);
        }
    }
    let mut opus_payloader = OpusPayloader;
    let mut seq = audio_numbering.first_seq;
    let mut samples: u64 = 0;
    for p in audio {
        let Some(n) = opus::packet_samples(p) else {
            continue;
        };
        for payload in opus_payloader
            .payload(mtu, p)
            .map_err(|e| SourceError::Packetize(e.to_string()))?
        {
            records.push(Record {
                at: Duration::from_micros(samples * 1_000_000 / 48_000),
                kind: MediaKind::Audio,
                packet: packet(
                    audio_numbering.ssrc,
                    111,
                    seq,
                    audio_numbering.first_ts.wrapping_add(samples as u32),
                    false,
                    payload,
                ),
            });
            seq = seq.wrapping_add(1);
        }
        samples += u64::from(n);
    }
    records.sort_by_key(|r| r.at);
    Ok(Capture {
        header: default_codecs(),
        records,
    })
}

fn packet(ssrc: u32, pt: u8, seq: u16, ts: u32, marker: bool, payload: Bytes) -> Packet {
    Packet {
        header: Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_splits_on_3_and_4_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 0x88, 3,
        ];
        let nals = annexb_nal_units(&data);
        assert_eq!(
            nals,
            vec![
                Bytes::from_static(&[0x67, 1]),
                Bytes::from_static(&[0x68, 2]),
                Bytes::from_static(&[0x65, 0x88, 3]),
            ]
        );
        let units = access_units(nals);
        assert_eq!(units.len(), 1);
    }

    #[test]
    fn pictures_split_at_their_first_slice_or_delimiter() {
        let nals = vec![
            Bytes::from_static(&[0x67, 1]),
            Bytes::from_static(&[0x68, 2]),
            Bytes::from_static(&[0x65, 0x88]),
            Bytes::from_static(&[0x65, 0x08]), // second slice of the same picture
            Bytes::from_static(&[0x41, 0x9a]),
            Bytes::from_static(&[0x09, 0x10]),
            Bytes::from_static(&[0x41, 0x9a]),
        ];
        let units = access_units(nals);
        assert_eq!(units.len(), 3);
        assert_eq!(units[0].len(), 4);
    }

    #[test]
    fn ogg_errors() {
        assert_eq!(ogg_opus_packets(b"nope"), Err(SourceError::NotOgg));
        assert_eq!(ogg_opus_packets(b"OggS\0"), Err(SourceError::Truncated));
    }
}
