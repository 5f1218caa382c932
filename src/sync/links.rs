//! The names of multi-linked regular files, as far as the agent has seen them.
//!
//! The kernel reports a write for the name it went through only (inotify and fanotify
//! alike), and rsync's receiver replaces that name by a new file: the file's other
//! names (hard links) on a remote keep the old content, even with `-H`, since they are
//! not in the call. So when a file with more than one link is written, its other known
//! names go out with it (in the same batch, so in the same call unless one of them is
//! in flight; with `-H` rsync then keeps them linked on the remote).
//!
//! [`Links`] maps (device, inode) to the names seen for it, per watch root (by its
//! index), and is fed by the filter thread from what it stats: a created entry (a link
//! made), a file written or moved in, the new side of a rename. Renames, deletes and
//! directories going away keep it in step; a name is checked (lstat, same device and
//! inode) before it is pushed, and forgotten when it is something else now. It holds at
//! most [`MAX_NAMES`] names: past that, new names are not kept (one warning says so and
//! how to level the remotes), and a write through one of those files leaves its other
//! names as they are on the remotes until a full sync.
//!
//! Names linked before the agent started and never seen since are not known (docs/guide.md,
//! "Hard links").

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// The most names kept, over every watch root (about 100 bytes each).
pub const MAX_NAMES: usize = 100_000;

/// The most files with one name remembered (the last written or made), so that a link
/// made to one of them later finds its first name: about 100 bytes each.
pub const RECENT: usize = 65_536;

/// A file's identity: (device, inode).
pub type FileId = (u64, u64);

/// A name: (watch root index, path relative to the root).
pub type Name = (usize, PathBuf);

/// The known names of multi-linked files (see the module doc).
#[derive(Debug, Default)]
pub struct Links {
    by_id: HashMap<FileId, Vec<Name>>,
    /// Sorted, so a directory's names are one range.
    by_name: BTreeMap<Name, FileId>,
    /// Set once a name was not kept for want of room.
    full: bool,
    /// Set once [`Links::first_full`] said so.
    told: bool,
    max: Option<usize>,
    /// Files with one name lately seen, oldest first (see [`RECENT`]).
    recent: HashMap<FileId, Name>,
    recent_order: VecDeque<FileId>,
}

