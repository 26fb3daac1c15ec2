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

use std::ops::Range;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::TryStreamExt;

use crate::config::HostPort;
use crate::store::content_path::{self, ContentPath};
use crate::store::{Cid, DagScope, EntryKind, IpfsNode, Resolved, StoreError, block};

/// `Cache-Control` of every successful answer: content addressed by CID never changes.
pub const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// Media type of a single block.
pub const RAW_TYPE: &str = "application/vnd.ipld.raw";
/// Media type of the CAR answers (the order and duplicate parameters say what the stream holds).
pub const CAR_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";

const X_IPFS_PATH: HeaderName = HeaderName::from_static("x-ipfs-path");
const X_IPFS_ROOTS: HeaderName = HeaderName::from_static("x-ipfs-roots");
const EXPOSED_HEADERS: &str =
    "Content-Range, Content-Length, Content-Type, ETag, X-Ipfs-Path, X-Ipfs-Roots";

/// Media type active content is served as where it may not be active.
pub const INERT_TYPE: &str = "text/plain; charset=utf-8";

/// What the gateway handlers reach: the node, and the separate gateway origin if there is one.
#[derive(Clone)]
struct Gateway {
    node: Arc<IpfsNode>,
    origin: Option<Arc<HostPort>>,
}

/// The gateway routes. `origin` is the separate gateway origin (`gateway.public_url`), None when the gateway shares
/// the pages' origin. Merge it into the application router (`Router::merge`) outside any CORS layer of the rest of
/// the API: it sets its own CORS headers.
pub fn router(node: Arc<IpfsNode>, origin: Option<HostPort>) -> Router {
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
pub async fn only_content_on_gateway_origin(
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

/// Whether a media type can run script or render as a document with the origin it is served from: HTML, XHTML,
/// SVG, any XML (an XML document may hold XHTML with script) and script itself.
pub fn is_active_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html"
            | "text/xml"
            | "application/xml"
            | "text/xsl"
            | "text/javascript"
            | "text/ecmascript"
            | "application/javascript"
            | "application/x-javascript"
            | "application/ecmascript"
    ) || essence.ends_with("+xml")
}

/// What representation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Deserialized UnixFS: file bytes, `index.html` or a directory listing.
    Unixfs,
    /// One block, verbatim.
    Raw,
    /// A CAR v1 of the DAG.
    Car,
}

/// The query parameters the gateway understands; others are ignored (clients add cache busters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayQuery {
    pub format: Option<Format>,
    pub dag_scope: DagScope,
    pub entity_bytes: bool,
    pub filename: Option<String>,
    pub download: bool,
    /// The first entry of a directory listing's page (`?start=N`, 0-based).
    pub listing_start: usize,
}

/// Entries per page of a directory listing.
pub const LISTING_PAGE: usize = 1000;

/// Why a request cannot be served as asked (each is a 4xx/501 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("unsupported format {0:?} (supported: raw, car)")]
    UnsupportedFormat(String),
    #[error("invalid dag-scope {0:?} (all, entity, block)")]
    InvalidDagScope(String),
    #[error("unsupported CAR version {0:?} (only 1)")]
    UnsupportedCarVersion(String),
    #[error("query parameter {0} is not valid percent-encoding")]
    BadEncoding(&'static str),
    #[error("start must be a whole number of entries, not {0:?}")]
    InvalidStart(String),
}

