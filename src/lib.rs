//! zipIQ: a censorship-resistant live-streaming server. A WHIP/WHEP SFU that fans RTP out without copying it,
//! and a side pipeline that cuts every stream into content-addressed chunks in an embedded IPFS node, archived
//! on Arweave. This file only wires the parts together; see ARCHITECTURE.md for the design.

pub mod archive;
pub mod auth;
pub mod cli;
pub(crate) mod cluster;
pub mod config;
pub mod db;
pub(crate) mod http;
pub(crate) mod log_flood;
pub mod media;
pub(crate) mod pruner;
pub(crate) mod recorder;
pub(crate) mod reload;
pub mod resilience;
pub mod secrets;
pub mod sfu;
pub mod store;
pub(crate) mod systemd;
pub mod telemetry;
#[cfg(test)]
mod test_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::db::Db;
use crate::http::AppState;
use crate::sfu::Sfu;

/// A running server.
pub struct Server {
    /// The accounts, tokens and stream-key checks the HTTP handlers use.
    pub auth: Arc<auth::Auth>,
    /// Where the HTTP listener (WHIP, WHEP, API, gateway, pages) is bound.
    pub http_addr: SocketAddr,
    /// Where the admin listener (metrics, health) is bound.
    pub admin_addr: SocketAddr,
    /// Where the shared WebRTC media UDP socket is bound.
    pub media_addr: SocketAddr,
    /// The SFU: live streams, their publisher and viewer sessions.
    pub sfu: Sfu,
    /// The metadata database.
    pub db: Db,
    /// The embedded IPFS node recordings are stored in.
    pub ipfs: Arc<store::IpfsNode>,
    /// The recorder that cuts live streams into chunks.
    pub recorder: recorder::Recorder,
    /// The archive worker that uploads chunks to Arweave.
    pub archiver: archive::worker::Archiver,
    /// The configuration the server started with.
    pub config: Arc<Config>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    cluster: Option<cluster::Cluster>,
}

/// The stream created on first start, with its key (shown once).
#[derive(Debug, Clone)]
pub struct FirstStream {
    /// The stream's name (its WHIP/WHEP path).
    pub name: String,
    /// The stream key, in clear text: only its hash is stored.
    pub key: String,
}

