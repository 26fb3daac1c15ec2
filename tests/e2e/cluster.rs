//! The cluster on one real PostgreSQL database, with in-process nodes and real WebRTC peers: one stream has one
//! origin (two simultaneous publishes on two nodes give one 201 and one 409), a viewer on another node is sent to
//! the origin and gets the media, the route is given back when the publisher leaves, a node whose route was taken
//! over stops serving as origin, a full node places a publisher on a node with room (307, absolute Location), a
//! full or draining node sends viewers to a node of its region, else of any region (307, absolute Location), and
//! `GET /api/v1/cluster` shows nodes and routes to admins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Executor;
use zipiq::Server;
use zipiq_client::{ClientError, WhepClient, WhipClient};

use crate::cluster_start::token_file;
use crate::common::{
    TcpLink, eventually, pump_video, start_node, video_only, video_payload, watch_video_only,
};
use crate::databases;

/// Fast heartbeats so that tests see leases and deaths in seconds.
fn node_config(pg_url: &str, name: &str, extra: &str) -> String {
    format!(
        "[database]\nurl = \"{pg_url}\"\nacquire_timeout_ms = 1000\n[server]\nnode_name = \"{name}\"\n\
         [cluster]\nenabled = true\nheartbeat_interval_ms = 200\nnode_dead_after_ms = 1000\nlease_ms = 1500\n\
         placement_cpu_margin = 1.0\n{extra}"
    )
}

fn base(server: &Server) -> String {
    format!("http://{}", server.http_addr)
}

/// Whether `server` has a publisher session of `stream`.
fn publishes(server: &Server, stream: &str) -> bool {
    server
        .sfu
        .publisher_sessions()
        .iter()
        .any(|s| s.stream == stream)
}

