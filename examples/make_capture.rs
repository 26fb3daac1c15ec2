//! Makes an RTP capture fixture (`tests/data/*.zqcap`) from media files, packetized as zipIQ's WHIP client and OBS
//! send them. Used by `scripts/make-fixtures`.
//!
//!     cargo run --example make_capture -- OUT.zqcap AUDIO.ogg FPS VIDEO.h264 [VIDEO2.h264 ...]
//!
//! Several video files are played one after the other (a resolution change mid-stream).

use std::process::ExitCode;

use zipiq::media::source::{
    Numbering, access_units, annexb_nal_units, ogg_opus_packets, packetize,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: make_capture OUT.zqcap AUDIO.ogg FPS VIDEO.h264 [VIDEO2.h264 ...]");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make_capture: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let out = &args[0];
    let audio = std::fs::read(&args[1]).map_err(|e| format!("{}: {e}", args[1]))?;
    let fps: u32 = args[2]
        .parse()
        .map_err(|_| format!("bad fps {:?}", args[2]))?;
    let mut units = Vec::new();
    for path in &args[3..] {
        let data = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        units.extend(access_units(annexb_nal_units(&data)));
    }
    let opus = ogg_opus_packets(&audio).map_err(|e| format!("{}: {e}", args[1]))?;
    let capture = packetize(
        &units,
        fps,
        &opus,
        Numbering {
            ssrc: 0x1111_2222,
            first_seq: 1000,
            first_ts: 90_000,
        },
        Numbering {
            ssrc: 0x3333_4444,
            first_seq: 5000,
            first_ts: 48_000,
        },
        1200,
    )
    .map_err(|e| e.to_string())?;
    let bytes = capture.to_bytes().map_err(|e| e.to_string())?;
    std::fs::write(out, &bytes).map_err(|e| format!("{out}: {e}"))?;
    println!(
        "{out}: {} video pictures, {} Opus packets, {} RTP packets, {} bytes",
        units.len(),
        opus.len(),
        capture.records.len(),
        bytes.len()
    );
    Ok(())
}
