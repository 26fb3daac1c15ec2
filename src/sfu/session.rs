//! A WHIP or WHEP session: the resource behind the `Location` URL, with its peer connection, its ETag and the
//! hash of the bearer token that created it (only that token may PATCH or DELETE it), the media thread it lives on
//! and its place among its client address's not-yet-connected sessions.
//!
//! Session ids are capabilities (whoever knows one may PATCH a tokenless viewer's session): logs carry
//! [`Session::log_id`], a short prefix, never the id or the resource URL.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rand::RngCore;
use subtle::ConstantTimeEq;
use webrtc::peer_connection::RTCPeerConnection;

use super::admission::PendingSlot;
use crate::secrets::stream_keys;

/// Publishing or watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRole {
    Publisher,
    Viewer,
}

impl SessionRole {
    /// Whether a new session of this role fits, with `open` sessions open of `max_sessions`, `reserved` of which
    /// only publishers may take (so anonymous viewers can never use up the room streamers need).
    pub fn fits(self, open: usize, max_sessions: usize, reserved: usize) -> bool {
        let limit = match self {
            SessionRole::Publisher => max_sessions,
            SessionRole::Viewer => max_sessions.saturating_sub(reserved),
        };
        open < limit
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionRole::Publisher => "publisher",
            SessionRole::Viewer => "viewer",
        }
    }
}

/// A random identifier of 128 bits, as 32 hex characters: session ids and ETags are unguessable.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// How much of a session id logs show: enough to follow one session, too little to use it.
const LOG_ID_CHARS: usize = 8;

/// The loggable prefix of a session id.
pub(crate) fn log_id(id: &str) -> &str {
    id.get(..LOG_ID_CHARS).unwrap_or(id)
}

/// Where a session runs: its media thread, and its pending slot (given back once it connects or ends).
pub struct SessionPlace {
    pub thread: usize,
    pub pending: Option<PendingSlot>,
    /// Remote candidates the offer carried: they count against `media.max_remote_candidates` with trickled ones.
    pub offered_candidates: usize,
}

/// Numbers sessions in creation order, for rate-limit keys that must not hold the id itself.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// One WebRTC session.
pub struct Session {
    pub id: String,
    /// A number unique within this process, for keys (rate limits) that may be logged.
    pub serial: u64,
    /// The media thread its peer connection lives on: trickle and ICE restarts run there too.
    pub thread: usize,
    pub stream: String,
    pub role: SessionRole,
    pub created: Instant,
    /// SHA-256 of the bearer token that created the session; None for a tokenless viewer.
    token_hash: Option<String>,
    /// The account whose viewer token opened the session (private streams), so disabling it ends the session.
    account: OnceLock<i64>,
    etag: Mutex<String>,
    pub pc: Arc<RTCPeerConnection>,
    /// The last remote offer, kept to build the renegotiation an ICE restart needs.
    remote_offer: Mutex<String>,
    /// (kind, mid) of each media section, for the restart answer fragment.
    pub mids: Vec<(String, String)>,
    ended: AtomicBool,
    connected: AtomicBool,
    /// A cluster edge's pull of the stream from its origin (a publisher session without a stream key).
    pull: AtomicBool,
    /// Another node's pull of the stream from this node (a viewer session with the cluster token).
    relay: AtomicBool,
    /// A cluster pull's simulcast layer at the origin (set from the origin's answer; empty: not simulcast).
    pub pull_layer: Arc<OnceLock<String>>,
    /// Serialises ICE restarts of this session.
    pub restart_lock: tokio::sync::Mutex<()>,
    /// Remote candidates taken so far, the offer's and trickled ones together.
    remote_candidates: AtomicUsize,
    /// The pending slot, until the session connects or ends.
    pending: Mutex<Option<PendingSlot>>,
}

impl Session {
    pub fn new(
        id: String,
        stream: &str,
        role: SessionRole,
        token: Option<&str>,
        pc: Arc<RTCPeerConnection>,
        remote_offer: String,
        mids: Vec<(String, String)>,
    ) -> Session {
        Session {
            id,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            thread: 0,
            remote_candidates: AtomicUsize::new(0),
            pending: Mutex::new(None),
            stream: stream.to_owned(),
            role,
            created: Instant::now(),
            token_hash: token.map(stream_keys::hash),
            account: OnceLock::new(),
            etag: Mutex::new(format!("\"{}\"", random_id())),
            pc,
            remote_offer: Mutex::new(remote_offer),
            mids,
            ended: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            pull: AtomicBool::new(false),
            relay: AtomicBool::new(false),
            pull_layer: Arc::new(OnceLock::new()),
            restart_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The session as a cluster pull whose video layer is `layer` (see [`Session::pull_layer`]).
    pub(crate) fn pulling_layer(mut self, layer: Arc<OnceLock<String>>) -> Session {
        self.pull_layer = layer;
        self
    }

    /// The session, placed: on its media thread, holding its pending slot.
    pub fn placed(mut self, place: SessionPlace) -> Session {
        self.thread = place.thread;
        self.pending = Mutex::new(place.pending);
        self.remote_candidates = AtomicUsize::new(place.offered_candidates);
        self
    }

    /// The loggable prefix of the session's id.
    pub fn log_id(&self) -> &str {
        log_id(&self.id)
    }

    /// Counts `n` more trickled remote candidates; false (counting nothing) when that, with the offer's and those
    /// trickled before, would pass `max`.
    pub fn take_remote_candidates(&self, n: usize, max: usize) -> bool {
        self.remote_candidates
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                taken.checked_add(n).filter(|&total| total <= max)
            })
            .is_ok()
    }

