//! A call's listings: what they must leave out (excluded directories, what is below a
//! file now), their prune, and listings to push again when their directory changed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Mirror;
use crate::filter::Excludes;
use crate::sync::job::{Entry, Job, RemoteId};
use crate::sync::rsync::Outcome;

impl Mirror {
    /// After a call that listed directories holding directories themselves: one
    /// call that deletes what the remote holds below them beyond the source (a directory
    /// deleted and made again before the delete reached the remote keeps nothing of the
    /// old tree; a listing alone deletes only at its own level). After, not before: the
    /// listing has made the remote's entries the source's kind (a file where a directory
    /// now is, and the other way round). `Some` (the outcome) when that call failed: the
    /// job then counts as failed and is retried whole.
    pub(super) fn prune(&self, t: RemoteId, job: &Job, excluded: &[PathBuf]) -> Option<Outcome> {
        let target = &*self.target_for_call(t);
        let Job::Paths(paths) = job else {
            return None;
        };
        if !target.delete {
            return None;
        }
        // A tree's push deleted all the way down already.
        let dirs = prunable(&target.root, paths);
        if dirs.is_empty() {
            return None;
        }
        let (argv, stdin) = target.prune_argv(&dirs, excluded);
        self.log_call(&format!("cd {} && rsync", target.root.display()), &argv);
        let outcome = self.rsync(&target.root, &argv, &stdin);
        (!outcome.ok()).then_some(outcome)
    }

    /// The temp and excluded names among the entries of the directories `job` lists
    /// (pushed with their entries): one listing of each such directory.
    pub(super) fn excluded_in_listings(&self, t: RemoteId, job: &Job) -> Vec<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        let Job::Paths(paths) = job else {
            return Vec::new();
        };
        let root = &self.targets[t.0].root;
        let mut out = Vec::new();
        for e in paths.iter().filter(|e| e.listing) {
            let dir = e.path.as_path();
            if e.tree {
                // Pushed with everything below it: what the excludes keep out there.
                let excludes = &self.excludes[t.0];
                out.extend(crate::watch::excluded_paths_below(root, dir, excludes));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let rel = dir.join(&name);
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                let excludes = &self.excludes[t.0];
                if crate::filter::is_temp_name(name.as_bytes())
                    || (excludes.excludes(&rel, is_dir)
                        && excludes.needs_anchored_rule(&rel, is_dir))
                {
                    out.push(rel);
                }
            }
        }
        out
    }

    /// The `<filter>` excludes of `t`'s root.
    pub(crate) fn excludes_of(&self, t: RemoteId) -> &crate::filter::Excludes {
        &self.excludes[t.0]
    }

    /// What the `<filter>` excludes keep out of a full sync of `t`'s root, found by a
    /// parallel walk of the tree.
    pub(crate) fn excluded_paths(&self, t: RemoteId) -> Vec<PathBuf> {
        let excludes = &self.excludes[t.0];
        if !excludes.needs_walk() {
            return Vec::new();
        }
        let root = &self.targets[t.0].root;
        let started = Instant::now();
        let excluded = crate::watch::excluded_paths(root, excludes);
        log::debug!(
            "full sync of {}: {} excluded path(s) found in {:.2}s",
            root.display(),
            excluded.len(),
            started.elapsed().as_secs_f64()
        );
        excluded
    }

    /// A full sync of `t` says what its tree holds that no push ever mirrors for its
    /// name alone: files whose names match the temp-name pattern (a real `.env.Backup`
    /// or `4913` included), how many and the first few, so an operator learns of them.
    pub(super) fn say_temp_named(&self, t: RemoteId) {
        let root = &self.targets[t.0].root;
        let found = crate::watch::temp_named(root, &self.excludes[t.0]);
        if let Some(line) = found.line() {
            log::warn!(
                remote = self.targets[t.0].label().as_str();
                "full sync of {} to {}: {line}; see docs/guide.md, What is mirrored, and when",
                root.display(),
                self.targets[t.0].label()
            );
        }
    }
}

