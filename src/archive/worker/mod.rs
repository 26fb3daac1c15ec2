//! The archiver: workers that take jobs from the durable queue and carry each one through
//! pending -> signed -> uploaded -> confirmed, with a wallet pool, a circuit breaker per endpoint, exponential
//! backoff with jitter, `Retry-After`, and a dead-letter state for permanent refusals.
//!
//! Exactly once: a job's data item is signed once and its bytes stored before the first upload, so every retry
//! (after a timeout, a crash, a dropped transaction) sends the same item id; a 402 re-signs with another wallet only
//! because the refused item exists nowhere. Uploads run in parallel (`archive.concurrency`), never one chunk after
//! another, and nothing here can slow the live stream: the recorder only writes rows.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;

use super::ans104::{self, DataItem};
use super::arweave_tx::{Transaction, TransactionBuilder, TransactionJson};
use super::bundler_client::{BundlerClient, UploadOutcome};
use super::gateway_client::{GatewayClient, TxStatus};
use super::items;
use super::merkle::DataTree;
use super::wallets::{WalletPool, WalletStatus};
use crate::config::{ArchiveConfig, ArchiveMode};
use crate::db::bundles::{NewBundle, StoredBundle};
use crate::db::jobs::{Job, JobKind, JobState, QueueStatus};
use crate::db::{Db, now_ms};
use crate::resilience::backoff::Backoff;
use crate::resilience::breaker::{Breaker, BreakerState, Permit};
use crate::store::IpfsNode;

/// Largest chunk read back from IPFS for archival (segments are capped well below this).
const MAX_ITEM_BYTES: u64 = 256 << 20;

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

