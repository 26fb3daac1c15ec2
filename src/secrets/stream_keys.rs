//! Stream keys: the bearer secret a publisher (OBS, a browser) sends with its WHIP request.
//!
//! A key is 192 random bits, shown once and stored only as its SHA-256. A slow password hash (argon2) buys nothing
//! for a secret with this much entropy and would put a costly hash on every WHIP request. Comparison is in
//! constant time. Keys never appear in logs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this, so leaked keys are easy to recognise (and to scan for).
pub const KEY_PREFIX: &str = "zq_";

/// A new random stream key.
pub fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a key: lowercase hex SHA-256.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `presented` is the key whose hash is `stored_hash`, in constant time.
pub fn verify(presented: &str, stored_hash: &str) -> bool {
    let computed = hash(presented);
    computed.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header value, if it has that form.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_distinct_and_prefixed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        // 24 bytes -> 32 base64 characters: 192 bits of entropy.
        assert_eq!(a.len(), KEY_PREFIX.len() + 32);
    }

    #[test]
    fn verify_accepts_the_key_and_rejects_others() {
        let key = generate();
        let stored = hash(&key);
        assert!(verify(&key, &stored));
        assert!(!verify(&generate(), &stored));
        assert!(!verify("", &stored));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
