//! Holding: the brake on mass deletes (`<deleteBrake>`). Deletes queued for a remote are
//! counted over a window; once more of them than the rule's count, and than its share of
//! the entries the tree had, came within it, every delete still waiting is held, and
//! every later one with them, until the operator releases them
//! ([`Ledger::release_deletes`]) or discards them ([`Ledger::discard_deletes`]).
//! Creates, edits and renames go on as usual meanwhile.
//!
//! What deletes without naming what it deletes waits too while deletes are held: a full
//! sync (`--delete` removes what the source lacks, the held paths among them) is held
//! as one, and a waiting listing (pushed with `--delete`) is not handed out. A full
//! sync that would delete more than the threshold (its root found again with far fewer
//! entries, an unmounted filesystem) or one of an empty root is held the same way
//! ([`Ledger::push_full_checked`], [`Ledger::hold_full`]).
//!
//! Holding deletes keep their marks (the remote is not level while they wait: barriers
//! and lag say so). At a close they are written to the fail log under a `#held` line
//! (`Owed::held`), and a start that reads them holds them again ([`Ledger::hold_restored`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{key, older, parent_key, to_path, Key, Ledger, Mark};
use crate::config::DeleteBrake;
use crate::sync::faillog::Owed;
use crate::sync::job::Entry;

/// The brake of one remote's ledger.
#[derive(Debug, Default)]
pub(super) struct Brake {
    /// `None`: off.
    rule: Option<DeleteBrake>,
    /// How many entries the tree had (the warm-restart index's count), when known.
    tree: Option<usize>,
    /// Deletes and writes counted within the window: when, how many of each (one
    /// element per batch).
    recent: VecDeque<(Instant, usize, usize)>,
    in_window: usize,
    writes_in_window: usize,
    /// Where deletes happened within the window, with the time of the last one: each
    /// directory deleted (`true`) and each directory a delete happened in (`false`;
    /// not the root). A write counts against the deletes only there, at or below a
    /// directory deleted or in a directory deletes happened in (see
    /// [`Ledger::count_write`]).
    deleted_at: HashMap<PathBuf, (Instant, bool)>,
    /// Written where they replaced deletes, and when: what is written in them does too.
    made: HashMap<PathBuf, Instant>,
    /// The hold began because deletes came past the threshold (not an empty root, nor
    /// the fail log): it ends by itself once as much is written again (a deploy that
    /// replaced what it deleted: `rm -rf app && cp -a build app`).
    by_count: bool,
    /// The deletes held: the path, whether it was a directory, its mark.
    held: BTreeMap<Key, (bool, Mark)>,
    /// A full sync held, with its mark.
    held_full: Option<Mark>,
    /// Deletes are held since then.
    since: Option<Instant>,
    /// The hold came from the fail log at start.
    restored: bool,
    /// The hold began since the last [`Ledger::take_held_news`]: why.
    news: Option<Tripped>,
    /// When `news` may be said (see [`Ledger::take_held_news`]).
    news_due: Option<Instant>,
    /// The operator released a held full sync: the next one runs with its deletes,
    /// even of an empty root (see [`Ledger::guards_full`]).
    full_released: bool,
    /// The full sync in flight is one the operator released.
    released_running: bool,
    /// When the latest delete was queued: deletes settle until none came for the
    /// settle time (see [`Ledger::settling`]).
    last_delete: Option<Instant>,
    /// Deletes counted below each directory (not the root) within the window, with the
    /// time of the last: what a deleted directory's count from the index has had
    /// counted already (see [`Ledger::count_gone_below`]).
    below: HashMap<PathBuf, (Instant, usize)>,
    /// Deleted directories whose entries were counted from the index ahead of their
    /// own deletes (fanotify may report them after the directory, or not at all), with
    /// how many of those may still come: each that comes is not counted again.
    ahead: HashMap<PathBuf, (Instant, usize)>,
    /// Directory renames within the window, by new name: where the tree at that name
    /// stood before, and when (see [`Brake::offset_moved`]).
    came_from: HashMap<PathBuf, (Instant, PathBuf)>,
    /// Names a directory was renamed away from within the window (a release swapped
    /// out: `mv cur old`), with the time, and how many entries were put there since
    /// (renamed or written in) that no delete of the tree that left was weighed
    /// against yet (see [`Brake::offset_moved`]).
    vacated: HashMap<PathBuf, (Instant, usize)>,
}

