//! Accepting a viewer (WHEP): pick the codecs the viewer can take, make its downtracks, and read its RTCP
//! (keyframe requests go to the publisher, throttled; NACKed packets are sent again from the source's
//! retransmission buffer, `retransmit::History`, within the viewer's resend budget per second).

use std::sync::Arc;
use tracing::Instrument;

use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::TrackLocal;

use super::downtrack::DownTrack;
use super::engine::ViewerCodecs;
use super::ice::answer_with_candidates;
use super::offer::{self, OfferedCodec, OfferedMedia, Role, codec_compatible};
use super::publisher::media_mids;
use super::session::{Session, SessionRole, log_id, random_id};
use super::stream::Viewer;
use super::{Accepted, Sfu, SfuError};

fn as_offered(c: &RTCRtpCodecCapability) -> OfferedCodec {
    OfferedCodec {
        payload_type: 0,
        mime_type: c.mime_type.clone(),
        clock_rate: c.clock_rate,
        channels: c.channels,
        fmtp: c.sdp_fmtp_line.clone(),
    }
}

/// The viewer's own spelling (payload type, fmtp) of the codec the publisher sends, if it offers one.
fn pick_codec(
    sent: &RTCRtpCodecCapability,
    offered: &OfferedMedia,
) -> Option<RTCRtpCodecParameters> {
    let sent_offered = as_offered(sent);
    offered
        .codecs
        .iter()
        .find(|c| codec_compatible(&sent_offered, c))
        .map(|c| RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: sent.mime_type.clone(),
                clock_rate: sent.clock_rate,
                channels: if c.channels == 0 {
                    sent.channels
                } else {
                    c.channels
                },
                sdp_fmtp_line: c.fmtp.clone(),
                rtcp_feedback: vec![],
            },
            payload_type: c.payload_type,
            ..Default::default()
        })
}

impl Sfu {
    /// Accepts a WHEP offer for `stream_name`. `layer` picks a simulcast layer (None: the best). `token` is the
    /// bearer token presented, if any (needed again to PATCH or DELETE).
    /// The session is made on the media thread `media_threads::for_viewer` picks, and its tracks are fed there.
    pub async fn accept_viewer(
        &self,
        stream_name: &str,
        offer_sdp: &str,
        layer: Option<String>,
        token: Option<&str>,
        client: std::net::IpAddr,
    ) -> Result<Accepted, SfuError> {
        let sfu = self.clone();
        let (stream, offer, token) = (
            stream_name.to_owned(),
            offer_sdp.to_owned(),
            token.map(str::to_owned),
        );
        let thread = self.inner.media.for_viewer(stream_name);
        self.on_media_thread(thread, async move {
            sfu.accept_viewer_here(thread, &stream, &offer, layer, token.as_deref(), client)
                .await
        })
        .await
    }

    async fn accept_viewer_here(
        &self,
        thread: usize,
        stream_name: &str,
        offer_sdp: &str,
        layer: Option<String>,
        token: Option<&str>,
        client: std::net::IpAddr,
    ) -> Result<Accepted, SfuError> {
        let summary = offer::inspect(offer_sdp, Role::Watch)?;
        let place = self.admit(SessionRole::Viewer, client, thread, summary.candidates)?;
        let stream = self
            .stream(stream_name)
            .ok_or_else(|| SfuError::NotLive(stream_name.to_owned()))?;
        let live = stream
            .live_media()
            .ok_or_else(|| SfuError::NotLive(stream_name.to_owned()))?;
        if stream.viewer_count() >= self.config().max_viewers_per_stream {
            return Err(SfuError::Overloaded);
        }
        if let Some(l) = &layer
            && !live.layers.iter().any(|x| x == l)
        {
            return Err(SfuError::NoSuchLayer(l.clone()));
        }
        let video = match (&live.video, &summary.video) {
            (Some(sent), Some(offered)) => Some(pick_codec(sent, offered).ok_or_else(|| {
                SfuError::IncompatibleCodec(format!(
                    "the stream's video is {} ({}); the offer has no compatible video codec",
                    sent.mime_type, sent.sdp_fmtp_line
                ))
            })?),
            _ => None,
        };
        let audio = match (&live.audio, &summary.audio) {
            (Some(sent), Some(offered)) => Some(pick_codec(sent, offered).ok_or_else(|| {
                SfuError::IncompatibleCodec(format!(
                    "the stream's audio is {}; the offer has no compatible audio codec",
                    sent.mime_type
                ))
            })?),
            _ => None,
        };
        if audio.is_none() && video.is_none() {
            return Err(SfuError::IncompatibleCodec(
                "the offer asks for no media the stream has".into(),
            ));
        }

        let pc = self
            .inner
            .engine
            .viewer_peer(&ViewerCodecs {
                audio: audio.clone(),
                video: video.clone(),
            })
            .await?;
        let session_id = random_id();
        let span = tracing::info_span!("webrtc_session", role = "viewer", stream = %stream_name, session = %log_id(&session_id));
        let audio_track = audio.map(|c| {
            Arc::new(
                DownTrack::new(c.capability, "audio", &format!("zipiq-{stream_name}"))
                    .on_thread(thread),
            )
        });
        let video_track = video.map(|c| {
            Arc::new(
                DownTrack::new(c.capability, "video", &format!("zipiq-{stream_name}"))
                    .on_thread(thread),
            )
        });
        // Tracks go in before the remote description, or webrtc-rs leaves them out of the answer.
        let budget = Arc::new(ResendBudget::new(
            self.config().max_retransmits_per_viewer_per_second,
        ));
        for track in audio_track.iter().chain(video_track.iter()) {
            let local: Arc<dyn TrackLocal + Send + Sync> = track.clone();
            let sender = match pc.add_track(local).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = pc.close().await;
                    return Err(SfuError::Internal(e.to_string()));
                }
            };
            tokio::spawn(
                read_viewer_rtcp(sender, track.clone(), budget.clone()).instrument(span.clone()),
            );
        }
        let viewer = Arc::new(Viewer::new(
            session_id.clone(),
            audio_track,
            video_track,
            layer,
        ));
        let session = Arc::new(
            Session::new(
                session_id.clone(),
                stream_name,
                SessionRole::Viewer,
                token,
                pc.clone(),
                offer_sdp.to_owned(),
                media_mids(&summary),
            )
            .placed(place),
        );
        stream.add_viewer(viewer);
        self.register_session(session.clone());
        self.watch_state(&pc, &session_id);
        match answer_with_candidates(&pc, offer_sdp, self.inner.engine.addresses()).await {
            Ok(answer_sdp) => {
                tracing::info!(session = %log_id(&session_id), stream = %stream_name, "viewer accepted");
                Ok(Accepted {
                    session_id,
                    answer_sdp,
                    etag: session.etag(),
                })
            }
            Err(e) => {
                self.end_session(&session_id, "negotiation failed");
                Err(e)
            }
        }
    }
}