fn percent_decode_query(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl GatewayQuery {
    /// Parses the query string of a gateway request.
    pub fn parse(query: Option<&str>) -> Result<GatewayQuery, RequestError> {
        let mut parsed = GatewayQuery::default();
        let Some(query) = query else {
            return Ok(parsed);
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "format" => {
                    let value =
                        percent_decode_query(value).ok_or(RequestError::BadEncoding("format"))?;
                    parsed.format = Some(match value.as_str() {
                        "raw" => Format::Raw,
                        "car" => Format::Car,
                        other => return Err(RequestError::UnsupportedFormat(other.to_owned())),
                    });
                }
                "dag-scope" => {
                    parsed.dag_scope = match value {
                        "all" => DagScope::All,
                        "entity" => DagScope::Entity,
                        "block" => DagScope::Block,
                        other => return Err(RequestError::InvalidDagScope(other.to_owned())),
                    };
                }
                "car-version" if value != "1" => {
                    return Err(RequestError::UnsupportedCarVersion(value.to_owned()));
                }
                "entity-bytes" => parsed.entity_bytes = true,
                "filename" => {
                    parsed.filename = Some(
                        percent_decode_query(value).ok_or(RequestError::BadEncoding("filename"))?,
                    );
                }
                "download" => parsed.download = value == "true",
                "start" => {
                    parsed.listing_start = value.parse().map_err(|_| {
                        RequestError::InvalidStart(value.chars().take(40).collect())
                    })?;
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// The format an `Accept` header asks for: the first IPLD media type it lists, else UnixFS.
pub fn format_from_accept(accept: Option<&str>) -> Result<Format, RequestError> {
    let Some(accept) = accept else {
        return Ok(Format::Unixfs);
    };
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        match media.as_str() {
            "application/vnd.ipld.raw" => return Ok(Format::Raw),
            "application/vnd.ipld.car" => {
                for param in parts {
                    if let Some(version) = param.strip_prefix("version=")
                        && version.trim_matches('"') != "1"
                    {
                        return Err(RequestError::UnsupportedCarVersion(version.to_owned()));
                    }
                }
                return Ok(Format::Car);
            }
            _ => {}
        }
    }
    Ok(Format::Unixfs)
}

/// The answer to a `Range` header for a representation of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: send everything (200). Multi-range requests end here too.
    Full,
    /// One satisfiable range, end exclusive (206).
    Partial(Range<u64>),
    /// A syntactically valid range that selects nothing (416).
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 §14.1.2) against `size`. Syntax errors and multi-ranges give `Full`.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first.trim(), last.trim()) {
        ("", suffix) if digits(suffix) => match suffix.parse::<u64>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(n) if size > 0 => RangeRequest::Partial(size.saturating_sub(n)..size),
            Ok(_) => RangeRequest::Unsatisfiable,
            // More digits than u64 holds: a suffix longer than any file, i.e. the whole file.
            Err(_) if size > 0 => RangeRequest::Partial(0..size),
            Err(_) => RangeRequest::Unsatisfiable,
        },
        (start, end) if digits(start) && (end.is_empty() || digits(end)) => {
            let Ok(start) = start.parse::<u64>() else {
                return RangeRequest::Unsatisfiable;
            };
            let end = if end.is_empty() {
                u64::MAX
            } else {
                end.parse::<u64>().unwrap_or(u64::MAX)
            };
            if end < start {
                return RangeRequest::Full;
            }
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial(start..end.saturating_add(1).min(size))
        }
        _ => RangeRequest::Full,
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, `*` matches anything).
pub fn if_none_match(value: &str, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = bare(etag);
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || bare(tag) == ours)
}

/// The media type of a file name's extension, if zipIQ knows it.
pub fn content_type_for_name(name: &str) -> Option<&'static str> {
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "m3u8" => "application/vnd.apple.mpegurl",
        "mp4" => "video/mp4",
        "m4s" => "video/iso.segment",
        "m4a" => "audio/mp4",
        "m4v" => "video/mp4",
        "mpd" => "application/dash+xml",
        "ts" => "video/mp2t",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "opus" | "ogg" => "audio/ogg",
        "vtt" => "text/vtt; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "car" => "application/vnd.ipld.car",
        _ => return None,
    })
}

