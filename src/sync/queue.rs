//! Pending changes per remote: merged, ordered, batched, never run twice at once.
//!
//! A pending entry is only "this path must be made equal on that remote"; what exists
//! when rsync runs is pushed, what is gone is deleted. That makes merging trivial (a path
//! waiting twice is one entry) and ordering a matter of one rule: a path is not handed
//! out while the same path, an ancestor or a descendant is being pushed to the same
//! remote. A later change waits, merged, and goes in the next call, so the last call
//! for a path always starts after its last change.
//!
//! A rename inside the tree waits as one entry with two paths (`from` and `to`) and is
//! handed out alone, as a [`Job::Rename`]; it is not handed out while anything at, above
//! or below either path is in flight. Anything else waiting at, above or below either
//! path (or a full sync waiting or running) turns it into its plain form (`from` and
//! `to` and what is below `to`, as ordinary entries), so the one rule above still
//! orders everything.
//!
//! `Pending` is the pure state of one remote (unit and property tested); `Queue` wraps all
//! remotes in a mutex and condvar for the worker threads. A remote that owes work also
//! has a retry here: its owed jobs, moved into the pending set when their time comes
//! (the workers' wait already has a deadline per remote; no thread per remote).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::ops::Bound;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::job::{Job, RemoteId};

/// A relative path as raw bytes. The maps compare and hash keys on every event; bytes
/// do that with memcmp where `Path` walks components (that was the largest part of the
/// watcher's CPU in a burst). Paths come from the watcher already normalised (no `//`,
/// no trailing `/`), so byte order keeps a directory's descendants together: they are
/// exactly the keys that start with `dir/`.
type Key = Vec<u8>;

fn key(p: PathBuf) -> Key {
    p.into_os_string().into_vec()
}

fn to_path(k: Key) -> PathBuf {
    PathBuf::from(OsString::from_vec(k))
}

/// The proper ancestors of a key (`a/b/c` → `a/b`, `a`).
fn ancestors(k: &[u8]) -> impl Iterator<Item = &[u8]> {
    k.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i > 0)
        .map(move |(i, _)| &k[..i])
}

/// The pending and in-flight state of one remote.
#[derive(Debug, Default)]
pub struct Pending {
    by_path: BTreeMap<Key, u64>,
    by_seq: BTreeMap<u64, Key>,
    seq: u64,
    full_pending: bool,
    full_inflight: bool,
    inflight: HashSet<Key>,
    /// For every proper ancestor of an in-flight path: how many in-flight paths lie below.
    inflight_below: HashMap<Key, usize>,
    running: usize,
    /// Paths carried by the calls in flight.
    running_paths: usize,
    /// Renames waiting, by sequence number (shared with `by_seq`).
    renames: BTreeMap<u64, Renamed>,
    /// The `from` and `to` of every rename waiting, to its sequence number.
    rename_keys: BTreeMap<Key, u64>,
    /// Renames in flight: their `to` and what was below it (for `in_flight`).
    inflight_renames: HashMap<Key, Vec<PathBuf>>,
    /// Paths where a directory renamed in replaced one that was renamed away (a swap
    /// through a temp name): what the remote holds there is stale, below too. They are
    /// handed out with a trailing `/`, which asks the push to delete what the source
    /// directory no longer holds (see `Target::argv`).
    replaced: HashSet<Key>,
}

/// A rename waiting in the pending set.
#[derive(Debug, Clone)]
struct Renamed {
    from: Key,
    to: Key,
    dir: bool,
    below: Vec<PathBuf>,
}

impl Renamed {
    fn job(self) -> Job {
        Job::Rename {
            from: to_path(self.from),
            to: to_path(self.to),
            dir: self.dir,
            below: self.below,
        }
    }
}

/// One change as the filter thread hands it to the pending sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A path; `true` when it is a directory that is gone.
    Path(PathBuf, bool),
    /// A rename inside the tree (see [`Job::Rename`]).
    Rename {
        from: PathBuf,
        to: PathBuf,
        dir: bool,
        below: Vec<PathBuf>,
    },
}

