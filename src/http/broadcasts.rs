//! Past and live broadcasts as HLS: `GET /streams/{stream}/broadcasts/{id}/index.m3u8` (a playlist of
//! `/ipfs/{cid}` segments, on the gateway's own origin when `gateway.public_url` is set: a sliding window while
//! live, VOD with `EXT-X-ENDLIST` once ended). The JSON listing,
//! `GET /api/v1/streams/{stream}/broadcasts`, is part of the REST API (`http::api::broadcasts`).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::HttpError;
use crate::db::broadcasts::ChunkKind;
use crate::db::streams::{StreamRow, Visibility};
use crate::media::hls::{PlaylistChunk, PlaylistKind, playlist};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(
        "/streams/{stream}/broadcasts/{id}/index.m3u8",
        get(hls_playlist),
    )
}

async fn visible_stream(state: &AppState, stream: &str) -> Result<StreamRow, HttpError> {
    let row = state
        .db
        .find_stream(stream)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no stream {stream:?}")))?;
    if row.visibility == Visibility::Private {
        return Err(HttpError::unauthorized(
            "this stream is private: it needs a viewer token",
        ));
    }
    Ok(row)
}

async fn hls_playlist(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let id: i64 = id
        .parse()
        .map_err(|_| HttpError::bad_request("the broadcast id is a number"))?;
    let row = visible_stream(&state, &stream).await?;
    let broadcast = state
        .db
        .broadcast(id)
        .await?
        .filter(|b| b.stream_id == row.id)
        .ok_or_else(|| HttpError::not_found(format!("no broadcast {id} of {stream:?}")))?;
    let ended = broadcast.ended_at.is_some();
    let window = state.config.recording.live_playlist_segments;
    // A live playlist is polled every few seconds: read its tail only. An ended one is read whole, once a minute
    // at most per cache.
    let chunks = if ended {
        state.db.chunks_of(id).await?
    } else {
        let media = i64::try_from(window.max(1)).unwrap_or(i64::MAX);
        state.db.chunks_tail(id, media).await?
    };
    let gateway = state.config.gateway.link_base();
    let items: Vec<PlaylistChunk> = chunks
        .iter()
        .map(|c| PlaylistChunk {
            seq: c.seq,
            init: c.kind == ChunkKind::Init,
            uri: format!("{gateway}/ipfs/{}", c.cid),
            duration_ms: c.duration_ms,
        })
        .collect();
    let kind = if ended {
        PlaylistKind::Vod
    } else {
        PlaylistKind::Live { window }
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (
                header::CACHE_CONTROL,
                if ended {
                    "public, max-age=60"
                } else {
                    "no-cache"
                },
            ),
        ],
        playlist(&items, kind),
    )
        .into_response())
}
