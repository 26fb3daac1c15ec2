//! The HTTP side: WHIP and WHEP endpoints, their session resources, health, the REST API under /api/v1 (with its
//! OpenAPI document), broadcasts' HLS playlists, the IPFS gateway (`/ipfs/`) and the web pages, with CORS, body
//! limits, browser safety headers and a request id on every request. The admin listener (metrics, archive
//! operations) is a second, private server: `admin_listener`.

pub(crate) mod admin_listener;
pub(crate) mod api;
pub(crate) mod body;
pub(crate) mod broadcasts;
pub(crate) mod cluster;
pub(crate) mod error;
pub(crate) mod gateway;
pub(crate) mod health;
pub(crate) mod negotiation;
pub(crate) mod security;
pub(crate) mod serve;
pub(crate) mod web;
pub(crate) mod whep;
pub(crate) mod whip;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::config::Config;
use crate::db::Db;
use crate::sfu::Sfu;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub sfu: Sfu,
    pub auth: Arc<Auth>,
    pub ipfs: Arc<crate::store::IpfsNode>,
    pub archiver: crate::archive::worker::Archiver,
    /// This node's part in the cluster, when `cluster.enabled`.
    pub cluster: Option<crate::cluster::Cluster>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Random request ids (64 bits, hex).
#[derive(Clone, Copy, Default)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = format!("{:016x}", rand::random::<u64>());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// `OPTIONS` on a WHIP/WHEP endpoint (outside CORS preflight): 204 with `Accept-Post`.
async fn endpoint_options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(HeaderName::from_static("accept-post"), negotiation::SDP)],
    )
        .into_response()
}

/// A metric label for a request method: the standard methods by name, anything a client made up as `other`, so
/// labels from client input stay a bounded set.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Counts every request by route template and status, with a latency histogram (`zipiq_http_*`).
async fn http_metrics(
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("zipiq_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("zipiq_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Largest plain-text refusal body (from axum's extractors and tower-http's layers) turned into problem details.
const PLAIN_REFUSAL_MAX: usize = 4096;

/// Makes every refusal `application/problem+json`: the few answers produced outside our handlers (axum's body
/// limit 413, its JSON rejections, tower-http's timeouts) come as `text/plain` and are rewritten here, keeping
/// their status, their other headers and their text as the detail.
async fn problem_answers(
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let empty_refusal = response.headers().get(header::CONTENT_TYPE).is_none()
        && matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        );
    if !(status.is_client_error() || status.is_server_error()) || !(plain || empty_refusal) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_REFUSAL_MAX)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let mut problem = error::HttpError::new(status, text).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

/// The path of a request as logs show it: a WHIP/WHEP session resource's id is a capability, so only its first
/// characters are kept (`/whep/live/0123abcd…`).
pub(crate) fn path_for_logs(path: &str) -> std::borrow::Cow<'_, str> {
    let mut parts = path.splitn(4, '/');
    let (Some(""), Some(kind @ ("whip" | "whep")), Some(stream), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return std::borrow::Cow::Borrowed(path);
    };
    let (session, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let short = crate::sfu::session::log_id(session);
    let mut out = format!("/{kind}/{stream}/{short}");
    if short.len() < session.len() {
        out.push('…');
    }
    if !tail.is_empty() {
        out.push('/');
        out.push_str(tail);
    }
    std::borrow::Cow::Owned(out)
}

/// A request span's name for traces, a low-cardinality route (`POST /whep/{stream}`): a stream name or session id
/// is never part of it (they are in the `path` attribute, sessions shortened).
pub(crate) fn span_name(method: &Method, path: &str) -> String {
    let method = method_label(method);
    let mut parts = path.trim_start_matches('/').split('/');
    let route = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(kind @ ("whip" | "whep")), Some(_), None, _) => format!("/{kind}/{{stream}}"),
        (Some(kind @ ("whip" | "whep")), Some(_), Some(_), None) => {
            format!("/{kind}/{{stream}}/{{session}}")
        }
        (Some(kind @ ("whip" | "whep")), Some(_), Some(_), Some(tail)) => {
            format!("/{kind}/{{stream}}/{{session}}/{tail}")
        }
        (Some("api"), Some(version), Some(area), _) => format!("/api/{version}/{area}"),
        (Some(first), ..) if !first.is_empty() => format!("/{first}"),
        _ => "/".to_owned(),
    };
    format!("{method} {route}")
}

/// The CORS layer answers every `OPTIONS` itself; WHIP/WHEP endpoints must still say `Accept-Post`.
async fn accept_post_on_options(
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = request.method() == Method::OPTIONS && {
        let path = request.uri().path();
        (path.starts_with("/whip/") || path.starts_with("/whep/"))
            && path.trim_end_matches('/').matches('/').count() == 2
    };
    let mut response = next.run(request).await;
    if endpoint {
        response.headers_mut().insert(
            HeaderName::from_static("accept-post"),
            HeaderValue::from_static(negotiation::SDP),
        );
    }
    response
}

fn cors(config: &Config) -> CorsLayer {
    let origins = &config.http.cors_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            // W3C trace context from a browser's own tracing.
            HeaderName::from_static(crate::telemetry::TRACEPARENT),
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            header::RETRY_AFTER,
            HeaderName::from_static("accept-patch"),
            HeaderName::from_static("accept-post"),
        ])
}

