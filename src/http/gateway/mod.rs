//! The IPFS HTTP gateway built into zipIQ: `GET`/`HEAD /ipfs/{cid}[/path]` served from the embedded node, as
//! UnixFS (files with `Range`, directories as `index.html` or a listing) or as trustless responses
//! (`?format=raw` / `application/vnd.ipld.raw`: one block; `?format=car` / `application/vnd.ipld.car`: a CAR v1).
//!
//! Everything in a request is untrusted: the path, query and headers go through pure parsers that return errors,
//! never panic. Content this node lacks is 404 at once unless the node may fetch from the network (then bounded by
//! its timeout). Content is public and immutable: every answer carries `Access-Control-Allow-Origin: *`, and
//! successful ones an immutable `Cache-Control`. Content from elsewhere is served under a `sandbox` CSP, and on the
//! pages' origin active types (HTML, script, SVG, XML) are served as `text/plain`: a file on IPFS must never run
//! script with zipIQ's origin. They keep their types only on a separate gateway origin (`gateway.public_url`),
//! which serves nothing else. Identity CIDs (content inside the CID, stored nowhere) are refused.
//!
//! Here: the router, its one handler and the gateway origin's guard. One concern a file beside it: `request`
//! (query and `Accept`), `ranges` (`Range` and conditional requests), `media_type`, `response` (the headers and
//! shapes every answer shares), and the answer of each format: `unixfs` (with `listing` for directories), `raw`,
//! `car`.

mod car;
mod listing;
mod media_type;
mod ranges;
mod raw;
mod request;
mod response;
mod unixfs;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::HostPort;
use crate::store::content_path::ContentPath;
use crate::store::{Cid, IpfsNode, block};
use car::serve_car;
use ranges::names_etag;
use raw::serve_raw;
use request::{FileRequest, Format, GatewayQuery, format_from_accept, scope_name};
use response::{cors, error_response, not_modified_response, quoted, store_error_response};
use unixfs::serve_unixfs;

/// What the gateway handlers reach: the node, and the separate gateway origin if there is one.
#[derive(Clone)]
struct Gateway {
    node: Arc<IpfsNode>,
    origin: Option<Arc<HostPort>>,
}

/// The gateway routes. `origin` is the separate gateway origin (`gateway.public_url`), None when the gateway shares
/// the pages' origin. Merge it into the application router (`Router::merge`) outside any CORS layer of the rest of
/// the API: it sets its own CORS headers.
pub(crate) fn router(node: Arc<IpfsNode>, origin: Option<HostPort>) -> Router {
    let method_router = || get(serve).head(serve).options(preflight);
    Router::new()
        .route("/ipfs/{cid}", method_router())
        .route("/ipfs/{cid}/", method_router())
        .route("/ipfs/{cid}/{*path}", method_router())
        .with_state(Gateway {
            node,
            origin: origin.map(Arc::new),
        })
}

/// Whether a request came to the separate gateway origin: by its `Host`, or (HTTP/2, absolute-form) by the
/// authority of its URI.
fn on_gateway_origin(origin: Option<&HostPort>, headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(origin) = origin else {
        return false;
    };
    let host = match headers.get(header::HOST) {
        Some(value) => value.to_str().ok(),
        None => uri.authority().map(|a| a.as_str()),
    };
    host.is_some_and(|host| origin.matches_host_header(host))
}

/// Middleware for the whole HTTP application when the gateway has its own origin: on that origin only `/ipfs/` is
/// served (pages or the API there would share an origin with active content from IPFS).
pub(crate) async fn only_content_on_gateway_origin(
    axum::extract::State(origin): axum::extract::State<Arc<HostPort>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if on_gateway_origin(Some(&origin), request.headers(), request.uri())
        && !request.uri().path().starts_with("/ipfs/")
    {
        return error_response(
            StatusCode::NOT_FOUND,
            "this is the IPFS gateway's origin: it serves /ipfs/ only",
        );
    }
    next.run(request).await
}

async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    cors(headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Accept, Content-Type, Range, If-None-Match, If-Range, X-Requested-With",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// The refusal of an identity CID: its content is in the CID itself, so anyone could have this origin serve
/// anything they like.
fn identity_refused(cid: &Cid) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        &format!("{cid} is an identity CID (its content is inside it): not served here"),
    )
}

