//! Cluster failures with real processes (issue 12, item 6): an edge killed with `SIGKILL` loses its pull at the
//! origin within 6 s; the origin killed with `SIGKILL`, then its publisher reconnecting through another node: that
//! node takes the route over, the edge pulls from it, and the edge's viewers, on the sessions they had, resume
//! within a second of the new origin's first keyframe, with sequence numbers and timestamps that continue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use zipiq_client::{Received, WhepClient, WhipClient};

use crate::cluster_start::{Node, Spec, first_key, token_file, with_nodes};
use crate::common::{
    metric_total, parse_video_payload, pump_video, scrape, video_only, video_payload,
    watch_video_only,
};
use crate::databases;

/// Everything the test allows itself, start to finish.
const TEST_DEADLINE: Duration = Duration::from_secs(150);
/// The relay-session gauge of a node.
const RELAYS: &str = "zipiq_cluster_relay_sessions";

/// Drains what `viewer` received so far.
fn drain(viewer: &mut WhepClient) -> Vec<Received> {
    let mut got = Vec::new();
    while let Ok(p) = viewer.packets.try_recv() {
        got.push(p);
    }
    got
}

/// Waits until `node`'s relay-session gauge is `want`; the time it took, or None after `within`.
async fn relays_become(
    http: &reqwest::Client,
    node: &Node,
    want: f64,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let url = format!("http://{}/metrics", node.admin);
    while start.elapsed() < within {
        let (_, metrics) = scrape(http, &url).await;
        if metric_total(&metrics, RELAYS) == Some(want) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Kills `node` at once (`SIGKILL`, like `kill -9`: no clean-up of any kind) and reaps it.
async fn kill(node: &mut Node) {
    let _ = node.child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), node.child.wait()).await;
}

