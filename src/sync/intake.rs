//! The filter thread: what the watchers saw becomes pending work.
//!
//! It takes the watchers' batches off their channel in order, drops temp names and
//! excluded paths, keeps only the changes the `<inotify>` switches ask for, and merges
//! what is left into the pending set of every remote of that watch root, one lock per
//! batch. The watchers never wait for it, and it never waits for rsync.
//!
//! A sync cookie (a file `--wait-synced` has created in a watch root, see
//! `filter::COOKIE_PREFIX`) is never pushed: once its batch is queued, every event of
//! that root read before it is queued too, so the queue records a checkpoint per remote
//! for the barrier waiting on it ([`Queue::cookies_seen`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::job::{Entry, RemoteId};
use super::links::{FileId, Links, TOGETHER_MAX};
use super::queue::{Item, Queue};
use crate::config::Events;
use crate::filter::{self, Excludes};
use crate::watch::{Batch, Change, Op};

/// Where one watch root's changes go, and what of it is never pushed.
pub struct Route {
    pub root: PathBuf,
    pub remotes: Vec<RemoteId>,
    /// The `<filter>` excludes, with the agent's own files in this root.
    pub excludes: Excludes,
}

/// The filter stage's rules and destination.
pub struct Intake {
    /// By watch root index.
    pub routes: Vec<Route>,
    pub events: Events,
    pub debug: bool,
    pub queue: Arc<Queue>,
    /// The known names of multi-linked files (`src/sync/links.rs`): a write through one
    /// name queues the others.
    pub links: Arc<Mutex<Links>>,
    /// `-H` (`--hard-links`) is in the params of a remote: every change of a
    /// multi-linked name queues all its known names as one set, handed out in one call
    /// (`src/sync/links.rs`).
    pub hard_links: bool,
}

/// A regular file created while `<createFile>` is off waits for its CLOSE_WRITE; one
/// that has not changed for this long without one (a hard link whose first name is
/// already gone: `link(tmp, final); unlink(tmp)`, how git and many publishers make a
/// file appear whole) is pushed as it is. One whose size or mtime still changes is
/// being written: it waits on (a big copy is not pushed half done).
pub const UNCLOSED_AFTER: Duration = Duration::from_secs(1);

/// How often the filter thread looks for such files while any wait.
const UNCLOSED_TICK: Duration = Duration::from_millis(250);

/// Created files waiting for their CLOSE_WRITE, per watch root: path to when last seen
/// changing, and its size and mtime then.
pub(crate) type Unclosed = Vec<HashMap<PathBuf, Waiting>>;
type Waiting = (Instant, Option<Stamp>);

/// Size and mtime (seconds, nanoseconds) of a file.
type Stamp = (u64, i64, i64);

fn stamp(abs: &Path) -> Option<Stamp> {
    stamp_of(std::fs::symlink_metadata(abs).ok())
}

fn stamp_of(m: Option<Metadata>) -> Option<Stamp> {
    m.map(|m| (m.len(), m.mtime(), m.mtime_nsec()))
}

/// What one batch looked up in the tree (lstat, by absolute path): an entry is looked
/// at once however many of the batch's events name it. A file copied in comes as
/// Created and ClosedWrite, and each event was up to two looks: most of the filter
/// thread's CPU in a burst. Every look is taken after the batch was read, so the first
/// one already sees the entry as the batch's last event left it (or later).
#[derive(Default)]
struct Looks(RefCell<HashMap<PathBuf, Option<Metadata>>>);

impl Looks {
    fn lstat(&self, abs: PathBuf) -> Option<Metadata> {
        if let Some(m) = self.0.borrow().get(&abs) {
            return m.clone();
        }
        let m = std::fs::symlink_metadata(&abs).ok();
        self.0.borrow_mut().insert(abs, m.clone());
        m
    }
}