struct Inner {
    db: Db,
    ipfs: Arc<IpfsNode>,
    config: ArchiveConfig,
    wallets: Arc<WalletPool>,
    bundler: Option<BundlerClient>,
    gateway: GatewayClient,
    bundler_breaker: Breaker,
    gateway_breaker: Breaker,
    worker: String,
    /// The node's name: every worker of this node, in this run or an earlier one, is named after it.
    node: String,
    backoff: Backoff,
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

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
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

fn failure(class: &'static str) {
    metrics::counter!("zipiq_archive_failures_total", "class" => class).increment(1);
}

async fn retry(inner: &Inner, job: &Job, error: &str, delay: Option<Duration>, count: bool) {
    let delay = delay.unwrap_or_else(|| inner.backoff.delay(job.attempts.clamp(0, 60) as u32));
    tracing::debug!(job = job.id, error, ?delay, "archive job retries later");
    let _ = inner
        .db
        .retry_job_later(
            job.id,
            &inner.worker,
            error,
            delay.as_millis() as i64,
            count,
        )
        .await;
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

/// Builds and signs the job's data item and stores its bytes before any upload. Returns the signed job.
async fn sign_job(inner: &Arc<Inner>, mut job: Job) -> Option<Job> {
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

/// Sends the stored item to the bundler and maps the answer.
async fn upload_to_bundler(inner: &Arc<Inner>, job: Job) {
    let (Some(bundler), Some(bytes)) = (&inner.bundler, job.signed_item.clone()) else {
        return;
    };
    let Some(permit) = inner.bundler_breaker.try_acquire(Instant::now()) else {
        retry(
            inner,
            &job,
            "bundler circuit breaker open",
            Some(Duration::from_millis(inner.config.breaker_open_ms)),
            false,
        )
        .await;
        return;
    };
    let started = Instant::now();
    let outcome = bundler.upload_bytes(Bytes::from(bytes)).await;
    metrics::histogram!("zipiq_archive_upload_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let _ = permit;
    match outcome {
        UploadOutcome::Accepted { receipt, .. } => {
            inner.bundler_breaker.success();
            let receipt = receipt.map(|r| r.raw);
            let _ = inner
                .db
                .mark_uploaded(job.id, &inner.worker, None, receipt.as_deref())
                .await;
        }
        UploadOutcome::AlreadyStored => {
            inner.bundler_breaker.success();
            let _ = inner
                .db
                .mark_uploaded(job.id, &inner.worker, None, Some("{\"status\":202}"))
                .await;
        }
        UploadOutcome::InsufficientBalance { body } => {
            inner.bundler_breaker.neutral();
            failure("insufficient_balance");
            if let Some(w) = &job.wallet {
                inner.wallets.mark_short(w, Duration::from_secs(600));
            }
            // The bundler refused the item, so it exists nowhere: sign again with the next wallet, now.
            let _ = inner
                .db
                .resign_job(
                    job.id,
                    &inner.worker,
                    &format!("402 for wallet {:?}: {body}", job.wallet),
                )
                .await;
        }
        UploadOutcome::RateLimited { retry_after, .. } => {
            inner.bundler_breaker.neutral();
            failure("rate_limited");
            retry(
                inner,
                &job,
                "429 from the bundler",
                retry_after.or(Some(Duration::from_secs(5))),
                false,
            )
            .await;
        }
        UploadOutcome::Transient { reason } => {
            inner.bundler_breaker.failure(Instant::now());
            failure("transient");
            retry(inner, &job, &reason, None, true).await;
        }
        UploadOutcome::Rejected { status, body } => {
            inner.bundler_breaker.success();
            failure("rejected");
            tracing::error!(job = job.id, status, body = %body, "the bundler refused the item: dead letter");
            let _ = inner
                .db
                .mark_dead(
                    job.id,
                    &inner.worker,
                    &format!("{status} from the bundler: {body}"),
                )
                .await;
        }
    }
    let state = inner.bundler_breaker.state(Instant::now());
    metrics::gauge!("zipiq_breaker_state", "endpoint" => "bundler").set(state.as_metric());
    if permit == Permit::Trial && state == BreakerState::Closed {
        tracing::info!("bundler circuit breaker closed again");
    }
}

/// Gateway mode: bundles signed items into one transaction, stores the signed transaction with its items, then
/// posts it (data through /chunk). Stored first so that a crash after the gateway accepted it posts the same
/// transaction again at the next start, instead of a new one paying a second reward for the same items.
async fn bundle_and_post(inner: &Arc<Inner>, jobs: Vec<Job>) {
    let mut items: Vec<DataItem> = Vec::new();
    let mut included: Vec<Job> = Vec::new();
    let mut bytes = 0usize;
    for job in jobs {
        let Some(raw) = job.signed_item.clone() else {
            continue;
        };
        match DataItem::parse(raw) {
            Ok(item) if bytes + item.len() <= inner.config.bundle_max_bytes || items.is_empty() => {
                bytes += item.len();
                items.push(item);
                included.push(job);
            }
            Ok(_) => retry(inner, &job, "next bundle", Some(Duration::ZERO), false).await,
            Err(e) => {
                let _ = inner
                    .db
                    .mark_dead(
                        job.id,
                        &inner.worker,
                        &format!("stored item unreadable: {e}"),
                    )
                    .await;
            }
        }
    }
    if items.is_empty() {
        return;
    }
    let data = ans104::bundle(&items);
    let retry_all = async |reason: &str, delay: Option<Duration>, count: bool| {
        for job in &included {
            retry(inner, job, reason, delay, count).await;
        }
    };
    let Some(permit) = inner.gateway_breaker.try_acquire(Instant::now()) else {
        retry_all(
            "gateway circuit breaker open",
            Some(Duration::from_millis(inner.config.breaker_open_ms)),
            false,
        )
        .await;
        return;
    };
    let (tx, payer) = match sign_bundle(inner, &data).await {
        Ok(signed) => signed,
        Err((transient, reason)) => {
            gateway_failed(inner, transient);
            retry_all(&reason, None, true).await;
            return;
        }
    };
    let tx_id = tx.id_b64url();
    let tx_json = match serde_json::to_string(&tx.to_json(None)) {
        Ok(j) => j,
        Err(e) => {
            retry_all(&format!("transaction JSON: {e}"), None, true).await;
            return;
        }
    };
    let listed: Vec<(i64, String)> = included
        .iter()
        .zip(&items)
        .map(|(job, item)| (job.id, item.id_b64url()))
        .collect();
    let bundle = NewBundle {
        tx_id: &tx_id,
        wallet: &payer,
        tx_json: &tx_json,
        reward: tx.reward,
        data_size: data.len() as i64,
        items: &listed,
    };
    match inner
        .db
        .store_bundle(&bundle, &inner.worker, inner.config.lease_ms as i64)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            // A lease was lost: another worker may be bundling these items. Post nothing.
            tracing::warn!(tx = %tx_id, "an archive job's lease was lost before its bundle was stored; not posted");
            for job in &included {
                let _ = inner.db.release_job(job.id, &inner.worker).await;
            }
            return;
        }
        Err(e) => {
            retry_all(&format!("storing the bundle: {e}"), None, false).await;
            return;
        }
    }
    let tree = DataTree::new(&data);
    let started = Instant::now();
    let result = post_stored(inner, &tx_id, || {
        inner.gateway.upload(&tx, &data, tree.as_ref())
    })
    .await;
    metrics::histogram!("zipiq_archive_upload_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    finish_post(inner, &tx, &payer, data.len(), result).await;
    let _ = permit;
}

/// Gateway mode after a restart (or a failed post): posts a stored bundle transaction again, the same one. The
/// gateway is asked first: when it already has the transaction only the data chunks are posted again (the header is
/// known; the data may be incomplete); when it does not, the whole transaction is posted. Either way no second
/// reward is paid, since the transaction id is the same.
async fn resume_bundle(inner: &Arc<Inner>, bundle: StoredBundle) {
    let retry_bundle = async |reason: &str, delay: Option<Duration>| {
        let delay =
            delay.unwrap_or_else(|| inner.backoff.delay(bundle.attempts.clamp(0, 60) as u32));
        let _ = inner
            .db
            .retry_bundle_later(
                &bundle.tx_id,
                &inner.worker,
                reason,
                delay.as_millis() as i64,
            )
            .await;
    };
    let tx = match serde_json::from_str::<TransactionJson>(&bundle.tx_json)
        .map_err(|e| e.to_string())
        .and_then(|j| Transaction::from_json(&j).map_err(|e| e.to_string()))
    {
        Ok(tx) => tx,
        Err(e) => {
            // Stored by this code, so not expected; the transaction cannot be posted again, and since it was stored
            // before any post, the gateway may know it: keep it for an operator instead of paying again.
            tracing::error!(tx = %bundle.tx_id, error = %e, "a stored bundle transaction is unreadable");
            retry_bundle(
                &format!("stored transaction unreadable: {e}"),
                Some(Duration::from_secs(3600)),
            )
            .await;
            return;
        }
    };
    let stored = match inner.db.bundle_items(&bundle.tx_id).await {
        Ok(items) => items,
        Err(e) => {
            retry_bundle(&e.to_string(), None).await;
            return;
        }
    };
    let mut items = Vec::with_capacity(stored.len());
    for item in stored {
        match item.signed_item.map(DataItem::parse) {
            Some(Ok(parsed)) if parsed.id_b64url() == item.item_id => items.push(parsed),
            _ => {
                tracing::error!(tx = %bundle.tx_id, job = item.job_id, "a stored bundle's item is missing or changed");
                retry_bundle(
                    "a stored item is missing or changed",
                    Some(Duration::from_secs(3600)),
                )
                .await;
                return;
            }
        }
    }
    let data = ans104::bundle(&items);
    let Some(permit) = inner.gateway_breaker.try_acquire(Instant::now()) else {
        retry_bundle(
            "gateway circuit breaker open",
            Some(Duration::from_millis(inner.config.breaker_open_ms)),
        )
        .await;
        return;
    };
    let known = match inner.gateway.tx_status(&bundle.tx_id).await {
        Ok(status) => status != TxStatus::NotFound,
        Err(e) => {
            gateway_failed(inner, e.is_transient());
            retry_bundle(&format!("status: {e}"), None).await;
            return;
        }
    };
    tracing::info!(tx = %bundle.tx_id, known, items = items.len(), "posting a stored bundle transaction again");
    let tree = DataTree::new(&data);
    let result = post_stored(inner, &bundle.tx_id, || async {
        if known {
            inner.gateway.upload_chunks(&tx, &data, tree.as_ref()).await
        } else {
            inner.gateway.upload(&tx, &data, tree.as_ref()).await
        }
    })
    .await;
    finish_post(inner, &tx, &bundle.wallet, data.len(), result).await;
    let _ = permit;
}

fn gateway_failed(inner: &Inner, transient: bool) {
    if transient {
        inner.gateway_breaker.failure(Instant::now());
        failure("transient");
    } else {
        inner.gateway_breaker.neutral();
        failure("gateway_refused");
    }
}

/// Runs `post` (the upload of stored bundle `tx_id`) while keeping the bundle's lease: posting a large bundle can
/// outlast a lease, and the bundle must not be posted by two workers at once.
async fn post_stored<F, Fut>(
    inner: &Arc<Inner>,
    tx_id: &str,
    post: F,
) -> Result<(), super::gateway_client::GatewayError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), super::gateway_client::GatewayError>>,
{
    let post = post();
    tokio::pin!(post);
    let every = Duration::from_millis((inner.config.lease_ms / 3).max(100));
    let mut keep = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            r = &mut post => return r,
            _ = keep.tick() => {
                if let Err(e) = inner.db.extend_bundle_lease(tx_id, &inner.worker, inner.config.lease_ms as i64).await {
                    tracing::warn!(tx = %tx_id, error = %e, "extending a bundle's lease failed");
                }
            }
        }
    }
}

