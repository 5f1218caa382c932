//! The `socket` plugin: tell other programs which file changed, over TCP.
//!
//! For each changed path under one of the plugin's `<localpath watch>` directories, one
//! connection to every `<deshost ip port>` of that directory carries the absolute path
//! (its raw bytes) followed by `\n`, then closes. A host that is down costs at most
//! `CONNECT_TIMEOUT` and an error line; nothing is retried.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::config::plugins::Socket;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

impl Socket {
    /// Sends the path to every host of every watch it is under; one result per host.
    pub fn send(&self, abs: &Path) -> Vec<(String, std::io::Result<()>)> {
        let mut line = abs.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        self.dests
            .iter()
            .filter(|d| abs.starts_with(&d.watch))
            .flat_map(|d| &d.hosts)
            .map(|(ip, port)| (format!("{ip}:{port}"), send_to(ip, *port, &line)))
            .collect()
    }

    pub(crate) fn send_logged(&self, abs: &Path) {
        for (host, result) in self.send(abs) {
            match result {
                Ok(()) => log::debug!("plugin socket: sent {} to {host}", abs.display()),
                Err(e) => log::error!(
                    "plugin socket: cannot send {} to {host}: {e}",
                    abs.display()
                ),
            }
        }
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
