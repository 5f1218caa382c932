//! Shared fixtures for the integration tests: unique temp dirs, deadline
//! polling, directory-tree snapshots/diffs, and real `rsync --daemon` and
//! `sshd` servers bound to free ports, so end-to-end tests can exercise
//! `sersync2` against genuine remotes while running in parallel. The agent
//! under test, its config writer and a test's world of two daemons are in
//! [`agent`].

#![allow(dead_code)]

mod agent;
pub(crate) use agent::*;

/// The name of the test function this is expanded in: what the test's temp dir is named
/// after (ripgrep's `rgtest!` names each test's directory after the test the same way).
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::support::fn_name(std::any::type_name_of_val(&here))
    }};
}

/// [`Dir::new`] named after the test it is expanded in.
macro_rules! test_dir {
    () => {
        $crate::support::Dir::new(&$crate::support::dir_hint(test_name!()))
    };
}

/// [`Setup::new`] named after the test it is expanded in.
macro_rules! setup {
    () => {
        $crate::support::Setup::new(&$crate::support::dir_hint(test_name!()))
    };
}

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default deadline for anything we wait on; generous because CI is slow.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Interval between two evaluations of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many fresh ports a server fixture tries before giving up.
const START_ATTEMPTS: usize = 5;

/// Path of the `sersync2` binary built by cargo for this test run.
pub fn sersync_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sersync2"))
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

/// The function named by the `type_name` of a function item defined in it
/// (`crate::module::the_test::here`, closures skipped): its last segment but one.
pub fn fn_name(type_name: &'static str) -> &'static str {
    let segments: Vec<&'static str> = type_name
        .split("::")
        .filter(|s| !s.starts_with('{'))
        .collect();
    segments
        .len()
        .checked_sub(2)
        .map_or("test", |i| segments[i])
}

/// Most characters of a test's name a temp dir's name keeps: the config path in it
/// stays short enough for the instance lock's plain (not hashed) name.
const HINT_MAX: usize = 28;

/// A test's name as a temp dir's hint: `_` as `-` (the lock name escapes `_`),
/// at most [`HINT_MAX`] characters.
pub fn dir_hint(test_name: &str) -> String {
    test_name
        .chars()
        .take(HINT_MAX)
        .map(|c| if c == '_' { '-' } else { c })
        .collect()
}

/// A unique temporary directory, removed when dropped.
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    /// Creates a fresh directory whose name starts with `sersync-<hint>-`.
    pub fn new(name_hint: &str) -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("sersync-{name_hint}-"))
            .tempdir()
            .expect("create temp dir");
        Dir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join<P: AsRef<Path>>(&self, rel: P) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes `bytes` to `rel` (creating parent dirs) and returns the full path.
    pub fn write<P: AsRef<Path>, B: AsRef<[u8]>>(&self, rel: P, bytes: B) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
        }
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// `mkdir -p` of `rel`; returns the full path.
    pub fn mkdir_p<P: AsRef<Path>>(&self, rel: P) -> PathBuf {
        let path = self.join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", path.display()));
        path
    }

    /// Creates symlink `rel` -> `target` (creating parent dirs); returns its path.
    pub fn symlink<P: AsRef<Path>, T: AsRef<Path>>(&self, rel: P, target: T) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
        }
        symlink(target.as_ref(), &path)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
        path
    }
}

/// Writes `contents` to `path` and sets its permission bits to `mode`.
pub fn write_with_mode(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/// Polls `f` every [`POLL_INTERVAL`] until it returns true; panics naming
/// `what` if `deadline` elapses first. `f` is always evaluated at least once
/// more after the deadline expires, so a slow last poll is not lost.
pub fn wait_until<F: FnMut() -> bool>(what: &str, deadline: Duration, mut f: F) {
    let start = Instant::now();
    loop {
        let expired = start.elapsed() >= deadline;
        if f() {
            return;
        }
        if expired {
            panic!("timed out after {deadline:?} waiting until {what}");
        }
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

// ---------------------------------------------------------------------------
// Tree snapshots
// ---------------------------------------------------------------------------

/// One filesystem entry of a snapshot (links are never followed).
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
    /// FIFO, socket, device...: only the `st_mode` file-type bits are kept.
    Other(u32),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Dir => write!(f, "dir"),
            Entry::File(bytes) => write!(f, "file({} bytes: {})", bytes.len(), preview(bytes)),
            Entry::Symlink(target) => write!(f, "symlink -> {:?}", target),
            Entry::Other(kind) => write!(f, "special(mode {kind:o})"),
        }
    }
}

fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let shown = &bytes[..bytes.len().min(MAX)];
    let mut s = format!("{:?}", String::from_utf8_lossy(shown));
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}

/// Relative path -> entry, for every entry below a root (root excluded).
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Snapshots the tree under `root` without following symlinks. Entries that
/// vanish while being walked (e.g. rsync temp files) are skipped, so this is
/// safe to call on a tree that is being modified. A missing root yields an
/// empty snapshot.
pub fn tree_snapshot<P: AsRef<Path>>(root: P) -> Snapshot {
    let root = root.as_ref();
    let mut out = Snapshot::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(abs: &Path, rel: &Path, out: &mut Snapshot) {
    let entries = match fs::read_dir(abs) {
        Ok(it) => it,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => panic!("read_dir {}: {e}", abs.display()),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => panic!("read_dir entry in {}: {e}", abs.display()),
        };
        let name = entry.file_name();
        let child_abs = abs.join(&name);
        let child_rel = rel.join(&name);
        let meta = match fs::symlink_metadata(&child_abs) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => panic!("lstat {}: {e}", child_abs.display()),
        };
        let ft = meta.file_type();
        let item = if ft.is_symlink() {
            match fs::read_link(&child_abs) {
                Ok(target) => Entry::Symlink(target),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => panic!("readlink {}: {e}", child_abs.display()),
            }
        } else if ft.is_dir() {
            walk(&child_abs, &child_rel, out);
            Entry::Dir
        } else if ft.is_file() {
            match fs::read(&child_abs) {
                Ok(bytes) => Entry::File(bytes),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => panic!("read {}: {e}", child_abs.display()),
            }
        } else {
            use std::os::unix::fs::MetadataExt;
            Entry::Other(meta.mode() & libc::S_IFMT)
        };
        out.insert(child_rel, item);
    }
}

/// Compares two snapshots; `Err` lists (up to a limit) the paths missing
/// from `b`, extra in `b`, and differing between them.
pub fn snapshots_equal(a: &Snapshot, b: &Snapshot) -> Result<(), String> {
    const MAX_REPORTED: usize = 20;
    let mut diffs = Vec::new();
    for (path, ea) in a {
        match b.get(path) {
            None => diffs.push(format!("missing: {} ({ea:?})", show(path))),
            Some(eb) if eb != ea => diffs.push(describe_difference(path, ea, eb)),
            Some(_) => {}
        }
    }
    for (path, eb) in b {
        if !a.contains_key(path) {
            diffs.push(format!("extra:   {} ({eb:?})", show(path)));
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "{} difference(s) ({} vs {} entries):\n",
        diffs.len(),
        a.len(),
        b.len()
    );
    for d in diffs.iter().take(MAX_REPORTED) {
        let _ = writeln!(msg, "  {d}");
    }
    if diffs.len() > MAX_REPORTED {
        let _ = writeln!(msg, "  ... and {} more", diffs.len() - MAX_REPORTED);
    }
    Err(msg)
}

fn describe_difference(path: &Path, a: &Entry, b: &Entry) -> String {
    match (a, b) {
        (Entry::File(x), Entry::File(y)) => {
            let first = x
                .iter()
                .zip(y.iter())
                .position(|(p, q)| p != q)
                .unwrap_or(x.len().min(y.len()));
            format!(
                "differs: {} (contents differ at byte {first}: {a:?} vs {b:?})",
                show(path)
            )
        }
        _ => format!("differs: {} ({a:?} vs {b:?})", show(path)),
    }
}

/// Printable form of a possibly non-UTF-8 relative path.
fn show(path: &Path) -> String {
    let bytes = path.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("{:?} (non-UTF-8)", OsStr::from_bytes(bytes)),
    }
}

/// Compares the trees under `a` (expected, e.g. the source) and `b` (e.g.
/// the mirror). `Err` describes the first differences.
pub fn trees_equal<P: AsRef<Path>, Q: AsRef<Path>>(a: P, b: Q) -> Result<(), String> {
    let (a, b) = (a.as_ref(), b.as_ref());
    snapshots_equal(&tree_snapshot(a), &tree_snapshot(b))
        .map_err(|d| format!("{} vs {}: {d}", a.display(), b.display()))
}

