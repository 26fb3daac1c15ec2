//! Arweave's deep hash: the SHA-384 digest of nested lists of byte strings that format-2 transactions and ANS-104
//! data items sign (arweave-js `deepHash`, Erlang `ar_deep_hash`).
//!
//! A blob hashes to `SHA384(SHA384("blob" ‖ len) ‖ SHA384(bytes))`, `len` in decimal ASCII. A list of `n` items
//! starts from `SHA384("list" ‖ n)` and folds each item in as `acc = SHA384(acc ‖ deep_hash(item))`.
//! [`BlobHasher`] and [`ListHasher`] compute the same values incrementally, so a large blob is hashed as it
//! streams by and never needs to be in memory whole. Nothing here can fail.

use sha2::{Digest, Sha384};

/// A deep hash value (SHA-384).
pub(crate) type DeepHash = [u8; 48];

/// One value to deep-hash: bytes, a list of values, or the deep hash of a value computed beforehand (a blob
/// hashed with [`BlobHasher`] while it streamed, for instance).
#[derive(Debug, Clone)]
pub(crate) enum Chunk<'a> {
    Blob(&'a [u8]),
    List(Vec<Chunk<'a>>),
    #[cfg(test)]
    Hashed(DeepHash),
}

/// The deep hash of `chunk`.
pub(crate) fn deep_hash(chunk: &Chunk<'_>) -> DeepHash {
    match chunk {
        Chunk::Blob(bytes) => blob(bytes),
        #[cfg(test)]
        Chunk::Hashed(hash) => *hash,
        Chunk::List(items) => {
            let mut list = ListHasher::new(items.len());
            for item in items {
                list.push(&deep_hash(item));
            }
            list.finish()
        }
    }
}

/// The deep hash of one byte string.
pub(crate) fn blob(bytes: &[u8]) -> DeepHash {
    let mut hasher = BlobHasher::new();
    hasher.update(bytes);
    hasher.finish()
}

fn sha384(parts: &[&[u8]]) -> DeepHash {
    let mut sha = Sha384::new();
    for part in parts {
        sha.update(part);
    }
    sha.finalize().into()
}

fn tag_hash(kind: &str, count: u64) -> DeepHash {
    sha384(&[kind.as_bytes(), count.to_string().as_bytes()])
}

/// The deep hash of a blob fed in pieces; its length is only needed at the end.
#[derive(Clone, Default)]
pub(crate) struct BlobHasher {
    sha: Sha384,
    len: u64,
}

impl BlobHasher {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the blob.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes fed so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The blob's deep hash.
    pub(crate) fn finish(self) -> DeepHash {
        let data_hash: DeepHash = self.sha.finalize().into();
        sha384(&[&tag_hash("blob", self.len), &data_hash])
    }
}

/// The deep hash of a list whose item count is known up front, fed one item hash at a time.
#[derive(Clone)]
pub(crate) struct ListHasher {
    acc: DeepHash,
}

impl ListHasher {
    /// Starts a list of `count` items. Feeding a different number of items gives the hash of a different value.
    pub(crate) fn new(count: usize) -> Self {
        Self {
            acc: tag_hash("list", count as u64),
        }
    }

    /// Folds in the deep hash of the next item.
    pub(crate) fn push(&mut self, item: &DeepHash) {
        self.acc = sha384(&[&self.acc, item]);
    }

    /// The list's deep hash.
    pub(crate) fn finish(self) -> DeepHash {
        self.acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed by arweave-js 1.15.7 and checked against arbundles 0.11.2: `node tests/js/deephash-vectors.mjs`.
    const EMPTY_BLOB: &str = "fbf00cc444f5fea9dc3bedf62a13fba8ae87e7445fc910567a23bec4eb82fadb1143c433069314d8362983dc3c2e4a38";
    const HELLO_BLOB: &str = "33ab2407a6c328c0bc1bbe5971f49af5c1908985f83c3d2bd89a9e221dd8b068dc61ce968ba3f9ab12d5361ba3944382";
    const EMPTY_LIST: &str = "a69e7d37fdc7f040a9ec16aae84de24fab4a653dac4de0bd247e36bab9fe45d9289c5a04a893c95285812f5cefc9707a";
    const NESTED: &str = "28c30a0243ea400a058bc38ce48bc2d676e1af4ff5e45773de1688882e9908237536b7a514a985f0444b4f4b2a494660";
    const ONE_MIB_BLOB: &str = "b889a7715fa9bfee9c7d77154a686e51877fcb302abb8e9b0774ab2b35aacf8e98b021168a6410243a550799e3e80170";

    fn pattern(len: usize, mul: usize) -> Vec<u8> {
        (0..len).map(|i| (i * mul % 256) as u8).collect()
    }

    #[test]
    fn blobs_match_arweave_js() {
        assert_eq!(hex::encode(blob(b"")), EMPTY_BLOB);
        assert_eq!(hex::encode(blob(b"hello")), HELLO_BLOB);
        assert_eq!(hex::encode(blob(&pattern(1024 * 1024, 31))), ONE_MIB_BLOB);
    }

    #[test]
    fn lists_match_arweave_js() {
        assert_eq!(hex::encode(deep_hash(&Chunk::List(vec![]))), EMPTY_LIST);
        let bytes = pattern(256, 1);
        let nested = Chunk::List(vec![
            Chunk::Blob(b"dataitem"),
            Chunk::Blob(b"1"),
            Chunk::List(vec![
                Chunk::List(vec![Chunk::Blob(b"a"), Chunk::Blob(b"b")]),
                Chunk::List(vec![]),
            ]),
            Chunk::Blob(&bytes),
        ]);
        assert_eq!(hex::encode(deep_hash(&nested)), NESTED);
    }

    #[test]
    fn streamed_blob_equals_whole_blob() {
        let data = pattern(1024 * 1024, 31);
        let mut hasher = BlobHasher::new();
        for piece in data.chunks(7919) {
            hasher.update(piece);
        }
        assert_eq!(hasher.len(), data.len() as u64);
        assert_eq!(hex::encode(hasher.finish()), ONE_MIB_BLOB);
    }

    #[test]
    fn a_prehashed_item_stands_for_its_value_in_a_list() {
        let bytes = pattern(256, 1);
        let pair = Chunk::List(vec![Chunk::Blob(b"a"), Chunk::Blob(b"b")]);
        let nested = Chunk::List(vec![
            Chunk::Blob(b"dataitem"),
            Chunk::Blob(b"1"),
            Chunk::List(vec![Chunk::Hashed(deep_hash(&pair)), Chunk::List(vec![])]),
            Chunk::Hashed(blob(&bytes)),
        ]);
        assert_eq!(hex::encode(deep_hash(&nested)), NESTED);
    }

    #[test]
    fn a_blob_and_a_list_of_its_bytes_differ() {
        assert_ne!(
            deep_hash(&Chunk::Blob(b"ab")),
            deep_hash(&Chunk::List(vec![Chunk::Blob(b"a"), Chunk::Blob(b"b")]))
        );
    }
}
