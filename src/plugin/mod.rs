//! Plugins at run time: what sersync 2.5 did after a change besides rsync (SPEC 8).
//!
//! The specs come checked from `config::plugins`; this module runs them. The plugin
//! switched on for live syncing runs once for every path pushed successfully, after the
//! push to the watch root's first remote (so two remotes do not run it twice); the
//! command plugin in batch mode (`mode="batch"`) runs once per rsync call that landed,
//! to every remote, with the call's paths (see `command::Batch`).
//!
//! Plugins never slow the sync path: [`Runner`] only hands work to one plugin thread;
//! when more than `BACKLOG` paths wait for it (a plugin far slower than the changes)
//! paths are dropped for the plugin with a warning, never for rsync. Paths still
//! waiting for the plugin when the process stops are not run. The runs, failures and
//! drops are counted for status ([`Runner::report`]).

pub mod command;
pub mod refresh_cdn;
pub mod socket;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use crossbeam_channel::Sender;

use crate::config::plugins::{Mode, Plugin, Plugins};
use crate::sync::job::Entry;
use crate::sync::{AfterPush, Landed};
use command::Batch;

/// A plugin run that failed, with the failure as it was logged (the caller counts it;
/// sync goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed(pub String);

/// Paths waiting for the plugin thread before new ones are dropped.
const BACKLOG: usize = 100_000;

impl Plugin {
    /// Runs the plugin for one changed path, now, logging the outcome; the error is
    /// the failure as logged (a path it does not want is no failure).
    pub fn run(&self, abs: &Path) -> Result<(), Failed> {
        if !self.wants(abs) {
            log::debug!("plugin {}: {} not wanted", self.name(), abs.display());
            return Ok(());
        }
        match self {
            Plugin::Command(c) => c.run_logged(abs),
            Plugin::Socket(s) => s.send_logged(abs),
            Plugin::RefreshCdn(r) => r.refresh_logged(abs),
        }
    }

    /// Runs the plugin for a set of changed entries of `root`, now: once for them all
    /// (the command plugin in batch mode; `remote` its label), else once per path.
    /// Counts each run that failed.
    pub fn run_entries(&self, root: &Path, remote: &str, entries: &[Entry]) -> u64 {
        match self.batch(root, remote, entries) {
            Some(Some(batch)) => match self {
                Plugin::Command(c) => u64::from(c.run_batch_logged(&batch).is_err()),
                _ => 0,
            },
            Some(None) => 0,
            None => entries
                .iter()
                .filter(|e| self.run(&root.join(&e.path)).is_err())
                .count() as u64,
        }
    }

    /// In batch mode: the batch of what `entries` holds that the plugin wants, `None`
    /// inside when it wants none of them; `None` when it runs per path.
    fn batch(&self, root: &Path, remote: &str, entries: &[Entry]) -> Option<Option<Batch>> {
        let Plugin::Command(c) = self else {
            return None;
        };
        if c.mode() != Mode::Batch {
            return None;
        }
        let paths: Vec<PathBuf> = entries
            .iter()
            .filter(|e| c.wants(&root.join(&e.path)))
            .map(batch_path)
            .collect();
        Some((!paths.is_empty()).then(|| Batch {
            root: root.to_path_buf(),
            remote: remote.to_owned(),
            paths,
        }))
    }
}

/// An entry as a batch hook reads it: relative to the root, `.` for the root itself,
/// `/` after a directory pushed with what it directly holds (a listing).
fn batch_path(e: &Entry) -> PathBuf {
    let path = if e.path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        e.path.as_path()
    };
    if e.listing {
        // `join("")` adds the one trailing slash.
        path.join("")
    } else {
        path.to_path_buf()
    }
}

/// What the plugin thread is handed.
enum Work {
    /// One changed file, absolute.
    File(PathBuf),
    /// One push's paths (batch mode).
    Batch(Batch),
}

impl Work {
    fn paths(&self) -> usize {
        match self {
            Work::File(_) => 1,
            Work::Batch(b) => b.paths.len(),
        }
    }
}

/// The switched-on plugin's counters, for status.
#[derive(Debug, Default)]
struct Counters {
    /// Runs ended (a per-file run for each path, a batch run for each push).
    runs: AtomicU64,
    failed: AtomicU64,
    /// Paths dropped for the plugin while too many waited.
    dropped: AtomicU64,
    /// Paths handed to the plugin thread and not run yet.
    waiting: AtomicUsize,
    /// The last failure as logged, and when.
    last_failure: Mutex<Option<(SystemTime, String)>>,
}

