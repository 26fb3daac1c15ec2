//! ANS-104 data items and bundles, byte for byte as arbundles writes and reads them.
//!
//! A data item is `signature type (u16 LE) ‖ signature ‖ owner ‖ target? ‖ anchor? ‖ tag count (u64 LE) ‖
//! tag bytes length (u64 LE) ‖ Avro tags ‖ data`; optional fields have a presence byte (0 or 1). Its signature
//! covers `deepHash(["dataitem", "1", <signature type in decimal>, owner, target, anchor, <raw Avro tag bytes>,
//! data])` (arbundles `ar-data-base`; the ANS-104 text says otherwise, implementations decide), and its id is
//! SHA-256 of the signature. zipIQ signs with Arweave keys (type 1, 512-byte owner and signature) and parses every
//! type arbundles knows, verifying type 1 only.
//!
//! A bundle is `item count (32 bytes LE) ‖ (item size (32 bytes LE) ‖ item id)* ‖ items`, posted as the data of
//! an Arweave transaction tagged `Bundle-Format: binary`, `Bundle-Version: 2.0.0`.
//!
//! Signing again gives a different item (random anchor, random PSS salt): store the signed bytes before the first
//! upload and re-send those. Parsers take bytes from the network: they check every length and never panic.

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::archive::avro_tags::{self, Tag, TagError};
use crate::archive::b64url;
use crate::archive::deephash::{self, Chunk, DeepHash};
use crate::archive::jwk::{self, Jwk, JwkError, SignatureError};

/// Signature type of Arweave (RSA-4096 PSS) signers.
pub const SIGNATURE_TYPE_ARWEAVE: u16 = 1;
/// Bytes of a target or an anchor when present.
pub const TARGET_LEN: usize = 32;
/// Bytes of a target or an anchor when present.
pub const ANCHOR_LEN: usize = 32;
/// The tags that make an Arweave transaction's data an ANS-104 bundle.
pub const BUNDLE_TAGS: [(&str, &str); 2] =
    [("Bundle-Format", "binary"), ("Bundle-Version", "2.0.0")];

/// Signature and owner lengths of the signature types arbundles 0.11 knows (its `SIG_CONFIG`).
fn lengths(signature_type: u16) -> Option<(usize, usize)> {
    Some(match signature_type {
        1 => (512, 512),   // Arweave
        2 => (64, 32),     // ED25519
        3 => (65, 65),     // Ethereum
        4 => (64, 32),     // Solana
        5 => (64, 32),     // InjectedAptos
        6 => (2052, 1025), // MultiAptos
        7 => (65, 42),     // TypedEthereum
        _ => return None,
    })
}

/// Why bytes are not a data item, or why an item cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DataItemError {
    /// The bytes end inside the named part.
    #[error("the data item ends inside its {0}")]
    Truncated(&'static str),
    /// The signature type is none ANS-104 defines.
    #[error("unknown signature type {0}")]
    UnknownSignatureType(u16),
    /// A target or anchor presence byte is neither 0 nor 1.
    #[error("the {field} presence byte is {value}; only 0 and 1 are allowed")]
    BadPresenceByte {
        /// Which one: "target" or "anchor".
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    #[error(
        "the header says {announced} bytes of tags, at most {} allowed",
        avro_tags::MAX_ENCODED_BYTES
    )]
    /// The header announces more tag bytes than ANS-104 allows.
    TagBytesTooLong {
        /// The announced size.
        announced: u64,
    },
    /// The tag bytes do not hold as many tags as the header says.
    #[error("the header says {announced} tags but the tag bytes hold {decoded}")]
    TagCountMismatch {
        /// The count in the header.
        announced: u64,
        /// The count decoded.
        decoded: usize,
    },
    /// The tags break ANS-104's limits or encoding.
    #[error("tags: {0}")]
    Tags(#[from] TagError),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(#[from] JwkError),
}

/// Why a data item's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The item is signed with a key type other than Arweave's (type 1).
    #[error("signature type {0} cannot be verified here (only Arweave, type 1)")]
    UnsupportedSignatureType(u16),
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A parsed (or freshly signed) data item: its bytes and where each field lies in them. [`DataItem::parse`], the
/// only way to make one, checks every offset against the bytes, so the accessors' slicing cannot panic.
#[derive(Clone)]
pub struct DataItem {
    raw: Bytes,
    signature_type: u16,
    signature_len: usize,
    owner_len: usize,
    target: Option<usize>,
    anchor: Option<usize>,
    tags_start: usize,
    tags_len: usize,
    tags: Vec<Tag>,
    data_start: usize,
}

