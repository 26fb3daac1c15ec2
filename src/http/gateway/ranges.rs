//! Range and conditional requests: a single `Range` (RFC 9110 §14.1.2) against a known size, `If-Range`, and
//! `If-None-Match` against a strong ETag (weak comparison, `*` only for content that exists).

use std::ops::Range;

use axum::http::{HeaderMap, header};

/// The answer to a `Range` header for a representation of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// No usable single range: send everything (200). Multi-range requests end here too.
    Full,
    /// One satisfiable range, end exclusive (206).
    Partial(Range<u64>),
    /// A syntactically valid range that selects nothing (416).
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 §14.1.2) against `size`. Syntax errors and multi-ranges give `Full`.
pub(crate) fn parse_range(value: &str, size: u64) -> RangeRequest {
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
pub(crate) fn if_none_match(value: &str, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = bare(etag);
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || bare(tag) == ours)
}

/// Whether `If-None-Match` matches `etag` of content that exists (`*` included).
pub(super) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| if_none_match(v, etag))
}

/// Whether `If-None-Match` names `etag` itself, for answering before knowing whether the content exists: `*` means
/// "any current representation", so it can only match once the content has been found.
pub(super) fn names_etag(headers: &HeaderMap, etag: &str) -> bool {
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

pub(super) fn range_for(headers: &HeaderMap, etag: &str, size: u64) -> RangeRequest {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
