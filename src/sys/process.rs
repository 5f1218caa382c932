//! Processes: signalling a child or its process group, waiting for a child to end
//! without reaping it (a pidfd), lowering a running child's CPU and I/O priority, and
//! forking the daemon into the background. Every `unsafe` of process handling is here;
//! what a caller may rely on is in each function's doc.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// `pid` as a positive `pid_t`, refused otherwise: `kill(0, ..)` and `kill(-1, ..)`
/// signal whole groups or every process, never what a caller naming one child meant.
fn positive(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to process `pid`. The caller makes sure `pid` still names its process:
/// a child it has not reaped yet cannot have had its pid reused.
pub fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = positive(pid)?;
    // SAFETY: kill takes two integers and touches no memory of ours.
    check(unsafe { libc::kill(pid, signal) })
}

/// Sends `signal` to every process of the process group `pgid` (a child started with
/// `process_group(0)` leads the group of its own pid).
pub fn kill_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid = positive(pgid)?;
    // SAFETY: kill takes two integers and touches no memory of ours; a negative pid
    // names the group.
    check(unsafe { libc::kill(-pgid, signal) })
}

/// A pidfd of process `pid` (Linux 5.3 and later): readable once it has exited.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = positive(pid)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was just opened by this call and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Does child `pid` exit within `after`? Waits on a pidfd without reaping it. Without
/// pidfds (Linux < 5.3), or when poll fails, answers yes, so that a caller that acts
/// on a slow child (lowers or kills it) leaves it alone and just waits for it.
pub fn exits_within(pid: u32, after: Duration) -> bool {
    let Ok(fd) = pidfd_open(pid) else {
        return true;
    };
    let deadline = Instant::now() + after;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc > 0 {
            return true;
        }
        if rc == 0 {
            return false;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return true;
        }
    }
}

/// Waits until child `pid` has exited, without reaping it (`WNOWAIT`): its pid stays
/// its own until the caller reaps it (`Child::wait`).
pub fn wait_unreaped(pid: u32) {
    loop {
        // SAFETY: siginfo_t is plain data, valid all zero.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to `info` for the whole call; waitid only writes it.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Sets the CPU niceness of process `pid` (the caller's unreaped child).
pub fn set_nice(pid: u32, nice: libc::c_int) -> io::Result<()> {
    let pid = positive(pid)?;
    // SAFETY: setpriority takes integers and touches no memory of ours.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) })
}

/// Gives process `pid` (the caller's unreaped child) the lowest best-effort I/O
/// priority; it matters where the disk's scheduler honours it (bfq).
pub fn lowest_io_priority(pid: u32) -> io::Result<()> {
    let pid = positive(pid)?;
    // ioprio_set(IOPRIO_WHO_PROCESS, pid, class BE << 13 | level 7).
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const BEST_EFFORT_LOWEST: libc::c_long = (2 << 13) | 7;
    // SAFETY: ioprio_set takes integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            libc::c_long::from(pid),
            BEST_EFFORT_LOWEST,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Which side of [`fork_detached`] this is.
pub enum Forked {
    /// The parent: the read end of the pipe the child reports on.
    Parent(File),
    /// The child, in a session of its own, in `/`, umask 022, stdin, stdout and stderr
    /// on /dev/null: the write end of the pipe.
    Child(File),
}

/// How many threads the process runs, from /proc; `None` if it cannot be told.
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(|d| d.filter(|e| e.is_ok()).count())
}

/// Forks the process into the background with a pipe from the child to the parent.
/// Must be called before any thread is started: with more than one thread running
/// (as /proc tells), nothing is forked and the answer is an error. An error's text
/// names the call that failed (`pipe: ...`, `fork: ...`).
pub fn fork_detached() -> io::Result<Forked> {
    let named = |call: &str, e: io::Error| io::Error::new(e.kind(), format!("{call}: {e}"));
    if let Some(n) = threads().filter(|&n| n > 1) {
        return Err(io::Error::other(format!(
            "fork: {n} threads run; only a process with one thread can fork safely"
        )));
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(named("pipe", io::Error::last_os_error()));
    }
    // SAFETY: the descriptors were just created and are owned here only.
    let (read_end, write_end) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: one thread runs (checked above where /proc tells; the caller's promise
    // otherwise), so the child has a consistent copy of every lock and allocation.
    match unsafe { libc::fork() } {
        -1 => Err(named("fork", io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: setsid and umask take no pointers.
            unsafe {
                libc::setsid();
                libc::umask(0o022);
            }
            let _ = std::env::set_current_dir("/");
            if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors, from one we own.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            Ok(Forked::Child(write_end))
        }
        _child => {
            drop(write_end);
            Ok(Forked::Parent(read_end))
        }
    }
}

/// Restores the default disposition of SIGPIPE: a write to a closed pipe ends the
/// process quietly, as for any Unix tool (Rust's runtime ignores it by default).
pub fn default_sigpipe() {
    // SAFETY: setting one signal's disposition to SIG_DFL installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Ignores SIGPIPE again (as Rust's runtime sets it up): the daemon sees a closed
/// pipe or socket as an error of the write, never as its end.
pub fn ignore_sigpipe() {
    // SAFETY: setting one signal's disposition to SIG_IGN installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pid_that_names_a_group_or_every_process_is_signalled() {
        for pid in [0, u32::MAX, 1 << 31] {
            let e = kill(pid, 0).expect_err("refused");
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{pid}");
            let e = kill_group(pid, 0).expect_err("refused");
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{pid}");
        }
        assert!(kill(std::process::id(), 0).is_ok(), "signal 0 to ourselves");
    }

    #[test]
    fn a_child_is_waited_for_without_being_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        assert!(
            !exits_within(pid, Duration::from_millis(1)),
            "still running"
        );
        kill(pid, libc::SIGKILL).expect("kill");
        wait_unreaped(pid);
        assert!(exits_within(pid, Duration::ZERO), "exited");
        // Not reaped yet: its pid is still ours to signal and to wait for.
        assert!(kill(pid, 0).is_ok());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().expect("reaped").signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_group_is_killed_whole() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .expect("sleep");
        kill_group(child.id(), libc::SIGKILL).expect("kill");
        let status = child.wait().expect("reaped");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
