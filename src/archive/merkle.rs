//! The merkle tree of a format-2 Arweave transaction's data, as arweave-js builds it (`merkle.ts`, after the
//! node's `ar_merkle`): the data root the transaction signs, and the proof (`data_path`) of each chunk posted to
//! `POST /chunk`.
//!
//! Data is cut into 256 KiB chunks; when what is left after a full chunk would be a chunk under 32 KiB, the last two
//! chunks split what is left in halves instead (the first one rounded up). Data of an exact multiple of 256 KiB
//! ends with an empty chunk: it counts in the tree, but is never uploaded. Leaves hash `SHA256(SHA256(chunk hash) ‖
//! SHA256(end offset))`, branches `SHA256(SHA256(left) ‖ SHA256(right) ‖ SHA256(left's end offset))`, offsets as
//! 32-byte big-endian notes; an odd node at the end of a layer moves up unpaired. Proof checking takes outside
//! bytes and never panics.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// Largest chunk.
pub const MAX_CHUNK_SIZE: usize = 256 * 1024;
/// Smallest chunk, except the last one of data shorter than this.
pub const MIN_CHUNK_SIZE: usize = 32 * 1024;
const HASH_SIZE: usize = 32;
const NOTE_SIZE: usize = 32;
/// Deepest proof accepted: a tree of 2^64 chunks is deeper than any data can be.
const MAX_PROOF_DEPTH: usize = 64;

/// One chunk of the data: where it lies and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChunk {
    /// The chunk's bytes within the data.
    pub range: Range<u64>,
    /// SHA-256 of the chunk's bytes.
    pub data_hash: [u8; 32],
}

/// The proof of one chunk, as `POST /chunk` wants it: the chunk's last byte offset and its path from the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProof {
    /// The offset of the chunk's last byte in the data.
    pub offset: u64,
    /// The proof: the path from the data root to the chunk's leaf.
    pub data_path: Vec<u8>,
}

/// The data root, the chunks to upload and their proofs.
#[derive(Debug, Clone)]
pub struct DataTree {
    /// The merkle root of the data (a transaction's `data_root`).
    pub data_root: [u8; 32],
    /// The data's size in bytes.
    pub data_size: u64,
    /// The chunks to upload, in order (an empty last chunk is not among them).
    pub chunks: Vec<DataChunk>,
    /// `proofs[i]` proves `chunks[i]`.
    pub proofs: Vec<ChunkProof>,
}

/// Where the chunks of `len` bytes of data lie, the empty last chunk included (arweave-js `chunkData`).
pub fn chunk_ranges(len: u64) -> Vec<Range<u64>> {
    let max = MAX_CHUNK_SIZE as u64;
    let min = MIN_CHUNK_SIZE as u64;
    let mut ranges = Vec::new();
    let mut cursor = 0u64;
    let mut rest = len;
    while rest >= max {
        let next = rest - max;
        let size = if next > 0 && next < min {
            rest.div_ceil(2)
        } else {
            max
        };
        ranges.push(cursor..cursor + size);
        cursor += size;
        rest -= size;
    }
    ranges.push(cursor..cursor + rest);
    ranges
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut sha = Sha256::new();
    for part in parts {
        sha.update(part);
    }
    sha.finalize().into()
}

fn note(n: u64) -> [u8; NOTE_SIZE] {
    let mut out = [0; NOTE_SIZE];
    out[NOTE_SIZE - 8..].copy_from_slice(&n.to_be_bytes());
    out
}

fn leaf_id(data_hash: &[u8], end: &[u8]) -> [u8; 32] {
    sha256(&[&sha256(&[data_hash]), &sha256(&[end])])
}

fn branch_id(left: &[u8], right: &[u8], offset: &[u8]) -> [u8; 32] {
    sha256(&[&sha256(&[left]), &sha256(&[right]), &sha256(&[offset])])
}

enum Node {
    Leaf {
        id: [u8; 32],
        chunk: usize,
    },
    Branch {
        id: [u8; 32],
        split: u64,
        left: Box<Node>,
        right: Box<Node>,
    },
}

impl Node {
    fn id(&self) -> &[u8; 32] {
        match self {
            Node::Leaf { id, .. } | Node::Branch { id, .. } => id,
        }
    }
}

impl DataTree {
    /// The tree of `data`, or `None` for empty data (a transaction without data has an empty data root).
    pub fn new(data: &[u8]) -> Option<DataTree> {
        let chunks = chunk_ranges(data.len() as u64)
            .into_iter()
            .map(|range| {
                // The ranges lie within `data` by construction.
                let bytes = &data[range.start as usize..range.end as usize];
                DataChunk {
                    data_hash: sha256(&[bytes]),
                    range,
                }
            })
            .collect();
        DataTree::from_chunks(data.len() as u64, chunks)
    }

