//! HAMT-sharded UnixFS directories, as the `unixfs-v1-2025` profile makes them once a flat directory node would
//! pass 256 KiB: a hash array mapped trie of fan-out 256 keyed by the murmur3-x64-64 hash of each entry name
//! (the first 64 bits of murmur3-x64-128, as Go and JavaScript use it), with link names `XX` (a sub-shard) or
//! `XXname` (an entry), `XX` being the slot in upper-case hex.
//!
//! Pure functions, no I/O: building a shard tree from links, and finding one name in a shard node. Nodes read from
//! the network are checked (fan-out a power of two, hash function murmur3, link names well formed) and never
//! cause a panic.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;

use crate::store::block::{self, DAG_PB};
use crate::store::dagpb::{
    DataType, DirectoryDag, DirectoryLink, PbLink, PbNode, UnixfsData, UnixfsError,
};

/// Multicodec of murmur3-x64-64, the only HAMT hash UnixFS defines.
pub const MURMUR3_X64_64: u64 = 0x22;
/// Fan-out zipIQ writes (8 bits of hash per level).
pub const FANOUT: u64 = 256;
/// A flat directory whose node would be larger than this is sharded instead (the profile's threshold).
pub const SHARD_THRESHOLD: usize = 262_144;
/// Deepest shard tree built or walked; 64 bits of hash give 8 levels before rehashing, so real trees stay far
/// shallower.
pub const MAX_LEVELS: usize = 64;

