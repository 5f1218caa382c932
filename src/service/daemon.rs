//! One instance per config file (an flock'd lock file found from the config's identity),
//! detaching with `-d`, and a log file that logrotate can move (reopened on SIGUSR1, and on SIGHUP).
//!
//! The instance lock is [`lock_file`]: a name derived from the config's absolute path in
//! the private lock directory, whatever `--pid-file` says. So a second start of one
//! config is refused with or without `--pid-file`, and the commands that ask the running
//! instance (`--status`, `--wait-synced`, `--replay`) find it and its control socket
//! from `-o FILE` alone. `--pid-file` adds a pid file for service managers and scripts,
//! flock'd too (two configs cannot share one).
//!
//! The lock file, the pid file and the log file are files the agent trusts
//! (`sys::fsafe`): opened without following a link and checked on the descriptor (a
//! regular file of the agent's user, not writable by group or others). A refused log
//! file at a reopen leaves the old one in use, with one error line written to it.
//! The lock directory is one only the agent's user can write ([`default_lock_dir`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sys::process::{self, Forked};
use crate::sys::{flock, fsafe};

/// A config's identity: its absolute path with every link resolved, so that `-o
/// web.xml` run in /etc/sersync, `-o /etc/sersync/web.xml` and a path through a linked
/// directory all name one instance. A config that is gone (deleted, or renamed while
/// the instance runs) is named by its directory resolved and its file name. The path,
/// not the file's inode: an editor that saves by writing a new file and renaming it
/// over the old one changes the inode, and the running instance must still be found.
pub fn config_identity(config: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(config) {
        return real;
    }
    let abs = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(abs),
        _ => abs,
    }
}

/// The config's absolute path as one file name, as its pid file has it
/// (`etc_sersync.d_web.xml`).
pub fn config_file_name(config: &Path) -> String {
    pid_file_name(&config_identity(config))
}

/// The instance lock of a config: `<config path>.pid` in [`default_lock_dir`], from
/// [`config_identity`], the leading `/` dropped and each other `/` written `_`. To keep
/// the mapping one to one, `%`, `_` and whitespace are percent-encoded first (`%25`,
/// `%5F`, `%20`), so `/x/a/b.xml` and `/x/a_b.xml` get different files; a path without
/// them keeps the plain name (`/etc/sersync.d/web.xml` → `etc_sersync.d_web.xml.pid`).
/// It holds the running instance's pid; its control socket is beside it
/// (`<lock file>.sock`).
pub fn lock_file(config: &Path) -> PathBuf {
    default_lock_dir().join(format!(
        "{}.pid",
        fit_name(&pid_file_name(&config_identity(config)))
    ))
}

/// Longest name kept as it is: the control socket's path (`<dir>/<name>.pid.sock`) must
/// fit a unix socket address (107 bytes) with the lock directory in front.
const NAME_MAX: usize = 64;

/// `name`, or when it is longer than [`NAME_MAX`], its start and a hash of the whole
/// (`<first 47 bytes>~<16 hex digits>`): still one name per config.
fn fit_name(name: &str) -> String {
    if name.len() <= NAME_MAX {
        return name.to_owned();
    }
    // FNV-1a, 64 bits: stable across versions, which a lock name must be.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut end = NAME_MAX - 17;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{hash:016x}", &name[..end])
}

/// The one-to-one file name for an absolute config path (see [`lock_file`]).
fn pid_file_name(abs: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = abs.as_os_str().as_bytes();
    let bytes = bytes.strip_prefix(b"/").unwrap_or(bytes);
    let mut name = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '/' => name.push('_'),
                '%' | '_' => name.push_str(&format!("%{:02X}", c as u32)),
                c if c.is_whitespace() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        name.push_str(&format!("%{b:02X}"));
                    }
                }
                c => name.push(c),
            }
        }
        for b in chunk.invalid() {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name
}

/// Where lock and pid files go by default, a directory only the agent's user can write:
/// `/run/sersync2` as root; else `$XDG_RUNTIME_DIR/sersync2` when XDG_RUNTIME_DIR is a
/// directory of this user with mode 0700; else `sersync2-<uid>` in the temp directory
/// ($TMPDIR or /tmp). Never a predictable name shared in a world-writable directory.
pub fn default_lock_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if crate::sys::is_root() {
        return PathBuf::from("/run/sersync2");
    }
    let uid = fsafe::euid();
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        let private = std::fs::symlink_metadata(&xdg)
            .map(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
            .unwrap_or(false);
        if xdg.is_absolute() && private {
            return xdg.join("sersync2");
        }
    }
    std::env::temp_dir().join(format!("sersync2-{uid}"))
}

