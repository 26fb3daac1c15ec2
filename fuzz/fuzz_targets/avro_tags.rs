//! Fuzzes the Avro tag decoder of ANS-104 data items: never panic, respect the limits, and tags that decode
//! encode again to bytes that decode to the same tags.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::archive::avro_tags;

fuzz_target!(|data: &[u8]| {
    let Ok(tags) = avro_tags::decode(data) else {
        return;
    };
    assert!(tags.len() <= avro_tags::MAX_TAGS);
    assert_eq!(avro_tags::validate(&tags), Ok(()));
    let encoded = avro_tags::encode(&tags).expect("decoded tags are within the limits");
    assert_eq!(avro_tags::decode(&encoded), Ok(tags));
});
