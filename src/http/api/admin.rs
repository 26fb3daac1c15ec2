//! `/api/v1/admin/*`: users (list, change role, disable) and the audit log. Admins only; every change is itself
//! audit-logged. An admin cannot demote or disable themselves, nor the last active admin (nobody could undo it
//! over the API). Disabling an account ends its sessions, publishers and viewers at once.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::accounts::User;
use super::responses::{InvalidQuery, JsonBody, NotAdmin, Unauthenticated};
use super::{Admin, ApiJson, ApiPath};
use crate::auth::validate::FieldError;
use crate::db::audit::{AuditQuery, AuditRow, actions};
use crate::db::users::Role;
use crate::http::AppState;
use crate::http::error::{HttpError, Problem};
use crate::http::security::ClientIp;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(update_user))
        .routes(routes!(audit_log))
}

/// Users by id.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct UserList {
    pub users: Vec<User>,
}

/// Paging of the user list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserQuery {
    /// Only users with an id above this.
    pub after: Option<i64>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Changes to a user (each optional).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserUpdate {
    pub role: Option<Role>,
    /// true ends every session of the user, its streams' publishers and viewers, and refuses logins, publishing
    /// and viewer tokens until it is false again.
    pub disabled: Option<bool>,
}

/// Audit entries, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AuditList {
    pub entries: Vec<AuditRow>,
}

/// Filters of the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Only this action (e.g. `login`, `refresh_token.reuse`, `stream.key_rotated`).
    pub action: Option<String>,
    /// Only entries by this user id.
    pub actor_id: Option<i64>,
    /// Only entries older than this entry id (paging).
    pub before: Option<i64>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

fn limit(value: Option<i64>) -> Result<i64, HttpError> {
    let limit = value.unwrap_or(100);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(FieldError::new("limit", "must be between 1 and 1000").into())
    }
}

/// Every user.
#[utoipa::path(
    get, path = "/api/v1/admin/users", tag = "admin",
    security(("bearer" = [])),
    params(UserQuery),
    responses(
        (status = 200, description = "Users by id", body = UserList),
        Unauthenticated,
        NotAdmin,
        InvalidQuery,
    )
)]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    q: Result<Query<UserQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UserList>, HttpError> {
    let q = super::query(q)?;
    let rows = state
        .db
        .list_users(q.after.unwrap_or(0), limit(q.limit)?)
        .await?;
    Ok(Json(UserList {
        users: rows.iter().map(User::from).collect(),
    }))
}

/// Change a user's role or disable them.
#[utoipa::path(
    patch, path = "/api/v1/admin/users/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "User id")),
    request_body = UserUpdate,
    responses(
        (status = 200, description = "The changed user", body = User),
        JsonBody,
        Unauthenticated,
        NotAdmin,
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "That would demote or disable the caller, or leave no active admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UserUpdate>,
) -> Result<Json<User>, HttpError> {
    let not_found = || HttpError::not_found(format!("no user {id:?}"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let demotes = body.role.is_some_and(|r| r != Role::Admin) || body.disabled == Some(true);
    if demotes && id == admin.user.id {
        return Err(HttpError::new(
            axum::http::StatusCode::CONFLICT,
            "an admin cannot demote or disable their own account; another admin can",
        ));
    }
    // One transaction checks that an active admin remains and writes, so two admins demoting each other at once
    // cannot both succeed.
    let change = state
        .db
        .change_user(id, body.role, body.disabled, true)
        .await
        .map_err(|e| match e {
            crate::db::DbError::NotFound(_) => not_found(),
            other => other.into(),
        })?;
    let (before, after) = (&change.before, &change.after);
    if after.role != before.role {
        state
            .db
            .audit(
                admin
                    .audit(actions::ADMIN_ROLE_CHANGED, ip)
                    .target(format!("user:{id}"))
                    .detail("from", before.role.as_str())
                    .detail("to", after.role.as_str()),
            )
            .await?;
    }
    if after.is_disabled() != before.is_disabled() {
        let action = if after.is_disabled() {
            // Its publishers and viewers on this node end now; other nodes' within a check interval.
            let ended =
                crate::sfu::key_watch::end_sessions_of_account(&state.sfu, &state.db, id).await?;
            if ended > 0 {
                tracing::info!(user = id, ended, "sessions of a disabled account ended");
            }
            actions::ADMIN_USER_DISABLED
        } else {
            actions::ADMIN_USER_ENABLED
        };
        state
            .db
            .audit(admin.audit(action, ip).target(format!("user:{id}")))
            .await?;
    }
    Ok(Json(User::from(after)))
}

/// The audit log, newest first.
#[utoipa::path(
    get, path = "/api/v1/admin/audit", tag = "admin",
    security(("bearer" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "Entries, newest first", body = AuditList),
        Unauthenticated,
        NotAdmin,
        InvalidQuery,
    )
)]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditList>, HttpError> {
    let q = super::query(q)?;
    let entries = state
        .db
        .audit_log(&AuditQuery {
            action: q.action,
            actor_id: q.actor_id,
            before_id: q.before,
            limit: limit(q.limit)?,
        })
        .await?;
    Ok(Json(AuditList { entries }))
}
