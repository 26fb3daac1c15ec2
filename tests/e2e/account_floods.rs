//! Floods of account requests (issue "Hardening I", item 6): password-reset confirmations with made-up tokens are
//! answered without hashing and stop at the per-address limit; a flood of logins finds the argon2 line full and
//! gets 503 with Retry-After at once, while the server stays usable; rate-limited logins leave one audit row per
//! burst, on SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::account_env::{ENGINES, Env};

/// Argon2 settings that make one hash cost seconds in a debug build: a confirm that hashed would show.
const SLOW_ARGON2: &str =
    "[auth]\nargon2_memory_kib = 262144\nargon2_iterations = 4\nargon2_parallelism = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_confirms_with_made_up_tokens_never_hash_and_are_limited() {
    let env = Env::start(
        "sqlite",
        &format!(
            "{SLOW_ARGON2}[rate_limits]\nreset_per_ip = {{ requests = 5, per_seconds = 3600 }}\n"
        ),
    )
    .await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let a = env
            .post(
                "/api/v1/auth/password-reset/confirm",
                json!({"token": zipiq::auth::tokens::generate(zipiq::auth::tokens::RESET_PREFIX), "password": format!("a new long password {i}")}),
                None,
            )
            .await;
        statuses.push(a.status);
        if a.status == 429 {
            assert!(a.header("retry-after").is_some());
        }
    }
    assert_eq!(&statuses[..5], &[404; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[429; 3], "{statuses:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "made-up tokens are looked up, not hashed: {:?}",
        started.elapsed()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_gets_503_when_the_argon2_line_is_full() {
    let env = Env::start(
        "sqlite",
        "[auth]\nargon2_memory_kib = 32768\nargon2_iterations = 3\nargon2_parallelism = 1\n\
         [rate_limits]\nlogin_per_ip = { requests = 0, per_seconds = 1 }\nlogin_per_account = { requests = 0, per_seconds = 1 }\n",
    )
    .await;
    let logins: Vec<_> = (0..60)
        .map(|i| {
            let http = env.http.clone();
            let url = env.url("/api/v1/auth/login");
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .json(&json!({"email": format!("nobody{i}@example.org"), "password": "wrong password"}))
                    .send()
                    .await
                    .expect("login");
                let retry = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    let mut busy = 0;
    for l in logins {
        let (status, retry) = l.await.expect("task");
        match status {
            401 => {}
            503 => {
                assert_eq!(retry.as_deref(), Some("1"));
                busy += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(busy > 0, "the line overflowed at 60 concurrent logins");
    // The server is fine afterwards.
    let a = env.try_login("nobody@example.org", "wrong password").await;
    assert_eq!(a.status, 401);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_logins_leave_one_audit_row_per_burst() {
    for engine in ENGINES {
        let env = Env::start(
            engine,
            "[rate_limits]\nlogin_per_account = { requests = 2, per_seconds = 300 }\n",
        )
        .await;
        for _ in 0..12 {
            let _ = env.try_login("ann@example.org", "wrong password").await;
        }
        let rows = env.audit("login").await;
        let limited = rows
            .iter()
            .filter(|r| r.details.to_string().contains("rate limited"))
            .count();
        assert_eq!(limited, 1, "{engine}: one row for the burst of 10 refusals");
        let wrong = rows
            .iter()
            .filter(|r| r.details.to_string().contains("wrong email or password"))
            .count();
        assert_eq!(wrong, 2, "{engine}");
        env.stop().await;
    }
}
