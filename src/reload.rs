//! What a SIGHUP can change without a restart, and the log of what it changed. Everything else in the
//! configuration needs a restart; a changed key of that kind is reported as such.

use crate::config::Config;
use crate::telemetry;

/// Applies the live-changeable differences between `old` and `new`; returns one line per change.
pub fn apply(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    if old.log.level != new.log.level {
        if telemetry::set_log_level(&new.log.level) {
            changes.push(format!(
                "log.level {:?} -> {:?}",
                old.log.level, new.log.level
            ));
        } else {
            changes.push("log.level changed but no reloadable subscriber is installed".into());
        }
    }
    let restart_needed = [
        ("http.listen", old.http.listen != new.http.listen),
        (
            "media.udp_listen",
            old.media.udp_listen != new.media.udp_listen,
        ),
        ("database.url", old.database.url != new.database.url),
        ("admin.listen", old.admin.listen != new.admin.listen),
        (
            "admin.token_file",
            old.admin.token_file != new.admin.token_file,
        ),
        (
            "admin.allowed_hosts",
            old.admin.allowed_hosts != new.admin.allowed_hosts,
        ),
        (
            "gateway.public_url",
            old.gateway.public_url != new.gateway.public_url,
        ),
        ("log.format", old.log.format != new.log.format),
        (
            "http.trusted_proxies",
            old.http.trusted_proxies != new.http.trusted_proxies,
        ),
        ("[auth]", old.auth != new.auth),
        ("[smtp]", old.smtp != new.smtp),
        ("[rate_limits]", old.rate_limits != new.rate_limits),
    ];
    for (key, changed) in restart_needed {
        if changed {
            changes.push(format!("{key} changed: takes effect at the next restart"));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_are_reported_not_applied() {
        let old = Config::defaults().unwrap();
        let mut new = old.clone();
        new.http.listen = "127.0.0.1:1".parse().unwrap();
        let changes = apply(&old, &new);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].contains("http.listen"));
        assert!(apply(&old, &old.clone()).is_empty());
    }
}
