//! A local Arweave gateway for tests: `ZIPIQ_TEST_ARLOCAL` when scripts/test started one, else arlocal launched
//! here (tests/js/arlocal.mjs, loopback only) and stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Arlocal {
    pub url: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Arlocal {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SIGTERM: the launcher stops arlocal and exits.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

pub fn start() -> Arlocal {
    if let Ok(url) = std::env::var("ZIPIQ_TEST_ARLOCAL") {
        return Arlocal {
            url: url.trim_end_matches('/').to_owned(),
            child: None,
            _dir: None,
        };
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        repo.join("node_modules/arlocal").exists(),
        "node_modules/arlocal is missing: run scripts/test (or npm ci) first"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("node")
        .arg(repo.join("tests/js/arlocal.mjs"))
        .args(["--port", "0", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut url = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ARLOCAL_READY ") {
            url = Some(
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
            break;
        }
    }
    let url = url.expect("arlocal reported ready");
    Arlocal {
        url,
        child: Some(child),
        _dir: Some(dir),
    }
}
