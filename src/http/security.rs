//! Browser safety on every answer, and who the client is.
//!
//! Headers: a strict `Content-Security-Policy` (the pages load only same-origin scripts and styles and no inline
//! script; API answers may not be rendered or framed at all), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` (viewer tokens in page URLs never leak to other sites) and `frame-ancestors
//! 'none'` (with `X-Frame-Options: DENY` for old browsers). A handler that sets its own CSP (the IPFS gateway's
//! `sandbox`) keeps it. The client address comes from the TCP peer, or from `X-Forwarded-For` only when the peer
//! is a configured trusted proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::response::Response;

use super::AppState;

/// The policy of HTML pages: same-origin scripts, styles and connections only; no inline script; no framing.
pub(crate) const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";
/// The policy of every other answer (JSON, SDP, problems): nothing may run, load or frame it.
pub(crate) const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// The pages' policy when the IPFS gateway has an origin of its own (`gateway`, e.g. `https://ipfs.example.org`):
/// [`PAGE_CSP`] with that origin added to `connect-src` and `media-src`, so replays may load from it.
pub(crate) fn page_csp(gateway: Option<&str>) -> String {
    match gateway.filter(|g| !g.is_empty()) {
        None => PAGE_CSP.to_owned(),
        Some(gateway) => PAGE_CSP
            .replace(
                "media-src 'self' blob:",
                &format!("media-src 'self' blob: {gateway}"),
            )
            .replace(
                "connect-src 'self'",
                &format!("connect-src 'self' {gateway}"),
            ),
    }
}

/// The `Content-Security-Policy` of HTML pages, built once from the configuration.
#[derive(Clone)]
pub(crate) struct PagePolicy(pub HeaderValue);

impl PagePolicy {
    pub(crate) fn new(gateway: Option<&str>) -> PagePolicy {
        PagePolicy(
            HeaderValue::from_str(&page_csp(gateway))
                .unwrap_or_else(|_| HeaderValue::from_static(PAGE_CSP)),
        )
    }
}

fn set_if_absent(response: &mut Response, name: HeaderName, value: &'static str) {
    if !response.headers().contains_key(&name) {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
}

/// Middleware adding the safety headers to every answer.
pub(crate) async fn safety_headers(
    axum::extract::State(policy): axum::extract::State<PagePolicy>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        if !response
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY)
        {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, policy.0);
        }
    } else {
        set_if_absent(&mut response, header::CONTENT_SECURITY_POLICY, API_CSP);
    }
    set_if_absent(&mut response, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set_if_absent(&mut response, header::REFERRER_POLICY, "no-referrer");
    set_if_absent(&mut response, header::X_FRAME_OPTIONS, "DENY");
    if html {
        set_if_absent(
            &mut response,
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        );
    }
    response
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the right-most address of
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub(crate) fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpAddr],
) -> IpAddr {
    let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    list.rsplit(',')
        .map(str::trim)
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|a| !trusted.contains(a))
        .unwrap_or(peer)
}

/// Extractor of the client's address (see [`client_ip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientIp(client_ip(
            peer,
            forwarded,
            &state.config.http.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_gateway_origin_joins_the_pages_connect_and_media_sources() {
        assert_eq!(page_csp(None), PAGE_CSP);
        assert_eq!(page_csp(Some("")), PAGE_CSP);
        let csp = page_csp(Some("https://ipfs.example.org"));
        assert!(
            csp.contains("connect-src 'self' https://ipfs.example.org;"),
            "{csp}"
        );
        assert!(
            csp.contains("media-src 'self' blob: https://ipfs.example.org;"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let trusted = [proxy];
        // Untrusted peer: its header is ignored.
        assert_eq!(
            client_ip(Some(ip("198.51.100.9")), Some("203.0.113.5"), &trusted),
            ip("198.51.100.9")
        );
        // Trusted peer: the right-most untrusted address (a client cannot push itself in front).
        assert_eq!(
            client_ip(Some(proxy), Some("1.2.3.4, 203.0.113.5"), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(Some(proxy), Some("203.0.113.5, 10.0.0.1"), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(client_ip(Some(proxy), Some("garbage"), &trusted), proxy);
        assert_eq!(client_ip(Some(proxy), None, &trusted), proxy);
        assert_eq!(
            client_ip(None, None, &[]),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }
}
