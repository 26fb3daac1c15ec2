//! Bundle transactions of gateway archive mode, stored BEFORE they are posted: the signed transaction (without its
//! data) and the jobs whose items it carries, in order. A worker killed after the gateway accepted a bundle but
//! before the jobs were marked uploaded leaves the bundle `signed`; the next holder posts that same transaction again
//! (the gateway knows it, no second reward) instead of bundling the items into a new one and paying twice.
//!
//! A stored bundle has its own lease, like a job. A `signed` job whose `bundle_tx` is set belongs to its bundle and
//! is never claimed for another one.

use serde::Serialize;
use sqlx::Row;

use super::{Db, DbError, DbKind, now_ms};

/// Where a stored bundle transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleState {
    /// Stored, perhaps posted: not known to be accepted.
    Signed,
    /// The gateway accepted it.
    Posted,
    /// Refused and unknown to the gateway: its items went back to be bundled again.
    Abandoned,
    /// Accepted, then lost before confirmation: its items went into a new transaction.
    Dropped,
}

impl BundleState {
    /// The stored form: `signed`, `posted`, `abandoned` or `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            BundleState::Signed => "signed",
            BundleState::Posted => "posted",
            BundleState::Abandoned => "abandoned",
            BundleState::Dropped => "dropped",
        }
    }

    fn parse(s: &str) -> BundleState {
        match s {
            "posted" => BundleState::Posted,
            "abandoned" => BundleState::Abandoned,
            "dropped" => BundleState::Dropped,
            _ => BundleState::Signed,
        }
    }
}

/// A bundle transaction to store before it is posted.
#[derive(Debug, Clone)]
pub struct NewBundle<'a> {
    /// The transaction id (base64url).
    pub tx_id: &'a str,
    /// The address of the wallet that signed it.
    pub wallet: &'a str,
    /// The signed transaction's JSON for `POST /tx`, data left out.
    pub tx_json: &'a str,
    /// The fee paid, in winston.
    pub reward: u128,
    /// The bundle's size in bytes.
    pub data_size: i64,
    /// (job id, item id) of each item, in bundle order.
    pub items: &'a [(i64, String)],
}

/// A stored bundle transaction.
#[derive(Debug, Clone, Serialize)]
pub struct StoredBundle {
    /// The transaction id (base64url).
    pub tx_id: String,
    /// The address of the wallet that signed it.
    pub wallet: String,
    /// The signed transaction's JSON for `POST /tx`, data left out.
    pub tx_json: String,
    /// How far it got.
    pub state: BundleState,
    /// How many times it was posted.
    pub attempts: i64,
    /// When it was stored, in Unix milliseconds.
    pub created_at: i64,
}

/// One item of a stored bundle, with its stored signed bytes.
#[derive(Debug, Clone)]
pub struct BundleItem {
    /// The archive job of the item.
    pub job_id: i64,
    /// The data item's id (base64url).
    pub item_id: String,
    /// The signed data item, if still stored.
    pub signed_item: Option<Vec<u8>>,
}

/// A bundle transaction that carried one of a broadcast's items.
#[derive(Debug, Clone, Serialize)]
pub struct ItemTransaction {
    /// The archive job of the item.
    pub job_id: i64,
    /// The data item's id (base64url).
    pub item_id: String,
    /// The bundle transaction's id (base64url).
    pub tx_id: String,
    /// How far that bundle got.
    pub state: BundleState,
}

macro_rules! bundle_columns {
    () => {
        "tx_id, wallet, tx_json, state, attempts, created_at"
    };
}