/// Records the outcome of posting a stored bundle: accepted, its jobs are uploaded; refused and unknown to the
/// gateway, it is abandoned (it can never be mined) and its items wait for a new bundle; otherwise it is posted
/// again later, the same transaction.
async fn finish_post(
    inner: &Arc<Inner>,
    tx: &Transaction,
    payer: &str,
    bytes: usize,
    result: Result<(), super::gateway_client::GatewayError>,
) {
    let tx_id = tx.id_b64url();
    match result {
        Ok(()) => {
            inner.gateway_breaker.success();
            // Crash tests abort here: the gateway has the transaction, the database does not know it yet.
            crate::resilience::failpoint::abort_if_set("abort-after-bundle-post");
            tracing::info!(tx = %tx_id, bytes, payer = %payer, "bundle posted");
            let receipt = serde_json::json!({ "bundle": tx_id, "payer": payer }).to_string();
            match inner
                .db
                .mark_bundle_posted(&tx_id, &inner.worker, &receipt)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(tx = %tx_id, "bundle posted, but its lease was lost meanwhile")
                }
                Err(e) => {
                    tracing::warn!(tx = %tx_id, error = %e, "recording a posted bundle failed; it is posted again later")
                }
            }
        }
        Err(e) => {
            let transient = e.is_transient();
            gateway_failed(inner, transient);
            let reason = format!("posting bundle {tx_id}: {e}");
            if !transient && let Ok(TxStatus::NotFound) = inner.gateway.tx_status(&tx_id).await {
                // Refused, and the gateway does not have it: it can never be mined, so it costs nothing.
                tracing::warn!(tx = %tx_id, error = %e, "bundle refused; its items go into a new bundle");
                let _ = inner
                    .db
                    .abandon_bundle(&tx_id, &inner.worker, &reason)
                    .await;
            } else {
                let delay = inner.backoff.delay(0);
                let _ = inner
                    .db
                    .retry_bundle_later(&tx_id, &inner.worker, &reason, delay.as_millis() as i64)
                    .await;
            }
        }
    }
    metrics::gauge!("zipiq_breaker_state", "endpoint" => "gateway")
        .set(inner.gateway_breaker.state(Instant::now()).as_metric());
}

