//! Big files pushed in proportion to the change (`<bigFiles>`): which transfer a big
//! file's push uses, and what the agent knows of each remote's copy.
//!
//! rsync's receiver writes a whole new copy of a changed file (beside the old one, then
//! renamed over it), however little changed. A regular file of `<bigFiles size>` or
//! more goes in a call of its own, and:
//! - grown since this agent's last push of it to that remote landed: `--append-verify`
//!   (only the bytes past the mirror's length are sent and written; then the whole
//!   file's checksum is compared, and on a mismatch rsync sends it again, in place);
//! - otherwise, with `inplace="true"`: `--inplace` (only the changed blocks are written,
//!   into the mirror's file itself: a reader there may see it half updated);
//! - otherwise whole, as any other file.
//!
//! `--append-verify` skips a file whose copy on the mirror is as long as the source's or
//! longer, so an append is chosen only when the agent knows the mirror's length: what its
//! own last push of that file landed ([`Known`]), recorded only when the file did not
//! change while that push ran, and forgotten whenever anything else may have written
//! that path on the remote (another push carrying it, a listing or tree above it, a
//! rename, a full sync, a failed push). What is not known goes whole (or in place).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::job::{Entry, Job};
use crate::config::BigFiles;

/// How one big file's push transfers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transfer {
    /// rsync's ordinary transfer: a new copy renamed over the old one.
    Whole,
    /// `--append-verify`.
    Append,
    /// `--inplace`.
    InPlace,
}

impl Transfer {
    /// The option that makes rsync transfer so, if any.
    pub fn option(self) -> Option<&'static str> {
        match self {
            Transfer::Whole => None,
            Transfer::Append => Some("--append-verify"),
            Transfer::InPlace => Some("--inplace"),
        }
    }
}