impl Links {
    /// A map that keeps at most `max` names (the agent's keeps [`MAX_NAMES`]).
    #[cfg(test)]
    pub fn with_max(max: usize) -> Links {
        Links {
            max: Some(max),
            ..Links::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// `name` is a regular file with more than one link, `id`. Returns false when it
    /// could not be kept because the map is full (see [`Links::is_full`]).
    pub fn learn(&mut self, name: Name, id: FileId) -> bool {
        if self.by_name.get(&name) == Some(&id) {
            return true;
        }
        self.forget(&name.0, &name.1);
        if self.by_name.len() >= self.max.unwrap_or(MAX_NAMES) {
            self.full = true;
            return false;
        }
        // Its first name, if it was lately seen with one name (a link made to it).
        if let Some(first) = self.recent.remove(&id) {
            if first != name && !self.by_name.contains_key(&first) {
                self.by_id.entry(id).or_default().push(first.clone());
                self.by_name.insert(first, id);
            }
        }
        self.by_id.entry(id).or_default().push(name.clone());
        self.by_name.insert(name, id);
        true
    }

    /// `name` is a regular file with one name, `id`: remembered among the last
    /// [`RECENT`], so that a link made to it later knows this name.
    pub fn single(&mut self, name: Name, id: FileId) {
        if self.recent.insert(id, name).is_none() {
            self.recent_order.push_back(id);
        }
        while self.recent.len() > RECENT {
            match self.recent_order.pop_front() {
                Some(old) => {
                    self.recent.remove(&old);
                }
                None => break,
            }
        }
        // Ids removed from `recent` by `learn` leave stale entries here: bounded too.
        if self.recent_order.len() > 2 * RECENT {
            let recent = &self.recent;
            self.recent_order.retain(|id| recent.contains_key(id));
        }
    }

    /// Whether the map is full (a name was not kept).
    #[cfg(test)]
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// True once, when the map is full: the time to say so.
    pub fn first_full(&mut self) -> bool {
        let first = self.full && !self.told;
        self.told |= self.full;
        first
    }

    /// `path` of root `root` is gone or not a multi-linked file any more.
    pub fn forget(&mut self, root: &usize, path: &Path) {
        let key = (*root, path.to_path_buf());
        if let Some(id) = self.by_name.remove(&key) {
            if let Some(names) = self.by_id.get_mut(&id) {
                names.retain(|n| *n != key);
                if names.is_empty() {
                    self.by_id.remove(&id);
                }
            }
        }
    }

    /// The names at `dir` and below it in root `root`.
    fn below(&self, root: usize, dir: &Path) -> Vec<Name> {
        if self.by_name.is_empty() {
            return Vec::new();
        }
        let start = (root, dir.to_path_buf());
        self.by_name
            .range((Bound::Included(start), Bound::Unbounded))
            .map(|(n, _)| n)
            .take_while(|(r, p)| *r == root && p.starts_with(dir))
            .cloned()
            .collect()
    }

    /// `dir` (a directory, or any entry) of root `root` went away with what is below.
    pub fn forget_below(&mut self, root: usize, dir: &Path) {
        for (r, p) in self.below(root, dir) {
            self.forget(&r, &p);
        }
    }

    /// `from` was renamed to `to` in root `root` (a file, or a directory and what is
    /// below it): the names move with it; what `to` was is gone.
    pub fn renamed(&mut self, root: usize, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, FileId)> = self
            .below(root, from)
            .into_iter()
            .filter_map(|(r, p)| {
                let id = *self.by_name.get(&(r, p.clone()))?;
                let rest = p.strip_prefix(from).ok()?;
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                Some((new, id))
            })
            .collect();
        self.forget_below(root, from);
        self.forget_below(root, to);
        for (p, id) in moved {
            self.learn((root, p), id);
        }
    }

    /// Of a walk of root `root` (each regular file's path and identity), every file
    /// found under more than one name is learned with all of them.
    pub fn learn_walk(&mut self, root: usize, files: impl IntoIterator<Item = (PathBuf, FileId)>) {
        let mut seen: HashMap<FileId, Vec<PathBuf>> = HashMap::new();
        for (p, id) in files {
            seen.entry(id).or_default().push(p);
        }
        for (id, paths) in seen {
            if paths.len() > 1 {
                for p in paths {
                    self.learn((root, p), id);
                }
            }
        }
    }

    /// The other known names of `id` than `name`.
    pub fn others(&self, name: &Name, id: FileId) -> Vec<Name> {
        self.by_id
            .get(&id)
            .map(|names| names.iter().filter(|n| *n != name).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(root: usize, p: &str) -> Name {
        (root, PathBuf::from(p))
    }

    #[test]
    fn a_files_other_names_are_known_once_seen() {
        let mut l = Links::default();
        assert!(l.learn(n(0, "hl_b"), (1, 7)));
        assert_eq!(l.others(&n(0, "hl_a"), (1, 7)), [n(0, "hl_b")]);
        l.learn(n(0, "hl_a"), (1, 7));
        l.learn(n(1, "other/root"), (1, 7));
        assert_eq!(
            l.others(&n(0, "hl_a"), (1, 7)),
            [n(0, "hl_b"), n(1, "other/root")]
        );
        // Another inode, or the same inode number on another device: not the same file.
        assert!(l.others(&n(0, "hl_a"), (2, 7)).is_empty());
        // A name seen again for another file is that file's only.
        l.learn(n(0, "hl_b"), (1, 8));
        assert_eq!(l.others(&n(0, "hl_a"), (1, 7)), [n(1, "other/root")]);
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn deletes_and_renames_keep_the_names_in_step() {
        let mut l = Links::default();
        for (p, ino) in [("d/a", 1), ("d/e/b", 1), ("d2", 1), ("dx/c", 2), ("d b", 2)] {
            l.learn(n(0, p), (9, ino));
        }
        l.renamed(0, Path::new("d"), Path::new("n"));
        assert_eq!(
            l.others(&n(0, "x"), (9, 1)),
            [n(0, "d2"), n(0, "n/a"), n(0, "n/e/b")]
        );
        // `d2` and `d b` are not below `d`.
        assert_eq!(l.others(&n(0, "x"), (9, 2)), [n(0, "dx/c"), n(0, "d b")]);
        l.forget_below(0, Path::new("n"));
        assert_eq!(l.others(&n(0, "x"), (9, 1)), [n(0, "d2")]);
        // A rename over a known name: the old one is gone.
        l.renamed(0, Path::new("d2"), Path::new("d b"));
        assert_eq!(l.others(&n(0, "x"), (9, 1)), [n(0, "d b")]);
        assert_eq!(l.others(&n(0, "x"), (9, 2)), [n(0, "dx/c")]);
        l.forget(&0, Path::new("dx/c"));
        l.forget(&0, Path::new("d b"));
        assert!(l.is_empty());
    }

    #[test]
    fn a_walk_teaches_the_files_it_found_under_several_names() {
        let mut l = Links::default();
        let walk = [("a", 1), ("b", 2), ("d/c", 1), ("e", 3), ("f", 3), ("g", 1)];
        l.learn_walk(0, walk.map(|(p, i)| (PathBuf::from(p), (5, i))));
        assert_eq!(
            l.others(&n(0, "a"), (5, 1)),
            [n(0, "d/c"), n(0, "g")],
            "the order of the walk is kept"
        );
        assert_eq!(l.others(&n(0, "e"), (5, 3)), [n(0, "f")]);
        assert!(
            l.others(&n(0, "x"), (5, 2)).is_empty(),
            "one name: not kept"
        );
        assert_eq!(l.len(), 5);
    }

    #[test]
    fn a_link_made_to_a_file_written_lately_knows_its_first_name() {
        let mut l = Links::default();
        l.single(n(0, "c"), (1, 4));
        l.single(n(0, "e"), (1, 5));
        l.learn(n(0, "a/d"), (1, 4));
        assert_eq!(l.others(&n(0, "b"), (1, 4)), [n(0, "c"), n(0, "a/d")]);
        for i in 0..(RECENT as u64 + 1) {
            l.single(n(0, "f"), (2, i));
        }
        l.learn(n(0, "e2"), (1, 5));
        assert_eq!(
            l.others(&n(0, "e2"), (1, 5)),
            [],
            "forgotten, as the oldest"
        );
        assert!(l.recent.len() <= RECENT && l.recent_order.len() <= 2 * RECENT + 1);
    }

    #[test]
    fn past_its_bound_new_names_are_not_kept() {
        let mut l = Links::with_max(2);
        assert!(l.learn(n(0, "a"), (1, 1)));
        assert!(l.learn(n(0, "b"), (1, 1)));
        assert!(!l.is_full());
        assert!(!l.learn(n(0, "c"), (1, 1)));
        assert!(l.is_full());
        assert!(l.first_full());
        assert!(!l.first_full(), "said once");
        assert_eq!(l.len(), 2);
        // Known names are still kept in step.
        assert!(l.learn(n(0, "a"), (1, 1)));
        l.forget(&0, Path::new("a"));
        assert!(l.learn(n(0, "c"), (1, 1)));
        assert_eq!(l.others(&n(0, "x"), (1, 1)), [n(0, "b"), n(0, "c")]);
    }
}
