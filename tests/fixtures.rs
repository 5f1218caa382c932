//! Self-tests of the fixtures in `support`, driven by plain `rsync`
//! commands (not `sersync2`), so a failing end-to-end test can be blamed on
//! the daemon under test rather than on its test harness.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

/// A small tree with nesting, an empty dir, a symlink and a non-UTF-8 name.
fn sample_source() -> Dir {
    let src = Dir::new("src");
    src.write("top.txt", b"hello\n");
    src.write("a/b/c/deep.bin", [0u8, 1, 2, 255, 254]);
    src.mkdir_p("empty/dir");
    src.symlink("link-to-top", "top.txt");
    src.write(OsStr::from_bytes(b"caf\xe9-latin1.txt"), b"bytes name\n");
    src
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_trees_equal(a: &Path, b: &Path) {
    if let Err(diff) = trees_equal(a, b) {
        panic!("{diff}");
    }
}

fn rsync_to_daemon(src: &Path, daemon: &RsyncDaemon, password_file: &Path) -> Output {
    let mut src_arg = src.as_os_str().to_os_string();
    src_arg.push("/");
    Command::new("rsync")
        .arg("-a")
        .arg(src_arg)
        .arg(format!("sersync@{}::{}", daemon.ip(), daemon.module()))
        .arg(format!("--port={}", daemon.port()))
        .arg(format!("--password-file={}", password_file.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run rsync")
}

#[test]
fn push_to_two_daemons_on_distinct_loopback_addresses() {
    let src = sample_source();
    let one = RsyncDaemon::start("127.0.0.1");
    let two = RsyncDaemon::start("127.0.0.2");
    assert_eq!(one.user(), "sersync");
    assert_eq!(one.module(), "mod");
    assert_eq!(two.ip(), "127.0.0.2");

    for daemon in [&one, &two] {
        let out = rsync_to_daemon(src.path(), daemon, &daemon.password_file());
        assert_success(&format!("rsync to {}", daemon.remote()), &out);
        assert_trees_equal(src.path(), &daemon.data_dir());
    }
    // Symlinks arrive verbatim (the daemon must not munge them).
    assert_eq!(
        fs::read_link(two.data_dir().join("link-to-top")).expect("readlink"),
        PathBuf::from("top.txt")
    );
}

#[test]
fn daemon_stop_and_restart_keeps_data_and_serves_again() {
    let src = sample_source();
    let mut daemon = RsyncDaemon::start("127.0.0.1");
    let port = daemon.port();
    assert_success("first push", &daemon.push(src.path()));
    assert_trees_equal(src.path(), &daemon.data_dir());

    daemon.stop();
    assert!(!daemon.is_running());
    src.write("during-outage.txt", b"written while the remote was down\n");
    let out = daemon.push(src.path());
    assert!(!out.status.success(), "push to a stopped daemon succeeded");
    assert!(
        daemon.data_dir().join("top.txt").exists(),
        "stop() must keep the data dir"
    );

    daemon.restart();
    assert_eq!(daemon.port(), port, "restart must reuse the port");
    assert_success("push after restart", &daemon.push(src.path()));
    assert_trees_equal(src.path(), &daemon.data_dir());
}

#[test]
fn wrong_password_is_rejected() {
    let src = sample_source();
    let daemon = RsyncDaemon::start("127.0.0.1");
    let bad = test_dir!();
    let bad_file = bad.join("wrong.pass");
    write_with_mode(&bad_file, b"not-the-password", 0o600);

    let out = rsync_to_daemon(src.path(), &daemon, &bad_file);
    assert!(
        !out.status.success(),
        "rsync with a wrong password succeeded: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth failed"), "unexpected error: {stderr}");
    assert!(
        tree_snapshot(daemon.data_dir()).is_empty(),
        "nothing may be written with a wrong password"
    );
    // The right password still works afterwards.
    assert_success(
        "push with the right password",
        &rsync_to_daemon(src.path(), &daemon, &daemon.password_file()),
    );
}

#[test]
fn push_over_sshd() {
    let src = sample_source();
    let sshd = Sshd::start();
    let out = Command::new("rsync")
        .arg("-a")
        .arg("-e")
        .arg(sshd.ssh_command())
        .arg(format!("{}/", src.path().display()))
        .arg(format!("127.0.0.1:{}/", sshd.dest_dir().display()))
        .stdin(Stdio::null())
        .output()
        .expect("run rsync over ssh");
    if !out.status.success() {
        panic!(
            "rsync over ssh failed ({}): {}\nsshd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            sshd.log()
        );
    }
    assert_trees_equal(src.path(), &sshd.dest_dir());
}

#[test]
fn snapshot_distinguishes_kinds_and_never_follows_links() {
    let d = test_dir!();
    d.write("f", b"x");
    d.mkdir_p("sub");
    d.symlink("dirlink", "sub");
    d.symlink("dangling", "/nonexistent/target");
    d.write("sub/inner", b"y");
    let snap = tree_snapshot(d.path());
    let keys: Vec<&Path> = snap.keys().map(PathBuf::as_path).collect();
    assert_eq!(
        keys,
        ["dangling", "dirlink", "f", "sub", "sub/inner"].map(Path::new)
    );
    assert_eq!(snap[Path::new("f")], Entry::File(b"x".to_vec()));
    assert_eq!(snap[Path::new("sub")], Entry::Dir);
    assert_eq!(snap[Path::new("dirlink")], Entry::Symlink("sub".into()));
    assert_eq!(
        snap[Path::new("dangling")],
        Entry::Symlink("/nonexistent/target".into())
    );
    assert!(tree_snapshot(d.join("does-not-exist")).is_empty());
}

#[test]
fn trees_equal_reports_differing_missing_and_extra() {
    let a = sample_source();
    let b = test_dir!();
    assert!(trees_equal(a.path(), b.path()).is_err());

    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", a.path().display()))
        .arg(b.path())
        .output()
        .expect("run cp");
    assert_success("cp -a", &out);
    assert_eq!(trees_equal(a.path(), b.path()), Ok(()));

    b.write("a/b/c/deep.bin", [0u8, 1, 2, 0, 254]);
    let err = trees_equal(a.path(), b.path()).expect_err("differing content");
    assert!(err.contains("differs") && err.contains("deep.bin"), "{err}");
    assert!(err.contains("at byte 3"), "{err}");

    b.write("a/b/c/deep.bin", [0u8, 1, 2, 255, 254]);
    fs::remove_file(b.join("top.txt")).expect("rm");
    b.write("stray", b"");
    let err = trees_equal(a.path(), b.path()).expect_err("missing and extra");
    assert!(err.contains("missing: \"top.txt\""), "{err}");
    assert!(err.contains("extra:   \"stray\""), "{err}");

    fs::remove_file(b.join("link-to-top")).expect("rm link");
    b.symlink("link-to-top", "elsewhere");
    let err = trees_equal(a.path(), b.path()).expect_err("symlink target");
    assert!(err.contains("link-to-top"), "{err}");
}

#[test]
fn non_utf8_names_are_compared_bytewise() {
    let a = test_dir!();
    let b = test_dir!();
    let name = OsStr::from_bytes(b"na\xefve\xff");
    a.write(name, b"same");
    b.write(name, b"same");
    assert_eq!(trees_equal(a.path(), b.path()), Ok(()));
    assert!(tree_snapshot(a.path()).contains_key(Path::new(name)));

    // A different non-UTF-8 name (which would collide under lossy decoding).
    fs::remove_file(b.join(name)).expect("rm");
    b.write(OsStr::from_bytes(b"na\xefve\xfe"), b"same");
    let err = trees_equal(a.path(), b.path()).expect_err("names differ");
    assert!(err.contains("missing") && err.contains("extra"), "{err}");
    assert!(err.contains("non-UTF-8"), "{err}");
}

#[test]
fn wait_trees_equal_sees_a_tree_converge() {
    let src = sample_source();
    let dst = test_dir!();
    let (from, to) = (src.path().to_owned(), dst.path().to_owned());
    let copier = std::thread::spawn(move || {
        Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", from.display()))
            .arg(format!("{}/", to.display()))
            .status()
            .expect("run local rsync")
    });
    wait_trees_equal(src.path(), dst.path(), DEADLINE);
    assert!(copier.join().expect("join copier").success());
}

#[test]
#[should_panic(expected = "timed out")]
fn wait_trees_equal_panics_with_diff_on_timeout() {
    let a = test_dir!();
    let b = test_dir!();
    a.write("only-here", b"1");
    wait_trees_equal(a.path(), b.path(), Duration::from_millis(100));
}

#[test]
#[should_panic(expected = "the impossible happens")]
fn wait_until_panics_naming_the_condition() {
    wait_until("the impossible happens", Duration::from_millis(50), || {
        false
    });
}

#[test]
fn sersync_bin_points_at_the_built_binary() {
    assert!(sersync_bin().is_file(), "{}", sersync_bin().display());
}
