//! Paths too long for rsync. rsync builds every name it reads or writes in buffers of
//! `MAXPATHLEN` bytes (4096 on Linux, the NUL included): the sender joins the
//! directory it runs in and the `./path` argument, and a name at or over the limit
//! ends the whole call (exit 22, "buffer overflow: remember_sender_source_root" for a
//! directory argument), is read truncated (a file argument: "link_stat ... failed", or,
//! with `--delete-missing-args`, a delete of the truncated name), or makes a recursive
//! transfer skip its deletions (exit 23, "opendir ... failed: File name too long").
//! The kernel refuses such a path too (`ENAMETOOLONG`: no inotify watch, no
//! `opendir`), so a user who can write in the tree can make one with relative
//! `mkdir`/`chdir` that neither the watcher nor rsync can name.
//!
//! Such a path is never put in a call with other paths: it is left out, counted here
//! per watch root for status, and warned about once per directory, rate-limited, with
//! the path shortened. It is not owed (no push of it can ever land). A call that lists
//! directories (a full sync, `--verify`, a tree) leaves such paths out by exclude
//! rules ([`left_out`]); one whose name rsync cannot even build while it lists its
//! directory ("filename overflows max-path len by N", said before any exclude rule is
//! read, and exit 23 with every deletion skipped) has that directory left out instead,
//! and the directory's other entries go in a call of their own ([`relisted_entries`]).
//! The count drops when such a path is gone (deleted, or renamed short).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// rsync's `MAXPATHLEN` on Linux: a name it builds must be shorter, its NUL included.
pub const RSYNC_PATH_MAX: usize = 4096;

/// The longest directory rsync may run in besides the watch root itself: the
/// `nosymfollow` view (`/run/sersync2/view`, see `sync::rsync::VIEW`), with room.
pub const VIEW_ROOM: usize = 32;

/// The longest name of one entry (a listing's entries are named below it).
const NAME_MAX: usize = 255;

/// Whether rsync cannot carry `rel` (relative to the watch root `root`) as a `./rel`
/// argument: the longer of the root and the view, `/`, `./`, the path, a listing's `/`
/// and the NUL reach [`RSYNC_PATH_MAX`]. A listing (`listing`) also names its entries
/// below it, so it needs room for one more name.
pub fn too_long_for_rsync(root: &Path, rel: &Path, listing: bool) -> bool {
    let base = root.as_os_str().len().max(VIEW_ROOM);
    let mut n = base + 1 + 2 + rel.as_os_str().len() + 1 + 1;
    if listing {
        n += NAME_MAX + 1;
    }
    n >= RSYNC_PATH_MAX
}

/// The shallowest entries below `root` too long for rsync (see [`too_long_for_rsync`]),
/// at most `keep` of them, for a full sync to leave out: a directory that is too long is
/// not descended into. Read with the directory listing's types only (no stat); what
/// cannot be listed is passed over.
pub fn too_long_below(root: &Path, keep: usize) -> Vec<PathBuf> {
    too_long_below_in(root, Path::new(""), keep)
}

/// [`too_long_below`] from the directory `start` below `root` (relative; empty: the
/// root), the paths relative to `root`.
pub fn too_long_below_in(root: &Path, start: &Path, keep: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![start.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let rel = dir.join(e.file_name());
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if too_long_for_rsync(root, &rel, false) {
                if out.len() >= keep {
                    return out;
                }
                out.push(rel);
            } else if is_dir {
                stack.push(rel);
            }
        }
    }
    out
}

/// Whether rsync, listing the directory above `rel`, cannot build `rel`'s name: it
/// names an entry below the directory it runs in, in a buffer of [`RSYNC_PATH_MAX`]
/// bytes, and for one that does not fit says "filename overflows max-path len by N"
/// (exit 23, every deletion of the call skipped) before it reads any exclude rule. Room
/// is left for a `./` in front.
pub fn overflows_listing(rel: &Path) -> bool {
    rel.as_os_str().len() + 3 >= RSYNC_PATH_MAX
}

/// What a call that lists directories leaves out for `long`, the shallowest paths too
/// long for rsync below it ([`too_long_below`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// Exclude rules: each path of `long`, or the directory above one rsync cannot name
    /// while listing it ([`overflows_listing`]). Sorted, no repeats.
    pub excluded: Vec<PathBuf>,
    /// Those directories: their other entries go in a call of their own
    /// ([`relisted_entries`]). Sorted, no repeats.
    pub relisted: Vec<PathBuf>,
}

