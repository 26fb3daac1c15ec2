//! Following an uploaded job until it is confirmed: in gateway mode its bundle transaction's confirmations (a
//! dropped transaction sends the item into a new bundle), in bundler mode the item being served by the gateway.

use std::sync::Arc;
use std::time::Duration;

use super::shared::{Inner, failure, retry};
use crate::archive::gateway_client::TxStatus;
use crate::config::ArchiveMode;
use crate::db::jobs::Job;
use crate::db::now_ms;

/// Follows an uploaded job: in gateway mode the bundle transaction's confirmations (a dropped transaction sends
/// the item into a new bundle); in bundler mode, the item becoming available at the gateway.
pub(super) async fn confirm(inner: &Arc<Inner>, job: Job) {
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
