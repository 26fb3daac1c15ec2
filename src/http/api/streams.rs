//! `/api/v1/streams/*`, `/api/v1/broadcasts/*` and `/api/v1/live`: a user's streams (create, list, rename,
//! visibility, delete, rotate the key, viewer tokens) and the broadcasts and chunks recorded from them.
//!
//! Owners manage their streams, admins every stream. A rotated key ends the live publisher at once (it must come
//! back with the new key); a stream turned private ends its viewers (they come back with viewer tokens) and its
//! broadcast's recording.
//! Broadcasts of a private stream are listed only to its owner and admins.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, Authenticated, MaybeAuthenticated};
use crate::auth::CurrentUser;
use crate::auth::validate::{self, FieldError};
use crate::db::audit::actions;
use crate::db::broadcasts::{BroadcastRow, ChunkKind, ChunkRow};
use crate::db::streams::{StreamRow, Visibility};
use crate::http::AppState;
use crate::http::error::{HttpError, Problem};
use crate::http::security::ClientIp;
use crate::sfu::session::SessionRole;

/// Why a disabled account's streams get no viewer tokens.
const DISABLED_OWNER: &str =
    "the account owning this stream is disabled: its streams get no viewer tokens while it is";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_streams, create_stream))
        .routes(routes!(get_stream, update_stream, delete_stream))
        .routes(routes!(rotate_key))
        .routes(routes!(create_viewer_token, revoke_viewer_tokens))
        .routes(routes!(list_broadcasts))
        .routes(routes!(list_chunks))
        .routes(routes!(live))
}

/// A stream as its owner sees it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Stream {
    pub id: i64,
    pub name: String,
    pub visibility: Visibility,
    /// The owning user; null for streams made by the CLI (admins manage those).
    pub owner_id: Option<i64>,
    /// Whether a stream key is set (publishing is refused without one).
    pub has_key: bool,
    /// Whether a publisher is live now.
    pub live: bool,
    /// Viewers watching now.
    pub viewers: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The WHIP endpoint (OBS: Service WHIP, Server this URL, Bearer Token the stream key).
    pub whip_url: String,
    /// The watch page.
    pub watch_url: String,
}

/// Streams.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StreamList {
    pub streams: Vec<Stream>,
}

/// A new stream.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStream {
    /// 1-64 characters a-z, 0-9, - and _, starting with a letter or digit.
    #[schema(example = "my-show", pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: String,
    /// Who may watch (default: public).
    pub visibility: Option<Visibility>,
}

/// Changes to a stream (each optional).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamUpdate {
    /// A new name (refused while the stream has sessions).
    #[schema(example = "my-show", pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
}

/// A new stream key: shown once, never stored (only its hash is).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StreamKey {
    pub stream: Stream,
    /// The key: OBS's "Bearer Token" for WHIP.
    pub key: String,
}

/// A viewer token request.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewerTokenRequest {
    /// Lifetime in seconds (default and maximum from the server's configuration).
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
}

/// A viewer token: a JWT letting its holder watch one private stream until it expires.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ViewerToken {
    /// Send as `Authorization: Bearer` to WHEP.
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The watch page with the token in its fragment (not sent to servers, not in Referer headers).
    pub watch_url: String,
}

/// One broadcast (a live session of a stream) with its chunks.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Broadcast {
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
pub struct BroadcastList {
    pub stream: String,
    pub broadcasts: Vec<Broadcast>,
}

/// Init segment or media segment.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Init,
    Media,
}

/// One chunk: a CMAF segment stored in IPFS.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Chunk {
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
pub struct ChunkList {
    pub chunks: Vec<Chunk>,
    /// When more chunks follow: pass it as `after` for the next page.
    pub next_after: Option<i64>,
}

/// Query of `GET /api/v1/broadcasts/{id}/chunks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChunkQuery {
    /// Only chunks with a greater `seq` (the `next_after` of the previous page).
    pub after: Option<i64>,
    /// At most this many (1-1000, default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A stream that is live now.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LiveStream {
    pub name: String,
    pub viewers: u64,
    /// Simulcast layers (rids), best first; [""] without simulcast.
    pub layers: Vec<String>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
}

/// Public live streams.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LiveList {
    pub streams: Vec<LiveStream>,
}

/// Query of the stream list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Every stream, not only the caller's (admins only).
    pub all: Option<bool>,
}

/// Query of the broadcast list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BroadcastQuery {
    /// At most this many, newest first (1-100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Only broadcasts older than this one (the last `id` of the previous page).
    pub before: Option<i64>,
}

