//! Deleting what has served its time, so that no table grows forever: audit rows past `audit.retention_days`,
//! used or expired email tokens, expired refresh tokens, and login sessions unused for longer than a refresh
//! token lives (every token of theirs has expired by then). Deletes run in batches of `BATCH` rows so that no
//! transaction holds the database for long. A used refresh token is kept until it expires: presenting it again
//! within its lifetime is reuse, which revokes its session.

use super::{Db, DbError};

/// Rows deleted per statement.
const BATCH: i64 = 5000;

/// What one run may delete, as cut-off times in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct PruneRules {
    pub now_ms: i64,
    /// Audit rows before this go; None keeps them all.
    pub audit_before_ms: Option<i64>,
    /// Login sessions last used before this go (with their refresh tokens).
    pub sessions_idle_before_ms: i64,
}

/// How many rows one run deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub audit_log: u64,
    pub email_tokens: u64,
    pub refresh_tokens: u64,
    pub login_sessions: u64,
}

impl Db {
    /// Deletes, batch by batch, `DELETE FROM {table} WHERE id IN ({select} LIMIT batch)` until a batch comes back
    /// short. `select` must select `id` and take `$1` (the cut-off) and `$2` (the batch size).
    async fn delete_in_batches(&self, sql: &'static str, cutoff: i64) -> Result<u64, DbError> {
        let mut total = 0u64;
        loop {
            let done = sqlx::query(sql)
                .bind(cutoff)
                .bind(BATCH)
                .execute(self.pool())
                .await?
                .rows_affected();
            total += done;
            if done < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// One pruning run.
    pub async fn prune(&self, rules: &PruneRules) -> Result<Pruned, DbError> {
        let mut pruned = Pruned::default();
        if let Some(before) = rules.audit_before_ms {
            pruned.audit_log = self
                .delete_in_batches(
                    "DELETE FROM audit_log WHERE id IN \
                     (SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2)",
                    before,
                )
                .await?;
        }
        pruned.email_tokens = self
            .delete_in_batches(
                "DELETE FROM email_tokens WHERE id IN \
                 (SELECT id FROM email_tokens WHERE used_at IS NOT NULL OR expires_at < $1 LIMIT $2)",
                rules.now_ms,
            )
            .await?;
        pruned.refresh_tokens = self
            .delete_in_batches(
                "DELETE FROM refresh_tokens WHERE id IN \
                 (SELECT id FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)",
                rules.now_ms,
            )
            .await?;
        // Their refresh tokens first (SQLite enforces the cascade only with foreign keys on).
        pruned.refresh_tokens += self
            .delete_in_batches(
                "DELETE FROM refresh_tokens WHERE id IN \
                 (SELECT t.id FROM refresh_tokens t JOIN login_sessions s ON s.id = t.session_id \
                  WHERE s.last_used_at < $1 LIMIT $2)",
                rules.sessions_idle_before_ms,
            )
            .await?;
        pruned.login_sessions = self
            .delete_in_batches(
                "DELETE FROM login_sessions WHERE id IN \
                 (SELECT id FROM login_sessions WHERE last_used_at < $1 LIMIT $2)",
                rules.sessions_idle_before_ms,
            )
            .await?;
        Ok(pruned)
    }
}
