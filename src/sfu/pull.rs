//! A pull: this node receives a stream from its origin node as a WHEP client (a cluster edge), and the pulled
//! tracks enter the same fan-out as a publisher's (GOP cache, retransmissions, keyframe requests upstream, the
//! shard queues). Made in two steps around the HTTP exchange, which the cluster does: [`Sfu::prepare_pull`] makes
//! the peer connection (full ICE, controlling, from a UDP port of its own: see `Engine::pull_peer`) and its
//! offer, [`Sfu::complete_pull`] applies the origin's answer. Both run on the stream's home media thread, like a publisher's session. A pull is a
//! publisher session of the stream here (one per stream: a real publisher cannot take the stream meanwhile) that
//! records nothing: recording runs on the origin only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::Instrument;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;

use super::session::{Session, SessionPlace, SessionRole, log_id, random_id};
use super::stream::PublishedMedia;
use super::{Sfu, SfuError};

/// How long the offer waits for its host candidate.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

impl Sfu {
    /// Makes a pull of `stream_name`: its session (registered, role publisher) and the SDP offer to POST to the
    /// origin's WHEP endpoint. `PublisherExists` when the stream has a publisher or a pull here already.
    pub(crate) async fn prepare_pull(
        &self,
        stream_name: &str,
    ) -> Result<(String, String), SfuError> {
        self.prepare_pull_on_home(stream_name, None).await
    }

    /// Makes a pull of one more simulcast layer, `layer`, of `stream_name`, which is pulled here already: a
    /// session of video only whose track feeds the stream as that layer, next to the first pull's. The stream's
    /// viewers who chose that layer switch to it at its first keyframe.
    pub(crate) async fn prepare_layer_pull(
        &self,
        stream_name: &str,
        layer: &str,
    ) -> Result<(String, String), SfuError> {
        self.prepare_pull_on_home(stream_name, Some(layer.to_owned()))
            .await
    }

