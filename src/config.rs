//! Configuration: the embedded `config.toml` defaults, an optional file over them, then `ZIPIQ_<SECTION>__<KEY>`
//! environment overrides.
//!
//! Every key has its default in the repository's `config.toml`, which is compiled into the binary, so the running
//! defaults and the documented ones cannot drift apart. Unknown keys are errors that name the key: a typo must never
//! be silently ignored.
//!
//! One concern, hence one file despite its length: the sections' types (each key documented as in `config.toml`),
//! loading them, and the checks of values that depend on each other (made at start, naming the keys).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The repository's `config.toml`: every key, commented, with its default.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config.toml");

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ZIPIQ_";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file given.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or does not fit the configuration's keys and types.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file (`config.toml` for the embedded defaults).
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A `ZIPIQ_<SECTION>__<KEY>` variable names no key, or its value does not fit.
    #[error("environment variable {name}: {reason}")]
    Env {
        /// The variable's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The keys parse but their values do not work together (the message says which).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration. Field names are the keys of `config.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[media]`.
    pub media: MediaConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[gateway]`.
    pub gateway: GatewayConfig,
    /// `[streams]`.
    pub streams: StreamsConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[smtp]`.
    pub smtp: SmtpConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[rate_limits]`.
    pub rate_limits: RateLimitsConfig,
    /// `[recording]`.
    pub recording: RecordingConfig,
    /// `[ipfs]`.
    pub ipfs: IpfsConfig,
    /// `[archive]`.
    pub archive: ArchiveConfig,
}

/// `[audit]`: how long audit rows are kept, and how often the pruning task runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Audit rows older than this many days are deleted by the pruning task. 0: keep them forever.
    pub retention_days: u64,
    /// How often the pruning task runs, in seconds. Each run deletes, in batches: audit rows past retention_days, used
    /// or expired email tokens (verification, reset), expired refresh tokens, login sessions unused for longer than
    /// auth.refresh_token_ttl_s, and rate-limit state of keys that have been quiet for a whole period.
    pub prune_interval_s: u64,
}

/// Where archive uploads go.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveMode {
    /// Each chunk as one signed ANS-104 data item posted to a bundler (`bundler_url`).
    Bundler,
    /// Chunks packed into ANS-104 bundles, posted as Arweave transactions to the gateway (`gateway_url`).
    Gateway,
    /// No uploads: chunks wait in the queue.
    Off,
}

/// `[archive]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Where archive uploads go: "bundler" (a Bundlr-protocol bundler such as ArDrive Turbo: one signed ANS-104 data
    /// item per chunk), "gateway" (no middleman: ready items are bundled and posted to an Arweave gateway as
    /// transactions, then followed to confirmation), or "off" (chunks wait in the queue).
    pub mode: ArchiveMode,
    /// Bundler endpoint (Bundlr protocol: ArDrive Turbo, up.arweave.net).
    pub bundler_url: String,
    /// Token the bundler is paid in ("arweave": the wallets' AR).
    pub bundler_token: String,
    /// Arweave gateway: prices, balances, transaction status, GraphQL and data for `zipiq verify`; uploads in "gateway"
    /// mode.
    pub gateway_url: String,
    /// Directory of Arweave JWK wallet files (*.json). Empty: $CREDENTIALS_DIRECTORY/wallets when systemd provides it,
    /// else ./data/wallets. Archival runs only when at least one usable wallet is there; wallet keys never go in this
    /// file.
    pub wallets_dir: String,
    /// Uploads in flight at once.
    pub concurrency: usize,
    /// Timeout of every call to a bundler or gateway, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long a worker owns a claimed job (or bundle) before another may take it over (a crashed worker's jobs come
    /// back), in ms. A restarted node takes its own leases back at start; other nodes wait this long.
    pub lease_ms: u64,
    /// Shortest retry delay (exponential up to `retry_max_ms`, with jitter), in milliseconds.
    pub retry_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Consecutive failures after which an endpoint's circuit breaker opens.
    pub breaker_failures: u32,
    /// How long an opened circuit breaker stays open, in milliseconds.
    pub breaker_open_ms: u64,
    /// "gateway" mode: confirmations before a bundle counts as archived.
    pub confirmations: u64,
    /// "gateway" mode: most data items in one bundle.
    pub bundle_max_items: usize,
    /// "gateway" mode: most bytes in one bundle.
    pub bundle_max_bytes: usize,
    /// "gateway" mode: how long a posted bundle may stay unknown to the gateway before it is posted again, in ms.
    pub repost_after_ms: u64,
    /// How often wallet balances are read, in milliseconds.
    pub balance_poll_ms: u64,
    /// Runway (balance / recent spend) below which a warning is logged, in hours.
    pub runway_warning_hours: u64,
    /// How often the worker looks for due jobs when idle, in milliseconds.
    pub poll_ms: u64,
}

/// The prefix systemd gives the files of a directory credential named `wallets`.
pub const WALLET_CREDENTIAL_PREFIX: &str = "wallets_";

impl ArchiveConfig {
    /// The wallets directory: configured, else the systemd credential, else ./data/wallets.
    pub fn wallets_path(&self) -> PathBuf {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        self.wallets_path_with(credentials.as_deref())
    }

    /// `wallets_path` with the systemd credentials directory given (None: not run by systemd).
    pub fn wallets_path_with(&self, credentials: Option<&std::path::Path>) -> PathBuf {
        if !self.wallets_dir.trim().is_empty() {
            return PathBuf::from(self.wallets_dir.trim());
        }
        if let Some(dir) = credentials {
            let p = dir.join("wallets");
            if p.is_dir() {
                return p;
            }
            // `LoadCredential=wallets:/etc/zipiq/credentials/wallets` with a directory loads each of its files as
            // a credential of its own, named `wallets_<file name>` (systemd.exec(5)).
            let has_wallets = std::fs::read_dir(dir).is_ok_and(|mut entries| {
                entries.any(|e| {
                    e.is_ok_and(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(WALLET_CREDENTIAL_PREFIX)
                    })
                })
            });
            if has_wallets {
                return dir.to_owned();
            }
        }
        PathBuf::from("./data/wallets")
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's name, recorded with each broadcast (several nodes may share one PostgreSQL database). Empty: the
    /// host name.
    pub node_name: String,
    /// On SIGTERM, how long to wait for the last segments to reach IPFS and the archive queue before exiting, in ms.
    pub shutdown_timeout_ms: u64,
}

impl ServerConfig {
    /// The node name, or the host name when none is configured.
    pub fn node(&self) -> String {
        if !self.node_name.trim().is_empty() {
            return self.node_name.trim().to_owned();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "zipiq".to_owned())
    }
}

/// `[recording]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Cut every live stream into CMAF segments, store them in the embedded IPFS node and queue them for archival.
    pub enabled: bool,
    /// A media segment closes at the first keyframe after this duration, in milliseconds.
    pub segment_target_ms: u64,
    /// A media segment also closes when it reaches this size, in bytes, keyframe or not.
    pub segment_max_bytes: usize,
    /// Media segments listed by a live HLS playlist (the sliding window).
    pub live_playlist_segments: usize,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port of the HTTP server: WHIP, WHEP, API, IPFS gateway and web pages.
    pub listen: SocketAddr,
    /// The URL streamers and viewers use to reach this server, used in printed OBS settings and links. Empty: derived
    /// from `listen` (http://127.0.0.1:PORT when listening on every interface).
    pub public_url: String,
    /// Largest request body accepted (SDP offers, trickle fragments, API bodies), in bytes. Larger bodies get 413.
    pub max_body_bytes: usize,
    /// Origins allowed to call WHIP/WHEP and the API from a browser (CORS). "*" allows any origin. The API takes bearer
    /// tokens only (no cookies), so a foreign origin cannot act with a visitor's credentials either way.
    pub cors_origins: Vec<String>,
    /// Addresses of reverse proxies in front of zipIQ. Only when a request comes from one of them is its X-Forwarded-
    /// For header believed (its right-most address not in this list is the client, for rate limits and the audit log).
    /// Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Most HTTP connections open at once (this listener and the admin one each). Kept below three quarters of the
    /// process's open-file limit, which zipIQ raises to its hard limit at start. A connection over the cap gets a quick
    /// 503 with Retry-After and is closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, in milliseconds; then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Longest pause while a client sends a request body, in milliseconds; then 408.
    pub body_timeout_ms: u64,
    /// Longest time for a whole request until its answer starts, in milliseconds; then 408.
    pub request_timeout_ms: u64,
    /// A connection that moves no byte either way for this long (an idle keep-alive, a stalled client) is closed, in
    /// milliseconds.
    pub idle_timeout_ms: u64,
}