impl std::fmt::Debug for DataItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataItem")
            .field("id", &self.id_b64url())
            .field("signature_type", &self.signature_type)
            .field("tags", &self.tags)
            .field("data_len", &self.data_len())
            .finish_non_exhaustive()
    }
}

fn le_u64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DataItemError> {
        let end = self
            .pos
            .checked_add(len)
            .ok_or(DataItemError::Truncated(field))?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(DataItemError::Truncated(field))?;
        self.pos = end;
        Ok(out)
    }

    /// An optional 32-byte field: its offset when present.
    fn optional(&mut self, field: &'static str) -> Result<Option<usize>, DataItemError> {
        match self.take(1, field)? {
            [0] => Ok(None),
            [1] => {
                let start = self.pos;
                self.take(32, field)?;
                Ok(Some(start))
            }
            [value, ..] => Err(DataItemError::BadPresenceByte {
                field,
                value: *value,
            }),
            [] => Err(DataItemError::Truncated(field)),
        }
    }
}

impl DataItem {
    /// Parses a data item, checking its structure and tags (not its signature: see [`DataItem::verify`]).
    pub fn parse(raw: impl Into<Bytes>) -> Result<DataItem, DataItemError> {
        let raw = raw.into();
        let mut cursor = Cursor {
            bytes: &raw,
            pos: 0,
        };
        let kind = cursor.take(2, "signature type")?;
        // `take(2)` gave exactly two bytes.
        let signature_type = u16::from_le_bytes([kind[0], kind[1]]);
        let (signature_len, owner_len) =
            lengths(signature_type).ok_or(DataItemError::UnknownSignatureType(signature_type))?;
        cursor.take(signature_len, "signature")?;
        cursor.take(owner_len, "owner")?;
        let target = cursor.optional("target")?;
        let anchor = cursor.optional("anchor")?;
        let tag_count = le_u64(cursor.take(8, "tag count")?);
        let tags_len = le_u64(cursor.take(8, "tag bytes length")?);
        if tags_len > avro_tags::MAX_ENCODED_BYTES as u64 {
            return Err(DataItemError::TagBytesTooLong {
                announced: tags_len,
            });
        }
        // At most MAX_ENCODED_BYTES, checked just above.
        let tags_len = tags_len as usize;
        let tags_start = cursor.pos;
        let tags = avro_tags::decode(cursor.take(tags_len, "tags")?)?;
        if tags.len() as u64 != tag_count {
            return Err(DataItemError::TagCountMismatch {
                announced: tag_count,
                decoded: tags.len(),
            });
        }
        let data_start = cursor.pos;
        Ok(DataItem {
            raw,
            signature_type,
            signature_len,
            owner_len,
            target,
            anchor,
            tags_start,
            tags_len,
            tags,
            data_start,
        })
    }

    /// The item's bytes, as signed.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// The item's bytes, as signed.
    pub fn into_bytes(self) -> Bytes {
        self.raw
    }

    /// Size of the whole item in bytes.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Always false: an item holds at least its header.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The signature type (1: Arweave).
    pub fn signature_type(&self) -> u16 {
        self.signature_type
    }

    /// The signature's bytes.
    pub fn signature(&self) -> &[u8] {
        &self.raw[2..2 + self.signature_len]
    }

    /// The owner's public key (for type 1 the RSA modulus).
    pub fn owner(&self) -> &[u8] {
        let start = 2 + self.signature_len;
        &self.raw[start..start + self.owner_len]
    }

    /// The Arweave address of the owner (base64url of SHA-256 of the owner), meaningful for type 1.
    pub fn owner_address(&self) -> String {
        jwk::address_of(self.owner())
    }

    /// The target address, if any.
    pub fn target(&self) -> Option<&[u8]> {
        self.target
            .map(|start| &self.raw[start..start + TARGET_LEN])
    }

    /// The anchor, if any.
    pub fn anchor(&self) -> Option<&[u8]> {
        self.anchor
            .map(|start| &self.raw[start..start + ANCHOR_LEN])
    }

