//! `zipiq-load`: a load generator for zipIQ. One WHIP publisher sends real H.264 (libx264) and Opus (libopus),
//! made once with ffmpeg, at real time; N WHEP subscribers join in batches and receive without decoding. Over a
//! window after a warm-up it measures forwarded packets per second, the server's CPU per forwarded packet and
//! RSS per subscriber (from `/proc/<pid>`), loss by sequence number, one-way latency (send and arrival of the
//! same packet, one process, one clock), time to first packet and first keyframe, and its own CPU.
//!
//! WebRTC is str0m (sans-IO), not the server's webrtc-rs, so the tool does not share the server's bugs. The
//! control task (tokio, one thread) does HTTP and timing; media runs on plain threads with epoll loops. Every
//! session is DELETEd at the end, also after Ctrl-C; a second Ctrl-C leaves at once.

mod measure;
mod media;
mod peer;
mod procfs;
mod publisher;
mod report;
mod signaling;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use reqwest::Url;
use str0m::config::DtlsCert;
use str0m::media::Direction;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::measure::{Histogram, Phase, Shared};
use crate::media::{MediaSpec, Schedule, Track};
use crate::report::{
    Generator, Loss, Machine, Percentiles, Publisher, Report, RunConfig, Server, Startup,
    Subscribers, UrlReport,
};
use crate::signaling::{SignalError, Signaling};
use crate::worker::{NewSubscriber, SubscriberReport, WorkerHandle, WorkerReport};

/// Load generator for zipIQ: one WHIP publisher of real H.264 + Opus, N WHEP subscribers, and measurements.
#[derive(Debug, Parser)]
#[command(name = "zipiq-load", version)]
struct Args {
    /// The server's HTTP root.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Stream to publish and watch.
    #[arg(long, default_value = "live")]
    stream: String,
    /// The stream key (WHIP bearer token), as `zipiq serve` printed it or `zipiq keys create` made it.
    #[arg(long, env = "ZIPIQ_LOAD_KEY", hide_env_values = true)]
    key: String,
    /// WHEP endpoint(s) the subscribers join, round robin (subscriber i joins URL i mod n), each with its own
    /// figures in the report. Repeat the flag or give a comma list. A URL with no path (`http://127.0.0.3:8080`)
    /// gets `/whep/<stream>`. Default: `<url>/whep/<stream>`. In a cluster run: the origin and the edges.
    #[arg(long = "whep-url", value_name = "URL", value_delimiter = ',')]
    whep_url: Vec<String>,
    /// The WHEP endpoints resolved from `--whep-url` (or `--url`), filled in before the run.
    #[arg(skip)]
    whep_url_list: Vec<String>,
    /// Bearer token for WHEP requests (only for private streams).
    #[arg(long)]
    viewer_token: Option<String>,
    /// Number of WHEP subscribers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=5000))]
    subscribers: u32,
    /// Subscribers that join at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// Pause between two batches, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    batch_interval_ms: u64,
    /// Seconds to wait after every subscriber connected, before the window.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Process id of the server, for its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Where the generated media is cached.
    #[arg(long, default_value = "target/zipiq-load-media")]
    media_dir: PathBuf,
    /// Subscriber worker threads (each runs one epoll loop for its share of the subscribers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    workers: u32,
    /// Video width.
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(64..=3840))]
    width: u32,
    /// Video height.
    #[arg(long, default_value_t = 720, value_parser = clap::value_parser!(u32).range(64..=2160))]
    height: u32,
    /// Video frame rate.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60))]
    fps: u32,
    /// Video bitrate, kbit/s.
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u32).range(100..=50_000))]
    video_kbps: u32,
    /// Seconds between keyframes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    keyframe_interval: u32,
    /// Opus bitrate, kbit/s.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..=256))]
    audio_kbps: u32,
    /// Length of the generated media loop, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(4..=120))]
    media_seconds: u32,
    /// Timeout of one HTTP request, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    http_timeout: u64,
    /// How long peers may take to connect (ICE + DTLS), in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=300))]
    connect_timeout: u64,
}

/// Ctrl-C: the first asks the run to stop and clean up, the second leaves at once.
#[derive(Clone)]
struct Interrupt {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

impl Interrupt {
    fn install() -> Interrupt {
        let interrupt = Interrupt {
            flag: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
        };
        let i = interrupt.clone();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if i.flag.swap(true, Ordering::SeqCst) {
                    eprintln!("zipiq-load: second Ctrl-C, leaving without cleaning up");
                    std::process::exit(130);
                }
                eprintln!(
                    "zipiq-load: Ctrl-C, stopping and deleting every session (Ctrl-C again to leave at once)"
                );
                i.notify.notify_waiters();
            }
        });
        interrupt
    }

    fn check(&self) -> Result<(), Interrupted> {
        if self.flag.load(Ordering::SeqCst) {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }

    async fn sleep(&self, duration: Duration) -> Result<(), Interrupted> {
        let notified = self.notify.notified();
        self.check()?;
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = notified => Err(Interrupted),
        }
    }
}

