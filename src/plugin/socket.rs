//! The `socket` plugin: tell other programs which file changed, over TCP.
//!
//! For each changed path under one of the plugin's `<localpath watch>` directories, one
//! connection to every `<deshost ip port>` of that directory carries one record, the
//! absolute path followed by `\n`, then closes. A host that is down costs at most
//! `CONNECT_TIMEOUT` and an error line; nothing is retried.
//!
//! The record is the path's bytes with C-style escapes ([`record`]): a backslash, a
//! newline or another control byte in a name is written as `\\`, `\n`, `\t`, `\r` or
//! `\xHH`, so no name can end a record early and make the receiver read a second one.
//! Every other byte (UTF-8 or not) goes as it is: ordinary names are sent byte for byte as
//! sersync 2.5 sent them.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use super::Failed;
use crate::config::plugins::Socket;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

impl Socket {
    /// Sends the path to every host of every watch it is under; one result per host.
    pub fn send(&self, abs: &Path) -> Vec<(String, std::io::Result<()>)> {
        let line = record(abs.as_os_str().as_bytes());
        self.dests
            .iter()
            .filter(|d| abs.starts_with(&d.watch))
            .flat_map(|d| &d.hosts)
            .map(|(ip, port)| (format!("{ip}:{port}"), send_to(ip, *port, &line)))
            .collect()
    }

    /// Sends and logs; the error is the last failure as logged.
    pub(crate) fn send_logged(&self, abs: &Path) -> Result<(), Failed> {
        let mut out = Ok(());
        for (host, result) in self.send(abs) {
            match result {
                Ok(()) => log::debug!("plugin socket: sent {} to {host}", abs.display()),
                Err(e) => {
                    let text = format!("cannot send {} to {host}: {e}", abs.display());
                    log::error!("plugin socket: {text}");
                    out = Err(Failed(text));
                }
            }
        }
        out
    }
}

fn send_to(ip: &str, port: u16, line: &[u8]) -> std::io::Result<()> {
    let mut stream = connect(ip, port, CONNECT_TIMEOUT)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.write_all(line)?;
    stream.flush()
}

/// Connects to the first address of `host` that answers within `timeout`.
pub(super) fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
    }))
}

/// One record for a path: its bytes with `\\`, `\n`, `\t`, `\r` and `\xHH` (any other
/// control byte, DEL included) escaped, then `\n`. The only newline is the last byte.
pub fn record(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1);
    for &b in path {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::record;

    #[test]
    fn ordinary_names_go_as_they_are() {
        assert_eq!(record(b"/www/a b/index.html"), b"/www/a b/index.html\n");
        let latin1_and_utf8 = b"/www/caf\xe9/\xe6\x97\xa5.txt";
        let mut want = latin1_and_utf8.to_vec();
        want.push(b'\n');
        assert_eq!(record(latin1_and_utf8), want);
    }

    #[test]
    fn a_name_cannot_split_the_record() {
        assert_eq!(
            record(b"/www/x\nINJECTED-RECORD"),
            b"/www/x\\nINJECTED-RECORD\n"
        );
        assert_eq!(
            record(b"/w/a\\nb"),
            b"/w/a\\\\nb\n",
            "a backslash is escaped too"
        );
        assert_eq!(record(b"/w/\t\r\x01\x7f"), b"/w/\\t\\r\\x01\\x7f\n");
        for b in 0..=255u8 {
            let r = record(&[b'/', b]);
            assert_eq!(
                r.iter().filter(|&&c| c == b'\n').count(),
                1,
                "byte {b:#04x}: one newline, at the end"
            );
            assert!(!r[..r.len() - 1].iter().any(|&c| c < 0x20 || c == 0x7f));
        }
    }
}
