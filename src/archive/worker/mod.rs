//! The archiver: workers that take jobs from the durable queue and carry each one through
//! pending -> signed -> uploaded -> confirmed, with a wallet pool, a circuit breaker per endpoint, exponential
//! backoff with jitter, `Retry-After`, and a dead-letter state for permanent refusals.
//!
//! Exactly once: a job's data item is signed once and its bytes stored before the first upload, so every retry
//! (after a timeout, a crash, a dropped transaction) sends the same item id; a 402 re-signs with another wallet only
//! because the refused item exists nowhere. Uploads run in parallel (`archive.concurrency`), never one chunk after
//! another, and nothing here can slow the live stream: the recorder only writes rows.
//!
//! This file holds the Archiver (status, readiness) and its loop (claiming due jobs, starting each). The steps have
//! a file each: `signing` (a job's data item), `via_bundler` (the bundler path), `via_gateway` (the gateway bundle
//! path), `confirm` (following an uploaded job), `pollers` (wallet decisions, balances, queue gauges); `shared`
//! holds the state they all use.

mod confirm;
mod pollers;
mod shared;
mod signing;
mod via_bundler;
mod via_gateway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;

use self::confirm::confirm;
use self::pollers::run_pollers;
use self::shared::Inner;
use self::signing::sign_job;
use self::via_bundler::upload_to_bundler;
use self::via_gateway::{bundle_and_post, resume_bundle};
use super::bundler_client::BundlerClient;
use super::gateway_client::GatewayClient;
use super::wallets::{WalletPool, WalletStatus};
use crate::config::{ArchiveConfig, ArchiveMode};
use crate::db::Db;
use crate::db::jobs::{Job, JobState, QueueStatus};
use crate::resilience::backoff::Backoff;
use crate::resilience::breaker::{Breaker, BreakerState};
use crate::store::IpfsNode;

/// What `zipiq archive status` and the admin API show.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveStatus {
    pub mode: String,
    #[serde(flatten)]
    pub queue: QueueStatus,
    pub wallets: Vec<WalletStatus>,
    pub breakers: Vec<(String, BreakerState)>,
    pub ready: bool,
    pub reason: String,
}

/// A worker's name in the queue's leases: the node's name and a random suffix for this run.
fn worker_name(node: &str) -> String {
    format!("{node}-{:08x}", rand::random::<u32>())
}

/// Whether `holder` (a lease's `claimed_by`) names a worker of `node`, from any run.
fn is_worker_of(node: &str, holder: &str) -> bool {
    holder
        .strip_prefix(node)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|suffix| suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The archiver (cheap to clone).
#[derive(Clone)]
pub struct Archiver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("worker", &self.inner.worker)
            .finish()
    }
}

