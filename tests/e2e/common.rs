//! Shared test harness: an in-process zipIQ server on loopback with a throwaway database, and a synthetic
//! H.264/Opus packet source whose payloads can be regenerated from their index to check delivery byte for byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rtp::header::Header;
use rtp::packet::Packet;
use zipiq::config::Config;
use zipiq::db::broadcasts::{ChunkKind, NewChunk};
use zipiq::{FirstStream, Server};
use zipiq_client::{ClientError, PublishOptions, WatchOptions, WhipClient};

/// A running test server and what a test needs to talk to it.
pub struct TestServer {
    pub server: Server,
    pub key: String,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn whip(&self, stream: &str) -> String {
        format!("{}/whip/{stream}", self.base)
    }
    pub fn whep(&self, stream: &str) -> String {
        format!("{}/whep/{stream}", self.base)
    }
    pub async fn stop(self) {
        self.server.shutdown().await;
    }
    /// Publishes the first stream, "live", with its key and the default tracks (H.264 and Opus).
    pub async fn publish_live(&self) -> WhipClient {
        WhipClient::connect(
            &self.whip("live"),
            Some(&self.key),
            PublishOptions::default(),
        )
        .await
        .expect("publisher")
    }
}

/// Starts a server on loopback with `overrides` (TOML text) laid over the test defaults. Two media threads on any
/// machine, so a stream's viewers are always spread over both and the cross-thread fan-out is what tests see.
pub async fn start_server(overrides: &str) -> TestServer {
    let (server, first, dir) = start_node(overrides).await;
    let FirstStream { key, .. } = first.expect("first start creates the live stream");
    let base = format!("http://{}", server.http_addr);
    TestServer {
        server,
        key,
        base,
        _dir: dir,
    }
}

/// Starts a server like [`start_server`] but on a database that may hold streams already (another node's):
/// returns the server, the first stream if this start created it, and the temp dir to keep while it runs.
pub async fn start_node(overrides: &str) -> (Server, Option<FirstStream>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("zipiq.db");
    let base = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [media]\nudp_listen = \"127.0.0.1:0\"\ngrace_period_ms = 1500\nconnect_timeout_ms = 10000\nthreads = 2\n\
         [database]\nurl = \"sqlite://{}\"\n[log]\nlevel = \"warn\"\n\
         [auth]\njwt_key_file = \"{}\"\n\
         [ipfs]\nrepo_dir = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nannounce = false\n\
         [server]\nshutdown_timeout_ms = 10000\n\
         [archive]\nmode = \"off\"\nwallets_dir = \"{}\"\n",
        db.display(),
        dir.path().join("jwt-key").display(),
        dir.path().join("ipfs").display(),
        dir.path().join("no-wallets").display()
    );
    let mut table: toml::Table = base.parse().expect("base config");
    let extra: toml::Table = overrides.parse().expect("override config");
    for (section, values) in extra {
        match (table.get_mut(&section), values) {
            (Some(toml::Value::Table(t)), toml::Value::Table(v)) => t.extend(v),
            (_, v) => {
                table.insert(section, v);
            }
        }
    }
    let config = Config::from_layers(Some(("test.toml".into(), table.to_string())), Vec::new())
        .expect("test config");
    zipiq::telemetry::init(&config);
    let (server, first) = Server::start(config).await.expect("server starts");
    (server, first, dir)
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// NAL header of an H.264 IDR slice and of a non-IDR slice.
pub const IDR: u8 = 0x65;
pub const SLICE: u8 = 0x41;

/// The payload of synthetic video packet `index` on `layer`: a NAL header (IDR every `gop` packets), the layer,
/// the index, then bytes derived from the index. Regenerating it checks delivery byte for byte.
pub fn video_payload(layer: u8, index: u32, gop: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(1000);
    b.put_u8(if index.is_multiple_of(gop) {
        IDR
    } else {
        SLICE
    });
    b.put_u8(layer);
    b.put_u32(index);
    for i in 0..(200 + (index % 700)) {
        b.put_u8((index.wrapping_mul(31).wrapping_add(i)) as u8);
    }
    b.freeze()
}

/// Reads (layer, index) back from a synthetic payload.
pub fn parse_video_payload(p: &[u8]) -> Option<(u8, u32)> {
    if p.len() < 6 {
        return None;
    }
    Some((p[1], u32::from_be_bytes([p[2], p[3], p[4], p[5]])))
}

/// A packet with payload `payload`, sequence `seq` and timestamp `ts` (SSRC and payload type are set by the stack).
pub fn packet(seq: u16, ts: u32, marker: bool, payload: Bytes) -> Packet {
    Packet {
        header: Header {
            version: 2,
            marker,
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        },
        payload,
    }
}

/// Resident memory of this process in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Publishing with a video track only.
pub fn video_only() -> PublishOptions {
    PublishOptions {
        audio: false,
        ..PublishOptions::default()
    }
}