/// Creates (0755 as root, else 0700) and checks [`default_lock_dir`]: it must be a real
/// directory owned by the agent's user that nobody else can write.
pub fn prepare_default_lock_dir() -> std::io::Result<PathBuf> {
    let mode = if crate::sys::is_root() { 0o755 } else { 0o700 };
    fsafe::private_dir(&default_lock_dir(), mode)
}

/// Why the instance lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another instance runs this config.
    Held(String),
    /// The pid file failed the checks for a file the agent trusts.
    Refused(String),
    /// Anything else (a directory that cannot be created, an I/O error).
    Failed(String),
}

impl std::error::Error for LockError {}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held(m) | LockError::Refused(m) | LockError::Failed(m) => f.write_str(m),
        }
    }
}

/// Why no instance holds a lock ([`InstanceLock::running`]).
#[derive(Debug, thiserror::Error)]
pub enum NotRunning {
    /// No file at the path, or it cannot be opened.
    #[error("no lock at {} ({err})", .path.display())]
    NoLock { path: PathBuf, err: std::io::Error },
    /// The file is there and nobody holds its lock.
    #[error("the lock {} is not held", .path.display())]
    NotHeld { path: PathBuf },
}

/// A held instance lock: the pid file, flock'd for as long as this process lives.
/// A crashed instance's lock is released by the kernel, so a stale file never blocks.
pub struct InstanceLock {
    file: File,
    pub path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock or says who holds it.
    #[cfg(test)]
    fn acquire(path: &Path) -> Result<InstanceLock, String> {
        InstanceLock::acquire_checked(path).map_err(|e| e.to_string())
    }

    /// Takes the lock; the pid file is opened without following a link and must be a
    /// regular file of the agent's user that nobody else can write (a missing one is
    /// created, mode 0644).
    pub fn acquire_checked(path: &Path) -> Result<InstanceLock, LockError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| LockError::Failed(format!("cannot create {}: {e}", dir.display())))?;
            // Another user who can rename or remove the pid file in its directory could
            // let a second instance of this config start: the fail log's rule.
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            fsafe::TrustedDir::open(dir, path).map_err(|e| {
                if fsafe::is_refused(&e) {
                    LockError::Refused(format!("refusing the pid file {}: {e}", path.display()))
                } else {
                    LockError::Failed(format!("cannot open {}: {e}", dir.display()))
                }
            })?;
        }
        let mut file =
            fsafe::open_trusted(path, libc::O_RDWR | libc::O_CREAT, 0o644).map_err(|e| {
                if fsafe::is_refused(&e) {
                    LockError::Refused(format!("refusing the pid file {}: {e}", path.display()))
                } else {
                    LockError::Failed(format!("cannot open the pid file {}: {e}", path.display()))
                }
            })?;
        if flock::lock_exclusive(&file).is_err() {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.trim();
            return Err(LockError::Held(format!(
                "another sersync2 already runs this config (pid {}, lock {})",
                if pid.is_empty() { "unknown" } else { pid },
                path.display()
            )));
        }
        let mut lock = InstanceLock {
            file,
            path: path.to_path_buf(),
        };
        lock.write_pid()?;
        Ok(lock)
    }

    /// Records this process's pid (again after a fork); an error is `Failed`.
    pub fn write_pid(&mut self) -> Result<(), LockError> {
        let pid = std::process::id();
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{pid}")?;
            f.sync_all()
        };
        write(&mut self.file).map_err(|e| {
            LockError::Failed(format!(
                "cannot write the pid file {}: {e}",
                self.path.display()
            ))
        })
    }

    /// The pid recorded by whoever holds (or held) the lock at `path` (a link there is
    /// not followed).
    pub fn holder(path: &Path) -> Option<u32> {
        let mut text = String::new();
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .ok()?
            .read_to_string(&mut text)
            .ok()?;
        text.trim().parse().ok()
    }

    /// Who holds the lock at `path` now, for `--status`: the pid it recorded if the
    /// lock is held, `Err` with the reason when it is not (or cannot be told). The probe
    /// takes a shared lock for an instant when the lock is free.
    pub fn running(path: &Path) -> Result<Option<u32>, NotRunning> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|err| NotRunning::NoLock {
                path: path.to_path_buf(),
                err,
            })?;
        if !flock::held_elsewhere(&file) {
            return Err(NotRunning::NotHeld {
                path: path.to_path_buf(),
            });
        }
        Ok(InstanceLock::holder(path))
    }

    /// Whether `path` still names the very file this lock holds.
    fn still_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
            _ => false,
        }
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        if self.still_ours() && InstanceLock::holder(&self.path) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A running instance's locks: the config's instance lock ([`lock_file`]) and, with
/// `--pid-file`, that file too, both flock'd and holding this process's pid.
pub struct Instance {
    pub lock: InstanceLock,
    pub pid_file: Option<InstanceLock>,
}

