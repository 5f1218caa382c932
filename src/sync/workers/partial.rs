//! A call that ended in exit 23 naming what rsync could not read: the rest is paid and
//! only that is owed.

use std::path::{Path, PathBuf};

use super::Mirror;
use crate::sync::bigfiles::Transfer;
use crate::sync::job::{Entry, Job, RemoteId};
use crate::sync::recovery;
use crate::sync::rsync::{self, Outcome};

impl Mirror {
    /// A call that ended in exit 23 naming what rsync could not read, each path below
    /// the root and within the call, and rsync's report of them whole: what is owed
    /// (see [`split_failed`]: a directory with everything below it, a file, or the
    /// entry named), what landed, and the outcome of that. With deletes on and a call
    /// that deletes in directories (a full sync, a listing, a tree), rsync skipped
    /// every deletion after an error met while it listed the tree ("IO error
    /// encountered -- skipping file deletion", on its stdout, which is not kept): what
    /// landed runs once more with the failed paths left out (neither sent nor deleted),
    /// which makes the deletions (then the listings' clean-up below them, see
    /// [`Mirror::prune`]); its outcome is the rest's. `None`: the call is owed
    /// whole (another failure, a path outside the root or the call, stderr cut short,
    /// or the second run failed).
    pub(super) fn partial(
        &self,
        t: RemoteId,
        call: &Job,
        outcome: &Outcome,
        excluded: &[PathBuf],
    ) -> Option<(Job, Job, Outcome)> {
        if outcome.status != 23 || outcome.stderr.len() + 64 >= rsync::STDERR_KEEP {
            return None;
        }
        let target = &self.targets[t.0];
        let root = &target.root;
        let failed = failed_in_root(root, &outcome.stderr)?;
        let (owed, paid) = split_failed(call, &failed, |p| {
            std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_dir())
        })?;
        let deletes_in_dirs = match &paid {
            Job::Full => true,
            Job::Paths(paths) => paths.iter().any(|e| e.listing),
            Job::Rename { .. } => false,
        };
        if !(target.delete && deletes_in_dirs) {
            let ok = Outcome {
                status: 0,
                ..outcome.clone()
            };
            return Some((Job::Paths(owed), paid, ok));
        }
        // Left out: the failed paths, but not one that is (or is above) a path the
        // call still names (it goes as that path's implied directory).
        let named: Vec<&Path> = match &paid {
            Job::Paths(paths) => paths.iter().map(|e| e.path.as_path()).collect(),
            _ => Vec::new(),
        };
        let mut without: Vec<PathBuf> = excluded.to_vec();
        without.extend(
            failed
                .iter()
                .filter(|f| !named.iter().any(|n| n.starts_with(f)))
                .cloned(),
        );
        log::info!(
            "{} to {}: rsync skips deletions after an error reading the tree; running it \
             again without the {} path(s) it could not read ({})",
            match &paid {
                Job::Full => format!("full sync of {}", root.display()),
                other => format!("push of {} path(s)", other.count()),
            },
            target.label(),
            failed.len(),
            failed
                .iter()
                .take(FAILED_PATHS_SHOWN)
                .map(|p| format!("{:?}", p.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut left_out = Vec::new();
        let again = self.push(t, &paid, &without, &mut left_out, false, Transfer::Whole);
        if !again.ok() || !left_out.is_empty() {
            return None;
        }
        // The listings' clean-up below them, as after a push that succeeded.
        if self.prune(t, &paid, &without).is_some() {
            return None;
        }
        Some((Job::Paths(owed), paid, again))
    }
}

/// Did rsync fail only because directories on the remote could not give way to a file
/// or link (which needs a delete)? rsync says `cannot delete non-empty directory: X`
/// and `could not make way for new regular file: X` for each, then its exit summary.
pub(super) fn only_blocked_by_directories(outcome: &Outcome) -> bool {
    let mut blocked = false;
    for line in outcome
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if line.contains("could not make way for new ") {
            blocked = true;
        } else if !(line.contains("cannot delete non-empty directory: ")
            || line.starts_with("rsync error: some files/attrs were not transferred"))
        {
            return false;
        }
    }
    blocked
}

/// A call that failed on `failed` (rsync's named paths, relative to the root): what is
/// owed for each and what landed. Each failed path must lie within the call: anywhere
/// for a full sync; for paths, one of its entries (owed as it is), an entry of a
/// directory it lists, or below a directory it pushes with everything below it. One of
/// its entries is owed as itself; another path as the directory with everything below
/// it when it is a directory now (`is_dir`: rsync could not list it, so what is below
/// was never compared), else as the path. What landed: the full sync, or the entries
/// not named. `None`: the call is owed whole (a rename, a path outside the call, or
/// nothing landed).
fn split_failed(
    call: &Job,
    failed: &[PathBuf],
    is_dir: impl Fn(&Path) -> bool,
) -> Option<(Vec<Entry>, Job)> {
    let owe = |p: &PathBuf| {
        if is_dir(p) {
            Entry::tree(p.clone())
        } else {
            Entry::plain(p.clone())
        }
    };
    match call {
        Job::Full => Some((failed.iter().map(owe).collect(), Job::Full)),
        Job::Rename { .. } => None,
        Job::Paths(entries) => {
            let mut owed = Vec::with_capacity(failed.len());
            for p in failed {
                if let Some(e) = entries.iter().find(|e| e.path == *p) {
                    owed.push(e.clone());
                } else if entries.iter().any(|e| {
                    (e.tree && p.starts_with(&e.path))
                        || (e.listing && p.parent() == Some(e.path.as_path()))
                }) {
                    owed.push(owe(p));
                } else {
                    return None;
                }
            }
            let paid: Vec<Entry> = entries
                .iter()
                .filter(|e| !failed.contains(&e.path))
                .cloned()
                .collect();
            (!paid.is_empty()).then_some((owed, Job::Paths(paid)))
        }
    }
}

/// The paths rsync's stderr names as failed, relative to `root` (rsync names them below
/// its working directory: the root, or the nosymfollow view of it); `None` when there
/// are none or one is not below the root.
fn failed_in_root(root: &Path, stderr: &str) -> Option<Vec<PathBuf>> {
    let (named, _) = recovery::failed_paths(stderr, usize::MAX);
    if named.is_empty() {
        return None;
    }
    named
        .iter()
        .map(|p| {
            let p = Path::new(p);
            let rel = p
                .strip_prefix(root)
                .or_else(|_| p.strip_prefix(rsync::VIEW))
                .ok()?;
            let mut out = PathBuf::new();
            for c in rel.components() {
                match c {
                    std::path::Component::Normal(n) => out.push(n),
                    std::path::Component::CurDir => {}
                    _ => return None,
                }
            }
            (!out.as_os_str().is_empty()).then_some(out)
        })
        .collect()
}

/// Failed paths from rsync's stderr named in the log, at most.
pub(super) const FAILED_PATHS_SHOWN: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn failed(stderr: &str) -> Outcome {
        Outcome {
            status: 23,
            stderr: stderr.into(),
            elapsed: Duration::ZERO,
        }
    }

