//! The headers and shapes every gateway answer shares: CORS, the immutable `Cache-Control`, the `X-Ipfs-*` headers,
//! short plain-text errors (store errors mapped to their statuses), 304s, `Content-Disposition`, and the answers
//! that carry bytes of a known size (files and raw blocks, whole or one range).

use std::ops::Range;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::content_path::{self, ContentPath};
use crate::store::{Cid, Resolved, StoreError};

/// `Cache-Control` of every successful answer: content addressed by CID never changes.
pub(crate) const IMMUTABLE: &str = "public, max-age=29030400, immutable";

const X_IPFS_PATH: HeaderName = HeaderName::from_static("x-ipfs-path");
const X_IPFS_ROOTS: HeaderName = HeaderName::from_static("x-ipfs-roots");
const EXPOSED_HEADERS: &str =
    "Content-Range, Content-Length, Content-Type, ETag, X-Ipfs-Path, X-Ipfs-Roots";

fn value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

pub(super) fn set(headers: &mut HeaderMap, name: HeaderName, text: &str) {
    if let Some(v) = value(text) {
        headers.insert(name, v);
    }
}

pub(super) fn cors(headers: &mut HeaderMap) {
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
pub(super) fn error_response(status: StatusCode, reason: &str) -> Response {
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

pub(super) fn store_error_response(error: &StoreError) -> Response {
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
pub(super) fn common_headers(
    headers: &mut HeaderMap,
    path: &ContentPath,
    resolved: Option<&Resolved>,
) {
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

pub(super) fn quoted(tag: &str) -> String {
    format!("\"{tag}\"")
}

/// A filename safe inside a quoted `Content-Disposition` parameter, plus its RFC 8187 form.
pub(super) fn disposition(kind: &str, filename: &str) -> String {
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

pub(super) fn not_modified_response(path: &ContentPath, etag: &str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    let headers = response.headers_mut();
    common_headers(headers, path, None);
    set(headers, header::ETAG, etag);
    response
}

/// Builds answers that carry bytes of a known size (files and raw blocks).
pub(super) struct ByteAnswer<'a> {
    pub(super) path: &'a ContentPath,
    pub(super) resolved: &'a Resolved,
    pub(super) etag: &'a str,
    pub(super) content_type: &'a str,
    pub(super) disposition: Option<String>,
    pub(super) size: u64,
    pub(super) head_only: bool,
}

impl ByteAnswer<'_> {
    pub(super) fn respond(&self, range: Range<u64>, partial: bool, body: Body) -> Response {
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

    pub(super) fn unsatisfiable(&self) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_quoted_safely() {
        let d = disposition("inline", "a\"b\\c é.mp4");
        assert!(
            d.starts_with("inline; filename=\"a_b_c _.mp4\"; filename*=UTF-8''"),
            "{d}"
        );
    }
}
