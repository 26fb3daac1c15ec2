//! Crash safety of the archive queue with the real `zipiq` binary: chunks are recorded, then `zipiq serve` uploads
//! them to a (verifying, slow) Bundlr-protocol bundler and is killed with SIGKILL twice while uploads are in flight.
//! After the last restart every chunk and the playlist are archived exactly once: one signed item per job, the same
//! bytes every time it was (re)sent, nothing lost and nothing signed twice.
//!
//! In gateway mode (arlocal) the process aborts right after the gateway accepted a bundle transaction, before the
//! jobs learn it (a failpoint): the restart posts that same transaction again, and every item is in exactly one paid
//! transaction. With a lease of ten minutes, a restarted node takes its own leases back at once, and a broadcast it
//! left open ends at its last chunk's end, not at the restart.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use zipiq::Server;
use zipiq::config::Config;
use zipiq::db::Db;
use zipiq::db::broadcasts::NewChunk;
use zipiq::db::jobs::JobState;

use crate::archive_bundler::{record_random_broadcast, test_wallets};
use crate::arlocal::{mine_until, mint_test_wallets};
use crate::common::{chunk, eventually};
use crate::fake_bundler;

const CHUNKS: i64 = 10;

fn config_text(dir: &Path, archive: &str) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [media]\nudp_listen = \"127.0.0.1:0\"\n\
         [database]\nurl = \"sqlite://{}\"\n[log]\nlevel = \"info\"\n[server]\nnode_name = \"crash-node\"\n\
         [auth]\njwt_key_file = \"{}\"\n\
         [ipfs]\nrepo_dir = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nannounce = false\n\
         [archive]\n{archive}\nwallets_dir = \"{}\"\n",
        dir.join("zipiq.db").display(),
        dir.join("jwt-key").display(),
        dir.join("ipfs").display(),
        test_wallets().display()
    )
}

/// Writes `dir`/zipiq.toml for bundler mode against `url` (three uploads at once, quick retries, leases of
/// `lease_ms`) and returns its path.
fn write_bundler_config(dir: &Path, url: &str, lease_ms: u64) -> PathBuf {
    let archive = format!(
        "mode = \"bundler\"\nbundler_url = \"{url}\"\ngateway_url = \"{url}\"\nconcurrency = 3\n\
         request_timeout_ms = 5000\nlease_ms = {lease_ms}\nretry_base_ms = 50\nretry_max_ms = 400\npoll_ms = 50"
    );
    let config = dir.join("zipiq.toml");
    std::fs::write(&config, config_text(dir, &archive)).unwrap();
    config
}

/// Records a finished broadcast of `CHUNKS` random chunks into the data directory with an in-process server whose
/// archiver is off, so the queue holds every job, unsent, when the binary starts.
async fn record(dir: &Path) -> i64 {
    let text = config_text(dir, "mode = \"off\"");
    let config = Config::from_layers(Some(("record.toml".into(), text)), Vec::new()).unwrap();
    zipiq::telemetry::init_logs(&config.log);
    let (server, _) = Server::start(config).await.expect("server starts");
    let b = record_random_broadcast(&server, CHUNKS).await;
    server.shutdown().await;
    b
}

fn spawn(config: &Path, log: &Path) -> std::process::Child {
    spawn_with(config, log, None)
}

