//! Arbitrary bytes as a capture file: the parser never panics, and what it accepts writes back and parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::media::capture::Capture;

fuzz_target!(|data: &[u8]| {
    if let Ok(capture) = Capture::parse(data) {
        if let Ok(bytes) = capture.to_bytes() {
            let again = Capture::parse(&bytes).expect("our own output parses");
            assert_eq!(again.records.len(), capture.records.len());
        }
    }
});
