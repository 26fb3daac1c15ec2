//! The result of a run: what was measured, as a text table for people and as JSON (`--json`) for scripts.
//!
//! Built once at the end from the workers' reports and the `/proc` snapshots; numbers that could not be
//! measured (no `--server-pid`, no packet) are `null` in JSON and `n/a` in the table, never made up.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::media::MediaSpec;

/// Percentiles of a distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Percentiles {
    /// From durations in microseconds.
    pub fn of_micros(mut values: Vec<u64>) -> Percentiles {
        values.sort_unstable();
        let at = |q: f64| -> Option<f64> {
            if values.is_empty() {
                return None;
            }
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values.get(rank - 1).map(|&us| us as f64 / 1000.0)
        };
        Percentiles {
            samples: values.len() as u64,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: values.last().map(|&us| us as f64 / 1000.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub url: String,
    pub stream: String,
    /// The WHEP endpoints subscribers were spread over, round robin (subscriber i joins `whep_urls[i % n]`).
    pub whep_urls: Vec<String>,
    pub subscribers: usize,
    pub batch: usize,
    pub batch_interval_ms: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub workers: usize,
    pub media: MediaSpec,
    pub webrtc: &'static str,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Subscribers {
    pub requested: usize,
    /// WHEP answered 201.
    pub answered: usize,
    /// DTLS completed.
    pub connected: usize,
    /// Refused WHEP requests, by kind (401, 409, 503, timeout, ...).
    pub refused: BTreeMap<String, usize>,
    /// Subscribers whose peer failed or lost ICE after joining.
    pub lost: usize,
    /// Connected subscribers that received nothing of a track in the window.
    pub stalled_tracks: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Loss {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub percent: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Startup {
    /// From the WHEP POST to the first RTP packet.
    pub first_packet: Percentiles,
    /// From the WHEP POST to the first video packet.
    pub first_video: Percentiles,
    /// From the WHEP POST to the first packet that begins a keyframe.
    pub first_keyframe: Percentiles,
    /// Subscribers whose first video packet began a keyframe (served from the server's picture cache).
    pub started_on_keyframe: usize,
    /// Subscribers that never received a packet.
    pub no_packet: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Server {
    pub pid: String,
    pub name: String,
    /// Server CPU time (user + system) in the window divided by the packets subscribers received.
    pub cpu_us_per_forwarded_packet: Option<f64>,
    /// Server CPU in the window, in percent of one core.
    pub cpu_percent: f64,
    pub rss_before_subscribers_kib: u64,
    pub rss_in_window_kib: u64,
    /// (RSS in the window - RSS before the first subscriber) / connected subscribers.
    pub rss_per_subscriber_kib: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Generator {
    /// This process's CPU in the window, in percent of one core.
    pub cpu_percent: f64,
    /// The busiest thread of this process in the window.
    pub busiest_thread: String,
    pub busiest_thread_percent: f64,
    /// Largest delay of a publisher packet behind its schedule in the window.
    pub publisher_lag_max_ms: f64,
    /// A heuristic: a thread above 85 % of a core, the publisher more than 20 ms late, or the machine above
    /// 95 % busy means the numbers may show the generator's limit rather than the server's.
    pub may_be_the_limit: bool,
    pub send_errors: u64,
    pub receive_errors: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    /// All CPUs busy in the window, in percent of the whole machine.
    pub busy_percent: f64,
    pub steal_percent: f64,
    pub loadavg: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Publisher {
    /// Packets per second sent (audio, video) in the window.
    pub audio_pps: f64,
    pub video_pps: f64,
    pub video_kbps_media: f64,
    pub keyframe_requests: u64,
}

/// What the subscribers of one WHEP URL saw (a cluster run: viewers on the origin against viewers on an edge).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UrlReport {
    pub url: String,
    /// Subscribers sent to this URL.
    pub requested: usize,
    /// WHEP answered 201.
    pub answered: usize,
    /// Of those, answered after a redirect (a 307 to another node): their media came from elsewhere.
    pub redirected: usize,
    /// Refused WHEP requests, by kind.
    pub refused: BTreeMap<String, usize>,
    pub connected: usize,
    pub lost: usize,
    pub stalled_tracks: usize,
    pub loss: Loss,
    /// One-way latency of this URL's subscribers' packets in the window.
    pub latency: Percentiles,
    pub startup: Startup,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: RunConfig,
    pub window_s: f64,
    pub subscribers: Subscribers,
    pub publisher: Publisher,
    /// Packets received by all subscribers in the window, per second.
    pub forwarded_pps: f64,
    pub forwarded_packets: u64,
    pub loss: Loss,
    /// One-way latency: publisher send to subscriber arrival of the same packet.
    pub latency: Percentiles,
    /// Packets in the window whose send instant could not be found (should be 0).
    pub latency_unmatched: u64,
    pub startup: Startup,
    /// The same figures per WHEP URL, in `config.whep_urls` order.
    pub per_url: Vec<UrlReport>,
    pub server: Option<Server>,
    pub generator: Generator,
    pub machine: Machine,
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v < 10.0 => format!("{v:.2} ms"),
        Some(v) => format!("{v:.0} ms"),
    }
}

fn thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// The text table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.config;
        let s = &self.subscribers;
        let _ = writeln!(
            t,
            "zipiq-load: {} subscribers of {} ({}x{} {} fps H.264 {} kbit/s + Opus), window {:.1} s after {:.1} s warm-up",
            c.subscribers,
            c.whep_urls.join(", "),
            c.media.width,
            c.media.height,
            c.media.fps,
            c.media.video_kbps,
            self.window_s,
            c.warmup_s
        );
        let refused = if s.refused.is_empty() {
            "none refused".to_owned()
        } else {
            let kinds: Vec<String> = s.refused.iter().map(|(k, v)| format!("{v}x {k}")).collect();
            format!("refused: {}", kinds.join(", "))
        };
        let row = |t: &mut String, name: &str, value: String| {
            let _ = writeln!(t, "  {name:<22}{value}");
        };
        row(
            &mut t,
            "subscribers",
            format!(
                "{} answered, {} connected, {} lost, {} stalled tracks; {}",
                s.answered, s.connected, s.lost, s.stalled_tracks, refused
            ),
        );
        row(
            &mut t,
            "published",
            format!(
                "{:.1} pkt/s video + {:.1} pkt/s audio ({:.0} kbit/s video payload); {} keyframe requests",
                self.publisher.video_pps,
                self.publisher.audio_pps,
                self.publisher.video_kbps_media,
                self.publisher.keyframe_requests
            ),
        );
        row(
            &mut t,
            "forwarded",
            format!(
                "{} pkt/s ({} packets received by all subscribers)",
                thousands(self.forwarded_pps.round() as u64),
                thousands(self.forwarded_packets)
            ),
        );
        row(
            &mut t,
            "loss",
            format!(
                "{} of {} ({:.3} %)",
                thousands(self.loss.lost),
                thousands(self.loss.expected),
                self.loss.percent
            ),
        );
        let l = &self.latency;
        row(
            &mut t,
            "one-way latency",
            format!(
                "p50 {}  p90 {}  p99 {}  max {}  ({} samples, {} unmatched)",
                ms(l.p50_ms),
                ms(l.p90_ms),
                ms(l.p99_ms),
                ms(l.max_ms),
                thousands(l.samples),
                self.latency_unmatched
            ),
        );
        let st = &self.startup;
        for (name, p) in [
            ("first packet", &st.first_packet),
            ("first video packet", &st.first_video),
            ("first keyframe packet", &st.first_keyframe),
        ] {
            row(
                &mut t,
                name,
                format!(
                    "p50 {}  p99 {}  max {}  after the WHEP POST ({} subscribers)",
                    ms(p.p50_ms),
                    ms(p.p99_ms),
                    ms(p.max_ms),
                    p.samples
                ),
            );
        }
        row(
            &mut t,
            "started on a keyframe",
            format!(
                "{} of {} subscribers ({} got no packet)",
                st.started_on_keyframe, st.first_video.samples, st.no_packet
            ),
        );
        if self.per_url.len() > 1 {
            self.url_table(&mut t);
        }
        match &self.server {
            Some(sv) => {
                row(
                    &mut t,
                    "server CPU",
                    format!(
                        "{} per forwarded packet ({:.0} % of one core; pid {} {})",
                        sv.cpu_us_per_forwarded_packet
                            .map_or("n/a".into(), |v| format!("{v:.2} us")),
                        sv.cpu_percent,
                        sv.pid,
                        sv.name
                    ),
                );
                row(
                    &mut t,
                    "server RSS",
                    format!(
                        "{} per subscriber (before subscribers {} KiB, in window {} KiB)",
                        sv.rss_per_subscriber_kib
                            .map_or("n/a".into(), |v| format!("{v:.0} KiB")),
                        thousands(sv.rss_before_subscribers_kib),
                        thousands(sv.rss_in_window_kib)
                    ),
                );
            }
            None => row(
                &mut t,
                "server",
                "n/a (give --server-pid for CPU and memory)".into(),
            ),
        }
        let g = &self.generator;
        row(
            &mut t,
            "generator CPU",
            format!(
                "{:.0} % of one core (busiest thread {} {:.0} %), publisher lag max {:.1} ms{}",
                g.cpu_percent,
                g.busiest_thread,
                g.busiest_thread_percent,
                g.publisher_lag_max_ms,
                if g.may_be_the_limit {
                    "  << the generator may be the limit"
                } else {
                    ""
                }
            ),
        );
        let m = &self.machine;
        row(
            &mut t,
            "machine",
            format!(
                "{} CPUs, {:.0} % busy, {:.1} % steal, load {}",
                m.cpus, m.busy_percent, m.steal_percent, m.loadavg
            ),
        );
        t
    }

    /// One line per WHEP URL: subscribers, loss, latency and start-up, side by side.
    fn url_table(&self, t: &mut String) {
        let _ = writeln!(t, "  per WHEP URL:");
        let _ = writeln!(
            t,
            "    {:<34} {:>5} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "url",
            "subs",
            "conn",
            "redir",
            "loss %",
            "lat p50",
            "lat p99",
            "1st pkt50",
            "1st pkt99",
            "refused"
        );
        for u in &self.per_url {
            let refused: usize = u.refused.values().sum();
            let _ = writeln!(
                t,
                "    {:<34} {:>5} {:>5} {:>5} {:>9.3} {:>9} {:>9} {:>9} {:>9} {:>9}",
                u.url,
                u.requested,
                u.connected,
                u.redirected,
                u.loss.percent,
                ms(u.latency.p50_ms),
                ms(u.latency.p99_ms),
                ms(u.startup.first_packet.p50_ms),
                ms(u.startup.first_packet.p99_ms),
                refused
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of_micros((1..=100).map(|v| v * 1000).collect());
        assert_eq!(p.samples, 100);
        assert_eq!(p.p50_ms, Some(50.0));
        assert_eq!(p.p99_ms, Some(99.0));
        assert_eq!(p.max_ms, Some(100.0));
        let empty = Percentiles::of_micros(Vec::new());
        assert_eq!(empty.p50_ms, None);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
