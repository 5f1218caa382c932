use super::ssh::ssh_with_connect_timeout;
use super::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

#[test]
fn remote_rename_is_one_mv_over_the_ssh_command() {
    let mut t = target(Some("ssh -p 2222 -i '/k/id key'"), false);
    t.remote.name = "/srv/www".into();
    let (program, argv) = t
        .remote_rename_argv(Path::new("a/old"), Path::new("b/new"))
        .expect("ssh mode renames on the remote");
    assert_eq!(program, "ssh");
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(&argv[..3], ["-p", "2222", "-i"]);
    assert_eq!(
        argv[3], "/k/id key",
        "the ssh command's quoting is honoured"
    );
    let at = argv.iter().position(|a| a == "10.0.0.2").expect("the host");
    assert_eq!(
        argv[at..].join(" "),
        "10.0.0.2 cd -- /srv/www && test ! -L a && test ! -L b && mv -T -- a/old b/new",
        "every directory above the two paths is checked not to be a link"
    );
    let deep = t
        .remote_rename_argv(Path::new("x/y/old"), Path::new("x/new"))
        .expect("rename")
        .1
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        deep.ends_with("test ! -L x && test ! -L x/y && mv -T -- x/y/old x/new"),
        "{deep}"
    );
    assert!(argv.contains(&"ConnectTimeout=10".to_owned()));
}

#[test]
fn remote_rename_only_where_the_remote_shell_cannot_misread_it() {
    let ssh = target(Some("ssh"), false);
    let ok = |t: &Target, from: &str, to: &str| {
        t.remote_rename_argv(Path::new(from), Path::new(to))
            .is_some()
    };
    assert!(ok(&ssh, "a", "b"));
    assert!(
        !ok(&target(None, true), "a", "b"),
        "daemon mode has no remote mv"
    );
    for bad in [
        "a b",
        "a;touch x",
        "$(id)",
        "a/../b",
        "`x`",
        "a*",
        "~x",
        "a\nb",
        "",
    ] {
        assert!(!ok(&ssh, bad, "b"), "from {bad:?}");
        assert!(!ok(&ssh, "b", bad), "to {bad:?}");
    }
    let mut off = ssh.clone();
    off.delete = false;
    assert!(
        !ok(&off, "a", "b"),
        "deletes off: the old path stays on the remote"
    );
    let mut host = ssh.clone();
    host.remote.ip = "-oProxyCommand=x".into();
    assert!(!ok(&host, "a", "b"));
    let mut dir = ssh.clone();
    dir.remote.name = "/srv/my www".into();
    assert!(!ok(&dir, "a", "b"));
}

fn target(ssh: Option<&str>, auth: bool) -> Target {
    Target {
        root: PathBuf::from("/www"),
        remote: Remote {
            ip: "10.0.0.2".into(),
            name: "mod".into(),
        },
        opts: RsyncOptions {
            params: vec!["-artuz".into()],
            auth: auth.then(|| ("user".to_owned(), PathBuf::from("/etc/rsync.pas"))),
            port: Some(874),
            timeout: Some(100),
            ssh: ssh.map(str::to_owned),
            batch: 100,
        },
        delete: true,
        full_excludes: vec!["*.php".into()],
        filter_globs: vec!["*.log".into()],
        filter_rules: Vec::new(),
        own: vec![],
        ssh_control: None,
    }
}

fn words(v: &[OsString]) -> Vec<String> {
    v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
}

#[test]
fn daemon_live_push_passes_paths_as_dot_slash_arguments() {
    let t = target(None, true);
    let (argv, stdin) = t.argv(&Job::Paths(vec!["a b".into(), "-x".into()]), &[]);
    assert_eq!(
        words(&argv),
        [
            "-artuz",
            "-R",
            "--no-recursive",
            "--ignore-times",
            "--delete-missing-args",
            "--force",
            "--password-file=/etc/rsync.pas",
            "--port=874",
            "--sockopts=TCP_NODELAY",
            "--contimeout=10",
            "--timeout=100",
            "--dirs",
            "./a b",
            "./-x",
            "user@10.0.0.2::mod"
        ]
    );
    assert!(stdin.is_empty());
}

