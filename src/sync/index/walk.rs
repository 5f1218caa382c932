//! The stat-only walk of a root that the index is compared with.

use super::*;

/// The entry at `root/rel` as lstat sees it (and its target if a link); `None` when
/// there is nothing there, or when a directory on the way below `root` is a link now:
/// what a link to a directory leads to is no entry of the tree (see [`Looker`]).
#[cfg(test)]
pub fn stat(root: &Path, rel: &Path) -> Option<Meta> {
    Looker::new(root).stat(rel)
}

/// Looks at entries below a root without following a link on the way: each entry's
/// directory is opened component by component with `O_NOFOLLOW`
/// ([`crate::sys::fsafe::open_dir_beneath`]), and the entry is read there. A directory
/// of the tree swapped for a link to another (`rm -rf d; ln -s /etc d`) has nothing
/// below it: read through the link, `d/passwd` was entered in the index and reported
/// deleted at the next start (the brake held thousands of such deletes). The last
/// directory opened is kept, as a push's paths mostly share their directory.
pub(super) struct Looker<'a> {
    root: &'a Path,
    last: Option<(PathBuf, Option<std::fs::File>)>,
}

impl<'a> Looker<'a> {
    pub(super) fn new(root: &'a Path) -> Looker<'a> {
        Looker { root, last: None }
    }

    /// The directory `rel` opened without following a link; `None` if it cannot be.
    fn dir(&mut self, rel: &Path) -> Option<&std::fs::File> {
        if self.last.as_ref().is_none_or(|(p, _)| p != rel) {
            let fd = crate::sys::fsafe::open_dir_beneath(self.root, rel).ok();
            self.last = Some((rel.to_path_buf(), fd));
        }
        self.last.as_ref().and_then(|(_, fd)| fd.as_ref())
    }

    /// [`stat`], reusing the directory opened last.
    pub(super) fn stat(&mut self, rel: &Path) -> Option<Meta> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            // The root itself (a link there is the configured root's own business).
            return lstat(self.root);
        };
        let dir = self.dir(parent)?;
        lstat(&crate::sys::fsafe::path_in(dir, name))
    }

    /// The entries of the directory `dir` with their metadata, temporary names left
    /// out: what its listing sends. Nothing when `dir` (or one above it) is not a
    /// directory now.
    pub(super) fn listed(&mut self, dir: &Path) -> Before {
        let Some(fd) = self.dir(dir) else {
            return Vec::new();
        };
        let Ok(rd) = crate::sys::fsafe::read_dir_of(fd) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| !crate::filter::is_temp_name(e.file_name().as_bytes()))
            .map(|e| {
                let p = dir.join(e.file_name());
                // Read relative to the open directory (DirEntry's lstat is fstatat).
                let m = lstat(&e.path());
                (p, m)
            })
            .collect()
    }
}

/// The entry at `path` itself (not followed if a link) and the link's target.
fn lstat(path: &Path) -> Option<Meta> {
    let md = std::fs::symlink_metadata(path).ok()?;
    let link = md
        .file_type()
        .is_symlink()
        .then(|| {
            std::fs::read_link(path)
                .ok()
                .map(|l| l.into_os_string().into_vec())
        })
        .flatten();
    Some(Meta::of(&md, link))
}

/// Walks the tree below `root` (stat only, in parallel, never following a link: each
/// directory is opened from its parent's descriptor with O_NOFOLLOW), leaving out what
/// `excludes` keep out and temporary names. A directory that cannot be read is left out
/// with what is below it (and so pushed or deleted as a difference: never skipped).
pub fn walk(root: &Path, excludes: &Excludes) -> std::io::Result<Tree> {
    walk_counted(root, excludes, None)
}