/// Keys of `map` at `p`, above it, or below it.
fn related<V>(map: &BTreeMap<Key, V>, p: &[u8]) -> Vec<Key> {
    if map.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Key> = ancestors(p)
        .chain(std::iter::once(p))
        .filter(|a| map.contains_key(*a))
        .map(<[u8]>::to_vec)
        .collect();
    let mut prefix = p.to_vec();
    prefix.push(b'/');
    out.extend(
        map.range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone()),
    );
    out
}

impl Pending {
    /// Queues a path. `gone_dir`: it was a directory and is gone (deleted or moved away),
    /// so nothing still waiting below it needs pushing.
    pub fn push(&mut self, path: PathBuf, gone_dir: bool) {
        if self.full_pending && !self.full_inflight {
            return; // the full sync that has not started yet covers it
        }
        let path = key(path);
        self.dissolve_related(&path);
        self.push_key(path, gone_dir);
    }

    /// Queues a rename, or its plain form when something waits at, above or below
    /// either path, or a full sync waits or runs.
    pub fn push_rename(&mut self, from: PathBuf, to: PathBuf, dir: bool, below: Vec<PathBuf>) {
        if self.full_pending && !self.full_inflight {
            return;
        }
        let (from, to) = (key(from), key(to));
        let busy = self.full_pending
            || self.full_inflight
            || !related(&self.by_path, &from).is_empty()
            || !related(&self.by_path, &to).is_empty()
            || !related(&self.rename_keys, &from).is_empty()
            || !related(&self.rename_keys, &to).is_empty();
        if busy {
            self.dissolve_related(&from);
            self.dissolve_related(&to);
            self.push_plain(Renamed {
                from,
                to,
                dir,
                below,
            });
            return;
        }
        self.seq += 1;
        self.rename_keys.insert(from.clone(), self.seq);
        self.rename_keys.insert(to.clone(), self.seq);
        self.renames.insert(
            self.seq,
            Renamed {
                from,
                to,
                dir,
                below,
            },
        );
    }

    /// Turns every waiting rename with a path at, above or below `p` into its plain form.
    fn dissolve_related(&mut self, p: &[u8]) {
        for k in related(&self.rename_keys, p) {
            let Some(seq) = self.rename_keys.get(&k).copied() else {
                continue; // dissolved already, through its other path
            };
            if let Some(r) = self.renames.remove(&seq) {
                self.rename_keys.remove(&r.from);
                self.rename_keys.remove(&r.to);
                self.push_plain(r);
            }
        }
    }

    /// A rename's plain form as ordinary entries: `from` (gone), `to` and what is below.
    fn push_plain(&mut self, r: Renamed) {
        self.push_key(r.from, r.dir);
        if r.dir {
            self.replaced.insert(r.to.clone());
        }
        self.push_key(r.to.clone(), false);
        for b in r.below {
            let b = key(b);
            if b != r.to {
                if r.dir {
                    self.replaced.insert(b.clone());
                }
                self.push_key(b, false);
            }
        }
    }