/// `zipiq serve` with the failpoint `failpoint` set (see `zipiq::resilience::failpoint`).
fn spawn_with(config: &Path, log: &Path, failpoint: Option<&str>) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_zipiq"));
    command.env_remove("ZIPIQ_FAILPOINT");
    if let Some(point) = failpoint {
        command.env("ZIPIQ_FAILPOINT", point);
    }
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("zipiq binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_uploads_twice_then_every_chunk_is_archived_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let broadcast = record(dir.path()).await;

    let bundler = fake_bundler::start().await;
    // Slow answers keep uploads in flight when the process dies.
    bundler.ledger().delay = Duration::from_millis(300);
    let config = write_bundler_config(dir.path(), &bundler.url(), 1500);

    // Two crashes, each after a few more POSTs have reached the bundler.
    for (round, posts) in [(1, 2usize), (2, 6)] {
        let mut child = spawn(&config, &dir.path().join(format!("run{round}.log")));
        // Kill when some uploads are done and others are in flight (arrived, not answered yet).
        let reached = eventually(Duration::from_secs(60), || {
            let l = bundler.ledger();
            l.posts.len() >= posts && l.received.len() > l.posts.len()
        })
        .await;
        assert!(
            reached,
            "round {round}: uploads began ({} posts)",
            bundler.ledger().posts.len()
        );
        child.kill().unwrap(); // SIGKILL: no shutdown code runs
        child.wait().unwrap();
    }
    let before_last = bundler.ledger().posts.len();
    let mut child = spawn(&config, &dir.path().join("run3.log"));

    let db = Db::connect(&zipiq::config::DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("zipiq.db").display()),
        max_connections: 2,
        acquire_timeout_ms: 5000,
    })
    .await
    .unwrap();
    let done = eventually(Duration::from_secs(90), || {
        let jobs = futures::executor::block_on(db.jobs_of_broadcast(broadcast)).unwrap();
        jobs.len() == CHUNKS as usize + 1 && jobs.iter().all(|j| j.state == JobState::Confirmed)
    })
    .await;
    let jobs = db.jobs_of_broadcast(broadcast).await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        done,
        "every job confirmed after the restarts: {:?}\n{}",
        jobs.iter()
            .map(|j| (j.id, j.state, j.last_error.clone()))
            .collect::<Vec<_>>(),
        std::fs::read_to_string(dir.path().join("run3.log")).unwrap_or_default()
    );

    let ledger = bundler.ledger().clone_for_test();
    assert!(
        ledger.invalid.is_empty(),
        "every posted item verified: {:?}",
        ledger.invalid
    );
    assert!(
        ledger.posts.len() > before_last,
        "the last run uploaded the rest"
    );
    // Exactly once: every POST ever made carried one of the jobs' stored items, and each job's item is held.
    let stored: HashMap<String, &[u8]> = jobs
        .iter()
        .map(|j| {
            (
                j.item_id.clone().expect("signed"),
                j.signed_item.as_deref().expect("stored bytes"),
            )
        })
        .collect();
    assert_eq!(
        stored.len(),
        CHUNKS as usize + 1,
        "one distinct item per job"
    );
    let posted: HashSet<&String> = ledger.posts.iter().map(|p| &p.2).collect();
    for id in &posted {
        assert!(
            stored.contains_key(*id),
            "item {id} was posted but belongs to no job: signed twice"
        );
    }
    assert_eq!(
        ledger.items.len(),
        CHUNKS as usize + 1,
        "the chunks and the playlist, no duplicates"
    );
    for (id, bytes) in &stored {
        assert_eq!(
            ledger.items.get(id).map(|b| b.as_ref()),
            Some(*bytes),
            "the bundler holds item {id} as stored"
        );
    }
    // Uploads cut by the crashes were sent again after the restarts, with the same item (same id, same bytes).
    let received: HashSet<&String> = ledger.received.iter().collect();
    for id in &received {
        assert!(
            stored.contains_key(*id),
            "item {id} arrived but belongs to no job: signed twice"
        );
    }
    let resent = ledger.received.len() - received.len();
    assert!(
        resent > 0,
        "some uploads were in flight at a crash and were sent again: {:?}",
        ledger.received
    );
    eprintln!(
        "{} POSTs of {} items ({resent} re-sent after the crashes)",
        ledger.received.len(),
        received.len()
    );
}

