use super::*;
use proptest::prelude::*;

fn file(ino: u64, size: u64, mtime: i64, ctime: i64) -> Meta {
    Meta {
        kind: Kind::File,
        size,
        mtime,
        ctime,
        ino,
        dev: 7,
        mode: 0o100644,
        link: None,
    }
}

fn dir(ino: u64) -> Meta {
    Meta {
        kind: Kind::Dir,
        size: 4096,
        mtime: 5,
        ctime: 5,
        ino,
        dev: 7,
        mode: 0o040755,
        link: None,
    }
}

fn tree(entries: &[(&str, Meta)]) -> Tree {
    entries
        .iter()
        .map(|(p, m)| (PathBuf::from(p), m.clone()))
        .collect()
}

fn paths(v: &[PathBuf]) -> Vec<&str> {
    v.iter().map(|p| p.to_str().unwrap_or("?")).collect()
}

#[test]
fn an_equal_tree_has_no_difference() {
    let t = tree(&[("a", dir(1)), ("a/x", file(2, 3, 10, 10))]);
    assert!(diff(&t, &t).is_empty());
}

#[test]
fn new_changed_and_deleted_entries_are_found() {
    let old = tree(&[
        ("a", dir(1)),
        ("a/x", file(2, 3, 10, 10)),
        ("a/y", file(3, 3, 10, 10)),
        ("d", dir(4)),
        ("d/z", file(5, 1, 1, 1)),
    ]);
    let new = tree(&[
        ("a", dir(1)),
        ("a/x", file(2, 4, 11, 11)),
        ("a/n", file(9, 1, 1, 1)),
    ]);
    let d = diff(&old, &new);
    assert_eq!(paths(&d.changed), ["a/n", "a/x"]);
    // The gone directory is one delete: nothing below it is listed.
    assert_eq!(
        d.deleted,
        vec![(PathBuf::from("a/y"), false), (PathBuf::from("d"), true)]
    );
    assert!(d.renamed.is_empty());
}

#[test]
fn same_size_and_mtime_but_another_inode_or_ctime_is_a_change() {
    let old = tree(&[("x", file(2, 3, 10, 10)), ("y", file(3, 3, 10, 10))]);
    // x: rewritten with its mtime restored (touch -r): only the ctime tells.
    // y: replaced by another file of the same size and mtime.
    let new = tree(&[("x", file(2, 3, 10, 11)), ("y", file(8, 3, 10, 10))]);
    assert_eq!(paths(&diff(&old, &new).changed), ["x", "y"]);
}

#[test]
fn a_change_rsyncs_quick_check_cannot_see_is_blind() {
    const S: i64 = 1_000_000_000;
    let unknown = Meta {
        kind: Kind::Unknown,
        ..file(0, 0, 0, 0)
    };
    let old = tree(&[
        ("same", file(2, 3, 10 * S, 10)),
        ("sub_second", file(3, 3, 10 * S + 5, 10)),
        ("grown", file(4, 3, 10 * S, 10)),
        ("touched", file(5, 3, 10 * S, 10)),
        ("unknown", unknown),
    ]);
    let new = tree(&[
        ("same", file(2, 3, 10 * S, 11)),
        ("sub_second", file(3, 3, 10 * S + 7, 11)),
        ("grown", file(4, 4, 10 * S, 11)),
        ("touched", file(5, 3, 11 * S, 11)),
        ("unknown", file(6, 3, 10 * S, 10)),
    ]);
    let d = diff(&old, &new);
    assert_eq!(
        paths(&d.changed),
        ["grown", "same", "sub_second", "touched", "unknown"]
    );
    let blind: Vec<PathBuf> = d.blind.iter().cloned().collect();
    assert_eq!(paths(&blind), ["same", "sub_second", "unknown"]);
    let items = d.items();
    let as_blind = |p: &str| items.contains(&Item::Blind(PathBuf::from(p)));
    assert!(as_blind("same") && as_blind("unknown") && !as_blind("grown"));
}

#[test]
fn a_renamed_directory_is_one_rename_and_nothing_below_it_is_sent() {
    let old = tree(&[
        ("d", dir(1)),
        ("d/x", file(2, 3, 10, 10)),
        ("d/s", dir(3)),
        ("d/s/y", file(4, 3, 10, 10)),
    ]);
    let mut moved = dir(1);
    moved.ctime = 99;
    let new = tree(&[
        ("e", moved),
        ("e/x", file(2, 3, 10, 10)),
        ("e/s", dir(3)),
        ("e/s/y", file(4, 3, 10, 10)),
    ]);
    let d = diff(&old, &new);
    assert!(d.changed.is_empty() && d.deleted.is_empty(), "{d:?}");
    assert_eq!(
        d.renamed,
        vec![Moved {
            from: "d".into(),
            to: "e".into(),
            dir: true,
            below: vec!["e".into(), "e/s".into(), "e/s/y".into(), "e/x".into()],
        }]
    );
}

#[test]
fn a_renamed_directory_with_a_change_below_goes_plain() {
    let old = tree(&[("d", dir(1)), ("d/x", file(2, 3, 10, 10))]);
    let new = tree(&[("e", dir(1)), ("e/x", file(2, 5, 12, 12))]);
    let d = diff(&old, &new);
    assert!(d.renamed.is_empty());
    assert_eq!(paths(&d.changed), ["e", "e/x"]);
    assert_eq!(d.deleted, vec![(PathBuf::from("d"), true)]);
}

#[test]
fn a_renamed_file_is_a_rename_when_only_its_ctime_moved() {
    let old = tree(&[("x", file(2, 3, 10, 10))]);
    let new = tree(&[("y", file(2, 3, 10, 20))]);
    let d = diff(&old, &new);
    assert_eq!(d.renamed.len(), 1);
    assert_eq!(
        (d.renamed[0].from.as_path(), d.renamed[0].to.as_path()),
        (Path::new("x"), Path::new("y"))
    );
    assert!(!d.renamed[0].dir && d.renamed[0].below.is_empty());
    // Written too (size and mtime moved): a delete and a push.
    let new = tree(&[("y", file(2, 4, 11, 20))]);
    let d = diff(&old, &new);
    assert!(d.renamed.is_empty());
    assert_eq!(paths(&d.changed), ["y"]);
}

