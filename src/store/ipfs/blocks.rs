//! Reading blocks and telling what they are: the block source (the repository, then the network when allowed, with
//! a deadline), the links of a block, the dag-pb/UnixFS decoding that makes a block an [`EntryKind`], and the
//! node's raw block queries (`?format=raw`, presence).

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use rust_ipfs::Ipfs;

use super::IpfsNode;
use crate::store::block::{self, DAG_CBOR, DAG_JSON, DAG_PB, RAW};
use crate::store::dagpb::{DataType, PbNode, UnixfsData};
use crate::store::{Result, StoreError};

/// Deepest DAG walked (a 1 MiB-chunk, 1024-wide tree is 4 levels deep for 1 PiB).
pub(super) const MAX_DEPTH: usize = 64;

/// What a content path resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A UnixFS file (raw leaf or dag-pb file) of `size` bytes.
    File {
        /// Its size in bytes.
        size: u64,
    },
    /// A UnixFS directory, flat or HAMT-sharded.
    Directory,
    /// Anything else (symlink, dag-cbor ...): only served as raw blocks or CAR.
    Other(String),
}

/// Where blocks come from: the repository, then (when allowed) the network, with a deadline.
#[derive(Clone)]
pub(super) struct BlockSource {
    pub(super) ipfs: Ipfs,
    pub(super) fetch_timeout: Option<Duration>,
}

impl BlockSource {
    /// The bytes of `cid`: inline (identity hash), local, or fetched over bitswap when allowed.
    pub(super) async fn get(&self, cid: &Cid) -> Result<Bytes> {
        if let Some(data) = block::inline_data(cid) {
            return Ok(Bytes::copy_from_slice(data));
        }
        match self.ipfs.repo().get_block_now(cid).await {
            Ok(Some(found)) => return Ok(found.into_inner().1),
            Ok(None) => {}
            Err(e) => return Err(StoreError::node(e)),
        }
        let Some(timeout) = self.fetch_timeout else {
            return Err(StoreError::NotFound(*cid));
        };
        // rust-ipfs enforces the timeout itself; the outer one is a backstop against a lost wakeup.
        let fetch = self.ipfs.get_block(cid).timeout(timeout);
        match tokio::time::timeout(timeout + Duration::from_secs(1), fetch).await {
            Ok(Ok(found)) => {
                let data = found.into_inner().1;
                block::verify(cid, &data)?;
                Ok(data)
            }
            Ok(Err(e)) if e.to_string().contains("timed out") => {
                Err(StoreError::FetchTimeout(*cid))
            }
            Ok(Err(e)) => Err(StoreError::FetchFailed {
                cid: *cid,
                reason: format!("{e:#}"),
            }),
            Err(_) => Err(StoreError::FetchTimeout(*cid)),
        }
    }

    /// Makes sure `cid` is local (fetching it when allowed) and returns its bytes when its links are needed. Raw
    /// blocks have no links: a local one is only checked for presence, not read.
    pub(super) async fn ensure(&self, cid: &Cid) -> Result<Option<Bytes>> {
        if cid.codec() == RAW && block::inline_data(cid).is_none() {
            let present = self
                .ipfs
                .repo()
                .contains(cid)
                .await
                .map_err(StoreError::node)?;
            if present {
                return Ok(None);
            }
        }
        self.get(cid).await.map(Some)
    }
}

/// The links of a block, in order.
pub(super) fn links_of(cid: &Cid, data: &Bytes) -> Result<Vec<Cid>> {
    match cid.codec() {
        RAW => Ok(Vec::new()),
        DAG_PB => Ok(decode_pb(cid, data)?
            .links
            .into_iter()
            .map(|l| l.cid)
            .collect()),
        DAG_CBOR | DAG_JSON => {
            // rust-ipfs's codecs find the links.
            let mut links = Vec::new();
            rust_ipfs::Block::new_unchecked(*cid, data.clone())
                .references(&mut links)
                .map_err(|e| StoreError::Malformed {
                    cid: *cid,
                    reason: e.to_string(),
                })?;
            Ok(links)
        }
        codec => Err(StoreError::Unsupported(format!(
            "{cid} uses codec 0x{codec:x}, whose links zipIQ cannot read (dag-scope=block or ?format=raw serve its \
             block as it is)"
        ))),
    }
}

