//! A user who can write in the tree makes a path longer than rsync can carry (4096
//! bytes with the directory rsync runs in): 90 nested 50-byte directories and a file,
//! made with relative `mkdir`/`chdir`. Before, every push that carried such a path
//! failed whole (rsync exit 22, "buffer overflow: remember_sender_source_root"), root's
//! own changes batched with it never arrived, the remote stayed failing and owed them
//! for ever, and `--wait-synced` timed out until the user removed the tree. Each test
//! plays that user: an unprivileged user created for the test builds the tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

/// The upload directory `src/up`, owned by `user`, in a tree others can traverse.
fn upload_dir(s: &Setup, user: &User) -> PathBuf {
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let up = s.dir.mkdir_p("src/up");
    std::os::unix::fs::chown(&up, Some(user.uid), Some(user.gid)).expect("chown up");
    up
}

/// As `user`: `up/deep2/` and 90 nested 50-byte directories below it, with a file `f`
/// at the bottom (a path of 4600 bytes from the root), made by relative steps.
fn make_deep_tree(user: &User, up: &Path) {
    user.run(
        "perl",
        &[
            "-e".as_ref(),
            "chdir $ARGV[0] or die \"cd: $!\"; mkdir 'deep2'; chdir 'deep2' or die \"cd: $!\";\n\
             for (1..90) { mkdir 'y' x 50 or die \"mkdir: $!\"; chdir 'y' x 50 or die \"cd: $!\" }\n\
             open(my $f, '>', 'f') or die \"open: $!\"; print $f \"x\\n\"; close $f or die;\n"
                .as_ref(),
            up.as_os_str(),
        ],
    );
}

/// Root's own files, written right after the deep tree so that they are batched with
/// it, then one at a time.
fn root_changes(s: &Setup, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| {
            let name = format!("rootchange{k}");
            s.write(&name, format!("root change {k}\n"));
            name
        })
        .collect()
}