impl Server {
    /// Opens the database (migrating it), binds every listener and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<(Server, Option<FirstStream>)> {
        let config = Arc::new(config);
        // Read before anything starts: a configured token that cannot be read stops the start.
        let admin_token = http::admin_listener::load_token(
            &config.admin,
            std::env::var_os(secrets::CREDENTIALS_DIRECTORY)
                .map(std::path::PathBuf::from)
                .as_deref(),
        )
        .context("reading the admin token")?;
        // The metrics recorder goes in before anything counts, or the first packets, requests and segments would
        // be counted by no one.
        if telemetry::prometheus().is_none() {
            tracing::warn!("another metrics recorder is installed: /metrics will not answer");
        }
        let db = Db::connect(&config.database).await.with_context(|| {
            format!("opening the database {}", redact_url(&config.database.url))
        })?;
        let applied = db.migrate().await.context("migrating the database")?;
        for m in &applied {
            tracing::info!(version = m.version, description = %m.description, "applied migration");
        }
        let first = create_first_stream(&db, &config).await?;
        let ipfs = Arc::new(
            store::IpfsNode::start(&config.ipfs)
                .await
                .context("starting the embedded IPFS node")?,
        );
        let recorder = recorder::Recorder::new(
            db.clone(),
            ipfs.clone(),
            config.recording.clone(),
            config.media.tap_channel_capacity,
            config.server.node(),
        );
        let recovered = recorder.recover().await;
        if recovered > 0 {
            tracing::info!(recovered, "finished broadcasts left open by a previous run");
        }
        {
            // Provider records live in memory: announce every stored root again.
            let ipfs = ipfs.clone();
            tokio::spawn(async move {
                match ipfs.reprovide_all().await {
                    Ok(n) => tracing::debug!(announced = n, "announced stored content"),
                    Err(e) => tracing::warn!(error = %e, "announcing stored content failed"),
                }
            });
        }
        let wallets_dir = config.archive.wallets_path();
        let wallets = Arc::new(
            archive::wallets::WalletPool::load(&wallets_dir)
                .with_context(|| format!("loading wallets from {}", wallets_dir.display()))?,
        );
        tracing::info!(wallets = wallets.len(), dir = %wallets_dir.display(), mode = ?config.archive.mode, "archive wallets loaded");
        let archiver = archive::worker::Archiver::new(
            db.clone(),
            ipfs.clone(),
            config.archive.clone(),
            wallets,
            &config.server.node(),
        )
        .map_err(|e| anyhow::anyhow!("archive configuration: {e}"))?;
        let sfu = Sfu::new(&config.media)
            .await
            .context("starting the WebRTC engine")?;
        sfu.set_recording_hook(Arc::new(recorder.clone()));
        let http_listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding the HTTP listener {}", config.http.listen))?;
        let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("binding the admin listener {}", config.admin.listen))?;
        let http_addr = http_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let admin_guard =
            http::admin_listener::AdminGuard::new(admin_addr, &config.admin, admin_token);
        let config = with_bound_public_url(config, http_addr);
        let auth = Arc::new(auth::Auth::new(config.clone()).context("setting up accounts")?);
        let cluster = if config.cluster.enabled {
            let cluster = cluster::Cluster::new(
                db.clone(),
                &config,
                &config.public_url(),
                announced_media_addr(&config, sfu.media_addr()),
            )
            .map_err(|e| anyhow::anyhow!("cluster: {e}"))?;
            cluster
                .join(&sfu)
                .await
                .context("joining the cluster (writing this node's row in cluster_nodes)")?;
            tracing::info!(node = %cluster.node_id(), region = %config.cluster.region, "joined the cluster");
            Some(cluster)
        } else {
            None
        };
        let state = AppState {
            config: config.clone(),
            db: db.clone(),
            sfu: sfu.clone(),
            auth: auth.clone(),
            ipfs: ipfs.clone(),
            archiver: archiver.clone(),
            cluster: cluster.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);

        let app = http::router(state);
        let limits = http_limits(&config);
        let http_task = tokio::spawn(http::serve::serve(
            "http",
            http_listener,
            app,
            limits,
            stop_rx.clone(),
        ));
        tracing::info!(
            admin = %admin_addr,
            token = admin_guard.has_token(),
            "admin listener: Origin refused, Host checked, POST bodies JSON"
        );
        let admin = http::admin_listener::admin_router(http::admin_listener::state_for_admin(
            &db, &archiver,
        ))
        .layer(axum::middleware::from_fn_with_state(
            admin_guard,
            http::admin_listener::guard,
        ));
        let admin_task = tokio::spawn(http::serve::serve(
            "admin",
            admin_listener,
            admin,
            limits,
            stop_rx.clone(),
        ));
        let gauges_task = spawn_gauges(
            db.clone(),
            ipfs.clone(),
            sfu.clone(),
            archiver.clone(),
            cluster.clone(),
            stop_rx.clone(),
        );
        let key_watch_task = sfu::key_watch::spawn(sfu.clone(), db.clone(), stop_rx.clone());
        let prune_task = pruner::spawn(db.clone(), auth.clone(), config.clone(), stop_rx.clone());
        let archive_tasks = archiver.spawn(stop_rx.clone());
        let cluster_tasks = match &cluster {
            Some(c) => cluster::spawn(
                c.clone(),
                sfu.clone(),
                config.database.url.clone(),
                stop_rx.clone(),
            ),
            None => Vec::new(),
        };
        tracing::info!(http = %http_addr, admin = %admin_addr, media = %sfu.media_addr(), "zipIQ is serving");
        Ok((
            Server {
                auth,
                http_addr,
                admin_addr,
                media_addr: sfu.media_addr(),
                sfu,
                db,
                ipfs,
                recorder,
                archiver,
                config,
                stop,
                tasks: vec![
                    http_task,
                    admin_task,
                    gauges_task,
                    key_watch_task,
                    prune_task,
                ]
                .into_iter()
                .chain(archive_tasks)
                .chain(cluster_tasks)
                .collect(),
                cluster,
            },
            first,
        ))
    }

    /// Stops accepting, ends every session, lets the recorder commit the last segments (bounded by
    /// `server.shutdown_timeout_ms`), then stops IPFS and the database.
    pub async fn shutdown(self) {
        if let Some(cluster) = &self.cluster {
            // No new placements here from now on (307 to other nodes); the sessions have until
            // server.shutdown_timeout_ms to end.
            cluster
                .drain(
                    &self.sfu,
                    Duration::from_millis(self.config.server.shutdown_timeout_ms),
                )
                .await;
        }
        if let Some(cluster) = &self.cluster {
            cluster.close_all_pulls(&self.sfu).await;
        }
        let _ = self.stop.send(true);
        self.sfu.shutdown().await;
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
        self.recorder
            .drain(Duration::from_millis(
                self.config.server.shutdown_timeout_ms,
            ))
            .await;
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.ipfs.shutdown().await;
        self.db.close().await;
    }
}

