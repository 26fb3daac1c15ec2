//! Format-2 Arweave transactions, as arweave-js makes them: build, sign, verify, and their JSON for `POST /tx`, with
//! the chunks of their data for `POST /chunk`.
//!
//! The signature covers `deepHash(["2", owner, target, quantity, reward, last_tx, [[tag name, tag value]...],
//! data_size, data_root])` (arweave-js `getSignatureData`, numbers as decimal strings), and the id is SHA-256 of the
//! signature. The data itself is not signed: its merkle root is (see [`crate::archive::merkle`]). Parsing a
//! transaction's JSON takes outside text and never panics.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::avro_tags::Tag;
use crate::archive::b64url;
use crate::archive::deephash::{self, Chunk, DeepHash};
use crate::archive::jwk::{self, Jwk, JwkError, SignatureError};
use crate::archive::merkle::DataTree;

/// Most bytes of tag names and values together in one transaction (the Arweave node's limit).
pub const MAX_TAG_BYTES: usize = 2048;

/// Why a transaction cannot be made, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The JSON's `format` is not 2.
    #[error("transaction format {0}; only format 2 is supported")]
    Format(u8),
    /// A tag has an empty name or value.
    #[error("tag {index} has an empty name or value")]
    EmptyTag {
        /// The tag's position.
        index: usize,
    },
    /// The tags are larger than Arweave allows.
    #[error("the tags hold {len} bytes, at most {MAX_TAG_BYTES} allowed")]
    TagsTooLong {
        /// Their size in bytes.
        len: usize,
    },
    /// A tag's name or value is not UTF-8.
    #[error("tag {index} is not UTF-8")]
    TagNotUtf8 {
        /// The tag's position.
        index: usize,
    },
    /// The named JSON field is not base64url.
    #[error("the field {0:?} is not base64url")]
    Base64(&'static str),
    /// The named JSON field is not a decimal number.
    #[error("the field {0:?} is not a decimal number")]
    Number(&'static str),
    /// A binary JSON field has the wrong length.
    #[error("the field {field:?} has {len} bytes; expected {expected}")]
    FieldLength {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The length it must have, in words.
        expected: &'static str,
    },
    /// The id is not SHA-256 of the signature.
    #[error("the id is not SHA-256 of the signature")]
    IdMismatch,
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(#[from] JwkError),
}

/// A signed format-2 transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The transaction id: SHA-256 of the signature.
    pub id: [u8; 32],
    /// The anchor: a recent block hash or the owner's last transaction id (`GET /tx_anchor`).
    pub last_tx: Vec<u8>,
    /// The signer's RSA modulus (n), big-endian.
    pub owner: Vec<u8>,
    /// The tags, in order.
    pub tags: Vec<Tag>,
    /// The address tokens go to, when `quantity` is not zero.
    pub target: Option<[u8; 32]>,
    /// Winston sent to `target`.
    pub quantity: u128,
    /// Size of the data in bytes (0: none).
    pub data_size: u64,
    /// The merkle root of the data; `None` for a transaction without data.
    pub data_root: Option<[u8; 32]>,
    /// Winston paid to the miners (`GET /price/{data_size}` gives it).
    pub reward: u128,
    /// The RSA-PSS signature over the transaction's deep hash.
    pub signature: Vec<u8>,
}

/// A transaction to sign.
#[derive(Debug, Clone, Default)]
pub struct TransactionBuilder {
    last_tx: Vec<u8>,
    tags: Vec<Tag>,
    target: Option<[u8; 32]>,
    quantity: u128,
    reward: u128,
    data_size: u64,
    data_root: Option<[u8; 32]>,
}

impl TransactionBuilder {
    /// A transaction without data, with no tags, sending nothing, with no reward yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Carries the data `tree` was built from (`None`: no data).
    pub fn data(mut self, tree: Option<&DataTree>) -> Self {
        self.data_size = tree.map_or(0, |t| t.data_size);
        self.data_root = tree.map(|t| t.data_root);
        self
    }

    /// Sets the anchor (see [`Transaction::last_tx`]).
    pub fn last_tx(mut self, anchor: Vec<u8>) -> Self {
        self.last_tx = anchor;
        self
    }

    /// Sets the fee paid to the miners, in winston.
    pub fn reward(mut self, winston: u128) -> Self {
        self.reward = winston;
        self
    }

    /// Sends `winston` to the address `target`.
    pub fn transfer(mut self, target: [u8; 32], winston: u128) -> Self {
        self.target = Some(target);
        self.quantity = winston;
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push(Tag::new(name, value));
        self
    }

    /// Adds tags, in order.
    pub fn tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags.extend(tags);
        self
    }

    /// Signs with `wallet`.
    pub fn sign(self, wallet: &Jwk) -> Result<Transaction, TxError> {
        check_tags(&self.tags)?;
        let mut tx = Transaction {
            id: [0; 32],
            last_tx: self.last_tx,
            owner: wallet.owner().to_vec(),
            tags: self.tags,
            target: self.target,
            quantity: self.quantity,
            data_size: self.data_size,
            data_root: self.data_root,
            reward: self.reward,
            signature: Vec::new(),
        };
        tx.signature = wallet.sign(&tx.signature_message())?;
        tx.id = Sha256::digest(&tx.signature).into();
        Ok(tx)
    }
}

