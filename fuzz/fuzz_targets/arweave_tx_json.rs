//! Fuzzes the reading of a transaction's JSON (as a gateway serves `GET /tx/{id}`): never panic, and a
//! transaction that reads gives back the same fields in its own JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipiq::archive::arweave_tx::{Transaction, TransactionJson};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<TransactionJson>(data) else {
        return;
    };
    let Ok(tx) = Transaction::from_json(&json) else {
        return;
    };
    let again = Transaction::from_json(&tx.to_json(None)).expect("our own JSON reads back");
    assert_eq!(again, tx);
    let _ = tx.verify();
});
