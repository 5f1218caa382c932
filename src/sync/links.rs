//! The names of multi-linked regular files, as far as the agent has seen them.
//!
//! The kernel reports a write for the name it went through only (inotify and fanotify
//! alike), and rsync's receiver replaces that name by a new file: the file's other
//! names (hard links) on a remote keep the old content, even with `-H`, since they are
//! not in the call. So when a file with more than one link is written, its other known
//! names go out with it (in the same batch).
//!
//! [`Links`] maps (device, inode) to the names seen for it, per watch root (by its
//! index), and is fed by the filter thread from what it stats: a created entry (a link
//! made), a file written or moved in, the new side of a rename, what a directory made
//! or moved in holds, and a new name's directory when its link count says it has names
//! not known (`intake::neighbours`). Renames, deletes and
//! directories going away keep it in step; a name is checked (lstat, same device and
//! inode) before it is pushed, and forgotten when it is something else now. It holds at
//! most [`MAX_NAMES`] names: past that, new names are not kept (one warning says so and
//! how to level the remotes), and a write through one of those files leaves its other
//! names as they are on the remotes until a full sync.
//!
//! Names linked before the agent started and never seen since are not known (docs/guide.md,
//! "Hard links").
//!
//! With `-H`, the same batch is not enough: rsync links names on a remote only when they
//! are in one call, and each call sends the names it carries as files of their own. A
//! name in flight while another name of the file is queued (`echo > a; rm b; ln a b;
//! echo >> b`: `a` goes out at its write, the delete of `b` beside it, then both are
//! queued again) made two calls, one per name, and two files on the remote. So with
//! `-H` every change of a multi-linked name (a write, a link made, a name moved or
//! renamed in) queues all its known names as one set that must travel together
//! ([`Together`]): a remote's ledger hands the set out in one call, and only once none
//! of its names is in flight ([`pick`]), so after the last change of the file one call
//! carries every known name. A set of more than [`TOGETHER_MAX`] names is not kept
//! together: a write still queues every name (as without `-H`), but they may go in
//! several calls and be separate files (with the same content) on a remote until a full
//! sync. Without `-H` nothing is queued together.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
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

    /// Whether `name` is known as a name of `id`.
    pub fn knows(&self, name: &Name, id: FileId) -> bool {
        self.by_name.get(name) == Some(&id)
    }

    /// `name` is a regular file with more than one link, `id`. Returns false when it
    /// could not be kept because the map is full (see [`Links::is_full`]).
    pub fn learn(&mut self, name: Name, id: FileId) -> bool {
        if self.by_name.get(&name) == Some(&id) {
            // Known already, but its other name may have been seen alone since (`rm b;
            // echo > a; ln a b` with b's delete reported after the link).
            self.first_name(&name, id);
            return true;
        }
        self.forget(&name.0, &name.1);
        if self.by_name.len() >= self.max.unwrap_or(MAX_NAMES) {
            self.full = true;
            return false;
        }
        self.first_name(&name, id);
        self.by_id.entry(id).or_default().push(name.clone());
        self.by_name.insert(name, id);
        true
    }

    /// The first name of `id`, if it was lately seen with one name (a link made to it
    /// as `name`), is known again.
    fn first_name(&mut self, name: &Name, id: FileId) {
        if self.by_name.len() >= self.max.unwrap_or(MAX_NAMES) {
            return;
        }
        if let Some(first) = self.recent.remove(&id) {
            if first != *name && !self.by_name.contains_key(&first) {
                self.by_id.entry(id).or_default().push(first.clone());
                self.by_name.insert(first, id);
            }
        }
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
    /// found under more than one name is learned with all of them. The paths are
    /// borrowed and sorted by identity (in walk order within one), and only those of
    /// multi-named files copied: a walk of a million files is not copied whole, nor
    /// kept in a map of a million entries (the catch-up's peak memory).
    pub fn learn_walk<P: AsRef<Path>>(
        &mut self,
        root: usize,
        files: impl IntoIterator<Item = (P, FileId)>,
    ) {
        let mut by_id: Vec<(FileId, P)> = files.into_iter().map(|(p, id)| (id, p)).collect();
        by_id.sort_by_key(|(id, _)| *id);
        for run in by_id.chunk_by(|a, b| a.0 == b.0) {
            if run.len() > 1 {
                for (id, p) in run {
                    self.learn((root, p.as_ref().to_path_buf()), *id);
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

/// The most names of one file kept together (see the module doc): a set this large is
/// one call of its own each time the file changes.
pub const TOGETHER_MAX: usize = 1_000;

/// Sets of waiting names that go in one call (the names of one multi-linked file, with
/// `-H`): a plain value, kept by a remote's ledger for the names it holds waiting.
#[derive(Debug, Clone)]
pub struct Together<K> {
    set_of: HashMap<K, u64>,
    sets: HashMap<u64, Vec<K>>,
    next: u64,
}

impl<K> Default for Together<K> {
    fn default() -> Self {
        Together {
            set_of: HashMap::new(),
            sets: HashMap::new(),
            next: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> Together<K> {
    /// `keys` go together, with every name already in a set with one of them. A set that
    /// would grow past [`TOGETHER_MAX`] is left as it was (its names go as they come).
    pub fn join(&mut self, keys: impl IntoIterator<Item = K>) {
        let mut seen: HashSet<K> = HashSet::new();
        let mut new: Vec<K> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        for k in keys {
            if !seen.insert(k.clone()) {
                continue;
            }
            match self.set_of.get(&k) {
                Some(id) if !ids.contains(id) => ids.push(*id),
                Some(_) => {}
                None => new.push(k),
            }
        }
        let size = new.len()
            + ids
                .iter()
                .filter_map(|i| self.sets.get(i))
                .map(Vec::len)
                .sum::<usize>();
        if !(2..=TOGETHER_MAX).contains(&size) || (new.is_empty() && ids.len() < 2) {
            return;
        }
        // Into the largest set already there.
        ids.sort_by_key(|i| std::cmp::Reverse(self.sets.get(i).map_or(0, Vec::len)));
        let id = match ids.first() {
            Some(i) => *i,
            None => {
                self.next += 1;
                self.sets.insert(self.next, Vec::new());
                self.next
            }
        };
        for other in ids.iter().skip(1) {
            new.extend(self.sets.remove(other).unwrap_or_default());
        }
        for k in &new {
            self.set_of.insert(k.clone(), id);
        }
        self.sets.entry(id).or_default().extend(new);
    }

    /// `k` no longer waits (handed out, merged into another entry, dropped).
    pub fn leave(&mut self, k: &K) {
        let Some(id) = self.set_of.remove(k) else {
            return;
        };
        if let Some(set) = self.sets.get_mut(&id) {
            set.retain(|m| m != k);
            if set.len() < 2 {
                for m in set.drain(..) {
                    self.set_of.remove(&m);
                }
                self.sets.remove(&id);
            }
        }
    }

    /// The names that go together with `k` (`k` among them), if it is in a set.
    pub fn members(&self, k: &K) -> Option<&[K]> {
        self.set_of
            .get(k)
            .and_then(|id| self.sets.get(id))
            .map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.set_of.is_empty()
    }

    pub fn clear(&mut self) {
        self.set_of.clear();
        self.sets.clear();
    }
}

/// Of the names waiting (oldest first), those one call takes: up to `max` that are
/// `free` (nothing in flight at, above or below them), except that a set of
/// [`Together`] is taken whole, once every name of it is free, or not at all (so a call
/// may carry up to [`TOGETHER_MAX`] − 1 names beyond `max`).
pub fn pick<'a, K: Clone + Eq + Hash + 'a>(
    waiting: impl IntoIterator<Item = &'a K>,
    max: usize,
    free: impl Fn(&K) -> bool,
    together: &Together<K>,
) -> Vec<K> {
    if together.sets.is_empty() {
        // No sets (no hard links waiting): each waiting name once, as it comes.
        return (waiting.into_iter())
            .filter(|k| free(k))
            .take(max)
            .cloned()
            .collect();
    }
    let mut picked: Vec<K> = Vec::new();
    let mut taken: HashSet<K> = HashSet::new();
    for k in waiting {
        if picked.len() >= max {
            break;
        }
        if taken.contains(k) || !free(k) {
            continue;
        }
        match together.members(k) {
            None => {
                taken.insert(k.clone());
                picked.push(k.clone());
            }
            Some(set) => {
                if set.iter().all(&free) {
                    for m in set {
                        if taken.insert(m.clone()) {
                            picked.push(m.clone());
                        }
                    }
                }
            }
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    // The outside run's round with `-H`: `a` in flight, `b` (its delete) in flight
    // beside it, then both queued as one set: nothing goes until both calls ended,
    // then one call carries both.
    #[test]
    fn names_of_one_file_go_in_one_call_once_none_is_in_flight() {
        let mut t: Together<&str> = Together::default();
        t.join(["b", "a"]);
        let waiting = ["x", "a", "y", "b"];
        let inflight = |busy: &'static [&'static str]| move |k: &&str| !busy.contains(k);
        assert_eq!(pick(&waiting, 10, inflight(&["a"]), &t), ["x", "y"]);
        assert_eq!(pick(&waiting, 10, inflight(&["b"]), &t), ["x", "y"]);
        assert_eq!(pick(&waiting, 10, inflight(&[]), &t), ["x", "b", "a", "y"]);
        // The set is taken whole past `max`, and not started when `max` is reached.
        assert_eq!(pick(&waiting, 2, inflight(&[]), &t), ["x", "b", "a"]);
        assert_eq!(
            pick(&["y", "x", "a", "b"], 2, inflight(&[]), &t),
            ["y", "x"]
        );
        // Without sets: the oldest free ones, up to `max`.
        let none = Together::default();
        assert_eq!(pick(&waiting, 3, inflight(&["a"]), &none), ["x", "y", "b"]);
    }

    #[test]
    fn sets_merge_shrink_and_stay_bounded() {
        let mut t: Together<u32> = Together::default();
        t.join([1, 2]);
        t.join([3, 4]);
        t.join([2, 3, 5]);
        let mut m = t.members(&1).expect("in a set").to_vec();
        m.sort();
        assert_eq!(m, [1, 2, 3, 4, 5], "a name in two sets joins them");
        t.join([6]);
        assert!(t.members(&6).is_none(), "one name alone is no set");
        for k in [1, 2, 3, 4] {
            t.leave(&k);
        }
        assert!(t.members(&5).is_none(), "the last name left is no set");
        assert!(t.is_empty());
        // Past TOGETHER_MAX the names are not kept together.
        let many: Vec<u32> = (0..TOGETHER_MAX as u32 + 1).collect();
        t.join(many.iter().copied());
        assert!(t.is_empty());
        t.join(many.iter().copied().take(TOGETHER_MAX));
        assert_eq!(t.members(&0).map(<[u32]>::len), Some(TOGETHER_MAX));
        t.join([0, 99_999]);
        assert!(
            t.members(&99_999).is_none(),
            "a set at the bound grows no further"
        );
        t.clear();
        assert!(t.is_empty());
    }

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

    // `echo > a` while b is away (a seen with one name), then `ln a b` with b's delete
    // reported after the link (fanotify merges the events): b was still known, so its
    // first name a was not learned again and b went alone (CI at 2470093).
    #[test]
    fn a_name_still_known_learns_the_first_name_seen_alone_since() {
        let mut l = Links::default();
        l.learn(n(0, "h/a"), (1, 4));
        l.learn(n(0, "h/b"), (1, 4));
        l.forget(&0, Path::new("h/a"));
        l.single(n(0, "h/a"), (1, 4));
        assert!(l.others(&n(0, "h/b"), (1, 4)).is_empty());
        assert!(l.learn(n(0, "h/b"), (1, 4)));
        assert_eq!(l.others(&n(0, "h/b"), (1, 4)), [n(0, "h/a")]);
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