/// One ICE server handed to clients in a `Link` header.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// The server's `stun:` / `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name, if the server needs one.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password, if the server needs one.
    #[serde(default)]
    pub credential: Option<String>,
}

/// `[media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Address of the one UDP socket every WebRTC peer connection shares (ICE, DTLS, SRTP).
    pub udp_listen: SocketAddr,
    /// Public addresses to announce as host candidates (1:1 NAT). Empty: the addresses of the local interfaces.
    pub public_ips: Vec<String>,
    /// ICE-lite (the server never sends connectivity checks; OBS and browsers do). false: full ICE.
    pub ice_lite: bool,
    /// Offer loopback addresses (127.0.0.1, ::1) as candidates. Useful for tests and local set-ups only.
    pub include_loopback: bool,
    /// Interfaces whose addresses are offered as host candidates (with udp_listen on 0.0.0.0 or [::] and no
    /// public_ips): names ("eth0") or prefixes ending in "*" ("enp*"). Empty: every interface except container, VM and
    /// overlay bridges (docker*, br-*, veth*, virbr*, vnet*, cni*, flannel*, cali*, weave*, vxlan*, lxcbr*, lxdbr*,
    /// podman*, kube-*, tunl*, cilium*, genev*). All addresses share the one socket and port; peers try each.
    pub interfaces: Vec<String>,
    /// Announce IPv6 candidates as well as IPv4.
    pub ipv6: bool,
    /// ICE servers given to clients in `Link: rel="ice-server"` headers.
    pub ice_servers: Vec<IceServer>,
    /// Most WebRTC sessions (publishers + viewers) at once. Further WHIP/WHEP requests get 503 with Retry-After.
    pub max_sessions: usize,
    /// Most viewers of one stream. Further WHEP requests for that stream get 503.
    pub max_viewers_per_stream: usize,
    /// How long viewers stay attached after their publisher goes, waiting for it to come back, in milliseconds.
    pub grace_period_ms: u64,
    /// How long a session may take to connect (ICE + DTLS) after its answer before it is dropped, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Most packets of the per-layer GOP cache (kept from the last keyframe so a new viewer starts at once) before it is dropped until the next keyframe.
    pub gop_cache_max_packets: usize,
    /// Most bytes of the per-layer GOP cache before it is dropped until the next keyframe.
    pub gop_cache_max_bytes: usize,
    /// Shortest interval between two keyframe requests (PLI/FIR) sent to a publisher for one layer, in milliseconds.
    pub keyframe_request_interval_ms: u64,
    /// Packets kept per video source (layer) to answer viewers' NACKs (a power of two): 512 is 1.7 s of a 2.5 Mbit/s
    /// stream. One buffer per source serves all of its viewers (about 120 bytes per packet kept, not per viewer).
    pub nack_buffer_packets: u16,
    /// Capacity of the channel from the live fan-out to the segmenter, in packets. When full, packets for the recording
    /// are dropped and counted (zipiq_tap_dropped_packets_total); live viewers are never slowed.
    pub tap_channel_capacity: usize,
    /// Media threads. Every WebRTC session runs on one of them, with all the tasks webrtc-rs makes for it; a stream's
    /// publisher runs on the thread its name hashes to, so different streams spread over the threads. 0: one per core.
    pub threads: usize,
    /// Spread the viewers of each stream round robin over the media threads, so one big stream uses every core (each
    /// packet then crosses once to each other thread that has viewers of it). false: a stream's viewers all run on its
    /// publisher's thread, and a packet's fan-out never wakes another thread.
    pub spread_viewers: bool,
    /// Most remote ICE candidates one session takes, in its offer and by trickle (PATCH) together: an offer with more
    /// gets 400, a PATCH past it 422. ICE-lite needs none (the client's checks reach us); a browser sends a handful.
    pub max_remote_candidates: usize,
    /// Of max_sessions, how many only publishers may take: viewers get 503 once max_sessions minus this many are open,
    /// so anonymous viewers can never keep streamers from publishing.
    pub reserved_publisher_sessions: usize,
    /// Most sessions from one client address (IPv6: one /64) that have not connected yet; further offers get 429 with
    /// Retry-After until one connects, ends or times out (connect_timeout_ms). 0: no limit.
    pub max_pending_sessions_per_ip: usize,
    /// Most packets resent to one viewer per second in answer to its NACKs; NACKed packets past it are not resent and
    /// are counted (zipiq_rtp_retransmissions_refused_total). 0: no limit.
    pub max_retransmits_per_viewer_per_second: u32,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// sqlite://PATH for the embedded database (created when missing: the file, its WAL and shm mode 0600, a missing
    /// directory 0700, whatever the umask) or postgres://USER:PASS@HOST/DB for a shared one.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before failing a request, in milliseconds.
    pub acquire_timeout_ms: u64,
}

