//! Fuzzes the checking of an Arweave chunk proof (`data_path`): never panic, and a proof accepted for an offset
//! gives a chunk range that holds the offset and the chunk's length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::archive::merkle;

fuzz_target!(|data: &[u8]| {
    // root (32) ‖ data size (8) ‖ offset (8) ‖ path length (2) ‖ path ‖ chunk
    if data.len() < 50 {
        return;
    }
    let (root, rest) = data.split_at(32);
    let (size, rest) = rest.split_at(8);
    let (offset, rest) = rest.split_at(8);
    let (path_len, rest) = rest.split_at(2);
    let path_len = usize::from(u16::from_le_bytes([path_len[0], path_len[1]])).min(rest.len());
    let (path, chunk) = rest.split_at(path_len);
    let root: [u8; 32] = root.try_into().expect("32 bytes");
    let size = u64::from_le_bytes(size.try_into().expect("8 bytes"));
    let offset = u64::from_le_bytes(offset.try_into().expect("8 bytes"));
    if let Ok(range) = merkle::verify_chunk(&root, size, offset, path, chunk) {
        assert!(range.contains(&offset));
        assert_eq!(range.end - range.start, chunk.len() as u64);
    }
});
