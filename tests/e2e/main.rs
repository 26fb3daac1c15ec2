//! End-to-end tests of zipIQ with real WebRTC peers (webrtc-rs) over loopback. One test binary (linking is the
//! slow part of building tests), one module per area.

mod account_env;
mod accounts;
mod accounts_db;
mod admin_listener;
mod archive_arlocal;
mod archive_bundler;
mod archive_crash;
mod archive_queue;
mod arlocal;
mod common;
mod databases;
mod db_queries;
mod fake_bundler;
mod fanout;
mod gateway_safety;
mod lifecycle;
mod obs_interop;
mod operations;
mod private_streams;
mod recording;
mod segmenter;
mod smtp_sink;
mod whip_whep_status;
