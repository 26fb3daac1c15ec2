//! The HTTP accept loop, with the limits a server on the open internet needs (axum's own `serve` has none):
//! at most `http.max_connections` connections at once (kept below the process's file-descriptor limit, which is
//! raised at start where allowed), a header-read timeout (slow or silent clients), an idle timeout (keep-alive
//! connections and stalled bodies that send nothing), and a quick `503` with `Retry-After` for a connection over
//! the cap instead of a hang. Request and body timeouts are tower layers in the router (`http::router`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Most over-the-cap connections answered at once; beyond that they are closed without an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long writing the quick 503 may take.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after `stop` open connections may finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Raises the soft limit on open files to the hard limit where allowed, and returns the soft limit in force.
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            None
        }
    }
}

/// `wanted` connections, or fewer: three quarters of the open-file limit, leaving the rest to the media socket,
/// the database, IPFS and the log.
pub(crate) fn effective_max_connections(wanted: usize, open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(limit) => {
            let room = usize::try_from(limit / 4 * 3).unwrap_or(usize::MAX).max(1);
            wanted.min(room)
        }
        None => wanted,
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open connections finish (bounded).
/// `name` tells the listeners apart in logs and metrics ("http", "admin").
pub(crate) async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let (drain_tx, drain_rx) = watch::channel(false);
    let open = metrics::gauge!("zipiq_http_connections", "listener" => name);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: wait a moment rather than spin; the log guard bounds the lines.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("zipiq_http_connections_refused_total", "listener" => name)
                .increment(1);
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(socket).await;
                    drop(permit);
                });
            }
            continue;
        };
        let app = app.clone();
        let drain = drain_rx.clone();
        let open = open.clone();
        tokio::spawn(async move {
            open.increment(1.0);
            serve_connection(socket, peer, app, limits, drain).await;
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    let _ = drain_tx.send(true);
    // Wait for the open connections to finish, bounded.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await;
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut socket: TcpStream) {
    const BODY: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"too many connections, try again shortly"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         cache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        socket.write_all(answer.as_bytes()).await?;
        socket.shutdown().await?;
        // Read what the client sent until it closes, so the close does not reset the connection (which could
        // discard the answer before the client reads it).
        let mut sink = [0u8; 1024];
        while tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Serves one connection: HTTP/1.1 with the header-read timeout, closed after `idle_timeout` without a byte
/// either way, and gracefully when the server drains.
async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut drain: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: socket,
        activity: activity.clone(),
    });
    let service = TowerToHyperService::new(tower::ServiceExt::map_request(
        app,
        move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_for = activity.idle_for();
        let wait = limits.idle_timeout.saturating_sub(idle_for);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(wait), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    // Nothing either way for the whole idle timeout: an idle keep-alive or a stalled client.
                    metrics::counter!("zipiq_http_connections_idle_closed_total").increment(1);
                    return;
                }
            }
            _ = drain.wait_for(|d| *d), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// When a connection last moved a byte.
struct Activity {
    since: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.since.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.since.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A socket that records its last read or write.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_file_limit() {
        assert_eq!(effective_max_connections(4096, Some(1024)), 768);
        assert_eq!(effective_max_connections(100, Some(1024)), 100);
        assert_eq!(effective_max_connections(4096, None), 4096);
        assert_eq!(effective_max_connections(4096, Some(1)), 1);
    }
}
