//! Arbitrary bytes as an Annex-B H.264 stream and as an Ogg Opus file: the readers never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::media::source::{access_units, annexb_nal_units, ogg_opus_packets};

fuzz_target!(|data: &[u8]| {
    let units = access_units(annexb_nal_units(data));
    assert!(units.iter().all(|u| !u.is_empty()));
    let _ = ogg_opus_packets(data);
});
