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

use super::cause::{self, Cause, Failures};
use super::faillog::{self, FailLog};
use super::job::{Entry, Job, RemoteId};
use super::lockorder::{Hold, Lock};
use super::queue::Queue;
use super::recovery;
use super::rsync::{self, Outcome, Target};
use crate::filter::Excludes;
use crate::watch::{too_long_for_rsync, RootHealth};

/// Something to run for the paths a push delivered (the plugins): called once per
/// path, after the watch root's first remote has it.
pub trait AfterPush: Send + Sync {
    fn pushed(&self, root: &Path, rel_paths: &[PathBuf]);
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
    /// When each job running to this remote started (its calls, retries included).
    running: Mutex<Vec<(u64, Instant)>>,
    next_call: AtomicU64,
    /// Since when the full sync running to this remote runs, if one does.
    full_since: Mutex<Option<SystemTime>>,
}

impl Stats {
    fn failures(&self) -> Ordered<'_, Failures> {
        Ordered::lock(&self.failures, Lock::Failures)
    }

    fn running(&self) -> Ordered<'_, Vec<(u64, Instant)>> {
        Ordered::lock(&self.running, Lock::Running)
    }

    fn full_since(&self) -> MutexGuard<'_, Option<SystemTime>> {
        self.full_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a job as running until the returned guard is dropped.
    fn clock_in(&self) -> Running<'_> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        self.running().push((id, Instant::now()));
        Running { stats: self, id }
    }

    /// How long the job running longest to this remote has run.
    fn longest_running(&self, now: Instant) -> Duration {
        self.running()
            .iter()
            .map(|(_, at)| now.saturating_duration_since(*at))
            .max()
            .unwrap_or_default()
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
        self.stats.running().retain(|(id, _)| *id != self.id);
    }
}

/// While a full sync runs: it shows in status, and a line says it still runs every
/// [`full_progress_every`] (a full sync of a big tree runs for minutes; the log would
/// otherwise say nothing from its start to its end).
struct FullRun<'a> {
    stats: &'a Stats,
    /// Dropped at the end, which ends the progress thread.
    done: Option<crossbeam_channel::Sender<()>>,
    progress: Option<JoinHandle<()>>,
}

impl<'a> FullRun<'a> {
    fn start(stats: &'a Stats, root: &Path, label: String) -> FullRun<'a> {
        *stats.full_since() = Some(SystemTime::now());
        let started = Instant::now();
        log::info!(
            remote = label.as_str();
            "full sync of {} to {label} started; live changes are pushed beside it",
            root.display()
        );
        let (done, ended) = crossbeam_channel::bounded::<()>(0);
        let root = root.to_path_buf();
        let every = full_progress_every();
        let progress = std::thread::Builder::new()
            .name("full-progress".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    ended.recv_timeout(every)
                {
                    log::info!(
                        remote = label.as_str();
                        "{}",
                        full_progress_line(&root, &label, started.elapsed())
                    );
                }
            })
            .ok();
        FullRun {
            stats,
            done: Some(done),
            progress,
        }
    }
}

impl Drop for FullRun<'_> {
    fn drop(&mut self) {
        *self.stats.full_since() = None;
        drop(self.done.take());
        if let Some(h) = self.progress.take() {
            let _ = h.join();
        }
    }
}

/// How often a running full sync says it still runs: 30 s, or
/// `SERSYNC2_FULL_PROGRESS_SECS` (read once; for tests and tuning; at least 1 s).
pub fn full_progress_every() -> Duration {
    static EVERY: OnceLock<Duration> = OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("SERSYNC2_FULL_PROGRESS_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(FULL_PROGRESS_EVERY, |s| Duration::from_secs(s.max(1)))
    })
}