    /// The tags, in order.
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    /// The value of the first tag called `name`.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|tag| tag.name == name)
            .map(|tag| tag.value.as_str())
    }

    /// The tags as signed: their Avro bytes.
    pub fn raw_tags(&self) -> &[u8] {
        &self.raw[self.tags_start..self.tags_start + self.tags_len]
    }

    /// The data, sharing the item's buffer.
    pub fn data(&self) -> Bytes {
        self.raw.slice(self.data_start..)
    }

    /// Size of the data in bytes.
    pub fn data_len(&self) -> usize {
        self.raw.len() - self.data_start
    }

    /// The id: SHA-256 of the signature.
    pub fn id(&self) -> [u8; 32] {
        Sha256::digest(self.signature()).into()
    }

    /// The id as the gateways and bundlers write it.
    pub fn id_b64url(&self) -> String {
        b64url::encode(self.id())
    }

    /// The message the signature covers.
    pub fn signature_message(&self) -> DeepHash {
        signature_message(
            self.signature_type,
            self.owner(),
            self.target().unwrap_or_default(),
            self.anchor().unwrap_or_default(),
            self.raw_tags(),
            &self.raw[self.data_start..],
        )
    }

    /// Checks the signature (Arweave items only).
    pub fn verify(&self) -> Result<(), VerifyError> {
        if self.signature_type != SIGNATURE_TYPE_ARWEAVE {
            return Err(VerifyError::UnsupportedSignatureType(self.signature_type));
        }
        jwk::verify(self.owner(), &self.signature_message(), self.signature())?;
        Ok(())
    }
}

fn signature_message(
    signature_type: u16,
    owner: &[u8],
    target: &[u8],
    anchor: &[u8],
    raw_tags: &[u8],
    data: &[u8],
) -> DeepHash {
    let kind = signature_type.to_string();
    deephash::deep_hash(&Chunk::List(vec![
        Chunk::Blob(b"dataitem"),
        Chunk::Blob(b"1"),
        Chunk::Blob(kind.as_bytes()),
        Chunk::Blob(owner),
        Chunk::Blob(target),
        Chunk::Blob(anchor),
        Chunk::Blob(raw_tags),
        Chunk::Blob(data),
    ]))
}

/// A data item to sign with an Arweave wallet. By default it has a random 32-byte anchor and no target.
#[derive(Debug, Clone)]
pub struct DataItemBuilder {
    data: Bytes,
    tags: Vec<Tag>,
    target: Option<[u8; TARGET_LEN]>,
    anchor: Option<[u8; ANCHOR_LEN]>,
}

impl DataItemBuilder {
    /// An item carrying `data`.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            tags: Vec::new(),
            target: None,
            anchor: Some(rand::random()),
        }
    }

    /// Adds a tag (checked against ANS-104's limits when signing).
    pub fn tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push(Tag::new(name, value));
        self
    }

    /// Adds tags, in order (checked when signing).
    pub fn tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags.extend(tags);
        self
    }

    /// The address (32 bytes) the item is addressed to.
    pub fn target(mut self, target: Option<[u8; TARGET_LEN]>) -> Self {
        self.target = target;
        self
    }

    /// Replaces the random anchor (`None`: no anchor).
    pub fn anchor(mut self, anchor: Option<[u8; ANCHOR_LEN]>) -> Self {
        self.anchor = anchor;
        self
    }

    /// Signs with `wallet` and lays the item out in one buffer.
    pub fn sign(self, wallet: &Jwk) -> Result<DataItem, DataItemError> {
        let raw_tags = avro_tags::encode(&self.tags)?;
        let owner = wallet.owner();
        let target = self.target.as_ref().map(|t| t.as_slice());
        let anchor = self.anchor.as_ref().map(|a| a.as_slice());
        let message = signature_message(
            SIGNATURE_TYPE_ARWEAVE,
            owner,
            target.unwrap_or_default(),
            anchor.unwrap_or_default(),
            &raw_tags,
            &self.data,
        );
        let signature = wallet.sign(&message)?;
        let len = 2
            + signature.len()
            + owner.len()
            + 1
            + target.map_or(0, <[u8]>::len)
            + 1
            + anchor.map_or(0, <[u8]>::len)
            + 16
            + raw_tags.len()
            + self.data.len();
        let mut out = BytesMut::with_capacity(len);
        out.put_u16_le(SIGNATURE_TYPE_ARWEAVE);
        out.put_slice(&signature);
        out.put_slice(owner);
        for field in [target, anchor] {
            match field {
                Some(bytes) => {
                    out.put_u8(1);
                    out.put_slice(bytes);
                }
                None => out.put_u8(0),
            }
        }
        out.put_u64_le(self.tags.len() as u64);
        out.put_u64_le(raw_tags.len() as u64);
        out.put_slice(&raw_tags);
        out.put_slice(&self.data);
        DataItem::parse(out.freeze())
    }
}

