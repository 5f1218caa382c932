use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::{DirTree, Wd};

impl Wd for i32 {
    fn id(&self) -> i32 {
        *self
    }
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn paths_are_built_from_the_ancestors() {
    let mut t = DirTree::default();
    assert!(t.insert(Path::new(""), 1).is_empty());
    assert!(t.insert(&p("a"), 2).is_empty());
    assert!(t.insert(&p("a/b"), 3).is_empty());
    assert_eq!(t.path_of(3), Some(p("a/b")));
    assert_eq!(t.path_of(1), Some(p("")));
    assert!(t.contains(&p("a/b")));
    assert!(!t.contains(&p("a/c")));
    assert_eq!(t.len(), 3);
}

#[test]
fn a_child_without_its_parent_is_refused() {
    let mut t = DirTree::default();
    assert_eq!(t.insert(&p("a"), 2), vec![2], "no root yet");
    t.insert(Path::new(""), 1);
    assert_eq!(t.insert(&p("x/y"), 3), vec![3]);
    assert_eq!(t.len(), 1);
}

#[test]
fn a_rename_moves_one_node_and_what_is_below_comes_along() {
    let mut t = DirTree::default();
    t.insert(Path::new(""), 1);
    t.insert(&p("a"), 2);
    t.insert(&p("a/b"), 3);
    t.insert(&p("a/b/c"), 4);
    t.insert(&p("z"), 5);
    let wds = t.detach(&p("a"));
    assert_eq!(wds.len(), 3);
    // Detached: still known under the old path.
    assert_eq!(t.path_of(4), Some(p("a/b/c")));
    assert!(!t.contains(&p("a")));
    assert!(t.insert(&p("z/a2"), 2).is_empty());
    assert_eq!(t.path_of(4), Some(p("z/a2/b/c")));
    assert!(t.contains(&p("z/a2/b")));
}

#[test]
fn a_directory_that_loses_its_watch_leaves_its_children_under_their_paths() {
    let mut t = DirTree::default();
    t.insert(Path::new(""), 1);
    t.insert(&p("a"), 2);
    t.insert(&p("a/b"), 3);
    assert_eq!(t.remove_wd(2), Some(p("a")));
    assert_eq!(t.path_of(3), Some(p("a/b")));
    assert!(!t.contains(&p("a/b")));
    assert_eq!(t.remove_wd(3), Some(p("a/b")));
    assert_eq!(t.len(), 1);
}

#[test]
fn another_directory_at_a_path_is_dropped_with_what_is_below_it() {
    let mut t = DirTree::default();
    t.insert(Path::new(""), 1);
    t.insert(&p("a"), 2);
    t.insert(&p("a/b"), 3);
    let mut dropped = t.insert(&p("a"), 7);
    dropped.sort();
    assert_eq!(dropped, vec![2, 3]);
    assert_eq!(t.path_of(7), Some(p("a")));
    assert_eq!(t.len(), 2);
}

#[test]
fn a_directory_moved_below_itself_is_not_a_cycle() {
    let mut t = DirTree::default();
    t.insert(Path::new(""), 1);
    t.insert(&p("a"), 2);
    t.insert(&p("a/b"), 3);
    // Stale: the descriptor of `a` now reported at a/b/c.
    let mut dropped = t.insert(&p("a/b/c"), 2);
    dropped.sort();
    assert_eq!(dropped, vec![2, 3]);
    assert_eq!(t.paths(), BTreeMap::from([(p(""), 1)]));
}

/// One step against the tree and the model.
#[derive(Debug, Clone)]
enum Op {
    /// A new directory: parent (index into the model's paths), name.
    Add(usize, u8),
    /// Rename the directory at index `from` to a new name below index `to`.
    Rename(usize, usize, u8),
    /// Delete (detach, then IN_IGNORED for each, deepest first).
    Delete(usize),
    /// Remove a subtree at once (a rewalk).
    Remove(usize),
    /// A rename away whose MOVED_TO never comes: detached, then removed.
    MoveOut(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..4).prop_map(|(a, n)| Op::Add(a, n)),
        2 => (any::<usize>(), any::<usize>(), 0u8..4).prop_map(|(a, b, n)| Op::Rename(a, b, n)),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => any::<usize>().prop_map(Op::Remove),
        1 => any::<usize>().prop_map(Op::MoveOut),
    ]
}

fn pick(model: &BTreeMap<PathBuf, i32>, i: usize) -> PathBuf {
    let keys: Vec<&PathBuf> = model.keys().collect();
    keys[i % keys.len()].clone()
}

