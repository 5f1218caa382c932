//! Failures an outside tester found: excludes bypassed by file names with a newline or
//! bytes that are not UTF-8, two configs sharing one instance lock, a `--pid-file` in
//! a directory another user owns, `--log-file` at a fifo, and a new directory whose
//! walk failed (too many open files) never being pushed.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::support::*;

fn byte_name(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

/// The names a `(.*)\.key` exclude must keep out, whatever their bytes.
fn key_names(prefix: &str) -> Vec<PathBuf> {
    let mut invalid = prefix.as_bytes().to_vec();
    invalid.extend_from_slice(b"\xff.key");
    let mut newline = prefix.as_bytes().to_vec();
    newline.extend_from_slice(b"nl\nx.key");
    vec![
        byte_name(&invalid),
        byte_name(&newline),
        PathBuf::from(format!("{prefix}plain.key")),
    ]
}

fn assert_absent_on_remotes(s: &Setup, names: &[PathBuf], agent: &Agent) {
    for remote in s.remotes() {
        for n in names {
            assert!(
                fs::symlink_metadata(remote.join(n)).is_err(),
                "{:?} was pushed to {} despite the exclude; agent log:\n{}",
                n,
                remote.display(),
                tail(&agent.log(), 60)
            );
        }
    }
}

// `<exclude expression="(.*)\.key"/>` did not match names with a newline or bytes that
// are not UTF-8 (regexes in Unicode mode), so such keys were pushed by the full sync
// and by live events.
#[test]
fn key_names_with_newline_or_invalid_utf8_are_not_pushed_despite_the_exclude() {
    let s = Setup::new("outsider-keys");
    let mut conf = s.conf();
    conf.excludes = Some(vec![r"(.*)\.key".to_owned()]);
    let at_start = key_names("start-");
    for n in &at_start {
        s.write(n, "secret\n");
    }
    s.write("start-marker.txt", "marker\n");
    let mut agent = Agent::start(&s.dir, &conf, &["-r"]);
    wait_until("the start marker reaches both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes()
            .iter()
            .all(|r| r.join("start-marker.txt").exists())
    });
    let live = key_names("live-");
    for n in &live {
        s.write(n, "secret\n");
    }
    s.write("live-marker.txt", "marker\n");
    wait_until("the live marker reaches both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes()
            .iter()
            .all(|r| r.join("live-marker.txt").exists())
    });
    // Whatever was queued is pushed or written to the fail log by the stop.
    agent.stop();
    assert_absent_on_remotes(&s, &at_start, &agent);
    assert_absent_on_remotes(&s, &live, &agent);
}

/// Starts `sersync2 -o <config> <extra>` in `dir`; stderr goes to `err`.
fn spawn(dir: &Dir, config: &Path, extra: &[&OsStr], err: &Path) -> std::process::Child {
    Command::new(sersync_bin())
        .arg("-o")
        .arg(config)
        .args(extra)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(err).expect("create stderr file"))
        .spawn()
        .expect("spawn sersync2")
}

