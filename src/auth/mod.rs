//! Who may do what: stream keys for publishers (and later accounts, tokens and rate limits).

pub mod stream_keys;
