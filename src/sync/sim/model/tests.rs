use super::*;

#[test]
fn arguments_split_at_the_last_dot_component() {
    let a = parse_arg(b"./to/./x/y");
    assert_eq!(
        (a.top.as_slice(), a.rel.as_slice(), a.contents),
        (&b"to"[..], &b"x/y"[..], false)
    );
    let b = parse_arg(b"./d/");
    assert_eq!(
        (b.top.as_slice(), b.rel.as_slice(), b.contents),
        (&b""[..], &b"d"[..], true)
    );
    let d = parse_arg(b"././f");
    assert_eq!((d.top.as_slice(), d.rel.as_slice()), (&b""[..], &b"f"[..]));
    let c = parse_arg(b"./");
    assert!(c.rel.is_empty() && c.contents);
}

// Real rsync 3.5.0 (by hand, `-a -R --no-recursive --delete-missing-args --force
// --dirs`): with `d -> .` on the receiver, the deletion request `./d/e` deletes the
// receiver's `e` through the link when the source has no `d`, and not when the
// source's `d` is a directory: the list's `d` replaced the link before the request
// came. The simulator's seed 7078005 (a barrier said synced with `e` gone from
// the model's remote) was the model deleting through the link in the second case.
#[test]
fn a_deletion_request_below_a_directory_sent_is_not_resolved_through_the_old_link() {
    let file = |d: &[u8]| Node::File {
        data: d.to_vec(),
        mtime: (1, 0),
        link: 0,
    };
    let argv = |args: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = [
            "-a",
            "-R",
            "--no-recursive",
            "--ignore-times",
            "--delete-missing-args",
            "--force",
            "--dirs",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        v.extend(args.iter().map(OsString::from));
        v.push("h::m".into());
        v
    };
    let remote_with_link = || -> Tree {
        let mut t = Tree::new();
        t.insert(b"d".to_vec(), Node::Link(b".".to_vec()));
        t.insert(b"e".to_vec(), file(b"E"));
        t
    };
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("c"), "C").expect("write");
    // No `d` at the source: deleted through the link.
    let mut remote = remote_with_link();
    rsync(src.path(), &mut remote, &argv(&["./d/e", "./c"]), b"");
    assert!(!remote.contains_key(&b"e"[..]), "{remote:?}");
    // The same with a request for `d` itself, in any order: `d` goes first, the
    // link with it, and `e` stays.
    let mut remote = remote_with_link();
    rsync(
        src.path(),
        &mut remote,
        &argv(&["./d/e", "./d", "./c"]),
        b"",
    );
    assert_eq!(remote.get(&b"e"[..]), Some(&file(b"E")), "{remote:?}");
    assert!(!remote.contains_key(&b"d"[..]), "{remote:?}");
    // `d` a directory at the source: the link is replaced first, `e` stays.
    std::fs::create_dir(src.path().join("d")).expect("mkdir");
    let mut remote = remote_with_link();
    rsync(src.path(), &mut remote, &argv(&["./d/e", "./c"]), b"");
    assert_eq!(remote.get(&b"e"[..]), Some(&file(b"E")), "{remote:?}");
    assert_eq!(remote.get(&b"d"[..]), Some(&Node::Dir));
}

#[test]
fn destinations_name_the_remote_and_the_directory_below_it() {
    assert_eq!(split_dest(b"h::m"), (b"h::m".to_vec(), Vec::new()));
    assert_eq!(
        split_dest(b"h::m/a/b/"),
        (b"h::m".to_vec(), b"a/b".to_vec())
    );
    assert_eq!(split_dest(b"h:dir/x/"), (b"h:dir".to_vec(), b"x".to_vec()));
}
