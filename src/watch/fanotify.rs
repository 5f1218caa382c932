//! Watching a root with fanotify: one filesystem mark per filesystem that holds the
//! tree (the root's, and each one mounted below it), whatever the number of
//! directories, so start-up costs no walk and no per-directory kernel memory.
//!
//! A filesystem mark sees the whole filesystem. Each event names its directory by file
//! handle; [`DirCache`] (`dircache.rs`) maps handles to paths below the root as a parent-link tree
//! (handle -> parent handle and name), so a directory rename is one update whatever
//! lies below it, and remembers the handles found outside the root, so an event there
//! costs one hash lookup. A handle seen for the first time is opened
//! (`open_by_handle_at` through a descriptor on its filesystem) and its path read from
//! `/proc/self/fd`; the outside answers are forgotten when a directory is renamed into
//! the tree. The changes sent are the inotify backend's, so nothing after the watcher
//! knows which backend runs.
//!
//! The loop around it, the root's health and the mounts below it are the shared event
//! loop's (`event_loop.rs`), as for inotify. Without a watch of the root itself, a
//! directory deleted or renamed outside the tree asks the loop to check the root after
//! that read. A new directory needs no walk (a filesystem mark has no window before a
//! watch exists), but one moved in from outside the tree is walked and sent whole.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::change::pair_exchanges;
use super::dircache::{DirCache, Lookup};
use super::event_loop::{self, excluded_dir, Mounts, RootWatch, WatchBackend};
use super::{dir_id, walk, Change, Op, WatchError};
use crate::config::Events;
use crate::filter::{self, Excludes};
use crate::sys::fanotify::{self as fan, Fid, Group, Side};
use crate::sys::mounts;

/// A filesystem with a mark: where to open a descriptor on it when a handle must be
/// opened (none is held: an open descriptor would keep the filesystem from being
/// unmounted).
struct Marked {
    path: PathBuf,
}

/// The fanotify watch of one root.
pub struct FanotifyTree {
    group: Group,
    mask: u64,
    /// The root's path, health and mounts.
    root: RootWatch,
    /// The root as the kernel spells it (symlinks resolved): paths read back from
    /// `/proc/self/fd` are compared with it.
    canonical: PathBuf,
    cache: DirCache,
    /// By fsid: the filesystems marked.
    marked: HashMap<[u8; 8], Marked>,
    /// A directory was deleted or renamed outside the tree: perhaps the root or one
    /// above it; its device and inode are checked after this read.
    check_root_soon: bool,
    /// `<attrib start="true">`: files' attribute changes are pushed (directories'
    /// always are).
    file_attrib: bool,
}

/// The mark's event mask: what the tree's bookkeeping needs, and the `<inotify>`
/// switches' optional events. `rename`: the kernel has FAN_RENAME (one event per
/// rename, both names in it).
fn mark_mask(events: &Events, rename: bool) -> u64 {
    let mut m = libc::FAN_CREATE
        | libc::FAN_DELETE
        | libc::FAN_CLOSE_WRITE
        | libc::FAN_ONDIR
        | libc::FAN_EVENT_ON_CHILD;
    m |= if rename {
        libc::FAN_RENAME
    } else {
        libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO
    };
    // A directory's own attribute changes are pushed whatever `<attrib>` says, a
    // file's only with it (see `watch_mask` in `inotify.rs`); dropped as read otherwise.
    m |= libc::FAN_ATTRIB;
    if events.modify {
        m |= libc::FAN_MODIFY;
    }
    m
}

/// Why fanotify cannot watch `root`.
fn unavailable(what: &str, root: &Path, e: &io::Error) -> WatchError {
    WatchError::Unavailable {
        dir: root.to_path_buf(),
        why: why_unavailable(what, e),
    }
}

/// Why fanotify cannot run, in words for the log (`what` failed with `e`).
fn why_unavailable(what: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "the process lacks CAP_SYS_ADMIN".to_owned(),
        Some(libc::EINVAL) if what == "init" => {
            "the kernel lacks FAN_REPORT_DFID_NAME (Linux 5.9 or later)".to_owned()
        }
        Some(libc::ENOSYS) => "the kernel has no fanotify".to_owned(),
        Some(libc::EXDEV) | Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) => {
            format!("its filesystem cannot be marked with file handles ({e})")
        }
        _ => format!("{what} failed: {e}"),
    }
}

