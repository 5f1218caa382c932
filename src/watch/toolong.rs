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
//! the path shortened. It is not owed (no push of it can ever land).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
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
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
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

/// Distinct paths (and directories warned about) remembered at most, as hashes: past
/// that every note counts and no new directory is warned about.
const SEEN_CAP: usize = 65_536;

/// Warnings at most per [`WARN_WINDOW`]; the rest are counted and said with the next.
const WARN_BURST: u32 = 10;
const WARN_WINDOW: Duration = Duration::from_secs(60);

/// What status shows of one root's too-long paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TooLongReport {
    /// Distinct paths left out since the start.
    pub paths: u64,
    /// The last one, shortened (see [`shorten`]).
    pub last: Option<String>,
}

/// One root's record of the paths left out as too long.
#[derive(Debug, Default)]
pub(crate) struct TooLong {
    paths: u64,
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
        if self.seen.len() >= SEEN_CAP || self.seen.insert(hash_of(rel)) {
            self.paths += 1;
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
            paths: self.paths,
            last: self.last.as_deref().map(shorten),
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
        "{}/{} is too long for rsync ({} bytes from the root; rsync's limit is {} bytes \
         with the directory it runs in): {what}; it is not mirrored and not owed, and \
         status counts it{held}",
        root.display(),
        shorten(rel),
        rel.as_os_str().len(),
        RSYNC_PATH_MAX
    );
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