#[test]
fn user_sockopts_are_not_overridden() {
    let mut t = target(None, false);
    t.opts.params.push("--sockopts=SO_SNDBUF=65536".into());
    let (argv, _) = t.argv(&Job::Paths(vec!["a".into()]), &[]);
    assert!(!words(&argv).contains(&"--sockopts=TCP_NODELAY".to_owned()));
}

#[test]
fn without_timeout_calls_get_default_connect_and_io_timeouts() {
    let mut t = target(None, false);
    t.opts.timeout = None;
    let (argv, _) = t.argv(&Job::Paths(vec!["a".into()]), &[]);
    let w = words(&argv);
    assert!(w.contains(&"--contimeout=10".to_owned()), "{w:?}");
    assert!(w.contains(&"--timeout=120".to_owned()), "{w:?}");
    // The user's own choices win.
    t.opts.params.push("--contimeout=3".into());
    t.opts.params.push("--timeout=7".into());
    let (argv, _) = t.argv(&Job::Full, &[]);
    let w = words(&argv);
    assert_eq!(
        w.iter().filter(|a| a.starts_with("--contimeout")).count(),
        1
    );
    assert_eq!(w.iter().filter(|a| a.starts_with("--timeout")).count(), 1);
    // ssh: the I/O timeout, and a connect timeout in the ssh command.
    let mut t = target(Some("ssh -i /k"), false);
    t.opts.timeout = None;
    let w = words(&t.argv(&Job::Paths(vec!["a".into()]), &[]).0);
    assert!(
        w.contains(&"ssh -i /k -o ConnectTimeout=10".to_owned()),
        "{w:?}"
    );
    assert!(w.contains(&"--timeout=120".to_owned()), "{w:?}");
    assert!(
        !w.iter().any(|a| a.starts_with("--contimeout")),
        "daemon only"
    );
    assert_eq!(
        ssh_with_connect_timeout("ssh -o connectTimeout=3"),
        "ssh -o connectTimeout=3"
    );
}

#[test]
fn paths_split_to_fit_the_argument_budget() {
    let paths: Vec<PathBuf> = (0..100)
        .map(|i| PathBuf::from(format!("d/f{i:03}")))
        .collect();
    // "./d/f000" + NUL = 9 bytes each: 10 fit in 95.
    let runs = split_for_args(&paths, 95);
    assert!(
        runs.iter().all(|r| r.len() == 10),
        "{:?}",
        runs.iter().map(|r| r.len()).collect::<Vec<_>>()
    );
    assert_eq!(runs.concat(), paths, "every path once, in order");
    assert_eq!(split_for_args(&paths, ARGS_BUDGET).len(), 1);
    let long = vec![PathBuf::from("x".repeat(200))];
    assert_eq!(
        split_for_args(&long, 10).len(),
        1,
        "a long path still gets a run"
    );
    assert!(split_for_args::<PathBuf>(&[], 10).is_empty());
}

/// After the remote `mv` of a directory, what was below it goes by quick check: the
/// live push's options otherwise, so what the remote lacks is sent and what it has
/// costs a listing.
#[test]
fn a_settling_push_is_a_live_push_by_quick_check() {
    let t = target(Some("ssh"), true);
    let paths: Vec<Entry> = vec!["b".into(), "b/v/i/x".into(), "-f".into()];
    let settle = words(&t.settle_argv(&paths));
    let live = words(&t.argv(&Job::Paths(paths), &[]).0);
    assert!(!settle.contains(&"--ignore-times".to_owned()));
    let without: Vec<String> = live.into_iter().filter(|a| a != "--ignore-times").collect();
    assert_eq!(settle, without);
    assert!(settle.contains(&"./-f".to_owned()));
}

