//! `/api/v1/auth/*` and `/api/v1/me`: the account flows of [`crate::auth::accounts`] over HTTP. Sign-up and
//! reset answer 202 whatever the address; login failures answer 401 "wrong email or password" whichever was wrong.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::responses::{JsonBody, PasswordChecksBusy, SpentLink, Unauthenticated};
use super::{Accepted, ApiJson, Authenticated, accepted};
use crate::auth::TokenPair;
use crate::db::users::{Role, UserRow};
use crate::http::AppState;
use crate::http::error::{HttpError, Problem};
use crate::http::security::ClientIp;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(verify))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(request_reset))
        .routes(routes!(confirm_reset))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

// Lengths, patterns and limits that depend on the configuration or on shared rules are set on these schemas at
// start (see `super::constrain`), so the document states exactly what the validation does.

/// A new account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupRequest {
    /// The email address (stored lowercased).
    #[schema(example = "ann@example.org")]
    pub email: String,
    /// At least `auth.password_min_length` characters.
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

/// Email and password.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// The account's email address (compared without case).
    #[schema(example = "ann@example.org")]
    pub email: String,
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

/// The token of a verification link.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyRequest {
    /// The `token` of the link's fragment (`#token=zqv_...`).
    pub token: String,
}

/// A refresh token to exchange.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    pub refresh_token: String,
}

/// An email address asking for a reset link.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetRequest {
    #[schema(example = "ann@example.org")]
    pub email: String,
}

/// A reset link's token and the new password.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetConfirm {
    /// The `token` of the link's fragment (`#token=zqp_...`).
    pub token: String,
    pub password: String,
}

/// The current and the new password.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// An account as its owner and admins see it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct User {
    pub id: i64,
    pub email: String,
    pub role: Role,
    /// Whether the email address was confirmed.
    pub email_verified: bool,
    pub disabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl From<&UserRow> for User {
    fn from(u: &UserRow) -> User {
        User {
            id: u.id,
            email: u.email.clone(),
            role: u.role,
            email_verified: u.is_verified(),
            disabled: u.is_disabled(),
            created_at: u.created_at,
        }
    }
}

fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn tokens(pair: TokenPair) -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(pair),
    )
        .into_response()
}

/// Sign up. A verification link is mailed; the account can log in once it is followed. The answer is the same
/// whether or not the address already has an account (its owner gets a mail saying so).
#[utoipa::path(
    post, path = "/api/v1/auth/signup", tag = "auth",
    request_body = SignupRequest,
    responses(
        (status = 202, description = "Check the mailbox for the verification link", body = Accepted),
        JsonBody,
        (status = 403, description = "Sign-up is closed", body = Problem, content_type = "application/problem+json"),
        // Replaces the 422 of JsonBody: answers are keyed by status, and the later one is kept.
        (status = 422, description = "Invalid field (named in `field`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many sign-ups from this address or for this email", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        PasswordChecksBusy,
    )
)]
pub(crate) async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<SignupRequest>,
) -> Result<Response, HttpError> {
    state
        .auth
        .signup(&state.db, &body.email, &body.password, ip)
        .await?;
    Ok(accepted(
        "if the address can be used, a mail with a confirmation link is on its way",
    ))
}

/// Confirm an email address with the token of the verification link.
#[utoipa::path(
    post, path = "/api/v1/auth/verify", tag = "auth",
    request_body = VerifyRequest,
    responses(
        (status = 204, description = "The address is confirmed; the account can log in"),
        JsonBody,
        SpentLink,
    )
)]
pub(crate) async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<StatusCode, HttpError> {
    state.auth.verify_email(&state.db, &body.token, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Log in: a short-lived access token (JWT) and a refresh token.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        JsonBody,
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Email not confirmed yet (a new link is mailed), or account disabled", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address or for this account", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        PasswordChecksBusy,
    )
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, HttpError> {
    let pair = state
        .auth
        .login(
            &state.db,
            &body.email,
            &body.password,
            ip,
            user_agent(&headers),
        )
        .await?;
    Ok(tokens(pair))
}

/// Exchange a refresh token for a new pair. Each refresh token works once; presenting a used one again ends its
/// whole login session (every token of it) and is audit-logged.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the presented refresh token is used up", body = TokenPair),
        JsonBody,
        (status = 401, description = "Unknown, expired, used or revoked refresh token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, HttpError> {
    let pair = state
        .auth
        .refresh(&state.db, &body.refresh_token, ip)
        .await?;
    Ok(tokens(pair))
}

/// Log out: the login session of the access token ends (its refresh and access tokens stop working at once).
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        Unauthenticated,
    )
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(user): Authenticated,
) -> Result<StatusCode, HttpError> {
    state.auth.logout(&state.db, &user, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ask for a password-reset link. The answer is the same whether or not the address has an account.
#[utoipa::path(
    post, path = "/api/v1/auth/password-reset", tag = "auth",
    request_body = ResetRequest,
    responses(
        (status = 202, description = "If the address has an account, a reset link is mailed", body = Accepted),
        JsonBody,
        (status = 429, description = "Too many requests from this address or for this email", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn request_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<Response, HttpError> {
    state.auth.request_reset(&state.db, &body.email, ip).await?;
    Ok(accepted(
        "if the address has an account, a mail with a reset link is on its way",
    ))
}

/// Set a new password with the token of a reset link. Every login session of the account ends.
#[utoipa::path(
    post, path = "/api/v1/auth/password-reset/confirm", tag = "auth",
    request_body = ResetConfirm,
    responses(
        (status = 204, description = "The password is changed; log in with it"),
        JsonBody,
        SpentLink,
        (status = 429, description = "Too many attempts from this address", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        PasswordChecksBusy,
    )
)]
pub(crate) async fn confirm_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> Result<StatusCode, HttpError> {
    state
        .auth
        .reset_password(&state.db, &body.token, &body.password, ip)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The logged-in account.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = User),
        Unauthenticated,
    )
)]
pub(crate) async fn me(Authenticated(user): Authenticated) -> Json<User> {
    Json(User::from(&user.user))
}

/// Change the password. Every refresh token of the account is revoked (every session ends, this one too); the
/// answer is a pair for a new session.
#[utoipa::path(
    post, path = "/api/v1/me/password", tag = "auth",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed; use the new pair", body = TokenPair),
        JsonBody,
        Unauthenticated,
        (status = 403, description = "The current password is wrong (`field` = current_password)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        PasswordChecksBusy,
    )
)]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Authenticated(user): Authenticated,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, HttpError> {
    let pair = state
        .auth
        .change_password(
            &state.db,
            &user,
            &body.current_password,
            &body.new_password,
            ip,
            user_agent(&headers),
        )
        .await?;
    Ok(tokens(pair))
}
