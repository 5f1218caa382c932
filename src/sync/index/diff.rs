//! The comparison of the index with a walk: what changed while no agent ran.

use super::*;
use std::collections::BTreeSet;
use std::ops::Bound;

/// A rename found by [`diff`]: the same inode and device at a new path, with (for a
/// directory) everything below it the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: PathBuf,
    pub to: PathBuf,
    pub dir: bool,
    /// For a directory: `to` and every path below it (see `Job::Rename`).
    pub below: Vec<PathBuf>,
}

/// What differs between the index and a walk of the tree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// New, or changed in any of type, size, mtime, ctime, inode, device, mode, target.
    pub changed: Vec<PathBuf>,
    /// Of `changed`, the files rsync's quick check cannot tell from what the remotes
    /// were sent: a regular file before and now with the same size and mtime (to the
    /// second: only its inode, ctime or mode differ, as after a rewrite with its mtime
    /// restored), or one the index knows only as pushed to some remotes. A full sync
    /// (no `--ignore-times`) would skip them, so they are queued as [`Item::Blind`].
    pub blind: std::collections::BTreeSet<PathBuf>,
    /// Of `changed`, the directories pushed as their listing (with deletes on, what
    /// the remotes hold there beyond the source goes): a directory the index knows only
    /// as unknown (pushed to some remotes only, or made again while its delete was
    /// pushed: rsync may have sent entries of it that the index never learned), one
    /// made again in its place (another inode) while no agent ran, or one the index
    /// does not have. A listing whose directory was gone when its push began and when
    /// it landed, but there while rsync read the tree (`rm -rf d && cp -a build/d d`
    /// twice in a row), sent entries that the index, entering the directory's delete,
    /// never learned. A new directory's entries are all new: listing it costs nothing
    /// more. Not a directory that is there in the index too, changed in place: its
    /// listing would send every file in it again (`--ignore-times`).
    pub listed: std::collections::BTreeSet<PathBuf>,
    /// Gone (whether it was a directory). Nothing below a gone directory is listed.
    pub deleted: Vec<(PathBuf, bool)>,
    pub renamed: Vec<Moved>,
}

impl Diff {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.deleted.is_empty() && self.renamed.is_empty()
    }

    /// As the queue takes them: renames, then deletes, then pushes.
    /// How many entries of `old` the deletes take away: each deleted path and, for a
    /// directory, everything below it (what the brake on mass deletes counts).
    pub fn deleted_entries(&self, old: &Tree) -> usize {
        (self.deleted.iter())
            .map(|(p, dir)| 1 + if *dir { below(old, p).count() } else { 0 })
            .sum()
    }

    pub fn items(&self) -> Vec<Item> {
        let mut out: Vec<Item> = self
            .renamed
            .iter()
            .map(|m| Item::Rename {
                from: m.from.clone(),
                to: m.to.clone(),
                dir: m.dir,
                below: m.below.clone(),
            })
            .collect();
        out.extend(
            self.deleted
                .iter()
                .map(|(p, dir)| Item::Gone(p.clone(), *dir)),
        );
        out.extend((self.changed.iter()).map(|p| {
            if self.blind.contains(p) {
                Item::Blind(p.clone())
            } else {
                let listing = self.listed.contains(p) && !p.as_os_str().is_empty();
                Item::Path(Entry::with_listing(p.clone(), listing), false)
            }
        }));
        out
    }
}

