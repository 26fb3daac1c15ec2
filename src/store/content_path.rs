//! Content paths `/ipfs/{cid}/{path...}`: the pure parser the HTTP gateway runs on every request path.
//!
//! Input is whatever a client sends. The parser bounds every length, percent-decodes each segment on its own (so
//! an encoded `/` can never split or join segments), refuses `.`, `..`, NUL and non-UTF-8 names, and returns an
//! error for anything else it does not understand. It never panics and does no I/O.

use cid::Cid;

/// Longest request path accepted.
pub const MAX_PATH_LEN: usize = 8 * 1024;
/// Longest CID string accepted (a sha2-512 CIDv1 in base16 is ~140 characters).
pub const MAX_CID_LEN: usize = 512;
/// Most path segments below the root CID.
pub const MAX_SEGMENTS: usize = 128;

/// A parsed `/ipfs/{cid}/{path...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPath {
    /// The CID the path starts from.
    pub root: Cid,
    /// Decoded names, outermost first; empty for the root itself.
    pub segments: Vec<String>,
    /// The request path ended with `/` (directories are served from their `/` form).
    pub trailing_slash: bool,
}

/// Why a request path is not a content path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/ipfs/`.
    #[error("path does not start with /ipfs/")]
    NotIpfs,
    /// The path is longer than allowed.
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// The root is not a valid CID (says why).
    #[error("invalid CID: {0}")]
    InvalidCid(String),
    /// A segment is not acceptable: too many, badly escaped, not UTF-8, `.`/`..`, or an encoded `/` or NUL.
    #[error("invalid path segment: {0}")]
    InvalidSegment(&'static str),
}

impl ContentPath {
    /// Parses a request path such as `/ipfs/bafy.../dir/000001.m4s`.
    pub fn parse(path: &str) -> Result<ContentPath, PathError> {
        if path.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        let rest = path.strip_prefix("/ipfs/").ok_or(PathError::NotIpfs)?;
        let (cid_text, tail) = match rest.split_once('/') {
            Some((cid, tail)) => (cid, Some(tail)),
            None => (rest, None),
        };
        let root = parse_cid(cid_text)?;
        let mut segments = Vec::new();
        let mut trailing_slash = false;
        if let Some(tail) = tail {
            trailing_slash = tail.is_empty() || tail.ends_with('/');
            for raw in tail.split('/').filter(|s| !s.is_empty()) {
                if segments.len() == MAX_SEGMENTS {
                    return Err(PathError::InvalidSegment("too many segments"));
                }
                segments.push(decode_segment(raw)?);
            }
        }
        Ok(ContentPath {
            root,
            segments,
            trailing_slash,
        })
    }

    /// The canonical `/ipfs/{cid}/{path}` form (segments re-encoded), as used in `X-Ipfs-Path` and links.
    pub fn to_uri_path(&self) -> String {
        let mut out = format!("/ipfs/{}", self.root);
        for segment in &self.segments {
            out.push('/');
            out.push_str(&encode_segment(segment));
        }
        if self.trailing_slash {
            out.push('/');
        }
        out
    }
}

/// Parses a CID as it appears in a URL: CIDv0 (`Qm...`) or a multibase CIDv1.
pub fn parse_cid(text: &str) -> Result<Cid, PathError> {
    if text.is_empty() {
        return Err(PathError::InvalidCid("empty".into()));
    }
    if text.len() > MAX_CID_LEN {
        return Err(PathError::InvalidCid("too long".into()));
    }
    if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PathError::InvalidCid(
            "contains characters outside [0-9A-Za-z]".into(),
        ));
    }
    Cid::try_from(text).map_err(|e| PathError::InvalidCid(e.to_string()))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one segment and checks it is a name a UnixFS directory can hold.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(PathError::InvalidSegment("bad percent-encoding")),
            }
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    let name = String::from_utf8(out).map_err(|_| PathError::InvalidSegment("not UTF-8"))?;
    if name == "." || name == ".." {
        return Err(PathError::InvalidSegment("dot segment"));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(PathError::InvalidSegment("encoded slash or NUL"));
    }
    Ok(name)
}

/// Percent-encodes a name for use as one URL path segment (unreserved characters and a few safe ones pass).
pub fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

    #[test]
    fn a_bare_cid_has_no_segments() {
        let path = ContentPath::parse(&format!("/ipfs/{CID}")).expect("parses");
        assert_eq!(path.root.to_string(), CID);
        assert!(path.segments.is_empty());
        assert!(!path.trailing_slash);
        let slash = ContentPath::parse(&format!("/ipfs/{CID}/")).expect("parses");
        assert!(slash.trailing_slash);
    }

    #[test]
    fn segments_are_percent_decoded_one_by_one() {
        let path = ContentPath::parse(&format!("/ipfs/{CID}/a%20b//c.m4s/")).expect("parses");
        assert_eq!(path.segments, vec!["a b", "c.m4s"]);
        assert!(path.trailing_slash);
        assert_eq!(path.to_uri_path(), format!("/ipfs/{CID}/a%20b/c.m4s/"));
    }

    #[test]
    fn cidv0_parses_too() {
        let path = ContentPath::parse("/ipfs/QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR")
            .expect("parses");
        assert_eq!(path.root.version(), cid::Version::V0);
    }

    #[test]
    fn malformed_paths_are_errors() {
        let cases = [
            "/ipns/x".to_string(),
            "/ipfs/".to_string(),
            "/ipfs/not-a-cid".to_string(),
            "/ipfs/bafyabc".to_string(),
            format!("/ipfs/{CID}/.."),
            format!("/ipfs/{CID}/a/./b"),
            format!("/ipfs/{CID}/%2e%2E"),
            format!("/ipfs/{CID}/a%2Fb"),
            format!("/ipfs/{CID}/%00"),
            format!("/ipfs/{CID}/%zz"),
            format!("/ipfs/{CID}/%4"),
            format!("/ipfs/{CID}/%ff"),
            format!("/ipfs/{}", "b".repeat(MAX_CID_LEN + 1)),
            format!("/ipfs/{CID}/{}", "a/".repeat(MAX_SEGMENTS + 1)),
            format!("/ipfs/{CID}/{}", "a".repeat(MAX_PATH_LEN)),
        ];
        for case in &cases {
            assert!(ContentPath::parse(case).is_err(), "{case}");
        }
    }

    #[test]
    fn encoding_round_trips_any_name() {
        for name in ["plain.m4s", "with space", "ünï", "50%", "a?b#c"] {
            let path = format!("/ipfs/{CID}/{}", encode_segment(name));
            let parsed = ContentPath::parse(&path).expect("parses");
            assert_eq!(parsed.segments, vec![name.to_string()]);
        }
    }
}
