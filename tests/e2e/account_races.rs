//! Requests that race each other, on SQLite and PostgreSQL: parallel stream creations never pass the per-account
//! limit, two admins demoting each other at once always leave an admin, and refreshes racing each other never
//! fail with "database is locked" (each is a rotation or a detected reuse).

use serde_json::json;
use zipiq::auth::tokens;
use zipiq::db::now_ms;
use zipiq::db::users::{RefreshOutcome, Role};

use crate::account_env::{ENGINES, Env};
use crate::databases::both;

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_stream_creations_stop_at_the_account_limit() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "[auth]\nmax_streams_per_user = 5\n").await;
        let token = env
            .verified_login("lea@example.org", PASSWORD)
            .await
            .str("access_token");
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..40 {
            let request = env
                .http
                .post(env.url("/api/v1/streams"))
                .bearer_auth(&token)
                .json(&json!({ "name": format!("show-{i}") }));
            requests.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
        }
        let mut statuses = Vec::new();
        while let Some(done) = requests.join_next().await {
            statuses.push(done.unwrap().unwrap());
        }
        let created = statuses.iter().filter(|s| **s == 201).count();
        let refused = statuses.iter().filter(|s| **s == 403).count();
        assert_eq!(
            (created, refused),
            (5, 35),
            "{engine}: 40 parallel creations, a limit of 5: {statuses:?}"
        );
        let db = &env.server.server.db;
        let user = db.user_by_email("lea@example.org").await.unwrap().unwrap();
        assert_eq!(db.count_streams_of(user.id).await.unwrap(), 5, "{engine}");
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_demoting_each_other_at_once_leave_an_admin() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        let mut a = env
            .verified_login("ann@example.org", PASSWORD)
            .await
            .str("access_token");
        let mut b = env
            .verified_login("bob@example.org", PASSWORD)
            .await
            .str("access_token");
        let db = env.server.server.db.clone();
        let id_of = |email: &'static str| {
            let db = db.clone();
            async move { db.user_by_email(email).await.unwrap().unwrap().id }
        };
        let (ann, bob) = (
            id_of("ann@example.org").await,
            id_of("bob@example.org").await,
        );
        for round in 0..5 {
            for id in [ann, bob] {
                db.set_user_role(id, Role::Admin).await.unwrap();
            }
            assert_eq!(db.count_active_with_role(Role::Admin).await.unwrap(), 2);
            // Each demotes the other (by role, or by disabling: both count), at the same moment.
            let body = |round: usize| {
                if round.is_multiple_of(2) {
                    json!({"role": "streamer"})
                } else {
                    json!({"disabled": true})
                }
            };
            let ann_demotes_bob = env
                .http
                .patch(env.url(&format!("/api/v1/admin/users/{bob}")))
                .bearer_auth(&a)
                .json(&body(round))
                .send();
            let bob_demotes_ann = env
                .http
                .patch(env.url(&format!("/api/v1/admin/users/{ann}")))
                .bearer_auth(&b)
                .json(&body(round))
                .send();
            let (x, y) = tokio::join!(ann_demotes_bob, bob_demotes_ann);
            let statuses = [x.unwrap().status().as_u16(), y.unwrap().status().as_u16()];
            let admins = db.count_active_with_role(Role::Admin).await.unwrap();
            assert_eq!(
                admins, 1,
                "{engine}, round {round}: one of the two stays an active admin ({statuses:?})"
            );
            assert_eq!(
                statuses.iter().filter(|s| **s == 200).count(),
                1,
                "{engine}, round {round}: one demotion wins, the other is refused: {statuses:?}"
            );
            // Back to two enabled admins with live sessions for the next round.
            for id in [ann, bob] {
                db.set_user_disabled(id, false).await.unwrap();
            }
            if !round.is_multiple_of(2) {
                // Disabling ended the loser's sessions: both log in again.
                a = env
                    .login("ann@example.org", PASSWORD)
                    .await
                    .str("access_token");
                b = env
                    .login("bob@example.org", PASSWORD)
                    .await
                    .str("access_token");
            }
        }
        env.stop().await;
    }
}

/// Refreshes racing each other on one database: distinct sessions all rotate, and racers on one token give one
/// rotation and detected reuse for the rest; none fails (on SQLite a read-then-write transaction used to fail
/// with "database is locked" when another wrote in between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_refreshes_rotate_or_detect_reuse_and_never_fail_on_both_engines() {
    for t in both().await {
        let db = t.db.clone();
        let user = db
            .create_user("race@example.org", "$argon2id$fake", Role::Streamer, true)
            .await
            .unwrap();
        let later = now_ms() + 60_000;
        let mut olds = Vec::new();
        for i in 0..16 {
            let old = tokens::hash(&format!("old-{i}"));
            db.create_login_session(user.id, "127.0.0.1", "test", &old, later)
                .await
                .unwrap();
            olds.push(old);
        }
        // Sixteen sessions refreshed at once, and each token presented twice at once.
        let mut racing = tokio::task::JoinSet::new();
        for (i, old) in olds.iter().enumerate() {
            for copy in 0..2 {
                let (db, old) = (db.clone(), old.clone());
                let new = tokens::hash(&format!("new-{i}-{copy}"));
                racing.spawn(async move { (i, db.rotate_refresh_token(&old, &new, later).await) });
            }
        }
        let mut rotated = vec![0; olds.len()];
        while let Some(done) = racing.join_next().await {
            let (i, outcome) = done.unwrap();
            match outcome {
                Ok(RefreshOutcome::Rotated { .. }) => rotated[i] += 1,
                Ok(RefreshOutcome::Reused { .. }) => {}
                Ok(RefreshOutcome::Refused) => panic!("{}: a current token refused", t.name),
                Err(e) => panic!("{}: a racing refresh failed: {e}", t.name),
            }
        }
        assert!(
            rotated.iter().all(|n| *n == 1),
            "{}: each token rotates exactly once: {rotated:?}",
            t.name
        );
        t.drop_db().await;
    }
}
