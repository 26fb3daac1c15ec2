//! The gateway path: signed items bundled into one Arweave transaction paid by a wallet of the pool, the signed
//! transaction stored before it is posted, posted (again after a crash or a failure, the same transaction) while
//! its lease is kept, and the outcome recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::shared::{Inner, failure, retry};
use crate::archive::ans104::{self, DataItem};
use crate::archive::arweave_tx::{Transaction, TransactionBuilder, TransactionJson};
use crate::archive::gateway_client::TxStatus;
use crate::archive::merkle::DataTree;
use crate::db::bundles::{NewBundle, StoredBundle};
use crate::db::jobs::Job;

/// Gateway mode: bundles signed items into one transaction, stores the signed transaction with its items, then
/// posts it (data through /chunk). Stored first so that a crash after the gateway accepted it posts the same
/// transaction again at the next start, instead of a new one paying a second reward for the same items.
pub(super) async fn bundle_and_post(inner: &Arc<Inner>, jobs: Vec<Job>) {
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
pub(super) async fn resume_bundle(inner: &Arc<Inner>, bundle: StoredBundle) {
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
) -> Result<(), crate::archive::gateway_client::GatewayError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::archive::gateway_client::GatewayError>>,
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
    result: Result<(), crate::archive::gateway_client::GatewayError>,
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
        let anchor =
            crate::archive::b64url::decode(&anchor).map_err(|e| (false, format!("anchor: {e}")))?;
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
