//! The tap: how the live fan-out hands a copy of the recorded tracks to the recorder without ever waiting for it.
//!
//! The forwarder of the stream's audio track and of its recorded video layer (the best one) put each packet
//! (a clone of the handle, not of the payload) on a bounded channel with `try_send`; when the recorder falls
//! behind and the channel is full, the packet is dropped from the recording and counted
//! (`zipiq_tap_dropped_packets_total`), and live viewers never notice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use metrics::Counter;
use rtp::packet::Packet;
use tokio::sync::mpsc;

use crate::media::{MediaKind, TapEvent};

/// What the SFU tells the side pipeline about broadcasts. Implemented by the recorder.
pub trait RecordingHook: Send + Sync {
    /// A publisher started on `stream` and no broadcast is open: start one, and return where its packets go.
    fn broadcast_started(&self, stream: &str) -> Option<mpsc::Sender<TapEvent>>;
    /// The broadcast of `stream` ended (after the `End` event was sent on its channel).
    fn broadcast_ended(&self, stream: &str);
    /// `stream` turned private: its broadcast ends now and nothing more of it is recorded. The future resolves once
    /// no commit is under way (a bounded wait).
    fn stream_turned_private(&self, stream: &str) -> futures::future::BoxFuture<'static, ()>;
}

/// One source's end of the tap.
#[derive(Clone)]
pub struct Tap {
    tx: mpsc::Sender<TapEvent>,
    kind: MediaKind,
    /// The video source being recorded (0: none); audio is always recorded.
    recorded_video: Arc<AtomicU64>,
    dropped: Counter,
}

impl Tap {
    pub fn new(tx: mpsc::Sender<TapEvent>, kind: MediaKind, recorded_video: Arc<AtomicU64>) -> Tap {
        Tap {
            tx,
            kind,
            recorded_video,
            dropped: metrics::counter!("zipiq_tap_dropped_packets_total"),
        }
    }

    /// Offers a packet of source `source` to the recording; never waits.
    pub fn offer(&self, source: u64, packet: &Packet, arrival: Instant) {
        if self.kind == MediaKind::Video && self.recorded_video.load(Ordering::Relaxed) != source {
            return;
        }
        let event = TapEvent::Rtp {
            kind: self.kind,
            packet: packet.clone(),
            arrival,
        };
        // Closed: the recorder does not record this broadcast (a private stream); only a full channel is a drop.
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            self.dropped.increment(1);
        }
    }
}