fn bundle_from(row: &sqlx::any::AnyRow) -> Result<StoredBundle, DbError> {
    let state: String = row.try_get("state")?;
    Ok(StoredBundle {
        tx_id: row.try_get("tx_id")?,
        wallet: row.try_get("wallet")?,
        tx_json: row.try_get("tx_json")?,
        state: BundleState::parse(&state),
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    /// Stores a signed bundle transaction with its items, for `worker` (who holds every job's lease), and hands the
    /// jobs over to it: from now on they are posted with this transaction only. The bundle is leased to `worker` for
    /// `lease_ms`. False (and nothing stored) when a job's lease was lost or a job is already in another bundle.
    pub async fn store_bundle(
        &self,
        bundle: &NewBundle<'_>,
        worker: &str,
        lease_ms: i64,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for (job, _) in bundle.items {
            let done = sqlx::query(
                "UPDATE archive_jobs SET bundle_tx = $1, claimed_by = NULL, lease_until = NULL, updated_at = $2 \
                 WHERE id = $3 AND claimed_by = $4 AND state = 'signed' AND bundle_tx IS NULL",
            )
            .bind(bundle.tx_id)
            .bind(now)
            .bind(job)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO archive_bundles (tx_id, wallet, tx_json, reward, data_size, state, attempts, next_attempt_at, \
             claimed_by, lease_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'signed', 0, $6, $7, $8, $6, $6)",
        )
        .bind(bundle.tx_id)
        .bind(bundle.wallet)
        .bind(bundle.tx_json)
        .bind(bundle.reward.to_string())
        .bind(bundle.data_size)
        .bind(now)
        .bind(worker)
        .bind(now + lease_ms)
        .execute(&mut *tx)
        .await?;
        for (position, (job, item)) in bundle.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO archive_bundle_items (tx_id, position, job_id, item_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(bundle.tx_id)
            .bind(position as i64)
            .bind(job)
            .bind(item)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Claims up to `limit` stored bundles not yet known to be accepted, due and not leased, for `worker`.
    pub async fn claim_bundles(
        &self,
        worker: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<StoredBundle>, DbError> {
        let now = now_ms();
        let query = match self.kind() {
            DbKind::Postgres => sqlx::query(concat!(
                "UPDATE archive_bundles SET claimed_by = $1, lease_until = $2, updated_at = $3 WHERE tx_id IN (\
                   SELECT tx_id FROM archive_bundles WHERE state = 'signed' AND next_attempt_at <= $3 \
                   AND (lease_until IS NULL OR lease_until < $3) \
                   ORDER BY next_attempt_at, created_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING ",
                bundle_columns!()
            )),
            DbKind::Sqlite => sqlx::query(concat!(
                "UPDATE archive_bundles SET claimed_by = $1, lease_until = $2, updated_at = $3 WHERE tx_id IN (\
                   SELECT tx_id FROM archive_bundles WHERE state = 'signed' AND next_attempt_at <= $3 \
                   AND (lease_until IS NULL OR lease_until < $3) \
                   ORDER BY next_attempt_at, created_at LIMIT $4) RETURNING ",
                bundle_columns!()
            )),
        };
        let rows = query
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut bundles: Vec<StoredBundle> =
            rows.iter().map(bundle_from).collect::<Result<_, _>>()?;
        bundles.sort_by_key(|b| b.created_at);
        Ok(bundles)
    }

    /// The items of a stored bundle, in bundle order, with their stored signed bytes.
    pub async fn bundle_items(&self, tx_id: &str) -> Result<Vec<BundleItem>, DbError> {
        let rows = sqlx::query(
            "SELECT i.job_id AS job_id, i.item_id AS item_id, j.signed_item AS signed_item \
             FROM archive_bundle_items i JOIN archive_jobs j ON j.id = i.job_id \
             WHERE i.tx_id = $1 ORDER BY i.position",
        )
        .bind(tx_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BundleItem {
                    job_id: r.try_get("job_id")?,
                    item_id: r.try_get("item_id")?,
                    signed_item: r.try_get("signed_item")?,
                })
            })
            .collect()
    }

    /// Extends the lease of a bundle `worker` holds. False when it was lost.
    pub async fn extend_bundle_lease(
        &self,
        tx_id: &str,
        worker: &str,
        lease_ms: i64,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_bundles SET lease_until = $1, updated_at = $2 WHERE tx_id = $3 AND claimed_by = $4",
        )
        .bind(now + lease_ms)
        .bind(now)
        .bind(tx_id)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The gateway accepted the bundle: it becomes `posted` and its jobs `uploaded` (with `receipt`), in one
    /// transaction. False when `worker` no longer holds it or it was already handled.
    pub async fn mark_bundle_posted(
        &self,
        tx_id: &str,
        worker: &str,
        receipt: &str,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE archive_bundles SET state = 'posted', posted_at = $1, claimed_by = NULL, lease_until = NULL, \
             last_error = NULL, updated_at = $1 WHERE tx_id = $2 AND claimed_by = $3 AND state = 'signed'",
        )
        .bind(now)
        .bind(tx_id)
        .bind(worker)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE archive_jobs SET state = 'uploaded', receipt = $1, uploaded_at = $2, claimed_by = NULL, \
             lease_until = NULL, last_error = NULL, next_attempt_at = $2, updated_at = $2 \
             WHERE bundle_tx = $3 AND state = 'signed'",
        )
        .bind(receipt)
        .bind(now)
        .bind(tx_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Releases a bundle for another attempt in `delay_ms` after a failure to post it.
    pub async fn retry_bundle_later(
        &self,
        tx_id: &str,
        worker: &str,
        error: &str,
        delay_ms: i64,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE archive_bundles SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
             claimed_by = NULL, lease_until = NULL, updated_at = $3 WHERE tx_id = $4 AND claimed_by = $5",
        )
        .bind(super::jobs::truncate(error))
        .bind(now + delay_ms.max(0))
        .bind(now)
        .bind(tx_id)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up a bundle the gateway refused and does not know (it can never be mined, so it costs nothing): its
    /// jobs go back to the signed items waiting for a bundle, with the same items.
    pub async fn abandon_bundle(
        &self,
        tx_id: &str,
        worker: &str,
        reason: &str,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE archive_bundles SET state = 'abandoned', last_error = $1, claimed_by = NULL, lease_until = NULL, \
             updated_at = $2 WHERE tx_id = $3 AND claimed_by = $4 AND state = 'signed'",
        )
        .bind(super::jobs::truncate(reason))
        .bind(now)
        .bind(tx_id)
        .bind(worker)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE archive_jobs SET bundle_tx = NULL, last_error = $1, next_attempt_at = $2, updated_at = $2 \
             WHERE bundle_tx = $3 AND state = 'signed'",
        )
        .bind(super::jobs::truncate(reason))
        .bind(now)
        .bind(tx_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records that a posted bundle was lost before confirmation (its items go into a new transaction).
    pub async fn mark_bundle_dropped(&self, tx_id: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE archive_bundles SET state = 'dropped', updated_at = $1 WHERE tx_id = $2 AND state = 'posted'",
        )
        .bind(now_ms())
        .bind(tx_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every bundle transaction (abandoned ones included) that carried an item of `broadcast`'s jobs.
    pub async fn transactions_of_broadcast(
        &self,
        broadcast: i64,
    ) -> Result<Vec<ItemTransaction>, DbError> {
        let rows = sqlx::query(
            "SELECT i.job_id AS job_id, i.item_id AS item_id, b.tx_id AS tx_id, b.state AS state \
             FROM archive_bundle_items i JOIN archive_bundles b ON b.tx_id = i.tx_id \
             JOIN archive_jobs j ON j.id = i.job_id WHERE j.broadcast_id = $1 ORDER BY i.job_id, b.created_at",
        )
        .bind(broadcast)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(ItemTransaction {
                    job_id: r.try_get("job_id")?,
                    item_id: r.try_get("item_id")?,
                    tx_id: r.try_get("tx_id")?,
                    state: BundleState::parse(&state),
                })
            })
            .collect()
    }

    /// Every stored bundle, newest first (operators and tests).
    pub async fn bundles(&self, limit: i64) -> Result<Vec<StoredBundle>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            bundle_columns!(),
            " FROM archive_bundles ORDER BY created_at DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(bundle_from).collect()
    }

    /// Takes back, at start, the leases that earlier runs of this node left on jobs and bundles (a crash or kill):
    /// `is_ours` says which lease holders are this node's workers (`current` is this run's own). Without this they
    /// would wait out `archive.lease_ms`. Returns how many jobs and bundles were released.
    pub async fn release_leases_of(
        &self,
        is_ours: impl Fn(&str) -> bool,
        current: &str,
    ) -> Result<(u64, u64), DbError> {
        let mut released = (0, 0);
        for (table, count) in [
            ("archive_jobs", &mut released.0),
            ("archive_bundles", &mut released.1),
        ] {
            // Table names cannot be bound: the two statements are spelled out.
            let holders = match table {
                "archive_jobs" => sqlx::query(
                    "SELECT DISTINCT claimed_by FROM archive_jobs WHERE claimed_by IS NOT NULL",
                ),
                _ => sqlx::query(
                    "SELECT DISTINCT claimed_by FROM archive_bundles WHERE claimed_by IS NOT NULL",
                ),
            }
            .fetch_all(self.pool())
            .await?;
            for row in holders {
                let holder: String = row.try_get("claimed_by")?;
                if holder == current || !is_ours(&holder) {
                    continue;
                }
                let query = match table {
                    "archive_jobs" => sqlx::query(
                        "UPDATE archive_jobs SET claimed_by = NULL, lease_until = NULL, updated_at = $1 \
                         WHERE claimed_by = $2",
                    ),
                    _ => sqlx::query(
                        "UPDATE archive_bundles SET claimed_by = NULL, lease_until = NULL, updated_at = $1 \
                         WHERE claimed_by = $2",
                    ),
                };
                let done = query
                    .bind(now_ms())
                    .bind(&holder)
                    .execute(self.pool())
                    .await?;
                *count += done.rows_affected();
            }
        }
        Ok(released)
    }
}
