//! Content-addressed storage: zipIQ's embedded IPFS node (rust-ipfs, `ipfs/`) with a persistent repository and
//! identity, the UnixFS importer of the `unixfs-v1-2025` profile (`unixfs`, with the dag-pb codec `dagpb` and
//! HAMT-sharded directories `hamt`), block CIDs (`block`), CAR v1 (`car`), and the content-path parser the HTTP
//! gateway uses (`content_path`).
//!
//! Nothing here runs on the SFU's hot path: segments reach `IpfsNode::add` from the side pipeline. Reads are
//! local-only unless `fetch_from_network` is on, so a request for content this node lacks fails fast instead of
//! hanging on the network.

pub mod block;
pub mod car;
pub mod content_path;
pub mod dagpb;
pub mod hamt;
pub mod ipfs;
pub mod unixfs;

#[cfg(test)]
pub(crate) mod node_tests;

use std::path::PathBuf;

pub use self::content_path::ContentPath;
pub use self::ipfs::{DagScope, DirectoryEntry, EntryKind, IpfsNode, Resolved};
pub use crate::config::IpfsConfig;
pub use cid::Cid;
pub use rust_ipfs::{Multiaddr, PeerId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("IPFS repository {path} is locked by another running node")]
    RepoLocked { path: PathBuf },
    #[error("node identity: {0}")]
    Identity(String),
    #[error("{0} is not in this node's repository")]
    NotFound(Cid),
    #[error("no link named {name:?} in {parent}")]
    NoSuchPath { parent: Cid, name: String },
    #[error("timed out fetching {0} from the network")]
    FetchTimeout(Cid),
    #[error("could not fetch {cid} from the network: {reason}")]
    FetchFailed { cid: Cid, reason: String },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("malformed node {cid}: {reason}")]
    Malformed { cid: Cid, reason: String },
    #[error("{cid} holds {actual} bytes, not the {expected} given")]
    SizeMismatch {
        cid: Cid,
        expected: u64,
        actual: u64,
    },
    #[error("the DAG of {root} is incomplete: block {missing} is missing")]
    IncompleteDag { root: Box<Cid>, missing: Box<Cid> },
    #[error(transparent)]
    Unixfs(#[from] dagpb::UnixfsError),
    #[error(transparent)]
    Block(#[from] block::BlockError),
    #[error(transparent)]
    Car(#[from] car::CarError),
    #[error("IPFS node: {0}")]
    Node(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Wraps an error of rust-ipfs (an `anyhow::Error`) with its whole chain of causes.
    pub(crate) fn node(error: impl std::fmt::Display) -> Self {
        StoreError::Node(format!("{error:#}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_fill_missing_keys() {
        let config: IpfsConfig =
            serde_json::from_str(r#"{"fetch_from_network": true}"#).expect("parses");
        assert!(config.fetch_from_network);
        assert_eq!(config.repo_dir, PathBuf::from("./data/ipfs"));
        assert_eq!(config.listen.len(), 2);
        assert!(config.bootstrap.is_empty());
        assert!(config.announce);
    }

    #[test]
    fn config_refuses_unknown_keys() {
        assert!(serde_json::from_str::<IpfsConfig>(r#"{"repo": "x"}"#).is_err());
    }
}
