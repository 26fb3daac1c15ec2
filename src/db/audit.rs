//! The audit log: who did what, when, from which address, with what outcome. Every entry is a row of `audit_log`
//! AND a structured log line (target `zipiq::audit`), so it reaches both the database and the log collector.
//!
//! Other modules record with [`Db::audit`] (or [`insert`] inside their own transaction, when the entry must
//! commit with the change it describes). Entries never hold secrets: no passwords, keys or tokens, only ids.

use serde::Serialize;
use sqlx::Row;

use super::{Db, DbError, now_ms};

/// Well-known actions (other modules may add their own, such as `wallet.added`, in the same dotted style).
pub mod actions {
    pub(crate) const SIGNUP: &str = "user.signup";
    pub(crate) const EMAIL_VERIFIED: &str = "user.email_verified";
    pub(crate) const USER_CREATED: &str = "user.created";
    pub(crate) const LOGIN: &str = "login";
    pub(crate) const LOGOUT: &str = "logout";
    pub(crate) const REFRESH_TOKEN_REUSE: &str = "refresh_token.reuse";
    pub(crate) const PASSWORD_RESET_REQUESTED: &str = "password.reset_requested";
    pub(crate) const PASSWORD_RESET: &str = "password.reset";
    pub(crate) const PASSWORD_CHANGED: &str = "password.changed";
    pub(crate) const JWT_KEY_ROTATED: &str = "jwt_key.rotated";
    pub(crate) const STREAM_CREATED: &str = "stream.created";
    pub(crate) const STREAM_RENAMED: &str = "stream.renamed";
    pub(crate) const STREAM_DELETED: &str = "stream.deleted";
    pub(crate) const STREAM_VISIBILITY: &str = "stream.visibility_changed";
    pub(crate) const STREAM_KEY_ROTATED: &str = "stream.key_rotated";
    pub(crate) const STREAM_KEY_REVOKED: &str = "stream.key_revoked";
    pub(crate) const VIEWER_TOKEN_ISSUED: &str = "viewer_token.issued";
    pub(crate) const VIEWER_TOKENS_REVOKED: &str = "viewer_token.revoked_all";
    pub(crate) const ADMIN_ROLE_CHANGED: &str = "admin.user_role_changed";
    pub(crate) const ADMIN_USER_DISABLED: &str = "admin.user_disabled";
    pub(crate) const ADMIN_USER_ENABLED: &str = "admin.user_enabled";
}

/// Whether the action happened or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action happened.
    Success,
    /// The action was refused or failed.
    Failure,
}

impl Outcome {
    /// The stored form: `success` or `failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One entry to record. Build it with [`AuditEvent::new`] and the builder methods.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// The action, dotted (see [`actions`]).
    pub action: String,
    /// Whether it happened or was refused.
    pub outcome: Outcome,
    /// The acting user's id, if a user acted.
    pub actor_id: Option<i64>,
    /// Who acted: the user's email, or "anonymous", "cli", "system".
    pub actor: String,
    /// The client address the request came from, if any.
    pub ip: Option<String>,
    /// What was acted on, as `kind:id` (`user:7`, `stream:live`).
    pub target: Option<String>,
    /// Further details (never a secret).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    /// A successful `action` by nobody in particular ("anonymous").
    pub fn new(action: &str) -> AuditEvent {
        AuditEvent {
            action: action.to_owned(),
            outcome: Outcome::Success,
            actor_id: None,
            actor: "anonymous".to_owned(),
            ip: None,
            target: None,
            details: serde_json::Map::new(),
        }
    }

    /// Marks the action as refused or failed.
    pub fn failed(mut self) -> AuditEvent {
        self.outcome = Outcome::Failure;
        self
    }

    /// The logged-in user who acted.
    pub fn by_user(mut self, id: i64, email: &str) -> AuditEvent {
        self.actor_id = Some(id);
        self.actor = email.to_owned();
        self
    }

    /// A non-user actor: "cli", "system".
    pub fn by(mut self, actor: &str) -> AuditEvent {
        self.actor_id = None;
        self.actor = actor.to_owned();
        self
    }

