//! What the `zipiq` commands other than `serve` do, one file per command group, above every other part (a command
//! may use any of them). `src/main.rs` parses the arguments and calls these.

pub mod accounts;
