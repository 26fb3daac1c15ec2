//! The durable archive queue's storage: claiming due jobs with a lease (so a crashed worker's jobs come back),
//! recording each step (signed bytes before the first upload, upload receipt, confirmation), retries with a next
//! attempt time, and a dead-letter state. On PostgreSQL claims use `FOR UPDATE SKIP LOCKED`, so several zipIQ nodes
//! can share one queue; SQLite has a single writer, so a plain `UPDATE ... RETURNING` is already exclusive.
//!
//! Every step is conditional on the caller still holding the job's lease: a worker whose lease expired and whose
//! job was taken over can never overwrite the new holder's progress.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::{Db, DbError, DbKind, now_ms};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Nothing signed yet.
    Pending,
    /// The data item is signed and stored; it has not been accepted anywhere yet.
    Signed,
    /// A bundler or gateway accepted it; waiting for confirmation.
    Uploaded,
    /// Proven on Arweave (or accepted with a receipt where confirmation is not followed).
    Confirmed,
    /// A permanent error: needs an operator (`zipiq archive retry`).
    Dead,
}

impl JobState {
    /// The stored form: `pending`, `signed`, `uploaded`, `confirmed` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Signed => "signed",
            JobState::Uploaded => "uploaded",
            JobState::Confirmed => "confirmed",
            JobState::Dead => "dead",
        }
    }

    /// The state of a stored form; None for an unknown one.
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "pending" => JobState::Pending,
            "signed" => JobState::Signed,
            "uploaded" => JobState::Uploaded,
            "confirmed" => JobState::Confirmed,
            "dead" => JobState::Dead,
            _ => return None,
        })
    }

    /// Every state, in pipeline order.
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Signed,
        JobState::Uploaded,
        JobState::Confirmed,
        JobState::Dead,
    ];
}

/// What a job archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// One chunk.
    Chunk,
    /// A finished broadcast's directory.
    Broadcast,
}

/// One archive job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Row id.
    pub id: i64,
    /// What it archives.
    pub kind: JobKind,
    /// The chunk, for chunk jobs.
    pub chunk_id: Option<i64>,
    /// The broadcast the chunk or directory belongs to.
    pub broadcast_id: i64,
    /// How far it got.
    pub state: JobState,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When it may be tried next, in Unix milliseconds.
    pub next_attempt_at: i64,
    /// The worker that holds it, while claimed.
    pub claimed_by: Option<String>,
    /// When that worker's claim lapses, in Unix milliseconds.
    pub lease_until: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The signed ANS-104 data item's id, once signed.
    pub item_id: Option<String>,
    /// The signed data item, stored before the first upload so that a retry sends the same bytes.
    #[serde(skip)]
    pub signed_item: Option<Vec<u8>>,
    /// The address of the wallet that signed it.
    pub wallet: Option<String>,
    /// The bundle or Arweave transaction that carries it.
    pub bundle_tx: Option<String>,
    /// The bundler's receipt (JSON), in bundler mode.
    pub receipt: Option<String>,
    /// When it was uploaded, in Unix milliseconds.
    pub uploaded_at: Option<i64>,
    /// When it was confirmed, in Unix milliseconds.
    pub confirmed_at: Option<i64>,
    /// When it was queued, in Unix milliseconds.
    pub created_at: i64,
}

macro_rules! job_columns {
    () => {
        "id, kind, chunk_id, broadcast_id, state, attempts, next_attempt_at, claimed_by, lease_until, \
         last_error, item_id, signed_item, wallet, bundle_tx, receipt, uploaded_at, confirmed_at, created_at"
    };
}

