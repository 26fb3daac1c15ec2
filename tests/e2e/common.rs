//! Shared test harness: an in-process zipIQ server on loopback with a throwaway database, and a synthetic
//! H.264/Opus packet source whose payloads can be regenerated from their index to check delivery byte for byte.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rtp::header::Header;
use rtp::packet::Packet;
use zipiq::config::Config;
use zipiq::{FirstStream, Server};

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
    zipiq::telemetry::init_logs(&config.log);
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