impl Instance {
    /// Takes the instance lock of `config`, then the `--pid-file` (when it names
    /// another file). The lock directory must already be prepared
    /// ([`prepare_default_lock_dir`]). `Held` names the pid of the instance that runs
    /// this config; a pid file held by another instance (another config's) is `Failed`.
    pub fn acquire(config: &Path, pid_file: Option<&Path>) -> Result<Instance, LockError> {
        let lock = InstanceLock::acquire_checked(&lock_file(config))?;
        let pid_file = match pid_file {
            Some(p) if p != lock.path => {
                Some(InstanceLock::acquire_checked(p).map_err(|e| match e {
                    LockError::Held(_) => LockError::Failed(format!(
                            "the pid file {} is held by another sersync2 (pid {}), which runs \
                         another config: give each config its own --pid-file",
                            p.display(),
                            InstanceLock::holder(p)
                                .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
                        )),
                    other => other,
                })?)
            }
            _ => None,
        };
        Ok(Instance { lock, pid_file })
    }

    /// Records this process's pid in both files (again after a fork).
    pub fn write_pid(&mut self) -> Result<(), LockError> {
        self.lock.write_pid()?;
        if let Some(p) = &mut self.pid_file {
            p.write_pid()?;
        }
        Ok(())
    }
}

/// The parent's end of the readiness pipe: it exits 0 once the child says "ready".
pub struct Detached {
    /// In the child: where to report readiness or the fatal error.
    report: File,
}

impl Detached {
    pub fn ready(mut self) {
        let _ = self.report.write_all(b"ready\n");
    }

    pub fn failed(mut self, message: &str) {
        let _ = self.report.write_all(message.as_bytes());
    }
}

/// Forks; the parent waits for the child's report and exits with 0 (ready) or 1 (the
/// child's error, printed). The child starts a new session, moves to `/`, points
/// stdin/stdout/stderr at /dev/null and returns its end of the pipe (the caller then
/// calls `logging::detached`).
/// Must be called before any thread is started.
pub fn detach() -> std::io::Result<Detached> {
    match process::fork_detached()? {
        Forked::Child(write_end) => Ok(Detached { report: write_end }),
        Forked::Parent(mut read_end) => {
            let mut text = String::new();
            let _ = read_end.read_to_string(&mut text);
            if text.starts_with("ready") {
                std::process::exit(0);
            }
            if text.is_empty() {
                text = "the daemon exited during start-up without a message".to_owned();
            }
            eprintln!("sersync2: {}", text.trim_end());
            std::process::exit(1);
        }
    }
}

/// A log file that is reopened (by path) when SIGUSR1 or SIGHUP sets `reopen`.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
    reopen: Arc<AtomicBool>,
}

/// Opens the log file for appending (created 0640), refusing a link, another user's
/// file or one writable by group or others (see `sys::fsafe`).
fn open_log(path: &Path) -> std::io::Result<File> {
    fsafe::open_trusted(path, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, 0o640)
}

impl LogFile {
    pub fn open(path: &Path) -> std::io::Result<(LogFile, Arc<AtomicBool>)> {
        let reopen = Arc::new(AtomicBool::new(false));
        Ok((
            LogFile {
                path: path.to_path_buf(),
                file: Mutex::new(open_log(path)?),
                reopen: Arc::clone(&reopen),
            },
            reopen,
        ))
    }
}