/// `[cluster]`: several nodes sharing streams through PostgreSQL (see `src/cluster`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Whether this node joins the cluster (needs PostgreSQL).
    pub enabled: bool,
    /// Free-text region name placement prefers.
    pub region: String,
    /// Period of the registry heartbeat and lease renewal, in ms.
    pub heartbeat_interval_ms: u64,
    /// Age of a heartbeat after which its node is dead, in ms.
    pub node_dead_after_ms: u64,
    /// Lifetime of a stream route without renewal, in ms.
    pub lease_ms: u64,
    /// CPU-use difference (0.0-1.0) past which a publisher is redirected to a less loaded node.
    pub placement_cpu_margin: f64,
    /// File holding the cluster token (the `cluster-token` systemd credential wins).
    pub token_file: PathBuf,
    /// A pull without viewers is closed after this long, in ms.
    pub pull_idle_ms: u64,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Level filter (trace, debug, info, warn, error, or a tracing directive such as "info,zipiq::sfu=debug").
    /// RUST_LOG, when set, wins.
    pub level: String,
    /// "text" for people, "json" for log collectors.
    pub format: LogFormat,
    /// At most `events` log events of one kind (one place in the code: level, target, file and line) per `per_seconds`
    /// seconds; the rest are dropped, counted in zipiq_log_events_suppressed_total{target}, and summed up in a "log
    /// events suppressed" line per kind at the end of each window. Bounds what junk input (UDP datagrams, offers,
    /// floods of requests) can write to the disk. Audit events are never dropped. events = 0: no limit.
    pub rate_limit: LogRateLimit,
}

/// `[telemetry]`: traces. An incoming W3C `traceparent` header is always continued and carried on to the origin by
/// a cluster pull; spans leave the process only when `otlp_endpoint` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver, e.g. "http://127.0.0.1:4318": spans are POSTed
    /// as protobuf to `<otlp_endpoint>/v1/traces`. Empty: no spans are exported.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans (`service.instance.id` is the node name).
    pub service_name: String,
    /// Share (0.0-1.0) of new traces that are sampled; a request with a `traceparent` follows its sampled flag.
    pub sample_ratio: f64,
}

