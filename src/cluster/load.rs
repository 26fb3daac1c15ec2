//! This node's load as the registry shows it: CPU use of the process (from `/proc/self/stat`) and the egress bit
//! rate (from the forwarders' byte count), each over the interval since the previous sample.

use std::time::Instant;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`): 100 on every Linux architecture's ABI.
const USER_HZ: f64 = 100.0;

/// Successive samples of the process's CPU time and forwarded bytes.
#[derive(Debug)]
pub(crate) struct LoadSampler {
    last: Option<(Instant, f64, u64)>,
    cores: f64,
}

/// One sample's rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Load {
    /// CPU use of the process over the interval, in thousandths of all cores (0-1000).
    pub cpu_permille: i64,
    /// Bits per second forwarded to viewers over the interval.
    pub egress_bps: i64,
}

impl LoadSampler {
    pub(crate) fn new() -> LoadSampler {
        LoadSampler {
            last: None,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        }
    }

    /// The rates since the previous call (zero at the first).
    pub(crate) fn sample(&mut self, forwarded_bytes: u64) -> Load {
        let now = Instant::now();
        let cpu = process_cpu_seconds().unwrap_or(0.0);
        let load = match self.last {
            Some((then, cpu_then, bytes_then)) => {
                let secs = now.duration_since(then).as_secs_f64().max(1e-3);
                let share = ((cpu - cpu_then).max(0.0) / secs / self.cores).clamp(0.0, 1.0);
                Load {
                    cpu_permille: (share * 1000.0).round() as i64,
                    egress_bps: (forwarded_bytes.saturating_sub(bytes_then) as f64 * 8.0 / secs)
                        .round() as i64,
                }
            }
            None => Load::default(),
        };
        self.last = Some((now, cpu, forwarded_bytes));
        load
    }
}

/// User plus system CPU time of this process, in seconds.
fn process_cpu_seconds() -> Option<f64> {
    parse_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in seconds. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": state is field 3, so utime (14) is the 12th.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "1234 (zip iq) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert!(process_cpu_seconds().is_some());
    }

    #[test]
    fn rates_come_from_the_second_sample() {
        let mut s = LoadSampler::new();
        assert_eq!(s.sample(0), Load::default());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let load = s.sample(1_000);
        assert!(
            load.egress_bps > 0 && load.egress_bps <= 8_000 * 50,
            "{load:?}"
        );
        assert!((0..=1000).contains(&load.cpu_permille));
    }
}