fn to_api(state: &AppState, row: &StreamRow) -> Stream {
    let base = state.config.public_url();
    let live = state.sfu.live_streams();
    let now = live.iter().find(|l| l.name == row.name);
    Stream {
        id: row.id,
        name: row.name.clone(),
        visibility: row.visibility,
        owner_id: row.owner_id,
        has_key: row.key_hash.is_some(),
        live: now.is_some(),
        viewers: now.map_or(0, |l| l.viewers as u64),
        created_at: row.created_at,
        whip_url: format!("{base}/whip/{}", row.name),
        watch_url: format!("{base}/watch/{}", row.name),
    }
}

/// The stream `name` if the caller may manage it; 404 otherwise (another user's stream is not revealed).
async fn managed(state: &AppState, user: &CurrentUser, name: &str) -> Result<StreamRow, HttpError> {
    let row = if crate::db::streams::valid_name(name) {
        state.db.find_stream(name).await?
    } else {
        None
    };
    row.filter(|r| user.may_manage(r))
        .ok_or_else(|| HttpError::not_found(format!("you have no stream {name:?}")))
}

/// The caller's streams (admins: `?all=true` for every stream).
#[utoipa::path(
    get, path = "/api/v1/streams", tag = "streams",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Streams by name", body = StreamList),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`all` needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_streams(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StreamList>, HttpError> {
    let q = super::query(q)?;
    let rows = if q.all == Some(true) {
        if !user.is_admin() {
            return Err(HttpError::forbidden("all=true needs the admin role"));
        }
        state.db.list_streams().await?
    } else {
        state.db.streams_of(user.user.id).await?
    };
    Ok(Json(StreamList {
        streams: rows.iter().map(|r| to_api(&state, r)).collect(),
    }))
}

/// Create a stream. Its key is in the answer, once.
#[utoipa::path(
    post, path = "/api/v1/streams", tag = "streams",
    security(("bearer" = [])),
    request_body = NewStream,
    responses(
        (status = 201, description = "Created; the key is shown only now", body = StreamKey),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The account has as many streams as it may", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_stream(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(user): Authenticated,
    ApiJson(body): ApiJson<NewStream>,
) -> Result<Response, HttpError> {
    validate::stream_name("name", &body.name)?;
    // Admins have no limit. The count and the insert are one transaction: parallel requests cannot pass it.
    let limit = (!user.is_admin()).then(|| i64::from(state.config.auth.max_streams_per_user));
    let visibility = body.visibility.unwrap_or(Visibility::Public);
    let (row, key) = state
        .db
        .create_owned_stream_within(&body.name, Some(user.user.id), visibility, limit)
        .await?;
    state
        .db
        .audit(
            user.audit(actions::STREAM_CREATED, ip)
                .target(format!("stream:{}", row.name))
                .detail("visibility", visibility.as_str()),
        )
        .await?;
    let stream = to_api(&state, &row);
    let mut response = (StatusCode::CREATED, Json(StreamKey { stream, key })).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// One of the caller's streams.
#[utoipa::path(
    get, path = "/api/v1/streams/{name}", tag = "streams",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The stream", body = Stream),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream of the caller", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_stream(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Stream>, HttpError> {
    let row = managed(&state, &user, &name).await?;
    Ok(Json(to_api(&state, &row)))
}

/// Rename a stream or change who may watch it. Turning a stream private ends its current viewers and the recording
/// of its live broadcast (which keeps only what was recorded while it was public).
#[utoipa::path(
    patch, path = "/api/v1/streams/{name}", tag = "streams",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Stream name")),
    request_body = StreamUpdate,
    responses(
        (status = 200, description = "The changed stream", body = Stream),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name is taken, or the stream has sessions (renaming)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_stream(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(user): Authenticated,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<StreamUpdate>,
) -> Result<Json<Stream>, HttpError> {
    let row = managed(&state, &user, &name).await?;
    if let Some(new_name) = body.name.as_deref() {
        validate::stream_name("name", new_name)?;
    }
    if let Some(new_name) = body.name.as_deref().filter(|n| *n != row.name) {
        if state.sfu.has_sessions(&row.name) {
            return Err(HttpError::new(
                StatusCode::CONFLICT,
                "the stream has a publisher or viewers; stop publishing before renaming it",
            ));
        }
        state.db.rename_stream(row.id, new_name).await?;
        state
            .db
            .audit(
                user.audit(actions::STREAM_RENAMED, ip)
                    .target(format!("stream:{new_name}"))
                    .detail("from", &row.name),
            )
            .await?;
    }
    let current_name = body.name.clone().unwrap_or_else(|| row.name.clone());
    if let Some(visibility) = body.visibility.filter(|v| *v != row.visibility) {
        state
            .db
            .set_stream_visibility(&current_name, visibility)
            .await?;
        if visibility == Visibility::Private {
            state.sfu.end_sessions_of(
                &current_name,
                Some(SessionRole::Viewer),
                "the stream became private",
            );
            // The live broadcast's recording ends too: from this answer on nothing more of it is stored in IPFS,
            // announced or queued for Arweave (a private stream is never recorded).
            state.sfu.stream_turned_private(&current_name).await;
        }
        state
            .db
            .audit(
                user.audit(actions::STREAM_VISIBILITY, ip)
                    .target(format!("stream:{current_name}"))
                    .detail("from", row.visibility.as_str())
                    .detail("to", visibility.as_str()),
            )
            .await?;
    }
    let row = state
        .db
        .stream_by_id(row.id)
        .await?
        .ok_or_else(|| HttpError::not_found("the stream was deleted meanwhile"))?;
    Ok(Json(to_api(&state, &row)))
}

/// Delete a stream: its sessions end, its key stops working, its name is free again. Its broadcasts stay
/// archived.
#[utoipa::path(
    delete, path = "/api/v1/streams/{name}", tag = "streams",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream of the caller", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_stream(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(user): Authenticated,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, HttpError> {
    let row = managed(&state, &user, &name).await?;
    state.db.delete_stream(row.id).await?;
    state
        .sfu
        .end_sessions_of(&row.name, None, "the stream was deleted");
    state
        .db
        .audit(
            user.audit(actions::STREAM_DELETED, ip)
                .target(format!("stream:{}", row.name))
                .detail("stream_id", row.id),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Make a new stream key. The old key stops working at once, and a publisher live with it is disconnected.
#[utoipa::path(
    post, path = "/api/v1/streams/{name}/key", tag = "streams",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The new key, shown only now", body = StreamKey),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream of the caller", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(user): Authenticated,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, HttpError> {
    let row = managed(&state, &user, &name).await?;
    let key = state.db.rotate_stream_key(&row.name).await?;
    let ended = state.sfu.end_sessions_of(
        &row.name,
        Some(SessionRole::Publisher),
        "the stream key was rotated",
    );
    state
        .db
        .audit(
            user.audit(actions::STREAM_KEY_ROTATED, ip)
                .target(format!("stream:{}", row.name))
                .detail("publishers_ended", ended),
        )
        .await?;
    let stream = to_api(&state, &row);
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(StreamKey { stream, key }),
    )
        .into_response())
}

/// Make a viewer token for the stream (what a private stream's viewers need; works for any visibility).
#[utoipa::path(
    post, path = "/api/v1/streams/{name}/viewer-tokens", tag = "streams",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Stream name")),
    request_body = ViewerTokenRequest,
    responses(
        (status = 201, description = "The token", body = ViewerToken),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The stream's owner is a disabled account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_viewer_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(user): Authenticated,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<ViewerTokenRequest>,
) -> Result<Response, HttpError> {
    let row = managed(&state, &user, &name).await?;
    if row.owner_disabled() {
        return Err(HttpError::forbidden(DISABLED_OWNER));
    }
    let (token, expires_at) = state
        .auth
        .viewer_token(&row, &user.user, body.ttl_seconds)?;
    state
        .db
        .audit(
            user.audit(actions::VIEWER_TOKEN_ISSUED, ip)
                .target(format!("stream:{}", row.name))
                .detail("expires_at", expires_at),
        )
        .await?;
    let watch_url = format!(
        "{}/watch/{}#token={token}",
        state.config.public_url(),
        row.name
    );
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(ViewerToken {
            token,
            expires_at,
            watch_url,
        }),
    )
        .into_response())
}

