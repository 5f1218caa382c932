//! The sync workers: take work from the queue, run rsync, account for the outcome.
//!
//! `-n` threads share one `Engine`. A worker takes every free pending path of one remote
//! (up to the batch size) into one rsync call; a failed call is retried a few times with
//! backoff, then goes to the fail queue, which is written to the fail log at once. When a
//! remote that was failing succeeds again, what it is owed is queued right away instead
//! of waiting for the timed replay.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::failq::{self, FailLog};
use crate::filter::Excludes;
use crate::queue::{Queue, Work};
use crate::rsync::{self, Job, Outcome, Target};

/// Counters per remote, for logs and status.
#[derive(Debug, Default)]
pub struct TargetStats {
    /// Paths (or full syncs) pushed successfully.
    pub pushed: AtomicU64,
    /// rsync calls that failed after their retries.
    pub failed: AtomicU64,
    pub failing: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

/// Everything the workers share.
pub struct Engine {
    pub targets: Vec<Target>,
    pub queue: Arc<Queue>,
    pub excludes: Excludes,
    pub debug: bool,
    pub fail_log: Mutex<FailLog>,
    pub stats: Vec<TargetStats>,
    pub stopping: AtomicBool,
    /// Delays before each retry of a failed call.
    pub retry_delays: Vec<Duration>,
    pub started: std::time::Instant,
    /// Directories watched, summed over the watch roots (kept by the watchers).
    pub watches: Arc<std::sync::atomic::AtomicUsize>,
    /// The last full sync: when it ended, whether every remote succeeded, how long it took.
    pub last_full: Mutex<Option<FullSyncResult>>,
    /// The plugin switched on in the config, run after pushes (see `account`).
    pub plugins: Option<Arc<crate::plugin::Plugins>>,
}

/// How the last full sync went, for status.
#[derive(Debug, Clone)]
pub struct FullSyncResult {
    pub ended: std::time::SystemTime,
    pub ok: bool,
    pub seconds: f64,
    pub remote: String,
}

impl Engine {
    pub fn new(
        targets: Vec<Target>,
        queue: Queue,
        excludes: Excludes,
        debug: bool,
        fail_log: FailLog,
    ) -> Self {
        let stats = targets.iter().map(|_| TargetStats::default()).collect();
        Engine {
            targets,
            queue: Arc::new(queue),
            excludes,
            debug,
            fail_log: Mutex::new(fail_log),
            stats,
            stopping: AtomicBool::new(false),
            retry_delays: vec![Duration::from_millis(250), Duration::from_secs(1)],
            started: std::time::Instant::now(),
            watches: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            last_full: Mutex::new(None),
            plugins: None,
        }
    }

    pub fn fail_log(&self) -> MutexGuard<'_, FailLog> {
        self.fail_log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `n` worker threads.
    pub fn spawn_workers(self: &Arc<Self>, n: usize) -> Vec<JoinHandle<()>> {
        (0..n.max(1))
            .map(|i| {
                let engine = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("sync-{i}"))
                    .spawn(move || engine.work())
                    .unwrap_or_else(|e| panic!("cannot start a worker thread: {e}"))
            })
            .collect()
    }

    fn work(&self) {
        while let Some((t, work)) = self.queue.take() {
            let jobs = match &work {
                Work::Paths(paths) => rsync::split_for_args(paths, rsync::ARGS_BUDGET)
                    .into_iter()
                    .map(|run| Job::Paths(run.to_vec()))
                    .collect(),
                Work::Full => vec![Job::Full {
                    excluded: crate::watch::excluded_paths(&self.targets[t].root, &self.excludes),
                }],
            };
            let mut rest = None;
            for job in jobs {
                let outcome = self.push(t, &job);
                rest = rest.or(self.account(t, &job, &outcome));
            }
            self.queue.finish(t, &work, rest);
        }
    }

    /// Runs one job against one remote, with retries.
    pub fn push(&self, t: usize, job: &Job) -> Outcome {
        let target = &self.targets[t];
        let (argv, stdin) = target.argv(job);
        if self.debug {
            // The paths themselves were logged as events; the options are what matter.
            let shown: Vec<String> = argv
                .iter()
                .take(argv.len().saturating_sub(1))
                .filter(|a| !a.as_encoded_bytes().starts_with(b"./") || a.len() == 2)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let paths = match job {
                Job::Paths(p) => format!(" <{} path(s)>", p.len()),
                Job::Full { .. } => String::new(),
            };
            log::info!(
                "cd {} && rsync {}{paths} {}",
                target.root.display(),
                shown.join(" "),
                target.dest()
            );
        }
        let mut attempt = 0;
        loop {
            let outcome = rsync::run(&target.root, &argv, &stdin);
            if outcome.ok()
                || attempt >= self.retry_delays.len()
                || self.stopping.load(Ordering::Relaxed)
            {
                return outcome;
            }
            log::warn!(
                "push to {} failed (rsync exit {}: {}), retrying: {}",
                target.label(),
                outcome.status,
                rsync::describe_status(outcome.status),
                last_line(&outcome.stderr)
            );
            std::thread::sleep(self.retry_delays[attempt]);
            attempt += 1;
        }
    }