/// A group reporting directory handles and names, and (Linux 5.17 and later) the
/// handle of the entry itself, so that a directory created, moved or deleted is known
/// by its handle without asking the kernel.
fn init() -> io::Result<Group> {
    match Group::init(libc::FAN_REPORT_DFID_NAME_TARGET) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Group::init(libc::FAN_REPORT_DFID_NAME),
        r => r,
    }
}

/// Opens a directory as a path descriptor (for handles and fstatfs), not following a
/// last symlink.
fn open_dir(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a directory to open handles through (`open_by_handle_at` refuses a path
/// descriptor as its mount descriptor).
fn open_mount_dir(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// The handle of the directory at `path`.
fn dir_handle(path: &Path) -> io::Result<Fid> {
    let f = open_dir(path)?;
    let fsid = fan::fsid_of(&f)?;
    fan::handle_at(&f, Path::new(""), fsid)
}

impl FanotifyTree {
    /// Creates the group and marks the filesystem of `root` and of every mount below
    /// it. Fails with [`WatchError::Unavailable`] when fanotify cannot watch this root.
    #[cfg(test)]
    pub fn new(
        root: PathBuf,
        root_id: usize,
        excludes: Excludes,
        events: Events,
    ) -> Result<FanotifyTree, WatchError> {
        Self::new_counted(
            root,
            root_id,
            excludes,
            events,
            Arc::new(AtomicUsize::new(0)),
        )
    }

    /// [`FanotifyTree::new`], counting its filesystem marks into `counter` (shared by
    /// all roots).
    pub fn new_counted(
        root: PathBuf,
        root_id: usize,
        excludes: Excludes,
        events: Events,
        counter: Arc<AtomicUsize>,
    ) -> Result<FanotifyTree, WatchError> {
        let group = init().map_err(|e| unavailable("init", &root, &e))?;
        let mut mask = mark_mask(&events, true);
        match group.mark_filesystem(&root, mask) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // No FAN_RENAME (before Linux 5.17): the two halves of a rename.
                mask = mark_mask(&events, false);
                group
                    .mark_filesystem(&root, mask)
                    .map_err(|e| unavailable("fanotify_mark", &root, &e))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(WatchError::Io { dir: root, err: e })
            }
            Err(e) => return Err(unavailable("fanotify_mark", &root, &e)),
        }
        let mut t = FanotifyTree {
            group,
            mask,
            canonical: root.clone(),
            root: RootWatch::new(root, root_id, excludes, counter),
            cache: DirCache::default(),
            marked: HashMap::new(),
            check_root_soon: false,
            file_attrib: events.attrib,
        };
        let before = dir_id(&t.root.path);
        t.take_root().map_err(|err| WatchError::Io {
            dir: t.root.path.clone(),
            err,
        })?;
        event_loop::start(&mut t, before);
        Ok(t)
    }

    /// (Re)reads what the root is: its handle, canonical path and filesystem.
    fn take_root(&mut self) -> io::Result<()> {
        self.canonical = std::fs::canonicalize(&self.root.path)?;
        let dir = open_dir(&self.canonical)?;
        let fsid = fan::fsid_of(&dir)?;
        let fid = fan::handle_at(&dir, Path::new(""), fsid)?;
        if !self.marked.contains_key(&fsid) {
            self.group.mark_filesystem(&self.canonical, self.mask)?;
        }
        self.marked.insert(
            fsid,
            Marked {
                path: self.canonical.clone(),
            },
        );
        self.cache.reset(Some(fid));
        Ok(())
    }

    /// Marks the filesystem mounted at `rel`; false (logged) if it cannot be.
    fn mark_mount(&mut self, rel: &Path, m: &mounts::Mount) -> bool {
        let abs = self.root.path.join(rel);
        let marked = open_dir(&abs).and_then(|dir| {
            let fsid = fan::fsid_of(&dir)?;
            if !self.marked.contains_key(&fsid) {
                self.group.mark_filesystem(&abs, self.mask)?;
            }
            self.marked.insert(fsid, Marked { path: abs.clone() });
            Ok(())
        });
        match marked {
            Ok(()) => true,
            Err(e) => {
                log::error!(
                    "cannot mark the {} filesystem mounted on {} for fanotify: {e}; its \
                     changes are not synced until a full sync",
                    m.fstype,
                    abs.display()
                );
                false
            }
        }
    }

    /// The path below the root of the directory `fid`, or None: outside the tree,
    /// gone, or not to be mirrored (excluded, or below an excluded directory).
    fn resolve(&mut self, fid: &Fid) -> Option<PathBuf> {
        let rel = match self.cache.lookup(fid) {
            Lookup::Inside(p) => p,
            Lookup::Outside => return None,
            Lookup::Unknown => self.ask(fid)?,
        };
        (!excluded_dir(&self.root.excludes, &rel)).then_some(rel)
    }

    /// Asks the kernel where the directory `fid` is, and learns the handles from the
    /// root down to it.
    fn ask(&mut self, fid: &Fid) -> Option<PathBuf> {
        let Some(m) = self.marked.get(&fid.fsid()) else {
            self.cache.note_outside(fid.clone());
            return None;
        };
        let abs = match open_mount_dir(&m.path).and_then(|dir| fan::path_of(&dir, fid)) {
            Ok(p) => p,
            Err(e) => {
                // ESTALE: gone, and a handle is never reused (it holds the inode's
                // generation), so later events of that directory are skipped at once.
                if e.raw_os_error() == Some(libc::ESTALE) {
                    self.cache.note_outside(fid.clone());
                }
                log::debug!("cannot open a directory handle: {e}");
                return None;
            }
        };
        if abs.as_os_str().as_bytes().ends_with(b" (deleted)") {
            self.cache.note_outside(fid.clone());
            return None;
        }
        let Ok(rel) = abs.strip_prefix(&self.canonical) else {
            self.cache.note_outside(fid.clone());
            return None;
        };
        self.learn(fid, rel)
    }

    /// Learns where the directory `fid`, now at `rel`, is: from it upwards, the handle
    /// of each directory on its path is asked for until one is known; what the cache
    /// says of that one stands (it follows the events read so far, and renames still
    /// queued would move it), with the names below it as they are now. Returns the path.
    fn learn(&mut self, fid: &Fid, rel: &Path) -> Option<PathBuf> {
        let mut chain: Vec<(Fid, OsString, Fid)> = Vec::new();
        let mut child = fid.clone();
        let mut at = rel.to_path_buf();
        let base = loop {
            let name = at.file_name()?.to_os_string();
            let up = at.parent()?.to_path_buf();
            let parent = if up.as_os_str().is_empty() {
                self.cache.root.clone()?
            } else {
                dir_handle(&self.canonical.join(&up)).ok()? // gone meanwhile
            };
            chain.push((child, name, parent.clone()));
            match self.cache.lookup(&parent) {
                Lookup::Inside(p) => break p,
                _ => {
                    child = parent;
                    at = up;
                }
            }
        };
        let mut path = base;
        for (fid, name, parent) in chain.into_iter().rev() {
            path.push(&name);
            self.cache.insert(fid, parent, name);
        }
        Some(path)
    }

    /// Handles of what a mount covers or uncovers are not what they were: every cached
    /// path below the root is asked for again.
    fn forget_handles(&mut self) {
        if let Some(root) = self.cache.root.clone() {
            self.cache.reset(Some(root));
        }
    }

    fn overflow(&mut self) {
        if self.root.lost.is_some() {
            return;
        }
        log::warn!(
            "fanotify queue overflow under {}: events were lost; running a full sync",
            self.root.path.display()
        );
        // Renames may be among the lost events: every cached path is in doubt.
        let root = self.cache.root.clone();
        self.cache.reset(root);
    }

    /// Turns what one read returned into changes.
    fn handle(&mut self, buf: &[u8]) -> Vec<Change> {
        let mut out = Vec::new();
        for ev in fan::parse(buf) {
            if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
                self.overflow();
                out.push(Change::Overflow);
                continue;
            }
            if self.root.lost.is_some() {
                continue;
            }
            let dir = ev.mask & libc::FAN_ONDIR != 0;
            if !dir && !self.file_attrib && ev.mask & !libc::FAN_ATTRIB == 0 {
                // A file's attribute change alone: not asked for (see `mark_mask`).
                continue;
            }
            if ev.mask & libc::FAN_RENAME != 0 {
                self.renamed(&ev, dir, &mut out);
                continue;
            }
            let Some(e) = ev.entries.iter().find(|e| e.side == Side::Plain) else {
                continue;
            };
            if e.name == OsStr::new(".") || e.name.is_empty() {
                // The directory itself (attrib, modify): as inotify, never the root.
                let Some(rel) = self.resolve(&e.dir).filter(|p| !p.as_os_str().is_empty()) else {
                    continue;
                };
                for op in ops(ev.mask & (libc::FAN_ATTRIB | libc::FAN_MODIFY)) {
                    out.push(Change::DirMeta {
                        path: rel.clone(),
                        op,
                    });
                }
                continue;
            }
            let Some(parent) = self.resolve(&e.dir) else {
                if dir && ev.mask & (libc::FAN_DELETE | libc::FAN_MOVED_FROM) != 0 {
                    self.check_root_soon = true;
                }
                continue;
            };
            let rel = parent.join(e.name);
            if !dir {
                let file_attrib = self.file_attrib;
                out.extend(
                    ops(ev.mask)
                        .filter(|op| file_attrib || *op != Op::Attrib)
                        .map(|op| Change::File {
                            path: rel.clone(),
                            op,
                        }),
                );
                continue;
            }
            if filter::skip(&self.root.excludes, e.name.as_bytes(), &rel, true) {
                continue;
            }
            let arrived = ev.mask & (libc::FAN_CREATE | libc::FAN_MOVED_TO) != 0;
            let left = ev.mask & (libc::FAN_DELETE | libc::FAN_MOVED_FROM) != 0;
            let target = ev.entries.iter().find(|t| t.side == Side::Target);
            match target {
                Some(t) if left => self.cache.remove_dir(&t.dir),
                Some(t) if arrived => {
                    self.cache
                        .insert(t.dir.clone(), e.dir.clone(), e.name.to_os_string())
                }
                Some(_) => {}
                None if left => self.cache.remove(&e.dir, e.name),
                None => {}
            }
            // Both in one (merged) event: the one that holds now comes last.
            let exists = arrived && left && self.root.path.join(&rel).is_dir();
            let leave = left.then(|| Change::DirOut {
                path: rel.clone(),
                moved: ev.mask & libc::FAN_MOVED_FROM != 0,
            });
            let come = arrived.then(|| self.dir_in(rel.clone(), ev.mask & libc::FAN_MOVED_TO != 0));
            if exists {
                out.extend(leave);
                out.extend(come);
            } else {
                out.extend(come);
                out.extend(leave);
            }
            for op in ops(ev.mask & (libc::FAN_ATTRIB | libc::FAN_MODIFY)) {
                out.push(Change::DirMeta {
                    path: rel.clone(),
                    op,
                });
            }
        }
        pair_exchanges(&mut out);
        out
    }

    /// A directory that appeared: a new one holds nothing its own events do not tell;
    /// one moved in is walked and sent whole.
    fn dir_in(&mut self, rel: PathBuf, moved: bool) -> Change {
        let found = if moved {
            self.cache.forget_outside();
            walk::list_tree(&self.root.path, &rel, &self.root.excludes)
        } else {
            vec![rel.clone()]
        };
        Change::DirIn {
            path: rel,
            moved,
            found,
        }
    }

    /// One FAN_RENAME: both names in one event.
    fn renamed(&mut self, ev: &fan::Event<'_>, dir: bool, out: &mut Vec<Change>) {
        let old = ev.entries.iter().find(|e| e.side == Side::Old);
        let new = ev.entries.iter().find(|e| e.side == Side::New);
        let side = |this: &mut Self, e: Option<&fan::Entry<'_>>| {
            let e = e?;
            let rel = this.resolve(&e.dir)?.join(e.name);
            let mirrored =
                !dir || !filter::skip(&this.root.excludes, e.name.as_bytes(), &rel, true);
            mirrored.then_some(rel)
        };
        let from = side(self, old);
        let to = side(self, new);
        if dir {
            let target = ev.entries.iter().find(|e| e.side == Side::Target);
            match (old, new, &to, target) {
                (_, Some(n), Some(_), Some(t)) => {
                    self.cache
                        .insert(t.dir.clone(), n.dir.clone(), n.name.to_os_string());
                }
                (Some(o), Some(n), Some(_), None) => {
                    self.cache.rename(&o.dir, o.name, &n.dir, n.name);
                }
                (_, _, None, Some(t)) => self.cache.remove_dir(&t.dir),
                (Some(o), _, None, None) => self.cache.remove(&o.dir, o.name),
                _ => {}
            }
            if from.is_none() && to.is_some() {
                // From outside the tree: handles below it may be outside answers.
                self.cache.forget_outside();
            }
            if from.is_none() {
                // Perhaps the root, or a directory above it, was renamed.
                self.check_root_soon = true;
            }
        }
        match (from, to) {
            (Some(from), Some(to)) => {
                let found = if dir {
                    walk::list_tree(&self.root.path, &to, &self.root.excludes)
                } else {
                    Vec::new()
                };
                out.push(Change::Renamed {
                    from,
                    to,
                    dir,
                    found,
                });
            }
            (Some(from), None) if dir => out.push(Change::DirOut {
                path: from,
                moved: true,
            }),
            (Some(from), None) => out.push(Change::File {
                path: from,
                op: Op::MovedOut,
            }),
            (None, Some(to)) if dir => {
                let c = self.dir_in(to, true);
                out.push(c);
            }
            (None, Some(to)) => out.push(Change::File {
                path: to,
                op: Op::MovedIn,
            }),
            (None, None) => {}
        }
    }
}

