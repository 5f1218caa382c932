//! A view of a directory in which the kernel follows no symbolic link: a child process
//! (rsync) gets a private mount namespace where the directory is bind-mounted with
//! `nosymfollow` (recursively, so mounts below it too) on a mount point of the agent's
//! own (an empty directory only root can write above), and works there. A link anywhere
//! in a path the child resolves below that view then fails with ELOOP, whatever was
//! swapped in when; `lstat` and `readlink` still work, so links are still copied as
//! links. The directory's own path is left as it is, so whatever else the child reads
//! there (its libraries, the ssh config, `/etc/resolv.conf` when the tree is `/etc`)
//! resolves as before.
//!
//! Needs Linux 5.12 (mount_setattr) and CAP_SYS_ADMIN. [`probe`] tries the whole set-up
//! once in a throw-away child, so a caller can tell "not possible here" (no privilege,
//! old kernel) from a passing failure before it relies on it; [`enter_here`] does it in
//! the calling process (a small helper that then becomes the program: no fork). Tests
//! use `confine`, which adds it to a command, done between fork and exec.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
#[cfg(test)]
use std::os::unix::process::CommandExt;
use std::path::Path;
#[cfg(test)]
use std::process::Command;

/// `MOUNT_ATTR_NOSYMFOLLOW` of `<linux/mount.h>` (Linux 5.12).
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;
/// `ST_NOSYMFOLLOW` of statvfs(3)'s `f_flag` (Linux 5.10).
const ST_NOSYMFOLLOW: libc::c_ulong = 0x2000;

/// `struct mount_attr` of `<linux/mount.h>` (MOUNT_ATTR_SIZE_VER0: 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A step of the set-up, for the message when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// unshare(CLONE_NEWNS)
    Unshare = 1,
    /// mount --make-rprivate /
    Private = 2,
    /// mount --rbind DIR VIEW
    Bind = 3,
    /// mount_setattr(VIEW, AT_RECURSIVE, MOUNT_ATTR_NOSYMFOLLOW)
    NoSymFollow = 4,
    /// chdir(VIEW)
    Enter = 5,
    /// statvfs(".") shows nosymfollow
    Check = 6,
}

impl Step {
    fn from_code(code: u32) -> Option<Step> {
        Some(match code {
            1 => Step::Unshare,
            2 => Step::Private,
            3 => Step::Bind,
            4 => Step::NoSymFollow,
            5 => Step::Enter,
            6 => Step::Check,
            _ => return None,
        })
    }

    /// What the step does, as a command would say it.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Unshare => "unshare(CLONE_NEWNS)",
            Step::Private => "making the mounts private",
            Step::Bind => "bind-mounting the watch root",
            Step::NoSymFollow => "mount_setattr(MOUNT_ATTR_NOSYMFOLLOW)",
            Step::Enter => "entering the view of the watch root",
            Step::Check => "checking nosymfollow with statvfs",
        }
    }
}

/// Why the set-up failed: the step and its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupError {
    pub step: Step,
    pub errno: i32,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.step.describe(),
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

/// Does this failure mean the set-up cannot work here at all (no privilege, a kernel
/// without the call or the flag), rather than failing this once (memory, the directory
/// gone)?
pub fn is_unsupported(e: &SetupError) -> bool {
    matches!(
        e.errno,
        libc::EPERM | libc::EACCES | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP
    )
}

/// The set-up, in the child between fork and exec: only async-signal-safe calls (raw
/// syscalls), no allocation. `dir` and `view` are absolute.
fn enter(dir: &CStr, view: &CStr) -> Result<(), SetupError> {
    let fail = |step: Step| SetupError {
        step,
        errno: io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    };
    // SAFETY (every call below): plain syscalls on NUL-terminated strings that live for
    // the whole call and a struct on this stack.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(fail(Step::Unshare));
    }
    // Nothing done in this namespace may reach the others: every mount private first.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(fail(Step::Private));
    }
    // Recursive: the mounts below the directory stay visible, as they are outside.
    let rc = unsafe {
        libc::mount(
            dir.as_ptr(),
            view.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(fail(Step::Bind));
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NOSYMFOLLOW,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            view.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(fail(Step::NoSymFollow));
    }
    if unsafe { libc::chdir(view.as_ptr()) } != 0 {
        return Err(fail(Step::Enter));
    }
    // The kernel says so itself, on the directory now entered.
    // (glibc's statvfs is statfs(2) with the kernel's flags passed through; it reads
    // /proc/mounts, allocating, only on kernels without those flags, older than 2.6.36.)
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c".".as_ptr(), &mut st) } != 0 {
        return Err(fail(Step::Check));
    }
    if st.f_flag & ST_NOSYMFOLLOW == 0 {
        return Err(SetupError {
            step: Step::Check,
            errno: libc::EOPNOTSUPP,
        });
    }
    Ok(())
}