/// An admin's access token on `server`: an account made as `zipiq users create --admin` makes it, then a login.
async fn admin_token(server: &Server) -> String {
    let text =
        zipiq::cli::users::create_user(&server.db, &server.config, "root@example.org", true, false)
            .await
            .expect("create admin");
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once; change it after logging in): "))
        .expect("generated password")
        .to_owned();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", base(server)))
        .json(&serde_json::json!({"email": "root@example.org", "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login json");
    answer["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

async fn route_count(pg: &databases::TestDb, stream: &str) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM stream_routes WHERE stream = $1")
        .bind(stream)
        .fetch_one(pg.db.pool())
        .await
        .expect("count routes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_has_one_origin_and_viewers_elsewhere_are_sent_to_it() {
    let pg = databases::postgres().await;
    let (a, first, _dir_a) = start_node(&node_config(&pg.url, "node-a", "")).await;
    let (b, none, _dir_b) = start_node(&node_config(&pg.url, "node-b", "")).await;
    let key = first.expect("the first node creates the first stream").key;
    assert!(none.is_none(), "the second node finds the stream there");

    // Two publishers of one stream on two nodes at the same instant: exactly one 201, the other 409.
    let (url_a, url_b) = (
        format!("{}/whip/live", base(&a)),
        format!("{}/whip/live", base(&b)),
    );
    let (ra, rb) = tokio::join!(
        WhipClient::connect(&url_a, Some(&key), video_only()),
        WhipClient::connect(&url_b, Some(&key), video_only()),
    );
    let (publisher, origin, edge) = match (ra, rb) {
        (Ok(p), Err(ClientError::Refused { status: 409, body })) => {
            assert!(body.contains("node-a"), "{body}");
            (p, &a, &b)
        }
        (Err(ClientError::Refused { status: 409, body }), Ok(p)) => {
            assert!(body.contains("node-b"), "{body}");
            (p, &b, &a)
        }
        (ra, rb) => panic!(
            "expected one 201 and one 409, got {:?} and {:?}",
            ra.err(),
            rb.err()
        ),
    };
    assert_eq!(route_count(&pg, "live").await, 1);
    let publisher = Arc::new(publisher);
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    assert!(eventually(Duration::from_secs(5), || origin.sfu.is_live("live")).await);

    // A viewer who asks the other node is sent to the origin (307) and gets the media there.
    let mut viewer = WhepClient::connect(
        &format!("{}/whep/live", base(edge)),
        None,
        watch_video_only(),
    )
    .await
    .expect("viewer follows the redirect to the origin");
    assert!(
        viewer.negotiated.resource_url.starts_with(&base(origin)),
        "the session lives on the origin: {}",
        viewer.negotiated.resource_url
    );
    let got = tokio::time::timeout(Duration::from_secs(5), viewer.packets.recv())
        .await
        .expect("a packet within 5 s")
        .expect("packet");
    assert!(!got.payload.is_empty());

    // Admins see both nodes alive and the route.
    let token = admin_token(&a).await;
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!("{}/api/v1/cluster", base(&a)))
        .send()
        .await
        .expect("cluster view");
    assert_eq!(anonymous.status(), 401);
    let view: serde_json::Value = http
        .get(format!("{}/api/v1/cluster", base(&a)))
        .bearer_auth(&token)
        .send()
        .await
        .expect("cluster view")
        .json()
        .await
        .expect("json");
    assert_eq!(view["enabled"], true);
    let nodes: Vec<&str> = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["alive"] == true)
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert_eq!(nodes, vec!["node-a", "node-b"], "{view}");
    let routes = view["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 1, "{view}");
    assert_eq!(routes[0]["stream"], "live");
    assert_eq!(
        routes[0]["node_id"].as_str(),
        Some(origin.config.server.node().as_str())
    );
    assert_eq!(routes[0]["epoch"], 1);
    assert_eq!(routes[0]["valid"], true);

    // The publisher leaves: the route is given back, and the other node may take the stream.
    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    let _ = viewer.close().await;
    let publisher = Arc::try_unwrap(publisher).ok().expect("only owner");
    assert_eq!(publisher.close().await.expect("DELETE"), 200);
    let mut released = false;
    // At most the heartbeat after the publisher left; under a loaded machine a few.
    for _ in 0..150 {
        if route_count(&pg, "live").await == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(released, "the route is given back after the publisher left");
    let again = WhipClient::connect(
        &format!("{}/whip/live", base(edge)),
        Some(&key),
        video_only(),
    )
    .await
    .expect("the other node takes the stream once it is free");
    let _ = again.close().await;
    a.shutdown().await;
    b.shutdown().await;
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_route_was_taken_over_stops_serving_as_origin() {
    let pg = databases::postgres().await;
    let (a, first, _dir) = start_node(&node_config(&pg.url, "node-a", "")).await;
    let key = first.expect("first stream").key;
    let publisher =
        WhipClient::connect(&format!("{}/whip/live", base(&a)), Some(&key), video_only())
            .await
            .expect("publish");
    assert!(publishes(&a, "live"));
    // Another node took the route over (a new epoch), as after a partition in which node-a looked dead.
    pg.db
        .pool()
        .execute(
            "UPDATE stream_routes SET node_id = 'node-z', epoch = epoch + 1 WHERE stream = 'live'",
        )
        .await
        .expect("take over");
    assert!(
        eventually(Duration::from_secs(5), || !publishes(&a, "live")).await,
        "node-a ends its publisher once it learns it is no longer the origin"
    );
    drop(publisher);
    a.shutdown().await;
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_places_a_publisher_on_a_node_with_room() {
    let pg = databases::postgres().await;
    let full = "[media]\nmax_sessions = 1\nreserved_publisher_sessions = 0\n";
    let (a, first, _dir_a) = start_node(&node_config(&pg.url, "node-a", full)).await;
    let (b, _, _dir_b) = start_node(&node_config(&pg.url, "node-b", "")).await;
    let key = first.expect("first stream").key;
    let (_, second_key) = a.db.create_stream("second").await.expect("second stream");
    let busy = WhipClient::connect(&format!("{}/whip/live", base(&a)), Some(&key), video_only())
        .await
        .expect("publish on node-a");
    // Wait for node-a's heartbeat to count the session.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The answer itself: a 307 with an absolute Location on node-b, which keeps method and body.
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{}/whip/second", base(&a)))
        .bearer_auth(&second_key)
        .header("Content-Type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .expect("WHIP POST");
    assert_eq!(raw.status(), 307);
    let location = raw.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        location.starts_with(&format!("{}/whip/second", base(&b))),
        "{location}"
    );

    // A WHIP client (following redirects as OBS does) ends up publishing on node-b.
    let moved = WhipClient::connect(
        &format!("{}/whip/second", base(&a)),
        Some(&second_key),
        video_only(),
    )
    .await
    .expect("publisher follows the redirect");
    assert!(moved.negotiated.resource_url.starts_with(&base(&b)));
    assert!(publishes(&b, "second") && !publishes(&a, "second"));
    let _ = moved.close().await;
    let _ = busy.close().await;
    a.shutdown().await;
    b.shutdown().await;
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_gone_for_30_s_streams_go_on_and_one_origin_remains() {
    let pg = databases::postgres().await;
    let link = TcpLink::to_database("127.0.0.1:0".parse().expect("address"), &pg.url).await;
    let proxied = link.url(&pg.url);
    let (a, first, _dir_a) = start_node(&node_config(&proxied, "node-a", "")).await;
    let (b, _, _dir_b) = start_node(&node_config(&proxied, "node-b", "")).await;
    let key = first.expect("first stream").key;
    let publisher = Arc::new(
        WhipClient::connect(&format!("{}/whip/live", base(&a)), Some(&key), video_only())
            .await
            .expect("publish on node-a"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    let mut viewer =
        WhepClient::connect(&format!("{}/whep/live", base(&a)), None, watch_video_only())
            .await
            .expect("viewer on node-a");
    // Packets (by their index) the viewer got, collected in the background.
    let indexes = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let collector = {
        let indexes = indexes.clone();
        tokio::spawn(async move {
            while let Some(p) = viewer.packets.recv().await {
                if let Some((_, i)) = crate::common::parse_video_payload(&p.payload) {
                    indexes.lock().unwrap().push(i);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    link.set_down(true);
    let cut_at = indexes
        .lock()
        .unwrap()
        .last()
        .copied()
        .expect("packets before the cut");
    // New requests that need the database get 503 with Retry-After while it is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = reqwest::Client::new()
        .post(format!("{}/whip/live", base(&b)))
        .bearer_auth(&key)
        .header("Content-Type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .expect("WHIP during the outage");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_secs(28)).await;
    let before_return = indexes.lock().unwrap().last().copied().expect("packets");
    link.set_down(false);

    // The stream went on: every packet from before the cut to the return arrived, in order, none missing.
    {
        let got = indexes.lock().unwrap();
        let window: Vec<u32> = got
            .iter()
            .copied()
            .filter(|i| (cut_at..=before_return).contains(i))
            .collect();
        let expected = (before_return - cut_at + 1) as usize;
        assert!(
            before_return - cut_at > 2000,
            "the publisher kept sending for 30 s ({cut_at}..{before_return})"
        );
        let mut unique = window.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            expected,
            "no packet lost while the database was gone ({} of {expected})",
            unique.len()
        );
    }
    assert!(publishes(&a, "live"), "node-a is still the origin");

    // Back: node-a renews its route (same node, same epoch) and node-b cannot become a second origin.
    let mut renewed = false;
    for _ in 0..50 {
        let row: Option<(String, i64, bool)> = sqlx::query_as(
            "SELECT node_id, epoch, lease_until > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT \
             FROM stream_routes WHERE stream = 'live'",
        )
        .fetch_optional(pg.db.pool())
        .await
        .expect("route");
        if row == Some(("node-a".to_owned(), 1, true)) {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "node-a holds the route again with epoch 1");
    let second =
        WhipClient::connect(&format!("{}/whip/live", base(&b)), Some(&key), video_only()).await;
    assert!(
        matches!(second, Err(ClientError::Refused { status: 409, .. })),
        "a second origin on node-b: {:?}",
        second.err()
    );
    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    collector.abort();
    drop(publisher);
    a.shutdown().await;
    b.shutdown().await;
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_pull_the_stream_once_and_their_viewers_get_every_packet_from_a_keyframe() {
    let pg = databases::postgres().await;
    let (_secrets, token) = token_file();
    let extra = format!("{token}pull_idle_ms = 1000\n");
    let (a, first, _dir_a) = start_node(&node_config(&pg.url, "node-a", &extra)).await;
    let (b, _, _dir_b) = start_node(&node_config(&pg.url, "node-b", &extra)).await;
    let (c, _, _dir_c) = start_node(&node_config(&pg.url, "node-c", &extra)).await;
    let key = first.expect("first stream").key;
    let publisher = Arc::new(
        WhipClient::connect(&format!("{}/whip/live", base(&a)), Some(&key), video_only())
            .await
            .expect("publish on node-a"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    assert!(eventually(Duration::from_secs(5), || a.sfu.is_live("live")).await);

    // Five viewers on each edge, joining together.
    let mut joins = Vec::new();
    for edge in [&b, &c] {
        for _ in 0..5 {
            let url = format!("{}/whep/live", base(edge));
            joins.push(tokio::spawn(async move {
                WhepClient::connect(&url, None, watch_video_only()).await
            }));
        }
    }
    let mut viewers = Vec::new();
    for (n, join) in joins.into_iter().enumerate() {
        let viewer = join.await.expect("join").expect("viewer on an edge");
        let edge = if n < 5 { &b } else { &c };
        assert!(
            viewer.negotiated.resource_url.starts_with(&base(edge)),
            "served by the edge, not redirected: {}",
            viewer.negotiated.resource_url
        );
        viewers.push(viewer);
    }
    // The origin has exactly one relay session per edge, counted as a relay, not a viewer; each edge one pull,
    // counted as a relay, not a publisher.
    let at_origin = a.sfu.counts();
    assert_eq!(
        (at_origin.relays, at_origin.viewers),
        (2, 0),
        "one relay per edge at the origin, and no viewer"
    );
    for edge in [&b, &c] {
        let counts = edge.sfu.counts();
        assert_eq!(
            (counts.relays, counts.publishers, counts.viewers),
            (1, 0, 5),
            "one pull and five viewers on each edge"
        );
    }

    // Every viewer starts on a keyframe and gets every packet after it, byte for byte, for two seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (n, viewer) in viewers.iter_mut().enumerate() {
        let mut got = Vec::new();
        while let Ok(p) = viewer.packets.try_recv() {
            got.push(p);
        }
        assert!(got.len() > 100, "viewer {n} got {} packets", got.len());
        let first = crate::common::parse_video_payload(&got[0].payload)
            .expect("ours")
            .1;
        assert_eq!(
            first % 25,
            0,
            "viewer {n} starts on a keyframe, not at {first}"
        );
        for (k, p) in got.iter().enumerate() {
            let expected = video_payload(0, first + k as u32, 25);
            assert_eq!(
                p.payload, expected,
                "viewer {n}, packet {k}: every packet, in order, unchanged"
            );
        }
    }

    // node-b's viewers leave: its pull is closed after pull_idle_ms, and the origin's relay with it.
    for viewer in viewers.drain(..5) {
        let _ = viewer.close().await;
    }
    assert!(
        eventually(Duration::from_secs(10), || a.sfu.counts().relays == 1
            && b.sfu.counts().relays == 0)
        .await,
        "the idle pull and its relay session end"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    for viewer in viewers {
        let _ = viewer.close().await;
    }
    drop(publisher);
    for node in [a, b, c] {
        node.shutdown().await;
    }
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_of_one_region_share_one_pull_from_an_origin_in_another() {
    let pg = databases::postgres().await;
    let (_secrets, token) = token_file();
    let in_region = |region: &str| format!("region = \"{region}\"\n{token}");
    let (a, first, _dir_a) = start_node(&node_config(&pg.url, "node-a", &in_region("eu"))).await;
    let (b, _, _dir_b) = start_node(&node_config(&pg.url, "node-b", &in_region("us"))).await;
    let (c, _, _dir_c) = start_node(&node_config(&pg.url, "node-c", &in_region("us"))).await;
    let key = first.expect("first stream").key;
    let publisher = Arc::new(
        WhipClient::connect(&format!("{}/whip/live", base(&a)), Some(&key), video_only())
            .await
            .expect("publish on node-a"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    assert!(eventually(Duration::from_secs(5), || a.sfu.is_live("live")).await);
    // Each node knows the others' regions (a heartbeat or two).
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The first edge of region "us" pulls from the origin; the second from the first.
    let mut viewers = Vec::new();
    for edge in [&b, &c] {
        let viewer = WhepClient::connect(
            &format!("{}/whep/live", base(edge)),
            None,
            watch_video_only(),
        )
        .await
        .expect("a viewer on an edge");
        assert!(
            viewer.negotiated.resource_url.starts_with(&base(edge)),
            "served by the edge: {}",
            viewer.negotiated.resource_url
        );
        viewers.push(viewer);
    }
    let pulls: Vec<(String, String)> = sqlx::query_as(
        "SELECT node_id, source FROM stream_pulls WHERE stream = 'live' ORDER BY node_id",
    )
    .fetch_all(pg.db.pool())
    .await
    .expect("pulls");
    assert_eq!(
        pulls,
        vec![
            ("node-b".to_owned(), "node-a".to_owned()),
            ("node-c".to_owned(), "node-b".to_owned())
        ],
        "node-c pulls through node-b, its region's node"
    );
    // One copy leaves the origin; node-b has its pull and node-c's relay.
    assert_eq!(a.sfu.counts().relays, 1, "one relay at the origin");
    assert_eq!(b.sfu.counts().relays, 2, "node-b: its pull and node-c's");
    assert_eq!(c.sfu.counts().relays, 1, "node-c: its pull");

    // The viewer two hops away gets every packet from a keyframe, byte for byte.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let far = &mut viewers[1];
    let mut got = Vec::new();
    while let Ok(p) = far.packets.try_recv() {
        got.push(p);
    }
    assert!(got.len() > 40, "the far viewer got {} packets", got.len());
    let first = crate::common::parse_video_payload(&got[0].payload)
        .expect("ours")
        .1;
    assert_eq!(first % 25, 0, "starts on a keyframe, not at {first}");
    for (k, p) in got.iter().enumerate() {
        assert_eq!(
            p.payload,
            video_payload(0, first + k as u32, 25),
            "packet {k}"
        );
    }

    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    for viewer in viewers {
        let _ = viewer.close().await;
    }
    drop(publisher);
    for node in [c, b, a] {
        node.shutdown().await;
    }
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_pulls_another_simulcast_layer_only_while_a_viewer_wants_it() {
    let pg = databases::postgres().await;
    let (_secrets, token) = token_file();
    let extra = format!("{token}pull_idle_ms = 1000\n");
    let (a, first, _dir_a) = start_node(&node_config(&pg.url, "node-a", &extra)).await;
    let (b, _, _dir_b) = start_node(&node_config(&pg.url, "node-b", &extra)).await;
    let key = first.expect("first stream").key;
    let options = zipiq_client::PublishOptions {
        simulcast: vec!["0".into(), "1".into(), "2".into()],
        ..Default::default()
    };
    let publisher = Arc::new(
        WhipClient::connect(&format!("{}/whip/live", base(&a)), Some(&key), options)
            .await
            .expect("simulcast publisher on node-a"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let pumping =
        crate::fanout::spawn_publisher_loop(publisher.clone(), 3, stop.clone(), sent.clone());
    assert!(
        eventually(Duration::from_secs(5), || a
            .sfu
            .live_streams()
            .first()
            .is_some_and(|s| s.layers.len() == 3))
        .await,
        "three layers at the origin"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A viewer of the best layer: one pull, of the best layer, and the edge knows the origin's layers.
    let whep = format!("{}/whep/live", base(&b));
    let mut best = WhepClient::connect(&whep, None, zipiq_client::WatchOptions::default())
        .await
        .expect("viewer on the edge");
    assert_eq!(a.sfu.counts().relays, 1, "one pull");
    assert_eq!(
        b.sfu.live_streams().first().map(|s| s.layers.clone()),
        Some(vec!["0".to_owned(), "1".to_owned(), "2".to_owned()]),
        "the edge offers the origin's layers"
    );
    // A viewer of layer 2: the edge pulls that layer too, and the viewer moves to it at its keyframe.
    let mut picked = WhepClient::connect(
        &format!("{whep}?layer=2"),
        None,
        zipiq_client::WatchOptions::default(),
    )
    .await
    .expect("viewer of layer 2 on the edge");
    assert!(
        eventually(Duration::from_secs(5), || a.sfu.counts().relays == 2
            && b.sfu.counts().relays == 2)
        .await,
        "one more pull, for layer 2"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let video = |v: &mut WhepClient| {
        let mut out = Vec::new();
        while let Ok(r) = v.packets.try_recv() {
            if r.kind == webrtc::rtp_transceiver::rtp_codec::RTPCodecType::Video {
                out.push(r);
            }
        }
        out
    };
    let got = video(&mut picked);
    let layers: Vec<u8> = got.iter().map(|r| r.payload[1]).collect();
    let switch = layers
        .iter()
        .position(|&l| l == 2)
        .expect("the viewer gets layer 2");
    assert!(
        layers[..switch].iter().all(|&l| l == 0) && layers[switch..].iter().all(|&l| l == 2),
        "the pulled layer until layer 2 comes, then layer 2 only: {layers:?}"
    );
    assert_eq!(
        got[switch].payload[0],
        crate::common::IDR,
        "switched on a keyframe"
    );
    for w in got.windows(2) {
        assert_eq!(
            w[1].sequence_number,
            w[0].sequence_number.wrapping_add(1),
            "sequence continuous across the switch"
        );
    }
    let best_layers: Vec<u8> = video(&mut best).iter().map(|r| r.payload[1]).collect();
    assert!(!best_layers.is_empty() && best_layers.iter().all(|&l| l == 0));

    // The layer's viewer leaves: its pull closes after pull_idle_ms; the stream's pull stays for the other one.
    let _ = picked.close().await;
    assert!(
        eventually(Duration::from_secs(10), || a.sfu.counts().relays == 1
            && b.sfu.counts().relays == 1)
        .await,
        "the idle layer pull closes"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    let _ = best.close().await;
    drop(publisher);
    for node in [b, a] {
        node.shutdown().await;
    }
    pg.drop_db().await;
}

/// The answer to a bare WHEP POST to `url`, redirects not followed: (status, Location).
async fn whep_answer(url: &str) -> (u16, String) {
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(url)
        .header("Content-Type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .expect("WHEP POST");
    let location = answer
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (answer.status().as_u16(), location)
}

/// Polls a bare WHEP POST to `url` until it is redirected to a URL starting with `want` (the nodes learn each
/// other's load and draining from heartbeats); returns the last answer.
async fn whep_redirected_to(url: &str, want: &str) -> (u16, String) {
    let mut answer = whep_answer(url).await;
    for _ in 0..50 {
        if answer.0 == 307 && answer.1.starts_with(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = whep_answer(url).await;
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_draining_node_sends_viewers_to_its_region_first_then_anywhere() {
    let pg = databases::postgres().await;
    let (_secrets, token) = token_file();
    let cluster = |region: &str| format!("{token}pull_idle_ms = 1000\nregion = \"{region}\"\n");
    // node-b is full with two sessions (its pull of the stream and one viewer).
    let full = "[media]\nmax_sessions = 2\nreserved_publisher_sessions = 0\n";
    let (a, first, _dir_a) = start_node(&node_config(&pg.url, "node-a", &cluster("eu"))).await;
    let (b, _, _dir_b) = start_node(&node_config(
        &pg.url,
        "node-b",
        &format!("{}{full}", cluster("us")),
    ))
    .await;
    let (c, _, _dir_c) = start_node(&node_config(&pg.url, "node-c", &cluster("us"))).await;
    let key = first.expect("first stream").key;
    let publisher = Arc::new(
        WhipClient::connect(&format!("{}/whip/live", base(&a)), Some(&key), video_only())
            .await
            .expect("publish on node-a"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    assert!(eventually(Duration::from_secs(5), || a.sfu.is_live("live")).await);
    let first_viewer =
        WhepClient::connect(&format!("{}/whep/live", base(&b)), None, watch_video_only())
            .await
            .expect("a viewer on node-b, from its pull");
    assert!(first_viewer.negotiated.resource_url.starts_with(&base(&b)));

    // node-b is full: a viewer is sent to node-c, of its region, though node-a (another region) sorts first by
    // name and load (in-process nodes share the process's CPU and egress figures).
    let (base_a, base_c) = (base(&a), base(&c));
    let on_b = format!("{}/whep/live", base(&b));
    let (status, location) = whep_redirected_to(&on_b, &format!("{base_c}/")).await;
    assert_eq!(status, 307, "{location}");
    assert_eq!(
        location,
        format!("{base_c}/whep/live?placed=node-c"),
        "an absolute Location naming the chosen node"
    );
    let mut second_viewer =
        WhepClient::connect(&format!("{}/whep/live", base(&b)), None, watch_video_only())
            .await
            .expect("a viewer follows the redirect");
    assert!(
        second_viewer.negotiated.resource_url.starts_with(&base(&c)),
        "served by node-c: {}",
        second_viewer.negotiated.resource_url
    );
    tokio::time::timeout(Duration::from_secs(5), second_viewer.packets.recv())
        .await
        .expect("a packet within 5 s")
        .expect("packet");

    // node-c drains (SIGTERM; its viewer keeps it draining): it sends viewers away, and node-b, full, no longer
    // has a node of its region to send them to: node-a, of another region, takes them.
    let draining = tokio::spawn(c.shutdown());
    let (status, location) = whep_redirected_to(&on_b, &format!("{base_a}/")).await;
    assert_eq!(status, 307, "{location}");
    assert_eq!(location, format!("{base_a}/whep/live?placed=node-a"));
    let mut third_viewer =
        WhepClient::connect(&format!("{}/whep/live", base(&b)), None, watch_video_only())
            .await
            .expect("a viewer follows the redirect");
    assert!(
        third_viewer.negotiated.resource_url.starts_with(&base(&a)),
        "served by node-a: {}",
        third_viewer.negotiated.resource_url
    );
    tokio::time::timeout(Duration::from_secs(5), third_viewer.packets.recv())
        .await
        .expect("a packet within 5 s")
        .expect("packet");
    // node-c's own answer while it drains, with a viewer's query kept (once its heartbeat read node-b full).
    let (status, location) = whep_redirected_to(
        &format!("{base_c}/whep/live?layer=h"),
        &format!("{base_a}/"),
    )
    .await;
    assert_eq!(status, 307, "{location}");
    assert_eq!(
        location,
        format!("{base_a}/whep/live?layer=h&placed=node-a")
    );

    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    for viewer in [first_viewer, second_viewer, third_viewer] {
        let _ = viewer.close().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), draining).await;
    drop(publisher);
    a.shutdown().await;
    b.shutdown().await;
    pg.drop_db().await;
}
