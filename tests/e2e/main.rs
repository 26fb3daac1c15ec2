//! End-to-end tests of zipIQ with real WebRTC peers (webrtc-rs) over loopback. One test binary (linking is the
//! slow part of building tests), one module per area.

mod archive_arlocal;
mod archive_bundler;
mod archive_queue;
mod arlocal;
mod common;
mod databases;
mod db_queries;
mod fake_bundler;
mod fanout;
mod lifecycle;
mod obs_interop;
mod recording;
mod segmenter;
mod whip_whep_status;
