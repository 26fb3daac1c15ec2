//! Logs and metrics: a tracing subscriber (human-readable or JSON, level from config or `RUST_LOG`) and the
//! process-wide Prometheus recorder whose text the admin listener serves at `/metrics`. Log events go through the
//! flood guard (`log_flood`) first.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// The filter of the installed subscriber, replaceable at run time (SIGHUP).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Builds the filter from `RUST_LOG` when set (verbatim), else from `level` with the WebRTC stack kept to
/// warnings (it logs every packet problem, and every unknown DTLS extension a browser offers, through `log`).
fn filter(level: &str) -> EnvFilter {
    if let Ok(from_env) = EnvFilter::try_from_default_env() {
        return from_env;
    }
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in [
        "webrtc=warn",
        "webrtc_ice=warn",
        "webrtc_srtp=warn",
        "webrtc_sctp=warn",
        "interceptor=warn",
        "dtls=error",
    ] {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the log subscriber. A second call (tests start several servers in one process) does nothing.
pub fn init_logs(config: &LogConfig) {
    let (filter_layer, handle) = reload::Layer::new(filter(&config.level));
    let guard = crate::log_flood::FloodGuard::new(config.rate_limit);
    let registry = tracing_subscriber::registry()
        .with(filter_layer)
        .with(crate::log_flood::FloodLayer::new(guard.clone()));
    let installed = match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
        guard.spawn_summaries();
    }
}

/// Replaces the log level (from a reloaded configuration). Returns false when no subscriber of ours is installed.
pub fn set_log_level(level: &str) -> bool {
    match FILTER.get() {
        Some(handle) => handle.reload(filter(level)).is_ok(),
        None => false,
    }
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