    /// Found by an outside attack run: with deletes off, a directory replaced by a file
    /// was retried for ever (rsync cannot make way without deleting).
    #[test]
    fn a_directory_that_cannot_give_way_is_told_from_other_failures() {
        let summary = "rsync error: some files/attrs were not transferred (see previous \
                       errors) (code 23) at main.c(1394) [sender=3.5.0]";
        assert!(only_blocked_by_directories(&failed(&format!(
            "cannot delete non-empty directory: app\ncould not make way for new regular \
             file: app\n{summary}\n"
        ))));
        assert!(!only_blocked_by_directories(&failed(&format!(
            "cannot delete non-empty directory: app\n{summary}\n"
        ))));
        assert!(!only_blocked_by_directories(&failed(&format!(
            "could not make way for new regular file: app\nrsync: [sender] read errors \
             mapping \"/www/x\": Input/output error (5)\n{summary}\n"
        ))));
    }

    #[test]
    fn the_files_a_partial_transfer_names_are_read_relative_to_the_root() {
        let root = Path::new("/www");
        let stderr = "rsync: [sender] send_files failed to open \"/www/a/secret.txt\": \
                      Permission denied (13)\nrsync: [sender] send_files failed to open \
                      \"/run/sersync2/view/./b.txt\": Permission denied (13)\nIO error \
                      encountered -- skipping file deletion\nrsync error: some files/attrs \
                      were not transferred (see previous errors) (code 23)";
        assert_eq!(
            failed_in_root(root, stderr),
            Some(vec![PathBuf::from("a/secret.txt"), PathBuf::from("b.txt")])
        );
        // A path outside the root (the receiver's, say): the whole job is owed.
        let remote = "rsync: [receiver] mkstemp \"/.x.AbC\" (in mod) failed: Permission \
                      denied (13)";
        assert_eq!(failed_in_root(root, remote), None);
        assert_eq!(
            failed_in_root(root, "rsync: connection unexpectedly closed"),
            None
        );
        let dotdot = "rsync: [sender] send_files failed to open \"/www/../etc/x\": No";
        assert_eq!(failed_in_root(root, dotdot), None);
    }

