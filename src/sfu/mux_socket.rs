//! The media UDP socket as webrtc-rs's UDP mux sees it: registered with the reactor for READABLE only, and sending
//! with a plain non-blocking `sendto`.
//!
//! Why: a tokio `UdpSocket` is registered for readable AND writable readiness. The kernel then signals
//! write space after every datagram sent (on loopback, once the receiver has taken it), which wakes the thread
//! sleeping in `epoll_wait` to learn that the socket is, once more, writable. With hundreds of viewers that is one
//! pointless cross-thread wake-up per forwarded packet; perf showed it as the largest single cost of the fan-out
//! (README "Performance"). A UDP send either fits in the socket buffer (8 MiB) or is lost like any datagram: when
//! the buffer is full the packet is dropped and counted (`zipiq_rtp_dropped_packets_total{reason="socket_full"}`),
//! never waited for, so the fan-out never blocks on one slow path.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use async_trait::async_trait;
use metrics::Counter;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use webrtc_util::conn::Conn;

/// The shared media socket.
pub(crate) struct MuxSocket {
    fd: AsyncFd<UdpSocket>,
    local: SocketAddr,
    full: Counter,
}

impl MuxSocket {
    /// Wraps a bound, non-blocking socket. Must be called inside a tokio runtime (its reactor serves the reads).
    pub(crate) fn new(socket: UdpSocket) -> io::Result<MuxSocket> {
        let local = socket.local_addr()?;
        socket.set_nonblocking(true)?;
        // SAFETY: `std::net::UdpSocket` owns its descriptor: it stays open and the same for as long as the
        // AsyncFd owns the socket, and nothing else can close or replace it. The crate's only unsafe block.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(MuxSocket {
            fd,
            local,
            full: metrics::counter!("zipiq_rtp_dropped_packets_total", "reason" => "socket_full"),
        })
    }

    fn send_now(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        match self.fd.get_ref().send_to(buf, target) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.full.increment(1);
                Ok(buf.len())
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Conn for MuxSocket {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the media socket is shared: it does not connect",
        )
        .into())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|s| s.get_ref().recv_from(buf)) {
                Ok(result) => return Ok(result?),
                Err(_would_block) => continue,
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "the media socket sends only with an address",
        )
        .into())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.send_now(buf, target)?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_and_receives_datagrams() {
        let a = MuxSocket::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let b = MuxSocket::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let to = b.local_addr().unwrap();
        assert_eq!(a.send_to(b"hello", to).await.unwrap(), 5);
        let mut buf = [0u8; 64];
        let (n, from) =
            tokio::time::timeout(std::time::Duration::from_secs(5), b.recv_from(&mut buf))
                .await
                .expect("a datagram in time")
                .unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, a.local_addr().unwrap());
        assert!(a.send(b"x").await.is_err(), "no send without an address");
    }
}
