//! Plugins: what sersync 2.5 did after a change besides rsync (SPEC 8).
//!
//! Three plugins, each configured by a `<plugin name=...>` block at the end of `<head>`:
//! `command` runs a program with the changed file's absolute path, `socket` sends that
//! path to TCP listeners, `refreshCDN` asks a CDN to purge the file's URL. One of them is
//! switched on for live syncing by `<sersync><plugin start="true" name=.../>`; then it
//! runs once for every path pushed successfully, after the push to the watch root's first
//! remote (so two remotes do not run it twice). `-m NAME` runs one plugin alone over the
//! watched tree, with no rsync at all.
//!
//! Plugins never slow the sync path: `Plugins::after_push` only hands paths to one plugin
//! thread over a bounded channel; when that channel is full (a plugin far slower than the
//! changes) paths are dropped for the plugin with a warning, never for rsync. Paths still
//! waiting for the plugin when the process stops are not run.
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

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Sender, TrySendError};
use regex::bytes::Regex;

use crate::config::{raw, Config, ConfigError};
use crate::filter::Excludes;
use crate::queue::{Queue, Work};
use crate::watch::Watcher;

pub use command::Command;
pub use refresh_cdn::RefreshCdn;
pub use socket::Socket;

/// Paths waiting for the plugin thread before new ones are dropped.
const BACKLOG: usize = 100_000;

/// How long `-m` waits at the stop for a plugin run in progress.
const MODULE_GRACE: Duration = Duration::from_secs(5);

/// The plugin names, as the original spelled them.
pub const NAMES: [&str; 3] = ["command", "socket", "refreshCDN"];

/// A plugin name in any letter case, as the original spelled it.
pub fn canonical(name: &str) -> Option<&'static str> {
    let name = name.trim();
    NAMES.into_iter().find(|n| n.eq_ignore_ascii_case(name))
}

