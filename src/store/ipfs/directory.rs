//! Directory listings: the entries of a resolved UnixFS directory (flat or HAMT-sharded), whole and sorted, or a
//! page at a time.

use cid::Cid;

use super::IpfsNode;
use super::blocks::{EntryKind, decode_pb, decode_unixfs};
use super::resolve::Resolved;
use crate::store::dagpb::DataType;
use crate::store::hamt;
use crate::store::{Result, StoreError};

/// One link of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The entry's name.
    pub name: String,
    /// The entry's content.
    pub cid: Cid,
    /// Cumulative size of the linked DAG (`Tsize`), when the directory records it.
    pub tsize: Option<u64>,
}

impl IpfsNode {
    /// The entries of a resolved directory, sorted by name (a HAMT-sharded one has its shards read, and fetched
    /// when allowed).
    pub async fn list_directory(&self, dir: &Resolved) -> Result<Vec<DirectoryEntry>> {
        let (mut entries, _) = self.list_directory_page(dir, 0, usize::MAX).await?;
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(entries)
    }

    /// At most `limit` entries of a resolved directory from the `start`-th on, in the directory's own order (a
    /// plain directory's links are sorted by name; a HAMT-sharded one lists shard by shard), and whether more
    /// follow. Work and memory are bounded by `start + limit`: shards past the page are not read.
    pub async fn list_directory_page(
        &self,
        dir: &Resolved,
        start: usize,
        limit: usize,
    ) -> Result<(Vec<DirectoryEntry>, bool)> {
        if dir.kind != EntryKind::Directory {
            return Err(StoreError::Unsupported(format!(
                "{} is not a directory",
                dir.cid
            )));
        }
        let mut entries = Vec::new();
        let mut seen = 0usize;
        // Depth first, shards in link order, so that pages are stable for one CID.
        let mut shards = vec![(dir.cid, Some(dir.block.clone()), 0usize)];
        while let Some((cid, data, level)) = shards.pop() {
            // A subshard is read when its turn comes: never when the page fills before it.
            let data = match data {
                Some(data) => data,
                None => self.source.get(&cid).await?,
            };
            let node = decode_pb(&cid, &data)?;
            let unixfs = decode_unixfs(&cid, &node)?;
            let links = if unixfs.kind == DataType::HamtShard {
                if level >= hamt::MAX_LEVELS {
                    return Err(StoreError::Malformed {
                        cid,
                        reason: "HAMT too deep".into(),
                    });
                }
                let (found, subshards) =
                    hamt::entries(&node, &unixfs).map_err(|e| StoreError::Malformed {
                        cid,
                        reason: e.to_string(),
                    })?;
                // Pushed in reverse so the first subshard is read first.
                for sub in subshards.into_iter().rev() {
                    shards.push((sub, None, level + 1));
                }
                found
            } else {
                node.links
            };
            for l in links {
                if seen >= start {
                    if entries.len() == limit {
                        return Ok((entries, true));
                    }
                    entries.push(DirectoryEntry {
                        name: l.name.unwrap_or_default(),
                        cid: l.cid,
                        tsize: l.tsize,
                    });
                }
                seen += 1;
            }
        }
        Ok((entries, false))
    }
}