fn check_tags(tags: &[Tag]) -> Result<(), TxError> {
    let mut len = 0;
    for (index, tag) in tags.iter().enumerate() {
        if tag.name.is_empty() || tag.value.is_empty() {
            return Err(TxError::EmptyTag { index });
        }
        len += tag.name.len() + tag.value.len();
    }
    if len > MAX_TAG_BYTES {
        return Err(TxError::TagsTooLong { len });
    }
    Ok(())
}

impl Transaction {
    /// The message the signature covers.
    pub fn signature_message(&self) -> DeepHash {
        let quantity = self.quantity.to_string();
        let reward = self.reward.to_string();
        let data_size = self.data_size.to_string();
        let tags = self
            .tags
            .iter()
            .map(|tag| {
                Chunk::List(vec![
                    Chunk::Blob(tag.name.as_bytes()),
                    Chunk::Blob(tag.value.as_bytes()),
                ])
            })
            .collect();
        deephash::deep_hash(&Chunk::List(vec![
            Chunk::Blob(b"2"),
            Chunk::Blob(&self.owner),
            Chunk::Blob(self.target.as_ref().map_or(&[], |t| t.as_slice())),
            Chunk::Blob(quantity.as_bytes()),
            Chunk::Blob(reward.as_bytes()),
            Chunk::Blob(&self.last_tx),
            Chunk::List(tags),
            Chunk::Blob(data_size.as_bytes()),
            Chunk::Blob(self.data_root.as_ref().map_or(&[], |r| r.as_slice())),
        ]))
    }

    /// The id as gateways write it.
    pub fn id_b64url(&self) -> String {
        b64url::encode(self.id)
    }

    /// Checks the id and the signature.
    pub fn verify(&self) -> Result<(), TxError> {
        if <[u8; 32]>::from(Sha256::digest(&self.signature)) != self.id {
            return Err(TxError::IdMismatch);
        }
        jwk::verify(&self.owner, &self.signature_message(), &self.signature)?;
        Ok(())
    }

    /// The JSON for `POST /tx`. `inline_data` puts the data in the body; `None` leaves it for `POST /chunk`.
    pub fn to_json(&self, inline_data: Option<&[u8]>) -> TransactionJson {
        TransactionJson {
            format: 2,
            id: b64url::encode(self.id),
            last_tx: b64url::encode(&self.last_tx),
            owner: b64url::encode(&self.owner),
            tags: self
                .tags
                .iter()
                .map(|tag| TagJson {
                    name: b64url::encode(&tag.name),
                    value: b64url::encode(&tag.value),
                })
                .collect(),
            target: self.target.map(b64url::encode).unwrap_or_default(),
            quantity: self.quantity.to_string(),
            data: inline_data.map(b64url::encode).unwrap_or_default(),
            data_size: self.data_size.to_string(),
            data_root: self.data_root.map(b64url::encode).unwrap_or_default(),
            reward: self.reward.to_string(),
            signature: b64url::encode(&self.signature),
        }
    }

