//! FFmpeg 8's native WHIP muxer (`-f whip`, through PyAV 18, which bundles FFmpeg 8.1 built with GnuTLS) publishes
//! H.264 + Opus (issue 18). FFmpeg offers `a=setup:passive`, so zipIQ is the DTLS client, and GnuTLS signs its
//! ServerKeyExchange with a P-224 key and SHA-256 (patches/README.md). A webrtc-rs viewer watches: its video
//! decodes to frames with ffmpeg and its audio arrives; after the publisher leaves, the recording's segments decode
//! with ffprobe/ffmpeg. Once with one host candidate (udp_listen on 127.0.0.1) and once with two (udp_listen on
//! 0.0.0.0 with the loopback address included).
//!
//! Needs ZIPIQ_TEST_PYTHON (a python with PyAV 18: scripts/test's venv, scripts/requirements-test.txt) and
//! ZIPIQ_TEST_FFMPEG / ZIPIQ_TEST_FFPROBE (Debian's, to decode what arrived).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use zipiq::media::h264::H264Depacketizer;
use zipiq_client::{WatchOptions, WhepClient, h264_capability};

use crate::common::*;

/// How long FFmpeg publishes.
const PUBLISH_SECS: u64 = 8;
/// The most the publisher process may take, from start to exit (ICE + DTLS + publishing + DELETE).
const PUBLISHER_DEADLINE: Duration = Duration::from_secs(PUBLISH_SECS + 30);

fn python() -> String {
    let python = std::env::var("ZIPIQ_TEST_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    assert!(
        Path::new(&python).exists(),
        "{python} is missing: the FFmpeg WHIP test needs scripts/test's venv with PyAV (set ZIPIQ_TEST_PYTHON)"
    );
    python
}

fn publish_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/ffmpeg_whip_publish.py")
}

