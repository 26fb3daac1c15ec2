//! Arweave wallet keys: RSA-4096 JWKs (`kty`, `n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi`, base64url), their owner
//! (the modulus `n`, 512 bytes) and address (base64url of SHA-256 of the owner), signing, and the verification of
//! anyone's Arweave signature.
//!
//! Signing is RSA-PSS-SHA256 by *ring* (constant time; salt of 32 bytes). Verification uses the `rsa` crate with
//! salt-length detection, because arweave-js and arbundles sign with the largest salt and *ring*'s verifier only
//! takes a 32-byte one; verification touches public values only. The public exponent must be 65537: data items
//! carry only the modulus and every implementation assumes it. A key never appears in `Debug` output or errors.

use std::fmt;

use ring::rand::SystemRandom;
use ring::rsa::{KeyPair, KeyPairComponents, PublicKeyComponents};
use rsa::BoxedUint;
use rsa::signature::Verifier;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::archive::b64url;

/// Bytes of an Arweave owner (an RSA-4096 modulus) and of its signatures.
pub const OWNER_LEN: usize = 512;
/// Bits of the modulus of every wallet zipIQ makes or loads.
pub const MODULUS_BITS: usize = 4096;
/// The public exponent every Arweave implementation assumes (JWK `"e": "AQAB"`).
pub const PUBLIC_EXPONENT: u64 = 65537;

/// Why a wallet key cannot be loaded, made or used.
#[derive(Debug, thiserror::Error)]
pub enum JwkError {
    /// The key is not JSON of a JSON Web Key.
    #[error("the wallet key is not a JSON Web Key: {0}")]
    Json(#[source] serde_json::Error),
    /// The key is not an RSA key (its `kty`).
    #[error("the wallet key has kty {0:?}; Arweave wallets are \"RSA\"")]
    NotRsa(String),
    /// The named field is not base64url.
    #[error("the wallet key's field {0:?} is not base64url")]
    Field(&'static str),
    /// The modulus is not 4096 bits (its size in bits).
    #[error("the wallet key's modulus has {0} bits; Arweave wallets are RSA-4096")]
    ModulusSize(usize),
    /// The public exponent is not 65537.
    #[error("the wallet key's public exponent is not 65537 (\"AQAB\")")]
    Exponent,
    /// The key's components do not form a valid RSA key.
    #[error("the wallet key's components are inconsistent: {0}")]
    Rejected(String),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
    /// Making a new key failed.
    #[error("making a new key failed: {0}")]
    Generate(String),
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The owner is not an RSA modulus of 1024 to 8192 bits.
    #[error("the owner is not an RSA modulus of 1024 to 8192 bits")]
    BadOwner,
    /// The signature is not as long as the modulus.
    #[error("the signature has {actual} bytes; the owner's modulus has {expected}")]
    BadLength {
        /// The modulus's length in bytes.
        expected: usize,
        /// The signature's length in bytes.
        actual: usize,
    },
    /// The signature does not match the owner and the message.
    #[error("the signature does not match the owner and the signed message")]
    Mismatch,
}

/// The JSON form. Private fields are wiped from memory when dropped.
#[derive(serde::Deserialize, serde::Serialize)]
struct JwkJson {
    kty: String,
    n: String,
    e: String,
    d: Zeroizing<String>,
    p: Zeroizing<String>,
    q: Zeroizing<String>,
    dp: Zeroizing<String>,
    dq: Zeroizing<String>,
    qi: Zeroizing<String>,
}

/// An Arweave wallet key, ready to sign.
pub struct Jwk {
    key_pair: KeyPair,
    owner: Vec<u8>,
    address: String,
    json: Zeroizing<String>,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// A JWK integer field as big-endian bytes without leading zeros (*ring* wants them minimal).
fn field(name: &'static str, text: &str) -> Result<Zeroizing<Vec<u8>>, JwkError> {
    let bytes = Zeroizing::new(b64url::decode(text).map_err(|_| JwkError::Field(name))?);
    Ok(Zeroizing::new(trim_leading_zeros(&bytes).to_vec()))
}

impl Jwk {
    /// Loads a wallet key from its JSON (an Arweave keyfile) and signs once to prove it whole. Fields other than the
    /// RSA ones are ignored; `d` is not used (signing uses the CRT values).
    pub fn from_json(json: &[u8]) -> Result<Jwk, JwkError> {
        let parsed: JwkJson = serde_json::from_slice(json).map_err(JwkError::Json)?;
        if parsed.kty != "RSA" {
            return Err(JwkError::NotRsa(parsed.kty.clone()));
        }
        let n = field("n", &parsed.n)?;
        let e = field("e", &parsed.e)?;
        if n.len() != OWNER_LEN || n.first().is_none_or(|b| b & 0x80 == 0) {
            return Err(JwkError::ModulusSize(significant_bits(&n)));
        }
        if e.as_slice() != trim_leading_zeros(&PUBLIC_EXPONENT.to_be_bytes()) {
            return Err(JwkError::Exponent);
        }
        let d = field("d", &parsed.d)?;
        let p = field("p", &parsed.p)?;
        let q = field("q", &parsed.q)?;
        let dp = field("dp", &parsed.dp)?;
        let dq = field("dq", &parsed.dq)?;
        let qi = field("qi", &parsed.qi)?;
        let components = KeyPairComponents {
            public_key: PublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            },
            d: d.as_slice(),
            p: p.as_slice(),
            q: q.as_slice(),
            dP: dp.as_slice(),
            dQ: dq.as_slice(),
            qInv: qi.as_slice(),
        };
        let key_pair =
            KeyPair::from_components(&components).map_err(|e| JwkError::Rejected(e.to_string()))?;
        let owner = n.to_vec();
        let json = serde_json::to_string(&parsed).map_err(JwkError::Json)?;
        let wallet = Jwk {
            key_pair,
            address: address_of(&owner),
            owner,
            json: Zeroizing::new(json),
        };
        // *ring* checks p·q = n and the CRT coefficient but not d, dp or dq: a damaged keyfile would only fail at
        // its first upload. Sign once now instead.
        let probe = b"zipIQ wallet self-test";
        let signature = wallet.sign(probe).map_err(|_| {
            JwkError::Rejected("the key cannot sign (a damaged CRT exponent)".to_owned())
        })?;
        verify(&wallet.owner, probe, &signature)
            .map_err(|_| JwkError::Rejected("the key's signatures do not verify".to_owned()))?;
        Ok(wallet)
    }

    /// Makes a new RSA-4096 wallet key from the operating system's random source. This takes seconds (much longer
    /// in an unoptimised build): call it from a blocking task.
    pub fn generate() -> Result<Jwk, JwkError> {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, MODULUS_BITS)
            .map_err(|e| JwkError::Generate(e.to_string()))?;
        let (Some(dp), Some(dq), Some(qi), [p, q]) =
            (key.dp(), key.dq(), key.crt_coefficient(), key.primes())
        else {
            return Err(JwkError::Generate(
                "the new key lacks its CRT values".to_owned(),
            ));
        };
        let text =
            |value: &BoxedUint| Zeroizing::new(b64url::encode(value.to_be_bytes_trimmed_vartime()));
        let json = JwkJson {
            kty: "RSA".to_owned(),
            n: b64url::encode(key.n_bytes()),
            e: b64url::encode(key.e_bytes()),
            d: text(key.d()),
            p: text(p.as_ref()),
            q: text(q.as_ref()),
            dp: text(dp),
            dq: text(dq),
            qi: text(&qi),
        };
        let json = Zeroizing::new(serde_json::to_vec(&json).map_err(JwkError::Json)?);
        Jwk::from_json(&json)
    }

    /// The key as Arweave keyfile JSON (secret: write it only to a file readable by its owner).
    pub fn to_json(&self) -> Zeroizing<String> {
        self.json.clone()
    }

    /// The owner: the modulus `n`, 512 bytes, as data items and transactions carry it.
    pub fn owner(&self) -> &[u8] {
        &self.owner
    }

    /// The wallet address: base64url of SHA-256 of the owner.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Signs `message` with RSA-PSS-SHA256 (MGF1-SHA256, 32-byte random salt): 512 bytes.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwkError> {
        let mut signature = vec![0; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &ring::signature::RSA_PSS_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| JwkError::Sign)?;
        Ok(signature)
    }
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    // `start` is at most `bytes.len()`, so the range is in bounds.
    &bytes[start..]
}

