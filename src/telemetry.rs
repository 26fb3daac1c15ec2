//! Logs, traces and metrics: a tracing subscriber (human-readable or JSON, level from config or `RUST_LOG`), the
//! optional OTLP span exporter (`[telemetry]`, see `otlp`), W3C `traceparent` in and out (`traceparent`), and the
//! process-wide Prometheus recorder whose text the admin listener serves at `/metrics`. Log events go through the
//! flood guard (`log_flood`) first.
//!
//! Log output and exported spans are filtered apart: `log.level` (reloadable) chooses the log lines; the exporter
//! takes zipIQ's spans of level info and above (HTTP requests, WebRTC sessions) whatever the log level.

mod otlp;
pub mod traceparent;

use std::sync::OnceLock;

use axum::http::HeaderMap;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

pub use traceparent::TraceParent;

use crate::config::{Config, LogConfig, LogFormat};

/// The filter of the installed subscriber's log output, replaceable at run time (SIGHUP).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The span exporter, when `telemetry.otlp_endpoint` is set and the subscriber is ours.
static TRACES: OnceLock<SdkTracerProvider> = OnceLock::new();

tokio::task_local! {
    /// The `traceparent` of the request being served, when it had a valid one (`remember_traceparent`).
    static INCOMING: TraceParent;
}

/// Name of the W3C trace context header.
pub(crate) const TRACEPARENT: &str = "traceparent";

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

/// Installs the log subscriber, without span export. A second call (tests start several servers in one process)
/// does nothing.
pub fn init_logs(config: &LogConfig) {
    install(config, None);
}

/// Installs the log subscriber and, when `telemetry.otlp_endpoint` is set, the span exporter (its POSTs run on
/// the current tokio runtime: call this inside one). A second call does nothing.
pub fn init(config: &Config) {
    if FILTER.get().is_some() {
        return;
    }
    let mut trouble = None;
    let traces = config.telemetry.traces_url().and_then(|url| {
        match otlp::provider(&config.telemetry, url.clone(), &config.server.node()) {
            Ok(provider) => Some((provider, url)),
            Err(e) => {
                trouble = Some(e);
                None
            }
        }
    });
    let exporting = traces.as_ref().map(|(_, url)| url.clone());
    let installed = install(&config.log, traces.map(|(provider, _)| provider));
    if let Some(e) = trouble {
        tracing::warn!(error = %e, "no span export to telemetry.otlp_endpoint");
    } else if let Some(url) = exporting.filter(|_| installed) {
        tracing::info!(url = %url, sample_ratio = config.telemetry.sample_ratio, "exporting spans over OTLP/HTTP");
    }
}

/// zipIQ's spans at info and above: the ones exported. Events are not (log lines are the logs' business).
fn exported_spans<S>() -> impl tracing_subscriber::layer::Filter<S> {
    tracing_subscriber::filter::FilterFn::new(|meta| {
        meta.is_span()
            && *meta.level() <= tracing::Level::INFO
            && (meta.target() == "zipiq" || meta.target().starts_with("zipiq::"))
    })
    .with_max_level_hint(LevelFilter::INFO)
}

/// Installs the subscriber; true when it is ours (no other was installed before).
fn install(config: &LogConfig, traces: Option<SdkTracerProvider>) -> bool {
    let (filter_layer, handle) = reload::Layer::new(filter(&config.level));
    let guard = crate::log_flood::FloodGuard::new(config.rate_limit);
    let output: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(true).boxed(),
    };
    let spans = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("zipiq"))
            .with_threads(false)
            .with_filter(exported_spans())
    });
    let installed = tracing_subscriber::registry()
        .with(output.with_filter(filter_layer))
        .with(crate::log_flood::FloodLayer::new(guard.clone()))
        .with(spans)
        .try_init()
        .is_ok();
    if installed {
        let _ = FILTER.set(handle);
        if let Some(provider) = traces {
            let _ = TRACES.set(provider);
        }
        guard.spawn_summaries();
    } else if let Some(provider) = traces {
        let _ = provider.shutdown();
    }
    installed
}

/// Replaces the log level (from a reloaded configuration). Returns false when no subscriber of ours is installed.
pub fn set_log_level(level: &str) -> bool {
    match FILTER.get() {
        Some(handle) => handle.reload(filter(level)).is_ok(),
        None => false,
    }
}

/// Sends the spans still queued for export and waits for the collector's answer (blocks: from async code, call
/// it in `spawn_blocking`). False when nothing is exported or the export failed.
pub fn flush_traces() -> bool {
    TRACES.get().is_some_and(|p| p.force_flush().is_ok())
}

/// Flushes and stops the span exporter, at exit (blocks, like `flush_traces`).
pub fn shutdown_traces() {
    if let Some(provider) = TRACES.get() {
        let _ = provider.shutdown();
    }
}

/// The request's `traceparent`: its one valid value, else None (a missing, repeated or malformed header).
pub(crate) fn incoming_traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (Some(one), None) => TraceParent::parse(one.as_bytes()),
        _ => None,
    }
}

/// Makes `span` (a request's, not yet entered) a child of the caller's span in the request's `traceparent`.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if TRACES.get().is_none() {
        return;
    }
    let Some(tp) = incoming_traceparent(headers) else {
        return;
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(tp.trace_id),
        SpanId::from_bytes(tp.parent_id),
        TraceFlags::new(tp.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Records a request's answer on its span (for traces only: log lines do not change): the status code, and an
/// error status for a 5xx.
pub(crate) fn record_status(span: &tracing::Span, status: axum::http::StatusCode) {
    if TRACES.get().is_none() {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_status(opentelemetry::trace::Status::error(status.to_string()));
    }
}

/// Middleware: keeps the request's valid `traceparent` for the requests its handler makes (`outgoing_headers`),
/// so that a trace is carried on even when this node exports no spans of its own.
pub(crate) async fn remember_traceparent(
    request: axum::http::Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match incoming_traceparent(request.headers()) {
        Some(tp) => INCOMING.scope(tp, next.run(request)).await,
        None => next.run(request).await,
    }
}

/// The `traceparent` a request made now carries: the current span's when spans are exported, else the one of
/// the request being served (passed on as it came), else none.
pub(crate) fn outgoing_traceparent() -> Option<TraceParent> {
    if TRACES.get().is_some() {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            return Some(TraceParent {
                trace_id: sc.trace_id().to_bytes(),
                parent_id: sc.span_id().to_bytes(),
                flags: sc.trace_flags().to_u8(),
            });
        }
    }
    INCOMING.try_with(|tp| *tp).ok()
}

/// Headers carrying the current trace on to a request this node makes (empty when there is none to carry).
pub(crate) fn outgoing_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = outgoing_traceparent()
        .and_then(|tp| reqwest::header::HeaderValue::from_str(&tp.to_string()).ok())
    {
        headers.insert(TRACEPARENT, value);
    }
    headers
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
