//! Real `zipiq serve` processes of one cluster on one PostgreSQL database (issue 12).
//!
//! Starting together, binding apart (item 5): three processes started at the same moment against an empty database
//! all come up (the migrations are serialised across nodes, and only one node creates the first stream), each with
//! its HTTP, admin and media sockets bound to its own loopback address (127.0.0.2, .3, .4) and nothing else; a
//! publisher and a viewer on the node bound to 127.0.0.3 (media `public_ips` = its address) connect and the viewer
//! gets the publisher's packets byte for byte, the SDP answers naming that address only.
//!
//! Fan-out: a publisher on the process on 127.0.0.2, ten viewers on each of the two others; every viewer gets every
//! packet byte for byte from a keyframe on, and the origin has exactly one relay session per edge.
//!
//! Region hop: the edge in a network namespace behind a veth pair, the hop between it and the origin (only that
//! hop) delayed 20 ms and losing 1 % each way, by kernel netem when the kernel has it, else by a UDP relay in this
//! process; the edge's viewer gets at least 99.9 % of the packets after NACK, and at most 2 ms more than the delay
//! later than the origin's viewer (p50). Needs root, iproute2, and htb and u32 in the kernel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, BufReader};
use zipiq_client::{PublishOptions, WatchOptions, WhepClient, WhipClient};

use crate::common::{
    TcpLink, metric_total, parse_video_payload, pump_video, scrape, video_only, video_payload,
    watch_video_only,
};
use crate::databases;

/// Everything the test allows itself, start to finish.
const TEST_DEADLINE: Duration = Duration::from_secs(150);

/// One `zipiq serve` child and what the test knows of it.
pub(crate) struct Node {
    pub(crate) ip: Ipv4Addr,
    http: SocketAddr,
    pub(crate) admin: SocketAddr,
    media: SocketAddr,
    pub(crate) child: tokio::process::Child,
    /// Its stdout and stderr lines (logs, the first-stream banner), for the assertions and for failure messages.
    output: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub(crate) fn base(&self) -> String {
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

fn config_text(dir: &Path, spec: &Spec, ports: (u16, u16, u16), pg_url: &str) -> String {
    let (http, admin, media) = ports;
    let (name, ip) = (&spec.name, spec.ip);
    let media_ip = spec.media_ip.unwrap_or(ip);
    let public_ip = spec.public_ip.unwrap_or(media_ip);
    let pg_url = spec.database_url.as_deref().unwrap_or(pg_url);
    let region = &spec.region;
    let cluster = &spec.cluster;
    format!(
        "[server]\nnode_name = \"{name}\"\nshutdown_timeout_ms = 3000\n\
         [http]\nlisten = \"{ip}:{http}\"\n[admin]\nlisten = \"{ip}:{admin}\"\n\
         [media]\nudp_listen = \"{media_ip}:{media}\"\npublic_ips = [\"{public_ip}\"]\nthreads = 1\n\
         [database]\nurl = \"{pg_url}\"\nmax_connections = 4\n\
         [log]\nlevel = \"info\"\n\
         [auth]\njwt_key_file = \"{d}/jwt-key\"\n\
         [ipfs]\nrepo_dir = \"{d}/ipfs\"\nlisten = [\"/ip4/{ip}/tcp/0\"]\nannounce = false\n\
         [archive]\nmode = \"off\"\nwallets_dir = \"{d}/wallets\"\n\
         [cluster]\nenabled = true\nplacement_cpu_margin = 1.0\nregion = \"{region}\"\n{cluster}",
        d = dir.display()
    )
}

/// What a node of a test is. `Spec::new(n)`: the name `node-n`, every socket on 127.0.0.`n`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    name: String,
    /// The address of its HTTP, admin and IPFS sockets, and of its media socket unless `media_ip`.
    ip: Ipv4Addr,
    media_ip: Option<Ipv4Addr>,
    /// The address its answers announce (`media.public_ips`), when not its media socket's.
    public_ip: Option<Ipv4Addr>,
    /// Its media port, when the test chose it (else a free one).
    media_port: Option<u16>,
    /// The network namespace it runs in (`ip netns exec`), when not the test's.
    netns: Option<String>,
    /// `database.url`, when not the test database's own (a node in a namespace reaches it through a proxy).
    database_url: Option<String>,
    /// `cluster.region`.
    region: String,
    /// More `[cluster]` keys (TOML lines).
    cluster: String,
}

impl Spec {
    /// The same node with `lines` (TOML) added to its `[cluster]` section.
    pub(crate) fn with_cluster(mut self, lines: &str) -> Spec {
        self.cluster.push_str(lines);
        self
    }