/// Waits until every remote holds every one of `names` with the source's content.
fn wait_root_files(s: &Setup, agent: &mut Agent, names: &[String], deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let missing: Vec<String> = s
            .remotes()
            .iter()
            .flat_map(|r| {
                names
                    .iter()
                    .filter(|n| fs::read(r.join(n)).ok() != fs::read(s.p(n)).ok())
                    .map(move |n| format!("{}/{n}", r.display()))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        agent.assert_running();
        assert!(
            Instant::now() < end,
            "root's changes never reached every remote ({} missing, first {:?}); agent log:\n{}",
            missing.len(),
            missing.first(),
            tail(&agent.log(), 60)
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

/// `--status` until it names the skipped paths (the agent notes them as it meets
/// them); its output.
fn status_naming_skipped(s: &Setup, agent: &mut Agent) -> std::process::Output {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let out = sersync2(&s.dir, &["-o", "sersync.xml", "--status"]);
        if String::from_utf8_lossy(&out.stdout)
            .contains("not mirrorable: longer than rsync's 4096-byte limit")
        {
            return out;
        }
        agent.assert_running();
        assert!(
            Instant::now() < end,
            "--status never names the deep path: {}\nagent log:\n{}",
            text(&out),
            tail(&agent.log(), 60)
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

/// The checks every variant shares, once the deep tree and root's changes are made.
fn root_changes_land_and_the_deep_path_is_named(s: &Setup, agent: &mut Agent) {
    let names = root_changes(s, 20);
    wait_root_files(s, agent, &names, Duration::from_secs(90));
    let out = wait_synced(&s.dir, 90);
    assert!(
        out.status.success(),
        "--wait-synced answers although the tree holds a path rsync cannot carry: {}\n\
         agent log:\n{}",
        text(&out),
        tail(&agent.log(), 60)
    );
    let status = status_naming_skipped(s, agent);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        status.status.code(),
        Some(0),
        "nothing is owed and no remote is failing: {}",
        text(&status)
    );
    assert!(!shown.contains("FAILING"), "{shown}");
    assert!(shown.contains(" bytes)..."), "shortened: {shown}");
    let log = agent.log();
    assert!(
        log.contains("is not mirrorable: longer than rsync's 4096-byte limit"),
        "the log names it: {}",
        tail(&log, 60)
    );
    assert!(
        !log.contains("buffer overflow"),
        "no call carried it: {}",
        tail(&log, 60)
    );
    // Root's later changes still go out one by one, and nothing is owed.
    s.write("after.txt", "after\n");
    wait_root_files(s, agent, &["after.txt".to_owned()], Duration::from_secs(60));
    let out = wait_synced(&s.dir, 60);
    assert!(out.status.success(), "{}", text(&out));
    let json = sersync2(&s.dir, &["-o", "sersync.xml", "--status", "--json"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&json)));
    assert_eq!(doc["fail_log"]["entries"], 0, "{}", text(&json));
    assert!(
        doc["roots"][0]["skipped_paths"].as_u64().unwrap_or(0) > 0,
        "{}",
        text(&json)
    );
}

fn daemons_on(backend: &str) {
    let Some(attacker) = User::create("d") else {
        return;
    };
    let s = Setup::new(&format!("deep-{backend}"));
    let up = upload_dir(&s, &attacker);
    let mut conf = s.conf();
    conf.backend = backend.to_owned();
    let mut agent = Agent::start(&s.dir, &conf, &[]);
    make_deep_tree(&attacker, &up);
    root_changes_land_and_the_deep_path_is_named(&s, &mut agent);
    agent.stop();
}

// With fanotify the deep file's event names its whole path: its push failed (exit 22)
// with every path batched with it, for ever.
#[test]
fn a_users_too_long_path_holds_back_nothing_with_fanotify() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: fanotify needs root (CAP_SYS_ADMIN)");
        return;
    }
    daemons_on("fanotify");
}

// With inotify the directories below the kernel's limit were watched and pushed and the
// rest was neither watched nor reported: `--wait-synced` said level and status said
// nothing of it.
#[test]
fn a_users_too_long_path_is_reported_with_inotify() {
    daemons_on("inotify");
}

// ssh mode: the same push failed the same way.
#[test]
fn a_users_too_long_path_holds_back_nothing_over_ssh() {
    let Some(attacker) = User::create("s") else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let s = setup!();
    let up = upload_dir(&s, &attacker);
    let sshd = Sshd::start();
    let mut conf = Conf::ssh(&s.src, &sshd, &s.dir.join("fail.sh"));
    conf.backend = "fanotify".to_owned();
    let mut agent = s.agent_with(&conf, &[]);
    make_deep_tree(&attacker, &up);
    let names = root_changes(&s, 20);
    let end = Instant::now() + Duration::from_secs(90);
    let dest = sshd.dest_dir();
    loop {
        let missing = names
            .iter()
            .filter(|n| fs::read(dest.join(n)).ok() != fs::read(s.p(n)).ok())
            .count();
        if missing == 0 {
            break;
        }
        agent.assert_running();
        assert!(
            Instant::now() < end,
            "{missing} of root's changes never reached the ssh remote; agent log:\n{}",
            tail(&agent.log(), 60)
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
    let out = wait_synced(&s.dir, 90);
    assert!(out.status.success(), "{}", text(&out));
    let status = status_naming_skipped(&s, &mut agent);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    agent.stop();
}

// A full sync (`-r`) of a tree holding such a path: rsync could not open it (exit 23,
// "File name too long") and skipped every deletion, so the full sync was owed whole,
// the remotes kept what the source had deleted and stayed failing for ever.
#[test]
fn a_full_sync_lands_beside_a_users_too_long_path() {
    let Some(attacker) = User::create("f") else {
        return;
    };
    let s = setup!();
    let up = upload_dir(&s, &attacker);
    make_deep_tree(&attacker, &up);
    s.write("before.txt", "made before the start\n");
    for remote in s.remotes() {
        fs::write(
            remote.join("stale.txt"),
            "deleted while the agent was down\n",
        )
        .expect("plant a stale file");
    }
    let mut agent = s.agent(&["-r"]);
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let level = s.remotes().iter().all(|r| {
            fs::read(r.join("before.txt")).ok().as_deref() == Some(&b"made before the start\n"[..])
                && !r.join("stale.txt").exists()
        });
        if level {
            break;
        }
        agent.assert_running();
        assert!(
            Instant::now() < end,
            "the full sync never made the remotes level; agent log:\n{}",
            tail(&agent.log(), 60)
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
    let out = wait_synced(&s.dir, 90);
    assert!(out.status.success(), "{}", text(&out));
    let status = status_naming_skipped(&s, &mut agent);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("last full sync: succeeded"), "{shown}");
    agent.stop();
}

/// As `user`: `up/deep3/` and 76 nested 50-byte directories below it (3,884 bytes from
/// the root), holding a file `short` and a file with a 250-byte name: rsync, listing
/// that directory, cannot build the second one's name ("filename overflows max-path
/// len by N"), whatever exclude rule names it.
fn make_overflowing_name(user: &User, up: &Path) {
    user.run(
        "perl",
        &[
            "-e".as_ref(),
            "chdir $ARGV[0] or die \"cd: $!\"; mkdir 'deep3'; chdir 'deep3' or die \"cd: $!\";\n\
             for (1..76) { mkdir 'y' x 50 or die \"mkdir: $!\"; chdir 'y' x 50 or die \"cd: $!\" }\n\
             for my $n ('short', 'z' x 250) {\n\
               open(my $f, '>', $n) or die \"open: $!\"; print $f \"x\\n\"; close $f or die; }\n"
                .as_ref(),
            up.as_os_str(),
        ],
    );
}

/// `up/deep3/y.../short` below `base`, made of relative steps (the path is longer than
/// the kernel takes at once): its content, if it is there.
fn read_deep_short(base: &Path) -> Option<Vec<u8>> {
    let out = std::process::Command::new("perl")
        .args([
            "-e",
            "chdir $ARGV[0] or exit 1; chdir 'up/deep3' or exit 1;\n\
             for (1..76) { chdir 'y' x 50 or exit 1 }\n\
             open(my $f, '<', 'short') or exit 1; local $/; print <$f>;",
        ])
        .arg(base)
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// The count of not mirrorable paths `--status --json` gives for the first root.
fn skipped_paths(s: &Setup) -> u64 {
    let json = sersync2(&s.dir, &["-o", "sersync.xml", "--status", "--json"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&json)));
    doc["roots"][0]["skipped_paths"].as_u64().unwrap_or(0)
}

// A user's file whose name rsync cannot build while listing its directory ("filename
// overflows max-path len by 34", exit 23, every deletion skipped, whatever exclude rule
// names it): every full sync and `--verify` of every remote failed, the remotes stayed
// FAILING for ever, the log's stderr kept only the end of the 4 KiB path (not rsync's
// words), and the count in status stayed after the file was deleted.
#[test]
fn a_name_rsync_cannot_build_fails_no_full_sync_or_verify() {
    let Some(attacker) = User::create("o") else {
        return;
    };
    let s = setup!();
    let up = upload_dir(&s, &attacker);
    make_overflowing_name(&attacker, &up);
    s.write("before.txt", "made before the start\n");
    for remote in s.remotes() {
        fs::write(
            remote.join("stale.txt"),
            "deleted while the agent was down\n",
        )
        .expect("plant a stale file");
    }
    let mut agent = s.agent(&["-r"]);
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let level = s.remotes().iter().all(|r| {
            fs::read(r.join("before.txt")).ok().as_deref() == Some(&b"made before the start\n"[..])
                && !r.join("stale.txt").exists()
                && read_deep_short(r).as_deref() == Some(&b"x\n"[..])
        });
        if level {
            break;
        }
        agent.assert_running();
        assert!(
            Instant::now() < end,
            "the full sync never made the remotes level; agent log:\n{}",
            tail(&agent.log(), 60)
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
    let out = wait_synced(&s.dir, 90);
    assert!(out.status.success(), "{}", text(&out));
    let status = status_naming_skipped(&s, &mut agent);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(!shown.contains("FAILING"), "{shown}");
    assert!(shown.contains("last full sync: succeeded"), "{shown}");
    assert!(shown.contains(" bytes)..."), "shortened: {shown}");
    let log = agent.log();
    assert!(
        log.contains("not mirrorable: longer than rsync's 4096-byte limit"),
        "{}",
        tail(&log, 60)
    );
    // --verify compares the rest, and names the path.
    let verify = sersync2(&s.dir, &["-o", "sersync.xml", "--verify"]);
    let said = text(&verify);
    assert_eq!(verify.status.code(), Some(0), "{said}");
    assert!(said.contains("level"), "{said}");
    assert!(
        said.contains("1 path(s) not mirrorable: longer than rsync's 4096-byte limit")
            && said.contains(" bytes)...zzzz"),
        "{said}"
    );
    assert!(!said.contains("could not be checked"), "{said}");
    // Gone from the tree: no longer counted.
    assert_eq!(skipped_paths(&s), 1);
    attacker.run(
        "perl",
        &[
            "-e".as_ref(),
            "chdir $ARGV[0] or die; chdir 'deep3' or die; for (1..76) { chdir 'y' x 50 or die }\n\
             unlink('z' x 250) or die \"unlink: $!\";"
                .as_ref(),
            up.as_os_str(),
        ],
    );
    let end = Instant::now() + Duration::from_secs(60);
    while skipped_paths(&s) != 0 {
        agent.assert_running();
        assert!(
            Instant::now() < end,
            "the count never dropped; agent log:\n{}",
            tail(&agent.log(), 30)
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
    agent.stop();
}
