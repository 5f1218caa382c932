//! What every layer above needs from the operating system: the stop signal, waiting on
//! descriptors, anonymous files for a child's stdin and stderr, shell words (split and
//! quote, in one place), safe handling of the files the agent trusts (`fsafe`), unix
//! sockets for one user (`local_socket`), a view of a directory that follows no symbolic
//! link for rsync (`nosymfollow`), child processes (`process`: signals, waiting
//! without reaping, priorities, the daemon's fork), file locks (`flock`), random bits
//! for jitter, and clocks and times written for people (`time`).
//!
//! Nothing here knows about configs, remotes or events.

pub mod fanotify;
pub mod flock;
pub mod fsafe;
pub mod local_socket;
pub mod memfile;
pub mod mounts;
pub mod nosymfollow;
pub mod process;
pub mod shell;
pub mod syslog;
pub mod time;

use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The process's stop signal: SIGTERM and SIGINT (and `trigger`) make one socket
/// readable. Every long-lived thread polls its descriptor beside its own work; nobody
/// reads it, so it stays readable for all of them.
pub struct Stop {
    rx: UnixStream,
    tx: UnixStream,
}

impl Stop {
    /// A stop signal that SIGTERM and SIGINT raise.
    pub fn on_signals() -> std::io::Result<Stop> {
        let stop = Stop::manual()?;
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::low_level::pipe::register(sig, stop.tx.try_clone()?)?;
        }
        Ok(stop)
    }

    /// A stop signal only `trigger` raises (tests, embedded use).
    pub fn manual() -> std::io::Result<Stop> {
        let (rx, tx) = UnixStream::pair()?;
        Ok(Stop { rx, tx })
    }

    /// The descriptor that turns readable once the stop is raised.
    pub fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Raises the stop by hand (a reload stops one pipeline this way; tests).
    pub fn trigger(&self) {
        use std::io::Write;
        let _ = (&self.tx).write_all(b"x");
    }

    /// Blocks until the stop is raised.
    pub fn wait(&self) {
        wait_readable(self.fd());
    }

    /// Waits up to `d`; true if the stop was raised.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        readable_within(self.fd(), d)
    }
}

/// What the process was asked to do by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop for good.
    Stop,
    /// SIGHUP: reopen the log file and reload the config.
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP for the thread that runs the process: the stop part is a
/// [`Stop`] (stays raised once raised); each SIGHUP makes a second socket readable until
/// [`Signals::wait`] reports it. A stop wins over a pending reload.
pub struct Signals {
    stop: Stop,
    hup_rx: UnixStream,
}

impl Signals {
    /// Handles SIGTERM, SIGINT (stop) and SIGHUP (reload) from now on.
    pub fn install() -> std::io::Result<Signals> {
        let stop = Stop::on_signals()?;
        let (hup_rx, hup_tx) = UnixStream::pair()?;
        hup_rx.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, hup_tx)?;
        Ok(Signals { stop, hup_rx })
    }

    /// Blocks until a signal arrives (or one arrived unreported) and says which.
    pub fn wait(&self) -> Signal {
        match wait_either(self.hup_rx.as_raw_fd(), self.stop.fd()) {
            Ready::Work => {
                self.drain_hup();
                Signal::Reload
            }
            Ready::Stop | Ready::Failed => Signal::Stop,
        }
    }

    /// Waits up to `d` for SIGTERM or SIGINT; true if one arrived (SIGHUPs meanwhile
    /// stay pending for the next [`Signals::wait`]).
    pub fn stopped_within(&self, d: Duration) -> bool {
        self.stop.wait_timeout(d)
    }

    /// Several SIGHUPs before the reload are one reload.
    fn drain_hup(&self) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while matches!((&self.hup_rx).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// Which of two descriptors is readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The first: there is work to read.
    Work,
    /// The second: stop.
    Stop,
    /// Polling failed for good.
    Failed,
}

/// Blocks until `fd` or `stop_fd` is readable (stop wins when both are).
pub fn wait_either(fd: RawFd, stop_fd: RawFd) -> Ready {
    loop {
        let mut fds = [pollfd(fd), pollfd(stop_fd)];
        // SAFETY: fds is a valid array of two pollfd structs for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Ready::Failed;
        }
        if fds[1].revents != 0 {
            return Ready::Stop;
        }
        if fds[0].revents != 0 {
            return Ready::Work;
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Blocks until `fd` is readable (or polling fails).
pub fn wait_readable(fd: RawFd) {
    loop {
        let mut p = pollfd(fd);
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n > 0
            || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
        {
            return;
        }
    }
}

/// Waits up to `d` for `fd` to become readable; true if it did.
pub fn readable_within(fd: RawFd, d: Duration) -> bool {
    let mut p = pollfd(fd);
    let ms = d.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// 64 random bits from the kernel (getrandom), for jitter; never blocks. Falls back to
/// the clock and the pid if the call fails, which is good enough to spread retries.
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: buf is valid for 8 bytes of writes for the whole call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(buf);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // splitmix64 of the clock and the pid
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Polls several descriptors, each with its own `events` mask, for up to `timeout`.
/// Returns each one's `revents` (all zero when the time ran out or a signal came).
pub fn poll_many(
    fds: &[(RawFd, libc::c_short)],
    timeout: Duration,
) -> std::io::Result<Vec<libc::c_short>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: p is a valid array of p.len() pollfd structs for the whole call.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
        return Ok(vec![0; p.len()]);
    }
    Ok(p.iter().map(|x| x.revents).collect())
}

/// renameat2(2) with RENAME_EXCHANGE: `a` and `b` swap places in one step (the tests'
/// `mv --exchange`).
#[cfg(test)]
pub(crate) fn rename_exchange(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Is the process running as root?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Time since the process started (first called at the top of `main`): status's
/// uptime, which a reload does not reset.
pub fn uptime() -> std::time::Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}
