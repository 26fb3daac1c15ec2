//! WHEP (draft-ietf-wish-whep): `POST /whep/{stream}` with an SDP offer watches a live stream; the session
//! resource `/whep/{stream}/{session}` takes PATCH, DELETE, and `POST .../layer` to pick a simulcast layer.
//! A tokenless viewer's unguessable session URL is its own capability. A private stream needs a viewer token
//! (a JWT scoped to the stream) as `Authorization: Bearer`: none or an invalid one is 401, one for another stream
//! 403. A stream of a disabled account, or a viewer token made by one, is refused with 403. Requests count against
//! the per-address WHEP limit, and those with a token against the per-token one. On a node of a cluster, a viewer
//! of a stream live on another node is served from a pull of it (or sent there with a 307 when no pull can be
//! made), and a node that is full or draining sends viewers to another node (307; see `http::cluster`).

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::api::ApiJson;
use super::body::RequestBody;
use super::error::HttpError;
use super::negotiation::{self, authorized_session, bearer, read_offer};
use super::security::ClientIp;
use crate::auth::rate_limit::Action;
use crate::auth::tokens;
use crate::db::streams::Visibility;
use crate::sfu::session::SessionRole;

/// Query of `POST /whep/{stream}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchQuery {
    /// Simulcast layer (`rid`) to watch instead of the best one.
    pub layer: Option<String>,
}

/// Counts a WHEP request from `ip` (and with its bearer token, if any) against the WHEP rate limits.
fn check_limits(
    state: &AppState,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
) -> Result<(), HttpError> {
    state.auth.limits.check_ip(Action::Whep, ip)?;
    if let Some(token) = bearer(headers) {
        // Keyed by a hash prefix: rate-limit keys may be logged, tokens never are. (A SHA-256 in hex always has
        // 64 characters, so the slice cannot fail.)
        let key = format!("token:{}", &tokens::hash(token)[..16]);
        state.auth.limits.check_account(Action::Whep, &key)?;
    }
    Ok(())
}

/// `POST /whep/{stream}`.
pub(crate) async fn watch(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(stream): Path<String>,
    Query(query): Query<WatchQuery>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Result<Response, HttpError> {
    check_limits(&state, ip, &headers)?;
    let offer = read_offer(&headers, &body)?;
    let row = state
        .db
        .find_stream(&stream)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no stream {stream:?}")))?;
    let token = bearer(&headers);
    // Another node of the cluster pulling the stream (its edge), with the cluster token: it may watch any stream.
    let relay = state
        .cluster
        .as_ref()
        .is_some_and(|c| c.is_relay_token(token));
    if relay {
        metrics::counter!("zipiq_cluster_relay_sessions_total").increment(1);
    }
    // The account whose viewer token this is (private streams only: elsewhere a bearer token is not checked).
    let mut issuer = None;
    if row.visibility == Visibility::Private && !relay {
        match state.auth.check_viewer(&row, token) {
            Ok(claims) => issuer = claims.sub.parse::<i64>().ok(),
            Err(denied) => {
                tracing::info!(stream = %stream, reason = %denied, "WHEP refused for a private stream");
                metrics::counter!("zipiq_auth_failures_total", "endpoint" => "whep").increment(1);
                return Err(denied.into());
            }
        }
    }
    if row.owner_disabled() {
        tracing::info!(stream = %stream, "WHEP refused: the stream's account is disabled");
        return Err(HttpError::forbidden(
            "the account owning this stream is disabled: it cannot be watched while it is",
        ));
    }
    if let Some(id) = issuer.filter(|id| Some(*id) != row.owner_id)
        && state
            .db
            .user_by_id(id)
            .await?
            .is_none_or(|u| u.is_disabled())
    {
        tracing::info!(stream = %stream, "WHEP refused: the viewer token's account is disabled");
        return Err(HttpError::forbidden(
            "the viewer token was made by an account that is disabled",
        ));
    }
    if let Some(cluster) = &state.cluster
        && let Some(redirect) =
            super::cluster::route_viewer(&state, cluster, &stream, raw_query.as_deref(), relay)
                .await?
    {
        return Ok(redirect);
    }
    let mut layer = query.layer.filter(|l| !l.is_empty());
    // Another node's pull gets one simulcast layer and keeps it (the best, unless it asked for one): it is told
    // the stream's layers, and pulls the others one per layer when its viewers want them.
    let layers = if relay {
        state.sfu.layers_of(&stream)
    } else {
        Vec::new()
    };
    if relay && layer.is_none() {
        layer = layers.first().cloned();
    }
    let accepted = state
        .sfu
        .accept_viewer(&stream, &offer, layer.clone(), token, ip)
        .await?;
    if relay {
        state.sfu.mark_relay(&accepted.session_id);
    }
    if let Some(cluster) = &state.cluster
        && let Some(layer) = layer.filter(|_| !relay)
    {
        // A viewer of a pulled stream who wants another layer than the pull's: that layer is pulled too.
        cluster.want_layer(&state.sfu, &stream, &layer);
    }
    if let Some(id) = issuer
        && let Some(session) = state.sfu.session(&accepted.session_id)
    {
        // Disabling the account later ends this session (key_watch).
        session.set_account(id);
    }
    let location = format!("/whep/{stream}/{}", accepted.session_id);
    let mut response = negotiation::created(&state, accepted, location);
    if relay
        && !layers.is_empty()
        && let Ok(v) = axum::http::HeaderValue::from_str(&layers.join(","))
    {
        response
            .headers_mut()
            .insert(crate::cluster::pull::LAYERS_HEADER, v);
    }
    Ok(response)
}

/// `PATCH /whep/{stream}/{session}`.
pub(crate) async fn patch(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Result<Response, HttpError> {
    check_limits(&state, ip, &headers)?;
    let session = authorized_session(&state, &headers, SessionRole::Viewer, &stream, &session)?;
    negotiation::patch_session(&state, &headers, &body, &session).await
}

/// `DELETE /whep/{stream}/{session}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    check_limits(&state, ip, &headers)?;
    let session = authorized_session(&state, &headers, SessionRole::Viewer, &stream, &session)?;
    Ok(negotiation::delete_session(&state, &session))
}

/// Body of `POST /whep/{stream}/{session}/layer`.
#[derive(Debug, Deserialize)]
pub(crate) struct LayerChoice {
    /// The layer (`rid`) to watch, or null for the best one.
    pub layer: Option<String>,
}

/// `POST /whep/{stream}/{session}/layer`: switch simulcast layer (at the layer's next keyframe).
pub(crate) async fn choose_layer(
    State(state): State<AppState>,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    ApiJson(choice): ApiJson<LayerChoice>,
) -> Result<Response, HttpError> {
    let session = authorized_session(&state, &headers, SessionRole::Viewer, &stream, &session)?;
    state.sfu.choose_layer(&session.id, choice.layer.clone())?;
    if let Some(cluster) = &state.cluster
        && let Some(layer) = &choice.layer
    {
        cluster.want_layer(&state.sfu, &stream, layer);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `HEAD /whep/{stream}`: 200, the endpoint exists.
pub(crate) async fn head() -> Response {
    StatusCode::OK.into_response()
}

/// `GET /whep/{stream}`: 204.
pub(crate) async fn probe() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