/// A path push as it is sent (`None`: as it is). A path that is now a directory the
/// `<filter>` excludes only as a directory (`e/`: queued as a file, or a file's delete,
/// or a rename's old path, then replaced by such a directory) is not pushed: `--dirs
/// ./e` would make the excluded directory on the remote (and `./e/` would leave what the
/// remote holds there). What the remote may hold there (the file pushed
/// before) must go as a full sync would make it go: with deletes on, the path goes as
/// its parent's listing (the excluded directory stays out by its rsync pattern, a file or
/// link of that name on the remote is deleted); with deletes off it is left out. The
/// call itself (its marks, the fail log) still names the path.
pub(super) fn sent_paths(root: &Path, excludes: &Excludes, delete: bool, job: &Job) -> Option<Job> {
    let Job::Paths(paths) = job else {
        return None;
    };
    let now_excluded = excluded_directories(root, excludes, job);
    if now_excluded.is_empty() {
        return None;
    }
    let mut sent: Vec<Entry> = Vec::with_capacity(paths.len());
    for e in paths {
        let entry = if now_excluded.contains(&e.path) {
            if !delete {
                continue;
            }
            Entry::listing(e.path.parent().map(Path::to_path_buf).unwrap_or_default())
        } else {
            e.clone()
        };
        if !sent.contains(&entry) {
            sent.push(entry);
        }
    }
    Some(Job::Paths(sent))
}

/// The listings `sent` (the call as [`sent_paths`] sends it) has that `call` does not:
/// as a job of those listings alone.
pub(super) fn listings_added(call: &Job, sent: &Job) -> Job {
    let (Job::Paths(call), Job::Paths(sent)) = (call, sent) else {
        return Job::Paths(Vec::new());
    };
    let named: HashSet<&Path> = (call.iter())
        .filter(|e| e.listing)
        .map(|e| e.path.as_path())
        .collect();
    Job::Paths(
        sent.iter()
            .filter(|e| e.listing && !named.contains(e.path.as_path()))
            .cloned()
            .collect(),
    )
}

/// The listed directories of a push that need a prune: directories now (not links:
/// a listing whose directory is a link went as the link, and `./link/` would make rsync
/// read the link's target, anywhere, and delete through the remote's link of that name)
/// with a directory among their entries.
fn prunable(root: &Path, paths: &[Entry]) -> Vec<PathBuf> {
    paths
        .iter()
        .filter(|e| e.listing && !e.tree)
        .map(|e| e.path.clone())
        .filter(|d| {
            std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir())
                && std::fs::read_dir(root.join(d)).is_ok_and(|mut it| {
                    it.any(|e| e.is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_dir())))
                })
        })
        .collect()
}

/// The paths of `job` (plain or listed) that the `<filter>` excludes only as directories
/// and that are not a file or link now: a directory (see [`sent_paths`]), or gone. A
/// gone one goes as its parent's listing too: its push is a delete of what the remote
/// holds there, and if the name became such a directory before rsync read the tree,
/// rsync would keep the directory out and the remote's file of that name would stay
/// for good (no event tells of an excluded directory coming or going: simulator seed
/// 4093419). Its parent's listing deletes that file whatever the name is by then.
/// Also the paths the `<filter>` rules keep out as files only that are gone or not a
/// directory now (see inside).
pub(super) fn excluded_directories(root: &Path, excludes: &Excludes, job: &Job) -> Vec<PathBuf> {
    let Job::Paths(paths) = job else {
        return Vec::new();
    };
    paths
        .iter()
        .filter(|e| {
            let (file, dir) = (
                excludes.excludes(&e.path, false),
                excludes.excludes(&e.path, true),
            );
            let (as_dir, as_file) = (dir && !file, file && !dir);
            // The tree is looked at only for such names (one stat per path of every
            // call was most of the agent's CPU in a burst).
            if !as_dir && !as_file {
                return false;
            }
            let now = std::fs::symlink_metadata(root.join(&e.path)).ok();
            (as_dir && now.as_ref().is_none_or(|m| m.is_dir()))
                // Gone or a file or link now, and kept out by the `<filter>` rules as a
                // file but not as a directory (`+ */` ... `- *`, `+ cache/` `- cache`):
                // rsync takes a missing argument for a file, and keeps an excluded file
                // out, so the remote's directory of that name stays, which a full sync
                // deletes. Its parent's listing deletes it whatever it is.
                || (as_file && now.as_ref().is_none_or(|m| !m.is_dir()))
        })
        .map(|e| e.path.clone())
        .collect()
}

