//! The workers' state at one moment, for status, as a plain value.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::{Mirror, Ordered};
use crate::sync::lockorder::Lock;

/// How the last full sync went, for status.
#[derive(Debug, Clone)]
pub struct FullSyncResult {
    pub ended: SystemTime,
    pub ok: bool,
    pub seconds: f64,
    pub remote: String,
}

/// One remote as status shows it.
#[derive(Debug, Clone)]
pub struct RemoteSnapshot {
    pub remote: String,
    pub root: PathBuf,
    pub pushed: u64,
    pub failed: u64,
    pub queued: usize,
    /// A call to it failed (a retry of it included) and none has succeeded since, or
    /// it owes what failed and has not been level since (see [`failing_since`]).
    pub failing: bool,
    pub failing_since: Option<SystemTime>,
    /// Its entries in the fail log (paths, and a full sync as one).
    pub owed: usize,
    /// When what it owes is next queued again (backoff), if a retry is scheduled.
    pub next_retry: Option<SystemTime>,
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<SystemTime>,
    /// Age of the oldest change not on the remote yet (waiting, in flight or owed); zero
    /// when it is level.
    pub lag: Duration,
    /// Entries waiting or in flight.
    pub pending: usize,
    /// How long the push running longest to it has run (zero: none running). A remote
    /// that accepts connections and stops answering shows here long before rsync's I/O
    /// timeout ends the call.
    pub longest_push: Duration,
    /// How long the live push (not a full sync) running longest to it has run.
    pub longest_live_push: Duration,
    /// Since when a full sync runs to it, if one does.
    pub full_sync_since: Option<SystemTime>,
    /// Deletes the brake on mass deletes holds for it (`ledger/brake.rs`).
    pub held_deletes: usize,
    /// A full sync is held with them.
    pub held_full: bool,
    /// Since when deletes are held, while they are.
    pub held_since: Option<SystemTime>,
    /// The operator paused it (`sersync2 --pause`): nothing is pushed to it.
    pub paused: bool,
}

/// The sync state at one moment, as a plain value.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uptime: Duration,
    pub fail_log: PathBuf,
    pub fail_log_entries: usize,
    /// Of those, entries for a root or remote the config does not name (kept, not run).
    pub unknown_entries: usize,
    pub last_full_sync: Option<FullSyncResult>,
    pub remotes: Vec<RemoteSnapshot>,
}

impl Mirror {
    /// The state now, for status.
    pub fn snapshot(&self) -> Snapshot {
        let queued = self.queue.waiting();
        let behind = self.queue.behind();
        let owed = self.queue.owed_counts();
        let recoveries = self.queue.recoveries();
        let held = self.queue.held();
        let paused = self.queue.paused();
        let (fail_log, fail_log_entries, unknown_entries) = {
            let fl = self.fail_log();
            let unknown = fl.unknown_len();
            (
                fl.path.clone(),
                owed.iter().sum::<usize>() + unknown,
                unknown,
            )
        };
        let now = Instant::now();
        let remotes = self
            .targets
            .iter()
            .zip(&self.stats)
            .zip(queued)
            .zip(owed)
            .zip(behind)
            .zip(recoveries)
            .zip(held)
            .zip(paused)
            .map(|(((((((t, s), q), owed), behind), rec), held), paused)| {
                let (last_error, run_since) = {
                    let f = s.failures();
                    (f.last().cloned(), f.failing_since())
                };
                let since = failing_since(rec.failing_since(), run_since);
                let (longest_push, longest_live_push) = s.longest_running(now);
                RemoteSnapshot {
                    remote: t.label(),
                    root: t.root.clone(),
                    pushed: s.pushed.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    queued: q,
                    failing: since.is_some(),
                    failing_since: since,
                    owed,
                    next_retry: rec.next_retry(now),
                    last_error_at: last_error.as_ref().map(|(at, _)| *at),
                    last_error: last_error.map(|(_, m)| m),
                    lag: behind
                        .oldest
                        .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
                    pending: behind.pending,
                    longest_push,
                    longest_live_push,
                    full_sync_since: *s.full_since(),
                    held_deletes: held.deletes,
                    held_full: held.full,
                    held_since: held
                        .since
                        .map(|at| SystemTime::now() - now.saturating_duration_since(at)),
                    paused,
                }
            })
            .collect();
        Snapshot {
            uptime: crate::sys::uptime(),
            fail_log,
            fail_log_entries,
            unknown_entries,
            last_full_sync: Ordered::lock(&self.last_full, Lock::LastFull).clone(),
            remotes,
        }
    }
}

/// Since when a remote is failing: since the first failure the ledger still holds
/// against it (`recovery`: it owes what failed, until it is level), or since the first
/// failed call of the run going on (`run`: a call failed, its retries included, and
/// none succeeded since), whichever is earlier. A remote whose calls fail is failing from
/// the first failed call, not only once a call has used up its retries (a remote that
/// stopped answering takes rsync's I/O timeout per try).
pub fn failing_since(recovery: Option<SystemTime>, run: Option<SystemTime>) -> Option<SystemTime> {
    match (recovery, run) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_is_failing_from_its_first_failed_call_whatever_the_ledger_holds_yet() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(failing_since(None, None), None);
        // A call failed and is being retried: the ledger owes nothing yet.
        assert_eq!(failing_since(None, Some(t(5))), Some(t(5)));
        // Calls succeed again while it still owes what failed.
        assert_eq!(failing_since(Some(t(3)), None), Some(t(3)));
        assert_eq!(failing_since(Some(t(3)), Some(t(9))), Some(t(3)));
        assert_eq!(failing_since(Some(t(9)), Some(t(3))), Some(t(3)));
    }
}
