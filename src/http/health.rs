//! Health: `/healthz` answers while the process runs; `/readyz` checks what serving publishers and viewers needs
//! (the database, the media socket, the IPFS node) and names what is not ready in its JSON body.
//!
//! The archive never makes a node unready: with no wallet yet, a shared wallet run dry or the bundler down, every
//! node would answer 503 at once and a load balancer would stop live streaming because of archival. Its state is
//! in the body as `degraded` instead, and in the gauge `zipiq_archive_degraded`; chunks wait in the queue.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let database =
        match tokio::time::timeout(std::time::Duration::from_secs(2), state.db.ping()).await {
            Ok(Ok(())) => json!({"ready": true}),
            Ok(Err(e)) => json!({"ready": false, "reason": e.to_string()}),
            Err(_) => json!({"ready": false, "reason": "no answer within 2 s"}),
        };
    let media = json!({"ready": true, "address": state.sfu.media_addr().to_string()});
    let ipfs = if state.ipfs.is_healthy().await {
        json!({"ready": true, "peer_id": state.ipfs.peer_id().to_string(), "connected_peers": state.ipfs.connected_peers().await})
    } else {
        json!({"ready": false, "reason": "the embedded IPFS node is not running"})
    };
    let (archive_degraded, archive_reason) = archive_state(&state.archiver);
    let archive = json!({"degraded": archive_degraded, "reason": archive_reason});
    let ready = database["ready"] == true && ipfs["ready"] == true;
    let degraded: Vec<&str> = if archive_degraded {
        vec!["archive"]
    } else {
        Vec::new()
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "degraded": degraded,
            "checks": {"database": database, "media_socket": media, "ipfs": ipfs, "archive": archive},
        })),
    )
        .into_response()
}

/// Whether archival is degraded (cannot make progress now), and why or what it does; sets the gauge
/// `zipiq_archive_degraded` (1 degraded, 0 not).
pub(crate) fn archive_state(archiver: &crate::archive::worker::Archiver) -> (bool, String) {
    let (progressing, reason) = archiver.readiness();
    metrics::gauge!("zipiq_archive_degraded").set(if progressing { 0.0 } else { 1.0 });
    (!progressing, reason)
}