pub(super) fn decode_pb(cid: &Cid, data: &Bytes) -> Result<PbNode> {
    PbNode::decode(data).map_err(|e| StoreError::Malformed {
        cid: *cid,
        reason: e.to_string(),
    })
}

pub(super) fn decode_unixfs(cid: &Cid, node: &PbNode) -> Result<UnixfsData> {
    let data = node.data.as_ref().ok_or_else(|| StoreError::Malformed {
        cid: *cid,
        reason: "dag-pb node without UnixFS data".into(),
    })?;
    UnixfsData::decode(data).map_err(|e| StoreError::Malformed {
        cid: *cid,
        reason: e.to_string(),
    })
}

/// What kind of entry a block is, and its file size.
pub(super) fn classify(cid: &Cid, data: &Bytes) -> Result<EntryKind> {
    match cid.codec() {
        RAW => Ok(EntryKind::File {
            size: data.len() as u64,
        }),
        DAG_PB => {
            let node = decode_pb(cid, data)?;
            let unixfs = decode_unixfs(cid, &node)?;
            match unixfs.kind {
                DataType::File | DataType::Raw => {
                    let size = file_size(cid, &node, &unixfs)?;
                    Ok(EntryKind::File { size })
                }
                DataType::Directory | DataType::HamtShard => Ok(EntryKind::Directory),
                DataType::Symlink => Ok(EntryKind::Other("UnixFS symlink".into())),
                DataType::Metadata => Ok(EntryKind::Other("UnixFS metadata node".into())),
            }
        }
        codec => Ok(EntryKind::Other(format!("codec 0x{codec:x}"))),
    }
}

/// The size of a dag-pb file node, checked against its children's sizes.
pub(super) fn file_size(cid: &Cid, node: &PbNode, unixfs: &UnixfsData) -> Result<u64> {
    if unixfs.blocksizes.len() != node.links.len() {
        return Err(StoreError::Malformed {
            cid: *cid,
            reason: format!(
                "{} blocksizes for {} links",
                unixfs.blocksizes.len(),
                node.links.len()
            ),
        });
    }
    let content = unixfs.content_size().ok_or_else(|| StoreError::Malformed {
        cid: *cid,
        reason: "sizes overflow".into(),
    })?;
    match unixfs.filesize {
        Some(size) if size != content => Err(StoreError::Malformed {
            cid: *cid,
            reason: format!("filesize {size} but its parts hold {content} bytes"),
        }),
        _ => Ok(content),
    }
}

impl IpfsNode {
    /// The block of `cid` (`?format=raw`).
    pub async fn block(&self, cid: &Cid) -> Result<Bytes> {
        self.source.get(cid).await
    }

    /// Whether the repository holds `cid`.
    pub async fn has_block(&self, cid: &Cid) -> Result<bool> {
        self.ipfs
            .repo()
            .contains(cid)
            .await
            .map_err(StoreError::node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dagpb;

    #[test]
    fn file_nodes_whose_sizes_disagree_are_malformed() {
        let leaf = block::cid_v1(RAW, b"abc");
        let mut data = UnixfsData::file(vec![3]);
        data.filesize = Some(4);
        let node = PbNode {
            links: vec![dagpb::PbLink {
                cid: leaf,
                name: Some(String::new()),
                tsize: Some(3),
            }],
            data: Some(Bytes::from(data.encode())),
        };
        let encoded = Bytes::from(node.encode());
        let cid = block::cid_v1(DAG_PB, &encoded);
        assert!(matches!(
            classify(&cid, &encoded),
            Err(StoreError::Malformed { .. })
        ));
    }
}