fn remove_below(model: &mut BTreeMap<PathBuf, i32>, at: &Path) -> Vec<(PathBuf, i32)> {
    let below: Vec<PathBuf> = model
        .keys()
        .filter(|k| k.starts_with(at))
        .cloned()
        .collect();
    below
        .into_iter()
        .filter_map(|k| model.remove(&k).map(|w| (k, w)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random adds, renames, deletes and removals keep the tree equal to a plain map
    /// from path to descriptor.
    #[test]
    fn the_tree_matches_a_path_map(ops in proptest::collection::vec(op(), 1..60)) {
        let mut t: DirTree<i32> = DirTree::default();
        let mut model: BTreeMap<PathBuf, i32> = BTreeMap::new();
        t.insert(Path::new(""), 1);
        model.insert(PathBuf::new(), 1);
        let mut next = 2;
        for o in ops {
            match o {
                Op::Add(a, n) => {
                    let dir = pick(&model, a).join(format!("d{n}"));
                    let wd = next;
                    next += 1;
                    let mut gone: Vec<i32> = remove_below(&mut model, &dir).into_iter().map(|(_, w)| w).collect();
                    model.insert(dir.clone(), wd);
                    let mut dropped = t.insert(&dir, wd);
                    dropped.sort();
                    gone.sort();
                    prop_assert_eq!(dropped, gone);
                }
                Op::Rename(a, b, n) => {
                    let from = pick(&model, a);
                    let to_parent = pick(&model, b);
                    if from.as_os_str().is_empty() || to_parent.starts_with(&from) {
                        continue;
                    }
                    let to = to_parent.join(format!("r{n}"));
                    let moved = remove_below(&mut model, &from);
                    let gone = remove_below(&mut model, &to);
                    for (k, w) in moved {
                        let rest = k.strip_prefix(&from).expect("below").to_path_buf();
                        let nk = if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
                        model.insert(nk, w);
                    }
                    let wd = *t.wd_at(&from).expect("watched");
                    let detached = t.detach(&from);
                    prop_assert!(detached.contains(&wd));
                    let mut dropped = t.insert(&to, wd);
                    dropped.sort();
                    let mut gone: Vec<i32> = gone.into_iter().map(|(_, w)| w).collect();
                    gone.sort();
                    prop_assert_eq!(dropped, gone);
                }
                Op::Delete(a) => {
                    let at = pick(&model, a);
                    if at.as_os_str().is_empty() {
                        continue;
                    }
                    let mut gone = remove_below(&mut model, &at);
                    t.detach(&at);
                    gone.sort_by_key(|(k, _)| std::cmp::Reverse(k.components().count()));
                    for (k, w) in gone {
                        prop_assert_eq!(t.remove_wd(w), Some(k));
                    }
                }
                Op::Remove(a) => {
                    let at = pick(&model, a);
                    let mut gone: Vec<i32> = remove_below(&mut model, &at).into_iter().map(|(_, w)| w).collect();
                    let mut removed = t.remove_subtree(&at);
                    removed.sort();
                    gone.sort();
                    prop_assert_eq!(removed, gone);
                    if at.as_os_str().is_empty() {
                        t.insert(Path::new(""), next);
                        model.insert(PathBuf::new(), next);
                        next += 1;
                    }
                }
                Op::MoveOut(a) => {
                    let at = pick(&model, a);
                    if at.as_os_str().is_empty() {
                        continue;
                    }
                    let gone = remove_below(&mut model, &at);
                    let wds = t.detach(&at);
                    let mut removed = Vec::new();
                    for w in wds {
                        removed.extend(t.remove_wd_if_below(w, &at));
                    }
                    removed.sort();
                    let mut gone: Vec<i32> = gone.into_iter().map(|(_, w)| w).collect();
                    gone.sort();
                    prop_assert_eq!(removed, gone);
                }
            }
            prop_assert_eq!(t.paths(), model.clone());
            prop_assert_eq!(t.len(), model.len());
            for (k, w) in &model {
                prop_assert_eq!(t.path_of(*w), Some(k.clone()));
                prop_assert!(t.contains(k));
            }
        }
    }
}

// An exchange (renameat2 RENAME_EXCHANGE) of two watched directories, as the inotify
// watcher applies it: the first move lands on a path that holds a directory, which is
// set aside (detached, not dropped) and taken by the second move. Broke: the move onto
// the occupied path dropped the other directory and what was below it.
#[test]
fn an_exchange_keeps_both_directories_and_what_is_below_them() {
    let mut t = DirTree::default();
    t.insert(Path::new(""), 1);
    t.insert(&p("XA"), 2);
    t.insert(&p("XA/sub"), 3);
    t.insert(&p("P"), 4);
    t.insert(&p("P/XB"), 5);
    t.insert(&p("P/XB/deep"), 6);
    // MOVED_FROM XA, MOVED_TO P/XB: XA leaves; what is at P/XB is set aside first.
    assert_eq!(t.detach(&p("XA")), vec![2, 3]);
    assert_eq!(t.detach(&p("P/XB")), vec![5, 6]);
    assert!(t.is_detached(5) && t.is_detached(2));
    assert!(t.insert(&p("P/XB"), 2).is_empty(), "nothing dropped");
    assert!(t.insert(&p("P/XB/sub"), 3).is_empty());
    // MOVED_FROM P/XB (the directory set aside), MOVED_TO XA.
    assert!(t.insert(&p("XA"), 5).is_empty());
    assert!(t.insert(&p("XA/deep"), 6).is_empty());
    let want: BTreeMap<PathBuf, i32> = [
        ("", 1),
        ("P", 4),
        ("P/XB", 2),
        ("P/XB/sub", 3),
        ("XA", 5),
        ("XA/deep", 6),
    ]
    .into_iter()
    .map(|(k, v)| (p(k), v))
    .collect();
    assert_eq!(t.paths(), want);
    assert_eq!(t.len(), 6);
    assert!(!t.is_detached(5) && !t.is_detached(1) && !t.is_detached(99));
}
