//! The changes a watcher sends down its channel, whichever kernel interface read them:
//! one [`Change`] per kernel event (or per pair of events that stand for one rename or
//! one exchange), gathered into a [`Batch`] per read. Nothing after the watcher knows
//! which backend runs.

use std::path::PathBuf;

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
    /// An entry was renamed inside the tree: its MOVED_FROM and MOVED_TO came in one
    /// read, next to each other, with one cookie (otherwise they arrive as the two
    /// plain changes). For a directory the new path is watched already and `found` is
    /// what the walk after its watch found, as for [`Change::DirIn`]; empty for a file.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        dir: bool,
        found: Vec<PathBuf>,
    },
    /// Two entries inside the tree swapped places in one step (renameat2 with
    /// RENAME_EXCHANGE, `mv --exchange`): the kernel reports it as two renames, `a` to
    /// `b` and `b` to `a`, which this stands for. Neither path is gone; each holds what
    /// the other held (`a_dir`, `b_dir`: a directory is at that path now). `found` is
    /// what both hold now: a directory and everything below it (watched already), a
    /// file itself.
    Exchanged {
        a: PathBuf,
        b: PathBuf,
        a_dir: bool,
        b_dir: bool,
        found: Vec<PathBuf>,
    },
    /// The kernel dropped events: the watches were rebuilt from the tree, and everything
    /// may have changed.
    Overflow,
    /// The watch root was gone or replaced and a directory at its path is watched again:
    /// the remotes must be made equal to it whole.
    RootBack,
    /// A filesystem was mounted on the directory `path` and is watched now; `found` is
    /// the mount point and everything on the mounted filesystem.
    Mounted { path: PathBuf, found: Vec<PathBuf> },
    /// The filesystem mounted on `path` was unmounted; what it covered is watched again
    /// and visible, and what only the mount held is gone.
    Unmounted { path: PathBuf },
    /// The directory `path` could not be watched or listed earlier for a reason that
    /// passes (too many open files, ...), and now could: `found` is it and everything
    /// below it, none of which was ever pushed.
    Rewalked { path: PathBuf, found: Vec<PathBuf> },
}

/// Changes from one read of the kernel queue, for one watch root.
#[derive(Debug)]
pub struct Batch {
    /// Which watch root (its index in the config).
    pub root: usize,
    pub changes: Vec<Change>,
}

/// Turns each rename `a` -> `b` followed at once by `b` -> `a` into one
/// [`Change::Exchanged`]: that is how the kernel reports an exchange (two move pairs,
/// back to back). Sent as two renames, the first would be carried as a rename onto a
/// path that is not empty and the second would delete what the first put there. A real
/// rename over `b` and straight back is taken for an exchange too, which costs only a
/// plain push of both paths: nothing is taken for gone.
pub(super) fn pair_exchanges(changes: &mut Vec<Change>) {
    let mut i = 0;
    while i + 1 < changes.len() {
        let swapped = matches!(
            (&changes[i], &changes[i + 1]),
            (
                Change::Renamed { from: a, to: b, .. },
                Change::Renamed { from: b2, to: a2, .. },
            ) if a == a2 && b == b2 && a != b
        );
        if swapped {
            let second = changes.remove(i + 1);
            let first = changes.remove(i);
            changes.insert(i, exchanged(first, second));
        }
        i += 1;
    }
}

/// The one [`Change::Exchanged`] two renames `a` -> `b`, `b` -> `a` stand for.
fn exchanged(first: Change, second: Change) -> Change {
    match (first, second) {
        (
            Change::Renamed {
                from: a,
                to: b,
                dir: b_dir,
                found: found_b,
            },
            Change::Renamed {
                dir: a_dir,
                found: found_a,
                ..
            },
        ) => {
            // A file side is only itself; a directory side's walk holds it already.
            let mut found = if a_dir { found_a } else { vec![a.clone()] };
            if b_dir {
                found.extend(found_b);
            } else {
                found.push(b.clone());
            }
            Change::Exchanged {
                a,
                b,
                a_dir,
                b_dir,
                found,
            }
        }
        (first, _) => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(from: &str, to: &str, dir: bool, found: &[&str]) -> Change {
        Change::Renamed {
            from: PathBuf::from(from),
            to: PathBuf::from(to),
            dir,
            found: found.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn two_renames_back_to_back_in_opposite_directions_are_one_exchange() {
        let mut c = vec![
            Change::File {
                path: PathBuf::from("x"),
                op: Op::ClosedWrite,
            },
            renamed("a", "b", true, &["b", "b/f"]),
            renamed("b", "a", false, &[]),
            renamed("c", "d", false, &[]),
        ];
        pair_exchanges(&mut c);
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(
            c[1],
            Change::Exchanged {
                a: PathBuf::from("a"),
                b: PathBuf::from("b"),
                a_dir: false,
                b_dir: true,
                found: ["a", "b", "b/f"].iter().map(PathBuf::from).collect(),
            }
        );
        assert_eq!(c[2], renamed("c", "d", false, &[]));
        // A chain, and renames with something between them, stay renames.
        let chain = vec![renamed("a", "b", false, &[]), renamed("b", "c", false, &[])];
        let mut c = chain.clone();
        pair_exchanges(&mut c);
        assert_eq!(c, chain);
        let apart = vec![
            renamed("a", "b", false, &[]),
            Change::Overflow,
            renamed("b", "a", false, &[]),
        ];
        let mut c = apart.clone();
        pair_exchanges(&mut c);
        assert_eq!(c, apart);
    }
}
