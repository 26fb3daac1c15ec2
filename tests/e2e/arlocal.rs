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

/// Asks arlocal at `arlocal` to mine a block every 300 ms until `done` or `timeout`; returns the last `done`.
pub async fn mine_until(
    arlocal: &str,
    timeout: std::time::Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> bool {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        let _ = http.get(format!("{arlocal}/mine")).send().await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    done().await
}

/// Gives each test wallet (tests/data/wallets/test-only-{a,b}.json) 10^17 winston at arlocal at `arlocal`.
pub async fn mint_test_wallets(arlocal: &str) {
    let http = reqwest::Client::new();
    for file in ["test-only-a.json", "test-only-b.json"] {
        let jwk = zipiq::archive::jwk::Jwk::from_json(
            &std::fs::read(crate::archive_bundler::test_wallets().join(file)).unwrap(),
        )
        .unwrap();
        let r = http
            .get(format!(
                "{arlocal}/mint/{}/100000000000000000",
                jwk.address()
            ))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}
