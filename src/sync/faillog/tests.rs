//! The fail log: its exact format (golden file), quoting, parsing back, dedup, clearing.

use super::*;
use crate::sync::job::RemoteId;
use std::os::unix::fs::PermissionsExt;

fn target(root: &str, ip: &str) -> Target {
    let mut t = Target::daemon_for_test(Path::new(root), ip, "mod", "-artuz");
    t.opts.auth = Some(("user".into(), PathBuf::from("/etc/rsync.pas")));
    t
}

fn hostile() -> Vec<PathBuf> {
    [
        &b"a b.txt"[..],
        b"it's \"quoted\"",
        b"$(touch pwned)`id`",
        b"line\nbreak",
        b"-rf",
        b"bad\xffutf8",
    ]
    .iter()
    .map(|b| PathBuf::from(OsStr::from_bytes(b)))
    .collect()
}

#[test]
fn golden_fail_log_format() {
    let targets = vec![target("/www", "10.0.0.2"), target("/www", "10.0.0.3")];
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 2);
    log.add(RemoteId(0), &Job::Paths(job::plain_entries(hostile())), 5);
    log.add(RemoteId(1), &Job::Full, 10);
    let text = log.render(&log.owed, &targets);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fail_log.sh");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).expect("write golden");
    }
    let want = std::fs::read(&golden).expect("golden file tests/golden/fail_log.sh");
    assert_eq!(
        String::from_utf8_lossy(&text),
        String::from_utf8_lossy(&want),
        "fail log format changed; if intended, rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn quoting_round_trips_any_bytes() {
    for p in hostile() {
        let q = quote(p.as_os_str());
        let words = split(&q).expect("parses");
        assert_eq!(words, [p.as_os_str().to_owned()]);
    }
}

#[test]
fn rendered_log_parses_back_to_the_same_owed_paths() {
    let targets = vec![target("/www", "10.0.0.2")];
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    log.add(RemoteId(0), &Job::Paths(job::plain_entries(hostile())), 5);
    let text = log.render(&log.owed, &targets);
    let mut back = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for cmd in parse_script(&text) {
        back.absorb(cmd, &targets);
    }
    assert_eq!(back.owed, log.owed);
    assert!(back.foreign.is_empty());
}

#[test]
fn the_originals_entries_are_understood() {
    let text = b"#errno 2560\ncd /www && rsync -artuz -R \"./a/b c.txt\" user@10.0.0.2::mod --password-file=/etc/rsync.pas >/dev/null 2>&1\n\n";
    let cmds = parse_script(text);
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].status, 2560);
    assert_eq!(cmds[0].cwd, Path::new("/www"));
    assert!(cmds[0].argv.iter().any(|a| a == "./a/b c.txt"));
}

// Adapted from `commands_for_unknown_remotes_are_kept_verbatim`: keeping a foreign
// command verbatim is what let a planted `-e` run; the entry is kept, its options are not.
#[test]
fn commands_for_unknown_remotes_are_kept_without_their_options() {
    let targets = vec![target("/www", "10.0.0.2")];
    let text = b"#errno 5\ncd '/other' && rsync '-a' './x' 'h::m'\n\n";
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for cmd in parse_script(text) {
        log.absorb(cmd, &targets);
    }
    assert_eq!(log.foreign.len(), 1);
    assert_eq!(log.unknown_len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&log.render(&log.owed, &targets)),
        "#errno 5\ncd '/other' && rsync '-R' './x' 'h::m'\n\n"
    );
}

// A planted `cd / && rsync -e 'sh -c "touch pwned"' ...` (default path /tmp) was run as
// root at start-up and on every replay.
#[test]
fn planted_remote_shell_option_is_dropped_and_never_rendered() {
    let targets = vec![target("/www", "10.0.0.2")];
    let text = b"#errno 5\ncd '/' && rsync '-e' 'sh -c \"touch /tmp/pwned\"' './y' 'x:/y' '/z'\n\n\
#errno 5\ncd '/www' && rsync '--remove-source-files' '--rsync-path=touch /tmp/pwned2' '-e' 'sh -c x' '-R' './a' 'user@10.0.0.2::mod'\n\n";
    let entries = parse_script(text);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].cwd, Path::new("/"));
    assert_eq!(entries[0].dest, "x:/y");
    assert_eq!(entries[0].argv, [OsString::from("./y")]);
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for e in entries {
        log.absorb(e, &targets);
    }
    assert_eq!(
        log.owed[0].paths,
        BTreeMap::from([(PathBuf::from("a"), false)])
    );
    assert_eq!(log.unknown_len(), 1);
    let out = String::from_utf8_lossy(&log.render(&log.owed, &targets)).into_owned();
    for bad in [
        "touch",
        "sh -c",
        "'-e'",
        "--rsync-path",
        "--remove-source-files",
    ] {
        assert!(!out.contains(bad), "{bad} survived:\n{out}");
    }
    assert!(out.contains("cd '/' && rsync '-R' './y' 'x:/y'"), "{out}");
    assert_eq!(log.drop_unknown(), 1);
    assert_eq!(log.len(), 1);
}

