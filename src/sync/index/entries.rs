//! The index's entries as pure functions of its trees: what a landing supersedes, what
//! several remotes' trees agree on, and what a push enters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::diff::{below, join};
use super::recorder::Pending;
use super::tree::UNKNOWN;
use super::*;

/// A push of `p` as `meta` landed on the remote at `pos` of its root: what that remote
/// was counted as having had land of the paths around `p` (in `pending`) may be true
/// there no longer. When `p` is gone or not a directory there, nothing is below it:
/// the pushes below `p` that landed on it before no longer count there (a delete
/// excepted). When `p` is there, its ancestors are directories there: a delete of one,
/// or its push as a file or link, no longer counts there, so that the ancestor's entry
/// (which removes what is below it from the index) is not made while this remote holds
/// `p`. Returns whether nothing is below `p` on that remote now.
pub(super) fn supersede(
    pending: &mut BTreeMap<PathBuf, Pending>,
    p: &Path,
    meta: Option<&Meta>,
    pos: usize,
) -> bool {
    let not_dir = |m: Option<&Meta>| m.is_none_or(|m| m.kind != Kind::Dir);
    if meta.is_some() {
        for a in p.ancestors().skip(1) {
            if let Some(e) = pending.get_mut(a).filter(|e| not_dir(e.meta.as_ref())) {
                e.done[pos] = false;
            }
        }
    }
    if !not_dir(meta) {
        return false;
    }
    for (_, e) in below_mut(pending, p) {
        if e.meta.is_some() {
            e.done[pos] = false;
        }
    }
    true
}

/// The paths strictly below `dir` in `map`, to change.
pub(super) fn below_mut<'a, V>(
    map: &'a mut BTreeMap<PathBuf, V>,
    dir: &'a Path,
) -> impl Iterator<Item = (&'a PathBuf, &'a mut V)> {
    map.range_mut::<Path, _>((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
        .take_while(move |(q, _)| q.starts_with(dir))
}

/// Two trees as one, for what several remotes hold: an entry's metadata where both
/// agree; unknown where they differ or only one has the path (the next start pushes it
/// again, or deletes it when it is gone). Pure.
pub(super) fn agreed(a: &Tree, b: &Tree) -> Tree {
    let (a_side, b_side) = join(a, b);
    let mut out = Tree::new();
    for (p, m, other) in a_side {
        let m = if other == Some(m) { m.clone() } else { UNKNOWN };
        out.insert(p.clone(), m);
    }
    for (p, _, other) in b_side {
        if other.is_none() {
            out.insert(p.clone(), UNKNOWN);
        }
    }
    out
}

/// Whether `tree` has `p` entered as `meta` (`None`: neither it nor anything below it
/// is in), so that a push of it as that landing on one remote tells nothing new. Pure.
pub(super) fn entered_as(tree: &Tree, p: &Path, meta: Option<&Meta>) -> bool {
    match meta {
        Some(m) => m.kind != Kind::Unknown && tree.get(p) == Some(m),
        None => !tree.contains_key(p) && below(tree, p).next().is_none(),
    }
}

/// Enters what a path was pushed as: its metadata, or (gone) it and everything below
/// it removed.
pub(super) fn enter(tree: &mut Tree, p: PathBuf, meta: Option<Meta>) {
    match meta {
        Some(m) => {
            if m.kind != Kind::Dir {
                let gone: Vec<PathBuf> = below(tree, &p).map(|(q, _)| q.clone()).collect();
                for q in gone {
                    tree.remove(&q);
                }
            }
            tree.insert(p, m);
        }
        None => {
            let gone: Vec<PathBuf> = below(tree, &p).map(|(q, _)| q.clone()).collect();
            for q in gone {
                tree.remove(&q);
            }
            tree.remove(&p);
        }
    }
}
