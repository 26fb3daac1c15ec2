//! Who may do what. Stream keys for publishers; accounts with argon2id passwords, email verification and reset,
//! JWT access tokens with rotating refresh tokens, viewer tokens for private streams, and rate limits. The flows
//! live in [`accounts`]; the HTTP layer only maps them to answers. Stream keys and secrets from files or systemd
//! credentials are `crate::secrets` (a leaf the database and the SFU use too); the key watcher is `sfu::key_watch`;
//! the `zipiq users`/`secrets`/`audit` commands are `cli::users`, `cli::secrets` and `cli::audit`.
//!
//! Nothing here logs a secret (password, key, token); the audit log records ids, addresses and outcomes.

pub(crate) mod accounts;
pub(crate) mod jwt;
pub(crate) mod mail;
pub(crate) mod passwords;
pub(crate) mod rate_limit;
pub mod tokens;
pub(crate) mod validate;

use std::sync::Arc;

use crate::config::Config;
use crate::secrets;

pub use accounts::{AccountError, CurrentUser, TokenPair, ViewerDenied};

/// Why the account machinery could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The password hasher's parameters are invalid.
    #[error(transparent)]
    Password(#[from] passwords::PasswordError),
    /// The JWT keys could not be read or made.
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    /// The mailer could not be set up.
    #[error(transparent)]
    Mail(#[from] mail::MailError),
}

/// The account service: configuration, password hasher, JWT keys, mailer and rate limits (cheap to share).
#[derive(Debug)]
pub struct Auth {
    /// The server's configuration.
    pub config: Arc<Config>,
    /// Hashes and checks account passwords (Argon2id).
    pub passwords: passwords::Passwords,
    /// Signs and checks access and viewer tokens.
    pub jwt: jwt::Jwt,
    /// Where the JWT keys came from (a credential, or a file `rotate-jwt` may rewrite).
    pub jwt_source: secrets::SecretSource,
    /// Sends verification and reset mails.
    pub mailer: mail::Mailer,
    /// The account and WHIP/WHEP rate limits.
    pub limits: rate_limit::RateLimits,
    /// Which rate-limited logins were audited already (one audit row per burst).
    pub refusal_bursts: rate_limit::Bursts,
}

impl Auth {
    /// Loads the JWT keys (creating the key file on first start), builds the hasher and the mailer.
    pub fn new(config: Arc<Config>) -> Result<Auth, AuthSetupError> {
        let (ring, jwt_source) = jwt::load_or_create(&config.auth.jwt_key_file)?;
        tracing::info!(kids = ?ring.kids(), source = %jwt_source.path().display(), "JWT signing keys loaded");
        let mailer = mail::Mailer::new(&config.smtp)?;
        if !mailer.sends() {
            tracing::warn!(
                "smtp.host is empty: verification and password-reset mails are written to the log, not sent"
            );
        }
        Ok(Auth {
            passwords: passwords::Passwords::new(&config.auth)?,
            jwt: jwt::Jwt::new(ring),
            jwt_source,
            mailer,
            limits: rate_limit::RateLimits::new(&config.rate_limits),
            refusal_bursts: rate_limit::Bursts::new(std::time::Duration::from_secs(
                config.rate_limits.login_per_ip.per_seconds.max(1),
            )),
            config,
        })
    }

    /// Reads the JWT key file again (after `zipiq secrets rotate-jwt`); keeps the current keys on error.
    pub fn reload_jwt_keys(&self) -> Result<Vec<String>, secrets::SecretError> {
        let text = secrets::read(self.jwt_source.path())?;
        let ring = jwt::KeyRing::parse(&text).map_err(|reason| secrets::SecretError::Invalid {
            path: self.jwt_source.path().to_owned(),
            reason,
        })?;
        let kids = ring.kids().iter().map(|k| (*k).to_owned()).collect();
        self.jwt.replace(ring);
        Ok(kids)
    }

    /// The longest lifetime of any JWT this server signs (keys must verify at least this long after rotation).
    pub fn max_token_ttl_s(&self) -> u64 {
        max_token_ttl_s(&self.config)
    }
}

/// The longest lifetime of any JWT signed under `config`.
pub fn max_token_ttl_s(config: &Config) -> u64 {
    config
        .auth
        .access_token_ttl_s
        .max(config.auth.viewer_token_max_ttl_s)
}
