//! Fuzzes the W3C `traceparent` parser that reads every request's header: never panic, and whatever it accepts
//! prints (as version 00) to a value that parses to the same thing; a version-00 value it accepts prints back
//! unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::telemetry::TraceParent;

fuzz_target!(|data: &[u8]| {
    let Some(parsed) = TraceParent::parse(data) else {
        return;
    };
    let printed = parsed.to_string();
    assert_eq!(printed.len(), 55, "{printed:?}");
    assert_eq!(
        TraceParent::parse(printed.as_bytes()),
        Some(parsed),
        "round trip of {data:?} through {printed:?}"
    );
    let trimmed = data.trim_ascii();
    if trimmed.starts_with(b"00-") {
        assert_eq!(
            trimmed,
            printed.as_bytes(),
            "version 00 prints back as it came"
        );
    }
});
