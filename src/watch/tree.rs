//! The watched directories of one root, compactly: an arena of nodes, each its parent's
//! index, its own name and its watch descriptor, with a descriptor → node map and a
//! (parent, name) → node table. A directory costs its name and a few words (no full
//! path per directory, twice, as two path-keyed maps did), its path is built from its
//! ancestors when an event needs it, and a rename moves one node: what is below comes
//! along.
//!
//! A directory that is deleted or renamed away is *detached*: it leaves its parent's
//! table but keeps its descriptor (the kernel may still report events for it until its
//! IN_IGNORED, or its MOVED_TO comes). A detached node is named by its whole old path,
//! so events read for it meanwhile still carry that path, as before it left.

use std::collections::HashMap;
use std::ffi::OsString;
use std::hash::{BuildHasher, Hash, Hasher};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use hashbrown::HashTable;

/// What the tree needs of a watch descriptor: a number unique within one inotify instance.
pub trait Wd: Clone {
    fn id(&self) -> i32;
}

impl Wd for inotify::WatchDescriptor {
    fn id(&self) -> i32 {
        self.get_watch_descriptor_id()
    }
}

/// No parent: the root, or a detached node.
const NONE: u32 = u32::MAX;

struct Node<W> {
    parent: u32,
    /// The last component; a detached node's whole old relative path; empty for the root.
    name: Box<[u8]>,
    wd: W,
    /// Is this node in its parent's table and child list (false for the root and
    /// detached nodes)?
    attached: bool,
    /// Its first child, and its siblings before and after it (NONE: none).
    first: u32,
    prev: u32,
    next: u32,
}

impl<W> Node<W> {
    fn new(wd: W) -> Self {
        Node {
            parent: NONE,
            name: Box::default(),
            wd,
            attached: false,
            first: NONE,
            prev: NONE,
            next: NONE,
        }
    }
}

/// The watched directories of one root, by relative path and by descriptor.
pub struct DirTree<W> {
    nodes: Vec<Option<Node<W>>>,
    free: Vec<u32>,
    by_wd: HashMap<i32, u32>,
    /// Attached non-root nodes, hashed by (parent, name).
    table: HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
    /// The node of the root (the empty path), if watched.
    root: Option<u32>,
}

impl<W: Wd> Default for DirTree<W> {
    fn default() -> Self {
        DirTree {
            nodes: Vec::new(),
            free: Vec::new(),
            by_wd: HashMap::new(),
            table: HashTable::new(),
            hasher: Default::default(),
            root: None,
        }
    }
}

/// The bytes of each component of a relative path (`.` and a leading `/` skipped).
fn components(p: &Path) -> impl Iterator<Item = &[u8]> {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.as_bytes()),
        _ => None,
    })
}

impl<W: Wd> DirTree<W> {
    /// How many directories have a watch (detached ones included).
    pub fn len(&self) -> usize {
        self.by_wd.len()
    }

    fn hash(&self, parent: u32, name: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        parent.hash(&mut h);
        name.hash(&mut h);
        h.finish()
    }

    fn node(&self, i: u32) -> &Node<W> {
        self.nodes[i as usize]
            .as_ref()
            .expect("the tree's indexes point at live nodes")
    }

    fn node_mut(&mut self, i: u32) -> &mut Node<W> {
        self.nodes[i as usize]
            .as_mut()
            .expect("the tree's indexes point at live nodes")
    }

    fn child(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let h = self.hash(parent, name);
        self.table
            .find(h, |&i| {
                let n = self.node(i);
                n.parent == parent && &*n.name == name
            })
            .copied()
    }

    /// The node at `rel`, if that directory is watched (and attached).
    fn find(&self, rel: &Path) -> Option<u32> {
        let mut at = self.root?;
        for c in components(rel) {
            at = self.child(at, c)?;
        }
        Some(at)
    }

    /// Is the directory at `rel` watched?
    pub fn contains(&self, rel: &Path) -> bool {
        self.find(rel).is_some()
    }

    /// The descriptor of the directory at `rel`.
    #[cfg(test)]
    pub fn wd_at(&self, rel: &Path) -> Option<&W> {
        self.find(rel).map(|i| &self.node(i).wd)
    }

    /// The relative path of the directory a descriptor watches (its old path if it is
    /// detached).
    pub fn path_of(&self, wd: i32) -> Option<PathBuf> {
        let i = *self.by_wd.get(&wd)?;
        Some(self.path_of_node(i))
    }

    /// Is `wd` the descriptor of a detached directory (deleted or renamed away, or set
    /// aside, and not recorded anywhere since)?
    pub fn is_detached(&self, wd: i32) -> bool {
        self.by_wd
            .get(&wd)
            .is_some_and(|&i| !self.node(i).attached && self.root != Some(i))
    }

    /// Is `wd` a descriptor of this tree?
    pub fn has_wd(&self, wd: i32) -> bool {
        self.by_wd.contains_key(&wd)
    }

