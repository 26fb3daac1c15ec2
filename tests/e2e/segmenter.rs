//! The segmenter on real RTP captures (tests/data, made by scripts/make-fixtures from ffmpeg/libx264/libopus
//! output, packetized as zipIQ's WHIP client sends them): every output decodes cleanly in ffmpeg, segments start on
//! keyframes, durations follow the target, and loss, reordering, wrap, a resolution change, a reconnect,
//! audio-only and video-only streams are handled.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use zipiq::media::capture::Capture;
use zipiq::media::{MediaKind, Segment, SegmentKind, Segmenter, SegmenterConfig, TapEvent};

use crate::common::{codecs, tool};

fn fixture(name: &str) -> Capture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let data = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/make-fixtures)", path.display()));
    Capture::parse(&data).expect("fixture parses")
}

fn run(events: Vec<TapEvent>) -> (Vec<Segment>, zipiq::media::SegmenterCounters) {
    let mut s = Segmenter::new(SegmenterConfig {
        target_duration: Duration::from_secs(2),
        max_segment_bytes: 8 << 20,
    });
    let mut out = Vec::new();
    for e in events {
        out.extend(s.push(e));
    }
    out.extend(s.finish());
    (out, s.counters)
}

/// Decodes init + media segments with ffmpeg; returns (stderr, ffprobe json).
fn decode(segments: &[&Segment]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broadcast.mp4");
    let mut bytes = Vec::new();
    for s in segments {
        bytes.extend_from_slice(&s.bytes);
    }
    std::fs::write(&file, bytes).unwrap();
    let ffmpeg = Command::new(tool("ffmpeg"))
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let probe = Command::new(tool("ffprobe"))
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,duration:format=duration",
            "-of",
            "json",
        ])
        .arg(&file)
        .output()
        .expect("ffprobe runs");
    assert!(
        probe.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        probe.stderr.is_empty(),
        "ffprobe complains: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let json = serde_json::from_slice(&probe.stdout).expect("ffprobe json");
    (String::from_utf8_lossy(&ffmpeg.stderr).into_owned(), json)
}

fn duration(json: &serde_json::Value) -> f64 {
    json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

/// Checks the shape: init first, every media segment independent (starts on a keyframe) and sized by the target.
fn assert_shape(segments: &[Segment]) {
    assert_eq!(segments[0].kind, SegmentKind::Init);
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(s.seq, i as u64, "segments are numbered in order");
        if s.kind == SegmentKind::Media {
            assert!(s.independent, "segment {i} starts with a keyframe");
            assert!(
                s.duration <= Duration::from_millis(2100),
                "segment {i} lasts {:?}",
                s.duration
            );
        }
    }
}

fn media(segments: &[Segment]) -> Vec<&Segment> {
    segments.iter().collect()
}

#[test]
fn clean_capture_makes_keyframe_aligned_segments_that_decode() {
    let cap = fixture("h264-opus-360p.zqcap");
    let (segments, counters) = run(cap.events(Instant::now()));
    assert_shape(&segments);
    let media_count = segments
        .iter()
        .filter(|s| s.kind == SegmentKind::Media)
        .count();
    assert_eq!(media_count, 2, "4 s at a 2 s target: {segments:?}");
    assert_eq!(
        segments[1].duration,
        Duration::from_secs(2),
        "cut at the keyframe after 2 s"
    );
    assert_eq!(counters.video_drops.loss, 0);
    let (errors, probe) = decode(&media(&segments));
    assert!(errors.is_empty(), "ffmpeg decodes cleanly: {errors}");
    assert_eq!(codecs(&probe), vec!["h264", "opus"]);
    assert_eq!(probe["streams"][0]["width"], 640);
    assert_eq!(probe["streams"][0]["height"], 360);
    let d = duration(&probe);
    assert!(
        (d - 4.0).abs() < 0.15,
        "total duration {d} s matches the 4 s input"
    );
    // Each media segment also decodes on its own after the init segment.
    for s in segments.iter().filter(|s| s.kind == SegmentKind::Media) {
        let (errors, _) = decode(&[&segments[0], s]);
        assert!(errors.is_empty(), "segment {} alone: {errors}", s.seq);
    }
}

#[test]
fn reordering_and_wrap_give_the_same_segments_as_the_clean_capture() {
    let cap = fixture("h264-opus-360p.zqcap");
    let start = Instant::now();
    let (clean, _) = run(cap.events(start));
    // Swap neighbouring video packets (never the very first, whose arrival anchors the timeline).
    let mut reordered = cap.clone();
    let mut i = 10;
    while i + 1 < reordered.records.len() {
        if reordered.records[i].kind == MediaKind::Video
            && reordered.records[i + 1].kind == MediaKind::Video
        {
            reordered.records.swap(i, i + 1);
        }
        i += 7;
    }
    let (got, counters) = run(reordered.events(start));
    assert_eq!(counters.video_drops.loss, 0, "reordering is not loss");
    assert_eq!(got.len(), clean.len());
    for (a, b) in got.iter().zip(&clean) {
        assert_eq!(a.bytes, b.bytes, "segment {} identical", a.seq);
    }
    // Sequence numbers and timestamps that wrap during the broadcast.
    let mut wrapped = cap.clone();
    for r in &mut wrapped.records {
        let h = &mut r.packet.header;
        match r.kind {
            MediaKind::Video => {
                h.sequence_number = h.sequence_number.wrapping_sub(1000 + 150);
                h.timestamp = h.timestamp.wrapping_add(u32::MAX - 90_000 - 100_000);
            }
            MediaKind::Audio => {
                h.sequence_number = h.sequence_number.wrapping_sub(5000 + 100);
                h.timestamp = h.timestamp.wrapping_add(u32::MAX - 48_000 - 96_000);
            }
        }
    }
    let (got, _) = run(wrapped.events(start));
    assert_eq!(got.len(), clean.len());
    for (a, b) in got.iter().zip(&clean) {
        assert_eq!(
            a.bytes, b.bytes,
            "segment {} identical across the wrap",
            a.seq
        );
    }
}

