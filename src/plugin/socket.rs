//! The `socket` plugin: tell other programs which file changed, over TCP.
//!
//! For each changed path under one of the plugin's `<localpath watch>` directories, one
//! connection to every `<deshost ip port>` of that directory carries the absolute path
//! (its raw bytes) followed by `\n`, then closes. A host that is down costs at most
//! `CONNECT_TIMEOUT` and an error line; nothing is retried.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Cx;
use crate::config::{raw, ConfigError};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Socket {
    dests: Vec<Dest>,
}

/// One `<localpath watch>` and the hosts told about changes under it.
#[derive(Debug)]
struct Dest {
    watch: PathBuf,
    hosts: Vec<(String, u16)>,
}

impl Socket {
    pub(super) fn from_raw(cx: &Cx, def: &raw::PluginDef) -> Result<Socket, ConfigError> {
        if def.localpath.is_empty() {
            return Err(cx.err(
                def.line,
                "<plugin name=\"socket\">: missing <localpath watch=...> with <deshost ip port>",
            ));
        }
        let mut dests = Vec::new();
        for lp in &def.localpath {
            let watch = cx.watch(lp)?;
            if lp.deshost.is_empty() {
                return Err(cx.err(
                    lp.line,
                    format!(
                        "<localpath watch=\"{}\">: no <deshost ip=... port=...> inside",
                        watch.display()
                    ),
                ));
            }
            let mut hosts = Vec::new();
            for h in &lp.deshost {
                let ip = cx.required(h.ip.as_deref(), h.line, "deshost", "ip")?;
                let ip = ip
                    .strip_prefix('[')
                    .and_then(|i| i.strip_suffix(']'))
                    .unwrap_or(ip);
                let port = cx.port(h.port.as_deref(), h.line, "deshost")?;
                hosts.push((ip.to_owned(), port));
            }
            dests.push(Dest { watch, hosts });
        }
        Ok(Socket { dests })
    }

    pub fn watches(&self) -> Vec<PathBuf> {
        self.dests.iter().map(|d| d.watch.clone()).collect()
    }

    pub fn wants(&self, abs: &Path) -> bool {
        self.dests.iter().any(|d| abs.starts_with(&d.watch))
    }

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

    pub(super) fn send_logged(&self, abs: &Path) {
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