/// Paths strictly below `dir` in `tree`, in order.
pub(super) fn below<'a, V>(
    tree: &'a BTreeMap<PathBuf, V>,
    dir: &'a Path,
) -> impl Iterator<Item = (&'a PathBuf, &'a V)> {
    tree.range::<Path, _>((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
        .take_while(move |(p, _)| p.starts_with(dir))
        .filter(move |(p, _)| p.as_path() != dir)
}

/// Is everything below `from` in `old` the same (ctime included) at the same place
/// below `to` in `new`, and nothing more?
pub(super) fn same_subtree(old: &Tree, from: &Path, new: &Tree, to: &Path) -> bool {
    let mut a = below(old, from);
    let mut b = below(new, to);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some((pa, ma)), Some((pb, mb))) => {
                let (Ok(ra), Ok(rb)) = (pa.strip_prefix(from), pb.strip_prefix(to)) else {
                    return false;
                };
                if ra != rb || ma != mb {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// What differs between `old` (the index) and `new` (a walk). A path in both with any
/// field different, the ctime included, is changed: a file whose size and mtime match
/// but whose inode or ctime do not was written since. A path gone from `old` whose
/// inode and device are at a path new in `new` is a rename when the entry is the same
/// but for its ctime and, for a directory, everything below it is the same; otherwise
/// it is a delete and the new path is pushed. Pure.
pub fn diff(old: &Tree, new: &Tree) -> Diff {
    let mut out = Diff::default();
    let (old_side, new_side) = join(old, new);
    // Gone paths by (dev, ino): candidates for a rename.
    let mut gone: HashMap<(u64, u64), &Path> = HashMap::new();
    for (p, m, there) in &old_side {
        if there.is_none() {
            gone.insert((m.dev, m.ino), p);
        }
    }
    // Paths consumed by a rename (the `from` side and the `to` side, and below).
    let mut moved_from: std::collections::HashSet<&Path> = std::collections::HashSet::new();
    // At or below a path renamed away (by its ancestors: linear in the depth).
    let under =
        |set: &std::collections::HashSet<&Path>, p: &Path| p.ancestors().any(|a| set.contains(a));
    let mut moved_to: Option<&Path> = None;
    for &(p, m, was) in &new_side {
        if moved_to.is_some_and(|d| p.starts_with(d)) {
            continue;
        }
        moved_to = None;
        match was {
            Some(o) if o == m => continue,
            Some(o) => {
                if quick_check_blind(o, m) {
                    out.blind.insert(p.clone());
                }
                if m.kind == Kind::Dir
                    && (o.kind == Kind::Unknown
                        || (o.kind == Kind::Dir && (o.dev, o.ino) != (m.dev, m.ino)))
                {
                    out.listed.insert(p.clone());
                }
                out.changed.push(p.clone());
                continue;
            }
            None => {}
        }
        let from = gone
            .get(&(m.dev, m.ino))
            .copied()
            .filter(|f| old.get(*f).is_some_and(|o| o.same_but_ctime(m)))
            .filter(|f| m.kind != Kind::Dir || same_subtree(old, f, new, p))
            // Not into itself, and not twice.
            .filter(|f| !p.starts_with(f) && !under(&moved_from, f));
        match from {
            Some(f) => {
                let dir = m.kind == Kind::Dir;
                let below_to = if dir {
                    std::iter::once(p.clone())
                        .chain(below(new, p).map(|(q, _)| q.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                out.renamed.push(Moved {
                    from: f.to_path_buf(),
                    to: p.clone(),
                    dir,
                    below: below_to,
                });
                moved_from.insert(f);
                if dir {
                    moved_to = Some(p);
                }
            }
            None => {
                if m.kind == Kind::Dir {
                    out.listed.insert(p.clone());
                }
                out.changed.push(p.clone())
            }
        }
    }
    // Deletes: gone, not renamed away, not below something deleted or no longer a
    // directory.
    let mut covered: Option<&Path> = None;
    for &(p, m, now) in &old_side {
        if covered.is_some_and(|d| p.starts_with(d)) {
            continue;
        }
        covered = None;
        if under(&moved_from, p) {
            continue;
        }
        match now {
            Some(n) if n.kind == Kind::Dir || m.kind != Kind::Dir => {}
            Some(_) => covered = Some(p),
            None => {
                let dir = m.kind == Kind::Dir;
                out.deleted.push((p.clone(), dir));
                if dir {
                    covered = Some(p);
                }
            }
        }
    }
    out
}

/// Would rsync's quick check (size and mtime) skip the file `new`, given what the
/// remotes were sent (`old`)? A file the index knows only as sent to some remotes
/// ([`Kind::Unknown`]) counts: what those hold is not known.
fn quick_check_blind(old: &Meta, new: &Meta) -> bool {
    const SEC: i64 = 1_000_000_000;
    new.kind == Kind::File
        && (old.kind == Kind::Unknown
            || (old.kind == Kind::File
                && old.size == new.size
                && old.mtime.div_euclid(SEC) == new.mtime.div_euclid(SEC)))
}

/// Each entry of `old` with its match in `new`, and each entry of `new` with its match
/// in `old`, in order: one pass over both (they share their order), no lookups.
#[allow(clippy::type_complexity)]
pub(super) fn join<'a>(
    old: &'a Tree,
    new: &'a Tree,
) -> (
    Vec<(&'a PathBuf, &'a Meta, Option<&'a Meta>)>,
    Vec<(&'a PathBuf, &'a Meta, Option<&'a Meta>)>,
) {
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    let (mut old_side, mut new_side) =
        (Vec::with_capacity(old.len()), Vec::with_capacity(new.len()));
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(&(po, mo)), None) => {
                old_side.push((po, mo, None));
                o.next();
            }
            (None, Some(&(pn, mn))) => {
                new_side.push((pn, mn, None));
                n.next();
            }
            (Some(&(po, mo)), Some(&(pn, mn))) => match po.cmp(pn) {
                std::cmp::Ordering::Less => {
                    old_side.push((po, mo, None));
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    new_side.push((pn, mn, None));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    old_side.push((po, mo, Some(mn)));
                    new_side.push((pn, mn, Some(mo)));
                    o.next();
                    n.next();
                }
            },
        }
    }
    (old_side, new_side)
}

/// The files of `tree` at or below each path of `named`, or directly in it where it is
/// marked `true` (a directory's listing). Pure.
pub(super) fn files_named(tree: &Tree, named: &[(PathBuf, bool)]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (p, listing) in named {
        let from = (Bound::Included(p.as_path()), Bound::Unbounded);
        let files = (tree.range::<Path, _>(from))
            .take_while(|(q, _)| q.starts_with(p))
            .filter(|(q, m)| {
                m.kind == Kind::File && (!*listing || q.parent() == Some(p.as_path()))
            });
        out.extend(files.map(|(q, _)| q.clone()));
    }
    out
}