fn c_path(dir: &Path) -> io::Result<CString> {
    if !dir.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not an absolute path", dir.display()),
        ));
    }
    CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Makes `cmd` run in a nosymfollow view of `dir` mounted at `view` (both absolute;
/// `view` an empty directory nobody else can replace), `view` its working directory. A
/// set-up that fails makes the spawn fail with its errno.
/// (The agent itself uses [`enter_here`] in a helper; this is for tests and measuring.)
#[cfg(test)]
pub fn confine(cmd: &mut Command, dir: &Path, view: &Path) -> io::Result<()> {
    let (c, v) = (c_path(dir)?, c_path(view)?);
    cmd.current_dir(dir);
    // SAFETY: the hook runs between fork and exec and makes only raw syscalls on memory
    // allocated before the fork (`c` and `v`, moved into the hook).
    unsafe {
        cmd.pre_exec(move || enter(&c, &v).map_err(|e| io::Error::from_raw_os_error(e.errno)))
    };
    Ok(())
}

/// Makes the nosymfollow view of `dir` at `view` for this very process and enters it
/// (its mount namespace becomes a private one). For a fresh, single-threaded helper that
/// then execs the program (`confine` would fork it first: a big process forking per
/// call copies its page tables each time).
pub fn enter_here(dir: &Path, view: &Path) -> Result<(), SetupError> {
    let invalid = |e: io::Error| SetupError {
        step: Step::Bind,
        errno: e.raw_os_error().unwrap_or(libc::EINVAL),
    };
    let c = c_path(dir).map_err(invalid)?;
    let v = c_path(view).map_err(invalid)?;
    enter(&c, &v)
}

/// Tries the whole set-up of [`enter_here`] in a child that then exits: Ok when a confined
/// command would run, else the step that failed and why.
pub fn probe(dir: &Path, view: &Path) -> Result<(), SetupError> {
    let io_fail = |step: Step, e: io::Error| SetupError {
        step,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    };
    let c = c_path(dir).map_err(|e| io_fail(Step::Bind, e))?;
    let v = c_path(view).map_err(|e| io_fail(Step::Bind, e))?;
    let mut fds = [0; 2];
    // SAFETY: a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_fail(Step::Unshare, io::Error::last_os_error()));
    }
    // SAFETY: fresh fds, owned here only.
    let (rd, wr) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: the child makes only raw syscalls (those of `enter`, write, _exit) on
    // memory allocated before the fork, as between fork and exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io_fail(Step::Unshare, io::Error::last_os_error()));
    }
    if pid == 0 {
        use std::os::fd::AsRawFd;
        let word: u64 = match enter(&c, &v) {
            Ok(()) => 0,
            Err(e) => ((e.step as u64) << 32) | u64::from(e.errno as u32),
        };
        let bytes = word.to_ne_bytes();
        // SAFETY: writing our own stack bytes to our own pipe, then leaving at once.
        unsafe {
            libc::write(wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut bytes = [0u8; 8];
    let read = {
        use std::io::Read;
        (&rd).read_exact(&mut bytes)
    };
    let mut status = 0;
    // SAFETY: `pid` is our child; reaped once, here.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    if let Err(e) = read {
        return Err(io_fail(Step::Unshare, e));
    }
    decode(u64::from_ne_bytes(bytes))
}

/// The child's answer: 0, or the step in the high half and the errno in the low one.
fn decode(word: u64) -> Result<(), SetupError> {
    if word == 0 {
        return Ok(());
    }
    let step = Step::from_code((word >> 32) as u32).unwrap_or(Step::Unshare);
    Err(SetupError {
        step,
        errno: (word & 0xffff_ffff) as u32 as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_answer_round_trips() {
        assert_eq!(decode(0), Ok(()));
        for step in [
            Step::Unshare,
            Step::Private,
            Step::Bind,
            Step::NoSymFollow,
            Step::Enter,
            Step::Check,
        ] {
            let word = ((step as u64) << 32) | u64::from(libc::EPERM as u32);
            assert_eq!(
                decode(word),
                Err(SetupError {
                    step,
                    errno: libc::EPERM
                })
            );
        }
    }

    #[test]
    fn no_privilege_and_old_kernels_are_unsupported_a_passing_failure_is_not() {
        let e = |errno| SetupError {
            step: Step::NoSymFollow,
            errno,
        };
        assert!(is_unsupported(&e(libc::EPERM)));
        assert!(is_unsupported(&e(libc::ENOSYS)));
        assert!(is_unsupported(&e(libc::EINVAL)));
        assert!(!is_unsupported(&e(libc::ENOMEM)));
        assert!(!is_unsupported(&e(libc::ENOENT)));
    }

    #[test]
    fn a_relative_directory_is_refused() {
        assert!(c_path(Path::new("rel/dir")).is_err());
        let mut cmd = Command::new("true");
        assert!(confine(&mut cmd, Path::new("rel"), Path::new("/v")).is_err());
        assert!(confine(&mut cmd, Path::new("/d"), Path::new("v")).is_err());
    }

    /// As root on Linux 5.12+: a confined child cannot open a path through a link in its
    /// view, but reads the link itself, and the tree's own path is as it was; without
    /// privilege the probe says why.
    #[test]
    fn a_confined_child_follows_no_link_but_reads_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = &dir.path().join("tree");
        let view = &dir.path().join("view");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::create_dir(view).expect("mkdir view");
        std::fs::write(root.join("d/f"), "in the tree\n").expect("write");
        std::os::unix::fs::symlink(root.join("d"), root.join("l")).expect("symlink");
        if let Err(e) = probe(root, view) {
            assert!(is_unsupported(&e), "{e}");
            eprintln!("skipped: {e}");
            return;
        }
        let run = |script: &str| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script]);
            confine(&mut cmd, root, view).expect("confine");
            cmd.output().expect("run sh")
        };
        let out = run(&format!(
            "pwd && cat {}/l/f && cat d/f && readlink l && cat l/f",
            root.display()
        ));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "{}\nin the tree\nin the tree\n{}\n",
                view.display(),
                root.join("d").display()
            )
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("symbolic links"),
            "{out:?}"
        );
        // Outside the child, nothing changed.
        assert_eq!(std::fs::read_dir(view).expect("view").count(), 0);
        assert_eq!(
            std::fs::read_to_string(root.join("l/f")).expect("read through the link"),
            "in the tree\n"
        );
    }
}

