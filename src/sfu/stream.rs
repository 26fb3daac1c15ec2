//! A stream: at most one publisher, its sources (one audio track, one or more video layers), and its viewers.
//!
//! This is the control plane of one stream. It decides which source feeds which viewer (the best layer unless the
//! viewer chose one), re-attaches viewers when a publisher returns within the grace period, and never touches
//! packets itself: it sends attach commands to the sources' forwarding tasks. Its lock is a plain mutex held for
//! bookkeeping only, never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};

use super::downtrack::DownTrack;
use super::forward::Start;
use super::tap::{RecordingHook, Tap};
use crate::media::{CodecInfo, MediaKind, TapEvent};

/// A command to a source's forwarding task.
pub(crate) enum SourceCommand {
    Attach(Arc<DownTrack>, Start),
    /// Copy packets to the recorder from now on.
    SetTap(Tap),
}

/// A live source of the current publisher, as the stream knows it.
#[derive(Clone)]
pub(crate) struct SourceHandle {
    pub id: u64,
    pub kind: RTPCodecType,
    /// Simulcast layer (`rid`), empty without simulcast.
    pub rid: String,
    pub codec: RTCRtpCodecCapability,
    pub commands: mpsc::UnboundedSender<SourceCommand>,
}

/// A viewer of the stream.
pub(crate) struct Viewer {
    pub session_id: String,
    pub audio: Option<Arc<DownTrack>>,
    pub video: Option<Arc<DownTrack>>,
    /// The layer the viewer asked for; None means "the best one".
    pub chosen_layer: Mutex<Option<String>>,
    /// The video source this viewer was last sent to (0: none).
    assigned_video: Mutex<u64>,
    /// Set once its peer connection is up: only then are tracks attached.
    connected: AtomicBool,
}

impl Viewer {
    pub(crate) fn new(
        session_id: String,
        audio: Option<Arc<DownTrack>>,
        video: Option<Arc<DownTrack>>,
        chosen_layer: Option<String>,
    ) -> Viewer {
        Viewer {
            session_id,
            audio,
            video,
            chosen_layer: Mutex::new(chosen_layer),
            assigned_video: Mutex::new(0),
            connected: AtomicBool::new(false),
        }
    }

    fn close_tracks(&self) {
        for t in self.audio.iter().chain(self.video.iter()) {
            t.close();
        }
    }
}

/// What a publisher announced in its offer, used to tell when the stream is fully live.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishedMedia {
    pub has_audio: bool,
    pub has_video: bool,
    /// Simulcast layers, best first (the offer's order); empty without simulcast.
    pub layers: Vec<String>,
}

#[derive(Default)]
struct State {
    /// Session id of the current publisher.
    publisher: Option<String>,
    /// Increments with every publisher, so a stale grace timer knows it is stale.
    epoch: u64,
    published: PublishedMedia,
    sources: Vec<SourceHandle>,
    viewers: HashMap<String, Arc<Viewer>>,
    /// Codecs of the last publisher, kept through the grace period.
    audio_codec: Option<RTCRtpCodecCapability>,
    video_codec: Option<RTCRtpCodecCapability>,
    /// The open broadcast's recording channel (kept through the grace period).
    tap: Option<mpsc::Sender<TapEvent>>,
    /// Whether `Started` went to the recorder for the current publisher.
    recording_started: bool,
    /// The video source being recorded (the best layer).
    recorded_video: Arc<AtomicU64>,
}

/// What a viewer can be offered right now.
#[derive(Debug, Clone)]
pub(crate) struct LiveMedia {
    pub audio: Option<RTCRtpCodecCapability>,
    pub video: Option<RTCRtpCodecCapability>,
    pub layers: Vec<String>,
}

