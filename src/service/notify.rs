//! sd_notify: telling systemd (or any supervisor that sets `NOTIFY_SOCKET`) how the agent
//! stands. Datagrams of `KEY=value` lines to the socket named by `NOTIFY_SOCKET`, a path
//! or `@name` for an abstract socket; no library needed.
//!
//! Live mode sends `READY=1` (with a `STATUS=` line) once every watch is set, `STATUS=`
//! when the summary changes (at most every [`STATUS_EVERY`]), `RELOADING=1` and then
//! `READY=1` around a SIGHUP reload, `STOPPING=1` at the stop; and, when
//! `WATCHDOG_USEC` is set (and `WATCHDOG_PID`, if set, is this process), `WATCHDOG=1`
//! every half of it from the [`Beat`] thread. Sending never blocks: a message the socket
//! cannot take now is lost, as with any datagram.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sys::time::monotonic_usec;
use crate::sys::Stop;

/// Least time between two `STATUS=` updates.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// What the status line says now.
pub type StatusFn = Box<dyn Fn() -> String + Send>;

/// The supervisor's socket, when there is one.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
    status: Mutex<Option<StatusFn>>,
    last_status: Mutex<String>,
    warned: AtomicBool,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; `None` when
    /// NOTIFY_SOCKET is unset or unusable (the latter is logged).
    pub fn from_env() -> Option<Arc<Notifier>> {
        let name = std::env::var_os("NOTIFY_SOCKET").filter(|n| !n.is_empty())?;
        let addr = match address(name.as_encoded_bytes()) {
            Ok(a) => a,
            Err(e) => {
                log::warn!(
                    "NOTIFY_SOCKET={}: {e}; not reporting to the supervisor",
                    name.to_string_lossy()
                );
                return None;
            }
        };
        let sock = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                log::warn!(
                    "cannot open a socket for NOTIFY_SOCKET ({e}); not reporting to the supervisor"
                );
                return None;
            }
        };
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(Duration::from_micros);
        Some(Arc::new(Notifier {
            sock,
            addr,
            watchdog,
            status: Mutex::new(None),
            last_status: Mutex::new(String::new()),
            warned: AtomicBool::new(false),
        }))
    }

    /// Sends one message (newline-separated `KEY=value` lines).
    pub fn send(&self, message: &str) {
        if let Err(e) = self.sock.send_to_addr(message.as_bytes(), &self.addr) {
            if e.kind() != std::io::ErrorKind::WouldBlock
                && !self.warned.swap(true, Ordering::Relaxed)
            {
                log::warn!("cannot notify the supervisor through NOTIFY_SOCKET: {e}");
            }
        }
    }

    /// What the status line is made of from now on (`None`: nothing to say).
    pub fn set_status(&self, f: Option<StatusFn>) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = f;
    }

    fn status_now(&self) -> Option<String> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f())
    }

    /// `READY=1` with the status line.
    pub fn ready(&self) {
        match self.status_now() {
            Some(s) => {
                self.send(&format!("READY=1\nSTATUS={s}"));
                *self.last_status.lock().unwrap_or_else(|e| e.into_inner()) = s;
            }
            None => self.send("READY=1"),
        }
    }

    /// `RELOADING=1` (with the monotonic time newer systemd asks for).
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the config",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// A `STATUS=` line if the summary changed since the last one sent.
    fn status_if_changed(&self) {
        let Some(now) = self.status_now() else { return };
        let mut last = self.last_status.lock().unwrap_or_else(|e| e.into_inner());
        if *last != now {
            self.send(&format!("STATUS={now}"));
            *last = now;
        }
    }
}

fn address(name: &[u8]) -> Result<SocketAddr, String> {
    match name.first() {
        Some(b'/') => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name)).map_err(|e| e.to_string())
        }
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&name[1..]).map_err(|e| e.to_string())
        }
        _ => Err("neither an absolute path nor @name of an abstract socket".to_owned()),
    }
}

/// The thread that sends `WATCHDOG=1` and status changes until [`Beat::end`].
pub struct Beat {
    stop: Arc<Stop>,
    handle: JoinHandle<()>,
}

impl Beat {
    pub fn spawn(n: Arc<Notifier>) -> std::io::Result<Beat> {
        let stop = Arc::new(Stop::manual()?);
        let s = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || beat(&n, &s))?;
        Ok(Beat { stop, handle })
    }

    pub fn end(self) {
        self.stop.trigger();
        let _ = self.handle.join();
    }
}

fn beat(n: &Notifier, stop: &Stop) {
    let now = Instant::now();
    let half = n.watchdog.map(|w| (w / 2).max(Duration::from_millis(1)));
    let mut next_watchdog = half.map(|h| now + h);
    let mut next_status = now + STATUS_EVERY;
    loop {
        if let Some(at) = next_watchdog {
            if Instant::now() >= at {
                n.send("WATCHDOG=1");
                next_watchdog = half.map(|h| (at + h).max(Instant::now()));
            }
        }
        if Instant::now() >= next_status {
            n.status_if_changed();
            next_status = Instant::now() + STATUS_EVERY;
        }
        let due = next_watchdog.map_or(next_status, |w| w.min(next_status));
        if stop.wait_timeout(due.saturating_duration_since(Instant::now())) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(address(b"/run/systemd/notify").is_ok());
        assert!(address(b"@sersync-test").is_ok());
        assert!(address(b"relative").is_err());
        assert!(address(b"").is_err());
    }
}
