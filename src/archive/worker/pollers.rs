//! The background pollers: operators' wallet decisions from the database, the queue gauges, and every wallet's
//! balance and runway (with a warning when the runway falls under `archive.runway_warning_hours`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::shared::Inner;
use crate::config::ArchiveMode;
use crate::db::now_ms;

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

/// Balances, runway, operator decisions on wallets and queue gauges, refreshed in the background.
pub(super) async fn run_pollers(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
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
