//! The account flows: sign up, verify the email, log in, refresh (rotation with reuse detection), log out,
//! reset and change the password, check an access token, and make and check viewer tokens.
//!
//! Answers never tell whether an account exists: sign-up and reset answer the same for every address (the mail
//! differs, and only the address's owner reads it), and a failed login takes as long and says the same whether
//! the email or the password was wrong. Every outcome that matters is audit-logged.

use std::net::IpAddr;

use super::jwt::{self, AccessClaims, TokenError, ViewerClaims};
use super::passwords::PasswordError;
use super::rate_limit::{Action, Limited};
use super::validate::{self, FieldError};
use super::{Auth, tokens};
use crate::db::audit::{AuditEvent, actions};
use crate::db::streams::StreamRow;
use crate::db::users::{RefreshOutcome, Role, TokenPurpose, UserRow};
use crate::db::{Db, DbError, now_ms};

/// Why an account request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A request field is invalid (names the field).
    #[error(transparent)]
    Field(#[from] FieldError),
    /// Wrong email or password (one answer for both, so it tells no one which accounts exist).
    #[error("wrong email or password")]
    BadCredentials,
    /// The email is not verified yet; a new confirmation link was sent.
    #[error("confirm your email address first: a new confirmation link was sent to it")]
    Unverified,
    /// The account is disabled.
    #[error("this account is disabled")]
    Disabled,
    /// The current password given for a change is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// Sign-up is turned off on this server.
    #[error("sign-up is closed on this server; ask its admin for an account")]
    SignupClosed,
    #[error(
        "the link is not valid: it was already used, has expired, or was replaced by a newer one"
    )]
    /// A verification or reset link is used, expired or replaced.
    BadLink,
    /// The refresh token is unknown, expired or of a revoked session.
    #[error("the refresh token is not valid; log in again")]
    RefreshRefused,
    /// The access token is missing or not valid (says why).
    #[error("{0}")]
    Unauthenticated(String),
    /// A rate limit was hit; try again after its `retry_after`.
    #[error("too many requests")]
    Limited(Limited),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Too many password hashes are being computed at once.
    #[error("too many password checks at once; try again in a second")]
    Busy,
    /// Something that should not fail did (says what).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PasswordError> for AccountError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => AccountError::Busy,
            other => AccountError::Internal(other.to_string()),
        }
    }
}

impl From<Limited> for AccountError {
    fn from(l: Limited) -> Self {
        AccountError::Limited(l)
    }
}

/// What a login (or a refresh, or a password change) hands out.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// JWT for `Authorization: Bearer` on the API.
    pub access_token: String,
    /// Always "Bearer".
    pub token_type: String,
    /// Seconds the access token is valid.
    pub expires_in: u64,
    /// Opaque token to get the next pair from /api/v1/auth/refresh (once: it rotates).
    pub refresh_token: String,
    /// Seconds the refresh token is valid.
    pub refresh_expires_in: u64,
}

/// The user behind a valid access token.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user, as the database holds it now.
    pub user: UserRow,
    /// The login session the token belongs to.
    pub session_id: i64,
}

impl CurrentUser {
    /// Whether the user has the admin role.
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// Whether this user may manage `stream` (its owner, or an admin).
    pub fn may_manage(&self, stream: &StreamRow) -> bool {
        self.is_admin() || stream.owner_id == Some(self.user.id)
    }

    /// An audit event acted by this user from `ip`.
    pub fn audit(&self, action: &str, ip: IpAddr) -> AuditEvent {
        AuditEvent::new(action)
            .by_user(self.user.id, &self.user.email)
            .from_ip(ip)
    }
}

/// Why a viewer was refused a private stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewerDenied {
    /// No viewer token was given.
    #[error("this stream is private: watching it needs a viewer token (Authorization: Bearer)")]
    Missing,
    /// The token does not verify, or has expired.
    #[error("the viewer token is not valid: {0}")]
    Invalid(TokenError),
    /// The token is for another stream.
    #[error("the viewer token is for another stream")]
    WrongStream,
    /// The token was revoked (the stream's viewer tokens were revoked after it was issued).
    #[error("the viewer token was revoked")]
    Revoked,
}

