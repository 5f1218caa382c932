//! Logs fit the journal and never vanish: sd-daemon priority prefixes when stderr is the
//! journal's stream (`JOURNAL_STREAM`), a log file when `-d` finds no syslog socket
//! (said before the detach), and SIGUSR1 reopening the log file without a reload (what
//! logrotate sends); a `--log-file` that is not a regular file is refused. Real daemons, real inotify, the real binary.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

/// Waits until `path` holds a line with every needle; returns that line.
fn wait_file_line(agent: &mut Agent, path: &Path, what: &str, needles: &[&str]) -> String {
    let mut found = String::new();
    let start = std::time::Instant::now();
    loop {
        let text = String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned();
        if let Some(l) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            found.push_str(l);
            return found;
        }
        if start.elapsed() >= DEADLINE {
            panic!(
                "timed out: {what} (a line with {needles:?} in {}):\n{}",
                path.display(),
                tail(&text, 60)
            );
        }
        if agent.child.is_some() {
            agent.assert_running();
        }
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

// In the foreground under systemd every line reached the journal at one priority:
// `journalctl -p err` found none of the failures.
#[test]
fn under_the_journal_every_line_carries_its_priority() {
    let mut s = setup!();
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, s.conf().render()).expect("write sersync.xml");
    let err = s.dir.join("agent.err");
    fs::write(&err, "").expect("create the stream file");
    let meta = fs::metadata(&err).expect("stat");
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o"])
        .arg(&conf_path)
        .env("JOURNAL_STREAM", &stream);
    // Agent::spawn truncates the file it is given: the same inode stays.
    let mut agent = Agent::spawn(cmd, err.clone());
    assert_eq!(fs::metadata(&err).map(|m| m.ino()).ok(), Some(meta.ino()));
    agent.wait_live();
    let live = wait_file_line(&mut agent, &err, "the live line", &["live:"]);
    assert!(live.starts_with("<6>"), "info is <6>: {live:?}");
    s.b.stop();
    s.write("down.txt", "b is down\n");
    let line = wait_file_line(
        &mut agent,
        &err,
        "the failed push as an error",
        &["failed, written to the fail log", "Connection refused"],
    );
    assert!(line.starts_with("<3>"), "an error is <3>: {line:?}");
    let log = agent.log();
    for l in log.lines().filter(|l| !l.is_empty()) {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| l.starts_with(p)),
            "every line has its priority and no timestamp: {l:?}\n{log}"
        );
    }
    agent.stop();
}

/// Removes a file at the end of the test.
struct Removed(Option<PathBuf>);

impl Drop for Removed {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

// Detached (-d) with no syslog socket (a container without /dev/log), every log line
// was dropped without a word.
#[test]
fn detached_without_a_syslog_socket_says_so_and_logs_to_a_file() {
    let mut s = setup!();
    fs::write(s.dir.join("sersync.xml"), s.conf().render()).expect("config");
    let pid_file = s.dir.join("agent.pid");
    // A socket path where nothing listens stands for a missing /dev/log.
    let missing = s.dir.join("no-such-log.sock");
    let out = Command::new(sersync_bin())
        .args(["-d", "-o", "sersync.xml", "--pid-file"])
        .arg(&pid_file)
        .current_dir(s.dir.path())
        .env("RUST_LOG", "info")
        .env("SERSYNC2_SYSLOG_SOCKET", &missing)
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2 -d");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let file = said
        .lines()
        .find(|l| l.contains("no syslog socket at"))
        .and_then(|l| l.split_once("logs go to "))
        .and_then(|(_, rest)| rest.split_once(" (give --log-file"))
        .map(|(p, _)| PathBuf::from(p));
    let _cleanup = Removed(file.clone());
    assert!(
        out.status.success(),
        "-d returns 0 once ready: {}",
        text(&out)
    );
    let pid = read_pid(&pid_file);
    let daemon = Detached(pid);
    let Some(file) = file else {
        panic!("the agent says before it detaches where its logs go: {said}");
    };
    assert!(
        said.contains(&missing.display().to_string()),
        "it names the socket it could not reach: {said}"
    );
    // As root, the package's log directory (logrotate's /var/log/sersync2/*.log).
    assert!(
        file.starts_with("/var/log/sersync2/") && file.extension().is_some_and(|e| e == "log"),
        "{}",
        file.display()
    );
    let mut none = Agent {
        child: None,
        stderr: file.clone(),
    };
    wait_file_line(&mut none, &file, "the live line in the file", &["live:"]);
    s.b.stop();
    s.write("down.txt", "b is down\n");
    wait_file_line(
        &mut none,
        &file,
        "a failed push in the file",
        &["failed, written to the fail log", "Connection refused"],
    );
    drop(daemon);
    wait_until(
        "the daemon exits",
        std::time::Duration::from_secs(40),
        || !pid_file.exists(),
    );
    wait_file_line(
        &mut none,
        &file,
        "the stop in the file",
        &["stopped; pushed per remote"],
    );
}

// The logrotate snippet sent SIGHUP, which also reloads the config: every rotation
// restarted every pipeline. SIGUSR1 reopens the log file and nothing else.
#[test]
fn sigusr1_reopens_the_log_file_after_a_rename_without_a_reload() {
    let s = setup!();
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, s.conf().render()).expect("write sersync.xml");
    let log_file = s.dir.join("agent.log");
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o"])
        .arg(&conf_path)
        .arg("--log-file")
        .arg(&log_file);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.stderr = log_file.clone();
    agent.wait_live();
    s.write("before.txt", "1\n");
    s.wait(&mut agent, "before the rotation");
    let rotated = s.dir.join("agent.log.1");
    fs::rename(&log_file, &rotated).expect("rotate");
    agent.signal(libc::SIGUSR1);
    let mut n = 0;
    wait_until("a new log file after SIGUSR1", DEADLINE, || {
        // Any record reopens: a push logs its command line (debug on).
        n += 1;
        s.write(format!("after/{n}.txt"), "2\n");
        fs::metadata(&log_file).is_ok_and(|m| m.len() > 0)
    });
    agent.assert_running();
    s.wait(&mut agent, "after the rotation");
    let old = fs::read_to_string(&rotated).unwrap_or_default();
    let new = fs::read_to_string(&log_file).unwrap_or_default();
    for text in [&old, &new] {
        assert!(
            !text.contains("reloading the config"),
            "SIGUSR1 reloads nothing:\n{}",
            tail(text, 40)
        );
    }
    assert!(
        old.contains("live:"),
        "the old lines stay in the rotated file"
    );
    agent.stop();
}

