//! Edges pull: a WHEP viewer on a node that does not have a stream which is live on another node is served from a
//! local pull of the stream from its origin (`sfu::pull` makes the peer connection; this file does the WHEP
//! exchange with the origin, authenticated with the cluster token). One pull per stream and node, however many
//! viewers; a pull with no viewers for `cluster.pull_idle_ms` is closed (and its session at the origin deleted).

use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Cluster, lock};
use crate::db::cluster::RouteRow;
use crate::secrets::{self, SecretSource};
use crate::sfu::Sfu;

/// Name of the systemd credential holding the cluster token.
pub(crate) const TOKEN_CREDENTIAL: &str = "cluster-token";
/// Shortest cluster token taken.
const TOKEN_MIN_LEN: usize = 16;
/// How long a new pull may take to bring the stream's media here before the viewer is sent to the origin.
const PULL_LIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Header a pull's WHEP request carries: the pulling node's name (the origin logs and counts relays with it).
pub(crate) const RELAY_HEADER: &str = "x-zipiq-relay";

/// A pull of one stream.
#[derive(Debug, Clone)]
pub(crate) struct Pull {
    /// The local session the pulled tracks come in on.
    pub session_id: String,
    /// Its WHEP session resource at the origin (to DELETE it).
    pub resource_url: String,
    /// The origin's node name and the route's epoch when pulled.
    pub origin: String,
    pub epoch: i64,
    /// Since when no viewer is left.
    idle_since: Option<Instant>,
    /// When it was made: a pull is not idle before its first viewer had the time to join.
    created: Instant,
}

/// A pull as `GET /api/v1/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PullView {
    /// The stream pulled.
    pub stream: String,
    /// The origin node it is pulled from.
    pub origin: String,
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
                    if let Err(e) = self
                        .exchange(sfu, stream, &base, &token, route, &session_id, offer)
                        .await
                    {
                        sfu.end_session(&session_id, "the pull could not be made");
                        return Err(e);
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

    /// The WHEP exchange with the origin for the pull `session_id`.
    #[allow(clippy::too_many_arguments)] // the parts of one exchange, each used once
    async fn exchange(
        &self,
        sfu: &Sfu,
        stream: &str,
        base: &str,
        token: &str,
        route: &RouteRow,
        session_id: &str,
        offer: String,
    ) -> Result<(), String> {
        let url = format!("{base}/whep/{stream}");
        let response = self
            .inner
            .http
            .post(&url)
            .header("content-type", "application/sdp")
            .header(RELAY_HEADER, &self.inner.node_id)
            .headers(crate::telemetry::outgoing_headers())
            .bearer_auth(token)
            .body(offer)
            .send()
            .await
            .map_err(|e| format!("the origin {} did not answer: {e}", route.node_id))?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        if status.as_u16() != 201 {
            return Err(format!(
                "the origin {} refused the pull with {status}: {}",
                route.node_id,
                body.chars().take(200).collect::<String>()
            ));
        }
        let resource_url = location
            .and_then(|l| reqwest::Url::parse(&url).and_then(|u| u.join(&l)).ok())
            .map(|u| u.to_string())
            .ok_or_else(|| "the origin's 201 had no usable Location".to_owned())?;
        lock(&self.inner.pulls).insert(
            stream.to_owned(),
            Pull {
                session_id: session_id.to_owned(),
                resource_url,
                origin: route.node_id.clone(),
                epoch: route.epoch,
                idle_since: None,
                created: Instant::now(),
            },
        );
        sfu.complete_pull(session_id, body)
            .await
            .map_err(|e| e.to_string())?;
        metrics::counter!("zipiq_cluster_pulls_started_total").increment(1);
        tracing::info!(stream = %stream, origin = %route.node_id, epoch = route.epoch, "pulling the stream from its origin");
        Ok(())
    }

    /// Closes pulls whose session ended or that had no viewer for `cluster.pull_idle_ms` (a heartbeat's work).
    pub(crate) async fn close_idle_pulls(&self, sfu: &Sfu) {
        let now = Instant::now();
        let mut closing = Vec::new();
        {
            let mut pulls = lock(&self.inner.pulls);
            pulls.retain(|stream, pull| {
                if sfu.session(&pull.session_id).is_none() {
                    return false;
                }
                if sfu.viewers_of(stream) > 0 || pull.created.elapsed() < PULL_LIVE_TIMEOUT {
                    pull.idle_since = None;
                    return true;
                }
                let since = *pull.idle_since.get_or_insert(now);
                if now.duration_since(since) >= self.inner.pull_idle {
                    closing.push(pull.clone());
                    return false;
                }
                true
            });
            metrics::gauge!("zipiq_cluster_pulls").set(pulls.len() as f64);
        }
        for pull in closing {
            sfu.end_session(&pull.session_id, "no viewer of the pulled stream is left");
            self.delete_at_origin(&pull).await;
        }
    }

    /// Closes every pull (the node stops).
    pub(crate) async fn close_all_pulls(&self, sfu: &Sfu) {
        let pulls: Vec<Pull> = lock(&self.inner.pulls).drain().map(|(_, p)| p).collect();
        for pull in pulls {
            sfu.end_session(&pull.session_id, "the node is stopping");
            self.delete_at_origin(&pull).await;
        }
    }

    async fn delete_at_origin(&self, pull: &Pull) {
        let Some(token) = self.inner.token.clone() else {
            return;
        };
        let sent = self
            .inner
            .http
            .delete(&pull.resource_url)
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
                epoch: p.epoch,
                idle: p.idle_since.is_some(),
            })
            .collect();
        v.sort_by(|x, y| x.stream.cmp(&y.stream));
        v
    }
}
