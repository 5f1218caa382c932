//! The harness the end-to-end tests share: a config writer (`Conf`), the agent under
//! test as a child process (`Agent`), a test's world of temp dirs and two rsync daemons
//! (`Setup`), and deadline-bound waits for the remotes to equal the source.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::*;

/// How long a stopped agent may take to exit after SIGTERM/SIGINT.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// Deadline for the big `cp -a` tree (thousands of files, two remotes).
pub(crate) const BIG_DEADLINE: Duration = Duration::from_secs(180);

/// Pause between two polls of (possibly large) trees.
pub(crate) const TREE_POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// How the agent reaches its remotes.
pub(crate) enum Transport {
    /// rsync daemon mode: one port, user and password file for all remotes.
    Daemon {
        port: u16,
        user: String,
        password_file: PathBuf,
    },
    /// ssh mode with this remote shell command.
    Ssh { command: String },
}

/// The parts of a confxml.xml these tests vary; [`Conf::render`] writes the
/// rest like the shipped example.
pub(crate) struct Conf {
    pub(crate) watch: PathBuf,
    /// `(ip, name)`: module in daemon mode, remote directory in ssh mode.
    pub(crate) remotes: Vec<(String, String)>,
    pub(crate) transport: Transport,
    pub(crate) delete: bool,
    /// `Some` turns the filter on with these exclude expressions.
    pub(crate) excludes: Option<Vec<String>>,
    /// Raw value of `<timeout start=...>` (lets a test write a bad one).
    pub(crate) timeout_start: String,
    pub(crate) fail_log: PathBuf,
    /// `<debug start>`: log every event and rsync command (handy when a test fails).
    pub(crate) debug: bool,
    /// `<commonParams params>`.
    pub(crate) params: String,
    /// `<crontab start="true" schedule>` with crontabfilter globs, when set.
    pub(crate) crontab: Option<(String, Vec<String>)>,
    /// `<failLog timeToExecute>` in minutes.
    pub(crate) replay_minutes: u32,
    /// `<host hostip port start="true">`: the status endpoint, when set.
    pub(crate) status_port: Option<u16>,
    /// `<watcher backend>`: [`test_backend`] unless a test sets it.
    pub(crate) backend: String,
    /// `<deleteBrake start="false"/>`: the brake on mass deletes off (it is on by
    /// default).
    pub(crate) brake_off: bool,
}

/// The watcher backend the end-to-end tests run on: `SERSYNC2_TEST_BACKEND`, or
/// `inotify` when unset (`auto` would pick fanotify as root, and the default run
/// must keep testing inotify). scripts/test.sh runs the backend-relevant modules
/// again with `SERSYNC2_TEST_BACKEND=fanotify`.
pub(crate) fn test_backend() -> String {
    std::env::var("SERSYNC2_TEST_BACKEND").unwrap_or_else(|_| "inotify".to_owned())
}

impl Conf {
    /// The shipped example's settings for these remotes: delete on, filter off,
    /// `-artuz`, no crontab, no status endpoint, debug logging on.
    pub(crate) fn new(
        watch: &Path,
        remotes: Vec<(String, String)>,
        transport: Transport,
        fail_log: &Path,
    ) -> Conf {
        Conf {
            watch: watch.to_path_buf(),
            remotes,
            transport,
            delete: true,
            excludes: None,
            timeout_start: "false".into(),
            fail_log: fail_log.to_path_buf(),
            debug: true,
            params: "-artuz".into(),
            crontab: None,
            replay_minutes: 60,
            status_port: None,
            backend: test_backend(),
            brake_off: false,
        }
    }

    /// Daemon-mode config pushing `watch` to every daemon (all on one port).
    pub(crate) fn daemons(watch: &Path, daemons: &[&RsyncDaemon], fail_log: &Path) -> Conf {
        let first = daemons[0];
        assert!(
            daemons.iter().all(|d| d.port() == first.port()),
            "one config has one <userDefinedPort>: daemons must share a port"
        );
        let remotes = daemons
            .iter()
            .map(|d| (d.ip().to_string(), d.module().to_string()))
            .collect();
        let transport = Transport::Daemon {
            port: first.port(),
            user: first.user().to_string(),
            password_file: first.password_file(),
        };
        Conf::new(watch, remotes, transport, fail_log)
    }