// A planted `./../../etc/shadow` or `.//etc/shadow` would have pushed a file from outside
// the watch root to the remote.
#[test]
fn planted_path_outside_the_root_is_ignored() {
    let text = b"cd '/www' && rsync './../etc/shadow' './a/../../b' './/etc/x' './ok' 'h::m'\n";
    let entries = parse_script(text);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].argv, [OsString::from("./ok")]);
    let text = b"cd 'rel' && rsync './a' 'h::m'\ncd '/www' && rsync './a' '/local'\ncd '/www' && rsync '-a' 'h::m'\n";
    assert!(
        parse_script(text).is_empty(),
        "relative dir, no remote, no path"
    );
}

#[test]
fn a_full_sync_entry_keeps_only_its_dot_slash() {
    let text = b"cd '/www' && rsync '-artuz' '--delete' '--exclude=*.tmp' './' 'h::m'\n";
    let entries = parse_script(text);
    assert_eq!(entries[0].argv, [OsString::from("./")]);
    assert_eq!(entries[0].job(), Job::Full);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Options an attacker may plant; each is one word, or an option and its value.
    fn option() -> impl Strategy<Value = Vec<&'static [u8]>> {
        prop_oneof![
            Just(vec![&b"-e"[..], b"sh -c 'touch /tmp/pwned'"]),
            Just(vec![&b"--rsync-path=touch /tmp/pwned"[..]]),
            Just(vec![&b"--rsync-path"[..], b"sh -c id"]),
            Just(vec![&b"--daemon"[..]]),
            Just(vec![&b"--config=/tmp/evil.conf"[..]]),
            Just(vec![&b"--config"[..], b"/tmp/evil.conf"]),
            Just(vec![&b"-artuz"[..]]),
            Just(vec![&b"--remove-source-files"[..]]),
            Just(vec![&b"--password-file=/etc/rsync.pas"[..]]),
            Just(vec![&b"-R"[..]]),
        ]
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 1..20).prop_filter("a plain relative name", |b| {
            relative(b).is_some_and(|p| p.as_os_str().as_bytes() == &b[..])
        })
    }

    proptest! {
        /// Whatever options a line carries and wherever they sit, the parsed entry is the
        /// root, the destination and the paths; no option survives load and render.
        #[test]
        fn only_root_dest_and_paths_survive_a_round_trip(
            before in proptest::collection::vec(option(), 0..4),
            after in proptest::collection::vec(option(), 0..3),
            names in proptest::collection::vec(name(), 1..5),
            known in any::<bool>(),
        ) {
            let targets = vec![target("/www", "10.0.0.2")];
            let dest: &[u8] = if known { b"user@10.0.0.2::mod" } else { b"evil@10.9.9.9::mod" };
            let mut words: Vec<Vec<u8>> = Vec::new();
            words.extend(before.iter().flatten().map(|w| w.to_vec()));
            for n in &names {
                words.push([&b"./"[..], n].concat());
            }
            words.push(dest.to_vec());
            words.extend(after.iter().flatten().map(|w| w.to_vec()));
            let mut line = b"#errno 5\ncd '/www' && rsync".to_vec();
            for w in &words {
                line.push(b' ');
                line.extend_from_slice(&quote(OsStr::from_bytes(w)));
            }
            line.extend_from_slice(b"\n\n");
            let entries = parse_script(&line);
            prop_assert_eq!(entries.len(), 1);
            let e = &entries[0];
            prop_assert_eq!(&e.cwd, Path::new("/www"));
            prop_assert_eq!(e.dest.as_bytes(), dest);
            let want: Vec<OsString> = names
                .iter()
                .map(|n| OsStr::from_bytes(&[&b"./"[..], n].concat()).to_owned())
                .collect();
            prop_assert_eq!(&e.argv, &want);

            let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
            for e in entries {
                log.absorb(e, &targets);
            }
            let text = log.render(&log.owed, &targets);
            let words: Vec<OsString> = parse_words(&text);
            for w in &words {
                let b = w.as_bytes();
                prop_assert!(
                    !(b == b"-e" || b.starts_with(b"--rsync-path") || b == b"--daemon"
                        || b.starts_with(b"--config") || b == b"--remove-source-files"),
                    "{:?} survived in {}", w, String::from_utf8_lossy(&text)
                );
            }
            // And the rendered file loads back to the same owed paths.
            let mut back = FailLog::new(PathBuf::from("/tmp/x"), 1);
            for e in parse_script(&text) {
                back.absorb(e, &targets);
            }
            prop_assert_eq!(&back.owed, &log.owed);
            prop_assert_eq!(&back.foreign, &log.foreign);
        }
    }

    /// Every shell word of every command in a rendered script.
    fn parse_words(text: &[u8]) -> Vec<OsString> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let end = command_end(rest);
            if let Ok(w) = split(&rest[..end]) {
                out.extend(w);
            }
            rest = rest.get(end + 1..).unwrap_or_default();
        }
        out
    }
}