/// How many packets one viewer may have resent per second (shared by its audio and video senders): a NACK can
/// name hundreds of packets, and a viewer that sends them without end must not make us send without end.
#[derive(Debug)]
pub(crate) struct ResendBudget {
    per_second: u32,
    /// (start of the current one-second window, resends in it).
    window: std::sync::Mutex<(std::time::Instant, u32)>,
}

impl ResendBudget {
    /// A budget of `per_second` resends (0: no limit).
    pub(crate) fn new(per_second: u32) -> ResendBudget {
        ResendBudget {
            per_second,
            window: std::sync::Mutex::new((std::time::Instant::now(), 0)),
        }
    }

    /// Takes one resend at `now`; false when this second's budget is spent.
    pub(crate) fn take_at(&self, now: std::time::Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(window.0) >= std::time::Duration::from_secs(1) {
            *window = (now, 0);
        }
        if window.1 >= self.per_second {
            return false;
        }
        window.1 += 1;
        true
    }
}

/// Reads a viewer's RTCP for one sender until it closes: keyframe requests go upstream (throttled), NACKed
/// packets are sent again from the source's retransmission buffer, within `budget`.
async fn read_viewer_rtcp(
    sender: Arc<RTCRtpSender>,
    track: Arc<DownTrack>,
    budget: Arc<ResendBudget>,
) {
    let plis = metrics::counter!("zipiq_keyframe_requests_received_total");
    let nacks = metrics::counter!("zipiq_nacks_received_total");
    let resent = metrics::counter!("zipiq_rtp_retransmitted_packets_total");
    let missed = metrics::counter!("zipiq_rtp_retransmissions_missed_total");
    let refused = metrics::counter!("zipiq_rtp_retransmissions_refused_total");
    while let Ok((packets, _)) = sender.read_rtcp().await {
        for packet in packets {
            let any = packet.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                plis.increment(1);
                track.request_keyframe();
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                nacks.increment(nack.nacks.len() as u64);
                if track.ssrc() != Some(nack.media_ssrc) {
                    continue;
                }
                for seq in nack.nacks.iter().flat_map(|pair| pair.packet_list()) {
                    if !budget.take_at(std::time::Instant::now()) {
                        refused.increment(1);
                        continue;
                    }
                    match track.retransmit(seq).await {
                        Ok(true) => resent.increment(1),
                        Ok(false) | Err(_) => missed.increment(1),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_resend_budget_refills_each_second() {
        let budget = ResendBudget::new(3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| budget.take_at(t0)));
        assert!(!budget.take_at(t0 + Duration::from_millis(999)));
        assert!(budget.take_at(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_zero_budget_is_no_limit() {
        let budget = ResendBudget::new(0);
        let now = Instant::now();
        assert!((0..10_000).all(|_| budget.take_at(now)));
    }
}