    /// ssh-mode config pushing `watch` into the sshd's dest dir.
    pub(crate) fn ssh(watch: &Path, sshd: &Sshd, fail_log: &Path) -> Conf {
        let remotes = vec![(
            sshd.host().to_string(),
            sshd.dest_dir().display().to_string(),
        )];
        let transport = Transport::Ssh {
            command: sshd.ssh_command(),
        };
        Conf::new(watch, remotes, transport, fail_log)
    }

    pub(crate) fn render(&self) -> String {
        let on = |b: bool| if b { "true" } else { "false" };
        let mut x = String::new();
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<head version=\"2.5\">\n");
        if let Some(port) = self.status_port {
            let _ = writeln!(
                x,
                "  <host hostip=\"127.0.0.1\" port=\"{port}\" start=\"true\"/>"
            );
        }
        let _ = writeln!(x, "  <debug start=\"{}\"/>", on(self.debug));
        let _ = writeln!(x, "  <watcher backend=\"{}\"/>", esc(&self.backend));
        match &self.excludes {
            None => x.push_str(
                "  <filter start=\"false\"><exclude expression=\"(.*)\\.svn\"/></filter>\n",
            ),
            Some(exprs) => {
                x.push_str("  <filter start=\"true\">\n");
                for e in exprs {
                    let _ = writeln!(x, "    <exclude expression=\"{}\"/>", esc(e));
                }
                x.push_str("  </filter>\n");
            }
        }
        let _ = writeln!(
            x,
            "  <inotify><delete start=\"{}\"/><createFolder start=\"true\"/>\
             <createFile start=\"false\"/><closeWrite start=\"true\"/>\
             <moveFrom start=\"true\"/><moveTo start=\"true\"/>\
             <attrib start=\"false\"/><modify start=\"false\"/></inotify>",
            on(self.delete)
        );
        x.push_str("  <sersync>\n");
        let _ = writeln!(
            x,
            "    <localpath watch=\"{}\">",
            esc(&self.watch.display().to_string())
        );
        for (ip, name) in &self.remotes {
            let _ = writeln!(
                x,
                "      <remote ip=\"{}\" name=\"{}\"/>",
                esc(ip),
                esc(name)
            );
        }
        x.push_str("    </localpath>\n");
        x.push_str("    <rsync>\n");
        let _ = writeln!(x, "      <commonParams params=\"{}\"/>", esc(&self.params));
        match &self.transport {
            Transport::Daemon {
                port,
                user,
                password_file,
            } => {
                let _ = writeln!(
                    x,
                    "      <auth start=\"true\" users=\"{}\" passwordfile=\"{}\"/>",
                    esc(user),
                    esc(&password_file.display().to_string())
                );
                let _ = writeln!(x, "      <userDefinedPort start=\"true\" port=\"{port}\"/>");
            }
            Transport::Ssh { .. } => {
                x.push_str(
                    "      <auth start=\"false\" users=\"root\" passwordfile=\"/etc/rsync.pas\"/>\n",
                );
                x.push_str("      <userDefinedPort start=\"false\" port=\"874\"/>\n");
            }
        }
        let _ = writeln!(
            x,
            "      <timeout start=\"{}\" time=\"100\"/>",
            esc(&self.timeout_start)
        );
        match &self.transport {
            Transport::Daemon { .. } => x.push_str("      <ssh start=\"false\"/>\n"),
            Transport::Ssh { command } => {
                let _ = writeln!(
                    x,
                    "      <ssh start=\"true\" command=\"{}\"/>",
                    esc(command)
                );
            }
        }
        x.push_str("    </rsync>\n");
        let _ = writeln!(
            x,
            "    <failLog path=\"{}\" timeToExecute=\"{}\"/>",
            esc(&self.fail_log.display().to_string()),
            self.replay_minutes
        );
        if let Some((schedule, globs)) = &self.crontab {
            let _ = writeln!(
                x,
                "    <crontab start=\"true\" schedule=\"{}\"><crontabfilter start=\"{}\">",
                esc(schedule),
                !globs.is_empty()
            );
            for g in globs {
                let _ = writeln!(x, "      <exclude expression=\"{}\"/>", esc(g));
            }
            x.push_str("    </crontabfilter></crontab>\n");
        }
        if self.brake_off {
            x.push_str("    <deleteBrake start=\"false\"/>\n");
        }
        x.push_str("  </sersync>\n</head>\n");
        x
    }
}

