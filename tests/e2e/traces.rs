//! Traces: a WHEP request's W3C `traceparent` is continued (its span is a child of the caller's span, in the
//! caller's trace), a malformed one is ignored, an edge's pull carries the trace on to the origin, and the spans
//! reach an OTLP/HTTP collector, here a small one inside the test that decodes what it gets with the OTLP protobuf
//! definitions. A collector that is down disturbs nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use zipiq::Server;
use zipiq_client::{WatchOptions, WhepClient, WhipClient};

use crate::common::{pump_video, start_node, start_server, video_only};
use crate::databases;

/// A span as the collector got it.
#[derive(Debug, Clone)]
struct GotSpan {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    attributes: Vec<(String, String)>,
    service: String,
}

impl GotSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP collector on loopback: `POST /v1/traces` with an `application/x-protobuf`
/// `ExportTraceServiceRequest`, answered with an empty `ExportTraceServiceResponse`.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<GotSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn traces(
    State(spans): State<Arc<Mutex<Vec<GotSpan>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-protobuf"),
        "OTLP/HTTP with protobuf"
    );
    let request =
        ExportTraceServiceRequest::decode(body).expect("an OTLP ExportTraceServiceRequest");
    let mut got = spans.lock().expect("spans");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                got.push(GotSpan {
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    name: span.name,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
    (
        StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

impl Collector {
    async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { addr, spans, task }
    }

    fn config(&self) -> String {
        format!("[telemetry]\notlp_endpoint = \"http://{}\"\n", self.addr)
    }

    /// Flushes the exporter until a span matching `want` arrived (10 s at most).
    async fn wait_for(&self, what: &str, want: impl Fn(&GotSpan) -> bool) -> GotSpan {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::task::spawn_blocking(zipiq::telemetry::flush_traces)
                .await
                .expect("flush");
            if let Some(span) = self.spans.lock().expect("spans").iter().find(|s| want(s)) {
                return span.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {what} at the collector; it got: {:#?}",
                self.spans.lock().expect("spans")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A random sampled `traceparent`: its value, trace id and parent span id.
fn traceparent() -> (String, Vec<u8>, Vec<u8>) {
    let trace: [u8; 16] = rand::random();
    let parent: [u8; 8] = rand::random();
    (
        format!("00-{}-{}-01", hex::encode(trace), hex::encode(parent)),
        trace.to_vec(),
        parent.to_vec(),
    )
}

fn watch_with(headers: &[(&str, &str)]) -> WatchOptions {
    WatchOptions {
        audio: false,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..WatchOptions::default()
    }
}

fn base(server: &Server) -> String {
    format!("http://{}", server.http_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_traceparent_is_continued_and_its_span_reaches_the_collector() {
    let collector = Collector::start().await;
    let server = start_server(&collector.config()).await;
    let publisher = Arc::new(
        WhipClient::connect(&server.whip("live"), Some(&server.key), video_only())
            .await
            .expect("publisher"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());

    let (value, trace_id, parent_id) = traceparent();
    let viewer = WhepClient::connect(
        &server.whep("live"),
        None,
        watch_with(&[("traceparent", &value), ("x-request-id", "traced-viewer")]),
    )
    .await
    .expect("a viewer with a traceparent");
    // A malformed traceparent (an all-zero parent span id, here in our trace) is no traceparent: the viewer is
    // served all the same, and its request starts a trace of its own.
    let malformed = format!("00-{}-0000000000000000-01", hex::encode(&trace_id));
    let other = WhepClient::connect(
        &server.whep("live"),
        None,
        watch_with(&[
            ("traceparent", &malformed),
            ("x-request-id", "malformed-viewer"),
        ]),
    )
    .await
    .expect("a viewer with a malformed traceparent is served");

    let span = collector
        .wait_for("of the traced WHEP request", |s| {
            s.attribute("request_id") == Some("traced-viewer")
        })
        .await;
    assert_eq!(span.name, "POST /whep/{stream}");
    assert_eq!(span.trace_id, trace_id, "the caller's trace is continued");
    assert_eq!(
        span.parent_span_id, parent_id,
        "a child of the caller's span"
    );
    assert_eq!(span.attribute("http.response.status_code"), Some("201"));
    assert_eq!(span.service, "zipiq");
    let span = collector
        .wait_for("of the malformed-traceparent request", |s| {
            s.attribute("request_id") == Some("malformed-viewer")
        })
        .await;
    assert_ne!(span.trace_id, trace_id);
    assert!(span.parent_span_id.is_empty(), "a root span: {span:?}");
    assert_eq!(span.attribute("http.response.status_code"), Some("201"));

    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    let _ = viewer.close().await;
    let _ = other.close().await;
    drop(publisher);
    server.stop().await;
    collector.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_spans_not_viewers() {
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let server = start_server(&format!(
        "[telemetry]\notlp_endpoint = \"http://{closed}\"\n"
    ))
    .await;
    let publisher = Arc::new(
        WhipClient::connect(&server.whip("live"), Some(&server.key), video_only())
            .await
            .expect("publisher"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let (value, _, _) = traceparent();
        viewers.push(
            WhepClient::connect(
                &server.whep("live"),
                None,
                watch_with(&[("traceparent", &value)]),
            )
            .await
            .expect("served while the collector is down"),
        );
        let flushed = tokio::task::spawn_blocking(zipiq::telemetry::flush_traces)
            .await
            .expect("flush");
        assert!(!flushed, "nothing can reach a collector that is down");
    }
    // The viewers get media all the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for viewer in &mut viewers {
        assert!(viewer.packets.try_recv().is_ok(), "the viewer gets packets");
    }
    let http = reqwest::Client::new();
    let (_, scrape) = crate::common::scrape(
        &http,
        &format!("http://{}/metrics", server.server.admin_addr),
    )
    .await;
    let failures: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "zipiq_otlp_export_failures_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(failures >= 3.0, "each failed POST is counted: {failures}");

    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    for viewer in viewers {
        let _ = viewer.close().await;
    }
    drop(publisher);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edges_pull_carries_the_viewers_trace_on_to_the_origin() {
    let collector = Collector::start().await;
    let pg = databases::postgres().await;
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("cluster-token");
    std::fs::write(&token_file, "a-cluster-token-of-32-characters\n").expect("token");
    let node = |name: &str| {
        format!(
            "[database]\nurl = \"{}\"\nacquire_timeout_ms = 1000\n[server]\nnode_name = \"{name}\"\n\
             [cluster]\nenabled = true\nheartbeat_interval_ms = 200\nnode_dead_after_ms = 1000\nlease_ms = 1500\n\
             placement_cpu_margin = 1.0\ntoken_file = \"{}\"\n{}",
            pg.url,
            token_file.display(),
            collector.config()
        )
    };
    let (origin, first, _dir_a) = start_node(&node("node-a")).await;
    let (edge, _, _dir_b) = start_node(&node("node-b")).await;
    let key = first.expect("first stream").key;
    let publisher = Arc::new(
        WhipClient::connect(
            &format!("{}/whip/live", base(&origin)),
            Some(&key),
            video_only(),
        )
        .await
        .expect("publish on the origin"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump_video(publisher.clone(), stop.clone());
    assert!(crate::common::eventually(Duration::from_secs(5), || origin.sfu.is_live("live")).await);

    let (value, trace_id, parent_id) = traceparent();
    let viewer = WhepClient::connect(
        &format!("{}/whep/live", base(&edge)),
        None,
        watch_with(&[("traceparent", &value), ("x-request-id", "edge-viewer")]),
    )
    .await
    .expect("a viewer on the edge");
    assert!(
        viewer.negotiated.resource_url.starts_with(&base(&edge)),
        "served by the edge's pull, not redirected: {}",
        viewer.negotiated.resource_url
    );

    let at_edge = collector
        .wait_for("of the viewer's WHEP request at the edge", |s| {
            s.attribute("request_id") == Some("edge-viewer")
        })
        .await;
    assert_eq!(at_edge.trace_id, trace_id);
    assert_eq!(at_edge.parent_span_id, parent_id);
    // The pull's WHEP request at the origin: same trace, a child of the edge's request span.
    let at_origin = collector
        .wait_for("of the pull's WHEP request at the origin", |s| {
            s.name == "POST /whep/{stream}" && s.parent_span_id == at_edge.span_id
        })
        .await;
    assert_eq!(at_origin.trace_id, trace_id, "one trace across the nodes");
    assert_eq!(
        at_origin.attribute("http.response.status_code"),
        Some("201")
    );

    stop.store(true, Ordering::Relaxed);
    let _ = pumping.await;
    let _ = viewer.close().await;
    drop(publisher);
    for node in [edge, origin] {
        node.shutdown().await;
    }
    pg.drop_db().await;
    collector.task.abort();
}