#[test]
fn a_directory_that_became_a_file_is_pushed_and_its_entries_not_deleted_one_by_one() {
    let old = tree(&[("d", dir(1)), ("d/x", file(2, 3, 10, 10))]);
    let new = tree(&[("d", file(5, 1, 1, 1))]);
    let d = diff(&old, &new);
    assert_eq!(paths(&d.changed), ["d"]);
    assert!(d.deleted.is_empty());
}

// A directory the index knows only as unknown, or one made again in its place while no
// agent ran, goes as its listing: what the remotes hold there that the index never
// learned (a release's files sent by a listing that found the directory gone and then
// there again) goes with it. A directory changed in place goes plain.
#[test]
fn an_unknown_or_replaced_directory_is_pushed_as_its_listing() {
    let listed = |old: &Tree, new: &Tree| -> Vec<(PathBuf, bool)> {
        (diff(old, new).items().into_iter())
            .filter_map(|i| match i {
                Item::Path(e, _) => Some((e.path, e.listing)),
                _ => None,
            })
            .collect()
    };
    let now = tree(&[("d", dir(2)), ("d/x", file(3, 1, 1, 1))]);
    let unknown = tree(&[("d", tree::UNKNOWN), ("d/x", file(3, 1, 1, 1))]);
    assert_eq!(listed(&unknown, &now), [(PathBuf::from("d"), true)]);
    let replaced = tree(&[("d", dir(1)), ("d/x", file(3, 1, 1, 1))]);
    assert_eq!(listed(&replaced, &now), [(PathBuf::from("d"), true)]);
    let mut touched = dir(2);
    touched.mtime = 6;
    let in_place = tree(&[("d", touched), ("d/x", file(3, 1, 1, 1))]);
    assert_eq!(listed(&in_place, &now), [(PathBuf::from("d"), false)]);
    // A directory the index does not have: its listing (the index entered the delete
    // of a directory gone when its push began and landed, which rsync found there in
    // between and sent with its entries).
    let absent = tree(&[("d/x", file(3, 1, 1, 1))]);
    assert_eq!(listed(&absent, &now), [(PathBuf::from("d"), true)]);
    // A file where the directory was: plain.
    let was_file = tree(&[("d", file(9, 1, 1, 1)), ("d/x", file(3, 1, 1, 1))]);
    assert_eq!(listed(&was_file, &now), [(PathBuf::from("d"), false)]);
}

