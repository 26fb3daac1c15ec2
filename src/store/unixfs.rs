//! UnixFS on dag-pb: the file importer of the IPIP-499 `unixfs-v1-2025` profile (CIDv1, raw leaves, 1 MiB chunks,
//! sha2-256, balanced DAG of at most 1024 links per node) and directories that link existing CIDs (flat up to
//! 256 KiB, then HAMT-sharded by `hamt.rs`, as the profile says). The node encoding is `dagpb.rs`.
//!
//! Pure functions, no I/O. Links of a directory are sorted by name bytes, so CIDs match the JavaScript and Go
//! importers byte for byte.

use bytes::Bytes;
use cid::Cid;

use crate::store::block::{self, DAG_PB, RAW};
use crate::store::dagpb::{
    DirectoryDag, DirectoryLink, PbLink, PbNode, UnixfsData, UnixfsError, check_entry_name,
};
use crate::store::hamt;

/// Chunk size of the `unixfs-v1-2025` profile: 1 MiB.
pub const CHUNK_SIZE: usize = 1_048_576;
/// Widest node of the profile's balanced DAG.
pub const MAX_LINKS: usize = 1024;

// ---------------------------------------------------------------------------------------------------------------
// importer

/// The blocks of an imported file, leaves first and root last.
#[derive(Debug, Clone)]
pub struct FileDag {
    /// The file's root node.
    pub root: Cid,
    /// File size in bytes.
    pub size: u64,
    /// Cumulative size of the DAG (what a parent directory records as `Tsize`).
    pub tsize: u64,
    /// Every block, leaves first, root last.
    pub blocks: Vec<(Cid, Bytes)>,
}

/// A node of the DAG being built: its CID, the file bytes below it and its cumulative size.
#[derive(Clone, Copy)]
struct Built {
    cid: Cid,
    size: u64,
    tsize: u64,
}

/// Imports `bytes` as a UnixFS file with the `unixfs-v1-2025` profile. A file of at most one chunk is a single raw
/// block (so its CID is the raw CIDv1 of its sha2-256); a longer one is a balanced tree of dag-pb file nodes with
/// at most [`MAX_LINKS`] children each. The leaves are zero-copy slices of `bytes`.
pub fn import_file(bytes: &Bytes) -> FileDag {
    let mut blocks = Vec::with_capacity(bytes.len() / CHUNK_SIZE + 2);
    let mut leaves: Vec<Built> = Vec::with_capacity(bytes.len() / CHUNK_SIZE + 1);
    let mut offset = 0;
    loop {
        let end = bytes.len().min(offset + CHUNK_SIZE);
        let chunk = bytes.slice(offset..end);
        let cid = block::cid_v1(RAW, &chunk);
        let size = chunk.len() as u64;
        leaves.push(Built {
            cid,
            size,
            tsize: size,
        });
        blocks.push((cid, chunk));
        offset = end;
        if offset >= bytes.len() {
            break;
        }
    }
    let root = build_balanced(leaves, &mut blocks);
    FileDag {
        root: root.cid,
        size: root.size,
        tsize: root.tsize,
        blocks,
    }
}

/// Builds the balanced layout over `leaves` (at least one), appending every new node to `blocks`, and returns the
/// root. One leaf is its own root (the importers' "reduce single leaf to self").
fn build_balanced(leaves: Vec<Built>, blocks: &mut Vec<(Cid, Bytes)>) -> Built {
    let mut level = leaves;
    while level.len() > 1 {
        let mut parents = Vec::with_capacity(level.len().div_ceil(MAX_LINKS));
        for children in level.chunks(MAX_LINKS) {
            let data = UnixfsData::file(children.iter().map(|c| c.size).collect());
            let node = PbNode {
                links: children
                    .iter()
                    .map(|c| PbLink {
                        cid: c.cid,
                        name: Some(String::new()),
                        tsize: Some(c.tsize),
                    })
                    .collect(),
                data: Some(Bytes::from(data.encode())),
            };
            let encoded = node.encode();
            let cid = block::cid_v1(DAG_PB, &encoded);
            let tsize = encoded.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
            parents.push(Built {
                cid,
                size: data.filesize.unwrap_or(0),
                tsize,
            });
            blocks.push((cid, Bytes::from(encoded)));
        }
        level = parents;
    }
    level.first().copied().unwrap_or(Built {
        // Only reached if called with no leaf at all: the empty file.
        cid: block::cid_v1(RAW, b""),
        size: 0,
        tsize: 0,
    })
}