#[test]
fn delete_off_never_asks_for_deletion() {
    let mut t = target(None, false);
    t.delete = false;
    let (argv, _) = t.argv(&Job::Paths(vec!["a".into()]), &[]);
    let w = words(&argv);
    assert!(w.contains(&"--ignore-missing-args".to_owned()));
    assert!(!w.iter().any(|a| a.starts_with("--delete")));
    let (argv, _) = t.argv(&Job::Full, &[]);
    assert!(!words(&argv).iter().any(|a| a.starts_with("--delete")));
}

#[test]
fn ssh_mode_uses_remote_shell_and_dir() {
    let t = target(Some("ssh -p 2222"), true);
    let (argv, _) = t.argv(&Job::Full, &[]);
    let w: Vec<String> = words(&argv)
        .into_iter()
        .filter(|a| {
            !crate::filter::temp_name_globs()
                .iter()
                .any(|g| *a == format!("--exclude={g}"))
        })
        .collect();
    assert_eq!(
        w,
        [
            "-artuz",
            "-R",
            "--delete",
            "--exclude=*.php",
            "--exclude=*.log",
            "-e",
            "ssh -p 2222 -o ConnectTimeout=10",
            "--timeout=100",
            "./",
            "10.0.0.2:mod"
        ]
    );
}

#[test]
fn a_full_sync_shows_progress_with_one_option_before_its_source_and_destination() {
    for ssh in [None, Some("ssh -p 2222")] {
        let t = target(ssh, true);
        let (plain, _) = t.argv(&Job::Full, &["a/.svn".into()]);
        let mut shown = plain.clone();
        show_progress(&mut shown);
        let mut expected = plain.clone();
        let n = expected.len();
        expected.insert(n - 2, "--info=progress2".into());
        assert_eq!(shown, expected);
        assert_eq!(&words(&shown)[n - 1..], ["./", &words(&plain)[n - 1]]);
    }
}

#[test]
fn an_exact_full_sync_compares_nanoseconds_unless_the_operator_set_a_window() {
    for ssh in [None, Some("ssh -p 2222")] {
        let mut t = target(ssh, true);
        let (plain, _) = t.argv(&Job::Full, &[]);
        let mut exact = plain.clone();
        exact_times(&mut exact);
        let mut expected = plain.clone();
        let n = expected.len();
        expected.insert(n - 2, "--modify-window=-1".into());
        assert_eq!(exact, expected);
        // The operator's own window (a remote keeping coarser mtimes) wins.
        for own in ["--modify-window=1", "-@1", "-a@2"] {
            t.opts.params = vec![own.into()];
            let (plain, _) = t.argv(&Job::Full, &[]);
            let mut exact = plain.clone();
            exact_times(&mut exact);
            assert_eq!(exact, plain, "{own}");
        }
        t.opts.params.clear();
    }
}

#[test]
fn full_sync_keeps_temp_files_out() {
    let t = target(None, true);
    let (argv, _) = t.argv(&Job::Full, &[]);
    let w = words(&argv);
    for g in crate::filter::temp_name_globs() {
        assert!(w.contains(&format!("--exclude={g}")), "{g}");
    }
}

/// Found by an outside attack run: a temp file made in a directory between the
/// agent's listing of its excluded names and rsync's read of it went along with the
/// directory's listing push.
#[test]
fn a_listing_push_keeps_temp_names_out_and_a_plain_one_needs_no_rule() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("d")).expect("mkdir");
    let mut t = target(None, true);
    t.root = root.path().to_path_buf();
    let listing = words(
        &t.argv(&Job::Paths(vec![Entry::listing("d"), "x".into()]), &[])
            .0,
    );
    for g in crate::filter::temp_name_globs() {
        assert!(
            listing.contains(&format!("--exclude={g}")),
            "{g}: {listing:?}"
        );
    }
    assert!(listing.contains(&"./d/".to_owned()), "{listing:?}");
    let plain = words(&t.argv(&Job::Paths(vec!["d".into(), "x".into()]), &[]).0);
    assert!(
        !plain.iter().any(|w| w.starts_with("--exclude")),
        "{plain:?}"
    );
}

