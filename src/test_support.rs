//! What the unit tests of several modules share (test builds only; imports nothing of the crate, so it adds no
//! edge between modules).

use std::path::{Path, PathBuf};

/// The repository root: `src/test_support.rs` is two levels down.
pub(crate) fn repo_root() -> PathBuf {
    // In the main crate `file!()` is relative to the manifest dir; in a scratch crate including this file by
    // absolute path it is absolute.
    let file = Path::new(file!());
    let source = if file.is_absolute() {
        file.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
    };
    source
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
