//! Plugins at run time: what sersync 2.5 did after a change besides rsync (SPEC 8).
//!
//! The specs come checked from `config::plugins`; this module runs them. The plugin
//! switched on for live syncing runs once for every path pushed successfully, after the
//! push to the watch root's first remote (so two remotes do not run it twice).
//!
//! Plugins never slow the sync path: [`Runner`] only hands paths to one plugin thread
//! over a bounded channel; when that channel is full (a plugin far slower than the
//! changes) paths are dropped for the plugin with a warning, never for rsync. Paths still
//! waiting for the plugin when the process stops are not run.

pub mod command;
pub mod refresh_cdn;
pub mod socket;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Sender, TrySendError};

use crate::config::plugins::{Plugin, Plugins};
use crate::sync::AfterPush;

/// Paths waiting for the plugin thread before new ones are dropped.
const BACKLOG: usize = 100_000;

impl Plugin {
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

/// The switched-on plugin, run on its own thread for every pushed path.
pub struct Runner {
    plugin: Arc<Plugin>,
    /// The plugin thread's inbox, started by the first pushed path.
    worker: OnceLock<Option<Sender<PathBuf>>>,
    dropped: AtomicU64,
}

impl Runner {
    /// A runner when a plugin is switched on.
    pub fn for_live(plugins: &Plugins) -> Option<Arc<Runner>> {
        plugins.active().map(|plugin| {
            Arc::new(Runner {
                plugin: Arc::clone(plugin),
                worker: OnceLock::new(),
                dropped: AtomicU64::new(0),
            })
        })
    }

    fn sender(&self) -> Option<&Sender<PathBuf>> {
        self.worker
            .get_or_init(|| {
                let (tx, rx) = crossbeam_channel::bounded::<PathBuf>(BACKLOG);
                let plugin = Arc::clone(&self.plugin);
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

impl AfterPush for Runner {
    /// Hands every pushed path to the plugin's thread; never blocks.
    fn pushed(&self, root: &Path, rel_paths: &[PathBuf]) {
        let plugin = &self.plugin;
        let Some(tx) = self.sender() else {
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
}

#[cfg(test)]
mod tests;
