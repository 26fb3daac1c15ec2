//! Edges pull: a WHEP viewer on a node that does not have a stream which is live on another node is served from a
//! local pull of the stream from its origin (`sfu::pull` makes the peer connection; this file does the WHEP
//! exchange with the origin, authenticated with the cluster token). One pull per stream and node, however many
//! viewers; a pull with no viewers for `cluster.pull_idle_ms` is closed (and its session at the origin deleted).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Cluster, lock, read};
use crate::db::cluster::RouteRow;
use crate::secrets::{self, SecretSource};
use crate::sfu::Sfu;

/// Name of the systemd credential holding the cluster token.
pub(crate) const TOKEN_CREDENTIAL: &str = "cluster-token";
/// Shortest cluster token taken.
const TOKEN_MIN_LEN: usize = 16;
/// How long a new pull may take to bring the stream's media here before the viewer is sent to the origin.
const PULL_LIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, and for how long, viewers waiting for a stream whose origin moved try to pull it from the new one.
const REPULL_RETRY: Duration = Duration::from_millis(200);
const REPULL_FOR: Duration = Duration::from_secs(10);
/// Header of a relay's 201: the stream's simulcast layers at the origin, best first, comma-separated.
pub(crate) const LAYERS_HEADER: &str = "x-zipiq-layers";
/// Header a pull's WHEP request carries: the pulling node's name (the origin logs and counts relays with it).
pub(crate) const RELAY_HEADER: &str = "x-zipiq-relay";

/// A pull of one stream.
#[derive(Debug, Clone)]
pub(crate) struct Pull {
    /// The local session the pulled tracks come in on.
    pub session_id: String,
    /// Its WHEP session resource at the origin (to DELETE it).
    pub resource_url: String,
    /// The origin's node name.
    pub origin: String,
    /// The node pulled from: the origin, or a node of this region that pulls from it, and its HTTP URL.
    pub source: String,
    source_url: String,
    /// The route's epoch when pulled.
    pub epoch: i64,
    /// The origin's simulcast layers, best first (the pull's video is the best; empty: no simulcast).
    layers: Vec<String>,
    /// Pulls of the other layers, by layer: made when a viewer here chooses one.
    layer_pulls: HashMap<String, LayerPull>,
    /// Since when no viewer is left.
    idle_since: Option<Instant>,
    /// When it was made: a pull is not idle before its first viewer had the time to join.
    created: Instant,
}

/// A pull of one more simulcast layer of a pulled stream.
#[derive(Debug, Clone)]
struct LayerPull {
    session_id: String,
    resource_url: String,
    /// Since when no viewer here chose the layer.
    idle_since: Option<Instant>,
}

/// The source's answer to a pull's offer.
struct Answered {
    answer: String,
    resource_url: String,
    layers: Vec<String>,
}

/// A pull as `GET /api/v1/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PullView {
    /// The stream pulled.
    pub stream: String,
    /// The stream's origin node.
    pub origin: String,
    /// The node it is pulled from: the origin, or a node of this node's region that pulls it from the origin.
    pub source: String,
    /// The route's epoch when the pull was made.
    pub epoch: i64,
    /// No viewer of it is left here (it closes after `cluster.pull_idle_ms`).
    pub idle: bool,
}

/// Reads the cluster token: the `cluster-token` credential, else `token_file`; None when neither is set.
pub(crate) fn load_token(
    token_file: &std::path::Path,
) -> Result<Option<Zeroizing<String>>, String> {
    let Some(source) = secrets::locate(TOKEN_CREDENTIAL, token_file) else {
        return Ok(None);
    };
    let token = Zeroizing::new(secrets::read(source.path()).map_err(|e| e.to_string())?);
    let from = match &source {
        SecretSource::Credential(p) => format!("the credential {}", p.display()),
        SecretSource::File(p) => format!("cluster.token_file {}", p.display()),
    };
    if token.chars().count() < TOKEN_MIN_LEN {
        return Err(format!(
            "the cluster token in {from} is shorter than {TOKEN_MIN_LEN} characters"
        ));
    }
    Ok(Some(token))
}

impl Cluster {
    /// Whether `presented` is the cluster token (constant-time comparison).
    pub(crate) fn is_relay_token(&self, presented: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        match (&self.inner.token, presented) {
            (Some(token), Some(p)) => bool::from(token.as_bytes().ct_eq(p.as_bytes())),
            _ => false,
        }
    }

