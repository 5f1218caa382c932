//! Walking a whole tree in parallel (rayon): the start-up walk that adds a watch to every
//! directory, and the full sync's walk for excluded paths.
//!
//! Each directory is watched before it is listed, as in the serial walk, so nothing
//! created inside it afterwards is missed. Siblings are visited in parallel; the kernel
//! serialises the watch additions themselves, so the gain is in listing directories
//! and looking up paths on both cores.
//!
//! What the walk watched is handed to the caller as it goes, through a small bounded
//! channel, on the caller's thread: the caller records it in its tree at once, so no
//! list of every directory of a large tree is ever held (at a million directories that
//! list was most of the start-up's peak memory), and the caller can report progress.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use inotify::{Inotify, WatchDescriptor, WatchMask};
use rayon::prelude::*;

use crate::filter::{self, Excludes};

/// What a parallel watch walk did (what it watched went to the caller's `each`).
pub struct Walked {
    /// The kernel's watch limit was reached (the walk stopped early).
    pub limit: bool,
    /// The root itself could not be watched.
    pub root_error: Option<io::Error>,
    /// Directories that could not be watched or listed for a reason that passes (see
    /// `rewalk::is_transient`): to be walked again.
    pub retry: Vec<PathBuf>,
    /// Directories whose path is too long for the kernel (`ENAMETOOLONG`): neither
    /// watched nor walked. The first [`TOO_LONG_KEPT`] of them.
    pub too_long: Vec<PathBuf>,
}

/// Too-long directories a walk keeps at most (a user can make many).
const TOO_LONG_KEPT: usize = 1024;

struct Walk<'a> {
    inotify: &'a Inotify,
    root: &'a Path,
    mask: WatchMask,
    excludes: &'a Excludes,
    limit: AtomicBool,
    retry: Mutex<Vec<PathBuf>>,
    too_long: Mutex<Vec<PathBuf>>,
}

type Tx = Sender<(WatchDescriptor, PathBuf)>;

/// Watched directories in the channel at most: enough that the walkers rarely wait for
/// the caller, few enough to cost nothing.
const IN_CHANNEL: usize = 4096;

