//! HLS playlists of a broadcast's chunks (RFC 8216, fMP4 segments): a live playlist with a sliding window while
//! the broadcast runs, a VOD playlist (`EXT-X-ENDLIST`) once it has ended, and the file names used inside the
//! broadcast's UnixFS directory, whose `index.m3u8` uses relative URIs so it plays from any IPFS gateway.
//!
//! Pure: chunks in, text out. A new init segment (codec or resolution change) starts a discontinuity with its own
//! `EXT-X-MAP`.

use std::fmt::Write;

/// One chunk as a playlist sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistChunk {
    /// The chunk's sequence number in the broadcast.
    pub seq: i64,
    /// Whether it is an init segment.
    pub init: bool,
    /// Where a player fetches it: `/ipfs/<cid>` on this server, or a relative file name inside the directory.
    pub uri: String,
    /// Media duration in milliseconds (0 for init segments).
    pub duration_ms: i64,
}

/// Live (sliding window of the last `window` media segments) or VOD (everything, ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// A live playlist of the last `window` media segments.
    Live {
        /// How many media segments it lists (at least one).
        window: usize,
    },
    /// A VOD playlist of every segment, ended.
    Vod,
}

/// The file name of a chunk inside the broadcast's directory.
pub fn file_name(seq: i64, init: bool) -> String {
    if init {
        format!("init-{seq:06}.mp4")
    } else {
        format!("{seq:06}.m4s")
    }
}

