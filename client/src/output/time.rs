//! Times: relative ("3 minutes ago") for people, RFC 3339 UTC for JSON.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// "just now", "1 minute ago", "3 hours ago", "2 days ago", "in 5 minutes" (clock skew).
pub fn relative(then_usec: u64, now_usec: u64) -> String {
    let (secs, future) = if now_usec >= then_usec {
        ((now_usec - then_usec) / 1_000_000, false)
    } else {
        ((then_usec - now_usec) / 1_000_000, true)
    };
    let (n, unit) = match secs {
        0..=9 => return "just now".to_owned(),
        10..=59 => (secs, "second"),
        60..=3_599 => (secs / 60, "minute"),
        3_600..=86_399 => (secs / 3_600, "hour"),
        86_400..=2_591_999 => (secs / 86_400, "day"),
        2_592_000..=31_535_999 => (secs / 2_592_000, "month"),
        _ => (secs / 31_536_000, "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if future {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

/// RFC 3339 in UTC with second precision, e.g. `2026-11-23T19:57:49Z`.
pub fn rfc3339(usec: u64) -> String {
    let secs = usec / 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3_600, rem % 3_600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): the well-known
/// era-based conversion (400-year cycles of 146097 days), for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn relative_times() {
        let now = 100_000_000 * S;
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - 9 * S, now), "just now");
        assert_eq!(relative(now - 42 * S, now), "42 seconds ago");
        assert_eq!(relative(now - 60 * S, now), "1 minute ago");
        assert_eq!(relative(now - 3 * 60 * S - 5 * S, now), "3 minutes ago");
        assert_eq!(relative(now - 2 * 3_600 * S, now), "2 hours ago");
        assert_eq!(relative(now - 86_400 * S, now), "1 day ago");
        assert_eq!(relative(now - 40 * 86_400 * S, now), "1 month ago");
        assert_eq!(relative(0, 800 * 86_400 * S), "2 years ago");
        assert_eq!(relative(now + 300 * S, now), "in 5 minutes");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        assert_eq!(rfc3339(951_827_696 * S + 999_999), "2000-02-29T12:34:56Z");
        assert_eq!(rfc3339(1_795_463_869 * S), "2026-11-23T19:57:49Z");
        assert_eq!(rfc3339(4_107_542_399 * S), "2100-02-28T23:59:59Z");
    }
}