/// Watches `root` and every directory below it that the excludes let in. `each` gets
/// every directory watched, with its descriptor, on this thread, parents before their
/// children.
pub fn watch_tree(
    inotify: &Inotify,
    root: &Path,
    mask: WatchMask,
    excludes: &Excludes,
    mut each: impl FnMut(WatchDescriptor, PathBuf),
) -> Walked {
    let (tx, rx) = crossbeam_channel::bounded(IN_CHANNEL);
    let walk = Walk {
        inotify,
        root,
        mask,
        excludes,
        limit: AtomicBool::new(false),
        retry: Mutex::new(Vec::new()),
        too_long: Mutex::new(Vec::new()),
    };
    let mut root_error = None;
    rayon::in_place_scope(|s| {
        let walk = &walk;
        let root_error = &mut root_error;
        s.spawn(move |_| {
            // The only sender: dropped when the walk is done, which ends the loop below.
            let tx = tx;
            if let Err(e) = walk.watch(PathBuf::new(), None, &tx) {
                *root_error = Some(e);
            }
        });
        for (wd, dir) in rx.iter() {
            each(wd, dir);
        }
    });
    Walked {
        limit: walk.limit.load(Ordering::Relaxed),
        root_error,
        retry: walk.retry.into_inner().unwrap_or_else(|e| e.into_inner()),
        too_long: walk
            .too_long
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
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
    /// Each directory is opened from `parent` (its parent's descriptor; the root by its
    /// path) without following a link, and watched and listed through that descriptor:
    /// a directory swapped for a link meanwhile is neither watched nor listed through it.
    fn watch(&self, dir: PathBuf, parent: Option<&std::fs::File>, tx: &Tx) -> io::Result<()> {
        if self.limit.load(Ordering::Relaxed) {
            return Ok(());
        }
        let abs = self.root.join(&dir);
        // The descriptor's /proc path is a link to follow: it leads to the directory opened.
        let mask = self.mask - WatchMask::DONT_FOLLOW;
        let (fd, added) = match open_walked(self.root, &dir, &abs, parent) {
            Ok(fd) => {
                let added = self
                    .inotify
                    .watches()
                    .add(crate::sys::fsafe::fd_path(&fd), mask);
                (Some(fd), added)
            }
            Err(e) => (None, Err(e)),
        };
        let wd = match added {
            Ok(wd) => wd,
            Err(err) => {
                match err.raw_os_error() {
                    Some(libc::ENOSPC) => self.limit.store(true, Ordering::Relaxed),
                    _ if dir.as_os_str().is_empty() => return Err(err),
                    // Gone already, or a link (not a directory) now.
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => {}
                    _ if super::rewalk::is_transient(&err) => {
                        self.note_retry(&dir, &abs, "watch", &err)
                    }
                    Some(libc::ENAMETOOLONG) => {
                        let mut kept = self.too_long.lock().unwrap_or_else(|e| e.into_inner());
                        if kept.len() < TOO_LONG_KEPT {
                            kept.push(dir);
                        }
                    }
                    _ => log::warn!(
                        "cannot watch {}: {err}; its changes will not be seen",
                        abs.display()
                    ),
                }
                return Ok(());
            }
        };
        let Some(fd) = fd else { return Ok(()) };
        let subdirs = self.subdirs(&dir, &abs, &fd);
        // Sent before the children are walked: the caller records parents first. The
        // caller gone (it never is before the walk ends) only loses the record.
        let _ = tx.send((wd, dir));
        subdirs.into_par_iter().for_each(|d| {
            // Below the root, errors are logged and skipped inside.
            let _ = self.watch(d, Some(&fd), tx);
        });
        Ok(())
    }

    fn subdirs(&self, dir: &Path, abs: &Path, fd: &std::fs::File) -> Vec<PathBuf> {
        let entries = match crate::sys::fsafe::read_dir_of(fd) {
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

/// When a long walk says how far it is: every `every`, counted from its start.
pub struct Progress {
    started: Instant,
    every: Duration,
    next: Instant,
}

impl Progress {
    pub fn new(started: Instant, every: Duration) -> Progress {
        Progress {
            started,
            every,
            next: started + every,
        }
    }

    /// At `now`: the seconds since the start if a line is due (the next one is then an
    /// `every` later), else None.
    pub fn due(&mut self, now: Instant) -> Option<f64> {
        if now < self.next {
            return None;
        }
        self.next = now + self.every;
        Some(now.duration_since(self.started).as_secs_f64())
    }
}

/// Every path under `root` that the excludes keep out, for a full sync's `--exclude-from`.
/// Excluded directories are listed once, not descended into.
pub fn excluded_paths(root: &Path, excludes: &Excludes) -> Vec<PathBuf> {
    if !excludes.needs_walk() {
        return Vec::new();
    }
    excluded_below(root, PathBuf::new(), excludes)
}

/// [`excluded_paths`] below the directory `dir` (relative to `root`) only: what a
/// push of that directory with everything below it leaves out.
pub fn excluded_paths_below(root: &Path, dir: &Path, excludes: &Excludes) -> Vec<PathBuf> {
    if !excludes.needs_walk() {
        return Vec::new();
    }
    excluded_below(root, dir.to_path_buf(), excludes)
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
            // Kept out by an rsync pattern alone (`e/`), see `Excludes::needs_anchored_rule`.
            if excludes.needs_anchored_rule(&rel, is_dir) {
                out.push(rel);
            }
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

/// What a walk found that is never mirrored because its name is a temp name
/// ([`filter::is_temp_name`]: vim's `4913`, `x~`, swap files, `.#x`, `.name.XXXXXX`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TempNamed {
    /// How many entries (a directory so named counts once, what is below it not).
    pub count: usize,
    /// The first few, relative to the root, sorted.
    pub first: Vec<PathBuf>,
}

/// Entries named in [`TempNamed::first`] at most.
pub const TEMP_NAMED_SHOWN: usize = 5;

/// Every entry below `root` whose name is a temp name, outside what the excludes keep
/// out (not descended into) and the agent's own files and sync cookies: the files a
/// live push, a full sync, `--verify` and the warm walk all leave out by that rule
/// alone, for the log and `--verify` to name. Read with the listing's types only; what
/// cannot be listed is passed over.
pub fn temp_named(root: &Path, excludes: &Excludes) -> TempNamed {
    let mut found = TempNamed::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let rel = dir.join(&name);
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if filter::is_cookie(name.as_bytes())
                || excludes.is_own(&rel)
                || excludes.excludes(&rel, is_dir)
            {
                continue;
            }
            if filter::is_temp_name(name.as_bytes()) {
                found.count += 1;
                found.first.push(rel);
                found.first.sort();
                found.first.truncate(TEMP_NAMED_SHOWN);
            } else if is_dir {
                stack.push(rel);
            }
        }
    }
    found
}

impl TempNamed {
    /// One line for the log and `--verify`'s report; `None` when there are none.
    pub fn line(&self) -> Option<String> {
        if self.first.is_empty() {
            return None;
        }
        let mut names: Vec<String> = self
            .first
            .iter()
            .map(|p| format!("{:?}", crate::watch::shorten(p)))
            .collect();
        if self.count > self.first.len() {
            names.push("...".to_owned());
        }
        Some(format!(
            "{} file(s) never mirrored: their names match the temp-name pattern (4913, \
             *~, .*.swp, .*.swx, .*.swpx, .#*, .name.XXXXXX with a digit or capital in \
             the suffix): {}",
            self.count,
            names.join(", ")
        ))
    }
}

/// Every path at and below `dir` (relative to `root`) that the excludes and the temp
/// names let in, directories and files, for a directory that arrived whole: `dir`
/// itself first. Siblings are listed in parallel.
pub fn list_tree(root: &Path, dir: &Path, excludes: &Excludes) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    // Opened without following a link in any component: a directory swapped for a link
    // (an exchange, a rename) is never listed through it, as root, outside the tree.
    if let Ok(fd) = crate::sys::fsafe::open_dir_beneath(root, dir) {
        out.extend(list_below(&fd, dir.to_path_buf(), excludes));
    }
    out
}

fn list_below(fd: &std::fs::File, dir: PathBuf, excludes: &Excludes) -> Vec<PathBuf> {
    let Ok(entries) = crate::sys::fsafe::read_dir_of(fd) else {
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
            subdirs.push((name, rel.clone()));
        }
        out.push(rel);
    }
    let below = subdirs
        .into_par_iter()
        .map(
            |(name, d)| match crate::sys::fsafe::open_subdir(fd, &name) {
                Ok(sub) => list_below(&sub, d, excludes),
                Err(_) => Vec::new(),
            },
        )
        .reduce(Vec::new, |mut a, mut b| {
            a.append(&mut b);
            a
        });
    out.extend(below);
    out
}