/// XML attribute escaping.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---------------------------------------------------------------------------
// The agent under test
// ---------------------------------------------------------------------------

/// A running `sersync2 -o CONF` child; SIGTERMed and reaped on drop.
pub(crate) struct Agent {
    pub(crate) child: Option<Child>,
    pub(crate) stderr: PathBuf,
}

impl Agent {
    /// Writes `conf` to `<dir>/sersync.xml`, starts `sersync2 -n 4 -o it
    /// <extra>` (cwd = `dir`) and waits until it logs `live:`.
    pub(crate) fn start(dir: &Dir, conf: &Conf, extra: &[&str]) -> Agent {
        let conf_path = dir.join("sersync.xml");
        fs::write(&conf_path, conf.render()).expect("write sersync.xml");
        let mut cmd = command(dir);
        cmd.args(["-n", "4", "-o"]).arg(&conf_path).args(extra);
        let mut agent = Agent::spawn(cmd, dir.join("agent.err"));
        agent.wait_live();
        agent
    }

    /// Starts `sersync2 -o CONFIG EXTRA` in `dir` with its stderr in `stderr`, without
    /// waiting for anything (the agent may be one that must refuse to start).
    pub(crate) fn launch(dir: &Dir, config: &Path, extra: &[&OsStr], stderr: PathBuf) -> Agent {
        let mut cmd = command(dir);
        cmd.arg("-o").arg(config).args(extra);
        Agent::spawn(cmd, stderr)
    }

    /// Starts `cmd` (see [`command`]) with its stderr in `stderr`, which is then the log.
    pub(crate) fn spawn(mut cmd: Command, stderr: PathBuf) -> Agent {
        let err = fs::File::create(&stderr).expect("create the agent's stderr file");
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn sersync2");
        Agent {
            child: Some(child),
            stderr,
        }
    }

    /// Waits until the agent logs `live:` (it must keep running meanwhile).
    pub(crate) fn wait_live(&mut self) {
        wait_until("sersync2 logs `live:`", DEADLINE, || {
            self.assert_running();
            self.log().contains("live:")
        });
    }

