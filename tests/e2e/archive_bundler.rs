//! Archival through a Bundlr-protocol bundler (a fake one that verifies every item and scripts failures): a 402
//! on one wallet moves the work to the next at once, 500s and timeouts open the circuit breaker, which half-opens
//! and closes, a 429's Retry-After is honoured, a 202 counts as done; in the end every chunk and the broadcast
//! playlist are archived exactly once, with item data that hashes to the chunk's CID.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use zipiq::archive::ans104::DataItem;
use zipiq::archive::verify::cid_of;
use zipiq::db::jobs::JobState;

use crate::common::*;
use crate::fake_bundler::{self, Scripted};

pub fn test_wallets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/wallets")
}

/// Adds `n` chunks of random bytes to the server's IPFS node as a broadcast of stream `live` and finishes it.
pub async fn recorded_broadcast(server: &TestServer, n: i64) -> i64 {
    record_random_broadcast(&server.server, n).await
}

/// `recorded_broadcast` on any server: chunk 0 is the init segment, the others 2 s media segments of 20-70 kB.
pub async fn record_random_broadcast(server: &zipiq::Server, n: i64) -> i64 {
    let db = &server.db;
    let stream = db.find_stream("live").await.unwrap().unwrap();
    let b = db.create_broadcast(stream.id, "test").await.unwrap();
    for seq in 0..n {
        let len = 20_000 + (seq as usize * 7919) % 50_000;
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let cid = server.ipfs.add(Bytes::from(bytes)).await.unwrap();
        db.insert_chunk(&chunk(b, seq, cid.to_string(), len as i64))
            .await
            .unwrap();
    }
    db.finish_broadcast(b, "bafyfakeroot").await.unwrap();
    b
}

fn address_of(file: &str) -> String {
    let jwk =
        zipiq::archive::jwk::Jwk::from_json(&std::fs::read(test_wallets().join(file)).unwrap())
            .unwrap();
    jwk.address().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundler_failures_wallet_failover_and_exactly_once() {
    let bundler = fake_bundler::start().await;
    let broke = address_of("test-only-a.json");
    let funded = address_of("test-only-b.json");
    {
        let mut l = bundler.ledger();
        l.broke_wallets.insert(broke.clone());
        l.script = vec![
            Scripted::ServerError,
            Scripted::ServerError,
            Scripted::Timeout,
            Scripted::RateLimited,
        ];
    }
    let config = format!(
        "[archive]\nmode = \"bundler\"\nbundler_url = \"{url}\"\ngateway_url = \"{url}\"\nwallets_dir = \"{}\"\n\
         concurrency = 1\nrequest_timeout_ms = 700\nretry_base_ms = 50\nretry_max_ms = 400\nbreaker_failures = 3\n\
         breaker_open_ms = 800\npoll_ms = 50\n",
        test_wallets().display(),
        url = bundler.url()
    );
    let server = start_server(&config).await;
    let broadcast = recorded_broadcast(&server, 8).await;
    let db = server.server.db.clone();
    let mut saw_open = false;
    let done = eventually(Duration::from_secs(90), || {
        if let Ok(s) = futures::executor::block_on(server.server.archiver.status())
            && s.breakers
                .iter()
                .any(|(_, st)| *st == zipiq::resilience::breaker::BreakerState::Open)
        {
            saw_open = true;
        }
        let jobs = futures::executor::block_on(db.jobs_of_broadcast(broadcast)).unwrap();
        jobs.len() == 9 && jobs.iter().all(|j| j.state == JobState::Confirmed)
    })
    .await;
    let jobs = db.jobs_of_broadcast(broadcast).await.unwrap();
    assert!(
        done,
        "every job confirmed: {:?}",
        jobs.iter()
            .map(|j| (j.id, j.state, j.last_error.clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        saw_open,
        "the breaker opened after the 500s and the timeout"
    );

    let ledger = bundler.ledger().clone_for_test();
    assert!(
        ledger.invalid.is_empty(),
        "every posted item verified: {:?}",
        ledger.invalid
    );
    assert!(
        ledger.posts.iter().any(|p| p.1 == broke && p.3 == 402),
        "the broke wallet was tried and refused"
    );
    assert!(
        ledger.posts.iter().any(|p| p.3 == 429),
        "a 429 was answered"
    );
    // Breaker: after three consecutive failures nothing was sent for most of breaker_open_ms.
    let statuses: Vec<(std::time::Instant, u16)> = ledger
        .posts
        .iter()
        .filter(|p| p.1 == funded)
        .map(|p| (p.0, p.3))
        .collect();
    let third_failure = statuses
        .iter()
        .position(|s| s.1 == 0)
        .expect("the timed-out post");
    let gap = statuses[third_failure + 1]
        .0
        .duration_since(statuses[third_failure].0);
    assert!(
        gap >= Duration::from_millis(600),
        "breaker kept calls away for {gap:?}"
    );

    // Exactly once: one accepted item per job, the job's stored item, signed by the funded wallet.
    assert_eq!(
        ledger.items.len(),
        9,
        "8 chunks and the playlist, no duplicates"
    );
    let mut per_chunk: HashMap<String, usize> = HashMap::new();
    for job in &jobs {
        let id = job.item_id.clone().expect("signed");
        let raw = ledger
            .items
            .get(&id)
            .expect("the bundler holds the job's item");
        assert_eq!(
            raw.as_ref(),
            job.signed_item.as_deref().unwrap(),
            "the stored bytes are what was sent"
        );
        let item = DataItem::parse(raw.clone()).unwrap();
        assert_eq!(item.owner_address(), funded);
        assert_eq!(item.tag("App-Name"), Some("zipIQ"));
        assert_eq!(
            item.tag("Broadcast-Id"),
            Some(broadcast.to_string().as_str())
        );
        assert!(
            job.receipt
                .as_deref()
                .is_some_and(|r| r.contains("test-signature")),
            "receipt kept"
        );
        let kind = item.tag("Chunk-Kind").unwrap().to_owned();
        if kind == "playlist" {
            let text = String::from_utf8(item.data().to_vec()).unwrap();
            assert!(text.contains("#EXT-X-ENDLIST"));
            for other in jobs.iter().filter(|j| j.chunk_id.is_some()) {
                assert!(
                    text.contains(&format!("/{}", other.item_id.as_deref().unwrap())),
                    "playlist names every chunk item"
                );
            }
        } else {
            *per_chunk
                .entry(item.tag("Chunk-Index").unwrap().to_owned())
                .or_default() += 1;
            assert_eq!(
                cid_of(&item.data()),
                item.tag("IPFS-CID").unwrap(),
                "item data hashes to the chunk CID"
            );
        }
    }
    assert_eq!(per_chunk.len(), 8);
    assert!(per_chunk.values().all(|&n| n == 1));
    stop(server).await;
}

async fn stop(server: TestServer) {
    server.stop().await;
}
