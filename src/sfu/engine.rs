//! The WebRTC engine: everything that knows webrtc-rs (the classic 0.17 line) about building peer connections.
//!
//! One UDP socket shared by every peer connection (`UDPMuxDefault`), ICE-lite by default (a cluster pull, which
//! makes the offer, runs full ICE), host candidates from the configured public addresses or the local interfaces,
//! AEAD-AES-GCM SRTP offered first, one DTLS certificate for the whole process, and the codecs and header extensions
//! OBS and browsers use. The rest of the SFU sees only the peer connections made here ([`Engine::publisher_peer`],
//! [`Engine::viewer_peer`], [`Engine::pull_peer`]) and the addresses they announce; moving to another WebRTC stack
//! is this module's work.

use std::sync::Arc;
use std::time::Duration;

use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::configure_rtcp_reports;
use webrtc::api::media_engine::{MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::media_engine::{MIME_TYPE_VP8, MIME_TYPE_VP9};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use webrtc::dtls_transport::dtls_role::DTLSRole;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_mux::{UDPMuxDefault, UDPMuxParams};
use webrtc::ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::certificate::RTCCertificate;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::{PayloadType, RTCPFeedback};
use webrtc::sdp::extmap;

use super::host_addresses::HostAddresses;
use crate::config::MediaConfig;

/// Errors while setting up the engine or a peer connection.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot bind the media UDP socket {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::Error),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Addresses(String),
}

/// Which side of NACK a peer connection plays.
enum Nack {
    /// Receives from a publisher: asks for lost packets.
    Generate,
    /// Sends to a viewer: negotiates NACK, and our fan-out answers it from the source's shared retransmission
    /// buffer (`retransmit::History`), not from a per-track webrtc-rs responder.
    Answer,
}

/// Negotiates NACK (and PLI) feedback for video and adds the generator for a publisher's connection: only what
/// the connection needs (webrtc-rs's `configure_nack` adds a generator and a 1024-packet responder per track).
fn configure_nack(mut registry: Registry, media: &mut MediaEngine, side: Nack) -> Registry {
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RTPCodecType::Video,
        );
    }
    if let Nack::Generate = side {
        registry.add(Box::new(
            webrtc::interceptor::nack::generator::Generator::builder(),
        ));
    }
    registry
}

/// What a viewer's peer connection must send: the codecs of the stream, as the viewer's offer spells them.
#[derive(Debug, Clone)]
pub(crate) struct ViewerCodecs {
    pub audio: Option<RTCRtpCodecParameters>,
    pub video: Option<RTCRtpCodecParameters>,
}

/// Builds peer connections that all share one UDP socket and one certificate.
pub(crate) struct Engine {
    udp_mux: Arc<UDPMuxDefault>,
    local_addr: std::net::SocketAddr,
    addresses: HostAddresses,
    certificate: RTCCertificate,
    config: MediaConfig,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// RTCP feedback every video codec gets.
fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .iter()
    .map(|(t, p)| RTCPFeedback {
        typ: (*t).to_owned(),
        parameter: (*p).to_owned(),
    })
    .collect()
}

fn transport_cc() -> RTCPFeedback {
    RTCPFeedback {
        typ: "transport-cc".to_owned(),
        parameter: String::new(),
    }
}

/// The codecs a publisher may send, with payload types that match what OBS and Chromium offer (the answer
/// always uses the offer's payload types).
pub(crate) fn publisher_codecs() -> Vec<(RTCRtpCodecParameters, RTPCodecType)> {
    let mut codecs = Vec::new();
    let mut feedback = video_feedback();
    feedback.push(transport_cc());
    let video =
        |mime: &str, fmtp: &str, pt: PayloadType, fb: &Vec<RTCPFeedback>| RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: mime.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: fb.clone(),
            },
            payload_type: pt,
            ..Default::default()
        };
    let rtx = |apt: PayloadType, pt: PayloadType| RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: "video/rtx".to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: format!("apt={apt}"),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
        ..Default::default()
    };
    codecs.push((
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![transport_cc()],
            },
            payload_type: 111,
            ..Default::default()
        },
        RTPCodecType::Audio,
    ));
    // H.264 in packetization mode 1, every profile OBS and browsers use. webrtc-rs matches profile_idc and
    // profile_iop exactly and ignores the level, so one entry per (profile, constraint) pair.
    let h264 = [
        ("42e01f", 96, 97),
        ("42001f", 102, 103),
        ("4d001f", 104, 105),
        ("640c1f", 106, 107),
        ("64001f", 112, 113),
        ("f4001f", 114, 115),
    ];
    for (profile, pt, rtx_pt) in h264 {
        let fmtp =
            format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}");
        codecs.push((
            video(MIME_TYPE_H264, &fmtp, pt, &feedback),
            RTPCodecType::Video,
        ));
        codecs.push((rtx(pt, rtx_pt), RTPCodecType::Video));
    }
    for (mime, fmtp, pt, rtx_pt) in [
        (MIME_TYPE_VP8, "", 98, 99),
        (MIME_TYPE_VP9, "profile-id=0", 100, 101),
        (MIME_TYPE_VP9, "profile-id=2", 108, 109),
        (MIME_TYPE_AV1, "", 45, 46),
    ] {
        codecs.push((video(mime, fmtp, pt, &feedback), RTPCodecType::Video));
        codecs.push((rtx(pt, rtx_pt), RTPCodecType::Video));
    }
    codecs
}

