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
    /// It has failed and not been level since.
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
    /// Since when a full sync runs to it, if one does.
    pub full_sync_since: Option<SystemTime>,
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
            .zip(paused)
            .map(|((((((t, s), q), owed), behind), rec), paused)| {
                let last_error = s.failures().last().cloned();
                RemoteSnapshot {
                    remote: t.label(),
                    root: t.root.clone(),
                    pushed: s.pushed.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    queued: q,
                    failing: rec.is_failing(),
                    failing_since: rec.failing_since(),
                    owed,
                    next_retry: rec.next_retry(now),
                    last_error_at: last_error.as_ref().map(|(at, _)| *at),
                    last_error: last_error.map(|(_, m)| m),
                    lag: behind
                        .oldest
                        .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
                    pending: behind.pending,
                    longest_push: s.longest_running(now),
                    full_sync_since: *s.full_since(),
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