impl TelemetryConfig {
    /// The URL spans are POSTed to: `otlp_endpoint` with `/v1/traces` appended (unless it already ends so). None
    /// when exporting is off.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.trim();
        if base.is_empty() {
            return None;
        }
        let base = base.trim_end_matches('/');
        Some(if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        })
    }
}

/// `log.rate_limit`: at most `events` log events of one kind per `per_seconds` seconds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogRateLimit {
    /// Most events of one kind per window.
    pub events: u32,
    /// The window, in seconds.
    pub per_seconds: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener: Prometheus metrics at /metrics and the archive's operator endpoints. Keep it
    /// private. Whatever the token, it answers only requests whose Host is its own address (an IP literal with its
    /// port, or localhost when it listens on loopback) or one of `allowed_hosts`, refuses any request carrying an
    /// Origin header (403: browsers, cross-site forms, DNS rebinding), and takes POST bodies as application/json only
    /// (415).
    pub listen: SocketAddr,
    /// File holding the admin token. When there is one, every admin request needs `Authorization: Bearer <token>` (401
    /// otherwise; at least 16 characters). The systemd credential `admin-token` ($CREDENTIALS_DIRECTORY/admin-token,
    /// see systemd/zipiq.service) wins over this file; an empty credential means no token. Read at start. Empty (and no
    /// credential): no token.
    pub token_file: PathBuf,
    /// More names the admin listener answers to in Host, as "host" (on the listener's port) or "host:port", e.g. the
    /// name Prometheus scrapes it by: ["zipiq-1.internal"]. Empty: only its own address.
    pub allowed_hosts: Vec<String>,
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// A separate origin for the IPFS gateway, e.g. "https://ipfs.example.org" (a second name for this server, or a
    /// proxy in front of it; it must pass the Host header). Replay links, the playlists' segment URIs and the API's
    /// `ipfs_playlist` then point there, and HTML, script, SVG and XML from IPFS keep their media types there only
    /// (still under `Content-Security-Policy: sandbox`); that origin serves nothing but /ipfs/. Empty: the gateway
    /// shares the pages' origin, where such files are served as text/plain.
    pub public_url: String,
}

/// A web origin's host (lowercase; IPv6 in brackets) and port (the scheme's default when the URL names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address, lowercase (IPv6 in brackets).
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
    /// The default port of the origin's scheme (80 or 443): what a `Host` without a port means.
    pub scheme_port: u16,
}

impl HostPort {
    /// Whether a request's `Host` value (`host[:port]`) names this host and port.
    pub fn matches_host_header(&self, value: &str) -> bool {
        let Ok(authority) = value.trim().parse::<axum::http::uri::Authority>() else {
            return false;
        };
        if value.contains('@') {
            return false;
        }
        authority.host().eq_ignore_ascii_case(&self.host)
            && authority.port_u16().unwrap_or(self.scheme_port) == self.port
    }
}

impl GatewayConfig {
    /// The separate origin of the gateway (`public_url`), or None when the gateway shares the pages' origin.
    pub fn origin(&self) -> Result<Option<HostPort>, String> {
        let url = self.public_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|e| format!("gateway.public_url {url:?} is not a URL: {e}"))?;
        let port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => {
                return Err(format!(
                    "gateway.public_url {url:?} must start with http:// or https://"
                ));
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(format!("gateway.public_url {url:?} names no host"));
        };
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(format!(
                "gateway.public_url {url:?} must be scheme://host[:port], without user information"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "gateway.public_url {url:?} must be an origin (scheme://host[:port]) with no path or query: \
                 content is served at /ipfs/ on it"
            ));
        }
        Ok(Some(HostPort {
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(port),
            scheme_port: port,
        }))
    }

    /// The origin links to content start with (`https://gw.example.org`), or "" when the gateway shares the
    /// pages' origin (links are then `/ipfs/...`, relative to it).
    pub fn link_base(&self) -> &str {
        self.public_url.trim().trim_end_matches('/')
    }
}

/// `[streams]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    /// On first start with an empty database, create this stream and print its key and the OBS settings once. Empty:
    /// create nothing.
    pub default_stream: String,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Argon2id memory of account password hashing, in KiB (hashes are upgraded at the next successful login).
    pub argon2_memory_kib: u32,
    /// Argon2id passes of account password hashing.
    pub argon2_iterations: u32,
    /// Argon2id lanes of account password hashing.
    pub argon2_parallelism: u32,
    /// Shortest password accepted at sign-up, reset and change (characters). The longest is 1024.
    pub password_min_length: usize,
    /// Lifetime of a JWT access token, in seconds. Logout and password changes end it at once all the same.
    pub access_token_ttl_s: u64,
    /// Lifetime of a refresh token, in seconds. Each use replaces it with a new one (rotation).
    pub refresh_token_ttl_s: u64,
    /// Lifetime of a viewer token when none is asked for, in seconds.
    pub viewer_token_ttl_s: u64,
    /// Longest lifetime a viewer token can be asked for, in seconds.
    pub viewer_token_max_ttl_s: u64,
    /// How long the link of an email-verification mail works, in seconds (used once).
    pub email_verification_ttl_s: u64,
    /// How long the link of a password-reset mail works, in seconds (used once).
    pub password_reset_ttl_s: u64,
    /// File of the JWT signing keys (HS256, each with a `kid`), used when the systemd credential `jwt-key` is not there
    /// ($CREDENTIALS_DIRECTORY/jwt-key wins). Created with one random key when missing. `zipiq secrets rotate-jwt` adds
    /// a key; old keys verify until every token they signed has expired. Never put a key in this file.
    pub jwt_key_file: PathBuf,
    /// Whether anyone may sign up. false: only `zipiq users create` makes accounts.
    pub signup_open: bool,
    /// Most streams one account may own (admins: no limit).
    pub max_streams_per_user: u32,
}

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (implicit TLS).
    Tls,
    /// No encryption.
    None,
}

