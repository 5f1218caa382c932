//! The sync workers: take work from the queue, run rsync, account for the outcome.
//!
//! The workers (`-n`, or [`count`] by default) share one `Mirror`. A worker takes every free pending path of one remote
//! (up to the batch size) into one rsync call; a failed call is retried a few times with
//! backoff, then goes to the fail queue, which is written to the fail log at once. A
//! remote that owes work is tried again on a jittered exponential backoff (1 s doubling
//! to 60 s, see `recovery`): what it owes is queued again at each retry time, and when a
//! remote that did not answer succeeds again, what it is owed is queued right away
//! instead of waiting for the timed replay.
//!
//! Nothing runs for a watch root that is not the directory its watcher watches (removed,
//! renamed away, replaced and not watched yet): a full sync with `--delete` of a missing
//! or new empty directory would wipe the remote. Such work goes to the fail log instead
//! and the watcher's full sync, once the root is watched again, clears it.
//!
//! A fail log that cannot be written (its directory gone, no descriptors, a refused
//! file) is said as such, never as written: what it should hold stays in memory, and the
//! write is tried again at the next change and, while it keeps failing, by the scheduler
//! every [`SAVE_RETRY`] ([`Mirror::retry_save`]); the stop reports what could not be kept
//! ([`Mirror::final_save`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::bisect;
use super::cause::Failures;
use super::faillog::{self, FailLog};
use super::job::{Entry, Job, RemoteId};
use super::lockorder::{Hold, Lock};
use super::queue::Queue;
use super::rsync::{self, Target};
use crate::filter::Excludes;
use crate::watch::RootHealth;
use renames::rename_to_paths;

mod big;
mod book;
mod full_progress;
mod held;
mod listings;
mod partial;
mod push;
mod renames;
mod run_job;
mod snapshot;
mod too_long;

#[cfg(test)]
pub use snapshot::RemoteSnapshot;
pub use snapshot::{FullSyncResult, Snapshot};
pub use too_long::relisted;

/// Something to run for the paths a push delivered (the plugins): called for every
/// rsync call of paths that landed, to every remote.
pub trait AfterPush: Send + Sync {
    fn pushed(&self, landed: &Landed<'_>);
}

/// One rsync call of paths that landed, for [`AfterPush`].
#[derive(Debug)]
pub struct Landed<'a> {
    pub root: &'a Path,
    /// The remote's label, as status and the logs name it.
    pub remote: &'a str,
    /// The remote is its watch root's first (per-path plugins run after that one only).
    pub first: bool,
    pub entries: &'a [Entry],
}

/// Counters per remote, for logs and status.
#[derive(Debug, Default)]
struct Stats {
    /// Paths (or full syncs) pushed successfully.
    pushed: AtomicU64,
    /// rsync calls that failed after their retries.
    failed: AtomicU64,
    /// The last failure and the run of failures going on (the "recovered" line).
    failures: Mutex<Failures>,
    /// When each job running to this remote started (its calls, retries included), and
    /// whether it is a full sync.
    running: Mutex<Vec<(u64, Instant, bool)>>,
    next_call: AtomicU64,
    /// Since when the full sync running to this remote runs, if one does.
    full_since: Mutex<Option<SystemTime>>,
    /// Where the rsync of the full sync running to this remote writes its figures.
    full_rsync: Mutex<Option<Arc<rsync::progress2::Latest>>>,
}

impl Stats {
    fn failures(&self) -> Ordered<'_, Failures> {
        Ordered::lock(&self.failures, Lock::Failures)
    }

    fn running(&self) -> Ordered<'_, Vec<(u64, Instant, bool)>> {
        Ordered::lock(&self.running, Lock::Running)
    }

    fn full_since(&self) -> MutexGuard<'_, Option<SystemTime>> {
        self.full_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken alone and only to read or set its value (never with another lock held).
    fn full_rsync(&self) -> MutexGuard<'_, Option<Arc<rsync::progress2::Latest>>> {
        self.full_rsync.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a job (`full`: a full sync) as running until the returned guard is
    /// dropped.
    fn clock_in(&self, full: bool) -> Running<'_> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        self.running().push((id, Instant::now(), full));
        Running { stats: self, id }
    }

    /// How long the job running longest to this remote has run, and the live push
    /// (not a full sync) running longest.
    fn longest_running(&self, now: Instant) -> (Duration, Duration) {
        let running = self.running();
        let longest = |live_only: bool| {
            running
                .iter()
                .filter(|(_, _, full)| !(live_only && *full))
                .map(|(_, at, _)| now.saturating_duration_since(*at))
                .max()
                .unwrap_or_default()
        };
        (longest(false), longest(true))
    }
}

