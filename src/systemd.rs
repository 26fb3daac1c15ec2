//! systemd integration: `READY=1` once every listener is bound, `WATCHDOG=1` pings at half the watchdog interval,
//! `STATUS=` lines, `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` (not run by systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the service is ready, with a status line.
pub(crate) fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the status line shown by `systemctl status`.
pub(crate) fn status(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status)]);
}

/// Tells systemd the service is stopping.
pub(crate) fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Starts the watchdog pings when systemd asked for them (`WatchdogSec=`). The pings come from the async
/// runtime, so a wedged runtime stops them and systemd restarts the service.
pub(crate) fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) else {
        return;
    };
    let period: Duration = interval / 2;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    });
}
