//! Past and live broadcasts: `GET /api/v1/streams/{stream}/broadcasts` (JSON: each broadcast with its chunks and,
//! once ended, its root CID) and `GET /streams/{stream}/broadcasts/{id}/index.m3u8` (an HLS playlist of
//! `/ipfs/{cid}` segments: a sliding window while live, VOD with `EXT-X-ENDLIST` once ended).

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::HttpError;
use crate::db::broadcasts::{BroadcastRow, ChunkKind, ChunkRow};
use crate::db::streams::{StreamRow, Visibility};
use crate::media::hls::{PlaylistChunk, PlaylistKind, playlist};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/streams/{stream}/broadcasts", get(list))
        .route(
            "/streams/{stream}/broadcasts/{id}/index.m3u8",
            get(hls_playlist),
        )
}

/// A chunk in the API.
#[derive(Debug, Serialize)]
pub struct ChunkView {
    pub seq: i64,
    pub kind: ChunkKind,
    pub cid: String,
    pub size: i64,
    pub duration_ms: i64,
}

/// A broadcast in the API.
#[derive(Debug, Serialize)]
pub struct BroadcastView {
    pub id: i64,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub root_cid: Option<String>,
    /// Where to play it: this server's playlist, and (once ended) the playlist inside the IPFS directory, which
    /// plays from any gateway.
    pub playlist: String,
    pub ipfs_playlist: Option<String>,
    pub chunks: Vec<ChunkView>,
}

/// Query of the listing.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Most broadcasts returned, newest first (1-100, default 20).
    pub limit: Option<i64>,
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

fn view(stream: &str, b: BroadcastRow, chunks: Vec<ChunkRow>) -> BroadcastView {
    BroadcastView {
        playlist: format!("/streams/{stream}/broadcasts/{}/index.m3u8", b.id),
        ipfs_playlist: b.root_cid.as_ref().map(|r| format!("/ipfs/{r}/index.m3u8")),
        id: b.id,
        started_at: b.started_at,
        ended_at: b.ended_at,
        root_cid: b.root_cid,
        chunks: chunks
            .into_iter()
            .map(|c| ChunkView {
                seq: c.seq,
                kind: c.kind,
                cid: c.cid,
                size: c.size,
                duration_ms: c.duration_ms,
            })
            .collect(),
    }
}

async fn list(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, HttpError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(HttpError::bad_request("limit must be between 1 and 100"));
    }
    let row = visible_stream(&state, &stream).await?;
    let mut out = Vec::new();
    for b in state.db.broadcasts_of_stream(row.id, limit).await? {
        let chunks = state.db.chunks_of(b.id).await?;
        out.push(view(&stream, b, chunks));
    }
    Ok(Json(serde_json::json!({ "stream": stream, "broadcasts": out })).into_response())
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
    let chunks = state.db.chunks_of(id).await?;
    let items: Vec<PlaylistChunk> = chunks
        .iter()
        .map(|c| PlaylistChunk {
            seq: c.seq,
            init: c.kind == ChunkKind::Init,
            uri: format!("/ipfs/{}", c.cid),
            duration_ms: c.duration_ms,
        })
        .collect();
    let ended = broadcast.ended_at.is_some();
    let kind = if ended {
        PlaylistKind::Vod
    } else {
        PlaylistKind::Live {
            window: state.config.recording.live_playlist_segments,
        }
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
