//! The `socket` plugin: tell other programs which file changed, over TCP.
//!
//! For each changed path under one of the plugin's `<localpath watch>` directories, one
//! connection to every `<deshost ip port>` of that directory carries the absolute path
//! (its raw bytes) followed by `\n`, then closes. A host that is down costs at most
//! `CONNECT_TIMEOUT` and an error line; nothing is retried.

use std::path::{Path, PathBuf};

use super::Cx;
use crate::config::{raw, ConfigError};

#[derive(Debug)]
pub struct Socket {
    pub(crate) dests: Vec<Dest>,
}

/// One `<localpath watch>` and the hosts told about changes under it.
#[derive(Debug)]
pub(crate) struct Dest {
    pub(crate) watch: PathBuf,
    pub(crate) hosts: Vec<(String, u16)>,
}

impl Socket {
    pub(crate) fn from_raw(cx: &Cx, def: &raw::PluginDef) -> Result<Socket, ConfigError> {
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
}