    /// Reads a transaction from a gateway's JSON (`GET /tx/{id}`); the signature is not checked here.
    pub fn from_json(json: &TransactionJson) -> Result<Transaction, TxError> {
        if json.format != 2 {
            return Err(TxError::Format(json.format));
        }
        let bytes = |field: &'static str, text: &str| {
            b64url::decode(text).map_err(|_| TxError::Base64(field))
        };
        let fixed = |field: &'static str, text: &str| -> Result<Option<[u8; 32]>, TxError> {
            if text.is_empty() {
                return Ok(None);
            }
            let decoded = bytes(field, text)?;
            let len = decoded.len();
            decoded
                .try_into()
                .map(Some)
                .map_err(|_| TxError::FieldLength {
                    field,
                    len,
                    expected: "0 or 32",
                })
        };
        let id = fixed("id", &json.id)?.ok_or(TxError::FieldLength {
            field: "id",
            len: 0,
            expected: "32",
        })?;
        let mut tags = Vec::with_capacity(json.tags.len());
        for (index, tag) in json.tags.iter().enumerate() {
            let name = String::from_utf8(bytes("tags", &tag.name)?)
                .map_err(|_| TxError::TagNotUtf8 { index })?;
            let value = String::from_utf8(bytes("tags", &tag.value)?)
                .map_err(|_| TxError::TagNotUtf8 { index })?;
            tags.push(Tag { name, value });
        }
        let number = |field: &'static str, text: &str| -> Result<u128, TxError> {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TxError::Number(field));
            }
            text.parse().map_err(|_| TxError::Number(field))
        };
        let data_size = u64::try_from(number("data_size", &json.data_size)?)
            .map_err(|_| TxError::Number("data_size"))?;
        Ok(Transaction {
            id,
            last_tx: bytes("last_tx", &json.last_tx)?,
            owner: bytes("owner", &json.owner)?,
            tags,
            target: fixed("target", &json.target)?,
            quantity: number("quantity", &json.quantity)?,
            data_size,
            data_root: fixed("data_root", &json.data_root)?,
            reward: number("reward", &json.reward)?,
            signature: bytes("signature", &json.signature)?,
        })
    }
}

/// A transaction as gateways exchange it in JSON: binary fields in base64url, numbers as decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionJson {
    /// Always 2.
    pub format: u8,
    /// [`Transaction::id`].
    pub id: String,
    /// [`Transaction::last_tx`].
    pub last_tx: String,
    /// [`Transaction::owner`].
    pub owner: String,
    /// [`Transaction::tags`].
    pub tags: Vec<TagJson>,
    /// [`Transaction::target`]; empty for none.
    pub target: String,
    /// [`Transaction::quantity`].
    pub quantity: String,
    /// The data inline; empty when it goes up in chunks (`POST /chunk`).
    #[serde(default)]
    pub data: String,
    /// [`Transaction::data_size`].
    pub data_size: String,
    /// [`Transaction::data_root`]; empty for none.
    pub data_root: String,
    /// [`Transaction::reward`].
    pub reward: String,
    /// [`Transaction::signature`].
    pub signature: String,
}

/// A tag in a transaction's JSON: name and value in base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagJson {
    /// The tag's name.
    pub name: String,
    /// The tag's value.
    pub value: String,
}

/// One chunk and its proof, the body of `POST /chunk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkUpload {
    /// The transaction's data root, base64url.
    pub data_root: String,
    /// The transaction's data size, decimal.
    pub data_size: String,
    /// The merkle proof of the chunk, base64url.
    pub data_path: String,
    /// The offset of the chunk's last byte in the data, decimal.
    pub offset: String,
    /// The chunk's bytes, base64url.
    pub chunk: String,
}

