//! Reads a WHIP or WHEP SDP offer before any peer connection is made, and refuses what the SFU cannot serve with
//! a reason a person can act on: no bundle, no rtcp-mux, more than one audio or video section, wrong direction.
//!
//! This is a parser of outside bytes: it never panics, and every limit is checked (fuzz target `sdp_offer`).

use std::io::Cursor;

use sdp::description::media::MediaDescription;
use sdp::description::session::SessionDescription;

/// Longest offer accepted, in bytes (the HTTP layer limits bodies too; this keeps the parser honest on its own).
pub const MAX_OFFER_BYTES: usize = 256 * 1024;

/// Why an offer is refused. `Malformed` is a 400, the rest are 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The SDP does not parse.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// The SDP parses but asks for what the SFU does not do (says what).
    #[error("{0}")]
    Unsupported(String),
}

/// Which way media flows, from the offerer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

/// One codec the offer lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCodec {
    /// The RTP payload type.
    pub payload_type: u8,
    /// `audio/opus`, `video/H264`, ... (kind + `/` + encoding name as written).
    pub mime_type: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (0 when `a=rtpmap` names none).
    pub channels: u16,
    /// The `a=fmtp` parameters, empty when none.
    pub fmtp: String,
}

/// One audio or video section of the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    /// The section's `a=mid`.
    pub mid: String,
    /// The section's direction.
    pub direction: Direction,
    /// The codecs, in the offer's order of preference.
    pub codecs: Vec<OfferedCodec>,
    /// Simulcast layers the offerer sends (`a=simulcast:send`), in the offer's order; empty without simulcast.
    pub send_rids: Vec<String>,
}

/// What the SFU needs to know about an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// The audio section, if any.
    pub audio: Option<OfferedMedia>,
    /// The video section, if any.
    pub video: Option<OfferedMedia>,
    /// The offerer's ICE user fragment.
    pub ice_ufrag: String,
    /// The offerer's ICE password.
    pub ice_pwd: String,
    /// How many `a=candidate` lines the offer carries (the SFU takes a bounded number).
    pub candidates: usize,
}

/// Whether the offer is for publishing (WHIP) or for watching (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A WHIP offer: the offerer sends.
    Publish,
    /// A WHEP offer: the offerer receives.
    Watch,
}

/// Parses and checks an offer for `role`.
pub fn inspect(sdp_text: &str, role: Role) -> Result<OfferSummary, OfferError> {
    if sdp_text.len() > MAX_OFFER_BYTES {
        return Err(OfferError::Malformed(format!(
            "offer is larger than {MAX_OFFER_BYTES} bytes"
        )));
    }
    if !sdp_text.trim_start().starts_with("v=0") {
        return Err(OfferError::Malformed("an SDP offer starts with v=0".into()));
    }
    let session = SessionDescription::unmarshal(&mut Cursor::new(sdp_text.as_bytes()))
        .map_err(|e| OfferError::Malformed(e.to_string()))?;

    let bundle: Vec<&str> = session
        .attribute("group")
        .and_then(|g| g.strip_prefix("BUNDLE"))
        .map(|mids| mids.split_whitespace().collect())
        .unwrap_or_default();

    let mut audio = None;
    let mut video = None;
    let mut ufrag = session.attribute("ice-ufrag").cloned();
    let mut pwd = session.attribute("ice-pwd").cloned();

    for media in &session.media_descriptions {
        let kind = media.media_name.media.as_str();
        if media.media_name.port.value == 0 {
            // A rejected or stopped section: nothing flows there.
            continue;
        }
        if kind != "audio" && kind != "video" {
            if kind == "application" {
                continue; // Data channels are ignored (not negotiated in the answer).
            }
            return Err(OfferError::Unsupported(format!(
                "media section of kind {kind:?} is not supported"
            )));
        }
        let mid = media
            .attribute("mid")
            .flatten()
            .ok_or_else(|| OfferError::Unsupported(format!("the {kind} section has no a=mid")))?
            .to_owned();
        if !bundle.contains(&mid.as_str()) {
            return Err(OfferError::Unsupported(format!(
                "the {kind} section (mid {mid}) is not in an a=group:BUNDLE; zipIQ needs bundled media"
            )));
        }
        if !media.has_attribute("rtcp-mux") {
            return Err(OfferError::Unsupported(format!(
                "the {kind} section (mid {mid}) has no a=rtcp-mux; zipIQ needs RTP and RTCP multiplexed"
            )));
        }
        if ufrag.is_none() {
            ufrag = media.attribute("ice-ufrag").flatten().map(str::to_owned);
        }
        if pwd.is_none() {
            pwd = media.attribute("ice-pwd").flatten().map(str::to_owned);
        }
        let direction = direction_of(media);
        let wrong_direction = match role {
            Role::Publish => matches!(direction, Direction::RecvOnly | Direction::Inactive),
            Role::Watch => matches!(direction, Direction::SendOnly | Direction::Inactive),
        };
        if wrong_direction {
            let want = match role {
                Role::Publish => "sendonly (publishing)",
                Role::Watch => "recvonly (watching)",
            };
            return Err(OfferError::Unsupported(format!(
                "the {kind} section (mid {mid}) has direction {direction:?}, expected {want}"
            )));
        }
        let offered = OfferedMedia {
            mid,
            direction,
            codecs: codecs_of(kind, media),
            send_rids: send_rids_of(media),
        };
        let slot = if kind == "audio" {
            &mut audio
        } else {
            &mut video
        };
        if slot.is_some() {
            return Err(OfferError::Unsupported(format!(
                "more than one {kind} track; zipIQ takes one audio and one video track per session"
            )));
        }
        *slot = Some(offered);
    }

    if audio.is_none() && video.is_none() {
        return Err(OfferError::Unsupported(
            "the offer has no audio or video section".into(),
        ));
    }
    let (Some(ice_ufrag), Some(ice_pwd)) = (ufrag, pwd) else {
        return Err(OfferError::Malformed(
            "the offer has no a=ice-ufrag / a=ice-pwd".into(),
        ));
    };
    let candidates = sdp_text
        .lines()
        .filter(|line| line.trim_start().starts_with("a=candidate:"))
        .count();
    Ok(OfferSummary {
        audio,
        video,
        ice_ufrag,
        ice_pwd,
        candidates,
    })
}

