//! Announcing roots in the DHT: the queue the node fills without waiting, the reprovide of every pinned root after a
//! start, and the task that provides roots a few at once within rust-ipfs's provider-record limit (keeping a reserve
//! for directories).

use std::collections::HashSet;
use std::time::Duration;

use cid::Cid;
use futures::stream::{StreamExt, TryStreamExt};
use rust_ipfs::{Ipfs, PinMode};
use tokio::sync::mpsc;

use super::IpfsNode;
use super::blocks::{EntryKind, classify};
use crate::store::block::DAG_PB;
use crate::store::{Result, StoreError};

/// libp2p-kad's in-memory store (connexa 0.5.3 keeps its default config) refuses a 1025th provided key.
const PROVIDE_LIMIT: usize = 1024;
/// Keys kept free for directories (finished broadcasts) once files have used the rest.
const DIRECTORY_RESERVE: usize = 128;
/// Longest one announcement may take (a DHT `ADD_PROVIDER` walk).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Announcements in flight at once.
const ANNOUNCE_CONCURRENCY: usize = 8;

/// A request to announce a root, with its kind (directories keep a reserve of provider-record slots).
pub(super) struct Announce {
    cid: Cid,
    directory: bool,
}

impl IpfsNode {
    pub(super) fn queue_announce(&self, cid: Cid, directory: bool) {
        if let Some(tx) = &self.announcer
            && tx.try_send(Announce { cid, directory }).is_err()
        {
            metrics::counter!("zipiq_ipfs_announce_total", "outcome" => "queue_full").increment(1);
            tracing::warn!(%cid, "announce queue full; not announcing");
        }
    }

    /// Queues an announcement of every recursively pinned root, directories first (provider records live in
    /// memory, so the lead calls this after every start). Returns how many were queued.
    pub async fn reprovide_all(&self) -> Result<usize> {
        let Some(tx) = &self.announcer else {
            return Ok(0);
        };
        let pins: Vec<Cid> = self
            .ipfs
            .list_pins(Some(PinMode::Recursive))
            .await
            .map_ok(|(cid, _)| cid)
            .try_collect()
            .await
            .map_err(StoreError::node)?;
        let mut directories = Vec::new();
        let mut files = Vec::new();
        for cid in pins {
            let is_directory = cid.codec() == DAG_PB
                && matches!(
                    self.local.get(&cid).await.and_then(|d| classify(&cid, &d)),
                    Ok(EntryKind::Directory)
                );
            if is_directory {
                directories.push(cid);
            } else {
                files.push(cid);
            }
        }
        let total = directories.len() + files.len();
        for (cid, directory) in directories
            .into_iter()
            .map(|c| (c, true))
            .chain(files.into_iter().map(|c| (c, false)))
        {
            tx.send(Announce { cid, directory })
                .await
                .map_err(|_| StoreError::Node("announcer stopped".into()))?;
        }
        Ok(total)
    }
}

/// Announces roots in the DHT, at most [`ANNOUNCE_CONCURRENCY`] at once, within the provider-record limit.
pub(super) async fn run_announcer(ipfs: Ipfs, mut rx: mpsc::Receiver<Announce>) {
    let mut provided: HashSet<Cid> = HashSet::new();
    let mut warned_full = false;
    let mut inflight = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            request = rx.recv(), if inflight.len() < ANNOUNCE_CONCURRENCY => {
                let Some(Announce { cid, directory }) = request else { break };
                if provided.contains(&cid) {
                    continue;
                }
                let limit = if directory { PROVIDE_LIMIT } else { PROVIDE_LIMIT - DIRECTORY_RESERVE };
                if provided.len() >= limit {
                    metrics::counter!("zipiq_ipfs_announce_total", "outcome" => "over_limit").increment(1);
                    if !warned_full {
                        warned_full = true;
                        tracing::warn!(provided = provided.len(), "provider-record limit of rust-ipfs reached; further roots are not announced until restart (they stay reachable over bitswap)");
                    }
                    continue;
                }
                provided.insert(cid);
                let ipfs = ipfs.clone();
                inflight.push(async move {
                    let outcome = tokio::time::timeout(ANNOUNCE_TIMEOUT, ipfs.provide(cid)).await;
                    (cid, outcome)
                });
            }
            Some((cid, outcome)) = inflight.next(), if !inflight.is_empty() => {
                match outcome {
                    Ok(Ok(())) => {
                        metrics::counter!("zipiq_ipfs_announce_total", "outcome" => "ok").increment(1);
                        tracing::debug!(%cid, "announced");
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("zipiq_ipfs_announce_total", "outcome" => "failed").increment(1);
                        tracing::debug!(%cid, error = %format!("{e:#}"), "announce did not reach the DHT (record kept locally, republished by kad)");
                    }
                    Err(_) => {
                        metrics::counter!("zipiq_ipfs_announce_total", "outcome" => "timeout").increment(1);
                        tracing::debug!(%cid, "announce timed out (record kept locally)");
                    }
                }
            }
        }
    }
}
