//! Recognises the first RTP packet of a keyframe for each video codec we forward, from the payload alone.
//!
//! The fan-out uses this to start the per-layer picture cache, to start new viewers and to switch layers on a
//! decodable picture. It reads a few header bytes and never allocates; malformed payloads are "not a keyframe".

/// Video codecs the SFU understands well enough to find keyframes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264
    H264,
    /// VP8
    Vp8,
    /// VP9
    Vp9,
    /// AV1
    Av1,
    /// A codec we forward blindly: every packet is treated as possibly decodable.
    Other,
}

impl VideoCodec {
    /// The codec of an SDP/webrtc mime type such as `video/H264`.
    pub fn from_mime(mime: &str) -> VideoCodec {
        let lower = mime.to_ascii_lowercase();
        match lower.as_str() {
            "video/h264" => VideoCodec::H264,
            "video/vp8" => VideoCodec::Vp8,
            "video/vp9" => VideoCodec::Vp9,
            "video/av1" => VideoCodec::Av1,
            _ => VideoCodec::Other,
        }
    }
}

/// Whether `payload` (an RTP payload of `codec`) begins a keyframe.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => h264_starts_keyframe(payload),
        VideoCodec::Vp8 => vp8_starts_keyframe(payload),
        VideoCodec::Vp9 => vp9_starts_keyframe(payload),
        VideoCodec::Av1 => av1_starts_keyframe(payload),
        VideoCodec::Other => false,
    }
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// H.264 (RFC 6184): an SPS or IDR NAL unit, alone, first in a STAP-A, or in the first fragment of an FU-A.
/// Encoders send SPS/PPS right before each IDR, so the packet with the SPS is the start of the keyframe.
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        H264_SPS | H264_IDR => true,
        H264_STAP_A => {
            // STAP-A: [hdr][size u16][nal]...; look at every aggregated NAL's type.
            let mut rest = &payload[1..];
            while rest.len() >= 3 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let nal_type = rest[2] & 0x1f;
                if nal_type == H264_SPS || nal_type == H264_IDR {
                    return true;
                }
                if size == 0 || rest.len() < 2 + size {
                    return false;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        H264_FU_A => {
            let Some(&fu_header) = payload.get(1) else {
                return false;
            };
            let start = fu_header & 0x80 != 0;
            start && (fu_header & 0x1f == H264_IDR || fu_header & 0x1f == H264_SPS)
        }
        _ => false,
    }
}

/// VP8 (RFC 7741): start of partition 0 (S=1, PID=0) and the frame tag's P bit clear.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start || pid != 0 {
        return false;
    }
    let mut idx = 1;
    if extended {
        let Some(&x) = payload.get(idx) else {
            return false;
        };
        idx += 1;
        if x & 0x80 != 0 {
            // PictureID: one or two bytes.
            let Some(&p) = payload.get(idx) else {
                return false;
            };
            idx += if p & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            idx += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            idx += 1; // TID/KEYIDX
        }
    }
    payload.get(idx).is_some_and(|&tag| tag & 0x01 == 0)
}

/// VP9 (RFC 9628): beginning of a frame (B=1) that is not inter-picture predicted (P=0), in the base spatial layer.
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let inter_predicted = b0 & 0x40 != 0;
    let layer_indices = b0 & 0x20 != 0;
    let begins_frame = b0 & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if !layer_indices {
        return true;
    }
    // Skip the picture id to reach the layer indices and check the spatial id is 0.
    let mut idx = 1;
    if b0 & 0x80 != 0 {
        let Some(&p) = payload.get(idx) else {
            return false;
        };
        idx += if p & 0x80 != 0 { 2 } else { 1 };
    }
    payload.get(idx).is_some_and(|&l| (l >> 1) & 0x07 == 0)
}

/// AV1 (RTP payload format for AV1): the N bit of the aggregation header marks the first packet of a coded video
/// sequence, which starts with a keyframe.
fn av1_starts_keyframe(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&b| b & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_single_idr_and_sps_are_keyframes_but_slices_are_not() {
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(VideoCodec::H264, &[0x67, 0x42]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        assert!(!starts_keyframe(VideoCodec::H264, &[]));
    }

    #[test]
    fn h264_stap_a_with_sps_is_a_keyframe() {
        // STAP-A holding SPS (2 bytes) and PPS (2 bytes).
        let p = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
        assert!(starts_keyframe(VideoCodec::H264, &p));
        let not = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x00];
        assert!(!starts_keyframe(VideoCodec::H264, &not));
        // Truncated aggregate never reads out of bounds.
        assert!(!starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x09, 0x06]
        ));
    }

    #[test]
    fn h264_fu_a_only_first_fragment_of_idr() {
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x81, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c]));
    }

    #[test]
    fn vp8_keyframe_bit() {
        // No extension, S=1, PID=0, then frame tag with P=0.
        assert!(starts_keyframe(VideoCodec::Vp8, &[0x10, 0x00]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x10, 0x01]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x00, 0x00]));
        // Extended with a 15-bit picture id.
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x00]
        ));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x81]));
    }

    #[test]
    fn vp9_and_av1() {
        assert!(starts_keyframe(VideoCodec::Vp9, &[0x08]));
        assert!(!starts_keyframe(VideoCodec::Vp9, &[0x48]));
        assert!(starts_keyframe(VideoCodec::Av1, &[0x18]));
        assert!(!starts_keyframe(VideoCodec::Av1, &[0x10]));
        assert!(!starts_keyframe(VideoCodec::Other, &[0xff]));
    }
}
