//! The real `zipiq` binary started fresh, outside systemd, on an empty data directory: it is ready at once with
//! the default archive mode and no wallet (the archive is reported degraded, in the body and as a metric), and the
//! files it makes are its own whatever the umask (data directory 0700, database, WAL and keys 0600).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `zipiq serve` child on loopback, with the default archive settings except endpoints on a closed loopback
/// port (no wallet, so nothing is sent; the tests never reach outside the machine).
struct Fresh {
    child: tokio::process::Child,
    data: PathBuf,
    base: String,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Fresh {
    /// Starts the binary under `umask` with everything under `<temp>/data` (which does not exist yet), and waits
    /// until it answers `/healthz`.
    async fn start(umask: &str) -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (http, admin, media) = (free_tcp_port(), free_tcp_port(), free_udp_port());
        let closed = free_tcp_port();
        let config = format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [media]\nudp_listen = \"127.0.0.1:{media}\"\n\
             [database]\nurl = \"sqlite://{d}/zipiq.db\"\n[log]\nlevel = \"warn\"\n\
             [auth]\njwt_key_file = \"{d}/jwt-key\"\n\
             [ipfs]\nrepo_dir = \"{d}/ipfs\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nannounce = false\n\
             [archive]\nbundler_url = \"http://127.0.0.1:{closed}\"\ngateway_url = \"http://127.0.0.1:{closed}\"\n\
             wallets_dir = \"{d}/wallets\"\n",
            d = data.display()
        );
        let config_path = dir.path().join("zipiq.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask} && exec \"$0\" serve --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_zipiq"))
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("zipiq starts");
        let fresh = Fresh {
            child,
            data,
            base: format!("http://127.0.0.1:{http}"),
            admin: format!("http://127.0.0.1:{admin}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{}/healthz", fresh.base)).send().await
                && r.status() == 200
            {
                return fresh;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("zipiq did not answer /healthz within 30 s");
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_default_start_without_a_wallet_is_ready_and_reports_the_archive_degraded() {
    let fresh = Fresh::start("022").await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/readyz", fresh.base))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "ready without a wallet: {body}");
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["degraded"], serde_json::json!(["archive"]), "{body}");
    assert_eq!(body["checks"]["archive"]["degraded"], true, "{body}");
    assert!(
        body["checks"]["archive"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no wallet")),
        "the reason names the missing wallet: {body}"
    );
    let (metrics, scrape) = crate::common::scrape(&http, &format!("{}/metrics", fresh.admin)).await;
    let degraded = scrape
        .samples
        .iter()
        .find(|s| s.metric == "zipiq_archive_degraded")
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        });
    assert_eq!(
        degraded,
        Some(1.0),
        "zipiq_archive_degraded is 1\n{metrics}"
    );
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_database_files_are_private_whatever_the_umask() {
    let fresh = Fresh::start("000").await;
    // Writes make the WAL; the first stream is written at start, a login session by this sign-up attempt.
    let http = reqwest::Client::new();
    let _ = http
        .post(format!("{}/api/v1/auth/signup", fresh.base))
        .json(&serde_json::json!({"email": "wal@example.org", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let data = fresh.data.clone();
    assert_eq!(mode(&data), 0o700, "data/");
    for file in ["zipiq.db", "zipiq.db-wal", "zipiq.db-shm", "jwt-key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("ipfs")), 0o700, "ipfs/");
    fresh.stop().await;
}