    pub(crate) fn new(n: u8) -> Spec {
        Spec {
            name: format!("node-{n}"),
            ip: Ipv4Addr::new(127, 0, 0, n),
            media_ip: None,
            public_ip: None,
            media_port: None,
            netns: None,
            database_url: None,
            region: String::new(),
            cluster: String::new(),
        }
    }
}

/// A node's configuration, written: its addresses, ports and data directory.
struct Prepared {
    ip: Ipv4Addr,
    media_ip: Ipv4Addr,
    ports: (u16, u16, u16),
    netns: Option<String>,
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

/// Writes the configuration of the node `spec` describes (its own address, free ports, a data directory). In
/// another network namespace, where this process cannot look for free ports, it takes fixed ones: the namespace is
/// the test's own and empty.
fn prepare(spec: &Spec, pg_url: &str) -> Prepared {
    let (ip, media_ip) = (spec.ip, spec.media_ip.unwrap_or(spec.ip));
    let ports = if spec.netns.is_some() {
        (18080, 18081, spec.media_port.unwrap_or(18189))
    } else {
        (
            free_port(ip, false),
            free_port(ip, false),
            spec.media_port.unwrap_or_else(|| free_port(media_ip, true)),
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("zipiq.toml");
    std::fs::write(&path, config_text(dir.path(), spec, ports, pg_url))
        .expect("write the configuration");
    Prepared {
        ip,
        media_ip,
        ports,
        netns: spec.netns.clone(),
        dir,
        path,
    }
}

/// Starts `zipiq serve --config path` (in its network namespace, if any), collecting its output lines.
fn spawn(prepared: Prepared) -> Node {
    let Prepared {
        ip,
        media_ip,
        ports,
        netns,
        dir,
        path,
    } = prepared;
    let bin = env!("CARGO_BIN_EXE_zipiq");
    // `ip netns exec` execs the binary: the child is zipiq itself, which kill_on_drop ends.
    let mut command = match &netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => tokio::process::Command::new(bin),
    };
    let mut child = command
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
        media: SocketAddr::new(IpAddr::V4(media_ip), ports.2),
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

/// The checks of the start-together test, on nodes that are up.
async fn started_together(nodes: &mut [Node]) {
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

/// Starts a node per spec at the same moment against the empty database `pg`, waits until all are ready, runs
/// `body` within `deadline`, then ends the processes (ours only, by their handles; also after a failed assertion)
/// and drops the database. A failure shows every node's output.
/// `body` is what the test does with its nodes once they are all up (and with the database, to look at the
/// cluster's tables).
pub(crate) async fn with_nodes<F>(
    pg: databases::TestDb,
    specs: &[Spec],
    deadline: Duration,
    body: F,
) where
    F: for<'a> FnOnce(&'a mut [Node], &'a databases::TestDb) -> BoxFuture<'a, ()>,
{
    let prepared: Vec<Prepared> = specs.iter().map(|spec| prepare(spec, &pg.url)).collect();
    // The same moment: the processes are spawned back to back, before any has had time to connect.
    let mut nodes: Vec<Node> = prepared.into_iter().map(spawn).collect();
    let outcome = tokio::time::timeout(
        deadline,
        std::panic::AssertUnwindSafe(async {
            for node in nodes.iter_mut() {
                wait_ready(node).await;
            }
            body(&mut nodes, &pg).await;
        })
        .catch_unwind(),
    )
    .await;
    for node in nodes.iter_mut() {
        let _ = node.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), node.child.wait()).await;
    }
    pg.drop_db().await;
    let logs = || {
        nodes
            .iter()
            .map(|n| format!("--- node on {} ---\n{}", n.ip, n.output()))
            .collect::<Vec<String>>()
            .join("\n")
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => {
            eprintln!("{}", logs());
            std::panic::resume_unwind(panic)
        }
        Err(_) => panic!("the test did not finish within {deadline:?}\n{}", logs()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_together_on_an_empty_postgres_come_up_each_on_its_own_address() {
    let pg = databases::postgres().await;
    let specs = [Spec::new(2), Spec::new(3), Spec::new(4)];
    with_nodes(pg, &specs, TEST_DEADLINE, |nodes, _| {
        started_together(nodes).boxed()
    })
    .await;
}

/// The cluster token every node of a test reads (`cluster.token_file`): pulls need it.
pub(crate) fn token_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster-token");
    std::fs::write(&path, "a-cluster-token-of-32-characters\n").expect("write the token");
    let line = format!("token_file = \"{}\"\n", path.display());
    (dir, line)
}

/// The node of `nodes` on 127.0.0.`n`.
pub(crate) fn node(nodes: &[Node], n: u8) -> &Node {
    nodes
        .iter()
        .find(|node| node.ip == Ipv4Addr::new(127, 0, 0, n))
        .expect("a node on that address")
}

/// The stream key of the first stream, which exactly one of `nodes` created and printed.
pub(crate) fn first_key(nodes: &[Node]) -> String {
    let keys: Vec<String> = nodes.iter().filter_map(Node::banner_key).collect();
    assert_eq!(
        keys.len(),
        1,
        "exactly one node creates the first stream: {keys:?}"
    );
    keys[0].clone()
}

/// `count` viewers of `stream` on `node`, joining together; each must be served there (no redirect).
async fn viewers_on(
    node: &Node,
    stream: &str,
    count: usize,
    options: WatchOptions,
) -> Vec<WhepClient> {
    let url = format!("{}/whep/{stream}", node.base());
    let joins: Vec<_> = (0..count)
        .map(|_| {
            let (url, options) = (url.clone(), options.clone());
            tokio::spawn(async move { WhepClient::connect(&url, None, options).await })
        })
        .collect();
    let mut viewers = Vec::new();
    for join in joins {
        let viewer = join
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("a viewer on {}: {e}", node.ip));
        assert!(
            viewer.negotiated.resource_url.starts_with(&node.base()),
            "served by {}, not redirected: {}",
            node.ip,
            viewer.negotiated.resource_url
        );
        viewers.push(viewer);
    }
    viewers
}

/// Checks what `viewer` has received so far: more than `min` packets, the first a keyframe, then every packet the
/// publisher sent after it, in order and byte for byte. Returns how many.
fn check_from_keyframe(viewer: &mut WhepClient, who: &str, min: usize) -> usize {
    let mut got = Vec::new();
    while let Ok(p) = viewer.packets.try_recv() {
        got.push(p);
    }
    assert!(got.len() > min, "{who} got {} packets", got.len());
    let (_, first) = parse_video_payload(&got[0].payload).expect("a synthetic payload");
    assert_eq!(first % 25, 0, "{who} starts on a keyframe, not at {first}");
    for (k, p) in got.iter().enumerate() {
        assert_eq!(
            p.payload,
            video_payload(0, first + k as u32, 25),
            "{who}, packet {k}: every packet, in order, unchanged"
        );
    }
    got.len()
}

/// A node's row in the registry: (sessions, publishers).
async fn registry_counts(pg: &databases::TestDb, node_id: &str) -> Option<(i64, i64)> {
    sqlx::query_as("SELECT sessions, publishers FROM cluster_nodes WHERE node_id = $1")
        .bind(node_id)
        .fetch_optional(pg.db.pool())
        .await
        .expect("read the registry")
}

/// How many viewers each edge has in the fan-out test.
const VIEWERS_PER_EDGE: usize = 10;

fn fan_out<'a>(nodes: &'a mut [Node], pg: &'a databases::TestDb) -> BoxFuture<'a, ()> {
    async move {
        let key = first_key(nodes);
        let (origin, edges) = (node(nodes, 2), [node(nodes, 3), node(nodes, 4)]);
        let publisher = WhipClient::connect(
            &format!("{}/whip/live", origin.base()),
            Some(&key),
            video_only(),
        )
        .await
        .unwrap_or_else(|e| panic!("publisher on {}: {e}", origin.ip));
        assert!(
            publisher
                .negotiated
                .resource_url
                .starts_with(&origin.base()),
            "the publisher stays on node A: {}",
            publisher.negotiated.resource_url
        );
        let publisher = Arc::new(publisher);
        let stop = Arc::new(AtomicBool::new(false));
        let pumping = pump_video(publisher.clone(), stop.clone());
        // The origin's media flows before the edges ask for it.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let (b, c) = tokio::join!(
            viewers_on(edges[0], "live", VIEWERS_PER_EDGE, watch_video_only()),
            viewers_on(edges[1], "live", VIEWERS_PER_EDGE, watch_video_only()),
        );
        let mut viewers: Vec<(String, WhepClient)> = b
            .into_iter()
            .map(|v| (edges[0].ip, v))
            .chain(c.into_iter().map(|v| (edges[1].ip, v)))
            .enumerate()
            .map(|(k, (ip, v))| (format!("viewer {k} on {ip}"), v))
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut total = 0;
        for (who, viewer) in viewers.iter_mut() {
            // 3 s at 100 packets/s: at least 250 (a viewer starts on the keyframe after its join, 25 packets at most).
            total += check_from_keyframe(viewer, who, 250);
        }

        // Node A has exactly one relay session per edge: two relay requests in all, and besides the publisher two
        // sessions in its registry row (no viewer joined A itself).
        let http = reqwest::Client::new();
        let (_, metrics) = scrape(&http, &format!("http://{}/metrics", origin.admin)).await;
        assert_eq!(
            metric_total(&metrics, "zipiq_cluster_relay_sessions_total"),
            Some(2.0),
            "node A took one relay request per edge"
        );
        let mut counts = None;
        // The heartbeat (every 2 s) writes the row.
        for _ in 0..50 {
            counts = registry_counts(pg, "node-2").await;
            if counts == Some((3, 1)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            counts,
            Some((3, 1)),
            "node A: (sessions, publishers) = the publisher and one relay per edge"
        );
        eprintln!(
            "fan-out: {} viewers on two edges got {total} packets, every one from a keyframe on, byte for byte",
            viewers.len()
        );
        stop.store(true, Ordering::Relaxed);
        let _ = pumping.await;
        for (_, viewer) in viewers {
            let _ = viewer.close().await;
        }
        if let Ok(publisher) = Arc::try_unwrap(publisher) {
            let _ = publisher.close().await;
        }
    }
    .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_on_one_process_reaches_ten_viewers_on_each_of_two_other_processes() {
    let pg = databases::postgres().await;
    let (_token_dir, token) = token_file();
    let specs: Vec<Spec> = [2u8, 3, 4]
        .into_iter()
        .map(|n| Spec {
            cluster: token.clone(),
            ..Spec::new(n)
        })
        .collect();
    with_nodes(pg, &specs, Duration::from_secs(50), fan_out).await;
}

/// The impaired hop's shape (issue 12: a "region" 20 ms and 1 % loss away).
const HOP_DELAY: Duration = Duration::from_millis(20);
const HOP_LOSS: f64 = 0.01;

/// What the relay did, for the assertions and the report.
#[derive(Default)]
struct HopStats {
    /// Datagrams between the edge and the origin, either way, and how many of them were dropped.
    impaired: AtomicU64,
    dropped: AtomicU64,
    /// Datagrams of every other peer of the origin (passed on at once).
    passed: AtomicU64,
}

/// A UDP relay in front of the origin's media socket (the origin announces the relay's address in
/// `media.public_ips`, so every peer of the origin reaches it through the relay; the origin sees each peer as one of
/// the relay's sockets). On a kernel without `sch_netem` it is the impairment, in user space: datagrams from and to
/// the edge's address are each delayed by `HOP_DELAY` and dropped with probability `HOP_LOSS`, both ways; every
/// other peer's (the publisher's, the origin's own viewer's) are passed on at once. With netem it passes
/// everything on at once and netem impairs the hop.
struct Relay {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<HopStats>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A relay socket: tokio's handle (receiving, passing on) and a blocking one on the same socket (the delay line's).
type RelaySocket = (Arc<tokio::net::UdpSocket>, Arc<std::net::UdpSocket>);

fn relay_socket(socket: std::net::UdpSocket) -> RelaySocket {
    let line = socket.try_clone().expect("clone the relay socket");
    socket.set_nonblocking(true).expect("non-blocking");
    (
        Arc::new(tokio::net::UdpSocket::from_std(socket).expect("relay socket")),
        Arc::new(line),
    )
}

/// A datagram the delay line sends at `due`.
struct Delayed {
    due: std::time::Instant,
    socket: Arc<std::net::UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
}

/// The delay line: a thread of its own that sends each datagram at its time (a constant delay keeps them in
/// order), to the tens of microseconds as netem would, where a tokio timer rounds up to the next millisecond. It
/// ends when the relay drops its sender.
fn delay_line() -> std::sync::mpsc::Sender<Delayed> {
    let (tx, rx) = std::sync::mpsc::channel::<Delayed>();
    std::thread::spawn(move || {
        while let Ok(d) = rx.recv() {
            let now = std::time::Instant::now();
            if d.due > now {
                std::thread::sleep(d.due - now);
            }
            // The socket is non-blocking (tokio shares it): a full send buffer is waited out briefly.
            for _ in 0..100 {
                match d.socket.send_to(&d.data, d.to) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    _ => break,
                }
            }
        }
    });
    tx
}

/// Sends `data` to `to` on `socket`: at once, or for the impaired hop `HOP_DELAY` after it `arrived` (through the
/// delay line), unless it is one of the `HOP_LOSS` dropped.
async fn relay_datagram(
    socket: &RelaySocket,
    to: SocketAddr,
    data: &[u8],
    impaired: bool,
    arrived: std::time::Instant,
    stats: &HopStats,
    line: &std::sync::mpsc::Sender<Delayed>,
) {
    if !impaired {
        stats.passed.fetch_add(1, Ordering::Relaxed);
        let _ = socket.0.send_to(data, to).await;
        return;
    }
    stats.impaired.fetch_add(1, Ordering::Relaxed);
    if rand::random::<f64>() < HOP_LOSS {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let _ = line.send(Delayed {
        due: arrived + HOP_DELAY,
        socket: socket.1.clone(),
        to,
        data: data.to_vec(),
    });
}

impl Relay {
    /// Relays `front` (bound, on the address the origin announces) to the origin's media socket `origin`,
    /// impairing the datagrams of `edge`'s address when `impair`.
    fn start(front: std::net::UdpSocket, origin: SocketAddr, edge: IpAddr, impair: bool) -> Relay {
        let stats = Arc::new(HopStats::default());
        let task = tokio::spawn({
            let stats = stats.clone();
            async move {
                let line = delay_line();
                let front = relay_socket(front);
                let local = front.0.local_addr().expect("relay address").ip();
                // One socket towards the origin per peer, and its way back (a task, aborted with the relay).
                let mut peers: std::collections::HashMap<SocketAddr, RelaySocket> =
                    std::collections::HashMap::new();
                let mut tasks = tokio::task::JoinSet::new();
                let mut buf = vec![0u8; 2048];
                loop {
                    let Ok((n, from)) = front.0.recv_from(&mut buf).await else {
                        return;
                    };
                    let arrived = std::time::Instant::now();
                    let impaired = impair && from.ip() == edge;
                    let upstream = match peers.get(&from) {
                        Some(u) => u.clone(),
                        None => {
                            let Ok(u) = std::net::UdpSocket::bind((local, 0)) else {
                                continue;
                            };
                            let u = relay_socket(u);
                            let (back, front, stats, line) =
                                (u.clone(), front.clone(), stats.clone(), line.clone());
                            tasks.spawn(async move {
                                let mut buf = vec![0u8; 2048];
                                while let Ok((n, _)) = back.0.recv_from(&mut buf).await {
                                    let arrived = std::time::Instant::now();
                                    relay_datagram(
                                        &front,
                                        from,
                                        &buf[..n],
                                        impaired,
                                        arrived,
                                        &stats,
                                        &line,
                                    )
                                    .await;
                                }
                            });
                            peers.insert(from, u.clone());
                            u
                        }
                    };
                    relay_datagram(
                        &upstream,
                        origin,
                        &buf[..n],
                        impaired,
                        arrived,
                        &stats,
                        &line,
                    )
                    .await;
                }
            }
        });
        Relay { task, stats }
    }
}

/// One packet a viewer of the region-hop test received: its index, when, and whether it was intact.
struct Arrival {
    index: u32,
    at: std::time::Instant,
    intact: bool,
}

/// Collects `viewer`'s packets until `stop`; gives the viewer back with them.
fn collect(
    mut viewer: WhepClient,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(WhepClient, Vec<Arrival>)> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(100), viewer.packets.recv()).await {
                Ok(Some(p)) => {
                    if let Some((layer, index)) = parse_video_payload(&p.payload) {
                        got.push(Arrival {
                            index,
                            at: p.at,
                            intact: p.payload == video_payload(layer, index, 25),
                        });
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        (viewer, got)
    })
}

/// The `q` quantile of sorted `values`.
fn quantile(values: &[f64], q: f64) -> f64 {
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// How long the region-hop test sends media once both viewers are in.
const HOP_MEDIA: Duration = Duration::from_secs(12);

/// The region-hop test on its two nodes (the origin first): a publisher and a viewer on the origin, a viewer on the
/// edge across the impaired hop; `netem` tells who impairs it (the kernel, or the relay).
async fn region_hop(nodes: &mut [Node], relay: &Relay, variant: &str, netem: bool) {
    let key = first_key(nodes);
    let (origin, edge) = (&nodes[0], &nodes[1]);
    let publisher = Arc::new(
        WhipClient::connect(
            &format!("{}/whip/live", origin.base()),
            Some(&key),
            video_only(),
        )
        .await
        .unwrap_or_else(|e| panic!("publisher on the origin: {e}")),
    );
    let stop_media = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop_media.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_origin = WhepClient::connect(
        &format!("{}/whep/live", origin.base()),
        None,
        watch_video_only(),
    )
    .await
    .unwrap_or_else(|e| panic!("viewer on the origin: {e}"));
    // The edge is behind the veth pair: its viewer needs a candidate on the host's side of it, not on loopback.
    let at_edge = viewers_on(
        edge,
        "live",
        1,
        WatchOptions {
            loopback_only: false,
            ..watch_video_only()
        },
    )
    .await
    .remove(0);
    let stop_viewers = Arc::new(AtomicBool::new(false));
    let (origin_viewer, edge_viewer) = (
        collect(at_origin, stop_viewers.clone()),
        collect(at_edge, stop_viewers.clone()),
    );
    tokio::time::sleep(HOP_MEDIA).await;
    stop_media.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    // The last retransmissions cross the hop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_viewers.store(true, Ordering::Relaxed);
    let (at_origin, near) = origin_viewer.await.expect("origin viewer");
    let (at_edge, far) = edge_viewer.await.expect("edge viewer");

    assert!(
        !near.is_empty() && !far.is_empty(),
        "both viewers got packets"
    );
    assert!(
        near.iter().chain(far.iter()).all(|a| a.intact),
        "every packet arrives byte for byte"
    );
    let first = far[0].index;
    assert_eq!(
        first % 25,
        0,
        "the edge's viewer starts on a keyframe, not at {first}"
    );
    // The window: from the edge viewer's first packet to the last the origin's viewer got, less the last 30 (a
    // loss there has no later packet to reveal it before the end).
    let last = near
        .iter()
        .map(|a| a.index)
        .max()
        .unwrap_or(0)
        .saturating_sub(30);
    assert!(
        last > first + 1000,
        "{first}..{last}: the publisher sent for {HOP_MEDIA:?}"
    );
    let expected = (last - first + 1) as usize;
    let received: std::collections::HashSet<u32> = far
        .iter()
        .map(|a| a.index)
        .filter(|i| (first..=last).contains(i))
        .collect();
    let fraction = received.len() as f64 / expected as f64;
    // Added latency: the same packet's arrival at the edge's viewer after the origin's, first arrivals only.
    let mut near_at = std::collections::HashMap::new();
    for a in &near {
        near_at.entry(a.index).or_insert(a.at);
    }
    let mut seen = std::collections::HashSet::new();
    let mut added: Vec<f64> = far
        .iter()
        .filter(|a| seen.insert(a.index))
        .filter_map(|a| {
            let n = near_at.get(&a.index)?;
            Some(a.at.saturating_duration_since(*n).as_secs_f64() * 1000.0)
        })
        .collect();
    assert!(!added.is_empty(), "packets both viewers got");
    added.sort_by(f64::total_cmp);
    let (p50, p90, p99) = (
        quantile(&added, 0.5),
        quantile(&added, 0.9),
        quantile(&added, 0.99),
    );
    let stats = &relay.stats;
    let (impaired, dropped, passed) = (
        stats.impaired.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        stats.passed.load(Ordering::Relaxed),
    );
    eprintln!(
        "region hop ({variant}, delay {HOP_DELAY:?}, loss {:.1} %): edge viewer got {} of {expected} packets \
         ({:.3} %, {} missing) after NACK; added latency p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms over {} \
         packets; hop datagrams {impaired} ({dropped} dropped), other peers' {passed}",
        HOP_LOSS * 100.0,
        received.len(),
        fraction * 100.0,
        expected - received.len(),
        added.len()
    );
    if !netem {
        assert!(
            dropped > 0,
            "the relay dropped datagrams of the hop ({impaired} crossed it)"
        );
    }
    assert!(
        fraction >= 0.999,
        "the edge's viewer got {:.3} % of the packets after NACK, want at least 99.9 %",
        fraction * 100.0
    );
    let delay_ms = HOP_DELAY.as_secs_f64() * 1000.0;
    assert!(
        p50 >= delay_ms - 1.0,
        "the hop's delay shows in the edge viewer's latency: p50 {p50:.2} ms"
    );
    assert!(
        p50 <= delay_ms + 2.0,
        "the edge hop adds the delay plus at most 2 ms (p50): {p50:.2} ms"
    );
    for viewer in [at_origin, at_edge] {
        let _ = viewer.close().await;
    }
    if let Ok(publisher) = Arc::try_unwrap(publisher) {
        let _ = publisher.close().await;
    }
}

/// Runs `program args` (`ip`, `tc`), in network namespace `ns` when given; its error output when it fails.
fn run_tool(ns: Option<&str>, program: &str, args: &[&str]) -> Result<(), String> {
    let mut command = match ns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => std::process::Command::new(program),
    };
    let out = command
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(ns: Option<&str>, program: &str, args: &[&str]) {
    if let Err(e) = run_tool(ns, program, args) {
        panic!("the region-hop test needs root, iproute2, and htb and u32 in the kernel: {e}");
    }
}

/// A "region" one hop away: a network namespace joined to the host by a veth pair (a /29 of 100.64.0.0/10 chosen
/// by this process's id, so that concurrent runs do not collide). On the host's side `host` (the origin's HTTP
/// socket and the relay) and `origin_media` (the origin's media socket, behind the relay); in the namespace `far`
/// (the edge). Removed with everything in it when dropped.
struct RegionNet {
    ns: String,
    veth: String,
    peer: String,
    host: Ipv4Addr,
    origin_media: Ipv4Addr,
    far: Ipv4Addr,
}

impl RegionNet {
    fn create() -> RegionNet {
        let id = std::process::id();
        let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + ((id & 0xF_FFFF) << 3);
        let region = RegionNet {
            ns: format!("zq{id}"),
            veth: format!("zq{id}h"),
            peer: format!("zq{id}f"),
            host: Ipv4Addr::from(base + 1),
            far: Ipv4Addr::from(base + 2),
            origin_media: Ipv4Addr::from(base + 3),
        };
        // What a killed earlier process of the same id may have left.
        let _ = run_tool(None, "ip", &["netns", "del", &region.ns]);
        let _ = run_tool(None, "ip", &["link", "del", &region.veth]);
        let ns = Some(region.ns.as_str());
        let (host, far, media) = (
            format!("{}/29", region.host),
            format!("{}/29", region.far),
            format!("{}/29", region.origin_media),
        );
        must(None, "ip", &["netns", "add", &region.ns]);
        must(
            None,
            "ip",
            &[
                "link",
                "add",
                &region.veth,
                "type",
                "veth",
                "peer",
                "name",
                &region.peer,
            ],
        );
        must(
            None,
            "ip",
            &["link", "set", &region.peer, "netns", &region.ns],
        );
        must(None, "ip", &["addr", "add", &host, "dev", &region.veth]);
        must(None, "ip", &["addr", "add", &media, "dev", &region.veth]);
        must(None, "ip", &["link", "set", &region.veth, "up"]);
        must(ns, "ip", &["addr", "add", &far, "dev", &region.peer]);
        must(ns, "ip", &["link", "set", &region.peer, "up"]);
        must(ns, "ip", &["link", "set", "lo", "up"]);
        region
    }

    /// Sends the hop's datagrams (UDP from `port` towards the namespace, to `port` from it) through an htb class of
    /// their own, whose leaf is netem (`HOP_DELAY`, `HOP_LOSS`) when the kernel has it, else a plain FIFO; every
    /// other packet on the pair (the edge's viewer's, HTTP, the database's) takes the default class. Whether netem
    /// impairs the hop.
    fn classify(&self, port: u16) -> bool {
        let delay = format!("{}ms", HOP_DELAY.as_millis());
        let loss = format!("{}%", HOP_LOSS * 100.0);
        let port = port.to_string();
        let sides = [
            (None, self.veth.as_str(), "sport"),
            (Some(self.ns.as_str()), self.peer.as_str(), "dport"),
        ];
        for (ns, dev, field) in sides {
            must(
                ns,
                "tc",
                &[
                    "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10",
                ],
            );
            for class in ["1:10", "1:20"] {
                must(
                    ns,
                    "tc",
                    &[
                        "class", "add", "dev", dev, "parent", "1:", "classid", class, "htb",
                        "rate", "10gbit",
                    ],
                );
            }
            must(
                ns,
                "tc",
                &[
                    "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", "protocol", "17", "0xff", "match", "ip", field, &port,
                    "0xffff", "flowid", "1:20",
                ],
            );
        }
        let netem = |ns: Option<&str>, dev: &str| {
            run_tool(
                ns,
                "tc",
                &[
                    "qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:", "netem",
                    "delay", &delay, "loss", &loss,
                ],
            )
        };
        match netem(None, &self.veth) {
            Ok(()) => {
                if let Err(e) = netem(Some(&self.ns), &self.peer) {
                    panic!("netem on the host's side of the pair but not in the namespace: {e}");
                }
                true
            }
            Err(e) => {
                eprintln!("no netem ({e}): the relay impairs the hop in user space");
                for (ns, dev, _) in sides {
                    must(
                        ns,
                        "tc",
                        &[
                            "qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:", "pfifo",
                        ],
                    );
                }
                false
            }
        }
    }

    /// The hop class's leaf statistics on both sides (`tc -s qdisc`), for the report.
    fn leaf_stats(&self) -> String {
        [
            (None, self.veth.as_str()),
            (Some(self.ns.as_str()), self.peer.as_str()),
        ]
        .into_iter()
        .map(|(ns, dev)| {
            let args = ["-s", "qdisc", "show", "dev", dev, "parent", "1:20"];
            let out = match ns {
                Some(ns) => std::process::Command::new("ip")
                    .args(["netns", "exec", ns, "tc"])
                    .args(args)
                    .output(),
                None => std::process::Command::new("tc").args(args).output(),
            };
            let text = out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            format!(
                "{dev}: {}",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
    }
}

impl Drop for RegionNet {
    fn drop(&mut self) {
        // The namespace's end of the pair goes with the namespace, and the host's end with it.
        let _ = run_tool(None, "ip", &["netns", "del", &self.ns]);
        let _ = run_tool(None, "ip", &["link", "del", &self.veth]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_a_lossy_20_ms_hop_away_gets_every_packet_after_nack_with_the_delay_added() {
    let pg = databases::postgres().await;
    let (_token_dir, token) = token_file();
    let region = Arc::new(RegionNet::create());
    // The relay on the host's side, on the address the origin announces; the origin's media socket behind it on
    // the same port; the hop's datagrams are those to and from that port.
    let front = std::net::UdpSocket::bind((region.host, 0)).expect("bind the relay");
    let port = front.local_addr().expect("relay address").port();
    let netem = region.classify(port);
    let variant = if netem {
        "kernel netem in a network namespace"
    } else {
        "no sch_netem in this kernel: user-space relay, network namespace"
    };
    // The edge in the namespace reaches the database through a proxy on the host's side of the pair.
    let link = TcpLink::to_database(SocketAddr::new(IpAddr::V4(region.host), 0), &pg.url).await;
    let origin = Spec {
        name: "origin".into(),
        ip: region.host,
        media_ip: Some(region.origin_media),
        public_ip: Some(region.host),
        media_port: Some(port),
        region: "here".into(),
        cluster: token.clone(),
        ..Spec::new(0)
    };
    let edge = Spec {
        name: "edge".into(),
        ip: region.far,
        netns: Some(region.ns.clone()),
        database_url: Some(link.url(&pg.url)),
        region: "there".into(),
        cluster: token,
        ..Spec::new(0)
    };
    let relay = Relay::start(
        front,
        SocketAddr::new(IpAddr::V4(region.origin_media), port),
        IpAddr::V4(region.far),
        !netem,
    );
    // The namespace outlives the nodes: it is removed after with_nodes ended them.
    let net = region.clone();
    with_nodes(
        pg,
        &[origin, edge],
        Duration::from_secs(55),
        move |nodes, _| {
            async move {
                region_hop(nodes, &relay, variant, netem).await;
                if netem {
                    eprintln!("netem leaves: {}", net.leaf_stats());
                }
            }
            .boxed()
        },
    )
    .await;
    drop(link);
    drop(region);
}
