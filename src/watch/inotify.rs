//! Watching a root with inotify: one watch per directory, events turned into
//! [`Change`]s. The loop around it, the root's health and the mounts below it are the
//! shared event loop's (`event_loop.rs`).
//!
//! The kernel watches directories, not trees, so this module keeps the tree (`tree.rs`:
//! each directory a node with its parent, its name and its watch descriptor, found by
//! descriptor or by path; a renamed directory's node moves with what is below it), a
//! new directory is watched first and walked second (files written into it before its
//! watch existed are found by the walk, files written after arrive as events), renames
//! are paired by cookie so a moved directory keeps its watches, a directory moved out of
//! the tree loses them, and a queue overflow re-walks the tree and asks for a full sync,
//! because events were lost. A directory a move lands on is set aside with its watches,
//! not dropped: in an exchange (RENAME_EXCHANGE) the next move takes it away to the
//! other path, and the two renames go out as one [`Change::Exchanged`].
//!
//! The root itself is watched for its own removal and rename (DELETE_SELF, MOVE_SELF,
//! IGNORED) too, so a root that leaves is noticed at once, not at the next check. A
//! mount point unmounted is walked again (what it covered is visible again).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::change::pair_exchanges;
use super::event_loop::{self, Mounts, RootWatch, WatchBackend};
use super::limits::{count_dirs, raise_limit, read_limit, suggested_limit};
use super::{dir_id, rewalk, tree, walk, Change, Op, WatchError};
use crate::config::Events;
use crate::filter::{self, Excludes};
use crate::sys::mounts;

/// While a tree's watches are set up, a progress line this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One kernel event, copied out of the read buffer.
struct RawEvent {
    wd: WatchDescriptor,
    mask: EventMask,
    cookie: u32,
    name: Option<OsString>,
}

/// A directory renamed away whose MOVED_TO has not been seen (yet).
struct MovedDir {
    rel: PathBuf,
    wds: Vec<WatchDescriptor>,
}

/// A watched directory a move landed on, set aside (detached, watches kept) under the
/// path it had: the first half of an exchange (renameat2 RENAME_EXCHANGE: `b` moved to
/// `a`'s place, and `a` moves to `b`'s next) or a rename over an empty directory (the
/// kernel then drops its watch).
struct Aside {
    moved: MovedDir,
    /// Reads handled since it was set aside.
    reads: u8,
}

/// The watches of one root.
pub struct InotifyTree {
    inotify: Inotify,
    /// The root's path, health and mounts.
    root: RootWatch,
    events: Events,
    /// The watched directories, by descriptor and by relative path.
    tree: tree::DirTree<WatchDescriptor>,
    /// While a renamed directory's new place is walked: the descriptors the walk found.
    seen: Option<HashSet<i32>>,
    /// Directories a move landed on: the next move away of that path (the other half
    /// of an exchange, in this read or the next) takes them along; otherwise they are
    /// dropped after the next read, as their watches are gone or going.
    aside: Vec<Aside>,
    /// The root's own watch (it also asks for DELETE_SELF and MOVE_SELF).
    root_wd: Option<WatchDescriptor>,
    /// Directories whose watch or listing failed for a reason that passes.
    rewalks: rewalk::Rewalks,
}

/// The mask every directory is watched with. Creates, deletes and moves are always
/// watched (the tree bookkeeping needs them); the `<inotify>` switches decide what
/// becomes a push.
fn watch_mask(events: &Events) -> WatchMask {
    let mut m = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK;
    if events.attrib {
        m |= WatchMask::ATTRIB;
    }
    if events.modify {
        m |= WatchMask::MODIFY;
    }
    m
}

impl InotifyTree {
    /// Creates the inotify instance and watches the whole tree under `root`.
    /// `events`: which optional kernel events (attrib, modify) to ask for.
    #[cfg(test)]
    pub fn new(
        root: PathBuf,
        root_id: usize,
        excludes: Excludes,
        events: Events,
    ) -> Result<InotifyTree, WatchError> {
        Self::new_counted(
            root,
            root_id,
            excludes,
            events,
            Arc::new(AtomicUsize::new(0)),
        )
    }

    /// [`InotifyTree::new`], counting its watches into `counter` (shared by all roots) from
    /// the first one on: status shows a large tree's count while it is set up.
    pub fn new_counted(
        root: PathBuf,
        root_id: usize,
        excludes: Excludes,
        events: Events,
        counter: Arc<AtomicUsize>,
    ) -> Result<InotifyTree, WatchError> {
        let inotify = Inotify::init().map_err(|err| WatchError::Io {
            dir: root.clone(),
            err,
        })?;
        let mut w = InotifyTree {
            inotify,
            root: RootWatch::new(root, root_id, excludes, counter),
            events,
            tree: tree::DirTree::default(),
            seen: None,
            aside: Vec::new(),
            root_wd: None,
            rewalks: rewalk::Rewalks::default(),
        };
        let before = dir_id(&w.root.path);
        w.add_whole_tree()?;
        w.watch_root_self()?;
        event_loop::start(&mut w, before);
        Ok(w)
    }