/// What the set-up costs when a process forks for it ([`confine`]): `cargo test --release
/// --lib nosymfollow::cost -- --ignored --nocapture` runs `rsync --version` 300 times
/// each way, interleaved, and prints the wall time and the CPU time of the child and of
/// this process per call; `COST_RSS_MB=120` first fills that much memory, as a big agent
/// holds: the fork then copies its page tables on every call, which is why the agent
/// starts rsync through a fresh helper ([`enter_here`]) instead.
#[cfg(test)]
mod cost {
    use super::*;

    /// CPU seconds (user + system) of `who`.
    fn cpu(who: libc::c_int) -> f64 {
        // SAFETY: rusage is plain data, filled by the kernel.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to `u`.
        unsafe { libc::getrusage(who, &mut u) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }

    #[test]
    #[ignore = "a measurement, not a check"]
    fn per_rsync_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = dir.path().join("view");
        std::fs::create_dir(&view).expect("mkdir view");
        let root = std::env::temp_dir();
        if let Err(e) = probe(&root, &view) {
            eprintln!("skipped: {e}");
            return;
        }
        // A big agent (a tree of a million directories) forks a big process: the
        // confined spawn forks, the plain one does not (posix_spawn).
        let mb: usize = std::env::var("COST_RSS_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let ballast = vec![1u8; mb << 20];
        let n = 300;
        let (mut wall, mut child, mut own) = ([0.0f64; 2], [0.0f64; 2], [0.0f64; 2]);
        for _ in 0..n {
            for confined in [false, true] {
                let c0 = cpu(libc::RUSAGE_CHILDREN);
                let s0 = cpu(libc::RUSAGE_SELF);
                let t = std::time::Instant::now();
                let mut cmd = Command::new("rsync");
                cmd.arg("--version").stdout(std::process::Stdio::null());
                if confined {
                    confine(&mut cmd, &root, &view).expect("confine");
                } else {
                    cmd.current_dir(&root);
                }
                assert!(cmd.status().expect("run rsync").success());
                let i = usize::from(confined);
                wall[i] += t.elapsed().as_secs_f64();
                child[i] += cpu(libc::RUSAGE_CHILDREN) - c0;
                own[i] += cpu(libc::RUSAGE_SELF) - s0;
            }
        }
        drop(ballast);
        let ms = |v: f64| v * 1000.0 / f64::from(n);
        for (i, what) in ["plain", "confined"].iter().enumerate() {
            eprintln!(
                "{what}: per call wall {:.3} ms, child CPU {:.3} ms, parent CPU {:.3} ms",
                ms(wall[i]),
                ms(child[i]),
                ms(own[i])
            );
        }
    }
}
