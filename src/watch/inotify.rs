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

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchDescriptor, WatchMask};

use super::event_loop::{self, Mounts, RootWatch, WatchBackend};
use super::limits::{count_dirs, raise_limit, read_limit, suggested_limit};
use super::walk::open_walked;
use super::{dir_id, rewalk, tree, walk, Change, WatchError};
use crate::config::Events;
use crate::filter::{self, Excludes};
use crate::sys::{fsafe, mounts};

mod events;
use events::{Aside, RawEvent};

/// While a tree's watches are set up, a progress line this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
/// watched (the tree bookkeeping needs them), and attribute changes: a directory's own
/// (its mode, owner, times) are pushed whatever `<attrib>` says (`cp -a` makes a
/// directory `0700` and gives it its mode once its entries are in: pushed before that,
/// the remotes kept `0700`), a file's only with `<attrib start="true">` (dropped as
/// they are read otherwise, see `events.rs`); the `<inotify>` switches decide what
/// becomes a push.
fn watch_mask(events: &Events) -> WatchMask {
    let mut m = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK;
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
        for dir in &walked.too_long {
            self.root.health.note_too_long(
                dir,
                "it cannot be watched (File name too long): changes below it are not seen",
            );
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
    ///
    /// Each directory is opened from its parent's descriptor without following a link
    /// (the first one component by component, [`fsafe::open_dir_beneath`]), watched and
    /// listed through that descriptor: a directory swapped for a link meanwhile (`rm -rf
    /// d; ln -s /etc d`) yields nothing below it. Found by an outside test run: the
    /// watch was added and the directory listed by its path, so /etc was listed and
    /// its directories watched as entries of the tree, and the next start reported
    /// their deletes.
    fn add_tree(
        &mut self,
        rel: &Path,
        mut found: Option<&mut Vec<PathBuf>>,
    ) -> Result<(), WatchError> {
        // The descriptor's /proc path is a link to follow; what it leads to is the
        // directory opened.
        let mask = watch_mask(&self.events) - WatchMask::DONT_FOLLOW;
        let mut stack: Vec<(PathBuf, Option<Rc<File>>)> = vec![(rel.to_path_buf(), None)];
        while let Some((dir, parent)) = stack.pop() {
            let abs = self.root.path.join(&dir);
            let (opened, mut added) =
                match open_walked(&self.root.path, &dir, &abs, parent.as_deref()) {
                    Ok(fd) => {
                        let added = self.inotify.watches().add(fsafe::fd_path(&fd), mask);
                        (Some(fd), added)
                    }
                    Err(e) => (None, Err(e)),
                };
            if matches!(&added, Err(e) if e.raw_os_error() == Some(libc::ENOSPC))
                && self.raise_watch_limit()
            {
                if let Some(fd) = &opened {
                    added = self.inotify.watches().add(fsafe::fd_path(fd), mask);
                }
            }
            match added {
                Ok(wd) => self.map(wd, &dir),
                Err(err) => match err.raw_os_error() {
                    // Gone already, or a link (not a directory) now.
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => continue,
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
                    Some(libc::ENAMETOOLONG) => {
                        // A user's deep tree: neither watched nor mirrored, shown in status.
                        self.root.health.note_too_long(
                            &dir,
                            "it cannot be watched (File name too long): changes below it \
                             are not seen",
                        );
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
            let Some(fd) = opened else { continue };
            if let Some(f) = found.as_deref_mut() {
                if !dir.as_os_str().is_empty() {
                    f.push(dir.clone());
                }
            }
            let entries = match fsafe::read_dir_of(&fd) {
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
            let fd = Rc::new(fd);
            for entry in entries.flatten() {
                let name = entry.file_name();
                let child = dir.join(&name);
                // DirEntry::file_type falls back to lstat where d_type is DT_UNKNOWN.
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if filter::skip(&self.root.excludes, name.as_bytes(), &child, is_dir) {
                    continue;
                }
                if is_dir {
                    stack.push((child, Some(Rc::clone(&fd))));
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

#[cfg(test)]
mod tests;