/// A session to DELETE at the end.
struct SessionUrl {
    resource: Url,
    bearer: Option<String>,
    publisher: bool,
}

/// Threads and sessions to stop and delete, whatever happens.
#[derive(Default)]
struct Teardown {
    sessions: Vec<SessionUrl>,
    publisher: Option<std::thread::JoinHandle<Result<publisher::PublisherStats, String>>>,
    workers: Vec<WorkerHandle>,
}

impl Teardown {
    /// Stops the threads and collects the workers' reports.
    async fn stop_threads(&mut self, shared: &Shared) -> (Vec<WorkerReport>, Vec<String>) {
        shared.set_phase(Phase::Stop);
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        for handle in self.workers.drain(..) {
            match tokio::task::spawn_blocking(move || handle.thread.join()).await {
                Ok(Ok(Ok(report))) => reports.push(report),
                Ok(Ok(Err(e))) => errors.push(e),
                Ok(Err(_)) | Err(_) => errors.push("a subscriber worker panicked".into()),
            }
        }
        if let Some(handle) = self.publisher.take() {
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => errors.push(e),
                Ok(Err(_)) | Err(_) => errors.push("the publisher thread panicked".into()),
            }
        }
        (reports, errors)
    }

    /// DELETEs every session, 32 at a time, viewers before the publisher (so no viewer sees its stream end
    /// under it); returns (deleted, failed).
    async fn delete_sessions(&mut self, signaling: &Signaling) -> (usize, usize) {
        let mut deleted = 0;
        let mut failed = 0;
        let (publishers, viewers): (Vec<SessionUrl>, Vec<SessionUrl>) =
            self.sessions.drain(..).partition(|s| s.publisher);
        for group in [viewers, publishers] {
            for chunk in group.chunks(32) {
                let mut set = JoinSet::new();
                for s in chunk {
                    let signaling = signaling.clone();
                    let resource = s.resource.clone();
                    let bearer = s.bearer.clone();
                    set.spawn(async move { signaling.delete(&resource, bearer.as_deref()).await });
                }
                while let Some(done) = set.join_next().await {
                    match done {
                        Ok(Ok(())) => deleted += 1,
                        Ok(Err(e)) => {
                            failed += 1;
                            if failed <= 3 {
                                eprintln!("zipiq-load: DELETE failed: {e}");
                            }
                        }
                        Err(_) => failed += 1,
                    }
                }
            }
        }
        (deleted, failed)
    }
}

/// `/proc` readings at one edge of the window.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    server_ticks: Option<u64>,
    own_ticks: u64,
    threads: Vec<(u64, String, u64)>,
    machine: procfs::MachineCpu,
    published: [u64; 2],
}

impl Snapshot {
    fn take(server_pid: Option<&str>, shared: &Shared) -> Result<Snapshot, procfs::ProcError> {
        Ok(Snapshot {
            at: Instant::now(),
            server_ticks: server_pid.map(procfs::process_cpu_ticks).transpose()?,
            own_ticks: procfs::process_cpu_ticks("self")?,
            threads: procfs::own_threads(),
            machine: procfs::machine_cpu()?,
            published: [
                shared.published[0].load(Ordering::Relaxed),
                shared.published[1].load(Ordering::Relaxed),
            ],
        })
    }
}

/// What the control task measured; the workers' reports complete it.
struct Window {
    start: Snapshot,
    end: Snapshot,
    rss_before_kib: Option<u64>,
    rss_in_window_kib: Option<u64>,
    answered: usize,
    refused: BTreeMap<String, usize>,
    /// Per WHEP URL, by target index.
    joins: Vec<JoinCounts>,
}

/// Joins at one WHEP URL, as the control task counted them.
#[derive(Debug, Clone, Default)]
struct JoinCounts {
    answered: usize,
    redirected: usize,
    refused: BTreeMap<String, usize>,
}

/// Everything a subscriber join needs, shared by the tasks of a batch.
struct JoinContext {
    signaling: Signaling,
    /// The WHEP endpoints, by target index.
    whep: Vec<Url>,
    viewer_token: Option<String>,
    certificate: DtlsCert,
}

