//! Media threads: each runs a single-threaded tokio runtime. A stream's publisher session is created on the thread
//! chosen by the stream's name (its "home"); each viewer session is created on one thread, round robin over all of
//! them (or on the home thread when `media.spread_viewers` is off). Everything webrtc-rs spawns for a session (ICE,
//! DTLS, SRTP, interceptors, its per-connection stats task) then runs on that session's thread, and so do the
//! writes to it: a source's forwarder writes to the viewers of its home thread itself and hands each packet once to
//! a shard task on every other thread that has viewers of it (`forward::ShardPlan`).
//!
//! Why: webrtc-rs wakes a per-connection stats task for every RTP packet written. On a multi-threaded runtime each
//! of those wakes may unpark another worker thread, and at 200 viewers that churn (futex wake-ups and context
//! switches) was 40% of the server's CPU per forwarded packet (perf, README "Performance"). Keeping a viewer's
//! writes and its tasks on one thread avoids that; spreading one stream's viewers over the threads lets a big
//! stream use every core, at the cost of one cross-thread hop per packet per thread. HTTP, the database, IPFS and
//! the recorder stay on the main runtime.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The media threads of one SFU. Dropping it stops them (their tasks are cancelled).
pub(crate) struct MediaThreads {
    handles: Arc<[Handle]>,
    stops: Vec<oneshot::Sender<()>>,
    spread_viewers: bool,
    next_viewer: AtomicUsize,
}

impl MediaThreads {
    /// Starts `count` media threads (0: one per available core). With `spread_viewers`, viewers are placed round
    /// robin over the threads; without, on their stream's home thread.
    pub(crate) fn start(count: usize, spread_viewers: bool) -> std::io::Result<MediaThreads> {
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
        Ok(MediaThreads {
            handles: handles.into(),
            stops,
            spread_viewers,
            next_viewer: AtomicUsize::new(0),
        })
    }

    /// How many media threads there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// The index of the home thread of `stream` (where its publisher lives).
    pub(crate) fn home(&self, stream: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        stream.hash(&mut h);
        (h.finish() % self.handles.len() as u64) as usize
    }

    /// The thread for a new viewer of `stream`: the next one round robin, or the stream's home thread when
    /// viewers are not spread.
    pub(crate) fn for_viewer(&self, stream: &str) -> usize {
        if self.spread_viewers && self.handles.len() > 1 {
            self.next_viewer.fetch_add(1, Ordering::Relaxed) % self.handles.len()
        } else {
            self.home(stream)
        }
    }

    /// The runtime of thread `index` (an index from `home` or `for_viewer`).
    pub(crate) fn handle(&self, index: usize) -> &Handle {
        &self.handles[index % self.handles.len()]
    }

    /// Every thread's runtime, in index order (what a forwarder needs to start shards).
    pub(crate) fn handles(&self) -> Arc<[Handle]> {
        self.handles.clone()
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
        let threads = MediaThreads::start(2, true).unwrap();
        assert_eq!(threads.len(), 2);
        let home = threads.home("live");
        assert_eq!(home, threads.home("live"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = rt.block_on(
            threads
                .handle(home)
                .spawn(async { std::thread::current().name().map(str::to_owned) }),
        );
        assert_eq!(name.unwrap().unwrap(), format!("zipiq-media-{home}"));
    }

    #[test]
    fn viewers_go_round_robin_when_spread_and_home_when_not() {
        let spread = MediaThreads::start(2, true).unwrap();
        let picks: Vec<usize> = (0..4).map(|_| spread.for_viewer("live")).collect();
        assert_eq!(picks.iter().filter(|&&t| t == 0).count(), 2);
        assert_eq!(picks.iter().filter(|&&t| t == 1).count(), 2);
        let home = MediaThreads::start(2, false).unwrap();
        for _ in 0..4 {
            assert_eq!(home.for_viewer("live"), home.home("live"));
        }
    }
}
