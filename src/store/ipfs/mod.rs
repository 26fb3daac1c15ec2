//! zipIQ's embedded IPFS node: a rust-ipfs node with a persistent repository (blocks and pins on disk) and a
//! persistent ed25519 libp2p identity, serving blocks over bitswap and announcing pinned roots in the DHT.
//!
//! Files are imported by zipIQ's own importer (`store::unixfs`, called from `add.rs`), not rust-ipfs's adder,
//! whose layout differs from the `unixfs-v1-2025` profile; rust-ipfs stores, pins, exchanges and announces the
//! blocks. Reads are local-only unless `fetch_from_network` is on, and then every block fetch is bounded by
//! `fetch_timeout_ms`. Announcing runs on its own task and never delays an add.
//!
//! This file holds the node type and its lifecycle (start, health, shutdown). The rest, one concern a file:
//! `identity.rs` (the key file), `blocks.rs` (where blocks come from and what each is), `add.rs` (files and
//! directories added), `pin.rs` (pins and the DAG walk), `announce.rs` (the DHT announcer), `resolve.rs` (content
//! paths), `directory.rs` (listings), `file_read.rs` (ranged file reads), `car_io.rs` (CAR export and import),
//! `peers.rs` (listen addresses, dials, provider lookups).

mod add;
mod announce;
mod blocks;
mod car_io;
mod directory;
mod file_read;
mod identity;
mod peers;
mod pin;
mod resolve;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rust_ipfs::p2p::IdentifyConfiguration;
use rust_ipfs::repo::LockError;
use rust_ipfs::{Ipfs, Keypair, Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use self::blocks::EntryKind;
pub use self::car_io::DagScope;
pub use self::directory::DirectoryEntry;
pub use self::resolve::Resolved;

use self::announce::{Announce, run_announcer};
use self::blocks::BlockSource;
use self::identity::{IDENTITY_FILE, load_or_create_identity};
use self::peers::peer_of;
use crate::store::{IpfsConfig, Result, StoreError};

/// The embedded IPFS node.
pub struct IpfsNode {
    ipfs: Ipfs,
    peer_id: PeerId,
    source: BlockSource,
    local: BlockSource,
    announcer: Option<mpsc::Sender<Announce>>,
    announce_task: Option<JoinHandle<()>>,
    expects_listeners: bool,
    stopped: AtomicBool,
}

impl std::fmt::Debug for IpfsNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpfsNode")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

fn parse_multiaddrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|text| {
            text.parse::<Multiaddr>()
                .map_err(|e| StoreError::Config(format!("{what} address {text:?}: {e}")))
        })
        .collect()
}

