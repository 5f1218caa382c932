//! The ledger of one remote: what waits for it, what is in flight, what it owes after a
//! failure and when that is retried, and how far it is level (its marks). A plain value,
//! driven by the `Queue` (one per remote, under its lock) and by tests without threads or
//! files; the fail log file is written from it ([`Ledger::owed`]) and read back into it
//! (`Queue::restore`, which books what the file held with [`Ledger::owe`]).
//!
//! Its operations, by the names ARCHITECTURE.md gives them: queued ([`Ledger::push`],
//! [`Ledger::push_rename`], [`Ledger::push_full`]), taken ([`Ledger::take`]), pushed
//! ([`Ledger::pushed`], which pays with [`Ledger::paid_leaving`], then [`Ledger::finish`]
//! or [`Ledger::finish_again`]), failed ([`Ledger::failed`], which books with
//! [`Ledger::owe`] and sets the retry), closed ([`Ledger::close`]), replayed ([`Ledger::retry_at`],
//! [`Ledger::retry_due`]: what is owed moves back into the pending set at its time) and
//! restored ([`Ledger::owe`] of what a fail log held). What waits is merged, ordered,
//! batched and never run twice at once; what is owed and the marks are in `owed.rs`.
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
//! A remote that owes work has its retry schedule here ([`Ledger::failed`] sets the next
//! retry on the backoff, [`Ledger::pushed`] ends it when the remote is back or level):
//! what it owes moves into the pending set when that time comes (the workers' wait
//! already has a deadline per remote; no thread per remote).
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
//!
//! A full sync does not hold back live changes: while one runs to a remote, the paths
//! waiting for it are handed out beside it like any others. rsync's full sync lists the
//! tree as it goes and, with `--delete`, deletes in each directory what the remote holds
//! beyond the list it made of that directory; it sends a file with the metadata its
//! list holds. So a path pushed beside it may be deleted again (made after its directory
//! was listed) or taken back to older metadata or content. Every path handed out while
//! a full sync runs (`beside_full`) waits once more when that full sync ends, with the
//! mark it had, and keeps that mark meanwhile: a barrier does not pass on it until that
//! push lands. The full sync itself still starts only once nothing is in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::ops::Bound;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Instant;

use super::faillog::Owed;
use super::job::{Entry, Job};
use super::recovery::Recovery;

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
pub struct Ledger {
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
    kept_at_close: HashMap<Key, (Entry, Mark)>,
    kept_full: Option<Mark>,
    /// When what is owed is queued again, on the backoff schedule: the one record of
    /// it (the step of the backoff, failing since, the next retry, whether the remote
    /// answered; see [`Recovery`]).
    recovery: Recovery,
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
    /// Of the listings waiting, those that go all the way down (a directory a full sync
    /// could not read, owed with everything below it: [`Entry::tree`]).
    trees: HashSet<Key>,
    /// Listings in flight, for [`Ledger::in_flight`], and of them the trees.
    listing_inflight: HashSet<Key>,
    tree_inflight: HashSet<Key>,
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
    /// Paths handed out while a full sync runs (whether a listing, their mark): that
    /// full sync may undo their push (its delete pass removes what its file list,
    /// built before, lacks; it sends what it listed, older than the push), so each
    /// waits once more when it ends, keeping its mark until then (see the module doc).
    beside_full: HashMap<Key, (bool, Mark)>,
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

/// While no more than this many paths are in flight and waiting for a remote, changes
/// are single edits and each is pushed at once, beside the calls already running.
pub const TRICKLE: usize = 16;

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

impl Ledger {
    /// Queues a path or a listing. `gone_dir`: it was a directory and is gone (deleted
    /// or moved away), so nothing still waiting below it needs pushing.
    pub fn push(&mut self, entry: impl Into<Entry>, gone_dir: bool) {
        self.push_at(entry.into(), gone_dir, Instant::now());
    }

    /// [`Ledger::push`] of a change made at `now`.
    pub fn push_at(&mut self, entry: Entry, gone_dir: bool, now: Instant) {
        if self.full_pending && !self.full_inflight {
            return; // the full sync that has not started yet covers it
        }
        // A listing: a directory that arrived whole, or one owed from before (the fail
        // log keeps it). The top (the empty path) is never a listing.
        let listing = entry.listing && !entry.path.as_os_str().is_empty();
        let tree = listing && entry.tree;
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
        if tree {
            self.trees.insert(path.clone());
        }
        self.push_key(path, gone_dir, now, None);
    }

    /// An empty ledger that collapses at [`collapse_at`].
    pub fn new() -> Ledger {
        Ledger {
            collapse_at: collapse_at(),
            ..Ledger::default()
        }
    }

    /// Direct children waiting at which a directory collapses (0: never).
    pub fn collapse_at(&self) -> usize {
        self.collapse_at
    }

    /// Sets the collapse threshold (0: never), for the simulator.
    #[cfg(test)]
    pub fn set_collapse_at(&mut self, n: usize) {
        self.collapse_at = n;
    }

    /// A collapse threshold other than [`collapse_at`] (0: never), for tests.
    #[cfg(test)]
    pub fn with_collapse_at(n: usize) -> Ledger {
        Ledger {
            collapse_at: n,
            ..Ledger::default()
        }
    }