/// See [`LeftOut`]. Pure: `long` as [`too_long_below`] finds it.
pub fn left_out(long: &[PathBuf]) -> LeftOut {
    let (mut excluded, mut relisted) = (BTreeSet::new(), BTreeSet::new());
    for p in long {
        match p
            .parent()
            .filter(|d| overflows_listing(p) && !d.as_os_str().is_empty())
        {
            Some(dir) => {
                excluded.insert(dir.to_path_buf());
                relisted.insert(dir.to_path_buf());
            }
            None => {
                excluded.insert(p.clone());
            }
        }
    }
    LeftOut {
        excluded: excluded.into_iter().collect(),
        relisted: relisted.into_iter().collect(),
    }
}

/// The entries of the directories `out.relisted` that fit rsync's limit and are not
/// left out themselves, nor temp names, nor in `skip` (the paths the `<filter>`
/// excludes keep out, as a full sync's walk found them), each with whether it is a
/// directory (pushed with what is below it, `out.excluded` kept out), relative to
/// `root`. Read with the directory listing's types only; what cannot be listed is
/// passed over.
pub fn relisted_entries(root: &Path, out: &LeftOut, skip: &[PathBuf]) -> Vec<(PathBuf, bool)> {
    let mut found = Vec::new();
    for dir in &out.relisted {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let rel = dir.join(e.file_name());
            if too_long_for_rsync(root, &rel, false)
                || out.excluded.contains(&rel)
                || skip.contains(&rel)
                || crate::filter::is_temp_name(e.file_name().as_bytes())
            {
                continue;
            }
            found.push((rel, e.file_type().is_ok_and(|t| t.is_dir())));
        }
    }
    found.sort();
    found
}

/// Is `rel` still an entry below `root`? Opened one directory at a time (its path may
/// be longer than the kernel takes in one call), following no link; an error that is
/// not "not there" answers yes.
pub fn still_there(root: &Path, rel: &Path) -> bool {
    use crate::sys::fsafe;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return true;
    };
    match fsafe::open_dir_beneath(root, parent) {
        Ok(dir) => match fsafe::read_dir_of(&dir) {
            Ok(mut entries) => entries.any(|e| e.is_ok_and(|e| e.file_name() == name)),
            Err(_) => true,
        },
        Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)),
    }
}

/// Paths a root's record keeps by name (to drop them when they are gone); past that,
/// new ones are only counted.
const KEPT_CAP: usize = 256;

/// The record of a root's too-long paths is checked against the tree at most this often.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// Distinct paths (and directories warned about) remembered at most, as hashes: past
/// that every note counts and no new directory is warned about.
const SEEN_CAP: usize = 65_536;

/// Warnings at most per [`WARN_WINDOW`]; the rest are counted and said with the next.
const WARN_BURST: u32 = 10;
const WARN_WINDOW: Duration = Duration::from_secs(60);

/// What status shows of one root's too-long paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TooLongReport {
    /// Distinct paths left out and still there (past [`KEPT_CAP`] of them, those beyond
    /// are counted since the start).
    pub paths: u64,
    /// The last one, shortened (see [`shorten`]).
    pub last: Option<String>,
}

/// One root's record of the paths left out as too long.
#[derive(Debug, Default)]
pub(crate) struct TooLong {
    /// Distinct paths noted beyond the [`KEPT_CAP`] kept by name.
    beyond: u64,
    /// The paths noted, by name (at most [`KEPT_CAP`]).
    kept: BTreeSet<PathBuf>,
    rechecked: Option<Instant>,
    seen: HashSet<u64>,
    warned: HashSet<u64>,
    window: Option<Instant>,
    in_window: u32,
    suppressed: u64,
    last: Option<PathBuf>,
}

fn hash_of(p: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    p.as_os_str().as_bytes().hash(&mut h);
    h.finish()
}

