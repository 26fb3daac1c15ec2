//! A disabled account publishes nothing and hands out no viewing, with real WebRTC peers on SQLite and PostgreSQL:
//! disabling it through the admin API ends its publisher and its viewers at once; while it is disabled its stream
//! key and its viewer tokens are refused with 403 (problem+json), and no new viewer token is made; enabled again,
//! the key publishes. Disabled elsewhere (`zipiq users disable`, another node), the next key check ends its
//! sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use zipiq_client::{WhepClient, WhipClient};

use crate::account_env::{ENGINES, Env};
use crate::common::{eventually, pump_video, refusal, video_only, watch_video_only};

const PASSWORD: &str = "correct horse battery";

/// Makes `email` an admin and returns its access token.
async fn admin_token(env: &mut Env, email: &str) -> String {
    let login = env.verified_login(email, PASSWORD).await;
    let db = &env.server.server.db;
    let id = db.user_by_email(email).await.unwrap().unwrap().id;
    db.set_user_role(id, zipiq::db::users::Role::Admin)
        .await
        .unwrap();
    login.str("access_token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_stops_publishing_and_its_viewer_tokens_stop_working() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        let admin = admin_token(&mut env, "root@example.org").await;
        let login = env.verified_login("kay@example.org", PASSWORD).await;
        let token = login.str("access_token");
        let user_id = env
            .server
            .server
            .db
            .user_by_email("kay@example.org")
            .await
            .unwrap()
            .unwrap()
            .id;
        let created = env.create_stream(&token, "kays", "private").await;
        assert_eq!(created.status, 201, "{engine}: {}", created.body);
        let key = created.str("key");
        let viewer_token = env
            .post(
                "/api/v1/streams/kays/viewer-tokens",
                json!({}),
                Some(&token),
            )
            .await
            .str("token");
        let whip = env.server.whip("kays");
        let whep = env.server.whep("kays");
        let publisher = Arc::new(
            WhipClient::connect(&whip, Some(&key), video_only())
                .await
                .expect("publishes"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let pumping = pump_video(publisher.clone(), stop.clone());
        let sfu = env.server.server.sfu.clone();
        assert!(eventually(Duration::from_secs(5), || sfu.is_live("kays")).await);
        let mut viewer = WhepClient::connect(&whep, Some(&viewer_token), watch_video_only())
            .await
            .expect("the viewer token watches");
        let got = tokio::time::timeout(Duration::from_secs(5), viewer.packets.recv()).await;
        assert!(matches!(got, Ok(Some(_))), "{engine}: media flows");

        // Disabled by an admin: the publisher and the viewer end at once (well within the key check's 5 s).
        let disabled = env
            .patch(
                &format!("/api/v1/admin/users/{user_id}"),
                json!({"disabled": true}),
                &admin,
            )
            .await;
        assert_eq!(disabled.status, 200, "{engine}: {}", disabled.body);
        assert!(
            eventually(Duration::from_secs(2), || !sfu.has_sessions("kays")).await,
            "{engine}: the account's publisher and viewers end at once"
        );

        // Its key and its viewer tokens are refused with 403 and a reason; no new viewer token is made.
        let (status, problem) = refusal(WhipClient::connect(&whip, Some(&key), video_only()).await);
        assert_eq!(status, 403, "{engine}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("disabled")),
            "{engine}: {problem}"
        );
        let raw = env
            .http
            .post(&whip)
            .header("content-type", "application/sdp")
            .bearer_auth(&key)
            .body("v=0\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status(), 403, "{engine}");
        assert_eq!(
            raw.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{engine}"
        );
        let (status, problem) =
            refusal(WhepClient::connect(&whep, Some(&viewer_token), watch_video_only()).await);
        assert_eq!(
            status, 403,
            "{engine}: the viewer token is refused: {problem}"
        );
        let more = env
            .post(
                "/api/v1/streams/kays/viewer-tokens",
                json!({}),
                Some(&admin),
            )
            .await;
        assert_eq!(
            more.status, 403,
            "{engine}: no viewer token for a disabled account's stream: {}",
            more.body
        );
        let a = env.get("/api/v1/me", Some(&token)).await;
        assert_eq!(a.status, 401, "{engine}: its access token is dead too");

        // Enabled again: the key publishes.
        let enabled = env
            .patch(
                &format!("/api/v1/admin/users/{user_id}"),
                json!({"disabled": false}),
                &admin,
            )
            .await;
        assert_eq!(enabled.status, 200, "{engine}: {}", enabled.body);
        stop.store(true, Ordering::Relaxed);
        let _ = pumping.await;
        let again = WhipClient::connect(&whip, Some(&key), video_only())
            .await
            .expect("an enabled account publishes again");

        // Disabled outside this server's API (what `zipiq users disable` does): the next check ends it.
        let server = &env.server.server;
        assert_eq!(
            zipiq::sfu::key_watch::check_once(&server.sfu, &server.db).await,
            0,
            "{engine}: an enabled account is left alone"
        );
        server.db.set_user_disabled(user_id, true).await.unwrap();
        assert_eq!(
            zipiq::sfu::key_watch::check_once(&server.sfu, &server.db).await,
            1,
            "{engine}"
        );
        assert!(!server.sfu.has_sessions("kays"), "{engine}");
        let (status, _) = refusal(WhipClient::connect(&whip, Some(&key), video_only()).await);
        assert_eq!(status, 403, "{engine}");

        again.drop_connection().await;
        let _ = viewer.close().await;
        if let Ok(publisher) = Arc::try_unwrap(publisher) {
            publisher.drop_connection().await;
        }
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_holding_a_disabled_accounts_viewer_token_are_ended_at_the_next_check() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        // An admin makes a viewer token for a stream it does not own, then is disabled elsewhere.
        let admin = admin_token(&mut env, "ops@example.org").await;
        let server = &env.server.server;
        server
            .db
            .set_stream_visibility("live", zipiq::db::streams::Visibility::Private)
            .await
            .unwrap();
        let viewer_token = env
            .post(
                "/api/v1/streams/live/viewer-tokens",
                json!({}),
                Some(&admin),
            )
            .await;
        assert_eq!(viewer_token.status, 201, "{engine}: {}", viewer_token.body);
        let viewer_token = viewer_token.str("token");
        let publisher = Arc::new(
            WhipClient::connect(
                &env.server.whip("live"),
                Some(&env.server.key),
                video_only(),
            )
            .await
            .expect("publishes"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let pumping = pump_video(publisher.clone(), stop.clone());
        let sfu = server.sfu.clone();
        assert!(eventually(Duration::from_secs(5), || sfu.is_live("live")).await);
        let viewer = WhepClient::connect(
            &env.server.whep("live"),
            Some(&viewer_token),
            watch_video_only(),
        )
        .await
        .expect("watches");
        assert_eq!(sfu.counts().viewers, 1);
        let admin_id = server
            .db
            .user_by_email("ops@example.org")
            .await
            .unwrap()
            .unwrap()
            .id;
        server.db.set_user_disabled(admin_id, true).await.unwrap();
        assert_eq!(
            zipiq::sfu::key_watch::check_once(&server.sfu, &server.db).await,
            1,
            "{engine}: the viewer ends, the publisher (another account's) stays"
        );
        assert_eq!(sfu.counts().viewers, 0, "{engine}");
        assert!(sfu.is_live("live"), "{engine}");
        let (status, _) = refusal(
            WhepClient::connect(
                &env.server.whep("live"),
                Some(&viewer_token),
                watch_video_only(),
            )
            .await,
        );
        assert_eq!(status, 403, "{engine}");
        stop.store(true, Ordering::Relaxed);
        let _ = pumping.await;
        let _ = viewer.close().await;
        if let Ok(publisher) = Arc::try_unwrap(publisher) {
            publisher.drop_connection().await;
        }
        env.stop().await;
    }
}
