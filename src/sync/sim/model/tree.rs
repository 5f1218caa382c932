//! The model's trees: a source read from disk and a remote in memory, paths as bytes,
//! and how the remote's receiver resolves and deletes in them (links followed where the
//! filesystem does).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One entry of a tree, as rsync `-a` would compare it.
#[derive(Debug, Clone)]
pub enum Node {
    Dir,
    /// `link`: which file this name is, for `-H` ([`link_classes`]): in the source the
    /// inode of a file with more than one name (0 with one), on a model remote an
    /// identity of its own for each file written ([`fresh_link`]), shared by the names
    /// a call with `-H` linked. Not part of an entry's equality.
    File {
        data: Vec<u8>,
        mtime: (i64, i64),
        link: u64,
    },
    Link(Vec<u8>),
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Dir, Node::Dir) => true,
            (
                Node::File { data, mtime, .. },
                Node::File {
                    data: d2,
                    mtime: m2,
                    ..
                },
            ) => data == d2 && mtime == m2,
            (Node::Link(a), Node::Link(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Node {}

/// An identity no other file written on a model remote has (see [`Node::File`]).
pub fn fresh_link() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 48);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The names of `tree` that are one file (same `link`), each set sorted, of the names
/// `keep` keeps: sets of two or more.
pub fn link_classes(tree: &Tree, keep: impl Fn(&[u8]) -> bool) -> BTreeSet<Vec<Vec<u8>>> {
    let mut by: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (k, n) in tree {
        if let Node::File { link, .. } = n {
            if *link != 0 && keep(k) {
                by.entry(*link).or_default().push(k.clone());
            }
        }
    }
    by.into_values().filter(|names| names.len() > 1).collect()
}

/// A tree: relative path (no leading `/`, `""` is never a key) to its entry.
pub type Tree = BTreeMap<Vec<u8>, Node>;

/// The entry at `rel` below `root` in the real source tree, not following links.
pub fn read_node(root: &Path, rel: &[u8]) -> Option<Node> {
    let abs = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    };
    let m = std::fs::symlink_metadata(&abs).ok()?;
    let ft = m.file_type();
    if ft.is_dir() {
        Some(Node::Dir)
    } else if ft.is_symlink() {
        Some(Node::Link(
            std::fs::read_link(&abs)
                .ok()?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        ))
    } else {
        Some(Node::File {
            data: std::fs::read(&abs).ok()?,
            mtime: (m.mtime(), m.mtime_nsec()),
            link: if m.nlink() > 1 { m.ino() } else { 0 },
        })
    }
}

/// The entries directly in the source directory `rel` (names), sorted.
pub fn read_names(root: &Path, rel: &[u8]) -> Vec<Vec<u8>> {
    let abs = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    };
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(abs)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The whole source tree below `root`.
pub fn read_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        for name in read_names(root, &dir) {
            let rel = join(&dir, &name);
            if let Some(node) = read_node(root, &rel) {
                if node == Node::Dir {
                    stack.push(rel.clone());
                }
                out.insert(rel, node);
            }
        }
    }
    out
}

pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

pub(super) fn last(p: &[u8]) -> &[u8] {
    p.rsplit(|&b| b == b'/').next().unwrap_or(p)
}

/// Removes `rel` and everything below it from `tree`.
pub fn remove_tree(tree: &mut Tree, rel: &[u8]) {
    tree.remove(rel);
    let mut prefix = rel.to_vec();
    prefix.push(b'/');
    let below: Vec<Vec<u8>> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in below {
        tree.remove(&k);
    }
}

