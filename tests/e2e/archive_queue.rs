//! The durable archive queue on SQLite and PostgreSQL: leases, exclusive claims under concurrency, lease expiry
//! returning a crashed worker's jobs, lease-checked steps, retries and the dead-letter state.

use std::collections::HashSet;

use zipiq::db::Db;
use zipiq::db::broadcasts::NewChunk;
use zipiq::db::jobs::JobState;

use crate::common::chunk;
use crate::databases::both;

async fn chunks(db: &Db, n: i64) -> i64 {
    let (stream, _) = db.create_stream("live").await.unwrap();
    let b = db.create_broadcast(stream.id, "n1").await.unwrap();
    for seq in 0..n {
        db.insert_chunk(&NewChunk {
            duration_ms: 2000,
            ..chunk(b, seq, format!("cid{seq}"), 10)
        })
        .await
        .unwrap();
    }
    b
}

const WORK: [JobState; 3] = [JobState::Pending, JobState::Signed, JobState::Uploaded];

#[tokio::test]
async fn claims_are_exclusive_even_when_workers_race() {
    for t in both().await {
        chunks(&t.db, 60).await;
        let mut handles = Vec::new();
        for w in 0..6 {
            let db = t.db.clone();
            handles.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let jobs = db
                        .claim_jobs(&format!("w{w}"), &WORK, 4, 60_000)
                        .await
                        .unwrap();
                    if jobs.is_empty() {
                        break;
                    }
                    mine.extend(jobs.iter().map(|j| j.id));
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        let unique: HashSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), 60, "{}: every job claimed", t.name);
        assert_eq!(unique.len(), 60, "{}: no job claimed twice", t.name);
        t.drop_db().await;
    }
}

#[tokio::test]
async fn a_crashed_workers_jobs_come_back_after_the_lease_and_steps_need_the_lease() {
    for t in both().await {
        let db = &t.db;
        chunks(db, 2).await;
        let jobs = db.claim_jobs("crashed", &WORK, 10, 50).await.unwrap();
        assert_eq!(jobs.len(), 2);
        assert!(
            db.claim_jobs("other", &WORK, 10, 60_000)
                .await
                .unwrap()
                .is_empty(),
            "{}: leased",
            t.name
        );
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        let taken = db.claim_jobs("other", &WORK, 10, 60_000).await.unwrap();
        assert_eq!(taken.len(), 2, "{}: lease expired, jobs back", t.name);
        let job = taken[0].id;
        // The crashed worker lost its lease: its steps are refused.
        assert!(
            !db.store_signed_item(job, "crashed", "id", b"bytes", "w")
                .await
                .unwrap()
        );
        assert!(
            db.store_signed_item(job, "other", "item-1", b"signed bytes", "wallet-a")
                .await
                .unwrap()
        );
        let j = db.job(job).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Signed);
        assert_eq!(j.signed_item.as_deref(), Some(&b"signed bytes"[..]));
        assert_eq!(j.item_id.as_deref(), Some("item-1"));
        // Signing again is refused: the stored bytes are the ones every retry sends.
        assert!(
            !db.store_signed_item(job, "other", "item-2", b"other", "w")
                .await
                .unwrap()
        );
        assert!(
            db.mark_uploaded(job, "other", Some("bundle-1"), Some("{}"))
                .await
                .unwrap()
        );
        let j = db.job(job).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Uploaded);
        assert!(j.claimed_by.is_none(), "released after upload");
        let again = db
            .claim_jobs("other", &[JobState::Uploaded], 10, 60_000)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert!(db.mark_repost(job, "other", "dropped").await.unwrap());
        assert_eq!(
            db.job(job).await.unwrap().unwrap().signed_item.as_deref(),
            Some(&b"signed bytes"[..])
        );
        let again = db
            .claim_jobs("other", &[JobState::Signed], 10, 60_000)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert!(
            db.mark_uploaded(job, "other", Some("bundle-2"), None)
                .await
                .unwrap()
        );
        db.claim_jobs("other", &[JobState::Uploaded], 10, 60_000)
            .await
            .unwrap();
        assert!(db.mark_confirmed(job, "other").await.unwrap());
        assert_eq!(
            db.job(job).await.unwrap().unwrap().state,
            JobState::Confirmed
        );
        t.drop_db().await;
    }
}

#[tokio::test]
async fn retries_wait_their_turn_and_dead_jobs_wait_for_an_operator() {
    for t in both().await {
        let db = &t.db;
        chunks(db, 1).await;
        let job = db.claim_jobs("w", &WORK, 1, 60_000).await.unwrap()[0].id;
        assert!(
            db.retry_job_later(job, "w", "503 from bundler", 60_000, true)
                .await
                .unwrap()
        );
        assert!(
            db.claim_jobs("w", &WORK, 1, 60_000)
                .await
                .unwrap()
                .is_empty(),
            "{}: not due yet",
            t.name
        );
        let j = db.job(job).await.unwrap().unwrap();
        assert_eq!(j.attempts, 1);
        assert_eq!(j.last_error.as_deref(), Some("503 from bundler"));
        // Make it due now, claim, then a permanent error.
        sqlx::query("UPDATE archive_jobs SET next_attempt_at = 0")
            .execute(db.pool())
            .await
            .unwrap();
        let job = db.claim_jobs("w", &WORK, 1, 60_000).await.unwrap()[0].id;
        assert!(db.mark_dead(job, "w", "400 invalid item").await.unwrap());
        let status = db.queue_status().await.unwrap();
        assert_eq!(status.jobs_by_state["dead"], 1, "{}", t.name);
        assert_eq!(status.jobs_by_state["pending"], 0);
        assert!(
            db.claim_jobs("w", &WORK, 1, 60_000)
                .await
                .unwrap()
                .is_empty(),
            "dead jobs are not claimed"
        );
        assert_eq!(db.retry_dead(None).await.unwrap(), 1);
        assert_eq!(db.job(job).await.unwrap().unwrap().state, JobState::Pending);
        assert_eq!(db.claim_jobs("w", &WORK, 1, 60_000).await.unwrap().len(), 1);
        t.drop_db().await;
    }
}