async fn open_db(dir: &Path) -> Db {
    Db::connect(&zipiq::config::DatabaseConfig {
        url: format!("sqlite://{}", dir.join("zipiq.db").display()),
        max_connections: 2,
        acquire_timeout_ms: 5000,
    })
    .await
    .unwrap()
}

/// The bundle transactions our wallets posted at the gateway (mined first, so GraphQL lists them) that carry any of
/// `ours` (arlocal is shared with other tests using the same wallets), with the ids of the items each carries.
async fn paid_bundles(arlocal: &str, ours: &HashSet<String>) -> Vec<(String, Vec<String>)> {
    let _ = reqwest::get(format!("{arlocal}/mine")).await;
    let gateway =
        zipiq::archive::gateway_client::GatewayClient::new(arlocal, Duration::from_secs(10))
            .unwrap();
    let owners: Vec<String> = ["test-only-a.json", "test-only-b.json"]
        .iter()
        .map(|f| {
            zipiq::archive::jwk::Jwk::from_json(&std::fs::read(test_wallets().join(f)).unwrap())
                .unwrap()
                .address()
                .to_owned()
        })
        .collect();
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = gateway
            .find_transactions(
                &[zipiq::archive::gateway_client::TagFilter::new(
                    "Bundle-Format",
                    "binary",
                )],
                &owners,
                100,
                after.as_deref(),
            )
            .await
            .expect("GraphQL answers");
        for tx in page.transactions.iter().filter(|t| t.bundled_in.is_none()) {
            let data = gateway
                .data(&tx.id, 64 << 20)
                .await
                .expect("bundle data")
                .unwrap_or_else(|| panic!("the gateway serves bundle {}", tx.id));
            let items: Vec<String> = zipiq::archive::ans104::parse_bundle(data)
                .unwrap_or_else(|e| panic!("bundle {} parses: {e}", tx.id))
                .iter()
                .map(|i| i.id_b64url())
                .collect();
            if items.iter().any(|i| ours.contains(i)) {
                out.push((tx.id.clone(), items));
            }
        }
        match page.transactions.last() {
            Some(last) if page.has_next_page => after = Some(last.cursor.clone()),
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_the_gateway_accepted_a_bundle_then_each_item_is_paid_once() {
    let arlocal = crate::arlocal::start();
    mint_test_wallets(&arlocal.url).await;
    let dir = tempfile::tempdir().unwrap();
    let broadcast = record(dir.path()).await;
    // A short lease: what is tested here is the re-post of the stored transaction, not taking leases back.
    let archive = format!(
        "mode = \"gateway\"\ngateway_url = \"{}\"\nconfirmations = 1\npoll_ms = 100\nlease_ms = 2000\n\
         retry_base_ms = 100\nretry_max_ms = 1000\nrepost_after_ms = 600000\nbundle_max_items = 50\n",
        arlocal.url
    );
    let config = dir.path().join("zipiq.toml");
    std::fs::write(&config, config_text(dir.path(), &archive)).unwrap();

    // Run 1 aborts right after the gateway accepted its first bundle: the jobs are still `signed`.
    let mut child = spawn_with(
        &config,
        &dir.path().join("run1.log"),
        Some("abort-after-bundle-post"),
    );
    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log1 = std::fs::read_to_string(dir.path().join("run1.log")).unwrap_or_default();
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the failpoint aborted the process:\n{log1}");
    };
    assert!(!status.success(), "aborted: {status:?}\n{log1}");
    let db = open_db(dir.path()).await;
    let ours: HashSet<String> = db
        .jobs_of_broadcast(broadcast)
        .await
        .unwrap()
        .iter()
        .filter_map(|j| j.item_id.clone())
        .collect();
    let posted = paid_bundles(&arlocal.url, &ours).await;
    assert_eq!(
        posted.len(),
        1,
        "the gateway took one bundle before the abort: {posted:?}"
    );
    assert!(
        db.jobs_of_broadcast(broadcast)
            .await
            .unwrap()
            .iter()
            .all(|j| j.state != JobState::Uploaded && j.state != JobState::Confirmed),
        "the database did not learn of the accepted bundle"
    );

    // Run 2: the stored transaction is posted again, the same one; the rest follows in new bundles.
    let mut child = spawn(&config, &dir.path().join("run2.log"));
    let confirmed = mine_until(&arlocal.url, Duration::from_secs(120), async || {
        let jobs = db.jobs_of_broadcast(broadcast).await.unwrap();
        jobs.len() == CHUNKS as usize + 1 && jobs.iter().all(|j| j.state == JobState::Confirmed)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let jobs = db.jobs_of_broadcast(broadcast).await.unwrap();
    assert!(
        confirmed,
        "every job confirmed after the restart: {:?}\n{}",
        jobs.iter()
            .map(|j| (j.id, j.state, j.last_error.clone()))
            .collect::<Vec<_>>(),
        std::fs::read_to_string(dir.path().join("run2.log")).unwrap_or_default()
    );

    // One paid transaction per item: every item of every job is in exactly one bundle our wallets posted.
    let ours: HashSet<String> = jobs.iter().filter_map(|j| j.item_id.clone()).collect();
    let bundles = paid_bundles(&arlocal.url, &ours).await;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for (tx, items) in &bundles {
        for item in items {
            seen.entry(item.clone()).or_default().push(tx.clone());
        }
    }
    for job in &jobs {
        let item = job.item_id.clone().expect("signed");
        let txs = seen.get(&item).cloned().unwrap_or_default();
        assert_eq!(
            txs.len(),
            1,
            "job {} item {item} is in {} paid transactions: {txs:?}",
            job.id,
            txs.len()
        );
        assert_eq!(job.bundle_tx.as_deref(), Some(txs[0].as_str()));
    }
    assert_eq!(
        seen.len(),
        CHUNKS as usize + 1,
        "no other item was paid for"
    );
    assert!(
        bundles.iter().any(|(tx, _)| tx == &posted[0].0),
        "the first bundle is one of them"
    );
    // `zipiq verify` agrees: every chunk archived, each in one transaction.
    let gateway =
        zipiq::archive::gateway_client::GatewayClient::new(&arlocal.url, Duration::from_secs(10))
            .unwrap();
    let record_config = Config::from_layers(
        Some(("c.toml".into(), config_text(dir.path(), "mode = \"off\""))),
        Vec::new(),
    )
    .unwrap();
    let (server, _) = Server::start(record_config).await.expect("server starts");
    let checks = zipiq::archive::verify::verify_broadcast(
        &db,
        &gateway,
        &format!("http://{}", server.http_addr),
        broadcast,
    )
    .await
    .unwrap();
    // And it notices an item put in a second transaction the gateway has: paid twice.
    let job0 = jobs
        .iter()
        .find(|j| j.chunk_id.is_some())
        .expect("a chunk job");
    let other = bundles
        .iter()
        .map(|(tx, _)| tx.clone())
        .find(|tx| Some(tx.as_str()) != job0.bundle_tx.as_deref())
        .expect("the items went into more than one bundle (the playlist waits for every chunk)");
    sqlx::query(
        "INSERT INTO archive_bundle_items (tx_id, position, job_id, item_id) VALUES ($1, 9999, $2, $3)",
    )
    .bind(&other)
    .bind(job0.id)
    .bind(job0.item_id.clone().unwrap())
    .execute(db.pool())
    .await
    .unwrap();
    let twice = zipiq::archive::verify::verify_broadcast(
        &db,
        &gateway,
        &format!("http://{}", server.http_addr),
        broadcast,
    )
    .await
    .unwrap();
    server.shutdown().await;
    let reported = twice
        .iter()
        .find(|c| c.item_id == job0.item_id)
        .expect("the chunk is checked");
    assert!(
        reported
            .once
            .as_ref()
            .is_err_and(|e| e.contains("posted in 2 transactions")),
        "verify reports the item paid twice: {:?}",
        reported.once
    );
    assert!(!reported.ok());
    for c in &checks {
        assert!(
            c.ok(),
            "chunk {}: {:?} {:?} {:?} {:?}",
            c.seq,
            c.ipfs,
            c.arweave_data,
            c.arweave_graphql,
            c.once
        );
        assert_eq!(
            c.transactions.len(),
            1,
            "chunk {}: {:?}",
            c.seq,
            c.transactions
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_takes_its_leases_back_and_ends_its_open_broadcast_at_its_last_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let broadcast = record(dir.path()).await;
    // A broadcast this node left open (a crash mid-broadcast): three media chunks ending 6 s into it, a minute ago.
    let open = {
        let db = open_db(dir.path()).await;
        let stream = db.find_stream("live").await.unwrap().unwrap();
        let b = db.create_broadcast(stream.id, "crash-node").await.unwrap();
        for seq in 0..3i64 {
            // Any CID of this node's store would do; the recording's own chunks are some.
            let recorded = &db.chunks_of(broadcast).await.unwrap()[seq as usize];
            db.insert_chunk(&NewChunk {
                duration_ms: if seq == 0 { 0 } else { 3000 },
                start_ms: (seq - 1).max(0) * 3000,
                end_ms: seq * 3000,
                ..chunk(b, seq, recorded.cid.clone(), recorded.size)
            })
            .await
            .unwrap();
        }
        sqlx::query("UPDATE broadcasts SET started_at = started_at - 60000 WHERE id = $1")
            .bind(b)
            .execute(db.pool())
            .await
            .unwrap();
        db.close().await;
        b
    };

    let bundler = fake_bundler::start().await;
    bundler.ledger().delay = Duration::from_millis(300);
    // Leases of ten minutes: without taking them back, the jobs in flight at the kill would wait that long.
    let config = write_bundler_config(dir.path(), &bundler.url(), 600000);
    let mut child = spawn(&config, &dir.path().join("run1.log"));
    let reached = eventually(Duration::from_secs(60), || {
        let l = bundler.ledger();
        l.posts.len() >= 2 && l.received.len() > l.posts.len()
    })
    .await;
    assert!(reached, "uploads began");
    child.kill().unwrap();
    child.wait().unwrap();

    let db = open_db(dir.path()).await;
    let leased = db
        .jobs_of_broadcast(broadcast)
        .await
        .unwrap()
        .iter()
        .filter(|j| j.lease_until.is_some_and(|t| t > zipiq::db::now_ms()))
        .count();
    assert!(leased > 0, "the kill left jobs leased");
    let started = std::time::Instant::now();
    let restarted_at = zipiq::db::now_ms();
    let mut child = spawn(&config, &dir.path().join("run2.log"));
    let done = eventually(Duration::from_secs(30), || {
        let jobs = futures::executor::block_on(db.jobs_of_broadcast(broadcast)).unwrap();
        jobs.len() == CHUNKS as usize + 1 && jobs.iter().all(|j| j.state == JobState::Confirmed)
    })
    .await;
    let took = started.elapsed();
    let b = db.broadcast(open).await.unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        done,
        "every job confirmed well within the 10-minute lease: {:?}\n{}",
        db.jobs_of_broadcast(broadcast)
            .await
            .unwrap()
            .iter()
            .map(|j| (j.id, j.state, j.claimed_by.clone(), j.lease_until))
            .collect::<Vec<_>>(),
        std::fs::read_to_string(dir.path().join("run2.log")).unwrap_or_default()
    );
    eprintln!("restart to every job confirmed: {took:?}");
    assert!(
        b.root_cid.is_some(),
        "the open broadcast was finished at the restart"
    );
    assert_eq!(
        b.ended_at,
        Some(b.started_at + 6000),
        "it ended at its last chunk's end (restart at {restarted_at})"
    );
}
