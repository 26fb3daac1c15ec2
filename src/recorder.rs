//! The recorder: the side pipeline from the SFU's tap to IPFS and the archive queue.
//!
//! One task per broadcast runs the segmenter over the tap events; a second one commits each segment: add it to the
//! embedded IPFS node (CIDv1, pinned, announced), then write its chunk row and archive job in one transaction.
//! When the broadcast ends, a UnixFS directory linking every chunk and a VOD `index.m3u8` becomes its root CID.
//! Broadcasts this node left open (a crash) are finished the same way at its next start, ended at their last
//! chunk's end.
//! Nothing here is on the hot path: the SFU only ever `try_send`s to it, and a slow IPFS or database only delays
//! the recording.
//!
//! A private stream is never recorded. When a stream turns private during a broadcast, the broadcast ends at once:
//! segments not yet committed are dropped, nothing more is stored in IPFS, announced or queued for the archive, and
//! its root CID covers only what was recorded while it was public. Before each commit the stream's visibility is
//! read from the database too (a switch made through another node), and the chunk's transaction refuses a private
//! stream's chunk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::RecordingConfig;
use crate::db::broadcasts::{ChunkKind, ChunkRow, NewChunk};
use crate::db::{Db, DbError};
use crate::media::hls::{PlaylistChunk, PlaylistKind, file_name, playlist};
use crate::media::{Segment, SegmentKind, Segmenter, SegmenterConfig, TapEvent};
use crate::resilience::backoff::Backoff;
use crate::sfu::tap::RecordingHook;
use crate::store::{Cid, IpfsNode};

/// Capacity of one broadcast's queue of cut segments waiting for IPFS and the database.
const COMMIT_QUEUE: usize = 256;
/// How long turning a stream private waits for a commit in flight (begun while it was public) to finish.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What ends a broadcast early: its stream turned private.
struct BroadcastControl {
    /// When the broadcast was stopped (Unix ms): from then on it may record nothing more.
    stopped: watch::Sender<Option<i64>>,
    /// Held through each commit (visibility check, IPFS add, chunk row): stopping takes it, so once the stop
    /// returns no commit is under way and none will start.
    commit: tokio::sync::Mutex<()>,
}

impl BroadcastControl {
    fn new() -> Arc<BroadcastControl> {
        Arc::new(BroadcastControl {
            stopped: watch::channel(None).0,
            commit: tokio::sync::Mutex::new(()),
        })
    }

    fn is_stopped(&self) -> bool {
        self.stopped.borrow().is_some()
    }

    fn stopped_at(&self) -> Option<i64> {
        *self.stopped.borrow()
    }

    fn stop(&self) {
        self.stopped.send_if_modified(|at| {
            if at.is_some() {
                return false;
            }
            *at = Some(crate::db::now_ms());
            true
        });
    }
}

/// A broadcast being recorded.
struct Active {
    task: JoinHandle<()>,
    control: Arc<BroadcastControl>,
}

/// Records broadcasts (cheap to clone).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    ipfs: Arc<IpfsNode>,
    config: RecordingConfig,
    tap_capacity: usize,
    node: String,
    active: Mutex<HashMap<String, Active>>,
}

impl Recorder {
    pub fn new(
        db: Db,
        ipfs: Arc<IpfsNode>,
        config: RecordingConfig,
        tap_capacity: usize,
        node: String,
    ) -> Recorder {
        Recorder {
            inner: Arc::new(Inner {
                db,
                ipfs,
                config,
                tap_capacity: tap_capacity.max(1),
                node,
                active: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.inner.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finishes broadcasts this node left open (a crash or kill -9): their committed chunks become a directory.
    pub async fn recover(&self) -> usize {
        let open = match self.inner.db.open_broadcasts(&self.inner.node).await {
            Ok(open) => open,
            Err(e) => {
                tracing::error!(error = %e, "cannot list open broadcasts to recover");
                return 0;
            }
        };
        let mut finished = 0;
        for b in open {
            // It ended when its media did, not now.
            let ended_at = match self.inner.db.recorded_end(&b).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(broadcast = b.id, error = %e, "cannot read the chunks of a broadcast left open");
                    continue;
                }
            };
            match finish_broadcast(&self.inner, b.id, Some(ended_at)).await {
                Ok(root) => {
                    finished += 1;
                    tracing::info!(broadcast = b.id, root = %root, "finished a broadcast left open by a previous run");
                }
                Err(e) => {
                    tracing::error!(broadcast = b.id, error = %e, "cannot finish a broadcast left open")
                }
            }
        }
        finished
    }

    /// Waits (up to `timeout`) for every broadcast task to commit its segments and finish.
    pub async fn drain(&self, timeout: Duration) {
        let tasks: Vec<JoinHandle<()>> = self.active().drain().map(|(_, a)| a.task).collect();
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(?timeout, "recordings did not finish in time");
        }
    }

    /// `stream` turned private: its broadcast ends now. Waits (a bounded time) for a commit in flight, so that when
    /// this returns nothing more of the stream is stored, announced or queued; the broadcast's directory is then
    /// made from what was committed while it was public.
    pub async fn stream_turned_private(&self, stream: &str) {
        let control = self.active().get(stream).map(|a| a.control.clone());
        let Some(control) = control else { return };
        if control.is_stopped() {
            return;
        }
        control.stop();
        tracing::info!(stream = %stream, "the stream turned private: its recording ends now");
        if tokio::time::timeout(STOP_WAIT, control.commit.lock())
            .await
            .is_err()
        {
            tracing::warn!(stream = %stream, "a commit begun while the stream was public is still running");
        }
    }
}

impl RecordingHook for Recorder {
    fn broadcast_started(&self, stream: &str) -> Option<mpsc::Sender<TapEvent>> {
        if !self.inner.config.enabled {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.inner.tap_capacity);
        let inner = self.inner.clone();
        let name = stream.to_owned();
        let control = BroadcastControl::new();
        let task = {
            let control = control.clone();
            tokio::spawn(async move { run_broadcast(inner, name, rx, control).await })
        };
        if let Some(previous) = self
            .active()
            .insert(stream.to_owned(), Active { task, control })
        {
            // An older broadcast of this stream still committing: let it finish on its own.
            drop(previous);
        }
        Some(tx)
    }

