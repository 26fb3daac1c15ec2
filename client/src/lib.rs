//! zipIQ's own WHIP and WHEP clients, on webrtc-rs: what the integration tests and the fan-out bench use to publish
//! and watch like OBS and a browser do (bundle, rtcp-mux, Opus on mid 0, H.264 on mid 1, optional simulcast
//! layers, a bearer token, DELETE on stop; a 307 is followed with the offer and the token sent again, as OBS does).
//! A crate of its own, so the server binary does not link it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::sdp::extmap;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

/// Errors of the clients.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("{0}")]
    Protocol(String),
    #[error("not connected within {0:?}")]
    Timeout(Duration),
}

/// The H.264 format OBS and browsers offer first (constrained baseline, packetization mode 1).
pub fn h264_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            },
        ],
    }
}

/// Opus as OBS sends it.
pub fn opus_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// VP8 as browsers send it.
pub fn vp8_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: h264_capability().rtcp_feedback,
    }
}

fn setting_engine(replay_protection: bool, loopback_only: bool) -> SettingEngine {
    let mut s = SettingEngine::default();
    s.disable_srtp_replay_protection(!replay_protection);
    s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    s.set_network_types(vec![NetworkType::Udp4]);
    s.set_include_loopback_candidate(true);
    // Clients of zipIQ's tests and load tool run on the same host as the server: loopback only, unless the server
    // is behind another interface of the host (a network namespace's veth).
    if loopback_only {
        s.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    }
    s
}

/// A peer connection for a client. Simulcast header extensions only when sending simulcast: webrtc-rs 0.17's
/// stream probing closes early streams when they are registered (see `sfu::engine::Engine::publisher_peer`).
async fn new_peer(
    codecs: &[(RTCRtpCodecCapability, u8, RTPCodecType)],
    simulcast: bool,
    replay_protection: bool,
    loopback_only: bool,
) -> Result<Arc<RTCPeerConnection>, ClientError> {
    let mut media = MediaEngine::default();
    for (capability, pt, kind) in codecs {
        media.register_codec(
            RTCRtpCodecParameters {
                capability: capability.clone(),
                payload_type: *pt,
                ..Default::default()
            },
            *kind,
        )?;
    }
    if simulcast {
        for uri in [
            extmap::SDES_MID_URI,
            extmap::SDES_RTP_STREAM_ID_URI,
            extmap::SDES_REPAIR_RTP_STREAM_ID_URI,
        ] {
            media.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                RTPCodecType::Video,
                None,
            )?;
        }
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: extmap::SDES_MID_URI.to_owned(),
            },
            RTPCodecType::Audio,
            None,
        )?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine(replay_protection, loopback_only))
        .build();
    Ok(Arc::new(api.new_peer_connection(Default::default()).await?))
}

fn state_watch(pc: &Arc<RTCPeerConnection>) -> watch::Receiver<RTCPeerConnectionState> {
    let (tx, rx) = watch::channel(RTCPeerConnectionState::New);
    pc.on_peer_connection_state_change(Box::new(move |s| {
        let _ = tx.send(s);
        Box::pin(async {})
    }));
    rx
}

/// What the server answered to an offer.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub resource_url: String,
    pub etag: Option<String>,
    pub answer: String,
    pub links: Vec<String>,
}

/// An HTTP client that leaves redirects to [`negotiate`].
fn no_redirects_client() -> Result<reqwest::Client, ClientError> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Sends `pc`'s offer (after gathering) to `url`; applies the answer.
async fn negotiate(
    http: &reqwest::Client,
    pc: &Arc<RTCPeerConnection>,
    url: &str,
    token: Option<&str>,
    headers: &[(String, String)],
) -> Result<Negotiated, ClientError> {
    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| ClientError::Protocol("no local description".into()))?;
    // Redirects (a cluster node placing the session on another node) are followed here, as OBS does: the offer
    // and the bearer token go again to the new URL (reqwest's own redirects drop Authorization across hosts), and
    // the session's Location is resolved against the URL that answered.
    let mut url = reqwest::Url::parse(url)
        .map_err(|e| ClientError::Protocol(format!("bad URL {url:?}: {e}")))?;
    let mut redirects = 0;
    let response = loop {
        let mut request = http
            .post(url.clone())
            .header("Content-Type", "application/sdp")
            .body(local.sdp.clone());
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if matches!(status, 307 | 308) && redirects < 5 {
            let next = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ClientError::Protocol(format!("{status} without Location")))?;
            url = url
                .join(next)
                .map_err(|e| ClientError::Protocol(format!("bad redirect {next:?}: {e}")))?;
            redirects += 1;
            continue;
        }
        if status != 201 {
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::Refused { status, body });
        }
        break response;
    };
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ClientError::Protocol("201 without Location".into()))?
        .to_owned();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let links = response
        .headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let resource_url = url
        .join(&location)
        .map(|u| u.to_string())
        .map_err(|e| ClientError::Protocol(format!("bad Location {location:?}: {e}")))?;
    let answer = response.text().await?;
    pc.set_remote_description(RTCSessionDescription::answer(answer.clone())?)
        .await?;
    Ok(Negotiated {
        resource_url,
        etag,
        answer,
        links,
    })
}