/// The writer env_logger gets: each record goes to the current log file.
pub struct LogWriter(pub Arc<LogFile>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let log = &self.0;
        let mut f = log.file.lock().unwrap_or_else(|e| e.into_inner());
        if log.reopen.swap(false, Ordering::Relaxed) {
            match open_log(&log.path) {
                Ok(new) => *f = new,
                // One error line per refused reopen, written to the file still open (the
                // logger cannot log from inside itself).
                Err(e) => {
                    let line = format!(
                        "[{} ERROR] cannot reopen the log file (SIGUSR1 or SIGHUP): {e}; still \
                         writing to the file opened before\n",
                        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    );
                    let _ = f.write_all(line.as_bytes());
                }
            }
        }
        f.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_name_follows_the_config_path() {
        let p = lock_file(Path::new("/etc/sersync.d/web.xml"));
        assert!(
            p.to_string_lossy().ends_with("etc_sersync.d_web.xml.pid"),
            "{}",
            p.display()
        );
    }

    // `/x/a/b.xml` and `/x/a_b.xml` both mapped to `x_a_b.xml.pid` and shared a lock.
    #[test]
    fn configs_whose_paths_differ_only_in_slash_and_underscore_get_different_pid_files() {
        let names: Vec<String> = [
            "/x/a/b.xml",
            "/x/a_b.xml",
            "/x/a%5Fb.xml",
            "/x/a b.xml",
            "/x/a%20b.xml",
            "/x/a_b/c.xml",
            "/x/a/b_c.xml",
        ]
        .iter()
        .map(|p| pid_file_name(Path::new(p)))
        .collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(pid_file_name(Path::new("/x/a/b.xml")), "x_a_b.xml");
        assert_eq!(pid_file_name(Path::new("/x/a_b.xml")), "x_a%5Fb.xml");
        assert!(names.iter().all(|n| !n.contains('/')), "{names:?}");
    }

    // Under the shipped unit (`--pid-file /run/sersync2/%i.pid`) the lock was that file,
    // so `--status`, `--wait-synced` and a second start without --pid-file missed it.
    #[test]
    fn every_path_to_one_config_names_one_lock() {
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("etc");
        std::fs::create_dir(&real).expect("mkdir");
        let config = real.join("web.xml");
        std::fs::write(&config, "<head/>").expect("write");
        let link = d.path().join("linked");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let dotted = real.join("..").join("etc").join("web.xml");
        let want = lock_file(&config);
        for other in [link.join("web.xml"), dotted.clone()] {
            assert_eq!(lock_file(&other), want, "{}", other.display());
        }
        // Removed while its instance runs: still the same lock.
        std::fs::remove_file(&config).expect("rm");
        assert_eq!(lock_file(&link.join("web.xml")), want);
        assert_eq!(lock_file(&dotted), want);
        assert_ne!(lock_file(&real.join("other.xml")), want);
    }

    #[test]
    fn a_long_config_path_gets_a_short_lock_name_of_its_own() {
        let long = format!("/srv/{}/web.xml", "deep/".repeat(30));
        let a = fit_name(&pid_file_name(Path::new(&long)));
        let b = fit_name(&pid_file_name(Path::new(&long.replace("web", "api"))));
        assert!(a.len() <= NAME_MAX && b.len() <= NAME_MAX, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.starts_with("srv_deep_deep"), "{a}");
        assert_eq!(fit_name("etc_web.xml"), "etc_web.xml");
    }

    #[test]
    fn two_configs_cannot_share_one_pid_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let (a, b) = (d.path().join("a.xml"), d.path().join("b.xml"));
        let pid = d.path().join("shared.pid");
        let first = Instance::acquire(&a, Some(&pid)).expect("first");
        assert_eq!(InstanceLock::holder(&pid), Some(std::process::id()));
        match Instance::acquire(&b, Some(&pid)) {
            Err(LockError::Failed(m)) => assert!(m.contains("another config"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
        // b's own lock was let go again: b starts with another pid file.
        let second = Instance::acquire(&b, Some(&d.path().join("b.pid"))).expect("b alone");
        match Instance::acquire(&a, None) {
            Err(LockError::Held(m)) => assert!(m.contains("already runs this config"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
        drop((first, second));
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_naming_the_pid() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("x.pid");
        let first = InstanceLock::acquire(&path).expect("first lock");
        let err = InstanceLock::acquire(&path)
            .err()
            .expect("second lock refused");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        assert!(!path.exists(), "the pid file goes with the lock");
        let _again = InstanceLock::acquire(&path).expect("free again");
    }

    #[test]
    fn a_stale_pid_file_does_not_block() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("x.pid");
        std::fs::write(&path, "999999\n").expect("write");
        let lock = InstanceLock::acquire(&path).expect("stale file is taken over");
        assert_eq!(InstanceLock::holder(&lock.path), Some(std::process::id()));
    }
}
