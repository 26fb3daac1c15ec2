//! The bundler path: a signed item sent to a Bundlr-protocol bundler through its circuit breaker, and each answer
//! (accepted, already stored, 402, 429, transient, refused) mapped to the job's next state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::shared::{Inner, failure, retry};
use crate::archive::bundler_client::UploadOutcome;
use crate::db::jobs::Job;
use crate::resilience::breaker::{BreakerState, Permit};

/// Sends the stored item to the bundler and maps the answer.
pub(super) async fn upload_to_bundler(inner: &Arc<Inner>, job: Job) {
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