    async fn prepare_pull_on_home(
        &self,
        stream_name: &str,
        layer: Option<String>,
    ) -> Result<(String, String), SfuError> {
        let sfu = self.clone();
        let name = stream_name.to_owned();
        let home = self.inner.media.home(stream_name);
        let work = async move { sfu.prepare_pull_here(home, &name, layer).await };
        match self.inner.media.handle(home).spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(SfuError::Internal(format!(
                "the media thread dropped the pull: {e}"
            ))),
        }
    }

    async fn prepare_pull_here(
        &self,
        home: usize,
        stream_name: &str,
        layer: Option<String>,
    ) -> Result<(String, String), SfuError> {
        let stream = self.stream_or_create(stream_name);
        let session_id = random_id();
        let label = Arc::new(OnceLock::new());
        // The first pull is the stream's publisher here; a layer pull adds a source to it under its epoch.
        let epoch = match &layer {
            None => {
                let media = PublishedMedia {
                    has_audio: true,
                    has_video: true,
                    layers: Vec::new(),
                };
                stream
                    .claim_publisher(&session_id, media)
                    .ok_or_else(|| SfuError::PublisherExists(stream_name.to_owned()))?
            }
            Some(layer) => {
                if stream.publisher().is_none() {
                    return Err(SfuError::NotLive(stream_name.to_owned()));
                }
                let _ = label.set(layer.clone());
                stream.epoch()
            }
        };
        let kinds: &[RTPCodecType] = if layer.is_some() {
            &[RTPCodecType::Video]
        } else {
            &[RTPCodecType::Audio, RTPCodecType::Video]
        };
        let span = tracing::info_span!("webrtc_session", role = "pull", stream = %stream_name, session = %log_id(&session_id), layer = layer.as_deref().unwrap_or(""));
        let made = async {
            let pc = self.inner.engine.pull_peer().await?;
            for kind in kinds {
                pc.add_transceiver_from_kind(
                    *kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        send_encodings: Vec::new(),
                    }),
                )
                .await
                .map_err(|e| SfuError::Negotiation(e.to_string()))?;
            }
            self.forward_tracks(&pc, &stream, epoch, false, Some(label.clone()));
            let offer = pc
                .create_offer(None)
                .await
                .map_err(|e| SfuError::Negotiation(e.to_string()))?;
            let mut gathered = pc.gathering_complete_promise().await;
            pc.set_local_description(offer)
                .await
                .map_err(|e| SfuError::Negotiation(e.to_string()))?;
            let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
            let local = pc
                .local_description()
                .await
                .ok_or_else(|| SfuError::Negotiation("no local description".into()))?;
            // The pull's own port on the media address, as gathered: the origin (ICE-lite) answers the checks
            // from wherever they come, so nothing needs announcing.
            let offer_sdp = local.sdp.clone();
            let session = Arc::new(
                Session::new(
                    session_id.clone(),
                    &stream.name,
                    SessionRole::Publisher,
                    None,
                    pc.clone(),
                    offer_sdp.clone(),
                    Vec::new(),
                )
                .placed(SessionPlace {
                    thread: home,
                    pending: None,
                    offered_candidates: 0,
                })
                .pulling_layer(label),
            );
            session.mark_pull();
            self.register_session(session);
            self.watch_state(&pc, &session_id);
            Ok::<String, SfuError>(offer_sdp)
        }
        .instrument(span)
        .await;
        match made {
            Ok(offer_sdp) => Ok((session_id, offer_sdp)),
            Err(e) => {
                if self.session(&session_id).is_some() {
                    self.end_session(&session_id, "pull negotiation failed");
                } else if layer.is_none() {
                    stream.release_publisher(&session_id);
                    self.drop_stream_if_idle(stream_name);
                }
                Err(e)
            }
        }
    }

    /// Applies the origin's answer to the pull `session_id`.
    /// `layers`: the simulcast layers the origin has, best first (empty: none); the first pull's video is the best
    /// one, a layer pull's the layer it was made for.
    pub(crate) async fn complete_pull(
        &self,
        session_id: &str,
        answer_sdp: String,
        layers: Vec<String>,
    ) -> Result<(), SfuError> {
        let session = self.session(session_id).ok_or(SfuError::SessionNotFound)?;
        if let Some(best) = layers.first() {
            // Before the answer is applied, so before any track arrives.
            let _ = session.pull_layer.set(best.clone());
        }
        // The stream goes live here once every kind the origin sends has arrived (the first pull only).
        if let Some(stream) = self.stream(&session.stream)
            && stream.publisher().as_deref() == Some(session_id)
        {
            let (has_audio, has_video) = sent_kinds(&answer_sdp);
            stream.set_published(
                session_id,
                PublishedMedia {
                    has_audio,
                    has_video,
                    layers,
                },
            );
        }
        let pc = session.pc.clone();
        let work = async move {
            let answer = RTCSessionDescription::answer(answer_sdp)
                .map_err(|e| SfuError::Negotiation(e.to_string()))?;
            pc.set_remote_description(answer)
                .await
                .map_err(|e| SfuError::Negotiation(e.to_string()))
        };
        let applied = match self.inner.media.handle(session.thread).spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(SfuError::Internal(format!(
                "the media thread dropped the pull: {e}"
            ))),
        };
        if applied.is_err() {
            self.end_session(session_id, "the origin's answer could not be applied");
        }
        applied
    }

    /// Viewers of `stream` on this node.
    pub(crate) fn viewers_of(&self, stream: &str) -> usize {
        self.stream(stream).map_or(0, |s| s.viewer_count())
    }

    /// The simulcast layers `stream` has here now, best first (empty: none, or not live).
    pub(crate) fn layers_of(&self, stream: &str) -> Vec<String> {
        self.stream(stream)
            .and_then(|s| s.live_media())
            .map_or_else(Vec::new, |m| m.layers)
    }

    /// The simulcast layers that viewers of `stream` on this node chose, each once.
    pub(crate) fn chosen_layers(&self, stream: &str) -> Vec<String> {
        self.stream(stream)
            .map_or_else(Vec::new, |s| s.chosen_layers())
    }
}

/// Which kinds (audio, video) an answer's media sections send: a section with a port other than 0 and a direction
/// of `sendonly` or `sendrecv`.
fn sent_kinds(answer: &str) -> (bool, bool) {
    let (mut audio, mut video) = (false, false);
    let mut current: Option<(&str, bool)> = None;
    let mut close = |section: Option<(&str, bool)>, sending: bool| {
        if let Some((kind, open)) = section
            && open
            && sending
        {
            match kind {
                "audio" => audio = true,
                "video" => video = true,
                _ => {}
            }
        }
    };
    let mut sending = false;
    for line in answer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            close(current, sending);
            let mut fields = m.split(' ');
            let kind = fields.next().unwrap_or("");
            let open = fields.next().is_some_and(|port| port != "0");
            current = Some((kind, open));
            sending = false;
        } else if line == "a=sendonly" || line == "a=sendrecv" {
            sending = true;
        }
    }
    close(current, sending);
    (audio, video)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sections_that_send_count() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=inactive\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
        assert_eq!(sent_kinds(answer), (false, true));
        let answer =
            "m=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=sendonly\r\nm=video 9 x 96\r\na=sendrecv\r\n";
        assert_eq!(sent_kinds(answer), (false, true));
        assert_eq!(sent_kinds("m=audio 9 x 111\na=sendonly\n"), (true, false));
    }
}
