//! Nothing grows forever (issue "Hardening I", item 9): the pruning task deletes audit rows past
//! `audit.retention_days`, used and expired email tokens, expired refresh tokens, and login sessions idle for
//! longer than a refresh token lives (with their refresh tokens), and keeps everything still in use, on SQLite and
//! PostgreSQL. (Quiet rate-limit keys: `auth::rate_limit`'s unit test `idle_keys_are_pruned`.)

use std::time::Duration;

use serde_json::json;
use zipiq::db::audit::AuditEvent;

use crate::account_env::{ENGINES, Env};

async fn count(env: &Env, sql: &'static str) -> i64 {
    use sqlx::Row;
    let row = sqlx::query(sql)
        .fetch_one(env.server.server.db.pool())
        .await
        .expect("count");
    row.try_get::<i64, _>(0).expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruning_task_deletes_what_has_served_its_time_and_nothing_else() {
    for engine in ENGINES {
        let mut env = Env::start(
            engine,
            "[audit]\nretention_days = 2\nprune_interval_s = 1\n",
        )
        .await;
        let db = env.server.server.db.clone();
        // An account with a live session (kept) and one whose session is long idle (pruned).
        env.verified_login("kept@example.org", "correct horse battery")
            .await;
        env.verified_login("idle@example.org", "correct horse battery")
            .await;
        // A pending verification token (kept) and used ones (the two verifications: pruned).
        let a = env
            .post(
                "/api/v1/auth/signup",
                json!({"email": "pending@example.org", "password": "correct horse battery"}),
                None,
            )
            .await;
        assert_eq!(a.status, 202);
        // An unused verification token past its expiry (pruned).
        let b = env
            .post(
                "/api/v1/auth/signup",
                json!({"email": "expired@example.org", "password": "correct horse battery"}),
                None,
            )
            .await;
        assert_eq!(b.status, 202);
        sqlx::query(
            "UPDATE email_tokens SET expires_at = $1 WHERE user_id = \
             (SELECT id FROM users WHERE email = 'expired@example.org')",
        )
        .bind(1_i64)
        .execute(db.pool())
        .await
        .expect("expire the token");
        // A session in use whose refresh token has expired: the token goes, the session stays.
        env.verified_login("stale@example.org", "correct horse battery")
            .await;
        sqlx::query(
            "UPDATE refresh_tokens SET expires_at = $1 WHERE session_id IN \
             (SELECT s.id FROM login_sessions s JOIN users u ON u.id = s.user_id \
              WHERE u.email = 'stale@example.org')",
        )
        .bind(1_i64)
        .execute(db.pool())
        .await
        .expect("expire the refresh token");
        let old = zipiq::db::now_ms() - 3 * 86_400_000;
        sqlx::query(
            "UPDATE login_sessions SET last_used_at = $1 WHERE user_id = \
             (SELECT id FROM users WHERE email = 'idle@example.org')",
        )
        // Longer ago than a refresh token lives (auth.refresh_token_ttl_s).
        .bind(1_i64)
        .execute(db.pool())
        .await
        .expect("age the session");
        let old_row = db
            .audit(AuditEvent::new("test.old").detail("n", 1))
            .await
            .expect("audit");
        sqlx::query("UPDATE audit_log SET at = $1 WHERE id = $2")
            .bind(old)
            .bind(old_row)
            .execute(db.pool())
            .await
            .expect("age the row");
        db.audit(AuditEvent::new("test.new").detail("n", 2))
            .await
            .expect("audit");

        let pruned = async {
            loop {
                if count(
                    &env,
                    "SELECT COUNT(*) FROM audit_log WHERE action = 'test.old'",
                )
                .await
                    == 0
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), pruned)
            .await
            .unwrap_or_else(|_| panic!("{engine}: the pruning task ran"));
        // Give the rest of that run a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (sql, expected, why) in [
            (
                "SELECT COUNT(*) FROM audit_log WHERE action = 'test.new'",
                1,
                "recent audit rows stay",
            ),
            (
                "SELECT COUNT(*) FROM email_tokens WHERE used_at IS NOT NULL",
                0,
                "used tokens go",
            ),
            (
                "SELECT COUNT(*) FROM email_tokens",
                1,
                "the pending one stays, the expired one goes",
            ),
            (
                "SELECT COUNT(*) FROM email_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE u.email = 'pending@example.org'",
                1,
                "the one left is the pending one",
            ),
            (
                "SELECT COUNT(*) FROM refresh_tokens t JOIN login_sessions s ON s.id = t.session_id \
                 JOIN users u ON u.id = s.user_id WHERE u.email = 'stale@example.org'",
                0,
                "an expired refresh token goes",
            ),
            (
                "SELECT COUNT(*) FROM login_sessions s JOIN users u ON u.id = s.user_id \
                 WHERE u.email = 'stale@example.org'",
                1,
                "its session, in use, stays",
            ),
            (
                "SELECT COUNT(*) FROM login_sessions s JOIN users u ON u.id = s.user_id \
                 WHERE u.email = 'idle@example.org'",
                0,
                "the idle session goes",
            ),
            (
                "SELECT COUNT(*) FROM refresh_tokens t JOIN login_sessions s ON s.id = t.session_id \
                 JOIN users u ON u.id = s.user_id WHERE u.email = 'kept@example.org'",
                1,
                "a live session keeps its refresh token",
            ),
        ] {
            assert_eq!(count(&env, sql).await, expected, "{engine}: {why}");
        }
        // The kept account still logs in and refreshes.
        env.login("kept@example.org", "correct horse battery").await;
        env.stop().await;
    }
}
