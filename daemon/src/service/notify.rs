//! systemd readiness protocol: READY=1, STATUS=, STOPPING=1 and watchdog pings.
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is not set (not started by systemd), so the
//! daemon behaves the same under tests.

use std::time::Duration;

/// Tell systemd the service is ready (the bus name is owned).
pub fn ready(status: &str) {
    send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)]);
}

/// One-line summary shown by `systemctl status`.
pub fn status(line: &str) {
    send(&[sd_notify::NotifyState::Status(line)]);
}

/// Tell systemd the service is shutting down.
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// Keep-alive ping for `WatchdogSec=`.
pub fn watchdog_ping() {
    send(&[sd_notify::NotifyState::Watchdog]);
}

/// How often to ping: half the watchdog interval, when `WATCHDOG_USEC` is set for us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

fn send(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// Pings systemd's watchdog at half its interval; runs only when WATCHDOG_USEC is set for us.
pub async fn watchdog() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    loop {
        watchdog_ping();
        tokio::time::sleep(interval).await;
    }
}
