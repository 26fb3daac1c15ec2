//! Account passwords: argon2id with the parameters of `[auth]`, in PHC string form (`$argon2id$v=19$m=..`).
//!
//! Hashing is deliberately slow and memory-hungry, so it runs on the blocking pool, at most one per core at a
//! time, with a short queue behind (`WAITERS_PER_CORE` per core): a flood of logins or reset confirmations finds
//! the queue full and gets `Busy` (503 with Retry-After) at once, instead of queueing without end and starving
//! everyone's logins. A login for an unknown email verifies against a
//! dummy hash, so the answer takes as long as for a known one. Passwords are never logged.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::AuthConfig;

/// Longest password accepted, in characters.
pub(crate) const MAX_PASSWORD_CHARS: usize = 1024;

/// Why hashing failed (never because of the password itself).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed: {0}")]
    Task(String),
    #[error("too many password checks at once; try again in a second")]
    Busy,
}

/// Password checks that may wait for a core, per core, before more are refused.
const WAITERS_PER_CORE: usize = 4;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// Places in line (running or waiting): when none is free, the answer is `Busy`.
    queue: Arc<Semaphore>,
    /// A hash of a random password, verified against when the account does not exist.
    dummy_hash: Arc<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("m_kib", &self.params.m_cost())
            .field("t", &self.params.t_cost())
            .field("p", &self.params.p_cost())
            .finish()
    }
}

fn hasher(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    hasher(params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

impl Passwords {
    /// Builds the hasher from `[auth]` (and hashes the dummy password once).
    pub fn new(config: &AuthConfig) -> Result<Passwords, PasswordError> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let mut random = [0u8; 24];
        rand::rng().fill_bytes(&mut random);
        let dummy_hash = hash_blocking(&params, &random)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Passwords {
            params,
            permits: Arc::new(Semaphore::new(cores)),
            queue: Arc::new(Semaphore::new(cores * (1 + WAITERS_PER_CORE))),
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    /// A place in line and then a core, or `Busy` when the line is full.
    async fn turn(&self) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), PasswordError> {
        let place = self.queue.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("zipiq_password_checks_refused_total").increment(1);
            PasswordError::Busy
        })?;
        let core = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PasswordError::Task(e.to_string()))?;
        Ok((place, core))
    }

    /// The PHC string of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let _turn = self.turn().await?;
        let params = self.params.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_blocking(&params, password.as_bytes()))
            .await
            .map_err(|e| PasswordError::Task(e.to_string()))?
    }

    /// Whether `password` matches `stored` (a PHC string). With no stored hash (no such account) a dummy hash is
    /// verified instead and the answer is false, taking the same time. `Busy` when the line is full.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let _turn = self.turn().await?;
        let known = stored.is_some();
        let stored = stored.unwrap_or(self.dummy_hash.as_str()).to_owned();
        let password = password.to_owned();
        let matched = tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return false;
            };
            // Verify with the parameters the hash was made with (they are in the PHC string).
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        Ok(known && matched)
    }

    /// Whether `stored` was made with other parameters than the configured ones (it is re-hashed at login).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        if parsed.algorithm.as_str() != "argon2id" {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Passwords {
        let mut c = crate::config::Config::defaults().unwrap().auth;
        c.argon2_memory_kib = 64;
        c.argon2_iterations = 1;
        Passwords::new(&c).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let p = small();
        let a = p.hash("correct horse battery").await.unwrap();
        let b = p.hash("correct horse battery").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(
            p.verify("correct horse battery", Some(&a))
                .await
                .expect("not busy")
        );
        assert!(
            !p.verify("correct horse battery!", Some(&a))
                .await
                .expect("not busy")
        );
        assert!(
            !p.verify("anything", Some("not a hash"))
                .await
                .expect("not busy")
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_matches() {
        let p = small();
        assert!(!p.verify("", None).await.expect("not busy"));
        assert!(!p.verify("whatever", None).await.expect("not busy"));
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_need_a_rehash() {
        let p = small();
        let h = p.hash("pw-pw-pw-pw").await.unwrap();
        assert!(!p.needs_rehash(&h));
        let mut c = crate::config::Config::defaults().unwrap().auth;
        c.argon2_memory_kib = 128;
        c.argon2_iterations = 1;
        let stronger = Passwords::new(&c).unwrap();
        assert!(stronger.needs_rehash(&h));
        // Hashes made with the old parameters still verify.
        assert!(
            stronger
                .verify("pw-pw-pw-pw", Some(&h))
                .await
                .expect("not busy")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_line_answers_busy_at_once() {
        let mut c = crate::config::Config::defaults().expect("defaults").auth;
        c.argon2_memory_kib = 8 * 1024;
        c.argon2_iterations = 2;
        c.argon2_parallelism = 1;
        let p = Passwords::new(&c).expect("params");
        let line = p.queue.available_permits();
        let checks: Vec<_> = (0..line * 3)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.verify("pw", None).await })
            })
            .collect();
        let mut busy = 0;
        for c in checks {
            if matches!(c.await.expect("task"), Err(PasswordError::Busy)) {
                busy += 1;
            }
        }
        assert!(busy >= line, "{busy} of {} refused, line {line}", line * 3);
        // Once the flood is over, checks pass again.
        assert!(!p.verify("pw", None).await.expect("not busy"));
    }
}
