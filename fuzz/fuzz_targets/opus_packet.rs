//! Arbitrary bytes as an Opus packet: the TOC reader never panics and never claims more than 120 ms.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(samples) = zipiq::media::opus::packet_samples(data) {
        assert!(samples > 0 && samples <= 5760);
    }
});
