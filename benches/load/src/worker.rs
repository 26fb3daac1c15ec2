//! Subscriber workers: each is one thread with one epoll loop (mio) that drives many str0m peers, each on its
//! own UDP socket, with a timer heap for their timeouts. Received RTP is counted per track by sequence number,
//! placed against the publisher's send instants for one-way latency, and never depacketized or decoded.
//!
//! The receive path reuses one buffer and allocates nothing of ours (str0m hands each payload over in its own
//! `Arc<[u8]>`); nothing is logged there. Snapshots for the window are taken when the shared phase changes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use str0m::rtp::RtpPacket;
use str0m::{Event, IceConnectionState, Input, Rtc};

use crate::measure::{Histogram, Phase, Shared, TrackRx, fingerprint};
use crate::media::Track;
use crate::media::h264::payload_starts_keyframe;
use crate::peer::{self, VIDEO_PT};

/// Longest wait in the event loop, so phase changes are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(10);
/// The waker's token; subscriber tokens are their slot numbers.
const WAKER: Token = Token(usize::MAX);

/// A subscriber whose answer has been applied, handed to a worker to drive.
pub struct NewSubscriber {
    pub index: usize,
    /// Which of the WHEP URLs it joined (`--whep-url`, in order).
    pub target: usize,
    pub rtc: Box<Rtc>,
    pub socket: UdpSocket,
    /// When its WHEP POST was sent.
    pub posted_at: Instant,
}

/// What a worker knows about one subscriber at the end.
#[derive(Debug)]
pub struct SubscriberReport {
    /// Which of the WHEP URLs it joined.
    pub target: usize,
    pub posted_at: Instant,
    pub connected_at: Option<Instant>,
    pub first_packet: Option<Instant>,
    pub first_video: Option<Instant>,
    pub first_keyframe: Option<Instant>,
    /// The first video packet began a keyframe.
    pub started_on_keyframe: bool,
    /// Audio, video.
    pub tracks: [TrackRx; 2],
    /// Ended by an error or an ICE disconnect before the end.
    pub lost: Option<String>,
}

/// A worker's result.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub subscribers: Vec<SubscriberReport>,
    /// One-way latency of packets received in the window, in microseconds, per WHEP URL (by target index; a
    /// URL none of this worker's subscribers joined may be missing at the end).
    pub latency: Vec<Histogram>,
    pub send_errors: u64,
    pub receive_errors: u64,
}

/// A running worker.
pub struct WorkerHandle {
    sender: Sender<NewSubscriber>,
    waker: Arc<Waker>,
    pub thread: JoinHandle<Result<WorkerReport, String>>,
}

impl WorkerHandle {
    /// Hands a subscriber to this worker.
    pub fn add(&self, subscriber: NewSubscriber) -> Result<(), String> {
        self.sender
            .send(subscriber)
            .map_err(|_| "a subscriber worker has stopped".to_owned())?;
        self.waker
            .wake()
            .map_err(|e| format!("waking a subscriber worker: {e}"))
    }
}

/// Starts worker number `n`.
pub fn spawn(n: usize, shared: Arc<Shared>) -> Result<WorkerHandle, String> {
    let poll = Poll::new().map_err(|e| format!("worker poll: {e}"))?;
    let waker =
        Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| format!("worker waker: {e}"))?);
    let (sender, receiver) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("zl-worker-{n}"))
        .spawn(move || Worker::new(poll, receiver, shared).run())
        .map_err(|e| format!("starting a worker thread: {e}"))?;
    Ok(WorkerHandle {
        sender,
        waker,
        thread,
    })
}

/// One driven subscriber.
struct Subscriber {
    rtc: Box<Rtc>,
    socket: mio::net::UdpSocket,
    local: SocketAddr,
    next_timeout: Instant,
    report: SubscriberReport,
}

struct Worker {
    poll: Poll,
    receiver: Receiver<NewSubscriber>,
    shared: Arc<Shared>,
    slots: Vec<Option<Subscriber>>,
    finished: Vec<SubscriberReport>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    buf: Vec<u8>,
    phase: Phase,
    /// Per WHEP URL (target index).
    latency: Vec<Histogram>,
    send_errors: u64,
    receive_errors: u64,
}

/// Per-packet bookkeeping of one subscriber, split from its `Rtc` so both can be borrowed at once.
struct Sink<'a> {
    report: &'a mut SubscriberReport,
    latency: &'a mut Histogram,
    shared: &'a Shared,
    measuring: bool,
}