/// Found by the simulator (seed 385, directory-only excludes): a file `e` queued,
/// renamed away and replaced by a directory `e` (excluded as `e/`) after the call was
/// built; `--dirs ./e` made the excluded directory on the remote. A plain push carries
/// the directory-only patterns (rsync then keeps such a directory out, and still
/// deletes a missing `e`), and no other rule.
#[test]
fn a_plain_push_carries_the_directory_only_patterns() {
    let mut t = target(None, true);
    t.filter_globs = vec!["*.log".into(), "e/".into(), "/top/".into()];
    let plain = words(&t.argv(&Job::Paths(vec!["e".into()]), &[]).0);
    let rules: Vec<&String> = plain
        .iter()
        .filter(|w| w.starts_with("--exclude"))
        .collect();
    assert_eq!(rules, ["--exclude=e/", "--exclude=/top/"], "{plain:?}");
    let logged = words(&t.fail_log_argv(&Job::Paths(vec!["e".into()])));
    assert!(logged.contains(&"--exclude=e/".to_owned()), "{logged:?}");
}

/// Found in a clean-clone CI run (the swap test on fanotify): `swap.tmp` renamed to
/// `b.txt` went as a rename push, the remote's old `b.txt` had the same size and an
/// mtime in the same tick, and the quick check kept it.
#[test]
fn a_file_rename_push_compares_contents_and_a_directory_one_keeps_hard_links() {
    let t = target(None, true);
    let file = t
        .rename_argvs(Path::new("swap.tmp"), Path::new("b.txt"), false, &[])
        .expect("a rename push");
    assert!(
        words(&file[0]).contains(&"--ignore-times".to_owned()),
        "{:?}",
        file[0]
    );
    assert!(words(&file[0]).contains(&"--fuzzy".to_owned()));
    let dir = t
        .rename_argvs(
            Path::new("old"),
            Path::new("new"),
            true,
            &[PathBuf::from("new"), PathBuf::from("new/f")],
        )
        .expect("a rename push");
    let w = words(&dir[0]);
    assert!(!w.contains(&"--ignore-times".to_owned()), "{w:?}");
    assert!(w.iter().any(|a| a.starts_with("--link-dest=")), "{w:?}");
}

/// A directory's rename push lists its entries as rsync finds them: a temp file made
/// there after the agent listed the excluded names went along (found by the
/// simulator: a link named `x.log`, excluded, made in a directory while its rename
/// was pushed, reached the remote).
#[test]
fn a_directory_rename_push_keeps_temp_and_excluded_names_out() {
    let mut t = target(None, true);
    t.filter_globs = vec!["*.log".into()];
    let dir = t
        .rename_argvs(
            Path::new("old"),
            Path::new("new"),
            true,
            &[PathBuf::from("new")],
        )
        .expect("a rename push");
    let w = words(&dir[0]);
    assert!(w.contains(&"--exclude=*.log".to_owned()), "{w:?}");
    assert!(w.contains(&"--exclude=*~".to_owned()), "{w:?}");
}

#[test]
fn full_sync_excludes_are_anchored_and_escaped() {
    let t = target(None, false);
    let (argv, stdin) = t.argv(&Job::Full, &["a/.svn".into(), "b/x*y".into()]);
    assert!(words(&argv).contains(&"--exclude-from=-".to_owned()));
    assert_eq!(stdin, b"- /a/.svn\0- /b/x\\*y\0");
}

