//! `/api/v1/live`: the public streams live now, for anyone.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::error::HttpError;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live))
}

/// A stream that is live now.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct LiveStream {
    pub name: String,
    pub viewers: u64,
    /// Simulcast layers (rids), best first; [""] without simulcast.
    pub layers: Vec<String>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
}

/// Public live streams.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct LiveList {
    pub streams: Vec<LiveStream>,
}

/// Public streams that are live now (unlisted and private ones are never listed).
#[utoipa::path(
    get, path = "/api/v1/live", tag = "live",
    responses((status = 200, description = "Live public streams by name", body = LiveList))
)]
pub(crate) async fn live(State(state): State<AppState>) -> Result<Json<LiveList>, HttpError> {
    let public: std::collections::HashSet<String> =
        state.db.public_stream_names().await?.into_iter().collect();
    let streams = state
        .sfu
        .live_streams()
        .into_iter()
        .filter(|l| public.contains(&l.name))
        .map(|l| LiveStream {
            name: l.name,
            viewers: l.viewers as u64,
            layers: l.layers,
            video_codec: l.video_codec,
            audio_codec: l.audio_codec,
        })
        .collect();
    Ok(Json(LiveList { streams }))
}
