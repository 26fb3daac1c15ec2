//! The web pages, compiled into the binary (no build step): `/` lists live streams, `/watch/{stream}` plays with
//! WHEP (with a viewer token from the link for private streams), `/publish/{stream}` publishes the camera,
//! microphone or screen with WHIP; `/signup`, `/login`, `/account/verify`, `/account/forgot`, `/account/reset` and
//! `/account` ("my streams") are the account pages; `/replay/{cid}` replays a finished broadcast from its root
//! CID with hls.js (vendored). No inline script anywhere (the CSP forbids it) and no cookies:
//! the pages call the API with bearer tokens.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("web/index.html");
const WATCH_HTML: &str = include_str!("web/watch.html");
const PUBLISH_HTML: &str = include_str!("web/publish.html");
const SIGNUP_HTML: &str = include_str!("web/signup.html");
const LOGIN_HTML: &str = include_str!("web/login.html");
const VERIFY_HTML: &str = include_str!("web/verify.html");
const FORGOT_HTML: &str = include_str!("web/forgot.html");
const RESET_HTML: &str = include_str!("web/reset.html");
const ACCOUNT_HTML: &str = include_str!("web/account.html");
const REPLAY_HTML: &str = include_str!("web/replay.html");

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
        "session.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/session.js"),
        ),
        "auth.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/auth.js"),
        ),
        "account.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/account.js"),
        ),
        "replay.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/replay.js"),
        ),
        // hls.js 1.7.4 (Apache-2.0, web/vendor/hls.js.LICENSE), vendored from npm: plays the IPFS playlists.
        "hls.min.js" => (
            "text/javascript; charset=utf-8",
            include_str!("web/vendor/hls.min.js"),
        ),
        _ => return None,
    })
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { html(INDEX_HTML) }))
        .route("/watch/{stream}", get(|| async { html(WATCH_HTML) }))
        .route("/publish/{stream}", get(|| async { html(PUBLISH_HTML) }))
        .route("/signup", get(|| async { html(SIGNUP_HTML) }))
        .route("/login", get(|| async { html(LOGIN_HTML) }))
        .route("/account", get(|| async { html(ACCOUNT_HTML) }))
        .route("/account/verify", get(|| async { html(VERIFY_HTML) }))
        .route("/account/forgot", get(|| async { html(FORGOT_HTML) }))
        .route("/account/reset", get(|| async { html(RESET_HTML) }))
        .route("/replay/{cid}", get(replay_page))
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

/// The replay page, told where the gateway is (`gateway.public_url`, or nothing for this origin).
async fn replay_page(State(state): State<AppState>) -> Response {
    let page = replay_html(state.config.gateway.link_base());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

/// [`REPLAY_HTML`] with the gateway's origin in its `zipiq-gateway` meta element.
fn replay_html(gateway: &str) -> String {
    let escaped: String = gateway
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c => c.to_string(),
        })
        .collect();
    REPLAY_HTML.replacen(
        "<meta name=\"zipiq-gateway\" content=\"\">",
        &format!("<meta name=\"zipiq-gateway\" content=\"{escaped}\">"),
        1,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_page_names_the_gateway_origin() {
        assert!(replay_html("").contains("<meta name=\"zipiq-gateway\" content=\"\">"));
        let page = replay_html("https://ipfs.example.org");
        assert!(
            page.contains("<meta name=\"zipiq-gateway\" content=\"https://ipfs.example.org\">")
        );
        assert!(
            replay_html("https://x\"><script>")
                .contains("content=\"https://x&quot;&gt;&lt;script&gt;\"")
        );
    }

    /// The pages must run under the strict CSP: no inline script, no inline event handler, no inline style.
    #[test]
    fn pages_have_no_inline_script_or_style() {
        for page in [
            INDEX_HTML,
            WATCH_HTML,
            PUBLISH_HTML,
            SIGNUP_HTML,
            LOGIN_HTML,
            VERIFY_HTML,
            FORGOT_HTML,
            RESET_HTML,
            ACCOUNT_HTML,
            REPLAY_HTML,
        ] {
            for tag in page.split("<script").skip(1) {
                assert!(
                    tag.trim_start().starts_with("src=\"/assets/"),
                    "inline or foreign script: <script{}",
                    &tag[..tag.len().min(60)]
                );
                let assets = tag.split('"').nth(1).unwrap_or("");
                let name = assets.trim_start_matches("/assets/");
                assert!(asset(name).is_some(), "missing asset {name}");
            }
            assert!(!page.contains(" style="), "inline style");
            assert!(
                !page.contains(" onclick=") && !page.contains(" onload="),
                "inline handler"
            );
        }
    }
}
