//! Starting together, binding apart (issue 12, item 5): three real `zipiq serve` processes started at the same
//! moment against one empty PostgreSQL database all come up (the migrations are serialised across nodes, and only
//! one node creates the first stream), each with its HTTP, admin and media sockets bound to its own loopback
//! address (127.0.0.2, .3, .4) and nothing else; a publisher and a viewer on the node bound to 127.0.0.3 (media
//! `public_ips` = its address) connect and the viewer gets the publisher's packets byte for byte, the SDP answers
//! naming that address only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use zipiq_client::{PublishOptions, WatchOptions, WhepClient, WhipClient};

use crate::common::{parse_video_payload, pump_video, video_payload};
use crate::databases;

/// Everything the test allows itself, start to finish.
const TEST_DEADLINE: Duration = Duration::from_secs(150);

/// One `zipiq serve` child and what the test knows of it.
struct Node {
    ip: Ipv4Addr,
    http: SocketAddr,
    admin: SocketAddr,
    media: SocketAddr,
    child: tokio::process::Child,
    /// Its stdout and stderr lines (logs, the first-stream banner), for the assertions and for failure messages.
    output: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// The stream key of the first-start banner, when this node printed it.
    fn banner_key(&self) -> Option<String> {
        self.output.lock().ok().and_then(|lines| {
            lines.iter().find_map(|l| {
                l.trim()
                    .strip_prefix("Stream key:")
                    .map(|k| k.trim().to_owned())
            })
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

fn config_text(
    dir: &Path,
    name: &str,
    ip: Ipv4Addr,
    ports: (u16, u16, u16),
    pg_url: &str,
) -> String {
    let (http, admin, media) = ports;
    format!(
        "[server]\nnode_name = \"{name}\"\nshutdown_timeout_ms = 3000\n\
         [http]\nlisten = \"{ip}:{http}\"\n[admin]\nlisten = \"{ip}:{admin}\"\n\
         [media]\nudp_listen = \"{ip}:{media}\"\npublic_ips = [\"{ip}\"]\nthreads = 1\n\
         [database]\nurl = \"{pg_url}\"\nmax_connections = 4\n\
         [log]\nlevel = \"info\"\n\
         [auth]\njwt_key_file = \"{d}/jwt-key\"\n\
         [ipfs]\nrepo_dir = \"{d}/ipfs\"\nlisten = [\"/ip4/{ip}/tcp/0\"]\nannounce = false\n\
         [archive]\nmode = \"off\"\nwallets_dir = \"{d}/wallets\"\n\
         [cluster]\nenabled = true\nplacement_cpu_margin = 1.0\n",
        d = dir.display()
    )
}

/// Writes the configuration of node `n` (its own address 127.0.0.`n`, ports, data directory).
fn prepare(
    n: u8,
    pg_url: &str,
) -> (
    Ipv4Addr,
    (u16, u16, u16),
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let ip = Ipv4Addr::new(127, 0, 0, n);
    let ports = (
        free_port(ip, false),
        free_port(ip, false),
        free_port(ip, true),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("zipiq.toml");
    std::fs::write(
        &path,
        config_text(dir.path(), &format!("node-{n}"), ip, ports, pg_url),
    )
    .expect("write the configuration");
    (ip, ports, dir, path)
}

/// Starts `zipiq serve --config path`, collecting its output lines.
fn spawn(ip: Ipv4Addr, ports: (u16, u16, u16), dir: tempfile::TempDir, path: &Path) -> Node {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_zipiq"))
        .arg("serve")
        .arg("--config")
        .arg(path)
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
        media: at(ports.2),
        child,
        output,
        _dir: dir,
    }
}

/// Waits until `node` answers `/readyz` with 200; panics with its output when it exits or does not in time.
async fn wait_ready(node: &mut Node) {
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

/// The local addresses of the sockets in `/proc/net/<table>` (`tcp` or `udp`) in state `state` (hex, `0A` is a
/// TCP listener, `07` an unconnected UDP socket).
fn sockets(table: &str, state: &str) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).expect("/proc/net");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&state) {
                return None;
            }
            let (ip, port) = fields.get(1)?.split_once(':')?;
            // The kernel prints the address as the u32 in memory (network byte order) in the host's byte order.
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes());
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_str_radix(port, 16).ok()?,
            ))
        })
        .collect()
}