/// The body of `POST /chunk` for chunk `index` of `data` (the data `tree` was built from).
pub fn chunk_upload(tree: &DataTree, data: &[u8], index: usize) -> Option<ChunkUpload> {
    let proof = tree.proofs.get(index)?;
    let bytes = tree.chunk_bytes(data, index)?;
    Some(ChunkUpload {
        data_root: b64url::encode(tree.data_root),
        data_size: tree.data_size.to_string(),
        data_path: b64url::encode(&proof.data_path),
        offset: proof.offset.to_string(),
        chunk: b64url::encode(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ans104;
    use crate::archive::merkle;
    use crate::archive::test_wallets;

    fn data_tx(data: &[u8]) -> Transaction {
        let tree = DataTree::new(data);
        TransactionBuilder::new()
            .data(tree.as_ref())
            .last_tx(vec![3; 48])
            .reward(123_456_789)
            .tags(ans104::bundle_tags())
            .tag("App-Name", "zipIQ")
            .sign(test_wallets::a())
            .unwrap()
    }

    #[test]
    fn a_signed_transaction_verifies_and_survives_its_json() {
        let tx = data_tx(&[5; 300_000]);
        tx.verify().unwrap();
        let json = serde_json::to_string(&tx.to_json(None)).unwrap();
        let back: TransactionJson = serde_json::from_str(&json).unwrap();
        let parsed = Transaction::from_json(&back).unwrap();
        assert_eq!(parsed, tx);
        parsed.verify().unwrap();
        assert_eq!(back.data, "");
        assert_eq!(back.data_size, "300000");
        assert_eq!(back.format, 2);
        assert_eq!(back.target, "");
        assert_eq!(back.quantity, "0");
        assert_eq!(back.id.len(), 43);
    }

    #[test]
    fn changing_any_signed_field_breaks_the_signature() {
        let tx = data_tx(b"some data");
        let mut changed = vec![tx.clone(); 6];
        changed[0].reward += 1;
        changed[1].data_size += 1;
        changed[2].tags[0].value.push('x');
        changed[3].last_tx[0] ^= 1;
        changed[4].data_root = Some([0; 32]);
        changed[5].quantity = 1;
        for (index, tx) in changed.into_iter().enumerate() {
            assert!(
                matches!(
                    tx.verify(),
                    Err(TxError::Signature(SignatureError::Mismatch))
                ),
                "change {index}"
            );
        }
        let mut wrong_id = tx;
        wrong_id.id[0] ^= 1;
        assert!(matches!(wrong_id.verify(), Err(TxError::IdMismatch)));
    }

    #[test]
    fn a_transaction_without_data_has_empty_root_and_size_zero() {
        let tx = TransactionBuilder::new()
            .transfer([9; 32], 1000)
            .sign(test_wallets::b())
            .unwrap();
        let json = tx.to_json(None);
        assert_eq!(json.data_root, "");
        assert_eq!(json.data_size, "0");
        assert_eq!(json.quantity, "1000");
        tx.verify().unwrap();
    }

    #[test]
    fn tags_are_checked_against_the_node_limits() {
        let empty = TransactionBuilder::new()
            .tag("a", "")
            .sign(test_wallets::a());
        assert!(matches!(empty, Err(TxError::EmptyTag { index: 0 })));
        let long = TransactionBuilder::new()
            .tag("a", "v".repeat(2048))
            .sign(test_wallets::a());
        assert!(matches!(long, Err(TxError::TagsTooLong { len: 2049 })));
    }

    #[test]
    fn bad_json_is_refused_without_panics() {
        let good = data_tx(b"x").to_json(None);
        type Change = fn(&mut TransactionJson);
        let cases: Vec<(Change, &str)> = vec![
            (|j| j.format = 1, "format"),
            (|j| j.id = "short".into(), "id"),
            (|j| j.owner = "!!".into(), "owner"),
            (|j| j.reward = "-1".into(), "reward"),
            (|j| j.reward = "".into(), "reward"),
            (
                |j| j.data_size = "99999999999999999999999".into(),
                "data_size",
            ),
            (|j| j.data_root = "AAAA".into(), "data_root"),
            (|j| j.tags[0].name = "_w".into(), "tag utf-8"),
        ];
        for (change, what) in cases {
            let mut json = good.clone();
            change(&mut json);
            assert!(Transaction::from_json(&json).is_err(), "{what}");
        }
    }

    #[test]
    fn chunk_uploads_carry_verifiable_proofs() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let tree = DataTree::new(&data).unwrap();
        assert_eq!(tree.chunks.len(), 3);
        for index in 0..tree.chunks.len() {
            let upload = chunk_upload(&tree, &data, index).unwrap();
            assert_eq!(upload.data_size, "700000");
            let chunk = b64url::decode(&upload.chunk).unwrap();
            let path = b64url::decode(&upload.data_path).unwrap();
            let offset: u64 = upload.offset.parse().unwrap();
            merkle::verify_chunk(&tree.data_root, 700_000, offset, &path, &chunk).unwrap();
        }
        assert!(chunk_upload(&tree, &data, 3).is_none());
    }
}