#[test]
fn loss_drops_damaged_pictures_until_the_next_keyframe_and_still_decodes() {
    let cap = fixture("h264-opus-360p.zqcap");
    let mut lossy = cap.clone();
    let video_positions: Vec<usize> = lossy
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == MediaKind::Video)
        .map(|(i, _)| i)
        .collect();
    // Lose 3 video packets at about 0.5 s, 1.7 s and 2.9 s.
    for k in [
        video_positions.len() * 3 / 8,
        video_positions.len() * 5 / 12,
        video_positions.len() * 3 / 4,
    ]
    .iter()
    .rev()
    {
        lossy.records.remove(video_positions[*k]);
    }
    let (segments, counters) = run(lossy.events(Instant::now()));
    assert!(counters.video_drops.loss >= 3, "{counters:?}");
    assert!(
        counters.video_drops.waiting_for_keyframe > 0,
        "video resumes only at the next keyframe"
    );
    assert_shape(&segments);
    let (errors, probe) = decode(&media(&segments));
    assert!(
        errors.is_empty(),
        "no broken picture reaches the file: {errors}"
    );
    assert_eq!(codecs(&probe), vec!["h264", "opus"]);
}

#[test]
fn a_resolution_change_starts_a_new_init_segment() {
    let cap = fixture("h264-opus-resize.zqcap");
    let (segments, _) = run(cap.events(Instant::now()));
    let inits: Vec<usize> = segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == SegmentKind::Init)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        inits.len(),
        2,
        "{:?}",
        segments
            .iter()
            .map(|s| (s.kind, s.duration))
            .collect::<Vec<_>>()
    );
    let first: Vec<&Segment> = segments[..inits[1]].iter().collect();
    let second: Vec<&Segment> = segments[inits[1]..].iter().collect();
    let (errors, probe) = decode(&first);
    assert!(errors.is_empty(), "{errors}");
    assert_eq!(probe["streams"][0]["width"], 640);
    let (errors, probe) = decode(&second);
    assert!(errors.is_empty(), "{errors}");
    assert_eq!(probe["streams"][0]["width"], 320);
    assert_eq!(probe["streams"][0]["height"], 180);
}

#[test]
fn a_reconnect_is_a_discontinuity_with_time_still_moving_forward() {
    let cap = fixture("h264-opus-360p.zqcap");
    let start = Instant::now();
    let mut events = cap.events(start);
    events.push(TapEvent::PublisherLost);
    // The publisher comes back 3 s later with new SSRCs and numbering.
    let mut again = cap.clone();
    for r in &mut again.records {
        r.packet.header.ssrc ^= 0xdead_beef;
        r.packet.header.sequence_number = r.packet.header.sequence_number.wrapping_add(12_345);
        r.packet.header.timestamp = r.packet.header.timestamp.wrapping_add(777_777);
    }
    let restart = start + Duration::from_secs(7);
    events.extend(again.events(restart));
    let (segments, _) = run(events);
    let media_segments: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.kind == SegmentKind::Media)
        .collect();
    assert_eq!(media_segments.len(), 4);
    for w in media_segments.windows(2) {
        assert!(
            w[1].start_ms >= w[0].end_ms,
            "time moves forward: {} then {}",
            w[0].end_ms,
            w[1].start_ms
        );
    }
    assert!(
        media_segments[2].start_ms >= 7000,
        "the second run starts when it arrived"
    );
    // Same codecs and size: one init segment serves both runs.
    assert_eq!(
        segments
            .iter()
            .filter(|s| s.kind == SegmentKind::Init)
            .count(),
        1
    );
    let (errors, _) = decode(&media(&segments));
    assert!(errors.is_empty(), "{errors}");
}

#[test]
fn audio_only_and_video_only_streams() {
    let cap = fixture("h264-opus-360p.zqcap");
    let start = Instant::now();
    let mut audio_only = cap.clone();
    audio_only.records.retain(|r| r.kind == MediaKind::Audio);
    audio_only.header.video = None;
    let (segments, _) = run(audio_only.events(start));
    assert_shape(&segments);
    let (errors, probe) = decode(&media(&segments));
    assert!(errors.is_empty(), "{errors}");
    assert_eq!(codecs(&probe), vec!["opus"]);
    assert!((duration(&probe) - 4.0).abs() < 0.1);

    let mut video_only = cap.clone();
    video_only.records.retain(|r| r.kind == MediaKind::Video);
    video_only.header.audio = None;
    let (segments, _) = run(video_only.events(start));
    assert_shape(&segments);
    let (errors, probe) = decode(&media(&segments));
    assert!(errors.is_empty(), "{errors}");
    assert_eq!(codecs(&probe), vec!["h264"]);
}