    /// Watches the root itself for its own removal and rename as well (same descriptor:
    /// a second add on one inode replaces the mask).
    fn watch_root_self(&mut self) -> Result<(), WatchError> {
        let mask = watch_mask(&self.events) | WatchMask::DELETE_SELF | WatchMask::MOVE_SELF;
        let wd = self
            .inotify
            .watches()
            .add(&self.root.path, mask)
            .map_err(|err| WatchError::Io {
                dir: self.root.path.clone(),
                err,
            })?;
        self.map(wd.clone(), Path::new(""));
        self.root_wd = Some(wd);
        Ok(())
    }

    fn parent_watched(&self, rel: &Path) -> bool {
        rel.parent().is_some_and(|p| self.tree.contains(p))
    }

    /// Forgets the watches at and below `rel` and watches what the path shows now.
    fn rewalk(&mut self, rel: &Path, found: Option<&mut Vec<PathBuf>>) {
        for wd in self.tree.remove_subtree(rel) {
            // Gone already if its filesystem was unmounted.
            let _ = self.inotify.watches().remove(wd);
        }
        if let Err(e) = self.add_tree(rel, found) {
            log::error!("{e}");
        }
    }

    /// Watches the whole tree (start-up, and after an overflow), in parallel. As root,
    /// raises the kernel's watch limit once if the tree needs more.
    fn add_whole_tree(&mut self) -> Result<(), WatchError> {
        let mask = watch_mask(&self.events);
        let mut walked = self.walk_tree(mask);
        // Other watchers of the same user may take watches meanwhile: raise again while
        // raising helps (each raise at least doubles the limit).
        for _ in 0..8 {
            if !(walked.limit && self.raise_watch_limit()) {
                break;
            }
            walked = self.walk_tree(mask);
        }
        if let Some(err) = walked.root_error {
            return Err(WatchError::Io {
                dir: self.root.path.clone(),
                err,
            });
        }
        event_loop::report_count(self);
        let now = Instant::now();
        for dir in &walked.retry {
            self.rewalks.note(dir, now);
        }
        if walked.limit {
            return Err(WatchError::Limit {
                dir: self.root.path.clone(),
                watched: self.tree.len(),
                needed: count_dirs(&self.root.path, &self.root.excludes),
            });
        }
        Ok(())
    }

    /// The parallel walk of the whole tree, recorded in the tree as it goes. The shared
    /// counter follows it (status shows the count while a large tree is set up), and
    /// every [`PROGRESS_EVERY`] a line says how far it is.
    fn walk_tree(&mut self, mask: WatchMask) -> walk::Walked {
        let InotifyTree {
            inotify,
            root:
                RootWatch {
                    path: root,
                    excludes,
                    counter,
                    reported,
                    ..
                },
            tree,
            ..
        } = self;
        let mut progress = walk::Progress::new(Instant::now(), PROGRESS_EVERY);
        let mut since_check = 0u32;
        walk::watch_tree(inotify, root, mask, excludes, |wd, dir| {
            for old in tree.insert(&dir, wd) {
                let _ = inotify.watches().remove(old);
            }
            since_check += 1;
            if since_check >= 256 {
                since_check = 0;
                event_loop::report_into(counter, reported, tree.len());
                if let Some(secs) = progress.due(Instant::now()) {
                    log::info!(
                        "watching {}: {} directories so far ({secs:.0}s)",
                        root.display(),
                        tree.len()
                    );
                }
            }
        })
    }

    /// A descriptor known at another path moves here with what is below it (a renamed
    /// directory); another directory recorded at `dir` is forgotten and unwatched.
    fn map(&mut self, wd: WatchDescriptor, dir: &Path) {
        if let Some(seen) = self.seen.as_mut() {
            seen.insert(wd.get_watch_descriptor_id());
        }
        for old in self.tree.insert(dir, wd) {
            // Its directory is gone or elsewhere: the kernel may have dropped it already.
            let _ = self.inotify.watches().remove(old);
        }
    }