    /// The tree of data whose chunks were hashed already, as they streamed by: `chunks` must be laid out as
    /// [`chunk_ranges`] says (the empty last chunk may be left out). `None` for empty data or chunks that do not
    /// cover `data_size` in order.
    pub fn from_chunks(data_size: u64, mut chunks: Vec<DataChunk>) -> Option<DataTree> {
        let ranges = chunk_ranges(data_size);
        if ranges.len() == chunks.len() + 1 && ranges.last().is_some_and(Range::is_empty) {
            chunks.push(DataChunk {
                range: data_size..data_size,
                data_hash: sha256(&[]),
            });
        }
        if data_size == 0 || chunks.iter().map(|c| c.range.clone()).ne(ranges) {
            return None;
        }
        let mut layer: Vec<(Node, u64)> = chunks
            .iter()
            .enumerate()
            .map(|(index, chunk)| {
                let id = leaf_id(&chunk.data_hash, &note(chunk.range.end));
                (Node::Leaf { id, chunk: index }, chunk.range.end)
            })
            .collect();
        while layer.len() > 1 {
            let mut next = Vec::with_capacity(layer.len().div_ceil(2));
            let mut nodes = layer.into_iter();
            while let Some((left, left_end)) = nodes.next() {
                match nodes.next() {
                    Some((right, right_end)) => {
                        let id = branch_id(left.id(), right.id(), &note(left_end));
                        next.push((
                            Node::Branch {
                                id,
                                split: left_end,
                                left: Box::new(left),
                                right: Box::new(right),
                            },
                            right_end,
                        ));
                    }
                    None => next.push((left, left_end)),
                }
            }
            layer = next;
        }
        let (root, _) = layer.pop()?;
        let mut proofs = vec![None; chunks.len()];
        collect_proofs(&root, Vec::new(), &chunks, &mut proofs);
        let mut proofs: Vec<ChunkProof> = proofs.into_iter().collect::<Option<_>>()?;
        if chunks.last().is_some_and(|c| c.range.is_empty()) {
            chunks.pop();
            proofs.pop();
        }
        Some(DataTree {
            data_root: *root.id(),
            data_size,
            chunks,
            proofs,
        })
    }

    /// The bytes of chunk `index` within `data` (the data this tree was built from).
    pub fn chunk_bytes<'a>(&self, data: &'a [u8], index: usize) -> Option<&'a [u8]> {
        let range = &self.chunks.get(index)?.range;
        data.get(usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?)
    }
}

fn collect_proofs(
    node: &Node,
    path: Vec<u8>,
    chunks: &[DataChunk],
    proofs: &mut [Option<ChunkProof>],
) {
    match node {
        Node::Leaf { chunk, .. } => {
            if let (Some(info), Some(slot)) = (chunks.get(*chunk), proofs.get_mut(*chunk)) {
                let mut data_path = path;
                data_path.extend_from_slice(&info.data_hash);
                data_path.extend_from_slice(&note(info.range.end));
                *slot = Some(ChunkProof {
                    offset: info.range.end.saturating_sub(1),
                    data_path,
                });
            }
        }
        Node::Branch {
            split, left, right, ..
        } => {
            let mut prefix = path;
            prefix.extend_from_slice(left.id());
            prefix.extend_from_slice(right.id());
            prefix.extend_from_slice(&note(*split));
            collect_proofs(left, prefix.clone(), chunks, proofs);
            collect_proofs(right, prefix, chunks, proofs);
        }
    }
}

/// Why a chunk proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof's length fits no tree.
    #[error("the proof has {0} bytes; a proof is 64 bytes plus 96 per level")]
    BadLength(usize),
    /// The proof has more levels than any data can need.
    #[error("the proof is deeper than {MAX_PROOF_DEPTH} levels")]
    TooDeep,
    /// The offset is not inside the data.
    #[error("offset {offset} is outside data of {data_size} bytes")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The data's size in bytes.
        data_size: u64,
    },
    /// The proof does not lead from the data root to the chunk.
    #[error("the proof does not lead from the data root to the chunk")]
    Mismatch,
    /// The chunk's bytes do not hash to the proof's leaf.
    #[error("the chunk's bytes do not hash to the proof's leaf")]
    ChunkMismatch,
}

