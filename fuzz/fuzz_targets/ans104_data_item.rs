//! Fuzzes the ANS-104 data item parser: never panic, and an item that parses is consistent with its bytes (its
//! fields tile the buffer, its tags re-decode from its raw tag bytes, and it parses again to the same item).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::archive::ans104::DataItem;
use zipiq::archive::avro_tags;

fuzz_target!(|data: &[u8]| {
    let Ok(item) = DataItem::parse(data.to_vec()) else {
        return;
    };
    assert_eq!(item.len(), data.len());
    assert_eq!(&item.data()[..], &data[data.len() - item.data_len()..]);
    assert_eq!(
        avro_tags::decode(item.raw_tags()).as_deref(),
        Ok(item.tags())
    );
    assert!(item.target().is_none_or(|t| t.len() == 32));
    assert!(item.anchor().is_none_or(|a| a.len() == 32));
    let again = DataItem::parse(item.as_bytes().clone()).expect("a parsed item parses again");
    assert_eq!(again.id(), item.id());
    assert_eq!(again.tags(), item.tags());
});
