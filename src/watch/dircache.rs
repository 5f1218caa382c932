//! fanotify's directory handles mapped to paths below the root: a parent-link tree
//! (handle -> parent handle and name), so a directory rename is one update whatever
//! lies below it, plus the handles known to be outside the root. Pure bookkeeping: the
//! kernel is asked by the backend (`fanotify.rs`).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use crate::sys::fanotify::Fid;
/// Outside answers kept at most; past this the set starts again (it only saves work).
const OUTSIDE_MAX: usize = 1 << 20;

/// Deepest parent chain followed (a loop would be a bug; this bounds it).
const MAX_DEPTH: usize = 4096;

/// Where a directory handle lies, as far as the cache knows.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Below the root (empty: the root).
    Inside(PathBuf),
    /// Known to be outside the tree.
    Outside,
    /// Not known: ask the kernel.
    Unknown,
}

struct Node {
    parent: Fid,
    name: OsString,
}

/// Directory handles to paths below the root, as a parent-link tree, plus the handles
/// known to be outside it. Pure bookkeeping: the kernel is asked by the caller.
#[derive(Default)]
pub struct DirCache {
    /// The root directory's handle.
    pub(super) root: Option<Fid>,
    nodes: HashMap<Fid, Node>,
    /// (parent, name) -> the directory's handle: renames and deletes name the entry.
    entries: HashMap<(Fid, OsString), Fid>,
    outside: HashSet<Fid>,
}

impl DirCache {
    /// Forgets everything; `root` is the handle of the root directory.
    pub fn reset(&mut self, root: Option<Fid>) {
        self.root = root;
        self.nodes.clear();
        self.entries.clear();
        self.outside.clear();
    }

    pub fn lookup(&self, fid: &Fid) -> Lookup {
        let mut names: Vec<&OsStr> = Vec::new();
        let mut cur = fid;
        for _ in 0..MAX_DEPTH {
            if self.root.as_ref() == Some(cur) {
                let mut p = PathBuf::new();
                for n in names.iter().rev() {
                    p.push(n);
                }
                return Lookup::Inside(p);
            }
            match self.nodes.get(cur) {
                Some(n) => {
                    names.push(&n.name);
                    cur = &n.parent;
                }
                None if names.is_empty() && self.outside.contains(cur) => return Lookup::Outside,
                None => return Lookup::Unknown,
            }
        }
        Lookup::Unknown
    }

    /// The directory named `name` in `parent`, if known.
    #[cfg(test)]
    pub fn child(&self, parent: &Fid, name: &OsStr) -> Option<&Fid> {
        self.entries.get(&(parent.clone(), name.to_os_string()))
    }

    /// Records that `fid` is the directory `name` in `parent`.
    pub fn insert(&mut self, fid: Fid, parent: Fid, name: OsString) {
        self.outside.remove(&fid);
        if let Some(old) = self.nodes.get(&fid) {
            let key = (old.parent.clone(), old.name.clone());
            if self.entries.get(&key) == Some(&fid) {
                self.entries.remove(&key);
            }
        }
        self.entries
            .insert((parent.clone(), name.clone()), fid.clone());
        self.nodes.insert(fid, Node { parent, name });
    }

    /// The directory `old_name` in `old_parent` is now `new_name` in `new_parent`: one
    /// update, whatever is below it. False if it was not known.
    pub fn rename(
        &mut self,
        old_parent: &Fid,
        old_name: &OsStr,
        new_parent: &Fid,
        new_name: &OsStr,
    ) -> bool {
        let Some(fid) = self
            .entries
            .remove(&(old_parent.clone(), old_name.to_os_string()))
        else {
            return false;
        };
        self.insert(fid, new_parent.clone(), new_name.to_os_string());
        true
    }

    /// The directory `name` in `parent` is gone (deleted or moved out): what was below
    /// it no longer reaches the root and is asked for again if it shows up.
    pub fn remove(&mut self, parent: &Fid, name: &OsStr) {
        if let Some(fid) = self.entries.remove(&(parent.clone(), name.to_os_string())) {
            self.nodes.remove(&fid);
        }
    }

    /// The directory `fid` is gone from the tree (as [`DirCache::remove`], by handle).
    pub fn remove_dir(&mut self, fid: &Fid) {
        if let Some(old) = self.nodes.remove(fid) {
            let key = (old.parent, old.name);
            if self.entries.get(&key) == Some(fid) {
                self.entries.remove(&key);
            }
        }
    }

    pub fn note_outside(&mut self, fid: Fid) {
        self.nodes.remove(&fid);
        if self.outside.len() >= OUTSIDE_MAX {
            self.outside.clear();
        }
        self.outside.insert(fid);
    }

    /// A directory came in from outside: handles below it may be outside answers.
    pub fn forget_outside(&mut self) {
        self.outside.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fid(n: u8) -> Fid {
        Fid::from_parts([7; 8], 1, &[n; 8])
    }

    fn inside(p: &str) -> Lookup {
        Lookup::Inside(PathBuf::from(p))
    }

    #[test]
    fn a_directory_rename_moves_everything_below_it_in_one_update() {
        let mut c = DirCache::default();
        c.reset(Some(fid(0)));
        c.insert(fid(1), fid(0), "a".into());
        c.insert(fid(2), fid(1), "b".into());
        c.insert(fid(3), fid(2), "c".into());
        assert_eq!(c.lookup(&fid(3)), inside("a/b/c"));
        assert!(c.rename(&fid(0), OsStr::new("a"), &fid(0), OsStr::new("z")));
        assert_eq!(c.lookup(&fid(3)), inside("z/b/c"));
        assert_eq!(c.lookup(&fid(0)), inside(""));
        assert_eq!(c.child(&fid(0), OsStr::new("a")), None);
        assert_eq!(c.child(&fid(0), OsStr::new("z")), Some(&fid(1)));
        // Moved below a sibling.
        c.insert(fid(4), fid(0), "d".into());
        assert!(c.rename(&fid(1), OsStr::new("b"), &fid(4), OsStr::new("b2")));
        assert_eq!(c.lookup(&fid(3)), inside("d/b2/c"));
    }

    #[test]
    fn a_removed_directory_takes_its_subtree_out_and_outside_answers_are_kept() {
        let mut c = DirCache::default();
        c.reset(Some(fid(0)));
        c.insert(fid(1), fid(0), "a".into());
        c.insert(fid(2), fid(1), "b".into());
        c.remove(&fid(0), OsStr::new("a"));
        assert_eq!(c.lookup(&fid(1)), Lookup::Unknown);
        assert_eq!(c.lookup(&fid(2)), Lookup::Unknown);
        c.note_outside(fid(2));
        assert_eq!(c.lookup(&fid(2)), Lookup::Outside);
        c.forget_outside();
        assert_eq!(c.lookup(&fid(2)), Lookup::Unknown);
        // Learned again inside: no longer an outside answer.
        c.note_outside(fid(5));
        c.insert(fid(5), fid(0), "back".into());
        assert_eq!(c.lookup(&fid(5)), inside("back"));
    }
}