/// The switched-on plugin's counts since the start, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub name: &'static str,
    /// `file` or `batch` for the command plugin, `file` for the others.
    pub mode: &'static str,
    pub runs: u64,
    pub failed: u64,
    pub dropped: u64,
    pub waiting: usize,
    pub last_failure: Option<(SystemTime, String)>,
}

/// The switched-on plugin, run on its own thread for every pushed path (or batch).
pub struct Runner {
    plugin: Arc<Plugin>,
    /// The plugin thread's inbox, started by the first pushed path.
    worker: OnceLock<Option<Sender<Work>>>,
    counters: Arc<Counters>,
}

impl Runner {
    /// A runner when a plugin is switched on.
    pub fn for_live(plugins: &Plugins) -> Option<Arc<Runner>> {
        plugins.active().map(|plugin| {
            Arc::new(Runner {
                plugin: Arc::clone(plugin),
                worker: OnceLock::new(),
                counters: Arc::default(),
            })
        })
    }

    /// The counts since the start.
    pub fn report(&self) -> Report {
        let c = &self.counters;
        let mode = match &*self.plugin {
            Plugin::Command(cmd) => cmd.mode().as_str(),
            _ => Mode::File.as_str(),
        };
        Report {
            name: self.plugin.name(),
            mode,
            runs: c.runs.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            waiting: c.waiting.load(Ordering::Relaxed),
            last_failure: c.last_failure.lock().map_or(None, |l| l.clone()),
        }
    }

    fn sender(&self) -> Option<&Sender<Work>> {
        self.worker
            .get_or_init(|| {
                let (tx, rx) = crossbeam_channel::unbounded::<Work>();
                let plugin = Arc::clone(&self.plugin);
                let counters = Arc::clone(&self.counters);
                let spawned = std::thread::Builder::new()
                    .name("plugin".into())
                    .spawn(move || {
                        for work in rx {
                            let n = work.paths();
                            let ran = match &work {
                                Work::File(abs) => plugin.run(abs),
                                Work::Batch(b) => match &*plugin {
                                    Plugin::Command(c) => c.run_batch_logged(b),
                                    _ => Ok(()),
                                },
                            };
                            counters.runs.fetch_add(1, Ordering::Relaxed);
                            if let Err(Failed(text)) = ran {
                                counters.failed.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut last) = counters.last_failure.lock() {
                                    *last = Some((SystemTime::now(), text));
                                }
                            }
                            counters.waiting.fetch_sub(n, Ordering::Relaxed);
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

    /// Hands `work` to the plugin thread unless too much waits; never blocks. False
    /// when the thread is gone.
    fn hand(&self, tx: &Sender<Work>, work: Work) -> bool {
        let n = work.paths();
        let waiting = self.counters.waiting.fetch_add(n, Ordering::Relaxed);
        if waiting > 0 && waiting + n > BACKLOG {
            self.counters.waiting.fetch_sub(n, Ordering::Relaxed);
            let before = self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
            // Rate-limited: the first drop, then each time the total passes a power of 2.
            if before == 0 || (before + n as u64).ilog2() > before.max(1).ilog2() {
                let latest = match &work {
                    Work::File(abs) => abs.display().to_string(),
                    Work::Batch(b) => format!("a batch of {} path(s)", b.paths.len()),
                };
                log::warn!(
                    "plugin {}: {BACKLOG} paths waiting, it cannot keep up; {} dropped for it \
                     (latest {latest}); rsync is not affected",
                    self.plugin.name(),
                    before + n as u64,
                );
            }
            return true;
        }
        if tx.send(work).is_err() {
            self.counters.waiting.fetch_sub(n, Ordering::Relaxed);
            log::error!("plugin {}: its thread is gone", self.plugin.name());
            return false;
        }
        true
    }
}

impl AfterPush for Runner {
    /// Hands the pushed paths (or, in batch mode, the push) to the plugin's thread;
    /// never blocks.
    fn pushed(&self, landed: &Landed<'_>) {
        let plugin = &self.plugin;
        let batch = plugin.batch(landed.root, landed.remote, landed.entries);
        if batch.is_none() && !landed.first {
            // Per path: once, after the watch root's first remote has it.
            return;
        }
        let Some(tx) = self.sender() else {
            return;
        };
        match batch {
            Some(Some(batch)) => {
                self.hand(tx, Work::Batch(batch));
            }
            Some(None) => {}
            None => {
                for e in landed.entries {
                    let abs = landed.root.join(&e.path);
                    if plugin.wants(&abs) && !self.hand(tx, Work::File(abs)) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