/// See [`full_progress_every`].
pub const FULL_PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The line a full sync running for `elapsed` logs (see [`FullRun`]).
fn full_progress_line(root: &Path, label: &str, elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    let took = match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    };
    format!(
        "full sync of {} to {label} still running ({took} so far)",
        root.display()
    )
}

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

    /// Pushes one job taken from the queue. The job is finished in the queue whatever
    /// happens (see [`Taken`]).
    fn run_job(&self, t: RemoteId, job: Job) {
        let _running = self.stats[t.0].clock_in();
        let _full = matches!(job, Job::Full).then(|| {
            let target = &self.targets[t.0];
            FullRun::start(&self.stats[t.0], &target.root, target.label())
        });
        let mut taken = Taken {
            mirror: self,
            t,
            job,
            rest: None,
            accounted: false,
            again: Vec::new(),
        };
        if let Some(why) = self.root_unsafe(t) {
            self.defer(t, &taken.job, &why);
            taken.accounted = true;
            return;
        }
        // In the index's journal on disk before anything runs; its end noted on return.
        let _announced = (self.index.get()).and_then(|ix| ix.announce(t, &taken.job));
        let mut rest = None;
        let plain;
        let rename_before = match &taken.job {
            Job::Rename { .. } => self.index_before(t, &taken.job),
            _ => None,
        };
        let calls = match &taken.job {
            Job::Paths(paths) => split(paths)
                .into_iter()
                .map(|(job, _)| {
                    let excluded = self.excluded_in_listings(t, &job);
                    (job, excluded)
                })
                .collect(),
            Job::Full => vec![(Job::Full, self.excluded_paths(t))],
            Job::Rename { from, .. }
                if std::fs::symlink_metadata(self.targets[t.0].root.join(from)).is_ok() =>
            {
                // Not a rename any more (an exchange, or `from` made again): pushed as
                // it is now, see `Job::listing_paths`.
                plain = taken.job.listing_paths();
                split(&plain)
            }
            Job::Rename { from, .. } => match self.rename(t, &taken.job) {
                Some(Renamed::Moved(outcome)) => {
                    // One remote `mv`: the old path is gone and the new one holds what
                    // the old one held there. For a directory that may lack what a push
                    // that ran while it was renamed here found gone: the paths below
                    // it are pushed again by quick check (sending only what differs).
                    // For a file, what the remote held at the old path may be another
                    // entry than the file renamed (a link or file made there again and
                    // pushed before the rename was read): the new path too is pushed
                    // again by quick check (the moved copy, if it is the file, stays).
                    let to_paths = rename_to_paths(&taken.job);
                    let settled = self.settle(t, &to_paths);
                    rest = self.account(t, &to_paths, &settled);
                    let from = Job::Paths(vec![Entry::plain(from.clone())]);
                    rest = rest.or(self.account(t, &from, &outcome));
                    if let (true, Some((ix, b))) = (settled.ok() && outcome.ok(), rename_before) {
                        ix.landed(t, b.0);
                    }
                    Vec::new()
                }
                Some(Renamed::Linked(outcome)) => {
                    // `to` is there; the old path is deleted by an ordinary call, a
                    // directory's as its listing: one made again there meanwhile is
                    // then listed, and what the remote holds of the old one goes
                    // (pushed plain, it went as a directory alone and the old entries
                    // stayed).
                    rest = self.account(t, &rename_to_paths(&taken.job), &outcome);
                    // The old path leaves the index with the listing's delete below.
                    if let (true, Some((ix, b))) = (outcome.ok(), rename_before) {
                        ix.landed(t, b.1);
                    }
                    let gone = Entry::with_listing(
                        from.clone(),
                        matches!(taken.job, Job::Rename { dir: true, .. }),
                    );
                    let job = Job::Paths(vec![gone]);
                    let excluded = self.excluded_in_listings(t, &job);
                    vec![(job, excluded)]
                }
                None => {
                    plain = taken.job.plain_paths();
                    split(&plain)
                }
            },
        };
        let mut calls: std::collections::VecDeque<_> = self.leave_out_too_long(t, calls).into();
        let mut split_budget = super::bisect::SPLIT_BUDGET;
        while let Some((call, excluded)) = calls.pop_front() {
            // A path that is an excluded directory now goes as its parent's listing.
            let target = &self.targets[t.0];
            let sent = sent_paths(&target.root, &self.excludes[t.0], target.delete, &call);
            let as_listings = excluded_directories(&target.root, &self.excludes[t.0], &call);
            let excluded = match &sent {
                Some(s) => self.excluded_in_listings(t, s),
                None => excluded,
            };
            // Listings of directories missing now go out as deletes (see
            // `Target::argv_with_args`); one made again before rsync read the tree is
            // then pushed as a directory only, and what the remote holds in it of the
            // old one stays. Such a listing goes out again, keeping its mark.
            let missing = missing_listings(&self.targets[t.0].root, &call);
            // Listings that are directories now, with their stamps: one whose entries
            // change before its prune ran goes out again (see `listings_changed`).
            let listed = if self.targets[t.0].delete {
                listing_stamps(&self.targets[t.0].root, &call)
            } else {
                Vec::new()
            };
            let before = (self.index.get())
                .and_then(|ix| ix.before(t, &self.targets[t.0].root, &call))
                .map(|mut b| {
                    b.retain(|(p, _)| !excluded.contains(p));
                    b
                });
            let mut left_out = Vec::new();
            let mut outcome = match &sent {
                Some(Job::Paths(p)) if p.is_empty() => Outcome {
                    status: 0,
                    stderr: String::new(),
                    elapsed: Duration::ZERO,
                },
                Some(s) => self.push(t, s, &excluded, &mut left_out),
                None => self.push(t, &call, &excluded, &mut left_out),
            };
            if outcome.ok() {
                if let Some(failed) = self.prune(t, &call, &excluded) {
                    outcome = failed;
                }
            }
            if let (Job::Full, 23) = (&call, outcome.status) {
                if let Some(again) = self.full_without_too_long(t, &excluded) {
                    outcome = again;
                }
            }
            let partial = (left_out.is_empty() && self.root_unsafe(t).is_none())
                .then(|| self.partial(t, &call, &outcome, &excluded))
                .flatten();
            if let Some((failed, paid, ok)) = partial {
                // Paid but for what rsync named: those paths (a directory it could not
                // read with everything below it) are owed, and tried again on the
                // backoff schedule, not the whole call.
                let root = &self.targets[t.0].root;
                let mut paid = paid;
                let again = listings_again(root, missing);
                if let (false, Job::Paths(paths)) = (again.is_empty(), &mut paid) {
                    // As after a success: not paid, they go out again (see below).
                    paths.retain(|e| !(e.listing && again.contains(&e.path)));
                    taken.again.extend(again);
                }
                // The index enters what landed; the failed paths keep what it had.
                if let (Some(ix), Some(before), Job::Paths(f)) = (self.index.get(), before, &failed)
                {
                    let landed = before
                        .into_iter()
                        .filter(|(p, _)| !f.iter().any(|e| p.starts_with(&e.path)))
                        .collect();
                    ix.landed(t, landed);
                }
                rest = rest.or(self.account_landed_part(t, &paid, &ok));
                rest = rest.or(self.account(t, &failed, &outcome));
                continue;
            }
            let mut call = call;
            let mut redirect = Vec::new();
            if outcome.ok() {
                // What was left out below a file or link now is not paid by this call
                // but made equal by that file's push: it goes out again carrying their
                // oldest marks, and what they owe moves to it (see
                // `Ledger::paid_leaving`), so a barrier taken before waits for it (it
                // may have been pushed before they were left out, or be waiting with a
                // later mark). What went away since goes as a delete of the top of it
                // that is gone, and a path below only directories again goes out itself.
                let root = &self.targets[t.0].root;
                for p in left_out {
                    let a = first_non_directory(root, &p).unwrap_or_else(|| p.clone());
                    redirect.push((p, a));
                }
            }
            if outcome.ok() {
                // A path that became such an excluded directory after the call was built
                // was kept out by rsync (its pattern travels with the call), and what the
                // remote held there (a file, a link) stayed: not paid, it goes out again
                // with its mark, then as its parent's listing.
                let root = &self.targets[t.0].root;
                let raced: Vec<PathBuf> = excluded_directories(root, &self.excludes[t.0], &call)
                    .into_iter()
                    .filter(|p| !as_listings.contains(p))
                    .collect();
                if !raced.is_empty() && self.targets[t.0].delete {
                    if let Job::Paths(paths) = &mut call {
                        paths.retain(|e| !raced.contains(&e.path));
                    }
                    redirect.extend(raced.into_iter().map(|p| (p.clone(), p)));
                }
            }
            if outcome.ok() {
                let root = &self.targets[t.0].root;
                let mut again = listings_again(root, missing);
                again.extend(listings_changed(root, listed));
                if !again.is_empty() {
                    // Not paid: what they owe (in the fail log, with its older mark) stays
                    // owed until their listing lands.
                    if let Job::Paths(paths) = &mut call {
                        paths.retain(|e| !(e.listing && again.contains(&e.path)));
                    }
                    taken.again.extend(again);
                }
            }
            // The root went away while it ran: not the remote's failure.
            if let (false, Some(why)) = (outcome.ok(), self.root_unsafe(t)) {
                self.defer(t, &call, &why);
                continue;
            }
            if !outcome.ok() && !self.stopping.load(Ordering::Relaxed) {
                // One path rsync cannot take must not hold back the others: the halves
                // go out on their own, until only the culprit stays owed.
                if let Some((a, b)) =
                    super::bisect::halves(&call, outcome.status, &mut split_budget)
                {
                    log::info!(
                        remote = self.targets[t.0].label().as_str(), paths = call.count(),
                        rsync_exit = outcome.status;
                        "push of {} paths to {} failed ({}); pushing them in two halves to \
                         land all but the path(s) it fails on",
                        call.count(),
                        self.targets[t.0].label(),
                        Cause::of(outcome.status, &outcome.stderr).text
                    );
                    calls.push_front((b, excluded.clone()));
                    calls.push_front((a, excluded));
                    continue;
                }
            }
            if let (true, Some(ix)) = (outcome.ok(), self.index.get()) {
                match &call {
                    Job::Full => ix.full_landed(t),
                    _ => ix.landed(t, before.unwrap_or_default()),
                }
            }
            rest = rest.or(self.book(t, &call, &outcome, true, &redirect));
        }
        taken.rest = rest;
        taken.accounted = true;
    }

    /// The calls without the paths too long for rsync (see `watch::too_long_for_rsync`):
    /// those are never put in a call with others (rsync would fail the whole call, exit
    /// 22, or read a truncated name). They are paid, not pushed (no push of them can ever
    /// land, so owing them would hold the remote failing and every barrier for ever),
    /// warned about and counted in the root's status.
    fn leave_out_too_long(
        &self,
        t: RemoteId,
        calls: Vec<(Job, Vec<PathBuf>)>,
    ) -> Vec<(Job, Vec<PathBuf>)> {
        let root = &self.targets[t.0].root;
        let mut long = Vec::new();
        let mut out = Vec::with_capacity(calls.len());
        for (call, excluded) in calls {
            match call {
                Job::Paths(paths) => {
                    let (over, fit) = too_long_entries(root, paths);
                    long.extend(over);
                    if !fit.is_empty() {
                        out.push((Job::Paths(fit), excluded));
                    }
                }
                other => out.push((other, excluded)),
            }
        }
        if !long.is_empty() {
            self.skip_too_long(t, long);
        }
        out
    }

    /// A full sync that ended in exit 23: if the tree holds paths too long for rsync
    /// (rsync could not open them, "File name too long", and skipped its deletions), the
    /// full sync again without them; its outcome. They are noted like live ones.
    fn full_without_too_long(&self, t: RemoteId, excluded: &[PathBuf]) -> Option<Outcome> {
        let root = &self.targets[t.0].root;
        let long = crate::watch::too_long_below(root, TOO_LONG_EXCLUDED);
        if long.is_empty() {
            return None;
        }
        log::info!(
            "full sync of {} to {}: {} path(s) too long for rsync in the tree; running it \
             again without them",
            root.display(),
            self.targets[t.0].label(),
            long.len()
        );
        let mut without = excluded.to_vec();
        without.extend(long.iter().cloned());
        self.skip_too_long(t, crate::sync::job::plain_entries(long));
        Some(self.push(t, &Job::Full, &without, &mut Vec::new()))
    }

    /// Pays `long` (paths too long for rsync) without a push, and notes them.
    fn skip_too_long(&self, t: RemoteId, long: Vec<Entry>) {
        let target = &self.targets[t.0];
        let health = self
            .roots
            .get()
            .and_then(|r| r.iter().find(|h| h.path() == target.root.as_path()));
        for e in &long {
            let what = format!("left out of the push to {}", target.label());
            match health {
                Some(h) => h.note_too_long(&e.path, &what),
                None => log::warn!(
                    "{}/{} is too long for rsync: {what}; it is not mirrored and not owed",
                    target.root.display(),
                    crate::watch::shorten(&e.path)
                ),
            }
        }
        let job = Job::Paths(long);
        // The fail log's lock first, then the queue's (see ARCHITECTURE.md).
        let fl = self.fail_log();
        if self.queue.paid_without_push(t, &job) || self.unsaved() {
            self.save(&fl);
        }
    }

    /// A call that ended in exit 23 naming what rsync could not read, each path below
    /// the root and within the call, and rsync's report of them whole: what is owed
    /// (see [`split_failed`]: a directory with everything below it, a file, or the
    /// entry named), what landed, and the outcome of that. With deletes on and a call
    /// that deletes in directories (a full sync, a listing, a tree), rsync skipped
    /// every deletion after an error met while it listed the tree ("IO error
    /// encountered -- skipping file deletion", on its stdout, which is not kept): what
    /// landed runs once more with the failed paths left out (neither sent nor deleted),
    /// which makes the deletions (then the listings' clean-up below them, see
    /// [`Mirror::prune`]); its outcome is the rest's. `None`: the call is owed
    /// whole (another failure, a path outside the root or the call, stderr cut short,
    /// or the second run failed).
    fn partial(
        &self,
        t: RemoteId,
        call: &Job,
        outcome: &Outcome,
        excluded: &[PathBuf],
    ) -> Option<(Job, Job, Outcome)> {
        if outcome.status != 23 || outcome.stderr.len() + 64 >= rsync::STDERR_KEEP {
            return None;
        }
        let target = &self.targets[t.0];
        let root = &target.root;
        let failed = failed_in_root(root, &outcome.stderr)?;
        let (owed, paid) = split_failed(call, &failed, |p| {
            std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_dir())
        })?;
        let deletes_in_dirs = match &paid {
            Job::Full => true,
            Job::Paths(paths) => paths.iter().any(|e| e.listing),
            Job::Rename { .. } => false,
        };
        if !(target.delete && deletes_in_dirs) {
            let ok = Outcome {
                status: 0,
                ..outcome.clone()
            };
            return Some((Job::Paths(owed), paid, ok));
        }
        // Left out: the failed paths, but not one that is (or is above) a path the
        // call still names (it goes as that path's implied directory).
        let named: Vec<&Path> = match &paid {
            Job::Paths(paths) => paths.iter().map(|e| e.path.as_path()).collect(),
            _ => Vec::new(),
        };
        let mut without: Vec<PathBuf> = excluded.to_vec();
        without.extend(
            failed
                .iter()
                .filter(|f| !named.iter().any(|n| n.starts_with(f)))
                .cloned(),
        );
        log::info!(
            "{} to {}: rsync skips deletions after an error reading the tree; running it \
             again without the {} path(s) it could not read ({})",
            match &paid {
                Job::Full => format!("full sync of {}", root.display()),
                other => format!("push of {} path(s)", other.count()),
            },
            target.label(),
            failed.len(),
            failed
                .iter()
                .take(FAILED_PATHS_SHOWN)
                .map(|p| format!("{:?}", p.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut left_out = Vec::new();
        let again = self.push(t, &paid, &without, &mut left_out);
        if !again.ok() || !left_out.is_empty() {
            return None;
        }
        // The listings' clean-up below them, as after a push that succeeded.
        if self.prune(t, &paid, &without).is_some() {
            return None;
        }
        Some((Job::Paths(owed), paid, again))
    }

    /// Carries a rename to `t` as one: in ssh mode as one `mv` on the remote
    /// ([`Target::remote_rename_argv`]); in daemon mode by pushing the new path with the
    /// old one as its basis ([`Target::rename_argvs`]). `Some` when it landed; `None`
    /// when the rename must travel in its plain form instead: it cannot be carried as
    /// one, the remote is failing already, or a call failed (the remote lacks the new
    /// parent directory, an old rsync, a network error: the plain push, with its
    /// retries and fail log, settles which).
    fn rename(&self, t: RemoteId, job: &Job) -> Option<Renamed> {
        let Job::Rename { from, to, dir, .. } = job else {
            return None;
        };
        if self.queue.is_failing(t) {
            return None;
        }
        let root = &self.targets[t.0].root;
        if too_long_for_rsync(root, from, *dir) || too_long_for_rsync(root, to, *dir) {
            // Plain: the side that is too long is left out there.
            return None;
        }
        if self.excludes[t.0].excludes_only_as_directory(to) {
            // The new side has a name the `<filter>` excludes only as a directory: plain,
            // where it goes as its parent's listing if it is such a directory when its
            // call is built (see `sent_paths`) and is not sent (simulator seed 3080974).
            // Also when it is not one now: it may become one before rsync reads the
            // tree, and the rename's own call would send it (4080833).
            return None;
        }
        let target = &*self.target_for_call(t);
        if let Some((program, argv)) = target.remote_rename_argv(from, to) {
            self.log_call(&program.to_string_lossy(), &argv);
            let outcome = self.runner.run(
                &program,
                &target.root,
                &argv,
                &[],
                rsync::Watch::KillAfter(REMOTE_MV_LIMIT),
            );
            if outcome.status == 0 {
                return Some(Renamed::Moved(outcome));
            }
            log::debug!(
                "the remote mv of {} to {} on {} failed ({}); pushing it plain",
                from.display(),
                to.display(),
                target.label(),
                Cause::of(outcome.status, &outcome.stderr).text
            );
        }
        if target.opts.ssh.is_some() {
            // Over ssh no push with the old path as its basis: it names a directory on
            // the remote as the destination, and the receiving rsync follows a link
            // planted there (the plain push replaces one). Where `mv` cannot do the
            // rename, it travels plain.
            return None;
        }
        let to_paths: Vec<PathBuf> = rename_to_paths(job)
            .plain_paths()
            .into_iter()
            .map(|e| e.path)
            .collect();
        let argvs = target.rename_argvs(from, to, *dir, &to_paths)?;
        // A directory's push lists its entries (`./to/./`): the temp and excluded names
        // among them stay out, anchored at `to` (the transfer's top there).
        let excluded: Vec<PathBuf> = if *dir {
            self.excluded_in_listings(t, &Job::Paths(vec![Entry::listing(to.clone())]))
                .into_iter()
                .filter_map(|p| p.strip_prefix(to).ok().map(Path::to_path_buf))
                .collect()
        } else {
            Vec::new()
        };
        let mut last = None;
        for mut argv in argvs {
            let stdin = rsync::exclude_exactly(&mut argv, &excluded);
            self.log_call(&format!("cd {} && rsync", target.root.display()), &argv);
            let outcome = self.rsync(&target.root, &argv, &stdin);
            if !outcome.ok() {
                log::info!(
                    "the rename of {} to {} did not reach {} as a rename ({}); pushing it \
                     plain",
                    from.display(),
                    to.display(),
                    target.label(),
                    Cause::of(outcome.status, &outcome.stderr).text
                );
                return None;
            }
            last = Some(outcome);
        }
        last.map(Renamed::Linked)
    }

    /// Runs rsync through the mirror's runner.
    fn rsync(&self, cwd: &Path, argv: &[std::ffi::OsString], stdin: &[u8]) -> Outcome {
        self.runner.run(
            std::ffi::OsStr::new("rsync"),
            cwd,
            argv,
            stdin,
            rsync::Watch::LowerAfter(rsync::LONG_PUSH),
        )
    }

    /// ssh mode, after the remote `mv` of a rename: pushes the new path and what was
    /// below it by quick check ([`Target::settle_argv`]); the first failure, if any.
    fn settle(&self, t: RemoteId, paths: &Job) -> Outcome {
        let target = &*self.target_for_call(t);
        let plain = paths.plain_paths();
        let mut last = Outcome {
            status: 0,
            stderr: String::new(),
            elapsed: Duration::ZERO,
        };
        for run in rsync::split_for_args(&plain, rsync::ARGS_BUDGET) {
            let argv = target.settle_argv(run);
            self.log_call(&format!("cd {} && rsync", target.root.display()), &argv);
            let outcome = self.rsync(&target.root, &argv, &[]);
            let elapsed = last.elapsed + outcome.elapsed;
            last = Outcome { elapsed, ..outcome };
            if !last.ok() {
                break;
            }
        }
        last
    }

    /// With `<debug start="true">`: the command line of a call, as info.
    fn log_call(&self, head: &str, argv: &[std::ffi::OsString]) {
        if self.debug {
            let args: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
            log::info!("{head} {}", args.join(" "));
        }
    }

    /// After a call that listed directories holding directories themselves: one
    /// call that deletes what the remote holds below them beyond the source (a directory
    /// deleted and made again before the delete reached the remote keeps nothing of the
    /// old tree; a listing alone deletes only at its own level). After, not before: the
    /// listing has made the remote's entries the source's kind (a file where a directory
    /// now is, and the other way round). `Some` (the outcome) when that call failed: the
    /// job then counts as failed and is retried whole.
    fn prune(&self, t: RemoteId, job: &Job, excluded: &[PathBuf]) -> Option<Outcome> {
        let target = &*self.target_for_call(t);
        let Job::Paths(paths) = job else {
            return None;
        };
        if !target.delete {
            return None;
        }
        // A tree's push deleted all the way down already.
        let dirs = prunable(&target.root, paths);
        if dirs.is_empty() {
            return None;
        }
        let (argv, stdin) = target.prune_argv(&dirs, excluded);
        self.log_call(&format!("cd {} && rsync", target.root.display()), &argv);
        let outcome = self.rsync(&target.root, &argv, &stdin);
        (!outcome.ok()).then_some(outcome)
    }

    /// The temp and excluded names among the entries of the directories `job` lists
    /// (pushed with their entries): one listing of each such directory.
    fn excluded_in_listings(&self, t: RemoteId, job: &Job) -> Vec<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        let Job::Paths(paths) = job else {
            return Vec::new();
        };
        let root = &self.targets[t.0].root;
        let mut out = Vec::new();
        for e in paths.iter().filter(|e| e.listing) {
            let dir = e.path.as_path();
            if e.tree {
                // Pushed with everything below it: what the excludes keep out there.
                let excludes = &self.excludes[t.0];
                out.extend(crate::watch::excluded_paths_below(root, dir, excludes));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let rel = dir.join(&name);
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                let excludes = &self.excludes[t.0];
                if crate::filter::is_temp_name(name.as_bytes())
                    || (excludes.excludes(&rel, is_dir)
                        && excludes.needs_anchored_rule(&rel, is_dir))
                {
                    out.push(rel);
                }
            }
        }
        out
    }

    /// What the `<filter>` excludes keep out of a full sync of `t`'s root, found by a
    /// parallel walk of the tree.
    pub(crate) fn excluded_paths(&self, t: RemoteId) -> Vec<PathBuf> {
        let excludes = &self.excludes[t.0];
        if !excludes.needs_walk() {
            return Vec::new();
        }
        let root = &self.targets[t.0].root;
        let started = Instant::now();
        let excluded = crate::watch::excluded_paths(root, excludes);
        log::debug!(
            "full sync of {}: {} excluded path(s) found in {:.2}s",
            root.display(),
            excluded.len(),
            started.elapsed().as_secs_f64()
        );
        excluded
    }

    /// Runs one job against one remote, with retries.
    /// `left_out`: the paths it left out as below what is a file or link now.
    fn push(
        &self,
        t: RemoteId,
        job: &Job,
        excluded: &[PathBuf],
        left_out: &mut Vec<PathBuf>,
    ) -> Outcome {
        let target = &*self.target_for_call(t);
        let (argv, stdin) = target.argv(job, excluded);
        if self.debug {
            // The paths themselves were logged as events; the options are what matter.
            let shown: Vec<String> = argv
                .iter()
                .take(argv.len().saturating_sub(1))
                .filter(|a| !a.as_encoded_bytes().starts_with(b"./") || a.len() == 2)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let paths = match job {
                Job::Paths(p) => format!(" <{} path(s)>", p.len()),
                Job::Full | Job::Rename { .. } => String::new(),
            };
            log::info!(
                "cd {} && rsync {}{paths} {}",
                target.root.display(),
                shown.join(" "),
                target.dest()
            );
        }
        let mut attempt = 0;
        let (mut argv, mut stdin) = (argv, stdin);
        let mut checked_below_files = false;
        loop {
            let outcome = self.rsync(&target.root, &argv, &stdin);
            // Paths below what is a file or link now (a directory replaced while they
            // waited) cannot be pushed or deleted one by one, and need not be: the push
            // of the file or link replaces the directory on the remote. Without them,
            // and with each listing built again (a listed directory that is a link now
            // goes as the link), once. rsync says so with exit 23, or, when the file or
            // link is itself in the call and the path's deletion request is right below
            // it, by aborting the receiver (exit 2, "invalid path from sender").
            if matches!(outcome.status, 2 | 23) && !checked_below_files {
                checked_below_files = true;
                if let Job::Paths(paths) = job {
                    let reachable: Vec<Entry> = paths
                        .iter()
                        .filter(|e| !below_a_file(&target.root, &e.path))
                        .cloned()
                        .collect();
                    if reachable.len() < paths.len() {
                        left_out.extend(
                            paths
                                .iter()
                                .filter(|e| below_a_file(&target.root, &e.path))
                                .map(|e| e.path.clone()),
                        );
                        log::info!(
                            "{} path(s) below what is a file or link now left out of the push \
                             to {} (the file or link replaces the directory there)",
                            paths.len() - reachable.len(),
                            target.label()
                        );
                        if reachable.is_empty() {
                            return Outcome {
                                status: 0,
                                ..outcome
                            };
                        }
                    }
                    let again = target.argv(&Job::Paths(reachable), excluded);
                    if again.0 != argv {
                        (argv, stdin) = again;
                        continue;
                    }
                }
            }
            if outcome.status == 23 && !target.delete && only_blocked_by_directories(&outcome) {
                // With deletes off a directory on the remote cannot give way to what
                // replaced it here: the remote keeps it, as it keeps deleted files.
                let why: Vec<&str> = outcome
                    .stderr
                    .lines()
                    .filter(|l| l.contains("could not make way for new "))
                    .take(3)
                    .collect();
                log::warn!(
                    remote = target.label().as_str();
                    "deletes are off: {} keeps a directory where the source has a file or \
                     link now, left as it is there (rsync: {})",
                    target.label(),
                    why.join("; ")
                );
                return Outcome {
                    status: 0,
                    ..outcome
                };
            }
            // A remote already failing is paced by its backoff schedule instead.
            if outcome.ok()
                || attempt >= self.retry_delays.len()
                || self.stopping.load(Ordering::Relaxed)
                || self.queue.is_failing(t)
                || self.root_unsafe(t).is_some()
            {
                return outcome;
            }
            let cause = Cause::of(outcome.status, &outcome.stderr);
            log::warn!(
                remote = target.label().as_str(), paths = job.count(), rsync_exit = outcome.status,
                cause = cause.kind.as_str(), stderr = outcome.stderr.as_str();
                "push to {} failed, retrying: {}",
                target.label(),
                cause.text
            );
            self.stats[t.0]
                .failures()
                .failed(SystemTime::now(), cause.text);
            std::thread::sleep(self.retry_delays[attempt]);
            attempt += 1;
        }
    }

    /// Books an outcome: counters, fail queue, fail log. Returns how long the remote
    /// should rest before its next call.
    fn account(&self, t: RemoteId, job: &Job, outcome: &Outcome) -> Option<Duration> {
        self.book(t, job, outcome, true, &[])
    }

    /// The part of a call that ended in exit 23 which landed: paid like a success, but
    /// the call failed, so it ends no run of failures (no "recovered" line); the failed
    /// part is booked with [`Mirror::account`].
    fn account_landed_part(&self, t: RemoteId, job: &Job, outcome: &Outcome) -> Option<Duration> {
        self.book(t, job, outcome, false, &[])
    }

    /// Books an outcome; `left_out`: paths of `job` a success left out below a file
    /// or link, with that file or link (see `Ledger::paid_leaving`).
    fn book(
        &self,
        t: RemoteId,
        job: &Job,
        outcome: &Outcome,
        ends_failures: bool,
        left_out: &[(PathBuf, PathBuf)],
    ) -> Option<Duration> {
        let stats = &self.stats[t.0];
        let target = &self.targets[t.0];
        if let Job::Full = job {
            *Ordered::lock(&self.last_full, Lock::LastFull) = Some(FullSyncResult {
                ended: SystemTime::now(),
                ok: outcome.ok(),
                seconds: outcome.elapsed.as_secs_f64(),
                remote: target.label(),
            });
        }
        if outcome.ok() {
            stats
                .pushed
                .fetch_add(job.count() as u64, Ordering::Relaxed);
            // Once per path, not once per remote: after the root's first remote has it.
            if let (Some(after), Job::Paths(paths)) = (&self.after_push, job) {
                if self.targets.iter().position(|x| x.root == target.root) == Some(t.0) {
                    let paths: Vec<PathBuf> = paths.iter().map(|e| e.path.clone()).collect();
                    after.pushed(&target.root, &paths);
                }
            }
            let label = target.label();
            // With <debug start="true"> beside the command lines; else at debug level.
            let level = if self.debug {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            if log::log_enabled!(level) {
                log::log!(
                    level,
                    remote = label.as_str(), paths = job.count(), rsync_exit = outcome.status;
                    "pushed {} path(s) to {label} in {:.3}s",
                    job.count(),
                    outcome.elapsed.as_secs_f64()
                );
            }
            if let Job::Full = job {
                log::info!(
                    remote = label.as_str(), rsync_exit = outcome.status;
                    "full sync of {} to {} done in {:.1}s",
                    target.root.display(),
                    target.label(),
                    outcome.elapsed.as_secs_f64()
                );
            }
            // The fail log's lock first, then the queue's (see ARCHITECTURE.md), so
            // the file is written in the order the ledger changed. The ledger pays,
            // follows the retry schedule and queues again what it owes when the remote
            // is back or no push of it is coming (see `Ledger::pushed`).
            let fl = self.fail_log();
            let pushed = self.queue.pushed(t, job, left_out);
            if pushed.changed || self.unsaved() {
                self.save(&fl);
            }
            drop(fl);
            let ended = (ends_failures)
                .then(|| stats.failures().succeeded(SystemTime::now()))
                .flatten();
            if let Some(r) = ended {
                log::info!(
                    remote = label.as_str(), failed_calls = r.failed_calls;
                    "{}",
                    cause::recovered_line(&label, &r)
                );
            }
            if pushed.recovered {
                log::info!(
                    "{} is reachable again; queueing what it owes",
                    target.label()
                );
            } else if pushed.orphaned > 0 {
                let n = pushed.orphaned;
                log::info!(
                    "{} owes {n} entr{} that no push waiting or running covers; queueing \
                     them again",
                    target.label(),
                    if n == 1 { "y" } else { "ies" }
                );
            } else if pushed.was_failing && !pushed.still_owes {
                log::info!("{} is level again: it owes nothing", target.label());
            }
            return None;
        }
        stats.failed.fetch_add(1, Ordering::Relaxed);
        let what = match job {
            Job::Paths(p) if p.len() == 1 => p[0].to_string(),
            Job::Paths(p) => format!("{} paths", p.len()),
            Job::Full => "full sync".to_owned(),
            Job::Rename { from, to, .. } => {
                format!("rename {} -> {}", from.display(), to.display())
            }
        };
        let cause = Cause::of(outcome.status, &outcome.stderr);
        let mut msg = cause.text;
        let (paths, more) = recovery::failed_paths(&outcome.stderr, FAILED_PATHS_SHOWN);
        if !paths.is_empty() {
            msg.push_str(&format!(
                "; rsync could not transfer {}{}",
                paths
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        let fl = self.fail_log();
        // Before the job is finished in the queue, so its entries are never neither in
        // flight nor owed (a barrier would pass them); the ledger sets the retry.
        let plan = self
            .queue
            .failed(t, job, outcome.status, crate::sys::random_u64());
        let saved = self.try_save(&fl);
        let path = fl.path.clone();
        drop(fl);
        let now = Instant::now();
        let plan = plan.unwrap_or(recovery::Plan {
            retry_at: now,
            rest: recovery::ANSWERED_REST,
        });
        let retry_in = plan.retry_at.saturating_duration_since(now);
        match saved {
            Ok(()) => log::error!(
                remote = target.label().as_str(), paths = job.count(), rsync_exit = outcome.status,
                cause = cause.kind.as_str(), stderr = outcome.stderr.as_str();
                "push of {what} to {} failed, written to the fail log {}: {msg}; what it \
                 owes is tried again in {:.1}s",
                target.label(),
                path.display(),
                retry_in.as_secs_f64()
            ),
            Err(e) => log::error!(
                remote = target.label().as_str(), paths = job.count(), rsync_exit = outcome.status,
                cause = cause.kind.as_str(), stderr = outcome.stderr.as_str();
                "push of {what} to {} failed and could NOT be written to the fail log {} \
                 ({e}): {msg}; it is kept in memory only, tried again in {:.1}s, and the fail \
                 log is written again at the next change and every {}s",
                target.label(),
                path.display(),
                retry_in.as_secs_f64(),
                SAVE_RETRY.as_secs()
            ),
        }
        stats.failures().failed(SystemTime::now(), msg);
        Some(plan.rest)
    }

    /// Writes the fail log from the ledger (under the fail log's lock), logging a
    /// failure the first time it is seen.
    fn save(&self, fl: &FailLog) {
        let mut known = self.unsaved_note().clone();
        if let Err(e) = self.try_save(fl) {
            if known.take().as_deref() != Some(e.as_str()) {
                log::error!(
                    "cannot write the fail log {} ({e}): its {} entries are kept in memory \
                     only; writing it again at the next change and every {}s",
                    fl.path.display(),
                    self.owed() + fl.unknown_len(),
                    SAVE_RETRY.as_secs()
                );
            }
        }
    }

    /// Writes the fail log and records whether that worked; says when it works again.
    fn try_save(&self, fl: &FailLog) -> Result<(), String> {
        let owed = self.queue.owed();
        let result = fl.save(&owed, &self.targets).map_err(|e| e.to_string());
        let mut unsaved = self.unsaved_note();
        match &result {
            Ok(()) if unsaved.take().is_some() => log::info!(
                "the fail log {} is written again ({} entries)",
                fl.path.display(),
                owed.iter().map(faillog::Owed::len).sum::<usize>() + fl.unknown_len()
            ),
            Ok(()) => {}
            Err(e) => *unsaved = Some(e.clone()),
        }
        result
    }

    /// Queues owed work again (it stays owed until a push of it succeeds).
    fn requeue(&self, owed: Vec<(RemoteId, Job)>) {
        for (t, job) in owed {
            match job {
                Job::Full => self.queue.push_full(&[t]),
                job => self.queue.push_many(&[t], &job.plain_paths()),
            }
        }
    }

    /// The timed (or start-up) replay: owed work goes through the queue like any change,
    /// so it keeps the per-path order. Entries for roots or remotes the config does not
    /// name are never run here; they stay in the file.
    pub fn replay(&self) {
        let owed: Vec<(RemoteId, Job)> = self
            .all()
            .into_iter()
            .flat_map(|t| self.queue.owed_jobs(t).into_iter().map(move |job| (t, job)))
            .collect();
        if owed.is_empty() {
            return;
        }
        log::info!(
            "replaying the fail log: {} remote(s) with owed paths",
            owed.len()
        );
        self.requeue(owed);
    }

    /// Stops handing out work. What is still queued, and what is in flight, is written
    /// to the fail log now; a running push that then succeeds clears its entries, so
    /// nothing is lost even if the process must exit before it ends.
    pub fn close(&self) -> usize {
        self.stopping.store(true, Ordering::Relaxed);
        let fl = self.fail_log();
        // The queue owes what it had (see `Ledger::close`): a push still running that
        // succeeds pays its paths, but not a newer change of the same path that was
        // waiting behind it.
        let n: usize = self
            .queue
            .close()
            .iter()
            .map(|left| usize::from(left.full) + left.waiting.len() + left.running.len())
            .sum();
        if n > 0 || self.unsaved() {
            self.save(&fl);
        }
        n
    }

    /// Whether the last write of the fail log failed.
    pub fn unsaved(&self) -> bool {
        self.unsaved_note().is_some()
    }

    /// While the last write failed: writes the fail log again (the scheduler's timer).
    pub fn retry_save(&self) {
        if self.unsaved() {
            let fl = self.fail_log();
            self.save(&fl);
        }
    }

    /// At the stop: the fail log written if its last write failed. `Err` names the
    /// entries that could not be kept, the path and the error.
    pub fn final_save(&self) -> anyhow::Result<()> {
        if !self.unsaved() {
            return Ok(());
        }
        let fl = self.fail_log();
        self.try_save(&fl).map_err(|e| {
            let n = self.owed() + fl.unknown_len();
            anyhow::anyhow!(
                "{n} owed entr{} could NOT be kept: cannot write the fail log {} ({e}); \
                 they are lost with this process: run a full sync (-r) at the next start",
                if n == 1 { "y" } else { "ies" },
                fl.path.display()
            )
        })
    }

    /// Paths that were pushed, per remote (for logs).
    pub fn pushed(&self) -> Vec<u64> {
        self.stats
            .iter()
            .map(|s| s.pushed.load(Ordering::Relaxed))
            .collect()
    }

    /// The state now, for status.
    pub fn snapshot(&self) -> Snapshot {
        let queued = self.queue.waiting();
        let behind = self.queue.behind();
        let owed = self.queue.owed_counts();
        let recoveries = self.queue.recoveries();
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
            .map(|(((((t, s), q), owed), behind), rec)| {
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

/// Did rsync fail only because directories on the remote could not give way to a file
/// or link (which needs a delete)? rsync says `cannot delete non-empty directory: X`
/// and `could not make way for new regular file: X` for each, then its exit summary.
fn only_blocked_by_directories(outcome: &Outcome) -> bool {
    let mut blocked = false;
    for line in outcome
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if line.contains("could not make way for new ") {
            blocked = true;
        } else if !(line.contains("cannot delete non-empty directory: ")
            || line.starts_with("rsync error: some files/attrs were not transferred"))
        {
            return false;
        }
    }
    blocked
}

/// A path push as it is sent (`None`: as it is). A path that is now a directory the
/// `<filter>` excludes only as a directory (`e/`: queued as a file, or a file's delete,
/// or a rename's old path, then replaced by such a directory) is not pushed: `--dirs
/// ./e` would make the excluded directory on the remote (and `./e/` would leave what the
/// remote holds there). What the remote may hold there (the file pushed
/// before) must go as a full sync would make it go: with deletes on, the path goes as
/// its parent's listing (the excluded directory stays out by its rsync pattern, a file or
/// link of that name on the remote is deleted); with deletes off it is left out. The
/// call itself (its marks, the fail log) still names the path.
fn sent_paths(root: &Path, excludes: &Excludes, delete: bool, job: &Job) -> Option<Job> {
    let Job::Paths(paths) = job else {
        return None;
    };
    let now_excluded = excluded_directories(root, excludes, job);
    if now_excluded.is_empty() {
        return None;
    }
    let mut sent: Vec<Entry> = Vec::with_capacity(paths.len());
    for e in paths {
        let entry = if now_excluded.contains(&e.path) {
            if !delete {
                continue;
            }
            Entry::listing(e.path.parent().map(Path::to_path_buf).unwrap_or_default())
        } else {
            e.clone()
        };
        if !sent.contains(&entry) {
            sent.push(entry);
        }
    }
    Some(Job::Paths(sent))
}

/// The listed directories of a push that need a prune: directories now (not links:
/// a listing whose directory is a link went as the link, and `./link/` would make rsync
/// read the link's target, anywhere, and delete through the remote's link of that name)
/// with a directory among their entries.
fn prunable(root: &Path, paths: &[Entry]) -> Vec<PathBuf> {
    paths
        .iter()
        .filter(|e| e.listing && !e.tree)
        .map(|e| e.path.clone())
        .filter(|d| {
            std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir())
                && std::fs::read_dir(root.join(d)).is_ok_and(|mut it| {
                    it.any(|e| e.is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_dir())))
                })
        })
        .collect()
}

/// The paths of `job` (plain or listed) that the `<filter>` excludes only as directories
/// and that are not a file or link now: a directory (see [`sent_paths`]), or gone. A
/// gone one goes as its parent's listing too: its push is a delete of what the remote
/// holds there, and if the name became such a directory before rsync read the tree,
/// rsync would keep the directory out and the remote's file of that name would stay
/// for good (no event tells of an excluded directory coming or going: simulator seed
/// 4093419). Its parent's listing deletes that file whatever the name is by then.
fn excluded_directories(root: &Path, excludes: &Excludes, job: &Job) -> Vec<PathBuf> {
    let Job::Paths(paths) = job else {
        return Vec::new();
    };
    paths
        .iter()
        .filter(|e| {
            excludes.excludes_only_as_directory(&e.path)
                && !std::fs::symlink_metadata(root.join(&e.path)).is_ok_and(|m| !m.is_dir())
        })
        .map(|e| e.path.clone())
        .collect()
}

/// Is `path` (relative to `root`) below something that is not a directory now: a
/// file, or a link (a directory swapped for a link while the path waited; rsync reads
/// the tree without following links, so the path is not there)? Each directory above
/// it is looked at without following links.
fn below_a_file(root: &Path, path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .any(|a| std::fs::symlink_metadata(root.join(a)).is_ok_and(|m| !m.is_dir()))
}

/// The first of `path`'s proper ancestors (relative to `root`) that is not a directory
/// now, from the top: a file or link, or gone (its push then deletes it on the remote,
/// with what the remote holds below it).
fn first_non_directory(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut above: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    above.reverse();
    above
        .into_iter()
        .find(|a| !std::fs::symlink_metadata(root.join(a)).is_ok_and(|m| m.is_dir()))
        .map(Path::to_path_buf)
}

/// A job taken from the queue. Dropping it finishes the job in the queue, so its paths
/// never stay "in flight", whatever ended the push (a failed spawn, a panic). If the push
/// was not accounted for (it panicked), its paths are owed in the fail log, so they are
/// pushed again later.
struct Taken<'a> {
    mirror: &'a Mirror,
    t: RemoteId,
    job: Job,
    /// How long the remote rests before its next call.
    rest: Option<Duration>,
    accounted: bool,
    /// Listings (their directories) to push again, keeping their marks.
    again: Vec<PathBuf>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let m = self.mirror;
        if !self.accounted {
            // The push panicked before it was booked: book it as a failed run, so its
            // paths are owed and retried on the remote's schedule.
            let outcome = Outcome {
                status: -1,
                stderr: "the push ended abnormally".to_owned(),
                elapsed: Duration::ZERO,
            };
            self.rest = m.account(self.t, &self.job, &outcome);
        }
        m.queue
            .finish_again(self.t, &self.job, self.rest, &self.again);
    }
}

/// The directories `job` lists that are not directories now.
fn missing_listings(root: &Path, job: &Job) -> Vec<(PathBuf, Option<DirStamp>)> {
    let Job::Paths(paths) = job else {
        return Vec::new();
    };
    paths
        .iter()
        .filter(|e| e.listing && !e.path.as_os_str().is_empty())
        .map(|e| e.path.clone())
        .filter(|d| !std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir()))
        .map(|d| {
            let stamp = parent_stamp(root, &d);
            (d, stamp)
        })
        .collect()
}

/// What a directory's entries last changed at: device, inode, mtime and ctime (ns).
type DirStamp = (u64, u64, i64, i64, i64, i64);

/// The stamp of `path`'s parent directory (relative to `root`), read without following
/// a link; `None` when it cannot be read.
fn parent_stamp(root: &Path, path: &Path) -> Option<DirStamp> {
    let parent = path.parent().unwrap_or(Path::new(""));
    let m = std::fs::symlink_metadata(root.join(parent)).ok()?;
    Some(stamp(&m))
}

/// The directories `job` lists that are directories now, with their stamps.
fn listing_stamps(root: &Path, job: &Job) -> Vec<(PathBuf, DirStamp)> {
    let Job::Paths(paths) = job else {
        return Vec::new();
    };
    paths
        .iter()
        .filter(|e| e.listing && !e.path.as_os_str().is_empty())
        .filter_map(|e| Some((e.path.clone(), dir_stamp(root, &e.path)?)))
        .collect()
}

/// Of the listings pushed (with deletes on), those whose directory is not the one it
/// was when the call was built, or whose entries changed since (made, removed or
/// renamed while rsync read it or before the prune looked): they go out again, keeping
/// their marks. rsync sends each subdirectory of a listing as a directory only, so what
/// the remote holds below one of an older tree stays unless the prune deletes it; the
/// prune looks at the directory after the call, and one that went away or lost its
/// subdirectories meanwhile was not pruned, and a barrier passed with the old entries
/// on the remote (simulator seed 448311).
fn listings_changed(root: &Path, listed: Vec<(PathBuf, DirStamp)>) -> Vec<PathBuf> {
    listed
        .into_iter()
        .filter(|(d, stamp)| dir_stamp(root, d) != Some(*stamp))
        .map(|(d, _)| d)
        .collect()
}

/// The stamp of the directory `dir` (relative to `root`), read without following a
/// link; `None` when it is not a directory or cannot be read.
fn dir_stamp(root: &Path, dir: &Path) -> Option<DirStamp> {
    let m = std::fs::symlink_metadata(root.join(dir))
        .ok()
        .filter(std::fs::Metadata::is_dir)?;
    Some(stamp(&m))
}

/// The [`DirStamp`] of what `m` describes.
fn stamp(m: &std::fs::Metadata) -> DirStamp {
    use std::os::unix::fs::MetadataExt;
    (
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// Of the listings that went out as deletes (their directory missing when the call was
/// built), those that go out again: a directory there now, or one that may have been
/// there while rsync read the tree, made and removed again during the call (its
/// parent's entries changed meanwhile). rsync would then have sent it alone, and what
/// the remote holds of the old one stays; the barrier must not pass on it.
fn listings_again(root: &Path, missing: Vec<(PathBuf, Option<DirStamp>)>) -> Vec<PathBuf> {
    missing
        .into_iter()
        .filter(|(d, stamp)| {
            std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir())
                || parent_stamp(root, d) != *stamp
        })
        .map(|(d, _)| d)
        .collect()
}

/// A call that failed on `failed` (rsync's named paths, relative to the root): what is
/// owed for each and what landed. Each failed path must lie within the call: anywhere
/// for a full sync; for paths, one of its entries (owed as it is), an entry of a
/// directory it lists, or below a directory it pushes with everything below it. One of
/// its entries is owed as itself; another path as the directory with everything below
/// it when it is a directory now (`is_dir`: rsync could not list it, so what is below
/// was never compared), else as the path. What landed: the full sync, or the entries
/// not named. `None`: the call is owed whole (a rename, a path outside the call, or
/// nothing landed).
fn split_failed(
    call: &Job,
    failed: &[PathBuf],
    is_dir: impl Fn(&Path) -> bool,
) -> Option<(Vec<Entry>, Job)> {
    let owe = |p: &PathBuf| {
        if is_dir(p) {
            Entry::tree(p.clone())
        } else {
            Entry::plain(p.clone())
        }
    };
    match call {
        Job::Full => Some((failed.iter().map(owe).collect(), Job::Full)),
        Job::Rename { .. } => None,
        Job::Paths(entries) => {
            let mut owed = Vec::with_capacity(failed.len());
            for p in failed {
                if let Some(e) = entries.iter().find(|e| e.path == *p) {
                    owed.push(e.clone());
                } else if entries.iter().any(|e| {
                    (e.tree && p.starts_with(&e.path))
                        || (e.listing && p.parent() == Some(e.path.as_path()))
                }) {
                    owed.push(owe(p));
                } else {
                    return None;
                }
            }
            let paid: Vec<Entry> = entries
                .iter()
                .filter(|e| !failed.contains(&e.path))
                .cloned()
                .collect();
            (!paid.is_empty()).then_some((owed, Job::Paths(paid)))
        }
    }
}

/// The paths rsync's stderr names as failed, relative to `root` (rsync names them below
/// its working directory: the root, or the nosymfollow view of it); `None` when there
/// are none or one is not below the root.
fn failed_in_root(root: &Path, stderr: &str) -> Option<Vec<PathBuf>> {
    let (named, _) = recovery::failed_paths(stderr, usize::MAX);
    if named.is_empty() {
        return None;
    }
    named
        .iter()
        .map(|p| {
            let p = Path::new(p);
            let rel = p
                .strip_prefix(root)
                .or_else(|_| p.strip_prefix(rsync::VIEW))
                .ok()?;
            let mut out = PathBuf::new();
            for c in rel.components() {
                match c {
                    std::path::Component::Normal(n) => out.push(n),
                    std::path::Component::CurDir => {}
                    _ => return None,
                }
            }
            (!out.as_os_str().is_empty()).then_some(out)
        })
        .collect()
}

/// Failed paths from rsync's stderr named in the log, at most.
const FAILED_PATHS_SHOWN: usize = 5;

/// The remotes among `targets` that mirror `root`.
pub fn remotes_of(targets: &[Target], root: &Path) -> Vec<RemoteId> {
    targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.root == root)
        .map(|(i, _)| RemoteId(i))
        .collect()
}

/// Paths too long for rsync a full sync leaves out at most (each is an exclude rule of
/// some 4 KiB read from rsync's stdin).
const TOO_LONG_EXCLUDED: usize = 10_000;

/// `paths` as (too long for rsync, the rest), each in its order.
fn too_long_entries(root: &Path, paths: Vec<Entry>) -> (Vec<Entry>, Vec<Entry>) {
    paths
        .into_iter()
        .partition(|e| too_long_for_rsync(root, &e.path, e.listing))
}

/// A job's paths in runs that fit one call's arguments; directories with everything
/// below them (trees) in runs of their own, after the others (a tree's call is
/// recursive, see `Target::argv`).
fn split(paths: &[Entry]) -> Vec<(Job, Vec<PathBuf>)> {
    let (trees, others): (Vec<Entry>, Vec<Entry>) = paths.iter().cloned().partition(|e| e.tree);
    [others, trees]
        .iter()
        .flat_map(|part| rsync::split_for_args(part, rsync::ARGS_BUDGET))
        .map(|run| (Job::Paths(run.to_vec()), Vec::new()))
        .collect()
}

/// How long the remote `mv` of a rename may take (connect included) before it is
/// killed and the rename pushed plain.
const REMOTE_MV_LIMIT: Duration = Duration::from_secs(30);

/// How a rename reached a remote as one.
enum Renamed {
    /// ssh mode: one `mv` on the remote moved the old path to the new one.
    Moved(Outcome),
    /// The new path was pushed with the old one as its basis; the old one is still
    /// there, to be deleted.
    Linked(Outcome),
}

/// What a rename put on the remote: `to` and what was below it.
fn rename_to_paths(job: &Job) -> Job {
    match job {
        Job::Rename { to, below, .. } => {
            let mut paths = vec![Entry::plain(to.clone())];
            paths.extend(below.iter().filter(|p| *p != to).cloned().map(Entry::plain));
            Job::Paths(paths)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_full_sync_says_how_long_it_has_run() {
        let line = |s| full_progress_line(Path::new("/www"), "h::m", Duration::from_secs(s));
        assert_eq!(
            line(30),
            "full sync of /www to h::m still running (30s so far)"
        );
        assert_eq!(
            line(90),
            "full sync of /www to h::m still running (1m30s so far)"
        );
        assert_eq!(
            line(3_725),
            "full sync of /www to h::m still running (1h02m05s so far)"
        );
    }

    fn failed(stderr: &str) -> Outcome {
        Outcome {
            status: 23,
            stderr: stderr.into(),
            elapsed: Duration::ZERO,
        }
    }

    /// Found by an outside attack run: with deletes off, a directory replaced by a file
    /// was retried for ever (rsync cannot make way without deleting).
    #[test]
    fn a_directory_that_cannot_give_way_is_told_from_other_failures() {
        let summary = "rsync error: some files/attrs were not transferred (see previous \
                       errors) (code 23) at main.c(1394) [sender=3.5.0]";
        assert!(only_blocked_by_directories(&failed(&format!(
            "cannot delete non-empty directory: app\ncould not make way for new regular \
             file: app\n{summary}\n"
        ))));
        assert!(!only_blocked_by_directories(&failed(&format!(
            "cannot delete non-empty directory: app\n{summary}\n"
        ))));
        assert!(!only_blocked_by_directories(&failed(&format!(
            "could not make way for new regular file: app\nrsync: [sender] read errors \
             mapping \"/www/x\": Input/output error (5)\n{summary}\n"
        ))));
    }

    #[test]
    fn the_files_a_partial_transfer_names_are_read_relative_to_the_root() {
        let root = Path::new("/www");
        let stderr = "rsync: [sender] send_files failed to open \"/www/a/secret.txt\": \
                      Permission denied (13)\nrsync: [sender] send_files failed to open \
                      \"/run/sersync2/view/./b.txt\": Permission denied (13)\nIO error \
                      encountered -- skipping file deletion\nrsync error: some files/attrs \
                      were not transferred (see previous errors) (code 23)";
        assert_eq!(
            failed_in_root(root, stderr),
            Some(vec![PathBuf::from("a/secret.txt"), PathBuf::from("b.txt")])
        );
        // A path outside the root (the receiver's, say): the whole job is owed.
        let remote = "rsync: [receiver] mkstemp \"/.x.AbC\" (in mod) failed: Permission \
                      denied (13)";
        assert_eq!(failed_in_root(root, remote), None);
        assert_eq!(
            failed_in_root(root, "rsync: connection unexpectedly closed"),
            None
        );
        let dotdot = "rsync: [sender] send_files failed to open \"/www/../etc/x\": No";
        assert_eq!(failed_in_root(root, dotdot), None);
    }

    /// Found by the simulator (seed 330, directory-only excludes): `write e; rm e;
    /// mv build/e e` with `e/` excluded: the file's events queued `e`, and its push
    /// (`--dirs ./e`) made the excluded directory on the remote. Such a path goes as its
    /// parent's listing (a file `e` pushed before is deleted there), or, with deletes
    /// off, not at all; other paths as they are.
    #[test]
    fn a_path_that_is_an_excluded_directory_now_goes_as_its_parents_listing() {
        let root = tempfile::tempdir().expect("tempdir");
        for d in ["e", "d/e", "d/f"] {
            std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
        }
        std::fs::write(root.path().join("d/x"), b"x").expect("write");
        let excludes = Excludes::new(vec![crate::config::path_regex(r"(.*/)?e/").expect("regex")]);
        let job = Job::Paths(vec![
            Entry::plain("e"),
            Entry::plain("d/e"),
            Entry::plain("d/x"),
            Entry::plain("d/f"),
            Entry::plain("gone"),
        ]);
        let sent = sent_paths(root.path(), &excludes, true, &job);
        assert_eq!(
            sent,
            Some(Job::Paths(vec![
                Entry::listing(""),
                Entry::listing("d"),
                Entry::plain("d/x"),
                Entry::plain("d/f"),
                Entry::plain("gone"),
            ]))
        );
        let kept = sent_paths(root.path(), &excludes, false, &job);
        assert_eq!(
            kept,
            Some(Job::Paths(vec![
                Entry::plain("d/x"),
                Entry::plain("d/f"),
                Entry::plain("gone"),
            ]))
        );
        // A listing of such a directory too (seed 3708: a file renamed away and the
        // directory made at its old path).
        let listed = Job::Paths(vec![Entry::listing("d/e"), Entry::plain("d/x")]);
        assert_eq!(
            sent_paths(root.path(), &excludes, true, &listed),
            Some(Job::Paths(vec![Entry::listing("d"), Entry::plain("d/x")]))
        );
        let plain = Job::Paths(vec![Entry::plain("d/x"), Entry::listing("d/f")]);
        assert_eq!(sent_paths(root.path(), &excludes, true, &plain), None);
    }

    /// Found by the simulator (seed 245, symlinks): `rm -rf e; ln -s . e` while the
    /// listing of `e` waited: the listing went as the link, but its prune ran as
    /// `-r --delete ./e/`, which reads the whole root through the link and deletes
    /// through the remote's link of that name. Only directories are pruned.
    #[test]
    fn a_listing_whose_directory_is_a_link_now_is_not_pruned() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("d/sub")).expect("mkdir");
        std::fs::create_dir_all(root.path().join("flat")).expect("mkdir");
        std::os::unix::fs::symlink(".", root.path().join("e")).expect("ln -s . e");
        std::os::unix::fs::symlink("d", root.path().join("l")).expect("ln -s d l");
        let paths = [
            Entry::listing("d"),
            Entry::listing("e"),
            Entry::listing("l"),
            Entry::listing("flat"),
            Entry::listing("gone"),
            Entry::plain("d/sub"),
        ];
        assert_eq!(prunable(root.path(), &paths), [PathBuf::from("d")]);
    }

    /// What a call that failed on named paths owes: a directory rsync could not read
    /// with everything below it, a file as itself, an entry of the call as it was; the
    /// rest landed. A path the call did not reach owes the whole call.
    #[test]
    fn a_partial_failure_owes_what_failed_and_pays_the_rest() {
        let dirs = ["locked", "a/sub", "b"];
        let is_dir = |p: &Path| dirs.iter().any(|d| p == Path::new(d));
        let pb = |s: &str| PathBuf::from(s);
        assert_eq!(
            split_failed(&Job::Full, &[pb("locked"), pb("secret.txt")], is_dir),
            Some((
                vec![Entry::tree("locked"), Entry::plain("secret.txt")],
                Job::Full
            ))
        );
        let call = Job::Paths(vec![
            Entry::listing("a"),
            Entry::listing("b"),
            Entry::plain("pub.txt"),
        ]);
        // An entry of a listed directory, and a listed directory itself.
        assert_eq!(
            split_failed(&call, &[pb("a/secret.txt"), pb("b")], is_dir),
            Some((
                vec![Entry::plain("a/secret.txt"), Entry::listing("b")],
                Job::Paths(vec![Entry::listing("a"), Entry::plain("pub.txt")])
            ))
        );
        // A subdirectory of a listed directory is listed as a directory only: rsync
        // names nothing below it, and a name there is not this call's.
        assert_eq!(split_failed(&call, &[pb("a/sub/x")], is_dir), None);
        assert_eq!(split_failed(&call, &[pb("elsewhere")], is_dir), None);
        // Below a tree, at any depth; a directory there is owed as a tree.
        let tree = Job::Paths(vec![Entry::tree("a")]);
        assert_eq!(
            split_failed(&tree, &[pb("a/sub"), pb("a/sub2/f")], is_dir),
            Some((
                vec![Entry::tree("a/sub"), Entry::plain("a/sub2/f")],
                Job::Paths(vec![Entry::tree("a")])
            ))
        );
        // Nothing landed: the call is owed as it was.
        assert_eq!(split_failed(&tree, &[pb("a")], is_dir), None);
        let rename = Job::Rename {
            from: pb("x"),
            to: pb("y"),
            dir: false,
            below: Vec::new(),
        };
        assert_eq!(split_failed(&rename, &[pb("y")], is_dir), None);
    }

    #[test]
    fn trees_go_in_calls_of_their_own() {
        let calls = split(&[
            Entry::tree("t"),
            Entry::plain("f"),
            Entry::listing("d"),
            Entry::tree("u"),
        ]);
        let jobs: Vec<Job> = calls.into_iter().map(|(j, _)| j).collect();
        assert_eq!(
            jobs,
            [
                Job::Paths(vec![Entry::plain("f"), Entry::listing("d")]),
                Job::Paths(vec![Entry::tree("t"), Entry::tree("u")]),
            ]
        );
    }

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

    /// A listing whose directory went away after the call was built (so its prune,
    /// which looks at it after the call, did not run) goes out again; one unchanged
    /// does not (found by the simulator, seed 448311: `c/` was listed while `c/c`, a
    /// newer directory, stood where an older one's files still were on the remote, then
    /// `c` was moved away, the prune was skipped and a barrier passed).
    #[test]
    fn a_listing_whose_directory_went_away_before_its_prune_goes_out_again() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        std::fs::create_dir_all(root.join("c/c")).expect("c/c");
        std::fs::create_dir(root.join("e")).expect("e");
        let job = Job::Paths(vec![
            Entry::listing("c"),
            Entry::listing("e"),
            Entry::plain("f"),
        ]);
        let listed = listing_stamps(root, &job);
        assert_eq!(listed.len(), 2, "the listings that are directories");
        std::fs::rename(root.join("c"), root.join("old")).expect("mv c old");
        assert_eq!(listings_changed(root, listed), [PathBuf::from("c")]);
    }
}