/// `[smtp]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Mail server for verification and password-reset mails. Empty: no mail is sent and the mail, with its link, is
    /// written to the log instead (fine for a single-person server; see README "Accounts").
    pub host: String,
    /// 587 for starttls, 465 for tls, 25 (or a local relay's port) for none.
    pub port: u16,
    /// "starttls" (upgrade a plain connection, required), "tls" (TLS from the first byte) or "none" (no encryption:
    /// only for a relay on this machine or in tests).
    pub security: SmtpSecurity,
    /// Login name at the mail server. Empty: no authentication.
    pub username: String,
    /// File holding the mail server password (else the systemd credential `smtp-password`). Empty: none.
    pub password_file: PathBuf,
    /// Sender of the mails.
    pub from: String,
    /// Longest wait for the mail server, in milliseconds.
    pub timeout_ms: u64,
}

/// One rate limit: `requests` per `per_seconds` for one key (0 requests: no limit).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window (0: no limit).
    pub requests: u32,
    /// The window, in seconds.
    pub per_seconds: u64,
}

/// `[rate_limits]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Login attempts per client address (IPv6 per /64).
    pub login_per_ip: RateLimit,
    /// Login attempts per email address.
    pub login_per_account: RateLimit,
    /// Sign-ups per client address.
    pub signup_per_ip: RateLimit,
    /// Sign-ups per email address.
    pub signup_per_account: RateLimit,
    /// Password-reset requests per client address.
    pub reset_per_ip: RateLimit,
    /// Password-reset requests per email address.
    pub reset_per_account: RateLimit,
    /// WHIP requests (POST, PATCH, DELETE) per client address.
    pub whip_per_ip: RateLimit,
    /// WHIP requests per stream owner.
    pub whip_per_account: RateLimit,
    /// WHEP requests per client address.
    pub whep_per_ip: RateLimit,
    /// WHEP requests per viewer token.
    pub whep_per_account: RateLimit,
    /// PATCHes of one WHIP/WHEP session (trickle ICE, ICE restart): a client trickles a handful of candidates at start.
    pub patch_per_session: RateLimit,
}

impl Config {
    /// The embedded defaults only.
    pub fn defaults() -> Result<Config, ConfigError> {
        Self::from_layers(None, std::iter::empty())
    }