#[test]
fn the_file_round_trips_and_any_torn_byte_is_refused() {
    let mut link = file(9, 4, 1, 1);
    link.kind = Kind::Link;
    link.link = Some(b"../t".to_vec().into_boxed_slice());
    let s = Section {
        root: "/www".into(),
        remotes: vec!["127.0.0.1::a".into(), "h::b".into()],
        tree: tree(&[("a", dir(1)), ("a/x", file(2, 3, -10, 10)), ("l", link)]),
    };
    let bytes = encode(&[s.view()], false);
    assert_eq!(decode(&bytes), Ok((vec![s.clone()], false)));
    assert_eq!(
        decode(&encode(&[s.view()], true)),
        Ok((vec![s.clone()], true))
    );
    for cut in [0, 5, 16, bytes.len() / 2, bytes.len() - 1] {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    for at in [17, bytes.len() / 2, bytes.len() - 2] {
        let mut torn = bytes.clone();
        torn[at] ^= 0x40;
        assert!(decode(&torn).is_err(), "flipped at {at}");
    }
    let mut other = bytes.clone();
    other[15] = 9;
    assert!(decode(&other).is_err_and(|e| e.contains("version 9")));
}

#[test]
fn entering_a_gone_path_removes_it_and_what_was_below() {
    let mut t = tree(&[("d", dir(1)), ("d/x", file(2, 3, 10, 10)), ("e", dir(3))]);
    enter(&mut t, "d".into(), None);
    assert_eq!(t.keys().collect::<Vec<_>>(), [Path::new("e")]);
    enter(&mut t, "e".into(), Some(file(3, 1, 1, 1)));
    assert_eq!(t.get(Path::new("e")).map(|m| m.kind), Some(Kind::File));
}

// Property: a remote that holds `old` and is sent exactly what `diff` says (renames
// moved, deletes removed, changed paths copied) ends equal to `new`; and nothing
// listed as changed was equal already.

/// A random tree: names from a small set, depth at most 3, directories' parents exist.
fn arb_tree() -> impl Strategy<Value = Tree> {
    prop::collection::vec((0u8..4, 0u8..4, 0u8..4, 0u8..3, 0u8..4), 0..24).prop_map(|spec| {
        let mut t = Tree::new();
        let mut ino = 100;
        for (a, b, c, depth, kind) in spec {
            let names = [a, b, c];
            let mut p = PathBuf::new();
            for (i, n) in names.iter().take(depth as usize + 1).enumerate() {
                p.push(format!("n{n}"));
                let last = i == depth as usize;
                match t.get(&p) {
                    Some(m) if m.kind != Kind::Dir => break,
                    Some(_) => continue,
                    None => {}
                }
                ino += 1;
                let m = if !last || kind == 0 {
                    dir(ino)
                } else {
                    file(ino, u64::from(kind), i64::from(kind), 1)
                };
                t.insert(p.clone(), m);
            }
        }
        t
    })
}

/// Changes to a tree: edits (size, mtime restored, ctime), deletes, new files,
/// renames of an entry to a new top-level name.
fn mutate(old: &Tree, ops: &[(u8, u8)]) -> Tree {
    let mut t = old.clone();
    let mut ino = 10_000;
    for (i, (op, pick)) in ops.iter().enumerate() {
        let keys: Vec<PathBuf> = t.keys().cloned().collect();
        let target = keys.get(*pick as usize % keys.len().max(1)).cloned();
        match (op % 5, target) {
            (0, Some(p)) if t[&p].kind == Kind::File => {
                if let Some(m) = t.get_mut(&p) {
                    m.size += 1;
                    m.ctime += 1;
                }
            }
            (1, Some(p)) => {
                // touch -r after a write of the same size: ctime only.
                if let Some(m) = t.get_mut(&p) {
                    m.ctime += 1;
                }
            }
            (2, Some(p)) => enter(&mut t, p, None),
            (3, _) => {
                ino += 1;
                t.insert(PathBuf::from(format!("new{i}")), file(ino, 1, 1, 1));
            }
            (4, Some(p)) => {
                let to = PathBuf::from(format!("moved{i}"));
                let moved: Vec<(PathBuf, Meta)> = std::iter::once(p.clone())
                    .chain(below(&t, &p).map(|(q, _)| q.clone()))
                    .filter_map(|q| {
                        let m = t.get(&q)?.clone();
                        let rel = q.strip_prefix(&p).ok()?.to_path_buf();
                        Some((rel, m))
                    })
                    .collect();
                enter(&mut t, p, None);
                for (rel, mut m) in moved {
                    let dest = if rel.as_os_str().is_empty() {
                        m.ctime += 1;
                        to.clone()
                    } else {
                        to.join(rel)
                    };
                    t.insert(dest, m);
                }
            }
            _ => {}
        }
    }
    t
}

proptest! {
    #[test]
    fn what_the_diff_sends_makes_the_remote_equal_to_the_tree(
        old in arb_tree(),
        ops in prop::collection::vec((0u8..5, any::<u8>()), 0..8),
    ) {
        let new = mutate(&old, &ops);
        let d = diff(&old, &new);
        let mut remote = old.clone();
        for m in &d.renamed {
            let moved: Vec<(PathBuf, Meta)> = std::iter::once(m.from.clone())
                .chain(below(&remote, &m.from).map(|(q, _)| q.clone()))
                .filter_map(|q| {
                    let rel = q.strip_prefix(&m.from).ok()?.to_path_buf();
                    let dest = if rel.as_os_str().is_empty() { m.to.clone() } else { m.to.join(rel) };
                    Some((dest.clone(), new.get(&dest)?.clone()))
                })
                .collect();
            enter(&mut remote, m.from.clone(), None);
            for (p, meta) in moved {
                remote.insert(p, meta);
            }
        }
        for (p, _) in &d.deleted {
            enter(&mut remote, p.clone(), None);
        }
        for p in &d.changed {
            prop_assert!(old.get(p) != new.get(p), "{} listed but unchanged", p.display());
            if let Some(m) = new.get(p) {
                enter(&mut remote, p.clone(), Some(m.clone()));
            }
        }
        prop_assert_eq!(remote, new);
    }
}

// The recorder over a real file: what enters, when, and what the next start reads.

fn target(root: &Path, ip: &str) -> Target {
    Target::daemon_for_test(root, ip, "mod", "-artuz")
}

/// A temp dir with a tree `src/` holding `x`, two targets for it, and an index file
/// saying the (empty) tree is level with both, written at a stop.
fn world() -> (tempfile::TempDir, Vec<Target>, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("src");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::write(root.join("x"), "one").expect("write x");
    let targets = vec![target(&root, "10.0.0.1"), target(&root, "10.0.0.2")];
    let path = dir.path().join("fail.sh.index");
    let s = Section {
        root: root.clone(),
        remotes: targets.iter().map(Target::label).collect(),
        tree: Tree::new(),
    };
    std::fs::write(&path, encode(&[s.view()], false)).expect("write the index");
    (dir, targets, path)
}

fn read_back(path: &Path) -> (Tree, bool) {
    let bytes = std::fs::read(path).expect("read the index");
    let (mut sections, running) = decode(&bytes).expect("a good index");
    (sections.remove(0).tree, running)
}

#[test]
fn a_path_enters_once_every_remote_had_a_push_of_the_same_state_land() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(found[0].1, Found::Level(..)));
    let job = Job::Paths(vec!["x".into()]);
    let b0 = rec.before(RemoteId(0), &root, &job).expect("recorded");
    rec.landed(RemoteId(0), b0);
    rec.begin().expect("write");
    let (tree, running) = read_back(&path);
    assert!(running);
    // On one remote only: unknown, so the next start pushes it.
    assert_eq!(
        tree.get(Path::new("x")).map(|m| m.kind),
        Some(Kind::Unknown)
    );
    // The second remote's push saw another state (written in between): still not level.
    std::fs::write(root.join("x"), "two, longer").expect("rewrite x");
    let b1 = rec.before(RemoteId(1), &root, &job).expect("recorded");
    rec.landed(RemoteId(1), b1.clone());
    rec.checkpoint().expect("write");
    assert_eq!(
        read_back(&path).0.get(Path::new("x")).map(|m| m.kind),
        Some(Kind::Unknown)
    );
    // The first remote gets that state too: entered, as lstat saw it before the pushes.
    rec.landed(RemoteId(0), b1);
    rec.finish().expect("write");
    let (tree, running) = read_back(&path);
    assert!(!running);
    assert_eq!(
        tree.get(Path::new("x")),
        stat(&root, Path::new("x")).as_ref()
    );
    // A delete that landed everywhere removes it.
    std::fs::remove_file(root.join("x")).expect("rm x");
    for t in [RemoteId(0), RemoteId(1)] {
        let b = rec.before(t, &root, &job).expect("recorded");
        rec.landed(t, b);
    }
    rec.finish().expect("write");
    assert!(read_back(&path).0.is_empty());
}

// A deploy replaces `burst` again and again. Remote 0 had the old `burst` deleted, then
// got `burst/s/old.txt` of the next release; remote 1 got that file, then had `burst`
// deleted (the release after). Each remote has had `burst` deleted, but remote 0 holds
// the file: the index must not forget it, or when it is deleted while no agent runs
// (the release after), the next start leaves it on remote 0 for good.
#[test]
fn a_delete_that_landed_everywhere_keeps_what_one_remote_got_below_it_after_its_delete() {
    let (_dir, targets, path) = world();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    let (a, b) = (RemoteId(0), RemoteId(1));
    let old = file(20, 5, 10, 10);
    let gone = |p: &str| vec![(PathBuf::from(p), None)];
    let has = |p: &str, m: &Meta| vec![(PathBuf::from(p), Some(m.clone()))];
    rec.landed(a, gone("burst"));
    rec.landed(a, has("burst/s/old.txt", &old));
    rec.landed(b, has("burst/s/old.txt", &old));
    rec.landed(b, gone("burst"));
    rec.finish().expect("write");
    let (index, _) = read_back(&path);
    // While stopped, the next release replaced it: `burst/s` without `old.txt`.
    let now = tree(&[
        ("burst", dir(30)),
        ("burst/s", dir(31)),
        ("burst/s/new.txt", file(32, 5, 10, 10)),
    ]);
    let d = diff(&index, &now);
    assert!(
        d.deleted
            .iter()
            .any(|(p, _)| Path::new("burst/s/old.txt").starts_with(p)),
        "the catch-up deletes burst/s/old.txt (index {index:?}, diff {d:?})"
    );
    // The other order: remote 1 had the file land before `burst` went, remote 0 after
    // (its push of the file had landed before its delete too): the file is then on
    // neither, and a file entered as on both would be skipped if made again the same.
    let (_dir, targets, path) = world();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    rec.landed(a, has("burst/s/old.txt", &old));
    rec.landed(a, gone("burst"));
    rec.landed(b, gone("burst"));
    rec.landed(b, has("burst/s/old.txt", &old));
    rec.finish().expect("write");
    let (index, _) = read_back(&path);
    assert_ne!(
        index.get(Path::new("burst/s/old.txt")),
        Some(&old),
        "remote 0 lacks it: not entered as on every remote"
    );
}

