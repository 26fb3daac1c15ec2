//! Fuzzes the ANS-104 bundle parser: never panic, and a bundle that parses lays out again to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::archive::ans104;

fuzz_target!(|data: &[u8]| {
    let Ok(items) = ans104::parse_bundle(data.to_vec()) else {
        return;
    };
    assert_eq!(
        &ans104::bundle(&items)[..],
        data,
        "a parsed bundle lays out differently"
    );
});
