//! Users, the single-use tokens of verification and reset mails, and login sessions with their rotating refresh
//! tokens. Every change that touches several rows (consume a token and set a password, rotate a refresh token,
//! revoke sessions) is one write transaction ([`Db::begin_write`]: on SQLite a transaction that reads first and
//! writes later would fail with "database is locked" when another one wrote in between), and so is every check
//! that guards a write (the last active admin). Only hashes of tokens are stored or looked up here.

use serde::Serialize;
use sqlx::Row;

use super::{Db, DbError, DbKind, now_ms};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: users, every stream, the audit log, wallets and the archive queue.
    Admin,
    /// Own streams only.
    Streamer,
}

impl Role {
    /// The stored form: `admin` or `streamer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Streamer => "streamer",
        }
    }

    /// The role of a stored form; None for an unknown one.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "streamer" => Some(Role::Streamer),
            _ => None,
        }
    }
}

/// One row of `users`.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Row id.
    pub id: i64,
    /// The account's email, normalised (lowercase, NFKC).
    pub email: String,
    /// The password's Argon2id hash (PHC string).
    pub password_hash: String,
    /// Admin or streamer.
    pub role: Role,
    /// When the email was verified, in Unix milliseconds; None: not yet.
    pub email_verified_at: Option<i64>,
    /// When the account was disabled, in Unix milliseconds; None: enabled.
    pub disabled_at: Option<i64>,
    /// When it was created, in Unix milliseconds.
    pub created_at: i64,
}

impl UserRow {
    /// Whether the email is verified.
    pub fn is_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }

    /// Whether the account is disabled.
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

/// What an email token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Email verification.
    Verify,
    /// Password reset.
    Reset,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::Verify => "verify",
            TokenPurpose::Reset => "reset",
        }
    }
}

/// The result of presenting a refresh token.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// The token was current: it is now used, and the new one (whose hash was given) replaces it.
    Rotated {
        /// The session the token belongs to.
        session_id: i64,
        /// Its user.
        user: UserRow,
    },
    /// The token had already been exchanged: someone replays it. Its whole session is now revoked.
    Reused {
        /// The session, now revoked.
        session_id: i64,
        /// Its user.
        user: UserRow,
    },
    /// Unknown, expired, or of a revoked session.
    Refused,
}

/// A user before and after [`Db::change_user`].
#[derive(Debug, Clone)]
pub struct UserChange {
    /// As it was.
    pub before: UserRow,
    /// As it is now.
    pub after: UserRow,
}

/// A login session as the access-token check sees it.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// The session's user.
    pub user: UserRow,
    /// Whether the session was revoked.
    pub revoked: bool,
}

macro_rules! user_columns {
    () => {
        "id, email, password_hash, role, email_verified_at, disabled_at, created_at"
    };
}