    /// Gives the pending slot back (the session connected or ended).
    pub fn settle_pending(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// The current strong ETag, quoted.
    pub fn etag(&self) -> String {
        self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new ETag (after an ICE restart).
    pub fn renew_etag(&self) -> String {
        let tag = format!("\"{}\"", random_id());
        *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = tag.clone();
        tag
    }

    /// Whether `token` (from `Authorization: Bearer`) may modify this session.
    pub fn authorizes(&self, token: Option<&str>) -> bool {
        match (&self.token_hash, token) {
            (None, _) => true,
            (Some(stored), Some(t)) => stream_keys::hash(t)
                .as_bytes()
                .ct_eq(stored.as_bytes())
                .into(),
            (Some(_), None) => false,
        }
    }

    /// Whether the session was created with a token.
    pub fn has_token(&self) -> bool {
        self.token_hash.is_some()
    }

    /// SHA-256 (hex) of the token that created the session, if any: for a publisher, the stream key's hash as
    /// stored in the database.
    pub fn token_hash(&self) -> Option<&str> {
        self.token_hash.as_deref()
    }

    /// Records the account whose viewer token opened the session (once).
    pub fn set_account(&self, user_id: i64) {
        let _ = self.account.set(user_id);
    }

    /// The account whose viewer token opened the session, if one did.
    pub fn account(&self) -> Option<i64> {
        self.account.get().copied()
    }

    pub fn remote_offer(&self) -> String {
        self.remote_offer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_remote_offer(&self, offer: String) {
        *self.remote_offer.lock().unwrap_or_else(|p| p.into_inner()) = offer;
    }

    /// Marks the session as a cluster pull (see `sfu::pull`).
    pub fn mark_pull(&self) {
        self.pull.store(true, Ordering::Relaxed);
    }

    /// Whether the session is a cluster pull: its publisher is another node, not a stream key holder.
    pub fn is_pull(&self) -> bool {
        self.pull.load(Ordering::Relaxed)
    }

    /// Marks the session as another node's pull of the stream (a relay: counted apart from viewers, and ended as
    /// soon as the other node goes silent).
    pub fn mark_relay(&self) {
        self.relay.store(true, Ordering::Relaxed);
    }

    /// Whether the session is another node's pull of the stream from this one.
    pub fn is_relay(&self) -> bool {
        self.relay.load(Ordering::Relaxed)
    }

    /// Whether the session links this node to another node of the cluster (a pull here or a relay to an edge)
    /// rather than to a publisher or a viewer.
    pub fn is_cluster_link(&self) -> bool {
        self.is_pull() || self.is_relay()
    }

    /// Marks the session ended; true the first time only.
    pub fn mark_ended(&self) -> bool {
        !self.ended.swap(true, Ordering::AcqRel)
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the session connected; true the first time only.
    pub fn mark_connected(&self) -> bool {
        !self.connected.swap(true, Ordering::AcqRel)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_leave_the_reserve_to_publishers() {
        assert!(SessionRole::Viewer.fits(89, 100, 10));
        assert!(!SessionRole::Viewer.fits(90, 100, 10));
        assert!(SessionRole::Publisher.fits(99, 100, 10));
        assert!(!SessionRole::Publisher.fits(100, 100, 10));
        // A reserve as large as the budget leaves viewers nothing, without underflow.
        assert!(!SessionRole::Viewer.fits(0, 5, 10));
    }

    #[test]
    fn random_ids_are_128_bits_of_hex() {
        let a = random_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_id());
    }

    #[test]
    fn logs_see_a_short_prefix_only() {
        let id = random_id();
        assert_eq!(log_id(&id).len(), LOG_ID_CHARS);
        assert!(id.starts_with(log_id(&id)));
        assert_eq!(log_id("abc"), "abc");
    }
}
