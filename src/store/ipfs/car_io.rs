//! CAR v1 in and out of the node: the CAR of a resolved path limited by the gateway's `dag-scope`, streamed; a whole
//! DAG written as a CAR; a CAR imported (blocks verified and stored, each root checked complete, pinned, announced).

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use cid::Cid;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::IpfsNode;
use super::blocks::{
    BlockSource, EntryKind, MAX_DEPTH, classify, decode_pb, decode_unixfs, links_of,
};
use super::resolve::Resolved;
use crate::store::block::{self, DAG_PB};
use crate::store::car::{self, CarReader};
use crate::store::content_path::ContentPath;
use crate::store::dagpb::DataType;
use crate::store::hamt;
use crate::store::{Result, StoreError};

/// Bytes of blocks gathered before one write while importing a CAR.
const IMPORT_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Which blocks below the terminal CID a CAR carries (the gateway spec's `dag-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DagScope {
    /// The whole DAG.
    #[default]
    All,
    /// What a file needs to be read whole; for a directory, its own node.
    Entity,
    /// The terminal block only.
    Block,
}

struct CarExport {
    source: BlockSource,
    out: VecDeque<Bytes>,
    path: VecDeque<Cid>,
    /// (cid, its bytes when already known, depth)
    stack: Vec<(Cid, Option<Bytes>, usize)>,
    seen: HashSet<Cid>,
    descend: Descend,
}

/// Which links of each exported block the CAR follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Descend {
    All,
    /// Only HAMT sub-shard links.
    Shards,
    No,
}

/// The sub-shard links of a HAMT node (none for any other block).
fn shard_links(cid: &Cid, data: &Bytes) -> Result<Vec<Cid>> {
    if cid.codec() != DAG_PB {
        return Ok(Vec::new());
    }
    let node = decode_pb(cid, data)?;
    let unixfs = decode_unixfs(cid, &node)?;
    if unixfs.kind != DataType::HamtShard {
        return Ok(Vec::new());
    }
    hamt::entries(&node, &unixfs)
        .map(|(_, shards)| shards)
        .map_err(|e| StoreError::Malformed {
            cid: *cid,
            reason: e.to_string(),
        })
}

impl CarExport {
    fn emit(&mut self, cid: &Cid, data: &Bytes) {
        self.out
            .push_back(Bytes::from(car::section_prefix(cid, data.len())));
        self.out.push_back(data.clone());
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(chunk) = self.out.pop_front() {
                return Ok(Some(chunk));
            }
            if let Some(cid) = self.path.pop_front() {
                if self.seen.insert(cid) {
                    let data = self.source.get(&cid).await?;
                    self.emit(&cid, &data);
                }
                continue;
            }
            let Some((cid, known, depth)) = self.stack.pop() else {
                return Ok(None);
            };
            if !self.seen.insert(cid) {
                continue;
            }
            let data = match known {
                Some(data) => data,
                None => self.source.get(&cid).await?,
            };
            self.emit(&cid, &data);
            if self.descend != Descend::No {
                if depth >= MAX_DEPTH {
                    return Err(StoreError::Malformed {
                        cid,
                        reason: format!("DAG deeper than {MAX_DEPTH}"),
                    });
                }
                let links = match self.descend {
                    Descend::All => links_of(&cid, &data)?,
                    _ => shard_links(&cid, &data)?,
                };
                self.stack
                    .extend(links.into_iter().rev().map(|l| (l, None, depth + 1)));
            }
        }
    }
}

impl IpfsNode {
    /// A CAR v1 of a resolved path, as a stream of byte chunks: the header (root: the path's root CID), the blocks
    /// traversed to reach the terminal CID, then the terminal DAG in depth-first pre-order without duplicates,
    /// limited by `scope`.
    ///
    /// Fails before anything is streamed when the terminal block's links cannot be read and `scope` needs them
    /// (a codec zipIQ cannot read: [`StoreError::Unsupported`]; a block that does not decode:
    /// [`StoreError::Malformed`]), so that an HTTP answer can still carry a status. A block deeper in the DAG that
    /// fails ends the stream with that error.
    pub fn car_stream(
        &self,
        resolved: &Resolved,
        scope: DagScope,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let mut queue = VecDeque::new();
        queue.push_back(Bytes::from(car::encode_header(&[resolved.root])));
        let descend = match (&resolved.kind, scope) {
            (_, DagScope::All) | (EntryKind::File { .. }, DagScope::Entity) => Descend::All,
            // A directory's entity is its own node and, when sharded, its shard nodes; never its children.
            (EntryKind::Directory, DagScope::Entity) => Descend::Shards,
            _ => Descend::No,
        };
        match descend {
            Descend::All => {
                links_of(&resolved.cid, &resolved.block)?;
            }
            Descend::Shards => {
                shard_links(&resolved.cid, &resolved.block)?;
            }
            Descend::No => {}
        }
        let state = CarExport {
            source: self.source.clone(),
            out: queue,
            path: resolved.path_blocks.iter().copied().collect(),
            stack: vec![(resolved.cid, Some(resolved.block.clone()), 0)],
            seen: HashSet::new(),
            descend,
        };
        Ok(stream::try_unfold(state, |mut state| async move {
            let next = state.next_chunk().await?;
            Ok(next.map(|chunk| (chunk, state)))
        })
        .boxed())
    }

    /// Writes the whole DAG of `root` as a CAR v1 to `writer`.
    pub async fn export_car<W: AsyncWrite + Unpin>(&self, root: &Cid, mut writer: W) -> Result<()> {
        let path = ContentPath {
            root: *root,
            segments: Vec::new(),
            trailing_slash: false,
        };
        let resolved = self.resolve(&path).await?;
        let mut chunks = self.car_stream(&resolved, DagScope::All)?;
        while let Some(chunk) = chunks.next().await {
            writer.write_all(&chunk?).await?;
        }
        writer.flush().await?;
        Ok(())
    }

    /// Imports a CAR v1: verifies every block against its CID, stores them, checks each root's DAG is complete,
    /// pins the roots recursively and queues their announcement. Returns the roots.
    pub async fn import_car<R: AsyncRead + Unpin>(&self, reader: R) -> Result<Vec<Cid>> {
        let mut car = CarReader::new(reader).await?;
        let roots = car.roots().to_vec();
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        while let Some((cid, data)) = car.next_block().await? {
            if block::inline_data(&cid).is_some() {
                continue;
            }
            batch_bytes += data.len();
            batch.push(rust_ipfs::Block::new_unchecked(cid, data));
            if batch_bytes >= IMPORT_BATCH_BYTES {
                self.ipfs
                    .repo()
                    .put_blocks(std::mem::take(&mut batch))
                    .await
                    .map_err(StoreError::node)?;
                batch_bytes = 0;
            }
        }
        self.ipfs
            .repo()
            .put_blocks(batch)
            .await
            .map_err(StoreError::node)?;
        for root in &roots {
            self.walk(&self.local, *root).await?;
            self.pin_local(root).await?;
            let directory = matches!(
                self.local.get(root).await.and_then(|d| classify(root, &d)),
                Ok(EntryKind::Directory)
            );
            self.queue_announce(*root, directory);
        }
        Ok(roots)
    }
}
