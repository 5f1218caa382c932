//! Live syncing: watch every root, push every change, until SIGTERM or SIGINT.
//!
//! Start-up order matters: config first (any error exits 2 before anything starts),
//! then every watch (so that changes made during the initial full sync are seen), then
//! the `-r` full sync and the replay of an existing fail log, then live syncing.
//!
//! Threads: one `watch` thread per root (reads the kernel queue, sends batches), one
//! `filter` thread (batches into the pending sets), `-n` `sync-N` workers (rsync), the
//! `schedule` thread, the status server, and this one, which waits for the stop.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{lock_and_load, runtime, Exit};
use crate::cli::Args;
use crate::config::Config;
use crate::filter::Excludes;
use crate::plugin::Runner;
use crate::service::daemon::{self, Detached};
use crate::service::{schedule, status};
use crate::sync::intake::{Intake, Route};
use crate::sync::{self, AfterPush, Mirror, Queue, Target};
use crate::sys::Stop;
use crate::watch::Watcher;

/// How long running pushes get to finish after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub fn live(config: &Config, args: &Args) -> Result<u8, Exit> {
    let targets = sync::targets(config);
    let (mut lock, fail_log) = lock_and_load(config, args, &targets)?;
    let detached = if args.daemon {
        if args.log_file.is_none() {
            log::warn!("-d without --log-file: logs are discarded once detached");
        }
        let d = daemon::detach().map_err(|e| runtime(anyhow::anyhow!(e)))?;
        lock.write_pid().map_err(|e| runtime(anyhow::anyhow!(e)))?;
        Some(d)
    } else {
        None
    };
    let result = run(config, targets, fail_log, args, detached);
    drop(lock);
    result
}

fn run(
    config: &Config,
    targets: Vec<Target>,
    fail_log: sync::FailLog,
    args: &Args,
    mut detached: Option<Detached>,
) -> Result<u8, Exit> {
    // In a detached child, a start-up failure is reported to the waiting parent.
    let fail = |detached: &mut Option<Detached>, f: Exit| -> Exit {
        if let Some(d) = detached.take() {
            d.failed(&format!("{:#}", f.error()));
        }
        f
    };
    let workers = args.workers as usize;
    let queue = Arc::new(Queue::new(targets.len(), config.rsync.batch, workers));
    let after_push = Runner::for_live(&config.plugins).map(|r| r as Arc<dyn AfterPush>);
    let mirror = Arc::new(Mirror::new(
        targets,
        Arc::clone(&queue),
        Excludes::new(config.excludes.clone()),
        config.debug,
        fail_log,
        after_push,
    ));
    let stop = Arc::new(Stop::on_signals().map_err(|e| fail(&mut detached, runtime(e)))?);

    let started = Instant::now();
    let watches = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    let mut roots = Vec::new();
    for (i, root) in config.roots.iter().enumerate() {
        let mut w = Watcher::new(
            root.path.clone(),
            i,
            Excludes::new(config.excludes.clone()),
            config.events,
        )
        .map_err(|e| fail(&mut detached, runtime(e)))?;
        w.count_into(Arc::clone(&watches));
        roots.push(w.health());
        log::info!(
            "watching {}: {} directories in {:.2}s",
            w.root().display(),
            w.watched(),
            started.elapsed().as_secs_f64()
        );
        watchers.push(w);
    }
    mirror.guard_roots(roots.clone());
    if args.full_first {
        log::info!("-r: full sync of every remote before live syncing");
        mirror.full_sync_all();
    }
    if mirror.owed() > 0 {
        log::info!(
            "fail log {} holds {} entries from before; replaying",
            config.fail_log.display(),
            mirror.owed()
        );
        mirror.replay();
    }
    if let Some((host, port)) = &config.host {
        let listener = std::net::TcpListener::bind((host.as_str(), *port))
            .with_context(|| format!("cannot listen for status on {host}:{port}"))
            .map_err(|e| fail(&mut detached, runtime(e)))?;
        log::info!("status on http://{host}:{port}/status and /metrics");
        let (m, w, file) = (
            Arc::clone(&mirror),
            Arc::clone(&watches),
            config.file.display().to_string(),
        );
        status::serve(
            listener,
            Arc::new(move || {
                status::Status::new(
                    m.snapshot(),
                    w.load(std::sync::atomic::Ordering::Relaxed),
                    &file,
                )
                .with_roots(roots.iter().map(|r| r.report()).collect())
            }),
        );
    }
    let handles = mirror
        .spawn_workers(workers)
        .map_err(|e| fail(&mut detached, runtime(e)))?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let intake = Intake {
        routes: config
            .roots
            .iter()
            .map(|r| Route {
                root: r.path.clone(),
                remotes: mirror.remotes_of(&r.path),
            })
            .collect(),
        excludes: Excludes::new(config.excludes.clone()),
        events: config.events,
        debug: config.debug,
        queue,
    };
    let filter = std::thread::Builder::new()
        .name("filter".into())
        .spawn(move || intake.run(rx))
        .map_err(|e| fail(&mut detached, runtime(e)))?;
    let mut watch_threads = Vec::new();
    for w in watchers {
        let (tx, stop_fd) = (tx.clone(), stop.fd());
        let t = std::thread::Builder::new()
            .name("watch".into())
            .spawn(move || w.run(stop_fd, tx))
            .map_err(|e| fail(&mut detached, runtime(e)))?;
        watch_threads.push(t);
    }
    drop(tx);
    let scheduler = schedule::spawn(
        config.replay_every,
        config.crontab.clone(),
        Arc::clone(&mirror),
        Arc::clone(&stop),
    )
    .map_err(|e| fail(&mut detached, runtime(e)))?;
    log::info!(
        "live: {} watch root(s), {} remote(s), {} workers; remotes: {}",
        config.roots.len(),
        mirror.targets().len(),
        workers,
        mirror
            .targets()
            .iter()
            .map(Target::label)
            .collect::<Vec<_>>()
            .join(", ")
    );

    if let Some(d) = detached.take() {
        d.ready();
    }
    stop.wait();
    log::info!("stopping: no more events are read; running pushes finish");
    for t in watch_threads {
        let _ = t.join();
    }
    // The filter thread ends once the watchers have hung up and it has queued the rest.
    let _ = filter.join();
    let _ = scheduler.join();
    let left = mirror.close();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while !handles.iter().all(|h| h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !handles.iter().all(|h| h.is_finished()) {
        log::warn!(
            "pushes still running after {}s; exiting, they stay in the fail log",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    log::debug!("{left} entries were queued or running at the stop");
    let left = mirror.owed();
    if left > 0 {
        log::info!(
            "{left} entr{} owed, kept in the fail log {} (replayed at the next start)",
            if left == 1 { "y" } else { "ies" },
            config.fail_log.display()
        );
    }
    log::info!("stopped; pushed per remote: {:?}", mirror.pushed());
    Ok(0)
}