impl Archiver {
    /// An archiver for this node (`node` names its worker in the queue's leases).
    pub fn new(
        db: Db,
        ipfs: Arc<IpfsNode>,
        config: ArchiveConfig,
        wallets: Arc<WalletPool>,
        node: &str,
    ) -> Result<Archiver, String> {
        let timeout = Duration::from_millis(config.request_timeout_ms.max(100));
        let gateway =
            GatewayClient::new(&config.gateway_url, timeout).map_err(|e| e.to_string())?;
        let bundler = match config.mode {
            ArchiveMode::Bundler => Some(
                BundlerClient::new(&config.bundler_url, &config.bundler_token, timeout)
                    .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        let open_for = Duration::from_millis(config.breaker_open_ms);
        Ok(Archiver {
            inner: Arc::new(Inner {
                db,
                ipfs,
                wallets,
                bundler,
                gateway,
                bundler_breaker: Breaker::new(
                    &config.bundler_url,
                    config.breaker_failures,
                    open_for,
                ),
                gateway_breaker: Breaker::new(
                    &config.gateway_url,
                    config.breaker_failures,
                    open_for,
                ),
                worker: worker_name(node),
                node: node.to_owned(),
                backoff: Backoff {
                    base: Duration::from_millis(config.retry_base_ms.max(1)),
                    max: Duration::from_millis(
                        config.retry_max_ms.max(config.retry_base_ms.max(1)),
                    ),
                },
                config,
            }),
        })
    }

    /// The wallet pool.
    pub fn wallets(&self) -> &Arc<WalletPool> {
        &self.inner.wallets
    }

    /// Whether archival can make progress, and if not, why (for `/readyz`).
    pub fn readiness(&self) -> (bool, String) {
        let i = &self.inner;
        if i.config.mode == ArchiveMode::Off {
            return (
                true,
                "archival is off (archive.mode = \"off\"): chunks wait in the queue".into(),
            );
        }
        if i.wallets.is_empty() {
            return (
                false,
                format!(
                    "no wallet in {}: chunks wait in the queue until one is added (see README: funding a wallet)",
                    i.config.wallets_path().display()
                ),
            );
        }
        if !i.wallets.has_usable() {
            return (false, "every wallet is disabled or short of funds".into());
        }
        let breaker = match i.config.mode {
            ArchiveMode::Bundler => &i.bundler_breaker,
            _ => &i.gateway_breaker,
        };
        if breaker.state(Instant::now()) == BreakerState::Open {
            return (
                false,
                format!("circuit breaker open for {}", breaker.name()),
            );
        }
        (true, "archiving".into())
    }

    /// Queue, wallets and breakers.
    pub async fn status(&self) -> Result<ArchiveStatus, crate::db::DbError> {
        let now = Instant::now();
        let (ready, reason) = self.readiness();
        Ok(ArchiveStatus {
            mode: format!("{:?}", self.inner.config.mode).to_lowercase(),
            queue: self.inner.db.queue_status().await?,
            wallets: self.inner.wallets.statuses(),
            breakers: vec![
                (
                    self.inner.bundler_breaker.name().to_owned(),
                    self.inner.bundler_breaker.state(now),
                ),
                (
                    self.inner.gateway_breaker.name().to_owned(),
                    self.inner.gateway_breaker.state(now),
                ),
            ],
            ready,
            reason,
        })
    }

    /// Starts the workers and the pollers; they stop when `stop` turns true.
    pub fn spawn(&self, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(run_workers(self.inner.clone(), stop.clone())),
            tokio::spawn(run_pollers(self.inner.clone(), stop)),
        ]
    }

    /// Runs one pass over every due job and waits for it to finish (tests step the queue with it).
    pub async fn pass(&self) -> usize {
        let mut running = JoinSet::new();
        let n = pass(&self.inner, &mut running).await;
        while running.join_next().await.is_some() {}
        n
    }
}

async fn run_workers(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    take_back_leases(&inner).await;
    let idle = Duration::from_millis(inner.config.poll_ms.max(50));
    // Per-item work in flight (signing, uploading, confirming): a finished job frees its slot for the next claim at
    // once, so one slow upload never holds the others back.
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let busy = if inner.config.mode == ArchiveMode::Off || !inner.wallets.has_usable() {
            0
        } else {
            pass(&inner, &mut running).await
        };
        if busy == 0 {
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = stop.wait_for(|s| *s) => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
    }
    // Shutdown: let uploads in flight finish for a moment; whatever is cut off keeps its stored signed bytes and its
    // lease runs out, so the next start sends the same item again.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.abort_all();
}

/// At start: the leases an earlier run of this node left (a crash or kill -9 while it held jobs or a bundle) are
/// this node's to take back now, instead of waiting out `archive.lease_ms`. Node names are unique in a cluster.
async fn take_back_leases(inner: &Inner) {
    let node = inner.node.clone();
    match inner
        .db
        .release_leases_of(|holder| is_worker_of(&node, holder), &inner.worker)
        .await
    {
        Ok((0, 0)) => {}
        Ok((jobs, bundles)) => {
            tracing::info!(
                jobs,
                bundles,
                "took back the archive leases of this node's previous run"
            )
        }
        Err(e) => tracing::warn!(error = %e, "cannot take back this node's archive leases"),
    }
}

/// Claims due jobs for the free slots and starts them (signing and, in bundler mode, uploading and confirming);
/// in gateway mode bundles the signed items into one transaction. Returns how many jobs it started or handled.
async fn pass(inner: &Arc<Inner>, running: &mut JoinSet<()>) -> usize {
    let lease = inner.config.lease_ms as i64;
    let mut handled = 0;
    let per_item_states: &[JobState] = match inner.config.mode {
        ArchiveMode::Bundler => &[JobState::Pending, JobState::Signed, JobState::Uploaded],
        _ => &[JobState::Pending, JobState::Uploaded],
    };
    let free = inner
        .config
        .concurrency
        .max(1)
        .saturating_sub(running.len()) as i64;
    if free > 0 {
        match inner
            .db
            .claim_jobs(&inner.worker, per_item_states, free, lease)
            .await
        {
            Ok(jobs) => {
                for job in jobs {
                    handled += 1;
                    let inner = inner.clone();
                    running.spawn(async move { process(&inner, job).await });
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming archive jobs failed"),
        }
    }
    if inner.config.mode == ArchiveMode::Gateway {
        // Stored bundles not known to be accepted (a crash or a failed post) go first, the same transactions.
        match inner.db.claim_bundles(&inner.worker, 4, lease).await {
            Ok(bundles) => {
                for bundle in bundles {
                    handled += 1;
                    resume_bundle(inner, bundle).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming stored bundles failed"),
        }
        let batch = inner.config.bundle_max_items.max(1) as i64;
        match inner
            .db
            .claim_jobs(&inner.worker, &[JobState::Signed], batch, lease)
            .await
        {
            Ok(jobs) if !jobs.is_empty() => {
                handled += jobs.len();
                bundle_and_post(inner, jobs).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "claiming signed jobs failed"),
        }
    }
    handled
}

async fn process(inner: &Arc<Inner>, job: Job) {
    match job.state {
        JobState::Pending => {
            if let Some(job) = sign_job(inner, job).await {
                if inner.config.mode == ArchiveMode::Bundler {
                    upload_to_bundler(inner, job).await;
                } else {
                    // Gateway mode: the bundling pass takes signed items in batches.
                    let _ = inner.db.release_job(job.id, &inner.worker).await;
                }
            }
        }
        JobState::Signed => upload_to_bundler(inner, job).await,
        JobState::Uploaded => confirm(inner, job).await,
        JobState::Confirmed | JobState::Dead => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_recognises_the_workers_of_its_earlier_runs_only() {
        let name = worker_name("edge-1");
        assert!(is_worker_of("edge-1", &name));
        assert!(is_worker_of("edge-1", "edge-1-0badf00d"));
        assert!(!is_worker_of("edge", "edge-1-0badf00d"), "another node");
        assert!(!is_worker_of("edge-1", "edge-10-0badf00d"));
        assert!(
            !is_worker_of("edge-1", "edge-1-0badf00"),
            "suffix too short"
        );
        assert!(!is_worker_of("edge-1", "edge-1-0badf00x"));
        assert!(!is_worker_of("edge-1", "edge-1"));
    }
}
