//! Streams owned by accounts, with real WebRTC peers (zipiq_client) on SQLite and PostgreSQL: a private stream's
//! WHEP refuses viewers without a viewer token (401), with a bad one (401) or one for another stream (403), and
//! plays to a good one; revoking viewer tokens ends them; a rotated stream key disconnects the publisher at once
//! and refuses its next attempt with the old key, as OBS makes it. A stream turned private while live stops being
//! recorded at once: its broadcast ends with what was public, and nothing after the switch is stored or queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use zipiq_client::{ClientError, PublishOptions, WhepClient, WhipClient};

use crate::account_env::{ENGINES, Env};
use crate::common::{eventually, pump_video, refused_status, video_only, watch_video_only};

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_stream_plays_only_with_its_viewer_token() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        let login = env.verified_login("gus@example.org", PASSWORD).await;
        let token = login.str("access_token");
        let created = env.create_stream(&token, "secret", "private").await;
        assert_eq!(created.status, 201, "{engine}: {}", created.body);
        let key = created.str("key");
        let other = env.create_stream(&token, "other", "private").await;
        assert_eq!(other.status, 201);

        let publisher = Arc::new(
            WhipClient::connect(&env.server.whip("secret"), Some(&key), video_only())
                .await
                .expect("the owner publishes with the stream key"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let pumping = pump_video(publisher.clone(), stop.clone());
        let sfu = env.server.server.sfu.clone();
        assert!(eventually(Duration::from_secs(5), || sfu.is_live("secret")).await);
        let live = env.get("/api/v1/live", None).await;
        assert!(
            !live.body.to_string().contains("secret"),
            "{engine}: private streams are never listed: {}",
            live.body
        );

        let whep = env.server.whep("secret");
        assert_eq!(
            refused_status(WhepClient::connect(&whep, None, watch_video_only()).await),
            401,
            "{engine}: no token"
        );
        assert_eq!(
            refused_status(
                WhepClient::connect(&whep, Some("not.a.token"), watch_video_only()).await
            ),
            401,
            "{engine}: garbage token"
        );
        assert_eq!(
            refused_status(WhepClient::connect(&whep, Some(&token), watch_video_only()).await),
            401,
            "{engine}: an access token is not a viewer token"
        );
        let for_other = env
            .post(
                "/api/v1/streams/other/viewer-tokens",
                json!({}),
                Some(&token),
            )
            .await;
        assert_eq!(for_other.status, 201);
        assert_eq!(
            refused_status(
                WhepClient::connect(&whep, Some(&for_other.str("token")), watch_video_only()).await
            ),
            403,
            "{engine}: a token for another stream"
        );

        let viewer_token = env
            .post(
                "/api/v1/streams/secret/viewer-tokens",
                json!({"ttl_seconds": 600}),
                Some(&token),
            )
            .await;
        assert_eq!(viewer_token.status, 201, "{}", viewer_token.body);
        assert!(
            viewer_token
                .str("watch_url")
                .contains("/watch/secret#token=")
        );
        let good = viewer_token.str("token");
        let mut viewer = WhepClient::connect(&whep, Some(&good), watch_video_only())
            .await
            .expect("a good viewer token watches");
        let got = tokio::time::timeout(Duration::from_secs(5), viewer.packets.recv()).await;
        assert!(matches!(got, Ok(Some(_))), "{engine}: media flows");

        // Revoking every viewer token ends the viewers and refuses the token from then on.
        let revoked = env
            .call(
                Method::DELETE,
                "/api/v1/streams/secret/viewer-tokens",
                Some(&token),
            )
            .await;
        assert_eq!(revoked.status, 204);
        assert!(
            eventually(Duration::from_secs(5), || sfu.counts().viewers == 0).await,
            "{engine}: viewers ended"
        );
        assert_eq!(
            refused_status(WhepClient::connect(&whep, Some(&good), watch_video_only()).await),
            401,
            "{engine}: revoked token"
        );
        let _ = viewer.close().await;

        // Another account cannot manage or even see the stream.
        let intruder = env.verified_login("hal@example.org", PASSWORD).await;
        let a = env
            .post(
                "/api/v1/streams/secret/viewer-tokens",
                json!({}),
                Some(&intruder.str("access_token")),
            )
            .await;
        assert_eq!(a.status, 404, "{engine}");
        let a = env
            .get(
                "/api/v1/streams/secret/broadcasts",
                Some(&intruder.str("access_token")),
            )
            .await;
        assert_eq!(
            a.status, 404,
            "{engine}: a private stream's archive is not listed"
        );

        stop.store(true, Ordering::Relaxed);
        let _ = pumping.await;
        if let Ok(publisher) = Arc::try_unwrap(publisher) {
            let _ = publisher.close().await;
        }
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_stream_key_stops_the_publisher_and_its_next_attempt() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        let login = env.verified_login("ida@example.org", PASSWORD).await;
        let token = login.str("access_token");
        let created = env
            .post("/api/v1/streams", json!({"name": "show"}), Some(&token))
            .await;
        assert_eq!(created.status, 201, "{engine}: {}", created.body);
        assert_eq!(created.body["stream"]["visibility"], "public");
        let old_key = created.str("key");
        let whip = env.server.whip("show");
        // OBS-style: audio on mid 0 (Opus), video on mid 1 (H.264), the key as bearer token.
        let publisher = WhipClient::connect(&whip, Some(&old_key), PublishOptions::default())
            .await
            .expect("publishes with the first key");
        let sfu = env.server.server.sfu.clone();
        assert!(sfu.has_sessions("show"));

        let rotated = env
            .call(Method::POST, "/api/v1/streams/show/key", Some(&token))
            .await;
        assert_eq!(rotated.status, 200, "{engine}: {}", rotated.body);
        let new_key = rotated.str("key");
        assert_ne!(new_key, old_key);
        assert!(
            eventually(Duration::from_secs(5), || !sfu.has_sessions("show")).await,
            "{engine}: the live publisher is disconnected at once"
        );
        // OBS reconnects with the key it has: refused.
        match WhipClient::connect(&whip, Some(&old_key), PublishOptions::default()).await {
            Err(ClientError::Refused { status, .. }) => assert_eq!(status, 401, "{engine}"),
            Err(e) => panic!("{engine}: expected 401, got {e}"),
            Ok(_) => panic!("{engine}: the old key still publishes"),
        }
        let again = WhipClient::connect(&whip, Some(&new_key), PublishOptions::default())
            .await
            .expect("the new key publishes");
        let rotations = env.audit("stream.key_rotated").await;
        assert_eq!(rotations.len(), 1, "{engine}");
        assert_eq!(rotations[0].details["publishers_ended"], 1);
        let _ = again.close().await;
        publisher.drop_connection().await;

        // Rename, visibility and deletion; a deleted stream's name is free again.
        let a = env
            .patch(
                "/api/v1/streams/show",
                json!({"name": "show-2", "visibility": "unlisted"}),
                &token,
            )
            .await;
        assert_eq!(a.status, 200, "{engine}: {}", a.body);
        assert_eq!(a.body["name"], "show-2");
        assert_eq!(a.body["visibility"], "unlisted");
        let a = env
            .call(Method::DELETE, "/api/v1/streams/show-2", Some(&token))
            .await;
        assert_eq!(a.status, 204);
        assert_eq!(
            refused_status(
                WhipClient::connect(&env.server.whip("show-2"), Some(&new_key), video_only()).await
            ),
            401,
            "{engine}: a deleted stream's key is dead"
        );
        // Until its name is taken again, the deleted stream is gone for every operation.
        let a = env
            .call(Method::GET, "/api/v1/streams/show-2", Some(&token))
            .await;
        assert_eq!(a.status, 404, "{engine}: GET after DELETE");
        let a = env
            .patch("/api/v1/streams/show-2", json!({"name": "show-2"}), &token)
            .await;
        assert_eq!(a.status, 404, "{engine}: PATCH after DELETE");
        let a = env
            .call(Method::DELETE, "/api/v1/streams/show-2", Some(&token))
            .await;
        assert_eq!(a.status, 404, "{engine}: DELETE after DELETE");
        let a = env
            .post("/api/v1/streams", json!({"name": "show-2"}), Some(&token))
            .await;
        assert_eq!(a.status, 201, "{engine}: the name is free again");
        let a = env
            .post("/api/v1/streams", json!({"name": "Bad Name"}), Some(&token))
            .await;
        assert_eq!(a.status, 422);
        assert_eq!(a.body["field"], "name");
        let a = env
            .post("/api/v1/streams", json!({"name": "live"}), Some(&token))
            .await;
        assert_eq!(a.status, 409, "{engine}: taken");
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_outside_this_server_stops_its_publisher_at_the_next_check() {
    for engine in ENGINES {
        let env = Env::start(engine, "").await;
        let server = &env.server.server;
        let publisher = WhipClient::connect(
            &env.server.whip("live"),
            Some(&env.server.key),
            video_only(),
        )
        .await
        .expect("publishes");
        assert_eq!(
            zipiq::sfu::key_watch::check_once(&server.sfu, &server.db).await,
            0,
            "{engine}: a current key is left alone"
        );
        // What `zipiq keys create live` (another process) or another node's API does.
        server.db.rotate_stream_key("live").await.expect("rotate");
        assert_eq!(
            zipiq::sfu::key_watch::check_once(&server.sfu, &server.db).await,
            1,
            "{engine}"
        );
        assert!(!server.sfu.has_sessions("live"));
        publisher.drop_connection().await;
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_turned_private_while_live_stops_being_recorded_at_once() {
    use std::collections::HashSet;
    use zipiq::db::broadcasts::ChunkKind;

    for engine in ENGINES {
        let mut env = Env::start(engine, "[recording]\nsegment_target_ms = 1000\n").await;
        let login = env.verified_login("ivy@example.org", PASSWORD).await;
        let token = login.str("access_token");
        let created = env.create_stream(&token, "show", "public").await;
        assert_eq!(created.status, 201, "{engine}: {}", created.body);
        let key = created.str("key");
        let server = &env.server.server;
        let db = server.db.clone();
        let stream = db.find_stream("show").await.unwrap().unwrap();
        let pinned_before: HashSet<String> = server
            .ipfs
            .pinned()
            .await
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();

        // A real H.264 + Opus capture (a keyframe every second), 24 s of it, from a real WebRTC publisher.
        let publisher = Arc::new(
            WhipClient::connect(
                &env.server.whip("show"),
                Some(&key),
                PublishOptions::default(),
            )
            .await
            .expect("the owner publishes"),
        );
        let capture =
            crate::recording::looped(&crate::recording::fixture("h264-opus-360p.zqcap"), 6);
        let playing = {
            let publisher = publisher.clone();
            tokio::spawn(async move { crate::recording::play(&publisher, &capture).await })
        };
        // Some chunks are recorded while the stream is public.
        let mut broadcast = None;
        for _ in 0..300 {
            if let Some(b) = db
                .broadcasts_of_stream(stream.id, 5, None)
                .await
                .unwrap()
                .first()
                && db.chunks_of(b.id).await.unwrap().len() >= 3
            {
                broadcast = Some(b.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let broadcast = broadcast.unwrap_or_else(|| panic!("{engine}: chunks are recorded"));

        let switched = env
            .patch(
                "/api/v1/streams/show",
                json!({"visibility": "private"}),
                &token,
            )
            .await;
        assert_eq!(switched.status, 200, "{engine}: {}", switched.body);
        let switched_at = zipiq::db::now_ms();
        let chunks = db.chunks_of(broadcast.id).await.unwrap();
        let recorded = chunks.len();
        assert!(recorded >= 3);

        // The publisher goes on (a private stream stays live for its viewers) for several more segments.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            server.sfu.is_live("show"),
            "{engine}: the publisher is still live"
        );
        assert_eq!(
            db.chunks_of(broadcast.id).await.unwrap().len(),
            recorded,
            "{engine}: no chunk recorded after the switch"
        );
        let ended = db.broadcast(broadcast.id).await.unwrap().unwrap();
        let ended_at = ended
            .ended_at
            .unwrap_or_else(|| panic!("{engine}: the broadcast ended at the switch"));
        assert!(ended_at <= switched_at, "{engine}: ended by the switch");
        let root = ended
            .root_cid
            .clone()
            .unwrap_or_else(|| panic!("{engine}: the broadcast has its root CID"));
        assert_eq!(
            db.broadcasts_of_stream(stream.id, 5, None)
                .await
                .unwrap()
                .len(),
            1,
            "{engine}: no new broadcast while private"
        );
        // Queued for the archive: the chunks recorded while public and the directory, nothing else.
        let jobs = db.jobs_of_broadcast(broadcast.id).await.unwrap();
        assert_eq!(jobs.len(), recorded + 1, "{engine}: {jobs:?}");
        // Stored in IPFS: those chunks, the playlist and the directory, nothing else.
        let index = server
            .ipfs
            .resolve(
                &zipiq::store::ContentPath::parse(&format!("/ipfs/{root}/index.m3u8")).unwrap(),
            )
            .await
            .expect("the directory has its playlist")
            .cid
            .to_string();
        let allowed: HashSet<String> = chunks
            .iter()
            .map(|c| c.cid.clone())
            .chain([root.clone(), index])
            .collect();
        let pinned_after: HashSet<String> = server
            .ipfs
            .pinned()
            .await
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let new_pins: HashSet<&String> = pinned_after.difference(&pinned_before).collect();
        assert!(
            new_pins.iter().all(|c| allowed.contains(*c)),
            "{engine}: nothing stored after the switch: {:?}",
            new_pins
                .iter()
                .filter(|c| !allowed.contains(**c))
                .collect::<Vec<_>>()
        );
        let media = chunks.iter().filter(|c| c.kind == ChunkKind::Media).count();
        let playlist = reqwest::get(format!("{}/ipfs/{root}/index.m3u8", env.server.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            playlist.matches(".m4s").count(),
            media,
            "{engine}: the root CID covers what was public: {playlist}"
        );

        playing.abort();
        if let Ok(publisher) = Arc::try_unwrap(publisher) {
            let _ = publisher.close().await;
        }
        env.stop().await;
    }
}