/// A listing of `d` pushed to both remotes, found gone when each push began, with `d`
/// made again (holding `d/new.txt`) before the pushes read the tree and landed; then
/// the stop.
fn listing_of_d_made_again(rec: &Recorder, root: &Path) {
    let listing = Job::Paths(vec![Entry::listing("d")]);
    let gone: Vec<_> = [RemoteId(0), RemoteId(1)]
        .iter()
        .map(|t| rec.before(*t, root, &listing).expect("recorded"))
        .collect();
    assert_eq!(gone[0], vec![(PathBuf::from("d"), None)]);
    // Made again before the pushes read the tree.
    std::fs::create_dir(root.join("d")).expect("mkdir d");
    std::fs::write(root.join("d/new.txt"), "new").expect("write");
    for (t, b) in [RemoteId(0), RemoteId(1)].into_iter().zip(gone) {
        rec.landed(t, b);
    }
    rec.finish().expect("write");
}

// A directory deleted and made again (a deploy's `rm -rf d && cp -a build/d d`): the
// push that found it gone may find it there when rsync reads the tree, and then sends
// the directory alone; what the remotes hold below it from before stays there. The
// index must not take that push for the delete, or a file of the old `d` that is not in
// the new one stays on the remotes for good after a stop.
#[test]
fn a_delete_whose_path_is_there_again_after_the_push_leaves_what_was_below_unknown() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    std::fs::create_dir(root.join("d")).expect("mkdir d");
    std::fs::write(root.join("d/old.txt"), "old").expect("write");
    let both = Job::Paths(vec!["d".into(), "d/old.txt".into()]);
    for t in [RemoteId(0), RemoteId(1)] {
        let b = rec.before(t, &root, &both).expect("recorded");
        rec.landed(t, b);
    }
    std::fs::remove_dir_all(root.join("d")).expect("rm -rf d");
    listing_of_d_made_again(&rec, &root);
    let (index, _) = read_back(&path);
    let d = diff(&index, &walk(&root, &Excludes::default()).expect("walk"));
    assert!(
        d.deleted.iter().any(|(p, _)| p == Path::new("d/old.txt")),
        "the catch-up deletes d/old.txt (index {index:?}, diff {d:?})"
    );
}

// The same race, seen from what rsync sent: the listing found `d` gone, `d` was made
// again with `d/new.txt` before rsync read the tree, and rsync sent that file. A later
// release deleting it while no agent runs (a deploy going on after a SIGTERM) must
// reach the remotes: the index holds `d/new.txt` as unknown and the next start deletes
// it (found by the test command's warm deploy test under load: a remote kept a release's
// files for good).
#[test]
fn what_a_listing_sent_of_a_directory_made_again_during_its_push_is_deleted_at_the_next_start() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    listing_of_d_made_again(&rec, &root);
    let (index, _) = read_back(&path);
    assert_eq!(
        index.get(Path::new("d/new.txt")).map(|m| m.kind),
        Some(Kind::Unknown),
        "{index:?}"
    );
    std::fs::remove_file(root.join("d/new.txt")).expect("rm");
    let d = diff(&index, &walk(&root, &Excludes::default()).expect("walk"));
    assert!(
        d.deleted.iter().any(|(p, _)| p == Path::new("d/new.txt")),
        "the catch-up deletes d/new.txt (index {index:?}, diff {d:?})"
    );
}

// A directory's listing sends its entries: the index must know them, or one deleted
// while no agent runs stays on the remotes for good.
#[test]
fn what_a_listing_sent_is_entered_and_its_delete_found_at_the_next_start() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    std::fs::create_dir_all(root.join("d/sub")).expect("mkdir d/sub");
    std::fs::write(root.join("d/e.txt"), "e").expect("write");
    let listing = Job::Paths(vec![Entry::listing("d")]);
    for t in [RemoteId(0), RemoteId(1)] {
        let b = rec.before(t, &root, &listing).expect("recorded");
        rec.landed(t, b);
    }
    rec.finish().expect("write");
    assert_eq!(
        read_back(&path).0.get(Path::new("d/e.txt")),
        stat(&root, Path::new("d/e.txt")).as_ref()
    );
    std::fs::remove_file(root.join("d/e.txt")).expect("rm");
    let d = diff(
        &read_back(&path).0,
        &walk(&root, &Excludes::default()).expect("walk"),
    );
    assert_eq!(d.deleted, vec![(PathBuf::from("d/e.txt"), false)]);
}

