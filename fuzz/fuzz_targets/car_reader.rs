//! Fuzzes the CAR v1 reader behind `zipiq import`: never panic, never allocate past its bounds, and every block it
//! yields hashes to its CID.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use zipiq::store::block;
use zipiq::store::car::{CarError, CarReader};

/// Drives a future whose I/O is an in-memory slice (always ready) to completion without a runtime.
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(async {
        let mut reader = CarReader::new(data).await?;
        assert!(!reader.roots().is_empty());
        while let Some((cid, bytes)) = reader.next_block().await? {
            assert_eq!(
                block::verify(&cid, &bytes),
                Ok(()),
                "the reader passed on an unverified block"
            );
        }
        Ok::<_, CarError>(())
    });
});