fn ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl Auth {
    fn link(&self, path: &str, token: &str) -> String {
        format!("{}{path}#token={token}", self.config.public_url())
    }

    fn check_limits(&self, action: Action, ip: IpAddr, account: &str) -> Result<(), AccountError> {
        self.limits.check_ip(action, ip)?;
        self.limits.check_account(action, account)?;
        Ok(())
    }

    /// Signs up `email` with `password`. Answers the same whether or not the address has an account: a new one
    /// gets a verification mail, an existing one a mail pointing to login and password reset.
    pub async fn signup(
        &self,
        db: &Db,
        email: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<(), AccountError> {
        let email = validate::email("email", email)?;
        validate::new_password("password", password, self.config.auth.password_min_length)?;
        self.check_limits(Action::Signup, ip, &email)?;
        if !self.config.auth.signup_open {
            return Err(AccountError::SignupClosed);
        }
        // Hash first in every case, so both outcomes cost the same.
        let hash = self.passwords.hash(password).await?;
        match db.create_user(&email, &hash, Role::Streamer, false).await {
            Ok(user) => {
                self.send_verification(db, &user).await?;
                db.audit(
                    AuditEvent::new(actions::SIGNUP)
                        .by_user(user.id, &user.email)
                        .from_ip(ip)
                        .target(format!("user:{}", user.id)),
                )
                .await?;
            }
            Err(DbError::Conflict(_)) => {
                let base = self.config.public_url();
                self.mailer
                    .send_in_background(super::mail::already_registered_mail(
                        &email,
                        &format!("{base}/login"),
                        &format!("{base}/account/forgot"),
                    ));
                db.audit(
                    AuditEvent::new(actions::SIGNUP)
                        .failed()
                        .from_ip(ip)
                        .target(format!("email:{email}"))
                        .detail("reason", "the address already has an account"),
                )
                .await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn send_verification(&self, db: &Db, user: &UserRow) -> Result<(), AccountError> {
        let token = tokens::generate(tokens::VERIFY_PREFIX);
        let ttl = self.config.auth.email_verification_ttl_s;
        db.create_email_token(
            user.id,
            TokenPurpose::Verify,
            &tokens::hash(&token),
            now_ms() + ms(ttl),
        )
        .await?;
        self.mailer
            .send_in_background(super::mail::verification_mail(
                &user.email,
                &self.link("/account/verify", &token),
                ttl,
            ));
        Ok(())
    }

    /// Uses the token of a verification link.
    pub async fn verify_email(&self, db: &Db, token: &str, ip: IpAddr) -> Result<(), AccountError> {
        if !tokens::well_formed(token, tokens::VERIFY_PREFIX) {
            return Err(AccountError::BadLink);
        }
        let Some(user) = db.verify_email_with(&tokens::hash(token)).await? else {
            return Err(AccountError::BadLink);
        };
        db.audit(
            AuditEvent::new(actions::EMAIL_VERIFIED)
                .by_user(user.id, &user.email)
                .from_ip(ip)
                .target(format!("user:{}", user.id)),
        )
        .await?;
        Ok(())
    }

    /// Logs in: checks the rate limits before any hashing, then the password (against a dummy hash when the
    /// account does not exist), and opens a login session.
    pub async fn login(
        &self,
        db: &Db,
        email: &str,
        password: &str,
        ip: IpAddr,
        user_agent: &str,
    ) -> Result<TokenPair, AccountError> {
        let email = validate::email("email", email)?;
        validate::given_password("password", password)?;
        if let Err(limited) = self.check_limits(Action::Login, ip, &email) {
            // One audit row per burst of refusals from an address for an account; the rest are a metric.
            if self.refusal_bursts.first_of_burst(&format!("{ip}|{email}")) {
                db.audit(
                    AuditEvent::new(actions::LOGIN)
                        .failed()
                        .from_ip(ip)
                        .target(format!("email:{email}"))
                        .detail("reason", "rate limited")
                        .detail("note", "further refusals of this burst are counted in zipiq_login_rate_limited_total only"),
                )
                .await?;
            }
            metrics::counter!("zipiq_login_rate_limited_total").increment(1);
            return Err(limited);
        }
        let user = db.user_by_email(&email).await?;
        let matched = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let Some(user) = user.filter(|_| matched) else {
            metrics::counter!("zipiq_login_failures_total").increment(1);
            db.audit(
                AuditEvent::new(actions::LOGIN)
                    .failed()
                    .from_ip(ip)
                    .target(format!("email:{email}"))
                    .detail("reason", "wrong email or password"),
            )
            .await?;
            return Err(AccountError::BadCredentials);
        };
        let refuse = |reason: &'static str| {
            AuditEvent::new(actions::LOGIN)
                .failed()
                .by_user(user.id, &user.email)
                .from_ip(ip)
                .target(format!("user:{}", user.id))
                .detail("reason", reason)
        };
        if user.is_disabled() {
            db.audit(refuse("account disabled")).await?;
            return Err(AccountError::Disabled);
        }
        if !user.is_verified() {
            self.send_verification(db, &user).await?;
            db.audit(refuse("email not verified")).await?;
            return Err(AccountError::Unverified);
        }
        if self.passwords.needs_rehash(&user.password_hash) {
            let hash = self.passwords.hash(password).await?;
            db.update_password_hash(user.id, &hash).await?;
        }
        let pair = self.open_session(db, &user, ip, user_agent).await?;
        db.audit(
            AuditEvent::new(actions::LOGIN)
                .by_user(user.id, &user.email)
                .from_ip(ip)
                .target(format!("user:{}", user.id)),
        )
        .await?;
        Ok(pair)
    }

    async fn open_session(
        &self,
        db: &Db,
        user: &UserRow,
        ip: IpAddr,
        user_agent: &str,
    ) -> Result<TokenPair, AccountError> {
        let refresh = tokens::generate(tokens::REFRESH_PREFIX);
        let refresh_ttl = self.config.auth.refresh_token_ttl_s;
        let agent: String = user_agent.chars().take(256).collect();
        let session_id = db
            .create_login_session(
                user.id,
                &ip.to_string(),
                &agent,
                &tokens::hash(&refresh),
                now_ms() + ms(refresh_ttl),
            )
            .await?;
        self.pair(user, session_id, refresh)
    }

    fn pair(
        &self,
        user: &UserRow,
        session_id: i64,
        refresh: String,
    ) -> Result<TokenPair, AccountError> {
        let ttl = self.config.auth.access_token_ttl_s;
        let now = jwt::now_s();
        let claims = AccessClaims {
            iss: jwt::ISSUER.into(),
            aud: jwt::ACCESS_AUDIENCE.into(),
            sub: user.id.to_string(),
            sid: session_id,
            role: user.role.as_str().into(),
            iat: now,
            exp: now + ttl,
            jti: jwt::token_id(),
        };
        let access = self
            .jwt
            .sign(&claims)
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        Ok(TokenPair {
            access_token: access,
            token_type: "Bearer".into(),
            expires_in: ttl,
            refresh_token: refresh,
            refresh_expires_in: self.config.auth.refresh_token_ttl_s,
        })
    }

    /// Exchanges a refresh token for a new pair. A token presented a second time revokes its whole session (the
    /// family) and is audit-logged as reuse.
    pub async fn refresh(
        &self,
        db: &Db,
        token: &str,
        ip: IpAddr,
    ) -> Result<TokenPair, AccountError> {
        if !tokens::well_formed(token, tokens::REFRESH_PREFIX) {
            return Err(AccountError::RefreshRefused);
        }
        let next = tokens::generate(tokens::REFRESH_PREFIX);
        let outcome = db
            .rotate_refresh_token(
                &tokens::hash(token),
                &tokens::hash(&next),
                now_ms() + ms(self.config.auth.refresh_token_ttl_s),
            )
            .await?;
        match outcome {
            RefreshOutcome::Rotated { session_id, user } => {
                if user.is_disabled() {
                    db.revoke_session(session_id, "account disabled").await?;
                    return Err(AccountError::RefreshRefused);
                }
                self.pair(&user, session_id, next)
            }
            RefreshOutcome::Reused { session_id, user } => {
                metrics::counter!("zipiq_refresh_token_reuse_total").increment(1);
                db.audit(
                    AuditEvent::new(actions::REFRESH_TOKEN_REUSE)
                        .failed()
                        .by_user(user.id, &user.email)
                        .from_ip(ip)
                        .target(format!("session:{session_id}"))
                        .detail(
                            "effect",
                            "every refresh and access token of the session revoked",
                        ),
                )
                .await?;
                Err(AccountError::RefreshRefused)
            }
            RefreshOutcome::Refused => Err(AccountError::RefreshRefused),
        }
    }

    /// Ends the caller's login session: its refresh tokens and access tokens stop working at once.
    pub async fn logout(
        &self,
        db: &Db,
        user: &CurrentUser,
        ip: IpAddr,
    ) -> Result<(), AccountError> {
        db.revoke_session(user.session_id, "logout").await?;
        db.audit(
            user.audit(actions::LOGOUT, ip)
                .target(format!("session:{}", user.session_id)),
        )
        .await?;
        Ok(())
    }

    /// Mails a password-reset link to `email` when it has an account. Answers the same either way.
    pub async fn request_reset(
        &self,
        db: &Db,
        email: &str,
        ip: IpAddr,
    ) -> Result<(), AccountError> {
        let email = validate::email("email", email)?;
        self.check_limits(Action::Reset, ip, &email)?;
        let user = db.user_by_email(&email).await?;
        let mut event = AuditEvent::new(actions::PASSWORD_RESET_REQUESTED)
            .from_ip(ip)
            .target(format!("email:{email}"));
        match user.filter(|u| !u.is_disabled()) {
            Some(user) => {
                let token = tokens::generate(tokens::RESET_PREFIX);
                let ttl = self.config.auth.password_reset_ttl_s;
                db.create_email_token(
                    user.id,
                    TokenPurpose::Reset,
                    &tokens::hash(&token),
                    now_ms() + ms(ttl),
                )
                .await?;
                self.mailer.send_in_background(super::mail::reset_mail(
                    &user.email,
                    &self.link("/account/reset", &token),
                    ttl,
                ));
                event = event.target(format!("user:{}", user.id));
            }
            None => {
                event = event
                    .failed()
                    .detail("reason", "no active account with this address");
            }
        }
        db.audit(event).await?;
        Ok(())
    }

    /// Uses a reset link's token to set a new password; every session of the account ends.
    pub async fn reset_password(
        &self,
        db: &Db,
        token: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<(), AccountError> {
        validate::new_password("password", password, self.config.auth.password_min_length)?;
        self.limits.check_ip(Action::Reset, ip)?;
        if !tokens::well_formed(token, tokens::RESET_PREFIX) {
            return Err(AccountError::BadLink);
        }
        // The token first: hashing a password costs a core for a while, and a made-up token must not buy that.
        if db.reset_token_user(&tokens::hash(token)).await?.is_none() {
            return Err(AccountError::BadLink);
        }
        let hash = self.passwords.hash(password).await?;
        let Some(user) = db.reset_password_with(&tokens::hash(token), &hash).await? else {
            return Err(AccountError::BadLink);
        };
        db.audit(
            AuditEvent::new(actions::PASSWORD_RESET)
                .by_user(user.id, &user.email)
                .from_ip(ip)
                .target(format!("user:{}", user.id))
                .detail("effect", "every session revoked"),
        )
        .await?;
        Ok(())
    }

    /// Changes the caller's password after checking the current one. Every refresh token of the account (every
    /// session, this one included) is revoked; the answer is a pair for a new session.
    pub async fn change_password(
        &self,
        db: &Db,
        current: &CurrentUser,
        old_password: &str,
        new_password: &str,
        ip: IpAddr,
        user_agent: &str,
    ) -> Result<TokenPair, AccountError> {
        validate::given_password("current_password", old_password)?;
        validate::new_password(
            "new_password",
            new_password,
            self.config.auth.password_min_length,
        )?;
        self.limits
            .check_account(Action::Login, &current.user.email)?;
        if !self
            .passwords
            .verify(old_password, Some(&current.user.password_hash))
            .await?
        {
            db.audit(
                current
                    .audit(actions::PASSWORD_CHANGED, ip)
                    .failed()
                    .target(format!("user:{}", current.user.id))
                    .detail("reason", "wrong current password"),
            )
            .await?;
            return Err(AccountError::WrongPassword);
        }
        let hash = self.passwords.hash(new_password).await?;
        let revoked = db.change_password(current.user.id, &hash).await?;
        db.audit(
            current
                .audit(actions::PASSWORD_CHANGED, ip)
                .target(format!("user:{}", current.user.id))
                .detail("sessions_revoked", revoked),
        )
        .await?;
        self.open_session(db, &current.user, ip, user_agent).await
    }

    /// The user behind an access token: signature, audience and expiry, then the session must be open and the
    /// account enabled (so logout, password changes and disabling take effect at once). The role comes from
    /// the database, not the token.
    pub async fn authenticate(&self, db: &Db, token: &str) -> Result<CurrentUser, AccountError> {
        let claims: AccessClaims = self.jwt.verify(token, jwt::ACCESS_AUDIENCE).map_err(|e| {
            AccountError::Unauthenticated(format!("the access token is not valid: {e}"))
        })?;
        let user_id: i64 = claims
            .sub
            .parse()
            .map_err(|_| AccountError::Unauthenticated("the access token is not valid".into()))?;
        let Some(state) = db.session_state(claims.sid, user_id).await? else {
            return Err(AccountError::Unauthenticated(
                "the session does not exist".into(),
            ));
        };
        if state.revoked {
            return Err(AccountError::Unauthenticated(
                "the session has ended (logout, password change, or token reuse); log in again"
                    .into(),
            ));
        }
        if state.user.is_disabled() {
            return Err(AccountError::Unauthenticated(
                "this account is disabled".into(),
            ));
        }
        Ok(CurrentUser {
            user: state.user,
            session_id: claims.sid,
        })
    }

    /// Makes a viewer token for `stream`, valid for `ttl_s` seconds (the configured default when None; at most
    /// the configured maximum). Returns the token and its expiry (unix seconds).
    pub fn viewer_token(
        &self,
        stream: &StreamRow,
        issuer: &UserRow,
        ttl_s: Option<u64>,
    ) -> Result<(String, u64), AccountError> {
        let max = self.config.auth.viewer_token_max_ttl_s;
        let ttl = ttl_s.unwrap_or(self.config.auth.viewer_token_ttl_s);
        if ttl == 0 || ttl > max {
            return Err(FieldError::new(
                "ttl_seconds",
                format!("must be between 1 and {max} seconds"),
            )
            .into());
        }
        let now = jwt::now_s();
        let claims = ViewerClaims {
            iss: jwt::ISSUER.into(),
            aud: jwt::VIEWER_AUDIENCE.into(),
            sub: issuer.id.to_string(),
            stream: stream.id,
            ver: stream.viewer_token_version,
            iat: now,
            exp: now + ttl,
            jti: jwt::token_id(),
        };
        let token = self
            .jwt
            .sign(&claims)
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        Ok((token, now + ttl))
    }

    /// Checks the bearer token of a viewer of private `stream`.
    pub fn check_viewer(
        &self,
        stream: &StreamRow,
        bearer: Option<&str>,
    ) -> Result<ViewerClaims, ViewerDenied> {
        let token = bearer.ok_or(ViewerDenied::Missing)?;
        let claims: ViewerClaims = self
            .jwt
            .verify(token, jwt::VIEWER_AUDIENCE)
            .map_err(ViewerDenied::Invalid)?;
        if claims.stream != stream.id {
            return Err(ViewerDenied::WrongStream);
        }
        if claims.ver != stream.viewer_token_version {
            return Err(ViewerDenied::Revoked);
        }
        Ok(claims)
    }
}
