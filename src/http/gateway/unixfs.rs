//! Deserialized UnixFS answers: a file's bytes (typed by name or first bytes, inert where active types may not run,
//! whole or one range), a directory's `index.html`, the redirect of a directory to its `/` form, or its listing.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use super::listing::serve_listing;
use super::media_type::{INERT_TYPE, content_type_for_name, is_active_type, sniff_content_type};
use super::ranges::{RangeRequest, not_modified, range_for};
use super::request::FileRequest;
use super::response::{
    ByteAnswer, common_headers, disposition, error_response, not_modified_response, quoted, set,
    store_error_response,
};
use crate::store::content_path::ContentPath;
use crate::store::{EntryKind, IpfsNode, Resolved, StoreError};

pub(super) async fn serve_unixfs(
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
