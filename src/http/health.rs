//! Health: `/healthz` answers while the process runs; `/readyz` checks what serving needs and names what is not
//! ready in its JSON body.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
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
    let (archive_ready, archive_reason) = state.archiver.readiness();
    let archive = json!({"ready": archive_ready, "reason": archive_reason});
    let ready = database["ready"] == true && ipfs["ready"] == true && archive_ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "checks": {"database": database, "media_socket": media, "ipfs": ipfs, "archive": archive},
        })),
    )
        .into_response()
}
