//! The differential test's random trees: the source, a remote that differs from it,
//! and their making on disk.

use super::*;

/// A random tree of at most three levels.
pub(super) fn random_tree(rng: &mut Rng) -> Tree {
    let mut tree = Tree::new();
    fill(rng, &mut tree, b"", 0);
    tree
}

pub(super) fn fill(rng: &mut Rng, tree: &mut Tree, dir: &[u8], depth: usize) {
    for name in NAMES {
        if !rng.chance(if depth == 0 { 55 } else { 35 }) {
            continue;
        }
        let rel = model::join(dir, name);
        let roll = rng.below(100);
        if roll < 35 && depth < 2 {
            tree.insert(rel.clone(), Node::Dir);
            fill(rng, tree, &rel, depth + 1);
        } else if roll < 85 {
            tree.insert(rel, random_file(rng));
        } else {
            tree.insert(
                rel,
                Node::Link(rng.pick(&LINKS).copied().unwrap_or(b"a").to_vec()),
            );
        }
    }
}

pub(super) fn random_file(rng: &mut Rng) -> Node {
    Node::File {
        data: rng.pick(&DATA).copied().unwrap_or(b"").to_vec(),
        mtime: (rng.pick(&MTIMES).copied().unwrap_or(MTIMES[0]), 0),
        link: 0,
    }
}

/// A remote tree: empty, unrelated, or the source with changes (most of its paths then
/// meet the source's, kinds and contents sometimes not).
pub(super) fn random_remote(rng: &mut Rng, source: &Tree) -> Tree {
    match rng.below(10) {
        0 => Tree::new(),
        1..=3 => random_tree(rng),
        _ => {
            let mut remote = source.clone();
            let keys: Vec<Vec<u8>> = remote.keys().cloned().collect();
            for k in keys {
                if !remote.contains_key(&k) {
                    continue;
                }
                match rng.below(100) {
                    0..=9 => model::remove_tree(&mut remote, &k),
                    10..=19 => {
                        if let Some(Node::File { data, mtime, .. }) = remote.get_mut(&k) {
                            if rng.chance(50) {
                                // Same size and mtime, other bytes: the quick check
                                // cannot tell.
                                if data.as_slice() == b"hello" {
                                    *data = b"world".to_vec();
                                } else {
                                    *data = rng.pick(&DATA).copied().unwrap_or(b"").to_vec();
                                }
                            } else {
                                mtime.0 = rng.pick(&MTIMES).copied().unwrap_or(MTIMES[0]);
                            }
                        }
                    }
                    20..=25 => {
                        // Another kind at the same path.
                        let was_dir = remote.get(&k) == Some(&Node::Dir);
                        model::remove_tree(&mut remote, &k);
                        if was_dir {
                            remote.insert(k, random_file(rng));
                        } else {
                            remote.insert(k.clone(), Node::Dir);
                            if rng.chance(50) {
                                remote.insert(model::join(&k, b"b"), random_file(rng));
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Extra entries only the remote has.
            let dirs: Vec<Vec<u8>> = std::iter::once(Vec::new())
                .chain(
                    remote
                        .iter()
                        .filter(|(_, n)| **n == Node::Dir)
                        .map(|(k, _)| k.clone()),
                )
                .collect();
            for _ in 0..rng.below(4) {
                let Some(d) = rng.pick(&dirs).cloned() else {
                    break;
                };
                let Some(name) = rng.pick(&NAMES).copied() else {
                    break;
                };
                let rel = model::join(&d, name);
                if remote.contains_key(&rel) {
                    continue;
                }
                if rng.chance(30) {
                    remote.insert(rel.clone(), Node::Dir);
                    if rng.chance(60) {
                        remote.insert(model::join(&rel, b"a"), random_file(rng));
                    }
                } else {
                    remote.insert(rel, random_file(rng));
                }
            }
            remote
        }
    }
}

/// Makes `tree` under the empty directory `dir`.
pub(super) fn materialise(dir: &Path, tree: &Tree) -> std::io::Result<()> {
    // Sorted: every directory comes before what it holds.
    for (rel, node) in tree {
        let abs = dir.join(OsStr::from_bytes(rel));
        match node {
            Node::Dir => std::fs::create_dir(&abs)?,
            Node::File { data, mtime, .. } => {
                std::fs::write(&abs, data)?;
                let t = UNIX_EPOCH + Duration::new(mtime.0.max(0) as u64, mtime.1 as u32);
                std::fs::File::options()
                    .write(true)
                    .open(&abs)?
                    .set_modified(t)?;
            }
            Node::Link(to) => std::os::unix::fs::symlink(OsStr::from_bytes(to), &abs)?,
        }
    }
    Ok(())
}

/// [`materialise`], with each `(from, to)` of `links` made as a hard link of `from`.
pub(super) fn materialise_linked(
    dir: &Path,
    tree: &Tree,
    links: &[(Vec<u8>, Vec<u8>)],
) -> std::io::Result<()> {
    let plain: Tree = tree
        .iter()
        .filter(|(k, _)| !links.iter().any(|(_, to)| to == *k))
        .map(|(k, n)| (k.clone(), n.clone()))
        .collect();
    materialise(dir, &plain)?;
    for (from, to) in links {
        std::fs::hard_link(
            dir.join(OsStr::from_bytes(from)),
            dir.join(OsStr::from_bytes(to)),
        )?;
    }
    Ok(())
}

/// Empties `dir` (keeps the directory itself: the daemon's module path).
pub(super) fn empty(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if std::fs::symlink_metadata(&p)?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}
