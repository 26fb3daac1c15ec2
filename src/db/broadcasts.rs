//! Broadcasts and chunks, and the outbox rule: a chunk row and its archive job are written in ONE transaction,
//! as are a finished broadcast's root CID and its archive job, so nothing cut can be left un-archived.

use serde::Serialize;
use sqlx::Row;

use super::streams::Visibility;
use super::{Db, DbError, now_ms};

/// Init segment or media segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkKind {
    /// The init segment: track set-up, no samples.
    Init,
    /// A media segment: samples.
    Media,
}

impl ChunkKind {
    /// The stored form: `init` or `media`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkKind::Init => "init",
            ChunkKind::Media => "media",
        }
    }

    fn parse(s: &str) -> ChunkKind {
        if s == "init" {
            ChunkKind::Init
        } else {
            ChunkKind::Media
        }
    }
}

/// One broadcast.
#[derive(Debug, Clone, Serialize)]
pub struct BroadcastRow {
    /// Row id.
    pub id: i64,
    /// The stream it is a broadcast of.
    pub stream_id: i64,
    /// When it started, in Unix milliseconds.
    pub started_at: i64,
    /// When it ended, in Unix milliseconds; None while live.
    pub ended_at: Option<i64>,
    /// The UnixFS directory of all its chunks and index.m3u8, set when it ends.
    pub root_cid: Option<String>,
    /// The node that recorded it.
    pub node: String,
}

/// A new chunk, as the recorder hands it over.
#[derive(Debug, Clone)]
pub struct NewChunk {
    /// The broadcast it belongs to.
    pub broadcast_id: i64,
    /// Its number in the broadcast: 0, 1, 2, ..., init segments included.
    pub seq: i64,
    /// Init or media segment.
    pub kind: ChunkKind,
    /// Its CID in the IPFS node.
    pub cid: String,
    /// Its size in bytes.
    pub size: i64,
    /// Media duration in milliseconds (0 for init segments).
    pub duration_ms: i64,
    /// Presentation time of its first sample since the broadcast started, in milliseconds.
    pub start_ms: i64,
    /// `start_ms` plus its duration, in milliseconds.
    pub end_ms: i64,
}

/// One chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkRow {
    /// Row id.
    pub id: i64,
    /// The broadcast it belongs to.
    pub broadcast_id: i64,
    /// Its number in the broadcast: 0, 1, 2, ..., init segments included.
    pub seq: i64,
    /// Init or media segment.
    pub kind: ChunkKind,
    /// Its CID in the IPFS node.
    pub cid: String,
    /// Its size in bytes.
    pub size: i64,
    /// Media duration in milliseconds (0 for init segments).
    pub duration_ms: i64,
    /// Presentation time of its first sample since the broadcast started, in milliseconds.
    pub start_ms: i64,
    /// `start_ms` plus its duration, in milliseconds.
    pub end_ms: i64,
}

fn broadcast_from(row: &sqlx::any::AnyRow) -> Result<BroadcastRow, DbError> {
    Ok(BroadcastRow {
        id: row.try_get("id")?,
        stream_id: row.try_get("stream_id")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        root_cid: row.try_get("root_cid")?,
        node: row.try_get("node")?,
    })
}

fn chunk_from(row: &sqlx::any::AnyRow) -> Result<ChunkRow, DbError> {
    let kind: String = row.try_get("kind")?;
    Ok(ChunkRow {
        id: row.try_get("id")?,
        broadcast_id: row.try_get("broadcast_id")?,
        seq: row.try_get("seq")?,
        kind: ChunkKind::parse(&kind),
        cid: row.try_get("cid")?,
        size: row.try_get("size")?,
        duration_ms: row.try_get("duration_ms")?,
        start_ms: row.try_get("start_ms")?,
        end_ms: row.try_get("end_ms")?,
    })
}

/// Columns of `broadcasts` read into [`BroadcastRow`] (a macro: sqlx takes only static query strings).
macro_rules! broadcast_columns {
    () => {
        "id, stream_id, started_at, ended_at, root_cid, node"
    };
}

/// Columns of `chunks` read into [`ChunkRow`].
macro_rules! chunk_columns {
    () => {
        "id, broadcast_id, seq, kind, cid, size, duration_ms, start_ms, end_ms"
    };
}