/// Refreshes gauges that are read from state rather than counted on the way (database pool use, IPFS peers) and
/// the `STATUS=` line `systemctl status` shows.
fn spawn_gauges(
    db: Db,
    ipfs: Arc<store::IpfsNode>,
    sfu: Sfu,
    archiver: archive::worker::Archiver,
    cluster: Option<cluster::Cluster>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let (size, idle) = db.pool_usage();
            let idle = idle as f64;
            metrics::gauge!("zipiq_db_pool_connections", "state" => "idle").set(idle);
            metrics::gauge!("zipiq_db_pool_connections", "state" => "in_use")
                .set((f64::from(size) - idle).max(0.0));
            let peers = ipfs.connected_peers().await;
            metrics::gauge!("zipiq_ipfs_connected_peers").set(peers as f64);
            http::health::archive_state(&archiver);
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                + sfu.media_thread_tasks();
            metrics::gauge!("zipiq_tokio_tasks").set(tasks as f64);
            let c = sfu.counts();
            let mut status = format!(
                "{} live streams, {} publishers, {} viewers; {peers} IPFS peers",
                c.streams, c.publishers, c.viewers
            );
            if let Some(cluster) = &cluster {
                status.push_str(&cluster.status_line());
            }
            systemd::status(&status);
            // Histograms are summarised by the exporter's upkeep (installed without its own upkeep task).
            if let Some(handle) = telemetry::prometheus() {
                handle.run_upkeep();
            }
        }
    })
}

/// The connection limits of both listeners, the cap kept below the open-file limit (raised here where allowed).
fn http_limits(config: &Config) -> http::serve::Limits {
    let files = http::serve::raise_open_file_limit();
    let max_connections =
        http::serve::effective_max_connections(config.http.max_connections, files);
    if max_connections < config.http.max_connections {
        tracing::warn!(
            wanted = config.http.max_connections,
            open_file_limit = files,
            max_connections,
            "http.max_connections lowered to stay below the open-file limit"
        );
    }
    http::serve::Limits {
        max_connections,
        header_read_timeout: Duration::from_millis(config.http.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.http.idle_timeout_ms),
    }
}

/// On first start with an empty database, creates the configured default stream. Nodes started together on one
/// empty database may all find it empty: the first insert wins, and the others, refused because the name is now
/// taken, start without creating anything (only the winner prints the key).
async fn create_first_stream(db: &Db, config: &Config) -> anyhow::Result<Option<FirstStream>> {
    let name = config.streams.default_stream.trim();
    if name.is_empty() || db.count_streams().await? > 0 {
        return Ok(None);
    }
    let (row, key) = match db.create_stream(name).await {
        Ok(created) => created,
        Err(db::DbError::Conflict(_)) if db.find_stream(name).await?.is_some() => {
            tracing::info!(stream = name, "another node created the first stream");
            return Ok(None);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("creating the default stream {name:?}"));
        }
    };
    Ok(Some(FirstStream {
        name: row.name,
        key,
    }))
}