/// Why deletes began to be held (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// This many deletes came within the window.
    Deletes(usize),
    /// A full sync would have deleted about this many entries (its root has that many
    /// fewer than the tree had).
    Full(usize),
    /// A full sync of a watch root that is empty now.
    EmptyRoot,
}

/// What a remote holds, for status, logs and the control socket's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holding {
    /// Deletes held (paths; a directory counts once).
    pub deletes: usize,
    /// A full sync is held.
    pub full: bool,
    /// Since when (`None`: nothing is held).
    pub since: Option<Instant>,
    /// The hold was read from the fail log at start.
    pub restored: bool,
}

impl Holding {
    /// Anything is held.
    pub fn any(&self) -> bool {
        self.since.is_some()
    }

    /// What is held, in words (see [`held_words`]).
    pub fn what(&self) -> String {
        held_words(self.deletes as u64, self.full)
    }
}

/// `path`, at or below `to`, moved back onto `from` (`old/x` with `old` from `data`:
/// `data/x`): where a rename from `from` to `to` found it.
pub fn rebased(path: &Path, to: &Path, from: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(to).ok()?;
    Some(if rest.as_os_str().is_empty() {
        from.to_path_buf()
    } else {
        from.join(rest)
    })
}

/// `deletes` deletes, and a full sync when `full`, in words: "3 delete(s)", "a full
/// sync", "3 delete(s) and a full sync" (not "0 delete(s) and a full sync").
pub fn held_words(deletes: u64, full: bool) -> String {
    match (deletes, full) {
        (0, true) => "a full sync".to_owned(),
        (n, true) => format!("{n} delete(s) and a full sync"),
        (n, false) => format!("{n} delete(s)"),
    }
}

impl Brake {
    fn holding(&self) -> bool {
        self.since.is_some()
    }

    /// Counts `n` deletes at `now`, dropping those older than the window.
    fn count(&mut self, n: usize, now: Instant) {
        self.add(n, 0, now);
    }

    /// Counts `deletes` deletes and `writes` writes at `now`, dropping those older than
    /// the window.
    fn add(&mut self, deletes: usize, writes: usize, now: Instant) {
        let Some(rule) = self.rule else {
            return;
        };
        while let Some(&(at, d, w)) = self.recent.front() {
            if now.saturating_duration_since(at) < rule.window {
                break;
            }
            self.recent.pop_front();
            self.in_window -= d;
            self.writes_in_window -= w;
        }
        match self.recent.back_mut() {
            Some((at, d, w)) if *at == now => {
                *d += deletes;
                *w += writes;
            }
            _ => self.recent.push_back((now, deletes, writes)),
        }
        self.in_window += deletes;
        self.writes_in_window += writes;
    }

    /// The deletes within the window, less what was written meanwhile.
    fn net(&self) -> usize {
        self.in_window.saturating_sub(self.writes_in_window)
    }

    /// The deletes within the window, net of the writes, are past the threshold.
    fn past(&self) -> bool {
        let Some(rule) = self.rule else {
            return false;
        };
        let n = self.net();
        n >= rule.count && self.share_past(n, rule)
    }

    /// `n` is more than the rule's share of the tree (true when the tree is not known:
    /// the count alone decides then).
    fn share_past(&self, n: usize, rule: DeleteBrake) -> bool {
        match self.tree {
            _ if rule.percent == 0 => true,
            Some(tree) => n.saturating_mul(100) > tree.saturating_mul(usize::from(rule.percent)),
            None => true,
        }
    }

