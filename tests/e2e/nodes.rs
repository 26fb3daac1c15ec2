//! Real `zipiq serve` processes for the cluster tests: each on its own loopback address (127.0.0.N) with its own
//! ports, data directory and node name, sharing one PostgreSQL database and one cluster token; their output is
//! collected for assertions and failure messages, and they can be killed like a crash (`SIGKILL`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// The cluster token every node of a test cluster shares.
pub const CLUSTER_TOKEN: &str = "test-cluster-token-0123456789abcdef";

/// One `zipiq serve` child and what the test knows of it.
pub struct Node {
    pub ip: Ipv4Addr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub child: tokio::process::Child,
    /// Its stdout and stderr lines (logs, the first-stream banner), for the assertions and for failure messages.
    output: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Its public HTTP base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// The stream key of the first-start banner, when this node printed it.
    pub fn banner_key(&self) -> Option<String> {
        self.output.lock().ok().and_then(|lines| {
            lines.iter().find_map(|l| {
                l.trim()
                    .strip_prefix("Stream key:")
                    .map(|k| k.trim().to_owned())
            })
        })
    }

    /// Kills the process at once (`SIGKILL`, like `kill -9`: no clean-up of any kind) and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// The value of the gauge or counter `name` (without labels) on its admin listener's `/metrics`; None when
    /// the node does not answer or has no such series yet.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> Option<f64> {
        let text = http
            .get(format!("http://{}/metrics", self.admin))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().find_map(|l| {
            let (series, value) = l.split_once(' ')?;
            (series == name).then(|| value.trim().parse().ok())?
        })
    }
}

/// A port free on `ip` now (for TCP or UDP), for a configuration written before the process binds it.
fn free_port(ip: Ipv4Addr, udp: bool) -> u16 {
    let addr = SocketAddr::new(IpAddr::V4(ip), 0);
    if udp {
        std::net::UdpSocket::bind(addr)
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port()
    } else {
        std::net::TcpListener::bind(addr)
            .and_then(|s| s.local_addr())
            .expect("a free TCP port")
            .port()
    }
}

/// A node's configuration written, not started yet.
pub struct Prepared {
    ip: Ipv4Addr,
    /// HTTP and admin ports (the media port is in the configuration only).
    ports: (u16, u16),
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

/// Writes the configuration of node `n` (address 127.0.0.`n`, name `node-n`, free ports, its own data directory,
/// the shared cluster token), with `extra` TOML appended to the `[cluster]` section.
pub fn prepare(n: u8, pg_url: &str, extra_cluster: &str) -> Prepared {
    let ip = Ipv4Addr::new(127, 0, 0, n);
    let (http, admin, media) = (
        free_port(ip, false),
        free_port(ip, false),
        free_port(ip, true),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("cluster-token"), CLUSTER_TOKEN).expect("write the cluster token");
    let text = format!(
        "[server]\nnode_name = \"node-{n}\"\nshutdown_timeout_ms = 3000\n\
         [http]\nlisten = \"{ip}:{http}\"\n[admin]\nlisten = \"{ip}:{admin}\"\n\
         [media]\nudp_listen = \"{ip}:{media}\"\npublic_ips = [\"{ip}\"]\nthreads = 1\n\
         [database]\nurl = \"{pg_url}\"\nmax_connections = 4\n\
         [log]\nlevel = \"info\"\n\
         [auth]\njwt_key_file = \"{d}/jwt-key\"\n\
         [ipfs]\nrepo_dir = \"{d}/ipfs\"\nlisten = [\"/ip4/{ip}/tcp/0\"]\nannounce = false\n\
         [archive]\nmode = \"off\"\nwallets_dir = \"{d}/wallets\"\n\
         [cluster]\nenabled = true\nplacement_cpu_margin = 1.0\ntoken_file = \"{d}/cluster-token\"\n{extra_cluster}\n",
        d = d.display()
    );
    let path = d.join("zipiq.toml");
    std::fs::write(&path, text).expect("write the configuration");
    Prepared {
        ip,
        ports: (http, admin),
        dir,
        path,
    }
}

/// Starts `zipiq serve --config <prepared>`, collecting its output lines.
pub fn spawn(prepared: Prepared) -> Node {
    let Prepared {
        ip,
        ports,
        dir,
        path,
    } = prepared;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_zipiq"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("zipiq starts");
    let output = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    for stream in [
        Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(stderr),
    ] {
        let output = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut o) = output.lock() {
                    o.push(line);
                }
            }
        });
    }
    let at = |port| SocketAddr::new(IpAddr::V4(ip), port);
    Node {
        ip,
        http: at(ports.0),
        admin: at(ports.1),
        child,
        output,
        _dir: dir,
    }
}

/// Waits until `node` answers `/readyz` with 200; panics with its output when it exits or does not in time.
pub async fn wait_ready(node: &mut Node) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            // Let the readers take the last lines.
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "the node on {} exited during start ({status}):\n{}",
                node.ip,
                node.output()
            );
        }
        if let Ok(r) = http.get(format!("{}/readyz", node.base())).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node on {} was not ready within 60 s:\n{}",
            node.ip,
            node.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `body` with `nodes` within `deadline`. The body owns the nodes: when it ends, fails or runs out of time,
/// they are dropped, which kills them (ours only, by their handles); then the test database is dropped and a
/// failure is passed on with every node's output.
pub async fn run_bounded<F>(
    nodes: Vec<Node>,
    deadline: Duration,
    pg: crate::databases::TestDb,
    body: impl FnOnce(Vec<Node>) -> F,
) where
    F: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let logs: Vec<(Ipv4Addr, Arc<Mutex<Vec<String>>>)> =
        nodes.iter().map(|n| (n.ip, n.output.clone())).collect();
    let outputs = || {
        logs.iter()
            .map(|(ip, o)| {
                let lines = o.lock().map(|l| l.join("\n")).unwrap_or_default();
                format!("--- node on {ip} ---\n{lines}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let outcome = tokio::time::timeout(
        deadline,
        std::panic::AssertUnwindSafe(body(nodes)).catch_unwind(),
    )
    .await;
    // Let the killed processes go and the readers take their last lines.
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.drop_db().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => {
            eprintln!("{}", outputs());
            std::panic::resume_unwind(panic)
        }
        Err(_) => panic!("the test did not finish within {deadline:?}\n{}", outputs()),
    }
}
