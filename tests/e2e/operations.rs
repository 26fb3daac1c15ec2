//! Operations with the real `zipiq` binary: during a stream (a real H.264 + Opus capture published with WHIP and
//! one WHEP viewer) `/metrics` on the admin listener parses as Prometheus text (prometheus-parse) with the named
//! series non-zero where traffic flowed, and the JSON logs are one JSON object per line; then SIGTERM mid-stream:
//! the process exits within its shutdown timeout, and the last partial segment is in the IPFS repository and in
//! the archive queue.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use zipiq::config::Config;
use zipiq_client::{PublishOptions, WatchOptions, WhepClient, WhipClient};

use crate::common::metric_total;
use crate::recording::{fixture, play, raw_cid};

pub(crate) fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_text(dir: &Path, http: u16, admin: u16, media: u16) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [media]\nudp_listen = \"127.0.0.1:{media}\"\ngrace_period_ms = 1000\n\
         [database]\nurl = \"sqlite://{}\"\n[log]\nlevel = \"info\"\nformat = \"json\"\n\
         [auth]\njwt_key_file = \"{}\"\n\
         [ipfs]\nrepo_dir = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nannounce = false\n\
         [server]\nshutdown_timeout_ms = 8000\n\
         [archive]\nmode = \"off\"\n",
        dir.join("zipiq.db").display(),
        dir.join("jwt-key").display(),
        dir.join("ipfs").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_json_logs_during_a_stream_then_sigterm_keeps_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, admin_port, media_port) = (free_tcp_port(), free_tcp_port(), free_udp_port());
    let config_path = dir.path().join("zipiq.toml");
    std::fs::write(
        &config_path,
        config_text(dir.path(), http_port, admin_port, media_port),
    )
    .unwrap();
    let mut child = crate::common::serve_process(&config_path);
    let pid = child.id().expect("pid");

    // stdout: JSON log lines and, once, the first-start banner with the stream key.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (key_tx, key_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut key_tx = Some(key_tx);
        let (mut json, mut bad) = (0usize, Vec::new());
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(key) = line.trim().strip_prefix("Stream key:") {
                if let Some(tx) = key_tx.take() {
                    let _ = tx.send(key.trim().to_owned());
                }
            } else if line.starts_with('{') {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) if v.get("level").is_some() && v.get("timestamp").is_some() => json += 1,
                    _ => bad.push(line),
                }
            }
        }
        (json, bad)
    });
    let key = tokio::time::timeout(Duration::from_secs(60), key_rx)
        .await
        .expect("banner in time")
        .expect("key");
    let base = format!("http://127.0.0.1:{http_port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz answers 200");

    let publisher = WhipClient::connect(
        &format!("{base}/whip/live"),
        Some(&key),
        PublishOptions::default(),
    )
    .await
    .expect("publisher");
    // The whole capture (4 s) in real time, on its own task; the test scrapes 100 ms after its end and sends
    // SIGTERM 300 ms after it, with the publisher still connected and its last segment still open (segments close
    // only at a keyframe after the target duration).
    let capture = fixture("h264-opus-360p.zqcap");
    let length = capture.records.last().unwrap().at;
    let cut = length + Duration::from_millis(300);
    let start = Instant::now();
    let sending = tokio::spawn(async move {
        play(&publisher, &capture).await;
        publisher
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let viewer = WhepClient::connect(&format!("{base}/whep/live"), None, WatchOptions::default())
        .await
        .expect("viewer");
    tokio::time::sleep(
        (start + length + Duration::from_millis(100)).saturating_duration_since(Instant::now()),
    )
    .await;

    let (text, scrape) = crate::common::scrape(&http, &format!("{admin}/metrics")).await;
    let values: Vec<(&str, Option<f64>)> = [
        "zipiq_streams",
        "zipiq_publishers",
        "zipiq_viewers",
        "zipiq_rtp_received_packets_total",
        "zipiq_rtp_received_bytes_total",
        "zipiq_rtp_forwarded_packets_total",
        "zipiq_rtp_forwarded_bytes_total",
        "zipiq_segments_total",
        "zipiq_ipfs_adds_total",
        "zipiq_ipfs_added_bytes_total",
        "zipiq_ipfs_add_duration_seconds",
        "zipiq_http_requests_total",
        "zipiq_http_request_duration_seconds",
        "zipiq_db_pool_connections",
        "zipiq_tokio_tasks",
    ]
    .into_iter()
    .map(|n| (n, metric_total(&scrape, n)))
    .collect();
    for (name, v) in &values {
        assert!(
            v.is_some_and(|v| v > 0.0),
            "{name} is present and non-zero: {v:?}\n{text}"
        );
    }
    // Present, refreshed every few seconds or counting only trouble:
    for name in [
        "zipiq_ipfs_connected_peers",
        "zipiq_rtp_dropped_packets_total",
        "zipiq_tap_dropped_packets_total",
        "zipiq_archive_jobs",
        "zipiq_nacks_received_total",
        "zipiq_keyframe_requests_received_total",
    ] {
        assert!(metric_total(&scrape, name).is_some(), "{name} is present");
    }
    let http_series = scrape
        .samples
        .iter()
        .find(|s| s.metric == "zipiq_http_requests_total")
        .unwrap();
    for label in ["route", "status"] {
        assert!(
            http_series.labels.get(label).is_some(),
            "HTTP requests carry a {label} label"
        );
    }

    // SIGTERM while the publisher is still sending.
    tokio::time::sleep((start + cut).saturating_duration_since(Instant::now())).await;
    let published = length;
    let term = Instant::now();
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(12), child.wait())
        .await
        .expect("exits within the shutdown timeout")
        .unwrap();
    let took = term.elapsed();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        took < Duration::from_millis(8000 + 1000),
        "exit took {took:?}"
    );
    sending.abort();
    drop(viewer);
    let (json_lines, bad) = reader.await.unwrap();
    assert!(
        json_lines > 5 && bad.is_empty(),
        "JSON logs: {json_lines} lines, not JSON: {bad:?}"
    );

    // Back on the same data directory, in process: the broadcast ended with the last partial segment stored.
    let text = config_text(dir.path(), 0, 0, 0);
    let config = Config::from_layers(Some(("again.toml".into(), text)), Vec::new()).unwrap();
    let (server, _) = zipiq::Server::start(config)
        .await
        .expect("restarts on the same data");
    let db = server.db.clone();
    let stream = db.find_stream("live").await.unwrap().unwrap();
    let broadcast = db
        .broadcasts_of_stream(stream.id, 5, None)
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("a broadcast");
    assert!(
        broadcast.ended_at.is_some() && broadcast.root_cid.is_some(),
        "ended, with a root CID: {broadcast:?}"
    );
    let chunks = db.chunks_of(broadcast.id).await.unwrap();
    let recorded: i64 = chunks.iter().map(|c| c.duration_ms).sum();
    // Everything the server received is in segments: the last one is the partial segment cut at SIGTERM.
    assert!(
        recorded as u128 + 1500 >= published.as_millis(),
        "segments cover {recorded} ms of {} ms published: {chunks:?}",
        published.as_millis()
    );
    let last = chunks.last().unwrap();
    assert!(last.duration_ms > 0);
    let jobs = db.jobs_of_broadcast(broadcast.id).await.unwrap();
    assert!(
        jobs.iter().any(|j| j.chunk_id == Some(last.id)),
        "the last segment is in the archive queue"
    );
    assert_eq!(
        jobs.len(),
        chunks.len() + 1,
        "every chunk and the directory are queued"
    );
    let base = format!("http://{}", server.http_addr);
    let bytes = http
        .get(format!("{base}/ipfs/{}", last.cid))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        raw_cid(&bytes),
        last.cid,
        "the last segment's bytes are in the IPFS repository"
    );
    server.shutdown().await;
}