// Found by an outside test run: a user who can write in the tree made a directory with a
// file in it, removed it and put a link to /etc in its place, 30 times. The delete's
// listing of the directory (and the paths queued below it) were read through the link:
// /etc's entries were entered as entries of the tree, and the next start reported
// thousands of deletes, which the brake held. Nothing below a link is looked at.
#[test]
fn a_directory_swapped_for_a_link_enters_nothing_below_it() {
    let (dir, targets, path) = world();
    let root = targets[0].root.clone();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("phantom-dir")).expect("mkdir outside");
    std::fs::write(outside.join("phantom-file"), "p").expect("write");
    std::fs::write(outside.join("s"), "p").expect("write");
    let (rec, _) = Recorder::load(path.clone(), &targets);
    std::fs::create_dir(root.join("e")).expect("mkdir e");
    std::fs::write(root.join("e/s"), "z").expect("write e/s");
    std::fs::remove_dir_all(root.join("e")).expect("rm -r e");
    std::os::unix::fs::symlink(&outside, root.join("e")).expect("ln -s");
    let job = Job::Paths(vec![
        Entry::listing("e"),
        "e/s".into(),
        "e/phantom-dir".into(),
    ]);
    push_both(&rec, &root, &job);
    rec.finish().expect("write");
    let index = read_back(&path).0;
    assert_eq!(
        index.get(Path::new("e")).map(|m| m.kind),
        Some(Kind::Link),
        "{index:?}"
    );
    let below: Vec<_> = below(&index, Path::new("e")).collect();
    assert!(below.is_empty(), "entered below the link: {below:?}");
    let d = diff(&index, &walk(&root, &Excludes::default()).expect("walk"));
    assert!(d.deleted.is_empty(), "the next start deletes {d:?}");
    assert_eq!(stat(&root, Path::new("e/s")), None);
}

// An outside test run (`mkdir e$i; echo z > e$i/s; rm -rf e$i; ln -s /etc e$i` as a
// user in a loop, under load): each `e$i` was pushed again and again, and the last of
// those pushes landed on one remote only. The path entered already (the link on every
// remote) was unknown again at the stop, and so was the delete of `e$i/s` (gone from the
// index with the link): the next start pushed 149 links again and deleted `e0/s`.
#[test]
fn a_push_landing_on_one_remote_as_what_every_remote_holds_leaves_the_index_as_it_was() {
    let (dir, targets, path) = world();
    let root = targets[0].root.clone();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    std::fs::create_dir(root.join("e")).expect("mkdir e");
    std::fs::write(root.join("e/s"), "z").expect("write e/s");
    let (rec, _) = Recorder::load(path.clone(), &targets);
    push_both(&rec, &root, &Job::Paths(vec!["e".into(), "e/s".into()]));
    std::fs::remove_dir_all(root.join("e")).expect("rm -r e");
    std::os::unix::fs::symlink(&outside, root.join("e")).expect("ln -s");
    push_both(&rec, &root, &Job::Paths(vec!["e".into()]));
    // Pushed again to remote 1 only: the link as entered, and the delete of `e/s`.
    let again = Job::Paths(vec!["e".into(), "e/s".into()]);
    let a = rec.announce(RemoteId(1), &again).expect("recorded");
    let b = rec.before(RemoteId(1), &root, &again).expect("recorded");
    rec.landed(RemoteId(1), b);
    drop(a);
    rec.finish().expect("write");
    let index = read_back(&path).0;
    assert_eq!(
        index.get(Path::new("e")),
        stat(&root, Path::new("e")).as_ref()
    );
    assert_eq!(index.get(Path::new("e/s")), None, "{index:?}");
    let d = diff(&index, &walk(&root, &Excludes::default()).expect("walk"));
    assert!(d.deleted.is_empty(), "{d:?}");
    assert!(!d.changed.contains(&PathBuf::from("e")), "{d:?}");
    // Another state landing on one remote is unknown until every remote has it.
    std::fs::remove_file(root.join("e")).expect("rm e");
    std::fs::write(root.join("e"), "file now").expect("write e");
    let a = rec.announce(RemoteId(0), &again).expect("recorded");
    let b = rec.before(RemoteId(0), &root, &again).expect("recorded");
    rec.landed(RemoteId(0), b);
    drop(a);
    rec.finish().expect("write");
    assert_eq!(
        read_back(&path).0.get(Path::new("e")).map(|m| m.kind),
        Some(Kind::Unknown)
    );
}

// A directory known only from a listing (made, then pushed as its listing alone) was not
// entered itself: the next start pushed it again, and when it was deleted while no agent
// ran only its entries were deleted on the remotes, never the directory.
#[test]
fn a_directory_known_only_from_its_listing_is_entered_and_its_delete_found() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    std::fs::create_dir_all(root.join("d/sub")).expect("mkdir d/sub");
    std::fs::write(root.join("d/e.txt"), "e").expect("write");
    push_both(&rec, &root, &Job::Paths(vec![Entry::listing("d")]));
    rec.finish().expect("write");
    let index = read_back(&path).0;
    assert_eq!(
        index.get(Path::new("d")),
        stat(&root, Path::new("d")).as_ref(),
        "the directory itself is entered"
    );
    let d = diff(&index, &walk(&root, &Excludes::default()).expect("walk"));
    assert!(
        !d.changed.contains(&PathBuf::from("d")),
        "not pushed again at the next start: {d:?}"
    );
    std::fs::remove_dir_all(root.join("d")).expect("rm -r d");
    let d = diff(&index, &walk(&root, &Excludes::default()).expect("walk"));
    assert_eq!(d.deleted, vec![(PathBuf::from("d"), true)]);
}

#[test]
fn an_index_not_marked_stopped_needs_its_journal_and_a_torn_one_or_one_for_other_remotes_is_not_used(
) {
    let (_dir, targets, path) = world();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    rec.begin().expect("write");
    drop(rec);
    // Killed before the stop's write, nothing pushed: its journal says so.
    let (_, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(&found[0].1, Found::Level(t, l, _) if t.is_empty() && l.is_empty()));
    // Without its journal it says nothing of what was pushed after it.
    let journal = journal_for(&path);
    let kept = std::fs::read(&journal).expect("the journal");
    std::fs::remove_file(&journal).expect("rm");
    let (_, found) = Recorder::load(path.clone(), &targets);
    assert!(
        matches!(&found[0].1, Found::Unclean(why) if why.contains("did not stop") && why.contains("missing"))
    );
    // A journal of another run.
    let mut other = kept.clone();
    other[16] ^= 1;
    let crc = crc32fast::hash(&other[..32]).to_le_bytes();
    other[32..36].copy_from_slice(&crc);
    std::fs::write(&journal, &other).expect("write");
    let (_, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(&found[0].1, Found::Unclean(why) if why.contains("another checkpoint")));
    std::fs::write(&journal, &kept).expect("write");
    // Torn: a full sync, saying why.
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("truncate");
    let (_, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(&found[0].1, Found::Unclean(why) if why.contains("checksum")));
    std::fs::write(&path, &bytes[..10]).expect("truncate");
    let (_, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(&found[0].1, Found::Unclean(why) if why.contains("truncated")));
    // Made for other remotes; with one of them removed it is good for the other; with
    // one added, that one needs a full sync.
    let (_dir2, targets2, path2) = world();
    let (_, found) = Recorder::load(path2.clone(), &targets2[1..]);
    assert!(matches!(&found[0].1, Found::Level(_, _, added) if added.is_empty()));
    let mut three = targets2.clone();
    three.push(target(&targets2[0].root, "10.0.0.3"));
    let (_, found) = Recorder::load(path2.clone(), &three);
    assert!(matches!(&found[0].1, Found::Level(_, _, added) if *added == [RemoteId(2)]));
    let others = [target(&targets2[0].root, "10.0.0.9")];
    let (_, found) = Recorder::load(path2, &others);
    assert!(matches!(&found[0].1, Found::Not(why) if why.contains("other remotes")));
    // Another version.
    let mut v9 = bytes.clone();
    v9[15] = 9;
    std::fs::write(&path, &v9).expect("write");
    let (_, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(&found[0].1, Found::Not(why) if why.contains("version 9")));
    // Missing.
    std::fs::remove_file(&path).expect("rm");
    let (_, found) = Recorder::load(path, &targets);
    assert!(matches!(&found[0].1, Found::Not(why) if why.contains("no index")));
}