/// The whole HTTP application.
pub(crate) fn router(state: AppState) -> Router {
    let accept_post = SetResponseHeaderLayer::if_not_present(
        HeaderName::from_static("accept-post"),
        HeaderValue::from_static(negotiation::SDP),
    );
    let endpoints = Router::new()
        .route(
            "/whip/{stream}",
            post(whip::publish)
                .get(whip::probe)
                .options(endpoint_options),
        )
        .route(
            "/whep/{stream}",
            post(whep::watch)
                .head(whep::head)
                .get(whep::probe)
                .options(endpoint_options),
        )
        .layer(accept_post);
    let sessions = Router::new()
        .route(
            "/whip/{stream}/{session}",
            axum::routing::patch(whip::patch).delete(whip::delete),
        )
        .route(
            "/whep/{stream}/{session}",
            axum::routing::patch(whep::patch).delete(whep::delete),
        )
        .route("/whep/{stream}/{session}/layer", post(whep::choose_layer));
    let max_body = state.config.http.max_body_bytes;
    let (api, _openapi) = api::router(&state.config);
    // Checked by config validation; an origin that does not parse here leaves the gateway on the pages' origin.
    let gateway_origin = state.config.gateway.origin().ok().flatten();
    let gateway = gateway::router(state.ipfs.clone(), gateway_origin.clone());
    let page_policy = security::PagePolicy::new(
        gateway_origin
            .is_some()
            .then(|| state.config.gateway.link_base()),
    );
    let app = Router::new()
        .merge(endpoints)
        .merge(sessions)
        .merge(health::router())
        .merge(api)
        .merge(broadcasts::router())
        .merge(web::router())
        .route_layer(axum::middleware::from_fn(http_metrics))
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_millis(
            state.config.http.body_timeout_ms,
        )))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(state.config.http.request_timeout_ms),
        ))
        .layer(axum::middleware::from_fn(problem_answers))
        .layer(cors(&state.config))
        .layer(axum::middleware::from_fn(accept_post_on_options))
        .layer(axum::middleware::from_fn_with_state(
            page_policy,
            security::safety_headers,
        ))
        .layer(axum::middleware::from_fn(
            crate::telemetry::remember_traceparent,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    let span = tracing::info_span!(
                        "http",
                        method = %request.method(),
                        path = %path_for_logs(request.uri().path()),
                        request_id = %id,
                        "otel.name" = %span_name(request.method(), request.uri().path()),
                        "otel.kind" = "server",
                    );
                    // The caller's trace, when its `traceparent` is valid (otherwise a trace of its own).
                    crate::telemetry::continue_trace(&span, request.headers());
                    span
                })
                .on_response(
                    |response: &Response, latency: Duration, span: &tracing::Span| {
                        crate::telemetry::record_status(span, response.status());
                        tower_http::trace::OnResponse::on_response(
                            tower_http::trace::DefaultOnResponse::default(),
                            response,
                            latency,
                            span,
                        );
                    },
                ),
        )
        // The IPFS gateway sets its own CORS headers (public, immutable content for any origin).
        .merge(gateway.route_layer(axum::middleware::from_fn(http_metrics)));
    let app = match gateway_origin {
        Some(origin) => app.layer(axum::middleware::from_fn_with_state(
            Arc::new(origin),
            gateway::only_content_on_gateway_origin,
        )),
        None => app,
    };
    app.layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RandomRequestId))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["FOO", "XYZZY1", "get"] {
            let m = Method::from_bytes(made_up.as_bytes()).expect("a valid token");
            assert_eq!(method_label(&m), "other", "{made_up}");
        }
    }

    #[test]
    fn span_names_are_routes_without_streams_or_sessions() {
        let id = "0123456789abcdef0123456789abcdef";
        for (method, path, name) in [
            (Method::POST, "/whep/live".to_owned(), "POST /whep/{stream}"),
            (
                Method::PATCH,
                format!("/whip/live/{id}"),
                "PATCH /whip/{stream}/{session}",
            ),
            (
                Method::POST,
                format!("/whep/live/{id}/layer"),
                "POST /whep/{stream}/{session}/layer",
            ),
            (
                Method::GET,
                "/api/v1/streams/x".to_owned(),
                "GET /api/v1/streams",
            ),
            (Method::GET, "/ipfs/bafy/x".to_owned(), "GET /ipfs"),
            (Method::GET, "/".to_owned(), "GET /"),
        ] {
            let got = span_name(&method, &path);
            assert_eq!(got, name);
            assert!(!got.contains("live") && !got.contains(id));
        }
    }

    #[test]
    fn logged_paths_keep_only_a_prefix_of_session_ids() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            path_for_logs(&format!("/whep/live/{id}")),
            "/whep/live/01234567…"
        );
        assert_eq!(
            path_for_logs(&format!("/whep/live/{id}/layer")),
            "/whep/live/01234567…/layer"
        );
        assert_eq!(path_for_logs("/whip/live"), "/whip/live");
        assert_eq!(path_for_logs("/api/v1/streams/x/y"), "/api/v1/streams/x/y");
        assert!(!path_for_logs(&format!("/whip/s/{id}")).contains(id));
    }
}
