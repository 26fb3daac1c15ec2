//! WHIP (RFC 9725): `POST /whip/{stream}` with an SDP offer and the stream key as bearer token publishes;
//! the session resource `/whip/{stream}/{session}` takes PATCH (trickle, ICE restart) and DELETE.
//! Every request counts against the per-address WHIP rate limit; only those that prove themselves (the right stream
//! key, or a session's own bearer token) count against the stream owner's budget too, so strangers cannot spend it.
//! A stream of a disabled account refuses its key with 403 (checked after the key, so it tells only the key's
//! holder). On a node of a cluster a publisher may be redirected (307) to a less loaded node, and claims its
//! stream's route first (409 when another node is its origin; see `http::cluster`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::body::RequestBody;
use super::error::HttpError;
use super::negotiation::{self, bearer, read_offer};
use super::security::ClientIp;
use crate::auth::rate_limit::Action;
use crate::db::streams::StreamRow;
use crate::secrets::stream_keys;
use crate::sfu::session::{Session, SessionRole};

/// The account a stream's WHIP requests count against: its owner, or the stream itself when nobody owns it.
fn account_key(row: &StreamRow) -> String {
    match row.owner_id {
        Some(owner) => format!("user:{owner}"),
        None => format!("stream:{}", row.name),
    }
}

/// Counts an authenticated WHIP request on `stream` against the owner's limit (the address was counted already).
async fn check_account(state: &AppState, stream: &str) -> Result<(), HttpError> {
    if let Some(row) = state.db.find_stream(stream).await? {
        state
            .auth
            .limits
            .check_account(Action::Whip, &account_key(&row))?;
    }
    Ok(())
}

/// The publisher session `session_id` of `stream` a PATCH or DELETE names, once the request has counted against
/// the address, shown the session's own token, and counted against the owner's budget.
async fn publisher_session(
    state: &AppState,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    stream: &str,
    session_id: &str,
) -> Result<Arc<Session>, HttpError> {
    state.auth.limits.check_ip(Action::Whip, ip)?;
    let session = negotiation::authorized_session(
        state,
        headers,
        SessionRole::Publisher,
        stream,
        session_id,
    )?;
    check_account(state, stream).await?;
    Ok(session)
}

/// `POST /whip/{stream}`.
pub(crate) async fn publish(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(stream): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Result<Response, HttpError> {
    state.auth.limits.check_ip(Action::Whip, ip)?;
    let offer = read_offer(&headers, &body)?;
    let Some(token) = bearer(&headers) else {
        return Err(HttpError::unauthorized(
            "publishing needs the stream key as Authorization: Bearer <key>",
        ));
    };
    // Unknown stream and wrong key answer alike, so keys cannot be used to discover stream names.
    let row = state.db.find_stream(&stream).await?;
    let authorized = row.as_ref().filter(|r| {
        r.key_hash
            .as_deref()
            .is_some_and(|hash| stream_keys::verify(token, hash))
    });
    let Some(row) = authorized else {
        tracing::warn!(stream = %stream, "WHIP with a wrong or revoked stream key");
        metrics::counter!("zipiq_auth_failures_total", "endpoint" => "whip").increment(1);
        return Err(HttpError::unauthorized("wrong stream key"));
    };
    if row.owner_disabled() {
        tracing::warn!(stream = %stream, "WHIP refused: the stream's account is disabled");
        return Err(HttpError::forbidden(
            "the account owning this stream is disabled: publishing is refused while it is",
        ));
    }
    // Only now, with the key verified, is the request the owner's.
    state
        .auth
        .limits
        .check_account(Action::Whip, &account_key(row))?;
    if let Some(cluster) = &state.cluster
        && let Some(redirect) =
            super::cluster::place_and_claim(cluster, &stream, query.as_deref()).await?
    {
        return Ok(redirect);
    }
    if let Some(cluster) = &state.cluster {
        // This node is the stream's origin now: a pull of it from the previous origin gives way to the publisher.
        cluster.drop_pull(&state.sfu, &stream);
    }
    let accepted = match state
        .sfu
        .accept_publisher(&stream, &offer, Some(token), ip)
        .await
    {
        Ok(accepted) => accepted,
        Err(e) => {
            if let Some(cluster) = &state.cluster {
                cluster.release_if_unused(&state.sfu, &stream).await;
            }
            return Err(e.into());
        }
    };
    let location = format!("/whip/{stream}/{}", accepted.session_id);
    Ok(negotiation::created(&state, accepted, location))
}

/// `PATCH /whip/{stream}/{session}`.
pub(crate) async fn patch(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Result<Response, HttpError> {
    let session = publisher_session(&state, ip, &headers, &stream, &session).await?;
    negotiation::patch_session(&state, &headers, &body, &session).await
}

/// `DELETE /whip/{stream}/{session}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let session = publisher_session(&state, ip, &headers, &stream, &session).await?;
    Ok(negotiation::delete_session(&state, &session))
}

/// `GET /whip/{stream}`: the endpoint exists (clients probe it).
pub(crate) async fn probe() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
