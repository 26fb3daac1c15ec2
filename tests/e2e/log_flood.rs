//! Logs under a flood, with the real `zipiq` binary: 5,000 junk STUN datagrams (each of which webrtc-rs logs as a
//! warning) write at most `log.rate_limit` lines of that kind per window, then one "log events suppressed" line
//! per window, and the rest are counted in `zipiq_log_events_suppressed_total`. Session ids, which are
//! capabilities, never appear whole in the logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use zipiq_client::{PublishOptions, WhipClient};

use crate::operations::{free_tcp_port, free_udp_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_datagrams_writes_a_bounded_number_of_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (http, admin, media) = (free_tcp_port(), free_tcp_port(), free_udp_port());
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [media]\nudp_listen = \"127.0.0.1:{media}\"\n\
         [database]\nurl = \"sqlite://{}\"\n[log]\nlevel = \"info\"\nformat = \"json\"\n\
         rate_limit = {{ events = 50, per_seconds = 2 }}\n\
         [auth]\njwt_key_file = \"{}\"\n\
         [ipfs]\nrepo_dir = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nannounce = false\n\
         [archive]\nmode = \"off\"\n",
        dir.path().join("zipiq.db").display(),
        dir.path().join("jwt-key").display(),
        dir.path().join("ipfs").display(),
    );
    let config_path = dir.path().join("zipiq.toml");
    std::fs::write(&config_path, config).expect("config");
    let mut child = crate::common::serve_process(&config_path);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (key_tx, key_rx) = tokio::sync::oneshot::channel();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let sink = lines.clone();
    let collector = tokio::spawn(async move {
        let mut key_tx = Some(key_tx);
        while let Ok(Some(line)) = reader.next_line().await {
            if let Some(key) = line.trim().strip_prefix("Stream key:")
                && let Some(tx) = key_tx.take()
            {
                let _ = tx.send(key.trim().to_owned());
            }
            sink.lock().expect("lines").push(line);
        }
    });
    let key = tokio::time::timeout(Duration::from_secs(60), key_rx)
        .await
        .expect("banner in time")
        .expect("key");

    // A real session first: its id must not reach the logs whole.
    let base = format!("http://127.0.0.1:{http}");
    let publisher = WhipClient::connect(
        &format!("{base}/whip/live"),
        Some(&key),
        PublishOptions::default(),
    )
    .await
    .expect("publisher");
    let session_id = publisher
        .negotiated
        .resource_url
        .rsplit('/')
        .next()
        .expect("id")
        .to_owned();
    assert_eq!(publisher.close().await.expect("DELETE"), 200);

    // 5,000 STUN binding requests without a USERNAME, from one socket, in about a second.
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("socket");
    let mut datagram = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    datagram.extend_from_slice(&[7u8; 12]);
    for i in 0..5000u32 {
        let _ = junk
            .send_to(&datagram, ("127.0.0.1", media))
            .await
            .expect("send");
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Two windows and a bit for the summaries.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), collector).await;

    let lines = lines.lock().expect("lines").clone();
    let stun_lines = lines
        .iter()
        .filter(|l| l.contains("No username attribute"))
        .count();
    assert!(
        (1..=150).contains(&stun_lines),
        "{stun_lines} lines for 5000 datagrams"
    );
    let summarised: u64 = lines
        .iter()
        .filter(|l| l.contains("log events suppressed"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("suppressed").and_then(|s| s.as_u64()))
        .sum();
    assert!(
        summarised >= 3000,
        "summaries count the dropped lines: {summarised} of about {}",
        5000 - stun_lines
    );
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("zipiq_log_events_suppressed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(counted >= summarised as f64 * 0.9, "metric {counted}");
    assert!(
        !lines.iter().any(|l| l.contains(&session_id)),
        "a session id appeared whole in the logs"
    );
    assert!(
        lines.iter().any(|l| l.contains(&session_id[..8])),
        "its prefix is there to follow the session"
    );
}