/// Signs a bundle transaction for `data` with a wallet that can pay for it. Error: (transient, reason).
async fn sign_bundle(
    inner: &Arc<Inner>,
    data: &Bytes,
) -> Result<(Transaction, String), (bool, String)> {
    let price = inner
        .gateway
        .price(data.len() as u64)
        .await
        .map_err(|e| (e.is_transient(), format!("price: {e}")))?;
    let mut tried = Vec::new();
    loop {
        let Some(wallet) = inner.wallets.pick(&tried) else {
            return Err((false, "no wallet can pay for the bundle".into()));
        };
        tried.push(wallet.address.clone());
        let balance = match inner.gateway.balance(&wallet.address).await {
            Ok(b) => b,
            Err(e) => return Err((e.is_transient(), format!("balance: {e}"))),
        };
        if balance < price {
            inner
                .wallets
                .mark_short(&wallet.address, Duration::from_secs(600));
            failure("insufficient_balance");
            continue;
        }
        let anchor = inner
            .gateway
            .tx_anchor()
            .await
            .map_err(|e| (e.is_transient(), format!("anchor: {e}")))?;
        let anchor = super::b64url::decode(&anchor).map_err(|e| (false, format!("anchor: {e}")))?;
        let tree = DataTree::new(data);
        let wallet_for_sign = wallet.clone();
        let tx = tokio::task::spawn_blocking(move || {
            TransactionBuilder::new()
                .data(tree.as_ref())
                .last_tx(anchor)
                .reward(price)
                .tags(ans104::bundle_tags())
                .tag("App-Name", "zipIQ")
                .tag("App-Version", env!("CARGO_PKG_VERSION"))
                .sign(wallet_for_sign.jwk())
        })
        .await
        .map_err(|e| (false, e.to_string()))?
        .map_err(|e| (false, format!("signing the transaction: {e}")))?;
        return Ok((tx, wallet.address.clone()));
    }
}