/// Why bytes are not a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bytes end inside the named part.
    #[error("the bundle ends inside its {0}")]
    Truncated(&'static str),
    /// A 32-byte header number does not fit in 64 bits.
    #[error("a 32-byte number in the bundle header does not fit in 64 bits")]
    NumberTooLarge,
    /// The header announces more items than the bundle's bytes can hold.
    #[error("the bundle announces {count} items, more than its {len} bytes can hold")]
    TooManyItems {
        /// The announced count.
        count: u64,
        /// The bundle's size in bytes.
        len: usize,
    },
    /// An item is not a valid data item.
    #[error("item {index}: {source}")]
    Item {
        /// The item's position.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: DataItemError,
    },
    /// The id in the header is not that of the item.
    #[error("item {index}: the header's id is not the id of the item's signature")]
    IdMismatch {
        /// The item's position.
        index: usize,
    },
    /// Bytes follow the last item.
    #[error("{0} bytes after the last item")]
    TrailingBytes(usize),
}

fn le_u256(bytes: &[u8]) -> Result<u64, BundleError> {
    let (low, high) = bytes.split_at(bytes.len().min(8));
    if high.iter().any(|&b| b != 0) {
        return Err(BundleError::NumberTooLarge);
    }
    Ok(le_u64(low))
}

fn put_le_u256(out: &mut BytesMut, n: u64) {
    out.put_u64_le(n);
    out.put_bytes(0, 24);
}

/// Lays `items` out as an ANS-104 binary bundle.
pub fn bundle(items: &[DataItem]) -> Bytes {
    let len = 32 + 64 * items.len() + items.iter().map(DataItem::len).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    put_le_u256(&mut out, items.len() as u64);
    for item in items {
        put_le_u256(&mut out, item.len() as u64);
        out.put_slice(&item.id());
    }
    for item in items {
        out.put_slice(item.as_bytes());
    }
    out.freeze()
}

/// Parses a binary bundle into its items (sharing its buffer), checking that each header id is its item's id.
/// Signatures are not verified here.
pub fn parse_bundle(raw: impl Into<Bytes>) -> Result<Vec<DataItem>, BundleError> {
    let raw = raw.into();
    let count_bytes = raw.get(..32).ok_or(BundleError::Truncated("item count"))?;
    let count = le_u256(count_bytes)?;
    let headers_len = count
        .checked_mul(64)
        .and_then(|n| n.checked_add(32))
        .filter(|&n| n <= raw.len() as u64)
        .ok_or(BundleError::TooManyItems {
            count,
            len: raw.len(),
        })?;
    // At most raw.len(), checked just above.
    let mut offset = headers_len as usize;
    let mut items = Vec::new();
    // 32 ≤ offset ≤ raw.len(): checked above.
    for (index, header) in raw[32..offset].chunks_exact(64).enumerate() {
        let (size, id) = header.split_at(32);
        let size = le_u256(size)?;
        let end = u64::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(size))
            .filter(|&end| end <= raw.len() as u64)
            .ok_or(BundleError::Truncated("items"))?;
        // At most raw.len(), checked just above.
        let end = end as usize;
        let item = DataItem::parse(raw.slice(offset..end))
            .map_err(|source| BundleError::Item { index, source })?;
        if item.id() != id {
            return Err(BundleError::IdMismatch { index });
        }
        items.push(item);
        offset = end;
    }
    if offset != raw.len() {
        return Err(BundleError::TrailingBytes(raw.len() - offset));
    }
    Ok(items)
}