    /// Watches `rel` and every directory below it, depth first. With `found`, also
    /// collects every path that should be pushed (the directories and the files).
    fn add_tree(
        &mut self,
        rel: &Path,
        mut found: Option<&mut Vec<PathBuf>>,
    ) -> Result<(), WatchError> {
        let mask = watch_mask(&self.events);
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let abs = self.root.path.join(&dir);
            let mut added = self.inotify.watches().add(&abs, mask);
            if matches!(&added, Err(e) if e.raw_os_error() == Some(libc::ENOSPC))
                && self.raise_watch_limit()
            {
                added = self.inotify.watches().add(&abs, mask);
            }
            match added {
                Ok(wd) => self.map(wd, &dir),
                Err(err) => match err.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => continue, // gone already
                    Some(libc::ENOSPC) => {
                        return Err(WatchError::Limit {
                            dir: abs,
                            watched: self.tree.len(),
                            needed: count_dirs(&self.root.path, &self.root.excludes),
                        })
                    }
                    _ if dir.as_os_str().is_empty() => {
                        return Err(WatchError::Io { dir: abs, err });
                    }
                    _ if rewalk::is_transient(&err) => {
                        self.note_rewalk(&dir, &abs, "watch", &err);
                        continue;
                    }
                    _ => {
                        log::warn!(
                            "cannot watch {}: {err}; its changes will not be seen",
                            abs.display()
                        );
                        continue;
                    }
                },
            }
            if let Some(f) = found.as_deref_mut() {
                if !dir.as_os_str().is_empty() {
                    f.push(dir.clone());
                }
            }
            let entries = match std::fs::read_dir(&abs) {
                Ok(e) => e,
                Err(err) => {
                    if rewalk::is_transient(&err) {
                        self.note_rewalk(&dir, &abs, "list", &err);
                    } else if err.kind() != io::ErrorKind::NotFound {
                        log::warn!("cannot list {}: {err}", abs.display());
                    }
                    continue;
                }
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let child = dir.join(&name);
                // DirEntry::file_type falls back to lstat where d_type is DT_UNKNOWN.
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if filter::skip(&self.root.excludes, name.as_bytes(), &child, is_dir) {
                    continue;
                }
                if is_dir {
                    stack.push(child);
                } else if let Some(f) = found.as_deref_mut() {
                    f.push(child);
                }
            }
        }
        Ok(())
    }

    /// `dir` could not be watched or listed for a reason that passes: walk it again later.
    fn note_rewalk(&mut self, dir: &Path, abs: &Path, what: &str, err: &io::Error) {
        self.rewalks.note(dir, Instant::now());
        log::warn!(
            "cannot {what} {}: {err}; walking it again in a moment ({} directories wait for that)",
            abs.display(),
            self.rewalks.len()
        );
    }

    /// Walks again the directories whose pause is over; what each walk finds is pushed.
    fn retry_rewalks(&mut self) -> Vec<Change> {
        if self.root.lost.is_some() || self.rewalks.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut list = std::mem::take(&mut self.rewalks);
        let done = rewalk::retry_due(&mut list, now, |list, rel| {
            if !rel.as_os_str().is_empty() && !self.parent_watched(rel) {
                return Ok(Vec::new()); // gone, or moved away with its parent
            }
            let mut found = Vec::new();
            let mut walked = self.add_tree(rel, Some(&mut found));
            if rel.as_os_str().is_empty() {
                // add_tree watched the root with the plain mask: ask for its own
                // removal and rename again.
                walked = walked.and_then(|()| self.watch_root_self());
            }
            if let Err(e) = walked {
                log::error!("{e}");
            }
            list.absorb(std::mem::take(&mut self.rewalks));
            Ok(found)
        });
        self.rewalks = list;
        let mut out = Vec::new();
        for (path, found) in done {
            if found.is_empty() {
                continue;
            }
            log::warn!(
                "walked {} again: pushing its {} entries ({} directories still wait)",
                self.root.path.join(&path).display(),
                found.len(),
                self.rewalks.len()
            );
            out.push(Change::Rewalked { path, found });
        }
        out
    }

    /// As root, raises fs.inotify.max_user_watches so the whole tree fits; true if raised.
    fn raise_watch_limit(&self) -> bool {
        if !crate::sys::is_root() {
            return false;
        }
        let needed = count_dirs(&self.root.path, &self.root.excludes) as u64;
        let current = read_limit("max_user_watches").unwrap_or(8192);
        match raise_limit("max_user_watches", suggested_limit(current, needed)) {
            Ok(Some((from, to))) => {
                log::warn!(
                    "raised fs.inotify.max_user_watches from {from} to {to}: {} needs {needed} directories watched",
                    self.root.path.display()
                );
                true
            }
            Ok(None) => false,
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    /// Detaches a directory and everything below it from the tree (deleted or renamed
    /// away); their descriptors stay known under the old paths until IN_IGNORED or a
    /// MOVED_TO.
    fn detach_tree(&mut self, rel: &Path) -> Vec<WatchDescriptor> {
        self.tree.detach(rel)
    }

    /// A move lands on `rel`: a watched directory there is set aside, not dropped (see
    /// [`Aside`]).
    fn set_aside(&mut self, rel: &Path) {
        if !self.tree.contains(rel) {
            return;
        }
        let wds = self.detach_tree(rel);
        if let Some(i) = self.aside.iter().position(|a| a.moved.rel == rel) {
            let old = self.aside.swap_remove(i);
            self.unwatch(old.moved, None);
        }
        self.aside.push(Aside {
            moved: MovedDir {
                rel: rel.to_path_buf(),
                wds,
            },
            reads: 0,
        });
    }

    /// The descriptors of the directory set aside at `rel`, if one is and it is still
    /// watched.
    fn take_aside(&mut self, rel: &Path) -> Option<Vec<WatchDescriptor>> {
        let i = self.aside.iter().position(|a| {
            a.moved.rel == rel
                && a.moved
                    .wds
                    .first()
                    .is_some_and(|w| self.tree.is_detached(w.get_watch_descriptor_id()))
        })?;
        Some(self.aside.swap_remove(i).moved.wds)
    }

    /// After each read that held events: what was set aside a read ago and not taken is
    /// dropped.
    fn expire_aside(&mut self) {
        if self.aside.is_empty() {
            return;
        }
        let (old, keep): (Vec<Aside>, Vec<Aside>) = std::mem::take(&mut self.aside)
            .into_iter()
            .partition(|a| a.reads >= 1);
        self.aside = keep;
        for a in &mut self.aside {
            a.reads += 1;
        }
        for a in old {
            self.unwatch(a.moved, None);
        }
    }

    fn forget_wd(&mut self, wd: &WatchDescriptor) {
        if let Some(path) = self.tree.remove_wd(wd.get_watch_descriptor_id()) {
            if path.as_os_str().is_empty() {
                log::error!(
                    "the watch root {} was removed or unmounted; nothing more will be seen there",
                    self.root.path.display()
                );
            }
        }
    }

    /// Removes watches that still point into a tree that has left (moved out), and,
    /// with `seen` (the walk of its new place), those that came along but were not
    /// found there again (excluded now, gone).
    fn unwatch(&mut self, moved: MovedDir, seen: Option<&HashSet<i32>>) {
        for wd in moved.wds {
            let id = wd.get_watch_descriptor_id();
            let mut gone = self.tree.remove_wd_if_below(id, &moved.rel);
            if let Some(seen) = seen {
                if !seen.contains(&id) {
                    gone.extend(self.tree.remove_wd_tree(id));
                }
            }
            for wd in gone {
                // The directory may be gone already; the kernel then dropped the watch.
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    fn overflow(&mut self) {
        if self.root.lost.is_some() {
            return; // watched whole, and fully synced, once it is back
        }
        log::warn!(
            "inotify queue overflow under {}: events were lost; re-walking the tree and running a full sync",
            self.root.path.display()
        );
        // IN_IGNORED and rename events may be among the lost ones: rebuild the map from
        // the tree as it is now, and drop watches on whatever is no longer in it.
        let old = self.tree.take_all();
        self.aside.clear();
        if let Err(e) = self.add_whole_tree().and_then(|()| self.watch_root_self()) {
            log::error!("{e}");
        }
        for wd in old {
            if !self.tree.has_wd(wd.get_watch_descriptor_id()) {
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    /// Handles one batch of events as read from the kernel; returns the changes.
    fn handle(&mut self, batch: Vec<RawEvent>) -> Vec<Change> {
        let read_any = !batch.is_empty();
        let mut out = Vec::with_capacity(batch.len());
        let mut moved_away: HashMap<u32, MovedDir> = HashMap::new();
        // Where the MOVED_FROM of each cookie went in `out`, to pair it with its MOVED_TO.
        let mut moved_from: HashMap<u32, usize> = HashMap::new();
        for e in batch {
            if e.mask.contains(EventMask::Q_OVERFLOW) {
                self.overflow();
                out.push(Change::Overflow);
                continue;
            }
            if self.root_wd.as_ref() == Some(&e.wd) {
                if e.mask.contains(EventMask::MOVE_SELF) {
                    event_loop::lose_root(self, "renamed or moved away");
                    continue;
                }
                if e.mask
                    .intersects(EventMask::DELETE_SELF | EventMask::IGNORED)
                {
                    event_loop::lose_root(self, "removed (or its filesystem unmounted)");
                    continue;
                }
            }
            if e.mask.contains(EventMask::IGNORED) {
                self.forget_wd(&e.wd);
                continue;
            }
            let (Some(dir), Some(name)) = (
                self.tree.path_of(e.wd.get_watch_descriptor_id()),
                e.name.as_ref(),
            ) else {
                continue;
            };
            let rel = dir.join(name);
            if !e.mask.contains(EventMask::ISDIR) {
                if let Some(op) = op_of(e.mask) {
                    let change = Change::File { path: rel, op };
                    pair_rename(&mut out, &mut moved_from, e.cookie, change);
                }
                continue;
            }
            // Excluded and temp directories are never watched, so never reported.
            if filter::skip(&self.root.excludes, name.as_bytes(), &rel, true) {
                continue;
            }
            if let Some(c) = self.handle_dir(e.mask, e.cookie, rel, &mut moved_away) {
                pair_rename(&mut out, &mut moved_from, e.cookie, c);
            }
        }
        for (_, moved) in moved_away {
            self.unwatch(moved, None);
        }
        if read_any {
            self.expire_aside();
        }
        pair_exchanges(&mut out);
        out
    }

    fn handle_dir(
        &mut self,
        mask: EventMask,
        cookie: u32,
        rel: PathBuf,
        moved_away: &mut HashMap<u32, MovedDir>,
    ) -> Option<Change> {
        if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            let moved = mask.contains(EventMask::MOVED_TO);
            let renamed = if moved {
                moved_away.remove(&cookie)
            } else {
                None
            };
            let mut found = Vec::new();
            if renamed.is_some() {
                self.seen = Some(HashSet::new());
            }
            if moved {
                self.set_aside(&rel);
            }
            // A renamed directory's node moves here at its first watch, with what is
            // below it; the walk then finds most of it in place.
            if let Err(e) = self.add_tree(&rel, Some(&mut found)) {
                log::error!("{e}");
            }
            let seen = self.seen.take();
            // The tree was behind and the directory there was this one: it is back.
            self.aside.retain(|a| {
                a.moved
                    .wds
                    .first()
                    .is_some_and(|w| self.tree.is_detached(w.get_watch_descriptor_id()))
            });
            if let Some(moved) = renamed {
                // Watches that came along but were not found again (excluded now, gone).
                self.unwatch(moved, seen.as_ref());
            }
            Some(Change::DirIn {
                path: rel,
                moved,
                found,
            })
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            let moved = mask.contains(EventMask::MOVED_FROM);
            // The second half of an exchange: the directory that leaves `rel` is the one
            // set aside there, not the one that just came.
            let aside = if moved { self.take_aside(&rel) } else { None };
            let wds = match aside {
                Some(wds) => wds,
                None => self.detach_tree(&rel),
            };
            if moved {
                moved_away.insert(
                    cookie,
                    MovedDir {
                        rel: rel.clone(),
                        wds,
                    },
                );
            }
            Some(Change::DirOut { path: rel, moved })
        } else {
            op_of(mask).map(|op| Change::DirMeta { path: rel, op })
        }
    }
}

impl WatchBackend for InotifyTree {
    const NAME: &'static str = "inotify";
    const SET_UP: &'static str = "its watches were";

    fn root(&self) -> &RootWatch {
        &self.root
    }

    fn root_mut(&mut self) -> &mut RootWatch {
        &mut self.root
    }

    fn fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    fn read(&mut self, buffer: &mut [u8]) -> io::Result<Option<Vec<Change>>> {
        let batch: Vec<RawEvent> = match self.inotify.read_events(buffer) {
            Ok(events) => events
                .map(|e| RawEvent {
                    wd: e.wd,
                    mask: e.mask,
                    cookie: e.cookie,
                    name: e.name.map(|n| n.to_os_string()),
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.handle(batch)))
    }

    /// How many directories are watched.
    fn watched(&self) -> usize {
        self.tree.len()
    }

    fn describe(&self) -> String {
        format!("{} directories", self.watched())
    }

    fn watch_root(&mut self) -> Result<(), String> {
        self.add_whole_tree()
            .and_then(|()| self.watch_root_self())
            .map_err(|e| e.to_string())
    }

    /// Removes every watch of this root (they belong to a tree that left the path).
    fn unwatch_root(&mut self) {
        self.aside.clear();
        for wd in self.tree.take_all() {
            // Already gone with its directory: the kernel dropped it.
            let _ = self.inotify.watches().remove(wd);
        }
        self.root_wd = None;
        // The whole walk when the root is back finds them again.
        self.rewalks.clear();
    }

    /// The walk of the whole tree crossed into the mounts already; at the start a
    /// network filesystem among them is worth a warning.
    fn cover_mounts(&mut self, visible: &Mounts, start: bool) {
        if !start {
            return;
        }
        for (rel, m) in visible {
            if mounts::is_remote_fs(&m.fstype) {
                log::warn!(
                    "{} is a {} network filesystem: changes made by other hosts raise no inotify \
                     events and reach the remotes only with a full sync (<crontab>)",
                    self.root.path.join(rel).display(),
                    m.fstype
                );
            }
        }
    }

    fn mount_watched(&self, rel: &Path) -> bool {
        self.tree.contains(rel)
    }

    /// What the mount covered is watched again (if its parent is).
    fn unmounted(&mut self, rel: &Path) -> bool {
        if !self.parent_watched(rel) {
            return false;
        }
        self.rewalk(rel, None);
        log::warn!(
            "a filesystem was unmounted from {}: watching what it covered again and running a full sync",
            self.root.path.join(rel).display()
        );
        true
    }

    fn mounted(&mut self, rel: &Path, m: &mounts::Mount) -> Option<Vec<PathBuf>> {
        let abs = self.root.path.join(rel);
        if !self.parent_watched(rel) {
            log::error!(
                "a {} filesystem was mounted on {}, whose parent directory is not watched: \
                 its changes are not synced until a full sync",
                m.fstype,
                abs.display()
            );
            return None;
        }
        let mut found = Vec::new();
        self.rewalk(rel, Some(&mut found));
        if !self.tree.contains(rel) {
            log::error!(
                "a {} filesystem was mounted on {} but cannot be watched (see above): its \
                 changes are not synced until a full sync",
                m.fstype,
                abs.display()
            );
            return None;
        }
        if mounts::is_remote_fs(&m.fstype) {
            log::warn!(
                "{} is a {} network filesystem: changes made by other hosts raise no inotify \
                 events and reach the remotes only with a full sync (<crontab>)",
                abs.display(),
                m.fstype
            );
        }
        Some(found)
    }

    fn next_retry(&self) -> Option<Instant> {
        self.rewalks.next_at()
    }

    fn retry(&mut self) -> Vec<Change> {
        let out = self.retry_rewalks();
        self.root.health.set_rewalks(self.rewalks.len());
        out
    }
}

/// Appends a change to `out`; a move in whose MOVED_FROM (same cookie) is the change
/// just before it replaces that change with one [`Change::Renamed`]. Anything in
/// between (another event) leaves the two plain: they still make the remote equal.
fn pair_rename(
    out: &mut Vec<Change>,
    moved_from: &mut HashMap<u32, usize>,
    cookie: u32,
    change: Change,
) {
    let is_from = matches!(
        change,
        Change::File {
            op: Op::MovedOut,
            ..
        } | Change::DirOut { moved: true, .. }
    );
    if is_from && cookie != 0 {
        moved_from.insert(cookie, out.len());
        out.push(change);
        return;
    }
    let at = match change {
        Change::File {
            op: Op::MovedIn, ..
        }
        | Change::DirIn { moved: true, .. }
            if cookie != 0 =>
        {
            moved_from.remove(&cookie)
        }
        _ => None,
    };
    let from = match (at, out.last()) {
        (
            Some(i),
            Some(Change::File {
                path,
                op: Op::MovedOut,
            }),
        ) if i + 1 == out.len() => Some((path.clone(), false)),
        (Some(i), Some(Change::DirOut { path, moved: true })) if i + 1 == out.len() => {
            Some((path.clone(), true))
        }
        _ => None,
    };
    let renamed = match (from, change) {
        (Some((from, false)), Change::File { path, .. }) => Change::Renamed {
            from,
            to: path,
            dir: false,
            found: Vec::new(),
        },
        (Some((from, true)), Change::DirIn { path, found, .. }) => Change::Renamed {
            from,
            to: path,
            dir: true,
            found,
        },
        (_, change) => {
            out.push(change);
            return;
        }
    };
    out.pop();
    out.push(renamed);
}

/// The one operation an event stands for (a kernel event carries one).
fn op_of(mask: EventMask) -> Option<Op> {
    Some(if mask.contains(EventMask::CREATE) {
        Op::Created
    } else if mask.contains(EventMask::CLOSE_WRITE) {
        Op::ClosedWrite
    } else if mask.contains(EventMask::MODIFY) {
        Op::Modified
    } else if mask.contains(EventMask::ATTRIB) {
        Op::Attrib
    } else if mask.contains(EventMask::MOVED_TO) {
        Op::MovedIn
    } else if mask.contains(EventMask::MOVED_FROM) {
        Op::MovedOut
    } else if mask.contains(EventMask::DELETE) {
        Op::Deleted
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::event_loop::recv_until;
    use crate::watch::RootState;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_root_renamed_away_is_dropped_and_the_new_one_watched() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("www");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        let w = InotifyTree::new(root.clone(), 0, Excludes::default(), Events::default())
            .expect("watch");
        let health = w.health();
        assert_eq!(health.report().state, RootState::Ok);
        let stop = crate::sys::Stop::manual().expect("stop");
        let (tx, rx) = crossbeam_channel::unbounded();
        let fd = stop.fd();
        let t = std::thread::spawn(move || w.run(fd, tx));

        let old = d.path().join("www.old");
        std::fs::rename(&root, &old).expect("mv away");
        let deadline = Instant::now() + Duration::from_secs(30);
        while health.report().state != RootState::Missing && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10)); // poll interval, inside a deadline
        }
        assert_eq!(health.report().state, RootState::Missing);
        assert!(health.check().is_err());
        // Events of the old tree are no longer read as the root's.
        std::fs::write(old.join("sub/leak.txt"), "x").expect("write in the old tree");
        std::fs::create_dir_all(root.join("new")).expect("a new root");
        let mut seen = Vec::new();
        assert!(
            recv_until(&rx, &mut seen, |c| *c == Change::RootBack),
            "no RootBack: {seen:?}"
        );
        assert_eq!(health.report().state, RootState::Ok);
        assert_eq!(health.check(), Ok(()));
        std::fs::write(root.join("new/f.txt"), "x").expect("write in the new root");
        assert!(
            recv_until(
                &rx,
                &mut seen,
                |c| matches!(c, Change::File { path, .. } if path == Path::new("new/f.txt"))
            ),
            "the new root is not watched: {seen:?}"
        );
        assert!(
            !format!("{seen:?}").contains("leak"),
            "the old tree's event was read: {seen:?}"
        );
        stop.trigger();
        t.join().expect("watch thread");
    }

    #[test]
    fn a_renamed_tree_keeps_its_watches_and_a_tree_moved_out_loses_them() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("www");
        std::fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
        std::fs::create_dir_all(root.join("z")).expect("mkdir");
        let w = InotifyTree::new(root.clone(), 0, Excludes::default(), Events::default())
            .expect("watch");
        assert_eq!(w.watched(), 5, "root, a, a/b, a/b/c, z");
        let counter = Arc::clone(&w.root.counter);
        let stop = crate::sys::Stop::manual().expect("stop");
        let (tx, rx) = crossbeam_channel::unbounded();
        let fd = stop.fd();
        let t = std::thread::spawn(move || w.run(fd, tx));
        let mut seen = Vec::new();

        std::fs::rename(root.join("a"), root.join("z/a2")).expect("mv inside");
        // One read holds both halves of a rename in practice; two reads would make it a
        // move out and a move in, which re-watches the tree: the same outcome below.
        assert!(
            recv_until(&rx, &mut seen, |c| match c {
                Change::Renamed { to, dir: true, .. } => to == Path::new("z/a2"),
                Change::DirIn { path, .. } => path == Path::new("z/a2"),
                _ => false,
            }),
            "no rename: {seen:?}"
        );
        // The deepest directory is still watched, under its new path.
        std::fs::write(root.join("z/a2/b/c/f.txt"), "x").expect("write");
        assert!(
            recv_until(
                &rx,
                &mut seen,
                |c| matches!(c, Change::File { path, .. } if path == Path::new("z/a2/b/c/f.txt"))
            ),
            "the moved tree is not watched under its new path: {seen:?}"
        );
        assert_eq!(
            counter.load(Ordering::Relaxed),
            5,
            "no watch lost or doubled"
        );

        let outside = d.path().join("away");
        std::fs::rename(root.join("z/a2"), &outside).expect("mv out");
        assert!(
            recv_until(
                &rx,
                &mut seen,
                |c| matches!(c, Change::DirOut { path, moved: true } if path == Path::new("z/a2"))
            ),
            "no move out: {seen:?}"
        );
        std::fs::write(outside.join("b/c/leak.txt"), "x").expect("write outside");
        std::fs::write(root.join("z/after.txt"), "x").expect("write inside");
        assert!(
            recv_until(
                &rx,
                &mut seen,
                |c| matches!(c, Change::File { path, .. } if path == Path::new("z/after.txt"))
            ),
            "{seen:?}"
        );
        assert!(!format!("{seen:?}").contains("leak"), "{seen:?}");
        assert_eq!(counter.load(Ordering::Relaxed), 2, "root and z are left");
        stop.trigger();
        t.join().expect("watch thread");
    }

    #[test]
    fn a_mount_over_the_root_is_a_replaced_root() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("www");
        std::fs::create_dir_all(&root).expect("mkdir");
        let w = InotifyTree::new(root.clone(), 0, Excludes::default(), Events::default())
            .expect("watch");
        let stop = crate::sys::Stop::manual().expect("stop");
        let (tx, rx) = crossbeam_channel::unbounded();
        let fd = stop.fd();
        let t = std::thread::spawn(move || w.run(fd, tx));
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&root)
            .output();
        if !mounted.is_ok_and(|o| o.status.success()) {
            eprintln!("SKIP a_mount_over_the_root_is_a_replaced_root: mount is not permitted here");
            stop.trigger();
            t.join().expect("watch thread");
            return;
        }
        let mut seen = Vec::new();
        let back = recv_until(&rx, &mut seen, |c| *c == Change::RootBack);
        std::fs::write(root.join("on-tmpfs.txt"), "x").expect("write on the mount");
        let live = recv_until(
            &rx,
            &mut seen,
            |c| matches!(c, Change::File { path, .. } if path == Path::new("on-tmpfs.txt")),
        );
        let _ = std::process::Command::new("umount").arg(&root).status();
        stop.trigger();
        t.join().expect("watch thread");
        assert!(back, "no RootBack after a mount over the root: {seen:?}");
        assert!(live, "the mounted root is not watched: {seen:?}");
    }

    // Broke: after an exchange of two directories, the move onto the occupied path had
    // dropped the other directory's watches, and nothing below it raised an event.
    #[test]
    fn exchanged_directories_keep_their_watches_to_the_bottom() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("www");
        for dir in ["XA/sub/deep", "XB/bsub", "P/Q/qsub"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        let w = InotifyTree::new(root.clone(), 0, Excludes::default(), Events::default())
            .expect("watch");
        assert_eq!(w.watched(), 9);
        let counter = Arc::clone(&w.root.counter);
        let stop = crate::sys::Stop::manual().expect("stop");
        let (tx, rx) = crossbeam_channel::unbounded();
        let fd = stop.fd();
        let t = std::thread::spawn(move || w.run(fd, tx));
        let mut seen = Vec::new();
        let wrote = |seen: &mut Vec<Change>, rel: &str| {
            std::fs::write(root.join(rel), "x").expect("write");
            recv_until(
                &rx,
                seen,
                |c| matches!(c, Change::File { path, op: Op::ClosedWrite } if path == Path::new(rel)),
            )
        };

        crate::sys::rename_exchange(&root.join("XA"), &root.join("XB"))
            .expect("exchange in one parent");
        for rel in ["XB/sub/deep/f.txt", "XA/bsub/f.txt", "XA/f.txt", "XB/f.txt"] {
            assert!(wrote(&mut seen, rel), "{rel} is not watched: {seen:?}");
        }
        assert!(
            seen.iter().any(
                |c| matches!(c, Change::Exchanged { a, b, a_dir: true, b_dir: true, .. }
                if a == Path::new("XA") && b == Path::new("XB"))
            ),
            "{seen:?}"
        );
        crate::sys::rename_exchange(&root.join("XB/sub"), &root.join("P/Q"))
            .expect("exchange across parents");
        for rel in [
            "P/Q/deep/g.txt",
            "XB/sub/qsub/g.txt",
            "P/Q/g.txt",
            "XB/sub/g.txt",
        ] {
            assert!(wrote(&mut seen, rel), "{rel} is not watched: {seen:?}");
        }
        assert_eq!(
            counter.load(Ordering::Relaxed),
            9,
            "no watch lost or doubled"
        );
        stop.trigger();
        t.join().expect("watch thread");
    }

    // A directory renamed over an empty one (rename(2) replaces it): the one set aside
    // is dropped when its watch goes, and the one that came stays watched.
    #[test]
    fn a_directory_renamed_over_an_empty_one_replaces_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("www");
        std::fs::create_dir_all(root.join("a/sub")).expect("mkdir");
        std::fs::create_dir_all(root.join("b")).expect("mkdir");
        let w = InotifyTree::new(root.clone(), 0, Excludes::default(), Events::default())
            .expect("watch");
        assert_eq!(w.watched(), 4);
        let counter = Arc::clone(&w.root.counter);
        let stop = crate::sys::Stop::manual().expect("stop");
        let (tx, rx) = crossbeam_channel::unbounded();
        let fd = stop.fd();
        let t = std::thread::spawn(move || w.run(fd, tx));
        let mut seen = Vec::new();
        std::fs::rename(root.join("a"), root.join("b")).expect("rename over an empty dir");
        std::fs::write(root.join("b/sub/f.txt"), "x").expect("write");
        assert!(
            recv_until(
                &rx,
                &mut seen,
                |c| matches!(c, Change::File { path, op: Op::ClosedWrite } if path == Path::new("b/sub/f.txt"))
            ),
            "{seen:?}"
        );
        // One more read after the rename: the watch of the replaced directory is gone.
        std::fs::write(root.join("g.txt"), "x").expect("write");
        assert!(
            recv_until(
                &rx,
                &mut seen,
                |c| matches!(c, Change::File { path, op: Op::ClosedWrite } if path == Path::new("g.txt"))
            ),
            "{seen:?}"
        );
        assert_eq!(counter.load(Ordering::Relaxed), 3, "root, b, b/sub");
        stop.trigger();
        t.join().expect("watch thread");
    }
}