/// The directory `dir` of a walk (`abs` below the root), opened without following a
/// link: from its parent's descriptor when the walk has it, else component by component
/// from the root. A path the kernel would refuse as too long is refused as it would.
pub(super) fn open_walked(
    root: &Path,
    dir: &Path,
    abs: &Path,
    parent: Option<&std::fs::File>,
) -> io::Result<std::fs::File> {
    if abs.as_os_str().len() >= libc::PATH_MAX as usize {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    match (parent, dir.file_name()) {
        (Some(p), Some(name)) => crate::sys::fsafe::open_subdir(p, name),
        _ => crate::sys::fsafe::open_dir_beneath(root, dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_due_once_per_interval_from_the_start() {
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let mut p = Progress::new(t0, every);
        assert_eq!(p.due(t0), None);
        assert_eq!(p.due(t0 + Duration::from_millis(4999)), None);
        assert_eq!(p.due(t0 + every), Some(5.0));
        assert_eq!(
            p.due(t0 + Duration::from_secs(6)),
            None,
            "not again before 10 s"
        );
        // A slow stretch (nothing recorded for a while) gives one line, not a backlog.
        assert_eq!(p.due(t0 + Duration::from_secs(23)), Some(23.0));
        assert_eq!(p.due(t0 + Duration::from_secs(27)), None);
        assert_eq!(p.due(t0 + Duration::from_secs(28)), Some(28.0));
    }

    #[test]
    fn the_walk_hands_out_parents_before_children() {
        let d = tempfile::tempdir().expect("tempdir");
        for p in ["a/b/c", "a/d", "e/f/g/h"] {
            std::fs::create_dir_all(d.path().join(p)).expect("mkdir");
        }
        let inotify = Inotify::init().expect("inotify");
        let mut seen: Vec<PathBuf> = Vec::new();
        let walked = watch_tree(
            &inotify,
            d.path(),
            WatchMask::CREATE | WatchMask::ONLYDIR,
            &Excludes::default(),
            |_, dir| {
                if let Some(parent) = dir.parent() {
                    assert!(
                        seen.iter().any(|s| s == parent),
                        "{dir:?} before its parent"
                    );
                }
                seen.push(dir);
            },
        );
        assert!(walked.root_error.is_none());
        assert!(!walked.limit);
        seen.sort();
        let want: Vec<PathBuf> = [
            "", "a", "a/b", "a/b/c", "a/d", "e", "e/f", "e/f/g", "e/f/g/h",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(seen, want);
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    /// Found by an outside attack run: with fanotify, a directory exchanged with a link
    /// to a root-only directory (renameat2 RENAME_EXCHANGE, three times) was walked
    /// through the link as root, and the names found there went to the fail log and
    /// /status. A directory that is a link now, at the top or below, is not listed.
    #[test]
    fn a_directory_that_is_a_link_now_is_never_listed_through() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("root");
        let secret = d.path().join("secret");
        std::fs::create_dir_all(root.join("up/real")).expect("mkdir");
        std::fs::create_dir_all(secret.join("inner")).expect("mkdir");
        std::fs::write(secret.join("inner/SECRET"), b"x").expect("write");
        std::fs::write(root.join("up/real/f"), b"x").expect("write");
        std::os::unix::fs::symlink(&secret, root.join("up/ax")).expect("symlink");
        std::os::unix::fs::symlink(&secret, root.join("up/real/l")).expect("symlink");
        let none = Excludes::new(Vec::new());
        let top = list_tree(&root, Path::new("up/ax"), &none);
        assert_eq!(top, [PathBuf::from("up/ax")], "listed through a link");
        let below = list_tree(&root, Path::new("up"), &none);
        assert!(
            below.iter().all(|p| !p.to_string_lossy().contains("SECRET")
                && !p.to_string_lossy().contains("inner")),
            "{below:?}"
        );
        assert!(below.contains(&PathBuf::from("up/real/f")), "{below:?}");
        assert!(below.contains(&PathBuf::from("up/real/l")), "{below:?}");
    }
}

#[cfg(test)]
mod temp_named_tests {
    use super::*;

    /// Real files with temp-like names (`.env.Backup`, `.npmrc.OLD123`, `4913`) are
    /// found and named; excluded directories and cookies are not.
    #[test]
    fn files_never_mirrored_for_their_names_are_found() {
        let tmp = std::env::temp_dir().join(format!("walk-temp-named-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for d in ["a/b", "cache", "swap~"] {
            std::fs::create_dir_all(tmp.join(d)).expect("mkdir");
        }
        for f in [
            "a/.env.Backup",
            "a/b/.npmrc.OLD123",
            "4913",
            "cache/x~",
            "swap~/inside",
            ".sersync2-cookie-1-2",
            "a/.htaccess",
            "a/readme",
        ] {
            std::fs::write(tmp.join(f), "x").expect("write");
        }
        let excludes = Excludes::new(vec![crate::config::path_regex("cache").expect("regex")]);
        let found = temp_named(&tmp, &excludes);
        assert_eq!(found.count, 4, "{found:?}");
        assert_eq!(
            found.first,
            ["4913", "a/.env.Backup", "a/b/.npmrc.OLD123", "swap~"]
                .map(PathBuf::from)
                .to_vec()
        );
        let line = found.line().expect("a line");
        assert!(line.starts_with("4 file(s) never mirrored: their names match the temp-name"));
        assert!(line.contains("\"a/.env.Backup\""), "{line}");
        assert_eq!(TempNamed::default().line(), None);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