fn job_from(row: &sqlx::any::AnyRow) -> Result<Job, DbError> {
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: if kind == "broadcast" {
            JobKind::Broadcast
        } else {
            JobKind::Chunk
        },
        chunk_id: row.try_get("chunk_id")?,
        broadcast_id: row.try_get("broadcast_id")?,
        state: JobState::parse(&state)
            .ok_or_else(|| DbError::Conflict(format!("unknown job state {state:?}")))?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        claimed_by: row.try_get("claimed_by")?,
        lease_until: row.try_get("lease_until")?,
        last_error: row.try_get("last_error")?,
        item_id: row.try_get("item_id")?,
        signed_item: row.try_get("signed_item")?,
        wallet: row.try_get("wallet")?,
        bundle_tx: row.try_get("bundle_tx")?,
        receipt: row.try_get("receipt")?,
        uploaded_at: row.try_get("uploaded_at")?,
        confirmed_at: row.try_get("confirmed_at")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Queue figures for `zipiq archive status` and metrics.
#[derive(Debug, Clone, Serialize, Default)]
pub struct QueueStatus {
    /// How many jobs are in each state (`pending`, `signed`, ...).
    pub jobs_by_state: BTreeMap<String, i64>,
    /// Age in seconds of the oldest job not yet uploaded (pending or signed).
    pub oldest_pending_age_s: Option<i64>,
}

impl Db {
    /// Claims up to `limit` due jobs in `states` for `worker` for `lease_ms`, oldest due first. A signed job that
    /// belongs to a stored bundle transaction is never claimed here: it is posted with that bundle (see
    /// [`crate::db::bundles`]).
    pub async fn claim_jobs(
        &self,
        worker: &str,
        states: &[JobState],
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Job>, DbError> {
        let now = now_ms();
        let wanted: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        // States are bound as one comma-joined string and matched with a LIKE-free membership test that both
        // engines understand: ',' || state || ',' inside ',pending,signed,'.
        let list = format!(",{},", wanted.join(","));
        let query = match self.kind() {
            DbKind::Postgres => sqlx::query(concat!(
                "UPDATE archive_jobs SET claimed_by = $1, lease_until = $2, updated_at = $3 WHERE id IN (\
                   SELECT id FROM archive_jobs WHERE position(',' || state || ',' in $4) > 0 \
                   AND (state <> 'signed' OR bundle_tx IS NULL) \
                   AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                   ORDER BY next_attempt_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING ",
                job_columns!()
            )),
            DbKind::Sqlite => sqlx::query(concat!(
                "UPDATE archive_jobs SET claimed_by = $1, lease_until = $2, updated_at = $3 WHERE id IN (\
                   SELECT id FROM archive_jobs WHERE instr($4, ',' || state || ',') > 0 \
                   AND (state <> 'signed' OR bundle_tx IS NULL) \
                   AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                   ORDER BY next_attempt_at, id LIMIT $5) RETURNING ",
                job_columns!()
            )),
        };
        let rows = query
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .bind(list)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut jobs: Vec<Job> = rows.iter().map(job_from).collect::<Result<_, _>>()?;
        jobs.sort_by_key(|j| (j.next_attempt_at, j.id));
        Ok(jobs)
    }

    /// Extends the lease of a job `worker` holds. False when the lease was lost.
    pub async fn extend_lease(
        &self,
        job: i64,
        worker: &str,
        lease_ms: i64,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_jobs SET lease_until = $1, updated_at = $2 WHERE id = $3 AND claimed_by = $4",
        )
        .bind(now + lease_ms)
        .bind(now)
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores the signed data item (before any upload) and moves the job to `signed`. Only from `pending`.
    pub async fn store_signed_item(
        &self,
        job: i64,
        worker: &str,
        item_id: &str,
        signed: &[u8],
        wallet: &str,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE archive_jobs SET state = 'signed', item_id = $1, signed_item = $2, wallet = $3, updated_at = $4 \
             WHERE id = $5 AND claimed_by = $6 AND state = 'pending'",
        )
        .bind(item_id)
        .bind(signed)
        .bind(wallet)
        .bind(now_ms())
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an accepted upload (receipt, bundle or transaction id) and moves the job to `uploaded`, released.
    pub async fn mark_uploaded(
        &self,
        job: i64,
        worker: &str,
        bundle_tx: Option<&str>,
        receipt: Option<&str>,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_jobs SET state = 'uploaded', bundle_tx = $1, receipt = $2, uploaded_at = $3, \
             claimed_by = NULL, lease_until = NULL, last_error = NULL, next_attempt_at = $3, updated_at = $3 \
             WHERE id = $4 AND claimed_by = $5 AND state IN ('signed', 'uploaded')",
        )
        .bind(bundle_tx)
        .bind(receipt)
        .bind(now)
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a job confirmed (released).
    pub async fn mark_confirmed(&self, job: i64, worker: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_jobs SET state = 'confirmed', confirmed_at = $1, claimed_by = NULL, lease_until = NULL, \
             last_error = NULL, updated_at = $1 WHERE id = $2 AND claimed_by = $3 AND state = 'uploaded'",
        )
        .bind(now)
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sends a `signed` or `uploaded` job back to `signed` (its item must be posted again: a dropped transaction),
    /// keeping the same signed bytes.
    pub async fn mark_repost(&self, job: i64, worker: &str, reason: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_jobs SET state = 'signed', bundle_tx = NULL, uploaded_at = NULL, last_error = $1, \
             claimed_by = NULL, lease_until = NULL, next_attempt_at = $2, updated_at = $2 \
             WHERE id = $3 AND claimed_by = $4 AND state IN ('signed', 'uploaded')",
        )
        .bind(reason)
        .bind(now)
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases a job for a later attempt after a transient failure: attempts + 1, next attempt in `delay_ms`.
    pub async fn retry_job_later(
        &self,
        job: i64,
        worker: &str,
        error: &str,
        delay_ms: i64,
        count_attempt: bool,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_jobs SET attempts = attempts + $1, last_error = $2, next_attempt_at = $3, \
             claimed_by = NULL, lease_until = NULL, updated_at = $4 WHERE id = $5 AND claimed_by = $6",
        )
        .bind(i64::from(count_attempt))
        .bind(truncate(error))
        .bind(now + delay_ms.max(0))
        .bind(now)
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a job to the dead-letter state after a permanent error.
    pub async fn mark_dead(&self, job: i64, worker: &str, error: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_jobs SET state = 'dead', attempts = attempts + 1, last_error = $1, claimed_by = NULL, \
             lease_until = NULL, updated_at = $2 WHERE id = $3 AND claimed_by = $4",
        )
        .bind(truncate(error))
        .bind(now)
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a dead job (or every dead job, with None) another chance. Returns how many.
    pub async fn retry_dead(&self, job: Option<i64>) -> Result<u64, DbError> {
        let now = now_ms();
        let done = match job {
            Some(id) => sqlx::query(
                "UPDATE archive_jobs SET state = CASE WHEN signed_item IS NULL THEN 'pending' ELSE 'signed' END, \
                 next_attempt_at = $1, updated_at = $1 WHERE id = $2 AND state = 'dead'",
            )
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?,
            None => sqlx::query(
                "UPDATE archive_jobs SET state = CASE WHEN signed_item IS NULL THEN 'pending' ELSE 'signed' END, \
                 next_attempt_at = $1, updated_at = $1 WHERE state = 'dead'",
            )
            .bind(now)
            .execute(self.pool())
            .await?,
        };
        Ok(done.rows_affected())
    }

    /// One job.
    pub async fn job(&self, id: i64) -> Result<Option<Job>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM archive_jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(job_from).transpose()
    }

    /// The jobs of a broadcast (its chunks' and its directory's).
    pub async fn jobs_of_broadcast(&self, broadcast: i64) -> Result<Vec<Job>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM archive_jobs WHERE broadcast_id = $1 ORDER BY id"
        ))
        .bind(broadcast)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(job_from).collect()
    }

    /// Jobs by state and the age of the oldest one not yet uploaded.
    pub async fn queue_status(&self) -> Result<QueueStatus, DbError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM archive_jobs GROUP BY state")
            .fetch_all(self.pool())
            .await?;
        let mut status = QueueStatus::default();
        for s in JobState::ALL {
            status.jobs_by_state.insert(s.as_str().to_owned(), 0);
        }
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            status.jobs_by_state.insert(state, n);
        }
        let oldest = sqlx::query(
            "SELECT MIN(created_at) AS oldest FROM archive_jobs WHERE state IN ('pending', 'signed')",
        )
        .fetch_one(self.pool())
        .await?;
        let oldest: Option<i64> = oldest.try_get("oldest")?;
        status.oldest_pending_age_s = oldest.map(|t| (now_ms() - t).max(0) / 1000);
        Ok(status)
    }
}

