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
//! path, a call in flight there for `to` when it comes, or a full sync waiting or
//! running turns it into its plain form (`from` and
//! `to` and what is below `to`, as ordinary entries, keeping its mark), so the one rule
//! above still orders everything. In flight, owed and paid, a rename counts as its
//! plain paths.
//!
//! A rename is one call of its own (ssh: one remote `mv`, then for a directory a push by
//! quick check; daemon: a push and a delete),
//! worth it for a few renames and a serial queue for a flood of them. So when more than
//! [`RENAME_FLOOD`] renames wait for a remote at a take, every waiting rename turns into
//! its plain form, and those paths are batched like any others (a flood ends in a few
//! batched calls). And a rename does not hold back newer paths that are free: waiting
//! paths never touch a waiting rename (either side turns the rename plain), so after a
//! rename is handed out, the free paths go before the next one (renames and paths take
//! turns; neither waits behind the other's whole backlog).
//!
//! `Pending` is the pure state of one remote (unit and property tested); `Queue` wraps all
//! remotes in a mutex and condvar for the worker threads. `Pending` is also the ledger
//! of what its remote owes after a failure (the fail log is written from it), and a
//! remote that owes work has a retry time here: what it owes moves into the pending set
//! when that time comes (the workers' wait already has a deadline per remote; no thread
//! per remote).
//!
//! Every entry carries a [`Mark`]: the sequence number and the time of the oldest change
//! it stands for, kept when changes merge (a deleted directory inherits the marks of the
//! entries it cancels, a full sync those of everything it covers). Entries keep their
//! mark in flight, and in `owed` once a push of them failed, until a push of them
//! succeeds ([`Queue::paid`]). So the smallest mark of a remote says how far it is
//! level: its lag (the age of the oldest change not there yet) and, for a sync barrier
//! (`--wait-synced`), whether every change up to a checkpoint has reached it. A
//! checkpoint is taken when the filter thread meets a sync cookie ([`Queue::cookies_seen`]),
//! after every earlier event of that root was queued.
//!
//! A storm in one directory (an unpacked archive, a cache writing 200,000 files) would
//! keep one entry per file. Once a directory has [`COLLAPSE_AT`] entries of its own
//! entries waiting (direct children; what lies deeper counts for its own directory),
//! they collapse into one entry for the directory, handed out as its listing
//! ([`Entry::listing`]) like a replaced directory: its listing is pushed (`--dirs`: its files, and its
//! subdirectories as directories), with `--delete` when deletes are on. The entry keeps
//! the oldest mark of what it replaced; while it waits, later changes of direct children
//! merge into it. The top directory (the watch root) never collapses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::ops::Bound;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::faillog::Owed;
use super::job::{Entry, Job, RemoteId};

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

/// The oldest change an entry stands for: its sequence number (per remote, counting
/// every change queued) and when it was first queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub since: Instant,
}

impl Mark {
    /// The older of two marks, field by field.
    pub fn min(self, other: Mark) -> Mark {
        Mark {
            seq: self.seq.min(other.seq),
            since: self.since.min(other.since),
        }
    }
}

fn older(a: Option<Mark>, b: Mark) -> Mark {
    a.map_or(b, |a| a.min(b))
}

/// The pending and in-flight state of one remote.
#[derive(Debug, Default)]
pub struct Pending {
    /// Path to (its place in `by_seq`, its mark).
    by_path: BTreeMap<Key, (u64, Mark)>,
    by_seq: BTreeMap<u64, Key>,
    seq: u64,
    full_pending: bool,
    full_inflight: bool,
    /// The marks of the full sync waiting and of the one running.
    full_mark: Option<Mark>,
    full_running: Option<Mark>,
    inflight: HashMap<Key, Mark>,
    /// What failed and is not pushed yet: the one record of it, which the fail log is
    /// written from (a listing owed is paid only by a listing pushed, and a parent's
    /// listing does not pay it).
    owed: Owed,
    /// The marks of the paths in `owed`, and of the full sync owed.
    owed_marks: HashMap<Key, Mark>,
    owed_full: Option<Mark>,
    /// What was waiting when the queue closed (whether a listing, its mark), and the
    /// full sync waiting then: owed, and a push that was in flight then and succeeds
    /// does not pay it (it may stand for a newer change of its path).
    kept_at_close: HashMap<Key, (bool, Mark)>,
    kept_full: Option<Mark>,
    /// When what is owed is queued again (the backoff retry), if it is set.
    retry: Option<Instant>,
    /// For every proper ancestor of an in-flight path: how many in-flight paths lie below.
    inflight_below: HashMap<Key, usize>,
    running: usize,
    /// Paths carried by the calls in flight.
    running_paths: usize,
    /// Renames waiting, by their place in the order of `by_seq`.
    renames: BTreeMap<u64, Renamed>,
    /// The `from` and `to` of every rename waiting, to its place.
    rename_keys: BTreeMap<Key, u64>,
    /// Paths where a directory renamed in replaced one that was renamed away (a swap
    /// through a temp name): what the remote holds there is stale, below too. They are
    /// handed out as listings, which ask the push to delete what the source
    /// directory no longer holds (see `Target::argv`). Collapsed directories (see the
    /// module doc) are here too: their listing is pushed.
    replaced: HashSet<Key>,
    /// Listings in flight, for [`Pending::in_flight`].
    listing_inflight: HashSet<Key>,
    /// For each directory, how many of its direct children wait in `by_path`.
    children: HashMap<Key, usize>,
    /// Direct children waiting at which a directory collapses; 0: never.
    collapse_at: usize,
    /// Directories collapsed and not yet logged: the directory, how many entries.
    collapsed: Vec<(Key, usize)>,
    /// Renames waiting above which all of them travel plain; 0: [`RENAME_FLOOD`].
    rename_flood: usize,
    /// Renames turned plain by a flood and not yet logged.
    flooded: usize,
    /// The latest call handed out was a rename: free paths go before the next one.
    rename_last: bool,
}

