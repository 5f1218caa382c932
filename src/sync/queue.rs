//! All remotes' ledgers behind one mutex and condvar, for the filter thread (producer),
//! the workers and the barrier waiters: which remote a free worker serves next, when a
//! remote gets a second call in a burst, the sync cookies a barrier waits for, and the
//! lock-order check. What one remote waits for, has in flight and owes, and the rules that
//! order and merge it, are in [`crate::sync::ledger`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::faillog::Owed;
use super::job::{Entry, Job, RemoteId};
pub use super::ledger::{Holding, Item, Ledger, Left, Mark, Pushed, Tripped, RENAME_FLOOD};
use super::lockorder::{Hold, Lock};
use super::recovery::{Plan, Recovery};

/// A relative path as raw bytes (see [`crate::sync::ledger`]).
type Key = Vec<u8>;

#[cfg(test)]
/// Does this thread hold a queue's lock? The lock order (ARCHITECTURE.md, checked by
/// [`super::lockorder`]) puts the fail log's lock before the queue's.
pub fn lock_held() -> bool {
    super::lockorder::held(Lock::Queue)
}

/// Counts one hold of the queue's lock by this thread while it lives, checking the lock
/// order (see [`super::lockorder`]).
fn counted() -> Hold {
    Hold::new(Lock::Queue)
}

/// The queue's lock, counted (see [`lock_held`]).
struct Held<'a> {
    guard: MutexGuard<'a, State>,
    _held: Hold,
}

impl std::ops::Deref for Held<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

/// All remotes' pending work, shared by the watcher (producer) and the workers.
pub struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    /// Raised whenever a remote may have become more level (a push ended), a sync
    /// cookie was seen, or the queue closed: what barrier waiters wait on.
    progress: Condvar,
    /// Most paths per rsync call.
    batch: usize,
    /// Most calls in flight to one remote, so a slow remote leaves workers for the others.
    per_target: usize,
    /// For the brake's log lines: each remote's label and the command that releases
    /// what it holds (see [`Queue::set_brake`]).
    brake_words: std::sync::OnceLock<BrakeWords>,
    /// The warm-restart index: how many entries a deleted directory held, for the
    /// brake (see [`Queue::count_from`]).
    index: std::sync::OnceLock<EntriesBelow>,
}

/// How many entries the warm-restart index holds below a path of the root a remote
/// mirrors (`index::Recorder::entries_below`).
pub type EntriesBelow = Box<dyn Fn(RemoteId, &std::path::Path) -> usize + Send + Sync>;

/// Says that a hold ended by itself: as much was written again as was deleted.
fn say_released(t: usize, released: Holding, words: Option<&BrakeWords>) {
    let label = words
        .and_then(|w| w.labels.get(t).cloned())
        .unwrap_or_else(|| format!("remote #{}", t + 1));
    log::info!(
        remote = label.as_str();
        "{} held delete(s) to {label} released by themselves: as many entries were written \
         again within the brake's window (a deploy that replaced what it deleted); pushed now",
        released.deletes
    );
}

/// What the brake's log lines name: each remote's label, the config file.
#[derive(Debug, Default)]
struct BrakeWords {
    labels: Vec<String>,
    config: String,
}

/// During a burst a remote gets a second concurrent call only once its latest call has
/// run this long. The running call is short and the next one takes everything that
/// piled up meanwhile (few, large calls: what a burst costs is process and connection
/// start-up); a call that runs long (a big file, a slow link) no longer holds back the
/// changes behind it.
pub const SECOND_CALL_AFTER: Duration = Duration::from_millis(300);

/// A second call to a remote in a burst (see [`SECOND_CALL_AFTER`]) starts only while
/// fewer calls than this run to all remotes together. With many remotes in a burst every
/// remote has its call running already: the CPU is the limit then, and a second call
/// per remote only splits the work into more calls (each one an rsync client and a
/// daemon child), which costs CPU and lands the burst later. Single edits
/// ([`TRICKLE`]) are not held by it.
pub const BURST_CALLS: usize = 10;

