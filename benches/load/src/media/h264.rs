//! H.264 Annex-B for the publisher: splits a byte stream into NAL units, groups them into access units (one
//! picture each), and packetizes an access unit into RTP payloads as RFC 6184 packetization mode 1 does in
//! browsers: parameter sets aggregated in one STAP-A, small NAL units alone, large ones cut into FU-A fragments.
//!
//! It reads a file this tool made with ffmpeg, but never panics on a malformed one: bad input is an error.

use super::MediaError;

/// NAL unit types this module treats specially.
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_END_OF_SEQUENCE: u8 = 10;
const NAL_END_OF_STREAM: u8 = 11;
const NAL_FILLER: u8 = 12;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// One picture: its NAL units in decoding order (without start codes) and whether it is an IDR picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    pub nal_units: Vec<Vec<u8>>,
    pub keyframe: bool,
}

/// One RTP payload of an access unit; `marker` is set on the last one (end of the picture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub bytes: Vec<u8>,
    pub marker: bool,
}

fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

fn is_vcl(kind: u8) -> bool {
    (1..=5).contains(&kind)
}

/// The NAL units of an Annex-B byte stream, without their start codes (3- or 4-byte) and trailing zero bytes.
pub fn split_nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // index of the first byte after each start code
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nal_units = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        // The next start code begins 3 bytes before the next start; zero bytes before it belong to it
        // (4-byte start codes, trailing_zero_8bits).
        let end = starts.get(n + 1).map_or(stream.len(), |next| next - 3);
        let mut nal = stream.get(start..end).unwrap_or_default();
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            nal_units.push(nal);
        }
    }
    nal_units
}

/// Groups NAL units into access units (H.264 7.4.1.2.3): an AUD, a parameter set or SEI after a picture's
/// slices, or a slice with `first_mb_in_slice == 0`, starts the next picture. AUD, filler and end-of-sequence
/// NAL units are dropped (they carry nothing a viewer needs, as browsers do).
pub fn access_units(nal_units: &[&[u8]]) -> Result<Vec<AccessUnit>, MediaError> {
    let mut units = Vec::new();
    let mut current = AccessUnit {
        nal_units: Vec::new(),
        keyframe: false,
    };
    let mut has_slice = false;
    for nal in nal_units {
        let kind = nal_type(nal);
        if nal.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(MediaError::H264(
                "a NAL unit has its forbidden_zero_bit set".into(),
            ));
        }
        let starts_next = match kind {
            NAL_AUD | NAL_SEI | NAL_SPS | NAL_PPS | 14..=18 => has_slice,
            // first_mb_in_slice is the first ue(v) of the slice header: 0 is coded as a single 1 bit.
            k if is_vcl(k) => has_slice && nal.get(1).is_some_and(|b| b & 0x80 != 0),
            _ => false,
        };
        if starts_next {
            units.push(std::mem::replace(
                &mut current,
                AccessUnit {
                    nal_units: Vec::new(),
                    keyframe: false,
                },
            ));
            has_slice = false;
        }
        match kind {
            NAL_AUD | NAL_END_OF_SEQUENCE | NAL_END_OF_STREAM | NAL_FILLER => {}
            k => {
                if is_vcl(k) {
                    has_slice = true;
                    current.keyframe |= k == NAL_IDR;
                }
                current.nal_units.push(nal.to_vec());
            }
        }
    }
    if has_slice {
        units.push(current);
    }
    if units.is_empty() {
        return Err(MediaError::H264("no picture in the H.264 stream".into()));
    }
    if !units.first().is_some_and(|u| u.keyframe) {
        return Err(MediaError::H264(
            "the H.264 stream does not start with an IDR picture".into(),
        ));
    }
    Ok(units)
}

