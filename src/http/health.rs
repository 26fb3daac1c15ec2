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
    let ready = database["ready"] == true;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "checks": {"database": database, "media_socket": media},
        })),
    )
        .into_response()
}