/// The paths of `paths` (relative to `root`) below something that is not a directory
/// now: a file, or a link (a directory swapped for a link while the path waited: the
/// path is not in the tree, and rsync must not read it through the link). Each
/// directory above them is looked at once, without following links, and its answer
/// (it or one above it is not a directory) kept by its bytes: a path then costs one
/// look-up of its parent (hashing `Path`s by their components, three per path, twice
/// per call, was most of the workers' own CPU in a burst).
pub(super) fn below_files(root: &Path, paths: &[Entry]) -> Vec<PathBuf> {
    let mut under: HashMap<&[u8], bool> = HashMap::new();
    let mut seen: HashSet<&Path> = HashSet::new();
    let mut below = Vec::new();
    for e in paths {
        if under_non_directory(root, e.path.parent(), &mut under) && seen.insert(e.path.as_path()) {
            below.push(e.path.clone());
        }
    }
    below
}

/// The tops of what is gone now (relative to `root`) above paths of `paths`, each once,
/// and none that `paths` name: the call sends their deletes beside the paths. A
/// deletion request below a gone directory (`./c/a` after `rm -rf c`) goes with its
/// implied directories, and rsync sends none it cannot find: the receiver then finds
/// the path as its filesystem does, through what the remote holds at `c`, and where
/// that is a link (`c -> a`, pushed while the source had that link) it deleted `a/a`,
/// which the source has (real rsync 3.5.0; the simulator's seed 7060634). With `./c`
/// in the call the receiver, which goes through the file list in order, deletes `c`
/// first (a link as the link): the requests below it then find nothing. Made again
/// before rsync reads it, `c` is sent as the directory it is, and the requests below
/// it are resolved in it. Each directory is looked at once per call.
pub(super) fn gone_tops(root: &Path, paths: &[Entry]) -> Vec<Entry> {
    let mut top_gone: HashMap<&[u8], Option<&Path>> = HashMap::new();
    let mut tops: Vec<&Path> = Vec::new();
    for e in paths {
        if let Some(t) = gone_at_or_above(root, e.path.parent(), &mut top_gone) {
            tops.push(t);
        }
    }
    if tops.is_empty() {
        return Vec::new();
    }
    let named: HashSet<&Path> = paths.iter().map(|e| e.path.as_path()).collect();
    let mut seen: HashSet<&Path> = HashSet::new();
    tops.into_iter()
        .filter(|t| !named.contains(t) && seen.insert(t))
        .map(Entry::plain)
        .collect()
}

/// The topmost of `dir` and the directories above it (relative to `root`) that is
/// gone now (not there at all: one below a file is `below_files`' business), if any.
/// `known` holds the answers found so far, by the directories' bytes.
fn gone_at_or_above<'a>(
    root: &Path,
    dir: Option<&'a Path>,
    known: &mut HashMap<&'a [u8], Option<&'a Path>>,
) -> Option<&'a Path> {
    answer_down(dir, known, None, |above, d| {
        above.or_else(|| gone(root, d).then_some(d))
    })
}

/// Whether nothing is at `path` (relative to `root`) now: not there at all.
pub(super) fn gone(root: &Path, path: &Path) -> bool {
    std::fs::symlink_metadata(root.join(path))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// Whether `dir` (relative to `root`) or a directory above it is a file or link now
/// (`None` or empty: the root itself, never). `known` holds the answers found so far,
/// by the directories' bytes.
fn under_non_directory<'a>(
    root: &Path,
    dir: Option<&'a Path>,
    known: &mut HashMap<&'a [u8], bool>,
) -> bool {
    answer_down(dir, known, false, |above, d| {
        above || std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| !m.is_dir())
    })
}

