//! Cuts a capture (`tests/data/*.zqcap`) into CMAF segments and writes them to a directory (init-*.mp4,
//! NNNNNN.m4s and broadcast.mp4 with everything concatenated): for inspecting the segmenter's output with
//! ffprobe or a player.
//!
//!     cargo run --example segment_capture -- CAPTURE.zqcap OUT_DIR

use std::process::ExitCode;
use std::time::Instant;

use zipiq::media::capture::Capture;
use zipiq::media::hls::file_name;
use zipiq::media::{SegmentKind, Segmenter, SegmenterConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [capture, out] = &args[..] else {
        eprintln!("usage: segment_capture CAPTURE.zqcap OUT_DIR");
        return ExitCode::from(2);
    };
    let run = || -> Result<(), String> {
        let data = std::fs::read(capture).map_err(|e| format!("{capture}: {e}"))?;
        let cap = Capture::parse(&data).map_err(|e| format!("{capture}: {e}"))?;
        std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
        let mut segmenter = Segmenter::new(SegmenterConfig::default());
        let mut segments = Vec::new();
        for event in cap.events(Instant::now()) {
            segments.extend(segmenter.push(event));
        }
        segments.extend(segmenter.finish());
        let mut all = Vec::new();
        for s in &segments {
            let name = file_name(s.seq as i64, s.kind == SegmentKind::Init);
            std::fs::write(format!("{out}/{name}"), &s.bytes).map_err(|e| e.to_string())?;
            all.extend_from_slice(&s.bytes);
            println!(
                "{name}\t{} bytes\t{:?}\tstart {} ms",
                s.bytes.len(),
                s.duration,
                s.start_ms
            );
        }
        std::fs::write(format!("{out}/broadcast.mp4"), all).map_err(|e| e.to_string())?;
        println!("{:?}", segmenter.counters);
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("segment_capture: {e}");
            ExitCode::FAILURE
        }
    }
}
