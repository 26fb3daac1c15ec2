//! One str0m peer connection as the load tool uses it: RTP mode (we packetize; received packets are not
//! depacketized), Opus on payload type 111 and constrained-baseline H.264 on 96 (no RTX), one UDP socket on
//! 127.0.0.1, one DTLS certificate shared by every peer, and the drain loop str0m's sans-IO API asks for.
//!
//! The drain loop is on the hot path: it allocates nothing of its own and logs nothing.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcError};

/// Payload types offered (the server answers with the offer's payload types).
pub const AUDIO_PT: u8 = 111;
pub const VIDEO_PT: u8 = 96;
/// Constrained baseline, level 3.1: what OBS and browsers offer first, and what 720p30 needs.
pub const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// Kernel receive buffer of each peer's socket: a few keyframes' worth, bounded.
const SOCKET_RECV_BUFFER: usize = 512 * 1024;

/// One DTLS certificate for every peer (making one per peer would cost more than the rest of the set-up).
pub fn dtls_certificate() -> Result<DtlsCert, String> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| "the str0m crypto backend cannot make a DTLS certificate".to_owned())
}

/// A non-blocking UDP socket on 127.0.0.1 with an ephemeral port.
pub fn bind_loopback() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProtocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    Ok(socket.into())
}

/// An offer made, waiting for its answer.
pub struct Offer {
    pub sdp: String,
    pub pending: SdpPendingOffer,
    pub audio: Mid,
    pub video: Mid,
}

/// A new peer on `local` with an audio and a video section in `direction` (SendOnly to publish, RecvOnly to
/// watch), and its offer.
pub fn new_peer(
    certificate: &DtlsCert,
    local: SocketAddr,
    direction: Direction,
) -> Result<(Box<Rtc>, Offer), String> {
    let mut config = Rtc::builder()
        .set_rtp_mode(true)
        .set_dtls_cert(certificate.clone())
        .clear_codecs()
        .enable_opus(true, false);
    config
        .codec_config()
        .add_h264(VIDEO_PT.into(), None, true, H264_PROFILE_LEVEL_ID);
    // `build` panics only if the crypto backend cannot start DTLS with a valid certificate, which
    // `dtls_certificate` has just made with the same backend.
    let mut rtc = Box::new(config.build(Instant::now()));
    let candidate =
        Candidate::host(local, "udp").map_err(|e| format!("host candidate {local}: {e}"))?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, direction, None, None, None);
    let video = api.add_media(MediaKind::Video, direction, None, None, None);
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| "str0m made no offer".to_owned())?;
    let offer = Offer {
        sdp: offer.to_sdp_string(),
        pending,
        audio,
        video,
    };
    Ok((rtc, offer))
}

/// Applies the server's answer.
pub fn accept_answer(rtc: &mut Rtc, pending: SdpPendingOffer, answer: &str) -> Result<(), String> {
    let answer =
        SdpAnswer::from_sdp_string(answer).map_err(|e| format!("unreadable SDP answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("str0m refused the answer: {e}"))
}

/// Feeds one received datagram to `rtc`. Datagrams str0m cannot classify are dropped.
pub fn receive(
    rtc: &mut Rtc,
    now: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    datagram: &[u8],
) -> Result<(), RtcError> {
    let Ok(contents) = datagram.try_into() else {
        return Ok(());
    };
    rtc.handle_input(Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source,
            destination,
            contents,
        },
    ))
}

/// Drains `rtc` until it asks for a timeout: transmits go out on `socket` (a failed send is counted in
/// `send_errors` and dropped, as a network would), events go to `on_event`.
pub fn drain(
    rtc: &mut Rtc,
    socket: &mio::net::UdpSocket,
    send_errors: &mut u64,
    mut on_event: impl FnMut(Event),
) -> Result<Instant, RtcError> {
    loop {
        match rtc.poll_output()? {
            Output::Timeout(at) => return Ok(at),
            Output::Transmit(t) => {
                if socket.send_to(&t.contents, t.destination).is_err() {
                    *send_errors += 1;
                }
            }
            Output::Event(event) => on_event(event),
        }
    }
}