/// The postrotate script of the shipped logrotate snippet.
fn postrotate_script() -> String {
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/packaging/logrotate");
    let text = fs::read_to_string(&snippet).expect("read the logrotate snippet");
    let (_, after) = text
        .split_once("postrotate\n")
        .expect("a postrotate script");
    let (script, _) = after.split_once("endscript").expect("its endscript");
    script.to_owned()
}

/// Kills and reaps a child at the end of the test.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// The logrotate snippet sent SIGHUP to the process of every pid file in /run/sersync2:
// a reload of each instance at every rotation, and a signal for whatever process a
// stale pid file named. Now: SIGUSR1, to sersync2 processes with a file of
// /var/log/sersync2 open.
#[test]
fn the_logrotate_snippet_reopens_its_instances_logs_and_signals_nothing_else() {
    let s = setup!();
    let token = s
        .dir
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("a temp dir name");
    let log_dir = Path::new("/var/log/sersync2");
    fs::create_dir_all(log_dir).expect("create /var/log/sersync2");
    fs::create_dir_all("/run/sersync2").expect("create /run/sersync2");
    let log_file = log_dir.join(format!("test-{token}.log"));
    let rotated = log_dir.join(format!("test-{token}.log.1"));
    let stale_pid = PathBuf::from(format!("/run/sersync2/test-{token}-stale.pid"));
    let _cleanup = [
        Removed(Some(log_file.clone())),
        Removed(Some(rotated.clone())),
        Removed(Some(stale_pid.clone())),
    ];
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, s.conf().render()).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o"])
        .arg(&conf_path)
        .arg("--log-file")
        .arg(&log_file)
        .arg("--pid-file")
        .arg(format!("/run/sersync2/test-{token}.pid"));
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.stderr = log_file.clone();
    agent.wait_live();
    // A stale pid file naming another program: SIGUSR1 would end it.
    let sleeper = Command::new("sleep").arg("600").spawn().expect("run sleep");
    fs::write(&stale_pid, format!("{}\n", sleeper.id())).expect("write the stale pid file");
    let mut sleeper = Reaped(sleeper);

    fs::rename(&log_file, &rotated).expect("rotate");
    let out = Command::new("sh")
        .arg("-c")
        .arg(postrotate_script())
        .output()
        .expect("run the postrotate script");
    assert!(out.status.success(), "{}", text(&out));
    let mut n = 0;
    wait_until("the instance writes a new log file", DEADLINE, || {
        n += 1;
        s.write(format!("after/{n}.txt"), "x\n");
        fs::metadata(&log_file).is_ok_and(|m| m.len() > 0)
    });
    assert!(
        matches!(sleeper.0.try_wait(), Ok(None)),
        "the process of a stale pid file was signalled"
    );
    let all = format!(
        "{}{}",
        fs::read_to_string(&rotated).unwrap_or_default(),
        fs::read_to_string(&log_file).unwrap_or_default()
    );
    assert!(
        !all.contains("reloading the config"),
        "a rotation reloads nothing:\n{}",
        tail(&all, 40)
    );
    agent.stop();
}

// `--log-file` at a fifo nobody reads gave "No such device or address (os error 6)"
// instead of the refusal that says it is not a regular file.
#[test]
fn log_file_at_a_fifo_without_reader_is_refused_as_not_a_regular_file() {
    let s = setup!();
    let config = s.dir.join("sersync.xml");
    fs::write(&config, s.conf().render()).expect("write config");
    let fifo = s.dir.join("agent.log");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("path");
    // SAFETY: c is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let pid_file = s.dir.join("agent.pid");
    let mut agent = Agent::launch(
        &s.dir,
        &config,
        &[
            OsStr::new("--pid-file"),
            pid_file.as_os_str(),
            OsStr::new("--log-file"),
            fifo.as_os_str(),
        ],
        s.dir.join("agent.err"),
    );
    let code = agent.exit().code();
    let text = agent.log();
    assert_eq!(code, Some(2), "exit 2 expected; stderr:\n{text}");
    assert!(
        text.contains("not a regular file") && text.contains("fifo"),
        "the refusal says what is wrong:\n{text}"
    );
    assert!(!text.contains("os error 6"), "{text}");
}