#[test]
fn a_path_failing_twice_is_one_entry_and_success_clears_it() {
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    log.add(RemoteId(0), &Job::Paths(vec!["a".into(), "b".into()]), 5);
    log.add(RemoteId(0), &Job::Paths(vec!["a".into()]), 10);
    assert_eq!(log.len(), 2);
    assert_eq!(log.owed[0].status, 10);
    assert!(log.clear(RemoteId(0), &Job::Paths(vec!["a".into()])));
    assert_eq!(log.len(), 1);
    assert!(log.clear(RemoteId(0), &Job::Full));
    assert!(log.is_empty());
}

#[test]
fn saved_file_is_private_and_removed_when_empty() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("fail.sh");
    let targets = vec![target("/www", "10.0.0.2")];
    let mut log = FailLog::new(path.clone(), 1);
    log.add(RemoteId(0), &Job::Paths(vec!["a".into()]), 5);
    log.save(&log.owed, &targets).expect("save");
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let loaded = FailLog::load(path.clone(), &targets).expect("load");
    assert_eq!(loaded.owed, log.owed);
    log.clear(RemoteId(0), &Job::Paths(vec!["a".into()]));
    log.save(&log.owed, &targets).expect("save");
    assert!(!path.exists());
}

#[test]
fn sh_runs_the_log_without_running_any_name() {
    // The rendered script, run by sh with a fake rsync first on PATH, passes each name
    // through as one argument and executes nothing inside a name.
    let d = tempfile::tempdir().expect("tempdir");
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let fake = bin.join("rsync");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> {}/args\n",
            d.path().display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let www = d.path().join("www");
    std::fs::create_dir(&www).expect("mkdir");
    let targets = vec![target(&www.display().to_string(), "10.0.0.2")];
    let mut log = FailLog::new(d.path().join("fail.sh"), 1);
    log.add(RemoteId(0), &Job::Paths(job::plain_entries(hostile())), 5);
    log.save(&log.owed, &targets).expect("save");
    let status = std::process::Command::new("sh")
        .arg(d.path().join("fail.sh"))
        .current_dir(d.path())
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .status()
        .expect("sh runs");
    assert!(status.success());
    assert!(!d.path().join("pwned").exists() && !www.join("pwned").exists());
    let args = std::fs::read(d.path().join("args")).expect("fake rsync ran");
    for p in hostile() {
        let mut want = b"./".to_vec();
        want.extend_from_slice(p.as_os_str().as_bytes());
        want.push(0);
        assert!(
            args.windows(want.len()).any(|w| w == want.as_slice()),
            "{p:?} was not passed as one argument"
        );
    }
}