/// Cuts one access unit into RTP payloads of at most `max_payload` bytes (at least 64). Runs of non-slice NAL
/// units (SPS, PPS, SEI) that fit go together in a STAP-A; a slice goes alone if it fits, else in FU-A fragments
/// of near-equal size. `max_payload` is clamped to 64..=65000.
pub fn packetize(unit: &AccessUnit, max_payload: usize) -> Vec<Payload> {
    let max_payload = max_payload.clamp(64, 65_000);
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut aggregate: Vec<&[u8]> = Vec::new();

    let flush = |aggregate: &mut Vec<&[u8]>, payloads: &mut Vec<Vec<u8>>| {
        match aggregate.as_slice() {
            [] => {}
            [single] => payloads.push(single.to_vec()),
            several => {
                // STAP-A header: the highest NRI of the aggregated units, type 24.
                let nri = several
                    .iter()
                    .map(|n| n.first().map_or(0, |b| b & 0x60))
                    .max()
                    .unwrap_or(0);
                let mut p = vec![nri | STAP_A];
                for nal in several {
                    // Fits in u16: only units shorter than `max_payload` are aggregated.
                    p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                    p.extend_from_slice(nal);
                }
                payloads.push(p);
            }
        }
        aggregate.clear();
    };

    for nal in &unit.nal_units {
        let nal = nal.as_slice();
        if nal.is_empty() {
            continue;
        }
        let kind = nal_type(nal);
        if !is_vcl(kind) && nal.len() + 3 <= max_payload {
            let aggregated_len: usize = 1 + aggregate.iter().map(|n| n.len() + 2).sum::<usize>();
            if aggregated_len + nal.len() + 2 > max_payload {
                flush(&mut aggregate, &mut payloads);
            }
            aggregate.push(nal);
            continue;
        }
        flush(&mut aggregate, &mut payloads);
        if nal.len() <= max_payload {
            payloads.push(nal.to_vec());
            continue;
        }
        // FU-A: indicator (F, NRI, 28), header (S, E, type), then a part of the NAL unit without its header byte.
        // `nal` is not empty (checked above).
        let header = nal[0];
        let body = &nal[1..];
        let room = max_payload - 2;
        let count = body.len().div_ceil(room);
        let size = body.len().div_ceil(count);
        for (i, chunk) in body.chunks(size).enumerate() {
            let mut fu_header = header & 0x1f;
            if i == 0 {
                fu_header |= 0x80;
            }
            if i + 1 == count {
                fu_header |= 0x40;
            }
            let mut p = Vec::with_capacity(chunk.len() + 2);
            p.push((header & 0xe0) | FU_A);
            p.push(fu_header);
            p.extend_from_slice(chunk);
            payloads.push(p);
        }
    }
    flush(&mut aggregate, &mut payloads);

    let last = payloads.len().saturating_sub(1);
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| Payload {
            bytes,
            marker: i == last,
        })
        .collect()
}

