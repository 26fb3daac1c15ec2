//! Lifecycle: viewers survive a publisher's short absence and resume on the same session; after the grace
//! period they are ended; 100 publish/watch/leave cycles leave no session, stream, task or memory behind.

use std::sync::Arc;
use std::time::Duration;

use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use zipiq::sfu::SfuCounts;
use zipiq_client::{PublishOptions, WatchOptions, WhepClient, WhipClient};

use crate::common::*;

async fn pump(publisher: &WhipClient, from: u32, count: u32) {
    for i in from..from + count {
        let _ = publisher
            .send_video(
                0,
                &packet(i as u16, i * 3000, true, video_payload(0, i, 10)),
            )
            .await;
        if i % 4 == 0 {
            let _ = publisher
                .send_audio(&packet(
                    (i / 4) as u16,
                    i * 240,
                    false,
                    bytes::Bytes::from_static(&[0xfc, 9, 9]),
                ))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_resumes_when_publisher_returns_within_grace() {
    let server = start_server("[media]\ngrace_period_ms = 4000\n").await;
    let publisher = server.publish_live().await;
    pump(&publisher, 0, 30).await;
    let mut viewer = WhepClient::connect(&server.whep("live"), None, WatchOptions::default())
        .await
        .expect("viewer");
    pump(&publisher, 30, 40).await;
    assert_eq!(publisher.close().await.expect("delete"), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.server.sfu.counts().viewers,
        1,
        "viewer stays during grace"
    );

    let publisher = WhipClient::connect(
        &server.whip("live"),
        Some(&server.key),
        PublishOptions::default(),
    )
    .await
    .expect("publisher returns");
    // The new publisher's numbering starts somewhere else entirely.
    pump(&publisher, 50_000, 60).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut video = Vec::new();
    while let Ok(r) = viewer.packets.try_recv() {
        if r.kind == RTPCodecType::Video {
            video.push(r);
        }
    }
    let indexes: Vec<u32> = video
        .iter()
        .filter_map(|r| parse_video_payload(&r.payload).map(|(_, i)| i))
        .collect();
    let resumed = indexes
        .iter()
        .position(|&i| i >= 50_000)
        .expect("media resumes from the returning publisher without reconnecting");
    assert_eq!(video[resumed].payload[0], IDR, "resumes on a keyframe");
    assert_eq!(
        video[resumed].sequence_number,
        video[resumed - 1].sequence_number.wrapping_add(1),
        "sequence continuous across the reconnect"
    );
    assert!(
        video[resumed]
            .timestamp
            .wrapping_sub(video[resumed - 1].timestamp)
            < 90_000 * 5,
        "timestamp moves forward by about the time that passed"
    );
    let _ = publisher.close().await;
    let _ = viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_end_after_the_grace_period() {
    let server = start_server("[media]\ngrace_period_ms = 600\n").await;
    let publisher = server.publish_live().await;
    pump(&publisher, 0, 30).await;
    let viewer = WhepClient::connect(&server.whep("live"), None, WatchOptions::default())
        .await
        .expect("viewer");
    publisher.drop_connection().await; // a crash: no DELETE; the peer connection closes
    assert!(
        eventually(Duration::from_secs(25), || server.server.sfu.counts()
            == SfuCounts::default())
        .await,
        "publisher detected gone, viewer ended after grace, stream removed: {:?}",
        server.server.sfu.counts()
    );
    drop(viewer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_publish_watch_leave_cycles_leave_nothing_behind() {
    let server = start_server("").await;
    let url_pub = server.whip("live");
    let url_view = server.whep("live");
    let metrics = tokio::runtime::Handle::current().metrics();
    let cycle = |n: u32| {
        let url_pub = url_pub.clone();
        let url_view = url_view.clone();
        let key = server.key.clone();
        async move {
            let publisher = Arc::new(
                WhipClient::connect(&url_pub, Some(&key), PublishOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("cycle {n}: publisher: {e}")),
            );
            pump(&publisher, 0, 12).await;
            let viewer = WhepClient::connect(&url_view, None, WatchOptions::default())
                .await
                .unwrap_or_else(|e| panic!("cycle {n}: viewer: {e}"));
            pump(&publisher, 12, 8).await;
            assert_eq!(viewer.close().await.expect("viewer delete"), 200);
            let publisher = Arc::try_unwrap(publisher).ok().expect("sole owner");
            assert_eq!(publisher.close().await.expect("publisher delete"), 200);
        }
    };
    let settle = || async {
        assert!(
            eventually(Duration::from_secs(10), || server.server.sfu.counts()
                == SfuCounts::default())
            .await,
            "nothing live: {:?}",
            server.server.sfu.counts()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Warm up allocators and lazily created state first.
    for n in 0..5 {
        cycle(n).await;
    }
    settle().await;
    let tasks_before = metrics.num_alive_tasks();
    let rss_before = rss_bytes();
    for n in 5..105 {
        cycle(n).await;
    }
    settle().await;
    let tasks_after = eventually_value(
        Duration::from_secs(10),
        || metrics.num_alive_tasks(),
        tasks_before,
    )
    .await;
    let rss_after = rss_bytes();
    eprintln!(
        "lifecycle: alive tasks {tasks_before} -> {tasks_after}, RSS {} -> {} KiB after 100 cycles",
        rss_before >> 10,
        rss_after >> 10
    );
    assert!(
        tasks_after <= tasks_before,
        "tasks return to where they started: {tasks_before} -> {tasks_after}"
    );
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 16 << 20,
        "memory returns close to where it started: {} MiB -> {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
    server.stop().await;
}

/// Polls `f` until it is at most `target` or the timeout passes; returns the last value.
async fn eventually_value(timeout: Duration, f: impl Fn() -> usize, target: usize) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = f();
        if v <= target || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