pub(super) fn has_children(tree: &Tree, rel: &[u8]) -> bool {
    let mut prefix = rel.to_vec();
    prefix.push(b'/');
    tree.range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

pub(super) fn put(n: &Node, times: bool) -> Node {
    match n {
        Node::File { data, mtime, .. } => Node::File {
            data: data.clone(),
            mtime: if times { *mtime } else { (0, 0) },
            link: fresh_link(),
        },
        other => other.clone(),
    }
}

/// What a remote path leads to, following links (an absolute target starts at the
/// module's top, as in a chrooted daemon).
pub(super) enum Resolved {
    Missing,
    NotDir,
    Loop,
    Dir(Vec<u8>),
}

/// Is `path` on the remote, or one of the directories above it, a link?
pub(super) fn through_link(remote: &Tree, path: &[u8]) -> bool {
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| &path[..i])
        .chain([path])
        .any(|p| matches!(remote.get(p), Some(Node::Link(_))))
}

pub(super) fn resolve(remote: &Tree, path: &[u8]) -> Resolved {
    let mut todo: Vec<Vec<u8>> = path
        .split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut at: Vec<u8> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c.is_empty() || c == b"." {
            continue;
        }
        if c == b".." {
            match at.iter().rposition(|&b| b == b'/') {
                Some(i) => at.truncate(i),
                None => at.clear(),
            }
            continue;
        }
        let next = join(&at, &c);
        match remote.get(&next) {
            None => return Resolved::Missing,
            Some(Node::Dir) => at = next,
            Some(Node::File { .. }) if todo.is_empty() => return Resolved::NotDir,
            Some(Node::File { .. }) => return Resolved::NotDir,
            Some(Node::Link(to)) => {
                hops += 1;
                if hops > 40 {
                    return Resolved::Loop;
                }
                if to.first() == Some(&b'/') {
                    at.clear();
                }
                todo.extend(to.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            }
        }
    }
    Resolved::Dir(at)
}

/// Deletes what is below `prefix` (the remote's `dir/` for the source's `rel`), keeping
/// what `protect` says (and the directories that then still hold something).
pub(super) fn delete_contents(
    remote: &mut Tree,
    prefix: &[u8],
    rel: &[u8],
    protect: &dyn Fn(&[u8], bool) -> bool,
) {
    let below: Vec<(Vec<u8>, bool)> = remote
        .range(prefix.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, n)| (k.clone(), *n == Node::Dir))
        .collect();
    // What is protected, and everything inside a protected directory (parents come
    // first in the sorted order).
    let mut kept: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for (k, is_dir) in &below {
        let parent = k.iter().rposition(|&b| b == b'/').map(|i| &k[..i]);
        let r = join(rel, &k[prefix.len()..]);
        if parent.is_some_and(|p| kept.contains(p)) || protect(&r, *is_dir) {
            kept.insert(k.clone());
        }
    }
    // Deepest first, so a directory goes once it is empty.
    for (k, is_dir) in below.iter().rev() {
        if kept.contains(k) || (*is_dir && has_children(remote, k)) {
            continue;
        }
        remote.remove(k);
    }
}

/// Deletes `dst` (the remote's path for `rel`), keeping what an exclude protects (and the
/// directories that then still hold something).
pub(super) fn delete_protected(
    remote: &mut Tree,
    dst: &[u8],
    rel: &[u8],
    excluded: &dyn Fn(&[u8], bool) -> bool,
) {
    let mut prefix = dst.to_vec();
    prefix.push(b'/');
    let below: Vec<(Vec<u8>, bool)> = remote
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, n)| (k.clone(), *n == Node::Dir))
        .collect();
    // What is protected, and everything inside a protected directory (parents come
    // first in the sorted order).
    let mut kept: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for (k, is_dir) in &below {
        let parent = k.iter().rposition(|&b| b == b'/').map(|i| &k[..i]);
        let r = join(rel, &k[prefix.len()..]);
        if parent.is_some_and(|p| kept.contains(p)) || excluded(&r, *is_dir) {
            kept.insert(k.clone());
        }
    }
    // Deepest first, so a directory goes once it is empty.
    for (k, is_dir) in below.iter().rev() {
        if kept.contains(k) || (*is_dir && has_children(remote, k)) {
            continue;
        }
        remote.remove(k);
    }
    if !has_children(remote, dst) {
        remote.remove(dst);
    }
}