/// Negotiates with the server at `url`, then waits until the connection is up; on either failure the peer
/// connection is closed.
async fn negotiate_and_connect(
    http: &reqwest::Client,
    pc: &Arc<RTCPeerConnection>,
    url: &str,
    token: Option<&str>,
    headers: &[(String, String)],
    state: &mut watch::Receiver<RTCPeerConnectionState>,
    timeout: Duration,
) -> Result<Negotiated, ClientError> {
    let connected = match negotiate(http, pc, url, token, headers).await {
        Ok(negotiated) => wait_connected(state, timeout).await.map(|()| negotiated),
        Err(e) => Err(e),
    };
    if connected.is_err() {
        let _ = pc.close().await;
    }
    connected
}

async fn wait_connected(
    rx: &mut watch::Receiver<RTCPeerConnectionState>,
    timeout: Duration,
) -> Result<(), ClientError> {
    let waited = tokio::time::timeout(timeout, async {
        loop {
            match *rx.borrow_and_update() {
                RTCPeerConnectionState::Connected => return Ok(()),
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    return Err(ClientError::Protocol("connection failed".into()));
                }
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(ClientError::Protocol("connection dropped".into()));
            }
        }
    })
    .await;
    waited.map_err(|_| ClientError::Timeout(timeout))?
}