/// The gateway handler for every method and route.
async fn serve(
    State(gateway): State<Gateway>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let node = &gateway.node;
    let path = match ContentPath::parse(uri.path()) {
        Ok(path) => path,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if block::inline_data(&path.root).is_some() {
        return identity_refused(&path.root);
    }
    let query = match GatewayQuery::parse(uri.query()) {
        Ok(query) => query,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = match query.format {
        Some(format) => format,
        None => match format_from_accept(accept) {
            Ok(format) => format,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
        },
    };
    if format == Format::Car && query.entity_bytes {
        return error_response(StatusCode::NOT_IMPLEMENTED, "entity-bytes is not supported");
    }
    let head_only = method == Method::HEAD;

    // A bare CID's ETag needs no I/O: answer revalidations before touching the repository.
    if path.segments.is_empty() {
        let etag = match format {
            Format::Unixfs => quoted(&path.root.to_string()),
            Format::Raw => quoted(&format!("{}.raw", path.root)),
            Format::Car => quoted(&format!(
                "{}.car.{}",
                path.root,
                scope_name(query.dag_scope)
            )),
        };
        if (format != Format::Unixfs || !path.trailing_slash) && names_etag(&headers, &etag) {
            return not_modified_response(&path, &etag);
        }
    }

    // Raw blocks and CARs carry blocks as they are: their terminal block need not decode.
    let resolved = match format {
        Format::Unixfs => node.resolve(&path).await,
        Format::Raw | Format::Car => node.resolve_block(&path).await,
    };
    let resolved = match resolved {
        Ok(resolved) => resolved,
        Err(e) => return store_error_response(&e),
    };
    if block::inline_data(&resolved.cid).is_some() {
        return identity_refused(&resolved.cid);
    }
    match format {
        Format::Raw => serve_raw(node, &path, &resolved, &query, &headers, head_only),
        Format::Car => serve_car(node, &path, &resolved, &query, &headers),
        Format::Unixfs => {
            let active_allowed = on_gateway_origin(gateway.origin.as_deref(), &headers, &uri);
            let request = FileRequest {
                query: &query,
                headers: &headers,
                head_only,
                active_allowed,
            };
            serve_unixfs(node, &path, resolved, &request, uri.query()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::media_type::RAW_TYPE;
    use super::response::IMMUTABLE;
    use super::*;

    // -----------------------------------------------------------------------------------------------------------
    // Real HTTP requests against the router served on loopback.

    use crate::store::block;
    use crate::store::car::CarReader;
    use crate::store::node_tests::{test_bytes, test_config};
    use bytes::Bytes;
    use std::time::Duration;

    struct Served {
        node: Arc<IpfsNode>,
        base: String,
        client: reqwest::Client,
        _repo: tempfile::TempDir,
        server: tokio::task::JoinHandle<()>,
    }

    impl Served {
        async fn start() -> Served {
            let repo = tempfile::tempdir().expect("tempdir");
            let node = Arc::new(
                IpfsNode::start(&test_config(repo.path()))
                    .await
                    .expect("node"),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            let app = router(node.clone(), None);
            let server = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client");
            Served {
                node,
                base,
                client,
                _repo: repo,
                server,
            }
        }

        async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
            let mut request = self.client.get(format!("{}{path}", self.base));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send().await.expect("request")
        }

        async fn stop(self) {
            self.server.abort();
            self.node.shutdown().await;
        }
    }

    fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// A stand-in CMAF init segment: starts with an `ftyp` box.
    fn init_segment() -> Bytes {
        let mut bytes = vec![0, 0, 0, 0x18];
        bytes.extend_from_slice(b"ftypiso6");
        bytes.extend_from_slice(&test_bytes(2000, 70));
        Bytes::from(bytes)
    }

    async fn bounded<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(60), future)
            .await
            .expect("test took longer than its time bound")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_are_served_with_type_etag_cache_and_cors_headers() {
        bounded(async {
            let served = Served::start().await;
            let init = init_segment();
            let cid = served.node.add(init.clone()).await.expect("added");
            let response = served.get(&format!("/ipfs/{cid}"), &[]).await;
            assert_eq!(response.status(), 200);
            assert_eq!(
                header(&response, "content-type"),
                "video/mp4",
                "sniffed from ftyp"
            );
            assert_eq!(header(&response, "etag"), format!("\"{cid}\""));
            assert_eq!(header(&response, "cache-control"), IMMUTABLE);
            assert_eq!(header(&response, "x-ipfs-path"), format!("/ipfs/{cid}"));
            assert_eq!(header(&response, "accept-ranges"), "bytes");
            assert_eq!(header(&response, "access-control-allow-origin"), "*");
            assert_eq!(header(&response, "content-length"), init.len().to_string());
            assert_eq!(response.bytes().await.expect("body"), init);

            let head = served
                .client
                .head(format!("{}/ipfs/{cid}", served.base))
                .send()
                .await
                .expect("head");
            assert_eq!(head.status(), 200);
            assert_eq!(header(&head, "content-length"), init.len().to_string());
            assert!(head.bytes().await.expect("body").is_empty());

            let cached = served
                .get(
                    &format!("/ipfs/{cid}"),
                    &[("if-none-match", &format!("\"{cid}\""))],
                )
                .await;
            assert_eq!(cached.status(), 304);
            assert_eq!(header(&cached, "etag"), format!("\"{cid}\""));
            served.stop().await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paths_resolve_through_a_broadcast_directory() {
        bounded(async {
            let served = Served::start().await;
            let playlist =
                Bytes::from_static(b"#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-ENDLIST\n");
            let init = init_segment();
            let segment = test_bytes(1_500_000, 71);
            let mut entries = Vec::new();
            for (name, bytes) in [
                ("index.m3u8", &playlist),
                ("init.mp4", &init),
                ("000001.m4s", &segment),
            ] {
                let cid = served.node.add(bytes.clone()).await.expect("added");
                entries.push((name.to_owned(), cid, bytes.len() as u64));
            }
            let root = served
                .node
                .add_directory(&entries)
                .await
                .expect("directory");

            for (name, bytes, kind) in [
                ("index.m3u8", &playlist, "application/vnd.apple.mpegurl"),
                ("init.mp4", &init, "video/mp4"),
                ("000001.m4s", &segment, "video/iso.segment"),
            ] {
                let response = served.get(&format!("/ipfs/{root}/{name}"), &[]).await;
                assert_eq!(response.status(), 200, "{name}");
                assert_eq!(header(&response, "content-type"), kind, "{name}");
                let file_cid = entries
                    .iter()
                    .find(|e| e.0 == name)
                    .map(|e| e.1)
                    .expect("entry");
                assert_eq!(
                    header(&response, "etag"),
                    format!("\"{file_cid}\""),
                    "{name}"
                );
                assert_eq!(
                    header(&response, "x-ipfs-path"),
                    format!("/ipfs/{root}/{name}")
                );
                assert_eq!(
                    header(&response, "x-ipfs-roots"),
                    format!("{root},{file_cid}")
                );
                assert!(response.bytes().await.expect("body") == *bytes, "{name}");
            }

            let redirect = served.get(&format!("/ipfs/{root}"), &[]).await;
            assert_eq!(redirect.status(), 301);
            assert_eq!(header(&redirect, "location"), format!("/ipfs/{root}/"));
            let listing = served.get(&format!("/ipfs/{root}/"), &[]).await;
            assert_eq!(listing.status(), 200);
            assert_eq!(header(&listing, "content-type"), "text/html; charset=utf-8");
            let html = listing.text().await.expect("html");
            assert!(
                html.contains(&format!("href=\"/ipfs/{root}/index.m3u8\"")),
                "{html}"
            );

            let missing = served.get(&format!("/ipfs/{root}/000002.m4s"), &[]).await;
            assert_eq!(missing.status(), 404);
            served.stop().await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_ranges_return_the_right_bytes_and_bad_ones_416() {
        bounded(async {
            let served = Served::start().await;
            let bytes = test_bytes(2_621_440, 72);
            let cid = served.node.add(bytes.clone()).await.expect("added");
            let response = served
                .get(
                    &format!("/ipfs/{cid}"),
                    &[("range", "bytes=1048570-1048585")],
                )
                .await;
            assert_eq!(response.status(), 206);
            assert_eq!(
                header(&response, "content-range"),
                "bytes 1048570-1048585/2621440"
            );
            assert_eq!(header(&response, "content-length"), "16");
            assert_eq!(
                response.bytes().await.expect("body"),
                bytes.slice(1_048_570..1_048_586)
            );

            let tail = served
                .get(&format!("/ipfs/{cid}"), &[("range", "bytes=-100")])
                .await;
            assert_eq!(tail.status(), 206);
            assert_eq!(tail.bytes().await.expect("body"), bytes.slice(2_621_340..));

            let beyond = served
                .get(&format!("/ipfs/{cid}"), &[("range", "bytes=2621440-")])
                .await;
            assert_eq!(beyond.status(), 416);
            assert_eq!(header(&beyond, "content-range"), "bytes */2621440");

            let multi = served
                .get(&format!("/ipfs/{cid}"), &[("range", "bytes=0-1,5-6")])
                .await;
            assert_eq!(multi.status(), 200);
            assert_eq!(multi.bytes().await.expect("body").len(), bytes.len());

            let stale = served
                .get(
                    &format!("/ipfs/{cid}"),
                    &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
                )
                .await;
            assert_eq!(
                stale.status(),
                200,
                "If-Range with another ETag sends it all"
            );
            served.stop().await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_cids_are_400_and_unknown_ones_404_at_once() {
        bounded(async {
            let served = Served::start().await;
            for bad in [
                "/ipfs/not-a-cid",
                "/ipfs/bafyINVALID",
                "/ipfs/Qm",
                "/ipfs/%00",
            ] {
                let response = served.get(bad, &[]).await;
                assert_eq!(response.status(), 400, "{bad}");
                assert_eq!(header(&response, "access-control-allow-origin"), "*");
                assert!(!response.text().await.expect("reason").is_empty());
            }
            let unknown = block::cid_v1(block::RAW, b"nowhere");
            let started = std::time::Instant::now();
            let response = served.get(&format!("/ipfs/{unknown}"), &[]).await;
            assert_eq!(response.status(), 404);
            assert!(started.elapsed() < Duration::from_secs(2));
            let bad_format = served
                .get(&format!("/ipfs/{unknown}?format=tar"), &[])
                .await;
            assert_eq!(bad_format.status(), 400);
            served.stop().await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trustless_answers_carry_verifiable_blocks() {
        bounded(async {
            let served = Served::start().await;
            let bytes = test_bytes(2_300_000, 73);
            let file = served.node.add(bytes.clone()).await.expect("added");
            let root = served
                .node
                .add_directory(&[("000001.m4s".to_owned(), file, bytes.len() as u64)])
                .await
                .expect("directory");

            // One block, by query and by Accept.
            let expected = served.node.block(&file).await.expect("block");
            for (path, headers) in [
                (format!("/ipfs/{file}?format=raw"), vec![]),
                (format!("/ipfs/{file}"), vec![("accept", RAW_TYPE)]),
            ] {
                let response = served.get(&path, &headers).await;
                assert_eq!(response.status(), 200);
                assert_eq!(header(&response, "content-type"), RAW_TYPE);
                assert_eq!(header(&response, "etag"), format!("\"{file}.raw\""));
                let body = response.bytes().await.expect("body");
                assert_eq!(body, expected);
                assert_eq!(block::verify(&file, &body), Ok(()));
            }

            // A CAR of the whole directory DAG.
            let response = served
                .get(
                    &format!("/ipfs/{root}"),
                    &[("accept", "application/vnd.ipld.car")],
                )
                .await;
            assert_eq!(response.status(), 200);
            assert!(
                header(&response, "content-type")
                    .starts_with("application/vnd.ipld.car; version=1")
            );
            let car = response.bytes().await.expect("body");
            let mut reader = CarReader::new(car.as_ref()).await.expect("CAR header");
            assert_eq!(reader.roots(), &[root]);
            let mut cids = Vec::new();
            while let Some((cid, data)) = reader.next_block().await.expect("every block verifies") {
                assert_eq!(block::verify(&cid, &data), Ok(()));
                cids.push(cid);
            }
            // directory, file root, three leaves
            assert_eq!(cids.len(), 5);
            assert_eq!(cids.first(), Some(&root));
            assert_eq!(cids.get(1), Some(&file));

            // A path CAR carries the path's blocks, then the file's DAG; dag-scope=block only the terminal block.
            let response = served
                .get(
                    &format!("/ipfs/{root}/000001.m4s?format=car&dag-scope=block"),
                    &[],
                )
                .await;
            assert_eq!(response.status(), 200);
            let car = response.bytes().await.expect("body");
            let mut reader = CarReader::new(car.as_ref()).await.expect("CAR header");
            assert_eq!(reader.roots(), &[root]);
            let mut scoped = Vec::new();
            while let Some((cid, _)) = reader.next_block().await.expect("verifies") {
                scoped.push(cid);
            }
            assert_eq!(scoped, vec![root, file]);
            served.stop().await;
        })
        .await;
    }
}