/// The answer for `dir` (`None` or empty: the root, `top`), where each directory's
/// answer is `step` of its parent's answer and itself: up to the first directory
/// `known` answers already (or the root), then down again, each directory looked at
/// once and its answer kept by its bytes.
fn answer_down<'a, A: Copy>(
    dir: Option<&'a Path>,
    known: &mut HashMap<&'a [u8], A>,
    top: A,
    step: impl Fn(A, &'a Path) -> A,
) -> A {
    use std::os::unix::ffi::OsStrExt;
    let nonempty = |d: &&Path| !d.as_os_str().is_empty();
    let mut unknown = Vec::new();
    let mut answer = top;
    let mut at = dir.filter(nonempty);
    while let Some(d) = at {
        if let Some(&a) = known.get(d.as_os_str().as_bytes()) {
            answer = a;
            break;
        }
        unknown.push(d);
        at = d.parent().filter(nonempty);
    }
    for d in unknown.into_iter().rev() {
        answer = step(answer, d);
        known.insert(d.as_os_str().as_bytes(), answer);
    }
    answer
}

/// The first of `path`'s proper ancestors (relative to `root`) that is not a directory
/// now, from the top: a file or link, or gone (its push then deletes it on the remote,
/// with what the remote holds below it).
pub(super) fn first_non_directory(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut above: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    above.reverse();
    above
        .into_iter()
        .find(|a| !std::fs::symlink_metadata(root.join(a)).is_ok_and(|m| m.is_dir()))
        .map(Path::to_path_buf)
}

/// The directories `job` lists that are not directories now.
pub(super) fn missing_listings(root: &Path, job: &Job) -> Vec<(PathBuf, Option<DirStamp>)> {
    let Job::Paths(paths) = job else {
        return Vec::new();
    };
    paths
        .iter()
        .filter(|e| e.listing && !e.path.as_os_str().is_empty())
        .map(|e| e.path.clone())
        .filter(|d| !std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir()))
        .map(|d| {
            let stamp = parent_stamp(root, &d);
            (d, stamp)
        })
        .collect()
}

/// What a directory's entries last changed at: device, inode, mtime and ctime (ns).
type DirStamp = (u64, u64, i64, i64, i64, i64);

/// The stamp of `path`'s parent directory (relative to `root`), read without following
/// a link; `None` when it cannot be read.
fn parent_stamp(root: &Path, path: &Path) -> Option<DirStamp> {
    let parent = path.parent().unwrap_or(Path::new(""));
    let m = std::fs::symlink_metadata(root.join(parent)).ok()?;
    Some(stamp(&m))
}

/// The directories `job` lists that are directories now, with their stamps.
pub(super) fn listing_stamps(root: &Path, job: &Job) -> Vec<(PathBuf, DirStamp)> {
    let Job::Paths(paths) = job else {
        return Vec::new();
    };
    paths
        .iter()
        .filter(|e| e.listing && !e.path.as_os_str().is_empty())
        .filter_map(|e| Some((e.path.clone(), dir_stamp(root, &e.path)?)))
        .collect()
}

/// Of the listings pushed (with deletes on), those whose directory is not the one it
/// was when the call was built, or whose entries changed since (made, removed or
/// renamed while rsync read it or before the prune looked): they go out again, keeping
/// their marks. rsync sends each subdirectory of a listing as a directory only, so what
/// the remote holds below one of an older tree stays unless the prune deletes it; the
/// prune looks at the directory after the call, and one that went away or lost its
/// subdirectories meanwhile was not pruned, and a barrier passed with the old entries
/// on the remote (simulator seed 448311).
pub(super) fn listings_changed(root: &Path, listed: Vec<(PathBuf, DirStamp)>) -> Vec<PathBuf> {
    listed
        .into_iter()
        .filter(|(d, stamp)| dir_stamp(root, d) != Some(*stamp))
        .map(|(d, _)| d)
        .collect()
}

/// The stamp of the directory `dir` (relative to `root`), read without following a
/// link; `None` when it is not a directory or cannot be read.
fn dir_stamp(root: &Path, dir: &Path) -> Option<DirStamp> {
    let m = std::fs::symlink_metadata(root.join(dir))
        .ok()
        .filter(std::fs::Metadata::is_dir)?;
    Some(stamp(&m))
}

