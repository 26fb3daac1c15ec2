//! The database layer on SQLite and on PostgreSQL: migrations, streams and keys, and the outbox rule (a chunk and
//! its archive job in one transaction).

use zipiq::auth::stream_keys;
use zipiq::db::DbError;
use zipiq::db::broadcasts::{ChunkKind, NewChunk};

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