/// One push of `job` to both remotes, as the workers do it: announced, stat'ed,
/// landed, ended.
fn push_both(rec: &Recorder, root: &Path, job: &Job) {
    for t in [RemoteId(0), RemoteId(1)] {
        let a = rec.announce(t, job).expect("recorded");
        let b = rec.before(t, root, job).expect("recorded");
        rec.landed(t, b);
        drop(a);
    }
}

fn level(found: Vec<(PathBuf, Found)>) -> (Tree, Vec<PathBuf>) {
    match found.into_iter().next().map(|f| f.1) {
        Some(Found::Level(t, l, _)) => (t, l),
        Some(Found::Not(w) | Found::Unclean(w)) => panic!("not level: {w}"),
        None => panic!("no root"),
    }
}

// The danger a kill leaves: a file made and pushed after the last checkpoint is not in
// the index; deleted while no agent ran, nothing would delete it on the remotes. The
// journal names it, so the next start finds it deleted.
#[test]
fn after_a_kill_a_path_pushed_since_the_last_checkpoint_is_unknown_and_its_delete_found() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    rec.begin().expect("write");
    push_both(&rec, &root, &Job::Paths(vec!["x".into()]));
    rec.checkpoint().expect("write");
    std::fs::write(root.join("late"), "late").expect("write");
    push_both(&rec, &root, &Job::Paths(vec!["late".into()]));
    push_both(&rec, &root, &Job::Paths(vec![Entry::listing("")]));
    drop(rec); // killed: no checkpoint since
    std::fs::remove_file(root.join("late")).expect("rm");
    let (rec, found) = Recorder::load(path.clone(), &targets);
    let (old, relist) = level(found);
    assert_eq!(
        old.get(Path::new("late")).map(|m| m.kind),
        Some(Kind::Unknown)
    );
    assert_eq!(relist, [PathBuf::from("")]);
    let d = diff(&old, &walk(&root, &Excludes::default()).expect("walk"));
    assert_eq!(d.deleted, [(PathBuf::from("late"), false)]);
    assert!(d.changed.is_empty(), "{d:?}");
    // The listing stays in the journal until a push of it begins, whatever checkpoints.
    rec.begin().expect("write");
    rec.checkpoint().expect("write");
    drop(rec);
    let (_, found) = Recorder::load(path, &targets);
    assert_eq!(level(found).1, [PathBuf::from("")]);
}

// A push begun before a checkpoint and landing after it: its path is in the next
// journal too (the checkpoint's snapshot may not have it).
#[test]
fn a_push_running_across_a_checkpoint_stays_in_the_journal() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    rec.begin().expect("write");
    std::fs::write(root.join("slow"), "slow").expect("write");
    let job = Job::Paths(vec!["slow".into()]);
    let running = rec.announce(RemoteId(0), &job).expect("recorded");
    rec.checkpoint().expect("write");
    rec.checkpoint().expect("write");
    drop(running);
    drop(rec);
    std::fs::remove_file(root.join("slow")).expect("rm");
    let (_, found) = Recorder::load(path, &targets);
    let (old, _) = level(found);
    assert_eq!(
        old.get(Path::new("slow")).map(|m| m.kind),
        Some(Kind::Unknown)
    );
}

// A full sync may change anything in the root: killed while one ran (or before the
// checkpoint after it), the next start does a full sync. A stop while a push still
// runs keeps the index marked running, with its journal.
#[test]
fn a_full_sync_in_the_journal_means_a_full_sync_and_a_stop_with_a_push_running_keeps_it() {
    let (_dir, targets, path) = world();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    rec.begin().expect("write");
    let full = rec.announce(RemoteId(1), &Job::Full).expect("recorded");
    rec.finish().expect("write");
    drop(full);
    drop(rec);
    let (_, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(&found[0].1, Found::Unclean(why) if why.contains("full sync ran after")));
    let (rec, _) = Recorder::load(path.clone(), &targets);
    rec.begin().expect("write");
    rec.finish().expect("write");
    assert!(!journal_for(&path).exists());
    let bytes = std::fs::read(&path).expect("read the index");
    assert!(!decode(&bytes).expect("good").1, "marked stopped");
}

/// Resident memory of this process in KiB (Linux), for the measurement below.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