/// A UnixFS directory linking `links` (names unique): a flat node (links sorted by name bytes) while that node
/// stays within the profile's 256 KiB, else a HAMT-sharded directory (see `hamt.rs`), as the `unixfs-v1-2025`
/// importers decide it.
pub fn build_directory(mut links: Vec<DirectoryLink>) -> Result<DirectoryDag, UnixfsError> {
    for link in &links {
        check_entry_name(&link.name)?;
    }
    links.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    for pair in links.windows(2) {
        if let [a, b] = pair
            && a.name == b.name
        {
            return Err(UnixfsError::Directory(format!(
                "duplicate entry name {:?}",
                a.name
            )));
        }
    }
    let node = PbNode {
        links: links
            .iter()
            .map(|l| PbLink {
                cid: l.cid,
                name: Some(l.name.clone()),
                tsize: Some(l.tsize),
            })
            .collect(),
        data: Some(Bytes::from(UnixfsData::directory().encode())),
    };
    let encoded = node.encode();
    if encoded.len() > hamt::SHARD_THRESHOLD {
        return hamt::build(links);
    }
    let root = block::cid_v1(DAG_PB, &encoded);
    let tsize = encoded.len() as u64 + links.iter().map(|l| l.tsize).sum::<u64>();
    Ok(DirectoryDag {
        root,
        blocks: vec![(root, Bytes::from(encoded))],
        tsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dagpb::{DataType, link_size};

    fn pattern(len: usize) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn a_file_of_one_chunk_is_its_raw_leaf() {
        for len in [0, 1, 1000, CHUNK_SIZE] {
            let bytes = pattern(len);
            let dag = import_file(&bytes);
            assert_eq!(dag.root, block::cid_v1(RAW, &bytes), "len {len}");
            assert_eq!(dag.blocks.len(), 1);
            assert_eq!(dag.size, len as u64);
            assert_eq!(dag.tsize, len as u64);
        }
    }

    #[test]
    fn a_longer_file_is_a_dag_pb_root_over_raw_leaves() {
        let bytes = pattern(CHUNK_SIZE * 2 + 12345);
        let dag = import_file(&bytes);
        assert_eq!(dag.blocks.len(), 4);
        assert_eq!(dag.root.codec(), DAG_PB);
        let (root_cid, root_block) = dag.blocks.last().cloned().expect("root is last");
        assert_eq!(root_cid, dag.root);
        let node = PbNode::decode(&root_block).expect("root decodes");
        assert_eq!(node.links.len(), 3);
        assert!(node.links.iter().all(|l| l.name.as_deref() == Some("")));
        let data = UnixfsData::decode(node.data.as_ref().expect("has data")).expect("data decodes");
        assert_eq!(data.kind, DataType::File);
        assert_eq!(data.filesize, Some(bytes.len() as u64));
        assert_eq!(
            data.blocksizes,
            vec![CHUNK_SIZE as u64, CHUNK_SIZE as u64, 12345]
        );
        assert_eq!(
            dag.tsize,
            root_block.len() as u64 + bytes.len() as u64,
            "tsize counts the root and every leaf"
        );
        // Round trip: re-encoding the decoded node gives the same bytes.
        assert_eq!(node.encode(), root_block.to_vec());
    }

    #[test]
    fn the_tree_grows_a_level_after_1024_leaves() {
        // 1025 leaves of 1 MiB would need a 1 GiB input: build the layout over stand-in leaves instead.
        let leaves: Vec<Built> = (0..MAX_LINKS as u32 + 1)
            .map(|i| Built {
                cid: block::cid_v1(RAW, &i.to_be_bytes()),
                size: CHUNK_SIZE as u64,
                tsize: CHUNK_SIZE as u64,
            })
            .collect();
        let mut blocks = Vec::new();
        let root = build_balanced(leaves, &mut blocks);
        assert_eq!(blocks.len(), 3, "two inner nodes and the root");
        let (_, root_block) = blocks.last().cloned().expect("root is last");
        let node = PbNode::decode(&root_block).expect("root decodes");
        assert_eq!(node.links.len(), 2);
        let data = UnixfsData::decode(node.data.as_ref().expect("data")).expect("decodes");
        assert_eq!(
            data.blocksizes,
            vec![MAX_LINKS as u64 * CHUNK_SIZE as u64, CHUNK_SIZE as u64]
        );
        assert_eq!(root.size, (MAX_LINKS as u64 + 1) * CHUNK_SIZE as u64);
        let first = PbNode::decode(&blocks[0].1).expect("decodes");
        let second = PbNode::decode(&blocks[1].1).expect("decodes");
        assert_eq!((first.links.len(), second.links.len()), (MAX_LINKS, 1));
    }

    #[test]
    fn file_node_data_matches_the_reference_encoding() {
        // Type=File(2), filesize=3, blocksizes=[1,2] unpacked: 08 02 18 03 20 01 20 02
        let data = UnixfsData::file(vec![1, 2]);
        assert_eq!(
            data.encode(),
            vec![0x08, 0x02, 0x18, 0x03, 0x20, 0x01, 0x20, 0x02]
        );
        assert_eq!(UnixfsData::directory().encode(), vec![0x08, 0x01]);
    }

    #[test]
    fn packed_blocksizes_decode_like_unpacked_ones() {
        let packed = Bytes::from_static(&[0x08, 0x02, 0x18, 0x03, 0x22, 0x02, 0x01, 0x02]);
        let data = UnixfsData::decode(&packed).expect("decodes");
        assert_eq!(data.blocksizes, vec![1, 2]);
    }

    #[test]
    fn directory_links_are_sorted_by_name_bytes() {
        let a = block::cid_v1(RAW, b"a");
        let b = block::cid_v1(RAW, b"b");
        let dir = build_directory(vec![
            DirectoryLink {
                name: "index.m3u8".into(),
                cid: a,
                tsize: 1,
            },
            DirectoryLink {
                name: "000001.m4s".into(),
                cid: b,
                tsize: 1,
            },
        ])
        .expect("valid directory");
        let [(cid, block)] = dir.blocks.as_slice() else {
            panic!("a small directory is one flat node");
        };
        let node = PbNode::decode(block).expect("decodes");
        let names: Vec<_> = node
            .links
            .iter()
            .map(|l| l.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, vec!["000001.m4s", "index.m3u8"]);
        assert_eq!(*cid, block::cid_v1(DAG_PB, block));
        assert_eq!(dir.root, *cid);
        assert_eq!(dir.tsize, block.len() as u64 + 2);
    }

    #[test]
    fn a_directory_past_256_kib_is_sharded() {
        let links = |count: usize| -> Vec<DirectoryLink> {
            (0..count)
                .map(|i| DirectoryLink {
                    name: format!("{i:06}.m4s"),
                    cid: block::cid_v1(RAW, &(i as u64).to_be_bytes()),
                    tsize: 1_500_000,
                })
                .collect()
        };
        // Each link is 1 + 1 + (2 + 36) + (2 + 10) + (1 + 3) = 56 bytes; the node adds 4 bytes of data.
        let per_link = link_size(10, 36, 1_500_000);
        let fits = (hamt::SHARD_THRESHOLD - 4) / per_link;
        let flat = build_directory(links(fits)).expect("builds");
        assert_eq!(flat.blocks.len(), 1, "{fits} links fit one node");
        let sharded = build_directory(links(fits + 1)).expect("builds");
        assert!(sharded.blocks.len() > 1);
        let root = PbNode::decode(&sharded.blocks.last().expect("root").1).expect("decodes");
        let data = UnixfsData::decode(root.data.as_ref().expect("data")).expect("decodes");
        assert_eq!(data.kind, DataType::HamtShard);
        assert_eq!(data.fanout, Some(256));
    }

    #[test]
    fn directories_refuse_duplicate_and_unsafe_names() {
        let a = block::cid_v1(RAW, b"a");
        let link = |name: &str| DirectoryLink {
            name: name.into(),
            cid: a,
            tsize: 1,
        };
        assert!(build_directory(vec![link("x"), link("x")]).is_err());
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(build_directory(vec![link(bad)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoders_reject_malformed_nodes_without_panicking() {
        let cases: &[&[u8]] = &[
            &[0x12],                   // link key without length
            &[0x12, 0x05, 0x0a],       // link longer than the block
            &[0x0a, 0x00, 0x12, 0x00], // link after data
            &[0x0a, 0x00, 0x0a, 0x00], // two data fields
            &[0x1a, 0x00],             // unknown field
            &[0x12, 0x00],             // link without hash
            &[0x12, 0x02, 0x0a, 0x00], // link hash that is no CID
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ];
        for case in cases {
            assert!(
                PbNode::decode(&Bytes::from_static(case)).is_err(),
                "{case:02x?}"
            );
        }
        let data_cases: &[&[u8]] = &[&[], &[0x08], &[0x08, 0x09], &[0x12, 0x04, 0x00], &[0x0f]];
        for case in data_cases {
            assert!(
                UnixfsData::decode(&Bytes::from_static(case)).is_err(),
                "{case:02x?}"
            );
        }
    }

    #[test]
    fn link_size_matches_the_encoder() {
        let cid = block::cid_v1(RAW, b"x");
        let node = PbNode {
            links: vec![PbLink {
                cid,
                name: Some("000001.m4s".into()),
                tsize: Some(1_500_000),
            }],
            data: None,
        };
        assert_eq!(
            node.encode().len(),
            link_size(10, cid.to_bytes().len(), 1_500_000)
        );
    }
}