fn significant_bits(bytes: &[u8]) -> usize {
    let trimmed = trim_leading_zeros(bytes);
    match trimmed.first() {
        Some(first) => trimmed.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// The address of an owner: base64url of SHA-256 of its bytes.
pub fn address_of(owner: &[u8]) -> String {
    b64url::encode(Sha256::digest(owner))
}

/// Verifies an Arweave RSA-PSS-SHA256 signature (exponent 65537, any salt length) of `message` by `owner`.
pub fn verify(owner: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let bits = u32::try_from(owner.len() * 8).map_err(|_| SignatureError::BadOwner)?;
    let n = BoxedUint::from_be_slice(owner, bits).map_err(|_| SignatureError::BadOwner)?;
    let public = rsa::PublicKey::new(n, BoxedUint::from(PUBLIC_EXPONENT))
        .map_err(|_| SignatureError::BadOwner)?;
    let expected = public.size();
    if signature.len() != expected {
        return Err(SignatureError::BadLength {
            expected,
            actual: signature.len(),
        });
    }
    let signature =
        rsa::pss::Signature::try_from(signature).map_err(|_| SignatureError::Mismatch)?;
    rsa::pss::VerifyingKey::<rsa::sha2::Sha256>::new_with_auto_salt_len(public)
        .verify(message, &signature)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::test_wallets;

    #[test]
    fn loads_an_arweave_js_keyfile_and_derives_owner_and_address() {
        let wallet = test_wallets::a();
        let json: serde_json::Value = serde_json::from_slice(test_wallets::A_JSON).unwrap();
        assert_eq!(wallet.owner().len(), OWNER_LEN);
        assert_eq!(b64url::encode(wallet.owner()), json["n"].as_str().unwrap());
        assert_eq!(wallet.address(), test_wallets::A_ADDRESS);
        assert_eq!(wallet.address(), address_of(wallet.owner()));
        assert_eq!(test_wallets::b().address(), test_wallets::B_ADDRESS);
    }

    #[test]
    fn signatures_verify_and_fail_on_any_change() {
        let wallet = test_wallets::a();
        let signature = wallet.sign(b"a message").unwrap();
        assert_eq!(signature.len(), OWNER_LEN);
        verify(wallet.owner(), b"a message", &signature).unwrap();
        assert_eq!(
            verify(wallet.owner(), b"a massage", &signature),
            Err(SignatureError::Mismatch)
        );
        let mut flipped = signature.clone();
        flipped[100] ^= 1;
        assert_eq!(
            verify(wallet.owner(), b"a message", &flipped),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(test_wallets::b().owner(), b"a message", &signature),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(wallet.owner(), b"a message", &signature[1..]),
            Err(SignatureError::BadLength { .. })
        ));
    }

    #[test]
    fn verifies_a_signature_with_the_largest_salt_as_arweave_js_makes() {
        // Made by tests/js/sign-message.mjs (arweave-js 1.15.7, node crypto, salt length = maximum) with
        // test wallet A over the message "zipIQ".
        let signature = b64url::decode(test_wallets::A_SIGNATURE_OF_ZIPIQ).unwrap();
        verify(test_wallets::a().owner(), b"zipIQ", &signature).unwrap();
        assert_eq!(
            verify(test_wallets::a().owner(), b"zipIQ!", &signature),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rejects_owners_that_are_not_moduli() {
        assert_eq!(
            verify(&[0xff; 10], b"m", &[0; 10]),
            Err(SignatureError::BadOwner)
        );
        assert_eq!(verify(&[], b"m", &[]), Err(SignatureError::BadOwner));
        // Even numbers are not RSA moduli.
        let mut even = vec![0xff; OWNER_LEN];
        even[OWNER_LEN - 1] = 0xfe;
        assert_eq!(
            verify(&even, b"m", &[0; OWNER_LEN]),
            Err(SignatureError::BadOwner)
        );
    }

    #[test]
    fn refuses_keys_that_are_not_arweave_wallets() {
        let mut json: serde_json::Value = serde_json::from_slice(test_wallets::A_JSON).unwrap();
        json["e"] = "Aw".into();
        assert!(matches!(
            Jwk::from_json(json.to_string().as_bytes()),
            Err(JwkError::Exponent)
        ));
        let mut json: serde_json::Value = serde_json::from_slice(test_wallets::A_JSON).unwrap();
        json["kty"] = "EC".into();
        assert!(matches!(
            Jwk::from_json(json.to_string().as_bytes()),
            Err(JwkError::NotRsa(_))
        ));
        let mut json: serde_json::Value = serde_json::from_slice(test_wallets::A_JSON).unwrap();
        json["n"] = b64url::encode([0xc5; 256]).into();
        assert!(matches!(
            Jwk::from_json(json.to_string().as_bytes()),
            Err(JwkError::ModulusSize(2048))
        ));
        // Components of another key: *ring* sees p·q ≠ n; a wrong CRT exponent only shows when signing, which
        // the self-test does at load time.
        let other: serde_json::Value = serde_json::from_slice(test_wallets::B_JSON).unwrap();
        for field in ["q", "dp", "dq"] {
            let mut json: serde_json::Value = serde_json::from_slice(test_wallets::A_JSON).unwrap();
            json[field] = other[field].clone();
            assert!(
                matches!(
                    Jwk::from_json(json.to_string().as_bytes()),
                    Err(JwkError::Rejected(_))
                ),
                "{field} of another key"
            );
        }
        let mut json: serde_json::Value = serde_json::from_slice(test_wallets::A_JSON).unwrap();
        json["p"] = "not base64!".into();
        assert!(matches!(
            Jwk::from_json(json.to_string().as_bytes()),
            Err(JwkError::Field("p"))
        ));
        assert!(matches!(Jwk::from_json(b"{"), Err(JwkError::Json(_))));
    }

    #[test]
    fn debug_output_shows_the_address_and_no_key() {
        let wallet = test_wallets::a();
        let text = format!("{wallet:?}");
        assert!(text.contains(test_wallets::A_ADDRESS));
        let json: serde_json::Value = serde_json::from_slice(test_wallets::A_JSON).unwrap();
        assert!(!text.contains(&json["d"].as_str().unwrap()[..16]));
    }

    #[test]
    fn a_generated_key_signs_reloads_and_verifies() {
        let wallet = Jwk::generate().unwrap();
        assert_eq!(wallet.owner().len(), OWNER_LEN);
        let reloaded = Jwk::from_json(wallet.to_json().as_bytes()).unwrap();
        assert_eq!(reloaded.address(), wallet.address());
        let signature = reloaded.sign(b"new wallet").unwrap();
        verify(wallet.owner(), b"new wallet", &signature).unwrap();
    }
}