    fn push_key(&mut self, path: Key, gone_dir: bool) {
        if gone_dir {
            let mut prefix = path.clone();
            prefix.push(b'/');
            let below: Vec<Key> = self
                .by_path
                .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(&prefix))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                if let Some(s) = self.by_path.remove(&p) {
                    self.by_seq.remove(&s);
                }
            }
        }
        if self.by_path.contains_key(&path) {
            return;
        }
        self.seq += 1;
        self.by_seq.insert(self.seq, path.clone());
        self.by_path.insert(path, self.seq);
    }

    /// Queues a full sync; it covers every path still waiting.
    pub fn push_full(&mut self) {
        self.full_pending = true;
        self.by_path.clear();
        self.by_seq.clear();
        self.renames.clear();
        self.rename_keys.clear();
        self.replaced.clear();
    }

    pub fn len(&self) -> usize {
        self.by_path.len() + self.renames.len() + usize::from(self.full_pending)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Only a few paths are in flight and waiting: single edits, not a burst.
    pub fn is_trickle(&self) -> bool {
        !self.full_inflight && self.running_paths + self.len() <= TRICKLE
    }

    fn blocked(&self, p: &[u8]) -> bool {
        self.inflight.contains(p)
            || self.inflight_below.contains_key(p)
            || ancestors(p).any(|a| self.inflight.contains(a))
    }

    /// Hands out the next work, if any is free to run: a full sync once nothing is in
    /// flight, else up to `max` waiting paths (oldest first) that conflict with nothing
    /// in flight.
    pub fn take(&mut self, max: usize) -> Option<Job> {
        if self.full_inflight {
            return None;
        }
        if self.full_pending {
            if self.running > 0 {
                return None;
            }
            self.full_pending = false;
            self.full_inflight = true;
            self.running += 1;
            return Some(Job::Full);
        }
        // The oldest rename free to run goes alone, unless a path waiting since before
        // it is free too (that goes first).
        let rename = self
            .renames
            .iter()
            .find(|(_, r)| !self.blocked(&r.from) && !self.blocked(&r.to))
            .map(|(s, _)| *s);
        if let Some(seq) = rename {
            let older_free = self.by_seq.range(..seq).any(|(_, p)| !self.blocked(p));
            if !older_free {
                if let Some(r) = self.renames.remove(&seq) {
                    self.rename_keys.remove(&r.from);
                    self.rename_keys.remove(&r.to);
                    for p in [&r.from, &r.to] {
                        for a in ancestors(p) {
                            *self.inflight_below.entry(a.to_vec()).or_default() += 1;
                        }
                    }
                    self.inflight.insert(r.from.clone());
                    self.inflight.insert(r.to.clone());
                    self.inflight_renames.insert(r.to.clone(), r.below.clone());
                    self.running += 1;
                    self.running_paths += 2;
                    return Some(r.job());
                }
            }
        }
        let mut picked: Vec<Key> = Vec::new();
        for (_, p) in self.by_seq.iter() {
            if picked.len() >= max {
                break;
            }
            if !self.blocked(p) {
                picked.push(p.clone());
            }
        }
        if picked.is_empty() {
            return None;
        }
        for p in &picked {
            if let Some(s) = self.by_path.remove(p) {
                self.by_seq.remove(&s);
            }
            for a in ancestors(p) {
                *self.inflight_below.entry(a.to_vec()).or_default() += 1;
            }
        }
        // Insert after counting ancestors: paths of one batch may nest.
        for p in &picked {
            self.inflight.insert(p.clone());
        }
        self.running += 1;
        self.running_paths += picked.len();
        let paths = picked
            .into_iter()
            .map(|mut p| {
                if self.replaced.remove(&p) {
                    p.push(b'/');
                }
                to_path(p)
            })
            .collect();
        Some(Job::Paths(paths))
    }

    /// Marks work handed out by `take` as finished (whatever its outcome).
    pub fn finish(&mut self, work: &Job) {
        self.running = self.running.saturating_sub(1);
        let renamed;
        let paths = match work {
            Job::Full => {
                self.full_inflight = false;
                return;
            }
            Job::Paths(paths) => paths.as_slice(),
            Job::Rename { from, to, .. } => {
                self.inflight_renames.remove(to.as_os_str().as_bytes());
                renamed = [from.clone(), to.clone()];
                &renamed[..]
            }
        };
        self.running_paths = self.running_paths.saturating_sub(paths.len());
        for p in paths {
            let p = p.as_os_str().as_bytes();
            // A replaced directory went out with a trailing `/`.
            let p = p.strip_suffix(b"/").unwrap_or(p);
            self.inflight.remove(p);
            for a in ancestors(p) {
                if let Some(n) = self.inflight_below.get_mut(a) {
                    *n -= 1;
                    if *n == 0 {
                        self.inflight_below.remove(a);
                    }
                }
            }
        }
    }

    /// What is being pushed right now: paths, and whether a full sync is running.
    /// A rename in flight counts as its plain form.
    pub fn in_flight(&self) -> (Vec<PathBuf>, bool) {
        let mut paths: Vec<PathBuf> = self.inflight.iter().cloned().map(to_path).collect();
        for below in self.inflight_renames.values() {
            paths.extend(below.iter().cloned());
        }
        (paths, self.full_inflight)
    }

    /// Everything still waiting, oldest first, leaving nothing behind; `true` if a full
    /// sync was waiting too.
    pub fn drain(&mut self) -> (Vec<PathBuf>, bool) {
        let full = std::mem::take(&mut self.full_pending);
        self.by_path.clear();
        self.rename_keys.clear();
        let mut paths: Vec<PathBuf> = std::mem::take(&mut self.by_seq)
            .into_values()
            .map(to_path)
            .collect();
        for r in std::mem::take(&mut self.renames).into_values() {
            paths.extend(r.job().plain_paths());
        }
        (paths, full)
    }
}

