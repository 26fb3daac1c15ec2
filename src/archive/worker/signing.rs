//! Signing a job's data item: the chunk's bytes read back from IPFS (or the broadcast's playlist, once every chunk
//! is signed) signed with a wallet of the pool, and stored before any upload, so every retry sends the same item.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::shared::{Inner, failure, retry};
use crate::archive::items;
use crate::db::jobs::{Job, JobKind, JobState};

/// Largest chunk read back from IPFS for archival (segments are capped well below this).
const MAX_ITEM_BYTES: u64 = 256 << 20;

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds and signs the job's data item and stores its bytes before any upload. Returns the signed job.
pub(super) async fn sign_job(inner: &Arc<Inner>, mut job: Job) -> Option<Job> {
    let ctx = match inner.db.job_context(&job).await {
        Ok(c) => c,
        Err(e) => {
            retry(inner, &job, &e.to_string(), None, true).await;
            return None;
        }
    };
    let now = unix_time();
    let (data, tags) = match (job.kind, &ctx.chunk) {
        (JobKind::Chunk, Some((seq, kind, cid, _))) => {
            match items::ipfs_bytes(&inner.ipfs, cid, MAX_ITEM_BYTES).await {
                Ok(bytes) => (bytes, items::chunk_tags(&ctx, *seq, kind, cid, now)),
                Err(e) => {
                    failure("ipfs");
                    retry(
                        inner,
                        &job,
                        &format!("reading the chunk from IPFS: {e}"),
                        None,
                        true,
                    )
                    .await;
                    return None;
                }
            }
        }
        (JobKind::Broadcast, _) => {
            // The playlist names the chunks' item ids: it waits until every chunk is signed.
            match inner.db.chunk_items_of_broadcast(job.broadcast_id).await {
                Ok(Some(chunk_items)) => {
                    let durations = match inner.db.chunks_of(job.broadcast_id).await {
                        Ok(c) => c.iter().map(|c| (c.seq, c.duration_ms)).collect::<Vec<_>>(),
                        Err(e) => {
                            retry(inner, &job, &e.to_string(), None, true).await;
                            return None;
                        }
                    };
                    (
                        Bytes::from(items::arweave_playlist(&chunk_items, &durations)),
                        items::playlist_tags(&ctx, now),
                    )
                }
                Ok(None) => {
                    retry(
                        inner,
                        &job,
                        "waiting for every chunk to be signed",
                        Some(Duration::from_secs(2)),
                        false,
                    )
                    .await;
                    return None;
                }
                Err(e) => {
                    retry(inner, &job, &e.to_string(), None, true).await;
                    return None;
                }
            }
        }
        (JobKind::Chunk, None) => {
            let _ = inner
                .db
                .mark_dead(job.id, &inner.worker, "chunk job without a chunk")
                .await;
            return None;
        }
    };
    let Some(wallet) = inner.wallets.pick(&[]) else {
        retry(
            inner,
            &job,
            "no usable wallet",
            Some(Duration::from_secs(30)),
            false,
        )
        .await;
        return None;
    };
    let item = match items::sign(data, tags, wallet.clone()).await {
        Ok(i) => i,
        Err(e) => {
            failure("signing");
            retry(inner, &job, &format!("signing: {e}"), None, true).await;
            return None;
        }
    };
    let id = item.id_b64url();
    let bytes = item.as_bytes().to_vec();
    match inner
        .db
        .store_signed_item(job.id, &inner.worker, &id, &bytes, &wallet.address)
        .await
    {
        Ok(true) => {
            job.state = JobState::Signed;
            job.item_id = Some(id);
            job.signed_item = Some(bytes);
            job.wallet = Some(wallet.address.clone());
            Some(job)
        }
        Ok(false) => None, // The lease was lost: another worker has it.
        Err(e) => {
            retry(inner, &job, &e.to_string(), None, true).await;
            None
        }
    }
}