enum JoinError {
    Signal(SignalError),
    Local(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Signal(e) => e.fmt(f),
            JoinError::Local(e) => f.write_str(e),
        }
    }
}

impl JoinError {
    fn kind(&self) -> String {
        match self {
            JoinError::Signal(e) => e.kind().to_owned(),
            JoinError::Local(_) => "local".to_owned(),
        }
    }
}

/// A WHEP POST that was answered: the session to delete, whether a redirect answered it, and the subscriber
/// (or why its answer could not be applied).
struct Joined {
    resource: Url,
    redirected: bool,
    subscriber: Result<NewSubscriber, String>,
}

/// The WHEP URL subscriber `index` joins: round robin over `count` URLs.
fn target_of(index: usize, count: usize) -> usize {
    index % count.max(1)
}

/// Makes one subscriber: socket, peer, WHEP POST, answer. The session URL comes back even when the answer
/// cannot be applied, so the session is still deleted.
async fn join_one(ctx: &JoinContext, index: usize) -> Result<Joined, JoinError> {
    let target = target_of(index, ctx.whep.len());
    let whep = ctx
        .whep
        .get(target)
        .ok_or_else(|| JoinError::Local("no WHEP URL".into()))?;
    let socket = peer::bind_loopback().map_err(|e| JoinError::Local(format!("UDP socket: {e}")))?;
    let local = socket
        .local_addr()
        .map_err(|e| JoinError::Local(format!("UDP socket: {e}")))?;
    let (mut rtc, offer) =
        peer::new_peer(&ctx.certificate, local, Direction::RecvOnly).map_err(JoinError::Local)?;
    let posted_at = Instant::now();
    let created = ctx
        .signaling
        .create(whep, ctx.viewer_token.as_deref(), offer.sdp)
        .await
        .map_err(JoinError::Signal)?;
    let subscriber =
        peer::accept_answer(&mut rtc, offer.pending, &created.answer).map(|()| NewSubscriber {
            index,
            target,
            rtc,
            socket,
            posted_at,
        });
    Ok(Joined {
        resource: created.resource,
        redirected: created.redirected,
        subscriber,
    })
}

/// The WHEP endpoints: `--whep-url` values (a bare server root gets `whep/<stream>`), else `<url>/whep/<stream>`.
fn whep_urls(args: &Args, signaling: &Signaling) -> anyhow::Result<Vec<Url>> {
    let path = format!("whep/{}", args.stream);
    if args.whep_url.is_empty() {
        return Ok(vec![signaling.endpoint(&path).map_err(|e| anyhow!(e))?]);
    }
    args.whep_url
        .iter()
        .map(|raw| {
            let url = Url::parse(raw.trim()).map_err(|e| anyhow!("--whep-url {raw:?}: {e}"))?;
            if url.scheme() != "http" {
                bail!(
                    "--whep-url {url}: only http:// is supported (the load test runs on loopback)"
                );
            }
            if url.path().trim_matches('/').is_empty() {
                url.join(&path)
                    .map_err(|e| anyhow!("--whep-url {url}: {e}"))
            } else {
                Ok(url)
            }
        })
        .collect()
}

fn media_spec(args: &Args) -> MediaSpec {
    MediaSpec {
        width: args.width & !1,
        height: args.height & !1,
        fps: args.fps,
        video_kbps: args.video_kbps,
        keyframe_interval_s: args.keyframe_interval,
        audio_kbps: args.audio_kbps,
        seconds: args.media_seconds,
    }
}