/// All remotes' pending work, shared by the watcher (producer) and the workers.
pub struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    /// Most paths per rsync call.
    batch: usize,
    /// Most calls in flight to one remote, so a slow remote leaves workers for the others.
    per_target: usize,
}

/// During a burst a remote gets a second concurrent call only once its latest call has
/// run this long. The running call is short and the next one takes everything that
/// piled up meanwhile (few, large calls: what a burst costs is process and connection
/// start-up); a call that runs long (a big file, a slow link) no longer holds back the
/// changes behind it.
pub const SECOND_CALL_AFTER: Duration = Duration::from_millis(300);

/// While no more than this many paths are in flight and waiting for a remote, changes
/// are single edits and each is pushed at once, beside the calls already running.
pub const TRICKLE: usize = 16;

struct State {
    remotes: Vec<Remote>,
    next: usize,
    closed: bool,
}

/// One remote: what waits for it, and when it may start its next call.
#[derive(Default)]
struct Remote {
    pending: Pending,
    /// A remote that just failed is left alone until then.
    resting_until: Option<Instant>,
    /// When its latest call started.
    last_start: Option<Instant>,
    /// A worker has been woken to wait for this remote's second-call time; no need to
    /// wake another for every event until the remote starts a call.
    timer_armed: bool,
    /// What the remote owes, queued again at that time (its backoff retry).
    retry: Option<(Instant, Vec<Job>)>,
}

impl Remote {
    /// Moves a retry that is due into the pending set; else returns when it is due.
    fn retry_due(&mut self, now: Instant) -> Option<Instant> {
        match &self.retry {
            Some((at, _)) if *at > now => Some(*at),
            Some(_) => {
                for job in self.retry.take().map(|(_, jobs)| jobs).unwrap_or_default() {
                    match job {
                        Job::Full => self.pending.push_full(),
                        job => {
                            for p in job.plain_paths() {
                                self.pending.push(p, false);
                            }
                        }
                    }
                }
                None
            }
            None => None,
        }
    }
}

