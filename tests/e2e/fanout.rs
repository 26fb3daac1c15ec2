//! Fan-out: every viewer gets every packet, byte for byte, starting from a keyframe; simulcast layers and
//! layer switches keep the viewer's sequence continuous; keyframe requests reach the publisher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use zipiq_client::{PublishOptions, WatchOptions, WhepClient, WhipClient};

use crate::common::*;

const GOP: u32 = 50;

/// Sends synthetic video on every layer every 4 ms and audio every 20 ms until `stop`, counting packets in `sent`.
pub(crate) fn spawn_publisher_loop(
    publisher: Arc<WhipClient>,
    layers: u8,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut index: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            for layer in 0..layers {
                let p = packet(
                    index as u16,
                    index.wrapping_mul(3000),
                    true,
                    video_payload(layer, index, GOP),
                );
                let _ = publisher.send_video(layer as usize, &p).await;
            }
            if index.is_multiple_of(5) {
                let a = packet(
                    (index / 5) as u16,
                    (index / 5).wrapping_mul(960),
                    false,
                    bytes::Bytes::from(vec![0xfc, (index & 0xff) as u8, 1, 2, 3]),
                );
                let _ = publisher.send_audio(&a).await;
            }
            sent.store(index, Ordering::Release);
            index += 1;
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
    })
}

/// A publisher sending one layer through `spawn_publisher_loop` on stream "live", live and past its first
/// keyframe (so the picture cache holds a group). `sent` is the index of its last packet. Stop it with `stop`
/// then await `pump`.
pub(crate) struct LivePublisher {
    pub(crate) publisher: Arc<WhipClient>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) sent: Arc<AtomicU32>,
    pub(crate) pump: tokio::task::JoinHandle<()>,
}

