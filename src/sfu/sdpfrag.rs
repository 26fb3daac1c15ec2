//! Parses and writes `application/trickle-ice-sdpfrag` bodies (RFC 8840), as WHIP/WHEP PATCH requests carry them:
//! new remote candidates (trickle) or new ICE credentials (an ICE restart).
//!
//! A parser of outside bytes: bounded, never panics (fuzz target `sdpfrag`).

/// Longest fragment accepted, in bytes.
pub const MAX_FRAG_BYTES: usize = 64 * 1024;
/// Most candidates accepted in one fragment.
pub const MAX_CANDIDATES: usize = 64;

/// Why a fragment was refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed trickle-ice-sdpfrag: {0}")]
pub struct FragError(pub String);

/// One remote candidate, with the media section it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragCandidate {
    /// The `a=mid` of the section the candidate appeared in, if any.
    pub mid: Option<String>,
    /// The index of that `m=` section in the fragment.
    pub m_line_index: Option<u16>,
    /// The candidate attribute value (what follows `a=candidate:`), as `candidate:...` for webrtc APIs.
    pub candidate: String,
}

/// A parsed fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag`, if the fragment carries one.
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`, if the fragment carries one.
    pub ice_pwd: Option<String>,
    /// The `a=candidate` lines, in order.
    pub candidates: Vec<FragCandidate>,
    /// Whether it carries `a=end-of-candidates`.
    pub end_of_candidates: bool,
}

fn ice_char_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Parses a fragment.
pub fn parse(text: &str) -> Result<SdpFrag, FragError> {
    if text.len() > MAX_FRAG_BYTES {
        return Err(FragError(format!("larger than {MAX_FRAG_BYTES} bytes")));
    }
    let mut frag = SdpFrag::default();
    let mut mid: Option<String> = None;
    let mut m_index: Option<u16> = None;
    for raw in text.split('\n') {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(FragError(format!(
                "line {:?} is not <type>=<value>",
                truncate(line)
            )));
        };
        match kind {
            "m" => {
                m_index = Some(match m_index {
                    None => 0,
                    Some(i) => i
                        .checked_add(1)
                        .ok_or_else(|| FragError("too many m= lines".into()))?,
                });
                mid = None;
            }
            "a" => {
                let (name, attr) = match value.split_once(':') {
                    Some((n, v)) => (n, Some(v)),
                    None => (value, None),
                };
                match (name, attr) {
                    ("ice-ufrag", Some(v)) => {
                        if !ice_char_ok(v) {
                            return Err(FragError("bad a=ice-ufrag".into()));
                        }
                        frag.ice_ufrag = Some(v.to_owned());
                    }
                    ("ice-pwd", Some(v)) => {
                        if !ice_char_ok(v) {
                            return Err(FragError("bad a=ice-pwd".into()));
                        }
                        frag.ice_pwd = Some(v.to_owned());
                    }
                    ("mid", Some(v)) => {
                        if v.is_empty() || v.len() > 32 {
                            return Err(FragError("bad a=mid".into()));
                        }
                        mid = Some(v.to_owned());
                    }
                    ("candidate", Some(v)) => {
                        check_candidate(v)?;
                        if frag.candidates.len() >= MAX_CANDIDATES {
                            return Err(FragError(format!(
                                "more than {MAX_CANDIDATES} candidates"
                            )));
                        }
                        frag.candidates.push(FragCandidate {
                            mid: mid.clone(),
                            m_line_index: m_index,
                            candidate: format!("candidate:{v}"),
                        });
                    }
                    ("end-of-candidates", _) => frag.end_of_candidates = true,
                    // group:BUNDLE, ice-options and anything else a client sends along is harmless.
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if frag.ice_ufrag.is_some() != frag.ice_pwd.is_some() {
        return Err(FragError(
            "a=ice-ufrag and a=ice-pwd must come together".into(),
        ));
    }
    Ok(frag)
}

/// Checks the shape of a candidate: foundation, component, transport, priority, address, port, `typ`, type.
fn check_candidate(value: &str) -> Result<(), FragError> {
    let fields: Vec<&str> = value.split_whitespace().take(8).collect();
    if fields.len() < 8 || fields[6] != "typ" {
        return Err(FragError(format!(
            "candidate {:?} lacks foundation, component, transport, priority, address, port and typ",
            truncate(value)
        )));
    }
    let numeric_ok = fields[1].parse::<u16>().is_ok()
        && fields[3].parse::<u32>().is_ok()
        && fields[5].parse::<u16>().is_ok();
    if !numeric_ok {
        return Err(FragError(format!(
            "candidate {:?} has a bad component, priority or port",
            truncate(value)
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes the answer to an ICE restart: our new credentials and candidates, one section per media id.
pub fn write_restart_answer(
    ufrag: &str,
    pwd: &str,
    mids: &[(String, String)],
    candidates: &[String],
) -> String {
    let mut out = String::new();
    out.push_str(&format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"));
    if let Some((first_kind, first_mid)) = mids.first() {
        // With bundle, candidates belong to the first section only.
        out.push_str(&format!(
            "m={first_kind} 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{first_mid}\r\n"
        ));
        for c in candidates {
            let c = c.strip_prefix("candidate:").unwrap_or(c);
            out.push_str(&format!("a=candidate:{c}\r\n"));
        }
        out.push_str("a=end-of-candidates\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKLE: &str = "a=ice-options:trickle ice2\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\na=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\na=end-of-candidates\r\n";

    #[test]
    fn trickle_candidates_keep_their_section() {
        let f = parse(TRICKLE).unwrap();
        assert_eq!(f.candidates.len(), 2);
        assert_eq!(f.candidates[0].mid.as_deref(), Some("0"));
        assert_eq!(f.candidates[0].m_line_index, Some(0));
        assert!(
            f.candidates[1]
                .candidate
                .starts_with("candidate:3471623853 1 udp")
        );
        assert!(f.end_of_candidates);
        assert!(f.ice_ufrag.is_none());
    }

    #[test]
    fn restart_fragment_carries_credentials() {
        let f = parse("a=ice-ufrag:ZZZZ\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n").unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("ZZZZ"));
        assert_eq!(f.ice_pwd.as_deref(), Some("abcdefghijklmnopqrstuvwx"));
    }

    #[test]
    fn malformed_fragments_are_errors() {
        assert!(parse("garbage").is_err());
        assert!(parse("a=candidate:1 1 udp x 1.2.3.4 5 typ host").is_err());
        assert!(parse("a=candidate:1 1 udp").is_err());
        assert!(parse("a=ice-ufrag:abcd\r\n").is_err());
        assert!(parse("a=ice-ufrag:ab cd\r\na=ice-pwd:x\r\n").is_err());
        let many = "a=candidate:1 1 udp 1 192.0.2.1 5 typ host\r\n".repeat(MAX_CANDIDATES + 1);
        assert!(parse(&many).is_err());
    }

    #[test]
    fn empty_fragment_is_an_empty_trickle() {
        assert_eq!(parse("").unwrap(), SdpFrag::default());
    }

    #[test]
    fn restart_answer_round_trips() {
        let text = write_restart_answer(
            "Ufrag1",
            "passwordpasswordpassword",
            &[("audio".into(), "0".into())],
            &["candidate:1 1 udp 2130706431 192.0.2.1 8189 typ host".into()],
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("Ufrag1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.end_of_candidates);
    }
}