#[test]
fn a_failed_listing_stays_a_listing_through_the_file_and_is_paid_only_by_one() {
    // A listing is written with its `/` while the directory exists.
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("storm")).expect("mkdir");
    let root_s = root.path().display().to_string();
    let targets = vec![target(&root_s, "10.0.0.2")];
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    log.add(RemoteId(0), &Job::Paths(vec![job::entry("storm/")]), 23);
    let text = log.render(&log.owed, &targets);
    assert!(
        String::from_utf8_lossy(&text).contains("'./storm/'"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    let mut back = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for cmd in parse_script(&text) {
        back.absorb(cmd, &targets);
    }
    assert_eq!(back.owed, log.owed);
    // `Path` compares `storm/` and `storm` equal: the bytes must say it is a listing
    // still (read back without its `/`, a reload's replay pushed the directory alone
    // and the entries merged into it never reached the remotes).
    let bytes = |l: &FailLog| -> Vec<Vec<u8>> {
        l.owed[0]
            .entries()
            .iter()
            .map(|p| job::shown(p).as_os_str().as_bytes().to_vec())
            .collect()
    };
    assert_eq!(bytes(&back), [b"storm/".to_vec()]);
    // Pushing the directory alone does not push its entries: still owed.
    assert!(!log.clear(RemoteId(0), &Job::Paths(vec![job::entry("storm")])));
    assert_eq!(log.len(), 1);
    assert!(log.clear(RemoteId(0), &Job::Paths(vec![job::entry("storm/")])));
    assert!(log.is_empty());
}

/// Found by an outside attack run: the files owed directly in a directory whose listing
/// was owed merge into the listing when the log is replayed; its push must pay them too
/// (they stayed owed until the timed replay). A listing owed below it is not paid: the
/// push made that subdirectory only as a directory.
#[test]
fn a_listing_pushed_pays_the_files_owed_directly_in_it() {
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    let owed = [
        "app/",
        "app/f1",
        "app/f2",
        "app/s2/",
        "app/s2/f3",
        "apple",
        "x",
    ];
    log.add(
        RemoteId(0),
        &Job::Paths(owed.iter().map(|s| job::entry(s)).collect()),
        23,
    );
    assert!(log.clear(RemoteId(0), &Job::Paths(vec![job::entry("app/")])));
    let left: Vec<String> = log.owed[0]
        .entries()
        .iter()
        .map(|p| job::shown(p).display().to_string())
        .collect();
    assert_eq!(left, ["app/s2/", "app/s2/f3", "apple", "x"]);
    assert!(log.clear(RemoteId(0), &Job::Paths(vec![job::entry("app/s2/")])));
    assert_eq!(log.len(), 2, "apple and x");
}

/// Found by the simulator (seed 214 with stops): a directory deleted and not made again
/// yet waits as its listing; at the stop the fail log wrote it without its `/` (the
/// command line drops it for what is not a directory now), so after the restart it was
/// pushed as the directory alone, and the old directory's files stayed on the remote.
#[test]
fn a_listing_of_a_directory_missing_now_keeps_its_slash_through_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_s = root.path().display().to_string();
    let targets = vec![target(&root_s, "10.0.0.2")];
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    log.add(RemoteId(0), &Job::Paths(vec![job::entry("gone/")]), 0);
    let text = log.render(&log.owed, &targets);
    let mut back = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for cmd in parse_script(&text) {
        back.absorb(cmd, &targets);
    }
    let bytes: Vec<Vec<u8>> = back.owed[0]
        .entries()
        .iter()
        .map(|p| job::shown(p).as_os_str().as_bytes().to_vec())
        .collect();
    assert_eq!(
        bytes,
        [b"gone/".to_vec()],
        "{}",
        String::from_utf8_lossy(&text)
    );
}

