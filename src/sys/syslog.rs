//! A small syslog client: RFC 3164 datagrams (`<PRI>Mmm dd hh:mm:ss ident[pid]: text`)
//! over a unix datagram socket, `/dev/log` by default.
//!
//! It never blocks its caller: the socket is non-blocking and a message the log daemon
//! cannot take right now (EAGAIN) is dropped. A socket that went away (the log daemon
//! restarted) is connected again on the next message; while there is none, messages
//! are dropped.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where syslog listens on every Linux system.
pub const DEFAULT_SOCKET: &str = "/dev/log";

/// The facility of system daemons.
pub const LOG_DAEMON: u8 = 3;

/// Severities (RFC 5424 numbering, as in `<syslog.h>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Err = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

/// Longest message sent; longer ones are cut (a datagram has a size limit).
const MAX_MESSAGE: usize = 8 * 1024;

/// A connection to the log daemon, shared by every thread.
pub struct Syslog {
    path: PathBuf,
    ident: String,
    facility: u8,
    sock: Mutex<Option<UnixDatagram>>,
}

impl Syslog {
    /// A client for `path`; nothing is connected until the first message.
    pub fn new(path: &Path, ident: &str, facility: u8) -> Syslog {
        Syslog {
            path: path.to_path_buf(),
            ident: ident.to_owned(),
            facility,
            sock: Mutex::new(None),
        }
    }

    /// Sends one message; never blocks, never fails (a message that cannot go is lost).
    pub fn send(&self, severity: Severity, text: &str) {
        let line = format_message(
            self.facility,
            severity,
            &chrono::Local::now().format("%b %e %H:%M:%S").to_string(),
            &self.ident,
            std::process::id(),
            text,
        );
        let mut sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        // A message that finds no socket, or a dead one, gets one new connection.
        for _ in 0..2 {
            if sock.is_none() {
                *sock = self.connect();
            }
            let Some(s) = sock.as_ref() else { return };
            match s.send(line.as_bytes()) {
                Ok(_) => return,
                // The log daemon is busy: drop rather than stall the agent.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => return,
                Err(_) => *sock = None,
            }
        }
    }

    fn connect(&self) -> Option<UnixDatagram> {
        let s = UnixDatagram::unbound().ok()?;
        s.set_nonblocking(true).ok()?;
        s.connect(&self.path).ok()?;
        Some(s)
    }
}

/// One RFC 3164 datagram: `<PRI>TIMESTAMP IDENT[PID]: TEXT`.
pub fn format_message(
    facility: u8,
    severity: Severity,
    timestamp: &str,
    ident: &str,
    pid: u32,
    text: &str,
) -> String {
    let pri = u32::from(facility) * 8 + severity as u32;
    let mut text = text.trim_end_matches('\n');
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text = &text[..cut];
    }
    format!("<{pri}>{timestamp} {ident}[{pid}]: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_pri_timestamp_ident_and_pid() {
        let m = format_message(
            LOG_DAEMON,
            Severity::Info,
            "Jan  2 03:04:05",
            "x",
            42,
            "hi\n",
        );
        assert_eq!(m, "<30>Jan  2 03:04:05 x[42]: hi");
        let m = format_message(LOG_DAEMON, Severity::Err, "Jan  2 03:04:05", "x", 1, "e");
        assert!(m.starts_with("<27>"), "{m}");
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let m = format_message(LOG_DAEMON, Severity::Debug, "t", "x", 1, &long);
        assert!(m.len() < MAX_MESSAGE + 32);
    }

    #[test]
    fn messages_arrive_and_the_client_reconnects_after_the_socket_is_replaced() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("log");
        let log = Syslog::new(&path, "t", LOG_DAEMON);
        log.send(Severity::Info, "lost: nobody listens");
        let first = UnixDatagram::bind(&path).expect("bind");
        let limit = Some(std::time::Duration::from_secs(10));
        first.set_read_timeout(limit).expect("timeout");
        log.send(Severity::Warning, "one");
        let mut buf = [0u8; 256];
        let n = first.recv(&mut buf).expect("recv");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("<28>"));
        drop(first);
        std::fs::remove_file(&path).expect("rm");
        let second = UnixDatagram::bind(&path).expect("bind again");
        second.set_read_timeout(limit).expect("timeout");
        log.send(Severity::Err, "two");
        let n = second.recv(&mut buf).expect("recv");
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with(": two"));
    }
}
