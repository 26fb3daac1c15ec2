//! `?format=raw` / `application/vnd.ipld.raw`: the terminal block of a path, verbatim (whole or one range), as a
//! download.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;

use super::media_type::RAW_TYPE;
use super::ranges::{RangeRequest, not_modified, range_for};
use super::request::GatewayQuery;
use super::response::{ByteAnswer, disposition, not_modified_response, quoted};
use crate::store::content_path::ContentPath;
use crate::store::{IpfsNode, Resolved};

pub(super) fn serve_raw(
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