fn seconds(value: f64, name: &str, max: f64) -> anyhow::Result<Duration> {
    if !(0.0..=max).contains(&value) {
        bail!("--{name} must be between 0 and {max} seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Publishes, lets subscribers join, warms up and measures the window. Threads keep running after it
/// returns; sessions and threads are registered in `teardown`.
#[allow(clippy::too_many_lines)]
async fn measure(
    args: &Args,
    schedule: Arc<Schedule>,
    signaling: &Signaling,
    shared: &Arc<Shared>,
    teardown: &mut Teardown,
    interrupt: &Interrupt,
) -> anyhow::Result<Window> {
    let server_pid = args.server_pid.map(|p| p.to_string());
    let server_pid = server_pid.as_deref();
    let warmup = seconds(args.warmup, "warmup", 600.0)?;
    let duration = seconds(args.duration, "duration", 3600.0)?;
    if duration < Duration::from_secs(1) {
        bail!("--duration must be at least 1 second");
    }
    let connect_timeout = Duration::from_secs(args.connect_timeout);
    let certificate = peer::dtls_certificate().map_err(|e| anyhow!(e))?;

    // The publisher.
    let whip = signaling
        .endpoint(&format!("whip/{}", args.stream))
        .map_err(|e| anyhow!(e))?;
    let socket = peer::bind_loopback().context("publisher UDP socket")?;
    let local = socket.local_addr().context("publisher UDP socket")?;
    let (mut rtc, offer) =
        peer::new_peer(&certificate, local, Direction::SendOnly).map_err(|e| anyhow!(e))?;
    let created = match signaling.create(&whip, Some(&args.key), offer.sdp).await {
        Ok(created) => created,
        Err(SignalError::Conflict { detail, .. }) => bail!(
            "409 Conflict from {whip}: {detail} (another publisher is live on stream {:?}: stop it, or use another --stream)",
            args.stream
        ),
        Err(e) => return Err(e).context("publishing (WHIP)"),
    };
    teardown.sessions.push(SessionUrl {
        resource: created.resource.clone(),
        bearer: Some(args.key.clone()),
        publisher: true,
    });
    peer::accept_answer(&mut rtc, offer.pending, &created.answer).map_err(|e| anyhow!(e))?;
    let handle = publisher::spawn(
        publisher::PublisherPeer {
            rtc,
            socket,
            audio: offer.audio,
            video: offer.video,
        },
        schedule.clone(),
        shared.clone(),
    )
    .context("starting the publisher thread")?;
    teardown.publisher = Some(handle);
    eprintln!("zipiq-load: publishing to {whip} ...");
    let deadline = Instant::now() + connect_timeout;
    while shared.publisher_connected.load(Ordering::Acquire) == 0 {
        check_publisher(teardown)?;
        if Instant::now() > deadline {
            bail!("the publisher did not connect (ICE + DTLS) within {connect_timeout:?}");
        }
        interrupt.sleep(Duration::from_millis(20)).await?;
    }
    // Let the server see the tracks and cache the first keyframe before anyone watches.
    interrupt.sleep(Duration::from_millis(1500)).await?;
    check_publisher(teardown)?;

    // The subscribers.
    for n in 0..args.workers as usize {
        teardown
            .workers
            .push(worker::spawn(n, shared.clone()).map_err(|e| anyhow!(e))?);
    }
    let rss_before_kib = server_pid.map(procfs::process_rss_kib).transpose()?;
    let whep = args
        .whep_url_list
        .iter()
        .map(|u| Url::parse(u).map_err(|e| anyhow!("WHEP URL {u:?}: {e}")))
        .collect::<anyhow::Result<Vec<Url>>>()?;
    let total = args.subscribers as usize;
    if total < whep.len() {
        bail!(
            "--subscribers {total} is fewer than the {} WHEP URLs: every URL needs a subscriber",
            whep.len()
        );
    }
    let ctx = Arc::new(JoinContext {
        signaling: signaling.clone(),
        whep,
        viewer_token: args.viewer_token.clone(),
        certificate,
    });
    let list: Vec<String> = ctx.whep.iter().map(Url::to_string).collect();
    eprintln!(
        "zipiq-load: {} subscribers joining {} at a time on {} ...",
        args.subscribers,
        args.batch,
        list.join(", ")
    );
    let mut answered = 0usize;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut joins = vec![JoinCounts::default(); ctx.whep.len()];

    // The first subscriber of each URL alone, one URL after the other: it waits (bounded) for the stream to
    // be live there (on a cluster's edge, its pull from the origin starts with it), and stops the run on a
    // refusal that every other subscriber would get too.
    for first in 0..ctx.whep.len() {
        let first_deadline = Instant::now() + connect_timeout;
        loop {
            match join_one(&ctx, first).await {
                Ok(joined) => {
                    teardown.sessions.push(SessionUrl {
                        resource: joined.resource,
                        bearer: args.viewer_token.clone(),
                        publisher: false,
                    });
                    let subscriber = joined
                        .subscriber
                        .map_err(|e| anyhow!("the first subscriber of {}: {e}", ctx.whep[first]))?;
                    let w = subscriber.index % teardown.workers.len();
                    teardown.workers[w]
                        .add(subscriber)
                        .map_err(|e| anyhow!(e))?;
                    answered += 1;
                    joins[first].answered += 1;
                    joins[first].redirected += usize::from(joined.redirected);
                    break;
                }
                Err(JoinError::Signal(SignalError::Conflict { .. }))
                    if Instant::now() < first_deadline =>
                {
                    interrupt.sleep(Duration::from_millis(250)).await?;
                }
                Err(JoinError::Signal(e @ SignalError::Conflict { .. })) => {
                    bail!(
                        "{e} (the stream did not become live: is the publisher's media reaching the server?)"
                    )
                }
                Err(e) => bail!("the first subscriber of {}: {e}", ctx.whep[first]),
            }
        }
    }
    let mut next = ctx.whep.len();
    while next < total {
        interrupt.check()?;
        check_publisher(teardown)?;
        let end = (next + args.batch as usize).min(total);
        let mut set = JoinSet::new();
        for index in next..end {
            let ctx = ctx.clone();
            set.spawn(async move { (index, join_one(&ctx, index).await) });
        }
        while let Some(done) = set.join_next().await {
            let (index, result) = done.map_err(|e| anyhow!("a join task failed: {e}"))?;
            let counts = &mut joins[target_of(index, ctx.whep.len())];
            match result {
                Ok(joined) => {
                    teardown.sessions.push(SessionUrl {
                        resource: joined.resource,
                        bearer: args.viewer_token.clone(),
                        publisher: false,
                    });
                    match joined.subscriber {
                        Ok(subscriber) => {
                            let w = subscriber.index % teardown.workers.len();
                            teardown.workers[w]
                                .add(subscriber)
                                .map_err(|e| anyhow!(e))?;
                            answered += 1;
                            counts.answered += 1;
                            counts.redirected += usize::from(joined.redirected);
                        }
                        Err(e) => {
                            *refused.entry("bad-answer".into()).or_default() += 1;
                            *counts.refused.entry("bad-answer".into()).or_default() += 1;
                            eprintln!("zipiq-load: subscriber answer refused: {e}");
                        }
                    }
                }
                Err(e) => {
                    let kind = e.kind();
                    *counts.refused.entry(kind.clone()).or_default() += 1;
                    let count = refused.entry(kind).or_default();
                    *count += 1;
                    if *count <= 3 {
                        eprintln!("zipiq-load: a subscriber was refused: {e}");
                    }
                }
            }
        }
        next = end;
        if next < total {
            interrupt
                .sleep(Duration::from_millis(args.batch_interval_ms))
                .await?;
        }
    }
    if answered == 0 {
        bail!("no subscriber could join");
    }

    // Wait until every answered subscriber connected or failed.
    let deadline = Instant::now() + connect_timeout;
    loop {
        let settled = shared.connected.load(Ordering::Relaxed)
            + shared.lost_subscribers.load(Ordering::Relaxed);
        if settled >= answered as u64 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "zipiq-load: {} of {answered} subscribers connected within {connect_timeout:?}; measuring anyway",
                shared.connected.load(Ordering::Relaxed)
            );
            break;
        }
        check_publisher(teardown)?;
        interrupt.sleep(Duration::from_millis(50)).await?;
    }
    eprintln!(
        "zipiq-load: {} subscribers connected; warming up {:.1} s, then measuring {:.1} s",
        shared.connected.load(Ordering::Relaxed),
        warmup.as_secs_f64(),
        duration.as_secs_f64()
    );
    interrupt.sleep(warmup).await?;
    check_publisher(teardown)?;

    // The window.
    let start = Snapshot::take(server_pid, shared)?;
    shared.set_phase(Phase::Measuring);
    interrupt.sleep(duration).await?;
    shared.set_phase(Phase::Done);
    let end = Snapshot::take(server_pid, shared)?;
    let rss_in_window_kib = server_pid.map(procfs::process_rss_kib).transpose()?;
    check_publisher(teardown)?;
    Ok(Window {
        start,
        end,
        rss_before_kib,
        rss_in_window_kib,
        answered,
        refused,
        joins,
    })
}

/// Fails if the publisher thread has ended (it only ends on an error before `Phase::Stop`).
fn check_publisher(teardown: &mut Teardown) -> anyhow::Result<()> {
    if teardown.publisher.as_ref().is_some_and(|h| h.is_finished())
        && let Some(handle) = teardown.publisher.take()
    {
        return match handle.join() {
            Ok(Err(e)) => Err(anyhow!("publisher: {e}")),
            Ok(Ok(_)) => Err(anyhow!("the publisher stopped early")),
            Err(_) => Err(anyhow!("the publisher thread panicked")),
        };
    }
    Ok(())
}

fn millis_between(from: Instant, to: Option<Instant>) -> Option<u64> {
    to.map(|t| t.saturating_duration_since(from).as_micros() as u64)
}

/// Latency percentiles of a histogram in microseconds, in milliseconds.
fn percentiles(h: &Histogram) -> Percentiles {
    let at = |q: f64| h.quantile(q).map(|us| us as f64 / 1000.0);
    Percentiles {
        samples: h.count(),
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: (h.count() > 0).then(|| h.max() as f64 / 1000.0),
    }
}

/// Loss and start-up of a set of subscribers (all of them, or those of one WHEP URL).
struct Summary {
    loss: Loss,
    startup: Startup,
    stalled_tracks: usize,
    unmatched: u64,
    connected: usize,
    lost: usize,
}

impl Summary {
    /// `published`: packets the publisher sent per track in the window (what a stalled track missed).
    fn of<'a>(
        subscribers: impl Iterator<Item = &'a SubscriberReport>,
        published: [u64; 2],
    ) -> Summary {
        let mut loss = Loss::default();
        let mut stalled_tracks = 0;
        let mut unmatched = 0;
        let mut connected = 0;
        let mut lost = 0;
        let mut startup = Startup::default();
        let (mut first_packet, mut first_video, mut first_keyframe) = (vec![], vec![], vec![]);
        for s in subscribers {
            if let Some(v) = millis_between(s.posted_at, s.first_packet) {
                first_packet.push(v);
            } else {
                startup.no_packet += 1;
            }
            first_video.extend(millis_between(s.posted_at, s.first_video));
            first_keyframe.extend(millis_between(s.posted_at, s.first_keyframe));
            startup.started_on_keyframe += usize::from(s.started_on_keyframe);
            lost += usize::from(s.lost.is_some());
            if s.connected_at.is_none() {
                continue;
            }
            connected += 1;
            for (track, rx) in s.tracks.iter().enumerate() {
                unmatched += rx.unmatched;
                match rx.window_counts() {
                    Some((expected, received)) => {
                        loss.expected += expected;
                        loss.received += received;
                        loss.lost += expected.saturating_sub(received);
                    }
                    None => {
                        stalled_tracks += 1;
                        loss.expected += published[track];
                        loss.lost += published[track];
                    }
                }
            }
        }
        loss.percent = if loss.expected > 0 {
            loss.lost as f64 * 100.0 / loss.expected as f64
        } else {
            0.0
        };
        startup.first_packet = Percentiles::of_micros(first_packet);
        startup.first_video = Percentiles::of_micros(first_video);
        startup.first_keyframe = Percentiles::of_micros(first_keyframe);
        Summary {
            loss,
            startup,
            stalled_tracks,
            unmatched,
            connected,
            lost,
        }
    }
}

