//! A viewer's outgoing track (a "downtrack"): the webrtc-rs `TrackLocal` our fan-out writes to directly.
//!
//! Per packet it does only what must differ per viewer: pick up the negotiated SSRC and payload type, rewrite the
//! sequence number and timestamp (see [`Munger`]), and hand the packet (whose payload is a shared `Bytes`
//! handle, never copied) to the peer connection's writer (interceptors, SRTP, the shared UDP socket).
//! The state lock is held only while the header is computed, never across an `.await`.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rtp::header::Header;
use rtp::packet::Packet;
use webrtc::interceptor::Attributes;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::track::track_local::{TrackLocal, TrackLocalContext, TrackLocalWriter};

use super::keyframe_request::KeyframeRequester;
use super::munger::Munger;
use super::retransmit::History;

/// Empty interceptor attributes (an empty map does not allocate).
static NO_ATTRIBUTES: std::sync::LazyLock<Attributes> = std::sync::LazyLock::new(Attributes::new);

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Handed to the peer connection.
    Sent,
    /// Another source feeds this track now: the caller should stop forwarding to it.
    NotActive,
    /// Not bound to a peer connection (yet, or any more): dropped.
    Unbound,
}

#[derive(Clone)]
struct Binding {
    ssrc: u32,
    payload_type: u8,
    writer: Arc<dyn TrackLocalWriter + Send + Sync>,
}

impl Binding {
    /// `packet` as this viewer gets it: its SSRC and payload type, sequence number `seq`, timestamp `ts`, no
    /// header extensions, and the payload shared (not copied).
    fn packet(&self, packet: &Packet, seq: u16, ts: u32) -> Packet {
        Packet {
            header: Header {
                version: 2,
                marker: packet.header.marker,
                payload_type: self.payload_type,
                sequence_number: seq,
                timestamp: ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: packet.payload.clone(),
        }
    }
}

struct DownState {
    binding: Option<Binding>,
    munger: Munger,
    /// The source allowed to write (0: none yet).
    active_source: u64,
    requester: Option<Arc<KeyframeRequester>>,
    /// The active source's retransmission buffer (video only).
    history: Option<Arc<History>>,
}

/// One outgoing audio or video track of one viewer.
pub struct DownTrack {
    id: String,
    stream_id: String,
    codec: RTCRtpCodecCapability,
    kind: RTPCodecType,
    state: Mutex<DownState>,
    closed: AtomicBool,
    sent_packets: AtomicU64,
    sent_bytes: AtomicU64,
    /// The media thread whose runtime holds this viewer's peer connection (writes to it are made there).
    thread: usize,
}

impl std::fmt::Debug for DownTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownTrack")
            .field("id", &self.id)
            .field("codec", &self.codec.mime_type)
            .finish()
    }
}

impl DownTrack {
    /// A track sending `codec` (as negotiated with this viewer).
    pub fn new(codec: RTCRtpCodecCapability, id: &str, stream_id: &str) -> DownTrack {
        let kind = if codec.mime_type.to_ascii_lowercase().starts_with("audio/") {
            RTPCodecType::Audio
        } else {
            RTPCodecType::Video
        };
        let clock_rate = codec.clock_rate;
        DownTrack {
            id: id.to_owned(),
            stream_id: stream_id.to_owned(),
            codec,
            kind,
            state: Mutex::new(DownState {
                binding: None,
                munger: Munger::new(clock_rate, rand::random(), rand::random()),
                active_source: 0,
                requester: None,
                history: None,
            }),
            closed: AtomicBool::new(false),
            sent_packets: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            thread: 0,
        }
    }

    /// The same track, to be fed on media thread `thread` (where its peer connection lives).
    pub fn on_thread(mut self, thread: usize) -> DownTrack {
        self.thread = thread;
        self
    }

    /// The media thread this track is fed on.
    pub fn thread(&self) -> usize {
        self.thread
    }

    /// Audio or video.
    pub fn media_kind(&self) -> RTPCodecType {
        self.kind
    }