    fn path_of_node(&self, mut i: u32) -> PathBuf {
        let mut names: Vec<&[u8]> = Vec::new();
        loop {
            let n = self.node(i);
            if !n.name.is_empty() {
                names.push(&n.name);
            }
            if n.parent == NONE {
                break;
            }
            i = n.parent;
        }
        let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for n in names.iter().rev() {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(n);
        }
        PathBuf::from(OsString::from_vec(out))
    }

    fn alloc(&mut self, node: Node<W>) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn link(&mut self, i: u32, parent: u32, name: Box<[u8]>) {
        let h = self.hash(parent, &name);
        {
            let n = self.node_mut(i);
            n.parent = parent;
            n.name = name;
            n.attached = true;
            n.prev = NONE;
        }
        let first = self.node(parent).first;
        self.node_mut(i).next = first;
        if first != NONE {
            self.node_mut(first).prev = i;
        }
        self.node_mut(parent).first = i;
        let hasher = self.hasher.clone();
        let nodes = &self.nodes;
        self.table.insert_unique(h, i, |&j| {
            let n = nodes[j as usize].as_ref().expect("live node");
            let mut s = hasher.build_hasher();
            n.parent.hash(&mut s);
            n.name.hash(&mut s);
            s.finish()
        });
    }

    /// Takes node `i` out of its parent's table (it keeps its own children).
    fn unlink(&mut self, i: u32) {
        let (parent, attached) = {
            let n = self.node(i);
            (n.parent, n.attached)
        };
        if !attached {
            return;
        }
        let h = self.hash(parent, &self.node(i).name);
        if let Ok(e) = self.table.find_entry(h, |&j| j == i) {
            e.remove();
        }
        let (prev, next) = {
            let n = self.node(i);
            (n.prev, n.next)
        };
        if prev == NONE {
            self.node_mut(parent).first = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next != NONE {
            self.node_mut(next).prev = prev;
        }
        let n = self.node_mut(i);
        n.attached = false;
        n.parent = NONE;
        n.prev = NONE;
        n.next = NONE;
    }

    /// Records that `rel` is watched with `wd`. A descriptor already known elsewhere
    /// moves there with what is below it (the kernel gives one inode one descriptor: the
    /// directory was renamed); another directory recorded at `rel` is dropped with what
    /// is below it, and their descriptors returned, for the caller to remove. `rel`'s
    /// parent must be recorded already (the root first); if it is not, nothing is
    /// recorded and `wd` is returned with the rest.
    pub fn insert(&mut self, rel: &Path, wd: W) -> Vec<W> {
        let mut dropped = Vec::new();
        let names: Vec<&[u8]> = components(rel).collect();
        let Some((last, above)) = names.split_last() else {
            // The root.
            if let Some(r) = self.root {
                if self.node(r).wd.id() == wd.id() {
                    return dropped;
                }
                dropped.extend(self.remove_all_below(r, true));
            }
            if let Some(&old) = self.by_wd.get(&wd.id()) {
                // The root's descriptor was some directory's: forget that one.
                dropped.extend(self.remove_all_below(old, true).into_iter().skip(1));
            }
            let i = self.alloc(Node::new(wd.clone()));
            self.by_wd.insert(wd.id(), i);
            self.root = Some(i);
            return dropped;
        };
        let parent = {
            let Some(mut at) = self.root else {
                dropped.push(wd);
                return dropped;
            };
            for c in above {
                match self.child(at, c) {
                    Some(n) => at = n,
                    None => {
                        dropped.push(wd);
                        return dropped;
                    }
                }
            }
            at
        };
        let here = self.child(parent, last);
        let known = self.by_wd.get(&wd.id()).copied();
        if let (Some(h), Some(k)) = (here, known) {
            if h == k {
                return dropped; // already so
            }
        }
        if let Some(k) = known {
            let cycle = self.is_ancestor_or_self(k, parent)
                || here.is_some_and(|h| self.is_ancestor_or_self(h, k));
            if cycle || Some(k) == self.root {
                // Would hang a directory below itself: the tree is stale; drop it.
                dropped.extend(self.remove_all_below(k, true));
                return self.insert_tail(parent, last, wd, here, dropped);
            }
        }
        if let Some(h) = here {
            dropped.extend(self.remove_all_below(h, true));
        }
        match known {
            Some(k) => {
                self.unlink(k);
                self.link(k, parent, (*last).into());
            }
            None => {
                let i = self.alloc(Node::new(wd.clone()));
                self.by_wd.insert(wd.id(), i);
                self.link(i, parent, (*last).into());
            }
        }
        dropped
    }

    fn insert_tail(
        &mut self,
        parent: u32,
        last: &[u8],
        wd: W,
        here: Option<u32>,
        mut dropped: Vec<W>,
    ) -> Vec<W> {
        // `wd` was among the dropped: it is recorded again here, so not to be removed.
        dropped.retain(|d| d.id() != wd.id());
        if let Some(h) = here.filter(|h| self.nodes[*h as usize].is_some()) {
            dropped.extend(self.remove_all_below(h, true));
        }
        if self.nodes[parent as usize].is_none() {
            dropped.push(wd);
            return dropped;
        }
        let i = self.alloc(Node::new(wd.clone()));
        self.by_wd.insert(wd.id(), i);
        self.link(i, parent, last.into());
        dropped
    }

    /// Is `a` the node `b` or one of its ancestors?
    fn is_ancestor_or_self(&self, a: u32, mut b: u32) -> bool {
        loop {
            if a == b {
                return true;
            }
            let p = self.node(b).parent;
            if p == NONE {
                return false;
            }
            b = p;
        }
    }

    /// Every node at and below `i`, parents before children.
    fn subtree(&self, i: u32) -> Vec<u32> {
        let mut out = vec![i];
        let mut k = 0;
        while k < out.len() {
            let n = out[k];
            self.children_into(n, &mut out);
            k += 1;
        }
        out
    }

    fn children_into(&self, parent: u32, out: &mut Vec<u32>) {
        let mut c = self.node(parent).first;
        while c != NONE {
            out.push(c);
            c = self.node(c).next;
        }
    }

    /// Removes node `i` and everything below it; returns their descriptors.
    fn remove_all_below(&mut self, i: u32, with_self: bool) -> Vec<W> {
        let all = self.subtree(i);
        let mut out = Vec::with_capacity(all.len());
        for &n in all.iter().rev() {
            if !with_self && n == i {
                continue;
            }
            self.unlink(n);
            if let Some(node) = self.nodes[n as usize].take() {
                self.by_wd.remove(&node.wd.id());
                self.free.push(n);
                out.push(node.wd);
            }
            if self.root == Some(n) {
                self.root = None;
            }
        }
        out.reverse();
        out
    }

    /// The directory at `rel` left its place (deleted or renamed away): it and what is
    /// below keep their descriptors, under the old path, until [`DirTree::remove_wd`]
    /// or an [`DirTree::insert`] of its descriptor elsewhere. Returns the descriptors at
    /// and below it.
    pub fn detach(&mut self, rel: &Path) -> Vec<W> {
        let Some(i) = self.find(rel) else {
            return Vec::new();
        };
        if Some(i) == self.root {
            return self
                .subtree(i)
                .iter()
                .map(|&n| self.node(n).wd.clone())
                .collect();
        }
        let full = self.path_of_node(i);
        self.unlink(i);
        self.node_mut(i).name = full.into_os_string().as_bytes().into();
        self.subtree(i)
            .iter()
            .map(|&n| self.node(n).wd.clone())
            .collect()
    }

    /// Removes the directory at `rel` and everything below it; returns their descriptors.
    pub fn remove_subtree(&mut self, rel: &Path) -> Vec<W> {
        match self.find(rel) {
            Some(i) => self.remove_all_below(i, true),
            None => Vec::new(),
        }
    }

    /// Removes the directory a descriptor watched (its watch is gone: IN_IGNORED).
    /// What was still recorded below it is detached, each under its own path. Returns
    /// the removed directory's path.
    pub fn remove_wd(&mut self, wd: i32) -> Option<PathBuf> {
        let i = *self.by_wd.get(&wd)?;
        let path = self.path_of_node(i);
        let mut kids = Vec::new();
        self.children_into(i, &mut kids);
        {
            for k in kids {
                let full = self.path_of_node(k);
                self.unlink(k);
                self.node_mut(k).name = full.into_os_string().as_bytes().into();
            }
        }
        self.unlink(i);
        if let Some(node) = self.nodes[i as usize].take() {
            self.by_wd.remove(&node.wd.id());
            self.free.push(i);
        }
        if self.root == Some(i) {
            self.root = None;
        }
        Some(path)
    }

    /// Removes the directory a descriptor watches if it is `rel` or below it (still
    /// detached there, or moved below it), with what is below it; returns the removed
    /// descriptors.
    pub fn remove_wd_if_below(&mut self, wd: i32, rel: &Path) -> Vec<W> {
        let Some(&i) = self.by_wd.get(&wd) else {
            return Vec::new();
        };
        if self.path_of_node(i).starts_with(rel) {
            self.remove_all_below(i, true)
        } else {
            Vec::new()
        }
    }

    /// Removes the directory a descriptor watches, with what is below it; returns the
    /// removed descriptors.
    pub fn remove_wd_tree(&mut self, wd: i32) -> Vec<W> {
        match self.by_wd.get(&wd) {
            Some(&i) => self.remove_all_below(i, true),
            None => Vec::new(),
        }
    }

    /// Forgets everything; returns every descriptor.
    pub fn take_all(&mut self) -> Vec<W> {
        let out = self.nodes.drain(..).flatten().map(|n| n.wd).collect();
        self.free.clear();
        self.by_wd.clear();
        self.table.clear();
        self.root = None;
        out
    }

    /// Every attached directory, by path (for tests and checks; walks the whole tree).
    #[cfg(test)]
    pub fn paths(&self) -> std::collections::BTreeMap<PathBuf, i32> {
        let mut out = std::collections::BTreeMap::new();
        if let Some(r) = self.root {
            for n in self.subtree(r) {
                out.insert(self.path_of_node(n), self.node(n).wd.id());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