/// The [`DirStamp`] of what `m` describes.
fn stamp(m: &std::fs::Metadata) -> DirStamp {
    use std::os::unix::fs::MetadataExt;
    (
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// Of the listings that went out as deletes (their directory missing when the call was
/// built), those that go out again: a directory there now, or one that may have been
/// there while rsync read the tree, made and removed again during the call (its
/// parent's entries changed meanwhile). rsync would then have sent it alone, and what
/// the remote holds of the old one stays; the barrier must not pass on it.
pub(super) fn listings_again(
    root: &Path,
    missing: Vec<(PathBuf, Option<DirStamp>)>,
) -> Vec<PathBuf> {
    missing
        .into_iter()
        .filter(|(d, stamp)| {
            std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir())
                || parent_stamp(root, d) != *stamp
        })
        .map(|(d, _)| d)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The simulator's seed 7060634: `./c/b ./c/a` (deletes owed since `c` was a
    // directory) pushed after `c` went, while the remote held the link `c -> a` of a
    // later push: real rsync deleted the remote's `a/a` through it. The tops of what
    // is gone go with them, once, and none the call names already.
    #[test]
    fn the_top_of_a_gone_directory_goes_with_the_deletes_below_it() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("a/b")).expect("mkdir");
        std::fs::write(root.path().join("a/f"), b"x").expect("write");
        let e = |p: &str| Entry::plain(p);
        let paths = [
            e("c/b"),
            e("a/f"),
            e("c/a/x"),
            Entry::listing("c/d"),
            e("a/gone"),
            e("a/b/gone/deeper/x"),
            e("g/h"),
            e("g"),
        ];
        let tops: Vec<String> = (gone_tops(root.path(), &paths).iter())
            .map(|e| {
                assert!(!e.listing);
                e.path.display().to_string()
            })
            .collect();
        assert_eq!(tops, ["c", "a/b/gone"]);
        // None below a gone directory: nothing to add.
        assert!(gone_tops(root.path(), &[e("a/f"), e("a/gone"), e("x")]).is_empty());
    }

    /// Found by the simulator (seed 330, directory-only excludes): `write e; rm e;
    /// mv build/e e` with `e/` excluded: the file's events queued `e`, and its push
    /// (`--dirs ./e`) made the excluded directory on the remote. Such a path goes as its
    /// parent's listing (a file `e` pushed before is deleted there), or, with deletes
    /// off, not at all; other paths as they are.
    #[test]
    fn a_path_that_is_an_excluded_directory_now_goes_as_its_parents_listing() {
        let root = tempfile::tempdir().expect("tempdir");
        for d in ["e", "d/e", "d/f"] {
            std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
        }
        std::fs::write(root.path().join("d/x"), b"x").expect("write");
        let excludes = Excludes::new(vec![crate::config::path_regex(r"(.*/)?e/").expect("regex")]);
        let job = Job::Paths(vec![
            Entry::plain("e"),
            Entry::plain("d/e"),
            Entry::plain("d/x"),
            Entry::plain("d/f"),
            Entry::plain("gone"),
        ]);
        let sent = sent_paths(root.path(), &excludes, true, &job);
        assert_eq!(
            sent,
            Some(Job::Paths(vec![
                Entry::listing(""),
                Entry::listing("d"),
                Entry::plain("d/x"),
                Entry::plain("d/f"),
                Entry::plain("gone"),
            ]))
        );
        let kept = sent_paths(root.path(), &excludes, false, &job);
        assert_eq!(
            kept,
            Some(Job::Paths(vec![
                Entry::plain("d/x"),
                Entry::plain("d/f"),
                Entry::plain("gone"),
            ]))
        );
        // A listing of such a directory too (seed 3708: a file renamed away and the
        // directory made at its old path).
        let listed = Job::Paths(vec![Entry::listing("d/e"), Entry::plain("d/x")]);
        assert_eq!(
            sent_paths(root.path(), &excludes, true, &listed),
            Some(Job::Paths(vec![Entry::listing("d"), Entry::plain("d/x")]))
        );
        let plain = Job::Paths(vec![Entry::plain("d/x"), Entry::listing("d/f")]);
        assert_eq!(sent_paths(root.path(), &excludes, true, &plain), None);
    }

    /// A directory deleted under rules that keep files out but let directories in
    /// (`+ */`, `+ *.txt`, `- *`): its delete went as `./public/sub`, which rsync takes
    /// for a file and kept out, so the remote kept the directory and what it held (the
    /// end-to-end test files_by_suffix_in_every_directory_... found it). It goes as its
    /// parent's listing.
    #[test]
    fn a_gone_path_the_rules_keep_out_only_as_a_file_goes_as_its_parents_listing() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("public")).expect("mkdir");
        std::fs::write(root.path().join("public/a.txt"), b"x").expect("write");
        let rules = crate::config::rules::Rules(
            ["+ */", "+ *.txt", "- *"]
                .iter()
                .map(|r| crate::config::rules::parse(r.as_bytes()).expect("rule"))
                .collect(),
        );
        let excludes = Excludes::default().with_rules(rules);
        let job = Job::Paths(vec![
            Entry::plain("public/sub"),
            Entry::plain("public/a.txt"),
            Entry::plain("public/gone.txt"),
        ]);
        assert_eq!(
            sent_paths(root.path(), &excludes, true, &job),
            Some(Job::Paths(vec![
                Entry::listing("public"),
                Entry::plain("public/a.txt"),
                Entry::plain("public/gone.txt"),
            ]))
        );
    }

    /// Found by the simulator (seed 245, symlinks): `rm -rf e; ln -s . e` while the
    /// listing of `e` waited: the listing went as the link, but its prune ran as
    /// `-r --delete ./e/`, which reads the whole root through the link and deletes
    /// through the remote's link of that name. Only directories are pruned.
    #[test]
    fn a_listing_whose_directory_is_a_link_now_is_not_pruned() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("d/sub")).expect("mkdir");
        std::fs::create_dir_all(root.path().join("flat")).expect("mkdir");
        std::os::unix::fs::symlink(".", root.path().join("e")).expect("ln -s . e");
        std::os::unix::fs::symlink("d", root.path().join("l")).expect("ln -s d l");
        let paths = [
            Entry::listing("d"),
            Entry::listing("e"),
            Entry::listing("l"),
            Entry::listing("flat"),
            Entry::listing("gone"),
            Entry::plain("d/sub"),
        ];
        assert_eq!(prunable(root.path(), &paths), [PathBuf::from("d")]);
    }

    /// Paths below a link (to a directory: rsync -R would follow it and make a
    /// directory of it on the remote) or a file are left out of a call, each once; a
    /// path below only directories, or below one that is gone (its deletion request),
    /// stays, and so does the link itself.
    #[test]
    fn paths_below_a_link_or_a_file_now_are_left_out() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("a/b")).expect("mkdir");
        std::os::unix::fs::symlink(".", root.path().join("d")).expect("ln -s . d");
        std::os::unix::fs::symlink("a", root.path().join("a/b/l")).expect("ln -s a l");
        std::fs::write(root.path().join("f"), b"x").expect("write f");
        let paths = [
            Entry::plain("d"),
            Entry::plain("d/d"),
            Entry::plain("d/a"),
            Entry::listing("d/a"),
            Entry::plain("a/b/c"),
            Entry::listing("a/b/l/b"),
            Entry::plain("f/x"),
            Entry::plain("gone/x"),
            Entry::listing("a"),
        ];
        let pb = PathBuf::from;
        assert_eq!(
            below_files(root.path(), &paths),
            [pb("d/d"), pb("d/a"), pb("a/b/l/b"), pb("f/x")]
        );
        assert!(below_files(root.path(), &paths[4..5]).is_empty());
    }

    /// A listing whose directory went away after the call was built (so its prune,
    /// which looks at it after the call, did not run) goes out again; one unchanged
    /// does not (found by the simulator, seed 448311: `c/` was listed while `c/c`, a
    /// newer directory, stood where an older one's files still were on the remote, then
    /// `c` was moved away, the prune was skipped and a barrier passed).
    #[test]
    fn a_listing_whose_directory_went_away_before_its_prune_goes_out_again() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        std::fs::create_dir_all(root.join("c/c")).expect("c/c");
        std::fs::create_dir(root.join("e")).expect("e");
        let job = Job::Paths(vec![
            Entry::listing("c"),
            Entry::listing("e"),
            Entry::plain("f"),
        ]);
        let listed = listing_stamps(root, &job);
        assert_eq!(listed.len(), 2, "the listings that are directories");
        std::fs::rename(root.join("c"), root.join("old")).expect("mv c old");
        assert_eq!(listings_changed(root, listed), [PathBuf::from("c")]);
    }
}
