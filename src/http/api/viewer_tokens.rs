//! `/api/v1/streams/{name}/viewer-tokens`: viewer tokens (a JWT letting its holder watch one stream until it
//! expires: what a private stream's viewers need) made for a stream its caller manages, and all of a stream's
//! revoked at once.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::responses::{JsonBody, NoSuchStream, Unauthenticated};
use super::streams::managed;
use super::{ApiJson, ApiPath, Authenticated};
use crate::db::audit::actions;
use crate::db::streams::Visibility;
use crate::http::AppState;
use crate::http::error::{HttpError, Problem};
use crate::http::security::ClientIp;
use crate::sfu::session::SessionRole;

/// Why a disabled account's streams get no viewer tokens.
const DISABLED_OWNER: &str =
    "the account owning this stream is disabled: its streams get no viewer tokens while it is";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_viewer_token, revoke_viewer_tokens))
}

/// A viewer token request.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ViewerTokenRequest {
    /// Lifetime in seconds (default and maximum from the server's configuration).
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
}

/// A viewer token: a JWT letting its holder watch one private stream until it expires.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ViewerToken {
    /// Send as `Authorization: Bearer` to WHEP.
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The watch page with the token in its fragment (not sent to servers, not in Referer headers).
    pub watch_url: String,
}

/// Make a viewer token for the stream (what a private stream's viewers need; works for any visibility).
#[utoipa::path(
    post, path = "/api/v1/streams/{name}/viewer-tokens", tag = "streams",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Stream name")),
    request_body = ViewerTokenRequest,
    responses(
        (status = 201, description = "The token", body = ViewerToken),
        JsonBody,
        Unauthenticated,
        (status = 403, description = "The stream's owner is a disabled account", body = Problem, content_type = "application/problem+json"),
        NoSuchStream,
    )
)]
pub(crate) async fn create_viewer_token(
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
        Unauthenticated,
        NoSuchStream,
    )
)]
pub(crate) async fn revoke_viewer_tokens(
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