async fn start_rust_ipfs(
    keypair: &Keypair,
    repo_dir: &Path,
    listen: &[Multiaddr],
    bootstrap: &[Multiaddr],
) -> Result<Ipfs> {
    let identify = IdentifyConfiguration {
        agent_version: format!("zipiq/{}", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    let mut builder = rust_ipfs::builder::DefaultIpfsBuilder::with_keypair(keypair)
        .map_err(|e| StoreError::Identity(e.to_string()))?
        .set_path(repo_dir)
        .enable_tcp()
        .enable_quic()
        .with_identify(identify)
        .with_ping(Default::default())
        .with_bitswap()
        .with_kademlia()
        .set_listening_addrs(listen.to_vec());
    for addr in bootstrap {
        builder = builder.add_bootstrap(addr.clone());
    }
    builder.start().await.map_err(|e| {
        if e.chain().any(|c| c.downcast_ref::<LockError>().is_some()) {
            StoreError::RepoLocked {
                path: repo_dir.to_path_buf(),
            }
        } else {
            StoreError::node(e)
        }
    })
}

impl IpfsNode {
    /// Opens (or creates) the repository and identity under `cfg.repo_dir`, starts the swarm on `cfg.listen`,
    /// dials the bootstrap peers and starts the announcer. Returns once the node listens.
    pub async fn start(cfg: &IpfsConfig) -> Result<IpfsNode> {
        let listen = parse_multiaddrs(&cfg.listen, "listen")?;
        let bootstrap = parse_multiaddrs(&cfg.bootstrap, "bootstrap")?;
        if let Some(addr) = bootstrap.iter().find(|a| peer_of(a).is_none()) {
            return Err(StoreError::Config(format!(
                "bootstrap address {addr} must end in /p2p/<peer id>"
            )));
        }
        if cfg.fetch_from_network && cfg.fetch_timeout_ms == 0 {
            return Err(StoreError::Config(
                "fetch_timeout_ms must be above 0 when fetch_from_network is on".into(),
            ));
        }
        crate::secrets::create_private_dir(&cfg.repo_dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cfg.repo_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let keypair = load_or_create_identity(&cfg.repo_dir.join(IDENTITY_FILE))?;
        let peer_id = keypair.public().to_peer_id();

        // A node that just shut down in this process may hold the repository lock for a moment longer while its
        // swarm task winds down: retry briefly before calling the repository taken.
        let mut attempt = 0;
        let ipfs = loop {
            match start_rust_ipfs(&keypair, &cfg.repo_dir, &listen, &bootstrap).await {
                Err(StoreError::RepoLocked { .. }) if attempt < 30 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };

        for addr in &bootstrap {
            if let Err(e) = ipfs.add_bootstrap(addr.clone()).await {
                tracing::warn!(%addr, error = %format!("{e:#}"), "could not add bootstrap peer");
            }
        }
        if !bootstrap.is_empty() {
            let dht = ipfs.clone();
            tokio::spawn(async move {
                if let Err(e) = dht.bootstrap().await {
                    tracing::warn!(error = %format!("{e:#}"), "DHT bootstrap failed");
                }
            });
        }

        if !listen.is_empty() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let addrs = ipfs.listening_addresses().await.unwrap_or_default();
                if !addrs.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    ipfs.exit_daemon().await;
                    return Err(StoreError::Config(format!(
                        "could not listen on any of {:?} (ports in use?)",
                        cfg.listen
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        let (announcer, announce_task) = if cfg.announce {
            let (tx, rx) = mpsc::channel(8192);
            let task = tokio::spawn(run_announcer(ipfs.clone(), rx));
            (Some(tx), Some(task))
        } else {
            (None, None)
        };
        let fetch_timeout = cfg
            .fetch_from_network
            .then(|| Duration::from_millis(cfg.fetch_timeout_ms));
        tracing::info!(%peer_id, repo = %cfg.repo_dir.display(), fetch_from_network = cfg.fetch_from_network, "IPFS node started");
        Ok(IpfsNode {
            source: BlockSource {
                ipfs: ipfs.clone(),
                fetch_timeout,
            },
            local: BlockSource {
                ipfs: ipfs.clone(),
                fetch_timeout: None,
            },
            ipfs,
            peer_id,
            announcer,
            announce_task,
            expects_listeners: !listen.is_empty(),
            stopped: AtomicBool::new(false),
        })
    }

    /// The node's libp2p peer id (from its identity key).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The swarm task answers and, when listen addresses are configured, listens on at least one.
    pub async fn is_healthy(&self) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        match tokio::time::timeout(Duration::from_secs(2), self.ipfs.listening_addresses()).await {
            Ok(Ok(addrs)) => !self.expects_listeners || !addrs.is_empty(),
            _ => false,
        }
    }

    /// Stops announcing and the swarm. The repository lock is released once the node is dropped.
    pub async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(task) = &self.announce_task {
            task.abort();
        }
        self.ipfs.clone().exit_daemon().await;
        tracing::info!(peer_id = %self.peer_id, "IPFS node stopped");
    }
}

impl Drop for IpfsNode {
    fn drop(&mut self) {
        if let Some(task) = &self.announce_task {
            task.abort();
        }
    }
}