/// The media type of content that has no (known) name, from its first bytes: fragmented MP4 boxes, playlists and
/// common images; anything else is `application/octet-stream` (HTML is never sniffed).
pub fn sniff_content_type(head: &[u8]) -> &'static str {
    match head.get(4..8) {
        Some(b"ftyp") => return "video/mp4",
        Some(b"styp") | Some(b"moof") | Some(b"sidx") => return "video/iso.segment",
        _ => {}
    }
    if head.starts_with(b"#EXTM3U") {
        "application/vnd.apple.mpegurl"
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if head.starts_with(b"\xff\xd8\xff") {
        "image/jpeg"
    } else if head.starts_with(b"GIF8") {
        "image/gif"
    } else {
        "application/octet-stream"
    }
}

fn value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

fn set(headers: &mut HeaderMap, name: HeaderName, text: &str) {
    if let Some(v) = value(text) {
        headers.insert(name, v);
    }
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
}

/// A short plain-text error answer (with CORS, so browsers can read the reason; never cached as immutable).
fn error_response(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, format!("{reason}\n")).into_response();
    let headers = response.headers_mut();
    cors(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn store_error_response(error: &StoreError) -> Response {
    let status = store_error_status(error);
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), error = %error, "gateway request failed");
    }
    error_response(status, &error.to_string())
}

fn store_error_status(error: &StoreError) -> StatusCode {
    match error {
        StoreError::NotFound(_)
        | StoreError::NoSuchPath { .. }
        | StoreError::IncompleteDag { .. } => StatusCode::NOT_FOUND,
        StoreError::FetchTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        StoreError::FetchFailed { .. } | StoreError::Malformed { .. } => StatusCode::BAD_GATEWAY,
        StoreError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Headers every successful gateway answer carries.
fn common_headers(headers: &mut HeaderMap, path: &ContentPath, resolved: Option<&Resolved>) {
    cors(headers);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    set(headers, X_IPFS_PATH, &path.to_uri_path());
    if let Some(resolved) = resolved {
        let roots: Vec<String> = resolved
            .path_blocks
            .iter()
            .chain(std::iter::once(&resolved.cid))
            .map(Cid::to_string)
            .collect();
        set(headers, X_IPFS_ROOTS, &roots.join(","));
    }
}

fn quoted(tag: &str) -> String {
    format!("\"{tag}\"")
}

/// A filename safe inside a quoted `Content-Disposition` parameter, plus its RFC 8187 form.
fn disposition(kind: &str, filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        content_path::encode_segment(filename)
    )
}

/// Whether `If-None-Match` matches `etag` of content that exists (`*` included).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| if_none_match(v, etag))
}

/// Whether `If-None-Match` names `etag` itself, for answering before knowing whether the content exists: `*` means
/// "any current representation", so it can only match once the content has been found.
fn names_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|tag| *tag != "*")
                .any(|tag| if_none_match(tag, etag))
        })
}

fn not_modified_response(path: &ContentPath, etag: &str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    let headers = response.headers_mut();
    common_headers(headers, path, None);
    set(headers, header::ETAG, etag);
    response
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

fn scope_name(scope: DagScope) -> &'static str {
    match scope {
        DagScope::All => "all",
        DagScope::Entity => "entity",
        DagScope::Block => "block",
    }
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

/// What serving a file depends on besides the file.
struct FileRequest<'a> {
    query: &'a GatewayQuery,
    headers: &'a HeaderMap,
    head_only: bool,
    /// Whether active types (HTML, script, SVG, XML) may keep their media types: on the separate gateway origin.
    active_allowed: bool,
}

fn serve_raw(
    node: &IpfsNode,
    path: &ContentPath,
    resolved: &Resolved,
    query: &GatewayQuery,
    headers: &HeaderMap,
    head_only: bool,
) -> Response {
    let etag = quoted(&format!("{}.raw", resolved.cid));
    if not_modified(headers, &etag) {
        return not_modified_response(path, &etag);
    }
    let block = node.resolved_block(resolved);
    let size = block.len() as u64;
    let range = range_for(headers, &etag, size);
    let filename = query
        .filename
        .clone()
        .unwrap_or_else(|| format!("{}.bin", resolved.cid));
    let answer = ByteAnswer {
        path,
        resolved,
        etag: &etag,
        content_type: RAW_TYPE,
        disposition: Some(disposition("attachment", &filename)),
        size,
        head_only,
    };
    match range {
        RangeRequest::Unsatisfiable => answer.unsatisfiable(),
        RangeRequest::Full => answer.respond(0..size, false, Body::from(block)),
        RangeRequest::Partial(r) => {
            // `r` lies within the block: parse_range clamps its end to `size` and starts below it.
            let body = Body::from(block.slice(r.start as usize..r.end as usize));
            answer.respond(r, true, body)
        }
    }
}

