//! Crash safety of the archive queue with the real `zipiq` binary: chunks are recorded, then `zipiq serve` uploads
//! them to a (verifying, slow) Bundlr-protocol bundler and is killed with SIGKILL twice while uploads are in flight.
//! After the last restart every chunk and the playlist are archived exactly once: one signed item per job, the same
//! bytes every time it was (re)sent, nothing lost and nothing signed twice.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use zipiq::Server;
use zipiq::config::Config;
use zipiq::db::Db;
use zipiq::db::jobs::JobState;

use crate::archive_bundler::{record_random_broadcast, test_wallets};
use crate::common::eventually;
use crate::fake_bundler;

const CHUNKS: i64 = 10;

fn config_text(dir: &Path, archive: &str) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [media]\nudp_listen = \"127.0.0.1:0\"\n\
         [database]\nurl = \"sqlite://{}\"\n[log]\nlevel = \"info\"\n\
         [auth]\njwt_key_file = \"{}\"\n\
         [ipfs]\nrepo_dir = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nannounce = false\n\
         [archive]\n{archive}\nwallets_dir = \"{}\"\n",
        dir.join("zipiq.db").display(),
        dir.join("jwt-key").display(),
        dir.join("ipfs").display(),
        test_wallets().display()
    )
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
    let log = std::fs::File::create(log).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_zipiq"))
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
    let archive = format!(
        "mode = \"bundler\"\nbundler_url = \"{url}\"\ngateway_url = \"{url}\"\nconcurrency = 3\n\
         request_timeout_ms = 5000\nlease_ms = 1500\nretry_base_ms = 50\nretry_max_ms = 400\npoll_ms = 50",
        url = bundler.url()
    );
    let config = dir.path().join("zipiq.toml");
    std::fs::write(&config, config_text(dir.path(), &archive)).unwrap();

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