    fn start(&mut self, now: Instant, why: Tripped) {
        if self.since.is_none() {
            self.since = Some(now);
            self.news = Some(why);
            self.by_count = matches!(why, Tripped::Deletes(_));
            // A hold by the count may end by itself within moments (a deploy's copy
            // writing the release it deleted): said once it has lasted the settle time.
            let wait = match why {
                Tripped::Deletes(_) => self.rule.map_or(Duration::ZERO, |r| r.settle),
                Tripped::Full(_) | Tripped::EmptyRoot => Duration::ZERO,
            };
            self.news_due = Some(now.checked_add(wait).unwrap_or(now));
        } else if !matches!(why, Tripped::Deletes(_)) {
            self.by_count = false;
        }
    }

    /// Back to flowing: the window starts afresh (what was released is not counted).
    fn end(&mut self) {
        self.since = None;
        self.restored = false;
        self.recent.clear();
        self.in_window = 0;
        self.writes_in_window = 0;
        self.deleted_at.clear();
        self.made.clear();
        self.below.clear();
        self.ahead.clear();
        self.came_from.clear();
        self.vacated.clear();
        self.by_count = false;
    }

    /// Counts `n` deletes below each directory above `path` at `now` (see
    /// [`Brake::below`]).
    fn count_below(&mut self, path: &Path, n: usize, now: Instant) {
        let Some(rule) = self.rule else {
            return;
        };
        if self.below.len() >= DELETED_AT_MAX {
            self.below
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < rule.window);
        }
        for a in path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            let e = self.below.entry(a.to_path_buf()).or_insert((now, 0));
            if now.saturating_duration_since(e.0) >= rule.window {
                e.1 = 0;
            }
            *e = (now, e.1 + n);
        }
    }

    /// A delete of `path` at `now` was counted already, from the index, as an entry of
    /// a deleted directory above it (see [`Brake::ahead`]): it is taken off that count.
    fn counted_ahead(&mut self, path: &Path, now: Instant) -> bool {
        let Some(rule) = self.rule else {
            return false;
        };
        if self.ahead.is_empty() {
            return false;
        }
        for a in path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            if let Some(e) = self.ahead.get_mut(a) {
                if e.1 > 0 && now.saturating_duration_since(e.0) < rule.window {
                    e.1 -= 1;
                    return true;
                }
            }
        }
        false
    }

    /// Deletes counted below `dir` within the window.
    fn counted_below(&self, dir: &Path, now: Instant) -> usize {
        let window = self.rule.map_or(Duration::ZERO, |r| r.window);
        match self.below.get(dir) {
            Some(&(at, n)) if now.saturating_duration_since(at) < window => n,
            _ => 0,
        }
    }

    /// Notes a delete of `path` (`dir`: a directory) at `now`, for [`Brake::replaces`].
    /// `counted`: counted here (not ahead, from the index: see [`Brake::ahead`]).
    fn note_delete(&mut self, path: &Path, dir: bool, now: Instant, counted: bool) {
        let Some(rule) = self.rule else {
            return;
        };
        if counted {
            self.count_below(path, 1, now);
        }
        if self.deleted_at.len() >= DELETED_AT_MAX {
            self.deleted_at
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < rule.window);
        }
        if dir {
            self.deleted_at.insert(path.to_path_buf(), (now, true));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let e = self
                .deleted_at
                .entry(parent.to_path_buf())
                .or_insert((now, false));
            e.0 = now;
        }
    }

    /// Notes `path`, written at `now` where it replaced deletes (see [`Brake::made`]).
    fn note_made(&mut self, path: &Path, now: Instant) {
        let window = self.rule.map_or(Duration::ZERO, |r| r.window);
        if self.made.len() >= DELETED_AT_MAX {
            self.made
                .retain(|_, at| now.saturating_duration_since(*at) < window);
        }
        if self.made.len() < DELETED_AT_MAX {
            self.made.insert(path.to_path_buf(), now);
        }
    }

    /// Does a write of `path` at `now` replace what was deleted within the window: at or
    /// below a directory deleted, in a directory (not the root) deletes happened in, or
    /// in a directory written there within the window (see [`Brake::made`])?
    /// (`rm -rf app && cp -a build app`, new names in a release's directories.) Writes
    /// elsewhere in the tree (uploads, another directory's files) do not: they must not
    /// let an `rm -rf` in the wrong place through.
    fn replaces(&self, path: &Path, now: Instant) -> bool {
        let Some(rule) = self.rule else {
            return false;
        };
        if self.in_window == 0 || self.deleted_at.is_empty() {
            return false;
        }
        let fresh = |at: Instant| now.saturating_duration_since(at) < rule.window;
        let parent = path.parent();
        if (parent.and_then(|p| self.made.get(p))).is_some_and(|&at| fresh(at)) {
            return true;
        }
        path.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| match self.deleted_at.get(a) {
                Some(&(at, true)) => fresh(at),
                Some(&(at, false)) => Some(a) == parent && fresh(at),
                None => false,
            })
    }
}

