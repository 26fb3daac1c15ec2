//! Stream keys changed elsewhere stop their publishers too: a key rotated or revoked with the CLI, or through the
//! API of another node sharing the database, ends the publisher that used the old key within one check interval
//! (the API of this node ends it at once). Each check reads one row per live publisher; it never touches media.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::Db;
use crate::sfu::Sfu;

/// How often publishers' keys are compared with the database.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Ends every publisher whose stream is gone or whose key is no longer the stream's key. Returns how many.
pub async fn check_once(sfu: &Sfu, db: &Db) -> usize {
    let mut ended = 0;
    for session in sfu.publisher_sessions() {
        let current = match db.find_stream(&session.stream).await {
            Ok(row) => row.and_then(|r| r.key_hash),
            // The database is unreachable: say nothing rather than cut a live stream.
            Err(e) => {
                tracing::warn!(error = %e, "stream key check skipped");
                return ended;
            }
        };
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
    ended
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
                tracing::info!(ended, "publishers with a changed stream key disconnected");
            }
        }
    })
}
