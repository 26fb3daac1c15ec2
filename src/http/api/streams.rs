//! `/api/v1/streams`, `/api/v1/streams/{name}` and `/api/v1/streams/{name}/key`: a user's streams (create, list,
//! rename, visibility, delete, rotate the key). Owners manage their streams, admins every stream. A rotated key ends
//! the live publisher at once (it must come back with the new key); a stream turned private ends its viewers (they
//! come back with viewer tokens) and its broadcast's recording.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::responses::{InvalidQuery, JsonBody, NoSuchStream, Unauthenticated};
use super::{ApiJson, ApiPath, Authenticated};
use crate::auth::CurrentUser;
use crate::auth::validate;
use crate::db::audit::actions;
use crate::db::streams::{StreamRow, Visibility};
use crate::http::AppState;
use crate::http::error::{HttpError, Problem};
use crate::http::security::ClientIp;
use crate::sfu::session::SessionRole;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_streams, create_stream))
        .routes(routes!(get_stream, update_stream, delete_stream))
        .routes(routes!(rotate_key))
}

/// A stream as its owner sees it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Stream {
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
pub(crate) struct StreamList {
    pub streams: Vec<Stream>,
}

/// A new stream.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewStream {
    /// 1-64 characters a-z, 0-9, - and _, starting with a letter or digit.
    #[schema(example = "my-show", pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: String,
    /// Who may watch (default: public).
    pub visibility: Option<Visibility>,
}

/// Changes to a stream (each optional).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamUpdate {
    /// A new name (refused while the stream has sessions).
    #[schema(example = "my-show", pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
}

/// A new stream key: shown once, never stored (only its hash is).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct StreamKey {
    pub stream: Stream,
    /// The key: OBS's "Bearer Token" for WHIP.
    pub key: String,
}

/// Query of the stream list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Every stream, not only the caller's (admins only).
    pub all: Option<bool>,
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

/// The stream called `name`, if any. A name no stream can have (a path segment is outside input) is not looked up.
pub(super) async fn named(state: &AppState, name: &str) -> Result<Option<StreamRow>, HttpError> {
    if crate::db::streams::valid_name(name) {
        Ok(state.db.find_stream(name).await?)
    } else {
        Ok(None)
    }
}

/// The stream `name` if the caller may manage it; 404 otherwise (another user's stream is not revealed).
pub(super) async fn managed(
    state: &AppState,
    user: &CurrentUser,
    name: &str,
) -> Result<StreamRow, HttpError> {
    named(state, name)
        .await?
        .filter(|r| user.may_manage(r))
        .ok_or_else(|| HttpError::not_found(format!("you have no stream {name:?}")))
}

/// The caller's streams (admins: `?all=true` for every stream).
#[utoipa::path(
    get, path = "/api/v1/streams", tag = "streams",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Streams by name", body = StreamList),
        Unauthenticated,
        (status = 403, description = "`all` needs the admin role", body = Problem, content_type = "application/problem+json"),
        InvalidQuery,
    )
)]
pub(crate) async fn list_streams(
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
        JsonBody,
        Unauthenticated,
        (status = 403, description = "The account has as many streams as it may", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_stream(
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
        Unauthenticated,
        NoSuchStream,
    )
)]
pub(crate) async fn get_stream(
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
        JsonBody,
        Unauthenticated,
        NoSuchStream,
        (status = 409, description = "The new name is taken, or the stream has sessions (renaming)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn update_stream(
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
        Unauthenticated,
        NoSuchStream,
    )
)]
pub(crate) async fn delete_stream(
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
        Unauthenticated,
        NoSuchStream,
    )
)]
pub(crate) async fn rotate_key(
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
