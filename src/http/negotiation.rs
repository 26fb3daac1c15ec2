//! What WHIP and WHEP share: reading the offer, answering 201 with the session's headers, the ICE server `Link`
//! headers, and the session resource (PATCH for trickle and ICE restart, DELETE to end), after
//! RFC 9725 sections 4.2-4.3 and draft-ietf-wish-whep.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use super::AppState;
use super::error::HttpError;
use crate::auth::rate_limit::Action;
use crate::config::IceServer;
use crate::secrets::stream_keys;
use crate::sfu::session::{Session, SessionRole};
use crate::sfu::{Accepted, sdpfrag};

pub(crate) const SDP: &str = "application/sdp";
pub(crate) const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Whether the request's `Content-Type` is `expected` (parameters ignored).
pub(crate) fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// The bearer token of the request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(stream_keys::bearer_token)
}

/// Checks the content type and decodes an SDP offer body.
pub(crate) fn read_offer(headers: &HeaderMap, body: &Bytes) -> Result<String, HttpError> {
    if !has_content_type(headers, SDP) {
        return Err(HttpError::unsupported_type(SDP, "accept-post"));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| HttpError::bad_request("the SDP offer is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(HttpError::bad_request("the SDP offer is empty"));
    }
    Ok(text.to_owned())
}

/// `Link` header values announcing the configured ICE servers (RFC 9725 section 4.6).
pub(crate) fn ice_server_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    user.replace('"', ""),
                    credential.replace('"', "")
                ));
            }
            if let Ok(v) = HeaderValue::from_str(&link) {
                links.push(v);
            }
        }
    }
    links
}

/// The 201 answer to an accepted offer.
pub(crate) fn created(state: &AppState, accepted: Accepted, location: String) -> Response {
    let mut response = (StatusCode::CREATED, accepted.answer_sdp).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&accepted.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        HeaderName::from_static("accept-patch"),
        HeaderValue::from_static(SDPFRAG),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for link in ice_server_links(&state.config.media.ice_servers) {
        h.append(header::LINK, link);
    }
    response
}

use axum::http::HeaderName;

/// Finds the session behind a resource URL of `role` on `stream`, and checks the bearer token that made it.
pub(crate) fn authorized_session(
    state: &AppState,
    headers: &HeaderMap,
    role: SessionRole,
    stream: &str,
    session_id: &str,
) -> Result<Arc<Session>, HttpError> {
    let session = state
        .sfu
        .session(session_id)
        .filter(|s| s.role == role && s.stream == stream)
        .ok_or_else(|| HttpError::not_found("no such session"))?;
    if !session.authorizes(bearer(headers)) {
        return Err(HttpError::unauthorized(
            "this session needs the bearer token that created it",
        ));
    }
    Ok(session)
}

/// PATCH on a session: trickle candidates (204) or an ICE restart (200 with our new fragment and a new ETag).
pub(crate) async fn patch_session(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    session: &Arc<Session>,
) -> Result<Response, HttpError> {
    state
        .auth
        .limits
        .check_account(Action::Patch, &format!("session:{}", session.serial))?;
    if !has_content_type(headers, SDPFRAG) {
        return Err(HttpError::unsupported_type(SDPFRAG, "accept-patch"));
    }
    let Some(if_match) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Err(HttpError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "PATCH needs an If-Match header with the session's ETag (or * for an ICE restart)",
        ));
    };
    let if_match = if_match.trim();
    let wildcard = if_match == "*";
    if !wildcard && !etag_matches(if_match, &session.etag()) {
        return Err(HttpError::new(
            StatusCode::PRECONDITION_FAILED,
            "the ETag in If-Match is not the session's current one",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| HttpError::bad_request("the fragment is not UTF-8"))?;
    let frag = sdpfrag::parse(text).map_err(|e| HttpError::bad_request(e.to_string()))?;
    if frag.ice_ufrag.is_some() {
        let answer = state.sfu.restart_ice(session, &frag).await.map_err(|e| {
            tracing::warn!(session = %session.log_id(), error = %e, "ICE restart failed; the session goes on");
            HttpError::from(e)
        })?;
        let etag = session.renew_etag();
        let mut response = (StatusCode::OK, answer).into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        return Ok(response);
    }
    state.sfu.trickle(session, &frag).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&session.etag()) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// Whether an If-Match list names `etag` (strong comparison).
fn etag_matches(if_match: &str, etag: &str) -> bool {
    if_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == etag)
}

/// DELETE on a session (already authorized): ends it.
pub(crate) fn delete_session(state: &AppState, session: &Session) -> Response {
    state.sfu.end_session(&session.id, "DELETE by the client");
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_ignores_parameters_and_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/SDP; charset=utf-8"),
        );
        assert!(has_content_type(&h, SDP));
        assert!(!has_content_type(&h, SDPFRAG));
        assert!(!has_content_type(&HeaderMap::new(), SDP));
    }

    #[test]
    fn links_carry_turn_credentials() {
        let links = ice_server_links(&[
            IceServer {
                urls: vec!["stun:stun.example.net".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.net?transport=udp".into()],
                username: Some("u".into()),
                credential: Some("p".into()),
            },
        ]);
        assert_eq!(links[0], "<stun:stun.example.net>; rel=\"ice-server\"");
        assert_eq!(
            links[1],
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\""
        );
    }

    #[test]
    fn if_match_lists() {
        assert!(etag_matches("\"a\", \"b\"", "\"b\""));
        assert!(!etag_matches("\"a\"", "\"b\""));
        assert!(!etag_matches("W/\"b\"", "\"b\""));
    }
}
