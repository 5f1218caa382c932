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

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use regex::bytes::Regex;

use super::{percent_encode, Cx};
use crate::config::{raw, ConfigError};

#[derive(Debug)]
pub struct RefreshCdn {
    pub(crate) dests: Vec<Dest>,
}

/// One `<localpath watch>` with its CDN account and URL rule.
#[derive(Debug)]
pub(crate) struct Dest {
    pub(crate) watch: PathBuf,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) passwd: String,
    /// Without a trailing slash.
    pub(crate) base: String,
    pub(crate) regex: Option<Regex>,
}

impl RefreshCdn {
    pub(crate) fn from_raw(cx: &Cx, def: &raw::PluginDef) -> Result<RefreshCdn, ConfigError> {
        if def.localpath.is_empty() {
            return Err(cx.err(
                def.line,
                "<plugin name=\"refreshCDN\">: missing <localpath watch=...> with <cdninfo> and <sendurl>",
            ));
        }
        let mut dests = Vec::new();
        for lp in &def.localpath {
            let watch = cx.watch(lp)?;
            let cdn = lp.cdninfo.as_ref().ok_or_else(|| {
                cx.err(
                    lp.line,
                    format!(
                        "<localpath watch=\"{}\">: missing <cdninfo domainname=... port=...>",
                        watch.display()
                    ),
                )
            })?;
            let host = cx.required(
                cdn.domain_name.as_deref(),
                cdn.line,
                "cdninfo",
                "domainname",
            )?;
            if host.contains(['/', ' ', '?', '#']) {
                return Err(cx.err(
                    cdn.line,
                    format!(
                        "<cdninfo domainname=\"{host}\">: a host name, without http:// or a path"
                    ),
                ));
            }
            let port = cx.port(cdn.port.as_deref(), cdn.line, "cdninfo")?;
            let send = lp.sendurl.as_ref().ok_or_else(|| {
                cx.err(
                    lp.line,
                    format!(
                        "<localpath watch=\"{}\">: missing <sendurl base=...>",
                        watch.display()
                    ),
                )
            })?;
            let base = cx.required(send.base.as_deref(), send.line, "sendurl", "base")?;
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(cx.err(
                    send.line,
                    format!("<sendurl base=\"{base}\">: must start with http:// or https://"),
                ));
            }
            let regex = match &lp.regexurl {
                Some(r) if cx.flag(r.regex.as_deref(), r.line, "regexurl", "regex", false)? => {
                    let pattern = cx.required(r.pattern.as_deref(), r.line, "regexurl", "match")?;
                    Some(Regex::new(pattern).map_err(|e| {
                        cx.err(
                            r.line,
                            format!("<regexurl match=\"{pattern}\">: bad regular expression: {e}"),
                        )
                    })?)
                }
                _ => None,
            };
            dests.push(Dest {
                watch,
                host: host.to_owned(),
                port,
                user: cdn.username.clone().unwrap_or_default(),
                passwd: cdn.passwd.clone().unwrap_or_default(),
                base: base.trim_end_matches('/').to_owned(),
                regex,
            });
        }
        Ok(RefreshCdn { dests })
    }

    pub fn watches(&self) -> Vec<PathBuf> {
        self.dests.iter().map(|d| d.watch.clone()).collect()
    }

    pub fn wants(&self, abs: &Path) -> bool {
        self.dests.iter().any(|d| abs.starts_with(&d.watch))
    }

    /// The purge URLs for a changed path, one per watch it is under.
    pub fn urls(&self, abs: &Path) -> Vec<String> {
        self.dests
            .iter()
            .filter(|d| abs.starts_with(&d.watch))
            .map(|d| d.url(abs))
            .collect()
    }
}

impl Dest {
    pub(crate) fn url(&self, abs: &Path) -> String {
        let bytes = abs.as_os_str().as_bytes();
        if let Some(re) = &self.regex {
            if let Some(caps) = re.captures(bytes) {
                let group = caps.get(1).map_or(&b""[..], |g| g.as_bytes());
                let end = caps.get(0).map_or(0, |m| m.end());
                let mut tail = group.to_vec();
                tail.extend_from_slice(&bytes[end..]);
                return join(&self.base, &tail);
            }
            log::debug!(
                "plugin refreshCDN: <regexurl match> does not match {}, using the plain URL",
                abs.display()
            );
        }
        let rel = abs.strip_prefix(&self.watch).unwrap_or(abs);
        join(&self.base, rel.as_os_str().as_bytes())
    }

    /// `/index.jsp?user=U&pswd=P&ok=ok&urls=URL`, every value percent-encoded.
    pub(crate) fn request_target(&self, url: &str) -> String {
        format!(
            "/index.jsp?user={}&pswd={}&ok=ok&urls={}",
            percent_encode(self.user.as_bytes(), b""),
            percent_encode(self.passwd.as_bytes(), b""),
            percent_encode(url.as_bytes(), b"")
        )
    }
}

/// `base` + `/` + the path, encoded; exactly one slash between them.
fn join(base: &str, path: &[u8]) -> String {
    let path = percent_encode(path, b"/");
    if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}
