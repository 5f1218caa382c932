//! The stat-only walk of a root that the index is compared with.

use super::*;

/// The entry at `root/rel` as lstat sees it (and its target if a link); `None` when
/// there is nothing there.
pub fn stat(root: &Path, rel: &Path) -> Option<Meta> {
    let full = root.join(rel);
    let md = std::fs::symlink_metadata(&full).ok()?;
    let link = md
        .file_type()
        .is_symlink()
        .then(|| {
            std::fs::read_link(&full)
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
    type Progress<'a> = Option<(&'a super::progress::Counts, Option<&'a Tree>)>;
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
            if let Some((counts, old)) = pr {
                counts.entry();
                if old.is_some_and(|old| old.get(&p) != Some(&meta)) {
                    counts.change();
                }
            }
            found.push((name, p, meta));
        }
        found.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
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
    Ok(one(&top, Path::new(""), excludes, progress)
        .into_iter()
        .collect())
}

/// The entries of the directory `root/dir` with their metadata, temporary names left
/// out: what its listing sends.
pub(super) fn listed(root: &Path, dir: &Path) -> Before {
    let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| !crate::filter::is_temp_name(e.file_name().as_bytes()))
        .map(|e| {
            let p = dir.join(e.file_name());
            let m = stat(root, &p);
            (p, m)
        })
        .collect()
}

/// A push's paths with their metadata as taken before it ran.
pub type Before = Vec<(PathBuf, Option<Meta>)>;