fn serve_car(
    node: &IpfsNode,
    path: &ContentPath,
    resolved: &Resolved,
    query: &GatewayQuery,
    headers: &HeaderMap,
) -> Response {
    let etag = quoted(&format!(
        "{}.car.{}",
        path.to_uri_path().trim_start_matches("/ipfs/"),
        scope_name(query.dag_scope)
    ));
    if not_modified(headers, &etag) {
        return not_modified_response(path, &etag);
    }
    // Checked before the status goes out: a terminal block whose links cannot be followed is a 5xx with its reason.
    let stream = match node.car_stream(resolved, query.dag_scope) {
        Ok(stream) => stream,
        Err(e) => return store_error_response(&e),
    };
    let root = path.to_uri_path();
    // The same (lazy) body for HEAD: axum drops it, and its unknown length means no `Content-Length`, as for GET.
    let body = Body::from_stream(stream.map_err(move |e| {
        tracing::warn!(path = %root, error = %e, "CAR answer cut short: a block could not be read");
        std::io::Error::other(e)
    }));
    let mut response = (StatusCode::OK, body).into_response();
    let out = response.headers_mut();
    common_headers(out, path, Some(resolved));
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(CAR_TYPE));
    set(out, header::ETAG, &etag);
    let filename = query
        .filename
        .clone()
        .unwrap_or_else(|| format!("{}.car", resolved.cid));
    set(
        out,
        header::CONTENT_DISPOSITION,
        &disposition("attachment", &filename),
    );
    response
}

fn range_for(headers: &HeaderMap, etag: &str, size: u64) -> RangeRequest {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Full;
    };
    // If-Range with another validator (or a date: this gateway sends no Last-Modified) means "send it all".
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        let matches = if_range
            .to_str()
            .is_ok_and(|v| !v.trim().starts_with("W/") && v.trim() == etag);
        if !matches {
            return RangeRequest::Full;
        }
    }
    parse_range(range, size)
}

/// Builds answers that carry bytes of a known size (files and raw blocks).
struct ByteAnswer<'a> {
    path: &'a ContentPath,
    resolved: &'a Resolved,
    etag: &'a str,
    content_type: &'a str,
    disposition: Option<String>,
    size: u64,
    head_only: bool,
}

impl ByteAnswer<'_> {
    fn respond(&self, range: Range<u64>, partial: bool, body: Body) -> Response {
        let status = if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        let body = if self.head_only { Body::empty() } else { body };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        common_headers(headers, self.path, Some(self.resolved));
        set(headers, header::CONTENT_TYPE, self.content_type);
        set(headers, header::ETAG, self.etag);
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        set(
            headers,
            header::CONTENT_LENGTH,
            &(range.end - range.start).to_string(),
        );
        if partial {
            set(
                headers,
                header::CONTENT_RANGE,
                &format!(
                    "bytes {}-{}/{}",
                    range.start,
                    range.end.saturating_sub(1),
                    self.size
                ),
            );
        }
        if let Some(disposition) = &self.disposition {
            set(headers, header::CONTENT_DISPOSITION, disposition);
        }
        response
    }

    fn unsatisfiable(&self) -> Response {
        let mut response =
            error_response(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
        let headers = response.headers_mut();
        set(
            headers,
            header::CONTENT_RANGE,
            &format!("bytes */{}", self.size),
        );
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        set(headers, header::ETAG, self.etag);
        response
    }
}