    /// Defaults, then `file` when given, then every `ZIPIQ_*` variable of this process's environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Some((path.to_owned(), text))
            }
            None => None,
        };
        Self::from_layers(file, std::env::vars())
    }

    /// Builds a configuration from the embedded defaults, an optional file (path, text) and environment pairs.
    pub fn from_layers(
        file: Option<(PathBuf, String)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut merged: toml::Table =
            DEFAULT_CONFIG_TOML
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: PathBuf::from("<embedded config.toml>"),
                    message: e.to_string(),
                })?;
        if let Some((path, text)) = file {
            let overlay: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
            merge_tables(&mut merged, overlay);
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        env.sort();
        for (name, raw) in env {
            apply_env(&mut merged, &name, &raw)?;
        }
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks relations between keys that types alone cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.media.nack_buffer_packets.is_power_of_two() {
            return Err(ConfigError::Invalid(
                "media.nack_buffer_packets must be a power of two".into(),
            ));
        }
        if self.media.reserved_publisher_sessions >= self.media.max_sessions {
            return Err(ConfigError::Invalid(
                "media.reserved_publisher_sessions must be smaller than media.max_sessions (viewers need room too)"
                    .into(),
            ));
        }
        for (key, value) in [
            ("http.max_connections", self.http.max_connections as u64),
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.body_timeout_ms", self.http.body_timeout_ms),
            ("http.request_timeout_ms", self.http.request_timeout_ms),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        if self.audit.prune_interval_s == 0 {
            return Err(ConfigError::Invalid(
                "audit.prune_interval_s must be at least 1".into(),
            ));
        }
        if self.media.tap_channel_capacity == 0 {
            return Err(ConfigError::Invalid(
                "media.tap_channel_capacity must be at least 1".into(),
            ));
        }
        if !self.database.url.starts_with("sqlite:") && !self.database.url.starts_with("postgres") {
            return Err(ConfigError::Invalid(format!(
                "database.url must start with sqlite:// or postgres://, not {:?}",
                self.database.url.split(':').next().unwrap_or("")
            )));
        }
        if self.cluster.enabled && !self.database.url.starts_with("postgres") {
            return Err(ConfigError::Invalid(
                "cluster.enabled = true needs a shared PostgreSQL database: database.url is not postgres://".into(),
            ));
        }
        let t = &self.telemetry;
        if let Some(url) = t.traces_url()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(
                "telemetry.otlp_endpoint must be an http:// or https:// URL (or empty: no export)"
                    .into(),
            ));
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(ConfigError::Invalid(
                "telemetry.sample_ratio must be between 0.0 and 1.0".into(),
            ));
        }
        if t.service_name.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "telemetry.service_name must not be empty".into(),
            ));
        }
        let c = &self.cluster;
        if c.heartbeat_interval_ms == 0
            || c.node_dead_after_ms <= c.heartbeat_interval_ms
            || c.lease_ms <= c.heartbeat_interval_ms
        {
            return Err(ConfigError::Invalid(
                "cluster.heartbeat_interval_ms must be at least 1 and below cluster.node_dead_after_ms and cluster.lease_ms"
                    .into(),
            ));
        }
        if !(0.0..=1.0).contains(&c.placement_cpu_margin) {
            return Err(ConfigError::Invalid(
                "cluster.placement_cpu_margin must be between 0.0 and 1.0".into(),
            ));
        }
        let auth = &self.auth;
        if auth.argon2_memory_kib < 8 * auth.argon2_parallelism.max(1)
            || auth.argon2_iterations == 0
            || auth.argon2_parallelism == 0
        {
            return Err(ConfigError::Invalid(
                "auth.argon2_*: memory must be at least 8 KiB per lane, iterations and parallelism at least 1"
                    .into(),
            ));
        }
        if auth.password_min_length == 0 || auth.password_min_length > 1024 {
            return Err(ConfigError::Invalid(
                "auth.password_min_length must be between 1 and 1024".into(),
            ));
        }
        for (key, value) in [
            ("auth.access_token_ttl_s", auth.access_token_ttl_s),
            ("auth.refresh_token_ttl_s", auth.refresh_token_ttl_s),
            ("auth.viewer_token_ttl_s", auth.viewer_token_ttl_s),
            ("auth.viewer_token_max_ttl_s", auth.viewer_token_max_ttl_s),
            (
                "auth.email_verification_ttl_s",
                auth.email_verification_ttl_s,
            ),
            ("auth.password_reset_ttl_s", auth.password_reset_ttl_s),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        if auth.viewer_token_ttl_s > auth.viewer_token_max_ttl_s {
            return Err(ConfigError::Invalid(
                "auth.viewer_token_ttl_s must not exceed auth.viewer_token_max_ttl_s".into(),
            ));
        }
        if !self.smtp.host.is_empty() && self.smtp.from.parse::<lettre::message::Mailbox>().is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "smtp.from {:?} is not a mail address such as \"zipIQ <noreply@example.org>\"",
                self.smtp.from
            )));
        }
        let gateway = self.gateway.origin().map_err(ConfigError::Invalid)?;
        if let Some(gateway) = &gateway
            && !self.http.public_url.trim().is_empty()
        {
            let pages = GatewayConfig {
                public_url: self.http.public_url.clone(),
            };
            if pages.origin().ok().flatten().as_ref() == Some(gateway) {
                return Err(ConfigError::Invalid(
                    "gateway.public_url must be another origin than http.public_url (empty: the same origin)"
                        .into(),
                ));
            }
        }
        for host in &self.admin.allowed_hosts {
            let host = host.trim();
            if host.is_empty()
                || host.contains('@')
                || host.parse::<axum::http::uri::Authority>().is_err()
            {
                return Err(ConfigError::Invalid(format!(
                    "admin.allowed_hosts: {host:?} is not a host or host:port"
                )));
            }
        }
        for server in &self.media.ice_servers {
            if server.urls.is_empty() {
                return Err(ConfigError::Invalid(
                    "media.ice_servers: every entry needs at least one url".into(),
                ));
            }
        }
        Ok(())
    }

    /// The base URL people use to reach this server.
    pub fn public_url(&self) -> String {
        if !self.http.public_url.is_empty() {
            return self.http.public_url.trim_end_matches('/').to_owned();
        }
        let addr = self.http.listen;
        if addr.ip().is_unspecified() {
            format!("http://127.0.0.1:{}", addr.port())
        } else {
            format!("http://{addr}")
        }
    }
}

/// Recursively lays `overlay` over `base`: tables merge, any other value replaces.
fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// Applies one `ZIPIQ_SECTION__KEY=value` variable. Unknown sections and keys are errors naming the variable.
fn apply_env(table: &mut toml::Table, name: &str, raw: &str) -> Result<(), ConfigError> {
    let path = &name[ENV_PREFIX.len()..];
    let mut parts = path.split("__").map(|p| p.to_ascii_lowercase());
    let (Some(section), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ConfigError::Env {
            name: name.to_owned(),
            reason: "expected ZIPIQ_<SECTION>__<KEY>".into(),
        });
    };
    let Some(toml::Value::Table(section_table)) = table.get_mut(&section) else {
        return Err(ConfigError::Env {
            name: name.to_owned(),
            reason: format!("no section [{section}]"),
        });
    };
    let Some(current) = section_table.get(&key) else {
        return Err(ConfigError::Env {
            name: name.to_owned(),
            reason: format!("no key {key} in [{section}]"),
        });
    };
    let value = parse_env_value(raw, current);
    section_table.insert(key, value);
    Ok(())
}