fn direction_of(media: &MediaDescription) -> Direction {
    for attr in &media.attributes {
        match attr.key.as_str() {
            "sendrecv" => return Direction::SendRecv,
            "sendonly" => return Direction::SendOnly,
            "recvonly" => return Direction::RecvOnly,
            "inactive" => return Direction::Inactive,
            _ => {}
        }
    }
    Direction::SendRecv
}

fn codecs_of(kind: &str, media: &MediaDescription) -> Vec<OfferedCodec> {
    let mut codecs = Vec::new();
    for format in &media.media_name.formats {
        let Ok(pt) = format.parse::<u8>() else {
            continue;
        };
        let rtpmap = media.attributes.iter().find_map(|a| {
            let v = a.value.as_deref()?;
            (a.key == "rtpmap")
                .then(|| v.split_once(' '))
                .flatten()
                .filter(|(p, _)| p.parse::<u8>() == Ok(pt))
                .map(|(_, rest)| rest)
        });
        let Some(rtpmap) = rtpmap else {
            continue;
        };
        let mut parts = rtpmap.split('/');
        let name = parts.next().unwrap_or_default();
        let clock_rate = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let fmtp = media
            .attributes
            .iter()
            .find_map(|a| {
                let v = a.value.as_deref()?;
                (a.key == "fmtp")
                    .then(|| v.split_once(' '))
                    .flatten()
                    .filter(|(p, _)| p.parse::<u8>() == Ok(pt))
                    .map(|(_, rest)| rest.trim().to_owned())
            })
            .unwrap_or_default();
        codecs.push(OfferedCodec {
            payload_type: pt,
            mime_type: format!("{kind}/{name}"),
            clock_rate,
            channels,
            fmtp,
        });
    }
    codecs
}

/// Layers from `a=simulcast:send 0;1;2` (alternatives `a,b` keep the first, paused `~x` layers are skipped).
fn send_rids_of(media: &MediaDescription) -> Vec<String> {
    let Some(Some(value)) = media.attribute("simulcast") else {
        return Vec::new();
    };
    let mut words = value.split_whitespace();
    while let Some(word) = words.next() {
        if word == "send" {
            let Some(list) = words.next() else {
                return Vec::new();
            };
            return list
                .split(';')
                .filter_map(|alts| alts.split(',').next())
                .filter(|rid| !rid.is_empty() && !rid.starts_with('~'))
                .take(8)
                .map(str::to_owned)
                .collect();
        }
    }
    Vec::new()
}

/// The value of `key` in an fmtp line such as `profile-level-id=42e01f;packetization-mode=1`.
pub fn fmtp_value<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

