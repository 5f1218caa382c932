//! What every layer above needs from the operating system: the stop signal, waiting on
//! descriptors, shell words (split and quote, in one place), and safe handling of the
//! files the agent trusts (`fsafe`).
//!
//! Nothing here knows about configs, remotes or events.

pub mod fsafe;
pub mod mounts;
pub mod shell;

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

    #[cfg(test)]
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

/// Is the process running as root?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