/// Checks that `chunk` is the chunk holding byte `offset` of the data under `data_root` (`data_size` bytes),
/// following `data_path`; gives the chunk's byte range.
pub fn verify_chunk(
    data_root: &[u8; 32],
    data_size: u64,
    offset: u64,
    data_path: &[u8],
    chunk: &[u8],
) -> Result<Range<u64>, ProofError> {
    if offset >= data_size {
        return Err(ProofError::OffsetOutOfRange { offset, data_size });
    }
    let leaf_len = HASH_SIZE + NOTE_SIZE;
    let branch_len = 2 * HASH_SIZE + NOTE_SIZE;
    if data_path.len() < leaf_len || !(data_path.len() - leaf_len).is_multiple_of(branch_len) {
        return Err(ProofError::BadLength(data_path.len()));
    }
    if (data_path.len() - leaf_len) / branch_len > MAX_PROOF_DEPTH {
        return Err(ProofError::TooDeep);
    }
    let (branches, leaf) = data_path.split_at(data_path.len() - leaf_len);
    let mut id: [u8; 32] = *data_root;
    let (mut left_bound, mut right_bound) = (0u64, data_size);
    for level in branches.chunks_exact(branch_len) {
        let (left, rest) = level.split_at(HASH_SIZE);
        let (right, split) = rest.split_at(HASH_SIZE);
        if branch_id(left, right, split) != id {
            return Err(ProofError::Mismatch);
        }
        let split = note_value(split).ok_or(ProofError::Mismatch)?;
        let next = if offset < split {
            right_bound = right_bound.min(split);
            left
        } else {
            left_bound = left_bound.max(split);
            right
        };
        id = next.try_into().map_err(|_| ProofError::Mismatch)?;
    }
    let (data_hash, end) = leaf.split_at(HASH_SIZE);
    if leaf_id(data_hash, end) != id || note_value(end) != Some(right_bound) {
        return Err(ProofError::Mismatch);
    }
    // left_bound ≤ offset < right_bound holds at every level, so the subtraction cannot underflow.
    if sha256(&[chunk]) != data_hash || chunk.len() as u64 != right_bound - left_bound {
        return Err(ProofError::ChunkMismatch);
    }
    Ok(left_bound..right_bound)
}

