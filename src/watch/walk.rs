//! Walking a whole tree in parallel (rayon): the start-up walk that adds a watch to every
//! directory, and the full sync's walk for excluded paths.
//!
//! Each directory is watched before it is listed, as in the serial walk, so nothing
//! created inside it afterwards is missed. Siblings are visited in parallel; the kernel
//! serialises the watch additions themselves, so the gain is in listing directories
//! and looking up paths on both cores.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use inotify::{Inotify, WatchDescriptor, WatchMask};
use rayon::prelude::*;

use crate::filter::{self, Excludes};

/// What a parallel watch walk did.
pub struct Walked {
    /// Every directory now watched, with its descriptor.
    pub watched: Vec<(WatchDescriptor, PathBuf)>,
    /// The kernel's watch limit was reached (the walk stopped early).
    pub limit: bool,
    /// The root itself could not be watched.
    pub root_error: Option<io::Error>,
    /// Directories that could not be watched or listed for a reason that passes (see
    /// `rewalk::is_transient`): to be walked again.
    pub retry: Vec<PathBuf>,
}

struct Walk<'a> {
    inotify: &'a Inotify,
    root: &'a Path,
    mask: WatchMask,
    excludes: &'a Excludes,
    limit: AtomicBool,
    retry: Mutex<Vec<PathBuf>>,
}

/// Watches `root` and every directory below it that the excludes let in.
pub fn watch_tree(inotify: &Inotify, root: &Path, mask: WatchMask, excludes: &Excludes) -> Walked {
    let walk = Walk {
        inotify,
        root,
        mask,
        excludes,
        limit: AtomicBool::new(false),
        retry: Mutex::new(Vec::new()),
    };
    let mut root_error = None;
    let watched = match walk.watch(PathBuf::new()) {
        Ok(v) => v,
        Err(e) => {
            root_error = Some(e);
            Vec::new()
        }
    };
    Walked {
        watched,
        limit: walk.limit.load(Ordering::Relaxed),
        root_error,
        retry: walk.retry.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

impl Walk<'_> {
    /// `dir` failed for a reason that passes: it is walked again later.
    fn note_retry(&self, dir: &Path, abs: &Path, what: &str, err: &io::Error) {
        log::warn!(
            "cannot {what} {}: {err}; walking it again in a moment",
            abs.display()
        );
        self.retry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.to_path_buf());
    }

    /// Watches `dir`, then its subdirectories in parallel. An error is returned only for
    /// the root; below it, a directory that cannot be watched is logged and skipped.
    fn watch(&self, dir: PathBuf) -> io::Result<Vec<(WatchDescriptor, PathBuf)>> {
        if self.limit.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let abs = self.root.join(&dir);
        let wd = match self.inotify.watches().add(&abs, self.mask) {
            Ok(wd) => wd,
            Err(err) => {
                match err.raw_os_error() {
                    Some(libc::ENOSPC) => self.limit.store(true, Ordering::Relaxed),
                    _ if dir.as_os_str().is_empty() => return Err(err),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => {} // gone already
                    _ if super::rewalk::is_transient(&err) => {
                        self.note_retry(&dir, &abs, "watch", &err)
                    }
                    _ => log::warn!(
                        "cannot watch {}: {err}; its changes will not be seen",
                        abs.display()
                    ),
                }
                return Ok(Vec::new());
            }
        };
        let subdirs = self.subdirs(&dir, &abs);
        let mut out = vec![(wd, dir)];
        let below = subdirs
            .into_par_iter()
            .map(|d| self.watch(d).unwrap_or_default())
            .reduce(Vec::new, |mut a, mut b| {
                if a.len() < b.len() {
                    std::mem::swap(&mut a, &mut b);
                }
                a.append(&mut b);
                a
            });
        out.extend(below);
        Ok(out)
    }

    fn subdirs(&self, dir: &Path, abs: &Path) -> Vec<PathBuf> {
        let entries = match std::fs::read_dir(abs) {
            Ok(e) => e,
            Err(err) => {
                if super::rewalk::is_transient(&err) {
                    self.note_retry(dir, abs, "list", &err);
                } else if err.kind() != io::ErrorKind::NotFound {
                    log::warn!("cannot list {}: {err}", abs.display());
                }
                return Vec::new();
            }
        };
        entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| dir.join(e.file_name()))
            .filter(|child| {
                let name = child.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                !filter::skip(self.excludes, name, child, true)
            })
            .collect()
    }
}

/// Every path under `root` that the excludes keep out, for a full sync's `--exclude-from`.
/// Excluded directories are listed once, not descended into.
pub fn excluded_paths(root: &Path, excludes: &Excludes) -> Vec<PathBuf> {
    if excludes.is_empty() {
        return Vec::new();
    }
    excluded_below(root, PathBuf::new(), excludes)
}

fn excluded_below(root: &Path, dir: PathBuf, excludes: &Excludes) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let rel = dir.join(entry.file_name());
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if excludes.excludes(&rel, is_dir) {
            out.push(rel);
        } else if is_dir {
            subdirs.push(rel);
        }
    }
    let below = subdirs
        .into_par_iter()
        .map(|d| excluded_below(root, d, excludes))
        .reduce(Vec::new, |mut a, mut b| {
            a.append(&mut b);
            a
        });
    out.extend(below);
    out
}

/// Every path at and below `dir` (relative to `root`) that the excludes and the temp
/// names let in, directories and files, for a directory that arrived whole: `dir`
/// itself first. Siblings are listed in parallel.
pub fn list_tree(root: &Path, dir: &Path, excludes: &Excludes) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    out.extend(list_below(root, dir.to_path_buf(), excludes));
    out
}

fn list_below(root: &Path, dir: PathBuf, excludes: &Excludes) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let rel = dir.join(&name);
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if filter::skip(excludes, name.as_bytes(), &rel, is_dir) {
            continue;
        }
        if is_dir {
            subdirs.push(rel.clone());
        }
        out.push(rel);
    }
    let below = subdirs
        .into_par_iter()
        .map(|d| list_below(root, d, excludes))
        .reduce(Vec::new, |mut a, mut b| {
            a.append(&mut b);
            a
        });
    out.extend(below);
    out
}