    /// The client address the request came from.
    pub fn from_ip(mut self, ip: impl ToString) -> AuditEvent {
        self.ip = Some(ip.to_string());
        self
    }

    /// What was acted on, as `kind:id` (`user:7`, `stream:live`, `wallet:abc`).
    pub fn target(mut self, target: impl Into<String>) -> AuditEvent {
        self.target = Some(target.into());
        self
    }

    /// One more detail (never a secret).
    pub fn detail(mut self, key: &str, value: impl Serialize) -> AuditEvent {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.details.insert(key.to_owned(), value);
        self
    }

    /// Writes the structured log line of this entry.
    fn log(&self) {
        let details = serde_json::Value::Object(self.details.clone()).to_string();
        tracing::info!(
            target: "zipiq::audit",
            action = %self.action,
            outcome = self.outcome.as_str(),
            actor = %self.actor,
            actor_id = self.actor_id,
            ip = self.ip.as_deref().unwrap_or("-"),
            target = self.target.as_deref().unwrap_or("-"),
            details = %details,
            "audit"
        );
    }
}

/// One recorded entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// Row id, increasing with time.
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// The acting user's id, if a user acted.
    pub actor_id: Option<i64>,
    /// Who acted: the user's email, or "anonymous", "cli", "system".
    pub actor: String,
    /// The client address the request came from, if any.
    pub ip: Option<String>,
    /// The action, dotted (see [`actions`]).
    pub action: String,
    /// Whether it happened or was refused.
    pub outcome: Outcome,
    /// What was acted on, as `kind:id`.
    pub target: Option<String>,
    /// Further details, a JSON object.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this action.
    pub action: Option<String>,
    /// Only this actor (user id).
    pub actor_id: Option<i64>,
    /// Only entries with an id below this (paging backwards).
    pub before_id: Option<i64>,
    /// At most this many (capped at 1000).
    pub limit: i64,
}

/// Records `event` through `executor` (a pool or an open transaction) and writes its log line.
pub async fn insert<'c, E>(executor: E, event: &AuditEvent) -> Result<i64, DbError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    event.log();
    let details = serde_json::Value::Object(event.details.clone()).to_string();
    let row = sqlx::query(
        "INSERT INTO audit_log (at, actor_id, actor, ip, action, outcome, target, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(now_ms())
    .bind(event.actor_id)
    .bind(&event.actor)
    .bind(event.ip.as_deref())
    .bind(&event.action)
    .bind(event.outcome.as_str())
    .bind(event.target.as_deref())
    .bind(details)
    .fetch_one(executor)
    .await?;
    Ok(row.try_get("id")?)
}

fn row_to_audit(row: &sqlx::any::AnyRow) -> Result<AuditRow, DbError> {
    let outcome: String = row.try_get("outcome")?;
    let details: String = row.try_get("details")?;
    Ok(AuditRow {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor_id: row.try_get("actor_id")?,
        actor: row.try_get("actor")?,
        ip: row.try_get("ip")?,
        action: row.try_get("action")?,
        outcome: if outcome == "success" {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        target: row.try_get("target")?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    })
}

impl Db {
    /// Records an audit entry (and its log line). The log line is written even when the database write fails.
    pub async fn audit(&self, event: AuditEvent) -> Result<i64, DbError> {
        insert(self.pool(), &event).await.inspect_err(|e| {
            tracing::error!(error = %e, action = %event.action, "audit entry not stored");
        })
    }

    /// Reads audit entries, newest first.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, DbError> {
        let limit = query.limit.clamp(1, 1000);
        // NULL parameters switch a filter off, so one static query serves every combination.
        let rows = sqlx::query(
            "SELECT id, at, actor_id, actor, ip, action, outcome, target, details FROM audit_log \
             WHERE (CAST($1 AS TEXT) IS NULL OR action = $1) AND (CAST($2 AS BIGINT) IS NULL OR actor_id = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(query.action.as_deref())
        .bind(query.actor_id)
        .bind(query.before_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_audit).collect()
    }
}