/// Builds the report from the window and the workers' reports.
fn build_report(
    args: &Args,
    spec: MediaSpec,
    schedule: &Schedule,
    shared: &Shared,
    window: Window,
    workers: Vec<WorkerReport>,
) -> Report {
    let ticks_per_s = procfs::clock_ticks_per_second() as f64;
    let window_s = window
        .end
        .at
        .saturating_duration_since(window.start.at)
        .as_secs_f64()
        .max(1e-3);
    let published = [
        window.end.published[0].saturating_sub(window.start.published[0]),
        window.end.published[1].saturating_sub(window.start.published[1]),
    ];

    let urls = window.joins.len().max(1);
    let mut latency_by_url = vec![Histogram::default(); urls];
    let mut subscribers: Vec<SubscriberReport> = Vec::new();
    let mut send_errors = 0;
    let mut receive_errors = 0;
    for w in workers {
        for (into, from) in latency_by_url.iter_mut().zip(&w.latency) {
            into.merge(from);
        }
        send_errors += w.send_errors;
        receive_errors += w.receive_errors;
        subscribers.extend(w.subscribers);
    }
    let mut latency = Histogram::default();
    for h in &latency_by_url {
        latency.merge(h);
    }

    let all = Summary::of(subscribers.iter(), published);
    let per_url: Vec<UrlReport> = window
        .joins
        .iter()
        .enumerate()
        .map(|(target, joins)| {
            let part = Summary::of(subscribers.iter().filter(|s| s.target == target), published);
            UrlReport {
                url: args.whep_url_list.get(target).cloned().unwrap_or_default(),
                requested: (0..args.subscribers as usize)
                    .filter(|&i| target_of(i, urls) == target)
                    .count(),
                answered: joins.answered,
                redirected: joins.redirected,
                refused: joins.refused.clone(),
                connected: part.connected,
                lost: part.lost,
                stalled_tracks: part.stalled_tracks,
                loss: part.loss,
                latency: percentiles(&latency_by_url[target]),
                startup: part.startup,
            }
        })
        .collect();
    let Summary {
        loss,
        startup,
        stalled_tracks,
        unmatched,
        ..
    } = all;
    let latency_report = percentiles(&latency);

    let forwarded = loss.received;
    let server = args.server_pid.map(|pid| {
        let cpu_s = match (window.start.server_ticks, window.end.server_ticks) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / ticks_per_s,
            _ => 0.0,
        };
        let connected = shared.connected.load(Ordering::Relaxed);
        let rss_before = window.rss_before_kib.unwrap_or(0);
        let rss_window = window.rss_in_window_kib.unwrap_or(0);
        Server {
            pid: pid.to_string(),
            name: procfs::process_name(&pid.to_string()).unwrap_or_default(),
            cpu_us_per_forwarded_packet: (forwarded > 0).then(|| cpu_s * 1e6 / forwarded as f64),
            cpu_percent: cpu_s * 100.0 / window_s,
            rss_before_subscribers_kib: rss_before,
            rss_in_window_kib: rss_window,
            rss_per_subscriber_kib: (connected > 0)
                .then(|| (rss_window as f64 - rss_before as f64) / connected as f64),
        }
    });

    let own_s = window.end.own_ticks.saturating_sub(window.start.own_ticks) as f64 / ticks_per_s;
    let before: HashMap<u64, u64> = window
        .start
        .threads
        .iter()
        .map(|(tid, _, ticks)| (*tid, *ticks))
        .collect();
    let (busiest_thread, busiest_ticks) = window
        .end
        .threads
        .iter()
        .map(|(tid, name, ticks)| {
            (
                name.clone(),
                ticks.saturating_sub(before.get(tid).copied().unwrap_or(0)),
            )
        })
        .max_by_key(|(_, t)| *t)
        .unwrap_or_default();
    let busiest_percent = busiest_ticks as f64 / ticks_per_s * 100.0 / window_s;
    let m0 = window.start.machine;
    let m1 = window.end.machine;
    let busy = m1.busy.saturating_sub(m0.busy) as f64;
    let idle = m1.idle.saturating_sub(m0.idle) as f64;
    let steal = m1.steal.saturating_sub(m0.steal) as f64;
    let all = (busy + idle + steal).max(1.0);
    let machine = Machine {
        cpus: procfs::cpu_count(),
        busy_percent: busy * 100.0 / all,
        steal_percent: steal * 100.0 / all,
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    };
    let lag_ms = shared.publisher_lag_us.load(Ordering::Relaxed) as f64 / 1000.0;
    let generator = Generator {
        cpu_percent: own_s * 100.0 / window_s,
        busiest_thread,
        busiest_thread_percent: busiest_percent,
        publisher_lag_max_ms: lag_ms,
        may_be_the_limit: busiest_percent > 85.0 || lag_ms > 20.0 || machine.busy_percent > 95.0,
        send_errors,
        receive_errors,
    };
    let period_s = schedule.period_ns as f64 / 1e9;
    let publisher = Publisher {
        audio_pps: published[Track::Audio as usize] as f64 / window_s,
        video_pps: published[Track::Video as usize] as f64 / window_s,
        video_kbps_media: schedule.bytes_per_loop[Track::Video as usize] as f64 * 8.0
            / period_s.max(1e-3)
            / 1000.0,
        keyframe_requests: shared.keyframe_requests.load(Ordering::Relaxed),
    };
    Report {
        config: RunConfig {
            url: args.url.clone(),
            stream: args.stream.clone(),
            whep_urls: args.whep_url_list.clone(),
            subscribers: args.subscribers as usize,
            batch: args.batch as usize,
            batch_interval_ms: args.batch_interval_ms,
            warmup_s: args.warmup,
            duration_s: args.duration,
            workers: args.workers as usize,
            media: spec,
            webrtc: "str0m 0.24.1 (RTP mode, OpenSSL crypto)",
        },
        window_s,
        subscribers: Subscribers {
            requested: args.subscribers as usize,
            answered: window.answered,
            connected: subscribers
                .iter()
                .filter(|s| s.connected_at.is_some())
                .count(),
            refused: window.refused,
            lost: subscribers.iter().filter(|s| s.lost.is_some()).count(),
            stalled_tracks,
        },
        publisher,
        forwarded_pps: forwarded as f64 / window_s,
        forwarded_packets: forwarded,
        loss,
        latency: latency_report,
        latency_unmatched: unmatched,
        startup,
        per_url,
        server,
        generator,
        machine,
    }
}

