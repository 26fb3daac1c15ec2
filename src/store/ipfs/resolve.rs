//! Path resolution: `/ipfs/{root}/{segments...}` walked through UnixFS directories, flat or HAMT-sharded, to the
//! CID it names, with the blocks read on the way.

use bytes::Bytes;
use cid::Cid;

use super::IpfsNode;
use super::blocks::{EntryKind, classify, decode_pb, decode_unixfs};
use crate::store::content_path::ContentPath;
use crate::store::dagpb::DataType;
use crate::store::hamt;
use crate::store::{Result, StoreError};

/// A resolved content path: the CID it ends at and what that is.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The CID the path starts from.
    pub root: Cid,
    /// The CID the path ends at.
    pub cid: Cid,
    /// What `cid` is.
    pub kind: EntryKind,
    /// Every block traversed before `cid`, root first (the proof of the path in a CAR response).
    pub path_blocks: Vec<Cid>,
    /// The block of `cid`.
    pub(super) block: Bytes,
}

impl IpfsNode {
    /// Resolves `/ipfs/{root}/{segments...}` through UnixFS directories (flat or HAMT-sharded).
    pub async fn resolve(&self, path: &ContentPath) -> Result<Resolved> {
        self.resolve_with(path, true).await
    }

    /// Like [`resolve`](Self::resolve), for answers that carry blocks as they are (`?format=raw`, CAR): a terminal
    /// block that does not decode is not an error but [`EntryKind::Other`], since its bytes are still what its CID
    /// names. The directories on the way must still decode.
    pub async fn resolve_block(&self, path: &ContentPath) -> Result<Resolved> {
        self.resolve_with(path, false).await
    }

    async fn resolve_with(&self, path: &ContentPath, strict: bool) -> Result<Resolved> {
        let mut cid = path.root;
        let mut data = self.source.get(&cid).await?;
        let mut path_blocks = Vec::with_capacity(path.segments.len());
        for name in &path.segments {
            match classify(&cid, &data)? {
                EntryKind::Directory => {
                    let (child, traversed) = self.lookup_child(cid, &data, name).await?;
                    path_blocks.extend(traversed);
                    cid = child;
                }
                EntryKind::Other(what) => {
                    return Err(StoreError::Unsupported(format!(
                        "path traversal through a {what} ({cid})"
                    )));
                }
                EntryKind::File { .. } => {
                    return Err(StoreError::NoSuchPath {
                        parent: cid,
                        name: name.clone(),
                    });
                }
            }
            data = self.source.get(&cid).await?;
        }
        let kind = match classify(&cid, &data) {
            Ok(kind) => kind,
            Err(StoreError::Malformed { reason, .. }) if !strict => {
                EntryKind::Other(format!("block that does not decode ({reason})"))
            }
            Err(e) => return Err(e),
        };
        Ok(Resolved {
            root: path.root,
            cid,
            kind,
            path_blocks,
            block: data,
        })
    }

    /// Finds `name` in the directory `dir` (whose block is `data`). Returns the child's CID and the blocks read on
    /// the way: the directory node, then any HAMT sub-shards.
    async fn lookup_child(&self, dir: Cid, data: &Bytes, name: &str) -> Result<(Cid, Vec<Cid>)> {
        let no_such = || StoreError::NoSuchPath {
            parent: dir,
            name: name.to_owned(),
        };
        let mut traversed = vec![dir];
        let mut node = decode_pb(&dir, data)?;
        let mut unixfs = decode_unixfs(&dir, &node)?;
        if unixfs.kind == DataType::Directory {
            let child = node
                .links
                .into_iter()
                .find(|l| l.name.as_deref() == Some(name))
                .map(|l| l.cid)
                .ok_or_else(no_such)?;
            return Ok((child, traversed));
        }
        let mut level = 0;
        loop {
            let shard = traversed.last().copied().unwrap_or(dir);
            let step =
                hamt::lookup(&node, &unixfs, name, level).map_err(|e| StoreError::Malformed {
                    cid: shard,
                    reason: e.to_string(),
                })?;
            match step {
                hamt::Step::Found(child) => return Ok((child, traversed)),
                hamt::Step::Absent => return Err(no_such()),
                hamt::Step::Descend(next) => {
                    let next_data = self.source.get(&next).await?;
                    node = decode_pb(&next, &next_data)?;
                    unixfs = decode_unixfs(&next, &node)?;
                    traversed.push(next);
                    level += 1;
                }
            }
        }
    }

    /// The block a path resolved to.
    pub fn resolved_block(&self, resolved: &Resolved) -> Bytes {
        resolved.block.clone()
    }
}
