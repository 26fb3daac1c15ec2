//! The selective forwarding unit: publishers in (WHIP), viewers out (WHEP), RTP fanned out without copying.
//!
//! Layout: [`engine`] knows webrtc-rs (with [`host_addresses`] and [`mux_socket`] for the shared media socket);
//! [`offer`] and [`sdpfrag`] read what clients send; [`admission`] and [`session`] say who may open a session;
//! [`stream`] decides who watches what; [`forward`] (with [`downtrack`], [`munger`], [`keyframe`], [`retransmit`],
//! [`keyframe_request`], and [`tap`] to the recorder) is the hot path, spread over [`media_threads`];
//! [`publisher`], [`subscriber`] and [`pull`] (a cluster edge's copy of a stream) set sessions up, `ice` takes
//! trickled candidates and ICE restarts; [`key_watch`] ends sessions whose credentials changed elsewhere; this
//! module keeps the registry of streams and sessions and ends them.
//! Nothing here waits on disk, the database, IPFS or Arweave.

pub(crate) mod admission;
pub mod downtrack;
pub(crate) mod engine;
pub mod forward;
pub(crate) mod host_addresses;
mod ice;
pub mod key_watch;
pub mod keyframe;
pub mod keyframe_request;
pub(crate) mod media_threads;
pub(crate) mod munger;
pub(crate) mod mux_socket;
pub mod offer;
pub(crate) mod publisher;
pub(crate) mod pull;
pub mod retransmit;
pub mod sdpfrag;
pub(crate) mod session;
pub(crate) mod stream;
pub(crate) mod subscriber;
pub(crate) mod tap;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;

use crate::config::MediaConfig;
use engine::{Engine, EngineError};
use offer::OfferError;
use session::{Session, SessionRole};
use stream::Stream;

/// Why the SFU refused or failed a request. The HTTP layer maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    /// The SDP offer is malformed or asks for what the SFU does not do.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// The stream already has a publisher (names the stream).
    #[error("stream {0:?} already has a publisher")]
    PublisherExists(String),
    /// Nobody publishes the stream (names it).
    #[error("stream {0:?} is not live")]
    NotLive(String),
    /// The session limit is reached.
    #[error("too many sessions, try again later")]
    Overloaded,
    /// The client's address has too many sessions still connecting.
    #[error("too many sessions from your address are still connecting, try again later")]
    TooManyPending,
    /// The offer carries more ICE candidates than a session takes.
    #[error("the offer has {count} ICE candidates; at most {max} are taken")]
    OfferCandidates {
        /// How many it carries.
        count: usize,
        /// The most taken.
        max: usize,
    },
    /// A trickled candidate would pass the session's limit.
    #[error("this session has taken its {max} remote ICE candidates; no more are accepted")]
    TrickleCandidates {
        /// The most a session takes.
        max: usize,
    },
    /// The viewer's offer has no codec the stream can be sent in (says which).
    #[error("{0}")]
    IncompatibleCodec(String),
    /// No session has that id.
    #[error("no such session")]
    SessionNotFound,
    /// The viewer asked for a simulcast layer the stream does not have.
    #[error("no such layer {0:?}")]
    NoSuchLayer(String),
    /// The WebRTC stack could not complete the offer/answer (says why).
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    /// The server is shutting down and takes no new session.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Something that should not fail did (says what).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<EngineError> for SfuError {
    fn from(e: EngineError) -> Self {
        SfuError::Internal(e.to_string())
    }
}

/// A session that was accepted: the SDP answer and what the HTTP layer puts in headers.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The session's id: the last part of its resource URL.
    pub session_id: String,
    /// The SDP answer.
    pub answer_sdp: String,
    /// The session's current strong ETag, quoted (trickle PATCHes must match it).
    pub etag: String,
}

/// Counts of what is live, for the API, metrics and the lifecycle tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SfuCounts {
    /// Streams with a publisher.
    pub streams: usize,
    /// Publisher sessions.
    pub publishers: usize,
    /// Viewer sessions.
    pub viewers: usize,
    /// Cluster links: this node's pulls of streams from their origins, and other nodes' pulls from this one.
    /// Counted apart: neither is a publisher or a viewer.
    pub relays: usize,
}

