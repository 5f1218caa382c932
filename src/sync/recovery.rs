//! A remote that owes work: when what it owes is tried again, and when it counts as back.
//!
//! Each failed call puts the remote on the [`backoff`](super::backoff) schedule: what it
//! owes (its fail-log entries) is queued again at the next retry time; the queue keeps
//! the order per path as for any change. The kind of failure decides the rest:
//!
//! - the remote did not answer (rsync exit 5, 10, 12, 14, 30, 35, ssh's 255, rsync
//!   killed or missing): the remote rests until the retry, which is the probe; the first
//!   call that succeeds afterwards (the probe or a live push) means it is back, so what
//!   it owes is queued at once and its backoff starts again from the first step;
//! - it answered but some paths did not transfer (exit 23 and the like): live pushes go
//!   on as usual, and their success says nothing about the owed paths, so those wait for
//!   the schedule only (a full sync that fails on an unreadable path is tried again at
//!   1 s, 2 s, 4 s ... 60 s, not after every later push).
//!
//! Once a success leaves the remote owing nothing, it is level: the state resets.
//! Calls that fail while a retry is already scheduled (several calls in flight) belong
//! to the same round and do not push the schedule further.
//!
//! `Recovery` is plain state, with time and randomness passed in, so it is unit tested
//! without clocks. Each remote's `Ledger` keeps its one (the ledger owns when what is
//! owed is retried: `Ledger::failed`, `Ledger::pushed`, `Ledger::retry_due`); nothing
//! else keeps a copy.

use std::time::{Duration, Instant, SystemTime};

use super::backoff;

/// A failed call to a remote that answered rests the remote this long (so a call that
/// fails at once cannot spin), as before the backoff existed.
pub const ANSWERED_REST: Duration = Duration::from_secs(1);

/// Did this rsync status mean the remote could not be reached (as opposed to: it
/// answered, but some paths did not transfer)?
pub fn unreachable(status: i32) -> bool {
    matches!(status, 5 | 10 | 12 | 14 | 30 | 35 | 255 | 127 | -1)
}

/// The retry state of one remote.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Retries scheduled since the remote was last level or came back.
    retries: u32,
    failing_since: Option<SystemTime>,
    next_retry: Option<(Instant, SystemTime)>,
    /// The last failure was the remote not answering.
    unreachable: bool,
}

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// When the remote's owed work is queued again.
    pub retry_at: Instant,
    /// How long the remote rests before its next call.
    pub rest: Duration,
}

impl Recovery {
    /// A call failed with `status` at `now` (`wall` is the same moment on the clock);
    /// `random` places the retry in its jitter window.
    pub fn failed(&mut self, now: Instant, wall: SystemTime, status: i32, random: u64) -> Plan {
        self.failing_since.get_or_insert(wall);
        self.unreachable = unreachable(status);
        let retry_at = match self.next_retry {
            // Another call of the same round: the retry stands.
            Some((at, _)) if at > now => at,
            _ => {
                let d = backoff::delay(self.retries, random);
                self.retries = self.retries.saturating_add(1);
                self.next_retry = Some((now + d, wall + d));
                now + d
            }
        };
        let rest = if self.unreachable {
            retry_at.saturating_duration_since(now)
        } else {
            ANSWERED_REST
        };
        Plan { retry_at, rest }
    }

    /// A call succeeded; `still_owes`: the remote has fail-log entries left after it.
    /// Returns true if the remote is back from being unreachable, so that what it owes
    /// is to be queued now (and any scheduled retry dropped).
    pub fn succeeded(&mut self, still_owes: bool) -> bool {
        if !still_owes {
            *self = Recovery::default();
            return false;
        }
        if !self.unreachable {
            return false;
        }
        self.unreachable = false;
        self.retries = 0;
        self.next_retry = None;
        true
    }

    /// The remote has failed and not been level since.
    pub fn is_failing(&self) -> bool {
        self.failing_since.is_some()
    }

    pub fn failing_since(&self) -> Option<SystemTime> {
        self.failing_since
    }

    /// When the owed work is next queued, if that is still to come.
    pub fn next_retry(&self, now: Instant) -> Option<SystemTime> {
        self.next_retry
            .filter(|(at, _)| *at > now)
            .map(|(_, wall)| wall)
    }

    /// When the owed work is queued again, if a retry is set (due or not).
    pub fn retry(&self) -> Option<Instant> {
        self.next_retry.map(|(at, _)| at)
    }

    /// Sets the retry at `at` (`now` and `wall` are the same moment), replacing one set
    /// before; the backoff step stays (for tests: the workers set it with `failed`).
    #[cfg(test)]
    pub fn set_retry(&mut self, at: Instant, now: Instant, wall: SystemTime) {
        self.next_retry = Some((at, wall + at.saturating_duration_since(now)));
    }

    /// The retry set is dropped: it came (what is owed was queued) or is not wanted.
    /// A call failing after it starts the next step of the backoff.
    pub fn clear_retry(&mut self) {
        self.next_retry = None;
    }
}