/// Follows an uploaded job: in gateway mode the bundle transaction's confirmations (posting again when it was
/// dropped); in bundler mode, the item becoming available at the gateway.
async fn confirm(inner: &Arc<Inner>, job: Job) {
    let poll = Some(Duration::from_secs(10).min(inner.backoff.max));
    match (inner.config.mode, &job.bundle_tx) {
        (ArchiveMode::Gateway, Some(tx)) => match inner.gateway.tx_status(tx).await {
            Ok(TxStatus::Confirmed {
                number_of_confirmations,
                ..
            }) if number_of_confirmations >= inner.config.confirmations => {
                let _ = inner.db.mark_confirmed(job.id, &inner.worker).await;
            }
            Ok(TxStatus::Confirmed { .. }) | Ok(TxStatus::Pending) => {
                retry(inner, &job, "waiting for confirmations", poll, false).await;
            }
            Ok(TxStatus::NotFound) => {
                let age = now_ms() - job.uploaded_at.unwrap_or(0);
                if age >= inner.config.repost_after_ms as i64 {
                    tracing::warn!(job = job.id, tx = %tx, "bundle transaction dropped: the item goes into a new bundle");
                    failure("dropped");
                    let _ = inner.db.mark_bundle_dropped(tx).await;
                    let _ = inner
                        .db
                        .mark_repost(job.id, &inner.worker, &format!("transaction {tx} dropped"))
                        .await;
                } else {
                    retry(inner, &job, "transaction not seen yet", poll, false).await;
                }
            }
            Err(e) => retry(inner, &job, &e.to_string(), None, false).await,
        },
        _ => {
            // Bundler mode: the bundler's signed receipt says it took the item; confirmation is the item being
            // served by the gateway (once bundled and posted by the bundler).
            let Some(id) = job.item_id.clone() else {
                let _ = inner.db.mark_confirmed(job.id, &inner.worker).await;
                return;
            };
            match inner.gateway.exists(&id).await {
                Ok(true) => {
                    let _ = inner.db.mark_confirmed(job.id, &inner.worker).await;
                }
                Ok(false) => {
                    retry(
                        inner,
                        &job,
                        "item not served by the gateway yet",
                        Some(Duration::from_secs(60)),
                        false,
                    )
                    .await
                }
                Err(e) => {
                    retry(
                        inner,
                        &job,
                        &e.to_string(),
                        Some(Duration::from_secs(60)),
                        false,
                    )
                    .await
                }
            }
        }
    }
}

/// Balances, runway, operator decisions on wallets and queue gauges, refreshed in the background.
async fn run_pollers(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut last_balance: Option<Instant> = None;
    let balance_every = Duration::from_millis(inner.config.balance_poll_ms.max(1000));
    loop {
        if let Ok(disabled) = inner.db.disabled_wallets().await {
            inner.wallets.apply_disabled(&disabled);
        }
        if let Ok(status) = inner.db.queue_status().await {
            for (state, n) in &status.jobs_by_state {
                metrics::gauge!("zipiq_archive_jobs", "state" => state.clone()).set(*n as f64);
            }
            // 0 once nothing waits, or the gauge would keep the age of a job uploaded long ago.
            let age = status.oldest_pending_age_s.map_or(0.0, |a| a as f64);
            metrics::gauge!("zipiq_archive_oldest_pending_seconds").set(age);
        }
        let due = last_balance.is_none_or(|t| t.elapsed() >= balance_every);
        if due && inner.config.mode != ArchiveMode::Off && !inner.wallets.is_empty() {
            last_balance = Some(Instant::now());
            poll_balances(&inner).await;
        }
        if sleep_or_stop(&mut stop, Duration::from_secs(5)).await {
            return;
        }
    }
}

async fn poll_balances(inner: &Inner) {
    let item_price = inner.gateway.price(1 << 20).await.unwrap_or(0);
    let hour_ago = now_ms() - 3_600_000;
    let spend = inner
        .db
        .chunk_bytes_since(hour_ago)
        .await
        .ok()
        .map(|bytes| (bytes.max(0) as u128) * item_price / (1u128 << 20));
    for address in inner.wallets.addresses() {
        let balance = match (&inner.bundler, inner.config.mode) {
            (Some(b), ArchiveMode::Bundler) => b.balance(&address).await.map_err(|e| e.to_string()),
            _ => inner
                .gateway
                .balance(&address)
                .await
                .map_err(|e| e.to_string()),
        };
        match balance {
            Ok(balance) => {
                inner
                    .wallets
                    .set_balance(&address, balance, spend, item_price);
                if let Some(runway) = inner.wallets.runway(&address)
                    && runway < Duration::from_secs(inner.config.runway_warning_hours * 3600)
                {
                    tracing::warn!(wallet = %address, balance = %balance, runway_hours = runway.as_secs_f64() / 3600.0,
                        "wallet runway below archive.runway_warning_hours: fund it");
                }
            }
            Err(e) => tracing::debug!(wallet = %address, error = %e, "balance not read"),
        }
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