    /// A rename flood threshold other than [`RENAME_FLOOD`], for tests.
    #[cfg(test)]
    pub fn with_rename_flood(collapse_at: usize, flood: usize) -> Ledger {
        Ledger {
            collapse_at,
            rename_flood: flood,
            ..Ledger::default()
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

    /// [`Ledger::push_rename`] of a rename made at `now`.
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

    /// [`Ledger::push_full`] asked at `now`.
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
        self.trees.clear();
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
    /// A full sync running does not count: a single edit goes beside it at once.
    pub fn is_trickle(&self) -> bool {
        self.running_paths + self.len() <= TRICKLE
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
        let job = self.take_inner(max)?;
        if self.full_inflight && job != Job::Full {
            // It may be undone by the full sync running: it goes again once that ends.
            for e in job.plain_paths() {
                let k = entry_key(&e).to_vec();
                let Some(m) = self.inflight.get(&k).copied() else {
                    continue;
                };
                let listing = e.listing || self.listing_inflight.contains(&k);
                let b = self.beside_full.entry(k).or_insert((listing, m));
                b.0 |= listing;
                b.1 = b.1.min(m);
            }
        }
        Some(job)
    }

    fn take_inner(&mut self, max: usize) -> Option<Job> {
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
                let tree = self.trees.remove(&p) && listing;
                if listing {
                    self.listing_inflight.insert(p.clone());
                }
                if tree {
                    self.tree_inflight.insert(p.clone());
                }
                Entry {
                    path: to_path(p),
                    listing,
                    tree,
                }
            })
            .collect();
        Some(Job::Paths(paths))
    }

    /// Marks work handed out by `take` as finished (whatever its outcome).
    #[cfg(test)]
    pub fn finish(&mut self, work: &Job) {
        self.finish_at(work, Instant::now());
    }

    /// [`Ledger::finish`] at `now`: a full sync ending queues again what was handed
    /// out beside it (see the module doc).
    fn finish_at(&mut self, work: &Job, now: Instant) {
        self.running = self.running.saturating_sub(1);
        match work {
            Job::Full => {
                self.full_inflight = false;
                self.full_running = None;
                let beside = std::mem::take(&mut self.beside_full);
                let mut beside: Vec<(Key, (bool, Mark))> = beside.into_iter().collect();
                beside.sort_by_key(|(_, (_, m))| m.seq);
                for (k, (listing, m)) in beside {
                    if self.full_pending {
                        // The full sync waiting covers it, from the older mark.
                        self.full_mark = Some(older(self.full_mark, m));
                        continue;
                    }
                    if listing {
                        self.replaced.insert(k.clone());
                    }
                    self.push_key(k, false, now, Some(m));
                }
            }
            Job::Paths(_) | Job::Rename { .. } => {
                self.running_paths = self.running_paths.saturating_sub(work.count());
                for p in &work.plain_paths() {
                    let p = entry_key(p);
                    self.inflight.remove(p);
                    self.listing_inflight.remove(p);
                    self.tree_inflight.remove(p);
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

    /// [`Ledger::finish`], then the listings `again` (directories `work` listed) wait
    /// once more with the marks they had in flight, so a barrier is not passed
    /// on them.
    pub fn finish_again(&mut self, work: &Job, again: &[PathBuf], now: Instant) {
        let marks: Vec<(Key, Mark)> = again
            .iter()
            .filter_map(|d| {
                let k = d.as_os_str().as_bytes().to_vec();
                self.inflight.get(&k).map(|m| (k, *m))
            })
            .collect();
        self.finish_at(work, now);
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
                    tree: self.tree_inflight.contains(k),
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

    /// [`Ledger::drain`], with each entry's mark and the full sync's.
    fn drain_marked(&mut self) -> (Vec<(Entry, Mark)>, Option<Mark>) {
        let full = std::mem::take(&mut self.full_pending);
        let full_mark = self.full_mark.take().filter(|_| full);
        let by_path = std::mem::take(&mut self.by_path);
        self.children.clear();
        self.rename_keys.clear();
        let replaced = std::mem::take(&mut self.replaced);
        let trees = std::mem::take(&mut self.trees);
        // A listing waiting stays a listing: what it stands for is its listing.
        let mut paths: Vec<(Entry, Mark)> = std::mem::take(&mut self.by_seq)
            .into_values()
            .filter_map(|k| {
                let (_, m) = by_path.get(&k)?;
                let listing = replaced.contains(&k);
                let e = Entry {
                    listing,
                    tree: listing && trees.contains(&k),
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
                .insert(entry_key(e).to_vec(), (e.clone(), *m));
            self.owe(&Job::Paths(vec![e.clone()]), *m, 0);
        }
        // Handed out beside the full sync running: owed like what waited, and not paid
        // by their own push if it succeeds, nor by that full sync's.
        for (k, (listing, m)) in std::mem::take(&mut self.beside_full) {
            let e = Entry {
                path: to_path(k.clone()),
                listing,
                tree: false,
            };
            let kept = self.kept_at_close.entry(k).or_insert((e.clone(), m));
            kept.0.listing |= listing;
            kept.1 = kept.1.min(m);
            self.owe(&Job::Paths(vec![e]), m, 0);
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

/// What one remote still had when its ledger closed (see [`Ledger::close`]).
#[derive(Debug, Default)]
pub struct Left {
    /// Waiting, oldest first.
    pub waiting: Vec<Entry>,
    /// In flight: these calls may yet succeed or fail.
    pub running: Vec<Entry>,
    /// A full sync was waiting or running.
    pub full: bool,
}

mod owed;
pub use owed::Pushed;
#[cfg(test)]
mod tests;
