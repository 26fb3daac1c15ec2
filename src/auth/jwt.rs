//! JWTs (HS256) signed with a ring of keys, each named by a `kid` in the token header: the newest key signs, every
//! key in the ring verifies, so a rotation (`zipiq secrets rotate-jwt`) never cuts valid tokens short.
//!
//! Two kinds of token, told apart by their audience so one can never stand in for the other: API access tokens
//! (`zipiq-api`, a user and a login session) and viewer tokens (`zipiq-whep`, one stream). The key file holds one
//! key a line, `<kid> <created unix seconds> <secret base64url>`; a line with only a secret (what scripts/install
//! writes) is a key whose kid is derived from the secret. Secrets are never logged.

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secrets::{self, SecretError, SecretSource};

/// The `iss` of every token this server signs.
pub(crate) const ISSUER: &str = "zipiq";
/// The `aud` of API access tokens.
pub(crate) const ACCESS_AUDIENCE: &str = "zipiq-api";
/// The `aud` of viewer tokens.
pub(crate) const VIEWER_AUDIENCE: &str = "zipiq-whep";
/// Bytes of a new signing secret (256 bits, the HS256 output size).
const SECRET_BYTES: usize = 32;
/// Shortest secret accepted from a key file.
const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated between nodes, in seconds.
const LEEWAY_S: u64 = 5;

/// One signing key.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    /// When the key was made (unix seconds); 0 when unknown (a bare secret line).
    pub created_at: i64,
    secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key made at `now_s`.
    pub fn generate(now_s: i64) -> SigningKey {
        let mut secret = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let mut kid = [0u8; 8];
        rand::rng().fill_bytes(&mut kid);
        SigningKey {
            kid: hex::encode(kid),
            created_at: now_s,
            secret,
        }
    }
}

/// The keys of a key file, oldest first; the last one signs.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

const KEY_FILE_HEADER: &str = "\
# zipIQ JWT signing keys (HS256), one a line: <kid> <created, unix seconds> <secret, base64url>.
# The last line signs new tokens; every line verifies. Made and rotated by `zipiq secrets rotate-jwt`.
";

impl KeyRing {
    /// A ring of one new key.
    pub fn generate(now_s: i64) -> KeyRing {
        KeyRing {
            keys: vec![SigningKey::generate(now_s)],
        }
    }

    /// Reads a key file's text. Errors never quote a secret.
    pub fn parse(text: &str) -> Result<KeyRing, String> {
        let mut keys: Vec<SigningKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let key = match fields.as_slice() {
                [secret] => {
                    let secret =
                        decode_secret(secret).map_err(|e| format!("line {}: {e}", n + 1))?;
                    SigningKey {
                        kid: hex::encode(&Sha256::digest(&secret)[..8]),
                        created_at: 0,
                        secret,
                    }
                }
                [kid, created, secret] => {
                    if kid.is_empty()
                        || kid.len() > 64
                        || !kid
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        return Err(format!(
                            "line {}: a kid is 1-64 characters of A-Z a-z 0-9 - _",
                            n + 1
                        ));
                    }
                    let created_at = created.parse::<i64>().map_err(|_| {
                        format!("line {}: the creation time is not a number", n + 1)
                    })?;
                    let secret =
                        decode_secret(secret).map_err(|e| format!("line {}: {e}", n + 1))?;
                    SigningKey {
                        kid: (*kid).to_owned(),
                        created_at,
                        secret,
                    }
                }
                _ => {
                    return Err(format!(
                        "line {}: expected `<kid> <created> <secret>` or a bare secret",
                        n + 1
                    ));
                }
            };
            if keys.iter().any(|k| k.kid == key.kid) {
                return Err(format!("line {}: kid {} appears twice", n + 1, key.kid));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no key in the file".into());
        }
        Ok(KeyRing { keys })
    }

    /// The key file text of this ring.
    pub fn to_text(&self) -> String {
        let mut text = KEY_FILE_HEADER.to_owned();
        for key in &self.keys {
            text.push_str(&format!(
                "{} {} {}\n",
                key.kid,
                key.created_at,
                URL_SAFE_NO_PAD.encode(&key.secret)
            ));
        }
        text
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &SigningKey {
        // The constructors never make an empty ring.
        &self.keys[self.keys.len() - 1]
    }

    /// The kids, oldest first.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Adds a new signing key made at `now_s` and drops every key replaced more than `max_token_ttl_s` ago (no
    /// token it signed can still be valid). Returns the new key's kid and the dropped kids.
    pub fn rotate(&mut self, now_s: i64, max_token_ttl_s: u64) -> (String, Vec<String>) {
        let new = SigningKey::generate(now_s);
        let kid = new.kid.clone();
        self.keys.push(new);
        let horizon = now_s.saturating_sub(i64::try_from(max_token_ttl_s).unwrap_or(i64::MAX));
        let horizon = horizon.saturating_sub(LEEWAY_S as i64);
        // Each key was replaced when the next one was made; the newest was not replaced.
        let replaced_at: Vec<Option<i64>> = self
            .keys
            .iter()
            .skip(1)
            .map(|next| Some(next.created_at))
            .chain(std::iter::once(None))
            .collect();
        let mut dropped = Vec::new();
        let mut keep = Vec::with_capacity(self.keys.len());
        for (key, replaced) in self.keys.drain(..).zip(replaced_at) {
            match replaced {
                Some(at) if at < horizon => dropped.push(key.kid),
                _ => keep.push(key),
            }
        }
        self.keys = keep;
        (kid, dropped)
    }
}

fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let secret = [&URL_SAFE_NO_PAD, &URL_SAFE, &STANDARD, &STANDARD_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| "the secret is not base64".to_owned())?;
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret has {} bytes; at least {MIN_SECRET_BYTES} are needed",
            secret.len()
        ));
    }
    Ok(secret)
}

/// Loads the key ring from the systemd credential `jwt-key` or `configured`; a missing configured file is created
/// with one new key (a credential is never created: systemd owns it).
pub(crate) fn load_or_create(
    configured: &std::path::Path,
) -> Result<(KeyRing, SecretSource), SecretError> {
    let Some(source) = secrets::locate("jwt-key", configured) else {
        return Err(SecretError::Invalid {
            path: configured.to_owned(),
            reason: "no JWT key: set auth.jwt_key_file or give the systemd credential jwt-key"
                .into(),
        });
    };
    let path = source.path().to_owned();
    if matches!(source, SecretSource::File(_)) && !path.exists() {
        let ring = KeyRing::generate(crate::db::now_ms() / 1000);
        secrets::write_private(&path, &ring.to_text())?;
        tracing::info!(path = %path.display(), kid = %ring.current().kid, "created a JWT signing key");
        return Ok((ring, source));
    }
    let text = secrets::read(&path)?;
    let ring = KeyRing::parse(&text).map_err(|reason| SecretError::Invalid {
        path: path.clone(),
        reason,
    })?;
    Ok((ring, source))
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
    #[error("the token was signed with an unknown key")]
    UnknownKey,
}

/// Claims of an API access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The login session (refresh-token family) the token belongs to.
    pub sid: i64,
    pub role: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// Claims of a viewer token: who may watch one stream until `exp`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ViewerClaims {
    pub iss: String,
    pub aud: String,
    /// The user who made the token.
    pub sub: String,
    /// The stream id (not its name: a deleted and re-made stream of the same name is another stream).
    pub stream: i64,
    /// The stream's viewer-token version when the token was made; bumping it revokes every viewer token.
    pub ver: i64,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// Signs and verifies tokens with the current key ring (replaceable at run time).
pub struct Jwt {
    ring: RwLock<Arc<KeyRing>>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("kids", &self.ring().kids())
            .finish()
    }
}

impl Jwt {
    pub fn new(ring: KeyRing) -> Jwt {
        Jwt {
            ring: RwLock::new(Arc::new(ring)),
        }
    }

    /// The ring in use.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the ring (after a rotation).
    pub fn replace(&self, ring: KeyRing) {
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
    }

