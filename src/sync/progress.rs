//! Progress of the long tasks of a big tree: the walk of a catch-up (or of an index
//! rebuild), a full sync, `--once`. Each running task logs a line every [`every`] (5 s)
//! and shows in the status (`/status`, `--status`) while it runs: what it is, how long
//! it has run, for a walk the entries compared so far, per second, and the changes
//! found so far, and for a full sync rsync's own figures (bytes and files transferred,
//! percentage, rate: `rsync::progress2`), once it wrote some.
//!
//! A task is registered by [`Task::start`] and unregistered when the returned handle is
//! dropped; its counters are atomics the walk bumps. The lines are made by pure
//! functions ([`line`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::rsync::progress2::{Figures, Latest};

/// How often a running task logs its progress line.
pub const EVERY: Duration = Duration::from_secs(5);

/// [`EVERY`], or `SERSYNC2_PROGRESS_SECS` (or the older `SERSYNC2_FULL_PROGRESS_SECS`;
/// read once; for tests and tuning; at least 1 s).
pub fn every() -> Duration {
    static IT: OnceLock<Duration> = OnceLock::new();
    *IT.get_or_init(|| {
        std::env::var("SERSYNC2_PROGRESS_SECS")
            .or_else(|_| std::env::var("SERSYNC2_FULL_PROGRESS_SECS"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(EVERY, |s| Duration::from_secs(s.max(1)))
    })
}

/// One running task's counters.
#[derive(Debug)]
pub struct Counts {
    /// What it is: "catch-up walk of /www", "full sync of /www to h::m".
    what: String,
    /// Whether it counts entries (a walk) or only runs (a full sync).
    counts: bool,
    /// The remote it runs to, if one (a full sync).
    remote: Option<String>,
    /// rsync's figures, while a transfer of its own writes them (a full sync).
    rsync: Arc<Latest>,
    started: Instant,
    since: SystemTime,
    entries: AtomicU64,
    changes: AtomicU64,
}

impl Counts {
    /// `entries` more entries compared, `changes` of them changed (one directory's, at
    /// once: a walk's threads do not meet on the counters for every entry).
    pub fn add(&self, entries: u64, changes: u64) {
        self.entries.fetch_add(entries, Ordering::Relaxed);
        if changes > 0 {
            self.changes.fetch_add(changes, Ordering::Relaxed);
        }
    }

    /// Where it is now.
    pub fn report(&self) -> Report {
        Report {
            what: self.what.clone(),
            remote: self.remote.clone(),
            since: self.since,
            seconds: self.started.elapsed().as_secs_f64(),
            entries: self.counts.then(|| self.entries.load(Ordering::Relaxed)),
            changes: self.counts.then(|| self.changes.load(Ordering::Relaxed)),
            rsync: self.rsync.get(),
        }
    }
}

/// A task's progress at one instant (for the log line and the status).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub what: String,
    /// The remote it runs to, if one (a full sync).
    pub remote: Option<String>,
    pub since: SystemTime,
    pub seconds: f64,
    /// Entries compared so far (a walk).
    pub entries: Option<u64>,
    /// Changes found so far (a walk).
    pub changes: Option<u64>,
    /// rsync's latest figures (a full sync, once rsync wrote some).
    pub rsync: Option<Figures>,
}

impl Report {
    /// Entries per second so far (a walk).
    pub fn per_second(&self) -> Option<f64> {
        let e = self.entries?;
        (self.seconds > 0.0).then(|| e as f64 / self.seconds)
    }

    pub fn line(&self) -> String {
        line(self)
    }
}

/// `1h02m05s`, `1m30s`, `30s`.
pub fn took(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// The progress line of `r`. Pure.
pub fn line(r: &Report) -> String {
    let took = took(Duration::from_secs_f64(r.seconds.max(0.0)));
    match (r.entries, r.changes) {
        (Some(e), changes) => format!(
            "{}: {e} entries compared ({:.0}/s), {} change(s) found ({took} so far)",
            r.what,
            r.per_second().unwrap_or(0.0),
            changes.unwrap_or(0)
        ),
        (None, _) => match &r.rsync {
            Some(f) => format!(
                "{} still running ({took} so far); rsync: {}",
                r.what,
                f.text()
            ),
            None => format!("{} still running ({took} so far)", r.what),
        },
    }
}

fn active() -> std::sync::MutexGuard<'static, Vec<Arc<Counts>>> {
    static ACTIVE: Mutex<Vec<Arc<Counts>>> = Mutex::new(Vec::new());
    // Only pushes and removals of whole entries happen under it: never inconsistent.
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every task running now, oldest first.
pub fn running() -> Vec<Report> {
    active().iter().map(|c| c.report()).collect()
}

/// A running task: logs its line every [`every`] until dropped, and shows in
/// [`running`] meanwhile.
pub struct Task {
    counts: Arc<Counts>,
    /// Dropped at the end, which ends the logging thread.
    done: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Task {
    /// Starts the task `what`; `counts`: whether it counts entries and changes (a walk).
    /// `remote`: the remote label its log lines carry, if any.
    pub fn start(what: String, counts: bool, remote: Option<String>) -> Task {
        let c = Arc::new(Counts {
            what,
            counts,
            remote: remote.clone(),
            rsync: Arc::new(Latest::default()),
            started: Instant::now(),
            since: SystemTime::now(),
            entries: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        });
        active().push(Arc::clone(&c));
        let (done, ended) = crossbeam_channel::bounded::<()>(0);
        let every = every();
        let shown = Arc::clone(&c);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    ended.recv_timeout(every)
                {
                    let l = shown.report().line();
                    match &remote {
                        Some(r) => log::info!(remote = r.as_str(); "{l}"),
                        None => log::info!("{l}"),
                    }
                }
            })
            .ok();
        Task {
            counts: c,
            done: Some(done),
            thread,
        }
    }

    /// Its counters, for the walk to bump.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Where rsync's figures go (a full sync's rsync, `Runner::run_showing`).
    pub fn rsync(&self) -> &Arc<Latest> {
        &self.counts.rsync
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        active().retain(|c| !Arc::ptr_eq(c, &self.counts));
        drop(self.done.take());
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seconds: f64, entries: Option<u64>, changes: Option<u64>) -> Report {
        Report {
            what: "catch-up walk of /www".into(),
            remote: None,
            since: SystemTime::UNIX_EPOCH,
            seconds,
            entries,
            changes,
            rsync: None,
        }
    }

    #[test]
    fn a_walk_says_entries_compared_per_second_and_changes_found() {
        assert_eq!(
            line(&report(5.0, Some(120_000), Some(35))),
            "catch-up walk of /www: 120000 entries compared (24000/s), 35 change(s) found \
             (5s so far)"
        );
        assert_eq!(
            line(&report(0.0, Some(0), Some(0))),
            "catch-up walk of /www: 0 entries compared (0/s), 0 change(s) found (0s so far)"
        );
    }

    #[test]
    fn a_task_without_counts_says_how_long_it_has_run() {
        let mut r = report(90.0, None, None);
        r.what = "full sync of /www to h::m".into();
        assert_eq!(
            line(&r),
            "full sync of /www to h::m still running (1m30s so far)"
        );
        r.seconds = 3_725.0;
        assert_eq!(
            line(&r),
            "full sync of /www to h::m still running (1h02m05s so far)"
        );
    }

    #[test]
    fn a_full_sync_with_rsync_figures_says_them() {
        let mut r = report(12.0, None, None);
        r.what = "full sync of /www to h::m".into();
        r.rsync = Some(Figures {
            transferred: "1,234,567".into(),
            bytes: Some(1_234_567),
            percent: 12,
            rate: "1.23MB/s".into(),
            files: Some(40),
            to_check: Some((900, 1000)),
            list_complete: Some(false),
        });
        assert_eq!(
            line(&r),
            "full sync of /www to h::m still running (12s so far); rsync: 1,234,567 bytes \
             (12%), 1.23MB/s, 40 file(s) transferred, 900 of 1000 listed still to check \
             (list still growing)"
        );
    }

    #[test]
    fn a_task_shows_while_it_runs_and_not_after() {
        let t = Task::start("test task 7f3a".into(), true, None);
        t.counts().add(2, 1);
        let mine = |v: Vec<Report>| v.into_iter().find(|r| r.what == "test task 7f3a");
        let r = mine(running()).expect("registered");
        assert_eq!((r.entries, r.changes), (Some(2), Some(1)));
        assert_eq!(r.rsync, None);
        t.rsync().set(Figures {
            transferred: "5".into(),
            ..Figures::default()
        });
        let r = mine(running()).expect("registered");
        assert_eq!(r.rsync.map(|f| f.transferred), Some("5".to_owned()));
        drop(t);
        assert!(mine(running()).is_none());
    }
}