    fn broadcast_ended(&self, _stream: &str) {
        // The broadcast task ends by itself after the End event; `drain` waits for it at shutdown.
    }

    fn stream_turned_private(&self, stream: &str) -> BoxFuture<'static, ()> {
        let recorder = self.clone();
        let stream = stream.to_owned();
        Box::pin(async move { recorder.stream_turned_private(&stream).await })
    }
}

/// Retries `f` with backoff until it succeeds (the database or IPFS being down only delays the recording).
async fn persist<T, E: std::fmt::Display, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(30),
    };
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

async fn run_broadcast(
    inner: Arc<Inner>,
    stream: String,
    mut rx: mpsc::Receiver<TapEvent>,
    control: Arc<BroadcastControl>,
) {
    let stream_row = persist("looking up the stream", || async {
        inner.db.find_stream(&stream).await.and_then(|r| {
            r.ok_or_else(|| crate::db::DbError::NotFound(format!("no stream {stream:?}")))
        })
    })
    .await;
    if stream_row.visibility == crate::db::streams::Visibility::Private || control.is_stopped() {
        // Recordings are public by construction (their CIDs are announced to the IPFS network, and Arweave is
        // permanent and public): a private stream is live only. Dropping `rx` closes the tap.
        tracing::info!(stream = %stream, "private stream: not recorded");
        return;
    }
    let broadcast = persist("creating the broadcast", || {
        inner.db.create_broadcast(stream_row.id, &inner.node)
    })
    .await;
    tracing::info!(stream = %stream, broadcast, "broadcast recording started");
    let (commit_tx, commit_rx) = mpsc::channel::<Segment>(COMMIT_QUEUE);
    let committer = tokio::spawn(commit_segments(
        inner.clone(),
        broadcast,
        stream_row.id,
        commit_rx,
        control.clone(),
    ));
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: Duration::from_millis(inner.config.segment_target_ms.max(100)),
        max_segment_bytes: inner.config.segment_max_bytes.max(64 * 1024),
    });
    let mut last_counters = segmenter.counters;
    let mut stopped = control.stopped.subscribe();
    loop {
        let event = tokio::select! {
            event = rx.recv() => event,
            _ = stopped.wait_for(|s| s.is_some()) => None,
        };
        let Some(event) = event else { break };
        let end = matches!(event, TapEvent::End);
        for segment in segmenter.push(event) {
            if commit_tx.send(segment).await.is_err() {
                break;
            }
        }
        export_counters(&mut last_counters, &segmenter);
        if end {
            break;
        }
    }
    // Nothing more is taken from the tap: closing it makes the fan-out's `try_send` fail at once.
    drop(rx);
    if !control.is_stopped() {
        // The SFU went away without End (a crash of its side): what was cut so far is still committed.
        for segment in segmenter.finish() {
            let _ = commit_tx.send(segment).await;
        }
    }
    drop(commit_tx);
    let _ = committer.await;
    // A broadcast stopped because its stream turned private ended at the switch.
    match finish_broadcast(&inner, broadcast, control.stopped_at()).await {
        Ok(root) => tracing::info!(stream = %stream, broadcast, root = %root, "broadcast finished"),
        Err(e) => {
            tracing::error!(stream = %stream, broadcast, error = %e, "cannot finish the broadcast; it is finished at the next start")
        }
    }
}

