//! Logs and metrics: a tracing subscriber (human-readable or JSON, level from config or `RUST_LOG`) and the
//! process-wide Prometheus recorder whose text the admin listener serves at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the log subscriber. A second call (tests start several servers in one process) does nothing.
pub fn init_logs(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // webrtc-rs logs through the `log` crate at debug level for every packet problem; keep it quiet by default.
    let filter = filter
        .add_directive("webrtc=warn".parse().unwrap_or_default())
        .add_directive("webrtc_ice=warn".parse().unwrap_or_default())
        .add_directive("webrtc_srtp=warn".parse().unwrap_or_default())
        .add_directive("webrtc_dtls=warn".parse().unwrap_or_default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The Prometheus handle, installing the global recorder on first use. None if another recorder was installed.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ])
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}
