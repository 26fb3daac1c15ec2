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
    /// The `[ipfs]` configuration is not valid (says why).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Another running node holds the repository.
    #[error("IPFS repository {path} is locked by another running node")]
    RepoLocked {
        /// The repository's directory.
        path: PathBuf,
    },
    /// The node's identity key could not be read or made.
    #[error("node identity: {0}")]
    Identity(String),
    /// The block is not in the repository (and fetching from the network is off).
    #[error("{0} is not in this node's repository")]
    NotFound(Cid),
    /// A path segment names no link of its directory.
    #[error("no link named {name:?} in {parent}")]
    NoSuchPath {
        /// The directory.
        parent: Cid,
        /// The name looked up.
        name: String,
    },
    /// The network did not deliver the block in time.
    #[error("timed out fetching {0} from the network")]
    FetchTimeout(Cid),
    /// Fetching the block from the network failed.
    #[error("could not fetch {cid} from the network: {reason}")]
    FetchFailed {
        /// The block.
        cid: Cid,
        /// Why.
        reason: String,
    },
    /// The content is of a kind zipIQ does not handle (says which).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A node does not decode as dag-pb/UnixFS.
    #[error("malformed node {cid}: {reason}")]
    Malformed {
        /// The node's CID.
        cid: Cid,
        /// What is wrong with it.
        reason: String,
    },
    /// A directory entry's content is not the size given for it.
    #[error("{cid} holds {actual} bytes, not the {expected} given")]
    SizeMismatch {
        /// The content.
        cid: Cid,
        /// The size given, in bytes.
        expected: u64,
        /// Its real size, in bytes.
        actual: u64,
    },
    /// A CAR to import lacks a block of its root's DAG.
    #[error("the DAG of {root} is incomplete: block {missing} is missing")]
    IncompleteDag {
        /// The root.
        root: Box<Cid>,
        /// The first missing block.
        missing: Box<Cid>,
    },
    /// Encoding or decoding UnixFS failed.
    #[error(transparent)]
    Unixfs(#[from] dagpb::UnixfsError),
    /// A block does not match its CID.
    #[error(transparent)]
    Block(#[from] block::BlockError),
    /// Reading or writing a CAR failed.
    #[error(transparent)]
    Car(#[from] car::CarError),
    /// rust-ipfs failed (its error with its causes).
    #[error("IPFS node: {0}")]
    Node(String),
    /// A file of the repository could not be read or written.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Wraps an error of rust-ipfs (an `anyhow::Error`) with its whole chain of causes.
    pub(crate) fn node(error: impl std::fmt::Display) -> Self {
        StoreError::Node(format!("{error:#}"))
    }
}

/// The result of store operations.
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