    /// Books an outcome: counters, fail queue, fail log. Returns how long the remote
    /// should rest before its next call.
    fn account(&self, t: usize, job: &Job, outcome: &Outcome) -> Option<Duration> {
        let stats = &self.stats[t];
        let target = &self.targets[t];
        let count = match job {
            Job::Paths(p) => p.len() as u64,
            Job::Full { .. } => 1,
        };
        if let Job::Full { .. } = job {
            *self.last_full.lock().unwrap_or_else(|e| e.into_inner()) = Some(FullSyncResult {
                ended: std::time::SystemTime::now(),
                ok: outcome.ok(),
                seconds: outcome.elapsed.as_secs_f64(),
                remote: target.label(),
            });
        }
        if outcome.ok() {
            stats.pushed.fetch_add(count, Ordering::Relaxed);
            // Once per path, not once per remote: after the root's first remote has it.
            if let (Some(plugins), Job::Paths(paths)) = (&self.plugins, job) {
                if self.targets.iter().position(|x| x.root == target.root) == Some(t) {
                    plugins.after_push(&target.root, paths);
                }
            }
            if let Job::Full { .. } = job {
                log::info!(
                    "full sync of {} to {} done in {:.1}s",
                    target.root.display(),
                    target.label(),
                    outcome.elapsed.as_secs_f64()
                );
            }
            let mut fl = self.fail_log();
            let changed = fl.clear(t, job);
            let recovered = stats.failing.swap(false, Ordering::Relaxed);
            let owed: Vec<(usize, Job)> = if recovered {
                failq::owed_jobs(&fl)
                    .into_iter()
                    .filter(|(o, _)| *o == t)
                    .collect()
            } else {
                Vec::new()
            };
            if changed {
                self.save(&fl);
            }
            drop(fl);
            if recovered {
                log::info!("{} is reachable again", target.label());
                self.requeue(owed);
            }
            return None;
        }
        stats.failed.fetch_add(1, Ordering::Relaxed);
        stats.failing.store(true, Ordering::Relaxed);
        let what = match job {
            Job::Paths(p) if p.len() == 1 => format!("{}", p[0].display()),
            Job::Paths(p) => format!("{} paths", p.len()),
            Job::Full { .. } => "full sync".to_owned(),
        };
        let msg = format!(
            "rsync exit {} ({}): {}",
            outcome.status,
            rsync::describe_status(outcome.status),
            last_line(&outcome.stderr)
        );
        log::error!(
            "push of {what} to {} failed, written to the fail log {}: {msg}",
            target.label(),
            self.fail_log().path.display()
        );
        *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
        let mut fl = self.fail_log();
        fl.add(t, job, outcome.status);
        self.save(&fl);
        Some(Duration::from_secs(1))
    }

    fn save(&self, fl: &FailLog) {
        if let Err(e) = fl.save(&self.targets) {
            log::error!("cannot write the fail log {}: {e}", fl.path.display());
        }
    }

    /// Queues owed work again (it stays owed until a push of it succeeds).
    pub fn requeue(&self, owed: Vec<(usize, Job)>) {
        for (t, job) in owed {
            match job {
                Job::Full { .. } => self.queue.push_full(&[t]),
                Job::Paths(paths) => self.queue.push_many(&[t], &paths),
            }
        }
    }

    /// The timed (or start-up) replay: owed work goes through the queue like any change,
    /// so it keeps the per-path order; foreign commands run as they are.
    pub fn replay(&self) {
        let (owed, foreign) = {
            let fl = self.fail_log();
            (failq::owed_jobs(&fl), fl.foreign.clone())
        };
        if owed.is_empty() && foreign.is_empty() {
            return;
        }
        log::info!(
            "replaying the fail log: {} remote(s) with owed paths, {} other command(s)",
            owed.len(),
            foreign.len()
        );
        self.requeue(owed);
        for f in foreign {
            let outcome = failq::run_foreign(&f);
            let mut fl = self.fail_log();
            if outcome.ok() {
                fl.foreign.retain(|x| x != &f);
            } else if let Some(x) = fl.foreign.iter_mut().find(|x| **x == f) {
                x.status = outcome.status;
            }
            self.save(&fl);
        }
    }

    /// Stops handing out work. What is still queued, and what is in flight, is written
    /// to the fail log now; a running push that then succeeds clears its entries, so
    /// nothing is lost even if the process must exit before it ends.
    pub fn close(&self) -> usize {
        self.stopping.store(true, Ordering::Relaxed);
        let left = self.queue.close();
        let mut fl = self.fail_log();
        let mut n = 0;
        for (t, (paths, full)) in left.into_iter().enumerate() {
            if full {
                fl.add(t, &Job::Full { excluded: vec![] }, 0);
                n += 1;
            }
            if !paths.is_empty() {
                n += paths.len();
                fl.add(t, &Job::Paths(paths), 0);
            }
        }
        if n > 0 {
            self.save(&fl);
        }
        n
    }

    /// Paths that were pushed, per remote (for tests and status).
    pub fn pushed(&self) -> Vec<u64> {
        self.stats
            .iter()
            .map(|s| s.pushed.load(Ordering::Relaxed))
            .collect()
    }
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}