/// A file as a stat finds it: what decides its transfer, and whether it changed while
/// a push ran (any of these differs after a change; the ctime after any write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub links: u64,
    pub ino: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stamp {
    /// The regular file at `root/rel`, not following a link; `None` for anything else.
    pub fn of(root: &Path, rel: &Path) -> Option<Stamp> {
        let md = std::fs::symlink_metadata(root.join(rel)).ok()?;
        md.file_type().is_file().then(|| Stamp {
            size: md.size(),
            links: md.nlink(),
            ino: md.ino(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        })
    }
}

/// Is this file big: a call of its own, and a transfer chosen by [`transfer`]? A file
/// with more than one name is not (an in-place write on a mirror that links it to other
/// names would change them too).
pub fn is_big(rule: &BigFiles, now: &Stamp) -> bool {
    (rule.append || rule.inplace) && now.size >= rule.size && now.links == 1
}

/// The transfer of a big file that is `now` on the source, its last push to this
/// remote having landed `known` bytes (`None`: not known).
pub fn transfer(rule: &BigFiles, now: &Stamp, known: Option<u64>) -> Transfer {
    if !is_big(rule, now) {
        return Transfer::Whole;
    }
    match known {
        Some(k) if rule.append && now.size > k => Transfer::Append,
        _ if rule.inplace => Transfer::InPlace,
        _ => Transfer::Whole,
    }
}

/// Per remote: the length of the big files its copy is known to hold (what this agent's
/// last push of each landed).
#[derive(Debug, Default)]
pub struct Known {
    sizes: HashMap<PathBuf, u64>,
    /// Full syncs begun and ended: a push that saw one of them begin or end while it
    /// ran records nothing (a full sync lands what it read when it began, after the
    /// pushes that ran beside it, see ARCHITECTURE.md "A full sync holds nothing back").
    fulls: u64,
}

impl Known {
    pub fn get(&self, rel: &Path) -> Option<u64> {
        self.sizes.get(rel).copied()
    }

    /// Where the full syncs stand now: hand it back to [`Known::landed`].
    pub fn fulls(&self) -> u64 {
        self.fulls
    }

    /// A push of `rel`, begun when [`Known::fulls`] said `fulls`, landed `size` bytes,
    /// with the file unchanged while it ran; recorded unless a full sync began or ended
    /// meanwhile.
    pub fn landed(&mut self, rel: &Path, size: u64, fulls: u64) {
        if fulls == self.fulls {
            self.sizes.insert(rel.to_path_buf(), size);
        }
    }

    /// A full sync ended (whatever its outcome): what it landed may be older than what
    /// the pushes beside it recorded.
    pub fn full_ended(&mut self) {
        self.sizes.clear();
        self.fulls += 1;
    }

    /// Forgets what `job` may write on the remote: every path it names and what is
    /// below them (a listing, a tree, a rename's sides), or everything for a full sync.
    pub fn forget(&mut self, job: &Job) {
        if self.sizes.is_empty() && !matches!(job, Job::Full) {
            return;
        }
        match job {
            Job::Full => self.full_ended(),
            _ => {
                let paths: Vec<Entry> = job.plain_paths();
                self.sizes
                    .retain(|p, _| !paths.iter().any(|e| p.starts_with(&e.path)));
            }
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(append: bool, inplace: bool) -> BigFiles {
        BigFiles {
            size: 1000,
            append,
            inplace,
        }
    }

    fn file(size: u64) -> Stamp {
        Stamp {
            size,
            links: 1,
            ino: 7,
            mtime: (1, 0),
            ctime: (1, 0),
        }
    }

    #[test]
    fn a_big_file_that_grew_since_its_last_push_goes_as_an_append() {
        assert_eq!(
            transfer(&rule(true, false), &file(1500), Some(1200)),
            Transfer::Append
        );
        assert_eq!(
            transfer(&rule(true, true), &file(1500), Some(0)),
            Transfer::Append
        );
    }

    #[test]
    fn a_file_that_did_not_grow_or_is_not_known_never_goes_as_an_append() {
        // --append-verify skips a file whose mirror copy is as long or longer: the same
        // size (rewritten), shorter (truncated), or nothing known of the mirror's.
        for (size, known) in [(1500, Some(1500)), (1500, Some(1600)), (1500, None)] {
            assert_eq!(
                transfer(&rule(true, false), &file(size), known),
                Transfer::Whole,
                "{size} {known:?}"
            );
            assert_eq!(
                transfer(&rule(true, true), &file(size), known),
                Transfer::InPlace,
                "{size} {known:?}"
            );
        }
    }

    #[test]
    fn appends_off_leave_in_place_or_whole() {
        assert_eq!(
            transfer(&rule(false, true), &file(1500), Some(1200)),
            Transfer::InPlace
        );
        assert_eq!(
            transfer(&rule(false, false), &file(1500), Some(1200)),
            Transfer::Whole
        );
    }

    #[test]
    fn small_files_and_files_with_other_names_go_whole() {
        assert_eq!(
            transfer(&rule(true, true), &file(999), Some(10)),
            Transfer::Whole
        );
        assert!(is_big(&rule(true, false), &file(1000)));
        let linked = Stamp {
            links: 2,
            ..file(5000)
        };
        assert!(!is_big(&rule(true, true), &linked));
        assert_eq!(
            transfer(&rule(true, true), &linked, Some(10)),
            Transfer::Whole
        );
        assert!(!is_big(&rule(false, false), &file(5000)));
    }

    #[test]
    fn what_another_push_may_write_is_forgotten() {
        let mut k = Known::default();
        for p in ["d/big", "d/e/big", "other", "dd"] {
            k.landed(Path::new(p), 10, k.fulls());
        }
        // A listing of `d/e` (its entries) and a plain push of `other`.
        k.forget(&Job::Paths(vec![
            Entry::listing("d/e"),
            Entry::plain("other"),
        ]));
        assert_eq!(k.get(Path::new("d/e/big")), None);
        assert_eq!(k.get(Path::new("other")), None);
        assert_eq!(k.get(Path::new("d/big")), Some(10));
        // A rename from `d` (everything below it).
        k.forget(&Job::Rename {
            from: "d".into(),
            to: "z".into(),
            dir: true,
            below: Vec::new(),
        });
        assert_eq!(k.get(Path::new("d/big")), None);
        // `dd` is not below `d`.
        assert_eq!(k.get(Path::new("dd")), Some(10));
        k.forget(&Job::Full);
        assert!(k.is_empty());
    }

    // A full sync lands what it read when it began, after the pushes beside it: what
    // one of them landed is not known once a full sync began or ended while it ran.
    #[test]
    fn a_push_beside_a_full_sync_records_nothing() {
        let mut k = Known::default();
        let f = k.fulls();
        k.forget(&Job::Full); // the full sync begins
        k.landed(Path::new("big"), 50, f);
        assert_eq!(k.get(Path::new("big")), None);
        let f = k.fulls();
        k.full_ended();
        k.landed(Path::new("big"), 50, f);
        assert_eq!(k.get(Path::new("big")), None);
        let f = k.fulls();
        k.landed(Path::new("big"), 60, f);
        assert_eq!(k.get(Path::new("big")), Some(60));
    }

    #[test]
    fn a_stamp_is_of_regular_files_only() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("f"), b"12345").expect("write");
        std::os::unix::fs::symlink("f", d.path().join("l")).expect("symlink");
        std::fs::create_dir(d.path().join("dir")).expect("mkdir");
        let s = Stamp::of(d.path(), Path::new("f")).expect("a file");
        assert_eq!((s.size, s.links), (5, 1));
        assert_eq!(Stamp::of(d.path(), Path::new("l")), None);
        assert_eq!(Stamp::of(d.path(), Path::new("dir")), None);
        assert_eq!(Stamp::of(d.path(), Path::new("gone")), None);
    }
}
