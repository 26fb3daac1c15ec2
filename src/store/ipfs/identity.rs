//! The node's libp2p identity: an ed25519 key kept in `identity.key` inside the repository, created on first start
//! (written atomically, mode 0600) and loaded on every later one, so the peer id survives restarts.

use std::path::Path;

use rust_ipfs::Keypair;

use crate::store::{Result, StoreError};

/// File name of the libp2p identity key (protobuf-encoded ed25519 keypair) inside the repository.
pub(crate) const IDENTITY_FILE: &str = "identity.key";

/// Loads the node's ed25519 identity from `path`, or creates one there (mode 0600, written atomically).
pub(crate) fn load_or_create_identity(path: &Path) -> Result<Keypair> {
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
}
