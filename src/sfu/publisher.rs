//! Accepting a publisher (WHIP): its peer connection, one forwarding task per received track (audio, each video
//! layer), and the task that carries keyframe requests to it. The track set-up ([`Sfu::forward_tracks`]) serves a
//! cluster pull's tracks too (`pull.rs`).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_receiver::RTCRtpReceiver;
use webrtc::track::track_remote::TrackRemote;

use super::forward::{ForwardMetrics, Forwarder, GopLimits, ShardPlan};
use super::ice::answer_with_candidates;
use super::keyframe::VideoCodec;
use super::keyframe_request::KeyframeRequester;
use super::offer::{self, OfferSummary, Role};
use super::retransmit::History;
use super::session::{Session, SessionPlace, SessionRole, log_id, random_id};
use super::stream::{PublishedMedia, SourceCommand, SourceHandle, Stream};
use super::{Accepted, Sfu, SfuError};
use tracing::Instrument;

/// Largest RTP packet read from a publisher.
const RECEIVE_BUFFER: usize = 1500;

impl Sfu {
    /// Accepts a WHIP offer for `stream_name` (the caller has checked the stream key). `token` is the bearer
    /// token that will be needed to PATCH or DELETE the session; `client` the address it came from. The session is
    /// made on the stream's media thread.
    pub async fn accept_publisher(
        &self,
        stream_name: &str,
        offer_sdp: &str,
        token: Option<&str>,
        client: std::net::IpAddr,
    ) -> Result<Accepted, SfuError> {
        let sfu = self.clone();
        let (stream, offer, token) = (
            stream_name.to_owned(),
            offer_sdp.to_owned(),
            token.map(str::to_owned),
        );
        let home = self.inner.media.home(stream_name);
        self.on_media_thread(home, async move {
            sfu.accept_publisher_here(home, &stream, &offer, token.as_deref(), client)
                .await
        })
        .await
    }

    async fn accept_publisher_here(
        &self,
        home: usize,
        stream_name: &str,
        offer_sdp: &str,
        token: Option<&str>,
        client: std::net::IpAddr,
    ) -> Result<Accepted, SfuError> {
        let summary = offer::inspect(offer_sdp, Role::Publish)?;
        let place = self.admit(SessionRole::Publisher, client, home, summary.candidates)?;
        let published = PublishedMedia {
            has_audio: summary.audio.is_some(),
            has_video: summary.video.is_some(),
            layers: summary
                .video
                .as_ref()
                .map(|v| v.send_rids.clone())
                .unwrap_or_default(),
        };
        let stream = self.stream_or_create(stream_name);
        let session_id = random_id();
        let Some(epoch) = stream.claim_publisher(&session_id, published) else {
            return Err(SfuError::PublisherExists(stream_name.to_owned()));
        };
        // Every log line of this session, and of the tasks it starts, carries its stream and session ids.
        let span = tracing::info_span!("webrtc_session", role = "publisher", stream = %stream_name, session = %log_id(&session_id));
        match self
            .negotiate_publisher(
                &stream,
                epoch,
                &session_id,
                offer_sdp,
                &summary,
                token,
                place,
            )
            .instrument(span)
            .await
        {
            Ok(accepted) => Ok(accepted),
            Err(e) => {
                if self.session(&session_id).is_some() {
                    // Registered: ending it closes the peer connection and releases the stream.
                    self.end_session(&session_id, "negotiation failed");
                } else {
                    stream.release_publisher(&session_id);
                    self.drop_stream_if_idle(stream_name);
                }
                Err(e)
            }
        }
    }