/// One configured plugin, ready to run.
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

    /// Runs the plugin for one changed path, now, logging the outcome.
    pub fn run(&self, abs: &Path) {
        if !self.wants(abs) {
            log::debug!("plugin {}: {} not wanted", self.name(), abs.display());
            return;
        }
        match self {
            Plugin::Command(c) => c.run_logged(abs),
            Plugin::Socket(s) => s.send_logged(abs),
            Plugin::RefreshCdn(r) => r.refresh_logged(abs),
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
    /// The plugin thread's inbox, started by the first `after_push` (clones share it).
    worker: Arc<OnceLock<Option<Sender<PathBuf>>>>,
    dropped: Arc<AtomicU64>,
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
                let plugin = find(cx.file(), &defined, name).map_err(|m| cx.err(s.line, m))??;
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
            worker: Arc::default(),
            dropped: Arc::default(),
        })
    }

    /// The plugin switched on for live syncing.
    pub fn active(&self) -> Option<&Arc<Plugin>> {
        self.active.as_ref()
    }

    /// A defined plugin by name (any letter case), checked now; the message says why not.
    pub fn get(&self, name: &str) -> Result<Arc<Plugin>, String> {
        let Some(canon) = canonical(name) else {
            return Err(format!(
                "-m {name}: unknown module; the modules are {} (the http status endpoint is \
                 <host start=\"true\">, not a module)",
                NAMES.join(", ")
            ));
        };
        match find(&self.file, &self.defined, canon)? {
            Ok(p) => Ok(p),
            Err(e) => Err(e.to_string()),
        }
    }

    /// For the sync engine: a shared handle when a plugin is switched on.
    pub fn for_engine(&self) -> Option<Arc<Plugins>> {
        self.active.as_ref().map(|_| Arc::new(self.clone()))
    }

    /// Hands every pushed path to the active plugin's thread; never blocks.
    pub fn after_push(&self, root: &Path, rel_paths: &[PathBuf]) {
        let Some(plugin) = &self.active else { return };
        let Some(tx) = self.sender(plugin) else {
            return;
        };
        for rel in rel_paths {
            let abs = root.join(rel);
            if !plugin.wants(&abs) {
                continue;
            }
            match tx.try_send(abs) {
                Ok(()) => {}
                Err(TrySendError::Full(abs)) => {
                    let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                    if n.is_power_of_two() || n == 0 {
                        log::warn!(
                            "plugin {}: {} paths waiting, it cannot keep up; {} dropped for it \
                             (latest {}); rsync is not affected",
                            plugin.name(),
                            BACKLOG,
                            n + 1,
                            abs.display()
                        );
                    }
                }
                Err(TrySendError::Disconnected(_)) => {
                    log::error!("plugin {}: its thread is gone", plugin.name());
                    return;
                }
            }
        }
    }

    fn sender(&self, plugin: &Arc<Plugin>) -> Option<&Sender<PathBuf>> {
        self.worker
            .get_or_init(|| {
                let (tx, rx) = crossbeam_channel::bounded::<PathBuf>(BACKLOG);
                let plugin = Arc::clone(plugin);
                let spawned = std::thread::Builder::new()
                    .name("plugin".into())
                    .spawn(move || {
                        for abs in rx {
                            plugin.run(&abs);
                        }
                    });
                match spawned {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        log::error!("cannot start the plugin thread, plugins are off: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// The one definition of `name`; the outer error says it is missing or doubled.
fn find(
    file: &str,
    defined: &[Defined],
    name: &str,
) -> Result<Result<Arc<Plugin>, ConfigError>, String> {
    let matching: Vec<&Defined> = defined
        .iter()
        .filter(|d| canonical(&d.name) == Some(name))
        .collect();
    match matching.as_slice() {
        [] => Err(format!(
            "plugin {name} is not defined: add a <plugin name=\"{name}\"> block to <head> in {file}"
        )),
        [one] => Ok(one.plugin.clone()),
        [first, second, ..] => Err(format!(
            "plugin {name} is defined twice (lines {} and {}); keep one block",
            first.line.unwrap_or(0),
            second.line.unwrap_or(0)
        )),
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
pub(crate) use crate::config::Ctx as Cx;

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
        Regex::new(&format!("^(?:{expr})$")).map_err(|err| {
            self.err(
                e.line,
                format!("<{element} expression=\"{expr}\">: bad regular expression: {err}"),
            )
        })
    }
}

/// `-m NAME`: one plugin run over the watched tree, no rsync.
pub struct Module {
    plugin: Arc<Plugin>,
    /// The directories watched: the plugin's own `<localpath watch>` directories, or
    /// the sync roots for command.
    roots: Vec<PathBuf>,
}

impl Module {
    /// Checks that the module is defined and valid and that its directories exist.
    pub fn new(config: &Config, name: &str) -> Result<Module, String> {
        let plugin = config.plugins.get(name)?;
        let mut roots = match plugin.watches() {
            None => config.roots.iter().map(|r| r.path.clone()).collect(),
            Some(watches) => {
                for w in &watches {
                    match std::fs::metadata(w) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => {
                            return Err(format!(
                                "-m {}: watch {} is not a directory",
                                plugin.name(),
                                w.display()
                            ))
                        }
                        Err(e) => {
                            return Err(format!(
                                "-m {}: watch directory {} unusable: {e}",
                                plugin.name(),
                                w.display()
                            ))
                        }
                    }
                }
                watches
            }
        };
        // A watch inside another is already covered by it.
        roots.sort();
        let mut kept: Vec<PathBuf> = Vec::new();
        for r in roots {
            if !kept.iter().any(|k| r.starts_with(k)) {
                kept.push(r);
            }
        }
        Ok(Module {
            plugin,
            roots: kept,
        })
    }

    pub fn name(&self) -> &'static str {
        self.plugin.name()
    }

    /// Watches every root and starts running the plugin; SIGTERM and SIGINT stop it.
    pub fn start(self, config: &Config) -> anyhow::Result<Running> {
        let (stop_rx, stop_tx) = UnixStream::pair().context("cannot create the stop socket")?;
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            let tx = stop_tx
                .try_clone()
                .context("cannot create the stop socket")?;
            signal_hook::low_level::pipe::register(sig, tx)
                .context("cannot handle SIGTERM/SIGINT")?;
        }
        self.start_with(config, stop_rx, stop_tx)
    }

    /// `start` with a given stop socket: `stop_rx` turning readable stops everything.
    fn start_with(
        self,
        config: &Config,
        stop_rx: UnixStream,
        stop_tx: UnixStream,
    ) -> anyhow::Result<Running> {
        let started = Instant::now();
        let queue = Arc::new(Queue::new(self.roots.len(), 1000, 1));
        let mut watchers = Vec::new();
        for (t, root) in self.roots.iter().enumerate() {
            let w = Watcher::new(
                root.clone(),
                vec![t],
                Arc::clone(&queue),
                Excludes::new(config.excludes.clone()),
                config.events,
                config.debug,
            )?;
            log::info!(
                "-m {}: watching {}: {} directories in {:.2}s",
                self.name(),
                root.display(),
                w.watched(),
                started.elapsed().as_secs_f64()
            );
            watchers.push(w);
        }
        let stop_fd = stop_rx.as_raw_fd();
        let watch_threads = watchers
            .into_iter()
            .map(|w| {
                std::thread::Builder::new()
                    .name("watch".into())
                    .spawn(move || w.run(stop_fd))
            })
            .collect::<Result<Vec<_>, _>>()
            .context("cannot start a watch thread")?;
        let plugin = Arc::clone(&self.plugin);
        let roots = self.roots.clone();
        let q = Arc::clone(&queue);
        let runner = std::thread::Builder::new()
            .name("plugin".into())
            .spawn(move || {
                while let Some((t, work)) = q.take() {
                    match &work {
                        Work::Paths(paths) => {
                            for rel in paths {
                                plugin.run(&roots[t].join(rel));
                            }
                        }
                        Work::Full => log::warn!(
                            "-m {}: the kernel dropped events under {} (queue overflow); \
                             the plugin did not run for them",
                            plugin.name(),
                            roots[t].display()
                        ),
                    }
                    q.finish(t, &work, None);
                }
            })
            .context("cannot start the plugin thread")?;
        log::info!(
            "-m {}: running the plugin for changes under {} (no rsync)",
            self.name(),
            self.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Running {
            name: self.name(),
            stop_rx,
            stop_tx,
            watch_threads,
            runner,
            queue,
        })
    }
}

/// A started `-m` module.
pub struct Running {
    name: &'static str,
    stop_rx: UnixStream,
    /// Writing to it stops the module (tests); signals write to clones of it.
    stop_tx: UnixStream,
    watch_threads: Vec<JoinHandle<()>>,
    runner: JoinHandle<()>,
    queue: Arc<Queue>,
}

impl Running {
    /// Blocks until SIGTERM or SIGINT, then stops.
    pub fn wait(self) {
        crate::app::wait_readable(self.stop_rx.as_raw_fd());
        self.shut_down();
    }

    /// Stops now (tests).
    pub fn stop(self) {
        use std::io::Write;
        let _ = (&self.stop_tx).write_all(b"x");
        self.shut_down();
    }

    fn shut_down(self) {
        log::info!("-m {}: stopping", self.name);
        for t in self.watch_threads {
            let _ = t.join();
        }
        self.queue.close();
        let deadline = Instant::now() + MODULE_GRACE;
        while !self.runner.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.runner.is_finished() {
            let _ = self.runner.join();
        } else {
            log::warn!(
                "-m {}: a plugin run is still going; exiting anyway",
                self.name
            );
        }
        log::info!("-m {}: stopped", self.name);
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

#[cfg(test)]
mod tests;