    /// Waits until `log` (a `--log-file`, or its stderr) says `live:`; panics if the
    /// agent exits meanwhile.
    pub(crate) fn wait_live_in(&mut self, log: &Path) {
        wait_until("sersync2 logs `live:`", DEADLINE, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "sersync2 exited ({status}); stderr:\n{}\nlog:\n{}",
                    self.log(),
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            fs::read_to_string(log)
                .unwrap_or_default()
                .contains("live:")
        });
    }

    /// Waits (up to [`DEADLINE`]) for an agent that must exit on its own, e.g. one
    /// that refuses to start; its status. Panics with its stderr on timeout.
    pub(crate) fn exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("agent already stopped");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            if start.elapsed() >= DEADLINE {
                panic!(
                    "sersync2 did not exit within {DEADLINE:?}; stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
        }
    }

    /// After a SIGHUP: waits until the agent logs that it kept its running config (the
    /// new one was refused), staying alive meanwhile.
    pub(crate) fn wait_reload_refused(&mut self) {
        wait_until("the reload is refused", DEADLINE, || {
            self.assert_running();
            self.log().contains("the config loaded before stays in use")
        });
    }

    /// Waits up to `deadline` for the agent to exit by itself; its status, and the
    /// agent counts as stopped from then on.
    pub(crate) fn wait_exit(&mut self, what: &str, deadline: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(what, deadline, || {
            status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            status.is_some()
        });
        self.child = None;
        status
    }

    /// Everything the agent wrote to stderr so far.
    /// The agent's process id (for SIGSTOP/SIGCONT and the like).
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("agent already stopped").id() as libc::pid_t
    }

    /// Sends a signal without waiting for anything.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain syscall on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    pub(crate) fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Panics (with its log) if the agent has exited.
    pub(crate) fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("agent already stopped");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "sersync2 exited unexpectedly ({status}); stderr:\n{}",
                self.log()
            );
        }
    }

    /// Sends `signal` and waits (up to [`STOP_DEADLINE`]) for the exit;
    /// returns the status and how long the exit took. Panics on timeout.
    pub(crate) fn stop_with(&mut self, signal: libc::c_int) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("agent already stopped");
        // SAFETY: plain syscall on our own, not yet reaped, child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status, start.elapsed());
            }
            if start.elapsed() >= STOP_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sersync2 did not exit within {STOP_DEADLINE:?} of signal {signal}; stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
        }
    }

    /// SIGTERM; asserts a clean exit (status 0).
    pub(crate) fn stop(&mut self) {
        let (status, _) = self.stop_with(libc::SIGTERM);
        assert!(
            status.success(),
            "sersync2 exited with {status} after SIGTERM; stderr:\n{}",
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain syscall on our own, not yet reaped, child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < STOP_DEADLINE {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------
// Per-test environment and waiting
// ---------------------------------------------------------------------------

/// A test's world: its Dir (watched tree in `src/`, config, logs, fail log)
/// and two rsync daemons sharing port and password.
pub(crate) struct Setup {
    pub(crate) dir: Dir,
    pub(crate) src: PathBuf,
    pub(crate) a: RsyncDaemon,
    pub(crate) b: RsyncDaemon,
}

impl Setup {
    pub(crate) fn new(hint: &str) -> Setup {
        let dir = Dir::new(hint);
        let src = dir.mkdir_p("src");
        let (a, b) = RsyncDaemon::start_pair();
        Setup { dir, src, a, b }
    }

    /// The agent on [`conf`](Self::conf) with `extra` flags, once live.
    pub(crate) fn agent(&self, extra: &[&str]) -> Agent {
        Agent::start(&self.dir, &self.conf(), extra)
    }

    /// The agent on `conf` with `extra` flags, once live.
    pub(crate) fn agent_with(&self, conf: &Conf, extra: &[&str]) -> Agent {
        Agent::start(&self.dir, conf, extra)
    }

    /// The fail log of [`conf`](Self::conf).
    pub(crate) fn fail_log(&self) -> PathBuf {
        self.dir.join("fail.sh")
    }

    pub(crate) fn conf(&self) -> Conf {
        Conf::daemons(&self.src, &[&self.a, &self.b], &self.dir.join("fail.sh"))
    }

    pub(crate) fn remotes(&self) -> Vec<PathBuf> {
        vec![self.a.data_dir(), self.b.data_dir()]
    }

    /// Path inside the watched tree.
    pub(crate) fn p<P: AsRef<Path>>(&self, rel: P) -> PathBuf {
        self.src.join(rel)
    }

    /// Writes a file inside the watched tree (parents created).
    pub(crate) fn write<P: AsRef<Path>, B: AsRef<[u8]>>(&self, rel: P, bytes: B) -> PathBuf {
        self.dir.write(Path::new("src").join(rel), bytes)
    }

    pub(crate) fn logs(&self) -> String {
        format!(
            "--- rsyncd {} log (tail) ---\n{}\n--- rsyncd {} log (tail) ---\n{}",
            self.a.ip(),
            tail(&self.a.log(), 40),
            self.b.ip(),
            tail(&self.b.log(), 40)
        )
    }

    /// Waits until both remotes equal the source.
    pub(crate) fn wait(&self, agent: &mut Agent, step: &str) {
        self.wait_within(agent, step, DEADLINE);
    }

    /// Waits until both remotes hold every source entry, identical (delete off).
    pub(crate) fn wait_superset_within(&self, agent: &mut Agent, step: &str, deadline: Duration) {
        wait_for(
            agent,
            &self.src,
            &self.remotes(),
            step,
            deadline,
            &|| self.logs(),
            &mut |want, got| superset(want, got),
        );
    }

    pub(crate) fn wait_within(&self, agent: &mut Agent, step: &str, deadline: Duration) {
        wait_mirrored(agent, &self.src, &self.remotes(), step, deadline, &|| {
            self.logs()
        });
    }
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls until `check(source snapshot, remote snapshot)` is Ok for every
/// remote, the agent staying alive; on timeout panics with the last
/// difference, the tail of the agent's log and `logs()`.
pub(crate) fn wait_for(
    agent: &mut Agent,
    src: &Path,
    remotes: &[PathBuf],
    step: &str,
    deadline: Duration,
    logs: &dyn Fn() -> String,
    check: &mut dyn FnMut(&Snapshot, &Snapshot) -> Result<(), String>,
) {
    let start = Instant::now();
    loop {
        let expired = start.elapsed() >= deadline;
        let want = tree_snapshot(src);
        let mut diff = None;
        for r in remotes {
            if let Err(d) = check(&want, &tree_snapshot(r)) {
                diff = Some(format!("{}: {d}", r.display()));
                break;
            }
        }
        let Some(diff) = diff else { return };
        if expired {
            panic!(
                "step `{step}`: timed out after {deadline:?} waiting for the remotes: {diff}\n\
                 --- sersync2 stderr (tail) ---\n{}\n{}",
                tail(&agent.log(), 80),
                logs()
            );
        }
        agent.assert_running();
        std::thread::sleep(TREE_POLL); // poll interval, inside a deadline loop
    }
}

/// [`wait_for`] with exact equality.
pub(crate) fn wait_mirrored(
    agent: &mut Agent,
    src: &Path,
    remotes: &[PathBuf],
    step: &str,
    deadline: Duration,
    logs: &dyn Fn() -> String,
) {
    wait_for(
        agent,
        src,
        remotes,
        step,
        deadline,
        logs,
        &mut |want, got| snapshots_equal(want, got),
    );
}

/// Ok when every entry of `want` is in `got` with identical content.
pub(crate) fn superset(want: &Snapshot, got: &Snapshot) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (path, e) in want {
        match got.get(path) {
            None => diffs.push(format!("missing: {path:?} ({e:?})")),
            Some(g) if g != e => diffs.push(format!("differs: {path:?} ({e:?} vs {g:?})")),
            Some(_) => {}
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("not a superset: {}", diffs.join("; ")))
    }
}

pub(crate) fn rename<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) {
    let (from, to) = (from.as_ref(), to.as_ref());
    fs::rename(from, to)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", from.display(), to.display()));
}

pub(crate) fn remove_file<P: AsRef<Path>>(path: P) {
    let path = path.as_ref();
    fs::remove_file(path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
}

pub(crate) fn remove_dir_all<P: AsRef<Path>>(path: P) {
    let path = path.as_ref();
    fs::remove_dir_all(path).unwrap_or_else(|e| panic!("rm -rf {}: {e}", path.display()));
}

pub(crate) fn run_ok(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets a file's mtime to 2001-09-09 (so `rsync -u` never sees it as newer).
pub(crate) fn make_old(path: &Path) {
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(old))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// `sersync2`, to be given its arguments, run in `dir` (where the test's config is).
pub(crate) fn command(dir: &Dir) -> Command {
    let mut c = Command::new(sersync_bin());
    c.current_dir(dir.path());
    c
}

/// `sersync2 ARGS` to completion in `dir` (where the test's config is).
pub(crate) fn sersync2(dir: &Dir, args: &[&str]) -> std::process::Output {
    Command::new(sersync_bin())
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2")
}

/// `rm -rf to && cp -a from to`: a directory replaced by a copy, as a deploy does.
pub(crate) fn replace_by_copy(from: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to).unwrap_or_else(|e| panic!("rm -rf {}: {e}", to.display()));
    }
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// `sersync2 -o sersync.xml --wait-synced --timeout SECS` in `dir` (the agent of that
/// directory's config).
pub(crate) fn wait_synced(dir: &Dir, secs: u32) -> std::process::Output {
    let secs = secs.to_string();
    sersync2(
        dir,
        &["-o", "sersync.xml", "--wait-synced", "--timeout", &secs],
    )
}

/// A finished command's status and output, for assertion messages.
pub(crate) fn text(o: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The destinations the fail log's commands push to (the last word of each command).
pub(crate) fn fail_log_dests(path: &Path) -> Vec<String> {
    let log = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.starts_with("cd "))
        .filter_map(|l| l.rsplit(' ').next())
        .map(|w| w.trim_matches('\'').to_owned())
        .collect()
}

/// Remote b's destination as the agent writes it (`user@ip::module`).
pub(crate) fn b_dest(s: &Setup) -> String {
    format!("{}@{}::{}", s.b.user(), s.b.ip(), s.b.module())
}

/// The instance lock the root agent takes for `config`, whatever `--pid-file` says:
/// `/run/sersync2/<absolute config path, / as _>.pid` (docs/guide.md, "Running it as a service").
pub(crate) fn lock_file(config: &Path) -> PathBuf {
    let name = pid_name(config);
    assert!(
        name.len() <= 64 + ".pid".len(),
        "a config path this long gets a hashed name"
    );
    PathBuf::from(format!("/run/sersync2/{name}"))
}

/// The pid file's name the agent derives from a config path (its absolute path, `/` as
/// `_`, `%`, `_` and blanks escaped), in whichever lock directory it uses.
pub(crate) fn pid_name(config: &Path) -> String {
    let abs = fs::canonicalize(config).expect("canonical config path");
    let flat: String = abs
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| match c {
            '/' => "_".to_owned(),
            '%' | '_' | ' ' | '\t' | '\n' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect();
    format!("{flat}.pid")
}

/// The running instance's control socket for `config`: beside its lock.
pub(crate) fn control_socket(config: &Path) -> PathBuf {
    let mut s = lock_file(config).into_os_string();
    s.push(".sock");
    PathBuf::from(s)
}

/// `sersync2 ARGS -o CONF` to completion in `dir`: (exit code, stdout, stderr).
pub(crate) fn run_on(dir: &Dir, conf: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sersync_bin())
        .args(args)
        .arg("-o")
        .arg(conf)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------
// Agents started with -d, the status endpoint, a remote that never answers
// ---------------------------------------------------------------------------

/// The pid a `-d` agent wrote to its `--pid-file`.
pub(crate) fn read_pid(pid_file: &Path) -> i32 {
    fs::read_to_string(pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

/// An agent that detached itself (`-d`), by its pid: SIGTERMed on drop.
pub(crate) struct Detached(pub(crate) i32);

impl Drop for Detached {
    fn drop(&mut self) {
        // SAFETY: signalling the detached agent this test started.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
    }
}

/// The whole answer (head and body) to `GET path` on the status endpoint at
/// 127.0.0.1:`port`.
pub(crate) fn http_get(port: u16, path: &str) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the status endpoint");
    write!(c, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("read");
    text
}

/// [`http_get`] split into head and body.
pub(crate) fn http_head_body(port: u16, path: &str) -> (String, String) {
    let text = http_get(port, path);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_owned(), body.to_owned())
}

/// `GET /status` as JSON.
pub(crate) fn status_json(port: u16) -> serde_json::Value {
    let (_, body) = http_head_body(port, "/status");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("status JSON: {e}: {body}"))
}

/// A remote on [`SilentRemote::IP`] at a daemon's port that accepts connections and
/// never answers (a hung host); it holds them until dropped.
pub(crate) struct SilentRemote {
    port: u16,
    accepted: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentRemote {
    /// A third loopback address, beside [`RsyncDaemon::start_pair`]'s two.
    pub(crate) const IP: &'static str = "127.0.0.3";

    pub(crate) fn bind(port: u16) -> SilentRemote {
        let listener = TcpListener::bind((Self::IP, port)).expect("bind 127.0.0.3");
        let accepted = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, done) = (Arc::clone(&accepted), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for conn in listener.incoming() {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(c) = conn {
                        held.push(c);
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        SilentRemote {
            port,
            accepted,
            done,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for SilentRemote {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect((Self::IP, self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
