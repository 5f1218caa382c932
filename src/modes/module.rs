//! `-m NAME`: one plugin run over the watched tree, no rsync.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::plugins::Plugin;
use crate::config::Config;
use crate::sync::intake::{Intake, Route};
use crate::sync::{Job, Queue, RemoteId};
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
        // One pending set per root: the plugin's own merging and ordering.
        let queue = Arc::new(Queue::new(self.roots.len(), 1000, 1));
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut watch_threads = Vec::new();
        for (i, root) in self.roots.iter().enumerate() {
            let w = Watcher::new(
                root.clone(),
                i,
                super::excludes_for(config, root, &self.own),
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
            let tx = tx.clone();
            let stop_fd = stop.fd();
            watch_threads.push(
                std::thread::Builder::new()
                    .name("watch".into())
                    .spawn(move || w.run(stop_fd, tx))
                    .context("cannot start a watch thread")?,
            );
        }
        drop(tx);
        let intake = Intake {
            routes: self
                .roots
                .iter()
                .enumerate()
                .map(|(i, r)| Route {
                    root: r.clone(),
                    remotes: vec![RemoteId(i)],
                    excludes: super::excludes_for(config, r, &self.own),
                })
                .collect(),
            events: config.events,
            debug: config.debug,
            queue: Arc::clone(&queue),
        };
        let filter = std::thread::Builder::new()
            .name("filter".into())
            .spawn(move || intake.run(rx))
            .context("cannot start the filter thread")?;
        let plugin = Arc::clone(&self.plugin);
        let roots = self.roots.clone();
        let q = Arc::clone(&queue);
        let runner = std::thread::Builder::new()
            .name("plugin".into())
            .spawn(move || {
                while let Some((t, job)) = q.take() {
                    let root = &roots[t.index()];
                    match &job {
                        Job::Paths(_) | Job::Rename { .. } => {
                            for rel in job.plain_paths() {
                                plugin.run(&root.join(&rel.path));
                            }
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
            stop,
            watch_threads,
            filter,
            runner,
            queue,
        })
    }
}

/// A started `-m` module.
pub struct Running {
    name: &'static str,
    stop: Stop,
    watch_threads: Vec<JoinHandle<()>>,
    filter: JoinHandle<()>,
    runner: JoinHandle<()>,
    queue: Arc<Queue>,
}

impl Running {
    /// Blocks until SIGTERM or SIGINT, then stops.
    pub fn wait(self) {
        self.stop.wait();
        self.shut_down();
    }

    /// Stops now (tests).
    #[cfg(test)]
    pub fn stop(self) {
        self.stop.trigger();
        self.shut_down();
    }

    fn shut_down(self) {
        log::info!("-m {}: stopping", self.name);
        for t in self.watch_threads {
            let _ = t.join();
        }
        let _ = self.filter.join();
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
