//! Fuzzes the dag-pb and UnixFS `Data` decoders and the HAMT lookup that read blocks from the network: never
//! panic, and a node they accept survives encode -> decode unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zipiq::store::dagpb::{PbNode, UnixfsData};
use zipiq::store::hamt;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(node) = PbNode::decode(&bytes) {
        let again =
            PbNode::decode(&Bytes::from(node.encode())).expect("our own encoding must decode");
        assert_eq!(again, node);
        if let Some(inner) = &node.data
            && let Ok(unixfs) = UnixfsData::decode(inner)
        {
            for level in [0, 1, 7, 8, 63, 64] {
                let _ = hamt::lookup(&node, &unixfs, "000001.m4s", level);
            }
            let _ = hamt::entries(&node, &unixfs);
        }
    }
    if let Ok(unixfs) = UnixfsData::decode(&bytes) {
        let _ = unixfs.content_size();
        let _ = UnixfsData::decode(&Bytes::from(unixfs.encode()))
            .expect("our own encoding must decode");
    }
});