/// Waits for the child to exit (up to the deadline) and returns its exit code.
fn exit_code(child: &mut std::process::Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sersync2 did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

/// SIGTERMs and reaps the child.
fn stop(child: &mut std::process::Child) {
    // SAFETY: plain syscall on our own, not yet reaped, child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = exit_code(child);
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

// `-o /x/a/b.xml` and `-o /x/a_b.xml` mapped to one default pid file (`/` → `_`): the
// second was refused as "another sersync2 already runs this config".
#[test]
fn configs_a_slash_b_and_a_underscore_b_do_not_share_an_instance_lock() {
    let s = Setup::new("outsider-lock");
    let conf = s.conf().render();
    let nested = s.dir.mkdir_p("a").join("b.xml");
    let flat = s.dir.join("a_b.xml");
    fs::write(&nested, &conf).expect("write a/b.xml");
    fs::write(&flat, &conf).expect("write a_b.xml");
    let (err1, err2) = (s.dir.join("one.err"), s.dir.join("two.err"));
    let mut one = spawn(&s.dir, &nested, &[], &err1);
    wait_until("the first instance logs `live:`", DEADLINE, || {
        assert!(
            one.try_wait().ok().flatten().is_none(),
            "first exited:\n{}",
            read(&err1)
        );
        read(&err1).contains("live:")
    });
    let mut two = spawn(&s.dir, &flat, &[], &err2);
    wait_until("the second instance logs `live:`", DEADLINE, || {
        if let Ok(Some(status)) = two.try_wait() {
            panic!("second instance exited ({status}):\n{}", read(&err2));
        }
        read(&err2).contains("live:")
    });
    stop(&mut two);
    stop(&mut one);
}

// An explicit --pid-file's directory was not checked: its owner (another user) could
// delete the pid file and let a second instance of the same config start.
#[test]
fn pid_file_in_a_directory_another_user_owns_is_refused() {
    let s = Setup::new("outsider-piddir");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let conf = s.conf().render();
    let config = s.dir.join("sersync.xml");
    fs::write(&config, conf).expect("write config");
    let theirs = s.dir.mkdir_p("theirs");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    let pid_file = theirs.join("agent.pid");
    let err = s.dir.join("agent.err");
    let mut child = spawn(
        &s.dir,
        &config,
        &[OsStr::new("--pid-file"), pid_file.as_os_str()],
        &err,
    );
    let code = exit_code(&mut child);
    let text = read(&err);
    assert_eq!(code, Some(2), "exit 2 expected; stderr:\n{text}");
    assert!(
        text.contains(&theirs.display().to_string()) && text.contains("uid 65534"),
        "the message names the directory and its owner:\n{text}"
    );
    assert!(!pid_file.exists(), "no pid file was written there");
}

// `--log-file` at a fifo nobody reads gave "No such device or address (os error 6)"
// instead of the refusal that says it is not a regular file.
#[test]
fn log_file_at_a_fifo_without_reader_is_refused_as_not_a_regular_file() {
    let s = Setup::new("outsider-fifo");
    let config = s.dir.join("sersync.xml");
    fs::write(&config, s.conf().render()).expect("write config");
    let fifo = s.dir.join("agent.log");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("path");
    // SAFETY: c is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let err = s.dir.join("agent.err");
    let pid_file = s.dir.join("agent.pid");
    let mut child = spawn(
        &s.dir,
        &config,
        &[
            OsStr::new("--pid-file"),
            pid_file.as_os_str(),
            OsStr::new("--log-file"),
            fifo.as_os_str(),
        ],
        &err,
    );
    let code = exit_code(&mut child);
    let text = read(&err);
    assert_eq!(code, Some(2), "exit 2 expected; stderr:\n{text}");
    assert!(
        text.contains("not a regular file") && text.contains("fifo"),
        "the refusal says what is wrong:\n{text}"
    );
    assert!(!text.contains("os error 6"), "{text}");
}

/// The lowest descriptor number free in process `pid`: with RLIMIT_NOFILE set to it,
/// the process's next open fails with EMFILE.
fn lowest_free_fd(pid: libc::pid_t) -> u64 {
    let used: std::collections::BTreeSet<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the agent's descriptors")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

/// Sets the soft RLIMIT_NOFILE of process `pid`; returns the old limits.
fn set_nofile(pid: libc::pid_t, soft: Option<u64>, restore: Option<libc::rlimit>) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: old is a valid out-pointer; a null new limit only reads.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit read: {}", std::io::Error::last_os_error());
    let new = match (soft, restore) {
        (Some(n), _) => libc::rlimit {
            rlim_cur: n,
            rlim_max: old.rlim_max,
        },
        (None, Some(r)) => r,
        (None, None) => return old,
    };
    // SAFETY: new is a valid limit; the old value is not wanted.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit set: {}", std::io::Error::last_os_error());
    old
}

// Under a low descriptor limit the watcher logged "cannot list .../bulk/d3: Too many
// open files" for a directory moved into the tree and never walked it again: its 21
// files never reached the remotes, with nothing queued, owed or in the fail log.
#[test]
fn a_directory_listed_while_out_of_descriptors_is_walked_again_and_pushed() {
    let s = Setup::new("outsider-emfile");
    s.dir.mkdir_p("src/bulk");
    for i in 0..21 {
        s.dir
            .write(format!("stage/d3/f{i}.txt"), format!("file {i}\n"));
    }
    let mut agent = Agent::start(&s.dir, &s.conf(), &["-r"]);
    s.wait(&mut agent, "the empty bulk directory is mirrored");
    let pid = agent.pid();
    // The agent's next open fails with "Too many open files" from here on.
    let old = set_nofile(pid, Some(lowest_free_fd(pid)), None);
    fs::rename(s.dir.join("stage/d3"), s.p("bulk/d3")).expect("move d3 into the tree");
    let waiting = wait_until_logged(&agent, "walking it again");
    set_nofile(pid, None, Some(old));
    assert!(
        waiting.contains("bulk/d3"),
        "the failed listing names the directory:\n{waiting}"
    );
    s.wait(
        &mut agent,
        "d3's files arrive once descriptors are free again",
    );
    assert!(
        agent.log().contains("walked ") && agent.log().contains("again: pushing its"),
        "the walk again is logged:\n{}",
        tail(&agent.log(), 40)
    );
}

/// Waits for a line containing `needle` in the agent's log; returns the log.
fn wait_until_logged(agent: &Agent, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let log = agent.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no `{needle}` in the agent log within {DEADLINE:?}:\n{}",
            tail(&log, 40)
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}