/// Writes the playlist. Chunks must be in sequence order.
pub fn playlist(chunks: &[PlaylistChunk], kind: PlaylistKind) -> String {
    // Each media segment with the init segment that applies to it.
    let mut segments: Vec<(&PlaylistChunk, Option<&PlaylistChunk>)> = Vec::new();
    let mut current_init: Option<&PlaylistChunk> = None;
    // Init segments that applied to no segment given (when `chunks` is a tail: every init and the last media
    // segments) still count towards the discontinuity sequence.
    let mut unused_inits = 0u64;
    for c in chunks {
        if c.init {
            if current_init.is_some()
                && segments
                    .last()
                    .is_none_or(|(_, i)| !same_init(*i, current_init))
            {
                unused_inits += 1;
            }
            current_init = Some(c);
        } else {
            segments.push((c, current_init));
        }
    }
    let shown: &[(&PlaylistChunk, Option<&PlaylistChunk>)] = match kind {
        PlaylistKind::Live { window } => {
            let start = segments.len().saturating_sub(window.max(1));
            &segments[start..]
        }
        PlaylistKind::Vod => &segments,
    };
    let target = shown
        .iter()
        .map(|(c, _)| (c.duration_ms.max(0) as u64).div_ceil(1000))
        .max()
        .unwrap_or(2)
        .max(1);
    // Discontinuities before the window, for EXT-X-DISCONTINUITY-SEQUENCE.
    let skipped = segments.len() - shown.len();
    let mut discontinuities_before = 0u64;
    for w in segments[..skipped.min(segments.len())].windows(2) {
        if !same_init(w[0].1, w[1].1) {
            discontinuities_before += 1;
        }
    }
    if skipped > 0
        && skipped < segments.len()
        && !same_init(segments[skipped - 1].1, segments[skipped].1)
    {
        discontinuities_before += 1;
    }
    if skipped == 0 {
        discontinuities_before += unused_inits;
    }

    let mut out = String::new();
    out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let media_sequence = shown.first().map(|(c, _)| c.seq).unwrap_or(0);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
    if discontinuities_before > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities_before}"
        );
    }
    if kind == PlaylistKind::Vod {
        out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut last_init: Option<&PlaylistChunk> = None;
    for (i, (segment, init)) in shown.iter().enumerate() {
        if i == 0 || !same_init(last_init, *init) {
            if i > 0 {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(init) = init {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init.uri);
            }
            last_init = *init;
        }
        let _ = writeln!(
            out,
            "#EXTINF:{}.{:03},",
            segment.duration_ms.max(0) / 1000,
            segment.duration_ms.max(0) % 1000
        );
        out.push_str(&segment.uri);
        out.push('\n');
    }
    if kind == PlaylistKind::Vod {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

fn same_init(a: Option<&PlaylistChunk>, b: Option<&PlaylistChunk>) -> bool {
    a.map(|c| c.seq) == b.map(|c| c.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks() -> Vec<PlaylistChunk> {
        let mut v = vec![PlaylistChunk {
            seq: 0,
            init: true,
            uri: "/ipfs/init0".into(),
            duration_ms: 0,
        }];
        for seq in 1..=5 {
            v.push(PlaylistChunk {
                seq,
                init: false,
                uri: format!("/ipfs/m{seq}"),
                duration_ms: 2000 + seq * 10,
            });
        }
        v
    }

    #[test]
    fn vod_lists_everything_and_ends() {
        let text = playlist(&chunks(), PlaylistKind::Vod);
        assert!(text.starts_with(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:1\n"
        ));
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"/ipfs/init0\"\n#EXTINF:2.010,\n/ipfs/m1\n"));
        assert!(text.ends_with("#EXTINF:2.050,\n/ipfs/m5\n#EXT-X-ENDLIST\n"));
        assert_eq!(text.matches("#EXTINF").count(), 5);
    }

    #[test]
    fn live_slides_a_window_and_keeps_the_map() {
        let text = playlist(&chunks(), PlaylistKind::Live { window: 3 });
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:3\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"/ipfs/init0\"\n"));
        assert_eq!(text.matches("#EXTINF").count(), 3);
        assert!(!text.contains("ENDLIST"));
        assert!(!text.contains("/ipfs/m2\n"));
    }

    /// [`chunks`] with a second init segment (`/ipfs/init3`) at position 3, renumbered.
    fn chunks_with_a_new_init() -> Vec<PlaylistChunk> {
        let mut c = chunks();
        c.insert(
            3,
            PlaylistChunk {
                seq: 3,
                init: true,
                uri: "/ipfs/init3".into(),
                duration_ms: 0,
            },
        );
        for (i, x) in c.iter_mut().enumerate() {
            x.seq = i as i64;
        }
        c
    }

    #[test]
    fn a_new_init_segment_is_a_discontinuity_with_its_own_map() {
        let c = chunks_with_a_new_init();
        let text = playlist(&c, PlaylistKind::Vod);
        let disc = text
            .find("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"/ipfs/init3\"")
            .expect("discontinuity");
        assert!(disc > text.find("/ipfs/m2").unwrap());
        // A live window that starts after the change counts the discontinuity before it.
        let live = playlist(&c, PlaylistKind::Live { window: 2 });
        assert!(live.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{live}");
        assert!(live.contains("#EXT-X-MAP:URI=\"/ipfs/init3\""));
    }

    #[test]
    fn a_tail_of_every_init_and_the_last_segments_gives_the_same_live_playlist() {
        let c = chunks_with_a_new_init();
        let full = playlist(&c, PlaylistKind::Live { window: 2 });
        let tail: Vec<PlaylistChunk> = c
            .iter()
            .enumerate()
            .filter(|(i, x)| x.init || *i >= c.len() - 2)
            .map(|(_, x)| x.clone())
            .collect();
        assert_eq!(playlist(&tail, PlaylistKind::Live { window: 2 }), full);
    }

    #[test]
    fn empty_broadcast_is_a_valid_playlist() {
        let text = playlist(&[], PlaylistKind::Live { window: 3 });
        assert!(text.starts_with("#EXTM3U"));
        assert!(!text.contains("#EXTINF"));
    }

    #[test]
    fn file_names_sort_in_order() {
        assert_eq!(file_name(1, false), "000001.m4s");
        assert_eq!(file_name(0, true), "init-000000.mp4");
        assert!(file_name(9, false) < file_name(10, false));
    }
}
