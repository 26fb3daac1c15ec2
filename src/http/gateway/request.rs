//! What a gateway request asks for, from its query string and `Accept` header: the [`Format`], the trustless
//! parameters (`dag-scope`, `car-version`, `entity-bytes`), the download name and a listing's page. Pure parsers
//! that return errors, never panic.

use axum::http::HeaderMap;

use crate::store::DagScope;

/// What representation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Deserialized UnixFS: file bytes, `index.html` or a directory listing.
    Unixfs,
    /// One block, verbatim.
    Raw,
    /// A CAR v1 of the DAG.
    Car,
}

/// The query parameters the gateway understands; others are ignored (clients add cache busters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct GatewayQuery {
    pub(crate) format: Option<Format>,
    pub(crate) dag_scope: DagScope,
    pub(crate) entity_bytes: bool,
    pub(crate) filename: Option<String>,
    pub(crate) download: bool,
    /// The first entry of a directory listing's page (`?start=N`, 0-based).
    pub(crate) listing_start: usize,
}

/// Why a request cannot be served as asked (each is a 4xx/501 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
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
    pub(crate) fn parse(query: Option<&str>) -> Result<GatewayQuery, RequestError> {
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
pub(crate) fn format_from_accept(accept: Option<&str>) -> Result<Format, RequestError> {
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

pub(super) fn scope_name(scope: DagScope) -> &'static str {
    match scope {
        DagScope::All => "all",
        DagScope::Entity => "entity",
        DagScope::Block => "block",
    }
}

/// What serving a file depends on besides the file.
pub(super) struct FileRequest<'a> {
    pub(super) query: &'a GatewayQuery,
    pub(super) headers: &'a HeaderMap,
    pub(super) head_only: bool,
    /// Whether active types (HTML, script, SVG, XML) may keep their media types: on the separate gateway origin.
    pub(super) active_allowed: bool,
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
}
