//! Connection limits and timeouts of the HTTP listener, with raw TCP clients that misbehave on purpose: silent,
//! slow headers, a stalled body, an idle keep-alive, and more connections than the cap. Each is bounded in time;
//! the server answers or closes, and stays available to everyone else.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Reads until the peer closes or `within` passes: (what came, whether it closed).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

async fn healthz_ok(server: &TestServer) -> bool {
    reqwest::Client::new()
        .get(format!("{}/healthz", server.base))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_are_closed() {
    let server = start_server(
        "[http]\nheader_read_timeout_ms = 500\nidle_timeout_ms = 1000\nbody_timeout_ms = 500\n",
    )
    .await;
    let addr = server.server.http_addr;

    // Silent: connects and sends nothing.
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Slow headers: a byte every 100 ms, never finishing.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let dribble = async {
        for _ in 0..50 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), dribble).await;
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(2)).await;
    assert!(closed, "slow headers are cut off by the header timeout");
    assert!(started.elapsed() < Duration::from_secs(6));

    // A stalled body: 408 problem answer.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(
            b"POST /whip/live HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nAuthorization: Bearer k\r\n\
              Content-Length: 1000\r\n\r\nv=0\r\n",
        )
        .await
        .expect("write");
    let (answer, _) = read_until_closed(&mut stalled, Duration::from_secs(4)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // Idle keep-alive: one request, then nothing.
    let started = Instant::now();
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(started.elapsed() < Duration::from_secs(4));

    assert!(healthz_ok(&server).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_a_quick_503() {
    let server = start_server(
        "[http]\nmax_connections = 8\nheader_read_timeout_ms = 20000\nidle_timeout_ms = 20000\n",
    )
    .await;
    let addr = server.server.http_addr;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Let the server accept all eight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut over = TcpStream::connect(addr).await.expect("connect");
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_until_closed(&mut over, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("application/problem+json"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once, not hung: {:?}",
        started.elapsed()
    );
    drop(held);
    let mut ok = false;
    for _ in 0..20 {
        if healthz_ok(&server).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "service comes back once connections close");
    server.stop().await;
}
