//! Archival straight to an Arweave gateway (arlocal): chunks are bundled and posted as a format-2 transaction
//! through /chunk, mined and confirmed; GraphQL by Stream-Id and Chunk-Index finds each item; the item data hashes
//! to the chunk's CID; `verify` passes, fails when the transaction is deleted (a dropped transaction), and passes
//! again once the same signed items are posted again.

use std::time::Duration;

use zipiq::archive::gateway_client::GatewayClient;
use zipiq::archive::verify::{missing_jobs, verify_broadcast};
use zipiq::db::jobs::JobState;

use crate::archive_bundler::{recorded_broadcast, test_wallets};
use crate::arlocal::{mine_until, mint_test_wallets};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_archived_to_arlocal_verified_then_dropped_and_reposted() {
    let arlocal = crate::arlocal::start();
    mint_test_wallets(&arlocal.url).await;
    let config = format!(
        "[archive]\nmode = \"gateway\"\ngateway_url = \"{}\"\nwallets_dir = \"{}\"\nconfirmations = 1\n\
         poll_ms = 100\nretry_base_ms = 100\nretry_max_ms = 1000\nrepost_after_ms = 1000\nbundle_max_items = 50\n",
        arlocal.url,
        test_wallets().display()
    );
    let server = start_server(&config).await;
    let broadcast = recorded_broadcast(&server, 5).await;
    let db = server.server.db.clone();
    let all_confirmed = || {
        let db = db.clone();
        async move {
            let jobs = db.jobs_of_broadcast(broadcast).await.unwrap();
            jobs.len() == 6 && jobs.iter().all(|j| j.state == JobState::Confirmed)
        }
    };
    assert!(
        mine_until(&arlocal.url, Duration::from_secs(90), async || {
            all_confirmed().await
        })
        .await,
        "bundled, posted, mined, confirmed: {:?}",
        db.jobs_of_broadcast(broadcast)
            .await
            .unwrap()
            .iter()
            .map(|j| (j.state, j.last_error.clone()))
            .collect::<Vec<_>>()
    );
    let jobs = db.jobs_of_broadcast(broadcast).await.unwrap();
    let bundles: std::collections::HashSet<String> =
        jobs.iter().filter_map(|j| j.bundle_tx.clone()).collect();
    assert!(!bundles.is_empty());

    let gateway = GatewayClient::new(&arlocal.url, Duration::from_secs(10)).unwrap();
    let checks = verify_broadcast(&db, &gateway, &server.base, broadcast)
        .await
        .unwrap();
    assert_eq!(checks.len(), 5);
    for c in &checks {
        assert!(
            c.ok(),
            "chunk {}: {:?} {:?} {:?}",
            c.seq,
            c.ipfs,
            c.arweave_data,
            c.arweave_graphql
        );
    }

    // A dropped transaction: arlocal forgets the bundle and the items it unpacked from it.
    let dropped = bundles
        .iter()
        .cloned()
        .chain(jobs.iter().filter_map(|j| j.item_id.clone()));
    let http = reqwest::Client::new();
    for tx in dropped {
        let r = http
            .delete(format!("{}/tx/{tx}", arlocal.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "DELETE /tx/{tx}: {}", r.status());
    }
    let checks = verify_broadcast(&db, &gateway, &server.base, broadcast)
        .await
        .unwrap();
    assert!(
        checks.iter().all(|c| c.arweave_data.is_err()),
        "verify fails once the transaction is gone: {:?}",
        checks
            .iter()
            .map(|c| (c.seq, c.arweave_data.clone()))
            .collect::<Vec<_>>()
    );
    let item_ids: Vec<Option<String>> = db
        .jobs_of_broadcast(broadcast)
        .await
        .unwrap()
        .iter()
        .map(|j| j.item_id.clone())
        .collect();
    // Repair: the same signed items go into a new bundle.
    let missing = missing_jobs(&db, broadcast, &checks).await.unwrap();
    assert_eq!(missing.len(), 5);
    assert_eq!(db.requeue_for_repost(&missing).await.unwrap(), 5);
    assert!(
        mine_until(&arlocal.url, Duration::from_secs(90), async || {
            all_confirmed().await
        })
        .await,
        "posted again and confirmed"
    );
    let after: Vec<Option<String>> = db
        .jobs_of_broadcast(broadcast)
        .await
        .unwrap()
        .iter()
        .map(|j| j.item_id.clone())
        .collect();
    assert_eq!(
        item_ids, after,
        "the item ids did not change: exactly one item per chunk"
    );
    let checks = verify_broadcast(&db, &gateway, &server.base, broadcast)
        .await
        .unwrap();
    for c in &checks {
        assert!(
            c.ok(),
            "after re-posting, chunk {}: {:?} {:?}",
            c.seq,
            c.arweave_data,
            c.arweave_graphql
        );
    }
    server.stop().await;
}
