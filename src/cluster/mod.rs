//! The cluster: several nodes sharing one PostgreSQL database share streams. Each node keeps its row in the node
//! registry (`heartbeat.rs`), claims the route of every stream whose publisher it accepts (one statement, a
//! fencing epoch, a lease renewed at every heartbeat), learns the others' routes by LISTEN/NOTIFY and polling, and
//! places new publishers on the least loaded node (`placement.rs`). The media path never waits on any of this: the
//! database is only touched by HTTP handlers and this module's own tasks; with PostgreSQL down, running streams go
//! on and new cross-node requests get 503 with `Retry-After`.
//!
//! A viewer who reaches a node that is not the stream's origin is served from a pull of the stream from the origin
//! over WHEP (`pull.rs`), or, without a cluster token or when the pull fails, redirected (307) to the origin.

mod heartbeat;
mod load;
pub(crate) mod placement;
pub(crate) mod pull;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::db::cluster::{Claim, NodeReport, NodeRow, RouteRow};
use crate::db::{Db, DbError};
use crate::sfu::Sfu;
use crate::sfu::session::SessionRole;

pub(crate) use heartbeat::spawn;
use placement::Placement;

/// A route this node holds as a stream's origin.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// When it was claimed: a route younger than the connect timeout is kept even before its publisher's session
    /// shows up.
    claimed: Instant,
    /// A heartbeat saw its publisher's session: once that is gone, the route is given back at once.
    seen: bool,
}

struct Inner {
    db: Db,
    node_id: String,
    region: String,
    http_url: String,
    media_addr: String,
    max_sessions: i64,
    lease_ms: i64,
    dead_after_ms: i64,
    heartbeat: Duration,
    margin_permille: i64,
    connect_grace: Duration,
    started_at: i64,
    draining: AtomicBool,
    held: Mutex<HashMap<String, Held>>,
    routes: RwLock<HashMap<String, RouteRow>>,
    nodes: RwLock<Vec<NodeRow>>,
    last_report: Mutex<Option<NodeReport>>,
    /// The cluster token (pulls present it to origins; origins accept it for relays).
    token: Option<zeroize::Zeroizing<String>>,
    /// HTTP client of the pulls' WHEP requests.
    http: reqwest::Client,
    pulls: Mutex<HashMap<String, pull::Pull>>,
    /// Streams being pulled again from a new origin (one attempt at a time per stream).
    repulling: Mutex<std::collections::HashSet<String>>,
    pull_idle: Duration,
}

/// This node's part in the cluster (cheap to clone).
#[derive(Clone)]
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.node_id)
            .finish()
    }
}

/// The answer to a publisher's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimOutcome {
    /// This node is the stream's origin.
    Origin,
    /// Another live node is.
    Elsewhere(RouteRow),
}

