//! The `refreshCDN` plugin: ask the CDN to purge the URL of a changed file.
//!
//! sersync 2.5 shipped this for ChinaCache, and the config keeps that shape:
//!
//! ```xml
//! <localpath watch="/data0/htdocs/cms.xoyo.com/site/">
//!   <cdninfo domainname="ccms.chinacache.com" port="80" username="U" passwd="P"/>
//!   <sendurl base="http://pic.xoyo.com/cms"/>
//!   <regexurl regex="false" match="cms.xoyo.com/site([/a-zA-Z0-9]*).xoyo.com/images"/>
//! </localpath>
//! ```
//!
//! The purge URL of a changed file under `watch`:
//! - `regex="false"` (or no `<regexurl>`): `base` + `/` + the path relative to `watch`;
//!   `site/jx3.xoyo.com/images/a.jpg` becomes `http://pic.xoyo.com/cms/jx3.xoyo.com/images/a.jpg`.
//! - `regex="true"`: `match` is searched for in the absolute path; the part it matched is
//!   replaced by its first capture group, and the URL is `base` + that group + what
//!   follows the match. With the example, `/data0/htdocs/cms.xoyo.com/site/jx3.xoyo.com/images/2010/a.jpg`
//!   matches with group `/jx3`, giving `http://pic.xoyo.com/cms/jx3/2010/a.jpg` (the
//!   layout of xoyo's own picture URLs). A pattern without a group drops the matched
//!   part. A path the pattern does not match falls back to the plain rule.
//!
//! Path bytes in the URL are percent-encoded (`/` kept). The request is one plain
//! HTTP/1.0 GET to `domainname:port` in ChinaCache's form, every value percent-encoded:
//! `GET /index.jsp?user=U&pswd=P&ok=ok&urls=<purge URL> HTTP/1.0`. The status line of the
//! answer is logged; nothing is retried.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::Failed;
use crate::config::plugins::refresh_cdn::Dest;
use crate::config::plugins::RefreshCdn;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a purge request got no HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("cannot connect to {host}:{port}: {err}")]
    Connect {
        host: String,
        port: u16,
        err: std::io::Error,
    },
    #[error("cannot send the request: {0}")]
    Send(std::io::Error),
    #[error("no answer: {0}")]
    NoAnswer(std::io::Error),
    /// The first line of what came back, when it is no HTTP status line.
    #[error("not an HTTP answer: {0:?}")]
    NotHttp(String),
}

impl RefreshCdn {
    /// Sends the purge requests; per URL, the HTTP status or why there is none.
    pub fn refresh(&self, abs: &Path) -> Vec<(String, Result<u16, PurgeError>)> {
        self.dests
            .iter()
            .filter(|d| abs.starts_with(&d.watch))
            .map(|d| {
                let url = d.url(abs);
                let result = d.purge(&url);
                (url, result)
            })
            .collect()
    }

    /// Purges and logs; the error is the last failure as logged.
    pub(crate) fn refresh_logged(&self, abs: &Path) -> Result<(), Failed> {
        let mut out = Ok(());
        for (url, result) in self.refresh(abs) {
            let text = match result {
                Ok(status) if (200..300).contains(&status) => {
                    log::info!("plugin refreshCDN: purge of {url}: HTTP {status}");
                    continue;
                }
                Ok(status) => format!("purge of {url}: HTTP {status}"),
                Err(e) => format!("purge of {url} failed: {e}"),
            };
            log::error!("plugin refreshCDN: {text}");
            out = Err(Failed(text));
        }
        out
    }
}

impl Dest {
    fn purge(&self, url: &str) -> Result<u16, PurgeError> {
        let mut stream =
            super::socket::connect(&self.host, self.port, super::socket::CONNECT_TIMEOUT).map_err(
                |err| PurgeError::Connect {
                    host: self.host.clone(),
                    port: self.port,
                    err,
                },
            )?;
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let host = if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sersync2/{}\r\nConnection: close\r\n\r\n",
            self.request_target(url),
            env!("CARGO_PKG_VERSION")
        );
        stream
            .write_all(request.as_bytes())
            .map_err(PurgeError::Send)?;
        // Only the status line matters.
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < 4096 {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(PurgeError::NoAnswer(e)),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or("");
        let mut words = line.split_whitespace();
        match (words.next(), words.next().map(str::parse::<u16>)) {
            (Some(v), Some(Ok(status))) if v.starts_with("HTTP/") => Ok(status),
            _ => Err(PurgeError::NotHttp(line.to_owned())),
        }
    }
}
