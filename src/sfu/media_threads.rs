//! Media threads: each runs a single-threaded tokio runtime, and every WebRTC session of a stream (its publisher
//! and all its viewers) is created on the same one, chosen by the stream's name. Everything webrtc-rs spawns for
//! those sessions (ICE, DTLS, SRTP, interceptors, its per-connection stats task), and the stream's fan-out tasks,
//! then run on one thread: a packet's way from the publisher to every viewer never wakes another thread.
//!
//! Why: webrtc-rs wakes a per-connection stats task for every RTP packet written. On a multi-threaded runtime each
//! of those wakes may unpark another worker thread, and at 200 viewers that churn (futex wake-ups and context
//! switches) was 40% of the server's CPU per forwarded packet (perf, README "Performance"). Streams spread over
//! the threads, so several streams use several cores; HTTP, the database, IPFS and the recorder stay on the main
//! runtime.

use std::hash::{Hash, Hasher};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The media threads of one SFU. Dropping it stops them (their tasks are cancelled).
pub struct MediaThreads {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
}

impl MediaThreads {
    /// Starts `count` media threads (0: one per available core).
    pub fn start(count: usize) -> std::io::Result<MediaThreads> {
        let count = if count == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            count
        };
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("zipiq-media-{i}"))
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            // Detached: a drop of the SFU may happen on one of these threads (the last handle released by a media
            // task), and a thread cannot join itself. They end on their own within the shutdown timeout.
            std::thread::Builder::new()
                .name(format!("zipiq-media-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime cancels what is left (sessions were ended before).
                    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                })?;
        }
        Ok(MediaThreads { handles, stops })
    }

    /// How many media threads there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime of the thread that serves `stream`.
    pub fn for_stream(&self, stream: &str) -> &Handle {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        stream.hash(&mut h);
        &self.handles[(h.finish() % self.handles.len() as u64) as usize]
    }
}

impl Drop for MediaThreads {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_always_lands_on_the_same_thread_and_work_runs_there() {
        let threads = MediaThreads::start(2).unwrap();
        assert_eq!(threads.len(), 2);
        let a = threads.for_stream("live").id();
        assert_eq!(a, threads.for_stream("live").id());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = rt.block_on(
            threads
                .for_stream("live")
                .spawn(async { std::thread::current().name().map(str::to_owned) }),
        );
        assert!(name.unwrap().unwrap().starts_with("zipiq-media-"));
    }
}
