//! Fuzzes the WHIP/WHEP offer reader with arbitrary text: it must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::sfu::offer::{Role, inspect};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = inspect(text, Role::Publish);
        let _ = inspect(text, Role::Watch);
    }
});
