//! `?format=car` / `application/vnd.ipld.car`: a CAR v1 stream of the path's blocks and the terminal DAG (as far
//! as `dag-scope` says), as a download.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use super::media_type::CAR_TYPE;
use super::ranges::not_modified;
use super::request::{GatewayQuery, scope_name};
use super::response::{
    common_headers, disposition, not_modified_response, quoted, set, store_error_response,
};
use crate::store::content_path::ContentPath;
use crate::store::{IpfsNode, Resolved};

pub(super) fn serve_car(
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