impl Db {
    /// Starts a broadcast of stream `stream_id` recorded by `node`.
    pub async fn create_broadcast(&self, stream_id: i64, node: &str) -> Result<i64, DbError> {
        let row = sqlx::query(
            "INSERT INTO broadcasts (stream_id, started_at, node) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(stream_id)
        .bind(now_ms())
        .bind(node)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Records a chunk and enqueues its archive job in one transaction. Returns (chunk id, job id).
    /// Idempotent on (broadcast, seq): recording the same chunk twice returns the first one's ids.
    /// Refused ([`DbError::NotRecordable`]) when the broadcast has ended or its stream is private, checked in the same
    /// transaction: nothing is queued for the archive once a stream turned private, whichever node records it.
    pub async fn insert_chunk(&self, chunk: &NewChunk) -> Result<(i64, i64), DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query(
            "SELECT c.id AS chunk_id, j.id AS job_id FROM chunks c \
             JOIN archive_jobs j ON j.chunk_id = c.id WHERE c.broadcast_id = $1 AND c.seq = $2",
        )
        .bind(chunk.broadcast_id)
        .bind(chunk.seq)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            tx.rollback().await?;
            return Ok((row.try_get("chunk_id")?, row.try_get("job_id")?));
        }
        let state = sqlx::query(
            "SELECT b.ended_at AS ended_at, s.visibility AS visibility FROM broadcasts b \
             JOIN streams s ON s.id = b.stream_id WHERE b.id = $1",
        )
        .bind(chunk.broadcast_id)
        .fetch_optional(&mut *tx)
        .await?;
        let refusal = match &state {
            None => Some(format!("no broadcast {}", chunk.broadcast_id)),
            Some(row) => {
                let ended: Option<i64> = row.try_get("ended_at")?;
                let visibility: String = row.try_get("visibility")?;
                if ended.is_some() {
                    Some(format!("broadcast {} has ended", chunk.broadcast_id))
                } else if visibility == Visibility::Private.as_str() {
                    Some(format!(
                        "the stream of broadcast {} is private",
                        chunk.broadcast_id
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(refusal) = refusal {
            tx.rollback().await?;
            return Err(DbError::NotRecordable(refusal));
        }
        let row = sqlx::query(
            "INSERT INTO chunks (broadcast_id, seq, kind, cid, size, duration_ms, start_ms, end_ms, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(chunk.broadcast_id)
        .bind(chunk.seq)
        .bind(chunk.kind.as_str())
        .bind(&chunk.cid)
        .bind(chunk.size)
        .bind(chunk.duration_ms)
        .bind(chunk.start_ms)
        .bind(chunk.end_ms)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let chunk_id: i64 = row.try_get("id")?;
        let row = sqlx::query(
            "INSERT INTO archive_jobs (kind, chunk_id, broadcast_id, state, next_attempt_at, created_at, updated_at) \
             VALUES ('chunk', $1, $2, 'pending', $3, $3, $3) RETURNING id",
        )
        .bind(chunk_id)
        .bind(chunk.broadcast_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let job_id: i64 = row.try_get("id")?;
        tx.commit().await?;
        Ok((chunk_id, job_id))
    }

    /// Ends a broadcast now with its directory's root CID and enqueues the directory's archive job, in one
    /// transaction. Ending twice keeps the first root.
    pub async fn finish_broadcast(&self, id: i64, root_cid: &str) -> Result<(), DbError> {
        self.finish_broadcast_at(id, root_cid, now_ms()).await
    }

    /// [`Db::finish_broadcast`] with the time it ended (a broadcast finished after a crash ended with its last
    /// chunk, not at the restart).
    pub async fn finish_broadcast_at(
        &self,
        id: i64,
        root_cid: &str,
        ended_at: i64,
    ) -> Result<(), DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE broadcasts SET ended_at = COALESCE(ended_at, $1), root_cid = COALESCE(root_cid, $2) \
             WHERE id = $3",
        )
        .bind(ended_at)
        .bind(root_cid)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(DbError::NotFound(format!("no broadcast {id}")));
        }
        let existing = sqlx::query(
            "SELECT id FROM archive_jobs WHERE kind = 'broadcast' AND broadcast_id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if existing.is_none() {
            sqlx::query(
                "INSERT INTO archive_jobs (kind, broadcast_id, state, next_attempt_at, created_at, updated_at) \
                 VALUES ('broadcast', $1, 'pending', $2, $2, $2)",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One broadcast.
    pub async fn broadcast(&self, id: i64) -> Result<Option<BroadcastRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            broadcast_columns!(),
            " FROM broadcasts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(broadcast_from).transpose()
    }

    /// A stream's broadcasts, newest first.
    pub async fn broadcasts_of_stream(
        &self,
        stream_id: i64,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<BroadcastRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            broadcast_columns!(),
            " FROM broadcasts WHERE stream_id = $1 AND id < $3 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(stream_id)
        .bind(limit)
        .bind(before_id.unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(broadcast_from).collect()
    }

    /// Broadcasts `node` left open (a crash or kill): the recorder finishes them at start.
    pub async fn open_broadcasts(&self, node: &str) -> Result<Vec<BroadcastRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            broadcast_columns!(),
            " FROM broadcasts WHERE ended_at IS NULL AND node = $1 ORDER BY id"
        ))
        .bind(node)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(broadcast_from).collect()
    }

    /// When the media of a broadcast left open ended, as far as its chunks tell: the end of its last chunk
    /// (`started_at` + its `end_ms`), never after that chunk was committed (media time can run ahead of the clock
    /// across a publisher's reconnect) nor before the broadcast started. `started_at` when it has no chunk.
    pub async fn recorded_end(&self, broadcast: &BroadcastRow) -> Result<i64, DbError> {
        let row = sqlx::query(
            "SELECT MAX(end_ms) AS end_ms, MAX(created_at) AS committed FROM chunks WHERE broadcast_id = $1",
        )
        .bind(broadcast.id)
        .fetch_one(self.pool())
        .await?;
        let end_ms: Option<i64> = row.try_get("end_ms")?;
        let committed: Option<i64> = row.try_get("committed")?;
        Ok(match (end_ms, committed) {
            (Some(end), Some(committed)) => broadcast
                .started_at
                .saturating_add(end.max(0))
                .min(committed)
                .max(broadcast.started_at),
            _ => broadcast.started_at,
        })
    }

    /// Whether the stream `stream_id` may be recorded now (it exists and is not private).
    pub async fn stream_recordable(&self, stream_id: i64) -> Result<bool, DbError> {
        let row = sqlx::query("SELECT visibility FROM streams WHERE id = $1")
            .bind(stream_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<String, _>("visibility")? != Visibility::Private.as_str(),
            None => false,
        })
    }

    /// A broadcast's chunks in order.
    pub async fn chunks_of(&self, broadcast_id: i64) -> Result<Vec<ChunkRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks WHERE broadcast_id = $1 ORDER BY seq"
        ))
        .bind(broadcast_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(chunk_from).collect()
    }

    /// Up to `limit` chunks of a broadcast with `seq` greater than `after`, in order (a page of the chunk list).
    pub async fn chunks_page(
        &self,
        broadcast_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ChunkRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks WHERE broadcast_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(broadcast_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(chunk_from).collect()
    }

    /// How many chunks a broadcast has.
    pub async fn chunk_count(&self, broadcast_id: i64) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM chunks WHERE broadcast_id = $1")
            .bind(broadcast_id)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The tail of a live broadcast for its playlist: every init chunk (one per start of the segmenter: few) and
    /// the last `media` media chunks, in order. A poll reads this much, not the whole list.
    pub async fn chunks_tail(
        &self,
        broadcast_id: i64,
        media: i64,
    ) -> Result<Vec<ChunkRow>, DbError> {
        let mut rows = sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks WHERE broadcast_id = $1 AND kind = 'media' ORDER BY seq DESC LIMIT $2"
        ))
        .bind(broadcast_id)
        .bind(media)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(chunk_from)
        .collect::<Result<Vec<_>, _>>()?;
        let inits = sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks WHERE broadcast_id = $1 AND kind = 'init' ORDER BY seq"
        ))
        .bind(broadcast_id)
        .fetch_all(self.pool())
        .await?;
        for row in &inits {
            rows.push(chunk_from(row)?);
        }
        rows.sort_by_key(|c| c.seq);
        Ok(rows)
    }

    /// Every chunk and broadcast root CID this database knows (to pin and announce again after a restart).
    pub async fn all_cids(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query(
            "SELECT cid FROM chunks UNION SELECT root_cid AS cid FROM broadcasts WHERE root_cid IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("cid").map_err(DbError::from))
            .collect()
    }
}