    /// The codec this track sends.
    pub fn codec(&self) -> &RTCRtpCodecCapability {
        &self.codec
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DownState> {
        // A poisoned lock only means a panic elsewhere; the state itself is plain data and stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `source` the one feeding this track from now on.
    pub fn take_over(
        &self,
        source: u64,
        requester: Arc<KeyframeRequester>,
        history: Option<Arc<History>>,
    ) {
        let mut st = self.lock();
        st.active_source = source;
        st.requester = Some(requester);
        st.history = history;
    }

    /// The SSRC this track sends with, once bound.
    pub fn ssrc(&self) -> Option<u32> {
        self.lock().binding.as_ref().map(|b| b.ssrc)
    }

    /// Sends again the packet this track sent as `seq` (a viewer's NACK), from the active source's
    /// retransmission buffer. False when it is no longer kept, belonged to an earlier source, or the track has no
    /// buffer or binding.
    pub async fn retransmit(&self, seq: u16) -> Result<bool, webrtc::Error> {
        let (out, writer) = {
            let st = self.lock();
            let (Some(binding), Some(history)) = (&st.binding, &st.history) else {
                return Ok(false);
            };
            let Some(packet) = st.munger.source_seq(seq).and_then(|s| history.get(s)) else {
                return Ok(false);
            };
            let (seq, ts) = st
                .munger
                .outgoing(packet.header.sequence_number, packet.header.timestamp);
            (binding.packet(&packet, seq, ts), binding.writer.clone())
        };
        writer
            .write_rtp_with_attributes(&out, &NO_ATTRIBUTES)
            .await?;
        Ok(true)
    }

    /// The source feeding this track now (0: none).
    pub fn active_source(&self) -> u64 {
        self.lock().active_source
    }

    /// Asks the active source's publisher for a keyframe (a viewer sent PLI or FIR). Throttled by the requester.
    pub fn request_keyframe(&self) -> bool {
        let requester = self.lock().requester.clone();
        requester.is_some_and(|r| r.request())
    }

    /// Marks the track finished: sources drop it at their next packet.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the track was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Packets and bytes (payload) handed to the peer connection so far.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent_packets.load(Ordering::Relaxed),
            self.sent_bytes.load(Ordering::Relaxed),
        )
    }

    /// Forwards one packet from `source`. The payload is shared, not copied.
    pub async fn write(
        &self,
        source: u64,
        packet: &Packet,
        now: Instant,
    ) -> Result<WriteOutcome, webrtc::Error> {
        let (out, writer) = {
            let mut st = self.lock();
            if st.active_source != source {
                return Ok(WriteOutcome::NotActive);
            }
            let Some(binding) = st.binding.clone() else {
                return Ok(WriteOutcome::Unbound);
            };
            let (seq, ts) = st.munger.rewrite(
                source,
                packet.header.sequence_number,
                packet.header.timestamp,
                now,
            );
            (binding.packet(packet, seq, ts), binding.writer)
        };
        // `write_rtp_with_attributes` directly: the trait's `write_rtp` default method would box one more future.
        writer
            .write_rtp_with_attributes(&out, &NO_ATTRIBUTES)
            .await?;
        self.sent_packets.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes
            .fetch_add(out.payload.len() as u64, Ordering::Relaxed);
        Ok(WriteOutcome::Sent)
    }

    /// Binds the track to a writer by hand (benchmarks and tests drive the fan-out without a peer connection).
    pub fn bind_writer(
        &self,
        ssrc: u32,
        payload_type: u8,
        writer: Arc<dyn TrackLocalWriter + Send + Sync>,
    ) {
        self.lock().binding = Some(Binding {
            ssrc,
            payload_type,
            writer,
        });
    }
}

#[async_trait]
impl TrackLocal for DownTrack {
    async fn bind(&self, t: &TrackLocalContext) -> webrtc::error::Result<RTCRtpCodecParameters> {
        let codec = t
            .codec_parameters()
            .iter()
            .find(|c| {
                c.capability
                    .mime_type
                    .eq_ignore_ascii_case(&self.codec.mime_type)
            })
            .cloned()
            .ok_or(webrtc::Error::ErrUnsupportedCodec)?;
        self.bind_writer(t.ssrc(), codec.payload_type, t.write_stream());
        Ok(codec)
    }

    async fn unbind(&self, _t: &TrackLocalContext) -> webrtc::error::Result<()> {
        self.lock().binding = None;
        Ok(())
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn rid(&self) -> Option<&str> {
        None
    }

    fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn kind(&self) -> RTPCodecType {
        self.kind
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
