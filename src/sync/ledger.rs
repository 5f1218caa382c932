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
//! for a path always starts after its last change. A directory that a call in flight
//! deletes without carrying it (the top of what is gone above its paths, which the
//! worker adds: [`Ledger::deleting`]) counts as in flight for that rule.
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
//!
//! With `-H`, the names of a multi-linked file are queued as one set
//! ([`Ledger::push_linked`]) and handed out together, in one call, once none of them is
//! in flight (`links::pick`): rsync links names on the remote only within one call. A
//! set keeps its names through a collapse (the directory's listing takes the place of
//! its names there) and through a full sync running beside it; the names of a set
//! owed after a failure are retried as the paths they are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::ops::Bound;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Instant;

use super::faillog::Owed;
use super::job::{Entry, Job};
use super::links::Together;
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
    /// Paths in flight whose own call landed while other calls of their job still run
    /// (a job goes out as several calls: its plain paths, its trees, each big file): a
    /// close owes them no more (see [`Ledger::close`]).
    landed: HashSet<Key>,
    /// For every proper ancestor of an in-flight path: how many in-flight paths lie below.
    inflight_below: HashMap<Key, usize>,
    /// Directories that calls in flight delete on the remote, all below them with
    /// them, as the top of what is gone above the paths they carry (the worker adds
    /// them, see [`Ledger::deleting`]), and by how many calls: nothing at or below them
    /// is handed out until those calls end.
    deleting: HashMap<Key, usize>,
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
    /// Of `beside_full`, the deletes (whether a directory): when that full sync ends
    /// they wait again as the deletes they are, weighed by the brake (held while it
    /// holds, else settling first), not as plain paths handed out at once.
    beside_gone: HashMap<Key, bool>,
    /// Waiting entries queued as deletes (whether a directory, when the delete was
    /// queued): what the brake holds when it trips, and what waits out its settle time
    /// first (see `brake.rs`).
    gone: HashMap<Key, (bool, Instant)>,
    /// Directories waiting as their listing because their children collapsed into it
    /// (see `push.rs`), deletes among those children: when the latest was queued. The
    /// listing (pushed with `--delete`) waits out the brake's settle time as they would.
    gone_below: HashMap<Key, Instant>,
    /// When the first delete that waits out the brake's settle time may go: set by a
    /// take that found nothing else free (see [`Ledger::settle_due`]).
    settle_due: Option<Instant>,
    /// The brake on mass deletes: its rule, the window's count, what is held.
    brake: brake::Brake,
    /// The names of multi-linked files waiting that go in one call (with `-H`; see
    /// `links.rs`), and of those handed out beside the full sync running, the sets they
    /// were in (they wait again as sets when it ends).
    together: Together<Key>,
    beside_together: Vec<Vec<Key>>,
    /// Files changed with their size and mtime as before (found by the warm-restart
    /// catch-up: only the inode or ctime differ): rsync's quick check skips them, so a
    /// full sync (no `--ignore-times`) does not cover them. They keep waiting beside a
    /// full sync queued for the remote, wait again when one lands, and leave this set
    /// (with the oldest mark they had) once a push of them lands.
    blind: HashMap<Key, Mark>,
    /// The operator paused this remote (`sersync2 --pause`): nothing is handed out,
    /// everything else goes on (see `pause.rs`).
    paused: bool,
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
    /// A path deleted or moved out of the tree (`true`: a directory): pushed like a
    /// path that is gone, and counted by the brake on mass deletes (`ledger/brake.rs`).
    Gone(PathBuf, bool),
    /// A file changed with its size and mtime as before (see `Ledger::blind`): pushed
    /// like a path, never covered by a full sync.
    Blind(PathBuf),
    /// A rename inside the tree (see [`Job::Rename`]).
    Rename {
        from: PathBuf,
        to: PathBuf,
        dir: bool,
        below: Vec<PathBuf>,
    },
    /// The known names of one multi-linked file, with `-H`: pushed, and handed out
    /// together ([`Ledger::push_linked`]).
    Linked(Vec<PathBuf>),
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

    /// The directories collapsed since the last call, with how many entries each.
    pub fn take_collapsed(&mut self) -> Vec<(PathBuf, usize)> {
        std::mem::take(&mut self.collapsed)
            .into_iter()
            .map(|(k, n)| (to_path(k), n))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_path.len() + self.renames.len() + usize::from(self.full_pending)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nothing waiting that may be handed out and nothing in flight: what waits, if
    /// anything, are listings held back while deletes are held (see `brake.rs`).
    pub fn is_settled(&self) -> bool {
        self.running == 0
            && (self.is_empty()
                || (self.holding()
                    && self.renames.is_empty()
                    && !self.full_pending
                    && self.by_path.keys().all(|k| self.replaced.contains(k))))
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
}

mod brake;
mod finish;
mod owed;
mod pause;
mod push;
mod take;
pub use brake::{held_words, rebased, Holding, Tripped};
pub use finish::Left;
pub use owed::Pushed;
#[cfg(test)]
mod tests;
