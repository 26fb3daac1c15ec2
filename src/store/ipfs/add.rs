//! Adding content: a file imported with the `unixfs-v1-2025` profile, or a directory that links DAGs already in the
//! repository; each stored, pinned and queued for announcement.

use bytes::Bytes;
use cid::Cid;

use super::IpfsNode;
use super::blocks::{EntryKind, classify, decode_pb};
use crate::store::block::{self, DAG_PB, RAW};
use crate::store::dagpb::{self, DirectoryLink};
use crate::store::unixfs;
use crate::store::{Result, StoreError};

impl IpfsNode {
    /// Adds `bytes` as a UnixFS file (`unixfs-v1-2025` profile), pins it and queues its announcement.
    pub async fn add(&self, bytes: Bytes) -> Result<Cid> {
        let len = bytes.len();
        let dag = tokio::task::spawn_blocking(move || unixfs::import_file(&bytes))
            .await
            .map_err(|e| StoreError::Node(format!("import task failed: {e}")))?;
        let root = self.store_dag(dag.blocks, dag.root, false).await?;
        metrics::counter!("zipiq_ipfs_added_bytes_total").increment(len as u64);
        Ok(root)
    }

    /// Makes a UnixFS directory linking existing local DAGs by CID (nothing is re-added), pins it and queues its
    /// announcement. `size` is each entry's file size; it must match the DAG for files.
    pub async fn add_directory(&self, entries: &[(String, Cid, u64)]) -> Result<Cid> {
        let mut links = Vec::with_capacity(entries.len());
        for (name, cid, size) in entries {
            dagpb::check_entry_name(name)?;
            let (tsize, file_size) = self.measure(cid).await?;
            if let Some(actual) = file_size
                && actual != *size
            {
                return Err(StoreError::SizeMismatch {
                    cid: *cid,
                    expected: *size,
                    actual,
                });
            }
            self.walk(&self.local, *cid).await?;
            links.push(DirectoryLink {
                name: name.clone(),
                cid: *cid,
                tsize,
            });
        }
        let dir = unixfs::build_directory(links)?;
        self.store_dag(dir.blocks, dir.root, true).await
    }

    /// Puts a DAG just built here into the repository, pins its root and queues its announcement (`directory`:
    /// announced as a directory, which keeps a reserve of provider-record slots).
    async fn store_dag(
        &self,
        blocks: Vec<(Cid, Bytes)>,
        root: Cid,
        directory: bool,
    ) -> Result<Cid> {
        let blocks = blocks
            .into_iter()
            .map(|(cid, data)| rust_ipfs::Block::new_unchecked(cid, data))
            .collect();
        self.ipfs
            .repo()
            .put_blocks(blocks)
            .await
            .map_err(StoreError::node)?;
        self.pin_local(&root).await?;
        self.queue_announce(root, directory);
        Ok(root)
    }

    /// The cumulative size of a local DAG root and, for a file, its size in bytes.
    async fn measure(&self, cid: &Cid) -> Result<(u64, Option<u64>)> {
        if cid.codec() == RAW && block::inline_data(cid).is_none() {
            let repo = self.ipfs.repo();
            if !repo.contains(cid).await.map_err(StoreError::node)? {
                return Err(StoreError::NotFound(*cid));
            }
            let size = repo
                .get_blocks_size(std::slice::from_ref(cid))
                .await
                .map_err(StoreError::node)?
                .unwrap_or(0) as u64;
            return Ok((size, Some(size)));
        }
        let data = self.local.get(cid).await?;
        let kind = classify(cid, &data)?;
        let links_total = if cid.codec() == DAG_PB {
            decode_pb(cid, &data)?
                .links
                .iter()
                .map(|l| l.tsize.unwrap_or(0))
                .sum::<u64>()
        } else {
            0
        };
        let tsize = data.len() as u64 + links_total;
        match kind {
            EntryKind::File { size } => Ok((tsize, Some(size))),
            _ => Ok((tsize, None)),
        }
    }
}
