//! The background task that keeps state from growing forever: every `audit.prune_interval_s` it deletes what the
//! database no longer needs (`db::prune`: old audit rows, used or expired tokens, long-idle login sessions) and
//! the in-memory rate-limit state of keys that have gone quiet. Counts go to `zipiq_pruned_total{what}`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::config::Config;
use crate::db::prune::{PruneRules, Pruned};
use crate::db::{Db, now_ms};

const DAY_MS: i64 = 86_400_000;

/// The cut-offs of a run at `now_ms` under `config`.
pub(crate) fn rules(config: &Config, now_ms: i64) -> PruneRules {
    let retention = i64::try_from(config.audit.retention_days).unwrap_or(i64::MAX);
    let refresh_ms = i64::try_from(config.auth.refresh_token_ttl_s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    PruneRules {
        now_ms,
        audit_before_ms: (retention > 0)
            .then(|| now_ms.saturating_sub(retention.saturating_mul(DAY_MS))),
        sessions_idle_before_ms: now_ms.saturating_sub(refresh_ms),
    }
}

/// One run: the database, then the in-memory state.
pub(crate) async fn run_once(
    db: &Db,
    auth: &Auth,
    config: &Config,
) -> Result<Pruned, crate::db::DbError> {
    let pruned = db.prune(&rules(config, now_ms())).await?;
    let limiter_keys = auth.limits.prune() + auth.refusal_bursts.prune();
    for (what, n) in [
        ("audit_log", pruned.audit_log),
        ("email_tokens", pruned.email_tokens),
        ("refresh_tokens", pruned.refresh_tokens),
        ("login_sessions", pruned.login_sessions),
        ("rate_limit_keys", limiter_keys as u64),
    ] {
        metrics::counter!("zipiq_pruned_total", "what" => what).increment(n);
    }
    Ok(pruned)
}

/// Runs the pruning every `audit.prune_interval_s` (the first run shortly after start) until `stop`.
pub(crate) fn spawn(
    db: Db,
    auth: Arc<Auth>,
    config: Arc<Config>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(config.audit.prune_interval_s);
        let mut next = tokio::time::Instant::now() + every.min(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            next = tokio::time::Instant::now() + every;
            match run_once(&db, &auth, &config).await {
                Ok(p) => tracing::info!(
                    audit_rows = p.audit_log,
                    email_tokens = p.email_tokens,
                    refresh_tokens = p.refresh_tokens,
                    login_sessions = p.login_sessions,
                    "pruned"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning failed; it runs again at the next interval")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_retention_keeps_the_audit_log() {
        let mut config = Config::defaults().expect("defaults");
        config.audit.retention_days = 0;
        assert_eq!(rules(&config, 10 * DAY_MS).audit_before_ms, None);
        config.audit.retention_days = 2;
        assert_eq!(
            rules(&config, 10 * DAY_MS).audit_before_ms,
            Some(8 * DAY_MS)
        );
    }
}