// Not a check: figures for a tree of 1,000,000 files in 10,000 directories (file size,
// memory, encode, decode and diff time). `cargo test --lib index::tests::measure --
// --ignored --nocapture`.
#[test]
#[ignore]
fn measure_a_million_entries() {
    let before = rss_kib();
    let mut t = Tree::new();
    let mut ino = 0;
    for d in 0..10_000u64 {
        ino += 1;
        t.insert(PathBuf::from(format!("dir{d:05}")), dir(ino));
        for f in 0..100u64 {
            ino += 1;
            t.insert(
                PathBuf::from(format!("dir{d:05}/file{f:03}.txt")),
                file(
                    ino,
                    1000 + f,
                    1_700_000_000_000_000_000,
                    1_700_000_000_000_000_000,
                ),
            );
        }
    }
    let built = rss_kib();
    let s = Section {
        root: "/www".into(),
        remotes: vec!["a::m".into(), "b::m".into()],
        tree: t,
    };
    let at = std::time::Instant::now();
    let bytes = encode(&[s.view()], true);
    let encoded = at.elapsed();
    let at = std::time::Instant::now();
    let (mut back, _) = decode(&bytes).expect("decode");
    let decoded = at.elapsed();
    let mut new = back.remove(0).tree;
    for i in 0..1000u64 {
        let d = i * 7 % 10_000;
        new.insert(
            PathBuf::from(format!("dir{d:05}/new{i}.txt")),
            file(5_000_000 + i, 1, 1, 1),
        );
        if let Some(m) = new.get_mut(Path::new(&format!(
            "dir{:05}/file001.txt",
            (i * 3) % 10_000
        ))) {
            m.ctime += 1;
        }
        new.remove(Path::new(&format!(
            "dir{:05}/file002.txt",
            (i * 11) % 10_000
        )));
    }
    let at = std::time::Instant::now();
    let d = diff(&s.tree, &new);
    let diffed = at.elapsed();
    println!(
        "entries {}: file {} bytes ({:.1} per entry); tree in memory ~{} bytes per entry; \
         encode {encoded:?}, decode {decoded:?}, diff {diffed:?} ({} changed, {} deleted)",
        s.tree.len(),
        bytes.len(),
        bytes.len() as f64 / s.tree.len() as f64,
        (built.saturating_sub(before)) * 1024 / s.tree.len() as u64,
        d.changed.len(),
        d.deleted.len()
    );
}

// A file rewritten with its size and mtime as the index has them (a blind file: a full
// sync's quick check skips it), then a start that rebuilds the index (`-r`, or one that
// did not trust it) killed or stopped before its full syncs all landed: the next start
// does not trust the index (a full sync), but the entry it had before the rebuild is
// still written, so the blind file is still told from what the remotes were sent (seed
// 14353 of the simulator's `warm`: the entry was gone, and the file never reached them).
#[test]
fn a_rebuild_that_did_not_land_keeps_the_entry_it_replaces_for_the_blind_files() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    rec.begin().expect("write");
    push_both(&rec, &root, &Job::Paths(vec!["x".into()]));
    rec.finish().expect("write");
    drop(rec);
    // While stopped: `x` rewritten at its size, its mtime put back, a new inode.
    let mtime = std::fs::metadata(root.join("x"))
        .and_then(|m| m.modified())
        .expect("mtime");
    let tmp = root.join("x.new");
    std::fs::write(&tmp, "two").expect("write");
    let times = std::fs::FileTimes::new().set_modified(mtime);
    (std::fs::File::options().write(true).open(&tmp))
        .and_then(|f| f.set_times(times))
        .expect("touch -r");
    std::fs::rename(&tmp, root.join("x")).expect("mv");
    let now = walk(&root, &Excludes::default()).expect("walk");
    for stop in ["killed", "stopped"] {
        let (rec, found) = Recorder::load(path.clone(), &targets);
        let (old, _) = match found.into_iter().next().map(|f| f.1) {
            Some(Found::Level(t, l, _)) => (t, l),
            Some(Found::Unclean(_)) => (rec.untrusted(&root).expect("kept"), Vec::new()),
            _ => panic!("no entry ({stop})"),
        };
        assert!(diff(&old, &now).blind.contains(Path::new("x")), "{stop}");
        // The rebuild: its full syncs never land.
        rec.rebuild(&root, now.clone());
        rec.begin().expect("write");
        if stop == "stopped" {
            rec.finish().expect("write");
        }
        drop(rec);
        let (rec, found) = Recorder::load(path.clone(), &targets);
        assert!(
            matches!(&found[0].1, Found::Unclean(why) if why.contains("full sync")),
            "not trusted after a rebuild {stop} before it landed"
        );
        let old = rec.untrusted(&root).expect("the entry before the rebuild");
        assert!(diff(&old, &now).blind.contains(Path::new("x")), "{stop}");
    }
    // Once a rebuild landed, the walk is the entry, trusted.
    let (rec, _) = Recorder::load(path.clone(), &targets);
    rec.rebuild(&root, now.clone());
    rec.begin().expect("write");
    full_both(&rec);
    rec.checkpoint().expect("write");
    drop(rec);
    let (_, found) = Recorder::load(path, &targets);
    let (old, _) = level(found);
    assert!(diff(&old, &now).is_empty());
}

/// A full sync to each remote as the workers run it: announced (under a rebuild, the
/// tree walked as it sends it), then landed.
fn full_both(rec: &Recorder) {
    for t in [RemoteId(0), RemoteId(1)] {
        let a = rec.announce(t, &Job::Full);
        let _ = rec.full_landed(t);
        drop(a);
    }
}

// Under -r the tree is walked at the start, but each full sync sends the tree as it is
// when it begins: a path made after the walk was sent by the full syncs (or by one of
// them only, when it went again between them) and was missing from the rebuilt index,
// so its delete while no agent ran, or before a kill read its events, never reached the
// remotes (seeds 2636, 3182 and 2903 of the simulator's `warm`).
#[test]
fn a_rebuilt_index_holds_what_each_full_sync_sent_when_it_began() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let (rec, _) = Recorder::load(path.clone(), &targets);
    let at_start = walk(&root, &Excludes::default()).expect("walk");
    rec.rebuild(&root, at_start);
    rec.begin().expect("write");
    // Made after the walk: `both` before the full syncs began, `one` between them.
    std::fs::write(root.join("both"), "both").expect("write");
    std::fs::create_dir(root.join("one")).expect("mkdir");
    let a = rec.announce(RemoteId(0), &Job::Full);
    let _ = rec.full_landed(RemoteId(0));
    drop(a);
    std::fs::remove_dir(root.join("one")).expect("rmdir");
    let a = rec.announce(RemoteId(1), &Job::Full);
    // What the index cannot tell of (not in the walk at the start, or sent by one only)
    // is pushed again.
    assert_eq!(
        rec.full_landed(RemoteId(1)),
        [PathBuf::from("both"), PathBuf::from("one")]
    );
    drop(a);
    rec.checkpoint().expect("write");
    drop(rec); // killed
    std::fs::remove_file(root.join("both")).expect("rm");
    let (_, found) = Recorder::load(path, &targets);
    let (old, _) = level(found);
    let d = diff(&old, &walk(&root, &Excludes::default()).expect("walk"));
    let mut deleted: Vec<&Path> = d.deleted.iter().map(|(p, _)| p.as_path()).collect();
    deleted.sort();
    assert_eq!(deleted, [Path::new("both"), Path::new("one")], "{d:?}");
    assert!(d.changed.is_empty(), "{d:?}");
    // What both sent alike is entered as it is.
    assert_eq!(
        old.get(Path::new("x")),
        stat(&root, Path::new("x")).as_ref()
    );
}

