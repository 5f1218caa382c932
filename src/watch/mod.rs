//! Recursive inotify watching of one watch root, turning kernel events into changes
//! sent down a channel. The watcher knows no remote and no queue: it only reads the
//! kernel queue, keeps the tree's bookkeeping, and sends; it never blocks on a lock.
//!
//! The kernel watches directories, not trees, so this module keeps the tree: a map from
//! watch descriptor to relative directory (and back), a new directory is watched first
//! and walked second (files written into it before its watch existed are found by the
//! walk, files written after arrive as events), renames are paired by cookie so a moved
//! directory keeps its watches, a directory moved out of the tree loses them, and a
//! queue overflow re-walks the tree and asks for a full sync, because events were lost.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::config::Events;
use crate::filter::{self, Excludes};
use crate::sys::Ready;

mod walk;
pub use walk::excluded_paths;

/// What happened to one entry. One kernel event is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Created,
    ClosedWrite,
    Modified,
    Attrib,
    MovedIn,
    MovedOut,
    Deleted,
}

/// One change under a watch root, as the watcher sends it. Paths are relative to the
/// root; directories already left out by the excludes or as temp names never appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something happened to a non-directory.
    File { path: PathBuf, op: Op },
    /// A directory appeared (created, or moved in) and is watched now; `found` is what
    /// the walk after its watch found: the directory itself and everything below it.
    DirIn {
        path: PathBuf,
        moved: bool,
        found: Vec<PathBuf>,
    },
    /// A directory went away (deleted, or moved out); nothing below it is watched now.
    DirOut { path: PathBuf, moved: bool },
    /// A directory's own metadata or content changed (attrib, modify).
    DirMeta { path: PathBuf, op: Op },
    /// The kernel dropped events: the watches were rebuilt from the tree, and everything
    /// may have changed.
    Overflow,
}

/// Changes from one read of the kernel queue, for one watch root.
#[derive(Debug)]
pub struct Batch {
    /// Which watch root (its index in the config).
    pub root: usize,
    pub changes: Vec<Change>,
}

/// Why watching could not start or continue.
#[derive(Debug)]
pub enum WatchError {
    /// The kernel's per-user watch limit is reached.
    Limit {
        dir: PathBuf,
        watched: usize,
        /// Directories the whole tree needs watched.
        needed: usize,
    },
    Io {
        dir: PathBuf,
        err: io::Error,
    },
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Limit {
                dir,
                watched,
                needed,
            } => write!(
                f,
                "cannot watch {}: the inotify watch limit fs.inotify.max_user_watches ({}) is \
                 reached after {watched} directories, and this tree needs {needed}; raise it as \
                 root with `sysctl fs.inotify.max_user_watches={}` (and in /etc/sysctl.d/ to keep it)",
                dir.display(),
                read_limit("max_user_watches").map_or("unknown".to_owned(), |n| n.to_string()),
                suggested_limit(read_limit("max_user_watches").unwrap_or(8192), *needed as u64)
            ),
            WatchError::Io { dir, err } => write!(f, "cannot watch {}: {err}", dir.display()),
        }
    }
}

impl std::error::Error for WatchError {}

/// Reads /proc/sys/fs/inotify/<name>.
pub fn read_limit(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What to raise a limit to so that `needed` more fit: never lower, at least double.
pub fn suggested_limit(current: u64, needed: u64) -> u64 {
    current
        .saturating_mul(2)
        .max(current.saturating_add(needed + needed / 4))
}

/// Writes /proc/sys/fs/inotify/<name> if that raises it (never lowers it).
pub fn raise_limit(name: &str, to: u64) -> Result<Option<(u64, u64)>, String> {
    let current = read_limit(name).ok_or_else(|| format!("cannot read fs.inotify.{name}"))?;
    if to <= current {
        return Ok(None);
    }
    std::fs::write(format!("/proc/sys/fs/inotify/{name}"), to.to_string())
        .map_err(|e| format!("cannot raise fs.inotify.{name} from {current} to {to}: {e}"))?;
    Ok(Some((current, to)))
}

/// Directories under `root` that would be watched (the excludes keep some out).
pub fn count_dirs(root: &Path, excludes: &Excludes) -> usize {
    let mut n = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        n += 1;
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let rel = dir.join(entry.file_name());
                if !excludes.excludes(&rel, true) {
                    stack.push(rel);
                }
            }
        }
    }
    n
}