/// What the publisher process left: its exit status, stdout and stderr.
struct Published {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the PyAV publisher to its end (killed at PUBLISHER_DEADLINE).
async fn run_publisher(url: String, key: String) -> Published {
    let mut child = tokio::process::Command::new(python())
        .arg(publish_script())
        .arg(&url)
        .arg(&key)
        .arg(PUBLISH_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the python publisher starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let run = async {
        let (_, _, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        status
    };
    let outcome = tokio::time::timeout(PUBLISHER_DEADLINE, run).await;
    let success = match outcome {
        Ok(status) => status.map(|s| s.success()).unwrap_or(false),
        Err(_) => {
            let _ = child.kill().await;
            err.extend_from_slice(b"\n(test: publisher killed at its deadline)");
            false
        }
    };
    Published {
        success,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// Turns the viewer's H.264 RTP into an Annex B stream (SPS and PPS before each keyframe).
fn annex_b(packets: &[(u16, u32, bool, Bytes)]) -> (Vec<u8>, usize) {
    let mut depacketizer = H264Depacketizer::new(None, None);
    let mut out = Vec::new();
    let mut units = 0;
    let now = Instant::now();
    let mut push = |au: zipiq::media::h264::AccessUnit, dep: &H264Depacketizer| {
        let start = [0u8, 0, 0, 1];
        if au.keyframe {
            let (sps, pps) = dep.parameter_sets();
            for ps in [sps, pps].into_iter().flatten() {
                out.extend_from_slice(&start);
                out.extend_from_slice(ps);
            }
        }
        for nal in &au.nalus {
            out.extend_from_slice(&start);
            out.extend_from_slice(nal);
        }
        units += 1;
    };
    for (seq, ts, marker, payload) in packets {
        let aus = depacketizer.push(packet(*seq, *ts, *marker, payload.clone()), now);
        for au in aus {
            push(au, &depacketizer);
        }
    }
    for au in depacketizer.flush() {
        push(au, &depacketizer);
    }
    (out, units)
}

/// Decodes `file` (of ffmpeg format `format`, or probed when None) with ffmpeg: (frames of stream `v:0`, ffprobe's
/// streams and duration as JSON, ffmpeg's error output).
fn decode(file: &Path, format: Option<&str>) -> (u64, serde_json::Value, String) {
    let mut args: Vec<String> = vec!["-v".into(), "error".into()];
    if let Some(f) = format {
        args.extend(["-f".into(), f.into()]);
    }
    let probe = std::process::Command::new(tool("ffprobe"))
        .args(&args)
        .args([
            "-count_frames",
            "-show_entries",
            "stream=codec_name,codec_type,width,height,nb_read_frames:format=duration",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    assert!(
        probe.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("ffprobe json");
    let frames = json["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == "video"))
        .and_then(|s| s["nb_read_frames"].as_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let ffmpeg = std::process::Command::new(tool("ffmpeg"))
        .args(&args)
        .arg("-i")
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(ffmpeg.status.success(), "ffmpeg decodes {}", file.display());
    (
        frames,
        json,
        String::from_utf8_lossy(&ffmpeg.stderr).into_owned(),
    )
}

/// `candidates`: how many host candidates the answers carry (two: at least two, as many as the machine has
/// addresses).
async fn ffmpeg_publishes_and_a_viewer_and_the_recording_decode(
    overrides: &str,
    candidates: usize,
) {
    let server = start_server(overrides).await;
    let publisher = tokio::spawn(run_publisher(server.whip("live"), server.key.clone()));

    // The publisher is live once ICE and DTLS are done and media flows.
    let live = eventually(Duration::from_secs(20), || {
        server.server.sfu.is_live("live") || publisher.is_finished()
    })
    .await
        && server.server.sfu.is_live("live");
    if !live {
        let published = publisher.await.expect("publisher task");
        panic!(
            "FFmpeg never went live (success {}):\nstdout: {}\nstderr: {}",
            published.success, published.stdout, published.stderr
        );
    }

    let viewer = WhepClient::connect(
        &server.whep("live"),
        None,
        WatchOptions {
            video: vec![h264_capability()],
            ..WatchOptions::default()
        },
    )
    .await
    .expect("viewer connects");
    // Host addresses announced: the component-1 candidates (webrtc-rs writes each candidate for RTCP too).
    let answer_candidates = viewer
        .negotiated
        .answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter(|c| c.split_whitespace().nth(1) == Some("1"))
        .filter_map(|c| c.split_whitespace().nth(4))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        answer_candidates == candidates || (candidates > 1 && answer_candidates >= candidates),
        "{answer_candidates} host candidates in the answer, {candidates} wanted:\n{}",
        viewer.negotiated.answer
    );

    // Watch until FFmpeg ends (it DELETEs its session after PUBLISH_SECS).
    let mut viewer = viewer;
    let mut video = Vec::new();
    let mut audio = 0usize;
    let mut audio_bytes = 0usize;
    let watch_until = tokio::time::Instant::now() + PUBLISHER_DEADLINE;
    while !publisher.is_finished() && tokio::time::Instant::now() < watch_until {
        match tokio::time::timeout(Duration::from_millis(200), viewer.packets.recv()).await {
            Ok(Some(p)) if p.kind == RTPCodecType::Video => {
                video.push((p.sequence_number, p.timestamp, p.marker, p.payload))
            }
            Ok(Some(p)) if p.kind == RTPCodecType::Audio && !p.payload.is_empty() => {
                audio += 1;
                audio_bytes += p.payload.len();
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => break,
        }
    }
    let published = publisher.await.expect("publisher task");
    assert!(
        published.success,
        "FFmpeg's publisher failed:\nstdout: {}\nstderr: {}",
        published.stdout, published.stderr
    );
    let _ = viewer.close().await;

    // Video: the viewer's H.264 decodes to frames of FFmpeg's size.
    let dir = tempfile::tempdir().expect("temp dir");
    let (h264, units) = annex_b(&video);
    let file = dir.path().join("viewer.h264");
    std::fs::write(&file, &h264).expect("write viewer.h264");
    let (frames, json, errors) = decode(&file, Some("h264"));
    let viewer_frames = frames;
    let seconds = PUBLISH_SECS as f64;
    assert!(
        frames as f64 >= seconds * 30.0 * 0.5,
        "the viewer's video decodes to {frames} frames ({units} access units, {} packets): {json}\n{errors}",
        video.len()
    );
    let stream = &json["streams"][0];
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(320), Some(240)),
        "{json}"
    );
    assert!(
        errors.trim().is_empty(),
        "ffmpeg decoding the viewer's video: {errors}"
    );
    // Audio: 20 ms Opus frames, 50 a second.
    assert!(
        audio as f64 >= seconds * 50.0 * 0.5,
        "the viewer got {audio} audio packets ({audio_bytes} bytes)"
    );

    // The recording: the broadcast ends after the grace period; init + media segments decode as one file.
    let db = server.server.db.clone();
    let stream = db
        .find_stream("live")
        .await
        .expect("db")
        .expect("stream live");
    let mut broadcast = None;
    for _ in 0..200 {
        let b = db
            .broadcasts_of_stream(stream.id, 5, None)
            .await
            .expect("db");
        if let Some(b) = b.into_iter().find(|b| b.root_cid.is_some()) {
            broadcast = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let broadcast = broadcast.expect("the broadcast ends and gets a root CID");
    let chunks = db.chunks_of(broadcast.id).await.expect("chunks");
    assert!(chunks.len() >= 3, "init + media segments: {chunks:?}");
    let http = reqwest::Client::new();
    let mut recording = Vec::new();
    for c in &chunks {
        let r = http
            .get(format!("{}/ipfs/{}", server.base, c.cid))
            .send()
            .await
            .expect("gateway");
        assert_eq!(r.status(), 200);
        recording.extend_from_slice(&r.bytes().await.expect("chunk bytes"));
    }
    let file = dir.path().join("recording.mp4");
    std::fs::write(&file, &recording).expect("write recording.mp4");
    let (frames, json, errors) = decode(&file, None);
    let mut names = codecs(&json);
    names.sort();
    assert_eq!(names, ["h264", "opus"], "{json}");
    let duration: f64 = json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!(
        duration >= seconds - 3.0,
        "the recording lasts {duration} s of {PUBLISH_SECS}: {json}"
    );
    assert!(
        frames as f64 >= (seconds - 3.0) * 30.0,
        "the recording decodes to {frames} frames: {json}"
    );
    assert!(
        errors.trim().is_empty(),
        "ffmpeg decoding the recording: {errors}"
    );
    eprintln!(
        "ffmpeg_whip: {answer_candidates} host address(es); publisher {}; viewer: {} video packets, {units} access \
         units, {viewer_frames} frames decoded, {audio} audio packets; recording: {} chunks, {duration:.2} s, \
         {frames} frames",
        published.stdout.trim(),
        video.len(),
        chunks.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg8_whip_publishes_h264_opus_with_one_host_candidate() {
    ffmpeg_publishes_and_a_viewer_and_the_recording_decode("[media]\ngrace_period_ms = 500\n", 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg8_whip_publishes_h264_opus_with_two_host_candidates() {
    ffmpeg_publishes_and_a_viewer_and_the_recording_decode(
        "[media]\ngrace_period_ms = 500\nudp_listen = \"0.0.0.0:0\"\ninclude_loopback = true\n",
        2,
    )
    .await;
}
