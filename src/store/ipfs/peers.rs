//! The node among its peers: the addresses it listens on, dials, the count of connected peers and DHT provider
//! lookups.

use std::collections::HashSet;
use std::time::Duration;

use cid::Cid;
use futures::stream::StreamExt;
use rust_ipfs::{DialOpts, Multiaddr, PeerId, Protocol};

use super::IpfsNode;
use crate::store::{Result, StoreError};

pub(super) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

impl IpfsNode {
    /// The addresses the swarm listens on, each ending in `/p2p/<peer id>` (what another node dials).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        let addrs = self
            .ipfs
            .listening_addresses()
            .await
            .map_err(StoreError::node)?;
        Ok(addrs
            .into_iter()
            .map(|a| {
                if peer_of(&a).is_some() {
                    a
                } else {
                    a.with(Protocol::P2p(self.peer_id))
                }
            })
            .collect())
    }

    /// How many peers are connected.
    pub async fn connected_peers(&self) -> usize {
        self.ipfs.connected().await.map(|p| p.len()).unwrap_or(0)
    }

    /// Dials `addr`; with a `/p2p/<peer id>` suffix, returns once that peer is connected (or after 10 s).
    pub async fn connect(&self, addr: Multiaddr) -> Result<()> {
        let peer = peer_of(&addr);
        if let Some(peer) = peer
            && self.ipfs.is_connected(peer).await.unwrap_or(false)
        {
            return Ok(());
        }
        let opts = match peer {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        self.ipfs.connect(opts).await.map_err(StoreError::node)?;
        if let Some(peer) = peer {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !self.ipfs.is_connected(peer).await.unwrap_or(false) {
                if tokio::time::Instant::now() >= deadline {
                    return Err(StoreError::Node(format!(
                        "no connection to {peer} after 10 s"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Asks the DHT which peers provide `cid`, for at most `timeout`.
    pub async fn find_providers(&self, cid: &Cid, timeout: Duration) -> Result<Vec<PeerId>> {
        let mut found = HashSet::new();
        let lookup = async {
            let mut providers = self
                .ipfs
                .get_providers(*cid)
                .await
                .map_err(StoreError::node)?;
            while let Some(batch) = providers.next().await {
                match batch {
                    Ok(peers) => found.extend(peers),
                    Err(e) => tracing::debug!(%cid, error = %e, "provider lookup step failed"),
                }
            }
            Ok::<_, StoreError>(())
        };
        match tokio::time::timeout(timeout, lookup).await {
            Ok(result) => result?,
            Err(_) => tracing::debug!(%cid, "provider lookup timed out"),
        }
        Ok(found.into_iter().collect())
    }

    /// Puts the DHT in server mode. A node only becomes a DHT server on its own once an external address is
    /// confirmed, which never happens on loopback; tests use this to build a two-node DHT.
    #[cfg(test)]
    pub(crate) async fn force_dht_server(&self) {
        let _ = self.ipfs.dht_mode(rust_ipfs::DhtMode::Server).await;
    }
}