/// Whether a viewer offering `offered` can decode what a publisher sends as `sent` (same codec; for H.264 the
/// same profile and packetization mode; for VP9 the same profile).
pub fn codec_compatible(sent: &OfferedCodec, offered: &OfferedCodec) -> bool {
    if !sent.mime_type.eq_ignore_ascii_case(&offered.mime_type) {
        return false;
    }
    if sent.clock_rate != 0 && offered.clock_rate != 0 && sent.clock_rate != offered.clock_rate {
        return false;
    }
    let lower = sent.mime_type.to_ascii_lowercase();
    if lower == "video/h264" {
        let mode = |f: &str| {
            fmtp_value(f, "packetization-mode")
                .unwrap_or("0")
                .to_owned()
        };
        let profile = |f: &str| {
            fmtp_value(f, "profile-level-id")
                .and_then(|p| p.get(0..2))
                .map(str::to_ascii_lowercase)
        };
        return mode(&sent.fmtp) == mode(&offered.fmtp)
            && profile(&sent.fmtp).is_some()
            && profile(&sent.fmtp) == profile(&offered.fmtp);
    }
    if lower == "video/vp9" {
        let profile = |f: &str| fmtp_value(f, "profile-id").unwrap_or("0").to_owned();
        return profile(&sent.fmtp) == profile(&offered.fmtp);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What OBS Studio 30 sends (libdatachannel): audio mid 0 Opus 111, video mid 1 H.264 96.
    pub(crate) const OBS_OFFER: &str = "v=0\r\no=rtc 3767197920 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=group:LS 0 1\r\na=msid-semantic:WMS *\r\na=setup:actpass\r\na=ice-ufrag:Ab1c\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=ice-options:ice2,trickle\r\na=fingerprint:sha-256 8B:12:9E:39:2B:0C:6B:2E:3E:4B:0A:8E:0B:5C:9C:41:AA:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=ssrc:1234 cname:obs\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=ssrc:5678 cname:obs\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 goog-remb\r\na=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n";

    #[test]
    fn obs_offer_is_accepted_with_its_codecs() {
        let s = inspect(OBS_OFFER, Role::Publish).unwrap();
        let audio = s.audio.unwrap();
        let video = s.video.unwrap();
        assert_eq!(audio.mid, "0");
        assert_eq!(audio.codecs[0].mime_type, "audio/opus");
        assert_eq!(audio.codecs[0].payload_type, 111);
        assert_eq!(audio.codecs[0].channels, 2);
        assert_eq!(video.mid, "1");
        assert_eq!(video.codecs[0].mime_type, "video/H264");
        assert_eq!(
            fmtp_value(&video.codecs[0].fmtp, "profile-level-id"),
            Some("42e01f")
        );
        assert_eq!(s.ice_ufrag, "Ab1c");
    }

    #[test]
    fn publishing_offer_cannot_be_used_to_watch() {
        let err = inspect(OBS_OFFER, Role::Watch).unwrap_err();
        assert!(matches!(err, OfferError::Unsupported(m) if m.contains("recvonly")));
    }

    #[test]
    fn missing_bundle_is_refused() {
        let offer = OBS_OFFER.replace("a=group:BUNDLE 0 1\r\n", "");
        let err = inspect(&offer, Role::Publish).unwrap_err();
        assert!(matches!(err, OfferError::Unsupported(m) if m.contains("BUNDLE")));
    }

    #[test]
    fn missing_rtcp_mux_is_refused() {
        let offer = OBS_OFFER.replacen("a=rtcp-mux\r\n", "", 1);
        let err = inspect(&offer, Role::Publish).unwrap_err();
        assert!(matches!(err, OfferError::Unsupported(m) if m.contains("rtcp-mux")));
    }

    #[test]
    fn two_video_tracks_are_refused() {
        let video_start = OBS_OFFER.find("m=video").unwrap();
        let second = OBS_OFFER[video_start..].replace("a=mid:1", "a=mid:2");
        let offer = format!("{OBS_OFFER}{second}").replace("BUNDLE 0 1", "BUNDLE 0 1 2");
        let err = inspect(&offer, Role::Publish).unwrap_err();
        assert!(matches!(err, OfferError::Unsupported(m) if m.contains("more than one video")));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            inspect("hello", Role::Publish),
            Err(OfferError::Malformed(_))
        ));
        assert!(matches!(
            inspect("v=0\r\nm=", Role::Publish),
            Err(OfferError::Malformed(_))
        ));
        assert!(matches!(
            inspect("", Role::Watch),
            Err(OfferError::Malformed(_))
        ));
    }

    #[test]
    fn simulcast_layers_in_offer_order() {
        let offer = OBS_OFFER.replace(
            "a=mid:1\r\n",
            "a=mid:1\r\na=rid:0 send\r\na=rid:1 send\r\na=rid:2 send\r\na=simulcast:send 0;1;~2\r\n",
        );
        let s = inspect(&offer, Role::Publish).unwrap();
        assert_eq!(s.video.unwrap().send_rids, vec!["0", "1"]);
    }

    #[test]
    fn h264_compatibility_follows_profile_and_mode() {
        let c = |fmtp: &str| OfferedCodec {
            payload_type: 96,
            mime_type: "video/H264".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: fmtp.into(),
        };
        let sent = c("profile-level-id=42e01f;packetization-mode=1");
        assert!(codec_compatible(
            &sent,
            &c("packetization-mode=1;profile-level-id=42001f")
        ));
        assert!(!codec_compatible(
            &sent,
            &c("packetization-mode=0;profile-level-id=42e01f")
        ));
        assert!(!codec_compatible(
            &sent,
            &c("packetization-mode=1;profile-level-id=64001f")
        ));
    }
}