async fn scenario(nodes: &mut [Node]) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client");
    let key = first_key(nodes);
    // The nodes on 127.0.0.12 (A), .13 (B), .14 (C) and .15 (D), in that order.
    let (a, b, c, d) = (0, 1, 2, 3);

    // A publisher on node A; one viewer on edge B, three on edge C, each served by its edge from one pull.
    let publisher = WhipClient::connect(
        &format!("{}/whip/live", nodes[a].base()),
        Some(&key),
        video_only(),
    )
    .await
    .expect("publisher on node A");
    assert!(
        publisher
            .negotiated
            .resource_url
            .starts_with(&nodes[a].base())
    );
    let publisher = Arc::new(publisher);
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    let mut viewers = Vec::new();
    for edge in [b, c, c, c] {
        let viewer = WhepClient::connect(
            &format!("{}/whep/live", nodes[edge].base()),
            None,
            watch_video_only(),
        )
        .await
        .expect("a viewer on an edge");
        assert!(
            viewer
                .negotiated
                .resource_url
                .starts_with(&nodes[edge].base()),
            "served by the edge: {}",
            viewer.negotiated.resource_url
        );
        viewers.push(viewer);
    }
    assert!(
        relays_become(&http, &nodes[a], 2.0, Duration::from_secs(5))
            .await
            .is_some(),
        "one relay per edge at the origin"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (n, viewer) in viewers.iter_mut().enumerate() {
        assert!(!drain(viewer).is_empty(), "viewer {n} gets media");
    }

    // Edge B is killed: the origin drops its pull within 6 s.
    let b_viewer = viewers.remove(0);
    kill(&mut nodes[b]).await;
    let dropped = relays_become(&http, &nodes[a], 1.0, Duration::from_secs(10)).await;
    let dropped = dropped.expect("the origin drops the dead edge's pull");
    println!("the origin dropped the killed edge's pull after {dropped:?}");
    assert!(
        dropped <= Duration::from_secs(6),
        "the origin dropped the dead edge's pull after {dropped:?}, want at most 6 s"
    );
    // Its viewer's node is gone: nothing to close.
    drop(b_viewer);

    // The origin is killed; the publisher (its connection gone) reconnects through node D, which takes the route
    // over once A is dead.
    let before: Vec<Received> = viewers
        .iter_mut()
        .map(|v| drain(v).pop().expect("media before the crash"))
        .collect();
    kill(&mut nodes[a]).await;
    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    for (n, viewer) in viewers.iter_mut().enumerate() {
        // What was in flight when A died.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let late = drain(viewer);
        assert!(
            late.iter().all(|p| p.payload.len() > 6),
            "viewer {n}: nothing but media"
        );
    }
    let last = before;
    let crashed = Instant::now();
    let new_publisher = loop {
        match WhipClient::connect(
            &format!("{}/whip/live", nodes[d].base()),
            Some(&key),
            video_only(),
        )
        .await
        {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    crashed.elapsed() < Duration::from_secs(20),
                    "node D did not take the stream over within 20 s of the crash: {e}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    assert!(
        new_publisher
            .negotiated
            .resource_url
            .starts_with(&nodes[d].base()),
        "the publisher is served by node D: {}",
        new_publisher.negotiated.resource_url
    );
    let new_publisher = Arc::new(new_publisher);
    let stop = Arc::new(AtomicBool::new(false));
    // The pump's first packet is a keyframe (index 0): media must resume within 1 s of it.
    let first_keyframe = Instant::now();
    let pumping = pump_video(new_publisher.clone(), stop.clone());

    for (n, viewer) in viewers.iter_mut().enumerate() {
        let first = tokio::time::timeout(Duration::from_secs(5), viewer.packets.recv())
            .await
            .unwrap_or_else(|_| panic!("viewer {n} on edge C got nothing from the new origin"))
            .expect("the viewer's session is still open");
        let waited = first.at.saturating_duration_since(first_keyframe);
        println!(
            "viewer {n}: media resumed {waited:?} after the new origin's first keyframe ({:?} after the crash)",
            first.at.saturating_duration_since(crashed)
        );
        assert!(
            waited <= Duration::from_secs(1),
            "viewer {n}: media resumed {waited:?} after the new origin's first keyframe, want at most 1 s"
        );
        let (_, index) = parse_video_payload(&first.payload).expect("ours");
        assert_eq!(
            index % 25,
            0,
            "viewer {n} resumes on a keyframe, not at {index}"
        );
        let prev = &last[n];
        // Sequence numbers continue where they stopped; timestamps go on forward (by the time that passed).
        let gap = first.sequence_number.wrapping_sub(prev.sequence_number);
        assert!(
            (1..=64).contains(&gap),
            "viewer {n}: sequence {} after {}, want a continuation",
            first.sequence_number,
            prev.sequence_number
        );
        let forward = first.timestamp.wrapping_sub(prev.timestamp);
        assert!(
            forward > 0 && forward < 90_000 * 60,
            "viewer {n}: timestamp {} after {}, want forward",
            first.timestamp,
            prev.timestamp
        );
        // Then every packet, in order and byte for byte, with consecutive sequence numbers.
        let mut expected_seq = first.sequence_number;
        for k in 1..50u32 {
            let p = tokio::time::timeout(Duration::from_secs(2), viewer.packets.recv())
                .await
                .unwrap_or_else(|_| panic!("viewer {n}: packet {k} after resuming did not come"))
                .expect("open");
            expected_seq = expected_seq.wrapping_add(1);
            assert_eq!(p.sequence_number, expected_seq, "viewer {n}, packet {k}");
            assert_eq!(
                p.payload,
                video_payload(0, index + k, 25),
                "viewer {n}, packet {k}"
            );
        }
    }
    // Node D has exactly one relay session: edge C's new pull.
    assert!(
        relays_become(&http, &nodes[d], 1.0, Duration::from_secs(5))
            .await
            .is_some(),
        "one relay (edge C) at the new origin"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    for viewer in viewers {
        let _ = viewer.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_loses_its_pull_and_an_origin_killed_is_replaced_without_viewers_reconnecting()
 {
    let pg = databases::postgres().await;
    let (_token_dir, token) = token_file();
    let specs: Vec<Spec> = [12u8, 13, 14, 15]
        .into_iter()
        .map(|n| Spec::new(n).with_cluster(&token))
        .collect();
    with_nodes(pg, &specs, TEST_DEADLINE, |nodes, _| {
        scenario(nodes).boxed()
    })
    .await;
}