/// A directory owed with everything below it is written as a recursive command under
/// `#recursive` (run by hand, it pushes the whole directory), read back as one, and
/// paid only by a push of it whole, which pays what is owed below it too. Without the
/// line, `dir/` reads as a listing, as in every older fail log.
#[test]
fn a_tree_is_written_recursive_read_back_as_one_and_paid_only_whole() {
    let targets = vec![target("/www", "10.0.0.2")];
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    let job = Job::Paths(vec![
        job::Entry::plain("secret.txt"),
        job::Entry::tree("locked"),
        job::Entry::plain("locked/inner/x"),
    ]);
    log.add(RemoteId(0), &job, 23);
    let text = String::from_utf8_lossy(&log.render(&log.owed, &targets)).into_owned();
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.len(), 2, "{text}");
    assert!(
        blocks[0].contains("'./locked/inner/x' './secret.txt'")
            && blocks[0].contains("'--no-recursive'")
            && !blocks[0].contains("#recursive"),
        "{text}"
    );
    let tree = blocks[1];
    assert!(
        tree.starts_with("#errno 23\n#recursive\ncd '/www' && rsync "),
        "{text}"
    );
    assert!(
        tree.contains("'-R' '-r' '--ignore-times' '--delete'")
            && tree.ends_with("'./locked/' 'user@10.0.0.2::mod'"),
        "{text}"
    );
    assert!(
        !tree.contains("--no-recursive") && !tree.contains("--dirs"),
        "{text}"
    );

    let mut back = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for cmd in parse_script(text.as_bytes()) {
        back.absorb(cmd, &targets);
    }
    assert_eq!(back.owed[0], log.owed[0]);
    assert_eq!(
        back.owed[0].entries(),
        [
            job::Entry::tree("locked"),
            job::Entry::plain("locked/inner/x"),
            job::Entry::plain("secret.txt"),
        ]
    );
    // Older fail logs: `dir/` without the line is a listing.
    let old = b"#errno 23\ncd '/www' && rsync '-R' './locked/' 'user@10.0.0.2::mod'\n\n";
    assert_eq!(
        parse_script(old)[0].job(),
        Job::Paths(vec![job::Entry::listing("locked")])
    );
    // The line holds for the next command only.
    let two = format!("{text}#errno 5\ncd '/www' && rsync '-R' './d/' 'user@10.0.0.2::mod'\n\n");
    let cmds = parse_script(two.as_bytes());
    assert_eq!(cmds.len(), 3);
    assert!(cmds[1].recursive && !cmds[2].recursive);

    // A listing or a plain push of the directory pays nothing of the tree.
    let owed = &mut back.owed[0];
    owed.record(&Job::Paths(vec![job::Entry::listing("locked")]), 23);
    assert!(
        owed.trees.contains(Path::new("locked")) && !owed.paths.contains_key(Path::new("locked"))
    );
    assert!(owed
        .clear(&Job::Paths(vec![job::Entry::listing("locked")]))
        .is_empty());
    // Its push pays it and what is owed below it, nothing beside it.
    let paid = owed.clear(&Job::Paths(vec![job::Entry::tree("locked")]));
    assert_eq!(
        paid,
        [
            job::Entry::plain("locked/inner/x"),
            job::Entry::tree("locked")
        ]
    );
    assert_eq!(owed.entries(), [job::Entry::plain("secret.txt")]);
}

/// Unknown remotes keep their trees the same way, with no options but `-R -r`.
#[test]
fn an_unknown_remotes_tree_stays_a_tree() {
    let targets = vec![target("/www", "10.0.0.2")];
    let text = b"#errno 23\n#recursive\ncd '/other' && rsync '-R' '-r' './d/' 'h::m'\n\n";
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for cmd in parse_script(text) {
        log.absorb(cmd, &targets);
    }
    assert_eq!(log.unknown_len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&log.render(&log.owed, &targets)),
        String::from_utf8_lossy(text)
    );
}

#[test]
fn held_deletes_are_written_under_a_held_line_and_read_back_held() {
    let targets = vec![target("/www", "10.0.0.2"), target("/www", "10.0.0.3")];
    let mut owed = vec![Owed::default(), Owed::default()];
    owed[0].record(&Job::Paths(vec![job::Entry::plain("edit.txt")]), 12);
    owed[0].record_held(
        &[
            job::Entry::plain("gone.txt"),
            job::Entry::listing("gone-dir"),
        ],
        false,
    );
    owed[1].record_held(&[], true);
    let log = FailLog::new(PathBuf::from("/tmp/x"), 2);
    let text = log.render(&owed, &targets);
    let shown = String::from_utf8_lossy(&text);
    assert_eq!(shown.matches(&format!("\n{HELD}\n")).count(), 2, "{shown}");
    // Read back: the held entries are held again, the owed one owed, nothing mixed.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fail.sh");
    crate::sys::fsafe::write_atomic(&path, &text).expect("write");
    let back = FailLog::load(path, &targets).expect("load");
    assert_eq!(back.owed, owed);
    assert!(back.owed[0].jobs().iter().all(|j| !j
        .plain_paths()
        .iter()
        .any(|e| e.path == Path::new("gone.txt"))));
    // A fail log of an older agent (no held line) reads as before: nothing held.
    let plain = String::from_utf8_lossy(&text).replace(&format!("{HELD}\n"), "");
    let old: Vec<Entry> = parse_script(plain.as_bytes());
    assert!(old.iter().all(|e| !e.held));
    assert!(parse_script(&text).iter().filter(|e| e.held).count() == 2);
}