    // The parts of one negotiation, each used once; a struct for them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    async fn negotiate_publisher(
        &self,
        stream: &Arc<Stream>,
        epoch: u64,
        session_id: &str,
        offer_sdp: &str,
        summary: &OfferSummary,
        token: Option<&str>,
        place: SessionPlace,
    ) -> Result<Accepted, SfuError> {
        let simulcast = summary
            .video
            .as_ref()
            .is_some_and(|v| !v.send_rids.is_empty());
        let pc = self.inner.engine.publisher_peer(simulcast).await?;
        self.forward_tracks(&pc, stream, epoch, true, None);

        let mids = media_mids(summary);
        let session = Arc::new(
            Session::new(
                session_id.to_owned(),
                &stream.name,
                SessionRole::Publisher,
                token,
                pc.clone(),
                offer_sdp.to_owned(),
                mids,
            )
            .placed(place),
        );
        self.register_session(session.clone());
        self.watch_state(&pc, session_id);
        let answer_sdp =
            answer_with_candidates(&pc, offer_sdp, self.inner.engine.addresses()).await?;
        tracing::info!(session = %log_id(session_id), stream = %stream.name, "publisher accepted");
        Ok(Accepted {
            session_id: session_id.to_owned(),
            answer_sdp,
            etag: session.etag(),
        })
    }

    /// Forwards every track `pc` receives into `stream` (publisher `epoch`), with keyframe requests going back to
    /// `pc` as PLI; `record`: also to the recorder. A publisher's session and a cluster pull both use it.
    /// `layer`: for a cluster pull, the simulcast layer its video is at the origin (set once the origin's answer
    /// says, before media flows; a pulled track has no `rid` of its own).
    pub(super) fn forward_tracks(
        &self,
        pc: &Arc<RTCPeerConnection>,
        stream: &Arc<Stream>,
        epoch: u64,
        record: bool,
        layer: Option<Arc<OnceLock<String>>>,
    ) {
        let (pli_tx, pli_rx) = mpsc::channel::<u32>(32);
        spawn_keyframe_requests(Arc::downgrade(pc), pli_rx);
        let weak = self.weak();
        let stream_for_tracks = stream.clone();
        let span = tracing::Span::current();
        pc.on_track(Box::new(move |track, receiver, _transceiver| {
            let weak = weak.clone();
            let stream = stream_for_tracks.clone();
            let pli_tx = pli_tx.clone();
            let layer = layer.as_ref().and_then(|l| l.get().cloned());
            Box::pin(
                async move {
                    let Some(inner) = weak.upgrade() else { return };
                    let sfu = Sfu::from_inner(inner);
                    sfu.start_source(stream, epoch, track, receiver, pli_tx, record, layer);
                }
                .instrument(span.clone()),
            )
        }));
    }

    /// Starts forwarding one received track (audio, or one video layer); `record`: also to the recorder.
    #[allow(clippy::too_many_arguments)] // one track's parts, each used once
    fn start_source(
        &self,
        stream: Arc<Stream>,
        epoch: u64,
        track: Arc<TrackRemote>,
        receiver: Arc<RTCRtpReceiver>,
        pli_tx: mpsc::Sender<u32>,
        record: bool,
        layer: Option<String>,
    ) {
        let id = self.next_source_id();
        let kind = track.kind();
        let codec = track.codec().capability;
        let rid = match layer {
            Some(layer) if kind == RTPCodecType::Video && track.rid().is_empty() => layer,
            _ => track.rid().to_owned(),
        };
        let config = self.config();
        let requester = Arc::new(KeyframeRequester::new(
            track.ssrc(),
            config.keyframe_request_interval_ms,
            pli_tx,
        ));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let video = (kind == RTPCodecType::Video).then(|| VideoCodec::from_mime(&codec.mime_type));
        let kind_label = if video.is_some() { "video" } else { "audio" };
        let forwarder = Forwarder::new(
            id,
            video,
            GopLimits {
                max_packets: config.gop_cache_max_packets,
                max_bytes: config.gop_cache_max_bytes,
            },
            requester,
            ForwardMetrics::new(kind_label),
        )
        .with_shards(ShardPlan {
            home: self.inner.media.home(&stream.name),
            threads: self.inner.media.handles(),
        });
        let forwarder = if video.is_some() {
            forwarder.with_history(Arc::new(History::new(config.nack_buffer_packets)))
        } else {
            forwarder
        };
        tracing::info!(stream = %stream.name, source = id, kind = kind_label, rid = %rid, codec = %codec.mime_type, "publisher track started");
        let handle = SourceHandle {
            id,
            kind,
            rid: rid.clone(),
            codec,
            commands,
        };
        tokio::spawn(run_source(track, forwarder, command_rx, stream.clone()).in_current_span());
        tokio::spawn(drain_receiver_rtcp(receiver, rid).in_current_span());
        // A pulled stream (a cluster edge) is recorded on its origin only.
        let recording = self.recording_hook().filter(|_| record);
        for viewer in stream.add_source(epoch, handle, recording.as_deref()) {
            self.end_session(
                &viewer,
                "the returning publisher uses a codec this viewer cannot take",
            );
        }
    }
}

/// The (kind, mid) pairs of an offer, in order.
pub(crate) fn media_mids(summary: &OfferSummary) -> Vec<(String, String)> {
    let mut mids = Vec::new();
    if let Some(a) = &summary.audio {
        mids.push(("audio".to_owned(), a.mid.clone()));
    }
    if let Some(v) = &summary.video {
        mids.push(("video".to_owned(), v.mid.clone()));
    }
    mids
}

/// The forwarding task of one source: read a packet, forward it, repeat, until the track ends.
async fn run_source(
    track: Arc<TrackRemote>,
    mut forwarder: Forwarder,
    mut commands: mpsc::UnboundedReceiver<SourceCommand>,
    stream: Arc<Stream>,
) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        while let Ok(command) = commands.try_recv() {
            match command {
                SourceCommand::Attach(track, start) => {
                    forwarder.attach(track, start, Instant::now()).await
                }
                SourceCommand::SetTap(tap) => forwarder.set_tap(tap),
            }
        }
        match track.read(&mut buf).await {
            Ok((packet, _attributes)) => forwarder.forward(packet, Instant::now()).await,
            Err(e) => {
                tracing::debug!(stream = %stream.name, source = forwarder.source(), error = %e, "publisher track ended");
                break;
            }
        }
    }
    forwarder.clear();
    stream.remove_source(forwarder.source());
}

/// Reads the publisher's RTCP (sender reports) so the interceptors can process it, until the receiver closes.
async fn drain_receiver_rtcp(receiver: Arc<RTCRtpReceiver>, rid: String) {
    loop {
        let read = if rid.is_empty() {
            receiver.read_rtcp().await
        } else {
            receiver.read_simulcast_rtcp(&rid).await
        };
        if read.is_err() {
            break;
        }
    }
}

/// Sends queued keyframe requests to the publisher as PLI.
fn spawn_keyframe_requests(pc: std::sync::Weak<RTCPeerConnection>, mut rx: mpsc::Receiver<u32>) {
    tokio::spawn(
        async move {
            while let Some(media_ssrc) = rx.recv().await {
                let Some(pc) = pc.upgrade() else { break };
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if pc.write_rtcp(&[Box::new(pli)]).await.is_ok() {
                    metrics::counter!("zipiq_keyframe_requests_sent_total").increment(1);
                }
            }
        }
        .in_current_span(),
    );
}