/// With no `http.public_url` configured, links (mails, OBS settings) use the address the HTTP listener really
/// bound (its port may have been 0 in the configuration).
fn with_bound_public_url(config: Arc<Config>, bound: SocketAddr) -> Arc<Config> {
    if !config.http.public_url.is_empty() || config.http.listen.port() != 0 {
        return config;
    }
    let mut patched = (*config).clone();
    let host = if bound.ip().is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        bound.ip()
    };
    patched.http.public_url = format!("http://{}", SocketAddr::new(host, bound.port()));
    Arc::new(patched)
}

/// The media address other nodes and the registry see: the first `media.public_ips` entry, else the bound
/// address (with the loopback address for a wildcard bind), on the bound port.
fn announced_media_addr(config: &Config, bound: SocketAddr) -> String {
    let ip = config
        .media
        .public_ips
        .iter()
        .find_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            } else {
                bound.ip()
            }
        });
    SocketAddr::new(ip, bound.port()).to_string()
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The text printed once when the first stream is created: the key and the OBS settings.
pub fn first_stream_banner(config: &Config, first: &FirstStream) -> String {
    let base = config.public_url();
    format!(
        "\n\
         ==================================================================\n\
         zipIQ created the stream {name:?}. Its key is shown only this once:\n\
         \n\
         \x20 Stream key:  {key}\n\
         \n\
         OBS Studio (30 or newer): Settings > Stream\n\
         \x20 Service:      WHIP\n\
         \x20 Server:       {base}/whip/{name}\n\
         \x20 Bearer Token: {key}\n\
         \n\
         Or publish from a browser: {base}/publish/{name}\n\
         Watch at:                  {base}/watch/{name}\n\
         New key later: zipiq keys create {name}\n\
         ==================================================================\n",
        name = first.name,
        key = first.key,
    )
}

/// Runs the server until SIGINT or SIGTERM; SIGHUP reloads `config_path` and applies what can change live.
pub async fn serve(config: Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let (server, first) = Server::start(config).await?;
    if let Some(first) = &first {
        println!("{}", first_stream_banner(&server.config, first));
    }
    systemd::ready(&format!(
        "serving HTTP on {}, media on UDP {}",
        server.http_addr, server.media_addr
    ));
    systemd::spawn_watchdog();
    spawn_reload_on_sighup(
        server.config.clone(),
        config_path,
        server.auth.clone(),
        server.archiver.wallets().clone(),
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    systemd::stopping();
    server.shutdown().await;
    Ok(())
}

/// On SIGHUP: read the configuration again and apply what can change without a restart, logging each change; read
/// the JWT key file again (after `zipiq secrets rotate-jwt`) and the wallets directory (a new or removed wallet).
fn spawn_reload_on_sighup(
    initial: Arc<Config>,
    path: Option<std::path::PathBuf>,
    auth: Arc<auth::Auth>,
    wallets: Arc<archive::wallets::WalletPool>,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        let mut current = (*initial).clone();
        while hup.recv().await.is_some() {
            match Config::load(path.as_deref()) {
                Ok(new) => {
                    let changes = reload::apply(&current, &new);
                    if changes.is_empty() {
                        tracing::info!(
                            "SIGHUP: configuration reloaded, nothing that can change live changed"
                        );
                    }
                    for change in &changes {
                        tracing::info!(change = %change, "SIGHUP: applied");
                    }
                    current = new;
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: configuration not reloaded"),
            }
            match auth.reload_jwt_keys() {
                Ok(kids) => tracing::info!(kids = ?kids, "SIGHUP: JWT signing keys reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: JWT signing keys not reloaded"),
            }
            match wallets.reload() {
                Ok((added, removed)) => {
                    tracing::info!(?added, ?removed, "SIGHUP: wallets reloaded")
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: wallets not reloaded"),
            }
        }
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/z"),
            "postgres://u:***@db:5432/z"
        );
        assert_eq!(redact_url("sqlite://./data/z.db"), "sqlite://./data/z.db");
    }
}
