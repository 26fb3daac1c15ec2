//! zipIQ's embedded IPFS node: a rust-ipfs node with a persistent repository (blocks and pins on disk) and a
//! persistent ed25519 libp2p identity, serving blocks over bitswap and announcing pinned roots in the DHT.
//!
//! Files are imported here (see `unixfs.rs`) instead of with rust-ipfs's adder, whose layout differs from the
//! `unixfs-v1-2025` profile; rust-ipfs stores, pins, exchanges and announces the blocks. Reads are local-only unless
//! `fetch_from_network` is on, and then every block fetch is bounded by `fetch_timeout_ms`. Announcing runs on its
//! own task and never delays an add.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use rust_ipfs::p2p::IdentifyConfiguration;
use rust_ipfs::repo::LockError;
use rust_ipfs::{DialOpts, Ipfs, Keypair, Multiaddr, PeerId, PinMode, Protocol};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::block::{self, DAG_CBOR, DAG_JSON, DAG_PB, RAW};
use crate::store::car::{self, CarReader};
use crate::store::content_path::ContentPath;
use crate::store::dagpb::{self, DataType, DirectoryLink, PbNode, UnixfsData};
use crate::store::hamt;
use crate::store::unixfs;
use crate::store::{IpfsConfig, Result, StoreError};

/// File name of the libp2p identity key (protobuf-encoded ed25519 keypair) inside the repository.
pub const IDENTITY_FILE: &str = "identity.key";
/// libp2p-kad's in-memory store (connexa 0.5.3 keeps its default config) refuses a 1025th provided key.
const PROVIDE_LIMIT: usize = 1024;
/// Keys kept free for directories (finished broadcasts) once files have used the rest.
const DIRECTORY_RESERVE: usize = 128;
/// Longest one announcement may take (a DHT `ADD_PROVIDER` walk).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Announcements in flight at once.
const ANNOUNCE_CONCURRENCY: usize = 8;
/// Blocks fetched or checked at once while walking a DAG.
const WALK_CONCURRENCY: usize = 16;
/// Deepest DAG walked (a 1 MiB-chunk, 1024-wide tree is 4 levels deep for 1 PiB).
const MAX_DEPTH: usize = 64;
/// Bytes of blocks gathered before one write while importing a CAR.
const IMPORT_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// What a content path resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A UnixFS file (raw leaf or dag-pb file) of `size` bytes.
    File { size: u64 },
    /// A UnixFS directory, flat or HAMT-sharded.
    Directory,
    /// Anything else (symlink, dag-cbor ...): only served as raw blocks or CAR.
    Other(String),
}

/// A resolved content path: the CID it ends at and what that is.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The CID the path starts from.
    pub root: Cid,
    /// The CID the path ends at.
    pub cid: Cid,
    pub kind: EntryKind,
    /// Every block traversed before `cid`, root first (the proof of the path in a CAR response).
    pub path_blocks: Vec<Cid>,
    /// The block of `cid`.
    block: Bytes,
}

/// One link of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub name: String,
    pub cid: Cid,
    /// Cumulative size of the linked DAG (`Tsize`), when the directory records it.
    pub tsize: Option<u64>,
}

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

/// Where blocks come from: the repository, then (when allowed) the network, with a deadline.
#[derive(Clone)]
struct BlockSource {
    ipfs: Ipfs,
    fetch_timeout: Option<Duration>,
}