/// One stream's publisher, sources and viewers.
pub(crate) struct Stream {
    pub name: String,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Stream {
    pub(crate) fn new(name: &str) -> Stream {
        Stream {
            name: name.to_owned(),
            state: Mutex::new(State::default()),
        }
    }

    /// Makes `session_id` the publisher unless another one is live. Returns the new epoch.
    pub(crate) fn claim_publisher(&self, session_id: &str, media: PublishedMedia) -> Option<u64> {
        let mut st = lock(&self.state);
        if st.publisher.is_some() {
            return None;
        }
        st.publisher = Some(session_id.to_owned());
        st.epoch += 1;
        st.published = media;
        st.sources.clear();
        Some(st.epoch)
    }

    /// Corrects what publisher `session_id` sends, once known (a pull learns it from the origin's answer).
    pub(crate) fn set_published(&self, session_id: &str, media: PublishedMedia) {
        let mut st = lock(&self.state);
        if st.publisher.as_deref() == Some(session_id) {
            st.published = media;
        }
    }

    /// The simulcast layers this stream's viewers chose, each once.
    pub(crate) fn chosen_layers(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut layers: Vec<String> = st
            .viewers
            .values()
            .filter_map(|v| {
                v.chosen_layer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
            .collect();
        layers.sort();
        layers.dedup();
        layers
    }

    /// The current publisher's session id.
    pub(crate) fn publisher(&self) -> Option<String> {
        lock(&self.state).publisher.clone()
    }

    /// The current publisher epoch.
    pub(crate) fn epoch(&self) -> u64 {
        lock(&self.state).epoch
    }

    /// Removes the publisher if it is `session_id`. Returns the epoch it had, for the grace timer.
    pub(crate) fn release_publisher(&self, session_id: &str) -> Option<u64> {
        let mut st = lock(&self.state);
        if st.publisher.as_deref() != Some(session_id) {
            return None;
        }
        st.publisher = None;
        st.sources.clear();
        if st.recording_started {
            st.recording_started = false;
            if let Some(tap) = &st.tap {
                let _ = tap.try_send(TapEvent::PublisherLost);
            }
        }
        Some(st.epoch)
    }

    /// Takes the recording channel of the open broadcast (it ends: the caller sends `End`).
    pub(crate) fn take_tap(&self) -> Option<mpsc::Sender<TapEvent>> {
        let mut st = lock(&self.state);
        st.recording_started = false;
        st.tap.take()
    }

    /// Whether every kind the publisher announced has a source: only then do viewers get a session.
    pub(crate) fn live_media(&self) -> Option<LiveMedia> {
        let st = lock(&self.state);
        st.publisher.as_ref()?;
        let has = |k| st.sources.iter().any(|s| s.kind == k);
        if st.published.has_audio && !has(RTPCodecType::Audio) {
            return None;
        }
        if st.published.has_video && !has(RTPCodecType::Video) {
            return None;
        }
        if st.sources.is_empty() {
            return None;
        }
        Some(LiveMedia {
            audio: st.audio_codec.clone(),
            video: st.video_codec.clone(),
            layers: st.published.layers.clone(),
        })
    }

    /// Registers a new source of publisher `epoch` and attaches the viewers it should feed. Returns the sessions
    /// of viewers that cannot take the new codec (a returning publisher changed codec): the caller ends them.
    pub(crate) fn add_source(
        &self,
        epoch: u64,
        source: SourceHandle,
        recording: Option<&dyn RecordingHook>,
    ) -> Vec<String> {
        let mut st = lock(&self.state);
        if st.epoch != epoch || st.publisher.is_none() {
            return Vec::new(); // A source of a publisher already gone.
        }
        if st.tap.is_none() {
            st.tap = recording.and_then(|r| r.broadcast_started(&self.name));
        }
        let previous = match source.kind {
            RTPCodecType::Audio => st.audio_codec.replace(source.codec.clone()),
            _ => st.video_codec.replace(source.codec.clone()),
        };
        let codec_changed = previous.is_some_and(|p| !same_codec(&p, &source.codec));
        st.sources.push(source.clone());
        update_recording(&mut st, &source);
        let mut incompatible = Vec::new();
        let viewers: Vec<Arc<Viewer>> = st.viewers.values().cloned().collect();
        for viewer in viewers {
            let track = match source.kind {
                RTPCodecType::Audio => viewer.audio.as_ref(),
                _ => viewer.video.as_ref(),
            };
            let Some(track) = track else { continue };
            if codec_changed && !same_codec(track.codec(), &source.codec) {
                incompatible.push(viewer.session_id.clone());
                continue;
            }
            if !viewer.connected.load(Ordering::Acquire) {
                continue;
            }
            match source.kind {
                RTPCodecType::Audio => {
                    let _ = source
                        .commands
                        .send(SourceCommand::Attach(track.clone(), Start::Now));
                }
                _ => assign_video(&st, &viewer, Start::AtKeyframe),
            }
        }
        incompatible
    }

    /// Forgets a source that ended (its track closed) and moves its viewers to the best remaining layer.
    pub(crate) fn remove_source(&self, source_id: u64) {
        let mut st = lock(&self.state);
        let before = st.sources.len();
        st.sources.retain(|s| s.id != source_id);
        if st.sources.len() == before {
            return;
        }
        let best = ordered_video_sources(&st).first().map_or(0, |s| s.id);
        st.recorded_video.store(best, Ordering::Relaxed);
        let viewers: Vec<Arc<Viewer>> = st.viewers.values().cloned().collect();
        for viewer in viewers {
            if *viewer
                .assigned_video
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                == source_id
            {
                assign_video(&st, &viewer, Start::AtKeyframe);
            }
        }
    }

    /// Adds a viewer (not yet connected).
    pub(crate) fn add_viewer(&self, viewer: Arc<Viewer>) {
        lock(&self.state)
            .viewers
            .insert(viewer.session_id.clone(), viewer);
    }

    /// Number of viewers.
    pub(crate) fn viewer_count(&self) -> usize {
        lock(&self.state).viewers.len()
    }

    /// The viewer's peer connection is up: attach its tracks to the sources, video from the picture cache.
    pub(crate) fn viewer_connected(&self, session_id: &str) {
        let st = lock(&self.state);
        let Some(viewer) = st.viewers.get(session_id).cloned() else {
            return;
        };
        if viewer.connected.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(audio) = &viewer.audio
            && let Some(source) = st.sources.iter().find(|s| s.kind == RTPCodecType::Audio)
        {
            let _ = source
                .commands
                .send(SourceCommand::Attach(audio.clone(), Start::Now));
        }
        assign_video(&st, &viewer, Start::FromCache);
    }

    /// The viewer chose a layer (None: the best). False when no such layer exists.
    pub(crate) fn choose_layer(&self, session_id: &str, layer: Option<String>) -> bool {
        let st = lock(&self.state);
        let Some(viewer) = st.viewers.get(session_id).cloned() else {
            return false;
        };
        // A layer that has a source here, or that the publisher announced (a pulled stream's layers are pulled
        // when chosen, so they have no source yet).
        if let Some(l) = &layer
            && !st
                .sources
                .iter()
                .any(|s| s.kind != RTPCodecType::Audio && &s.rid == l)
            && !st.published.layers.iter().any(|p| p == l)
        {
            return false;
        }
        *viewer
            .chosen_layer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = layer;
        if viewer.connected.load(Ordering::Acquire) {
            assign_video(&st, &viewer, Start::AtKeyframe);
        }
        true
    }

    /// Removes a viewer and closes its tracks.
    pub(crate) fn remove_viewer(&self, session_id: &str) -> bool {
        let removed = lock(&self.state).viewers.remove(session_id);
        if let Some(v) = &removed {
            v.close_tracks();
        }
        removed.is_some()
    }

    /// Session ids of every viewer.
    pub(crate) fn viewer_sessions(&self) -> Vec<String> {
        lock(&self.state).viewers.keys().cloned().collect()
    }

    /// Whether nothing is left: no publisher, no viewer, and no broadcast waiting out its grace period.
    pub(crate) fn is_idle(&self) -> bool {
        let st = lock(&self.state);
        st.publisher.is_none() && st.viewers.is_empty() && st.tap.is_none()
    }

    /// Simulcast layers currently received, best first.
    pub(crate) fn layers(&self) -> Vec<String> {
        let st = lock(&self.state);
        ordered_video_sources(&st)
            .into_iter()
            .map(|s| s.rid.clone())
            .collect()
    }
}

/// The codec as the recorder sees it.
pub(crate) fn codec_info(c: &RTCRtpCodecCapability) -> CodecInfo {
    CodecInfo {
        mime_type: c.mime_type.clone(),
        clock_rate: c.clock_rate,
        channels: c.channels,
        fmtp: c.sdp_fmtp_line.clone(),
    }
}

/// Keeps the recording in step with the sources: the best video layer is the recorded one; once every announced
/// track has a source, `Started` goes to the recorder and every source gets the tap (later sources get it as they
/// come).
fn update_recording(st: &mut State, new_source: &SourceHandle) {
    let best = ordered_video_sources(st).first().map_or(0, |s| s.id);
    st.recorded_video.store(best, Ordering::Relaxed);
    let Some(tx) = st.tap.clone() else { return };
    let has = |k| st.sources.iter().any(|s| s.kind == k);
    let complete = (!st.published.has_audio || has(RTPCodecType::Audio))
        && (!st.published.has_video || has(RTPCodecType::Video));
    if !complete {
        return;
    }
    let tap_for = |s: &SourceHandle| {
        let kind = if s.kind == RTPCodecType::Audio {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let _ = s.commands.send(SourceCommand::SetTap(Tap::new(
            tx.clone(),
            kind,
            st.recorded_video.clone(),
        )));
    };
    if st.recording_started {
        tap_for(new_source);
        return;
    }
    st.recording_started = true;
    let _ = tx.try_send(TapEvent::Started {
        audio: st.audio_codec.as_ref().map(codec_info),
        video: st.video_codec.as_ref().map(codec_info),
    });
    for s in &st.sources {
        tap_for(s);
    }
}

fn same_codec(a: &RTCRtpCodecCapability, b: &RTCRtpCodecCapability) -> bool {
    a.mime_type.eq_ignore_ascii_case(&b.mime_type) && a.clock_rate == b.clock_rate
}

/// Video sources in preference order: the publisher's layer order (best first), unknown rids last.
fn ordered_video_sources(st: &State) -> Vec<&SourceHandle> {
    let mut video: Vec<&SourceHandle> = st
        .sources
        .iter()
        .filter(|s| s.kind != RTPCodecType::Audio)
        .collect();
    video.sort_by_key(|s| {
        st.published
            .layers
            .iter()
            .position(|l| l == &s.rid)
            .unwrap_or(usize::MAX)
    });
    video
}

/// Sends the viewer's video track to the source it should watch now, if that changed.
fn assign_video(st: &State, viewer: &Viewer, start: Start) {
    let Some(track) = &viewer.video else { return };
    let chosen = viewer
        .chosen_layer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let candidates = ordered_video_sources(st);
    let target = chosen
        .as_ref()
        .and_then(|l| candidates.iter().find(|s| &s.rid == l))
        .or_else(|| candidates.first());
    let Some(target) = target else { return };
    let mut assigned = viewer
        .assigned_video
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if *assigned == target.id {
        return;
    }
    // The first source of a viewer starts from the cache; later switches wait for a keyframe so the picture
    // never jumps back in time.
    let start = if *assigned == 0 {
        start
    } else {
        Start::AtKeyframe
    };
    if target
        .commands
        .send(SourceCommand::Attach(track.clone(), start))
        .is_ok()
    {
        *assigned = target.id;
    }
}
