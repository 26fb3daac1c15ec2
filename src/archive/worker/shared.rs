//! What every step of the archiver shares: its state (database, IPFS, clients, breakers, wallet pool, the
//! worker's name in the queue's leases, the backoff) and the two ways a step records a setback: retrying the job
//! later and counting the failure.

use std::sync::Arc;
use std::time::Duration;

use crate::archive::bundler_client::BundlerClient;
use crate::archive::gateway_client::GatewayClient;
use crate::archive::wallets::WalletPool;
use crate::config::ArchiveConfig;
use crate::db::Db;
use crate::db::jobs::Job;
use crate::resilience::backoff::Backoff;
use crate::resilience::breaker::Breaker;
use crate::store::IpfsNode;

/// The archiver's state, shared by its workers and pollers.
pub(super) struct Inner {
    pub(super) db: Db,
    pub(super) ipfs: Arc<IpfsNode>,
    pub(super) config: ArchiveConfig,
    pub(super) wallets: Arc<WalletPool>,
    pub(super) bundler: Option<BundlerClient>,
    pub(super) gateway: GatewayClient,
    pub(super) bundler_breaker: Breaker,
    pub(super) gateway_breaker: Breaker,
    pub(super) worker: String,
    /// The node's name: every worker of this node, in this run or an earlier one, is named after it.
    pub(super) node: String,
    pub(super) backoff: Backoff,
}

/// Counts a failure of `class` in `zipiq_archive_failures_total`.
pub(super) fn failure(class: &'static str) {
    metrics::counter!("zipiq_archive_failures_total", "class" => class).increment(1);
}

/// Releases the job for a later attempt: after `delay`, or the backoff of its attempts; `count` adds one attempt.
pub(super) async fn retry(
    inner: &Inner,
    job: &Job,
    error: &str,
    delay: Option<Duration>,
    count: bool,
) {
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
