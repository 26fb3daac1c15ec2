//! What a SIGHUP can change without a restart, and the log of what it changed. Only `log.level` changes live;
//! every other change is reported as waiting for the next restart: by key for the ones operators change most, and
//! by section (`[media] changed`) for the rest.

use crate::config::Config;
use crate::telemetry;

/// Applies the live-changeable differences between `old` and `new`; returns one line per change.
pub(crate) fn apply(old: &Config, new: &Config) -> Vec<String> {
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
    // The keys operators change most are reported by name; the rest by section, compared with the named keys (and
    // log.level) taken as equal, so that each change is reported once. Each named key is listed here only.
    let mut rest = old.clone();
    rest.log.level.clone_from(&new.log.level);
    macro_rules! named {
        ($($section:ident . $key:ident),* $(,)?) => {$(
            if old.$section.$key != new.$section.$key {
                changes.push(format!(
                    "{}.{} changed: takes effect at the next restart",
                    stringify!($section),
                    stringify!($key)
                ));
            }
            rest.$section.$key.clone_from(&new.$section.$key);
        )*};
    }
    named!(
        http.listen,
        media.udp_listen,
        database.url,
        admin.listen,
        admin.token_file,
        admin.allowed_hosts,
        gateway.public_url,
        log.format,
        http.trusted_proxies,
    );
    // The Debug forms hold every key; no section holds a secret's value (only file names). Every section is named
    // (no `..`), so a section added to Config does not compile here until it is compared too.
    let Config {
        server,
        http,
        media,
        database,
        cluster,
        log,
        telemetry,
        admin,
        gateway,
        streams,
        auth,
        smtp,
        audit,
        rate_limits,
        recording,
        ipfs,
        archive,
    } = &rest;
    let sections = [
        ("server", differs(server, &new.server)),
        ("http", differs(http, &new.http)),
        ("media", differs(media, &new.media)),
        ("database", differs(database, &new.database)),
        ("cluster", differs(cluster, &new.cluster)),
        ("log", differs(log, &new.log)),
        ("telemetry", differs(telemetry, &new.telemetry)),
        ("admin", differs(admin, &new.admin)),
        ("gateway", differs(gateway, &new.gateway)),
        ("streams", differs(streams, &new.streams)),
        ("auth", differs(auth, &new.auth)),
        ("smtp", differs(smtp, &new.smtp)),
        ("audit", differs(audit, &new.audit)),
        ("rate_limits", differs(rate_limits, &new.rate_limits)),
        ("recording", differs(recording, &new.recording)),
        ("ipfs", differs(ipfs, &new.ipfs)),
        ("archive", differs(archive, &new.archive)),
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
        new.cluster.lease_ms += 1;
        let changes = apply(&old, &new);
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("media.udp_listen changed"))
        );
        assert!(changes.iter().any(|c| c.starts_with("[media] changed")));
        assert!(changes.iter().any(|c| c.starts_with("[archive] changed")));
        assert!(changes.iter().any(|c| c.starts_with("[cluster] changed")));
        // log.level alone is applied, not reported as a restart.
        let mut new = old.clone();
        new.log.level = "debug".into();
        assert!(apply(&old, &new).iter().all(|c| !c.contains("restart")));
    }
}
