//! Credentials changed elsewhere end their sessions too. A stream key rotated or revoked with the CLI, or through
//! the API of another node sharing the database, ends the publisher that used the old key; an account disabled
//! with `zipiq users disable` or on another node ends its streams' publishers and viewers and the viewers holding
//! its viewer tokens. Both within one check interval (the API of this node ends them at once). Each check reads
//! one row per stream with sessions here, and one per account whose viewer tokens are in use; it never touches
//! media.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Sfu;
use super::session::{Session, SessionRole};
use crate::db::{Db, DbError};

/// How often sessions' keys and accounts are compared with the database.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Why the sessions of a disabled account's streams end.
const OWNER_DISABLED: &str = "the stream's account is disabled";
/// Why a viewer holding a disabled account's viewer token is ended.
const ISSUER_DISABLED: &str = "the viewer token's account is disabled";

/// Ends every publisher whose stream is gone or whose key is no longer the stream's key, every session of a stream
/// whose owner is disabled, and every viewer whose viewer token was made by a disabled account. Returns how many.
pub async fn check_once(sfu: &Sfu, db: &Db) -> usize {
    let mut by_stream: BTreeMap<String, Vec<Arc<Session>>> = BTreeMap::new();
    for session in sfu.sessions() {
        by_stream
            .entry(session.stream.clone())
            .or_default()
            .push(session);
    }
    let mut ended = 0;
    for (name, sessions) in by_stream {
        let row = match db.find_stream(&name).await {
            Ok(row) => row,
            // The database is unreachable: say nothing rather than cut a live stream.
            Err(e) => {
                tracing::warn!(error = %e, "stream key check skipped");
                return ended;
            }
        };
        if row.as_ref().is_some_and(|r| r.owner_disabled()) {
            ended += sfu.end_sessions_of(&name, None, OWNER_DISABLED);
            continue;
        }
        let current = row.and_then(|r| r.key_hash);
        // A pull (cluster edge) has no stream key: its origin checks the key of the real publisher.
        for session in sessions
            .iter()
            .filter(|s| s.role == SessionRole::Publisher && !s.is_pull())
        {
            let still_valid = match (current.as_deref(), session.token_hash()) {
                (Some(now), Some(used)) => {
                    subtle::ConstantTimeEq::ct_eq(now.as_bytes(), used.as_bytes()).into()
                }
                _ => false,
            };
            if !still_valid {
                sfu.end_session(&session.id, "the stream key changed or the stream is gone");
                ended += 1;
            }
        }
    }
    let mut disabled: HashMap<i64, bool> = HashMap::new();
    for session in sfu.sessions() {
        let Some(account) = session.account() else {
            continue;
        };
        let is_disabled = if let Some(d) = disabled.get(&account) {
            *d
        } else {
            match db.user_by_id(account).await {
                // An account that no longer exists vouches for nobody.
                Ok(user) => {
                    let d = user.is_none_or(|u| u.is_disabled());
                    disabled.insert(account, d);
                    d
                }
                Err(e) => {
                    tracing::warn!(error = %e, "viewer token account check skipped");
                    return ended;
                }
            }
        };
        if is_disabled {
            sfu.end_session(&session.id, ISSUER_DISABLED);
            ended += 1;
        }
    }
    ended
}

/// Ends, on this node, every session of the streams `user_id` owns and every viewer holding a viewer token it
/// made (when it is disabled). Returns how many.
pub async fn end_sessions_of_account(sfu: &Sfu, db: &Db, user_id: i64) -> Result<usize, DbError> {
    let mut ended = 0;
    for stream in db.streams_of(user_id).await? {
        ended += sfu.end_sessions_of(&stream.name, None, OWNER_DISABLED);
    }
    for session in sfu.sessions() {
        if session.account() == Some(user_id) {
            sfu.end_session(&session.id, ISSUER_DISABLED);
            ended += 1;
        }
    }
    Ok(ended)
}

/// Runs [`check_once`] every [`CHECK_INTERVAL`] until `stop` turns true.
pub fn spawn(sfu: Sfu, db: Db, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let ended = check_once(&sfu, &db).await;
            if ended > 0 {
                tracing::info!(
                    ended,
                    "sessions with a changed stream key or a disabled account ended"
                );
            }
        }
    })
}