/// Revoke every viewer token of the stream; viewers watching with one are disconnected.
#[utoipa::path(
    delete, path = "/api/v1/streams/{name}/viewer-tokens", tag = "streams",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 204, description = "Every viewer token of the stream is revoked"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream of the caller", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_viewer_tokens(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(user): Authenticated,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, HttpError> {
    let row = managed(&state, &user, &name).await?;
    let version = state.db.bump_viewer_token_version(row.id).await?;
    if row.visibility == Visibility::Private {
        state.sfu.end_sessions_of(
            &row.name,
            Some(SessionRole::Viewer),
            "viewer tokens revoked",
        );
    }
    state
        .db
        .audit(
            user.audit(actions::VIEWER_TOKENS_REVOKED, ip)
                .target(format!("stream:{}", row.name))
                .detail("version", version),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
        (status = 401, description = "A bearer token was given and is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream (or a private one of someone else)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_broadcasts(
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
    let row = if crate::db::streams::valid_name(&name) {
        state.db.find_stream(&name).await?
    } else {
        None
    };
    let row = row
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
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A bearer token was given and is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such broadcast (or one of someone else's private stream)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_chunks(
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

/// Public streams that are live now (unlisted and private ones are never listed).
#[utoipa::path(
    get, path = "/api/v1/live", tag = "live",
    responses((status = 200, description = "Live public streams by name", body = LiveList))
)]
pub async fn live(State(state): State<AppState>) -> Result<Json<LiveList>, HttpError> {
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
