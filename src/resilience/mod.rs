//! Living with services that fail (bundlers, Arweave gateways, IPFS peers): a circuit breaker per endpoint and
//! exponential backoff with jitter. Pure state machines with time as an input, so tests step time exactly. And the
//! failpoints crash tests abort the process at.

pub(crate) mod backoff;
pub mod breaker;
pub mod failpoint;