/// A directory with everything below it goes as a full sync of that directory: `-r`,
/// by quick check, `--delete` and the full sync's excludes; as `./dir` (its delete)
/// when it is not a directory now.
#[test]
fn a_tree_is_pushed_recursive_with_the_full_syncs_rules() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("locked")).expect("mkdir");
    let mut t = target(None, true);
    t.root = root.path().to_path_buf();
    t.full_excludes = vec!["*.bak".into()];
    let job = Job::Paths(vec![Entry::tree("locked"), Entry::tree("gone")]);
    let (argv, stdin) = t.argv(&job, &[PathBuf::from("locked/skip")]);
    let w = words(&argv);
    // `--ignore-times`: what waited below a tree was written, and a deploy's file may
    // have the size and mtime of the one it replaces (an outside run: `rm -rf app &&
    // cp -a build/app app`, held by the brake and released as the tree, left the old
    // contents on every remote by quick check).
    for want in [
        "-R",
        "-r",
        "--ignore-times",
        "--delete",
        "--delete-missing-args",
        "--exclude=*.bak",
    ] {
        assert!(w.contains(&want.to_owned()), "{want}: {w:?}");
    }
    for not in ["--no-recursive", "--dirs"] {
        assert!(!w.contains(&not.to_owned()), "{not}: {w:?}");
    }
    assert_eq!(w[w.len() - 3..], ["./locked/", "./gone", &t.dest()]);
    assert_eq!(stdin, b"- /locked/skip\0");
}

#[test]
fn fail_log_form_prefixes_every_path() {
    let t = target(None, false);
    let argv = t.argv_with_args(&Job::Paths(vec!["-rf".into(), "a".into()]));
    let w = words(&argv);
    assert!(w.contains(&"./-rf".to_owned()));
    assert_eq!(w.last().map(String::as_str), Some("10.0.0.2::mod"));
}

use proptest::prelude::*;

proptest! {
    /// Whatever bytes a name holds, it is exactly one `./name` argument, after every
    /// option and before the destination, and the options are the same as for any
    /// other name: no name can add, drop or change an option.
    #[test]
    fn any_name_is_one_argument_and_never_an_option(
        names in proptest::collection::vec(
            proptest::collection::vec(1u8..=255, 1..40)
                .prop_filter("relative", |b| b[0] != b'/')
                // The watcher's paths never end in `/`.
                .prop_filter("no trailing slash", |b| b.last() != Some(&b'/')),
            1..6,
        )
    ) {
        let t = target(None, true);
        let paths: Vec<PathBuf> = names
            .iter()
            .map(|b| PathBuf::from(OsStr::from_bytes(b)))
            .collect();
        let (argv, stdin) =
            t.argv(&Job::Paths(crate::sync::job::plain_entries(paths.clone())), &[]);
        prop_assert!(stdin.is_empty());
        let (plain, _) = t.argv(&Job::Paths(vec![]), &[]);
        let n = plain.len() - 1;
        prop_assert_eq!(&argv[..n], &plain[..n], "options unchanged");
        prop_assert_eq!(argv.last(), plain.last(), "destination last");
        for (arg, p) in argv[n..argv.len() - 1].iter().zip(&paths) {
            let mut want = b"./".to_vec();
            want.extend_from_slice(p.as_os_str().as_bytes());
            prop_assert_eq!(arg.as_bytes(), &want[..]);
        }
        prop_assert_eq!(argv.len() - 1 - n, paths.len());
    }
}