/// Reads closer together than this are a burst.
const BURST_GAP: Duration = Duration::from_millis(2);

/// In a burst, how long events gather before the next read.
const GATHER: Duration = Duration::from_millis(1);

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

/// The watches of one root.
pub struct Watcher {
    inotify: Inotify,
    root: PathBuf,
    /// This root's index, sent with every batch.
    root_id: usize,
    excludes: Excludes,
    events: Events,
    wds: HashMap<WatchDescriptor, PathBuf>,
    dirs: BTreeMap<PathBuf, WatchDescriptor>,
    /// Watches of every root together, for status; this root's share is `reported`.
    counter: Arc<AtomicUsize>,
    reported: usize,
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

impl Watcher {
    /// Creates the inotify instance and watches the whole tree under `root`.
    /// `events`: which optional kernel events (attrib, modify) to ask for.
    pub fn new(
        root: PathBuf,
        root_id: usize,
        excludes: Excludes,
        events: Events,
    ) -> Result<Watcher, WatchError> {
        let inotify = Inotify::init().map_err(|err| WatchError::Io {
            dir: root.clone(),
            err,
        })?;
        let mut w = Watcher {
            inotify,
            root,
            root_id,
            excludes,
            events,
            wds: HashMap::new(),
            dirs: BTreeMap::new(),
            counter: Arc::new(AtomicUsize::new(0)),
            reported: 0,
        };
        w.add_whole_tree()?;
        Ok(w)
    }

    /// Reports this root's watch count into a counter shared by all roots.
    pub fn count_into(&mut self, counter: Arc<AtomicUsize>) {
        self.counter = counter;
        self.reported = 0;
        self.report_count();
    }