/// A delete waits at most this many settle times (see [`Ledger::settling`]).
pub const SETTLE_CAP: u32 = 10;

/// Directories [`Brake::note_delete`] keeps before it drops those older than the window.
const DELETED_AT_MAX: usize = 100_000;

impl Ledger {
    /// Sets the brake's rule (`None`: off). Turning it off releases nothing: what is
    /// held stays held until released or discarded.
    pub fn set_brake(&mut self, rule: Option<DeleteBrake>) {
        self.brake.rule = rule;
    }

    /// How many entries the tree had (the warm-restart index's count), when known.
    pub fn set_tree(&mut self, entries: Option<usize>) {
        self.brake.tree = entries;
    }

    /// A delete queued at `at` still waits out the brake's settle time at `now`: until
    /// when (see [`DeleteBrake::settle`]).
    ///
    /// A delete waits until no delete came for the settle time (an `rm -rf` whose
    /// events reach the agent over several seconds, on a busy machine, is counted whole
    /// before any of it goes), and at most [`SETTLE_CAP`] times the settle time from
    /// its own queueing (a steady trickle of deletes is not held back for ever).
    pub(super) fn settling(&self, at: Instant, now: Instant) -> Option<Instant> {
        let settle = self.brake.rule?.settle;
        if settle == Duration::ZERO {
            return None;
        }
        let quiet = self
            .brake
            .last_delete
            .unwrap_or(at)
            .max(at)
            .checked_add(settle)?;
        let cap = at.checked_add(settle.saturating_mul(SETTLE_CAP))?;
        let until = quiet.min(cap);
        (now < until).then_some(until)
    }

    /// The deletes waiting were counted together, all of them at once (a warm-restart
    /// catch-up: its walk found every delete before any was queued): none of them
    /// waits out the settle time, which is there for an `rm -rf` whose deletes arrive
    /// over several reads. The brake has weighed them already (a hold took them).
    pub fn settled(&mut self, now: Instant) {
        let Some(settle) = self.brake.rule.map(|r| r.settle) else {
            return;
        };
        let Some(past) = now.checked_sub(settle) else {
            return;
        };
        for (_, at) in self.gone.values_mut() {
            *at = (*at).min(past);
        }
        for at in self.gone_below.values_mut() {
            *at = (*at).min(past);
        }
        if let Some(l) = self.brake.last_delete.as_mut() {
            *l = (*l).min(past);
        }
    }

    /// When a delete that waits out the brake's settle time may go, if the latest take
    /// found nothing else free: the queue's worker looks again then.
    pub fn settle_due(&self) -> Option<Instant> {
        self.settle_due
    }

    /// The brake is on, or holds what it held when it was turned off.
    pub fn braking(&self) -> bool {
        self.brake.rule.is_some() || self.brake.holding()
    }

    /// The full sync in flight is guarded against deleting everything (its root is
    /// checked for being empty; see `workers::held`): the brake is on, and the
    /// operator did not release it (a released one deletes what the source lacks, as
    /// asked).
    pub fn guards_full(&self) -> bool {
        self.braking() && !self.brake.released_running
    }

    /// A full sync is handed out (see `take.rs`): a released one runs as such once.
    pub(super) fn full_taken(&mut self) {
        self.brake.released_running = std::mem::take(&mut self.brake.full_released);
    }