/// Reads an environment value as TOML when it parses as a value of the same kind as the default, else as a string.
fn parse_env_value(raw: &str, current: &toml::Value) -> toml::Value {
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(v) if std::mem::discriminant(&v) == std::mem::discriminant(current) => v,
        // Whole numbers given where a float is expected.
        Some(toml::Value::Integer(i)) if matches!(current, toml::Value::Float(_)) => {
            toml::Value::Float(i as f64)
        }
        _ => toml::Value::String(raw.to_owned()),
    }
}

/// `[ipfs]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpfsConfig {
    /// Repository directory: blocks, pins, the libp2p identity key.
    pub repo_dir: PathBuf,
    /// Swarm listen multiaddrs (TCP and QUIC).
    pub listen: Vec<String>,
    /// Peers dialled at start and used to join the DHT; each must end in `/p2p/<peer id>`. Empty: offline.
    pub bootstrap: Vec<String>,
    /// Fetch blocks this node lacks from connected peers (bitswap) when reading. Off: missing content is 404.
    pub fetch_from_network: bool,
    /// How long one block fetch may take when `fetch_from_network` is on, in milliseconds.
    pub fetch_timeout_ms: u64,
    /// Announce added roots in the DHT (provider records).
    pub announce: bool,
}

impl Default for IpfsConfig {
    fn default() -> Self {
        IpfsConfig {
            repo_dir: PathBuf::from("./data/ipfs"),
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".to_owned(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".to_owned(),
            ],
            bootstrap: Vec::new(),
            fetch_from_network: false,
            fetch_timeout_ms: 30_000,
            announce: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let c = Config::defaults().expect("embedded config.toml must load");
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.media.udp_listen.port(), 8189);
        assert!(c.media.ice_lite);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.streams.default_stream, "live");
        assert_eq!(c.auth.argon2_memory_kib, 19456);
        assert_eq!(c.smtp.security, SmtpSecurity::Starttls);
        assert_eq!(c.rate_limits.login_per_account.requests, 10);
        assert!(c.http.trusted_proxies.is_empty());
        assert_eq!(c.telemetry.otlp_endpoint, "");
        assert_eq!(c.telemetry.traces_url(), None);
        assert_eq!(c.telemetry.service_name, "zipiq");
        assert_eq!(c.telemetry.sample_ratio, 1.0);
    }

    #[test]
    fn the_otlp_endpoint_is_a_base_url_and_bad_telemetry_keys_are_named() {
        let env = vec![(
            "ZIPIQ_TELEMETRY__OTLP_ENDPOINT".to_owned(),
            "http://127.0.0.1:4318/".to_owned(),
        )];
        let c = Config::from_layers(None, env).unwrap();
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        let env = vec![(
            "ZIPIQ_TELEMETRY__OTLP_ENDPOINT".to_owned(),
            "https://otel.example.org/v1/traces".to_owned(),
        )];
        let c = Config::from_layers(None, env).unwrap();
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("https://otel.example.org/v1/traces")
        );
        for (name, value, key) in [
            (
                "ZIPIQ_TELEMETRY__OTLP_ENDPOINT",
                "127.0.0.1:4318",
                "telemetry.otlp_endpoint",
            ),
            (
                "ZIPIQ_TELEMETRY__SAMPLE_RATIO",
                "1.5",
                "telemetry.sample_ratio",
            ),
            (
                "ZIPIQ_TELEMETRY__SERVICE_NAME",
                " ",
                "telemetry.service_name",
            ),
        ] {
            let env = vec![(name.to_owned(), value.to_owned())];
            let err = Config::from_layers(None, env).unwrap_err().to_string();
            assert!(err.contains(key), "{name}={value}: {err}");
        }
    }

    #[test]
    fn the_cluster_needs_postgres_and_says_which_key() {
        let env = vec![("ZIPIQ_CLUSTER__ENABLED".to_owned(), "true".to_owned())];
        let err = Config::from_layers(None, env).unwrap_err().to_string();
        assert!(
            err.contains("cluster.enabled") && err.contains("database.url"),
            "{err}"
        );
        let env = vec![
            ("ZIPIQ_CLUSTER__ENABLED".to_owned(), "true".to_owned()),
            (
                "ZIPIQ_DATABASE__URL".to_owned(),
                "postgres://u@127.0.0.1/db".to_owned(),
            ),
        ];
        let c = Config::from_layers(None, env).unwrap();
        assert!(c.cluster.enabled);
        assert_eq!(c.cluster.lease_ms, 10_000);
        let env = vec![("ZIPIQ_CLUSTER__LEASE_MS".to_owned(), "1000".to_owned())];
        let err = Config::from_layers(None, env).unwrap_err().to_string();
        assert!(err.contains("cluster.lease_ms"), "{err}");
    }

    #[test]
    fn rate_limits_can_be_set_from_the_environment_as_inline_tables() {
        let env = vec![(
            "ZIPIQ_RATE_LIMITS__LOGIN_PER_IP".to_owned(),
            "{ requests = 3, per_seconds = 10 }".to_owned(),
        )];
        let c = Config::from_layers(None, env).unwrap();
        assert_eq!(
            c.rate_limits.login_per_ip,
            RateLimit {
                requests: 3,
                per_seconds: 10
            }
        );
    }

    #[test]
    fn a_viewer_token_default_longer_than_its_maximum_is_refused() {
        let env = vec![(
            "ZIPIQ_AUTH__VIEWER_TOKEN_TTL_S".to_owned(),
            "999999999".to_owned(),
        )];
        let err = Config::from_layers(None, env).unwrap_err();
        assert!(err.to_string().contains("viewer_token_ttl_s"), "{err}");
    }

    #[test]
    fn file_overrides_only_the_keys_it_names() {
        let file = "[http]\nlisten = \"127.0.0.1:9999\"\n".to_owned();
        let c = Config::from_layers(Some(("f.toml".into(), file)), Vec::new()).unwrap();
        assert_eq!(c.http.listen.port(), 9999);
        assert_eq!(c.media.udp_listen.port(), 8189);
    }

    #[test]
    fn env_overrides_file_and_parses_typed_values() {
        let env = vec![
            ("ZIPIQ_HTTP__LISTEN".to_owned(), "127.0.0.1:7000".to_owned()),
            ("ZIPIQ_MEDIA__ICE_LITE".to_owned(), "false".to_owned()),
            (
                "ZIPIQ_MEDIA__PUBLIC_IPS".to_owned(),
                "[\"203.0.113.7\"]".to_owned(),
            ),
            ("ZIPIQ_LOG__FORMAT".to_owned(), "json".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let file = "[http]\nlisten = \"127.0.0.1:9999\"\n".to_owned();
        let c = Config::from_layers(Some(("f.toml".into(), file)), env).unwrap();
        assert_eq!(c.http.listen.port(), 7000);
        assert!(!c.media.ice_lite);
        assert_eq!(c.media.public_ips, vec!["203.0.113.7".to_owned()]);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_key_in_file_is_an_error_naming_it() {
        let file = "[http]\nlisen = \"127.0.0.1:9999\"\n".to_owned();
        let err = Config::from_layers(Some(("f.toml".into(), file)), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_an_error_naming_the_variable() {
        let env = vec![("ZIPIQ_HTTP__LISEN".to_owned(), "x".to_owned())];
        let err = Config::from_layers(None, env).unwrap_err();
        assert!(err.to_string().contains("ZIPIQ_HTTP__LISEN"), "{err}");
    }

    #[test]
    fn bad_value_type_is_an_error() {
        let env = vec![("ZIPIQ_MEDIA__MAX_SESSIONS".to_owned(), "lots".to_owned())];
        let err = Config::from_layers(None, env).unwrap_err();
        assert!(err.to_string().contains("max_sessions") || err.to_string().contains("invalid"));
    }

    #[test]
    fn gateway_origin_is_parsed_and_checked() {
        let gw = |url: &str| {
            GatewayConfig {
                public_url: url.to_owned(),
            }
            .origin()
        };
        assert_eq!(gw(""), Ok(None));
        assert_eq!(
            gw("https://IPFS.example.org/"),
            Ok(Some(HostPort {
                host: "ipfs.example.org".into(),
                port: 443,
                scheme_port: 443
            }))
        );
        assert_eq!(
            gw("http://[::1]:8081").map(|o| o.map(|o| (o.host, o.port))),
            Ok(Some(("[::1]".into(), 8081)))
        );
        for bad in [
            "ipfs.example.org",
            "ftp://ipfs.example.org",
            "https://ipfs.example.org/gw",
            "https://ipfs.example.org/?x=1",
            "https://user@ipfs.example.org",
        ] {
            assert!(gw(bad).is_err(), "{bad}");
        }
        let origin = gw("https://ipfs.example.org").unwrap().unwrap();
        assert!(origin.matches_host_header("ipfs.example.org"));
        assert!(origin.matches_host_header("IPFS.example.org:443"));
        assert!(!origin.matches_host_header("ipfs.example.org:8443"));
        assert!(!origin.matches_host_header("evil.example"));
        assert!(!origin.matches_host_header("user@ipfs.example.org"));
        let other_port = gw("https://ipfs.example.org:8443").unwrap().unwrap();
        assert!(other_port.matches_host_header("ipfs.example.org:8443"));
        assert!(!other_port.matches_host_header("ipfs.example.org"));

        let same = vec![
            (
                "ZIPIQ_GATEWAY__PUBLIC_URL".to_owned(),
                "https://zipiq.example.org".to_owned(),
            ),
            (
                "ZIPIQ_HTTP__PUBLIC_URL".to_owned(),
                "https://zipiq.example.org".to_owned(),
            ),
        ];
        let err = Config::from_layers(None, same).unwrap_err();
        assert!(err.to_string().contains("another origin"), "{err}");
        let err = Config::from_layers(
            None,
            vec![(
                "ZIPIQ_ADMIN__ALLOWED_HOSTS".to_owned(),
                "[\"a b\"]".to_owned(),
            )],
        )
        .unwrap_err();
        assert!(err.to_string().contains("allowed_hosts"), "{err}");
    }

    #[test]
    fn public_url_defaults_to_loopback_for_wildcard_listen() {
        let c = Config::defaults().unwrap();
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
    }
}