impl Engine {
    /// Binds the shared media socket and makes the process certificate.
    pub(crate) async fn new(config: &MediaConfig) -> Result<Engine, EngineError> {
        let socket = bind_media_socket(config.udp_listen).map_err(|source| EngineError::Bind {
            addr: config.udp_listen,
            source,
        })?;
        let local_addr = socket.local_addr().map_err(|source| EngineError::Bind {
            addr: config.udp_listen,
            source,
        })?;
        let socket =
            super::mux_socket::MuxSocket::new(socket).map_err(|source| EngineError::Bind {
                addr: config.udp_listen,
                source,
            })?;
        let addresses =
            HostAddresses::from_system(config, local_addr.ip()).map_err(EngineError::Addresses)?;
        tracing::info!(
            offered = ?addresses.offered(),
            gathered_on = %addresses.gather(),
            "media host candidates"
        );
        let udp_mux = UDPMuxDefault::new(UDPMuxParams::new(socket));
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| EngineError::Certificate(e.to_string()))?;
        let certificate = RTCCertificate::from_key_pair(key_pair)?;
        Ok(Engine {
            udp_mux,
            local_addr,
            addresses,
            certificate,
            config: config.clone(),
        })
    }

    /// The addresses announced for the media socket.
    pub(crate) fn addresses(&self) -> &HostAddresses {
        &self.addresses
    }

    /// The address the media socket is bound to (its port is the one in every candidate).
    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    fn setting_engine(&self, sender_rtx: bool, lite: bool) -> SettingEngine {
        let mut s = SettingEngine::default();
        s.set_udp_network(UDPNetwork::Muxed(self.udp_mux.clone()));
        s.set_lite(lite);
        // One host candidate, on one address: the others are announced in the answer (see `host_addresses`).
        let gather = self.addresses.gather();
        s.set_include_loopback_candidate(gather.is_loopback());
        s.set_ip_filter(Box::new(move |ip| ip == gather));
        s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        let mut networks = vec![NetworkType::Udp4];
        if self.config.ipv6 {
            networks.push(NetworkType::Udp6);
        }
        s.set_network_types(networks);
        // AEAD-AES-GCM first: one pass of AES-GCM costs several times less per packet than AES-CM + HMAC-SHA1.
        s.set_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ]);
        // Consent: a peer silent for 5 s is disconnected, for 15 s failed (ICE consent lost).
        s.set_ice_timeouts(
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(15)),
            Some(Duration::from_secs(2)),
        );
        s.enable_sender_rtx(sender_rtx);
        // Passive DTLS: our handshake completes half a round trip before the peer's, so our receivers are open
        // before its first SRTP packet arrives (see `publisher_peer`).
        let _ = s.set_answering_dtls_role(DTLSRole::Server);
        s
    }

    fn rtc_configuration(&self) -> RTCConfiguration {
        RTCConfiguration {
            certificates: vec![self.certificate.clone()],
            ..Default::default()
        }
    }

    /// A peer connection that receives a publisher's media. `simulcast` registers the header extensions that
    /// simulcast needs (`sdes:mid`, `rtp-stream-id`, `repaired-rtp-stream-id`).
    ///
    /// Without simulcast they are left out on purpose: webrtc-rs 0.17 probes every SRTP stream that reaches it
    /// before its receivers are open for mid + rid, and when the probe fails it closes the stream, which kills the
    /// declared track that shares it (a race right after DTLS). Without the mid extension the probe gives up
    /// before closing anything, and tracks are matched by their `a=ssrc` lines as OBS and browsers send them.
    pub(crate) async fn publisher_peer(
        &self,
        simulcast: bool,
    ) -> Result<Arc<RTCPeerConnection>, EngineError> {
        let mut media = MediaEngine::default();
        for (codec, kind) in publisher_codecs() {
            media.register_codec(codec, kind)?;
        }
        if simulcast {
            register_extensions(&mut media)?;
        }
        let mut registry = Registry::new();
        // NACK generator (asks the publisher to resend what we lost) and receiver reports.
        registry = configure_nack(registry, &mut media, Nack::Generate);
        registry = configure_rtcp_reports(registry);
        // Transport-wide congestion control feedback, so a browser publisher's bandwidth estimate can ramp up.
        registry =
            webrtc::api::interceptor_registry::configure_twcc_receiver_only(registry, &mut media)?;
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(self.setting_engine(false, self.config.ice_lite))
            .build();
        Ok(Arc::new(
            api.new_peer_connection(self.rtc_configuration()).await?,
        ))
    }

    /// A peer connection that pulls a stream from its origin node as a WHEP client (a cluster edge): it receives
    /// like a publisher's, but offers and runs full ICE as the controlling agent (the origin is ICE-lite, and two
    /// lite agents never connect), from a UDP port of its own on the media address. Not the shared media socket:
    /// webrtc-rs's UDP mux tells peer connections apart by remote address once connected, so two pulls between
    /// the same two nodes (two streams, or two simulcast layers of one) over the same pair of sockets would be
    /// mixed up at both ends.
    pub(crate) async fn pull_peer(&self) -> Result<Arc<RTCPeerConnection>, EngineError> {
        let mut media = MediaEngine::default();
        for (codec, kind) in publisher_codecs() {
            media.register_codec(codec, kind)?;
        }
        let mut registry = Registry::new();
        // Lost packets are NACKed upstream to the origin; receiver reports as for a publisher.
        registry = configure_nack(registry, &mut media, Nack::Generate);
        registry = configure_rtcp_reports(registry);
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine({
                let mut s = self.setting_engine(false, false);
                s.set_udp_network(UDPNetwork::Ephemeral(EphemeralUDP::default()));
                s
            })
            .build();
        Ok(Arc::new(
            api.new_peer_connection(self.rtc_configuration()).await?,
        ))
    }

    /// A peer connection that sends a stream's media to one viewer, with exactly the stream's codecs.
    pub(crate) async fn viewer_peer(
        &self,
        codecs: &ViewerCodecs,
    ) -> Result<Arc<RTCPeerConnection>, EngineError> {
        let mut media = MediaEngine::default();
        if let Some(audio) = &codecs.audio {
            media.register_codec(audio.clone(), RTPCodecType::Audio)?;
        }
        if let Some(video) = &codecs.video {
            let mut video = video.clone();
            video.capability.rtcp_feedback = video_feedback();
            let pt = video.payload_type;
            media.register_codec(video, RTPCodecType::Video)?;
            media.register_codec(
                RTCRtpCodecParameters {
                    capability: RTCRtpCodecCapability {
                        mime_type: "video/rtx".to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={pt}"),
                        rtcp_feedback: vec![],
                    },
                    payload_type: pt.wrapping_add(1),
                    ..Default::default()
                },
                RTPCodecType::Video,
            )?;
        }
        let mut registry = Registry::new();
        // NACK negotiated (answered by `subscriber::read_viewer_rtcp` from the source's history) and sender
        // reports.
        registry = configure_nack(registry, &mut media, Nack::Answer);
        registry = configure_rtcp_reports(registry);
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(self.setting_engine(true, self.config.ice_lite))
            .build();
        Ok(Arc::new(
            api.new_peer_connection(self.rtc_configuration()).await?,
        ))
    }

    /// Stops the shared socket.
    pub(crate) async fn close(&self) {
        use webrtc::ice::udp_mux::UDPMux;
        let _ = self.udp_mux.close().await;
    }
}

/// Header extensions a publisher may use: `sdes:mid`, `rtp-stream-id` and `repaired-rtp-stream-id` are required
/// for simulcast (Chromium refuses an answer without them); audio level and abs-send-time are harmless.
fn register_extensions(media: &mut MediaEngine) -> Result<(), webrtc::Error> {
    for uri in [
        extmap::SDES_MID_URI,
        extmap::SDES_RTP_STREAM_ID_URI,
        extmap::SDES_REPAIR_RTP_STREAM_ID_URI,
        extmap::ABS_SEND_TIME_URI,
    ] {
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RTPCodecType::Video,
            None,
        )?;
    }
    for uri in [extmap::SDES_MID_URI, extmap::AUDIO_LEVEL_URI] {
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RTPCodecType::Audio,
            None,
        )?;
    }
    Ok(())
}

/// Binds the media socket with large kernel buffers, so bursts to many viewers are not dropped by the kernel.
fn bind_media_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual stack: IPv4 peers arrive as mapped addresses.
        socket.set_only_v6(false)?;
    }
    // Best effort: the kernel caps these at net.core.{w,r}mem_max.
    let _ = socket.set_send_buffer_size(8 << 20);
    let _ = socket.set_recv_buffer_size(8 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