/// More renames than this waiting for one remote at a take is a flood: all of them
/// travel in their plain form, batched with the other paths (see the module doc). Up
/// to this many, each one still travels as a rename (a release directory renamed, a few
/// files moved: no data sent again).
pub const RENAME_FLOOD: usize = 16;

/// How many waiting entries of one directory collapse into one listing push of it, unless
/// `SERSYNC2_COLLAPSE_AT` (read once; for tests and tuning) says otherwise (0: never).
/// High enough that ordinary bursts keep their exact per-file pushes, low enough that a
/// storm's memory and per-event work stay bounded.
pub const COLLAPSE_AT: usize = 10_000;

/// The collapse threshold in effect: `SERSYNC2_COLLAPSE_AT` or [`COLLAPSE_AT`].
pub fn collapse_at() -> usize {
    static AT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        std::env::var("SERSYNC2_COLLAPSE_AT")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(COLLAPSE_AT)
    })
}

/// The directory a key is directly in; None at the top.
fn parent_key(k: &[u8]) -> Option<&[u8]> {
    let i = k.iter().rposition(|&b| b == b'/')?;
    (i > 0).then(|| &k[..i])
}

/// A rename waiting in the pending set.
#[derive(Debug, Clone)]
struct Renamed {
    from: Key,
    to: Key,
    dir: bool,
    below: Vec<PathBuf>,
    mark: Mark,
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
    /// A path or a listing; `true` when it is a directory that is gone.
    Path(Entry, bool),
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

/// The key of an entry's path.
fn entry_key(e: &Entry) -> &[u8] {
    e.path.as_os_str().as_bytes()
}

impl Pending {
    /// Queues a path or a listing. `gone_dir`: it was a directory and is gone (deleted
    /// or moved away), so nothing still waiting below it needs pushing.
    pub fn push(&mut self, entry: impl Into<Entry>, gone_dir: bool) {
        self.push_at(entry.into(), gone_dir, Instant::now());
    }

    /// [`Pending::push`] of a change made at `now`.
    pub fn push_at(&mut self, entry: Entry, gone_dir: bool, now: Instant) {
        if self.full_pending && !self.full_inflight {
            return; // the full sync that has not started yet covers it
        }
        // A listing: a directory that arrived whole, or one owed from before (the fail
        // log keeps it). The top (the empty path) is never a listing.
        let listing = entry.listing && !entry.path.as_os_str().is_empty();
        let path = key(entry.path);
        debug_assert!(path.last() != Some(&b'/'), "a path with a trailing /");
        self.dissolve_related(&path);
        // A collapsed directory waiting takes the changes of its direct children.
        if !gone_dir && !listing {
            if let Some(parent) = parent_key(&path) {
                if self.replaced.contains(parent) && self.by_path.contains_key(parent) {
                    return;
                }
            }
        }
        // A change of a directory whose listing is being pushed: that push may have
        // read it before the change (or found it missing, and pushed it as gone while
        // it came back: a release moved out and another moved in under its name), so
        // the next push is its listing too.
        if listing || self.listing_inflight.contains(&path) {
            self.replaced.insert(path.clone());
        }
        self.push_key(path, gone_dir, now, None);
    }

    /// A collapse threshold other than [`collapse_at`] (0: never), for tests.
    #[cfg(test)]
    pub fn with_collapse_at(n: usize) -> Pending {
        Pending {
            collapse_at: n,
            ..Pending::default()
        }
    }