/// Whether an RTP payload begins a keyframe: an SPS or IDR alone, in a STAP-A, or in a first FU-A fragment.
/// Used by subscribers to see whether they started on a decodable picture.
pub fn payload_starts_keyframe(payload: &[u8]) -> bool {
    match nal_type(payload) {
        NAL_SPS | NAL_IDR => true,
        STAP_A => {
            let mut rest = payload.get(1..).unwrap_or_default();
            while let [hi, lo, first, ..] = rest {
                let kind = first & 0x1f;
                if kind == NAL_SPS || kind == NAL_IDR {
                    return true;
                }
                let size = u16::from_be_bytes([*hi, *lo]) as usize;
                match rest.get(2 + size..) {
                    Some(next) if size > 0 => rest = next,
                    _ => return false,
                }
            }
            false
        }
        FU_A => payload
            .get(1)
            .is_some_and(|h| h & 0x80 != 0 && matches!(h & 0x1f, NAL_IDR | NAL_SPS)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, n) in nals.iter().enumerate() {
            // Mix 4- and 3-byte start codes, as encoders do.
            if i % 2 == 0 {
                out.extend_from_slice(&[0, 0, 0, 1]);
            } else {
                out.extend_from_slice(&[0, 0, 1]);
            }
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn start_codes_of_both_lengths_split_nal_units() {
        let stream = annex_b(&[&[0x09, 0xf0], &[0x67, 1, 2], &[0x68, 3], &[0x65, 0x88, 4]]);
        let nals = split_nal_units(&stream);
        assert_eq!(
            nals,
            vec![
                &[0x09, 0xf0][..],
                &[0x67, 1, 2],
                &[0x68, 3],
                &[0x65, 0x88, 4]
            ]
        );
    }

    #[test]
    fn aud_and_first_slice_start_new_pictures() {
        // AUD, SPS, PPS, IDR slice (first_mb 0), IDR slice (first_mb != 0), AUD, P slice, P slice of the next
        // picture without AUD (first_mb 0).
        let nals: Vec<&[u8]> = vec![
            &[0x09, 0xf0],
            &[0x67, 0x42],
            &[0x68, 0xce],
            &[0x65, 0x88, 1],
            &[0x65, 0x40, 2],
            &[0x09, 0xf0],
            &[0x41, 0x9a, 3],
            &[0x41, 0x9a, 4],
        ];
        let units = access_units(&nals).unwrap();
        assert_eq!(units.len(), 3);
        assert!(units[0].keyframe);
        assert_eq!(
            units[0].nal_units.len(),
            4,
            "AUD dropped, SPS PPS and two slices kept"
        );
        assert!(!units[1].keyframe);
        assert_eq!(units[1].nal_units, vec![vec![0x41, 0x9a, 3]]);
        assert_eq!(units[2].nal_units, vec![vec![0x41, 0x9a, 4]]);
    }

    #[test]
    fn a_stream_without_idr_first_is_refused() {
        let nals: Vec<&[u8]> = vec![&[0x41, 0x9a, 3]];
        assert!(access_units(&nals).is_err());
        assert!(access_units(&[]).is_err());
    }

    #[test]
    fn parameter_sets_are_aggregated_and_large_slices_fragmented() {
        let mut idr = vec![0x65];
        idr.extend((0..2500u32).map(|i| (i % 251) as u8));
        let unit = AccessUnit {
            nal_units: vec![
                vec![0x67, 0x42, 0xc0, 0x1f],
                vec![0x68, 0xce, 0x3c],
                idr.clone(),
            ],
            keyframe: true,
        };
        let payloads = packetize(&unit, 1000);
        assert_eq!(payloads[0].bytes[0] & 0x1f, STAP_A);
        assert_eq!(&payloads[0].bytes[1..3], &[0, 4]);
        assert!(payload_starts_keyframe(&payloads[0].bytes));
        let fragments = &payloads[1..];
        assert_eq!(fragments.len(), 3);
        assert!(fragments.iter().all(|p| p.bytes.len() <= 1000));
        assert_eq!(
            fragments[0].bytes[1] & 0xc0,
            0x80,
            "start bit on the first fragment"
        );
        assert_eq!(
            fragments[2].bytes[1] & 0xc0,
            0x40,
            "end bit on the last fragment"
        );
        assert!(payload_starts_keyframe(&fragments[0].bytes));
        assert!(!payload_starts_keyframe(&fragments[1].bytes));
        // Reassembly gives back the NAL unit.
        let mut rebuilt = vec![(fragments[0].bytes[0] & 0xe0) | (fragments[0].bytes[1] & 0x1f)];
        for f in fragments {
            rebuilt.extend_from_slice(&f.bytes[2..]);
        }
        assert_eq!(rebuilt, idr);
        assert!(payloads.last().unwrap().marker);
        assert_eq!(payloads.iter().filter(|p| p.marker).count(), 1);
    }

    #[test]
    fn small_slice_goes_alone_with_the_marker() {
        let unit = AccessUnit {
            nal_units: vec![vec![0x41, 0x9a, 1, 2, 3]],
            keyframe: false,
        };
        let payloads = packetize(&unit, 1200);
        assert_eq!(
            payloads,
            vec![Payload {
                bytes: vec![0x41, 0x9a, 1, 2, 3],
                marker: true
            }]
        );
        assert!(!payload_starts_keyframe(&payloads[0].bytes));
    }

    #[test]
    fn keyframe_detection_never_panics_on_truncated_payloads() {
        for p in [
            &[][..],
            &[0x78],
            &[0x78, 0x00],
            &[0x78, 0x00, 0x09, 0x06],
            &[0x7c],
        ] {
            assert!(!payload_starts_keyframe(p));
        }
        assert!(payload_starts_keyframe(&[
            0x78, 0x00, 0x01, 0x06, 0x00, 0x02, 0x67, 0x42
        ]));
    }
}
