//! The few ISO BMFF boxes of CMAF fragmented MP4 (ISO/IEC 14496-12, 14496-15 for `avcC`, "Encapsulation of Opus
//! in ISO Base Media File Format" for `Opus`/`dOps`): an init segment (`ftyp` + `moov` with `mvex`) for an H.264
//! video track and/or an Opus audio track, and media segments (`styp` + `moof` + `mdat`) carrying both tracks in
//! one fragment, so every segment file plays after its init segment (HLS `EXT-X-MAP`).
//!
//! No maintained MP4 writer crate covered fragmented output with `dOps` and `avcC` together when this was
//! written, so these boxes are written here, checked by ffprobe/ffmpeg in the segmenter tests.

use bytes::Bytes;

/// Track id of the video track in every file.
pub(crate) const VIDEO_TRACK: u32 = 1;
/// Track id of the audio track.
pub(crate) const AUDIO_TRACK: u32 = 2;
/// Video timescale (RTP clock of H.264).
pub(crate) const VIDEO_TIMESCALE: u32 = 90_000;
/// Audio timescale (Opus always runs at 48 kHz).
pub(crate) const AUDIO_TIMESCALE: u32 = 48_000;

/// H.264 track configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VideoConfig {
    pub sps: Bytes,
    pub pps: Bytes,
    pub width: u32,
    pub height: u32,
}

/// Opus track configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AudioConfig {
    pub channels: u8,
}

/// One sample of a fragment.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub duration: u32,
    pub data: Bytes,
    pub keyframe: bool,
}

/// One track's part of a fragment.
#[derive(Debug, Clone)]
pub(crate) struct TrackFragment {
    pub track_id: u32,
    pub base_decode_time: u64,
    pub samples: Vec<Sample>,
}