/// [`walk`], counting each entry into `progress` and, against the index `old`, each one
/// new or changed (a rename counts as new here; [`diff`] tells them apart after).
pub fn walk_counted(
    root: &Path,
    excludes: &Excludes,
    progress: Option<(&super::progress::Counts, Option<&Tree>)>,
) -> std::io::Result<Tree> {
    use rayon::prelude::*;
    type Progress<'a> = Option<(&'a super::progress::Counts, Option<&'a ByDir<'a>>)>;
    let top = crate::sys::fsafe::open_dir_beneath(root, Path::new(""))?;
    fn one(
        dir: &std::fs::File,
        rel: &Path,
        ex: &Excludes,
        pr: Progress<'_>,
    ) -> Vec<(PathBuf, Meta)> {
        let Ok(rd) = crate::sys::fsafe::read_dir_of(dir) else {
            return Vec::new();
        };
        // Each directory's entries by name, each directory's own entries right after
        // it: the order of `Path`'s (component by component), so that the tree is
        // built from sorted entries. Sorting a million paths as `Path`s (compared
        // component by component) was a third of the walk's CPU.
        let mut found = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name();
            if crate::filter::is_temp_name(name.as_bytes()) {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            let p = rel.join(&name);
            if ex.excludes(&p, md.is_dir()) {
                continue;
            }
            let link = md
                .file_type()
                .is_symlink()
                .then(|| std::fs::read_link(e.path()).ok())
                .flatten()
                .map(|l| l.into_os_string().into_vec());
            let meta = Meta::of(&md, link);
            found.push((name, p, meta));
        }
        found.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if let Some((counts, old)) = pr {
            let changes = old.map_or(0, |old| {
                old.changed(rel, found.iter().map(|(n, _, m)| (n.as_bytes(), m)))
            });
            counts.add(found.len() as u64, changes);
        }
        let subdirs: Vec<usize> = (0..found.len())
            .filter(|&i| found[i].2.kind == Kind::Dir)
            .collect();
        let mut below: Vec<Vec<(PathBuf, Meta)>> = subdirs
            .par_iter()
            .map(|&i| {
                let (name, p, _) = &found[i];
                match crate::sys::fsafe::open_subdir(dir, name) {
                    Ok(d) => one(&d, p, ex, pr),
                    Err(_) => Vec::new(),
                }
            })
            .collect();
        let mut out = Vec::with_capacity(found.len() + below.iter().map(Vec::len).sum::<usize>());
        let mut below_at = subdirs.into_iter().zip(below.iter_mut()).peekable();
        for (i, (_, p, meta)) in found.into_iter().enumerate() {
            out.push((p, meta));
            if let Some((_, sub)) = below_at.next_if(|(at, _)| *at == i) {
                out.append(sub);
            }
        }
        out
    }
    let by_dir = progress.and_then(|(_, old)| old).map(ByDir::of);
    let progress = progress.map(|(counts, _)| (counts, by_dir.as_ref()));
    Ok(one(&top, Path::new(""), excludes, progress)
        .into_iter()
        .collect())
}

/// The index's entries by directory, each directory's own in name order: what a walk's
/// directory is compared with for its count of changes, one lookup per directory
/// (a lookup per entry in the index's tree, which compares paths component by
/// component, took a third of the walk's CPU).
struct ByDir<'a> {
    dirs: std::collections::HashMap<&'a [u8], Own<'a>>,
}

/// A directory's own entries in the index: name and metadata, in name order.
type Own<'a> = Vec<(&'a [u8], &'a Meta)>;

impl<'a> ByDir<'a> {
    fn of(tree: &'a Tree) -> ByDir<'a> {
        let mut dirs: std::collections::HashMap<&[u8], Own<'_>> = std::collections::HashMap::new();
        // The tree's order keeps a directory's entries together between its
        // subdirectories' own: the last directory's list is reused while it lasts.
        let mut last: Option<(&[u8], Own<'_>)> = None;
        for (p, m) in tree {
            let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
                continue; // the root itself
            };
            let parent = parent.as_os_str().as_bytes();
            match &mut last {
                Some((d, list)) if *d == parent => list.push((name.as_bytes(), m)),
                _ => {
                    if let Some((d, list)) = last.take() {
                        dirs.entry(d).or_default().extend(list);
                    }
                    last = Some((parent, vec![(name.as_bytes(), m)]));
                }
            }
        }
        if let Some((d, list)) = last {
            dirs.entry(d).or_default().extend(list);
        }
        ByDir { dirs }
    }

    /// Of the entries `found` in the directory `dir` (in name order), how many the
    /// index does not have as they are.
    fn changed<'b>(&self, dir: &Path, found: impl Iterator<Item = (&'b [u8], &'b Meta)>) -> u64 {
        let old = self
            .dirs
            .get(dir.as_os_str().as_bytes())
            .map_or(&[][..], Vec::as_slice);
        let mut at = 0;
        let mut changes = 0;
        for (name, meta) in found {
            while at < old.len() && old[at].0 < name {
                at += 1;
            }
            let same = old.get(at).is_some_and(|(n, m)| *n == name && *m == meta);
            if !same {
                changes += 1;
            }
        }
        changes
    }
}

/// A push's paths with their metadata as taken before it ran.
pub type Before = Vec<(PathBuf, Option<Meta>)>;
