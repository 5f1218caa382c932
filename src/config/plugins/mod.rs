//! The `<plugin>` blocks, checked into plugin specs: plain values the `plugin` module
//! runs (SPEC 8).
//!
//! Three plugins, each configured by a `<plugin name=...>` block at the end of `<head>`:
//! `command` runs a program with the changed file's absolute path, `socket` sends that
//! path to TCP listeners, `refreshCDN` asks a CDN to purge the file's URL. One of them is
//! switched on for live syncing by `<sersync><plugin start="true" name=.../>`.
//!
//! Only the switched-on plugin is checked at start-up; the other blocks are checked when
//! `-m` asks for them. So the unused example blocks every tutorial pastes (with watch
//! directories that do not exist here) never stop a start, as in the original.
//!
//! Paths in plugin blocks are read as text: a Latin-1 config's non-ASCII plugin paths are
//! taken as the characters they decode to, unlike `<sersync><localpath>`.

pub mod command;
pub mod refresh_cdn;
pub mod socket;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::bytes::Regex;

use super::{raw, ConfigError};

pub use command::{Command, Mode};
pub use refresh_cdn::RefreshCdn;
pub use socket::Socket;

/// The plugin names, as the original spelled them.
pub const NAMES: [&str; 3] = ["command", "socket", "refreshCDN"];

/// A plugin name in any letter case, as the original spelled it.
pub fn canonical(name: &str) -> Option<&'static str> {
    let name = name.trim();
    NAMES.into_iter().find(|n| n.eq_ignore_ascii_case(name))
}

/// One checked plugin block.
#[derive(Debug)]
pub enum Plugin {
    Command(Command),
    Socket(Socket),
    RefreshCdn(RefreshCdn),
}

impl Plugin {
    /// Checks one `<plugin name=...>` block.
    pub(crate) fn from_raw(cx: &Cx, def: &raw::PluginDef) -> Result<Plugin, ConfigError> {
        let written = def.name.as_deref().map(str::trim).unwrap_or("");
        if let Some(other) = canonical(written).filter(|n| *n != "command") {
            // mode= and timeout= are the command plugin's only: refused, not ignored.
            let attr = [("mode", &def.mode), ("timeout", &def.timeout)]
                .into_iter()
                .find_map(|(a, v)| v.as_deref().map(|v| (a, v)));
            if let Some((attr, value)) = attr {
                return Err(cx.err(
                    def.line,
                    format!(
                        "<plugin name=\"{written}\" {attr}=\"{value}\">: {attr}= is the command \
                         plugin's only; remove it from the {other} plugin"
                    ),
                ));
            }
        }
        match canonical(written) {
            Some("command") => Ok(Plugin::Command(Command::from_raw(cx, def)?)),
            Some("socket") => Ok(Plugin::Socket(Socket::from_raw(cx, def)?)),
            Some(_) => Ok(Plugin::RefreshCdn(RefreshCdn::from_raw(cx, def)?)),
            None if written.is_empty() => Err(cx.err(def.line, "<plugin>: missing name=")),
            None => Err(cx.err(def.line, unknown_name(written))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Plugin::Command(_) => "command",
            Plugin::Socket(_) => "socket",
            Plugin::RefreshCdn(_) => "refreshCDN",
        }
    }

    /// The plugin's own `<localpath watch>` directories (socket, refreshCDN); `None` when
    /// it applies to every watched path (command).
    pub fn watches(&self) -> Option<Vec<PathBuf>> {
        match self {
            Plugin::Command(_) => None,
            Plugin::Socket(s) => Some(s.watches()),
            Plugin::RefreshCdn(r) => Some(r.watches()),
        }
    }

    /// Is this absolute path one the plugin acts on (filter, watch directory)?
    pub fn wants(&self, abs: &Path) -> bool {
        match self {
            Plugin::Command(c) => c.wants(abs),
            Plugin::Socket(s) => s.wants(abs),
            Plugin::RefreshCdn(r) => r.wants(abs),
        }
    }
}

fn unknown_name(written: &str) -> String {
    format!(
        "<plugin name=\"{written}\">: unknown plugin; the plugins are {}",
        NAMES.join(", ")
    )
}

/// A `<plugin name=...>` block as found, checked or not.
#[derive(Debug, Clone)]
struct Defined {
    /// The name as written.
    name: String,
    line: Option<u32>,
    plugin: Result<Arc<Plugin>, ConfigError>,
}

/// The plugin switched on for live syncing, and every plugin block (for `-m NAME`).
#[derive(Debug, Clone, Default)]
pub struct Plugins {
    file: String,
    active: Option<Arc<Plugin>>,
    defined: Vec<Defined>,
}

impl Plugins {
    /// Reads the plugin blocks and the `<sersync><plugin>` switch. The switched-on plugin
    /// must be defined once and valid; the others are checked when `-m` asks for them.
    pub(crate) fn from_raw(cx: &Cx, head: &raw::Head) -> Result<Plugins, ConfigError> {
        let defined: Vec<Defined> = head
            .plugin
            .iter()
            .map(|def| Defined {
                name: def.name.as_deref().unwrap_or("").trim().to_owned(),
                line: def.line,
                plugin: Plugin::from_raw(cx, def).map(Arc::new),
            })
            .collect();
        let switch = head.sersync.as_ref().and_then(|s| s.plugin.as_ref());
        let mut active = None;
        if let Some(s) = switch {
            if cx.flag(s.start.as_deref(), s.line, "plugin", "start", false)? {
                let written = cx.required(s.name.as_deref(), s.line, "plugin", "name")?;
                let Some(name) = canonical(written) else {
                    return Err(cx.err(s.line, unknown_name(written)));
                };
                let plugin = find(cx.file(), &defined, name)
                    .map_err(|m| cx.err(s.line, m.to_string()))??;
                if let Some(watches) = plugin.watches() {
                    check_under_roots(cx, head, &plugin, &watches)?;
                }
                active = Some(plugin);
            }
        }
        Ok(Plugins {
            file: cx.file().to_owned(),
            active,
            defined,
        })
    }