pub(super) fn truncate(s: &str) -> String {
    let mut end = s.len().min(2000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Db {
    /// Sends a signed job back to `pending` so another wallet signs it (its item was refused for the wallet's
    /// balance, so it exists nowhere). `exclude_wallet` is kept in `last_error` for the log.
    pub async fn resign_job(&self, job: i64, worker: &str, reason: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_jobs SET state = 'pending', item_id = NULL, signed_item = NULL, wallet = NULL, \
             last_error = $1, claimed_by = NULL, lease_until = NULL, next_attempt_at = $2, updated_at = $2 \
             WHERE id = $3 AND claimed_by = $4 AND state = 'signed'",
        )
        .bind(truncate(reason))
        .bind(now)
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Bytes of chunks recorded since `since_ms` (recent spend, for the wallets' runway).
    pub async fn chunk_bytes_since(&self, since_ms: i64) -> Result<i64, DbError> {
        let row =
            sqlx::query("SELECT COALESCE(SUM(size), 0) AS n FROM chunks WHERE created_at >= $1")
                .bind(since_ms)
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Marks wallet `address` disabled or enabled (by `who`, because `reason`).
    pub async fn set_wallet_disabled(
        &self,
        address: &str,
        disabled: bool,
        reason: &str,
        who: &str,
    ) -> Result<(), DbError> {
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE wallet_states SET disabled = $1, reason = $2, updated_at = $3, updated_by = $4 WHERE address = $5",
        )
        .bind(disabled)
        .bind(reason)
        .bind(now)
        .bind(who)
        .bind(address)
        .execute(self.pool())
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO wallet_states (address, disabled, reason, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(address)
            .bind(disabled)
            .bind(reason)
            .bind(now)
            .bind(who)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Addresses of the wallets an operator disabled.
    pub async fn disabled_wallets(&self) -> Result<Vec<String>, DbError> {
        // `= TRUE` in SQL: the column is BOOLEAN on PostgreSQL and INTEGER on SQLite, which the Any driver will not
        // decode as a bool.
        let rows =
            sqlx::query("SELECT address FROM wallet_states WHERE disabled = TRUE ORDER BY address")
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| row.try_get("address").map_err(DbError::from))
            .collect()
    }

    /// The item ids of a broadcast's chunks by sequence number, when every chunk has been signed.
    pub async fn chunk_items_of_broadcast(
        &self,
        broadcast: i64,
    ) -> Result<Option<Vec<(i64, String, String)>>, DbError> {
        let rows = sqlx::query(
            "SELECT c.seq AS seq, c.kind AS kind, j.item_id AS item_id FROM chunks c \
             JOIN archive_jobs j ON j.chunk_id = c.id WHERE c.broadcast_id = $1 ORDER BY c.seq",
        )
        .bind(broadcast)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let item: Option<String> = row.try_get("item_id")?;
            let Some(item) = item else { return Ok(None) };
            out.push((row.try_get("seq")?, row.try_get("kind")?, item));
        }
        Ok(Some(out))
    }
}

/// What an archive job's data item describes.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The stream's name.
    pub stream: String,
    /// The broadcast's id.
    pub broadcast_id: i64,
    /// Chunk jobs: sequence number, kind (`init`/`media`), CID and size.
    pub chunk: Option<(i64, String, String, i64)>,
    /// Broadcast jobs: the directory's root CID.
    pub root_cid: Option<String>,
}

impl Db {
    /// The stream, broadcast and chunk behind a job.
    pub async fn job_context(&self, job: &Job) -> Result<JobContext, DbError> {
        let row = sqlx::query(
            "SELECT s.name AS stream, b.root_cid AS root_cid FROM broadcasts b JOIN streams s ON s.id = b.stream_id \
             WHERE b.id = $1",
        )
        .bind(job.broadcast_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| DbError::NotFound(format!("broadcast {} of job {}", job.broadcast_id, job.id)))?;
        let stream: String = row.try_get("stream")?;
        let root_cid: Option<String> = row.try_get("root_cid")?;
        let chunk = match job.chunk_id {
            Some(id) => {
                let row = sqlx::query("SELECT seq, kind, cid, size FROM chunks WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.pool())
                    .await?
                    .ok_or_else(|| DbError::NotFound(format!("chunk {id} of job {}", job.id)))?;
                Some((
                    row.try_get("seq")?,
                    row.try_get("kind")?,
                    row.try_get("cid")?,
                    row.try_get("size")?,
                ))
            }
            None => None,
        };
        Ok(JobContext {
            stream,
            broadcast_id: job.broadcast_id,
            chunk,
            root_cid,
        })
    }
}

impl Db {
    /// Sends archived jobs back to `signed` so the archiver posts their stored items again (after `zipiq verify`
    /// found them missing at the gateway: a dropped transaction). Their item ids do not change. Returns how many.
    pub async fn requeue_for_repost(&self, jobs: &[i64]) -> Result<u64, DbError> {
        let now = now_ms();
        let mut n = 0;
        for id in jobs {
            sqlx::query(
                "UPDATE archive_bundles SET state = 'dropped', updated_at = $1 WHERE state = 'posted' \
                 AND tx_id = (SELECT bundle_tx FROM archive_jobs WHERE id = $2)",
            )
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?;
            let done = sqlx::query(
                "UPDATE archive_jobs SET state = 'signed', bundle_tx = NULL, uploaded_at = NULL, confirmed_at = NULL, \
                 last_error = 'requeued: missing at the gateway', claimed_by = NULL, lease_until = NULL, \
                 next_attempt_at = $1, updated_at = $1 \
                 WHERE id = $2 AND signed_item IS NOT NULL AND state IN ('uploaded', 'confirmed')",
            )
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?;
            n += done.rows_affected();
        }
        Ok(n)
    }
}

impl Db {
    /// Gives up `worker`'s lease on a job so the next step (another worker, or the bundling pass) can take it now.
    pub async fn release_job(&self, job: i64, worker: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE archive_jobs SET claimed_by = NULL, lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND claimed_by = $3",
        )
        .bind(now_ms())
        .bind(job)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