impl Intake {
    /// Runs until every watcher has hung up.
    pub fn run(self, rx: Receiver<Batch>) {
        let mut unclosed: Unclosed = self.routes.iter().map(|_| HashMap::new()).collect();
        loop {
            let got = if unclosed.iter().all(HashMap::is_empty) {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(UNCLOSED_TICK)
            };
            match got {
                Ok(batch) => self.take(batch, &mut unclosed),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // At the stop: queued now, they go to the fail log with the rest.
                    self.flush_unclosed(&mut unclosed);
                    return;
                }
            }
            self.settle_unclosed(&mut unclosed);
        }
    }

    /// Queues every created file still waiting for its CLOSE_WRITE (at the stop).
    pub(crate) fn flush_unclosed(&self, unclosed: &mut Unclosed) {
        for (root, waiting) in unclosed.iter_mut().enumerate() {
            self.push_unclosed(root, waiting, |_| true);
        }
    }

    /// Pushes the created files that have not changed for [`UNCLOSED_AFTER`]; those
    /// that changed are looked at again later.
    fn settle_unclosed(&self, unclosed: &mut Unclosed) {
        let now = Instant::now();
        for ((root, waiting), route) in unclosed.iter_mut().enumerate().zip(&self.routes) {
            for (path, (seen, last)) in waiting.iter_mut() {
                if now.saturating_duration_since(*seen) < UNCLOSED_AFTER {
                    continue;
                }
                let current = stamp(&route.root.join(path));
                if current != *last {
                    // Written to meanwhile (or gone: its own event says so): looked at
                    // again after another UNCLOSED_AFTER.
                    *seen = now;
                    *last = current;
                }
            }
            self.push_unclosed(root, waiting, |(seen, _)| {
                now.saturating_duration_since(*seen) >= UNCLOSED_AFTER
            });
        }
    }

    /// Queues the created files of watch root `root` that `due` picks.
    fn push_unclosed(
        &self,
        root: usize,
        waiting: &mut HashMap<PathBuf, Waiting>,
        due: impl Fn(&Waiting) -> bool,
    ) {
        let Some(route) = self.routes.get(root) else {
            return;
        };
        let mut picked: Vec<PathBuf> = Vec::new();
        waiting.retain(|path, w| {
            let go = due(w);
            if go {
                picked.push(path.clone());
            }
            !go
        });
        if picked.is_empty() {
            return;
        }
        picked.sort();
        if self.debug {
            log::info!(
                "{} created file(s) without a CLOSE_WRITE (linked into place?) pushed as they are",
                picked.len()
            );
        }
        let items: Vec<Item> = picked
            .into_iter()
            .map(|p| Item::Path(p.into(), false))
            .collect();
        self.queue.push_batch(&route.remotes, &items);
    }

    /// One batch of a watcher.
    pub(crate) fn take(&self, batch: Batch, unclosed: &mut Unclosed) {
        let mut changes: Vec<Item> = Vec::new();
        let mut cookies: Vec<Vec<u8>> = Vec::new();
        let mut together: Vec<Item> = Vec::new();
        let looks = Looks::default();
        let Some(route) = self.routes.get(batch.root) else {
            return;
        };
        let Some(waiting) = unclosed.get_mut(batch.root) else {
            return;
        };
        for change in batch.changes {
            if !waiting.is_empty() {
                if let Change::File { path, op } = &change {
                    if *op != Op::Created {
                        waiting.remove(path);
                    }
                }
            }
            if own_only(&route.excludes, &change) {
                // The agent's own files (its log among them): never events, not even a
                // debug line, which would itself be a change of a log file in the tree.
                continue;
            }
            if self.debug {
                log::info!(root = route.root.display().to_string().as_str(); "event {change:?}");
            }
            if let Change::File { path, .. } = &change {
                let name = path.as_os_str().as_bytes();
                if filter::is_cookie(name) && !name.contains(&b'/') {
                    cookies.push(name.to_vec());
                    continue;
                }
            }
            let linked = self.linked(batch.root, route, &change, &looks);
            let decision = self.decide(route, change, &looks);
            let pushed = matches!(
                decision,
                Decision::Push(..) | Decision::Items(_) | Decision::PushAll(_)
            );
            for linked in linked.into_iter().filter(|_| pushed) {
                if self.hard_links
                    && !linked.others.is_empty()
                    && linked.others.len() < TOGETHER_MAX
                {
                    // With -H: every known name, in one call (after the change's own
                    // item, which the set then takes in).
                    let mut names = linked.others;
                    names.insert(0, linked.name);
                    together.push(Item::Linked(names));
                } else if linked.wrote {
                    // Written through one name: the file's other names changed too,
                    // and no event says so. They go in the same batch.
                    changes
                        .extend((linked.others.into_iter()).map(|p| Item::Path(p.into(), false)));
                }
            }
            match decision {
                Decision::Drop => {}
                Decision::Unclosed(path) => {
                    let now = stamp_of(looks.lstat(route.root.join(&path)));
                    waiting.insert(path, (Instant::now(), now));
                }
                Decision::Push(path, gone_dir) => changes.push(Item::Path(path.into(), gone_dir)),
                Decision::Gone(path, dir) => changes.push(Item::Gone(path, dir)),
                Decision::PushAll(found) => {
                    changes.extend(found.into_iter().map(|p| Item::Path(p.into(), false)))
                }
                Decision::Items(items) => changes.extend(items),
                Decision::Full => {
                    // Everything waiting so far is covered by the full sync. What the
                    // root holds now is counted: a full sync that would delete past the
                    // brake's threshold (the root found again emptied, a filesystem
                    // unmounted) is held (see `ledger/brake.rs`); one of a root whose
                    // rules select nothing of what it holds is judged as it runs.
                    changes.clear();
                    together.clear();
                    let entries = super::index::walk(&route.root, &route.excludes)
                        .ok()
                        .map(|t| t.len());
                    // With `<filter>` rsync rules only (see `Mirror::full_of_empty_root`).
                    let holds_names = route.excludes.has_rules()
                        && std::fs::read_dir(&route.root).is_ok_and(|mut d| d.next().is_some());
                    self.queue
                        .push_full_checked(&route.remotes, counted_for_brake(entries, holds_names));
                }
            }
        }
        // The sets last: each takes in what the batch queued of its names.
        changes.extend(together);
        self.queue.push_batch(&route.remotes, &changes);
        if !cookies.is_empty() {
            // Everything before the cookie is queued first: these too.
            self.push_unclosed(batch.root, waiting, |_| true);
            self.queue.cookies_seen(&cookies, &route.remotes);
        }
    }

    fn links(&self) -> MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the names of multi-linked files in step with `change` (of watch root
    /// `root`), and for a write (or attribute change) of such a file returns its other
    /// known mirrored names in this root, each still the same file; with `-H`, for any
    /// change that names such a file (a link made, a name moved or renamed in, a
    /// directory holding such files moved in) too. Other roots' names are queued for
    /// their own remotes here.
    fn linked(&self, root: usize, route: &Route, change: &Change, looks: &Looks) -> Vec<Linked> {
        let mirrored = |p: &Path| {
            let name = p.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            !filter::skip(&route.excludes, name, p, false)
        };
        match change {
            Change::File { path, op } => {
                let wrote = matches!(op, Op::ClosedWrite | Op::Modified | Op::Attrib);
                match op {
                    Op::Deleted | Op::MovedOut => {
                        let mut links = self.links();
                        if !links.is_empty() {
                            links.forget(&root, path);
                        }
                        Vec::new()
                    }
                    // A write's other names matter only once some are known; a name
                    // made or moved in (a link made, `ln -f`'s rename) is learned.
                    Op::Modified | Op::Attrib if self.links().is_empty() => Vec::new(),
                    _ => {
                        let file = regular_file(looks.lstat(route.root.join(path)));
                        let mut links = self.links();
                        let (id, nlink) = match file.filter(|_| mirrored(path)) {
                            Some((id, links_)) if links_ > 1 => (id, links_),
                            Some((id, _)) => {
                                links.forget(&root, path);
                                if matches!(op, Op::Created | Op::ClosedWrite | Op::MovedIn) {
                                    links.single((root, path.clone()), id);
                                }
                                return Vec::new();
                            }
                            None => {
                                links.forget(&root, path);
                                return Vec::new();
                            }
                        };
                        let name = (root, path.clone());
                        let new = !links.knows(&name, id);
                        if !links.learn(name.clone(), id) && links.first_full() {
                            warn_full();
                        }
                        if new {
                            neighbours(&mut links, root, route, path, id, nlink);
                        }
                        if !wrote && !self.hard_links {
                            return Vec::new();
                        }
                        let others = links.others(&name, id);
                        drop(links);
                        vec![Linked {
                            name: path.clone(),
                            others: self.still_linked(root, id, others, looks),
                            wrote,
                        }]
                    }
                }
            }
            Change::DirOut { path, .. } => {
                self.links().forget_below(root, path);
                Vec::new()
            }
            Change::DirIn { found, .. } => self.found_in(root, route, found, looks),
            Change::Renamed { from, to, dir, .. } => {
                let mut links = self.links();
                links.renamed(root, from, to);
                if !*dir {
                    match regular_file(looks.lstat(route.root.join(to))).filter(|_| mirrored(to)) {
                        Some((id, n)) if n > 1 => {
                            let name = (root, to.clone());
                            links.learn(name.clone(), id);
                            // Known or not, the name is in another directory now.
                            neighbours(&mut links, root, route, to, id, n);
                            if self.hard_links {
                                let others = links.others(&name, id);
                                drop(links);
                                return vec![Linked {
                                    name: to.clone(),
                                    others: self.still_linked(root, id, others, looks),
                                    wrote: false,
                                }];
                            }
                        }
                        // A file renamed into place (written as a temp name, then
                        // renamed) is a file seen with one name, as one written is: a
                        // link made to it later knows this name (seed 11534).
                        Some((id, _)) => {
                            links.forget(&root, to);
                            links.single((root, to.clone()), id);
                        }
                        None => links.forget(&root, to),
                    }
                }
                Vec::new()
            }
            // Events were lost (links made among them) or the root is new: the tree is
            // walked for its files with several names, as at start. A full sync, which
            // costs more than this walk, follows anyway.
            Change::Overflow | Change::RootBack => {
                if let Ok(tree) = super::index::walk(&route.root, &route.excludes) {
                    let files = tree
                        .iter()
                        .filter(|(_, m)| m.kind == super::index::Kind::File)
                        .map(|(p, m)| (p.as_path(), (m.dev, m.ino)));
                    let mut links = self.links();
                    links.forget_below(root, Path::new(""));
                    links.learn_walk(root, files);
                }
                Vec::new()
            }
            Change::Exchanged { a, b, .. } => {
                let mut links = self.links();
                links.forget_below(root, a);
                links.forget_below(root, b);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The files of a directory that appeared (made, or moved in: `cp -a`, a release
    /// moved into place) are files seen, as one written is: one with one name is
    /// remembered among the recent ones, so that a link made to it later knows this
    /// name (seed 358 of `all,linkwrites`); one with several has its names learned.
    /// With -H each file with other known names (`cp -a` keeps the links among what
    /// it copies) is returned, its names to go together. One lstat per entry found.
    fn found_in(
        &self,
        root: usize,
        route: &Route,
        found: &[PathBuf],
        looks: &Looks,
    ) -> Vec<Linked> {
        let mut multi: Vec<(FileId, PathBuf)> = Vec::new();
        {
            let mut links = self.links();
            for path in found {
                let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                if filter::skip(&route.excludes, name, path, false) {
                    continue;
                }
                match regular_file(std::fs::symlink_metadata(route.root.join(path)).ok()) {
                    Some((id, n)) if n > 1 => {
                        if !links.learn((root, path.clone()), id) && links.first_full() {
                            warn_full();
                        }
                        multi.push((id, path.clone()));
                    }
                    Some((id, _)) => {
                        links.forget(&root, path);
                        links.single((root, path.clone()), id);
                    }
                    None => {}
                }
            }
        }
        if !self.hard_links {
            return Vec::new();
        }
        let mut seen: HashSet<FileId> = HashSet::new();
        multi
            .into_iter()
            .filter(|(id, _)| seen.insert(*id))
            .filter_map(|(id, path)| {
                let others = self.links().others(&(root, path.clone()), id);
                let others = self.still_linked(root, id, others, looks);
                (!others.is_empty()).then_some(Linked {
                    name: path,
                    others,
                    wrote: false,
                })
            })
            .collect()
    }

    /// Of `others` (names known for the file `id`), those of root `root` that are
    /// still that file; those of other roots are queued for their remotes here. What
    /// is not that file any more is forgotten.
    fn still_linked(
        &self,
        root: usize,
        id: FileId,
        others: Vec<(usize, PathBuf)>,
        looks: &Looks,
    ) -> Vec<PathBuf> {
        let mut here = Vec::new();
        let mut elsewhere: HashMap<usize, Vec<Item>> = HashMap::new();
        for (r, p) in others {
            let Some(route) = self.routes.get(r) else {
                continue;
            };
            let now = regular_file(looks.lstat(route.root.join(&p)));
            if now.and_then(|(id, n)| (n > 1).then_some(id)) != Some(id) {
                self.links().forget(&r, &p);
            } else if r == root {
                here.push(p);
            } else {
                elsewhere
                    .entry(r)
                    .or_default()
                    .push(Item::Path(p.into(), false));
            }
        }
        for (r, items) in elsewhere {
            if let Some(route) = self.routes.get(r) {
                self.queue.push_batch(&route.remotes, &items);
            }
        }
        here
    }

    /// What one change asks of the remotes.
    fn decide(&self, route: &Route, change: Change, looks: &Looks) -> Decision {
        let (root, excludes) = (&route.root, &route.excludes);
        let ev = &self.events;
        match change {
            Change::File { path, op } => {
                let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                if filter::skip(excludes, name, &path, false) {
                    return Decision::Drop;
                }
                let wanted = match op {
                    Op::ClosedWrite => ev.close_write,
                    Op::Modified => ev.modify,
                    Op::Attrib => ev.attrib,
                    Op::MovedIn => ev.move_to,
                    Op::Deleted => ev.delete,
                    Op::MovedOut => ev.move_from && ev.delete,
                    Op::Created if ev.create_file => true,
                    Op::Created => match never_closed(looks.lstat(root.join(&path))) {
                        Some(true) => true,
                        // A regular file: its CLOSE_WRITE is awaited (see UNCLOSED_AFTER).
                        Some(false) => return Decision::Unclosed(path),
                        None => false,
                    },
                };
                match (wanted, op) {
                    (true, Op::Deleted | Op::MovedOut) => Decision::Gone(path, false),
                    (true, _) => Decision::Push(path, false),
                    (false, _) => Decision::Drop,
                }
            }
            Change::DirIn { moved, found, .. } => {
                if (moved && ev.move_to) || (!moved && ev.create_folder) {
                    Decision::PushAll(found)
                } else {
                    Decision::Drop
                }
            }
            Change::DirOut { path, moved } => {
                if ev.delete && (ev.move_from || !moved) {
                    Decision::Gone(path, true)
                } else {
                    Decision::Drop
                }
            }
            Change::DirMeta { path, op } => {
                // A directory's own attributes whatever `<attrib>` says (see `watch_mask`
                // in `watch/inotify.rs`): pushed alone, `--dirs`, they land as they are.
                if op == Op::Attrib || (op == Op::Modified && ev.modify) {
                    Decision::Push(path, false)
                } else {
                    Decision::Drop
                }
            }
            Change::Renamed {
                from,
                to,
                dir,
                found,
            } => self.renamed(excludes, from, to, dir, found),
            Change::Exchanged {
                a,
                b,
                a_dir,
                b_dir,
                found,
            } => self.exchanged(excludes, [(a, a_dir), (b, b_dir)], found),
            // Lost events, a new root, or what only an unmounted filesystem held: only a
            // full sync makes the remotes equal again.
            Change::Overflow | Change::RootBack | Change::Unmounted { .. } => Decision::Full,
            // What is on a new mount arrives like a new directory's contents, whatever
            // the `<inotify>` switches: it was never pushed. With deletes on, what the
            // mount covers must also leave the remotes, which takes a full sync.
            // Paths that exist and were never pushed (their directory's walk failed
            // for a while): pushed whatever the `<inotify>` switches say.
            Change::Rewalked { found, .. } => Decision::PushAll(found),
            Change::Mounted { found, .. } => {
                if ev.delete {
                    Decision::Full
                } else {
                    Decision::PushAll(found)
                }
            }
        }
    }
}

impl Intake {
    /// A rename inside the tree travels as one when both names are mirrored and the
    /// switches ask for both halves (and for deletes); otherwise as the plain changes
    /// the two halves stand for: the delete of `from`, the push of `to` (and of what
    /// is below it). A temp or excluded name on one side is only the other half.
    fn renamed(
        &self,
        excludes: &Excludes,
        from: PathBuf,
        to: PathBuf,
        dir: bool,
        found: Vec<PathBuf>,
    ) -> Decision {
        let ev = &self.events;
        let mirrored = |p: &Path| {
            let name = p.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            !filter::skip(excludes, name, p, dir)
        };
        let (from_in, to_in) = (mirrored(&from), mirrored(&to));
        if from_in && to_in && ev.move_from && ev.move_to && ev.delete {
            return Decision::Items(vec![Item::Rename {
                from,
                to,
                dir,
                below: found,
            }]);
        }
        let mut items = Vec::new();
        if from_in && ev.move_from && ev.delete {
            items.push(Item::Gone(from, dir));
        }
        if to_in && ev.move_to {
            if dir {
                items.extend(found.into_iter().map(|p| Item::Path(p.into(), false)));
            } else {
                items.push(Item::Path(to.into(), false));
            }
        }
        Decision::Items(items)
    }
}

impl Intake {
    /// Two entries swapped places: nothing is gone, and what the remote holds at either
    /// path (below it too) is the other's. Both paths and everything below them are
    /// pushed as they are now (if the switches ask for moves in); a directory as its
    /// listing ([`Entry::listing`]: with deletes on, what the remote holds there beyond
    /// it is deleted, see `queue`), never as a rename, which would take one side for new
    /// and the other for gone. A side with a temp or excluded name is not mirrored.
    fn exchanged(
        &self,
        excludes: &Excludes,
        sides: [(PathBuf, bool); 2],
        found: Vec<PathBuf>,
    ) -> Decision {
        if !self.events.move_to {
            return Decision::Drop;
        }
        Decision::Items(exchange_items(excludes, sides, found))
    }
}

/// What an exchange of two mirrored paths queues: see [`Intake::exchanged`].
fn exchange_items(
    excludes: &Excludes,
    sides: [(PathBuf, bool); 2],
    found: Vec<PathBuf>,
) -> Vec<Item> {
    let mut items = Vec::with_capacity(found.len() + 2);
    for (path, dir) in &sides {
        let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        if !filter::skip(excludes, name, path, *dir) {
            items.push(Item::Path(listing(path.clone(), *dir), false));
        }
    }
    // What the walks found below a side is mirrored (they skip what is not). Which of it
    // is a directory is not known here: every path goes as a listing, and the push
    // drops the `/` of what is not a directory.
    items.extend(
        found
            .into_iter()
            .filter(|p| sides.iter().all(|(side, _)| side != p))
            .map(|p| Item::Path(listing(p, true), false)),
    );
    items
}

/// Does `change` touch nothing but the agent's own files (see `filter::Excludes::is_own`)?
/// A rename between an own file and another name is not: its other side is a change.
fn own_only(excludes: &Excludes, change: &Change) -> bool {
    if excludes.own().is_empty() {
        return false;
    }
    match change {
        Change::File { path, .. }
        | Change::DirOut { path, .. }
        | Change::DirMeta { path, .. }
        | Change::DirIn { path, .. } => excludes.is_own(path),
        Change::Renamed { from, to, .. } => excludes.is_own(from) && excludes.is_own(to),
        _ => false,
    }
}

/// `path` as its listing if it is a directory (not the top), else plain.
fn listing(path: PathBuf, dir: bool) -> Entry {
    let listing = dir && !path.as_os_str().is_empty();
    Entry::with_listing(path, listing)
}

/// A multi-linked file's name a change named, and its other known names (see
/// [`Intake::linked`]).
struct Linked {
    name: PathBuf,
    others: Vec<PathBuf>,
    /// The change was a write (or an attribute change) through `name`.
    wrote: bool,
}

enum Decision {
    Drop,
    /// A regular file created while `<createFile>` is off: pushed at its CLOSE_WRITE,
    /// or after [`UNCLOSED_AFTER`] without one.
    Unclosed(PathBuf),
    /// One path; `true` when it is a directory that is gone.
    Push(PathBuf, bool),
    /// A path deleted or moved out (`true`: a directory): counted by the brake.
    Gone(PathBuf, bool),
    PushAll(Vec<PathBuf>),
    Items(Vec<Item>),
    Full,
}

/// The (device, inode) of `abs` when it is a regular file with more than one link.
fn linked_file(abs: &Path) -> Option<FileId> {
    regular_file(std::fs::symlink_metadata(abs).ok()).and_then(|(id, n)| (n > 1).then_some(id))
}

/// The (device, inode) and link count of an entry (`m`, its lstat) when it is a
/// regular file.
fn regular_file(m: Option<Metadata>) -> Option<(FileId, u64)> {
    let m = m?;
    m.file_type()
        .is_file()
        .then(|| ((m.dev(), m.ino()), m.nlink()))
}

/// The most entries of a directory [`neighbours`] reads.
const NEIGHBOURS: usize = 65_536;

/// A name of a multi-linked file `id` seen for the first time or renamed into its
/// directory (`path`, with `nlink` links) whose other names are not all known: its
/// directory's entries with the same inode number are learned too (`ln a c` beside its
/// first name, or `ln d a/b; mv a/b c`). A file no event
/// showed since the agent started (sent by a full sync, queued by a start's catch-up)
/// was not known by its first name, and a link made to it went alone: a file of its
/// own on the remotes with -H, the first name stale after a write through the link
/// without (seeds 319, 391, 662 of `all,linkwrites`). Reads the inode numbers of the
/// directory's entries (an lstat only for a match), at most [`NEIGHBOURS`] of them.
fn neighbours(links: &mut Links, root: usize, route: &Route, path: &Path, id: FileId, nlink: u64) {
    let name = (root, path.to_path_buf());
    if links.others(&name, id).len() as u64 + 1 >= nlink {
        return;
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let Ok(entries) = std::fs::read_dir(route.root.join(dir)) else {
        return;
    };
    for e in entries.take(NEIGHBOURS).flatten() {
        if e.ino() != id.1 {
            continue;
        }
        let rel = dir.join(e.file_name());
        if rel == path || filter::skip(&route.excludes, e.file_name().as_bytes(), &rel, false) {
            continue;
        }
        if linked_file(&route.root.join(&rel)) == Some(id) {
            links.learn((root, rel), id);
        }
    }
}

/// Says once that the names of multi-linked files are no longer all kept.
fn warn_full() {
    log::warn!(
        "more than {} names of hard-linked files seen: the names of further ones are not \
         kept, and a write through one of them may leave its other names as they were on \
         the remotes; a full sync (-r, a <crontab> full sync, --replay of a full sync) \
         levels them (docs/guide.md, \"Hard links\")",
        super::links::MAX_NAMES
    );
}

/// A created entry that will never see a CLOSE_WRITE: a symlink, a device or fifo,
/// or a hard link to an existing file. Without this they would only arrive with the
/// next full sync.
/// `None`: gone already.
fn never_closed(m: Option<Metadata>) -> Option<bool> {
    let m = m?;
    Some(!m.file_type().is_file() || m.nlink() > 1)
}

/// The count of a root's entries (after its rules) that a full sync asked by the
/// watcher (an overflow, the root found again) is checked with
/// (`Ledger::push_full_checked`), `holds_names`: the root's directory is not empty.
/// A count of 0 holds the full sync at once as one of an empty root; but when the
/// directory holds names its rules all leave out (an include-only list, `+ /public/***`
/// and `- *`, in a tree without `public`), such a full sync deletes nothing on a remote
/// that holds nothing they select: it is not counted (`None`), and judged as it runs,
/// deleting nothing and held only if rsync says it skipped deletes
/// (`Mirror::full_of_empty_root`).
pub(crate) fn counted_for_brake(entries: Option<usize>, holds_names: bool) -> Option<usize> {
    entries.filter(|&n| n > 0 || !holds_names)
}

#[cfg(test)]
mod tests;
