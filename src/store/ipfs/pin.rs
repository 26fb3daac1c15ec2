//! Keeping content: recursive pins, the DAG walk that makes a DAG whole in the repository before it is pinned
//! (fetching what is missing when allowed), and the pin queries.

use std::collections::HashSet;

use bytes::Bytes;
use cid::Cid;
use futures::stream::{self, StreamExt, TryStreamExt};
use rust_ipfs::PinMode;

use super::IpfsNode;
use super::blocks::{BlockSource, MAX_DEPTH, links_of};
use crate::store::{Result, StoreError};

/// Blocks fetched or checked at once while walking a DAG.
const WALK_CONCURRENCY: usize = 16;

impl IpfsNode {
    /// Pins a DAG that is already complete in the repository (recursive pin).
    pub(super) async fn pin_local(&self, cid: &Cid) -> Result<()> {
        self.ipfs
            .insert_pin(cid)
            .recursive()
            .local()
            .await
            .map_err(StoreError::node)
    }

    /// Makes the whole DAG of `cid` local, fetching what is missing when `fetch_from_network` is on, then pins it
    /// recursively.
    pub async fn pin(&self, cid: &Cid) -> Result<()> {
        self.walk(&self.source, *cid).await?;
        self.pin_local(cid).await
    }

    /// Visits every block of the DAG of `root` (breadth first, [`WALK_CONCURRENCY`] at a time), making each local
    /// through `source` (local raw leaves are only checked for presence, not read). A missing block is
    /// [`StoreError::IncompleteDag`].
    pub(super) async fn walk(&self, source: &BlockSource, root: Cid) -> Result<()> {
        let mut seen = HashSet::from([root]);
        let mut frontier = vec![root];
        let mut depth = 0;
        while !frontier.is_empty() {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(StoreError::Malformed {
                    cid: root,
                    reason: format!("DAG deeper than {MAX_DEPTH}"),
                });
            }
            let results: Vec<(Cid, Result<Option<Bytes>>)> = stream::iter(frontier.drain(..))
                .map(|cid| async move { (cid, source.ensure(&cid).await) })
                .buffered(WALK_CONCURRENCY)
                .collect()
                .await;
            for (cid, result) in results {
                let data = match result {
                    Ok(data) => data,
                    Err(StoreError::NotFound(missing)) => {
                        return Err(StoreError::IncompleteDag {
                            root: Box::new(root),
                            missing: Box::new(missing),
                        });
                    }
                    Err(e) => return Err(e),
                };
                if let Some(data) = data {
                    for link in links_of(&cid, &data)? {
                        if seen.insert(link) {
                            frontier.push(link);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every recursively pinned root: what this node stores for good (each added file, directory or pinned DAG).
    pub async fn pinned(&self) -> Result<Vec<Cid>> {
        self.ipfs
            .list_pins(Some(PinMode::Recursive))
            .await
            .map_ok(|(cid, _)| cid)
            .try_collect()
            .await
            .map_err(StoreError::node)
    }

    /// Whether `cid` is pinned (directly, recursively or as part of a pinned DAG).
    pub async fn is_pinned(&self, cid: &Cid) -> Result<bool> {
        self.ipfs.is_pinned(cid).await.map_err(StoreError::node)
    }
}
