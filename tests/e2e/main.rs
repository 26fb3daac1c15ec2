//! End-to-end tests of zipIQ with real WebRTC peers (webrtc-rs) over loopback. One test binary (linking is the
//! slow part of building tests), one module per area.

// The crate lints of Cargo.toml are for the server; in this test crate `pub` shares helpers between its modules.
#![allow(unreachable_pub)]

mod abuse;
mod account_env;
mod account_floods;
mod account_races;
mod accounts;
mod accounts_db;
mod admin_listener;
mod archive_arlocal;
mod archive_bundler;
mod archive_crash;
mod archive_queue;
mod arlocal;
mod cluster;
mod cluster_failover;
mod cluster_start;
mod common;
mod databases;
mod db_queries;
mod disabled_accounts;
mod fake_bundler;
mod fanout;
mod ffmpeg_whip;
mod fresh_start;
mod gateway_safety;
mod http_limits;
mod lifecycle;
mod log_flood;
mod obs_interop;
mod operations;
mod private_streams;
mod pruning;
mod recording;
mod segmenter;
mod smtp_sink;
mod traces;
mod whip_whep_status;
