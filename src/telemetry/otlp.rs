//! The OTLP/HTTP span exporter: the SDK's batch processor (a thread of its own, a bounded queue that drops spans
//! when full) POSTs protobuf batches to the collector with the server's reqwest client, on the server's tokio
//! runtime. A collector that is down or refuses costs spans only: each failed POST is counted in
//! `zipiq_otlp_export_failures_total`, and a warning is logged at most once a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use crate::config::TelemetryConfig;

/// How long one POST of a batch (with the exporter's retries) may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer of the collector read (an OTLP answer is a few bytes).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// At most one warning about failed exports per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The tracer provider exporting to `traces_url` (`config.traces_url()`), or why there is none. Needs a tokio
/// runtime: the POSTs run there.
pub(super) fn provider(
    config: &TelemetryConfig,
    traces_url: String,
    node: &str,
) -> Result<SdkTracerProvider, String> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "no async runtime to send spans from".to_owned())?;
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make the HTTP client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OnRuntime { http, runtime })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.trim().to_owned())
        .with_attribute(KeyValue::new("service.instance.id", node.to_owned()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: the batch thread awaits a task of the server's runtime that makes the request.
#[derive(Debug)]
struct OnRuntime {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let task = self.runtime.spawn(async move {
            let response = http.execute(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "the collector's answer is over {MAX_RESPONSE_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, headers, Bytes::from(body)))
        });
        let result = match task.await {
            Ok(Ok((status, headers, body))) => {
                if !status.is_success() {
                    export_failed(&format!("the collector answered {status}"));
                }
                let mut response = Response::new(body);
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                Ok(response)
            }
            Ok(Err(e)) => Err(e),
            // The runtime is shutting down.
            Err(e) => Err(e.to_string()),
        };
        result.map_err(|e| {
            export_failed(&e);
            e.into()
        })
    }
}

/// Counts a failed POST and warns about it unless a warning was given less than a minute ago.
fn export_failed(reason: &str) {
    static LAST_WARNING: Mutex<Option<Instant>> = Mutex::new(None);
    metrics::counter!("zipiq_otlp_export_failures_total").increment(1);
    let warn = warning_due(
        &mut LAST_WARNING.lock().unwrap_or_else(|p| p.into_inner()),
        Instant::now(),
    );
    if warn {
        tracing::warn!(
            reason = %reason,
            "spans could not be sent to the OTLP collector (telemetry.otlp_endpoint); they are dropped, serving goes on (next warning in a minute at the earliest)"
        );
    }
}

/// Whether a warning is due at `now`, the last one given at `last`; notes `now` as the last when it is.
fn warning_due(last: &mut Option<Instant>, now: Instant) -> bool {
    let due = last.is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY);
    if due {
        *last = Some(now);
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_exports_warn_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut last = None;
        assert!(warning_due(&mut last, t0), "the first failure warns");
        let warned = (1..=600)
            .filter(|s| warning_due(&mut last, t0 + Duration::from_millis(100 * s)))
            .count();
        assert_eq!(
            warned, 1,
            "one more warning in a minute of failures every 100 ms"
        );
        assert_eq!(last, Some(t0 + WARN_EVERY));
    }
}
