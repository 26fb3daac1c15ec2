//! Opaque one-purpose tokens: refresh tokens and the tokens in verification and reset links. 256 random bits,
//! shown once, stored only as their SHA-256 (a database leak gives no usable token; the entropy makes a slow hash
//! pointless). Looked up by hash, so no comparison of secrets happens in Rust at all; where one must, it is
//! constant-time ([`matches`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "zqr_";
/// Prefix of email-verification tokens.
pub const VERIFY_PREFIX: &str = "zqv_";
/// Prefix of password-reset tokens.
pub const RESET_PREFIX: &str = "zqp_";

/// Longest token accepted from a client (longer ones are refused before hashing).
pub const MAX_TOKEN_CHARS: usize = 128;

/// A new random token with `prefix`.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a token: lowercase hex SHA-256.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `presented` hashes to `stored_hash`, in constant time.
pub fn matches(presented: &str, stored_hash: &str) -> bool {
    hash(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// Characters of a token after its prefix (32 bytes in unpadded base64url).
pub const TOKEN_BODY_CHARS: usize = 43;

/// Whether `token` has the form of a token of kind `prefix` (cheap check before touching the database); the
/// OpenAPI document states the same rule as `^<prefix>[A-Za-z0-9_-]{43}$`.
pub fn well_formed(token: &str, prefix: &str) -> bool {
    token.len() <= MAX_TOKEN_CHARS
        && token.strip_prefix(prefix).is_some_and(|body| {
            body.len() == TOKEN_BODY_CHARS
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_distinct_and_match_only_their_hash() {
        let a = generate(REFRESH_PREFIX);
        let b = generate(REFRESH_PREFIX);
        assert_ne!(a, b);
        assert_eq!(a.len(), REFRESH_PREFIX.len() + 43);
        assert!(well_formed(&a, REFRESH_PREFIX));
        assert!(!well_formed(&a, RESET_PREFIX));
        assert!(matches(&a, &hash(&a)));
        assert!(!matches(&b, &hash(&a)));
        assert!(!well_formed("zqr_a b", REFRESH_PREFIX));
        assert!(!well_formed("zqr_abc", REFRESH_PREFIX));
        assert!(!well_formed(
            &format!("zqr_{}", "a".repeat(200)),
            REFRESH_PREFIX
        ));
    }
}