/// Asserts that `addr`'s port is bound on `addr`'s address and on no other address (no wildcard).
fn bound_only_on(table: &str, state: &str, addr: SocketAddr, what: &str) {
    let on_port: Vec<SocketAddr> = sockets(table, state)
        .into_iter()
        .filter(|a| a.port() == addr.port())
        .collect();
    assert_eq!(
        on_port,
        vec![addr],
        "{what}: the {table} sockets on port {} are {on_port:?}, want {addr} only",
        addr.port()
    );
}

/// The addresses of the ICE candidates in an SDP.
fn candidate_addresses(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| c.split(' ').nth(4).map(str::to_owned))
        .collect()
}

async fn run(nodes: &mut [Node]) {
    // Every node is up.
    for node in nodes.iter_mut() {
        wait_ready(node).await;
    }
    let http = reqwest::Client::new();
    for node in nodes.iter() {
        // Each listener is bound to its own address only, and answers there.
        bound_only_on("tcp", "0A", node.http, "HTTP listener");
        bound_only_on("tcp", "0A", node.admin, "admin listener");
        bound_only_on("udp", "07", node.media, "media socket");
        let r = http
            .get(format!("http://{}/metrics", node.admin))
            .send()
            .await
            .expect("admin listener answers");
        assert_eq!(r.status(), 200, "admin /metrics on {}", node.admin);
    }
    // One node created the first stream and printed its key; the others found it there.
    let keys: Vec<String> = nodes.iter().filter_map(Node::banner_key).collect();
    assert_eq!(
        keys.len(),
        1,
        "exactly one node creates the first stream: {keys:?}"
    );
    let key = keys[0].clone();

    // Media on the node bound to 127.0.0.3: a publisher and a viewer there.
    let node = nodes
        .iter()
        .find(|n| n.ip == Ipv4Addr::new(127, 0, 0, 3))
        .expect("the node on 127.0.0.3");
    let publisher = WhipClient::connect(
        &format!("{}/whip/live", node.base()),
        Some(&key),
        PublishOptions {
            audio: false,
            ..PublishOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("publisher on {}: {e}\n{}", node.ip, node.output()));
    assert!(
        publisher.negotiated.resource_url.starts_with(&node.base()),
        "the publisher stays on the node it reached: {}",
        publisher.negotiated.resource_url
    );
    let publisher = Arc::new(publisher);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    let mut viewer = WhepClient::connect(
        &format!("{}/whep/live", node.base()),
        None,
        WatchOptions {
            audio: false,
            ..WatchOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("viewer on {}: {e}\n{}", node.ip, node.output()));
    for (who, answer) in [
        ("publisher", &publisher.negotiated.answer),
        ("viewer", &viewer.negotiated.answer),
    ] {
        let addresses = candidate_addresses(answer);
        assert!(
            !addresses.is_empty() && addresses.iter().all(|a| a == "127.0.0.3"),
            "the {who}'s answer offers the node's address only: {addresses:?}\n{answer}"
        );
    }
    // Packets arrive, byte for byte as sent.
    let mut checked = 0;
    while checked < 50 {
        let got = tokio::time::timeout(Duration::from_secs(5), viewer.packets.recv())
            .await
            .unwrap_or_else(|_| panic!("no packet within 5 s\n{}", node.output()))
            .expect("a packet");
        let (layer, index) = parse_video_payload(&got.payload).expect("a synthetic payload");
        assert_eq!(
            got.payload,
            video_payload(layer, index, 25),
            "packet {index}"
        );
        checked += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = pumping.await;
    let _ = viewer.close().await;
    if let Ok(publisher) = Arc::try_unwrap(publisher) {
        let _ = publisher.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_together_on_an_empty_postgres_come_up_each_on_its_own_address() {
    let pg = databases::postgres().await;
    let prepared: Vec<_> = [2u8, 3, 4]
        .into_iter()
        .map(|n| prepare(n, &pg.url))
        .collect();
    // The same moment: the three processes are spawned back to back, before any has had time to connect.
    let mut nodes: Vec<Node> = prepared
        .into_iter()
        .map(|(ip, ports, dir, path)| spawn(ip, ports, dir, &path))
        .collect();
    // A failed assertion still ends the three processes (ours only, by their handles) and drops the database.
    let outcome = tokio::time::timeout(
        TEST_DEADLINE,
        std::panic::AssertUnwindSafe(run(&mut nodes)).catch_unwind(),
    )
    .await;
    for node in nodes.iter_mut() {
        let _ = node.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), node.child.wait()).await;
    }
    pg.drop_db().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("--- node on {} ---\n{}", n.ip, n.output()))
                .collect();
            panic!(
                "the test did not finish within {TEST_DEADLINE:?}\n{}",
                logs.join("\n")
            );
        }
    }
}