/// A live stream as the home page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveStream {
    /// The stream's name.
    pub name: String,
    /// Viewer sessions of it.
    pub viewers: usize,
    /// Its simulcast layers (rids); empty without simulcast.
    pub layers: Vec<String>,
    /// Its video codec's MIME type, if it sends video.
    pub video_codec: Option<String>,
    /// Its audio codec's MIME type, if it sends audio.
    pub audio_codec: Option<String>,
}

pub(crate) struct SfuInner {
    pub(crate) config: MediaConfig,
    pub(crate) engine: Engine,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    next_source_id: AtomicU64,
    shutting_down: AtomicBool,
    recording: std::sync::RwLock<Option<Arc<dyn tap::RecordingHook>>>,
    media: media_threads::MediaThreads,
    pending: Arc<admission::PendingSessions>,
}

/// The SFU (cheap to clone).
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<SfuInner>,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("counts", &self.counts())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sfu {
    /// Binds the media socket and starts an empty SFU.
    pub async fn new(config: &MediaConfig) -> Result<Sfu, EngineError> {
        let engine = Engine::new(config).await?;
        let media = media_threads::MediaThreads::start(config.threads, config.spread_viewers)
            .map_err(|e| EngineError::Io(format!("starting the media threads: {e}")))?;
        Ok(Sfu {
            inner: Arc::new(SfuInner {
                config: config.clone(),
                engine,
                streams: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                next_source_id: AtomicU64::new(1),
                shutting_down: AtomicBool::new(false),
                recording: std::sync::RwLock::new(None),
                media,
                pending: admission::PendingSessions::new(config.max_pending_sessions_per_ip),
            }),
        })
    }

    /// Runs `work` (the making of a session) on media thread `thread`, so that every task it spawns lives there
    /// (see `media_threads`).
    async fn on_media_thread<F>(&self, thread: usize, work: F) -> Result<Accepted, SfuError>
    where
        F: std::future::Future<Output = Result<Accepted, SfuError>> + Send + 'static,
    {
        match self.inner.media.handle(thread).spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(SfuError::Internal(format!(
                "the media thread dropped the session: {e}"
            ))),
        }
    }

    fn from_inner(inner: Arc<SfuInner>) -> Sfu {
        Sfu { inner }
    }

    fn weak(&self) -> Weak<SfuInner> {
        Arc::downgrade(&self.inner)
    }

    /// The media socket's address.
    pub fn media_addr(&self) -> std::net::SocketAddr {
        self.inner.engine.local_addr()
    }

    /// The media configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// Sends every broadcast to `hook` (the recorder) from now on.
    pub fn set_recording_hook(&self, hook: Arc<dyn tap::RecordingHook>) {
        *self
            .inner
            .recording
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    pub(crate) fn recording_hook(&self) -> Option<Arc<dyn tap::RecordingHook>> {
        self.inner
            .recording
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `stream` turned private: the recorder ends its broadcast now (a private stream is never recorded) and stops
    /// taking its packets. Returns once nothing more of it is being stored (a bounded wait).
    pub async fn stream_turned_private(&self, stream: &str) {
        if let Some(hook) = self.recording_hook() {
            hook.stream_turned_private(stream).await;
        }
    }

    /// Ends the open broadcast of `stream`: `End` to the recorder (waiting a bounded time for room), then the
    /// hook is told.
    async fn end_broadcast(&self, stream: &Stream) {
        if let Some(tap) = stream.take_tap() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                tap.send(crate::media::TapEvent::End),
            )
            .await;
            if let Some(hook) = self.recording_hook() {
                hook.broadcast_ended(&stream.name);
            }
        }
    }

    pub(crate) fn next_source_id(&self) -> u64 {
        self.inner.next_source_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Tasks alive on the media threads' runtimes (the soak's "no task left" adds the main runtime's).
    pub(crate) fn media_thread_tasks(&self) -> usize {
        self.inner
            .media
            .handles()
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .sum()
    }

    /// What is live now.
    pub fn counts(&self) -> SfuCounts {
        let sessions = lock(&self.inner.sessions);
        let (publishers, viewers, relays) = count_roles(&sessions);
        SfuCounts {
            streams: lock(&self.inner.streams).len(),
            publishers,
            viewers,
            relays,
        }
    }

    /// Streams whose viewers here wait for a publisher (it left and the grace period runs), by name.
    pub(crate) fn streams_without_publisher(&self) -> Vec<String> {
        let streams: Vec<Arc<Stream>> = lock(&self.inner.streams).values().cloned().collect();
        streams
            .iter()
            .filter(|s| s.publisher().is_none() && s.viewer_count() > 0)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Streams with a publisher, by name.
    pub fn live_streams(&self) -> Vec<LiveStream> {
        let streams: Vec<Arc<Stream>> = lock(&self.inner.streams).values().cloned().collect();
        let mut out: Vec<LiveStream> = streams
            .iter()
            .filter_map(|s| {
                let media = s.live_media()?;
                // A stream pulled from another node offers every layer of its origin (each is pulled when a viewer
                // here chooses it); a publisher's, the layers that arrived.
                let pulled = s
                    .publisher()
                    .and_then(|id| self.session(&id))
                    .is_some_and(|p| p.is_pull());
                let layers = if pulled && !media.layers.is_empty() {
                    media.layers.clone()
                } else {
                    s.layers()
                };
                Some(LiveStream {
                    name: s.name.clone(),
                    viewers: s.viewer_count(),
                    layers,
                    video_codec: media.video.map(|c| c.mime_type),
                    audio_codec: media.audio.map(|c| c.mime_type),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether `stream` has a publisher whose media is flowing.
    pub fn is_live(&self, stream: &str) -> bool {
        self.stream(stream)
            .is_some_and(|s| s.live_media().is_some())
    }

    pub(crate) fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        lock(&self.inner.streams).get(name).cloned()
    }

    pub(crate) fn stream_or_create(&self, name: &str) -> Arc<Stream> {
        let mut streams = lock(&self.inner.streams);
        let stream = streams
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Stream::new(name)))
            .clone();
        metrics::gauge!("zipiq_streams").set(streams.len() as f64);
        stream
    }

    /// Removes `stream` from the registry when nothing is left in it.
    pub(crate) fn drop_stream_if_idle(&self, name: &str) {
        let mut streams = lock(&self.inner.streams);
        if streams.get(name).is_some_and(|s| s.is_idle()) {
            streams.remove(name);
        }
        metrics::gauge!("zipiq_streams").set(streams.len() as f64);
    }

    /// Admits a new session of `role` from `client`, on media thread `thread`, for an offer that has `candidates`
    /// ICE candidates: refuses it during shutdown, beyond the session budget (viewers leave
    /// `media.reserved_publisher_sessions` to publishers), when the address has its fill of sessions still
    /// connecting, or when the offer carries more candidates than `media.max_remote_candidates`.
    pub(crate) fn admit(
        &self,
        role: SessionRole,
        client: std::net::IpAddr,
        thread: usize,
        candidates: usize,
    ) -> Result<session::SessionPlace, SfuError> {
        let config = &self.inner.config;
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(SfuError::ShuttingDown);
        }
        if candidates > config.max_remote_candidates {
            return Err(SfuError::OfferCandidates {
                count: candidates,
                max: config.max_remote_candidates,
            });
        }
        let open = lock(&self.inner.sessions).len();
        if !role.fits(
            open,
            config.max_sessions,
            config.reserved_publisher_sessions,
        ) {
            return Err(SfuError::Overloaded);
        }
        let pending = self.inner.pending.claim(client).ok_or_else(|| {
            metrics::counter!("zipiq_sessions_refused_total", "reason" => "pending_per_address")
                .increment(1);
            SfuError::TooManyPending
        })?;
        Ok(session::SessionPlace {
            thread,
            pending: Some(pending),
            offered_candidates: candidates,
        })
    }

    pub(crate) fn register_session(&self, session: Arc<Session>) {
        let mut sessions = lock(&self.inner.sessions);
        sessions.insert(session.id.clone(), session);
        self.update_session_gauges(&sessions);
    }

    fn update_session_gauges(&self, sessions: &HashMap<String, Arc<Session>>) {
        let (publishers, viewers, relays) = count_roles(sessions);
        metrics::gauge!("zipiq_publishers").set(publishers as f64);
        metrics::gauge!("zipiq_viewers").set(viewers as f64);
        metrics::gauge!("zipiq_cluster_relay_sessions").set(relays as f64);
    }

    /// Marks `session_id` as another node's pull of its stream from this node (see [`Session::mark_relay`]).
    pub fn mark_relay(&self, session_id: &str) {
        let sessions = lock(&self.inner.sessions);
        if let Some(s) = sessions.get(session_id) {
            s.mark_relay();
            self.update_session_gauges(&sessions);
        }
    }

    /// A session by id.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.inner.sessions).get(id).cloned()
    }

    /// Ends a session: detaches it from its stream, closes its peer connection. Idempotent.
    pub fn end_session(&self, id: &str, reason: &str) {
        let session = {
            let mut sessions = lock(&self.inner.sessions);
            let s = sessions.remove(id);
            self.update_session_gauges(&sessions);
            s
        };
        let Some(session) = session else { return };
        if !session.mark_ended() {
            return;
        }
        session.settle_pending();
        tracing::info!(session = %session.log_id(), stream = %session.stream, role = session.role.as_str(), reason, "session ended");
        metrics::counter!("zipiq_sessions_ended_total", "role" => session.role.as_str())
            .increment(1);
        if let Some(stream) = self.stream(&session.stream) {
            match session.role {
                SessionRole::Publisher => {
                    if let Some(epoch) = stream.release_publisher(&session.id) {
                        self.start_grace(stream.clone(), epoch);
                    }
                }
                SessionRole::Viewer => {
                    stream.remove_viewer(&session.id);
                }
            }
        }
        let pc = session.pc.clone();
        tokio::spawn(async move {
            let _ = pc.close().await;
        });
        self.drop_stream_if_idle(&session.stream);
    }

    /// Every session.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.inner.sessions).values().cloned().collect()
    }

    /// Every publisher session.
    pub fn publisher_sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.inner.sessions)
            .values()
            .filter(|s| s.role == SessionRole::Publisher)
            .cloned()
            .collect()
    }

    /// Whether `stream` has any session (a publisher, connecting or live, or viewers).
    pub fn has_sessions(&self, stream: &str) -> bool {
        lock(&self.inner.sessions)
            .values()
            .any(|s| s.stream == stream)
    }

    /// Ends every session of `stream` (of `role` only, when given), e.g. when its key is rotated or it is deleted.
    /// Returns how many were ended.
    pub fn end_sessions_of(&self, stream: &str, role: Option<SessionRole>, reason: &str) -> usize {
        let ids: Vec<String> = lock(&self.inner.sessions)
            .values()
            .filter(|s| s.stream == stream && role.is_none_or(|r| s.role == r))
            .map(|s| s.id.clone())
            .collect();
        for id in &ids {
            self.end_session(id, reason);
        }
        ids.len()
    }

    /// Keeps viewers attached for the grace period; ends them if no publisher came back by then.
    fn start_grace(&self, stream: Arc<Stream>, epoch: u64) {
        let grace = Duration::from_millis(self.inner.config.grace_period_ms);
        let weak = self.weak();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Some(inner) = weak.upgrade() else { return };
            let sfu = Sfu::from_inner(inner);
            if stream.publisher().is_none() && stream.epoch() == epoch {
                for viewer in stream.viewer_sessions() {
                    sfu.end_session(&viewer, "publisher did not return within the grace period");
                }
                sfu.end_broadcast(&stream).await;
                sfu.drop_stream_if_idle(&stream.name);
            }
        });
    }

    /// Reacts to a peer connection's state: connected sessions get media, failed or closed ones end.
    pub(crate) fn watch_state(&self, pc: &Arc<RTCPeerConnection>, session_id: &str) {
        let weak = self.weak();
        let id = session_id.to_owned();
        pc.on_peer_connection_state_change(Box::new(move |state| {
            let weak = weak.clone();
            let id = id.clone();
            Box::pin(async move {
                let Some(inner) = weak.upgrade() else { return };
                let sfu = Sfu::from_inner(inner);
                match state {
                    RTCPeerConnectionState::Connected => sfu.on_connected(&id),
                    RTCPeerConnectionState::Failed => sfu.end_session(&id, "connection failed"),
                    // A link to another node of the cluster ends as soon as that node goes silent (5 s of ICE
                    // consent), not after the 15 s a viewer's network may need to come back: a dead edge's pull
                    // stops costing the origin, and an edge whose origin died can pull from the next one.
                    RTCPeerConnectionState::Disconnected
                        if sfu.session(&id).is_some_and(|s| s.is_cluster_link()) =>
                    {
                        sfu.end_session(&id, "the other node of the cluster went silent")
                    }
                    RTCPeerConnectionState::Closed => sfu.end_session(&id, "connection closed"),
                    _ => {}
                }
            })
        }));
        // A session that never connects is dropped after the connect timeout.
        let weak = self.weak();
        let id = session_id.to_owned();
        let timeout = Duration::from_millis(self.inner.config.connect_timeout_ms);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(inner) = weak.upgrade() else { return };
            let sfu = Sfu::from_inner(inner);
            if let Some(s) = sfu.session(&id)
                && !s.is_connected()
            {
                sfu.end_session(&id, "did not connect in time");
            }
        });
    }

    fn on_connected(&self, id: &str) {
        let Some(session) = self.session(id) else {
            return;
        };
        if !session.mark_connected() {
            return;
        }
        session.settle_pending();
        tracing::info!(session = %session.log_id(), stream = %session.stream, role = session.role.as_str(), elapsed_ms = session.created.elapsed().as_millis() as u64, "session connected");
        if session.role == SessionRole::Viewer
            && let Some(stream) = self.stream(&session.stream)
        {
            stream.viewer_connected(id);
        }
    }

    /// A viewer picks a simulcast layer (None: the best available).
    pub fn choose_layer(&self, session_id: &str, layer: Option<String>) -> Result<(), SfuError> {
        let session = self.session(session_id).ok_or(SfuError::SessionNotFound)?;
        if session.role != SessionRole::Viewer {
            return Err(SfuError::SessionNotFound);
        }
        let stream = self
            .stream(&session.stream)
            .ok_or(SfuError::SessionNotFound)?;
        if stream.choose_layer(session_id, layer.clone()) {
            Ok(())
        } else {
            Err(SfuError::NoSuchLayer(layer.unwrap_or_default()))
        }
    }

    /// Runs `work` for `session` on the session's media thread (where webrtc-rs spawns what it needs for it);
    /// it is dropped, unfinished, if the session ends meanwhile.
    async fn on_session_thread<T, F>(&self, session: &Arc<Session>, work: F) -> Result<T, SfuError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, SfuError>> + Send + 'static,
    {
        if session.is_ended() {
            return Err(SfuError::SessionNotFound);
        }
        match self.inner.media.handle(session.thread).spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(SfuError::Internal(format!(
                "the media thread dropped the session's work: {e}"
            ))),
        }
    }

    /// Ends every session and stops the media socket.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        let ids: Vec<String> = lock(&self.inner.sessions).keys().cloned().collect();
        let pcs: Vec<Arc<RTCPeerConnection>> = ids
            .iter()
            .filter_map(|id| self.session(id).map(|s| s.pc.clone()))
            .collect();
        for id in &ids {
            self.end_session(id, "server shutting down");
        }
        for pc in pcs {
            let _ = tokio::time::timeout(Duration::from_secs(2), pc.close()).await;
        }
        // Every open broadcast ends now: the recorder cuts and stores the last partial segment.
        let streams: Vec<Arc<Stream>> = lock(&self.inner.streams).values().cloned().collect();
        for stream in streams {
            self.end_broadcast(&stream).await;
        }
        self.inner.engine.close().await;
    }
}

/// Publishers, viewers and cluster links (pulls and relays) among `sessions`.
fn count_roles(sessions: &HashMap<String, Arc<Session>>) -> (usize, usize, usize) {
    let (mut publishers, mut viewers, mut relays) = (0, 0, 0);
    for s in sessions.values() {
        if s.is_cluster_link() {
            relays += 1;
        } else if s.role == SessionRole::Publisher {
            publishers += 1;
        } else {
            viewers += 1;
        }
    }
    (publishers, viewers, relays)
}
