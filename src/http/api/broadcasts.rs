//! `/api/v1/streams/{name}/broadcasts` and `/api/v1/broadcasts/{id}/chunks`: the broadcasts recorded from a stream
//! and their chunks, as JSON. Broadcasts of a private stream are listed only to its owner and admins. (The HLS
//! playlists these link to are served by `http::broadcasts`.)

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::responses::{InvalidOptionalToken, InvalidQuery};
use super::{ApiPath, MaybeAuthenticated};
use crate::auth::CurrentUser;
use crate::auth::validate::FieldError;
use crate::db::broadcasts::{BroadcastRow, ChunkKind, ChunkRow};
use crate::db::streams::{StreamRow, Visibility};
use crate::http::AppState;
use crate::http::error::{HttpError, Problem};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_broadcasts))
        .routes(routes!(list_chunks))
}

/// One broadcast (a live session of a stream) with its chunks.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Broadcast {
    pub id: i64,
    pub stream_id: i64,
    /// Unix milliseconds.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// The UnixFS directory of every chunk and the playlist, once the broadcast ended.
    pub root_cid: Option<String>,
    /// The zipIQ node that recorded it.
    pub node: String,
    /// This server's HLS playlist of the broadcast.
    pub playlist: String,
    /// Once ended: the playlist inside the IPFS directory, which plays from any IPFS gateway. On this server's
    /// gateway: relative (`/ipfs/...`), or on its own origin when `gateway.public_url` is set.
    pub ipfs_playlist: Option<String>,
    /// How many chunks the broadcast has.
    pub chunk_count: i64,
    /// Its first chunks (at most 100); the rest page by page from `/api/v1/broadcasts/{id}/chunks`.
    pub chunks: Vec<Chunk>,
    /// Whether `chunks` holds fewer than `chunk_count`.
    pub chunks_truncated: bool,
}

/// Chunks shown inline per broadcast in a listing.
const INLINE_CHUNKS: i64 = 100;
/// Chunks per page of `/api/v1/broadcasts/{id}/chunks`, by default and at most.
const CHUNK_PAGE_DEFAULT: i64 = 500;
const CHUNK_PAGE_MAX: i64 = 1000;

impl Broadcast {
    /// `gateway` is the origin of links to content ("" for this origin).
    fn new(
        stream: &str,
        b: &BroadcastRow,
        chunks: &[ChunkRow],
        chunk_count: i64,
        gateway: &str,
    ) -> Broadcast {
        Broadcast {
            id: b.id,
            stream_id: b.stream_id,
            started_at: b.started_at,
            ended_at: b.ended_at,
            root_cid: b.root_cid.clone(),
            node: b.node.clone(),
            playlist: format!("/streams/{stream}/broadcasts/{}/index.m3u8", b.id),
            ipfs_playlist: b
                .root_cid
                .as_ref()
                .map(|r| format!("{gateway}/ipfs/{r}/index.m3u8")),
            chunk_count,
            chunks: chunks.iter().map(Chunk::from).collect(),
            chunks_truncated: (chunks.len() as i64) < chunk_count,
        }
    }
}

/// A stream's broadcasts, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct BroadcastList {
    pub stream: String,
    pub broadcasts: Vec<Broadcast>,
}

/// Init segment or media segment.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Init,
    Media,
}

/// One chunk: a CMAF segment stored in IPFS.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Chunk {
    pub seq: i64,
    pub kind: Kind,
    pub cid: String,
    pub size: i64,
    pub duration_ms: i64,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl From<&ChunkRow> for Chunk {
    fn from(c: &ChunkRow) -> Chunk {
        Chunk {
            seq: c.seq,
            kind: match c.kind {
                ChunkKind::Init => Kind::Init,
                ChunkKind::Media => Kind::Media,
            },
            cid: c.cid.clone(),
            size: c.size,
            duration_ms: c.duration_ms,
            start_ms: c.start_ms,
            end_ms: c.end_ms,
        }
    }
}

/// A broadcast's chunks, in order.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ChunkList {
    pub chunks: Vec<Chunk>,
    /// When more chunks follow: pass it as `after` for the next page.
    pub next_after: Option<i64>,
}