    fn report_count(&mut self) {
        let n = self.wds.len();
        if n > self.reported {
            self.counter.fetch_add(n - self.reported, Ordering::Relaxed);
        } else {
            self.counter.fetch_sub(self.reported - n, Ordering::Relaxed);
        }
        self.reported = n;
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many directories are watched.
    pub fn watched(&self) -> usize {
        self.wds.len()
    }

    /// Watches the whole tree (start-up, and after an overflow), in parallel. As root,
    /// raises the kernel's watch limit once if the tree needs more.
    fn add_whole_tree(&mut self) -> Result<(), WatchError> {
        let mask = watch_mask(&self.events);
        let mut walked = walk::watch_tree(&self.inotify, &self.root, mask, &self.excludes);
        // Other watchers of the same user may take watches meanwhile: raise again while
        // raising helps (each raise at least doubles the limit).
        for _ in 0..8 {
            if !(walked.limit && self.raise_watch_limit()) {
                break;
            }
            walked = walk::watch_tree(&self.inotify, &self.root, mask, &self.excludes);
        }
        if let Some(err) = walked.root_error {
            return Err(WatchError::Io {
                dir: self.root.clone(),
                err,
            });
        }
        for (wd, dir) in walked.watched {
            self.map(wd, dir);
        }
        if walked.limit {
            return Err(WatchError::Limit {
                dir: self.root.clone(),
                watched: self.wds.len(),
                needed: count_dirs(&self.root, &self.excludes),
            });
        }
        Ok(())
    }

    /// Records a watch of `dir` (a reused descriptor forgets its old directory).
    fn map(&mut self, wd: WatchDescriptor, dir: PathBuf) {
        if let Some(old) = self.wds.insert(wd.clone(), dir.clone()) {
            if old != dir && self.dirs.get(&old) == Some(&wd) {
                self.dirs.remove(&old);
            }
        }
        self.dirs.insert(dir, wd);
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
            let abs = self.root.join(&dir);
            let mut added = self.inotify.watches().add(&abs, mask);
            if matches!(&added, Err(e) if e.raw_os_error() == Some(libc::ENOSPC))
                && self.raise_watch_limit()
            {
                added = self.inotify.watches().add(&abs, mask);
            }
            match added {
                Ok(wd) => self.map(wd, dir.clone()),
                Err(err) => match err.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => continue, // gone already
                    Some(libc::ENOSPC) => {
                        return Err(WatchError::Limit {
                            dir: abs,
                            watched: self.wds.len(),
                            needed: count_dirs(&self.root, &self.excludes),
                        })
                    }
                    _ if dir.as_os_str().is_empty() => {
                        return Err(WatchError::Io { dir: abs, err });
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
                    if err.kind() != io::ErrorKind::NotFound {
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
                if filter::skip(&self.excludes, name.as_bytes(), &child, is_dir) {
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

    /// As root, raises fs.inotify.max_user_watches so the whole tree fits; true if raised.
    fn raise_watch_limit(&self) -> bool {
        if !crate::sys::is_root() {
            return false;
        }
        let needed = count_dirs(&self.root, &self.excludes) as u64;
        let current = read_limit("max_user_watches").unwrap_or(8192);
        match raise_limit("max_user_watches", suggested_limit(current, needed)) {
            Ok(Some((from, to))) => {
                log::warn!(
                    "raised fs.inotify.max_user_watches from {from} to {to}: {} needs {needed} directories watched",
                    self.root.display()
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

    /// Drops the bookkeeping for a directory and everything below it.
    fn detach_tree(&mut self, rel: &Path) -> Vec<WatchDescriptor> {
        let below: Vec<PathBuf> = self
            .dirs
            .range::<Path, _>((std::ops::Bound::Included(rel), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(rel))
            .map(|(p, _)| p.clone())
            .collect();
        below
            .into_iter()
            .filter_map(|p| self.dirs.remove(&p))
            .collect()
    }

    fn forget_wd(&mut self, wd: &WatchDescriptor) {
        if let Some(path) = self.wds.remove(wd) {
            if self.dirs.get(&path) == Some(wd) {
                self.dirs.remove(&path);
            }
            if path.as_os_str().is_empty() {
                log::error!(
                    "the watch root {} was removed or unmounted; nothing more will be seen there",
                    self.root.display()
                );
            }
        }
    }

    /// Removes watches that still point into a tree that has left (moved out).
    fn unwatch(&mut self, moved: MovedDir) {
        for wd in moved.wds {
            let stale = self.wds.get(&wd).is_some_and(|p| p.starts_with(&moved.rel));
            if stale {
                self.wds.remove(&wd);
                // The directory may be gone already; the kernel then dropped the watch.
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    fn overflow(&mut self) {
        log::warn!(
            "inotify queue overflow under {}: events were lost; re-walking the tree and running a full sync",
            self.root.display()
        );
        // IN_IGNORED and rename events may be among the lost ones: rebuild the map from
        // the tree as it is now, and drop watches on whatever is no longer in it.
        let old = std::mem::take(&mut self.wds);
        self.dirs.clear();
        if let Err(e) = self.add_whole_tree() {
            log::error!("{e}");
        }
        for wd in old.into_keys() {
            if !self.wds.contains_key(&wd) {
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    /// Handles one batch of events as read from the kernel; returns the changes.
    fn handle(&mut self, batch: Vec<RawEvent>) -> Vec<Change> {
        let mut out = Vec::with_capacity(batch.len());
        let mut moved_away: HashMap<u32, MovedDir> = HashMap::new();
        for e in batch {
            if e.mask.contains(EventMask::Q_OVERFLOW) {
                self.overflow();
                out.push(Change::Overflow);
                continue;
            }
            if e.mask.contains(EventMask::IGNORED) {
                self.forget_wd(&e.wd);
                continue;
            }
            let (Some(dir), Some(name)) = (self.wds.get(&e.wd), e.name.as_ref()) else {
                continue;
            };
            let rel = dir.join(name);
            if !e.mask.contains(EventMask::ISDIR) {
                if let Some(op) = op_of(e.mask) {
                    out.push(Change::File { path: rel, op });
                }
                continue;
            }
            // Excluded and temp directories are never watched, so never reported.
            if filter::skip(&self.excludes, name.as_bytes(), &rel, true) {
                continue;
            }
            if let Some(c) = self.handle_dir(e.mask, e.cookie, rel, &mut moved_away) {
                out.push(c);
            }
        }
        for (_, moved) in moved_away {
            self.unwatch(moved);
        }
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
            if let Err(e) = self.add_tree(&rel, Some(&mut found)) {
                log::error!("{e}");
            }
            if let Some(moved) = renamed {
                // Watches that came along but were not found again (excluded now, gone).
                self.unwatch(moved);
            }
            Some(Change::DirIn {
                path: rel,
                moved,
                found,
            })
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            let wds = self.detach_tree(&rel);
            let moved = mask.contains(EventMask::MOVED_FROM);
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

    /// Reads the kernel queue and sends what happened until `stop_fd` becomes readable
    /// (or the receiving side is gone).
    pub fn run(mut self, stop_fd: RawFd, tx: Sender<Batch>) {
        let mut buffer = vec![0u8; 256 * 1024];
        let fd = self.inotify.as_raw_fd();
        let mut last_read: Option<Instant> = None;
        loop {
            match crate::sys::wait_either(fd, stop_fd) {
                Ready::Work => {}
                Ready::Stop => return,
                Ready::Failed => {
                    log::error!("poll on inotify failed: {}", io::Error::last_os_error());
                    return;
                }
            }
            let batch: Vec<RawEvent> = match self.inotify.read_events(&mut buffer) {
                Ok(events) => events
                    .map(|e| RawEvent {
                        wd: e.wd,
                        mask: e.mask,
                        cookie: e.cookie,
                        name: e.name.map(|n| n.to_os_string()),
                    })
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    log::error!("reading inotify events failed: {e}");
                    return;
                }
            };
            // In a burst (reads back to back), let events gather a moment before the
            // next read: one read, one batch, one wake-up of the filter thread for many
            // events instead of one each. The first event after a quiet spell is read
            // and sent at once, so a single change is never held back.
            let now = Instant::now();
            let burst = last_read.is_some_and(|at| now.duration_since(at) < BURST_GAP);
            last_read = Some(now);
            let changes = self.handle(batch);
            self.report_count();
            if !changes.is_empty()
                && tx
                    .send(Batch {
                        root: self.root_id,
                        changes,
                    })
                    .is_err()
            {
                return;
            }
            if burst && crate::sys::readable_within(stop_fd, GATHER) {
                return;
            }
        }
    }
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
    use proptest::prelude::*;

    #[test]
    fn the_limit_error_names_the_sysctl_and_what_the_tree_needs() {
        let e = WatchError::Limit {
            dir: PathBuf::from("/www/deep"),
            watched: 8190,
            needed: 120_000,
        };
        let text = e.to_string();
        assert!(text.contains("fs.inotify.max_user_watches"), "{text}");
        assert!(text.contains("120000"), "{text}");
        assert!(text.contains("/www/deep"), "{text}");
    }

    #[test]
    fn count_dirs_skips_excluded_directories() {
        let d = tempfile::tempdir().expect("tempdir");
        for p in ["a/b", "a/.svn/x", "c"] {
            std::fs::create_dir_all(d.path().join(p)).expect("mkdir");
        }
        std::fs::write(d.path().join("a/file"), "f").expect("write");
        let all = count_dirs(d.path(), &Excludes::default());
        assert_eq!(all, 6, "root, a, a/b, a/.svn, a/.svn/x, c");
        let ex = Excludes::new(vec![
            regex::bytes::Regex::new(r"^(?:(.*)\.svn)$").expect("re")
        ]);
        assert_eq!(count_dirs(d.path(), &ex), 4);
    }

    proptest! {
        /// A raised limit fits what is needed and never lowers the current one.
        #[test]
        fn suggested_limit_never_lowers(current in 0u64..u64::MAX / 4, needed in 0u64..10_000_000) {
            let s = suggested_limit(current, needed);
            prop_assert!(s >= current);
            prop_assert!(s >= current + needed);
        }
    }
}
