//! Secrets from files: a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`, see systemd/zipiq.service) wins over
//! the file a `*_file` configuration key names. Secrets never come from config.toml itself and are never logged;
//! errors name the file, not its content. Also: private directories for secrets and data, and stream keys
//! ([`stream_keys`]: hashed, compared in constant time). A leaf: it imports nothing of the crate.

use std::path::{Path, PathBuf};

pub mod stream_keys;

/// Environment variable systemd sets to the directory of the unit's credentials.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Why a secret could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file could not be read.
    #[error("cannot read the secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The secret file could not be written.
    #[error("cannot write the secret file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why writing it failed.
        source: std::io::Error,
    },
    /// The secret file's contents are not valid.
    #[error("the secret file {path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A systemd credential (read-only: systemd copied it at start).
    Credential(PathBuf),
    /// A plain file named by the configuration.
    File(PathBuf),
}

impl SecretSource {
    /// The file the secret is in.
    pub fn path(&self) -> &Path {
        match self {
            SecretSource::Credential(p) | SecretSource::File(p) => p,
        }
    }
}

/// Where the secret `credential` lives: `$CREDENTIALS_DIRECTORY/<credential>` when that file exists, else
/// `configured` when it is not empty. None when neither applies.
pub fn locate(credential: &str, configured: &Path) -> Option<SecretSource> {
    locate_in(
        std::env::var_os(CREDENTIALS_DIRECTORY).map(PathBuf::from),
        credential,
        configured,
    )
}

fn locate_in(dir: Option<PathBuf>, credential: &str, configured: &Path) -> Option<SecretSource> {
    if let Some(dir) = dir {
        let path = dir.join(credential);
        if path.is_file() {
            return Some(SecretSource::Credential(path));
        }
    }
    (!configured.as_os_str().is_empty()).then(|| SecretSource::File(configured.to_owned()))
}

/// Reads a secret file; surrounding whitespace (a trailing newline) is not part of the secret.
pub fn read(path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim().to_owned())
}

/// Creates `dir` and its missing parents readable by their owner only, whatever the umask: each directory made
/// here gets mode 0700. One that exists already is left as it is (an operator's or systemd's choice).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let mut missing = Vec::new();
        let mut next = Some(dir);
        while let Some(d) = next.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(d);
            next = d.parent();
        }
        for d in missing.into_iter().rev() {
            match std::fs::DirBuilder::new().mode(0o700).create(d) {
                // The umask may have taken bits the owner needs: set the mode itself.
                Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?,
                // Made by someone else meanwhile: theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Writes a secret file readable by its owner only, replacing it atomically (write a sibling, then rename).
pub fn write_private(path: &Path, content: &str) -> Result<(), SecretError> {
    let err = |source| SecretError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(err)?;
        file.write_all(content.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_wins_over_the_configured_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwt-key"), "k\n").unwrap();
        let found = locate_in(
            Some(dir.path().to_owned()),
            "jwt-key",
            Path::new("/etc/other"),
        );
        assert_eq!(
            found,
            Some(SecretSource::Credential(dir.path().join("jwt-key")))
        );
        let missing = locate_in(
            Some(dir.path().to_owned()),
            "smtp-password",
            Path::new("/x/pw"),
        );
        assert_eq!(missing, Some(SecretSource::File("/x/pw".into())));
        assert_eq!(
            locate_in(Some(dir.path().to_owned()), "nope", Path::new("")),
            None
        );
    }

    #[test]
    fn written_secrets_are_private_and_read_back_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("secret");
        write_private(&path, "abc\n").unwrap();
        assert_eq!(read(&path).unwrap(), "abc");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