async fn serve_unixfs(
    node: &IpfsNode,
    path: &ContentPath,
    resolved: Resolved,
    request: &FileRequest<'_>,
    raw_query: Option<&str>,
) -> Response {
    match &resolved.kind {
        EntryKind::File { .. } => {
            let name = path.segments.last().map(String::as_str);
            serve_file(node, path, &resolved, name, request).await
        }
        EntryKind::Directory => {
            if !path.trailing_slash {
                // Relative links in an index.html resolve against the directory only in its `/` form.
                let mut location = path.to_uri_path();
                location.push('/');
                if let Some(q) = raw_query {
                    location.push('?');
                    location.push_str(q);
                }
                let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
                let out = response.headers_mut();
                common_headers(out, path, Some(&resolved));
                set(out, header::LOCATION, &location);
                return response;
            }
            let mut index_path = path.clone();
            index_path.segments.push("index.html".to_owned());
            index_path.trailing_slash = false;
            match node.resolve(&index_path).await {
                Ok(index) if matches!(index.kind, EntryKind::File { .. }) => {
                    serve_file(node, path, &index, Some("index.html"), request).await
                }
                Ok(_) | Err(StoreError::NoSuchPath { .. }) => {
                    serve_listing(node, path, &resolved, request).await
                }
                Err(e) => store_error_response(&e),
            }
        }
        EntryKind::Other(what) => error_response(
            StatusCode::NOT_IMPLEMENTED,
            &format!(
                "{} is a {what}; ask for ?format=raw or ?format=car",
                resolved.cid
            ),
        ),
    }
}

