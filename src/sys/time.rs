//! Times as the agent writes them for people: whole unix seconds, and those in RFC 3339,
//! UTC, to the second. The status document, `--status` and the "recovered" log line
//! all write times with [`rfc3339`]. And the monotonic clock as the service manager
//! reads it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Whole seconds since the unix epoch; 0 for a time before it.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A unix time in RFC 3339, UTC, to the second (`2026-12-06T05:32:26Z`).
pub fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(
            || format!("unix time {unix}"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
}

/// CLOCK_MONOTONIC in microseconds (what sd_notify's `MONOTONIC_USEC` carries).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given, valid for the whole call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(u64::MAX), format!("unix time {}", u64::MAX));
    }

    #[test]
    fn a_time_before_the_epoch_is_second_0() {
        let before = UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(unix_seconds(before), 0);
        let later = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_999);
        assert_eq!(unix_seconds(later), 1_700_000_000);
    }
}