fn export_counters(last: &mut crate::media::SegmenterCounters, s: &Segmenter) {
    let c = s.counters;
    let d = |now: u64, before: u64| now.saturating_sub(before);
    metrics::counter!("zipiq_segments_total", "kind" => "init")
        .increment(d(c.init_segments, last.init_segments));
    metrics::counter!("zipiq_segments_total", "kind" => "media")
        .increment(d(c.media_segments, last.media_segments));
    for (reason, now, before) in [
        ("loss", c.video_drops.loss, last.video_drops.loss),
        (
            "waiting_for_keyframe",
            c.video_drops.waiting_for_keyframe,
            last.video_drops.waiting_for_keyframe,
        ),
        (
            "no_parameter_sets",
            c.video_drops.no_parameter_sets,
            last.video_drops.no_parameter_sets,
        ),
        (
            "malformed",
            c.video_drops.malformed,
            last.video_drops.malformed,
        ),
    ] {
        metrics::counter!("zipiq_segmenter_dropped_access_units_total", "reason" => reason)
            .increment(d(now, before));
    }
    *last = c;
}

/// Adds each segment to IPFS, then records it with its archive job; stops (dropping what is left) once the stream
/// is private.
async fn commit_segments(
    inner: Arc<Inner>,
    broadcast: i64,
    stream_id: i64,
    mut rx: mpsc::Receiver<Segment>,
    control: Arc<BroadcastControl>,
) {
    while let Some(segment) = rx.recv().await {
        let _commit = control.commit.lock().await;
        // Checked under the commit lock: a stop that returned has seen this commit finish or not start.
        if control.is_stopped() {
            break;
        }
        let recordable = persist("reading the stream's visibility", || {
            inner.db.stream_recordable(stream_id)
        })
        .await;
        if !recordable {
            tracing::info!(
                broadcast,
                "the stream turned private: its recording ends now"
            );
            control.stop();
            break;
        }
        let started = std::time::Instant::now();
        let bytes = segment.bytes.clone();
        let cid = persist("adding a segment to IPFS", || inner.ipfs.add(bytes.clone())).await;
        metrics::counter!("zipiq_ipfs_adds_total").increment(1);
        metrics::histogram!("zipiq_ipfs_add_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let chunk = NewChunk {
            broadcast_id: broadcast,
            seq: segment.seq as i64,
            kind: match segment.kind {
                SegmentKind::Init => ChunkKind::Init,
                SegmentKind::Media => ChunkKind::Media,
            },
            cid: cid.to_string(),
            size: segment.bytes.len() as i64,
            duration_ms: segment.duration.as_millis() as i64,
            start_ms: segment.start_ms as i64,
            end_ms: segment.end_ms as i64,
        };
        let refused = persist("recording a chunk", || async {
            match inner.db.insert_chunk(&chunk).await {
                Ok(_) => Ok(None),
                Err(DbError::NotRecordable(reason)) => Ok(Some(reason)),
                Err(e) => Err(e),
            }
        })
        .await;
        if let Some(reason) = refused {
            // Turned private through another node between the check and this commit.
            tracing::warn!(broadcast, cid = %cid, reason, "chunk not recorded: its recording ends now");
            control.stop();
            break;
        }
    }
    // Segments cut but not committed when the stream turned private are dropped with the channel.
}

/// The entries of a broadcast's directory: every chunk by its file name, and the VOD playlist.
pub(crate) fn directory_playlist(chunks: &[ChunkRow]) -> String {
    let items: Vec<PlaylistChunk> = chunks
        .iter()
        .map(|c| PlaylistChunk {
            seq: c.seq,
            init: c.kind == ChunkKind::Init,
            uri: file_name(c.seq, c.kind == ChunkKind::Init),
            duration_ms: c.duration_ms,
        })
        .collect();
    playlist(&items, PlaylistKind::Vod)
}

/// Builds the broadcast's directory (chunks linked by CID, not re-added), pins it and records its root with the
/// directory's archive job. It ended at `ended_at`, or now.
async fn finish_broadcast(
    inner: &Inner,
    broadcast: i64,
    ended_at: Option<i64>,
) -> Result<Cid, String> {
    let chunks = inner
        .db
        .chunks_of(broadcast)
        .await
        .map_err(|e| e.to_string())?;
    let mut entries = Vec::with_capacity(chunks.len() + 1);
    for c in &chunks {
        let cid: Cid = c
            .cid
            .parse()
            .map_err(|e| format!("chunk {} CID {:?}: {e}", c.seq, c.cid))?;
        entries.push((
            file_name(c.seq, c.kind == ChunkKind::Init),
            cid,
            c.size as u64,
        ));
    }
    let index = Bytes::from(directory_playlist(&chunks));
    let index_len = index.len() as u64;
    let index_cid = inner.ipfs.add(index).await.map_err(|e| e.to_string())?;
    entries.push(("index.m3u8".to_owned(), index_cid, index_len));
    let root = inner
        .ipfs
        .add_directory(&entries)
        .await
        .map_err(|e| e.to_string())?;
    let root_text = root.to_string();
    match ended_at {
        Some(at) => {
            inner
                .db
                .finish_broadcast_at(broadcast, &root_text, at)
                .await
        }
        None => inner.db.finish_broadcast(broadcast, &root_text).await,
    }
    .map_err(|e| e.to_string())?;
    Ok(root)
}