/// Waits until the trees under `src` and `dst` are equal; on timeout panics
/// with the last observed difference.
pub fn wait_trees_equal<P: AsRef<Path>, Q: AsRef<Path>>(src: P, dst: Q, deadline: Duration) {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let start = Instant::now();
    loop {
        let expired = start.elapsed() >= deadline;
        let last = match trees_equal(src, dst) {
            Ok(()) => return,
            Err(diff) => diff,
        };
        if expired {
            panic!("timed out after {deadline:?} waiting for trees to match: {last}");
        }
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

// ---------------------------------------------------------------------------
// Child server processes
// ---------------------------------------------------------------------------

/// A spawned server running in its own process group, so that killing it
/// also kills the per-connection children it forked.
struct Server {
    child: Child,
}

impl Server {
    fn spawn(cmd: &mut Command, log: &Path) -> Server {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Server { child }
    }

    fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn kill(mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall; pgid is our own child's process group,
        // which stays valid until we reap the child below.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on `ip` that was free a moment ago (a race with other tests is
/// possible; callers retry on failure).
pub fn free_port(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    listener.local_addr().expect("local_addr").port()
}

/// Whether `port` on `ip` can be bound right now.
fn port_is_free(ip: &str, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

fn accepts_tcp(ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("socket address");
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Polls until `probe` succeeds (the server is ours and ready) or the server
/// exits (e.g. it lost the port race). Returns whether it became ready.
fn wait_ready<F: FnMut() -> bool>(server: &mut Server, what: &str, mut probe: F) -> bool {
    let start = Instant::now();
    loop {
        if server.has_exited() {
            return false;
        }
        if probe() {
            return true;
        }
        if start.elapsed() >= DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for {what} to accept connections");
        }
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// A process-unique, hard-to-guess token (used for passwords so a probe can
/// tell our daemon from another test's daemon that grabbed the same port).
fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}x{}x{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// rsync daemon
// ---------------------------------------------------------------------------

/// A real `rsync --daemon` with one password-protected, writable module.
/// It runs with `use chroot = yes`: unchrooted, rsync sanitizes received
/// symlink targets (`/etc` arrives as `etc`), which would hide what the
/// client sent.
///
/// Layout of its temp dir: `rsyncd.conf`, `rsyncd.secrets` (0600,
/// `sersync:<password>`), `client.pass` (0600, the password, for
/// `--password-file`), `rsyncd.pid`, `rsyncd.log`, `daemon.out` (its
/// stdout/stderr) and `data/` (the module path).
pub struct RsyncDaemon {
    dir: Dir,
    ip: String,
    port: u16,
    module: String,
    password: String,
    server: Option<Server>,
}

impl RsyncDaemon {
    pub const USER: &'static str = "sersync";

    /// Starts a daemon on `ip` (any 127.x.y.z works on Linux) serving module
    /// `mod`.
    pub fn start(ip: &str) -> RsyncDaemon {
        RsyncDaemon::start_module(ip, "mod")
    }

    /// Starts a daemon on `ip` serving a module named `module`.
    pub fn start_module(ip: &str, module: &str) -> RsyncDaemon {
        let password = format!("pw{}", unique_token());
        let mut daemon = RsyncDaemon::prepare(ip, module, &password);
        for _ in 0..START_ATTEMPTS {
            daemon.port = free_port(ip);
            if daemon.try_launch() {
                return daemon;
            }
        }
        panic!(
            "rsync daemon on {ip} failed to start {START_ATTEMPTS} times; last output:\n{}\n{}",
            read_log(&daemon.dir.join("daemon.out")),
            read_log(&daemon.dir.join("rsyncd.log"))
        );
    }

    /// Starts two daemons serving module `mod` on 127.0.0.1 and 127.0.0.2 with
    /// the SAME port, user and password, as one sersync config requires (it
    /// has a single `<userDefinedPort>` and `<auth>` for all its remotes).
    /// Either daemon's [`password_file`](Self::password_file) works for both.
    pub fn start_pair() -> (RsyncDaemon, RsyncDaemon) {
        RsyncDaemon::start_pair_on("127.0.0.1", "127.0.0.2")
    }

    /// [`start_pair`](Self::start_pair) on two chosen loopback addresses.
    pub fn start_pair_on(ip_a: &str, ip_b: &str) -> (RsyncDaemon, RsyncDaemon) {
        let mut all = RsyncDaemon::start_many(&[ip_a, ip_b]).into_iter();
        match (all.next(), all.next()) {
            (Some(a), Some(b)) => (a, b),
            _ => unreachable!("start_many returns one daemon per address"),
        }
    }

    /// Daemons serving module `mod` on each of `ips` with the SAME port, user and
    /// password (one config's remotes), in the order given.
    pub fn start_many(ips: &[&str]) -> Vec<RsyncDaemon> {
        let password = format!("pw{}", unique_token());
        let mut all: Vec<RsyncDaemon> = ips
            .iter()
            .map(|ip| RsyncDaemon::prepare(ip, "mod", &password))
            .collect();
        for _ in 0..START_ATTEMPTS * 4 {
            let port = free_port(ips[0]);
            if !ips.iter().all(|ip| port_is_free(ip, port)) {
                continue;
            }
            let mut up = 0;
            for d in all.iter_mut() {
                d.port = port;
                if !d.try_launch() {
                    break;
                }
                up += 1;
            }
            if up == all.len() {
                return all;
            }
            for d in all.iter_mut().take(up) {
                if let Some(server) = d.server.take() {
                    server.kill();
                }
            }
        }
        panic!(
            "rsync daemons on {ips:?} failed to start on one port; last output:\n{}",
            all.iter()
                .map(|d| format!("{}\n{}", read_log(&d.dir.join("daemon.out")), d.log()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Writes the config, secrets and client password file; does not launch.
    fn prepare(ip: &str, module: &str, password: &str) -> RsyncDaemon {
        let dir = Dir::new("rsyncd");
        fs::create_dir(dir.join("data")).expect("create rsyncd data dir");
        let conf = format!(
            "use chroot = yes\n\
             uid = root\n\
             gid = root\n\
             pid file = {pid}\n\
             log file = {log}\n\
             transfer logging = yes\n\
             \n\
             [{module}]\n\
             \tpath = {data}\n\
             \tread only = no\n\
             \tlist = yes\n\
             \tmunge symlinks = no\n\
             \tauth users = {user}\n\
             \tsecrets file = {secrets}\n",
            pid = dir.join("rsyncd.pid").display(),
            log = dir.join("rsyncd.log").display(),
            data = dir.join("data").display(),
            user = Self::USER,
            secrets = dir.join("rsyncd.secrets").display(),
        );
        fs::write(dir.join("rsyncd.conf"), conf).expect("write rsyncd.conf");
        write_with_mode(
            &dir.join("rsyncd.secrets"),
            format!("{}:{password}\n", Self::USER).as_bytes(),
            0o600,
        );
        write_with_mode(&dir.join("client.pass"), password.as_bytes(), 0o600);
        RsyncDaemon {
            dir,
            ip: ip.to_string(),
            port: 0,
            module: module.to_string(),
            password: password.to_string(),
            server: None,
        }
    }

    /// Launches on the current port; true once it serves our module.
    fn try_launch(&mut self) -> bool {
        // A stale pid file (left by SIGKILL) makes rsync refuse to start.
        let _ = fs::remove_file(self.dir.join("rsyncd.pid"));
        let mut cmd = Command::new("rsync");
        cmd.arg("--daemon")
            .arg("--no-detach")
            .arg(format!(
                "--config={}",
                self.dir.join("rsyncd.conf").display()
            ))
            .arg(format!("--address={}", self.ip))
            // The log file is set in rsyncd.conf: given as --log-file, this
            // rsync (3.5.0) leaves out the per-file transfer lines.
            .arg(format!("--port={}", self.port));
        let mut server = Server::spawn(&mut cmd, &self.dir.join("daemon.out"));
        let what = format!("rsync daemon on {}:{}", self.ip, self.port);
        let ready = wait_ready(&mut server, &what, || {
            accepts_tcp(&self.ip, self.port) && self.probe_module()
        });
        if ready {
            self.server = Some(server);
        } else {
            server.kill();
        }
        ready
    }

    /// Lists the module with our credentials: succeeds only on our daemon.
    fn probe_module(&self) -> bool {
        Command::new("rsync")
            .arg("--list-only")
            .arg("--contimeout=5")
            .arg("--timeout=10")
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--password-file={}",
                self.password_file().display()
            ))
            .arg(format!("{}/", self.remote()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Makes the module `read only = yes` (or writable again): the daemon reads its
    /// config at each connection.
    pub fn set_read_only(&self, on: bool) {
        let path = self.dir.join("rsyncd.conf");
        let conf = fs::read_to_string(&path).expect("read rsyncd.conf");
        let (from, to) = if on {
            ("read only = no", "read only = yes")
        } else {
            ("read only = yes", "read only = no")
        };
        fs::write(&path, conf.replace(from, to)).expect("write rsyncd.conf");
    }

    pub fn ip(&self) -> &str {
        &self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn module(&self) -> &str {
        &self.module
    }

    pub fn user(&self) -> &str {
        Self::USER
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Client-side password file (mode 0600) for `--password-file`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("client.pass")
    }

    /// The module's path: what the remote side holds.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `sersync@<ip>::<module>` (combine with `--port=` and `--password-file=`).
    pub fn remote(&self) -> String {
        format!("{}@{}::{}", Self::USER, self.ip, self.module)
    }

    /// Daemon log (`log file` in rsyncd.conf; with `transfer logging`, one
    /// line per file received or deleted), handy in failure messages.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("rsyncd.log"))
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Runs plain `rsync -a <src>/ <remote>/` against this daemon.
    pub fn push(&self, src: &Path) -> Output {
        Command::new("rsync")
            .arg("-a")
            .arg("--contimeout=10")
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--password-file={}",
                self.password_file().display()
            ))
            .arg(with_trailing_slash(src))
            .arg(format!("{}/", self.remote()))
            .stdin(Stdio::null())
            .output()
            .expect("run rsync client")
    }

    /// Stops the daemon with SIGSTOP: the kernel still accepts connections on its port,
    /// and nobody answers them (a hung remote). [`resume`](Self::resume) undoes it.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`pause`](Self::pause): the connections waiting are served.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(server) = &self.server {
            // SAFETY: plain syscall on our own, not yet reaped, child.
            unsafe {
                libc::kill(server.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Kills the daemon (and its connection children); keeps the data dir.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
        // Deterministic outage: wait until nothing accepts on the port.
        wait_until(
            &format!("rsync daemon {}:{} stops accepting", self.ip, self.port),
            DEADLINE,
            || !accepts_tcp(&self.ip, self.port),
        );
    }

    /// Starts the daemon again with the same address, port and config.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..START_ATTEMPTS {
            if self.try_launch() {
                return;
            }
        }
        panic!(
            "rsync daemon failed to restart on {}:{}; output:\n{}\n{}",
            self.ip,
            self.port,
            read_log(&self.dir.join("daemon.out")),
            self.log()
        );
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        self.resume();
        if let Some(server) = self.server.take() {
            server.kill();
        }
    }
}

fn with_trailing_slash(path: &Path) -> std::ffi::OsString {
    let mut s = path.as_os_str().to_os_string();
    if !s.as_bytes().ends_with(b"/") {
        s.push("/");
    }
    s
}

// ---------------------------------------------------------------------------
// sshd
// ---------------------------------------------------------------------------

/// A real `sshd` on 127.0.0.1 accepting root with a generated client key.
///
/// Layout of its temp dir: `host_ed25519`, `client_ed25519(.pub)`,
/// `authorized_keys`, `sshd_config`, `sshd.pid`, `sshd.log` and `dest/`
/// (the remote directory for ssh-mode tests).
pub struct Sshd {
    dir: Dir,
    port: u16,
    server: Option<Server>,
}

impl Sshd {
    pub const HOST: &'static str = "127.0.0.1";

    pub fn start() -> Sshd {
        let dir = Dir::new("sshd");
        fs::create_dir(dir.join("dest")).expect("create sshd dest dir");
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (privsep dir)");
        keygen(&dir.join("host_ed25519"));
        keygen(&dir.join("client_ed25519"));
        let pubkey = fs::read(dir.join("client_ed25519.pub")).expect("read client pubkey");
        write_with_mode(&dir.join("authorized_keys"), &pubkey, 0o600);

        let mut sshd = Sshd {
            dir,
            port: 0,
            server: None,
        };
        for _ in 0..START_ATTEMPTS {
            sshd.port = free_port(Self::HOST);
            sshd.write_config();
            if sshd.try_launch() {
                return sshd;
            }
        }
        panic!(
            "sshd failed to start {START_ATTEMPTS} times; last output:\n{}",
            read_log(&sshd.dir.join("sshd.log"))
        );
    }

    fn write_config(&self) {
        let conf = format!(
            "Port {port}\n\
             ListenAddress {host}\n\
             HostKey {hostkey}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authkeys}\n\
             PermitRootLogin yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             StrictModes no\n\
             UsePAM no\n\
             MaxStartups 100\n\
             LogLevel ERROR\n",
            port = self.port,
            host = Self::HOST,
            hostkey = self.dir.join("host_ed25519").display(),
            pid = self.dir.join("sshd.pid").display(),
            authkeys = self.dir.join("authorized_keys").display(),
        );
        fs::write(self.dir.join("sshd_config"), conf).expect("write sshd_config");
    }

    fn try_launch(&mut self) -> bool {
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.join("sshd_config"));
        let mut server = Server::spawn(&mut cmd, &self.dir.join("sshd.log"));
        let what = format!("sshd on {}:{}", Self::HOST, self.port);
        let ready = wait_ready(&mut server, &what, || {
            accepts_tcp(Self::HOST, self.port) && self.probe_login()
        });
        if ready {
            self.server = Some(server);
        } else {
            server.kill();
        }
        ready
    }

    /// Logs in with our key: succeeds only on our sshd.
    fn probe_login(&self) -> bool {
        let mut argv = self.ssh_argv();
        let program = argv.remove(0);
        Command::new(program)
            .args(argv)
            .arg("-o")
            .arg("ConnectTimeout=5")
            .arg(Self::HOST)
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn ssh_argv(&self) -> Vec<String> {
        vec![
            "ssh".to_string(),
            "-F".to_string(),
            "/dev/null".to_string(),
            "-p".to_string(),
            self.port.to_string(),
            "-i".to_string(),
            self.key_path().display().to_string(),
            "-o".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "-o".to_string(),
            "StrictHostKeyChecking=no".to_string(),
            "-o".to_string(),
            "UserKnownHostsFile=/dev/null".to_string(),
            "-o".to_string(),
            "BatchMode=yes".to_string(),
            "-o".to_string(),
            "LogLevel=ERROR".to_string(),
        ]
    }

    /// Remote shell command for `rsync -e` / `RSYNC_RSH` (space separated;
    /// temp paths contain no spaces).
    pub fn ssh_command(&self) -> String {
        self.ssh_argv().join(" ")
    }

    pub fn host(&self) -> &str {
        Self::HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user accepted by this sshd.
    pub fn user(&self) -> &str {
        "root"
    }

    /// Private client key accepted by this sshd.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("client_ed25519")
    }

    /// Directory serving as the remote destination in ssh mode.
    pub fn dest_dir(&self) -> PathBuf {
        self.dir.join("dest")
    }

    /// sshd's stderr log, handy in failure messages.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("sshd.log"))
    }

    /// Kills sshd (and its session children); keeps the dest dir.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
        wait_until(
            &format!("sshd {}:{} stops accepting", Self::HOST, self.port),
            DEADLINE,
            || !accepts_tcp(Self::HOST, self.port),
        );
    }

    /// Starts sshd again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..START_ATTEMPTS {
            if self.try_launch() {
                return;
            }
        }
        panic!(
            "sshd failed to restart on port {}; output:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "sersync-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Unprivileged users, for tests that act as an attacker
// ---------------------------------------------------------------------------

/// A system user created for one test (no home, no login shell); removed on drop.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// Creates a fresh user whose name carries `role`, or None (with a printed reason)
    /// where that is impossible (not root, no useradd).
    pub fn create(role: &str) -> Option<User> {
        static N: AtomicU64 = AtomicU64::new(0);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating a test user needs root");
            return None;
        }
        let name = format!(
            "ss{role}{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let made = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", &name])
            .stdin(Stdio::null())
            .output();
        match made {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!(
                    "skipped: useradd {name} failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                return None;
            }
            Err(e) => {
                eprintln!("skipped: cannot run useradd: {e}");
                return None;
            }
        }
        // Removed on drop from here on, even if a lookup below fails.
        let mut user = User {
            name,
            uid: 0,
            gid: 0,
        };
        let id = |flag: &str| -> u32 {
            let o = Command::new("id")
                .args([flag, &user.name])
                .output()
                .expect("run id");
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .expect("a numeric id")
        };
        (user.uid, user.gid) = (id("-u"), id("-g"));
        Some(user)
    }

    /// `setpriv` running `program` as this user, with no supplementary groups.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(program);
        c
    }

    /// `program ARGS` as this user, to completion, whatever its status.
    pub fn output(&self, program: &str, args: &[&OsStr]) -> Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program} as {}: {e}", self.name))
    }

    /// Runs a command as this user; panics if it fails.
    pub fn run(&self, program: &str, args: &[&OsStr]) {
        let out = self.output(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} as {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
