//! Content addresses of single blocks: the multicodec and multihash codes zipIQ uses, making a CIDv1 for bytes, and
//! checking that a block's bytes hash to its CID.
//!
//! Pure functions, no I/O. Verification never trusts a CID it cannot check: a multihash other than sha2-256 or
//! identity is reported as unsupported, never accepted.

use cid::Cid;
use cid::multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec of raw bytes (a UnixFS leaf in the `unixfs-v1-2025` profile).
pub const RAW: u64 = 0x55;
/// Multicodec of dag-pb (UnixFS files with links, directories).
pub const DAG_PB: u64 = 0x70;
/// Multicodec of dag-cbor (the CAR header; DAGs zipIQ only passes through).
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec of dag-json (DAGs zipIQ only passes through).
pub const DAG_JSON: u64 = 0x0129;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Multihash code of the identity "hash" (the digest is the data itself).
pub const IDENTITY: u64 = 0x00;

/// Why a block does not match its CID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The block's bytes do not hash to its CID.
    #[error("block {0} does not hash to its CID")]
    HashMismatch(Cid),
    /// The CID's hash function is one zipIQ cannot check.
    #[error("block {cid} uses multihash 0x{code:x}, which zipIQ cannot verify")]
    UnsupportedHash {
        /// The block.
        cid: Cid,
        /// The multihash code.
        code: u64,
    },
}

/// The CIDv1 (sha2-256) of `data` under `codec`.
pub fn cid_v1(codec: u64, data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    // A 32-byte digest always fits the 64-byte multihash of `cid::Cid`, so `wrap` cannot fail here.
    let hash =
        Multihash::wrap(SHA2_256, &digest).expect("a sha2-256 digest fits a 64-byte multihash");
    Cid::new_v1(codec, hash)
}

/// Checks that `data` hashes to `cid` (sha2-256 or identity multihashes).
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
    let hash = cid.hash();
    match hash.code() {
        SHA2_256 => {
            let digest = Sha256::digest(data);
            if hash.digest() == digest.as_slice() {
                Ok(())
            } else {
                Err(BlockError::HashMismatch(*cid))
            }
        }
        IDENTITY => {
            if hash.digest() == data {
                Ok(())
            } else {
                Err(BlockError::HashMismatch(*cid))
            }
        }
        code => Err(BlockError::UnsupportedHash { cid: *cid, code }),
    }
}

/// The bytes of an identity-hashed CID (its data is inline), or `None` for any other multihash.
pub fn inline_data(cid: &Cid) -> Option<&[u8]> {
    (cid.hash().code() == IDENTITY).then(|| cid.hash().digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_cid_of_empty_bytes_is_the_well_known_one() {
        // The raw CIDv1 of zero bytes, as every IPFS implementation prints it.
        assert_eq!(
            cid_v1(RAW, b"").to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn verify_accepts_the_right_bytes_and_rejects_others() {
        let cid = cid_v1(RAW, b"segment");
        assert_eq!(verify(&cid, b"segment"), Ok(()));
        assert_eq!(verify(&cid, b"segmenT"), Err(BlockError::HashMismatch(cid)));
    }

    #[test]
    fn verify_refuses_hashes_it_cannot_check() {
        // blake3 (0x1e) with a 32-byte digest of zeros.
        let hash = Multihash::wrap(0x1e, &[0u8; 32]).expect("32 bytes fit");
        let cid = Cid::new_v1(RAW, hash);
        assert!(matches!(
            verify(&cid, b"x"),
            Err(BlockError::UnsupportedHash { code: 0x1e, .. })
        ));
    }

    #[test]
    fn identity_cids_carry_their_data() {
        let hash = Multihash::wrap(IDENTITY, b"hi").expect("2 bytes fit");
        let cid = Cid::new_v1(RAW, hash);
        assert_eq!(inline_data(&cid), Some(&b"hi"[..]));
        assert_eq!(verify(&cid, b"hi"), Ok(()));
        assert_eq!(inline_data(&cid_v1(RAW, b"hi")), None);
    }
}