/// Query of `GET /api/v1/broadcasts/{id}/chunks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChunkQuery {
    /// Only chunks with a greater `seq` (the `next_after` of the previous page).
    pub after: Option<i64>,
    /// At most this many (1-1000, default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Query of the broadcast list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastQuery {
    /// At most this many, newest first (1-100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Only broadcasts older than this one (the last `id` of the previous page).
    pub before: Option<i64>,
}

/// Whether the caller may read the archive of `row`: public and unlisted streams are readable by anyone (the
/// chunks are public in IPFS anyway), private ones by their owner and admins.
fn may_read(row: &StreamRow, user: Option<&CurrentUser>) -> bool {
    row.visibility != Visibility::Private || user.is_some_and(|u| u.may_manage(row))
}

/// A stream's broadcasts, newest first, each with its chunks and playlists.
#[utoipa::path(
    get, path = "/api/v1/streams/{name}/broadcasts", tag = "archive",
    security((), ("bearer" = [])),
    params(("name" = String, Path, description = "Stream name"), BroadcastQuery),
    responses(
        (status = 200, description = "Broadcasts", body = BroadcastList),
        InvalidOptionalToken,
        (status = 404, description = "No such stream (or a private one of someone else)", body = Problem, content_type = "application/problem+json"),
        InvalidQuery,
    )
)]
pub(crate) async fn list_broadcasts(
    State(state): State<AppState>,
    MaybeAuthenticated(user): MaybeAuthenticated,
    ApiPath(name): ApiPath<String>,
    q: Result<Query<BroadcastQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BroadcastList>, HttpError> {
    let q = super::query(q)?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(FieldError::new("limit", "must be between 1 and 100").into());
    }
    let row = super::streams::named(&state, &name)
        .await?
        .filter(|r| may_read(r, user.as_ref()))
        .ok_or_else(|| HttpError::not_found(format!("no stream {name:?}")))?;
    let mut broadcasts = Vec::new();
    for b in state
        .db
        .broadcasts_of_stream(row.id, limit, q.before)
        .await?
    {
        let chunks = state.db.chunks_page(b.id, i64::MIN, INLINE_CHUNKS).await?;
        let count = state.db.chunk_count(b.id).await?;
        broadcasts.push(Broadcast::new(
            &row.name,
            &b,
            &chunks,
            count,
            state.config.gateway.link_base(),
        ));
    }
    Ok(Json(BroadcastList {
        stream: row.name,
        broadcasts,
    }))
}

/// A broadcast's chunks in order (their CIDs play from any IPFS gateway).
#[utoipa::path(
    get, path = "/api/v1/broadcasts/{id}/chunks", tag = "archive",
    security((), ("bearer" = [])),
    params(("id" = i64, Path, description = "Broadcast id"), ChunkQuery),
    responses(
        (status = 200, description = "Chunks", body = ChunkList),
        InvalidQuery,
        InvalidOptionalToken,
        (status = 404, description = "No such broadcast (or one of someone else's private stream)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_chunks(
    State(state): State<AppState>,
    MaybeAuthenticated(user): MaybeAuthenticated,
    ApiPath(id): ApiPath<String>,
    q: Result<Query<ChunkQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ChunkList>, HttpError> {
    let q = super::query(q)?;
    let limit = q.limit.unwrap_or(CHUNK_PAGE_DEFAULT);
    if !(1..=CHUNK_PAGE_MAX).contains(&limit) {
        return Err(FieldError::new("limit", "must be between 1 and 1000").into());
    }
    let not_found = || HttpError::not_found(format!("no broadcast {id:?}"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let broadcast = state.db.broadcast(id).await?.ok_or_else(not_found)?;
    let readable = state
        .db
        .stream_by_id(broadcast.stream_id)
        .await?
        .is_some_and(|r| may_read(&r, user.as_ref()));
    if !readable {
        return Err(not_found());
    }
    // One more than asked tells whether another page follows.
    let mut rows = state
        .db
        .chunks_page(id, q.after.unwrap_or(i64::MIN), limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(Json(ChunkList {
        next_after: if more {
            rows.last().map(|c| c.seq)
        } else {
            None
        },
        chunks: rows.iter().map(Chunk::from).collect(),
    }))
}
