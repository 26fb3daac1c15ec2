//! The WHIP publisher: one str0m peer on its own thread that sends the prepared [`Schedule`] in real time,
//! looping it with continuous sequence numbers and RTP timestamps, and records each packet's send instant in
//! the shared rings so subscribers can measure one-way latency.
//!
//! Its own thread keeps the pacing away from the subscribers' receive load. Per packet it clones an `Arc`,
//! writes two atomics and makes one syscall; it never allocates or logs.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use str0m::media::Mid;
use str0m::rtp::RtpWrite;
use str0m::{Event, IceConnectionState, Input, Rtc};

use crate::measure::{Phase, Shared};
use crate::media::{Schedule, Track};
use crate::peer::{self, AUDIO_PT, VIDEO_PT};

/// Longest wait in the event loop, so a phase change is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// First sequence number and RTP timestamp of each track (arbitrary, small so the roll-over counter starts at 0).
const FIRST_SEQ: u64 = 1000;
const FIRST_TIMESTAMP: u32 = 90_000;

/// A publisher peer whose answer has been applied.
pub struct PublisherPeer {
    pub rtc: Box<Rtc>,
    pub socket: UdpSocket,
    pub audio: Mid,
    pub video: Mid,
}

/// What the publisher thread reports when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublisherStats {
    pub loops: u64,
    pub send_errors: u64,
}

/// Starts the publisher thread. It connects, then sends until the phase is [`Phase::Stop`].
pub fn spawn(
    peer: PublisherPeer,
    schedule: Arc<Schedule>,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<Result<PublisherStats, String>>> {
    std::thread::Builder::new()
        .name("zl-publisher".into())
        .spawn(move || run(peer, &schedule, &shared))
}

/// What the drain loop's event handler noticed.
#[derive(Default)]
struct Noticed {
    connected: bool,
    disconnected: bool,
}

fn on_event(event: Event, noticed: &mut Noticed, shared: &Shared) {
    match event {
        Event::Connected => noticed.connected = true,
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            noticed.disconnected = true
        }
        Event::KeyframeRequest(_) => {
            shared.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

fn run(
    peer: PublisherPeer,
    schedule: &Schedule,
    shared: &Shared,
) -> Result<PublisherStats, String> {
    let PublisherPeer {
        mut rtc,
        socket,
        audio,
        video,
    } = peer;
    let local = socket
        .local_addr()
        .map_err(|e| format!("publisher socket: {e}"))?;
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let mut poll = Poll::new().map_err(|e| format!("publisher poll: {e}"))?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)
        .map_err(|e| format!("publisher poll: {e}"))?;
    let mut events = Events::with_capacity(16);
    let mut buf = vec![0u8; 2048];
    let mut stats = PublisherStats::default();
    let mut noticed = Noticed::default();

    let packets = &schedule.packets;
    if packets.is_empty() {
        return Err("the media schedule is empty".into());
    }
    let mut next = 0usize;
    let mut loop_start: Option<Instant> = None;
    let mut seq = [FIRST_SEQ; 2];

    let fail = |e: str0m::RtcError| format!("publisher peer: {e}");
    rtc.handle_input(Input::Timeout(Instant::now()))
        .map_err(fail)?;
    let mut timeout = peer::drain(&mut rtc, &socket, &mut stats.send_errors, |e| {
        on_event(e, &mut noticed, shared)
    })
    .map_err(fail)?;

    loop {
        if shared.phase() == Phase::Stop {
            rtc.disconnect();
            let _ = peer::drain(&mut rtc, &socket, &mut stats.send_errors, |_| {});
            return Ok(stats);
        }
        if noticed.disconnected {
            return Err(
                "the publisher's connection to the server was lost (ICE disconnected)".into(),
            );
        }
        if noticed.connected && loop_start.is_none() {
            loop_start = Some(Instant::now());
            shared.publisher_connected.store(1, Ordering::Release);
        }

        // Send every packet that is due.
        let mut next_due = None;
        if let Some(start) = loop_start {
            loop {
                // `next` stays in 0..packets.len() (wrapped below), and packets is not empty.
                let packet = &packets[next];
                let due =
                    start + Duration::from_nanos(stats.loops * schedule.period_ns + packet.at_ns);
                let now = Instant::now();
                if due > now {
                    next_due = Some(due);
                    break;
                }
                if shared.phase() == Phase::Measuring {
                    let lag = now.duration_since(due).as_micros() as u64;
                    shared.publisher_lag_us.fetch_max(lag, Ordering::Relaxed);
                }
                let track = packet.track as usize;
                let (mid, pt) = match packet.track {
                    Track::Audio => (audio, AUDIO_PT),
                    Track::Video => (video, VIDEO_PT),
                };
                let timestamp = FIRST_TIMESTAMP
                    .wrapping_add((stats.loops as u32).wrapping_mul(schedule.period_ticks[track]))
                    .wrapping_add(packet.rtp_offset);
                let this_seq = seq[track];
                seq[track] += 1;
                shared.sent[track].record(this_seq as u16, packet.fingerprint, shared.ns(now));
                shared.published[track].fetch_add(1, Ordering::Relaxed);
                let mut api = rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                    return Err(format!("no send stream for mid {mid} after connecting"));
                };
                tx.write_rtp(
                    RtpWrite::new(
                        pt.into(),
                        this_seq.into(),
                        timestamp,
                        now,
                        packet.payload.clone(),
                    )
                    .marker(packet.marker),
                );
                // str0m's pacer hands out one queued packet per time input.
                timeout =
                    pump(&mut rtc, &socket, &mut stats, &mut noticed, shared, now).map_err(fail)?;

                next += 1;
                if next == packets.len() {
                    next = 0;
                    stats.loops += 1;
                }
            }
        }

        let now = Instant::now();
        if timeout <= now {
            timeout =
                pump(&mut rtc, &socket, &mut stats, &mut noticed, shared, now).map_err(fail)?;
        }
        let wake = next_due.map_or(timeout, |due| due.min(timeout));
        let wait = wake.saturating_duration_since(Instant::now()).min(MAX_WAIT);
        if let Err(e) = poll.poll(&mut events, Some(wait))
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(format!("publisher poll: {e}"));
        }
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    let now = Instant::now();
                    let datagram = buf.get(..n).unwrap_or_default();
                    peer::receive(&mut rtc, now, source, local, datagram).map_err(fail)?;
                    timeout = peer::drain(&mut rtc, &socket, &mut stats.send_errors, |e| {
                        on_event(e, &mut noticed, shared)
                    })
                    .map_err(fail)?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors (port unreachable) surface here on Linux: the server went away.
                Err(e) => return Err(format!("publisher socket: {e} (did the server stop?)")),
            }
        }
    }
}

/// Gives `rtc` the time `now` and drains it, again while it asks for a time that has already come (its pacer
/// releases one packet per time input). Bounded, so a confused state cannot spin forever.
fn pump(
    rtc: &mut Rtc,
    socket: &mio::net::UdpSocket,
    stats: &mut PublisherStats,
    noticed: &mut Noticed,
    shared: &Shared,
    now: Instant,
) -> Result<Instant, str0m::RtcError> {
    let mut timeout = now;
    for _ in 0..64 {
        rtc.handle_input(Input::Timeout(now))?;
        timeout = peer::drain(rtc, socket, &mut stats.send_errors, |e| {
            on_event(e, noticed, shared)
        })?;
        if timeout > now {
            break;
        }
    }
    Ok(timeout)
}