/// `/readyz` names the database when PostgreSQL stops taking this server's connections, and turns ready again
/// when it takes them back; the rest of the server (WHIP/WHEP, `/healthz`) keeps answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_database_going_away_and_coming_back() {
    use sqlx::Executor;
    let pg = crate::databases::postgres().await;
    let database = pg.url.rsplit('/').next().unwrap().to_owned();
    let server = crate::common::start_server(&format!(
        "[database]\nurl = \"{}\"\nacquire_timeout_ms = 1000\n",
        pg.url
    ))
    .await;
    let http = reqwest::Client::new();
    let readyz = || async {
        let r = http
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");

    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&crate::databases::pg_url())
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        )))
        .await
        .unwrap();
    let mut down = None;
    for _ in 0..50 {
        let (status, body) = readyz().await;
        if status == 503 {
            down = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down = down.expect("not ready once the database refuses connections");
    assert_eq!(down["checks"]["database"]["ready"], false, "{down}");
    assert!(
        down["checks"]["database"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{down}"
    );
    assert_eq!(
        down["checks"]["ipfs"]["ready"], true,
        "only the database is named: {down}"
    );
    let health = http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the process still answers");

    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS true"
        )))
        .await
        .unwrap();
    admin.close().await;
    let mut up = false;
    for _ in 0..100 {
        if readyz().await.0 == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "ready again once the database takes connections");
    server.stop().await;
    pg.drop_db().await;
}