impl Remote {
    /// May this remote start a call now? If not only because of a time (resting, or a
    /// running call that is still young), when it may.
    fn may_start(&self, now: Instant, per_target: usize) -> Result<(), Option<Instant>> {
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
                remotes: (0..targets).map(|_| Remote::default()).collect(),
                next: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            batch: batch.max(1),
            per_target: workers.div_ceil(targets.max(1)).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
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

    /// Queues many paths at once (a walked directory) with one lock.
    pub fn push_many(&self, targets: &[RemoteId], paths: &[PathBuf]) {
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

    /// Queues a batch of changes (`(path, gone_dir)`, in order) for each of the given
    /// remotes, with one lock.
    pub fn push_batch(&self, targets: &[RemoteId], changes: &[Item]) {
        if changes.is_empty() {
            return;
        }
        let mut st = self.lock();
        for &t in targets {
            let pending = &mut st.remotes[t.0].pending;
            for item in changes {
                match item {
                    Item::Path(p, gone_dir) => pending.push(p.clone(), *gone_dir),
                    Item::Rename {
                        from,
                        to,
                        dir,
                        below,
                    } => pending.push_rename(from.clone(), to.clone(), *dir, below.clone()),
                }
            }
        }
        self.wake_for(st, targets);
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
    fn wake_for(&self, mut st: MutexGuard<'_, State>, targets: &[RemoteId]) {
        let now = Instant::now();
        let mut wake = false;
        for &t in targets {
            let remote = &mut st.remotes[t.0];
            match remote.may_start(now, self.per_target) {
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
    pub fn take(&self) -> Option<(RemoteId, Job)> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return None;
            }
            let n = st.remotes.len();
            let now = Instant::now();
            let mut soonest: Option<Instant> = None;
            for i in 0..n {
                let t = (st.next + i) % n;
                let remote = &mut st.remotes[t];
                if let Some(at) = remote.retry_due(now) {
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
                if remote.pending.is_empty() {
                    continue;
                }
                if let Err(later) = remote.may_start(now, self.per_target) {
                    if let Some(at) = later {
                        soonest = Some(soonest.map_or(at, |s| s.min(at)));
                    }
                    continue;
                }
                if let Some(work) = remote.pending.take(self.batch) {
                    remote.last_start = Some(now);
                    remote.timer_armed = false;
                    st.next = (t + 1) % n;
                    // Another worker takes the rest, or keeps the time of a retry.
                    let more = st
                        .remotes
                        .iter()
                        .any(|r| !r.pending.is_empty() || r.retry.is_some());
                    drop(st);
                    if more {
                        self.wake.notify_one();
                    }
                    return Some((RemoteId(t), work));
                }
            }
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

    /// Returns work from `take`; on failure the remote rests a moment before its next call.
    pub fn finish(&self, target: RemoteId, work: &Job, rest: Option<Duration>) {
        let mut st = self.lock();
        let remote = &mut st.remotes[target.0];
        remote.pending.finish(work);
        if let Some(d) = rest {
            remote.resting_until = Some(Instant::now() + d);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Queues `owed` for this remote at `at` (its next retry on the backoff schedule),
    /// replacing a retry that was waiting. It joins the pending set like any change.
    pub fn retry_at(&self, target: RemoteId, at: Instant, owed: Vec<Job>) {
        let mut st = self.lock();
        st.remotes[target.0].retry = (!owed.is_empty()).then_some((at, owed));
        drop(st);
        // A sleeping worker recomputes how long to wait.
        self.wake.notify_one();
    }

    /// Drops a waiting retry (the remote is level, or what it owes was queued now).
    pub fn cancel_retry(&self, target: RemoteId) {
        self.lock().remotes[target.0].retry = None;
    }

    /// Nothing waiting and nothing in flight, for every remote (a retry waiting for its
    /// time does not count).
    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        st.remotes
            .iter()
            .all(|r| r.pending.is_empty() && r.pending.running() == 0)
    }

    /// Nothing waiting and nothing in flight for one remote.
    pub fn is_idle_for(&self, target: RemoteId) -> bool {
        let st = self.lock();
        st.remotes
            .get(target.0)
            .is_none_or(|r| r.pending.is_empty() && r.pending.running() == 0)
    }

    /// Paths waiting per remote (for status and logs).
    pub fn waiting(&self) -> Vec<usize> {
        self.lock()
            .remotes
            .iter()
            .map(|r| r.pending.len())
            .collect()
    }

    /// Stops handing out work and returns, per remote, everything that was still
    /// waiting followed by what is in flight (which may yet fail).
    pub fn close(&self) -> Vec<(Vec<PathBuf>, bool)> {
        let mut st = self.lock();
        st.closed = true;
        let left = st
            .remotes
            .iter_mut()
            .map(|r| {
                let (mut paths, full) = r.pending.drain();
                let (running, full_running) = r.pending.in_flight();
                paths.extend(running);
                (paths, full || full_running)
            })
            .collect();
        drop(st);
        self.wake.notify_all();
        left
    }
}

#[cfg(test)]
mod tests;