// The walk counts its changes per directory against the index's entries of that
// directory: the count is what a lookup of each entry in the index gives (new names,
// changed files, a renamed directory's entries, nested directories, names sorting
// between a directory and its own entries).
#[test]
fn a_walk_counts_the_entries_the_index_does_not_have_as_they_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let write = |p: &str, s: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, s).expect("write");
    };
    for p in ["a/x", "a/b/y", "a/b.c", "a-b", "a0/z", "c/d/e/f", "top"] {
        write(p, "old");
    }
    let ex = crate::filter::Excludes::new(Vec::new());
    let old = walk(root, &ex).expect("walk");
    write("a/x", "changed");
    write("a/new", "new");
    write("a/b/y2", "new");
    std::fs::remove_file(root.join("a-b")).expect("rm");
    std::fs::rename(root.join("c/d"), root.join("c/D")).expect("mv");
    write("zz", "new");
    let task = crate::sync::progress::Task::start("count test".into(), true, None);
    let new = walk_counted(root, &ex, Some((task.counts(), Some(&old)))).expect("walk");
    let expected = (new.iter())
        .filter(|(p, m)| old.get(*p) != Some(*m))
        .count() as u64;
    let report = task.counts().report();
    assert_eq!(report.entries, Some(new.len() as u64));
    assert_eq!(report.changes, Some(expected));
    // a, a/b (new entries), a/x, a/new, a/b/y2, c (renamed below), c/D, c/D/e,
    // c/D/e/f, zz, and the root's own mtime is not an entry.
    assert!(expected >= 9, "{expected}");
}

// Outside run: a first `-r` start killed before its rebuild landed, a file pushed and
// then rewritten within the same second at its size, the agent killed before the new
// version went; the next start's full sync compared whole seconds and skipped it (the
// remote kept the old bytes, `--verify` said level). A full sync of a root whose index
// was not trusted at start compares nanoseconds until a rebuild lands; a level index
// (its blind files found from the entries) and a first start (no copy of ours to
// doubt) keep rsync's whole seconds.
#[test]
fn full_syncs_compare_nanoseconds_while_the_index_found_at_start_is_not_trusted() {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    let exact = |rec: &Recorder| [RemoteId(0), RemoteId(1)].map(|t| rec.exact_full(t));
    // Level.
    let (rec, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(found[0].1, Found::Level(..)));
    assert_eq!(exact(&rec), [false, false], "level");
    rec.begin().expect("write");
    push_both(&rec, &root, &Job::Paths(vec!["x".into()]));
    // Killed: no finish, and its journal lost (a torn disk, removed by hand).
    drop(rec);
    std::fs::remove_file(journal_for(&path)).expect("rm journal");
    let (rec, found) = Recorder::load(path.clone(), &targets);
    assert!(
        matches!(&found[0].1, Found::Unclean(why) if why.contains("journal")),
        "not trusted"
    );
    assert_eq!(exact(&rec), [true, true], "not trusted");
    // Until the rebuild's full syncs have all landed.
    rec.rebuild(&root, walk(&root, &Excludes::default()).expect("walk"));
    rec.begin().expect("write");
    let a = rec.announce(RemoteId(0), &Job::Full);
    let _ = rec.full_landed(RemoteId(0));
    drop(a);
    assert_eq!(exact(&rec), [true, true], "one of two landed");
    let a = rec.announce(RemoteId(1), &Job::Full);
    let _ = rec.full_landed(RemoteId(1));
    drop(a);
    assert_eq!(exact(&rec), [false, false], "rebuilt");
    rec.finish().expect("write");
    drop(rec);
    // No index at all: a first start.
    std::fs::remove_file(&path).expect("rm index");
    let (rec, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(found[0].1, Found::Not(_)));
    assert_eq!(exact(&rec), [false, false], "no index");
}

// Outside run: a first `-r` start; its rebuild landed; a release pushed; the agent
// killed before a checkpoint wrote the root's entry; while stopped, a rollback to a
// release of the same sizes and mtimes (`cp -a`). The next start did not trust the
// index (no entry for the root), and its full sync's quick check skipped every file:
// the remotes kept the release pushed last while `--wait-synced`, `--verify` and
// `--once` said level. The journal names what the killed run pushed after its last
// checkpoint: those files go beside the full sync.
#[test]
fn after_a_kill_before_the_root_was_written_the_journal_names_the_files_to_push_beside_the_full_sync(
) {
    let (_dir, targets, path) = world();
    let root = targets[0].root.clone();
    std::fs::remove_file(&path).expect("no index yet");
    std::fs::create_dir_all(root.join("d/e")).expect("mkdir");
    for f in ["d/a", "d/e/b", "c"] {
        std::fs::write(root.join(f), "r1").expect("write");
    }
    let (rec, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(found[0].1, Found::Not(_)));
    rec.rebuild(&root, walk(&root, &Excludes::default()).expect("walk"));
    rec.begin().expect("write");
    // Pushed after the last checkpoint: the tree `d`, the listing of the root.
    push_both(&rec, &root, &Job::Paths(vec!["d".into()]));
    let listing = Job::Paths(vec![Entry::listing(PathBuf::new())]);
    let _a = rec.announce(RemoteId(0), &listing);
    drop(_a);
    drop(rec);
    let now = walk(&root, &Excludes::default()).expect("walk");
    let (rec, found) = Recorder::load(path.clone(), &targets);
    assert!(matches!(&found[0].1, Found::Unclean(_)), "not trusted");
    let blind = rec.journal_blind(&root, &now);
    let want: std::collections::BTreeSet<PathBuf> = ["c", "d/a", "d/e/b", "x"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(blind, want, "below d, and the root's direct files");
}