/// MurmurHash3 x64 128-bit with seed 0; returns (h1, h2).
pub fn murmur3_x64_128(data: &[u8]) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    fn fmix(mut k: u64) -> u64 {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    let mut h1: u64 = 0;
    let mut h2: u64 = 0;
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (a, b) = block.split_at(8);
        let mut k1 = u64::from_le_bytes(a.try_into().unwrap_or([0; 8]));
        let mut k2 = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let mut k1: u64 = 0;
    let mut k2: u64 = 0;
    for (i, byte) in tail.iter().enumerate() {
        if i < 8 {
            k1 ^= u64::from(*byte) << (8 * i);
        } else {
            k2 ^= u64::from(*byte) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// `bits` bits of the hash stream of `name`, starting at bit `start`. The stream is the big-endian h1 of
/// murmur3(name), then of murmur3(name ‖ [1]), murmur3(name ‖ [2]) ... each consumed from its most significant
/// bit (the JavaScript `hamt-sharding` and Go `go-unixfs` order).
fn hash_bits(name: &str, start: usize, bits: usize) -> usize {
    let mut out = 0usize;
    let mut cached: Option<(usize, u64)> = None;
    for bit in start..start + bits {
        let round = bit / 64;
        let h1 = match cached {
            Some((r, h)) if r == round => h,
            _ => {
                let h = if round == 0 {
                    murmur3_x64_128(name.as_bytes()).0
                } else {
                    let mut input = name.as_bytes().to_vec();
                    // Rounds past 255 would need 256 levels of 8 bits: MAX_LEVELS stops far earlier.
                    input.push(round as u8);
                    murmur3_x64_128(&input).0
                };
                cached = Some((round, h));
                h
            }
        };
        let within = bit % 64;
        out = (out << 1) | ((h1 >> (63 - within)) & 1) as usize;
    }
    out
}

/// Hex digits of a slot label for `fanout` (2 for 256).
fn label_len(fanout: u64) -> usize {
    format!("{:X}", fanout.saturating_sub(1)).len()
}

/// The occupied-slot bitfield: big-endian, leading zero bytes dropped (what Go's and JS's writers produce).
fn bitfield(slots: impl Iterator<Item = usize>, fanout: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; fanout.div_ceil(8)];
    let len = bytes.len();
    for slot in slots {
        if let Some(byte) = bytes.get_mut(len - 1 - slot / 8) {
            *byte |= 1 << (slot % 8);
        }
    }
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(len);
    bytes.split_off(first)
}

enum Slot {
    Entry(DirectoryLink),
    Shard(Box<Bucket>),
}

#[derive(Default)]
struct Bucket {
    slots: BTreeMap<usize, Slot>,
}

impl Bucket {
    fn insert(&mut self, link: DirectoryLink, level: usize) -> Result<(), UnixfsError> {
        if level >= MAX_LEVELS {
            return Err(UnixfsError::Directory(format!(
                "HAMT deeper than {MAX_LEVELS} levels at {:?}",
                link.name
            )));
        }
        let slot = hash_bits(&link.name, level * 8, 8);
        match self.slots.remove(&slot) {
            None => {
                self.slots.insert(slot, Slot::Entry(link));
            }
            Some(Slot::Shard(mut bucket)) => {
                bucket.insert(link, level + 1)?;
                self.slots.insert(slot, Slot::Shard(bucket));
            }
            Some(Slot::Entry(existing)) => {
                let mut bucket = Box::<Bucket>::default();
                bucket.insert(existing, level + 1)?;
                bucket.insert(link, level + 1)?;
                self.slots.insert(slot, Slot::Shard(bucket));
            }
        }
        Ok(())
    }

    /// Encodes this bucket and its sub-buckets (appended to `blocks` children first); returns its CID and
    /// cumulative size.
    fn flush(self, blocks: &mut Vec<(Cid, Bytes)>) -> (Cid, u64) {
        let occupied: Vec<usize> = self.slots.keys().copied().collect();
        let mut links = Vec::with_capacity(self.slots.len());
        let mut children_size = 0u64;
        for (slot, child) in self.slots {
            let label = format!("{slot:02X}");
            match child {
                Slot::Entry(link) => {
                    children_size += link.tsize;
                    links.push(PbLink {
                        cid: link.cid,
                        name: Some(format!("{label}{}", link.name)),
                        tsize: Some(link.tsize),
                    });
                }
                Slot::Shard(bucket) => {
                    let (cid, size) = bucket.flush(blocks);
                    children_size += size;
                    links.push(PbLink {
                        cid,
                        name: Some(label),
                        tsize: Some(size),
                    });
                }
            }
        }
        let data = UnixfsData {
            kind: DataType::HamtShard,
            data: Some(Bytes::from(bitfield(occupied.into_iter(), FANOUT as usize))),
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: Some(MURMUR3_X64_64),
            fanout: Some(FANOUT),
        };
        let node = PbNode {
            links,
            data: Some(Bytes::from(data.encode())),
        };
        let encoded = node.encode();
        let cid = block::cid_v1(DAG_PB, &encoded);
        let size = encoded.len() as u64 + children_size;
        blocks.push((cid, Bytes::from(encoded)));
        (cid, size)
    }
}

/// Builds a HAMT-sharded directory over `links` (names already checked unique and valid): every shard block,
/// root last.
pub fn build(links: Vec<DirectoryLink>) -> Result<DirectoryDag, UnixfsError> {
    let mut root = Bucket::default();
    for link in links {
        root.insert(link, 0)?;
    }
    let mut blocks = Vec::new();
    let (cid, tsize) = root.flush(&mut blocks);
    Ok(DirectoryDag {
        root: cid,
        blocks,
        tsize,
    })
}

/// One step of a lookup in a shard node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The entry's CID.
    Found(Cid),
    /// Continue in this sub-shard, one level down.
    Descend(Cid),
    /// No such name.
    Absent,
}

/// The shard parameters of a HAMT node: its fan-out's bit width and label length.
fn shard_params(unixfs: &UnixfsData) -> Result<(usize, usize), UnixfsError> {
    if unixfs.kind != DataType::HamtShard {
        return Err(UnixfsError::Directory("not a HAMT shard".into()));
    }
    if unixfs.hash_type != Some(MURMUR3_X64_64) {
        return Err(UnixfsError::Directory(
            "HAMT hash function is not murmur3-x64-64".into(),
        ));
    }
    let fanout = unixfs
        .fanout
        .ok_or(UnixfsError::Data("HAMT shard without fanout"))?;
    if !fanout.is_power_of_two() || !(2..=4096).contains(&fanout) {
        return Err(UnixfsError::Data(
            "HAMT fanout is not a power of two in 2..=4096",
        ));
    }
    Ok((fanout.trailing_zeros() as usize, label_len(fanout)))
}

/// Looks `name` up in a shard node at depth `level` (0 for the directory's root node).
pub fn lookup(
    node: &PbNode,
    unixfs: &UnixfsData,
    name: &str,
    level: usize,
) -> Result<Step, UnixfsError> {
    if level >= MAX_LEVELS {
        return Err(UnixfsError::Directory(format!(
            "HAMT deeper than {MAX_LEVELS} levels"
        )));
    }
    let (bits, label_len) = shard_params(unixfs)?;
    let slot = hash_bits(name, level * bits, bits);
    let label = format!("{slot:0label_len$X}");
    for link in &node.links {
        let Some(link_name) = link.name.as_deref() else {
            continue;
        };
        let Some(rest) = link_name.strip_prefix(label.as_str()) else {
            continue;
        };
        if rest.is_empty() {
            return Ok(Step::Descend(link.cid));
        }
        if rest == name {
            return Ok(Step::Found(link.cid));
        }
        return Ok(Step::Absent);
    }
    Ok(Step::Absent)
}

/// The links of one shard node, split into entries (name without its label) and sub-shards.
pub fn entries(node: &PbNode, unixfs: &UnixfsData) -> Result<(Vec<PbLink>, Vec<Cid>), UnixfsError> {
    let (_, label_len) = shard_params(unixfs)?;
    let mut found = Vec::new();
    let mut shards = Vec::new();
    for link in &node.links {
        let name = link.name.as_deref().unwrap_or_default();
        match name.get(label_len..) {
            Some("") => shards.push(link.cid),
            Some(rest) => found.push(PbLink {
                cid: link.cid,
                name: Some(rest.to_owned()),
                tsize: link.tsize,
            }),
            None => return Err(UnixfsError::Data("HAMT link name shorter than its label")),
        }
    }
    Ok((found, shards))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::block::RAW;

    #[test]
    fn murmur3_matches_the_reference_vectors() {
        assert_eq!(murmur3_x64_128(b""), (0, 0));
        // Digests printed by the JavaScript `@multiformats/murmur3` (h1 then h2, big-endian).
        assert_eq!(
            murmur3_x64_128(b"hello"),
            (0xcbd8_a7b3_41bd_9b02, 0x5b1e_906a_48ae_1d19)
        );
        assert_eq!(
            murmur3_x64_128(b"The quick brown fox jumps over the lazy dog"),
            (0xe34b_bc7b_bc07_1b6c, 0x7a43_3ca9_c49a_9347)
        );
        assert_eq!(
            murmur3_x64_128(b"0123456789abcdefX"),
            (0xcdeb_d2ac_b570_d6f7, 0x8f72_1197_8210_4b27)
        );
    }

    #[test]
    fn the_first_slot_is_the_top_byte_of_h1() {
        assert_eq!(hash_bits("hello", 0, 8), 0xcb);
        assert_eq!(hash_bits("hello", 8, 8), 0xd8);
        assert_eq!(hash_bits("hello", 56, 8), 0x02);
    }

    #[test]
    fn bitfields_are_big_endian_without_leading_zeros() {
        assert_eq!(bitfield([0usize].into_iter(), 256), vec![0x01]);
        assert_eq!(bitfield([0usize, 9].into_iter(), 256), vec![0x02, 0x01]);
        let full = bitfield([255usize].into_iter(), 256);
        assert_eq!(full.len(), 32);
        assert_eq!(full.first(), Some(&0x80));
    }

    #[test]
    fn every_built_name_is_found_again_and_others_are_absent() {
        let links: Vec<DirectoryLink> = (0..2000)
            .map(|i| DirectoryLink {
                name: format!("{i:06}.m4s"),
                cid: block::cid_v1(RAW, format!("{i}").as_bytes()),
                tsize: 100,
            })
            .collect();
        let dag = build(links.clone()).expect("builds");
        let root = dag.root;
        let by_cid: std::collections::HashMap<Cid, Bytes> = dag.blocks.into_iter().collect();
        let find = |name: &str| -> Step {
            let mut cid = root;
            let mut level = 0;
            loop {
                let data = by_cid.get(&cid).expect("shard present");
                let node = PbNode::decode(data).expect("decodes");
                let unixfs =
                    UnixfsData::decode(node.data.as_ref().expect("data")).expect("data decodes");
                match lookup(&node, &unixfs, name, level).expect("lookup") {
                    Step::Descend(next) => {
                        cid = next;
                        level += 1;
                    }
                    other => return other,
                }
            }
        };
        for link in &links {
            assert_eq!(find(&link.name), Step::Found(link.cid), "{}", link.name);
        }
        assert_eq!(find("999999.m4s"), Step::Absent);
    }
}
