//! Reads what the kernel knows about the server, this process and the machine from `/proc`: CPU time
//! (`stat` utime + stime), resident memory (`status` VmRSS), per-thread CPU, and the machine's CPU split.
//!
//! Only read at the edges of the measured window, never on the hot path. Parsers return errors, never panic.

use std::path::Path;

/// Errors reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("unexpected format in {0}")]
    Format(String),
}

/// Clock ticks per second of `utime`/`stime` in `/proc/*/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })
}

/// utime + stime in clock ticks from the text of a `stat` file (the command name may hold spaces and parens,
/// so fields are counted after the last `)`).
fn cpu_ticks_of(stat: &str, path: &str) -> Result<u64, ProcError> {
    let after = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .ok_or_else(|| ProcError::Format(path.to_owned()))?;
    // After the name: state(3) ppid(4) ... utime(14) stime(15), so utime is the 12th field here.
    let mut fields = after.split_whitespace().skip(11);
    let mut next = || -> Result<u64, ProcError> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| ProcError::Format(path.to_owned()))
    };
    Ok(next()? + next()?)
}

/// CPU time (user + system) of a process, in clock ticks.
pub fn process_cpu_ticks(pid: &str) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/stat");
    cpu_ticks_of(&read(&path)?, &path)
}

/// Resident set size of a process, in KiB.
pub fn process_rss_kib(pid: &str) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    read(&path)?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or(ProcError::Format(path))
}

/// Name of a process (`comm`).
pub fn process_name(pid: &str) -> Result<String, ProcError> {
    Ok(read(&format!("/proc/{pid}/comm"))?.trim().to_owned())
}

/// CPU ticks per thread of this process: (thread id, name, ticks).
pub fn own_threads() -> Vec<(u64, String, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let tid: u64 = entry.file_name().to_str()?.parse().ok()?;
            let base = Path::new("/proc/self/task").join(tid.to_string());
            let stat_path = base.join("stat");
            let stat = std::fs::read_to_string(&stat_path).ok()?;
            let ticks = cpu_ticks_of(&stat, &stat_path.to_string_lossy()).ok()?;
            let name = std::fs::read_to_string(base.join("comm")).ok()?;
            Some((tid, name.trim().to_owned(), ticks))
        })
        .collect()
}

/// The machine's CPU time split, summed over all CPUs, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    pub busy: u64,
    pub idle: u64,
    pub steal: u64,
}

/// Reads the `cpu` line of `/proc/stat`.
pub fn machine_cpu() -> Result<MachineCpu, ProcError> {
    let path = "/proc/stat";
    machine_cpu_of(&read(path)?).ok_or_else(|| ProcError::Format(path.to_owned()))
}

fn machine_cpu_of(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user/nice]
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(MachineCpu {
        busy: get(0) + get(1) + get(2) + get(5) + get(6),
        idle: get(3) + get(4),
        steal: get(7),
    })
}

/// Number of CPUs online.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Raises this process's open-file limit to its hard limit: every subscriber has its own UDP socket.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_name_with_spaces_and_parens() {
        let stat =
            "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 555 0 0";
        assert_eq!(cpu_ticks_of(stat, "t").unwrap(), 300);
        assert!(cpu_ticks_of("garbage", "t").is_err());
        assert!(cpu_ticks_of("1 (x) S 1", "t").is_err());
    }

    #[test]
    fn machine_cpu_line_splits_busy_idle_and_steal() {
        let stat = "cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        let cpu = machine_cpu_of(stat).unwrap();
        assert_eq!(cpu.busy, 160);
        assert_eq!(cpu.idle, 1020);
        assert_eq!(cpu.steal, 7);
        assert!(machine_cpu_of("intr 1 2").is_none());
    }

    #[test]
    fn this_process_is_readable() {
        let pid = std::process::id().to_string();
        assert!(process_rss_kib(&pid).unwrap() > 0);
        process_cpu_ticks(&pid).unwrap();
        assert!(!own_threads().is_empty());
        machine_cpu().unwrap();
    }
}