impl Sink<'_> {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::RtpPacket(packet) => self.on_rtp(&packet),
            Event::Connected => {
                if self.report.connected_at.is_none() {
                    self.report.connected_at = Some(Instant::now());
                    self.shared.connected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if self.report.lost.is_none() {
                    self.report.lost = Some("ICE disconnected".into());
                }
            }
            _ => {}
        }
    }

    fn on_rtp(&mut self, packet: &RtpPacket) {
        let arrival = packet.timestamp;
        let is_video = *packet.header.payload_type == VIDEO_PT;
        let track = if is_video { Track::Video } else { Track::Audio };
        let report = &mut *self.report;
        report.first_packet.get_or_insert(arrival);
        if is_video {
            if report.first_video.is_none() {
                report.first_video = Some(arrival);
                report.started_on_keyframe = payload_starts_keyframe(&packet.payload);
            }
            if report.first_keyframe.is_none() && payload_starts_keyframe(&packet.payload) {
                report.first_keyframe = Some(arrival);
            }
        }
        let rx = &mut report.tracks[track as usize];
        rx.count(*packet.seq_no);
        if self.measuring {
            let ring = &self.shared.sent[track as usize];
            let fp = fingerprint(&packet.payload);
            if let Some(sent_ns) = rx.sent_ns(ring, packet.header.sequence_number, fp) {
                let latency_ns = self.shared.ns(arrival).saturating_sub(sent_ns);
                self.latency.record(latency_ns / 1000);
            }
        }
    }
}

impl Worker {
    fn new(poll: Poll, receiver: Receiver<NewSubscriber>, shared: Arc<Shared>) -> Worker {
        Worker {
            poll,
            receiver,
            shared,
            slots: Vec::new(),
            finished: Vec::new(),
            timers: BinaryHeap::new(),
            buf: vec![0u8; 2048],
            phase: Phase::Joining,
            latency: Vec::new(),
            send_errors: 0,
            receive_errors: 0,
        }
    }

    fn run(mut self) -> Result<WorkerReport, String> {
        let mut events = Events::with_capacity(1024);
        loop {
            let phase = self.shared.phase();
            if phase != self.phase {
                self.change_phase(phase);
                if phase == Phase::Stop {
                    return Ok(self.finish());
                }
            }
            self.accept_new()?;
            let now = Instant::now();
            let wait = self
                .timers
                .peek()
                .map_or(MAX_WAIT, |Reverse((at, _))| {
                    at.saturating_duration_since(now)
                })
                .min(MAX_WAIT);
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != ErrorKind::Interrupted
            {
                return Err(format!("worker poll: {e}"));
            }
            for event in events.iter() {
                let Token(slot) = event.token();
                if slot != WAKER.0 {
                    self.read_socket(slot);
                }
            }
            self.fire_timers();
        }
    }

    /// Snapshots every subscriber's counters at the window's edges.
    fn change_phase(&mut self, phase: Phase) {
        let reports = self
            .slots
            .iter_mut()
            .flatten()
            .map(|s| &mut s.report)
            .chain(self.finished.iter_mut());
        for report in reports {
            for track in &mut report.tracks {
                if phase >= Phase::Measuring && track.window_start.is_none() {
                    track.window_start = Some(track.now);
                }
                if phase >= Phase::Done && track.window_end.is_none() {
                    track.window_end = Some(track.now);
                }
            }
        }
        self.phase = phase;
    }

    fn finish(mut self) -> WorkerReport {
        for mut subscriber in self.slots.drain(..).flatten() {
            // Say goodbye over DTLS; the WHEP DELETE follows from the control task.
            subscriber.rtc.disconnect();
            let _ = peer::drain(
                &mut subscriber.rtc,
                &subscriber.socket,
                &mut self.send_errors,
                |_| {},
            );
            self.finished.push(subscriber.report);
        }
        WorkerReport {
            subscribers: self.finished,
            latency: self.latency,
            send_errors: self.send_errors,
            receive_errors: self.receive_errors,
        }
    }