struct State {
    remotes: Vec<Remote>,
    next: usize,
    closed: bool,
    /// Sync cookies a barrier waits for, by file name: once the filter thread has met
    /// one, the checkpoint of each remote of its root at that moment.
    cookies: HashMap<Key, Option<Vec<(RemoteId, u64)>>>,
}

impl State {
    /// Calls running to all remotes.
    fn running(&self) -> usize {
        self.remotes.iter().map(|r| r.pending.running()).sum()
    }
}

/// The queue as a barrier waiter sees it, under its lock (see [`Queue::wait_for`]).
pub struct View<'a>(&'a State);

impl View<'_> {
    /// The checkpoints taken when this cookie was seen, if it was.
    pub fn cookie(&self, name: &[u8]) -> Option<&[(RemoteId, u64)]> {
        self.0.cookies.get(name)?.as_deref()
    }

    /// Has every change of `t` up to `checkpoint` reached it?
    pub fn passed(&self, t: RemoteId, checkpoint: u64) -> bool {
        self.0
            .remotes
            .get(t.0)
            .is_none_or(|r| r.pending.passed(checkpoint))
    }

    /// The queue was closed (the pipeline stops or reloads).
    pub fn closed(&self) -> bool {
        self.0.closed
    }
}

/// How far behind one remote is (for status and barriers).
#[derive(Debug, Clone, Copy, Default)]
pub struct Behind {
    /// When the oldest change not on the remote yet was first queued.
    pub oldest: Option<Instant>,
    /// Entries waiting or in flight.
    pub pending: usize,
}

/// One remote: what waits for it, and when it may start its next call.
#[derive(Default)]
struct Remote {
    pending: Ledger,
    /// A remote that just failed is left alone until then.
    resting_until: Option<Instant>,
    /// When its latest call started.
    last_start: Option<Instant>,
    /// A worker has been woken to wait for this remote's second-call time; no need to
    /// wake another for every event until the remote starts a call.
    timer_armed: bool,
}

impl Remote {
    /// May this remote start a call now? If not only because of a time (resting, or a
    /// running call that is still young), when it may.
    /// `all_running`: the calls running to every remote.
    fn may_start(
        &self,
        now: Instant,
        per_target: usize,
        all_running: usize,
    ) -> Result<(), Option<Instant>> {
        if self.pending.is_paused() {
            // Woken by `resume`.
            return Err(None);
        }
        if let Some(until) = self.resting_until.filter(|u| *u > now) {
            return Err(Some(until));
        }
        let running = self.pending.running();
        if running == 0 {
            return Ok(());
        }
        if running >= per_target {
            return Err(None);
        }
        if self.pending.is_trickle() {
            return Ok(());
        }
        if all_running >= BURST_CALLS {
            // Busy enough: a call that ends frees a worker, and this remote's next call
            // takes what piled up. Woken by `finish`, no timer needed.
            return Err(None);
        }
        match self.last_start {
            Some(at) if now < at + SECOND_CALL_AFTER => Err(Some(at + SECOND_CALL_AFTER)),
            _ => Ok(()),
        }
    }
}