impl TooLong {
    /// `rel` was left out at `now`. `Some(n)` when a warning is due (its directory was
    /// not warned about yet and the rate allows it), `n` the warnings held back before.
    pub(crate) fn note(&mut self, rel: &Path, now: Instant) -> Option<u64> {
        if !self.kept.contains(rel) {
            if self.kept.len() < KEPT_CAP {
                self.kept.insert(rel.to_path_buf());
                self.seen.insert(hash_of(rel));
            } else if self.seen.len() >= SEEN_CAP || self.seen.insert(hash_of(rel)) {
                self.beyond += 1;
            }
        }
        self.last = Some(rel.to_path_buf());
        let dir = rel.parent().unwrap_or(Path::new(""));
        let key = hash_of(dir);
        if self.warned.contains(&key) {
            return None;
        }
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= WARN_WINDOW)
        {
            self.window = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= WARN_BURST || self.warned.len() >= SEEN_CAP {
            self.suppressed += 1;
            return None;
        }
        self.in_window += 1;
        self.warned.insert(key);
        Some(std::mem::take(&mut self.suppressed))
    }

    pub(crate) fn report(&self) -> TooLongReport {
        TooLongReport {
            paths: self.kept.len() as u64 + self.beyond,
            last: self.last.as_deref().map(shorten),
        }
    }

    /// The paths kept by name, when a check against the tree is due at `now` (at most
    /// every [`RECHECK_EVERY`]).
    pub(crate) fn recheck_due(&mut self, now: Instant) -> Option<Vec<PathBuf>> {
        if self.kept.is_empty()
            || self
                .rechecked
                .is_some_and(|r| now.duration_since(r) < RECHECK_EVERY)
        {
            return None;
        }
        self.rechecked = Some(now);
        Some(self.kept.iter().cloned().collect())
    }

    /// `gone` (kept paths no longer in the tree) are no longer counted; one made again
    /// is noted again.
    pub(crate) fn forget(&mut self, gone: &[PathBuf]) {
        for p in gone {
            if self.kept.remove(p) {
                self.seen.remove(&hash_of(p));
            }
        }
        if self.last.as_ref().is_some_and(|l| gone.contains(l)) {
            self.last = self.kept.iter().next_back().cloned();
        }
    }
}

/// A long path for people: its first and last 60 bytes and how long it is.
pub fn shorten(p: &Path) -> String {
    const KEEP: usize = 60;
    let b = p.as_os_str().as_bytes();
    if b.len() <= 2 * KEEP + 20 {
        return String::from_utf8_lossy(b).into_owned();
    }
    format!(
        "{}...({} bytes)...{}",
        String::from_utf8_lossy(&b[..KEEP]),
        b.len(),
        String::from_utf8_lossy(&b[b.len() - KEEP..])
    )
}

/// The warning for a path left out.
pub(crate) fn warn(root: &Path, rel: &Path, what: &str, suppressed: u64) {
    let held = if suppressed > 0 {
        format!(" ({suppressed} more such warning(s) were held back)")
    } else {
        String::new()
    };
    log::warn!(
        "{}/{} is not mirrorable: {} ({} bytes from the root): {what}; it is not owed, and \
         status counts it while it is there{held}",
        root.display(),
        shorten(rel),
        reason(),
        rel.as_os_str().len(),
    );
}