async fn serve_file(
    node: &IpfsNode,
    path: &ContentPath,
    file: &Resolved,
    name: Option<&str>,
    request: &FileRequest<'_>,
) -> Response {
    let FileRequest {
        query,
        headers,
        head_only,
        active_allowed,
    } = *request;
    let EntryKind::File { size } = file.kind else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "not a file");
    };
    let etag = quoted(&file.cid.to_string());
    if not_modified(headers, &etag) {
        return not_modified_response(path, &etag);
    }
    let content_type = match name
        .or(query.filename.as_deref())
        .and_then(content_type_for_name)
    {
        Some(known) => known,
        None => {
            let mut head = node.read_file(file, 0..16);
            let mut first = Vec::with_capacity(16);
            while first.len() < 16 {
                match head.try_next().await {
                    Ok(Some(chunk)) => first.extend_from_slice(&chunk),
                    Ok(None) => break,
                    Err(e) => return store_error_response(&e),
                }
            }
            sniff_content_type(&first)
        }
    };
    // On the pages' origin, a document or script from IPFS is shown as text, never run.
    let content_type = if !active_allowed && is_active_type(content_type) {
        INERT_TYPE
    } else {
        content_type
    };
    let disposition = match (&query.filename, query.download) {
        (Some(filename), download) => Some(disposition(
            if download { "attachment" } else { "inline" },
            filename,
        )),
        (None, true) => Some(disposition(
            "attachment",
            name.unwrap_or(&file.cid.to_string()),
        )),
        (None, false) => None,
    };
    let answer = ByteAnswer {
        path,
        resolved: file,
        etag: &etag,
        content_type,
        disposition,
        size,
        head_only,
    };
    let (range, partial) = match range_for(headers, &etag, size) {
        RangeRequest::Unsatisfiable => return answer.unsatisfiable(),
        RangeRequest::Full => (0..size, false),
        RangeRequest::Partial(r) => (r, true),
    };
    let body = if head_only {
        Body::empty()
    } else {
        Body::from_stream(
            node.read_file(file, range.clone())
                .map_err(std::io::Error::other),
        )
    };
    answer.respond(range, partial, body)
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A small HTML listing of a directory without `index.html` (no script, links absolute), [`LISTING_PAGE`] entries
/// per page from `?start=N`, with a link to the next page.
async fn serve_listing(
    node: &IpfsNode,
    path: &ContentPath,
    dir: &Resolved,
    request: &FileRequest<'_>,
) -> Response {
    let start = request.query.listing_start;
    let etag = quoted(&format!("DirIndex-{}-{start}", dir.cid));
    if not_modified(request.headers, &etag) {
        return not_modified_response(path, &etag);
    }
    let (entries, more) = match node.list_directory_page(dir, start, LISTING_PAGE).await {
        Ok(page) => page,
        Err(e) => return store_error_response(&e),
    };
    let head_only = request.head_only;
    let base = path.to_uri_path();
    let title = html_escape(&base);
    let shown = if entries.is_empty() {
        format!("no entries from {start}")
    } else {
        format!(
            "entries {} to {}{}",
            start + 1,
            start + entries.len(),
            if more { " (more follow)" } else { "" }
        )
    };
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\n\
         <h1>{title}</h1>\n<p>{shown} &middot; <code>{cid}</code></p>\n<table>\n",
        cid = dir.cid
    );
    if !path.segments.is_empty() {
        let mut parent = path.clone();
        parent.segments.pop();
        html.push_str(&format!(
            "<tr><td><a href=\"{}\">..</a></td><td></td><td></td></tr>\n",
            html_escape(&parent.to_uri_path())
        ));
    }
    for entry in &entries {
        let href = format!("{base}{}", content_path::encode_segment(&entry.name));
        html.push_str(&format!(
            "<tr><td><a href=\"{href}\">{name}</a></td><td>{size}</td><td><a href=\"/ipfs/{cid}\"><code>{cid}</code></a></td></tr>\n",
            href = html_escape(&href),
            name = html_escape(&entry.name),
            size = entry.tsize.map(|s| s.to_string()).unwrap_or_default(),
            cid = entry.cid,
        ));
    }
    html.push_str("</table>\n");
    if more {
        html.push_str(&format!(
            "<p><a href=\"{}?start={}\">next page</a></p>\n",
            html_escape(&base),
            start + entries.len()
        ));
    }
    html.push_str("</body></html>\n");
    let length = html.len();
    let body = if head_only {
        Body::empty()
    } else {
        Body::from(html)
    };
    let mut response = (StatusCode::OK, body).into_response();
    let out = response.headers_mut();
    common_headers(out, path, Some(dir));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    set(out, header::ETAG, &etag);
    set(out, header::CONTENT_LENGTH, &length.to_string());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_start_is_a_whole_number() {
        let q = GatewayQuery::parse(Some("start=2000&x=1")).expect("parses");
        assert_eq!(q.listing_start, 2000);
        assert_eq!(GatewayQuery::parse(None).expect("parses").listing_start, 0);
        for bad in ["start=-1", "start=abc", "start=99999999999999999999999"] {
            assert!(matches!(
                GatewayQuery::parse(Some(bad)),
                Err(RequestError::InvalidStart(_))
            ));
        }
    }

    #[test]
    fn single_ranges_are_clamped_and_checked() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeRequest::Partial(0..10));
        assert_eq!(
            parse_range("bytes=90-", 100),
            RangeRequest::Partial(90..100)
        );
        assert_eq!(
            parse_range("bytes=90-1000", 100),
            RangeRequest::Partial(90..100)
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            RangeRequest::Partial(90..100)
        );
        assert_eq!(
            parse_range("bytes=-1000", 100),
            RangeRequest::Partial(0..100)
        );
        assert_eq!(
            parse_range("bytes=-99999999999999999999999", 100),
            RangeRequest::Partial(0..100)
        );
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999", 100),
            RangeRequest::Partial(0..100)
        );
    }

    #[test]
    fn unsatisfiable_ranges_are_416() {
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 100),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn unusable_ranges_fall_back_to_the_whole_body() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "items=0-1",
            "bytes=5-2",
            "bytes=0-1,3-4",
            "bytes=a-b",
            "bytes=-",
            "bytes=1-2-3",
        ] {
            assert_eq!(parse_range(header, 100), RangeRequest::Full, "{header:?}");
        }
    }

    #[test]
    fn etag_matching_is_weak_and_accepts_lists() {
        assert!(if_none_match("\"a\"", "\"a\""));
        assert!(if_none_match("W/\"a\"", "\"a\""));
        assert!(if_none_match("\"x\", \"a\"", "\"a\""));
        assert!(if_none_match("*", "\"a\""));
        assert!(!if_none_match("\"b\"", "\"a\""));
    }

    #[test]
    fn formats_come_from_the_query_or_accept() {
        let q = GatewayQuery::parse(Some("format=car&dag-scope=block&x=1")).expect("parses");
        assert_eq!(q.format, Some(Format::Car));
        assert_eq!(q.dag_scope, DagScope::Block);
        assert!(GatewayQuery::parse(Some("format=tar")).is_err());
        assert!(GatewayQuery::parse(Some("dag-scope=nope")).is_err());
        assert!(GatewayQuery::parse(Some("car-version=2")).is_err());
        assert!(GatewayQuery::parse(Some("filename=%zz")).is_err());
        assert_eq!(
            GatewayQuery::parse(Some("filename=a%20b.mp4&download=true"))
                .expect("parses")
                .filename
                .as_deref(),
            Some("a b.mp4")
        );
        assert_eq!(format_from_accept(None), Ok(Format::Unixfs));
        assert_eq!(
            format_from_accept(Some("text/html, application/vnd.ipld.raw")),
            Ok(Format::Raw)
        );
        assert_eq!(
            format_from_accept(Some("application/vnd.ipld.car; version=1; order=dfs")),
            Ok(Format::Car)
        );
        assert!(format_from_accept(Some("application/vnd.ipld.car; version=2")).is_err());
    }

    #[test]
    fn documents_scripts_and_xml_are_active_media_are_not() {
        for active in [
            "text/html; charset=utf-8",
            "TEXT/HTML",
            "image/svg+xml",
            "application/xhtml+xml",
            "application/xml",
            "text/xml",
            "application/dash+xml",
            "application/atom+xml",
            "text/javascript; charset=utf-8",
            "application/javascript",
            "text/xsl",
        ] {
            assert!(is_active_type(active), "{active}");
        }
        for inert in [
            "video/mp4",
            "video/iso.segment",
            "application/vnd.apple.mpegurl",
            "text/plain; charset=utf-8",
            "text/css; charset=utf-8",
            "application/json",
            "image/png",
            "application/octet-stream",
            RAW_TYPE,
        ] {
            assert!(!is_active_type(inert), "{inert}");
        }
        for name in [
            "a.html", "a.htm", "a.svg", "a.xml", "a.js", "a.mjs", "a.mpd",
        ] {
            let known = content_type_for_name(name).unwrap_or("");
            assert!(is_active_type(known), "{name}: {known}");
        }
    }

    #[test]
    fn media_types_follow_extensions_then_magic_bytes() {
        assert_eq!(
            content_type_for_name("index.m3u8"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(content_type_for_name("init.MP4"), Some("video/mp4"));
        assert_eq!(
            content_type_for_name("000001.m4s"),
            Some("video/iso.segment")
        );
        assert_eq!(content_type_for_name("noext"), None);
        assert_eq!(sniff_content_type(b"\0\0\0\x18ftypiso6"), "video/mp4");
        assert_eq!(
            sniff_content_type(b"\0\0\0\x18stypmsdh"),
            "video/iso.segment"
        );
        assert_eq!(sniff_content_type(b"\0\0\0\x18moof"), "video/iso.segment");
        assert_eq!(
            sniff_content_type(b"#EXTM3U\n"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(sniff_content_type(b"<html>"), "application/octet-stream");
        assert_eq!(sniff_content_type(b""), "application/octet-stream");
    }

    #[test]
    fn listing_names_are_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let d = disposition("inline", "a\"b\\c é.mp4");
        assert!(
            d.starts_with("inline; filename=\"a_b_c _.mp4\"; filename*=UTF-8''"),
            "{d}"
        );
    }

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