impl BlockSource {
    /// The bytes of `cid`: inline (identity hash), local, or fetched over bitswap when allowed.
    async fn get(&self, cid: &Cid) -> Result<Bytes> {
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
    async fn ensure(&self, cid: &Cid) -> Result<Option<Bytes>> {
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
fn links_of(cid: &Cid, data: &Bytes) -> Result<Vec<Cid>> {
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

fn decode_pb(cid: &Cid, data: &Bytes) -> Result<PbNode> {
    PbNode::decode(data).map_err(|e| StoreError::Malformed {
        cid: *cid,
        reason: e.to_string(),
    })
}

fn decode_unixfs(cid: &Cid, node: &PbNode) -> Result<UnixfsData> {
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
fn classify(cid: &Cid, data: &Bytes) -> Result<EntryKind> {
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
fn file_size(cid: &Cid, node: &PbNode, unixfs: &UnixfsData) -> Result<u64> {
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

/// A request to announce a root, with its kind (directories keep a reserve of provider-record slots).
struct Announce {
    cid: Cid,
    directory: bool,
}

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

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Loads the node's ed25519 identity from `path`, or creates one there (mode 0600, written atomically).
pub fn load_or_create_identity(path: &Path) -> Result<Keypair> {
    match std::fs::read(path) {
        Ok(bytes) => {
            restrict_permissions(path)?;
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
                StoreError::Identity(format!("{} is not a libp2p key: {e}", path.display()))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let encoded = keypair
                .to_protobuf_encoding()
                .map_err(|e| StoreError::Identity(e.to_string()))?;
            write_private_file(path, &encoded)?;
            Ok(keypair)
        }
        Err(e) => Err(StoreError::Identity(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        // Best effort: makes the rename itself durable.
        let _ = dir.sync_all();
    }
    Ok(())
}

fn restrict_permissions(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "identity key was readable by others; restricting it to 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let _ = path;
    Ok(())
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

    /// Adds `bytes` as a UnixFS file (`unixfs-v1-2025` profile), pins it and queues its announcement.
    pub async fn add(&self, bytes: Bytes) -> Result<Cid> {
        let len = bytes.len();
        let dag = tokio::task::spawn_blocking(move || unixfs::import_file(&bytes))
            .await
            .map_err(|e| StoreError::Node(format!("import task failed: {e}")))?;
        let blocks = dag
            .blocks
            .into_iter()
            .map(|(cid, data)| rust_ipfs::Block::new_unchecked(cid, data))
            .collect();
        self.ipfs
            .repo()
            .put_blocks(blocks)
            .await
            .map_err(StoreError::node)?;
        self.pin_local(&dag.root).await?;
        metrics::counter!("zipiq_ipfs_added_bytes_total").increment(len as u64);
        self.queue_announce(dag.root, false);
        Ok(dag.root)
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
        let blocks = dir
            .blocks
            .into_iter()
            .map(|(cid, data)| rust_ipfs::Block::new_unchecked(cid, data))
            .collect();
        self.ipfs
            .repo()
            .put_blocks(blocks)
            .await
            .map_err(StoreError::node)?;
        self.pin_local(&dir.root).await?;
        self.queue_announce(dir.root, true);
        Ok(dir.root)
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

    /// Pins a DAG that is already complete in the repository (recursive pin).
    async fn pin_local(&self, cid: &Cid) -> Result<()> {
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
    async fn walk(&self, source: &BlockSource, root: Cid) -> Result<()> {
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

    fn queue_announce(&self, cid: Cid, directory: bool) {
        if let Some(tx) = &self.announcer
            && tx.try_send(Announce { cid, directory }).is_err()
        {
            metrics::counter!("zipiq_ipfs_announce_total", "outcome" => "queue_full").increment(1);
            tracing::warn!(%cid, "announce queue full; not announcing");
        }
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

    /// The bytes `range` (end exclusive, clamped to the file) of a resolved file, streamed leaf by leaf as
    /// zero-copy slices of the blocks. Only the blocks overlapping the range are read or fetched.
    pub fn read_file(
        &self,
        file: &Resolved,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes>> {
        let EntryKind::File { size } = file.kind else {
            let cid = file.cid;
            return stream::once(async move {
                Err(StoreError::Unsupported(format!("{cid} is not a file")))
            })
            .boxed();
        };
        let range = range.start.min(size)..range.end.min(size);
        if range.is_empty() {
            return stream::empty().boxed();
        }
        let state = FileRead {
            source: self.source.clone(),
            range,
            stack: vec![Pending {
                cid: file.cid,
                offset: 0,
                len: size,
                depth: 0,
                block: Some(file.block.clone()),
            }],
        };
        stream::try_unfold(state, |mut state| async move {
            let next = state.next_chunk().await?;
            Ok(next.map(|chunk| (chunk, state)))
        })
        .boxed()
    }

    /// The block of `cid` (`?format=raw`).
    pub async fn block(&self, cid: &Cid) -> Result<Bytes> {
        self.source.get(cid).await
    }

    /// The block a path resolved to.
    pub fn resolved_block(&self, resolved: &Resolved) -> Bytes {
        resolved.block.clone()
    }

    /// Whether the repository holds `cid`.
    pub async fn has_block(&self, cid: &Cid) -> Result<bool> {
        self.ipfs
            .repo()
            .contains(cid)
            .await
            .map_err(StoreError::node)
    }

    /// Whether `cid` is pinned (directly, recursively or as part of a pinned DAG).
    pub async fn is_pinned(&self, cid: &Cid) -> Result<bool> {
        self.ipfs.is_pinned(cid).await.map_err(StoreError::node)
    }

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

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

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

/// A part of a file still to read: the node `cid` holds `len` bytes starting at file offset `offset`.
struct Pending {
    cid: Cid,
    offset: u64,
    len: u64,
    depth: usize,
    block: Option<Bytes>,
}

struct FileRead {
    source: BlockSource,
    range: Range<u64>,
    stack: Vec<Pending>,
}

impl FileRead {
    /// The next non-empty slice of the range, in file order.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        while let Some(part) = self.stack.pop() {
            let data = match part.block {
                Some(data) => data,
                None => self.source.get(&part.cid).await?,
            };
            let cid = part.cid;
            let (inline, children) = match cid.codec() {
                RAW => (data, None),
                DAG_PB => {
                    let node = decode_pb(&cid, &data)?;
                    let unixfs = decode_unixfs(&cid, &node)?;
                    if !matches!(unixfs.kind, DataType::File | DataType::Raw) {
                        return Err(StoreError::Malformed {
                            cid,
                            reason: "file DAG contains a non-file node".into(),
                        });
                    }
                    file_size(&cid, &node, &unixfs)?;
                    let inline = unixfs.data.clone().unwrap_or_default();
                    (inline, Some((node, unixfs)))
                }
                codec => {
                    return Err(StoreError::Unsupported(format!(
                        "file leaf with codec 0x{codec:x}"
                    )));
                }
            };
            let total = inline.len() as u64
                + children
                    .as_ref()
                    .map_or(0, |(_, u)| u.blocksizes.iter().sum::<u64>());
            if total != part.len {
                return Err(StoreError::Malformed {
                    cid,
                    reason: format!("holds {total} bytes where its parent says {}", part.len),
                });
            }
            if let Some((node, unixfs)) = children {
                if part.depth >= MAX_DEPTH {
                    return Err(StoreError::Malformed {
                        cid,
                        reason: format!("file DAG deeper than {MAX_DEPTH}"),
                    });
                }
                let mut start = part.offset + inline.len() as u64;
                let mut overlapping = Vec::new();
                for (link, size) in node.links.iter().zip(unixfs.blocksizes.iter()) {
                    let end = start + size;
                    if end > self.range.start && start < self.range.end {
                        overlapping.push(Pending {
                            cid: link.cid,
                            offset: start,
                            len: *size,
                            depth: part.depth + 1,
                            block: None,
                        });
                    }
                    start = end;
                }
                self.stack.extend(overlapping.into_iter().rev());
            }
            let start = part.offset;
            let end = start + inline.len() as u64;
            let from = self.range.start.max(start);
            let to = self.range.end.min(end);
            if from < to {
                // Both bounds lie within `inline` (from >= start, to <= end), so the slice cannot panic.
                return Ok(Some(
                    inline.slice((from - start) as usize..(to - start) as usize),
                ));
            }
        }
        Ok(None)
    }
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

/// Announces roots in the DHT, at most [`ANNOUNCE_CONCURRENCY`] at once, within the provider-record limit.
async fn run_announcer(ipfs: Ipfs, mut rx: mpsc::Receiver<Announce>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_survives_a_reload_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(IDENTITY_FILE);
        let first = load_or_create_identity(&path).expect("created");
        let second = load_or_create_identity(&path).expect("loaded");
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_corrupt_identity_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, b"not a key").expect("write");
        assert!(matches!(
            load_or_create_identity(&path),
            Err(StoreError::Identity(_))
        ));
    }

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
