//! Waiting at boot for the devices the configuration names.
//!
//! `snapbackd activate` runs early, ordered only after udevd has started: a disk that is still
//! being probed (a slow controller, a multipath or iSCSI disk, a USB enclosure) has no node
//! yet. Failing at once would leave every `/dev/mapper/snapback-*` missing and the boot in
//! emergency mode after the mounts time out, so activation waits for the nodes first, bounded
//! like systemd's own wait for an fstab device (90 s by default). It waits before touching
//! device-mapper, so a disk that never comes leaves nothing half-assembled: a rollback set
//! spanning several volumes either starts on all of them or on none.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;

const POLL: Duration = Duration::from_millis(100);

/// A device the configuration names, and what it is for (to say so when it is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedDevice {
    pub role: String,
    pub path: PathBuf,
}

impl std::fmt::Display for NamedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.role)
    }
}

/// The pool and every volume's backing device.
pub fn configured(config: &Config) -> Vec<NamedDevice> {
    let pool = NamedDevice { role: "the pool".into(), path: config.pool.path.clone() };
    let volumes = config
        .volumes
        .iter()
        .map(|v| NamedDevice { role: format!("volume {}", v.name), path: v.device.clone() });
    std::iter::once(pool).chain(volumes).collect()
}

fn missing(devices: &[NamedDevice]) -> Vec<NamedDevice> {
    // `exists` follows symlinks: a /dev/disk/by-* link whose disk is gone counts as missing.
    devices.iter().filter(|d| !d.path.exists()).cloned().collect()
}

/// The devices as one line, for messages: `/dev/sdb1 (volume var), /dev/sdc (the pool)`.
pub fn describe(devices: &[NamedDevice]) -> String {
    devices.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Waits until every device exists, up to `timeout`. Returns how long it waited, or the
/// devices still missing when the time ran out.
pub fn wait_for(devices: &[NamedDevice], timeout: Duration) -> Result<Duration, Vec<NamedDevice>> {
    let start = Instant::now();
    let mut absent = missing(devices);
    if absent.is_empty() {
        return Ok(Duration::ZERO);
    }
    if timeout.is_zero() {
        return Err(absent);
    }
    tracing::warn!(
        "waiting up to {} s for devices named in the configuration: {}",
        timeout.as_secs(),
        describe(&absent)
    );
    loop {
        if start.elapsed() >= timeout {
            return Err(absent);
        }
        std::thread::sleep(POLL);
        absent = missing(&absent);
        if absent.is_empty() {
            let waited = start.elapsed();
            tracing::info!("every configured device is present after {} ms", waited.as_millis());
            return Ok(waited);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn device(dir: &std::path::Path, name: &str) -> NamedDevice {
        NamedDevice { role: format!("volume {name}"), path: dir.join(name) }
    }

    #[test]
    fn present_devices_need_no_wait() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        assert_eq!(
            wait_for(&[device(dir.path(), "a")], Duration::from_secs(5)),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn a_device_that_appears_later_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        let late = dir.path().join("late");
        let appear = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            // A symlink, as udev makes under /dev/disk: it counts once its target is there.
            std::os::unix::fs::symlink("a", &late).unwrap();
        });
        let devices = [device(dir.path(), "a"), device(dir.path(), "late")];
        let waited = wait_for(&devices, Duration::from_secs(30)).unwrap();
        appear.join().unwrap();
        assert!(
            waited >= Duration::from_millis(400),
            "returned before the device appeared: {waited:?}"
        );
    }

    #[test]
    fn devices_still_missing_are_named_when_the_time_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        std::os::unix::fs::symlink("gone", dir.path().join("dangling")).unwrap();
        let devices =
            [device(dir.path(), "a"), device(dir.path(), "never"), device(dir.path(), "dangling")];
        let missing = wait_for(&devices, Duration::from_millis(300)).unwrap_err();
        assert_eq!(missing, vec![devices[1].clone(), devices[2].clone()]);
        assert_eq!(wait_for(&devices, Duration::ZERO).unwrap_err(), missing, "0: no wait at all");
        let text = describe(&missing);
        assert!(
            text.contains("never (volume never)") && text.contains("dangling (volume dangling)"),
            "{text}"
        );
    }
}