    /// The plugin switched on for live syncing.
    pub fn active(&self) -> Option<&Arc<Plugin>> {
        self.active.as_ref()
    }

    /// A defined plugin by name (any letter case), checked now; the error says why not.
    pub fn get(&self, name: &str) -> Result<Arc<Plugin>, NoPlugin> {
        let Some(canon) = canonical(name) else {
            return Err(NoPlugin::Unknown(name.to_owned()));
        };
        find(&self.file, &self.defined, canon)?.map_err(NoPlugin::Invalid)
    }
}

/// Why `-m NAME` names no usable plugin ([`Plugins::get`]).
#[derive(Debug, thiserror::Error)]
pub enum NoPlugin {
    /// Not one of [`NAMES`].
    #[error(
        "-m {0}: unknown module; the modules are {names} (the http status endpoint is \
         <host start=\"true\">, not a module)",
        names = NAMES.join(", ")
    )]
    Unknown(String),
    #[error(
        "plugin {name} is not defined: add a <plugin name=\"{name}\"> block to <head> in {file}"
    )]
    NotDefined { name: &'static str, file: String },
    #[error("plugin {name} is defined twice (lines {first} and {second}); keep one block")]
    Twice {
        name: &'static str,
        first: u32,
        second: u32,
    },
    /// Its block is wrong (checked only when it is asked for).
    #[error("{0}")]
    Invalid(ConfigError),
}

/// The one definition of `name`; the outer error says it is missing or doubled.
fn find(
    file: &str,
    defined: &[Defined],
    name: &'static str,
) -> Result<Result<Arc<Plugin>, ConfigError>, NoPlugin> {
    let matching: Vec<&Defined> = defined
        .iter()
        .filter(|d| canonical(&d.name) == Some(name))
        .collect();
    match matching.as_slice() {
        [] => Err(NoPlugin::NotDefined {
            name,
            file: file.to_owned(),
        }),
        [one] => Ok(one.plugin.clone()),
        [first, second, ..] => Err(NoPlugin::Twice {
            name,
            first: first.line.unwrap_or(0),
            second: second.line.unwrap_or(0),
        }),
    }
}

/// A switched-on socket or refreshCDN only sees pushed paths under its watch: a watch
/// that meets no sync root would silently never fire.
fn check_under_roots(
    cx: &Cx,
    head: &raw::Head,
    plugin: &Plugin,
    watches: &[PathBuf],
) -> Result<(), ConfigError> {
    let roots: Vec<PathBuf> = head
        .sersync
        .iter()
        .flat_map(|s| &s.localpath)
        .filter_map(|lp| lp.watch.as_deref())
        .map(|w| cx.path(w.trim()))
        .collect();
    for w in watches {
        if !roots.iter().any(|r| r.starts_with(w) || w.starts_with(r)) {
            return Err(cx.err(
                plugin_line(head, plugin.name()),
                format!(
                    "plugin {}: <localpath watch=\"{}\"> is not inside any <sersync><localpath \
                     watch>, so no pushed path would ever reach it",
                    plugin.name(),
                    w.display()
                ),
            ));
        }
    }
    Ok(())
}

fn plugin_line(head: &raw::Head, name: &str) -> Option<u32> {
    head.plugin
        .iter()
        .find(|d| d.name.as_deref().and_then(canonical) == Some(name))
        .and_then(|d| d.line)
}

/// Error and value helpers for plugin blocks: `config`'s, plus what only plugins need.
pub(crate) use super::Ctx as Cx;

impl Cx<'_> {
    /// A non-empty attribute, trimmed.
    fn required<'v>(
        &self,
        value: Option<&'v str>,
        line: Option<u32>,
        element: &str,
        attr: &str,
    ) -> Result<&'v str, ConfigError> {
        value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| self.err(line, format!("<{element}>: missing {attr}=")))
    }

    /// A TCP port, 1 to 65535.
    fn port(
        &self,
        value: Option<&str>,
        line: Option<u32>,
        element: &str,
    ) -> Result<u16, ConfigError> {
        let v = self.required(value, line, element, "port")?;
        match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(self.err(
                line,
                format!("<{element} port=\"{v}\">: not a port (1 to 65535)"),
            )),
        }
    }

    /// A `<localpath watch>` of a plugin block, absolute and without a trailing slash.
    fn watch(&self, lp: &raw::PluginLocalPath) -> Result<PathBuf, ConfigError> {
        let w = self.required(lp.watch.as_deref(), lp.line, "localpath", "watch")?;
        Ok(self.path(w))
    }

    /// A regular expression that must match the whole of what it is tested on.
    fn anchored(&self, e: &raw::Expression, element: &str) -> Result<Regex, ConfigError> {
        let expr = e
            .expression
            .as_deref()
            .ok_or_else(|| self.err(e.line, format!("<{element}>: missing expression=")))?;
        super::path_regex(expr).map_err(|err| {
            self.err(
                e.line,
                format!("<{element} expression=\"{expr}\">: bad regular expression: {err}"),
            )
        })
    }
}

/// Percent-encodes bytes for a URL, keeping the unreserved characters and `keep`.
pub(crate) fn percent_encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
