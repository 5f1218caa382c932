//! `-m NAME`: one plugin run over the watched tree, no rsync.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::pipeline::{Parts, Pipeline, Watching};
use crate::config::plugins::Plugin;
use crate::config::Config;
use crate::sync::{Job, Queue};
use crate::sys::Stop;
use crate::watch::Watcher;

/// How long `-m` waits at the stop for a plugin run in progress.
const MODULE_GRACE: Duration = Duration::from_secs(5);

/// A checked `-m` module, not started yet.
pub struct Module {
    plugin: Arc<Plugin>,
    /// The directories watched: the plugin's own `<localpath watch>` directories, or
    /// the sync roots for command.
    roots: Vec<PathBuf>,
    /// The agent's own files (absolute): never events.
    own: Vec<PathBuf>,
}

impl Module {
    /// Checks that the module is defined and valid and that its directories exist.
    pub fn new(config: &Config, name: &str) -> anyhow::Result<Module> {
        let plugin = config.plugins.get(name)?;
        let mut roots = match plugin.watches() {
            None => config.roots.iter().map(|r| r.path.clone()).collect(),
            Some(watches) => {
                for w in &watches {
                    match std::fs::metadata(w) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => {
                            return Err(anyhow::anyhow!(
                                "-m {}: watch {} is not a directory",
                                plugin.name(),
                                w.display()
                            ))
                        }
                        Err(e) => {
                            return Err(anyhow::anyhow!(
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
            own: Vec::new(),
        })
    }

    /// The agent's own files (its log file among them), left out of the events.
    pub fn with_own(mut self, own: Vec<PathBuf>) -> Module {
        self.own = own;
        self
    }

    pub fn name(&self) -> &'static str {
        self.plugin.name()
    }

    /// Watches every root and starts running the plugin; SIGTERM and SIGINT stop it.
    pub fn start(self, config: &Config) -> anyhow::Result<Running> {
        let stop = Stop::on_signals().context("cannot handle SIGTERM/SIGINT")?;
        self.start_with(config, stop)
    }

    /// `start` with a given stop signal.
    pub(crate) fn start_with(self, config: &Config, stop: Stop) -> anyhow::Result<Running> {
        let started = Instant::now();
        let parts = Parts::watching(config, &self.roots, &self.own);
        let mut watchers = Vec::new();
        for (i, (root, excludes)) in parts.roots().enumerate() {
            let w = Watcher::new(
                root.to_path_buf(),
                i,
                excludes.clone(),
                config.events,
                config.watcher,
            )?;
            log::info!(
                "-m {}: watching {}: {} in {:.2}s",
                self.name(),
                root.display(),
                w.describe(),
                started.elapsed().as_secs_f64()
            );
            watchers.push(w);
        }
        let plugin = Arc::clone(&self.plugin);
        let roots = self.roots.clone();
        let work = move |q: Arc<Queue>| {
            while let Some((t, job)) = q.take() {
                let root = &roots[t.index()];
                match &job {
                    Job::Paths(_) | Job::Rename { .. } => {
                        // No remote: a batch hook gets an empty SERSYNC_REMOTE.
                        plugin.run_entries(root, "", &job.plain_paths());
                    }
                    Job::Full => log::warn!(
                        "-m {}: the kernel dropped events under {} (queue overflow); \
                         the plugin did not run for them",
                        plugin.name(),
                        root.display()
                    ),
                }
                q.finish(t, &job, None);
            }
        };
        let watching = Watching {
            watchers,
            stop: Arc::new(stop),
        };
        let mut pipeline = Pipeline::plugin(config, parts, watching, work);
        pipeline.start()?;
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
            pipeline,
        })
    }
}

/// A started `-m` module.
pub struct Running {
    name: &'static str,
    pipeline: Pipeline,
}

impl Running {
    /// Blocks until SIGTERM or SIGINT, then stops.
    pub fn wait(self) {
        if let Some(stop) = self.pipeline.stop_signal() {
            stop.wait();
        }
        self.shut_down();
    }

    /// Stops now (tests).
    #[cfg(test)]
    pub fn stop(self) {
        self.shut_down();
    }

    fn shut_down(self) {
        log::info!("-m {}: stopping", self.name);
        let (stopped, ()) = self.pipeline.stop(|done| {
            let deadline = Instant::now() + MODULE_GRACE;
            while !done() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        if !stopped.finished {
            log::warn!(
                "-m {}: a plugin run is still going; exiting anyway",
                self.name
            );
        }
        log::info!("-m {}: stopped", self.name);
    }
}