/// A lock of the push path held, checked against the lock order (ARCHITECTURE.md, see
/// [`super::lockorder`]).
struct Ordered<'a, T> {
    guard: MutexGuard<'a, T>,
    _held: Hold,
}

impl<'a, T> Ordered<'a, T> {
    fn lock(m: &'a Mutex<T>, which: Lock) -> Ordered<'a, T> {
        let held = Hold::new(which);
        // A thread that panicked while holding it left consistent state: every
        // mutation under these locks is completed before any call that could panic.
        Ordered {
            guard: m.lock().unwrap_or_else(|e| e.into_inner()),
            _held: held,
        }
    }
}

impl<T> std::ops::Deref for Ordered<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Ordered<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A job running to a remote, for status (see [`Stats::clock_in`]).
struct Running<'a> {
    stats: &'a Stats,
    id: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.stats.running().retain(|(id, _, _)| *id != self.id);
    }
}

/// Everything the workers share: the targets, their pending work, their fail queue.
pub struct Mirror {
    targets: Vec<Target>,
    queue: Arc<Queue>,
    /// Per target: the `<filter>` excludes and the agent's own files in its root.
    excludes: Vec<Excludes>,
    debug: bool,
    fail_log: Mutex<FailLog>,
    stats: Vec<Stats>,
    stopping: AtomicBool,
    /// Delays before each retry of a failed call.
    retry_delays: Vec<Duration>,
    last_full: Mutex<Option<FullSyncResult>>,
    after_push: Option<Arc<dyn AfterPush>>,
    /// The watch roots' health, once they are watched (see [`Mirror::guard_roots`]).
    roots: OnceLock<Vec<Arc<RootHealth>>>,
    /// Why the last write of the fail log failed, while it did.
    unsaved: Mutex<Option<String>>,
    /// Set while the ssh control directory fails its check (warned once, not per push).
    control_failing: AtomicBool,
    /// What runs rsync and the remote `mv`: child processes, or the simulator's model.
    runner: Arc<dyn rsync::Runner>,
    /// The warm-restart index, told what each push carried (see [`Mirror::record_in`]).
    index: OnceLock<Arc<super::index::Recorder>>,
    /// `<bigFiles>` (see [`Mirror::push_big_files`]); unset: every file whole.
    big: OnceLock<crate::config::BigFiles>,
    /// Per target: the big files its copy is known to hold (`sync::bigfiles`).
    known: Vec<Mutex<super::bigfiles::Known>>,
    /// Per target: its receiver refuses `--delete-missing-args` (found by a call's
    /// answer): deletes go in calls of their own (`rsync::missing`).
    refusing: Vec<AtomicBool>,
}

/// Workers by default per remote: one for a burst's call, one for a single edit beside a
/// long call (see `queue`'s second-call rule).
pub const WORKERS_PER_REMOTE: usize = 2;
/// The fewest workers by default (sersync 2.5's default).
pub const MIN_WORKERS: usize = 10;
/// The most workers by default: threads are cheap, the rsync processes they run are not.
pub const MAX_WORKERS: usize = 256;

/// How many workers to run: `-n` as the operator gave it, else [`WORKERS_PER_REMOTE`]
/// per remote, between [`MIN_WORKERS`] and [`MAX_WORKERS`]. So by default every remote
/// (up to 128 of them) has its own workers: none waits for a free worker while another
/// remote's pushes run, and a remote that hangs holds only its own share (`Queue`
/// gives one remote at most `workers / remotes` calls at once).
pub fn count(flag: Option<u16>, remotes: usize) -> usize {
    match flag {
        Some(n) => usize::from(n).max(1),
        None => remotes
            .saturating_mul(WORKERS_PER_REMOTE)
            .clamp(MIN_WORKERS, MAX_WORKERS),
    }
}

/// How often the scheduler writes the fail log again while its last write failed.
pub const SAVE_RETRY: Duration = Duration::from_secs(5);

impl Mirror {
    pub fn new(
        targets: Vec<Target>,
        queue: Arc<Queue>,
        excludes: Excludes,
        debug: bool,
        mut fail_log: FailLog,
        after_push: Option<Arc<dyn AfterPush>>,
    ) -> Self {
        let stats = targets.iter().map(|_| Stats::default()).collect();
        let known = targets.iter().map(|_| Mutex::default()).collect();
        let refusing = targets.iter().map(|_| AtomicBool::new(false)).collect();
        // What a fail log from before owes goes to the ledger (the queue), the one
        // record of it from now on; it counts as changes made now.
        let now = Instant::now();
        for (t, owed) in std::mem::take(&mut fail_log.owed).iter().enumerate() {
            queue.restore(RemoteId(t), owed, now);
        }
        let excludes = targets
            .iter()
            .map(|t| excludes.clone().with_own(t.own.clone()))
            .collect();
        Mirror {
            targets,
            queue,
            excludes,
            debug,
            fail_log: Mutex::new(fail_log),
            stats,
            stopping: AtomicBool::new(false),
            retry_delays: vec![Duration::from_millis(250), Duration::from_secs(1)],
            last_full: Mutex::new(None),
            after_push,
            roots: OnceLock::new(),
            unsaved: Mutex::new(None),
            control_failing: AtomicBool::new(false),
            runner: Arc::new(rsync::Processes),
            index: OnceLock::new(),
            big: OnceLock::new(),
            known,
            refusing,
        }
    }