async fn run(mut args: Args) -> Result<Report, (anyhow::Error, bool)> {
    let interrupt = Interrupt::install();
    procfs::raise_open_file_limit();
    if args.key.trim().is_empty() {
        return Err((anyhow!("--key is empty"), false));
    }
    if let Some(pid) = args.server_pid {
        procfs::process_cpu_ticks(&pid.to_string())
            .map_err(|e| (anyhow!("--server-pid {pid}: {e}"), false))?;
    }
    let signaling = Signaling::new(&args.url, Duration::from_secs(args.http_timeout))
        .map_err(|e| (anyhow!(e), false))?;
    args.whep_url_list = whep_urls(&args, &signaling)
        .map_err(|e| (e, false))?
        .iter()
        .map(Url::to_string)
        .collect();
    let spec = media_spec(&args);
    let dir = args.media_dir.clone();
    let fps = spec.fps;
    let spec_for_files = spec.clone();
    let schedule = tokio::task::spawn_blocking(move || {
        let (video, audio) = media::ensure_files(&dir, &spec_for_files)?;
        media::load(&video, &audio, fps)
    })
    .await
    .map_err(|e| (anyhow!("media task: {e}"), false))?
    .map_err(|e| (anyhow!(e), false))?;
    let schedule = Arc::new(schedule);
    eprintln!(
        "zipiq-load: media loop {:.1} s: {} pictures ({} keyframes), {} video + {} audio packets",
        schedule.period_ns as f64 / 1e9,
        schedule.pictures,
        schedule.keyframes,
        schedule.packets_per_loop[Track::Video as usize],
        schedule.packets_per_loop[Track::Audio as usize]
    );

    let shared = Arc::new(Shared::new());
    let mut teardown = Teardown::default();
    let outcome = measure(
        &args,
        schedule.clone(),
        &signaling,
        &shared,
        &mut teardown,
        &interrupt,
    )
    .await;
    let (reports, thread_errors) = teardown.stop_threads(&shared).await;
    for e in &thread_errors {
        eprintln!("zipiq-load: {e}");
    }
    let (deleted, failed) = teardown.delete_sessions(&signaling).await;
    eprintln!("zipiq-load: deleted {deleted} sessions ({failed} failed)");
    match outcome {
        Ok(window) => Ok(build_report(
            &args, spec, &schedule, &shared, window, reports,
        )),
        Err(e) => {
            let interrupted = e.downcast_ref::<Interrupted>().is_some();
            Err((e, interrupted))
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let json_out = args.json_out.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zipiq-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            let text = match serde_json::to_string_pretty(&report) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("zipiq-load: JSON: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if json {
                println!("{text}");
            } else {
                print!("{}", report.table());
            }
            if let Some(path) = json_out
                && let Err(e) = std::fs::write(&path, text + "\n")
            {
                eprintln!("zipiq-load: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err((_, true)) => {
            eprintln!("zipiq-load: interrupted; no report");
            ExitCode::from(130)
        }
        Err((e, false)) => {
            eprintln!("zipiq-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(extra: &[&str]) -> anyhow::Result<Vec<String>> {
        let mut argv = vec!["zipiq-load", "--key", "zq_test", "--stream", "s1"];
        argv.extend_from_slice(extra);
        let args = Args::try_parse_from(argv)?;
        let signaling =
            Signaling::new(&args.url, Duration::from_secs(1)).map_err(|e| anyhow!(e))?;
        Ok(whep_urls(&args, &signaling)?
            .iter()
            .map(Url::to_string)
            .collect())
    }

    #[test]
    fn whep_urls_default_to_the_server_url() {
        assert_eq!(
            resolved(&["--url", "http://127.0.0.2:8080"]).unwrap(),
            ["http://127.0.0.2:8080/whep/s1"]
        );
    }

    #[test]
    fn whep_urls_take_roots_and_endpoints_repeated_or_comma_separated() {
        let urls = resolved(&[
            "--whep-url",
            "http://127.0.0.2:8080,http://127.0.0.3:8081/",
            "--whep-url",
            "http://127.0.0.4:8082/whep/other",
        ])
        .unwrap();
        assert_eq!(
            urls,
            [
                "http://127.0.0.2:8080/whep/s1",
                "http://127.0.0.3:8081/whep/s1",
                "http://127.0.0.4:8082/whep/other"
            ]
        );
        assert!(resolved(&["--whep-url", "https://example.org"]).is_err());
        assert!(resolved(&["--whep-url", "not a url"]).is_err());
    }

    #[test]
    fn subscribers_go_round_robin_over_the_urls() {
        let targets: Vec<usize> = (0..7).map(|i| target_of(i, 3)).collect();
        assert_eq!(targets, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(target_of(5, 1), 0);
        assert_eq!(target_of(5, 0), 0);
    }
}
