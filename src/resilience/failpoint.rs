//! Failpoints for crash tests: `ZIPIQ_FAILPOINT=<name>[,<name>...]` in the environment makes the process abort at
//! the named point, as a `kill -9` would at exactly the worst moment. Unset (always, outside tests), nothing
//! happens. The crash tests set it on the real binary.
//!
//! Points: `abort-after-bundle-post` (gateway archive mode: the gateway accepted a bundle transaction, the jobs are
//! not marked uploaded yet).

/// Aborts the process when the failpoint `name` is set.
pub fn abort_if_set(name: &str) {
    let Ok(set) = std::env::var("ZIPIQ_FAILPOINT") else {
        return;
    };
    if set.split(',').any(|p| p.trim() == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