/// What `GET /api/v1/cluster` shows.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterView {
    /// Whether this node is in a cluster (`cluster.enabled`).
    pub enabled: bool,
    /// This node's name.
    pub node_id: String,
    /// Every node of the registry.
    pub nodes: Vec<NodeRow>,
    /// Every stream route.
    pub routes: Vec<RouteRow>,
    /// Streams this node pulls from their origin.
    pub pulls: Vec<pull::PullView>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// This node's cluster membership, from the configuration; `http_url` and `media_addr` are what other nodes
    /// and redirected clients reach it at.
    pub(crate) fn new(
        db: Db,
        config: &Config,
        http_url: &str,
        media_addr: String,
    ) -> Result<Cluster, String> {
        let c = &config.cluster;
        let token = pull::load_token(&c.token_file)?;
        if token.is_none() {
            tracing::warn!(
                "no cluster token (cluster.token_file or the cluster-token credential): viewers of streams whose origin is another node are redirected there, not pulled"
            );
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("the cluster's HTTP client: {e}"))?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                db,
                node_id: config.server.node(),
                region: c.region.clone(),
                http_url: http_url.trim_end_matches('/').to_owned(),
                media_addr,
                max_sessions: config.media.max_sessions as i64,
                lease_ms: c.lease_ms as i64,
                dead_after_ms: c.node_dead_after_ms as i64,
                heartbeat: Duration::from_millis(c.heartbeat_interval_ms),
                margin_permille: (c.placement_cpu_margin * 1000.0).round() as i64,
                connect_grace: Duration::from_millis(config.media.connect_timeout_ms),
                started_at: crate::db::now_ms(),
                draining: AtomicBool::new(false),
                held: Mutex::new(HashMap::new()),
                routes: RwLock::new(HashMap::new()),
                nodes: RwLock::new(Vec::new()),
                last_report: Mutex::new(None),
                token,
                http,
                pulls: Mutex::new(HashMap::new()),
                repulling: Mutex::new(std::collections::HashSet::new()),
                pull_idle: Duration::from_millis(c.pull_idle_ms),
            }),
        })
    }

    /// This node's name in the registry.
    pub(crate) fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Claims `stream`'s route for this node before its publisher is accepted. An error: the database cannot be
    /// reached (the caller answers 503).
    pub(crate) async fn claim(&self, stream: &str) -> Result<ClaimOutcome, DbError> {
        let i = &self.inner;
        match i
            .db
            .claim_route(stream, &i.node_id, i.lease_ms, i.dead_after_ms)
            .await?
        {
            Claim::Claimed { epoch, took_over } => {
                if took_over {
                    metrics::counter!("zipiq_cluster_lease_takeovers_total").increment(1);
                    tracing::info!(stream = %stream, epoch, "took over the stream's route from a dead or lapsed origin");
                }
                lock(&i.held).insert(
                    stream.to_owned(),
                    Held {
                        epoch,
                        claimed: Instant::now(),
                        seen: false,
                    },
                );
                metrics::gauge!("zipiq_cluster_routes_held").set(lock(&i.held).len() as f64);
                Ok(ClaimOutcome::Origin)
            }
            Claim::HeldBy(route) => {
                metrics::counter!("zipiq_cluster_route_conflicts_total").increment(1);
                Ok(ClaimOutcome::Elsewhere(route))
            }
        }
    }

    /// Gives `stream`'s route back at once when this node has no publisher of it (a publisher refused after the
    /// claim); otherwise the heartbeat gives it back when the publisher leaves.
    pub(crate) async fn release_if_unused(&self, sfu: &Sfu, stream: &str) {
        if has_publisher(sfu, stream) {
            return;
        }
        let held = lock(&self.inner.held).remove(stream);
        if let Some(held) = held {
            self.release(stream, held.epoch).await;
        }
    }

    async fn release(&self, stream: &str, epoch: i64) {
        let i = &self.inner;
        if let Err(e) = i.db.release_route(stream, &i.node_id, epoch).await {
            // The lease lapses on its own.
            tracing::warn!(stream = %stream, error = %e, "could not give a stream's route back");
        }
        write(&i.routes).remove(stream);
        metrics::gauge!("zipiq_cluster_routes_held").set(lock(&i.held).len() as f64);
    }

    /// The valid route of `stream` on another node, if any: from what LISTEN/NOTIFY and polling learnt, else
    /// asked of the database.
    pub(crate) async fn route_elsewhere(&self, stream: &str) -> Result<Option<RouteRow>, DbError> {
        let i = &self.inner;
        let cached = read(&i.routes).get(stream).cloned();
        let route = match cached {
            Some(r) if r.valid => Some(r),
            _ => i.db.route(stream, i.dead_after_ms).await?,
        };
        Ok(route.filter(|r| r.valid && r.node_id != i.node_id && r.http_url.is_some()))
    }

    /// Where a new publisher should go.
    pub(crate) fn place_publisher(&self) -> Placement {
        let i = &self.inner;
        let Some(mut me) = lock(&i.last_report).clone() else {
            return Placement::Here;
        };
        me.draining = i.draining.load(Ordering::Relaxed);
        placement::place_publisher(&me, &read(&i.nodes), i.margin_permille)
    }

    /// Takes no new placements from now on (SIGTERM); the next heartbeat tells the others.
    pub(crate) fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Whether this node is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Leaves the cluster (a clean stop): gives every route back and removes this node's row.
    pub(crate) async fn leave(&self) {
        let held: Vec<(String, Held)> = lock(&self.inner.held).drain().collect();
        for (stream, h) in held {
            self.release(&stream, h.epoch).await;
        }
        if let Err(e) = self.inner.db.forget_pull(None, &self.inner.node_id).await {
            tracing::warn!(error = %e, "could not remove this node's pulls from the cluster's table");
        }
        if let Err(e) = self.inner.db.cluster_leave(&self.inner.node_id).await {
            tracing::warn!(error = %e, "could not remove this node from the cluster registry");
        }
    }

    /// Nodes, routes and pulls, for admins.
    pub(crate) async fn view(&self) -> Result<ClusterView, DbError> {
        let i = &self.inner;
        Ok(ClusterView {
            enabled: true,
            node_id: i.node_id.clone(),
            nodes: i.db.cluster_nodes(i.dead_after_ms).await?,
            routes: i.db.routes(i.dead_after_ms).await?,
            pulls: self.pulled_streams(),
        })
    }

    /// This node's role per stream for the systemd `STATUS=` line: "; cluster node N (draining): origin of a, b".
    /// Viewers of other nodes' streams are redirected there, so no stream is served here as an edge yet.
    pub(crate) fn status_line(&self) -> String {
        let mut held: Vec<String> = lock(&self.inner.held).keys().cloned().collect();
        held.sort();
        let shown = held.len().min(5);
        let mut line = format!(
            "; cluster node {}{}: origin of {} stream{}",
            self.inner.node_id,
            if self.is_draining() {
                " (draining)"
            } else {
                ""
            },
            held.len(),
            if held.len() == 1 { "" } else { "s" }
        );
        if shown > 0 {
            line.push_str(&format!(" ({}", held[..shown].join(", ")));
            line.push_str(if held.len() > shown { ", ...)" } else { ")" });
        }
        line
    }
}

/// Whether `sfu` has a publisher session (connecting or live) of `stream`.
fn has_publisher(sfu: &Sfu, stream: &str) -> bool {
    sfu.publisher_sessions()
        .iter()
        .any(|s| s.stream == stream && s.role == SessionRole::Publisher)
}