/// What a publisher sends.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub audio: bool,
    pub video: Option<RTCRtpCodecCapability>,
    /// Simulcast layer ids, best first (empty: no simulcast).
    pub simulcast: Vec<String>,
    pub connect_timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            audio: true,
            video: Some(h264_capability()),
            simulcast: Vec::new(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A WHIP publisher.
pub struct WhipClient {
    pub pc: Arc<RTCPeerConnection>,
    pub negotiated: Negotiated,
    audio: Option<Arc<TrackLocalStaticRTP>>,
    video: Vec<Arc<TrackLocalStaticRTP>>,
    http: reqwest::Client,
    token: Option<String>,
    state: watch::Receiver<RTCPeerConnectionState>,
    keyframe_requests: Arc<std::sync::atomic::AtomicU64>,
}

impl WhipClient {
    /// Publishes to `url` (e.g. `http://127.0.0.1:8080/whip/live`) and waits until connected.
    pub async fn connect(
        url: &str,
        token: Option<&str>,
        options: PublishOptions,
    ) -> Result<WhipClient, ClientError> {
        let http = no_redirects_client()?;
        let mut codecs = Vec::new();
        if options.audio {
            codecs.push((opus_capability(), 111, RTPCodecType::Audio));
        }
        if let Some(v) = &options.video {
            codecs.push((v.clone(), 96, RTPCodecType::Video));
        }
        let pc = new_peer(&codecs, !options.simulcast.is_empty(), true, true).await?;
        let mut state = state_watch(&pc);
        let init = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                send_encodings: vec![],
            })
        };
        let mut audio = None;
        if options.audio {
            let t = Arc::new(TrackLocalStaticRTP::new(
                opus_capability(),
                "audio".into(),
                "zipiq-client".into(),
            ));
            pc.add_transceiver_from_track(t.clone() as Arc<dyn TrackLocal + Send + Sync>, init())
                .await?;
            audio = Some(t);
        }
        let mut video = Vec::new();
        if let Some(capability) = &options.video {
            if options.simulcast.is_empty() {
                let t = Arc::new(TrackLocalStaticRTP::new(
                    capability.clone(),
                    "video".into(),
                    "zipiq-client".into(),
                ));
                pc.add_transceiver_from_track(
                    t.clone() as Arc<dyn TrackLocal + Send + Sync>,
                    init(),
                )
                .await?;
                video.push(t);
            } else {
                let mut transceiver = None;
                for rid in &options.simulcast {
                    let t = Arc::new(TrackLocalStaticRTP::new_with_rid(
                        capability.clone(),
                        "video".into(),
                        rid.clone(),
                        "zipiq-client".into(),
                    ));
                    match &transceiver {
                        None => {
                            transceiver = Some(
                                pc.add_transceiver_from_track(
                                    t.clone() as Arc<dyn TrackLocal + Send + Sync>,
                                    init(),
                                )
                                .await?,
                            );
                        }
                        Some(tr) => {
                            tr.sender()
                                .await
                                .add_encoding(t.clone() as Arc<dyn TrackLocal + Send + Sync>)
                                .await?;
                        }
                    }
                    video.push(t);
                }
            }
        }
        // Read RTCP so the interceptors see the server's feedback; count keyframe requests.
        let keyframe_requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for sender in pc.get_senders().await {
            let count = keyframe_requests.clone();
            tokio::spawn(async move {
                while let Ok((packets, _)) = sender.read_rtcp().await {
                    for p in packets {
                        if p.as_any().is::<webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication>() {
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let negotiated = negotiate_and_connect(
            &http,
            &pc,
            url,
            token,
            &[],
            &mut state,
            options.connect_timeout,
        )
        .await?;
        Ok(WhipClient {
            pc,
            negotiated,
            audio,
            video,
            http,
            token: token.map(str::to_owned),
            state,
            keyframe_requests,
        })
    }

    /// How many keyframe requests (PLI) the server sent this publisher.
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends one video packet on layer `layer` (0 without simulcast). SSRC and payload type are set by the stack.
    pub async fn send_video(
        &self,
        layer: usize,
        packet: &rtp::packet::Packet,
    ) -> Result<(), ClientError> {
        let track = self
            .video
            .get(layer)
            .ok_or_else(|| ClientError::Protocol(format!("no video layer {layer}")))?;
        track.write_rtp(packet).await?;
        Ok(())
    }

    /// Sends one audio packet.
    pub async fn send_audio(&self, packet: &rtp::packet::Packet) -> Result<(), ClientError> {
        let track = self
            .audio
            .as_ref()
            .ok_or_else(|| ClientError::Protocol("no audio track".into()))?;
        track.write_rtp(packet).await?;
        Ok(())
    }

    /// Whether the peer connection is still connected.
    pub fn is_connected(&self) -> bool {
        *self.state.borrow() == RTCPeerConnectionState::Connected
    }

    /// Ends the session with DELETE (as OBS does on stop) and closes the peer connection.
    pub async fn close(self) -> Result<u16, ClientError> {
        let mut request = self.http.delete(&self.negotiated.resource_url);
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        let status = request.send().await?.status().as_u16();
        let _ = self.pc.close().await;
        Ok(status)
    }

    /// Closes the peer connection without telling the server (a crash).
    pub async fn drop_connection(self) {
        let _ = self.pc.close().await;
    }
}

/// One packet a viewer received.
#[derive(Debug, Clone)]
pub struct Received {
    pub kind: RTPCodecType,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub at: std::time::Instant,
}

/// What a viewer asks for.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub audio: bool,
    pub video: Vec<RTCRtpCodecCapability>,
    pub connect_timeout: Duration,
    /// SRTP replay protection (on by default). Off lets a test see a retransmission of a packet it already has.
    pub replay_protection: bool,
    /// Host candidates on loopback addresses only (the default); off: on every interface's address, for a server
    /// reached through another interface (a network namespace behind a veth pair).
    pub loopback_only: bool,
    /// More headers of the WHEP POST (and of its redirects), e.g. a `traceparent`.
    pub headers: Vec<(String, String)>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            audio: true,
            video: vec![h264_capability(), vp8_capability()],
            connect_timeout: Duration::from_secs(10),
            replay_protection: true,
            loopback_only: true,
            headers: Vec::new(),
        }
    }
}

/// A WHEP viewer. Received packets arrive on `packets`.
pub struct WhepClient {
    pub pc: Arc<RTCPeerConnection>,
    pub negotiated: Negotiated,
    pub packets: mpsc::UnboundedReceiver<Received>,
    http: reqwest::Client,
    token: Option<String>,
}

impl WhepClient {
    /// Watches `url` (e.g. `http://127.0.0.1:8080/whep/live`) and waits until connected.
    pub async fn connect(
        url: &str,
        token: Option<&str>,
        options: WatchOptions,
    ) -> Result<WhepClient, ClientError> {
        let http = no_redirects_client()?;
        let mut codecs = Vec::new();
        if options.audio {
            codecs.push((opus_capability(), 111, RTPCodecType::Audio));
        }
        for (i, v) in options.video.iter().enumerate() {
            codecs.push((v.clone(), 96 + 2 * i as u8, RTPCodecType::Video));
        }
        let pc = new_peer(
            &codecs,
            false,
            options.replay_protection,
            options.loopback_only,
        )
        .await?;
        let mut state = state_watch(&pc);
        let init = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                send_encodings: vec![],
            })
        };
        if options.audio {
            pc.add_transceiver_from_kind(RTPCodecType::Audio, init())
                .await?;
        }
        if !options.video.is_empty() {
            pc.add_transceiver_from_kind(RTPCodecType::Video, init())
                .await?;
        }
        let (tx, packets) = mpsc::unbounded_channel();
        pc.on_track(Box::new(move |track, _receiver, _transceiver| {
            let tx = tx.clone();
            Box::pin(async move {
                tokio::spawn(async move {
                    let kind = track.kind();
                    let mut buf = vec![0u8; 1500];
                    while let Ok((p, _)) = track.read(&mut buf).await {
                        let received = Received {
                            kind,
                            sequence_number: p.header.sequence_number,
                            timestamp: p.header.timestamp,
                            marker: p.header.marker,
                            payload: p.payload,
                            at: std::time::Instant::now(),
                        };
                        if tx.send(received).is_err() {
                            break;
                        }
                    }
                });
            })
        }));
        let negotiated = negotiate_and_connect(
            &http,
            &pc,
            url,
            token,
            &options.headers,
            &mut state,
            options.connect_timeout,
        )
        .await?;
        Ok(WhepClient {
            pc,
            negotiated,
            packets,
            http,
            token: token.map(str::to_owned),
        })
    }

    /// Asks the server for simulcast layer `layer` (None: the best).
    pub async fn choose_layer(&self, layer: Option<&str>) -> Result<u16, ClientError> {
        let url = format!("{}/layer", self.negotiated.resource_url);
        let response = self
            .http
            .post(url)
            .json(&serde_json::json!({ "layer": layer }))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// Sends a PLI for the received video (as a browser does after loss).
    pub async fn request_keyframe(&self) -> Result<(), ClientError> {
        for receiver in self.pc.get_receivers().await {
            for track in receiver.tracks().await {
                if track.kind() == RTPCodecType::Video {
                    let pli = webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: track.ssrc(),
                    };
                    self.pc.write_rtcp(&[Box::new(pli)]).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends a NACK for video packets `seqs` (as a receiver does after loss).
    pub async fn nack_video(&self, seqs: &[u16]) -> Result<(), ClientError> {
        use webrtc::rtcp::transport_feedbacks::transport_layer_nack::{
            NackPair, TransportLayerNack,
        };
        for receiver in self.pc.get_receivers().await {
            for track in receiver.tracks().await {
                if track.kind() == RTPCodecType::Video {
                    let nack = TransportLayerNack {
                        sender_ssrc: 0,
                        media_ssrc: track.ssrc(),
                        nacks: seqs
                            .iter()
                            .map(|&packet_id| NackPair {
                                packet_id,
                                lost_packets: 0,
                            })
                            .collect(),
                    };
                    self.pc.write_rtcp(&[Box::new(nack)]).await?;
                }
            }
        }
        Ok(())
    }

    /// Ends the session with DELETE and closes the peer connection.
    pub async fn close(self) -> Result<u16, ClientError> {
        let mut request = self.http.delete(&self.negotiated.resource_url);
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        let status = request.send().await?.status().as_u16();
        let _ = self.pc.close().await;
        Ok(status)
    }
}