pub(crate) async fn live_publisher(server: &TestServer) -> LivePublisher {
    let publisher = Arc::new(
        WhipClient::connect(
            &server.whip("live"),
            Some(&server.key),
            PublishOptions::default(),
        )
        .await
        .expect("publisher connects"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU32::new(0));
    let pump = spawn_publisher_loop(publisher.clone(), 1, stop.clone(), sent.clone());
    assert!(
        eventually(Duration::from_secs(5), || server.server.sfu.is_live("live")).await,
        "stream goes live"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    LivePublisher {
        publisher,
        stop,
        sent,
        pump,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_viewers_receive_every_packet_byte_for_byte_from_a_keyframe() {
    let server = start_server("").await;
    let LivePublisher {
        publisher,
        stop,
        sent,
        pump,
    } = live_publisher(&server).await;

    let mut joins = Vec::new();
    for _ in 0..10 {
        let url = server.whep("live");
        joins.push(tokio::spawn(async move {
            WhepClient::connect(&url, None, WatchOptions::default()).await
        }));
    }
    let mut viewers = Vec::new();
    for j in joins {
        viewers.push(j.await.expect("join").expect("viewer connects"));
    }
    // Every packet from here on must reach every viewer.
    let from = sent.load(Ordering::Acquire) + 5;
    let until = from + 300;
    assert!(
        eventually(Duration::from_secs(10), || sent.load(Ordering::Acquire)
            > until + 20)
        .await,
        "publisher keeps sending"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = pump.await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(server.server.sfu.counts().viewers, 10);
    for (n, viewer) in viewers.iter_mut().enumerate() {
        let mut video = Vec::new();
        let mut audio = 0;
        while let Ok(r) = viewer.packets.try_recv() {
            match r.kind {
                RTPCodecType::Video => video.push(r),
                _ => audio += 1,
            }
        }
        assert!(audio > 0, "viewer {n} got audio");
        let first = video.first().expect("viewer got video");
        assert_eq!(
            first.payload[0], IDR,
            "viewer {n} starts on a keyframe (the cached group)"
        );
        // Sequence numbers are continuous for the viewer.
        for w in video.windows(2) {
            assert_eq!(
                w[1].sequence_number,
                w[0].sequence_number.wrapping_add(1),
                "viewer {n}: continuous sequence"
            );
        }
        let indexes: Vec<u32> = video
            .iter()
            .map(|r| {
                let (layer, index) = parse_video_payload(&r.payload).expect("synthetic payload");
                assert_eq!(layer, 0);
                assert_eq!(
                    r.payload,
                    video_payload(0, index, GOP),
                    "viewer {n}: payload of packet {index} is byte-identical"
                );
                index
            })
            .collect();
        for want in from..=until {
            assert!(indexes.contains(&want), "viewer {n} missed packet {want}");
        }
    }
    for v in viewers {
        assert_eq!(v.close().await.expect("delete"), 200);
    }
    drop(publisher);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_three_layers_best_by_default_then_switch_keeps_sequence() {
    let server = start_server("").await;
    let options = PublishOptions {
        simulcast: vec!["0".into(), "1".into(), "2".into()],
        ..Default::default()
    };
    let publisher = Arc::new(
        WhipClient::connect(&server.whip("live"), Some(&server.key), options)
            .await
            .expect("simulcast publisher connects"),
    );
    assert!(
        publisher
            .negotiated
            .answer
            .contains("a=simulcast:recv 0;1;2"),
        "answer accepts every layer:\n{}",
        publisher.negotiated.answer
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU32::new(0));
    let pump = spawn_publisher_loop(publisher.clone(), 3, stop.clone(), sent.clone());
    assert!(
        eventually(Duration::from_secs(5), || {
            server.server.sfu.is_live("live")
                && server
                    .server
                    .sfu
                    .live_streams()
                    .first()
                    .is_some_and(|s| s.layers.len() == 3)
        })
        .await,
        "three layers arrive"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut best = WhepClient::connect(&server.whep("live"), None, WatchOptions::default())
        .await
        .expect("viewer connects");
    let mut picked = WhepClient::connect(
        &format!("{}?layer=1", server.whep("live")),
        None,
        WatchOptions::default(),
    )
    .await
    .expect("viewer with ?layer=1 connects");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(best.choose_layer(Some("2")).await.expect("switch"), 204);
    // The switch happens at layer 2's next keyframe (every GOP packets).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(best.choose_layer(Some("9")).await.expect("bad layer"), 422);
    stop.store(true, Ordering::Relaxed);
    let _ = pump.await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let drain = |v: &mut WhepClient| {
        let mut out = Vec::new();
        while let Ok(r) = v.packets.try_recv() {
            if r.kind == RTPCodecType::Video {
                out.push(r);
            }
        }
        out
    };
    let got = drain(&mut best);
    let layers: Vec<u8> = got.iter().map(|r| r.payload[1]).collect();
    let first_switch = layers
        .iter()
        .position(|&l| l == 2)
        .expect("viewer switched to layer 2");
    assert!(
        layers[..first_switch].iter().all(|&l| l == 0),
        "best layer (0) by default"
    );
    assert!(
        layers[first_switch..].iter().all(|&l| l == 2),
        "only layer 2 after the switch"
    );
    assert_eq!(
        got[first_switch].payload[0], IDR,
        "the switch happens on a keyframe"
    );
    for w in got.windows(2) {
        assert_eq!(
            w[1].sequence_number,
            w[0].sequence_number.wrapping_add(1),
            "sequence continuous across the layer switch"
        );
    }
    let picked_layers: Vec<u8> = drain(&mut picked).iter().map(|r| r.payload[1]).collect();
    assert!(!picked_layers.is_empty());
    assert!(
        picked_layers.iter().all(|&l| l == 1),
        "?layer=1 gets layer 1"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_keyframe_request_reaches_the_publisher_throttled() {
    let server = start_server("[media]\nkeyframe_request_interval_ms = 60000\n").await;
    let LivePublisher {
        publisher,
        stop,
        pump,
        ..
    } = live_publisher(&server).await;
    let viewer = WhepClient::connect(&server.whep("live"), None, WatchOptions::default())
        .await
        .expect("viewer");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = publisher.keyframe_requests();
    for _ in 0..5 {
        viewer.request_keyframe().await.expect("pli");
    }
    assert!(
        eventually(Duration::from_secs(3), || publisher.keyframe_requests()
            > before)
        .await,
        "PLI forwarded upstream"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        publisher.keyframe_requests(),
        before + 1,
        "five requests within the interval make one PLI"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = pump.await;
    server.stop().await;
}

/// A video-only viewer of "live" with SRTP replay protection off, so that a packet sent again reaches it.
async fn replay_viewer(server: &TestServer) -> WhepClient {
    WhepClient::connect(
        &server.whep("live"),
        None,
        WatchOptions {
            audio: false,
            replay_protection: false,
            ..WatchOptions::default()
        },
    )
    .await
    .expect("viewer")
}

/// The first `n` packets `viewer` receives, or fewer if `within` passes first.
async fn receive(
    viewer: &mut WhepClient,
    n: usize,
    within: Duration,
) -> Vec<zipiq_client::Received> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n && tokio::time::Instant::now() < deadline {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(200), viewer.packets.recv()).await
        {
            got.push(r);
        }
    }
    got
}

/// A viewer's NACK is answered from the source's retransmission buffer: the same sequence number, timestamp and
/// payload come again (the viewer turns SRTP replay protection off to see a packet it already has); a NACK for a
/// packet never sent gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_nack_gets_the_same_packet_again() {
    let server = start_server("").await;
    let LivePublisher {
        publisher: _publisher,
        stop,
        pump,
        ..
    } = live_publisher(&server).await;
    let mut viewer = replay_viewer(&server).await;
    let video = receive(&mut viewer, 60, Duration::from_secs(5)).await;
    assert!(video.len() >= 60, "viewer receives video");
    let wanted = video[40].clone();
    let never = video[59].sequence_number.wrapping_add(30_000);
    viewer
        .nack_video(&[wanted.sequence_number, never])
        .await
        .expect("nack");
    let mut again = None;
    let mut never_came = true;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(100), viewer.packets.recv()).await
        {
            if r.sequence_number == never {
                never_came = false;
            }
            if r.sequence_number == wanted.sequence_number {
                again = Some(r);
                break;
            }
        }
    }
    let again = again.expect("the NACKed packet comes again");
    assert_eq!(again.timestamp, wanted.timestamp);
    assert_eq!(again.marker, wanted.marker);
    assert_eq!(again.payload, wanted.payload, "byte-identical payload");
    assert!(never_came, "a packet never sent is not invented");
    stop.store(true, Ordering::Relaxed);
    let _ = pump.await;
    server.stop().await;
}

/// A viewer that NACKs hundreds of packets gets no more resends than `media.max_retransmits_per_viewer_per_second`
/// within a second; the rest are refused (and counted), not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_no_more_resends_than_its_budget() {
    let server = start_server("[media]\nmax_retransmits_per_viewer_per_second = 40\n").await;
    let LivePublisher {
        publisher: _publisher,
        stop,
        pump,
        ..
    } = live_publisher(&server).await;
    let mut viewer = replay_viewer(&server).await;
    let seen: Vec<u16> = receive(&mut viewer, 300, Duration::from_secs(8))
        .await
        .iter()
        .map(|r| r.sequence_number)
        .collect();
    assert!(seen.len() >= 300, "viewer receives video");
    let wanted: std::collections::HashSet<u16> = seen.iter().copied().collect();
    // 300 packets NACKed in a handful of RTCP packets, all within the same second.
    for chunk in seen.chunks(60) {
        viewer.nack_video(chunk).await.expect("nack");
    }
    let mut again = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(700);
    while tokio::time::Instant::now() < until {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(50), viewer.packets.recv()).await
            && wanted.contains(&r.sequence_number)
        {
            again += 1;
        }
    }
    assert!(again >= 1, "some NACKs are answered");
    assert!(again <= 40, "{again} resends within a second, budget 40");
    stop.store(true, Ordering::Relaxed);
    let _ = pump.await;
    server.stop().await;
}