impl WatchBackend for FanotifyTree {
    const NAME: &'static str = "fanotify";
    const SET_UP: &'static str = "its mark was";

    fn root(&self) -> &RootWatch {
        &self.root
    }

    fn root_mut(&mut self) -> &mut RootWatch {
        &mut self.root
    }

    fn fd(&self) -> RawFd {
        self.group.fd()
    }

    fn read(&mut self, buffer: &mut [u8]) -> io::Result<Option<Vec<Change>>> {
        let n = self.group.read(buffer)?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(self.handle(&buffer[..n])))
    }

    /// Filesystems marked (what status counts as this root's watches).
    fn watched(&self) -> usize {
        if self.root.lost.is_some() {
            0
        } else {
            self.marked.len()
        }
    }

    fn describe(&self) -> String {
        format!(
            "fanotify, {} filesystem mark(s), no directory walked",
            self.watched()
        )
    }

    fn watch_root(&mut self) -> Result<(), String> {
        self.take_root().map_err(|e| e.to_string())
    }

    fn unwatch_root(&mut self) {
        self.cache.reset(None);
    }

    fn cover_mounts(&mut self, visible: &Mounts, _start: bool) {
        for (rel, m) in visible {
            self.mark_mount(rel, m);
        }
    }

    fn mount_watched(&self, rel: &Path) -> bool {
        open_dir(&self.root.path.join(rel))
            .and_then(|d| fan::fsid_of(&d))
            .is_ok_and(|fsid| self.marked.contains_key(&fsid))
    }

    fn unmounted(&mut self, rel: &Path) -> bool {
        self.forget_handles();
        log::warn!(
            "a filesystem was unmounted from {}: running a full sync",
            self.root.path.join(rel).display()
        );
        true
    }

    fn mounted(&mut self, rel: &Path, m: &mounts::Mount) -> Option<Vec<PathBuf>> {
        self.forget_handles();
        if !self.mark_mount(rel, m) {
            return None;
        }
        Some(walk::list_tree(&self.root.path, rel, &self.root.excludes))
    }

    fn check_root_soon(&mut self) -> bool {
        std::mem::take(&mut self.check_root_soon)
    }
}