    /// For the index, before a rename runs: what its plain form (the old path gone, the
    /// new one and below) and its new side alone are now.
    #[allow(clippy::type_complexity)]
    fn index_before(
        &self,
        t: RemoteId,
        job: &Job,
    ) -> Option<(
        &super::index::Recorder,
        (super::index::Before, super::index::Before),
    )> {
        let ix = self.index.get()?;
        let root = &self.targets[t.0].root;
        let mut plain = ix.before(t, root, &Job::Paths(job.plain_paths()))?;
        // The remote's old path is gone after the rename whatever is there now (made
        // again, it has its own event and push).
        if let (Job::Rename { from, .. }, Some(first)) = (job, plain.first_mut()) {
            if first.0 == *from {
                first.1 = None;
            }
        }
        let to = ix.before(t, root, &rename_to_paths(job))?;
        Some((ix.as_ref(), (plain, to)))
    }

    /// From now on each push's paths are stat'ed before it runs and entered in `index`
    /// once it landed (`src/sync/index.rs`).
    pub fn record_in(&self, index: Arc<super::index::Recorder>) {
        let ix = Arc::clone(&index);
        self.queue
            .count_from(Box::new(move |t, rel| ix.entries_below(t, rel)));
        let _ = self.index.set(index);
    }

    /// The simulator's mirror: its commands go to `runner`, and a failed call is tried
    /// again at once (the simulator owns time; it never sleeps).
    #[cfg(test)]
    pub(crate) fn simulated(mut self, runner: Arc<dyn rsync::Runner>) -> Self {
        self.runner = runner;
        self.retry_delays = vec![Duration::ZERO; self.retry_delays.len()];
        self
    }

    /// Takes one job that may start at `now` and pushes it, in this thread; false when
    /// none may. The simulator's worker step (the agent's workers block in `work`).
    #[cfg(test)]
    pub(crate) fn run_one_at(&self, now: Instant) -> bool {
        match self.queue.try_take_at(now) {
            Some((t, job)) => {
                self.run_job(t, job);
                true
            }
            None => false,
        }
    }

