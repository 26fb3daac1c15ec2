//! The cluster's background tasks: the heartbeat (every `cluster.heartbeat_interval_ms`: write this node's row,
//! renew the leases of the streams it is origin of, give back those whose publisher left, stop serving as origin
//! any stream whose route another node took over, refresh the view of nodes and routes) and the route listener
//! (`LISTEN zipiq_routes`, which refreshes the routes at once when one changes; the heartbeat's poll is its
//! fallback). A failing database is logged and counted, never waited on by the media path.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::load::LoadSampler;
use super::{Cluster, has_publisher, lock, write};
use crate::db::cluster::{NodeReport, ROUTES_CHANNEL};
use crate::sfu::Sfu;
use crate::sfu::session::SessionRole;

impl Cluster {
    /// Writes this node's first row; the start fails without it (another node could not tell this one is alive).
    pub(crate) async fn join(&self, sfu: &Sfu) -> Result<(), crate::db::DbError> {
        let mut sampler = LoadSampler::new();
        let report = self.report(sfu, &mut sampler);
        self.inner.db.cluster_heartbeat(&report).await?;
        self.refresh().await;
        Ok(())
    }

    /// Starts draining (SIGTERM): no new placements here, told to the other nodes at once; then waits until this
    /// node's sessions have ended or `timeout` has passed. New publishers are redirected meanwhile (307).
    pub(crate) async fn drain(&self, sfu: &Sfu, timeout: Duration) {
        self.set_draining();
        let report = self.report(sfu, &mut LoadSampler::new());
        if let Err(e) = self.inner.db.cluster_heartbeat(&report).await {
            tracing::warn!(error = %e, "could not tell the cluster this node is draining");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let open = |sfu: &Sfu| {
            let c = sfu.counts();
            c.publishers + c.viewers
        };
        if open(sfu) > 0 {
            tracing::info!(
                sessions = open(sfu),
                timeout_ms = timeout.as_millis() as u64,
                "draining: waiting for sessions to end"
            );
        }
        while open(sfu) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn report(&self, sfu: &Sfu, sampler: &mut LoadSampler) -> NodeReport {
        let i = &self.inner;
        let counts = sfu.counts();
        let load = sampler.sample(crate::sfu::forward::forwarded_bytes());
        let report = NodeReport {
            node_id: i.node_id.clone(),
            region: i.region.clone(),
            http_url: i.http_url.clone(),
            media_addr: i.media_addr.clone(),
            max_sessions: i.max_sessions,
            sessions: (counts.publishers + counts.viewers + counts.relays) as i64,
            publishers: counts.publishers as i64,
            viewers: counts.viewers as i64,
            egress_bps: load.egress_bps,
            cpu_permille: load.cpu_permille,
            draining: self.is_draining(),
            started_at: i.started_at,
        };
        *lock(&i.last_report) = Some(report.clone());
        report
    }

    /// One heartbeat.
    async fn beat(&self, sfu: &Sfu, sampler: &mut LoadSampler) {
        self.close_idle_pulls(sfu).await;
        let report = self.report(sfu, sampler);
        if let Err(e) = self.inner.db.cluster_heartbeat(&report).await {
            metrics::counter!("zipiq_cluster_heartbeats_failed_total").increment(1);
            tracing::warn!(error = %e, "cluster heartbeat failed: running streams go on, new cross-node requests get 503");
            return;
        }
        self.renew(sfu).await;
        self.refresh().await;
        self.follow_routes(sfu);
    }

    /// Renews, gives back or drops each route this node holds.
    async fn renew(&self, sfu: &Sfu) {
        let i = &self.inner;
        let held: Vec<(String, super::Held)> =
            lock(&i.held).iter().map(|(s, h)| (s.clone(), *h)).collect();
        for (stream, h) in held {
            let publishing = has_publisher(sfu, &stream);
            if publishing
                && !h.seen
                && let Some(x) = lock(&i.held).get_mut(&stream)
            {
                x.seen = true;
            }
            if !publishing && (h.seen || h.claimed.elapsed() > i.connect_grace) {
                let still = lock(&i.held).get(&stream).map(|x| x.epoch) == Some(h.epoch);
                if still {
                    lock(&i.held).remove(&stream);
                    self.release(&stream, h.epoch).await;
                }
                continue;
            }
            match i
                .db
                .renew_route(&stream, &i.node_id, h.epoch, i.lease_ms)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // Another node took the route over (this node was thought dead): it is the origin now.
                    lock(&i.held).remove(&stream);
                    metrics::counter!("zipiq_cluster_leases_lost_total").increment(1);
                    let ended = sfu.end_sessions_of(
                        &stream,
                        Some(SessionRole::Publisher),
                        "another node took this stream's route over",
                    );
                    tracing::warn!(stream = %stream, epoch = h.epoch, ended, "lost the stream's route: no longer its origin");
                }
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "could not renew a stream's lease; the stream goes on");
                }
            }
        }
        metrics::gauge!("zipiq_cluster_routes_held").set(lock(&i.held).len() as f64);
    }

    /// Reloads the nodes and routes this node knows of.
    async fn refresh(&self) {
        let i = &self.inner;
        match i.db.cluster_nodes(i.dead_after_ms).await {
            Ok(nodes) => {
                let alive = nodes.iter().filter(|n| n.alive).count();
                metrics::gauge!("zipiq_cluster_nodes", "state" => "alive").set(alive as f64);
                metrics::gauge!("zipiq_cluster_nodes", "state" => "dead")
                    .set((nodes.len() - alive) as f64);
                *write(&i.nodes) = nodes;
            }
            Err(e) => tracing::debug!(error = %e, "reading the cluster registry failed"),
        }
        self.refresh_routes().await;
    }

    async fn refresh_routes(&self) {
        let i = &self.inner;
        match i.db.routes(i.dead_after_ms).await {
            Ok(routes) => {
                *write(&i.routes) = routes.into_iter().map(|r| (r.stream.clone(), r)).collect();
            }
            Err(e) => tracing::debug!(error = %e, "reading the stream routes failed"),
        }
    }
}

/// Starts the heartbeat and the route listener; both end when `stop` turns true.
pub(crate) fn spawn(
    cluster: Cluster,
    sfu: Sfu,
    database_url: String,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let beat = {
        let cluster = cluster.clone();
        let sfu = sfu.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut sampler = LoadSampler::new();
            let mut tick = tokio::time::interval(cluster.inner.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                cluster.beat(&sfu, &mut sampler).await;
            }
        })
    };
    let listen = tokio::spawn(async move {
        let mut stop = stop;
        let retry = cluster.inner.heartbeat;
        loop {
            tokio::select! {
                _ = listen_routes(&cluster, &sfu, &database_url) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    vec![beat, listen]
}

/// Listens for route changes until the connection fails.
async fn listen_routes(cluster: &Cluster, sfu: &Sfu, url: &str) {
    let mut listener = match PgListener::connect(url).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "route listener: cannot connect");
            return;
        }
    };
    if let Err(e) = listener.listen(ROUTES_CHANNEL).await {
        tracing::debug!(error = %e, "route listener: LISTEN failed");
        return;
    }
    loop {
        // `try_recv` gives None when the connection was lost (a notification may have been missed): refresh and
        // reconnect.
        match listener.try_recv().await {
            Ok(Some(_)) => {
                cluster.refresh_routes().await;
                cluster.follow_routes(sfu);
            }
            Ok(None) | Err(_) => {
                cluster.refresh_routes().await;
                return;
            }
        }
        // Several changes at once are one reload.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