/// Why such a path is not mirrored, as the log, status and `--verify` say it.
pub fn reason() -> String {
    format!("longer than rsync's {RSYNC_PATH_MAX}-byte limit (the directory it runs in counted)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(levels: usize) -> PathBuf {
        let mut p = PathBuf::from("up");
        for _ in 0..levels {
            p.push("y".repeat(50));
        }
        p
    }

    #[test]
    fn the_limit_counts_the_root_or_the_view_and_a_listings_entries() {
        let root = Path::new("/www");
        assert!(!too_long_for_rsync(root, &deep(10), false));
        assert!(too_long_for_rsync(root, &deep(90), false));
        // 4096 - 32 - 1 - 2 - 1 - 1 = 4059 bytes is the first that does not fit.
        let fits = PathBuf::from("a".repeat(4058));
        let over = PathBuf::from("a".repeat(4059));
        assert!(!too_long_for_rsync(root, &fits, false));
        assert!(too_long_for_rsync(root, &over, false));
        // A longer root leaves less room.
        let long_root = PathBuf::from(format!("/{}", "r".repeat(99)));
        assert!(too_long_for_rsync(&long_root, &fits, false));
        // A listing needs room for a name below it.
        assert!(too_long_for_rsync(
            root,
            &PathBuf::from("a".repeat(3900)),
            true
        ));
        assert!(!too_long_for_rsync(
            root,
            &PathBuf::from("a".repeat(3900)),
            false
        ));
    }

    #[test]
    fn a_name_rsync_cannot_build_leaves_its_directory_out_and_relisted() {
        let dir = deep(76);
        let overflowing = dir.join("z".repeat(250));
        assert!(overflows_listing(&overflowing));
        // Deep enough for the agent's measure, short enough for rsync to name it.
        let named = deep(80);
        assert!(too_long_for_rsync(Path::new("/www"), &named, false));
        assert!(!overflows_listing(&named));
        let out = left_out(&[
            named.clone(),
            overflowing.clone(),
            dir.join("z".repeat(251)),
        ]);
        assert_eq!(out.excluded, vec![dir.clone(), named]);
        assert_eq!(out.relisted, vec![dir]);
        assert_eq!(left_out(&[]), LeftOut::default());
    }

    #[test]
    fn the_entries_of_a_directory_left_out_go_on_their_own() {
        let tmp = std::env::temp_dir().join(format!("toolong-relist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("d/sub")).expect("mkdir");
        std::fs::create_dir_all(tmp.join("d/gone")).expect("mkdir");
        std::fs::write(tmp.join("d/f"), "x").expect("write");
        std::fs::write(tmp.join("d/f~"), "x").expect("write");
        std::fs::write(tmp.join("d/x.log"), "x").expect("write");
        let out = LeftOut {
            excluded: vec![PathBuf::from("d"), PathBuf::from("d/gone")],
            relisted: vec![PathBuf::from("d")],
        };
        assert_eq!(
            relisted_entries(&tmp, &out, &[PathBuf::from("d/x.log")]),
            vec![
                (PathBuf::from("d/f"), false),
                (PathBuf::from("d/sub"), true)
            ]
        );
        assert!(still_there(&tmp, Path::new("d/f")));
        assert!(still_there(&tmp, Path::new("d/sub")));
        assert!(!still_there(&tmp, Path::new("d/g")));
        assert!(!still_there(&tmp, Path::new("e/f")));
        assert!(!still_there(&tmp, Path::new("d/f/g")));
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn a_path_gone_from_the_tree_is_no_longer_counted() {
        let mut t = TooLong::default();
        let now = Instant::now();
        let (a, b) = (deep(90).join("a"), deep(90).join("b"));
        t.note(&a, now);
        t.note(&b, now);
        assert_eq!(t.report().paths, 2);
        let kept = t.recheck_due(now).expect("due");
        assert_eq!(kept.len(), 2);
        assert!(t.recheck_due(now).is_none(), "not again at once");
        t.forget(std::slice::from_ref(&b));
        let r = t.report();
        assert_eq!(r.paths, 1);
        assert!(r.last.is_some_and(|l| l.ends_with("/a")));
        t.forget(std::slice::from_ref(&a));
        assert_eq!(t.report(), TooLongReport::default());
        // Made again: counted again.
        t.note(&a, now);
        assert_eq!(t.report().paths, 1);
        assert!(t.recheck_due(now + RECHECK_EVERY).is_some());
    }

    #[test]
    fn one_warning_per_directory_and_a_bounded_rate() {
        let mut t = TooLong::default();
        let now = Instant::now();
        let d = deep(90);
        assert_eq!(t.note(&d.join("f"), now), Some(0));
        assert_eq!(t.note(&d.join("g"), now), None, "same directory");
        assert_eq!(t.note(&d.join("f"), now), None);
        assert_eq!(t.report().paths, 2, "distinct paths");
        for i in 0..30 {
            let w = t.note(&d.join(format!("d{i}")).join("f"), now);
            assert_eq!(w.is_some(), i < 9, "{i}");
        }
        // A new window says how many were held back.
        assert_eq!(
            t.note(&d.join("late").join("f"), now + WARN_WINDOW),
            Some(21)
        );
        let r = t.report();
        assert_eq!(r.paths, 33);
        let last = r.last.expect("last");
        assert!(last.len() < 200 && last.contains("bytes"), "{last}");
        assert!(last.ends_with("/late/f"), "{last}");
    }
}
