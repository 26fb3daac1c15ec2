//! What WHIP and WHEP do differently on a node of a cluster: a publisher is placed on the least loaded node (307 to
//! it, with an absolute `Location`) and claims its stream's route (409 when another live node is the origin, 503
//! with `Retry-After` when the database cannot say); a viewer on a node that is full or draining is sent (307) to a
//! node of the same region that can serve it, else to any; a viewer of a stream whose origin is another node is
//! served from a pull of the stream (see `cluster::pull`), or sent there (307) when no pull can be made.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::HttpError;
use crate::cluster::placement::Placement;
use crate::cluster::{ClaimOutcome, Cluster};
use crate::sfu::session::SessionRole;

/// The query parameter a placement redirect adds, naming the node it chose: that node then takes the publisher
/// whatever its own view of the load, so a publisher is never bounced twice.
const PLACED: &str = "placed";

/// A 307 to `url` (the method and body are kept, as WHIP and WHEP clients need).
fn redirect(url: &str, kind: &'static str) -> Result<Response, HttpError> {
    let location = HeaderValue::from_str(url)
        .map_err(|_| HttpError::internal("a cluster node's URL is not a valid header value"))?;
    metrics::counter!("zipiq_cluster_redirects_total", "kind" => kind).increment(1);
    Ok((
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response())
}

/// Whether the request's query says this node was chosen by a placement already.
fn placed_here(raw_query: Option<&str>, node_id: &str) -> bool {
    raw_query.is_some_and(|q| {
        q.split('&').any(|pair| {
            pair.split_once('=')
                .is_some_and(|(k, v)| k == PLACED && v == node_id)
        })
    })
}

/// The WHIP publisher's placement and route claim. `Ok(Some(response))`: answer with it (a redirect);
/// `Ok(None)`: accept here, this node is the stream's origin now.
pub(crate) async fn place_and_claim(
    cluster: &Cluster,
    stream: &str,
    raw_query: Option<&str>,
) -> Result<Option<Response>, HttpError> {
    if !placed_here(raw_query, cluster.node_id()) {
        match cluster.place_publisher() {
            Placement::Here => {}
            Placement::There(node) => {
                let url = format!(
                    "{}/whip/{stream}?{PLACED}={}",
                    node.report.http_url, node.report.node_id
                );
                tracing::info!(stream = %stream, to = %node.report.node_id, "publisher placed on another node");
                return redirect(&url, "whip").map(Some);
            }
            Placement::Nowhere => {
                return Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this node is draining or full and no other node of the cluster can take the stream",
                )
                .with_header(header::RETRY_AFTER, "5"));
            }
        }
    }
    match cluster.claim(stream).await? {
        ClaimOutcome::Origin => Ok(None),
        ClaimOutcome::Elsewhere(route) => Err(HttpError::new(
            StatusCode::CONFLICT,
            format!(
                "stream {stream:?} is already published on node {:?}",
                route.node_id
            ),
        )
        .with_header(header::RETRY_AFTER, "2")),
    }
}

/// `raw_query` without any `placed=` pair, then `placed=<node_id>`: the query of a redirect to that node.
fn placed_query(raw_query: Option<&str>, node_id: &str) -> String {
    let mut pairs: Vec<&str> = raw_query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(PLACED))
        .collect();
    let placed = format!("{PLACED}={node_id}");
    pairs.push(&placed);
    pairs.join("&")
}

/// Whether this node has no room for one more viewer now (`media.max_sessions` less the sessions reserved for
/// publishers), as the SFU's admission counts it.
fn full_for_viewers(state: &AppState) -> bool {
    let counts = state.sfu.counts();
    let media = state.sfu.config();
    !SessionRole::Viewer.fits(
        counts.publishers + counts.viewers + counts.relays,
        media.max_sessions,
        media.reserved_publisher_sessions,
    )
}

/// A WHEP viewer on a node of the cluster. `Some` 307: this node is full or draining and another node of its
/// region (else of any region) can serve the stream, which is live here or elsewhere; the redirect names that node
/// (`placed=`), which then serves the viewer whatever its own load, so a viewer is never bounced twice. Otherwise,
/// for a stream not live here but live on another node: the stream is pulled here from its origin and the viewer
/// served locally (`None`), or, when no pull can be made, `Some` 307 to the origin. A pull's own request (`relay`)
/// is never pulled or sent on: it is served here or refused.
pub(crate) async fn route_viewer(
    state: &AppState,
    cluster: &Cluster,
    stream: &str,
    raw_query: Option<&str>,
    relay: bool,
) -> Result<Option<Response>, HttpError> {
    if relay {
        return Ok(None);
    }
    let live_here = state.sfu.is_live(stream);
    // The stream's route on another node, asked once (None: not asked yet).
    let mut elsewhere = None;
    if !placed_here(raw_query, cluster.node_id())
        && let Placement::There(node) = cluster.place_viewer(full_for_viewers(state))
    {
        if !live_here {
            elsewhere = Some(cluster.route_elsewhere(stream).await?);
        }
        // A stream live nowhere is answered here (409), as on a single node.
        if live_here || elsewhere.as_ref().is_some_and(Option::is_some) {
            let url = format!(
                "{}/whep/{stream}?{}",
                node.report.http_url,
                placed_query(raw_query, &node.report.node_id)
            );
            tracing::info!(stream = %stream, to = %node.report.node_id, draining = cluster.is_draining(), "viewer sent to another node: this one is full or draining");
            return redirect(&url, "whep_placed").map(Some);
        }
    }
    if live_here {
        return Ok(None);
    }
    let route = match elsewhere {
        Some(route) => route,
        None => cluster.route_elsewhere(stream).await?,
    };
    let Some(route) = route else {
        return Ok(None);
    };
    match cluster.ensure_pull(&state.sfu, stream, &route).await {
        Ok(()) => return Ok(None),
        Err(reason) => {
            tracing::warn!(stream = %stream, origin = %route.node_id, reason = %reason, "no pull: the viewer is sent to the origin");
        }
    }
    let Some(base) = route.http_url else {
        return Ok(None);
    };
    let query = raw_query.map(|q| format!("?{q}")).unwrap_or_default();
    redirect(&format!("{base}/whep/{stream}{query}"), "whep").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_placement_naming_this_node_counts() {
        assert!(placed_here(Some("placed=b"), "b"));
        assert!(placed_here(Some("x=1&placed=b"), "b"));
        assert!(!placed_here(Some("placed=a"), "b"));
        assert!(!placed_here(Some("placedx=b"), "b"));
        assert!(!placed_here(None, "b"));
    }

    #[test]
    fn a_placed_query_keeps_the_others_and_names_one_node() {
        assert_eq!(placed_query(None, "b"), "placed=b");
        assert_eq!(placed_query(Some("layer=h"), "b"), "layer=h&placed=b");
        assert_eq!(
            placed_query(Some("placed=a&layer=h"), "b"),
            "layer=h&placed=b"
        );
    }
}