// Files a full sync would skip (`Owed::blind`): written under a `#blind` line, as a
// command that pushes them with `--ignore-times`, beside what is owed (a full sync
// included) and held; read back as blind again, nothing mixed. A remote the config
// does not name keeps its blind command too.
#[test]
fn blind_files_are_written_under_a_blind_line_and_read_back_blind() {
    let targets = vec![target("/www", "10.0.0.2"), target("/www", "10.0.0.3")];
    let mut owed = vec![Owed::default(), Owed::default()];
    owed[0].record(&Job::Paths(vec![job::Entry::plain("edit.txt")]), 12);
    owed[0].blind = hostile().into_iter().collect();
    owed[1].record(&Job::Full, 10);
    owed[1].record_held(&[job::Entry::plain("gone.txt")], false);
    owed[1].blind = [PathBuf::from("same.txt")].into();
    let log = FailLog::new(PathBuf::from("/tmp/x"), 2);
    let text = log.render(&owed, &targets);
    let shown = String::from_utf8_lossy(&text).into_owned();
    assert_eq!(shown.matches(&format!("\n{BLIND}\n")).count(), 2, "{shown}");
    let blind_cmds: Vec<&str> = (shown.split("\n\n"))
        .filter(|b| b.contains(BLIND))
        .collect();
    assert!(
        blind_cmds.iter().all(|b| b.contains("'--ignore-times'")),
        "run by hand, a blind command sends the files whatever their size and mtime:\n{shown}"
    );
    assert!(blind_cmds[1].contains("'./same.txt'") && !blind_cmds[1].contains("'./'"));
    // Read back: blind again, the owed and held ones as they were.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fail.sh");
    crate::sys::fsafe::write_atomic(&path, &text).expect("write");
    let back = FailLog::load(path.clone(), &targets).expect("load");
    assert_eq!(back.owed, owed);
    assert!(back.owed[0]
        .jobs()
        .iter()
        .all(|j| !j.plain_paths().iter().any(|e| e.path == Path::new("-rf"))));
    assert_eq!(
        back.owed[1].len(),
        3,
        "a full sync, a held delete, a blind file"
    );
    // Only blind files: the file is kept, not removed as empty.
    let only = vec![
        Owed {
            blind: [PathBuf::from("same.txt")].into(),
            ..Owed::default()
        },
        Owed::default(),
    ];
    back.save(&only, &targets).expect("save");
    let again = FailLog::load(path, &targets).expect("load again");
    assert_eq!(again.owed, only);
    // A remote the config does not name: its blind command is kept as it was read.
    let foreign =
        b"#errno 0\n#blind\ncd '/other' && rsync '-R' '--ignore-times' './b c' 'h::m'\n\n";
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 2);
    for cmd in parse_script(foreign) {
        log.absorb(cmd, &targets);
    }
    assert_eq!(log.unknown_len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&log.render(&log.owed, &targets)),
        String::from_utf8_lossy(foreign)
    );
}

// A fail log without `#blind` lines (an older agent's, sersync 2.5's) reads as before:
// nothing blind. One with them, read by an agent that does not know the line (it is a
// comment), owes the files as paths: they are still pushed.
#[test]
fn fail_logs_without_a_blind_line_read_as_before() {
    let targets = vec![target("/www", "10.0.0.2"), target("/www", "10.0.0.3")];
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fail_log.sh");
    let text = std::fs::read(&golden).expect("golden file tests/golden/fail_log.sh");
    let mut old = FailLog::new(PathBuf::from("/tmp/x"), 2);
    for cmd in parse_script(&text) {
        assert!(!cmd.blind);
        old.absorb(cmd, &targets);
    }
    assert!(old.owed.iter().all(|o| o.blind.is_empty()));
    assert!(old.owed[1].full && old.owed[0].paths.len() == hostile().len());
    let owed = vec![
        Owed {
            blind: [PathBuf::from("same.txt")].into(),
            ..Owed::default()
        },
        Owed::default(),
    ];
    let text = FailLog::new(PathBuf::from("/tmp/x"), 2).render(&owed, &targets);
    let unaware = String::from_utf8_lossy(&text).replace(&format!("{BLIND}\n"), "");
    let mut read = FailLog::new(PathBuf::from("/tmp/x"), 2);
    for cmd in parse_script(unaware.as_bytes()) {
        read.absorb(cmd, &targets);
    }
    assert_eq!(
        read.owed[0].paths,
        BTreeMap::from([(PathBuf::from("same.txt"), false)])
    );
}
