//! The HTML listing of a directory without `index.html`: no script, absolute links, escaped names, one page of
//! [`LISTING_PAGE`] entries from `?start=N` with a link to the next.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ranges::not_modified;
use super::request::FileRequest;
use super::response::{common_headers, not_modified_response, quoted, set, store_error_response};
use crate::store::content_path::{self, ContentPath};
use crate::store::{IpfsNode, Resolved};

/// Entries per page of a directory listing.
pub(crate) const LISTING_PAGE: usize = 1000;

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
pub(super) async fn serve_listing(
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
    fn listing_names_are_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
