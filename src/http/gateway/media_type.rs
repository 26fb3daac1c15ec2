//! Media types: those of the trustless answers, a file's by its name's extension or else by its first bytes, and
//! which types are active (can run script with the origin they are served from) and what they are served as
//! where they may not be.

/// Media type of a single block.
pub(crate) const RAW_TYPE: &str = "application/vnd.ipld.raw";
/// Media type of the CAR answers (the order and duplicate parameters say what the stream holds).
pub(crate) const CAR_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";

/// Media type active content is served as where it may not be active.
pub(crate) const INERT_TYPE: &str = "text/plain; charset=utf-8";

/// Whether a media type can run script or render as a document with the origin it is served from: HTML, XHTML,
/// SVG, any XML (an XML document may hold XHTML with script) and script itself.
pub(crate) fn is_active_type(content_type: &str) -> bool {
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

/// The media type of a file name's extension, if zipIQ knows it.
pub(crate) fn content_type_for_name(name: &str) -> Option<&'static str> {
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
pub(crate) fn sniff_content_type(head: &[u8]) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