fn write_box(out: &mut Vec<u8>, name: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(name);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn full_box(
    out: &mut Vec<u8>,
    name: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    write_box(out, name, |out| {
        out.push(version);
        out.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(out);
    });
}

fn u16b(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u32b(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u64b(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn matrix(out: &mut Vec<u8>) {
    for v in MATRIX {
        u32b(out, v);
    }
}

/// The init segment for the given tracks (at least one).
pub(crate) fn init_segment(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Bytes {
    let mut out = Vec::with_capacity(1024);
    write_box(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"iso6");
        u32b(o, 0);
        for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    write_box(&mut out, b"moov", |o| {
        full_box(o, b"mvhd", 0, 0, |o| {
            u32b(o, 0);
            u32b(o, 0);
            u32b(o, 1000);
            u32b(o, 0);
            u32b(o, 0x0001_0000);
            u16b(o, 0x0100);
            o.extend_from_slice(&[0; 10]);
            matrix(o);
            o.extend_from_slice(&[0; 24]);
            u32b(o, AUDIO_TRACK + 1);
        });
        if let Some(v) = video {
            video_trak(o, v);
        }
        if let Some(a) = audio {
            audio_trak(o, a);
        }
        write_box(o, b"mvex", |o| {
            for (present, id) in [
                (video.is_some(), VIDEO_TRACK),
                (audio.is_some(), AUDIO_TRACK),
            ] {
                if present {
                    full_box(o, b"trex", 0, 0, |o| {
                        u32b(o, id);
                        u32b(o, 1);
                        u32b(o, 0);
                        u32b(o, 0);
                        u32b(o, 0);
                    });
                }
            }
        });
    });
    Bytes::from(out)
}

fn tkhd(o: &mut Vec<u8>, track_id: u32, audio: bool, width: u32, height: u32) {
    full_box(o, b"tkhd", 0, 0x000003, |o| {
        u32b(o, 0);
        u32b(o, 0);
        u32b(o, track_id);
        u32b(o, 0);
        u32b(o, 0);
        o.extend_from_slice(&[0; 8]);
        u16b(o, 0);
        u16b(o, if audio { 1 } else { 0 });
        u16b(o, if audio { 0x0100 } else { 0 });
        u16b(o, 0);
        matrix(o);
        u32b(o, width << 16);
        u32b(o, height << 16);
    });
}

fn mdhd_hdlr(o: &mut Vec<u8>, timescale: u32, handler: &[u8; 4], name: &str) {
    full_box(o, b"mdhd", 0, 0, |o| {
        u32b(o, 0);
        u32b(o, 0);
        u32b(o, timescale);
        u32b(o, 0);
        u16b(o, 0x55c4); // 'und'
        u16b(o, 0);
    });
    full_box(o, b"hdlr", 0, 0, |o| {
        u32b(o, 0);
        o.extend_from_slice(handler);
        o.extend_from_slice(&[0; 12]);
        o.extend_from_slice(name.as_bytes());
        o.push(0);
    });
}

fn dinf_and_empty_tables(o: &mut Vec<u8>, stsd: impl FnOnce(&mut Vec<u8>)) {
    write_box(o, b"dinf", |o| {
        full_box(o, b"dref", 0, 0, |o| {
            u32b(o, 1);
            full_box(o, b"url ", 0, 1, |_| {});
        });
    });
    write_box(o, b"stbl", |o| {
        full_box(o, b"stsd", 0, 0, |o| {
            u32b(o, 1);
            stsd(o);
        });
        full_box(o, b"stts", 0, 0, |o| u32b(o, 0));
        full_box(o, b"stsc", 0, 0, |o| u32b(o, 0));
        full_box(o, b"stsz", 0, 0, |o| {
            u32b(o, 0);
            u32b(o, 0);
        });
        full_box(o, b"stco", 0, 0, |o| u32b(o, 0));
    });
}

fn video_trak(o: &mut Vec<u8>, v: &VideoConfig) {
    write_box(o, b"trak", |o| {
        tkhd(o, VIDEO_TRACK, false, v.width, v.height);
        write_box(o, b"mdia", |o| {
            mdhd_hdlr(o, VIDEO_TIMESCALE, b"vide", "zipIQ video");
            write_box(o, b"minf", |o| {
                full_box(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                dinf_and_empty_tables(o, |o| {
                    write_box(o, b"avc1", |o| {
                        o.extend_from_slice(&[0; 6]);
                        u16b(o, 1);
                        o.extend_from_slice(&[0; 16]);
                        u16b(o, v.width.min(u32::from(u16::MAX)) as u16);
                        u16b(o, v.height.min(u32::from(u16::MAX)) as u16);
                        u32b(o, 0x0048_0000);
                        u32b(o, 0x0048_0000);
                        u32b(o, 0);
                        u16b(o, 1);
                        let mut name = [0u8; 32];
                        let label = b"zipIQ H.264";
                        name[0] = label.len() as u8;
                        name[1..=label.len()].copy_from_slice(label);
                        o.extend_from_slice(&name);
                        u16b(o, 0x0018);
                        u16b(o, 0xffff);
                        write_box(o, b"avcC", |o| avcc(o, v));
                    });
                });
            });
        });
    });
}

/// The AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1).
fn avcc(o: &mut Vec<u8>, v: &VideoConfig) {
    let profile = v.sps.get(1).copied().unwrap_or(66);
    o.push(1);
    o.push(profile);
    o.push(v.sps.get(2).copied().unwrap_or(0));
    o.push(v.sps.get(3).copied().unwrap_or(30));
    o.push(0xfc | 3); // 4-byte NAL lengths
    o.push(0xe0 | 1);
    u16b(o, v.sps.len().min(usize::from(u16::MAX)) as u16);
    o.extend_from_slice(&v.sps[..v.sps.len().min(usize::from(u16::MAX))]);
    o.push(1);
    u16b(o, v.pps.len().min(usize::from(u16::MAX)) as u16);
    o.extend_from_slice(&v.pps[..v.pps.len().min(usize::from(u16::MAX))]);
    if matches!(profile, 100 | 110 | 122 | 144) {
        // 4:2:0, 8-bit: what WebRTC encoders send.
        o.extend_from_slice(&[0xfc | 1, 0xf8, 0xf8, 0]);
    }
}

fn audio_trak(o: &mut Vec<u8>, a: &AudioConfig) {
    write_box(o, b"trak", |o| {
        tkhd(o, AUDIO_TRACK, true, 0, 0);
        write_box(o, b"mdia", |o| {
            mdhd_hdlr(o, AUDIO_TIMESCALE, b"soun", "zipIQ audio");
            write_box(o, b"minf", |o| {
                full_box(o, b"smhd", 0, 0, |o| o.extend_from_slice(&[0; 4]));
                dinf_and_empty_tables(o, |o| {
                    write_box(o, b"Opus", |o| {
                        o.extend_from_slice(&[0; 6]);
                        u16b(o, 1);
                        o.extend_from_slice(&[0; 8]);
                        u16b(o, u16::from(a.channels));
                        u16b(o, 16);
                        u16b(o, 0);
                        u16b(o, 0);
                        u32b(o, AUDIO_TIMESCALE << 16);
                        write_box(o, b"dOps", |o| {
                            o.push(0);
                            o.push(a.channels);
                            u16b(o, 0); // pre-skip: WebRTC Opus streams start without encoder delay padding
                            u32b(o, AUDIO_TIMESCALE);
                            u16b(o, 0);
                            o.push(0);
                        });
                    });
                });
            });
        });
    });
}

const TRUN_DATA_OFFSET: u32 = 0x000001;
const TRUN_DURATION: u32 = 0x000100;
const TRUN_SIZE: u32 = 0x000200;
const TRUN_FLAGS: u32 = 0x000400;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x020000;
const SYNC_SAMPLE: u32 = 0x0200_0000;
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// A media segment (`styp`, `moof`, `mdat`) holding the given track fragments, fragment number `sequence`.
pub(crate) fn media_segment(sequence: u32, tracks: &[TrackFragment]) -> Bytes {
    let tracks: Vec<&TrackFragment> = tracks.iter().filter(|t| !t.samples.is_empty()).collect();
    let payload: usize = tracks
        .iter()
        .flat_map(|t| t.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let mut out = Vec::with_capacity(payload + 256 + 16 * tracks.len());
    write_box(&mut out, b"styp", |o| {
        o.extend_from_slice(b"msdh");
        u32b(o, 0);
        o.extend_from_slice(b"msdh");
        o.extend_from_slice(b"msix");
    });
    let moof_start = out.len();
    // Absolute positions (in `out`) of each trun's data_offset field, patched once moof's size is known.
    let mut offset_fields = Vec::with_capacity(tracks.len());
    write_box(&mut out, b"moof", |o| {
        full_box(o, b"mfhd", 0, 0, |o| u32b(o, sequence));
        for t in &tracks {
            write_box(o, b"traf", |o| {
                full_box(o, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |o| {
                    u32b(o, t.track_id)
                });
                full_box(o, b"tfdt", 1, 0, |o| u64b(o, t.base_decode_time));
                let video = t.track_id == VIDEO_TRACK;
                let flags = TRUN_DATA_OFFSET
                    | TRUN_DURATION
                    | TRUN_SIZE
                    | if video { TRUN_FLAGS } else { 0 };
                full_box(o, b"trun", 0, flags, |o| {
                    u32b(o, t.samples.len() as u32);
                    offset_fields.push(o.len());
                    u32b(o, 0);
                    for s in &t.samples {
                        u32b(o, s.duration);
                        u32b(o, s.data.len() as u32);
                        if video {
                            u32b(
                                o,
                                if s.keyframe {
                                    SYNC_SAMPLE
                                } else {
                                    NON_SYNC_SAMPLE
                                },
                            );
                        }
                    }
                });
            });
        }
    });
    let moof_size = out.len() - moof_start;
    // Data offsets are relative to the start of moof; samples follow the 8-byte mdat header.
    let mut data_offset = moof_size + 8;
    for (&at, t) in offset_fields.iter().zip(&tracks) {
        out[at..at + 4].copy_from_slice(&(data_offset as u32).to_be_bytes());
        data_offset += t.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    u32b(&mut out, (8 + payload) as u32);
    out.extend_from_slice(b"mdat");
    for t in &tracks {
        for s in &t.samples {
            out.extend_from_slice(&s.data);
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks top-level boxes: (name, size).
    fn boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= data.len() {
            let size =
                u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
            out.push((
                String::from_utf8_lossy(&data[i + 4..i + 8]).into_owned(),
                size,
            ));
            assert!(size >= 8 && i + size <= data.len(), "box sizes add up");
            i += size;
        }
        assert_eq!(i, data.len());
        out
    }

    fn video() -> VideoConfig {
        VideoConfig {
            sps: Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f, 0xac]),
            pps: Bytes::from_static(&[0x68, 0xeb]),
            width: 1280,
            height: 720,
        }
    }

    #[test]
    fn init_segment_is_ftyp_then_moov() {
        let init = init_segment(Some(&video()), Some(&AudioConfig { channels: 2 }));
        let top: Vec<String> = boxes(&init).into_iter().map(|b| b.0).collect();
        assert_eq!(top, vec!["ftyp", "moov"]);
        let text = String::from_utf8_lossy(&init);
        for name in [
            "mvhd", "trak", "avc1", "avcC", "Opus", "dOps", "mvex", "trex",
        ] {
            assert!(text.contains(name), "has {name}");
        }
        let audio_only = init_segment(None, Some(&AudioConfig { channels: 2 }));
        assert!(!String::from_utf8_lossy(&audio_only).contains("avc1"));
    }

    #[test]
    fn media_segment_offsets_point_at_each_tracks_samples() {
        let seg = media_segment(
            7,
            &[
                TrackFragment {
                    track_id: VIDEO_TRACK,
                    base_decode_time: 90_000,
                    samples: vec![
                        Sample {
                            duration: 3000,
                            data: Bytes::from_static(b"VVVV"),
                            keyframe: true,
                        },
                        Sample {
                            duration: 3000,
                            data: Bytes::from_static(b"vv"),
                            keyframe: false,
                        },
                    ],
                },
                TrackFragment {
                    track_id: AUDIO_TRACK,
                    base_decode_time: 48_000,
                    samples: vec![Sample {
                        duration: 960,
                        data: Bytes::from_static(b"AAA"),
                        keyframe: true,
                    }],
                },
            ],
        );
        let top = boxes(&seg);
        assert_eq!(
            top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            vec!["styp", "moof", "mdat"]
        );
        let moof_start = top[0].1;
        let moof_size = top[1].1;
        // Find the two trun data offsets and check they land on the sample bytes.
        let trun_positions: Vec<usize> = seg
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"trun")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(trun_positions.len(), 2);
        let offset = |p: usize| {
            let at = p + 4 + 4 + 4; // name, version+flags, sample_count
            u32::from_be_bytes([seg[at], seg[at + 1], seg[at + 2], seg[at + 3]]) as usize
        };
        assert_eq!(&seg[moof_start + offset(trun_positions[0])..][..4], b"VVVV");
        assert_eq!(&seg[moof_start + offset(trun_positions[1])..][..3], b"AAA");
        assert_eq!(moof_start + moof_size + 8 + 9, seg.len());
    }
}