fn row_to_user(row: &sqlx::any::AnyRow) -> Result<UserRow, DbError> {
    let role: String = row.try_get("role")?;
    Ok(UserRow {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        role: Role::parse(&role).unwrap_or(Role::Streamer),
        email_verified_at: row.try_get("email_verified_at")?,
        disabled_at: row.try_get("disabled_at")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The user `id` as `tx` sees it (its own changes included).
async fn user_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: i64) -> Result<UserRow, DbError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    row_to_user(&row)
}

/// Revokes every open session of `user_id` inside `tx`; returns how many.
async fn revoke_all_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: i64,
    reason: &str,
    now: i64,
) -> Result<u64, DbError> {
    let done = sqlx::query(
        "UPDATE login_sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Marks a token of `purpose` used, if it is unused and unexpired; returns its user id.
async fn consume_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    purpose: TokenPurpose,
    token_hash: &str,
    now: i64,
) -> Result<Option<i64>, DbError> {
    let row = sqlx::query(
        "SELECT id, user_id FROM email_tokens \
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose.as_str())
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let id: i64 = row.try_get("id")?;
    let user_id: i64 = row.try_get("user_id")?;
    // The condition on used_at makes the token single-use even when two requests race.
    let done =
        sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    Ok((done.rows_affected() == 1).then_some(user_id))
}

impl Db {
    /// Creates a user. An existing email is a `Conflict`.
    pub async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        role: Role,
        verified: bool,
    ) -> Result<UserRow, DbError> {
        let now = now_ms();
        let result = sqlx::query(concat!(
            "INSERT INTO users (email, password_hash, role, email_verified_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING ",
            user_columns!()
        ))
        .bind(email)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(verified.then_some(now))
        .bind(now)
        .fetch_one(self.pool())
        .await;
        match result {
            Ok(row) => row_to_user(&row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(DbError::Conflict(
                "an account with this email already exists".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The user with this (normalised) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(row_to_user).transpose()
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(row_to_user).transpose()
    }

    /// Users by id, `limit` of them after id `after` (paging).
    pub async fn list_users(&self, after: i64, limit: i64) -> Result<Vec<UserRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_user).collect()
    }

    /// How many users have `role` and are not disabled.
    pub async fn count_active_with_role(&self, role: Role) -> Result<i64, DbError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = $1 AND disabled_at IS NULL")
                .bind(role.as_str())
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Sets a user's role.
    pub async fn set_user_role(&self, id: i64, role: Role) -> Result<(), DbError> {
        let done = sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3")
            .bind(role.as_str())
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!("no user {id}")));
        }
        Ok(())
    }

    /// Disables (ending every session of) or enables a user.
    pub async fn set_user_disabled(&self, id: i64, disabled: bool) -> Result<(), DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE users SET disabled_at = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled.then_some(now))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(DbError::NotFound(format!("no user {id}")));
        }
        if disabled {
            revoke_all_in(&mut tx, id, "account disabled", now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets a user's role and/or disables (ending every session of) or enables them, in one write transaction.
    /// With `keep_an_admin`, a change that would leave no active admin is refused with [`DbError::Conflict`]: the
    /// active admins are counted in the same transaction as the write (their rows locked on PostgreSQL, the write
    /// lock held on SQLite), so two admins demoting each other at once cannot both succeed.
    pub async fn change_user(
        &self,
        id: i64,
        role: Option<Role>,
        disabled: Option<bool>,
        keep_an_admin: bool,
    ) -> Result<UserChange, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // The target and every active admin, locked in id order (one statement: no lock-order deadlock).
        let query = match self.kind() {
            DbKind::Postgres => concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1 OR (role = 'admin' AND disabled_at IS NULL) ORDER BY id FOR UPDATE"
            ),
            DbKind::Sqlite => concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1 OR (role = 'admin' AND disabled_at IS NULL) ORDER BY id"
            ),
        };
        let rows = sqlx::query(query).bind(id).fetch_all(&mut *tx).await?;
        let rows = rows
            .iter()
            .map(row_to_user)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(before) = rows.iter().find(|u| u.id == id).cloned() else {
            tx.rollback().await?;
            return Err(DbError::NotFound(format!("no user {id}")));
        };
        let active_admin = |role: Role, disabled: bool| role == Role::Admin && !disabled;
        let new_role = role.unwrap_or(before.role);
        let new_disabled = disabled.unwrap_or(before.is_disabled());
        let admins = rows
            .iter()
            .filter(|u| active_admin(u.role, u.is_disabled()))
            .count();
        if keep_an_admin
            && active_admin(before.role, before.is_disabled())
            && !active_admin(new_role, new_disabled)
            && admins <= 1
        {
            tx.rollback().await?;
            return Err(DbError::Conflict(
                "this is the last active admin; make another admin first".into(),
            ));
        }
        if new_role != before.role {
            sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3")
                .bind(new_role.as_str())
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if new_disabled != before.is_disabled() {
            sqlx::query("UPDATE users SET disabled_at = $1, updated_at = $2 WHERE id = $3")
                .bind(new_disabled.then_some(now))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if new_disabled {
                revoke_all_in(&mut tx, id, "account disabled", now).await?;
            }
        }
        let after = user_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(UserChange { before, after })
    }

    /// Replaces a password hash without ending sessions (a re-hash with new parameters at login).
    pub async fn update_password_hash(&self, id: i64, hash: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sets a new password and revokes every session of the user, in one transaction. Returns how many
    /// sessions were revoked.
    pub async fn change_password(&self, id: i64, hash: &str) -> Result<u64, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let revoked = revoke_all_in(&mut tx, id, "password changed", now).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Stores the hash of a new verification or reset token of `user_id`, valid until `expires_at` (unix ms).
    /// Earlier unused tokens of the same purpose stop working: only the newest link works.
    pub async fn create_email_token(
        &self,
        user_id: i64,
        purpose: TokenPurpose,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .bind(purpose.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO email_tokens (user_id, purpose, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses a verification token: marks the user's email verified. None when the token is unknown, used or
    /// expired.
    pub async fn verify_email_with(&self, token_hash: &str) -> Result<Option<UserRow>, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let Some(user_id) = consume_in(&mut tx, TokenPurpose::Verify, token_hash, now).await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query(
            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1), updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.user_by_id(user_id).await
    }

    /// The account a live (unused, unexpired) password-reset token belongs to, without using it up.
    pub async fn reset_token_user(&self, token_hash: &str) -> Result<Option<i64>, DbError> {
        let row = sqlx::query(
            "SELECT user_id FROM email_tokens \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(TokenPurpose::Reset.as_str())
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("user_id")?),
            None => None,
        })
    }

    /// Uses a reset token: sets the new password hash, marks the email verified (the mail reached its owner),
    /// and revokes every session, in one transaction. None when the token is unknown, used or expired.
    pub async fn reset_password_with(
        &self,
        token_hash: &str,
        new_hash: &str,
    ) -> Result<Option<UserRow>, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let Some(user_id) = consume_in(&mut tx, TokenPurpose::Reset, token_hash, now).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query(
            "UPDATE users SET password_hash = $1, email_verified_at = COALESCE(email_verified_at, $2), \
             updated_at = $2 WHERE id = $3",
        )
        .bind(new_hash)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        revoke_all_in(&mut tx, user_id, "password reset", now).await?;
        tx.commit().await?;
        self.user_by_id(user_id).await
    }

    /// Opens a login session for `user_id` with its first refresh token (by hash). Returns the session id.
    pub async fn create_login_session(
        &self,
        user_id: i64,
        ip: &str,
        user_agent: &str,
        refresh_hash: &str,
        refresh_expires_at: i64,
    ) -> Result<i64, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO login_sessions (user_id, created_at, last_used_at, ip, user_agent) \
             VALUES ($1, $2, $2, $3, $4) RETURNING id",
        )
        .bind(user_id)
        .bind(now)
        .bind(ip)
        .bind(user_agent)
        .fetch_one(&mut *tx)
        .await?;
        let session_id: i64 = row.try_get("id")?;
        sqlx::query(
            "INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(session_id)
        .bind(refresh_hash)
        .bind(now)
        .bind(refresh_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(session_id)
    }

    /// Exchanges the refresh token `old_hash` for `new_hash` (rotation), detecting reuse of a token that was
    /// already exchanged (then its whole session is revoked). One transaction.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: i64,
    ) -> Result<RefreshOutcome, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT t.id AS token_id, t.session_id, t.expires_at, t.used_at, s.revoked_at, s.user_id \
             FROM refresh_tokens t JOIN login_sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(RefreshOutcome::Refused);
        };
        let token_id: i64 = row.try_get("token_id")?;
        let session_id: i64 = row.try_get("session_id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let used_at: Option<i64> = row.try_get("used_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        let user_id: i64 = row.try_get("user_id")?;
        if revoked_at.is_some() {
            tx.rollback().await?;
            return Ok(RefreshOutcome::Refused);
        }
        let claimed = if used_at.is_none() && expires_at > now {
            sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
                .bind(now)
                .bind(token_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1
        } else {
            false
        };
        if !claimed && (used_at.is_some() || expires_at > now) {
            // Already exchanged (before, or by a concurrent request just now): a replay. End the family.
            sqlx::query(
                "UPDATE login_sessions SET revoked_at = $1, revoked_reason = 'refresh token reuse' \
                 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
            let user = user_in(&mut tx, user_id).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused { session_id, user });
        }
        if !claimed {
            // Expired and never used.
            tx.rollback().await?;
            return Ok(RefreshOutcome::Refused);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(session_id)
        .bind(new_hash)
        .bind(now)
        .bind(new_expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE login_sessions SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        let user = user_in(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated { session_id, user })
    }

    /// The session (refresh-token family) that owns refresh token `token_hash`, if any: (session id, user id).
    pub async fn session_of_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(i64, i64)>, DbError> {
        let row = sqlx::query(
            "SELECT s.id, s.user_id FROM refresh_tokens t JOIN login_sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(r) => Ok(Some((r.try_get("id")?, r.try_get("user_id")?))),
            None => Ok(None),
        }
    }

    /// Revokes one session. Returns whether it was open.
    pub async fn revoke_session(&self, session_id: i64, reason: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE login_sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(session_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes every open session of a user. Returns how many.
    pub async fn revoke_sessions_of(&self, user_id: i64, reason: &str) -> Result<u64, DbError> {
        let mut tx = self.begin_write().await?;
        let n = revoke_all_in(&mut tx, user_id, reason, now_ms()).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The state of session `session_id` of user `user_id`, for checking an access token. None when the session
    /// does not exist or belongs to someone else.
    pub async fn session_state(
        &self,
        session_id: i64,
        user_id: i64,
    ) -> Result<Option<SessionState>, DbError> {
        let row = sqlx::query(
            "SELECT u.id, u.email, u.password_hash, u.role, u.email_verified_at, u.disabled_at, u.created_at, \
             s.revoked_at FROM login_sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND u.id = $2",
        )
        .bind(session_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        Ok(Some(SessionState {
            user: row_to_user(&row)?,
            revoked: revoked_at.is_some(),
        }))
    }
}