    /// A rename flood threshold other than [`RENAME_FLOOD`], for tests.
    #[cfg(test)]
    pub fn with_rename_flood(collapse_at: usize, flood: usize) -> Pending {
        Pending {
            collapse_at,
            rename_flood: flood,
            ..Pending::default()
        }
    }

    /// How many renames a flood turned plain since the last call.
    pub fn take_flooded(&mut self) -> usize {
        std::mem::take(&mut self.flooded)
    }

    /// Turns every waiting rename into its plain form (a flood), oldest first.
    fn flood(&mut self) {
        let renames = std::mem::take(&mut self.renames);
        self.rename_keys.clear();
        self.flooded += renames.len();
        for r in renames.into_values() {
            let since = r.mark.since;
            self.push_plain(r, since);
        }
    }

    /// The directories collapsed since the last call, with how many entries each.
    pub fn take_collapsed(&mut self) -> Vec<(PathBuf, usize)> {
        std::mem::take(&mut self.collapsed)
            .into_iter()
            .map(|(k, n)| (to_path(k), n))
            .collect()
    }

    /// Removes a waiting entry (keeps the per-directory counts).
    fn remove_entry(&mut self, p: &[u8]) -> Option<(u64, Mark)> {
        let (s, m) = self.by_path.remove(p)?;
        self.by_seq.remove(&s);
        if let Some(parent) = parent_key(p) {
            if let Some(n) = self.children.get_mut(parent) {
                *n -= 1;
                if *n == 0 {
                    self.children.remove(parent);
                }
            }
        }
        Some((s, m))
    }

    /// `dir` has too many direct children waiting: they become one listing push of it.
    fn collapse(&mut self, dir: Key, now: Instant) {
        let mut prefix = dir.clone();
        prefix.push(b'/');
        let kids: Vec<Key> = self
            .by_path
            .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p[prefix.len()..].contains(&b'/'))
            // A child waiting as a listing itself stays: it owes its own entries (a
            // directory deleted and made again, the changes of its children merged into
            // it), and the parent's listing pushes it only as a directory.
            .filter(|(p, _)| !self.replaced.contains(*p))
            .map(|(p, _)| p.clone())
            .collect();
        let mut mark: Option<Mark> = None;
        for k in &kids {
            if let Some((_, m)) = self.remove_entry(k) {
                mark = Some(older(mark, m));
            }
        }
        self.collapsed.push((dir.clone(), kids.len()));
        self.dissolve_related(&dir);
        self.replaced.insert(dir.clone());
        self.push_key(dir, false, now, mark);
    }

    /// Queues a rename, or its plain form when something waits at, above or below either
    /// path, a call for `to` (or above or below it) is in flight, or a full sync waits or
    /// runs.
    #[cfg(test)]
    pub fn push_rename(&mut self, from: PathBuf, to: PathBuf, dir: bool, below: Vec<PathBuf>) {
        self.push_rename_at(from, to, dir, below, Instant::now());
    }

    /// [`Pending::push_rename`] of a rename made at `now`.
    pub fn push_rename_at(
        &mut self,
        from: PathBuf,
        to: PathBuf,
        dir: bool,
        below: Vec<PathBuf>,
        now: Instant,
    ) {
        if self.full_pending && !self.full_inflight {
            return; // the full sync that has not started yet covers it
        }
        let (from, to) = (key(from), key(to));
        // A call in flight at, above or below `to`: the remote may end up holding what
        // that call found there (a swap through a temp name seen in two batches), which
        // a rename's push (no `--ignore-times`, no listing) would not put right. (One in
        // flight at `from` only delays the rename: it then moves what that call left.)
        let busy = self.full_pending
            || self.full_inflight
            || self.blocked(&to)
            || !related(&self.by_path, &from).is_empty()
            || !related(&self.by_path, &to).is_empty()
            || !related(&self.rename_keys, &from).is_empty()
            || !related(&self.rename_keys, &to).is_empty();
        if busy {
            self.dissolve_related(&from);
            self.dissolve_related(&to);
            self.push_plain(
                Renamed {
                    from,
                    to,
                    dir,
                    below,
                    mark: Mark {
                        seq: self.seq + 1,
                        since: now,
                    },
                },
                now,
            );
            return;
        }
        self.seq += 1;
        let mark = Mark {
            seq: self.seq,
            since: now,
        };
        self.rename_keys.insert(from.clone(), self.seq);
        self.rename_keys.insert(to.clone(), self.seq);
        self.renames.insert(
            self.seq,
            Renamed {
                from,
                to,
                dir,
                below,
                mark,
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
                let since = r.mark.since;
                self.push_plain(r, since);
            }
        }
    }

