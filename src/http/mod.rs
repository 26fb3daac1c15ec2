//! The HTTP side: WHIP and WHEP endpoints, their session resources, health, the REST API under /api/v1 (with its
//! OpenAPI document) and the web pages, with CORS, body limits, browser safety headers and a request id on every
//! request.

pub mod admin_listener;
pub mod api;
pub mod broadcasts;
pub mod error;
pub mod gateway;
pub mod health;
pub mod negotiation;
pub mod security;
pub mod web;
pub mod whep;
pub mod whip;

use std::sync::Arc;
use std::time::Instant;

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
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::config::Config;
use crate::db::Db;
use crate::sfu::Sfu;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub sfu: Sfu,
    pub auth: Arc<Auth>,
    pub ipfs: Arc<crate::store::IpfsNode>,
    pub archiver: crate::archive::worker::Archiver,
    pub started: Instant,
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
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("zipiq_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("zipiq_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
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
pub fn router(state: AppState) -> Router {
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
        .layer(cors(&state.config))
        .layer(axum::middleware::from_fn(accept_post_on_options))
        .layer(axum::middleware::from_fn_with_state(
            page_policy,
            security::safety_headers,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }),
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
