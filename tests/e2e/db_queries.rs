//! The database layer on SQLite and on PostgreSQL: migrations, streams and keys, and the outbox rule (a chunk and
//! its archive job in one transaction), stored bundle transactions and their leases.

use zipiq::db::DbError;
use zipiq::db::broadcasts::{ChunkKind, NewChunk};
use zipiq::secrets::stream_keys;

use crate::databases::{self, both};

#[tokio::test]
async fn migrations_dry_run_then_apply_on_both_engines() {
    for t in [databases::sqlite().await, databases::postgres().await] {
        let pending = t.db.pending_migrations().await.expect("pending");
        assert!(pending.len() >= 2, "{}: {pending:?}", t.name);
        assert_eq!(pending[0].version, 1);
        let applied = t.db.migrate().await.expect("migrate");
        assert_eq!(applied.len(), pending.len(), "{}", t.name);
        assert!(t.db.pending_migrations().await.unwrap().is_empty());
        assert!(t.db.migrate().await.unwrap().is_empty(), "idempotent");
        t.db.ping().await.expect("ping");
        t.drop_db().await;
    }
}

/// Nodes started together on one empty PostgreSQL database: each migrates (and lists what is pending, as `zipiq
/// migrate --dry-run` does) on its own pool at the same instant; every call succeeds and each migration is applied
/// exactly once. While another session holds the migration lock, a migration waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_nodes_migrate_one_empty_postgres_database_at_once() {
    let t = databases::postgres().await;
    let config = zipiq::config::DatabaseConfig {
        url: t.url.clone(),
        max_connections: 2,
        acquire_timeout_ms: 10_000,
    };
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(zipiq::db::Db::connect(&config).await.expect("connect"));
    }
    let runs = futures::future::join_all(nodes.iter().enumerate().map(|(i, db)| async move {
        if i % 2 == 0 {
            db.migrate().await.map(|applied| applied.len())
        } else {
            db.pending_migrations().await.map(|_| 0)
        }
    }))
    .await;
    let mut applied = 0;
    for r in runs {
        applied += r.expect("every node's migration step succeeds");
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(t.db.pool())
        .await
        .expect("count migrations");
    assert!(total >= 6, "{total} migrations");
    assert_eq!(
        i64::try_from(applied).unwrap(),
        total,
        "each migration is applied exactly once"
    );
    assert!(t.db.pending_migrations().await.unwrap().is_empty());

    // Another session holds the lock: a migration step waits until it is released.
    let mut holder = t.db.pool().acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(zipiq::db::MIGRATION_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .expect("take the lock");
    let waiting = tokio::spawn({
        let db = nodes[0].clone();
        async move { db.migrate().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the migration waits for the lock");
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(zipiq::db::MIGRATION_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .expect("release the lock");
    drop(holder);
    let after = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the migration goes on once the lock is free")
        .expect("task")
        .expect("migrate");
    assert!(after.is_empty());
    for db in nodes {
        db.close().await;
    }
    t.drop_db().await;
}

#[tokio::test]
async fn stream_keys_rotate_and_revoke_on_both_engines() {
    for t in both().await {
        let (row, key) = t.db.create_stream("show").await.expect("create");
        assert_eq!(row.name, "show");
        assert!(stream_keys::verify(&key, row.key_hash.as_deref().unwrap()));
        assert!(matches!(
            t.db.create_stream("show").await,
            Err(DbError::Conflict(_))
        ));
        assert!(matches!(
            t.db.create_stream("Bad Name").await,
            Err(DbError::Conflict(_))
        ));
        let new_key = t.db.rotate_stream_key("show").await.expect("rotate");
        let row = t.db.find_stream("show").await.unwrap().unwrap();
        assert!(
            !stream_keys::verify(&key, row.key_hash.as_deref().unwrap()),
            "{}: old key dead",
            t.name
        );
        assert!(stream_keys::verify(
            &new_key,
            row.key_hash.as_deref().unwrap()
        ));
        t.db.revoke_stream_key("show").await.expect("revoke");
        assert!(
            t.db.find_stream("show")
                .await
                .unwrap()
                .unwrap()
                .key_hash
                .is_none()
        );
        assert!(matches!(
            t.db.rotate_stream_key("nope").await,
            Err(DbError::NotFound(_))
        ));
        assert_eq!(t.db.count_streams().await.unwrap(), 1);
        t.drop_db().await;
    }
}

#[tokio::test]
async fn chunk_and_archive_job_are_written_together_and_idempotently() {
    for t in both().await {
        let (stream, _) = t.db.create_stream("live").await.unwrap();
        let b = t.db.create_broadcast(stream.id, "node-a").await.unwrap();
        let chunk = |seq: i64, kind| NewChunk {
            broadcast_id: b,
            seq,
            kind,
            cid: format!("bafkrei{seq:04}"),
            size: 1000 + seq,
            duration_ms: 2000,
            start_ms: seq * 2000,
            end_ms: seq * 2000 + 2000,
        };
        let (c0, j0) = t.db.insert_chunk(&chunk(0, ChunkKind::Init)).await.unwrap();
        let (c1, j1) =
            t.db.insert_chunk(&chunk(1, ChunkKind::Media))
                .await
                .unwrap();
        assert_ne!(c0, c1);
        assert_ne!(j0, j1);
        // The same segment twice never makes two rows or two jobs.
        assert_eq!(
            t.db.insert_chunk(&chunk(1, ChunkKind::Media))
                .await
                .unwrap(),
            (c1, j1)
        );
        let chunks = t.db.chunks_of(b).await.unwrap();
        assert_eq!(chunks.len(), 2, "{}", t.name);
        assert_eq!(chunks[0].kind, ChunkKind::Init);
        assert_eq!(chunks[1].cid, "bafkrei0001");
        let jobs: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM archive_jobs WHERE kind = 'chunk' AND state = 'pending'",
        )
        .fetch_one(t.db.pool())
        .await
        .unwrap();
        assert_eq!(jobs, 2, "{}", t.name);
        assert_eq!(t.db.open_broadcasts("node-a").await.unwrap().len(), 1);
        t.db.finish_broadcast(b, "bafyroot").await.unwrap();
        t.db.finish_broadcast(b, "bafyother").await.unwrap();
        let row = t.db.broadcast(b).await.unwrap().unwrap();
        assert_eq!(row.root_cid.as_deref(), Some("bafyroot"), "first root kept");
        assert!(row.ended_at.is_some());
        assert!(t.db.open_broadcasts("node-a").await.unwrap().is_empty());
        let jobs: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM archive_jobs WHERE kind = 'broadcast'")
                .fetch_one(t.db.pool())
                .await
                .unwrap();
        assert_eq!(jobs, 1, "{}: one directory job", t.name);
        let mut cids = t.db.all_cids().await.unwrap();
        cids.sort();
        assert_eq!(cids, vec!["bafkrei0000", "bafkrei0001", "bafyroot"]);
        assert!(matches!(
            t.db.finish_broadcast(9999, "x").await,
            Err(DbError::NotFound(_))
        ));
        t.drop_db().await;
    }
}

#[tokio::test]
async fn stored_bundles_own_their_jobs_and_a_node_takes_its_leases_back_on_both_engines() {
    use zipiq::db::bundles::{BundleState, NewBundle};
    use zipiq::db::jobs::JobState;

    for t in both().await {
        let db = &t.db;
        let (stream, _) = db.create_stream("live").await.unwrap();
        let b = db.create_broadcast(stream.id, "n1").await.unwrap();
        for seq in 0..3 {
            db.insert_chunk(&NewChunk {
                broadcast_id: b,
                seq,
                kind: ChunkKind::Media,
                cid: format!("bafkrei{seq:04}"),
                size: 10,
                duration_ms: 2000,
                start_ms: seq * 2000,
                end_ms: seq * 2000 + 2000,
            })
            .await
            .unwrap();
        }
        let (w, w2, other) = ("n1-0000000a", "n1-0000000b", "n2-00000001");
        let jobs = db
            .claim_jobs(w, &[JobState::Pending], 10, 60_000)
            .await
            .unwrap();
        assert_eq!(jobs.len(), 3, "{}", t.name);
        for (i, j) in jobs.iter().enumerate() {
            assert!(
                db.store_signed_item(j.id, w, &format!("item{i}"), &[i as u8; 4], "W")
                    .await
                    .unwrap()
            );
        }
        let items = vec![
            (jobs[0].id, "item0".to_owned()),
            (jobs[1].id, "item1".to_owned()),
        ];
        let bundle = NewBundle {
            tx_id: "tx1",
            wallet: "W",
            tx_json: "{}",
            reward: 12345678901234567890,
            data_size: 8,
            items: &items,
        };
        assert!(
            db.store_bundle(&bundle, w, 60_000).await.unwrap(),
            "{}",
            t.name
        );
        // The jobs belong to tx1 now: not stored again, never claimed for another bundle.
        assert!(
            !db.store_bundle(
                &NewBundle {
                    tx_id: "tx1b",
                    ..bundle.clone()
                },
                w,
                60_000
            )
            .await
            .unwrap()
        );
        assert_eq!(db.bundles(10).await.unwrap().len(), 1, "{}", t.name);
        assert!(db.release_job(jobs[2].id, w).await.unwrap());
        let signed = db
            .claim_jobs(other, &[JobState::Signed], 10, 60_000)
            .await
            .unwrap();
        assert_eq!(
            signed.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![jobs[2].id],
            "{}: only the job outside the bundle",
            t.name
        );
        // tx1 is leased to w; another run of node n1 takes that lease back, not n2's.
        assert!(db.claim_bundles(w2, 4, 60_000).await.unwrap().is_empty());
        let released = db
            .release_leases_of(|h| h.starts_with("n1-"), w2)
            .await
            .unwrap();
        assert_eq!(released, (0, 1), "{}", t.name);
        let claimed = db.claim_bundles(w2, 4, 60_000).await.unwrap();
        assert_eq!(claimed.len(), 1, "{}", t.name);
        assert_eq!(claimed[0].tx_id, "tx1");
        assert_eq!(claimed[0].state, BundleState::Signed);
        let stored = db.bundle_items("tx1").await.unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|i| i.item_id.as_str())
                .collect::<Vec<_>>(),
            vec!["item0", "item1"]
        );
        assert_eq!(stored[1].signed_item.as_deref(), Some(&[1u8; 4][..]));
        assert!(
            !db.mark_bundle_posted("tx1", w, "{}").await.unwrap(),
            "not w's any more"
        );
        assert!(db.mark_bundle_posted("tx1", w2, "{}").await.unwrap());
        for j in &jobs[..2] {
            let j = db.job(j.id).await.unwrap().unwrap();
            assert_eq!(j.state, JobState::Uploaded, "{}", t.name);
            assert_eq!(j.bundle_tx.as_deref(), Some("tx1"));
        }
        // A bundle refused and unknown to the gateway gives its job back for a new bundle.
        let items = vec![(jobs[2].id, "item2".to_owned())];
        let bundle = NewBundle {
            tx_id: "tx2",
            items: &items,
            ..bundle
        };
        assert!(db.store_bundle(&bundle, other, 60_000).await.unwrap());
        assert!(db.abandon_bundle("tx2", other, "400").await.unwrap());
        let again = db
            .claim_jobs("n3-00000001", &[JobState::Signed], 10, 60_000)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{}", t.name);
        assert_eq!(again[0].bundle_tx, None);
        let txs = db.transactions_of_broadcast(b).await.unwrap();
        assert_eq!(txs.len(), 3, "{}: {txs:?}", t.name);
        assert!(
            txs.iter()
                .any(|x| x.tx_id == "tx2" && x.state == BundleState::Abandoned)
        );
        t.drop_db().await;
    }
}

#[tokio::test]
async fn disabled_wallets_read_back_on_both_engines() {
    for t in both().await {
        assert!(t.db.disabled_wallets().await.expect("none yet").is_empty());
        t.db.set_wallet_disabled("A", true, "empty", "op")
            .await
            .expect("disable A");
        t.db.set_wallet_disabled("B", true, "lost", "op")
            .await
            .expect("disable B");
        t.db.set_wallet_disabled("B", false, "found", "op")
            .await
            .expect("enable B");
        assert_eq!(
            t.db.disabled_wallets().await.expect("read back"),
            vec!["A".to_owned()],
            "{}",
            t.name
        );
        t.drop_db().await;
    }
}