    /// A rename's plain form as ordinary entries: `from` (gone), `to` and what is below,
    /// each keeping the rename's mark.
    fn push_plain(&mut self, r: Renamed, now: Instant) {
        let carry = Some(r.mark);
        // `from` is gone, but listings owed below it by an earlier rename into it stay:
        // if this one is the second half of an exchange that came in two reads (not
        // paired into one by the watcher), `from` holds what that rename put there.
        let kept = if r.dir {
            self.take_listings_below(&r.from)
        } else {
            Vec::new()
        };
        self.push_key(r.from, r.dir, now, carry);
        for (k, m) in kept {
            self.push_key(k, false, now, Some(m));
        }
        if r.dir {
            self.replaced.insert(r.to.clone());
        }
        self.push_key(r.to.clone(), false, now, carry);
        for b in r.below {
            let b = key(b);
            if b != r.to {
                if r.dir {
                    self.replaced.insert(b.clone());
                }
                self.push_key(b, false, now, carry);
            }
        }
    }

    /// Takes the waiting listings (see `replaced`) below `dir` out, with their marks;
    /// they stay in `replaced`.
    fn take_listings_below(&mut self, dir: &[u8]) -> Vec<(Key, Mark)> {
        let mut prefix = dir.to_vec();
        prefix.push(b'/');
        let below: Vec<Key> = self
            .by_path
            .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| self.replaced.contains(*p))
            .map(|(p, _)| p.clone())
            .collect();
        below
            .into_iter()
            .filter_map(|k| self.remove_entry(&k).map(|(_, m)| (k, m)))
            .collect()
    }

    /// Queues one key; its mark is at least as old as `carry`.
    fn push_key(&mut self, path: Key, gone_dir: bool, now: Instant, carry: Option<Mark>) {
        // What a deleted directory cancels below it is not on the remote either: the
        // directory's entry keeps the oldest of their marks.
        let mut inherited: Option<Mark> = carry;
        if gone_dir {
            // Goes out as its listing: still gone then, the push deletes it; made again
            // meanwhile (`rm -rf app && cp -a build app`), the push lists the new
            // directory and deletes what the remote still holds of the old one.
            self.replaced.insert(path.clone());
            let mut prefix = path.clone();
            prefix.push(b'/');
            let below: Vec<Key> = self
                .by_path
                .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(&prefix))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                if let Some((_, m)) = self.remove_entry(&p) {
                    inherited = Some(older(inherited, m));
                }
            }
        }
        if let Some((_, m)) = self.by_path.get_mut(&path) {
            if let Some(i) = inherited {
                *m = m.min(i);
            }
            return;
        }
        self.seq += 1;
        let mark = older(
            inherited,
            Mark {
                seq: self.seq,
                since: now,
            },
        );
        self.by_seq.insert(self.seq, path.clone());
        let parent = parent_key(&path).map(<[u8]>::to_vec);
        self.by_path.insert(path, (self.seq, mark));
        if let Some(parent) = parent {
            let n = self.children.entry(parent.clone()).or_default();
            *n += 1;
            // A parent collapsed and still waiting has nothing left to collapse: its
            // plain children merge into it (see `push_at`), and the listings kept below
            // it would otherwise be scanned again on every push.
            let waiting_listing =
                self.replaced.contains(&parent) && self.by_path.contains_key(&parent);
            if self.collapse_at > 0 && *n >= self.collapse_at && !waiting_listing {
                self.collapse(parent, now);
            }
        }
    }

    /// Queues a full sync; it covers every path still waiting.
    pub fn push_full(&mut self) {
        self.push_full_at(Instant::now());
    }

    /// [`Pending::push_full`] asked at `now`.
    pub fn push_full_at(&mut self, now: Instant) {
        self.seq += 1;
        let mut mark = older(
            self.full_mark,
            Mark {
                seq: self.seq,
                since: now,
            },
        );
        for (_, m) in self.by_path.values() {
            mark = mark.min(*m);
        }
        for r in self.renames.values() {
            mark = mark.min(r.mark);
        }
        self.full_mark = Some(mark);
        self.full_pending = true;
        self.by_path.clear();
        self.by_seq.clear();
        self.children.clear();
        self.renames.clear();
        self.rename_keys.clear();
        self.replaced.clear();
    }

    /// The checkpoint of this remote now: every change queued so far has a sequence
    /// number at most this.
    pub fn checkpoint(&self) -> u64 {
        self.seq
    }

    /// Every mark not yet on the remote: waiting, in flight, owed.
    fn marks(&self) -> impl Iterator<Item = Mark> + '_ {
        self.by_path
            .values()
            .map(|(_, m)| *m)
            .chain(self.renames.values().map(|r| r.mark))
            .chain(self.inflight.values().copied())
            .chain(self.owed_marks.values().copied())
            .chain(self.full_mark)
            .chain(self.full_running)
            .chain(self.owed_full)
    }

    /// The oldest change not yet on the remote (waiting, in flight or owed), if any.
    pub fn oldest(&self) -> Option<Mark> {
        self.marks().reduce(Mark::min)
    }

    /// Has every change up to `checkpoint` reached the remote?
    pub fn passed(&self, checkpoint: u64) -> bool {
        self.marks().all(|m| m.seq > checkpoint)
    }

    /// Entries waiting or in flight (paths, a full sync counting as one).
    pub fn outstanding(&self) -> usize {
        self.len() + self.inflight.len() + usize::from(self.full_inflight)
    }

    /// A push of `job` failed for good (rsync `status`): what it carried is owed until
    /// a push of it succeeds. Entries in flight keep their marks; others (a fail log
    /// read at start) get `fallback`.
    pub fn owe(&mut self, job: &Job, fallback: Mark, status: i32) {
        match job {
            Job::Full => {
                let mut m = older(self.owed_full, self.full_running.unwrap_or(fallback));
                for (_, o) in self.owed_marks.drain() {
                    m = m.min(o);
                }
                self.owed_full = Some(m);
            }
            Job::Paths(_) | Job::Rename { .. } => {
                for p in job.plain_paths() {
                    let k = entry_key(&p);
                    let m = self.inflight.get(k).copied().unwrap_or(fallback);
                    match &mut self.owed_full {
                        // A full sync is owed: it covers the path.
                        Some(f) => *f = f.min(m),
                        None => {
                            let e = self.owed_marks.entry(k.to_vec()).or_insert(m);
                            *e = e.min(m);
                        }
                    }
                }
            }
        }
        self.owed.record(job, status);
    }

    /// A push of `job` succeeded: what it carried is no longer owed (see
    /// [`Owed::clear`]). Returns whether what is owed changed.
    pub fn paid(&mut self, job: &Job) -> bool {
        if self.owed.is_empty() {
            return false;
        }
        let before = (self.owed.paths.len(), self.owed.full);
        let paid = self.owed.clear(job);
        for e in &paid {
            self.owed_marks.remove(entry_key(e));
        }
        if let Job::Full = job {
            self.owed_full = None;
            self.owed_marks.clear();
        }
        // Waiting at the close: still owed, whatever was in flight then.
        if let (Job::Full, Some(m)) = (job, self.kept_full) {
            self.owe(&Job::Full, m, 0);
        }
        let kept: Vec<(Entry, Mark)> = if let Job::Full = job {
            self.kept_at_close
                .iter()
                .map(|(k, (listing, m))| {
                    let e = Entry {
                        path: to_path(k.clone()),
                        listing: *listing,
                    };
                    (e, *m)
                })
                .collect()
        } else {
            paid.into_iter()
                .filter_map(|e| {
                    let (_, m) = self.kept_at_close.get(entry_key(&e))?;
                    Some((e, *m))
                })
                .collect()
        };
        for (e, m) in kept {
            self.owe(&Job::Paths(vec![e]), m, 0);
        }
        before != (self.owed.paths.len(), self.owed.full)
    }

    /// What is owed is queued again at `at` (replacing a retry set before); nothing
    /// when nothing is owed. `None`: no retry.
    pub fn retry_at(&mut self, at: Option<Instant>) {
        self.retry = at.filter(|_| self.owes());
    }

    /// A retry is set.
    pub fn retrying(&self) -> bool {
        self.retry.is_some()
    }

    /// Moves what is owed into the pending set when its retry is due; else returns
    /// when it is due.
    pub fn retry_due(&mut self, now: Instant) -> Option<Instant> {
        match self.retry {
            Some(at) if at > now => Some(at),
            Some(_) => {
                self.retry = None;
                for job in self.owed.jobs() {
                    match job {
                        Job::Full => self.push_full_at(now),
                        job => {
                            for p in job.plain_paths() {
                                self.push_at(p, false, now);
                            }
                        }
                    }
                }
                None
            }
            None => None,
        }
    }

    /// Is anything owed?
    pub fn owes(&self) -> bool {
        !self.owed.is_empty()
    }

    /// What is owed (the fail log's entries for this remote).
    pub fn owed(&self) -> &Owed {
        &self.owed
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

    /// When the change that has waited longest (in queue order) was queued: what a free
    /// worker compares across remotes. `None` when nothing waits.
    pub fn oldest_waiting(&self) -> Option<Instant> {
        let path = self
            .by_seq
            .values()
            .next()
            .and_then(|k| self.by_path.get(k))
            .map(|(_, m)| m.since);
        let rename = self.renames.values().next().map(|r| r.mark.since);
        let full = self
            .full_mark
            .filter(|_| self.full_pending)
            .map(|m| m.since);
        [path, rename, full].into_iter().flatten().min()
    }

    /// Only a few paths are in flight and waiting: single edits, not a burst.
    pub fn is_trickle(&self) -> bool {
        !self.full_inflight && self.running_paths + self.len() <= TRICKLE
    }

    fn blocked(&self, p: &[u8]) -> bool {
        self.inflight.contains_key(p)
            || self.inflight_below.contains_key(p)
            || ancestors(p).any(|a| self.inflight.contains_key(a))
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
            self.full_running = self.full_mark.take();
            self.running += 1;
            return Some(Job::Full);
        }
        let flood_at = match self.rename_flood {
            0 => RENAME_FLOOD,
            n => n,
        };
        if self.renames.len() > flood_at {
            self.flood();
        }
        // The oldest rename free to run goes alone, unless a path waiting since before
        // it is free too, or the latest call was a rename and any path is free (those
        // go first, batched). Waiting paths never touch a waiting rename (see
        // `push_at` and `push_rename_at`), so the order per path holds either way.
        let rename = self
            .renames
            .iter()
            .find(|(_, r)| !self.blocked(&r.from) && !self.blocked(&r.to))
            .map(|(s, _)| *s);
        if let Some(seq) = rename {
            let paths_first = if self.rename_last {
                self.by_seq.values().any(|p| !self.blocked(p))
            } else {
                self.by_seq.range(..seq).any(|(_, p)| !self.blocked(p))
            };
            if !paths_first {
                if let Some(r) = self.renames.remove(&seq) {
                    self.rename_keys.remove(&r.from);
                    self.rename_keys.remove(&r.to);
                    let mark = r.mark;
                    let job = r.job();
                    // In flight as its plain paths: `from`, `to` and what is below it.
                    let plain: Vec<Key> =
                        job.plain_paths().into_iter().map(|e| key(e.path)).collect();
                    for p in &plain {
                        for a in ancestors(p) {
                            *self.inflight_below.entry(a.to_vec()).or_default() += 1;
                        }
                    }
                    for p in plain {
                        self.inflight.insert(p, mark);
                    }
                    self.running += 1;
                    self.running_paths += job.count();
                    self.rename_last = true;
                    return Some(job);
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
        self.rename_last = false;
        let mut marks = Vec::with_capacity(picked.len());
        for p in &picked {
            if let Some((_, m)) = self.remove_entry(p) {
                marks.push(m);
            }
            for a in ancestors(p) {
                *self.inflight_below.entry(a.to_vec()).or_default() += 1;
            }
        }
        // Insert after counting ancestors: paths of one batch may nest.
        for (p, m) in picked.iter().zip(marks) {
            self.inflight.insert(p.clone(), m);
        }
        self.running += 1;
        self.running_paths += picked.len();
        let paths = picked
            .into_iter()
            .map(|p| {
                let listing = self.replaced.remove(&p);
                if listing {
                    self.listing_inflight.insert(p.clone());
                }
                Entry {
                    path: to_path(p),
                    listing,
                }
            })
            .collect();
        Some(Job::Paths(paths))
    }

    /// Marks work handed out by `take` as finished (whatever its outcome).
    pub fn finish(&mut self, work: &Job) {
        self.running = self.running.saturating_sub(1);
        match work {
            Job::Full => {
                self.full_inflight = false;
                self.full_running = None;
            }
            Job::Paths(_) | Job::Rename { .. } => {
                self.running_paths = self.running_paths.saturating_sub(work.count());
                for p in &work.plain_paths() {
                    let p = entry_key(p);
                    self.inflight.remove(p);
                    self.listing_inflight.remove(p);
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
        }
    }

    /// [`Pending::finish`], then the listings `again` (directories `work` listed) wait
    /// once more with the marks they had in flight, so a barrier is not passed
    /// on them.
    ///
    /// `redirect`: paths of `work` left out below what is a file or link now, with that
    /// file or link, which waits once more with their marks.
    pub fn finish_again(
        &mut self,
        work: &Job,
        again: &[PathBuf],
        redirect: &[(PathBuf, PathBuf)],
        now: Instant,
    ) {
        let marks: Vec<(Key, Mark)> = again
            .iter()
            .filter_map(|d| {
                let k = d.as_os_str().as_bytes().to_vec();
                self.inflight.get(&k).map(|m| (k, *m))
            })
            .collect();
        let moved: Vec<(Key, Mark)> = redirect
            .iter()
            .filter_map(|(p, a)| {
                let m = self.inflight.get(p.as_os_str().as_bytes())?;
                Some((a.as_os_str().as_bytes().to_vec(), *m))
            })
            .collect();
        self.finish(work);
        for (k, m) in moved {
            if self.full_pending {
                self.full_mark = Some(older(self.full_mark, m));
                continue;
            }
            self.push_key(k, false, now, Some(m));
        }
        for (k, m) in marks {
            if self.full_pending {
                // The full sync waiting covers it, from the older mark.
                self.full_mark = Some(older(self.full_mark, m));
                continue;
            }
            self.replaced.insert(k.clone());
            self.push_key(k, false, now, Some(m));
        }
    }

    /// What is being pushed right now: paths, and whether a full sync is running.
    /// A rename in flight counts as its plain form.
    pub fn in_flight(&self) -> (Vec<Entry>, bool) {
        (
            self.inflight
                .keys()
                .map(|k| Entry {
                    path: to_path(k.clone()),
                    listing: self.listing_inflight.contains(k),
                })
                .collect(),
            self.full_inflight,
        )
    }

    /// Everything still waiting, oldest first, leaving nothing behind; `true` if a full
    /// sync was waiting too.
    #[cfg(test)]
    pub fn drain(&mut self) -> (Vec<Entry>, bool) {
        let (waiting, full) = self.drain_marked();
        (
            waiting.into_iter().map(|(e, _)| e).collect(),
            full.is_some(),
        )
    }

    /// [`Pending::drain`], with each entry's mark and the full sync's.
    fn drain_marked(&mut self) -> (Vec<(Entry, Mark)>, Option<Mark>) {
        let full = std::mem::take(&mut self.full_pending);
        let full_mark = self.full_mark.take().filter(|_| full);
        let by_path = std::mem::take(&mut self.by_path);
        self.children.clear();
        self.rename_keys.clear();
        let replaced = std::mem::take(&mut self.replaced);
        // A listing waiting stays a listing: what it stands for is its listing.
        let mut paths: Vec<(Entry, Mark)> = std::mem::take(&mut self.by_seq)
            .into_values()
            .filter_map(|k| {
                let (_, m) = by_path.get(&k)?;
                let e = Entry {
                    listing: replaced.contains(&k),
                    path: to_path(k),
                };
                Some((e, *m))
            })
            .collect();
        for r in std::mem::take(&mut self.renames).into_values() {
            let m = r.mark;
            paths.extend(r.job().plain_paths().into_iter().map(|e| (e, m)));
        }
        (
            paths,
            full.then(|| {
                full_mark.unwrap_or(Mark {
                    seq: 0,
                    since: Instant::now(),
                })
            }),
        )
    }

    /// The queue closes (a stop or a reload): everything waiting and in flight is owed
    /// (status 0), keeping its marks; what was waiting is not paid by a push that was
    /// in flight and succeeds. Returns what was waiting and in flight.
    pub fn close(&mut self) -> Left {
        let (waiting, full_waiting) = self.drain_marked();
        let (running, full_running) = self.in_flight();
        let full = full_waiting.is_some() || full_running;
        if let Some(m) = full_waiting.or(self.full_running) {
            self.owe(&Job::Full, m, 0);
        }
        self.kept_full = full_waiting;
        for (e, m) in &waiting {
            self.kept_at_close
                .insert(entry_key(e).to_vec(), (e.listing, *m));
            self.owe(&Job::Paths(vec![e.clone()]), *m, 0);
        }
        if !running.is_empty() {
            // In flight: they keep the marks they have there.
            let now = Mark {
                seq: self.seq,
                since: Instant::now(),
            };
            self.owe(&Job::Paths(running.clone()), now, 0);
        }
        Left {
            waiting: waiting.into_iter().map(|(e, _)| e).collect(),
            running,
            full,
        }
    }
}

thread_local! {
    /// How many times this thread holds the queue's lock now.
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Does this thread hold a queue's lock? The lock order (ARCHITECTURE.md) puts the fail
/// log's lock before the queue's: `Mirror` asserts this is false when it takes it.
pub fn lock_held() -> bool {
    HELD.with(|h| h.get() > 0)
}

/// Counts one hold of the queue's lock by this thread while it lives.
struct Counted;

impl Counted {
    fn new() -> Counted {
        HELD.with(|h| h.set(h.get() + 1));
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
    }
}

/// The queue's lock, counted (see [`lock_held`]).
struct Held<'a>(MutexGuard<'a, State>, Counted);

impl std::ops::Deref for Held<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
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

/// While no more than this many paths are in flight and waiting for a remote, changes
/// are single edits and each is pushed at once, beside the calls already running.
pub const TRICKLE: usize = 16;

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

/// What one remote still had when the queue closed (see [`Queue::close`]).
#[derive(Debug, Default)]
pub struct Left {
    /// Waiting, oldest first.
    pub waiting: Vec<Entry>,
    /// In flight: these calls may yet succeed or fail.
    pub running: Vec<Entry>,
    /// A full sync was waiting or running.
    pub full: bool,
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
    pending: Pending,
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
                        pending: Pending {
                            collapse_at: collapse_at(),
                            ..Pending::default()
                        },
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
        }
    }

    /// The queue's lock, counted as held by this thread (see [`lock_held`]).
    fn lock(&self) -> Held<'_> {
        let counted = Counted::new();
        Held(self.raw_lock(), counted)
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

    /// Queues a batch of changes (in order) for each of the given remotes, with one lock.
    pub fn push_batch(&self, targets: &[RemoteId], changes: &[Item]) {
        if changes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut st = self.lock();
        for &t in targets {
            let pending = &mut st.remotes[t.0].pending;
            for item in changes {
                match item {
                    Item::Path(e, gone_dir) => pending.push_at(e.clone(), *gone_dir, now),
                    Item::Rename {
                        from,
                        to,
                        dir,
                        below,
                    } => pending.push_rename_at(from.clone(), to.clone(), *dir, below.clone(), now),
                }
            }
            // A collapse that merged nothing (only deleted directories wait there, kept
            // as their own listings) is not news.
            for (dir, n) in pending.take_collapsed().into_iter().filter(|(_, n)| *n > 0) {
                log::warn!(
                    "{n} changes waiting in {} for remote #{} collapsed into one push of the \
                     directory's entries (at {} waiting in one directory)",
                    dir.display(),
                    t.0 + 1,
                    pending.collapse_at
                );
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
            r.pending.collapse_at = n;
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
            let work = remote.pending.take(self.batch);
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
        self.finish_again(target, work, rest, &[], &[]);
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
        redirect: &[(PathBuf, PathBuf)],
    ) {
        let mut st = self.lock();
        let remote = &mut st.remotes[target.0];
        remote
            .pending
            .finish_again(work, again, redirect, Instant::now());
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

    /// What a fail log read at start owed `target`: owed again, counting from `since`.
    pub fn restore(&self, target: RemoteId, owed: &Owed, since: Instant) {
        if let Some(r) = self.lock().remotes.get_mut(target.0) {
            for job in owed.jobs() {
                r.pending.owe(&job, Mark { seq: 0, since }, owed.status);
            }
        }
    }

    /// A push to `target` succeeded: what it carried is no longer owed. Returns whether
    /// what is owed changed.
    pub fn paid(&self, target: RemoteId, job: &Job) -> bool {
        self.lock()
            .remotes
            .get_mut(target.0)
            .is_some_and(|r| r.pending.paid(job))
    }

    /// Does `target` owe anything?
    pub fn owes(&self, target: RemoteId) -> bool {
        self.lock()
            .remotes
            .get(target.0)
            .is_some_and(|r| r.pending.owes())
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
            .map(|r| r.pending.owed().clone())
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
            let counted = Counted::new();
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

    /// Queues what this remote owes at `at` (its next retry on the backoff schedule),
    /// replacing a retry that was waiting. It joins the pending set like any change.
    pub fn retry_at(&self, target: RemoteId, at: Instant) {
        let mut st = self.lock();
        st.remotes[target.0].pending.retry_at(Some(at));
        drop(st);
        // A sleeping worker recomputes how long to wait.
        self.wake.notify_one();
    }

    /// Drops a waiting retry (the remote is level, or what it owes was queued now).
    pub fn cancel_retry(&self, target: RemoteId) {
        self.lock().remotes[target.0].pending.retry_at(None);
    }

    /// Nothing waiting and nothing in flight, for every remote (a retry waiting for its
    /// time does not count).
    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        st.remotes
            .iter()
            .all(|r| r.pending.is_empty() && r.pending.running() == 0)
    }

    /// Nothing waits for `target`, no retry of it is set, and the call being booked
    /// is the only one in flight to it.
    pub fn is_last_call_of(&self, target: RemoteId) -> bool {
        let st = self.lock();
        st.remotes.get(target.0).is_some_and(|r| {
            r.pending.is_empty() && r.pending.running() <= 1 && !r.pending.retrying()
        })
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

    /// Stops handing out work: everything still waiting and in flight is owed (see
    /// [`Pending::close`]). Returns, per remote, what was waiting and what is in flight
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

#[cfg(test)]
mod tests;