    /// ssh mode: asks each remote's shared connection to close (`ssh -O exit`), at the
    /// end of a pipeline (stop or reload). Best effort, 5 s at most per remote.
    pub fn close_ssh_masters(&self) {
        for t in &self.targets {
            if let Some((program, argv)) = t.ssh_exit_argv() {
                let out = self.runner.run(
                    &program,
                    &t.root,
                    &argv,
                    &[],
                    rsync::Watch::KillAfter(Duration::from_secs(5)),
                );
                log::debug!(
                    "closing the ssh connection to {}: exit {}",
                    t.label(),
                    out.status
                );
            }
        }
        // The control directories go too, once their masters have removed their
        // sockets (a reload with another ssh command left an empty one per command).
        // Only an empty directory is removed; one still in use stays.
        let mut dirs: Vec<&Path> = self
            .targets
            .iter()
            .filter_map(|t| t.ssh_control.as_deref())
            .collect();
        dirs.dedup();
        let until = Instant::now() + Duration::from_millis(500);
        for dir in dirs {
            while std::fs::remove_dir(dir).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTEMPTY))
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Remote `t` as a call uses it. In ssh mode the control directory of the shared
    /// connection is checked before every call (made again if it went away, say a
    /// clean-up of /run; it must be a directory of the agent's own, 0700, not a link):
    /// one that fails the check is not used for this call, which then opens a
    /// connection of its own.
    fn target_for_call(&self, t: RemoteId) -> std::borrow::Cow<'_, Target> {
        let target = &self.targets[t.0];
        let Some(dir) = &target.ssh_control else {
            return std::borrow::Cow::Borrowed(target);
        };
        match crate::sys::fsafe::private_dir(dir, 0o700) {
            Ok(_) => {
                if self.control_failing.swap(false, Ordering::Relaxed) {
                    log::info!("ssh connections are reused again ({})", dir.display());
                }
                std::borrow::Cow::Borrowed(target)
            }
            Err(e) => {
                if !self.control_failing.swap(true, Ordering::Relaxed) {
                    log::warn!("ssh connections are not reused while this lasts: {e}");
                }
                let mut own = target.clone();
                own.ssh_control = None;
                std::borrow::Cow::Owned(own)
            }
        }
    }

    /// From now on, work for a root runs only while `roots` says it is the watched
    /// directory.
    pub fn guard_roots(&self, roots: Vec<Arc<RootHealth>>) {
        let _ = self.roots.set(roots);
    }

    /// Why the root of remote `t` must not be mirrored now, if it must not.
    pub(crate) fn root_unsafe(&self, t: RemoteId) -> Option<String> {
        let root = &self.targets[t.0].root;
        self.roots
            .get()?
            .iter()
            .find(|h| h.path() == root.as_path())?
            .check()
            .err()
            .map(|e| e.to_string())
    }

    /// Keeps a job for a root that is not there in the fail log, untried (a rename as
    /// its plain paths).
    fn defer(&self, t: RemoteId, job: &Job, why: &str) {
        let what = match job {
            Job::Full => "a full sync".to_owned(),
            Job::Paths(p) => format!("{} path(s)", p.len()),
            Job::Rename { from, to, .. } => {
                format!("the rename of {} to {}", from.display(), to.display())
            }
        };
        let job = &job.clone().plain();
        let fl = self.fail_log();
        log::warn!(
            "not pushing {what} to {}: {why}; kept in the fail log {} until the root is watched again",
            self.targets[t.0].label(),
            fl.path.display()
        );
        self.queue.owe(t, job, Instant::now(), 0);
        self.save(&fl);
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Every remote.
    pub fn all(&self) -> Vec<RemoteId> {
        (0..self.targets.len()).map(RemoteId).collect()
    }

    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Queues a full sync of every remote.
    pub fn full_sync_all(&self) {
        self.queue.push_full(&self.all());
    }

    /// The fail log's lock: first in the lock order, never under another (checked).
    fn fail_log(&self) -> Ordered<'_, FailLog> {
        Ordered::lock(&self.fail_log, Lock::FailLog)
    }

    /// The note of the fail log's last failed write.
    fn unsaved_note(&self) -> Ordered<'_, Option<String>> {
        Ordered::lock(&self.unsaved, Lock::Unsaved)
    }

    /// Entries owed to configured remotes.
    pub fn owed(&self) -> usize {
        self.queue.owed_counts().iter().sum()
    }

    /// (root, destination, entries) kept in the fail log for remotes the config does not
    /// name.
    pub fn unknown(&self) -> Vec<(PathBuf, std::ffi::OsString, usize)> {
        self.fail_log().unknown_summary()
    }

    /// Entries owed per remote label, for `--replay`'s report.
    pub fn owed_summary(&self) -> std::collections::BTreeMap<String, usize> {
        faillog::summary(&self.queue.owed(), &self.targets)
    }

    pub fn fail_log_path(&self) -> PathBuf {
        self.fail_log().path.clone()
    }

    /// Starts `n` worker threads.
    pub fn spawn_workers(self: &Arc<Self>, n: usize) -> std::io::Result<Vec<JoinHandle<()>>> {
        (0..n.max(1))
            .map(|i| {
                let mirror = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("sync-{i}"))
                    .spawn(move || mirror.work())
            })
            .collect()
    }

    fn work(&self) {
        while let Some((t, job)) = self.queue.take() {
            // A panic in one push must not end the worker: the guard in `run_job` has
            // already returned the paths to the queue and owed them in the fail log.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_job(t, job);
            }));
            if ran.is_err() {
                log::error!(
                    "a push to {} panicked; its paths are owed in the fail log {}",
                    self.targets[t.0].label(),
                    self.fail_log().path.display()
                );
            }
        }
    }
}

/// The remotes among `targets` that mirror `root`.
pub fn remotes_of(targets: &[Target], root: &Path) -> Vec<RemoteId> {
    targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.root == root)
        .map(|(i, _)| RemoteId(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_worker_count_is_kept() {
        assert_eq!(count(Some(4), 20), 4);
        assert_eq!(count(Some(1), 1), 1);
        assert_eq!(count(Some(1000), 2), 1000);
    }

    #[test]
    fn by_default_every_remote_has_workers_of_its_own() {
        assert_eq!(count(None, 1), MIN_WORKERS);
        assert_eq!(count(None, 2), MIN_WORKERS);
        assert_eq!(count(None, 5), MIN_WORKERS);
        assert_eq!(count(None, 10), 20);
        assert_eq!(count(None, 20), 40);
        assert_eq!(count(None, 1000), MAX_WORKERS);
        assert_eq!(count(None, usize::MAX), MAX_WORKERS);
        for remotes in 1..=MAX_WORKERS / WORKERS_PER_REMOTE {
            assert!(count(None, remotes) >= remotes * WORKERS_PER_REMOTE);
        }
    }
}
