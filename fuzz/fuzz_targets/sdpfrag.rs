//! Fuzzes the trickle-ice-sdpfrag parser used by PATCH: never panic, and what it accepts writes back cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::sfu::sdpfrag::{parse, write_restart_answer};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(frag) = parse(text) {
            if let (Some(u), Some(p)) = (&frag.ice_ufrag, &frag.ice_pwd) {
                let candidates: Vec<String> = frag
                    .candidates
                    .iter()
                    .map(|c| c.candidate.clone())
                    .collect();
                let out = write_restart_answer(u, p, &[("audio".into(), "0".into())], &candidates);
                assert!(parse(&out).is_ok(), "our own answer must parse: {out:?}");
            }
        }
    }
});