    /// Signs `claims` with the current key, naming it in the header's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let ring = self.ring();
        let key = ring.current();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let encoding = EncodingKey::from_secret(&key.secret).map_err(|_| TokenError::Invalid)?;
        jsonwebtoken::encode(&header, claims, &encoding).map_err(|e| {
            tracing::error!(error = %e, "cannot sign a token");
            TokenError::Invalid
        })
    }

    /// Verifies a token's signature (by its `kid`), issuer, audience and expiry, and returns its claims.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let ring = self.ring();
        let key = ring.find(&kid).ok_or(TokenError::UnknownKey)?;
        let decoding = DecodingKey::from_secret(&key.secret).map_err(|_| TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "iat"]);
        jsonwebtoken::decode::<T>(token, &decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

/// A random token id (`jti`).
pub(crate) fn token_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(exp: u64) -> AccessClaims {
        AccessClaims {
            iss: ISSUER.into(),
            aud: ACCESS_AUDIENCE.into(),
            sub: "7".into(),
            sid: 3,
            role: "streamer".into(),
            iat: now_s(),
            exp,
            jti: token_id(),
        }
    }

    #[test]
    fn tokens_carry_the_kid_and_verify_with_it() {
        let jwt = Jwt::new(KeyRing::generate(1000));
        let token = jwt.sign(&access(now_s() + 60)).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            header.kid.as_deref(),
            Some(jwt.ring().current().kid.as_str())
        );
        let claims: AccessClaims = jwt.verify(&token, ACCESS_AUDIENCE).unwrap();
        assert_eq!(claims.sub, "7");
    }

    #[test]
    fn an_access_token_is_not_a_viewer_token() {
        let jwt = Jwt::new(KeyRing::generate(1000));
        let token = jwt.sign(&access(now_s() + 60)).unwrap();
        assert_eq!(
            jwt.verify::<AccessClaims>(&token, VIEWER_AUDIENCE),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let jwt = Jwt::new(KeyRing::generate(1000));
        let expired = jwt.sign(&access(now_s() - 100)).unwrap();
        assert_eq!(
            jwt.verify::<AccessClaims>(&expired, ACCESS_AUDIENCE),
            Err(TokenError::Expired)
        );
        let good = jwt.sign(&access(now_s() + 60)).unwrap();
        let mut tampered = good.clone();
        tampered.pop();
        tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            jwt.verify::<AccessClaims>(&tampered, ACCESS_AUDIENCE),
            Err(TokenError::Invalid)
        );
        let other = Jwt::new(KeyRing::generate(1000));
        assert_eq!(
            other.verify::<AccessClaims>(&good, ACCESS_AUDIENCE),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            jwt.verify::<AccessClaims>("not.a.jwt", ACCESS_AUDIENCE),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn rotation_keeps_old_keys_verifying_until_their_tokens_expire() {
        let mut ring = KeyRing::generate(1_000);
        let jwt = Jwt::new(ring.clone());
        let old_token = jwt.sign(&access(now_s() + 60)).unwrap();
        let first = ring.current().kid.clone();
        let (second, dropped) = ring.rotate(2_000, 900);
        assert!(dropped.is_empty());
        assert_eq!(ring.current().kid, second);
        jwt.replace(ring.clone());
        // The old token still verifies, new tokens carry the new kid.
        assert!(
            jwt.verify::<AccessClaims>(&old_token, ACCESS_AUDIENCE)
                .is_ok()
        );
        let new_token = jwt.sign(&access(now_s() + 60)).unwrap();
        let header = jsonwebtoken::decode_header(&new_token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(second.as_str()));
        // Long after the second key replaced the first, the first is dropped at the next rotation.
        let (_, dropped) = ring.rotate(2_000 + 900 + 10, 900);
        assert_eq!(dropped, vec![first]);
        assert_eq!(ring.kids().len(), 2);
    }

    #[test]
    fn key_files_round_trip_and_accept_a_bare_secret() {
        let ring = KeyRing::generate(42);
        let parsed = KeyRing::parse(&ring.to_text()).unwrap();
        assert_eq!(parsed.kids(), ring.kids());
        assert_eq!(parsed.current().created_at, 42);
        // scripts/install writes 64 random bytes as standard base64, with no kid.
        let bare = STANDARD.encode([7u8; 64]);
        let ring = KeyRing::parse(&format!("{bare}\n")).unwrap();
        assert_eq!(ring.current().kid.len(), 16);
        assert!(KeyRing::parse("").is_err());
        assert!(KeyRing::parse("# only a comment\n").is_err());
        let short = KeyRing::parse(&URL_SAFE_NO_PAD.encode([1u8; 8])).unwrap_err();
        assert!(short.contains("at least 32"), "{short}");
        assert!(!short.contains(&URL_SAFE_NO_PAD.encode([1u8; 8])));
        let dup = format!(
            "a 1 {}\na 2 {}\n",
            URL_SAFE_NO_PAD.encode([1u8; 32]),
            URL_SAFE_NO_PAD.encode([2u8; 32])
        );
        assert!(KeyRing::parse(&dup).unwrap_err().contains("twice"));
    }
}
