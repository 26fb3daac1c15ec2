//! Base64url without padding (RFC 4648 §5), the text form of every binary field in Arweave's JSON: ids, owners,
//! signatures, tags, data roots, chunk proofs.
//!
//! Decoding is strict about the alphabet and rejects padding; it never panics on outside text.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Text that is not base64url without padding.
#[derive(Debug, thiserror::Error)]
#[error("not base64url (no padding): {0}")]
pub(crate) struct B64UrlError(#[from] base64::DecodeError);

/// Encodes bytes as base64url without padding.
pub(crate) fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub(crate) fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>, B64UrlError> {
    Ok(URL_SAFE_NO_PAD.decode(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_uses_the_url_alphabet_without_padding() {
        let bytes = [0xfb, 0xff, 0xbf, 0x00];
        let text = encode(bytes);
        assert_eq!(text, "-_-_AA");
        assert_eq!(decode(&text).unwrap(), bytes);
    }

    #[test]
    fn rejects_padding_and_the_standard_alphabet() {
        assert!(decode("-_-_AA==").is_err());
        assert!(decode("+/+/AA").is_err());
    }
}
