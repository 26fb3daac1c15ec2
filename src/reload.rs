//! What a SIGHUP can change without a restart, and the log of what it changed. Only `log.level` changes live;
//! every other change is reported as waiting for the next restart: by key for the ones operators change most, and
//! by section (`[media] changed`) for the rest.

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
    // Every other key, by section: compared with the keys above (and log.level) taken as equal, so a change is
    // reported once. The Debug forms hold every key; no section holds a secret's value (only file names).
    let mut rest = old.clone();
    rest.http.listen = new.http.listen;
    rest.http
        .trusted_proxies
        .clone_from(&new.http.trusted_proxies);
    rest.media.udp_listen = new.media.udp_listen;
    rest.database.url.clone_from(&new.database.url);
    rest.admin.listen = new.admin.listen;
    rest.admin.token_file.clone_from(&new.admin.token_file);
    rest.admin
        .allowed_hosts
        .clone_from(&new.admin.allowed_hosts);
    rest.gateway.public_url.clone_from(&new.gateway.public_url);
    rest.log.level.clone_from(&new.log.level);
    rest.log.format = new.log.format;
    let sections = [
        ("server", differs(&rest.server, &new.server)),
        ("http", differs(&rest.http, &new.http)),
        ("media", differs(&rest.media, &new.media)),
        ("database", differs(&rest.database, &new.database)),
        ("log", differs(&rest.log, &new.log)),
        ("admin", differs(&rest.admin, &new.admin)),
        ("gateway", differs(&rest.gateway, &new.gateway)),
        ("streams", differs(&rest.streams, &new.streams)),
        ("audit", differs(&rest.audit, &new.audit)),
        ("recording", differs(&rest.recording, &new.recording)),
        ("ipfs", differs(&rest.ipfs, &new.ipfs)),
        ("archive", differs(&rest.archive, &new.archive)),
    ];
    for (section, changed) in sections {
        if changed {
            changes.push(format!(
                "[{section}] changed: takes effect at the next restart"
            ));
        }
    }
    changes
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
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
        // A key without a line of its own is reported by its section, once, beside a named key of that section.
        let mut new = old.clone();
        new.media.max_sessions += 1;
        new.media.udp_listen = "127.0.0.1:2".parse().unwrap();
        new.archive.concurrency += 1;
        let changes = apply(&old, &new);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("media.udp_listen changed"))
        );
        assert!(changes.iter().any(|c| c.starts_with("[media] changed")));
        assert!(changes.iter().any(|c| c.starts_with("[archive] changed")));
        // log.level alone is applied, not reported as a restart.
        let mut new = old.clone();
        new.log.level = "debug".into();
        assert!(apply(&old, &new).iter().all(|c| !c.contains("restart")));
    }
}