impl Queue {
    pub fn new(targets: usize, batch: usize, workers: usize) -> Self {
        Queue {
            state: Mutex::new(State {
                remotes: (0..targets)
                    .map(|_| Remote {
                        pending: Ledger::new(),
                        ..Remote::default()
                    })
                    .collect(),
                next: 0,
                closed: false,
                cookies: HashMap::new(),
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
            batch: batch.max(1),
            per_target: workers.div_ceil(targets.max(1)).max(1),
            brake_words: std::sync::OnceLock::new(),
            index: std::sync::OnceLock::new(),
        }
    }

    /// Sets the brake on mass deletes of every remote (`None`: off); `labels` and
    /// `config` name the remotes and the config file in its log lines.
    pub fn set_brake(
        &self,
        rule: Option<crate::config::DeleteBrake>,
        labels: Vec<String>,
        config: &std::path::Path,
    ) {
        let _ = self.brake_words.set(BrakeWords {
            labels,
            config: config.display().to_string(),
        });
        for r in &mut self.lock().remotes {
            r.pending.set_brake(rule);
        }
    }

    /// How many entries each remote's tree had (the warm-restart index's count), when
    /// known: the brake's share is of this.
    pub fn set_trees(&self, trees: &[(RemoteId, Option<usize>)]) {
        let mut st = self.lock();
        for &(t, n) in trees {
            if let Some(r) = st.remotes.get_mut(t.0) {
                r.pending.set_tree(n);
            }
        }
    }

    /// Says, at error level, that `t` began to hold deletes (see [`Ledger::take_held_news`]).
    fn say_held(&self, t: usize, pending: &mut Ledger, now: Instant) {
        let Some(why) = pending.take_held_news(now) else {
            return;
        };
        let held = pending.held();
        let words = self.brake_words.get();
        let label = words
            .and_then(|w| w.labels.get(t).cloned())
            .unwrap_or_else(|| format!("remote #{}", t + 1));
        let config = words.map_or("CONFIG", |w| w.config.as_str());
        let why = match why {
            Tripped::Deletes(n) => format!("{n} deletes within the brake's window"),
            Tripped::Full(n) => format!("a full sync that would delete about {n} entries"),
            Tripped::EmptyRoot => "a full sync of a watch root that is empty now".to_owned(),
        };
        log::error!(
            remote = label.as_str(), held = held.deletes;
            "deletes to {label} held by the brake on mass deletes ({why}): {} held, more \
             are held as they come, creates and edits still flow; the remote keeps those \
             files until `sersync2 --release-deletes -o {config}` pushes them or `sersync2 \
             --discard-deletes -o {config}` drops them (<deleteBrake> in the config)",
            held.what(),
        );
    }

    /// Every remote's held deletes are released (see [`Ledger::release_deletes`]):
    /// what each held.
    pub fn release_deletes(&self) -> Vec<Holding> {
        let now = Instant::now();
        let mut st = self.lock();
        let held = (st.remotes.iter_mut())
            .map(|r| r.pending.release_deletes(now))
            .collect();
        drop(st);
        self.wake.notify_all();
        self.progress.notify_all();
        held
    }

    /// Every remote's held deletes are dropped (see [`Ledger::discard_deletes`]): what
    /// each held.
    pub fn discard_deletes(&self) -> Vec<Holding> {
        let mut st = self.lock();
        let held = (st.remotes.iter_mut())
            .map(|r| r.pending.discard_deletes())
            .collect();
        drop(st);
        self.wake.notify_all();
        self.progress.notify_all();
        held
    }

    /// What each remote holds.
    pub fn held(&self) -> Vec<Holding> {
        self.lock()
            .remotes
            .iter()
            .map(|r| r.pending.held())
            .collect()
    }

    /// Deletes to these remotes are held from now, whatever the count (see
    /// [`Ledger::hold_now`]).
    pub fn hold_deletes(&self, targets: &[RemoteId]) {
        let now = Instant::now();
        let mut st = self.lock();
        for &t in targets {
            if let Some(r) = st.remotes.get_mut(t.0) {
                r.pending.hold_now(now);
                self.say_held(t.0, &mut r.pending, now);
            }
        }
    }

    /// The deletes waiting for these remotes were counted together (see
    /// [`Ledger::settled`]): they go without waiting out the brake's settle time.
    pub fn settled(&self, targets: &[RemoteId]) {
        let now = Instant::now();
        let mut st = self.lock();
        for &t in targets {
            if let Some(r) = st.remotes.get_mut(t.0) {
                r.pending.settled(now);
            }
        }
        self.wake_for(st, targets);
    }

    /// Counts `n` deletes for these remotes that are not queued one by one (see
    /// [`Ledger::count_deletes`]).
    pub fn count_deletes(&self, targets: &[RemoteId], n: usize) {
        let now = Instant::now();
        let mut st = self.lock();
        for &t in targets {
            if let Some(r) = st.remotes.get_mut(t.0) {
                r.pending.count_deletes(n, now);
            }
        }
    }

    /// Queues a full sync of roots that hold `entries` entries now, when counted (see
    /// [`Ledger::push_full_checked`]).
    pub fn push_full_checked(&self, targets: &[RemoteId], entries: Option<usize>) {
        let now = Instant::now();
        let mut st = self.lock();
        for &t in targets {
            let pending = &mut st.remotes[t.0].pending;
            pending.push_full_checked(entries, now);
            self.say_held(t.0, pending, now);
        }
        self.wake_for(st, targets);
    }

    /// The full sync in flight to `t` is guarded by the brake on mass deletes (see
    /// [`Ledger::guards_full`]): on, and not a full sync the operator released.
    pub fn guards_full(&self, t: RemoteId) -> bool {
        let st = self.lock();
        st.remotes.get(t.0).is_some_and(|r| r.pending.guards_full())
    }

    /// The full sync in flight to `t` is held, not run: its root is empty now (see
    /// [`Ledger::hold_full`]). Call before finishing it. False: the brake is off.
    pub fn hold_full(&self, t: RemoteId) -> bool {
        let mut st = self.lock();
        let Some(r) = st.remotes.get_mut(t.0) else {
            return false;
        };
        let now = Instant::now();
        let held = r.pending.hold_full(now);
        self.say_held(t.0, &mut r.pending, now);
        held
    }

    /// The queue's lock, counted as held by this thread (see [`lock_held`]).
    fn lock(&self) -> Held<'_> {
        let counted = counted();
        Held {
            guard: self.raw_lock(),
            _held: counted,
        }
    }

    /// The queue's lock for a condvar wait (only `take` and `wait_for`, which call out
    /// to nothing but a barrier's check, counted in `wait_for`).
    fn raw_lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked while holding the lock left consistent state: every
        // mutation above is completed before any call that could panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one path for each of the given remotes.
    #[cfg(test)]
    pub fn push(&self, targets: &[RemoteId], path: &std::path::Path, gone_dir: bool) {
        let mut st = self.lock();
        for &t in targets {
            st.remotes[t.0].pending.push(path.to_path_buf(), gone_dir);
        }
        self.wake_for(st, targets);
    }

    /// Queues many entries at once (a walked directory, what is owed) with one lock.
    pub fn push_many(&self, targets: &[RemoteId], paths: &[Entry]) {
        if paths.is_empty() {
            return;
        }
        let mut st = self.lock();
        for &t in targets {
            for p in paths {
                st.remotes[t.0].pending.push(p.clone(), false);
            }
        }
        self.wake_for(st, targets);
    }

    /// The brake counts what a deleted directory held from `index` (a watcher does not
    /// always report each entry of an `rm -rf`: fanotify cannot name what was in a
    /// directory already gone when its events are read).
    pub fn count_from(&self, entries_below: EntriesBelow) {
        let _ = self.index.set(entries_below);
    }

    /// The brake on mass deletes is on for the remote `t` (or holds what it held).
    pub fn braking(&self, t: RemoteId) -> bool {
        self.lock().remotes[t.0].pending.braking()
    }

    pub fn push_full(&self, targets: &[RemoteId]) {
        let mut st = self.lock();
        for &t in targets {
            st.remotes[t.0].pending.push_full();
        }
        self.wake_for(st, targets);
    }

    /// Wakes one worker if new work for these remotes can start now, or needs a worker
    /// to wait for its second-call time. During a burst neither holds for most events,
    /// so the watcher does not pay a thread wake-up per event: the worker whose call
    /// ends takes what piled up.
    fn wake_for(&self, mut st: Held<'_>, targets: &[RemoteId]) {
        let now = Instant::now();
        let all_running = st.running();
        let mut wake = false;
        for &t in targets {
            let remote = &mut st.remotes[t.0];
            match remote.may_start(now, self.per_target, all_running) {
                Ok(()) => wake = true,
                Err(Some(_)) if !remote.timer_armed => {
                    remote.timer_armed = true;
                    wake = true;
                }
                Err(_) => {}
            }
        }
        drop(st);
        if wake {
            // It wakes another if more can run (see `take`).
            self.wake.notify_one();
        }
    }

    /// Blocks until there is work for a free remote; `None` once the queue is closed.
    /// Of the remotes that may start a call, the one whose oldest waiting change is
    /// oldest goes first (ties in turn), so with fewer workers than remotes no remote
    /// waits while others that got their changes later are served.
    pub fn take(&self) -> Option<(RemoteId, Job)> {
        let mut st = self.raw_lock();
        loop {
            if st.closed {
                return None;
            }
            let now = Instant::now();
            let soonest = match self.take_ready(&mut st, now) {
                Ok(work) => {
                    // Another worker takes the rest, or keeps the time of a retry.
                    let more = st
                        .remotes
                        .iter()
                        .any(|r| !r.pending.is_empty() || r.pending.retrying());
                    drop(st);
                    if more {
                        self.wake.notify_one();
                    }
                    return Some(work);
                }
                Err(soonest) => soonest,
            };
            st = match soonest {
                Some(until) => {
                    let wait = until.saturating_duration_since(now);
                    self.wake
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// [`Queue::take`] without waiting, as if it were `now`: the simulator's worker
    /// step (it owns time, so rests and retries fall due when it says).
    #[cfg(test)]
    pub fn try_take_at(&self, now: Instant) -> Option<(RemoteId, Job)> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        self.take_ready(&mut st, now).ok()
    }

    /// How many remotes it serves.
    #[cfg(test)]
    pub fn remotes(&self) -> usize {
        self.lock().remotes.len()
    }

    /// Sets every remote's collapse threshold (0: never), for the simulator.
    #[cfg(test)]
    pub fn set_collapse_at(&self, n: usize) {
        for r in &mut self.lock().remotes {
            r.pending.set_collapse_at(n);
        }
    }

    /// One pass of [`Queue::take`] at `now`: the work handed out, or when to look again
    /// (`None`: only when woken).
    fn take_ready(&self, st: &mut State, now: Instant) -> Result<(RemoteId, Job), Option<Instant>> {
        let n = st.remotes.len();
        let mut soonest: Option<Instant> = None;
        let mut ready: Vec<(Instant, usize, usize)> = Vec::new();
        let all_running = st.running();
        for i in 0..n {
            let t = (st.next + i) % n;
            let remote = &mut st.remotes[t];
            if let Some(at) = remote.pending.retry_due(now) {
                soonest = Some(soonest.map_or(at, |s| s.min(at)));
            }
            // A hold to be said once it has lasted (see `Ledger::take_held_news`).
            if let Some(at) = remote.pending.held_news_due() {
                if at <= now {
                    self.say_held(t, &mut remote.pending, now);
                } else {
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
            }
            let Some(oldest) = remote.pending.oldest_waiting() else {
                continue;
            };
            if let Err(later) = remote.may_start(now, self.per_target, all_running) {
                if let Some(at) = later {
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
                continue;
            }
            ready.push((oldest, i, t));
        }
        ready.sort_unstable();
        for (_, _, t) in ready {
            let remote = &mut st.remotes[t];
            let work = remote.pending.take_at(self.batch, now);
            if work.is_none() {
                if let Some(at) = remote.pending.settle_due() {
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
            }
            let flooded = remote.pending.take_flooded();
            if flooded > 0 {
                log::info!(
                    "{flooded} renames waiting for remote #{} travel as plain paths, \
                     batched (more than {RENAME_FLOOD} waiting at once)",
                    t + 1
                );
            }
            if let Some(work) = work {
                remote.last_start = Some(now);
                remote.timer_armed = false;
                st.next = (t + 1) % n;
                return Ok((RemoteId(t), work));
            }
        }
        Err(soonest)
    }

    /// Returns work from `take`; on failure the remote rests a moment before its next call.
    pub fn finish(&self, target: RemoteId, work: &Job, rest: Option<Duration>) {
        self.finish_again(target, work, rest, &[]);
    }

    /// [`Queue::finish`], with the listings `again` (directories `work` listed)
    /// queued once more with the marks they had in flight: their push did not make
    /// them equal (see `Mirror::run_job`).
    pub fn finish_again(
        &self,
        target: RemoteId,
        work: &Job,
        rest: Option<Duration>,
        again: &[PathBuf],
    ) {
        let mut st = self.lock();
        let remote = &mut st.remotes[target.0];
        remote.pending.finish_again(work, again, Instant::now());
        if let Some(d) = rest {
            remote.resting_until = Some(Instant::now() + d);
        }
        drop(st);
        self.wake.notify_one();
        self.progress.notify_all();
    }

    /// A push to `target` failed for good (rsync `status`): its entries stay owed, with
    /// their marks, until a push of them succeeds. Call before [`Queue::finish`].
    /// Entries not in flight count from `since`.
    pub fn owe(&self, target: RemoteId, job: &Job, since: Instant, status: i32) {
        if let Some(r) = self.lock().remotes.get_mut(target.0) {
            r.pending.owe(job, Mark { seq: 0, since }, status);
        }
    }

    /// What a fail log read at start owed `target`: owed again, counting from `since`;
    /// its files a full sync would skip (`Owed::blind`) queued again.
    pub fn restore(&self, target: RemoteId, owed: &Owed, since: Instant) {
        if let Some(r) = self.lock().remotes.get_mut(target.0) {
            for job in owed.jobs() {
                r.pending.owe(&job, Mark { seq: 0, since }, owed.status);
            }
            // Held at the last stop: held again, not owed (see `Ledger::hold_restored`).
            r.pending.hold_restored(owed, since);
            // Files a full sync would skip, not yet pushed at the last stop: queued
            // again as such, whatever the index says (see `Owed::blind`).
            for p in &owed.blind {
                r.pending.push_blind_at(p.clone(), since);
            }
        }
    }

    /// A push to `target` failed for good (rsync `status`): its entries are owed and the
    /// remote's retry is set on the backoff (see [`Ledger::failed`]). Call before
    /// [`Queue::finish`]. `None`: no such remote.
    pub fn failed(&self, target: RemoteId, job: &Job, status: i32, random: u64) -> Option<Plan> {
        let mut st = self.lock();
        let plan = st.remotes.get_mut(target.0).map(|r| {
            r.pending
                .failed(job, status, Instant::now(), SystemTime::now(), random)
        });
        drop(st);
        // A sleeping worker recomputes how long to wait.
        self.wake.notify_one();
        plan
    }

    /// A push to `target` succeeded: what it carried is no longer owed, but for the
    /// paths it left out below a file or link, and the retry schedule follows (see
    /// [`Ledger::pushed`]).
    pub fn pushed(&self, target: RemoteId, job: &Job, left_out: &[(PathBuf, PathBuf)]) -> Pushed {
        let mut st = self.lock();
        let pushed = st
            .remotes
            .get_mut(target.0)
            .map(|r| r.pending.pushed(job, left_out, Instant::now()))
            .unwrap_or_default();
        drop(st);
        if pushed.recovered || pushed.orphaned > 0 {
            self.wake.notify_one();
        }
        pushed
    }

    /// A call to `target` in flight deletes `tops` and all below them there: nothing
    /// at or below them goes to `target` until [`Queue::deleted`] (see
    /// [`Ledger::deleting`]).
    pub fn deleting(&self, target: RemoteId, tops: &[Entry]) {
        if let Some(r) = self.lock().remotes.get_mut(target.0) {
            r.pending.deleting(tops);
        }
    }

    /// The call [`Queue::deleting`] booked `tops` for has ended.
    pub fn deleted(&self, target: RemoteId, tops: &[Entry]) {
        if let Some(r) = self.lock().remotes.get_mut(target.0) {
            r.pending.deleted(tops);
        }
        self.wake.notify_one();
    }

    /// What `job` carried is no longer owed to `target`, without a push and without
    /// touching the retry schedule: for paths no push can ever land (too long for
    /// rsync). Returns whether what is owed changed.
    pub fn paid_without_push(&self, target: RemoteId, job: &Job) -> bool {
        let mut st = self.lock();
        let changed = st
            .remotes
            .get_mut(target.0)
            .is_some_and(|r| r.pending.paid(job));
        drop(st);
        self.progress.notify_all();
        changed
    }

    /// Has `target` failed and not been level since?
    pub fn is_failing(&self, target: RemoteId) -> bool {
        self.lock()
            .remotes
            .get(target.0)
            .is_some_and(|r| r.pending.recovery().is_failing())
    }

    /// Every remote's retry schedule (for status).
    pub fn recoveries(&self) -> Vec<Recovery> {
        self.lock()
            .remotes
            .iter()
            .map(|r| r.pending.recovery().clone())
            .collect()
    }

    /// What `target` owes, as jobs (a full sync, or its paths).
    pub fn owed_jobs(&self, target: RemoteId) -> Vec<Job> {
        self.lock()
            .remotes
            .get(target.0)
            .map(|r| r.pending.owed().jobs())
            .unwrap_or_default()
    }

    /// What every remote owes: the fail log's entries, as it is written.
    pub fn owed(&self) -> Vec<Owed> {
        self.lock()
            .remotes
            .iter()
            .map(|r| {
                let mut owed = r.pending.owed().clone();
                let (held, full) = r.pending.held_owed();
                owed.record_held(&held, full);
                owed.blind = r.pending.blind_paths();
                owed
            })
            .collect()
    }

    /// Entries owed per remote (paths, a full sync as one).
    pub fn owed_counts(&self) -> Vec<usize> {
        self.lock()
            .remotes
            .iter()
            .map(|r| r.pending.owed().len())
            .collect()
    }

    /// How far behind each remote is.
    pub fn behind(&self) -> Vec<Behind> {
        self.lock()
            .remotes
            .iter()
            .map(|r| Behind {
                oldest: r.pending.oldest().map(|m| m.since),
                pending: r.pending.outstanding(),
            })
            .collect()
    }

    /// A barrier will wait for a sync cookie of this name (a file name in a watch root).
    pub fn expect_cookie(&self, name: &[u8]) {
        self.lock().cookies.insert(name.to_vec(), None);
    }

    /// The barrier is done with this cookie.
    pub fn forget_cookie(&self, name: &[u8]) {
        self.lock().cookies.remove(name);
    }

    /// The filter thread met these cookies in a batch of the root of `targets`, and has
    /// queued everything before them: each expected one records every target's
    /// checkpoint now. Cookies nobody waits for are ignored.
    pub fn cookies_seen(&self, names: &[Key], targets: &[RemoteId]) {
        let mut st = self.lock();
        let marks: Vec<(RemoteId, u64)> = targets
            .iter()
            .filter_map(|&t| Some((t, st.remotes.get(t.0)?.pending.checkpoint())))
            .collect();
        let mut any = false;
        for name in names {
            if let Some(slot @ None) = st.cookies.get_mut(name) {
                *slot = Some(marks.clone());
                any = true;
            }
        }
        drop(st);
        if any {
            self.progress.notify_all();
        }
    }

    /// Waits until `done` holds, checking it now and whenever a push ends, a cookie is
    /// seen or the queue closes, but not past `until`. Returns whether it held.
    pub fn wait_for(&self, until: Instant, mut done: impl FnMut(&View<'_>) -> bool) -> bool {
        let mut st = self.raw_lock();
        loop {
            let counted = counted();
            if done(&View(&st)) {
                return true;
            }
            drop(counted);
            let now = Instant::now();
            if now >= until {
                return false;
            }
            st = self
                .progress
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Queues what this remote owes at `at`, replacing a retry that was waiting. It
    /// joins the pending set like any change. (The workers set it with
    /// [`Queue::failed`].)
    #[cfg(test)]
    pub fn retry_at(&self, target: RemoteId, at: Instant) {
        let mut st = self.lock();
        st.remotes[target.0].pending.retry_at(Some(at));
        drop(st);
        // A sleeping worker recomputes how long to wait.
        self.wake.notify_one();
    }

    /// Drops a waiting retry.
    #[cfg(test)]
    pub fn cancel_retry(&self, target: RemoteId) {
        self.lock().remotes[target.0].pending.retry_at(None);
    }

    /// Pauses (`true`) or resumes these remotes (see `ledger::pause`): a paused remote
    /// is handed no work; what waits for it keeps waiting, merged, and is owed at the
    /// close. Returns, per remote asked, whether this changed it.
    pub fn set_paused(&self, targets: &[RemoteId], paused: bool) -> Vec<bool> {
        let mut st = self.lock();
        let changed = targets
            .iter()
            .map(|t| {
                st.remotes.get_mut(t.0).is_some_and(|r| {
                    if paused {
                        r.pending.pause()
                    } else {
                        r.pending.resume()
                    }
                })
            })
            .collect();
        drop(st);
        if !paused {
            // What waited may run now, on as many workers as it needs.
            self.wake.notify_all();
        }
        self.progress.notify_all();
        changed
    }

    /// Whether each remote is paused.
    pub fn paused(&self) -> Vec<bool> {
        self.lock()
            .remotes
            .iter()
            .map(|r| r.pending.is_paused())
            .collect()
    }

    /// Nothing waiting and nothing in flight, for every remote (a retry waiting for its
    /// time does not count).
    /// (Listings held back while deletes are held do not count either: see
    /// [`Ledger::is_settled`].)
    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        st.remotes.iter().all(|r| r.pending.is_settled())
    }

    /// Nothing waiting and nothing in flight for one remote (see [`Queue::is_idle`]).
    pub fn is_idle_for(&self, target: RemoteId) -> bool {
        let st = self.lock();
        st.remotes
            .get(target.0)
            .is_none_or(|r| r.pending.is_settled())
    }

    /// Per remote, how many jobs are in flight (pushes running).
    pub fn running_jobs(&self) -> Vec<usize> {
        self.lock()
            .remotes
            .iter()
            .map(|r| r.pending.running())
            .collect()
    }

    /// Paths waiting per remote (for status and logs).
    pub fn waiting(&self) -> Vec<usize> {
        self.lock()
            .remotes
            .iter()
            .map(|r| r.pending.len())
            .collect()
    }

    /// Stops handing out work: everything still waiting and in flight is owed (see
    /// [`Ledger::close`]). Returns, per remote, what was waiting and what is in flight
    /// (which may yet fail or succeed).
    pub fn close(&self) -> Vec<Left> {
        let mut st = self.lock();
        st.closed = true;
        let left = st.remotes.iter_mut().map(|r| r.pending.close()).collect();
        drop(st);
        self.wake.notify_all();
        self.progress.notify_all();
        left
    }
}

mod batch;
#[cfg(test)]
mod tests;
