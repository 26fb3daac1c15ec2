//! The web pages, compiled into the binary (no build step): `/` lists live streams, `/watch/{stream}` plays with
//! WHEP, `/publish/{stream}` publishes the camera, microphone or screen with WHIP.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("web/index.html");
const WATCH_HTML: &str = include_str!("web/watch.html");
const PUBLISH_HTML: &str = include_str!("web/publish.html");

/// Static assets by file name: (content type, body).
fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "style.css" => ("text/css; charset=utf-8", include_str!("web/style.css")),
        "zipiq.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/zipiq.js"),
        ),
        "index.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/index.js"),
        ),
        "watch.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/watch.js"),
        ),
        "publish.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/publish.js"),
        ),
        _ => return None,
    })
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { html(INDEX_HTML) }))
        .route("/watch/{stream}", get(|| async { html(WATCH_HTML) }))
        .route("/publish/{stream}", get(|| async { html(PUBLISH_HTML) }))
        .route("/assets/{name}", get(serve_asset))
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn serve_asset(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some((content_type, body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