    /// Deletes are held now.
    pub fn holding(&self) -> bool {
        self.brake.holding()
    }

    /// What is held.
    pub fn held(&self) -> Holding {
        Holding {
            deletes: self.brake.held.len(),
            full: self.brake.held_full.is_some(),
            since: self.brake.since,
            restored: self.brake.restored,
        }
    }

    /// Why deletes began to be held, once, since the last call, when it may be said at
    /// `now`: a hold that began by the count once it has lasted the settle time (one
    /// that a deploy's writes end within it, `rm -rf app && cp -a build/app app`, is
    /// not said at error level, only its end at info level), any other at once.
    pub fn take_held_news(&mut self, now: Instant) -> Option<Tripped> {
        if !self.brake.holding() {
            self.brake.news = None;
            return None;
        }
        match self.brake.news_due {
            Some(due) if now < due => None,
            _ => self.brake.news.take(),
        }
    }

    /// When news of a hold is due to be said (see [`Ledger::take_held_news`]), if any
    /// waits.
    pub fn held_news_due(&self) -> Option<Instant> {
        self.brake
            .news
            .and(self.brake.news_due)
            .filter(|_| self.brake.holding())
    }

    /// The marks of what is held (not on the remote yet).
    pub(super) fn held_marks(&self) -> impl Iterator<Item = Mark> + '_ {
        (self.brake.held.values().map(|(_, m)| *m)).chain(self.brake.held_full)
    }

    /// What is held, by path (see `Ledger::push_rename_at`).
    pub(super) fn held_map(&self) -> &BTreeMap<Key, (bool, Mark)> {
        &self.brake.held
    }

    /// A delete queued at `now`: `path` is gone (`dir`: it was a directory). Counted
    /// against the brake; held while deletes are held, else queued like any change
    /// (see [`Ledger::push_at`]), and if it takes the count past the threshold, every
    /// delete still waiting is held with it.
    #[cfg(test)]
    pub fn push_gone_at(&mut self, path: PathBuf, dir: bool, now: Instant) {
        self.push_gone_carrying(path, dir, now, None);
    }

    /// [`Ledger::push_gone_at`] of a delete whose mark is at least as old as `carry`
    /// (see [`Ledger::push_at_carrying`]).
    pub fn push_gone_carrying(
        &mut self,
        path: PathBuf,
        dir: bool,
        now: Instant,
        carry: Option<Mark>,
    ) {
        let k = key(path.clone());
        let ahead = self.brake.counted_ahead(&path, now);
        if self.brake.holding() {
            // Counted too: the writes that may end the hold are weighed against them all.
            if !ahead {
                self.brake.count(1, now);
                self.brake.offset_moved(&path, 1, now);
            }
            self.brake.note_delete(&path, dir, now, !ahead);
            self.seq += 1;
            let mark = older(
                carry,
                Mark {
                    seq: self.seq,
                    since: now,
                },
            );
            self.hold_key(k, dir, mark);
            return;
        }
        if !ahead {
            self.brake.count(1, now);
            self.brake.offset_moved(&path, 1, now);
        }
        self.brake.note_delete(&path, dir, now, !ahead);
        self.brake.last_delete = Some(self.brake.last_delete.map_or(now, |l| l.max(now)));
        let covered = self.full_pending && !self.full_inflight;
        self.push_at_carrying(Entry::plain(path), dir, now, carry);
        if !covered {
            if self.by_path.contains_key(&k) {
                self.gone.insert(k, (dir, now));
            } else if let Some(parent) = parent_key(&k).filter(|d| self.by_path.contains_key(*d)) {
                // Taken into its parent's listing (collapsed): that waits out the settle.
                let e = self.gone_below.entry(parent.to_vec()).or_insert(now);
                *e = (*e).max(now);
            }
        }
        if self.brake.past() {
            let n = self.brake.net();
            self.hold_waiting(now, Tripped::Deletes(n));
        }
    }

    /// Counts a write of `path` (queued to be pushed as it is) at `now`: deletes are
    /// counted net of the writes that replace them (at or below a directory deleted,
    /// or in a directory deletes happened in, within the window: see
    /// [`Brake::replaces`]), so a deploy that deletes a release and writes the next
    /// one does not reach the threshold for long, while writes elsewhere in the tree
    /// do not offset an `rm -rf` in the wrong place. A hold that began by the count
    /// ends by itself once such writes bring the count back under it: what is held is
    /// queued again (returned, for the log line).
    pub fn count_write(&mut self, path: &Path, now: Instant) -> Option<Holding> {
        self.brake.rule?;
        if !self.brake.replaces(path, now) {
            // Written where a tree was renamed away from: it replaces that tree's
            // deletes to come.
            self.brake.fill(path, 1, now);
            return None;
        }
        self.brake.add(0, 1, now);
        self.brake.note_made(path, now);
        if self.brake.holding() && self.brake.by_count && !self.brake.past() {
            return Some(self.release_deletes(now));
        }
        None
    }

    /// Counts the rename of the directory `from` to `to` at `now`, `entries` entries
    /// with it (`to` and what is below it). A rename deletes nothing, and by itself
    /// replaces nothing: it moves entries. Its entries replace deletes only where a
    /// tree was deleted or renamed away: deletes counted at or below `to` within the
    /// window (`rm -rf app && mv build app`), as many as were counted there, or the
    /// deletes to come of the tree renamed away from `to` (a release swapped in: `mv
    /// cur old && mv new cur && rm -rf old`, see [`Brake::offset_moved`]). A hold that
    /// began by the count ends by itself once the deletes are balanced: what is held is
    /// queued again (returned, for the log line).
    pub fn count_moved(
        &mut self,
        from: &Path,
        to: &Path,
        entries: usize,
        now: Instant,
    ) -> Option<Holding> {
        self.brake.rule?;
        let replaced = self.brake.take_deleted_at(to, entries, now);
        self.brake.fill(to, entries - replaced, now);
        self.brake.moved(from, to, now);
        if replaced == 0 {
            return None;
        }
        self.brake.add(0, replaced, now);
        if self.brake.holding() && self.brake.by_count && !self.brake.past() {
            return Some(self.release_deletes(now));
        }
        None
    }

    /// Where the directory `path` stood before a directory rename within the brake's
    /// window moved it (see [`Brake::origin`]): the remotes may hold its tree there
    /// still, the rename not landed yet, and the index knows it there.
    pub fn renamed_from(&self, path: &Path, now: Instant) -> Option<PathBuf> {
        self.brake.origin(path, now)
    }

    /// The directory `path`, queued as deleted at `now`, held `n` entries as the index
    /// knows them: when none of them was reported on its own (fanotify cannot name what
    /// was in a directory already gone when its events are read) they are counted now,
    /// and if they take the count past the threshold every delete still waiting is held.
    pub fn count_gone_below(&mut self, path: &Path, n: usize, now: Instant) {
        if self.brake.rule.is_none() {
            return;
        }
        // Only when none of its entries was reported on its own: a watcher that names
        // them (inotify) counted them already, and the index may still hold entries
        // the remotes no longer have (it would count more than was deleted).
        if self.brake.counted_below(path, now) > 0 {
            return;
        }
        let extra = n;
        if extra == 0 {
            return;
        }
        self.brake.count(extra, now);
        self.brake.offset_moved(path, extra, now);
        // Counted for the directories above it too, and for itself; its entries'
        // own deletes, if they come, are not counted again.
        self.brake.count_below(&path.join("x"), extra, now);
        let window = self.brake.rule.map_or(Duration::ZERO, |r| r.window);
        if self.brake.ahead.len() >= DELETED_AT_MAX {
            self.brake
                .ahead
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < window);
        }
        self.brake.ahead.insert(path.to_path_buf(), (now, extra));
        if !self.brake.holding() && self.brake.past() {
            let n = self.brake.net();
            self.hold_waiting(now, Tripped::Deletes(n));
        }
    }

    /// Counts `n` deletes at `now` that are not queued one by one (what a deleted
    /// directory held, found by a catch-up walk): the next delete queued is held if they
    /// took the count past the threshold.
    pub fn count_deletes(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.brake.count(n, now);
        }
    }

    /// A full sync asked at `now` of a root that holds `entries` entries now (`None`:
    /// not counted): held while deletes are held, when the root is empty, or when what
    /// it would delete (the tree's count less `entries`) takes the deletes past the
    /// threshold; else queued ([`Ledger::push_full_at`]).
    pub fn push_full_checked(&mut self, entries: Option<usize>, now: Instant) {
        if self.brake.rule.is_some() && !self.brake.holding() {
            match entries {
                Some(0) => self.hold_waiting(now, Tripped::EmptyRoot),
                Some(n) => {
                    let gone = self.brake.tree.map_or(0, |t| t.saturating_sub(n));
                    if gone > 0 {
                        self.brake.count(gone, now);
                        if self.brake.past() {
                            self.hold_waiting(now, Tripped::Full(gone));
                        }
                    }
                }
                None => {}
            }
        }
        if self.brake.holding() {
            self.seq += 1;
            let mark = older(
                self.brake.held_full,
                Mark {
                    seq: self.seq,
                    since: now,
                },
            );
            self.brake.held_full = Some(mark);
            return;
        }
        self.push_full_at(now);
    }

    /// The full sync in flight is not run (its root is empty now): it is held, and with
    /// it every delete still waiting. Call before the job is finished. Returns false
    /// when the brake is off (the caller runs it).
    pub fn hold_full(&mut self, now: Instant) -> bool {
        if self.brake.rule.is_none() && !self.brake.holding() {
            return false;
        }
        self.hold_waiting(now, Tripped::EmptyRoot);
        let mark = self.full_running.unwrap_or(Mark {
            seq: self.seq,
            since: now,
        });
        self.brake.held_full = Some(older(self.brake.held_full, mark));
        // Its end does not queue again what went beside it: held, it covers them.
        self.beside_gone.clear();
        for (_, (_, m)) in std::mem::take(&mut self.beside_full) {
            self.brake.held_full = Some(older(self.brake.held_full, m));
        }
        true
    }

    /// Deletes begin to be held now, whatever the count (a catch-up walk found the
    /// watch root empty while its index holds entries), when the brake is on.
    pub fn hold_now(&mut self, now: Instant) {
        if self.brake.rule.is_some() && !self.brake.holding() {
            self.hold_waiting(now, Tripped::EmptyRoot);
        }
    }

    /// Deletes begin to be held: every delete still waiting, and a full sync waiting.
    fn hold_waiting(&mut self, now: Instant, why: Tripped) {
        self.brake.start(now, why);
        let gone: Vec<(Key, bool)> = self.gone.drain().map(|(k, (d, _))| (k, d)).collect();
        for (k, dir) in gone {
            if let Some(m) = self.by_path.get(&k).map(|(_, m)| *m) {
                // `hold_key` takes the entry waiting (a listing or a tree held as a
                // directory's delete).
                self.hold_key(k, dir, m);
            }
        }
        if self.full_pending && !self.full_inflight {
            self.full_pending = false;
            if let Some(m) = self.full_mark.take() {
                self.brake.held_full = Some(older(self.brake.held_full, m));
            } else {
                self.brake.held_full = Some(Mark {
                    seq: self.seq,
                    since: now,
                });
            }
        }
    }

    /// Holds the delete of `k`: a directory takes what waits below it (held or not:
    /// its release deletes or pushes all of it as it is then), keeping the oldest mark.
    fn hold_key(&mut self, k: Key, dir: bool, mark: Mark) {
        let mut mark = mark;
        // Waiting as a listing or a tree (a directory's delete released, then a file of
        // that name made and deleted: 95003574), the remote may hold a tree there: held
        // as a directory's delete, whose release pushes the whole tree as it is then (a
        // plain push of a directory made there again keeps the old entries below it).
        let dir = dir
            || (self.by_path.contains_key(&k)
                && (self.replaced.contains(&k) || self.trees.contains(&k)));
        if dir {
            let mut prefix = k.clone();
            prefix.push(b'/');
            let below: Vec<Key> = (self.by_path.range::<[u8], _>((
                std::ops::Bound::Included(prefix.as_slice()),
                std::ops::Bound::Unbounded,
            )))
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
            for p in below {
                if let Some((_, m)) = self.remove_entry(&p) {
                    self.replaced.remove(&p);
                    self.trees.remove(&p);
                    self.gone.remove(&p);
                    mark = mark.min(m);
                }
            }
            let held_below: Vec<Key> = (self.brake.held.range::<[u8], _>((
                std::ops::Bound::Included(prefix.as_slice()),
                std::ops::Bound::Unbounded,
            )))
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
            for p in held_below {
                if let Some((_, m)) = self.brake.held.remove(&p) {
                    mark = mark.min(m);
                }
            }
        }
        // Waiting as an edit (written, then deleted): held as the delete it is now.
        if let Some((_, m)) = self.remove_entry(&k) {
            self.replaced.remove(&k);
            self.trees.remove(&k);
            mark = mark.min(m);
        }
        self.gone.remove(&k);
        let e = self.brake.held.entry(k).or_insert((dir, mark));
        e.0 |= dir;
        e.1 = e.1.min(mark);
    }

    /// The operator releases what is held: every held delete waits again with its mark
    /// (a directory as its listing), a held full sync is queued, and the brake counts
    /// afresh. Returns what was held.
    pub fn release_deletes(&mut self, now: Instant) -> Holding {
        let held = self.held();
        let deletes = std::mem::take(&mut self.brake.held);
        let full = self.brake.held_full.take();
        self.brake.end();
        let mut order: Vec<(Key, (bool, Mark))> = deletes.into_iter().collect();
        order.sort_by_key(|(_, (_, m))| m.seq);
        for (k, (dir, m)) in order {
            if self.full_pending && !self.full_inflight {
                self.full_mark = Some(older(self.full_mark, m));
                continue;
            }
            // A directory goes as its whole tree: it took in what waited below it,
            // which may have come after its delete (the directory made again, entries
            // moved into it); its listing alone would push one level of them.
            self.push_key(k.clone(), dir, now, Some(m));
            if dir {
                self.trees.insert(k);
            }
        }
        if let Some(m) = full {
            self.push_full_at(now);
            self.full_mark = Some(older(self.full_mark, m));
            self.brake.full_released = true;
        }
        held
    }

    /// The operator discards what is held: the held deletes and a held full sync are
    /// dropped (the remote keeps those entries), and the brake counts afresh. Returns
    /// what was held.
    pub fn discard_deletes(&mut self) -> Holding {
        let held = self.held();
        self.brake.held.clear();
        self.brake.held_full = None;
        self.brake.end();
        held
    }

    /// What is held, as the fail log writes it (see `Owed::held`).
    pub fn held_owed(&self) -> (Vec<Entry>, bool) {
        (
            (self.brake.held.iter())
                .map(|(k, (dir, _))| Entry::with_listing(to_path(k.clone()), *dir))
                .collect(),
            self.brake.held_full.is_some(),
        )
    }

    /// What a fail log read at start held (`Owed::held`, `Owed::held_full`): held
    /// again, counting from `since`.
    pub fn hold_restored(&mut self, owed: &Owed, since: Instant) {
        if owed.held.is_empty() && !owed.held_full {
            return;
        }
        let mark = Mark { seq: 0, since };
        self.brake.start(since, Tripped::Deletes(owed.held.len()));
        self.brake.restored = true;
        self.brake.by_count = false;
        self.brake.news = None;
        for (path, &dir) in &owed.held {
            self.hold_key(key(path.clone()), dir, mark);
        }
        if owed.held_full {
            self.brake.held_full = Some(older(self.brake.held_full, mark));
        }
    }
}

mod beside;
mod moves;
#[cfg(test)]
mod tests;