/// `<filter>`'s rsync rules go to every call that reads the tree from its root, in
/// order and after every exclude (the `<exclude>` expressions decide first), and not
/// to a directory's rename push, which names its entries from the new directory (an
/// anchored rule would be read from there): that rename goes plain.
#[test]
fn filter_rules_follow_every_exclude_in_every_call_from_the_root() {
    let mut t = target(None, true);
    t.filter_rules = crate::config::rules::Rules(vec![
        crate::config::rules::parse(b"+ /public/***").expect("rule"),
        crate::config::rules::parse(b"- *").expect("rule"),
    ])
    .rsync_args();
    let rules = ["--filter=+ /public/***", "--filter=- *"];
    let after_excludes = |argv: &[OsString], what: &str| {
        let w = words(argv);
        let at = w
            .iter()
            .position(|a| a == rules[0])
            .unwrap_or_else(|| panic!("{what}: no rules in {w:?}"));
        assert_eq!(w[at + 1], rules[1], "{what}: in order: {w:?}");
        assert!(
            !w[at..].iter().any(|a| a.starts_with("--exclude")),
            "{what}: every exclude before the rules: {w:?}"
        );
    };
    let excluded = [PathBuf::from("a/.svn")];
    let (full, _) = t.argv(&Job::Full, &excluded);
    after_excludes(&full, "full sync");
    assert_eq!(full[full.len() - 2], "./");
    let (push, _) = t.argv(&Job::Paths(vec!["public/a".into()]), &[]);
    after_excludes(&push, "push");
    let (listing, _) = t.argv(&Job::Paths(vec![Entry::listing("public")]), &excluded);
    after_excludes(&listing, "listing");
    after_excludes(
        &t.argv_with_args(&Job::Paths(vec![Entry::tree("public")])),
        "tree",
    );
    let (prune, _) = t.prune_argv(&["public".into()], &excluded);
    after_excludes(&prune, "prune");
    after_excludes(&t.fail_log_argv(&Job::Full), "the fail log's full sync");
    assert!(t
        .rename_argvs(Path::new("public/a"), Path::new("public/b"), true, &[])
        .is_none());
    assert!(t
        .rename_argvs(Path::new("public/a"), Path::new("public/b"), false, &[])
        .is_some());
    let ssh = Target {
        filter_rules: t.filter_rules.clone(),
        ..target(Some("ssh"), false)
    };
    assert!(ssh
        .remote_rename_argv(Path::new("public/a"), Path::new("public/b"))
        .is_none());
}

// A big file's push (`sync::bigfiles`) is the ordinary push of that one path with the
// option of its transfer after `-R`; whole, it is the ordinary push.
#[test]
fn a_big_file_goes_as_an_append_or_in_place_with_the_option_after_dash_r() {
    use crate::sync::bigfiles::Transfer;
    let t = target(None, false);
    let job = Job::Paths(vec!["logs/big.log".into()]);
    let (plain, _) = t.argv(&job, &[]);
    assert_eq!(t.argv_as(&job, &[], Transfer::Whole).0, plain);
    for (how, opt) in [
        (Transfer::Append, "--append-verify"),
        (Transfer::InPlace, "--inplace"),
    ] {
        let (argv, stdin) = t.argv_as(&job, &[], how);
        let mut want = words(&plain);
        want.insert(2, opt.to_owned());
        assert_eq!(words(&argv), want);
        assert!(stdin.is_empty());
    }
    // A full sync never carries it.
    assert_eq!(
        t.argv_as(&Job::Full, &[], Transfer::Append).0,
        t.argv(&Job::Full, &[]).0
    );
}

// A full sync of an empty root runs with `--max-delete=0`: rsync skips every delete.
// Where the remote's rsync deletes (a daemon, ssh) the client exits 0 and says so only
// in the receiver's line; where the client deletes it exits 25.
#[test]
fn skipped_deletes_are_read_from_the_status_or_the_receivers_line() {
    let out = |status: i32, stderr: &str| Outcome {
        status,
        stderr: stderr.to_owned(),
        elapsed: std::time::Duration::ZERO,
    };
    assert!(deletes_skipped(&out(25, "")));
    assert!(deletes_skipped(&out(
        0,
        "Deletions stopped due to --max-delete limit (1 skipped)\n"
    )));
    assert!(!deletes_skipped(&out(0, "")));
    assert!(!deletes_skipped(&out(
        23,
        "rsync error: some files could not be transferred"
    )));
    let mut argv: Vec<OsString> = vec!["-a".into(), "--delete".into(), "./".into(), "h::m".into()];
    deleting_nothing(&mut argv);
    assert_eq!(argv, ["-a", "--delete", "--max-delete=0", "./", "h::m"]);
}
