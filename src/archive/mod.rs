//! The permanent archive: every chunk signed as an ANS-104 data item and stored on Arweave, either through a
//! Bundlr-protocol bundler or posted straight to a gateway inside a bundle transaction.
//!
//! The cryptographic and wire-format core does no I/O: the deep hash, the Avro tag encoding, Arweave keys (JWK),
//! data items and bundles, format-2 transactions with their merkle data root and chunk proofs. Around it: the two
//! HTTP clients (bundler, gateway), the wallet pool, what a job uploads (`items`), the worker that carries jobs
//! through the queue (`worker/`) and the proof that a broadcast is archived (`verify`).
//! Parsers of outside bytes here never panic: they return errors.
//! Signing uses *ring* (constant-time RSA-PSS-SHA256); verifying others' signatures uses the `rsa` crate, which
//! accepts any PSS salt length (arweave-js signs with the largest salt, which *ring*'s verifier rejects).

pub mod ans104;
pub mod arweave_tx;
pub mod avro_tags;
pub(crate) mod b64url;
pub(crate) mod bundler_client;
pub(crate) mod deephash;
pub mod gateway_client;
pub(crate) mod items;
pub mod jwk;
pub mod merkle;
pub mod verify;
pub mod wallets;
pub(crate) mod worker;

#[cfg(test)]
mod arlocal_tests;
#[cfg(test)]
mod js_tests;
#[cfg(test)]
mod test_wallets;