/// The paths rsync names in its "failed" lines on stderr (`rsync: [sender] opendir
/// "/x/y" failed: Permission denied (13)`, `send_files failed to open "/x/z": ...`,
/// `mkstemp "..." failed` on the receiving side): the first `keep` distinct ones, and
/// how many more there were.
pub fn failed_paths(stderr: &str, keep: usize) -> (Vec<String>, usize) {
    let mut found: Vec<String> = Vec::new();
    let mut more = 0;
    for line in stderr.lines() {
        let line = line.trim();
        if !line.starts_with("rsync:") || !line.contains("failed") {
            continue;
        }
        let (Some(open), Some(close)) = (line.find('"'), line.rfind('"')) else {
            continue;
        };
        if close <= open + 1 {
            continue;
        }
        let path = &line[open + 1..close];
        if found.iter().any(|p| p == path) {
            continue;
        }
        if found.len() < keep {
            found.push(path.to_owned());
        } else {
            more += 1;
        }
    }
    (found, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn an_unreachable_remote_rests_until_its_retry_and_the_delays_grow() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut r = Recovery::default();
        let p = r.failed(t0, w0, 10, 0);
        assert_eq!(p.retry_at, at(t0, 800));
        assert_eq!(p.rest, Duration::from_millis(800));
        assert!(r.is_failing());
        assert_eq!(r.failing_since(), Some(w0));
        // The probe fails too: the next wait is longer.
        let t1 = p.retry_at;
        let p = r.failed(t1, w0, 10, 0);
        assert_eq!(p.retry_at, t1 + Duration::from_millis(1600));
        assert_eq!(
            r.failing_since(),
            Some(w0),
            "failing since the first failure"
        );
        assert!(r.next_retry(t1).is_some());
        assert_eq!(r.next_retry(p.retry_at), None, "past retries are not shown");
    }

    #[test]
    fn calls_failing_in_one_round_do_not_push_the_retry_further() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut r = Recovery::default();
        let first = r.failed(t0, w0, 10, 0);
        let second = r.failed(at(t0, 100), w0, 10, u64::MAX);
        assert_eq!(first.retry_at, second.retry_at);
        assert_eq!(second.rest, Duration::from_millis(700));
    }

    #[test]
    fn back_from_unreachable_queues_what_is_owed_and_starts_the_backoff_again() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut r = Recovery::default();
        let mut t = t0;
        for _ in 0..5 {
            t = r.failed(t, w0, 5, 0).retry_at;
        }
        assert!(r.succeeded(true), "back: queue what it owes now");
        assert!(r.is_failing(), "still owes until that lands");
        assert_eq!(r.next_retry(t0), None);
        // Its owed work fails with a partial transfer: the schedule starts at 1 s again.
        let p = r.failed(t, w0, 23, 0);
        assert_eq!(p.retry_at, t + Duration::from_millis(800));
        assert!(!r.succeeded(false), "level: nothing to queue");
        assert!(!r.is_failing());
        assert_eq!(r.next_retry(t0), None);
    }

    #[test]
    fn a_partial_failure_is_not_retried_on_every_later_success() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut r = Recovery::default();
        let p = r.failed(t0, w0, 23, 0);
        assert_eq!(p.rest, ANSWERED_REST, "live pushes go on");
        for _ in 0..10 {
            assert!(
                !r.succeeded(true),
                "a live push proves nothing about the owed paths"
            );
        }
        assert!(
            r.next_retry(t0).is_some(),
            "the owed work waits for its retry"
        );
        let p2 = r.failed(p.retry_at, w0, 23, 0);
        assert_eq!(p2.retry_at, p.retry_at + Duration::from_millis(1600));
    }

    #[test]
    fn statuses_that_mean_the_remote_did_not_answer() {
        for s in [5, 10, 12, 30, 35, 255, -1] {
            assert!(unreachable(s), "{s}");
        }
        for s in [1, 3, 11, 23] {
            assert!(!unreachable(s), "{s}");
        }
    }

    #[test]
    fn failed_paths_are_read_from_rsync_stderr() {
        let err = "rsync: [sender] opendir \"/www/a/b\" failed: Permission denied (13)\n\
                   rsync: [sender] send_files failed to open \"/www/c d.txt\": Permission denied (13)\n\
                   rsync: [sender] opendir \"/www/a/b\" failed: Permission denied (13)\n\
                   rsync: [receiver] mkstemp \"/x/.e.Ab12Cd\" failed: Permission denied (13)\n\
                   rsync: opendir \"/old/style\" failed: Permission denied (13)\n\
                   sent 100 bytes  received 20 bytes\n\
                   rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]";
        let (paths, more) = failed_paths(err, 3);
        assert_eq!(paths, ["/www/a/b", "/www/c d.txt", "/x/.e.Ab12Cd"]);
        assert_eq!(more, 1);
        assert_eq!(failed_paths("garbage\nrsync: \"\" failed", 3), (vec![], 0));
    }
}