/// The operations one (possibly merged) event stands for, in the order they happen.
fn ops(mask: u64) -> impl Iterator<Item = Op> {
    [
        (libc::FAN_CREATE, Op::Created),
        (libc::FAN_MOVED_TO, Op::MovedIn),
        (libc::FAN_MODIFY, Op::Modified),
        (libc::FAN_ATTRIB, Op::Attrib),
        (libc::FAN_CLOSE_WRITE, Op::ClosedWrite),
        (libc::FAN_MOVED_FROM, Op::MovedOut),
        (libc::FAN_DELETE, Op::Deleted),
    ]
    .into_iter()
    .filter(move |(bit, _)| mask & bit != 0)
    .map(|(_, op)| op)
}

/// Can fanotify watch `root`? Ok, or the reason it cannot (for `auto` and `-t`).
/// The caller only reports the reason, so it is an [`anyhow::Error`].
pub fn probe(root: &Path) -> anyhow::Result<()> {
    let group = init().map_err(|e| anyhow::anyhow!(why_unavailable("init", &e)))?;
    let mask = mark_mask(&Events::default(), false);
    group
        .mark_filesystem(root, mask)
        .map_err(|e| anyhow::anyhow!(why_unavailable("fanotify_mark", &e)))?;
    dir_handle(root)
        .map_err(|e| anyhow::anyhow!("cannot read the file handle of {}: {e}", root.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merged_event_stands_for_each_of_its_operations_in_order() {
        let got: Vec<Op> =
            ops(libc::FAN_CLOSE_WRITE | libc::FAN_CREATE | libc::FAN_ONDIR).collect();
        assert_eq!(got, vec![Op::Created, Op::ClosedWrite]);
        assert_eq!(ops(0).count(), 0);
    }
}

#[cfg(test)]
mod kernel_tests;
