//! Arbitrary bytes as an H.264 SPS: never panic; accepted sizes stay within bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut nal = vec![0x67];
    nal.extend_from_slice(data);
    if let Some(sps) = zipiq::media::sps::parse(&nal) {
        assert!(sps.width > 0 && sps.width <= 16_384 && sps.height > 0 && sps.height <= 16_384);
    }
});
