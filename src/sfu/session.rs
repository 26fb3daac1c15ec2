//! A WHIP or WHEP session: the resource behind the `Location` URL, with its peer connection, its ETag and the
//! hash of the bearer token that created it (only that token may PATCH or DELETE it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rand::RngCore;
use subtle::ConstantTimeEq;
use webrtc::peer_connection::RTCPeerConnection;

use crate::auth::stream_keys;

/// Publishing or watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRole {
    Publisher,
    Viewer,
}

impl SessionRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionRole::Publisher => "publisher",
            SessionRole::Viewer => "viewer",
        }
    }
}

/// A random identifier of 128 bits, as 32 hex characters: session ids and ETags are unguessable.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// One WebRTC session.
pub struct Session {
    pub id: String,
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
    /// Serialises ICE restarts of this session.
    pub restart_lock: tokio::sync::Mutex<()>,
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
            restart_lock: tokio::sync::Mutex::new(()),
        }
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
    fn random_ids_are_128_bits_of_hex() {
        let a = random_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_id());
    }
}