/// Watching with a video track only.
pub fn watch_video_only() -> WatchOptions {
    WatchOptions {
        audio: false,
        ..WatchOptions::default()
    }
}

/// Sends synthetic H.264 (a keyframe every 25 packets) every 10 ms until `stop`.
pub fn pump_video(
    publisher: Arc<WhipClient>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            let p = packet(
                i as u16,
                i.wrapping_mul(3000),
                true,
                video_payload(0, i, 25),
            );
            let _ = publisher.send_video(0, &p).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// The status and problem body of a refused WHIP or WHEP request; panics if it was not refused.
pub fn refusal<T>(result: Result<T, ClientError>) -> (u16, serde_json::Value) {
    match result {
        Err(ClientError::Refused { status, body }) => {
            (status, serde_json::from_str(&body).unwrap_or_default())
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a session"),
    }
}

/// The status of a refused WHIP or WHEP request; panics if it was not refused.
pub fn refused_status<T>(result: Result<T, ClientError>) -> u16 {
    refusal(result).0
}

/// Chunk `seq` of broadcast `broadcast_id` as the recorder stores them: 0 is the init segment (no duration), the
/// others 2 s media segments. Start and end are 0; tests that need them set them.
pub fn chunk(broadcast_id: i64, seq: i64, cid: impl Into<String>, size: i64) -> NewChunk {
    NewChunk {
        broadcast_id,
        seq,
        kind: if seq == 0 {
            ChunkKind::Init
        } else {
            ChunkKind::Media
        },
        cid: cid.into(),
        size,
        duration_ms: if seq == 0 { 0 } else { 2000 },
        start_ms: 0,
        end_ms: 0,
    }
}

/// The real binary, `zipiq serve --config <config_path>`, with the JSON log lines (and the first-start banner) on
/// a pipe to read, standard error passed through, and `RUST_LOG` unset so the configured level holds. Killed when
/// dropped.
pub fn serve_process(config_path: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_zipiq"))
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("zipiq starts")
}

/// The path of a test tool (`ffmpeg`, `ffprobe`): `ZIPIQ_TEST_<NAME>` when set, else /usr/bin/<name>.
pub fn tool(name: &str) -> String {
    let path = std::env::var(format!("ZIPIQ_TEST_{}", name.to_ascii_uppercase()))
        .unwrap_or_else(|_| format!("/usr/bin/{name}"));
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing (scripts/test installs ffmpeg)"
    );
    path
}

/// The codec names of the streams in ffprobe's JSON.
pub fn codecs(json: &serde_json::Value) -> Vec<String> {
    json["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x["codec_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Fetches a Prometheus text page (an admin listener's /metrics): the text, and it parsed.
pub async fn scrape(http: &reqwest::Client, url: &str) -> (String, prometheus_parse::Scrape) {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    (text, parsed)
}

/// The value of every sample of `name` (all label sets added up; a histogram counts its observations).
pub fn metric_total(metrics: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
    let mut found = None;
    for s in metrics.samples.iter().filter(|s| s.metric == name) {
        let v = match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.last().map(|b| b.count).unwrap_or(0.0)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// A TCP proxy listening on `bind` in front of `target` (PostgreSQL) that a test can cut: while it is down every
/// connection through it is closed and new ones are refused at once, as when the database server stops. Nodes
/// connect through it (also nodes in another network namespace, which cannot reach the host's loopback); the test
/// itself talks to PostgreSQL directly.
pub struct TcpLink {
    pub addr: std::net::SocketAddr,
    down: tokio::sync::watch::Sender<bool>,
}

impl TcpLink {
    pub async fn start(bind: std::net::SocketAddr, target: std::net::SocketAddr) -> TcpLink {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (down, down_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *down_rx.borrow() {
                    continue; // dropped: refused
                }
                let mut cut = down_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        TcpLink { addr, down }
    }

    /// A proxy on `bind` in front of the PostgreSQL server of `url` (its host an address).
    pub async fn to_database(bind: std::net::SocketAddr, url: &str) -> TcpLink {
        let url = reqwest::Url::parse(url).expect("database url");
        let target = format!(
            "{}:{}",
            url.host_str().expect("host"),
            url.port().unwrap_or(5432)
        )
        .parse()
        .expect("the database's address");
        TcpLink::start(bind, target).await
    }

    pub fn set_down(&self, down: bool) {
        let _ = self.down.send(down);
    }

    /// `url` (a PostgreSQL URL) with its host and port replaced by this proxy's.
    pub fn url(&self, url: &str) -> String {
        let mut proxied = reqwest::Url::parse(url).expect("database url");
        proxied
            .set_ip_host(self.addr.ip())
            .expect("an address as host");
        proxied.set_port(Some(self.addr.port())).expect("port");
        proxied.to_string()
    }
}