    /// What a call that failed on named paths owes: a directory rsync could not read
    /// with everything below it, a file as itself, an entry of the call as it was; the
    /// rest landed. A path the call did not reach owes the whole call.
    #[test]
    fn a_partial_failure_owes_what_failed_and_pays_the_rest() {
        let dirs = ["locked", "a/sub", "b"];
        let is_dir = |p: &Path| dirs.iter().any(|d| p == Path::new(d));
        let pb = |s: &str| PathBuf::from(s);
        assert_eq!(
            split_failed(&Job::Full, &[pb("locked"), pb("secret.txt")], is_dir),
            Some((
                vec![Entry::tree("locked"), Entry::plain("secret.txt")],
                Job::Full
            ))
        );
        let call = Job::Paths(vec![
            Entry::listing("a"),
            Entry::listing("b"),
            Entry::plain("pub.txt"),
        ]);
        // An entry of a listed directory, and a listed directory itself.
        assert_eq!(
            split_failed(&call, &[pb("a/secret.txt"), pb("b")], is_dir),
            Some((
                vec![Entry::plain("a/secret.txt"), Entry::listing("b")],
                Job::Paths(vec![Entry::listing("a"), Entry::plain("pub.txt")])
            ))
        );
        // A subdirectory of a listed directory is listed as a directory only: rsync
        // names nothing below it, and a name there is not this call's.
        assert_eq!(split_failed(&call, &[pb("a/sub/x")], is_dir), None);
        assert_eq!(split_failed(&call, &[pb("elsewhere")], is_dir), None);
        // Below a tree, at any depth; a directory there is owed as a tree.
        let tree = Job::Paths(vec![Entry::tree("a")]);
        assert_eq!(
            split_failed(&tree, &[pb("a/sub"), pb("a/sub2/f")], is_dir),
            Some((
                vec![Entry::tree("a/sub"), Entry::plain("a/sub2/f")],
                Job::Paths(vec![Entry::tree("a")])
            ))
        );
        // Nothing landed: the call is owed as it was.
        assert_eq!(split_failed(&tree, &[pb("a")], is_dir), None);
        let rename = Job::Rename {
            from: pb("x"),
            to: pb("y"),
            dir: false,
            below: Vec::new(),
        };
        assert_eq!(split_failed(&rename, &[pb("y")], is_dir), None);
    }
}