/// A 32-byte big-endian note as a number, if it fits in 64 bits.
fn note_value(bytes: &[u8]) -> Option<u64> {
    let (high, low) = bytes.split_at(bytes.len().checked_sub(8)?);
    if high.iter().any(|&b| b != 0) {
        return None;
    }
    Some(u64::from_be_bytes(low.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::b64url;

    const KIB: u64 = 1024;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn chunking_follows_arweave_js() {
        assert_eq!(chunk_ranges(0), vec![0..0]);
        assert_eq!(chunk_ranges(10), vec![0..10]);
        assert_eq!(
            chunk_ranges(256 * KIB),
            vec![0..256 * KIB, 256 * KIB..256 * KIB]
        );
        assert_eq!(chunk_ranges(256 * KIB + 1), {
            // 1 byte would be left: the two last chunks share 256 KiB + 1 in halves, the first rounded up.
            let half = (256 * KIB + 1).div_ceil(2);
            vec![0..half, half..256 * KIB + 1]
        });
        assert_eq!(
            chunk_ranges(256 * KIB + 32 * KIB),
            vec![0..256 * KIB, 256 * KIB..288 * KIB]
        );
        let len = 3 * 256 * KIB + 5;
        let ranges = chunk_ranges(len);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[2].end - ranges[2].start, (256 * KIB + 5).div_ceil(2));
        assert_eq!(ranges.last().unwrap().end, len);
    }

    // Data roots computed by arweave-js 1.15.7 (`node tests/js/data-roots.mjs`) over `pattern(len)`.
    const ROOTS: &[(usize, &str)] = &[
        (1, "Ht_yZhXGBDUZfLv4OD6we7FkrjcpDpGPwQZEZgEJVfk"),
        (1000, "arcYDeAXgRnZVIfKd3CQsR7JeZg25TCgXBCgbrDMp9E"),
        (32767, "96pG2AAr0M9vqruJjdsf81Q1MRvRzasi7AJur2_ER7Y"),
        (262143, "iwPUKzuFr7AOzwvfbXvVskrobLtGD1cVuYiHHGwrzro"),
        (262144, "3S_4SKh9Dgf-VZorGHoWIosP_3cUqBv-hBuDWzdngVk"),
        (262145, "d6nDWqcOJIPQPC7oVLu1dfUONz0ZJcTPsZQ9WlkBXoY"),
        (294911, "9yDTGJrmMSH_Rt70bi3C87vMEhiHbJdP2xE1_nHKgmc"),
        (294912, "CqqLHS8q9-3L-qkyUtIrYsiilGonCaUXTu-pT9tMjNA"),
        (524288, "BUPlRexp6GELSxEbKF6p5Ess-HOSeTw3ZS_5kWx73mU"),
        (614400, "jootcZjLt3vUTWi0Niue_huoSXzR0cyQyonkJHmuN-g"),
        (1310797, "ogN2PDtfO02kKAB5xo25IfWNfCbnwZ-tExeuinaVnEg"),
        (1835008, "1yobv3ecC0EBHaMXNeQ0qYeivISJmTayCHEa2KMSFnE"),
        (3158073, "-rYLPUrb8jIsSLOyxZv5rkazNKSDW-6UlVvfgscfgek"),
    ];

    #[test]
    fn data_roots_match_arweave_js() {
        for &(len, root) in ROOTS {
            let tree = DataTree::new(&pattern(len)).unwrap();
            assert_eq!(b64url::encode(tree.data_root), root, "data of {len} bytes");
        }
    }

    #[test]
    fn empty_data_has_no_tree() {
        assert!(DataTree::new(&[]).is_none());
    }

    #[test]
    fn every_proof_verifies_and_covers_the_data_once() {
        for len in [
            1usize,
            1000,
            256 * 1024,
            256 * 1024 + 1,
            600 * 1024,
            5 * 256 * 1024 + 77,
        ] {
            let data = pattern(len);
            let tree = DataTree::new(&data).unwrap();
            let mut covered = 0;
            for (index, (chunk, proof)) in tree.chunks.iter().zip(&tree.proofs).enumerate() {
                let bytes = tree.chunk_bytes(&data, index).unwrap();
                let range = verify_chunk(
                    &tree.data_root,
                    len as u64,
                    proof.offset,
                    &proof.data_path,
                    bytes,
                )
                .unwrap_or_else(|e| panic!("{len} bytes, chunk {index}: {e}"));
                assert_eq!(range, chunk.range);
                assert_eq!(range.start, covered);
                covered = range.end;
                // Any offset inside the chunk leads to it as well.
                verify_chunk(
                    &tree.data_root,
                    len as u64,
                    chunk.range.start,
                    &proof.data_path,
                    bytes,
                )
                .unwrap();
            }
            assert_eq!(covered, len as u64);
        }
    }

    #[test]
    fn the_empty_last_chunk_of_a_multiple_of_256_kib_is_not_uploaded() {
        let tree = DataTree::new(&pattern(512 * 1024)).unwrap();
        assert_eq!(tree.chunks.len(), 2);
        assert_eq!(tree.proofs.len(), 2);
    }

    #[test]
    fn wrong_chunks_and_paths_are_refused() {
        let data = pattern(600 * 1024);
        let tree = DataTree::new(&data).unwrap();
        let proof = &tree.proofs[1];
        let bytes = tree.chunk_bytes(&data, 1).unwrap();
        let size = data.len() as u64;
        let mut changed = bytes.to_vec();
        changed[0] ^= 1;
        assert_eq!(
            verify_chunk(
                &tree.data_root,
                size,
                proof.offset,
                &proof.data_path,
                &changed
            ),
            Err(ProofError::ChunkMismatch)
        );
        let mut path = proof.data_path.clone();
        path[3] ^= 1;
        assert_eq!(
            verify_chunk(&tree.data_root, size, proof.offset, &path, bytes),
            Err(ProofError::Mismatch)
        );
        // The proof of chunk 1 does not lead to chunk 0's offset.
        assert!(verify_chunk(&tree.data_root, size, 0, &proof.data_path, bytes).is_err());
        assert_eq!(
            verify_chunk(&tree.data_root, size, size, &proof.data_path, bytes),
            Err(ProofError::OffsetOutOfRange {
                offset: size,
                data_size: size
            })
        );
        for len in 0..proof.data_path.len() {
            assert!(
                verify_chunk(
                    &tree.data_root,
                    size,
                    proof.offset,
                    &proof.data_path[..len],
                    bytes
                )
                .is_err()
            );
        }
    }

    #[test]
    fn from_chunks_refuses_chunks_that_do_not_cover_the_data() {
        let data = pattern(300 * 1024);
        let tree = DataTree::new(&data).unwrap();
        assert!(DataTree::from_chunks(data.len() as u64 + 1, tree.chunks.clone()).is_none());
        let rebuilt = DataTree::from_chunks(data.len() as u64, tree.chunks.clone()).unwrap();
        assert_eq!(rebuilt.data_root, tree.data_root);
        // Without the empty last chunk of a multiple of 256 KiB, as `chunks` lists them.
        let data = pattern(512 * 1024);
        let tree = DataTree::new(&data).unwrap();
        let rebuilt = DataTree::from_chunks(data.len() as u64, tree.chunks.clone()).unwrap();
        assert_eq!(rebuilt.data_root, tree.data_root);
        assert_eq!(rebuilt.proofs, tree.proofs);
    }
}