    /// Makes sure `stream` is pulled here from its origin (`route`) and live, for a viewer about to be accepted.
    /// Err: no pull (no token, or the origin refused or did not deliver in time): the caller redirects instead.
    pub(crate) async fn ensure_pull(
        &self,
        sfu: &Sfu,
        stream: &str,
        route: &RouteRow,
    ) -> Result<(), String> {
        let token = self
            .inner
            .token
            .clone()
            .ok_or_else(|| "no cluster token: edges do not pull".to_owned())?;
        let base = route
            .http_url
            .clone()
            .ok_or_else(|| "the origin has no URL in the registry".to_owned())?;
        let existing = lock(&self.inner.pulls).get(stream).cloned();
        let alive = existing.is_some_and(|p| sfu.session(&p.session_id).is_some());
        if !alive {
            match sfu.prepare_pull(stream).await {
                Ok((session_id, offer)) => {
                    // A node of this region that pulls the stream from its origin serves this pull, when there is
                    // one (one copy crosses into each region); else, or when it refuses, the origin does.
                    let mut made = Err(String::new());
                    if let Some((node, url)) = self.regional_source(stream, route).await {
                        made = self
                            .exchange(
                                sfu,
                                stream,
                                (&node, &url),
                                &token,
                                route,
                                &session_id,
                                &offer,
                            )
                            .await;
                        if let Err(e) = &made {
                            tracing::info!(stream = %stream, via = %node, error = %e, "no pull through this region's node: pulling from the origin");
                            sfu.end_session(&session_id, "the regional pull could not be made");
                        }
                    }
                    if made.is_err() {
                        let (session_id, offer) = if sfu.session(&session_id).is_some() {
                            (session_id, offer)
                        } else {
                            sfu.prepare_pull(stream).await.map_err(|e| e.to_string())?
                        };
                        if let Err(e) = self
                            .exchange(
                                sfu,
                                stream,
                                (&route.node_id, &base),
                                &token,
                                route,
                                &session_id,
                                &offer,
                            )
                            .await
                        {
                            sfu.end_session(&session_id, "the pull could not be made");
                            return Err(e);
                        }
                    }
                }
                // Another viewer's request is making the pull right now: wait for it below.
                Err(crate::sfu::SfuError::PublisherExists(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let deadline = Instant::now() + PULL_LIVE_TIMEOUT;
        while !sfu.is_live(stream) {
            if Instant::now() > deadline {
                return Err("the pulled stream brought no media in time".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// A node of this node's region, other than the origin, that pulls `stream` straight from its origin at the
    /// route's epoch: its name and URL. None when the origin is in this region (it is as near), when there is no
    /// such node, or when the database cannot say (the origin serves the pull).
    async fn regional_source(&self, stream: &str, route: &RouteRow) -> Option<(String, String)> {
        let i = &self.inner;
        let origin_region = read(&i.nodes)
            .iter()
            .find(|n| n.report.node_id == route.node_id)
            .map(|n| n.report.region.clone());
        if origin_region.as_deref() == Some(i.region.as_str()) {
            return None;
        }
        match i
            .db
            .regional_pull(
                stream,
                &i.region,
                &route.node_id,
                route.epoch,
                &i.node_id,
                i.dead_after_ms,
            )
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(stream = %stream, error = %e, "could not look for a pull in this region");
                None
            }
        }
    }

    /// Removes this node's record of its pull of `stream` (in the background: the caller does not wait on the
    /// database).
    fn forget(&self, stream: &str) {
        let (db, node, stream) = (
            self.inner.db.clone(),
            self.inner.node_id.clone(),
            stream.to_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = db.forget_pull(Some(&stream), &node).await {
                tracing::debug!(stream = %stream, error = %e, "could not remove the pull's record");
            }
        });
    }

    /// POSTs a pull's offer to `base`'s WHEP endpoint of `stream` (with `?layer=` when given), as this node, with
    /// the cluster token.
    async fn post_offer(
        &self,
        (source, base): (&str, &str),
        stream: &str,
        layer: Option<&str>,
        token: &str,
        offer: &str,
    ) -> Result<Answered, String> {
        let mut url = format!("{base}/whep/{stream}");
        if let Some(layer) = layer {
            url.push_str("?layer=");
            url.push_str(layer);
        }
        let response = self
            .inner
            .http
            .post(&url)
            .header("content-type", "application/sdp")
            .header(RELAY_HEADER, &self.inner.node_id)
            .headers(crate::telemetry::outgoing_headers())
            .bearer_auth(token)
            .body(offer.to_owned())
            .send()
            .await
            .map_err(|e| format!("the node {source} did not answer: {e}"))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header("location");
        let layers: Vec<String> = header(LAYERS_HEADER)
            .map(|v| {
                v.split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let body = response.text().await.unwrap_or_default();
        if status.as_u16() != 201 {
            return Err(format!(
                "the node {source} refused the pull with {status}: {}",
                body.chars().take(200).collect::<String>()
            ));
        }
        let resource_url = location
            .and_then(|l| reqwest::Url::parse(&url).and_then(|u| u.join(&l)).ok())
            .map(|u| u.to_string())
            .ok_or_else(|| format!("the 201 of the node {source} had no usable Location"))?;
        Ok(Answered {
            answer: body,
            resource_url,
            layers,
        })
    }

    /// The WHEP exchange with `source` (the origin or a node of this region) for the pull `session_id`.
    #[allow(clippy::too_many_arguments)] // the parts of one exchange, each used once
    async fn exchange(
        &self,
        sfu: &Sfu,
        stream: &str,
        (source, base): (&str, &str),
        token: &str,
        route: &RouteRow,
        session_id: &str,
        offer: &str,
    ) -> Result<(), String> {
        let answered = self
            .post_offer((source, base), stream, None, token, offer)
            .await?;
        lock(&self.inner.pulls).insert(
            stream.to_owned(),
            Pull {
                session_id: session_id.to_owned(),
                resource_url: answered.resource_url,
                origin: route.node_id.clone(),
                source: source.to_owned(),
                source_url: base.to_owned(),
                epoch: route.epoch,
                layers: answered.layers.clone(),
                layer_pulls: HashMap::new(),
                idle_since: None,
                created: Instant::now(),
            },
        );
        sfu.complete_pull(session_id, answered.answer, answered.layers)
            .await
            .map_err(|e| e.to_string())?;
        metrics::counter!("zipiq_cluster_pulls_started_total").increment(1);
        tracing::info!(stream = %stream, origin = %route.node_id, via = %source, epoch = route.epoch, "pulling the stream");
        if let Err(e) = self
            .inner
            .db
            .record_pull(stream, &self.inner.node_id, source, route.epoch)
            .await
        {
            // Other edges of the region then pull from the origin themselves: more copies, no harm.
            tracing::warn!(stream = %stream, error = %e, "could not record the pull in the cluster's table");
        }
        Ok(())
    }

    /// A viewer here wants `layer` of `stream`: when the stream is pulled here, the origin has that layer and it is
    /// not pulled yet, it is pulled (in the background; the viewer watches the pull's layer until it comes).
    pub(crate) fn want_layer(&self, sfu: &Sfu, stream: &str, layer: &str) {
        let wanted = lock(&self.inner.pulls).get(stream).is_some_and(|p| {
            p.layers.first().is_some_and(|best| best != layer)
                && p.layers.iter().any(|l| l == layer)
                && !p.layer_pulls.contains_key(layer)
        });
        if !wanted {
            return;
        }
        let key = format!("{stream}\n{layer}");
        if !lock(&self.inner.repulling).insert(key.clone()) {
            return;
        }
        let (cluster, sfu, stream, layer) = (
            self.clone(),
            sfu.clone(),
            stream.to_owned(),
            layer.to_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = cluster.pull_layer(&sfu, &stream, &layer).await {
                tracing::warn!(stream = %stream, layer = %layer, error = %e, "could not pull the layer; its viewers watch the pulled one");
            }
            lock(&cluster.inner.repulling).remove(&key);
        });
    }

    /// Pulls `layer` of the pulled `stream` from the pull's source, as a session of its own.
    async fn pull_layer(&self, sfu: &Sfu, stream: &str, layer: &str) -> Result<(), String> {
        let token = self
            .inner
            .token
            .clone()
            .ok_or_else(|| "no cluster token".to_owned())?;
        let Some(pull) = lock(&self.inner.pulls).get(stream).cloned() else {
            return Ok(());
        };
        let (session_id, offer) = sfu
            .prepare_layer_pull(stream, layer)
            .await
            .map_err(|e| e.to_string())?;
        let made = async {
            let answered = self
                .post_offer(
                    (&pull.source, &pull.source_url),
                    stream,
                    Some(layer),
                    &token,
                    &offer,
                )
                .await?;
            let resource_url = answered.resource_url.clone();
            sfu.complete_pull(&session_id, answered.answer, Vec::new())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<String, String>(resource_url)
        }
        .await;
        let resource_url = match made {
            Ok(url) => url,
            Err(e) => {
                sfu.end_session(&session_id, "the layer pull could not be made");
                return Err(e);
            }
        };
        let layer_pull = LayerPull {
            session_id: session_id.clone(),
            resource_url,
            idle_since: None,
        };
        let kept = match lock(&self.inner.pulls).get_mut(stream) {
            Some(p) if p.session_id == pull.session_id => {
                p.layer_pulls.insert(layer.to_owned(), layer_pull.clone());
                true
            }
            _ => false,
        };
        if !kept {
            // The stream's pull ended meanwhile: this layer goes with it.
            sfu.end_session(&session_id, "the stream's pull ended");
            self.delete_at_source(&layer_pull.resource_url).await;
            return Ok(());
        }
        metrics::counter!("zipiq_cluster_layer_pulls_started_total").increment(1);
        tracing::info!(stream = %stream, layer = %layer, via = %pull.source, "pulling one more simulcast layer");
        Ok(())
    }

    /// Ends a pull and its layer pulls here and deletes their sessions at the source (in the background).
    fn end_pull(&self, sfu: &Sfu, stream: &str, pull: Pull, reason: &str) {
        self.forget(stream);
        sfu.end_session(&pull.session_id, reason);
        let mut urls = vec![pull.resource_url.clone()];
        for lp in pull.layer_pulls.values() {
            sfu.end_session(&lp.session_id, reason);
            urls.push(lp.resource_url.clone());
        }
        let cluster = self.clone();
        tokio::spawn(async move {
            for url in urls {
                cluster.delete_at_source(&url).await;
            }
        });
    }

    /// Closes pulls whose session ended or that had no viewer for `cluster.pull_idle_ms`, and layer pulls whose
    /// layer no viewer here chose for as long; pulls the layers viewers chose that are not pulled yet (after a
    /// re-pull). A heartbeat's work.
    pub(crate) async fn close_idle_pulls(&self, sfu: &Sfu) {
        let now = Instant::now();
        let mut closing: Vec<(String, Pull, &'static str)> = Vec::new();
        let mut idle_layers: Vec<LayerPull> = Vec::new();
        let mut wanted: Vec<(String, String)> = Vec::new();
        {
            let mut pulls = lock(&self.inner.pulls);
            let streams: Vec<String> = pulls.keys().cloned().collect();
            for stream in streams {
                let Some(pull) = pulls.get_mut(&stream) else {
                    continue;
                };
                if sfu.session(&pull.session_id).is_none() {
                    if let Some(p) = pulls.remove(&stream) {
                        closing.push((stream, p, "the stream's pull ended"));
                    }
                    continue;
                }
                let chosen = sfu.chosen_layers(&stream);
                pull.layer_pulls.retain(|layer, lp| {
                    if sfu.session(&lp.session_id).is_none() {
                        return false;
                    }
                    if chosen.iter().any(|c| c == layer) {
                        lp.idle_since = None;
                        return true;
                    }
                    let since = *lp.idle_since.get_or_insert(now);
                    if now.duration_since(since) >= self.inner.pull_idle {
                        idle_layers.push(lp.clone());
                        return false;
                    }
                    true
                });
                for layer in chosen {
                    wanted.push((stream.clone(), layer));
                }
                if sfu.viewers_of(&stream) > 0 || pull.created.elapsed() < PULL_LIVE_TIMEOUT {
                    pull.idle_since = None;
                    continue;
                }
                let since = *pull.idle_since.get_or_insert(now);
                if now.duration_since(since) >= self.inner.pull_idle
                    && let Some(p) = pulls.remove(&stream)
                {
                    closing.push((stream, p, "no viewer of the pulled stream is left"));
                }
            }
            metrics::gauge!("zipiq_cluster_pulls").set(pulls.len() as f64);
        }
        for (stream, pull, reason) in closing {
            self.end_pull(sfu, &stream, pull, reason);
        }
        for lp in idle_layers {
            sfu.end_session(&lp.session_id, "no viewer of the pulled layer is left");
            self.delete_at_source(&lp.resource_url).await;
        }
        for (stream, layer) in wanted {
            self.want_layer(sfu, &stream, &layer);
        }
    }

    /// Keeps the pulls in step with the routes, after every refresh of them: a pull whose stream's route moved to
    /// another node or epoch (its origin died and the publisher came back on another node) is closed, and a
    /// stream whose viewers here wait for a publisher (their pull ended, the grace period runs) is pulled from its
    /// new origin, so they resume without a new WHEP session (the forwarders continue their sequence numbers and
    /// timestamps across the change of source).
    pub(crate) fn follow_routes(&self, sfu: &Sfu) {
        let routes = read(&self.inner.routes).clone();
        let moved: Vec<(String, Pull)> = {
            let mut pulls = lock(&self.inner.pulls);
            let moved: Vec<String> = pulls
                .iter()
                .filter(|(stream, p)| {
                    routes
                        .get(*stream)
                        .is_some_and(|r| r.valid && (r.node_id != p.origin || r.epoch != p.epoch))
                })
                .map(|(stream, _)| stream.clone())
                .collect();
            moved
                .iter()
                .filter_map(|stream| pulls.remove(stream).map(|p| (stream.clone(), p)))
                .collect()
        };
        for (stream, pull) in moved {
            tracing::info!(session = %crate::sfu::session::log_id(&pull.session_id), origin = %pull.origin, epoch = pull.epoch, "the stream's origin moved: closing the pull from the old one");
            self.end_pull(
                sfu,
                &stream,
                pull,
                "the stream's origin moved to another node",
            );
        }
        for stream in sfu.streams_without_publisher() {
            let Some(route) = routes.get(&stream).cloned() else {
                continue;
            };
            if !route.valid || route.node_id == self.inner.node_id || route.http_url.is_none() {
                continue;
            }
            if !lock(&self.inner.repulling).insert(stream.clone()) {
                continue;
            }
            let (cluster, sfu) = (self.clone(), sfu.clone());
            tokio::spawn(async move {
                cluster.repull(&sfu, &stream, &route).await;
                lock(&cluster.inner.repulling).remove(&stream);
            });
        }
    }

    /// Pulls `stream` from its new origin for the viewers waiting here. The new origin's publisher may have just
    /// connected (its media not there yet: the origin refuses the pull with 409), so this tries again every
    /// `REPULL_RETRY` while the route stays the same and viewers wait, for at most `REPULL_FOR`.
    async fn repull(&self, sfu: &Sfu, stream: &str, route: &RouteRow) {
        let deadline = Instant::now() + REPULL_FOR;
        loop {
            match self.ensure_pull(sfu, stream, route).await {
                Ok(()) => {
                    metrics::counter!("zipiq_cluster_repulls_total").increment(1);
                    tracing::info!(stream = %stream, origin = %route.node_id, epoch = route.epoch, "viewers waiting here resume from the stream's new origin");
                    return;
                }
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!(stream = %stream, origin = %route.node_id, error = %e, "could not pull the stream from its new origin; the next route refresh tries again");
                    return;
                }
                Err(e) => {
                    tracing::debug!(stream = %stream, origin = %route.node_id, error = %e, "pull from the new origin not made yet");
                }
            }
            tokio::time::sleep(REPULL_RETRY).await;
            let same = read(&self.inner.routes)
                .get(stream)
                .is_some_and(|r| r.valid && r.node_id == route.node_id && r.epoch == route.epoch);
            if !same || sfu.viewers_of(stream) == 0 {
                return;
            }
        }
    }

    /// Closes this node's pull of `stream`, when it has one: this node has just become the stream's origin (its
    /// publisher came back here), and the publisher takes the pull's place for the viewers here.
    pub(crate) fn drop_pull(&self, sfu: &Sfu, stream: &str) {
        let pull = lock(&self.inner.pulls).remove(stream);
        if let Some(pull) = pull {
            self.end_pull(sfu, stream, pull, "this node is the stream's origin now");
        }
    }

    /// Closes every pull (the node stops).
    pub(crate) async fn close_all_pulls(&self, sfu: &Sfu) {
        let pulls: Vec<Pull> = lock(&self.inner.pulls).drain().map(|(_, p)| p).collect();
        for pull in pulls {
            sfu.end_session(&pull.session_id, "the node is stopping");
            self.delete_at_source(&pull.resource_url).await;
            for lp in pull.layer_pulls.values() {
                sfu.end_session(&lp.session_id, "the node is stopping");
                self.delete_at_source(&lp.resource_url).await;
            }
        }
    }

    async fn delete_at_source(&self, resource_url: &str) {
        let Some(token) = self.inner.token.clone() else {
            return;
        };
        let sent = self
            .inner
            .http
            .delete(resource_url)
            .bearer_auth(token.as_str())
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Err(e) = sent {
            // The origin notices on its own (ICE consent) within seconds.
            tracing::debug!(error = %e, "could not delete the pull's session at the origin");
        }
    }

    /// The streams pulled here, for the cluster view.
    pub(crate) fn pulled_streams(&self) -> Vec<PullView> {
        let mut v: Vec<PullView> = lock(&self.inner.pulls)
            .iter()
            .map(|(stream, p)| PullView {
                stream: stream.clone(),
                origin: p.origin.clone(),
                source: p.source.clone(),
                epoch: p.epoch,
                idle: p.idle_since.is_some(),
            })
            .collect();
        v.sort_by(|x, y| x.stream.cmp(&y.stream));
        v
    }
}