/// The tags an Arweave transaction carrying a bundle needs.
pub fn bundle_tags() -> Vec<Tag> {
    BUNDLE_TAGS
        .iter()
        .map(|(name, value)| Tag::new(*name, *value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::test_wallets;

    fn item(data: &'static [u8]) -> DataItem {
        DataItemBuilder::new(data)
            .tag("App-Name", "zipIQ")
            .tag("Content-Type", "video/mp4")
            .sign(test_wallets::a())
            .unwrap()
    }

    #[test]
    fn a_signed_item_round_trips_and_verifies() {
        let signed = item(b"segment bytes");
        let parsed = DataItem::parse(signed.as_bytes().clone()).unwrap();
        parsed.verify().unwrap();
        assert_eq!(parsed.signature_type(), SIGNATURE_TYPE_ARWEAVE);
        assert_eq!(parsed.owner(), test_wallets::a().owner());
        assert_eq!(parsed.owner_address(), test_wallets::A_ADDRESS);
        assert_eq!(parsed.target(), None);
        assert_eq!(parsed.anchor().map(<[u8]>::len), Some(32));
        assert_eq!(parsed.tag("App-Name"), Some("zipIQ"));
        assert_eq!(parsed.tags().len(), 2);
        assert_eq!(&parsed.data()[..], b"segment bytes");
        assert_eq!(parsed.id(), signed.id());
        assert_eq!(parsed.id_b64url().len(), 43);
    }

    #[test]
    fn the_layout_is_the_one_arbundles_writes() {
        let signed = DataItemBuilder::new(&b"xyz"[..])
            .tag("a", "b")
            .target(Some([7; 32]))
            .anchor(Some([9; 32]))
            .sign(test_wallets::a())
            .unwrap();
        let raw = signed.as_bytes();
        assert_eq!(&raw[..2], &[1, 0]);
        let owner_end = 2 + 512 + 512;
        assert_eq!(&raw[2 + 512..owner_end], test_wallets::a().owner());
        assert_eq!(raw[owner_end], 1);
        assert_eq!(&raw[owner_end + 1..owner_end + 33], &[7; 32]);
        assert_eq!(raw[owner_end + 33], 1);
        assert_eq!(&raw[owner_end + 34..owner_end + 66], &[9; 32]);
        let tags = owner_end + 66;
        assert_eq!(&raw[tags..tags + 8], &1u64.to_le_bytes());
        assert_eq!(&raw[tags + 8..tags + 16], &6u64.to_le_bytes());
        assert_eq!(&raw[tags + 16..tags + 22], &[2, 2, b'a', 2, b'b', 0]);
        assert_eq!(&raw[tags + 22..], b"xyz");
        signed.verify().unwrap();
    }

    #[test]
    fn items_without_tags_anchor_or_data_verify() {
        let signed = DataItemBuilder::new(Bytes::new())
            .anchor(None)
            .sign(test_wallets::b())
            .unwrap();
        assert_eq!(signed.len(), 2 + 512 + 512 + 1 + 1 + 16);
        assert!(signed.raw_tags().is_empty());
        signed.verify().unwrap();
    }

    #[test]
    fn signing_twice_makes_two_different_items() {
        let builder = DataItemBuilder::new(&b"same"[..]).tag("a", "b");
        let one = builder.clone().sign(test_wallets::a()).unwrap();
        let two = builder.sign(test_wallets::a()).unwrap();
        assert_ne!(one.id(), two.id());
    }

    #[test]
    fn any_changed_byte_fails_verification() {
        let signed = item(b"tamper with me");
        let raw = signed.as_bytes();
        let owner_end = 2 + 512 + 512;
        // A byte in: the signature, the owner, the anchor, a tag, the data.
        for at in [10, 600, owner_end + 5, raw.len() - 20, raw.len() - 1] {
            let mut bytes = raw.to_vec();
            bytes[at] ^= 0x01;
            // A changed tag byte may no longer parse at all: that is a refusal too.
            if let Ok(parsed) = DataItem::parse(bytes) {
                assert!(
                    parsed.verify().is_err(),
                    "byte {at} changed and still verifies"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let signed = DataItemBuilder::new(Bytes::new())
            .tag("App-Name", "zipIQ")
            .target(Some([1; 32]))
            .sign(test_wallets::a())
            .unwrap();
        let raw = signed.as_bytes();
        for len in 0..raw.len() {
            assert!(
                DataItem::parse(raw.slice(..len)).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let signed = item(b"x");
        let mut bytes = signed.as_bytes().to_vec();
        bytes[0] = 99;
        assert!(matches!(
            DataItem::parse(bytes),
            Err(DataItemError::UnknownSignatureType(99))
        ));
        let owner_end = 2 + 512 + 512;
        let mut bytes = signed.as_bytes().to_vec();
        bytes[owner_end] = 2;
        assert!(matches!(
            DataItem::parse(bytes),
            Err(DataItemError::BadPresenceByte {
                field: "target",
                value: 2
            })
        ));
        let tags = owner_end + 1 + 33;
        let mut bytes = signed.as_bytes().to_vec();
        bytes[tags] = 3;
        assert!(matches!(
            DataItem::parse(bytes),
            Err(DataItemError::TagCountMismatch {
                announced: 3,
                decoded: 2
            })
        ));
        let mut bytes = signed.as_bytes().to_vec();
        bytes[tags + 8..tags + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            DataItem::parse(bytes),
            Err(DataItemError::TagBytesTooLong { .. })
        ));
    }

    #[test]
    fn other_signature_types_parse_but_do_not_verify_here() {
        // An ED25519 (type 2) layout: 64-byte signature, 32-byte owner, no target, no anchor, no tags.
        let mut bytes = vec![2, 0];
        bytes.extend_from_slice(&[5; 64 + 32]);
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(b"data");
        let parsed = DataItem::parse(bytes).unwrap();
        assert_eq!(parsed.owner().len(), 32);
        assert_eq!(&parsed.data()[..], b"data");
        assert_eq!(
            parsed.verify(),
            Err(VerifyError::UnsupportedSignatureType(2))
        );
    }

    #[test]
    fn a_bundle_round_trips() {
        let items = vec![item(b"one"), item(b""), item(b"three")];
        let raw = bundle(&items);
        assert_eq!(&raw[..8], &3u64.to_le_bytes());
        let parsed = parse_bundle(raw).unwrap();
        assert_eq!(parsed.len(), 3);
        for (a, b) in items.iter().zip(&parsed) {
            assert_eq!(a.as_bytes(), b.as_bytes());
            b.verify().unwrap();
        }
        assert!(parse_bundle(bundle(&[])).unwrap().is_empty());
    }

    #[test]
    fn bad_bundles_are_refused_without_panics() {
        let items = vec![item(b"one"), item(b"two")];
        let raw = bundle(&items);
        for len in 0..raw.len() {
            assert!(
                parse_bundle(raw.slice(..len)).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
        let mut trailing = raw.to_vec();
        trailing.push(0);
        assert!(matches!(
            parse_bundle(trailing),
            Err(BundleError::TrailingBytes(1))
        ));
        let mut huge = raw.to_vec();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse_bundle(huge),
            Err(BundleError::TooManyItems { .. })
        ));
        let mut wide = raw.to_vec();
        wide[31] = 1;
        assert!(matches!(
            parse_bundle(wide),
            Err(BundleError::NumberTooLarge)
        ));
        let mut wrong_id = raw.to_vec();
        wrong_id[32 + 32] ^= 1;
        assert!(matches!(
            parse_bundle(wrong_id),
            Err(BundleError::IdMismatch { index: 0 })
        ));
    }

    #[test]
    fn mutated_and_truncated_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(104);
        let items = vec![item(b"one"), item(b"two")];
        let whole = bundle(&items).to_vec();
        let single = items[0].as_bytes().to_vec();
        for round in 0..400 {
            for original in [&whole, &single] {
                let mut bytes = original.clone();
                for _ in 0..rng.random_range(1..6) {
                    // Mostly in the headers, where the lengths and counts are.
                    let limit = if rng.random_bool(0.8) {
                        bytes.len().min(1200)
                    } else {
                        bytes.len()
                    };
                    let at = rng.random_range(0..limit);
                    bytes[at] = rng.random();
                }
                if rng.random_bool(0.3) {
                    bytes.truncate(rng.random_range(0..=bytes.len()));
                }
                let _ = parse_bundle(bytes.clone());
                if let Ok(parsed) = DataItem::parse(bytes) {
                    // Verifying is slow in debug builds: sample it.
                    if round % 20 == 0 {
                        let _ = parsed.verify();
                    }
                }
            }
        }
    }

    #[test]
    fn bundle_tags_are_the_ans104_ones() {
        assert_eq!(
            bundle_tags(),
            vec![
                Tag::new("Bundle-Format", "binary"),
                Tag::new("Bundle-Version", "2.0.0")
            ]
        );
    }
}