    fn accept_new(&mut self) -> Result<(), String> {
        loop {
            let new = match self.receiver.try_recv() {
                Ok(new) => new,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(()),
            };
            let local = new
                .socket
                .local_addr()
                .map_err(|e| format!("subscriber socket: {e}"))?;
            let slot = self
                .slots
                .iter()
                .position(Option::is_none)
                .unwrap_or(self.slots.len());
            if self.latency.len() <= new.target {
                self.latency.resize_with(new.target + 1, Histogram::default);
            }
            let mut socket = mio::net::UdpSocket::from_std(new.socket);
            self.poll
                .registry()
                .register(&mut socket, Token(slot), Interest::READABLE)
                .map_err(|e| format!("registering a subscriber socket: {e}"))?;
            let mut tracks: [TrackRx; 2] = Default::default();
            if self.phase >= Phase::Measuring {
                for t in &mut tracks {
                    t.window_start = Some(t.now);
                }
            }
            let subscriber = Subscriber {
                rtc: new.rtc,
                socket,
                local,
                next_timeout: Instant::now(),
                report: SubscriberReport {
                    target: new.target,
                    posted_at: new.posted_at,
                    connected_at: None,
                    first_packet: None,
                    first_video: None,
                    first_keyframe: None,
                    started_on_keyframe: false,
                    tracks,
                    lost: None,
                },
            };
            if slot == self.slots.len() {
                self.slots.push(Some(subscriber));
            } else {
                self.slots[slot] = Some(subscriber);
            }
            // Start ICE at once.
            self.on_timeout(slot, Instant::now());
        }
    }

    /// Reads every datagram waiting on a subscriber's socket (edge-triggered: until it would block).
    fn read_socket(&mut self, slot: usize) {
        let measuring = self.phase == Phase::Measuring;
        let Some(Some(sub)) = self.slots.get_mut(slot) else {
            return;
        };
        let mut failure = None;
        loop {
            match sub.socket.recv_from(&mut self.buf) {
                Ok((n, source)) => {
                    let now = Instant::now();
                    let datagram = self.buf.get(..n).unwrap_or_default();
                    if let Err(e) = peer::receive(&mut sub.rtc, now, source, sub.local, datagram) {
                        failure = Some(format!("str0m: {e}"));
                        break;
                    }
                    let Some(latency) = self.latency.get_mut(sub.report.target) else {
                        failure = Some("no latency histogram for the subscriber's URL".into());
                        break;
                    };
                    let mut sink = Sink {
                        report: &mut sub.report,
                        latency,
                        shared: &self.shared,
                        measuring,
                    };
                    match peer::drain(&mut sub.rtc, &sub.socket, &mut self.send_errors, |e| {
                        sink.on_event(e)
                    }) {
                        Ok(at) => sub.next_timeout = at,
                        Err(e) => {
                            failure = Some(format!("str0m: {e}"));
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP port unreachable and the like: the server side is gone.
                    self.receive_errors += 1;
                    failure = Some(format!("socket: {e}"));
                    break;
                }
            }
        }
        let at = sub.next_timeout;
        self.timers.push(Reverse((at, slot)));
        if let Some(reason) = failure {
            self.retire(slot, reason);
        }
        self.compact_timers();
    }

    fn on_timeout(&mut self, slot: usize, now: Instant) {
        let measuring = self.phase == Phase::Measuring;
        let Some(Some(sub)) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(latency) = self.latency.get_mut(sub.report.target) else {
            self.retire(slot, "no latency histogram for the subscriber's URL".into());
            return;
        };
        let mut sink = Sink {
            report: &mut sub.report,
            latency,
            shared: &self.shared,
            measuring,
        };
        let result = sub.rtc.handle_input(Input::Timeout(now)).and_then(|()| {
            peer::drain(&mut sub.rtc, &sub.socket, &mut self.send_errors, |e| {
                sink.on_event(e)
            })
        });
        match result {
            Ok(at) => {
                sub.next_timeout = at;
                self.timers.push(Reverse((at, slot)));
            }
            Err(e) => self.retire(slot, format!("str0m: {e}")),
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, slot))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            // Entries are not removed when a subscriber's timeout changes; only the current one fires.
            let current = matches!(self.slots.get(slot), Some(Some(s)) if s.next_timeout == at);
            if current {
                self.on_timeout(slot, now);
            }
        }
    }

    /// Rebuilds the timer heap when stale entries pile up, so it stays bounded by the number of subscribers.
    fn compact_timers(&mut self) {
        let live = self.slots.iter().flatten().count();
        if self.timers.len() > 4 * live + 64 {
            self.timers = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| s.as_ref().map(|s| Reverse((s.next_timeout, slot))))
                .collect();
        }
    }

    /// Stops driving a subscriber that failed; its counters stay in the report.
    fn retire(&mut self, slot: usize, reason: String) {
        let Some(entry) = self.slots.get_mut(slot) else {
            return;
        };
        if let Some(mut sub) = entry.take() {
            let _ = self.poll.registry().deregister(&mut sub.socket);
            sub.report.lost.get_or_insert(reason);
            self.shared.lost_subscribers.fetch_add(1, Ordering::Relaxed);
            self.finished.push(sub.report);
        }
    }
}
