//! Fuzzes the gateway's content-path parser (`/ipfs/{cid}/{path}`): never panic, and whatever it accepts prints
//! back (`to_uri_path`) to a path that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::store::content_path::{ContentPath, parse_cid};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_cid(text);
    // Inputs both as they come and under the /ipfs/ prefix, so the fuzzer need not find the prefix itself.
    for candidate in [text.to_owned(), format!("/ipfs/{text}")] {
        if let Ok(path) = ContentPath::parse(&candidate) {
            let printed = path.to_uri_path();
            let again = ContentPath::parse(&printed)
                .unwrap_or_else(|e| panic!("our own path {printed:?} must parse: {e}"));
            assert_eq!(
                again, path,
                "round trip of {candidate:?} through {printed:?}"
            );
        }
    }
});
