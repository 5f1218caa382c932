//! Live syncing: watch every root, push every change, until SIGTERM or SIGINT; SIGHUP
//! reopens the log file and reloads the config.
//!
//! Start-up order matters: config first (any error exits 2 before anything starts),
//! then every watch (so that changes made during the initial full sync are seen), then
//! the `-r` full sync and the replay of an existing fail log, then live syncing.
//!
//! Reload (SIGHUP): the config file is loaded and checked as at start-up, and its fail
//! log read; on any error the running pipeline goes on and the error is logged. Else
//! the new watches are set first (so a change from then on is seen by them), then the
//! running pipeline stops as at SIGTERM (pending and in-flight work goes to the fail log,
//! running pushes are waited for; `Pipeline::stop`), then everything is built again
//! from the new config (`Parts`, `Pipeline`, see `pipeline.rs`): the fail log is read
//! again and replayed, so nothing owed is lost. The instance lock and pid file stay
//! held, the status listener is bound again, `-r` is not repeated, and the remotes an
//! operator paused (`--pause`) are paused again before the new workers start.
//!
//! Threads: one `watch` thread per root (reads the kernel queue, sends batches), one
//! `filter` thread (batches into the pending sets), `sync-N` workers (rsync; `-n`, or by
//! default two per remote, see `workers::count`), the
//! `schedule` thread, the status server, the control server (`<lock file>.sock`, for
//! `--status`, `--replay` and `--wait-synced` beside this instance; during the first
//! start-up it answers `--status` with the watch count so far), with `NOTIFY_SOCKET` the
//! `notify` thread (watchdog, status), and this one, which waits for the signals.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::pipeline::{Options, Parts, Pipeline, Watching};
use super::{runtime, usage, Exit};
use crate::cli::Args;
use crate::config::Config;
use crate::plugin::Runner;
use crate::service::daemon::{self, Detached};
use crate::service::notify::{Beat, Notifier};
use crate::service::{control, logging, schedule, status};
use crate::sync::verify::Verifier;
use crate::sync::{self, AfterPush, FailLog, Target};
use crate::sys::{Signal, Signals, Stop};
use crate::watch::Watcher;

/// How long running pushes get to finish after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What lives across reloads.
struct Ctx<'a> {
    args: &'a Args,
    /// The config file by absolute path (a daemon runs from `/`).
    config_path: PathBuf,
    signals: Signals,
    notifier: Option<Arc<Notifier>>,
    /// The control socket, `<lock file>.sock`.
    socket: PathBuf,
}

impl Ctx<'_> {
    /// What `config` names, built once for it: targets, excludes, routes.
    fn parts(&self, config: &Config) -> Parts {
        Parts::new(config, &super::own_files(config, self.args))
    }
}

/// A checked config with its parts built and its watches already set, ready to run.
struct Prepared {
    config: Config,
    parts: Parts,
    watchers: Vec<Watcher>,
    watches: Arc<AtomicUsize>,
    /// The status listener, when bound ahead (at a reload that moved it).
    listener: Option<TcpListener>,
    /// At the first start: the start-up status servers, ended once the catch-up walk
    /// is done (so that `--status` shows its progress), which hand on the listener.
    starting: Option<Starting>,
}

/// How one run of the pipeline ended.
enum Next {
    Stop,
    Reload(Box<Prepared>),
}

pub fn live(config: &Config, args: &Args) -> Result<u8, Exit> {
    super::require_rsync()?;
    let mut instance = super::lock_instance(args)?;
    let parts = Parts::new(config, &super::own_files(config, args));
    let fail_log = parts.load_fail_log(config)?;
    let config_path = std::path::absolute(&args.config).unwrap_or_else(|_| args.config.clone());
    let mut detached = if args.daemon {
        if args.log_file.is_none() {
            logging::before_detach(&args.config, args.log_format).map_err(runtime)?;
            if logging::fallback_file().is_none() {
                log::info!(
                    "-d without --log-file: logs go to syslog (facility daemon) once detached"
                );
            }
        }
        let d = daemon::detach().map_err(|e| runtime(anyhow::anyhow!(e)))?;
        logging::detached();
        instance
            .write_pid()
            .map_err(|e| runtime(anyhow::anyhow!(e)))?;
        Some(d)
    } else {
        None
    };
    let signals = Signals::install()
        .context("cannot handle SIGTERM, SIGINT and SIGHUP")
        .map_err(|e| fail(&mut detached, runtime(e)))?;
    let notifier = Notifier::from_env();
    let beat = match &notifier {
        Some(n) => Some(
            Beat::spawn(Arc::clone(n))
                .context("cannot start the notify thread")
                .map_err(|e| fail(&mut detached, runtime(e)))?,
        ),
        None => None,
    };
    let cx = Ctx {
        args,
        config_path,
        signals,
        notifier,
        socket: control::socket_path(&instance.lock.path),
    };
    let result = supervise(config, parts, fail_log, &cx, &mut detached);
    if let (Err(e), true) = (&result, args.daemon) {
        // Detached, stderr is /dev/null: the reason goes to the log (file or syslog).
        log::error!("exiting: {:#}", e.error());
    }
    if let Some(b) = beat {
        b.end();
    }
    drop(instance);
    result
}

/// In a detached child, a start-up failure is reported to the waiting parent.
fn fail(detached: &mut Option<Detached>, f: Exit) -> Exit {
    if let Some(d) = detached.take() {
        d.failed(&format!("{:#}", f.error()));
    }
    f
}

/// Runs the pipeline, again after each accepted reload, until the stop.
fn supervise(
    config: &Config,
    parts: Parts,
    fail_log: FailLog,
    cx: &Ctx,
    detached: &mut Option<Detached>,
) -> Result<u8, Exit> {
    // Status answers while a large tree's watches are set up, with the count so far.
    let watches = Arc::new(AtomicUsize::new(0));
    let starting = Starting::serve(config, &fail_log, &watches, &cx.socket);
    let watched = watch(config, &parts, watches);
    let (watchers, watches) = match watched {
        Ok(w) => w,
        Err(e) => {
            starting.end();
            // A backend the config asks for that cannot run is the config's problem.
            let forced = matches!(
                e.downcast_ref::<crate::watch::WatchError>(),
                Some(crate::watch::WatchError::Unavailable { .. })
            );
            return Err(fail(detached, if forced { usage(e) } else { runtime(e) }));
        }
    };
    let mut next = Prepared {
        config: config.clone(),
        parts,
        watchers,
        watches,
        listener: None,
        starting: Some(starting),
    };
    let mut fail_log = fail_log;
    let mut first = true;
    // The remotes paused by the operator, by label: carried over a reload.
    let mut paused = std::collections::BTreeSet::new();
    loop {
        match run(next, fail_log, cx, detached, first, &mut paused)? {
            Next::Stop => return Ok(0),
            Next::Reload(p) => {
                next = *p;
                // Read again: the stopped pipeline wrote what it left.
                fail_log = next.parts.load_fail_log(&next.config)?;
                first = false;
            }
        }
    }
}

/// The status during the first start-up, before the pipeline exists: the watch count
/// as the walks go, no remotes yet, on the control socket (`--status`; other commands
/// are answered "starting", and `--wait-synced` asks again) and on the HTTP endpoint.
/// The HTTP listener is handed on to the pipeline's status server.
struct Starting {
    listener: Option<TcpListener>,
    server: Option<(Arc<Stop>, JoinHandle<()>)>,
    control: Option<control::Control>,
}

impl Starting {
    fn serve(
        config: &Config,
        fail_log: &FailLog,
        watches: &Arc<AtomicUsize>,
        socket: &std::path::Path,
    ) -> Starting {
        let unit = watch_unit_of(config.watcher);
        let (w, file, path, entries, unknown) = (
            Arc::clone(watches),
            config.file.display().to_string(),
            fail_log.path.clone(),
            fail_log.len(),
            fail_log.unknown_len(),
        );
        let source: status::Source = Arc::new(move || {
            let snap = sync::Snapshot {
                uptime: crate::sys::uptime(),
                fail_log: path.clone(),
                fail_log_entries: entries,
                unknown_entries: unknown,
                last_full_sync: None,
                remotes: Vec::new(),
            };
            status::Status::new(snap, w.load(Ordering::Relaxed), &file)
                .with_watch_unit(unit)
                .with_progress(sync::progress::running())
        });
        let answers = Arc::clone(&source);
        // Not bound now: the pipeline binds it again and says why.
        let control = control::serve(
            socket,
            Arc::new(move |request: &str| super::commands::starting(&answers, request)),
        )
        .ok();
        let mut starting = Starting {
            listener: None,
            server: None,
            control,
        };
        let Some((host, port)) = &config.host else {
            return starting;
        };
        // Not bound now: the pipeline's status server binds (and retries) as always.
        let Ok(listener) = TcpListener::bind((host.as_str(), *port)) else {
            return starting;
        };
        let (Ok(clone), Ok(stop)) = (listener.try_clone(), Stop::manual()) else {
            starting.listener = Some(listener);
            return starting;
        };
        let stop = Arc::new(stop);
        starting.server = status::serve(clone, source, Some(Arc::clone(&stop))).map(|h| (stop, h));
        starting.listener = Some(listener);
        starting
    }

    /// Stops the start-up servers; the listener, for the pipeline's.
    fn end(self) -> Option<TcpListener> {
        drop(self.control);
        if let Some((stop, handle)) = self.server {
            stop.trigger();
            let _ = handle.join();
        }
        self.listener
    }
}

/// Sets a watch on every root of `parts` (walking each tree), counting them into
/// `watches` as the walks go.
fn watch(
    config: &Config,
    parts: &Parts,
    watches: Arc<AtomicUsize>,
) -> anyhow::Result<(Vec<Watcher>, Arc<AtomicUsize>)> {
    let started = Instant::now();
    let mut watchers = Vec::new();
    for (i, (root, excludes)) in parts.roots().enumerate() {
        let w = Watcher::new_counted(
            root.to_path_buf(),
            i,
            excludes.clone(),
            config.events,
            config.watcher,
            Arc::clone(&watches),
        )?;
        log::info!(
            "watching {}: {} in {:.2}s",
            w.root().display(),
            w.describe(),
            started.elapsed().as_secs_f64()
        );
        watchers.push(w);
    }
    Ok((watchers, watches))
}

/// What the status's watch count counts, from the backends the roots got.
fn watch_unit(watchers: &[Watcher]) -> &'static str {
    let fanotify = watchers
        .iter()
        .filter(|w| matches!(w, Watcher::Fanotify(_)))
        .count();
    match fanotify {
        0 => "directories",
        n if n == watchers.len() => "filesystem marks",
        _ => "directories and filesystem marks",
    }
}

/// [`watch_unit`] before the watchers exist, from what the config asks for.
fn watch_unit_of(backend: crate::config::Backend) -> &'static str {
    match backend {
        crate::config::Backend::Inotify => "directories",
        crate::config::Backend::Fanotify => "filesystem marks",
        crate::config::Backend::Auto => "",
    }
}

fn bind_status(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((host, port)).with_context(|| {
        format!(
            "cannot listen for status on {}",
            crate::config::host_port(host, port)
        )
    })
}

/// At SIGHUP: the config file loaded and checked again, its fail log readable, a moved
/// status listener bound, the new watches set. Any error leaves the running one alone.
fn prepare_reload(running: &Config, cx: &Ctx) -> anyhow::Result<Prepared> {
    let config =
        super::load(&cx.config_path, cx.args).map_err(|e| anyhow::anyhow!("{:#}", e.error()))?;
    let parts = cx.parts(&config);
    parts
        .load_fail_log(&config)
        .map_err(|e| anyhow::anyhow!("{:#}", e.error()))?;
    let listener = match &config.host {
        Some((host, port)) if config.host != running.host => Some(bind_status(host, *port)?),
        _ => None,
    };
    let (watchers, watches) = watch(&config, &parts, Arc::new(AtomicUsize::new(0)))?;
    Ok(Prepared {
        config,
        parts,
        watchers,
        watches,
        listener,
        starting: None,
    })
}

/// One run of the pipeline: from set watches to the stop or an accepted reload.
fn run(
    prepared: Prepared,
    fail_log: FailLog,
    cx: &Ctx,
    detached: &mut Option<Detached>,
    first: bool,
    paused: &mut std::collections::BTreeSet<String>,
) -> Result<Next, Exit> {
    let Prepared {
        config,
        parts,
        watchers,
        watches,
        listener,
        starting,
    } = prepared;
    let config = &config;
    let args = cx.args;
    let unit = watch_unit(&watchers);
    // This run's stop: raised by SIGTERM/SIGINT or an accepted reload.
    let stop = Arc::new(
        Stop::manual()
            .context("cannot create the stop signal")
            .map_err(|e| fail(detached, runtime(e)))?,
    );
    let runner = Runner::for_live(&config.plugins);
    let opts = Options {
        workers: args.workers,
        after_push: runner.clone().map(|r| r as Arc<dyn AfterPush>),
        ssh_control: (!config.ssh_commands().is_empty()).then(|| cx.socket.clone()),
    };
    let watching = Watching {
        watchers,
        stop: Arc::clone(&stop),
    };
    let walked_roots: Vec<_> = (parts.roots())
        .map(|(r, e)| (r.to_path_buf(), e.clone()))
        .collect();
    let (mut pipeline, mirror) = Pipeline::sync(config, parts, fail_log, Some(watching), opts);
    // Before anything is queued or a worker starts: nothing leaks past a pause.
    super::pause::carry(&mirror, paused);
    let verifier = config
        .verify
        .as_ref()
        .map(|_| Arc::new(Verifier::new(Arc::clone(&mirror))));
    let roots = pipeline.roots_health().to_vec();

    // Before the workers start: a rebuild's walk must come before its full syncs.
    let (index, _, counted) = super::warm::start(
        &config.fail_log,
        &walked_roots,
        &mirror,
        first && args.full_first,
        false,
        pipeline.links(),
    );
    let listener = match starting {
        Some(s) => s.end(),
        None => listener,
    };
    let checkpoints =
        super::warm::checkpoints(Arc::clone(&index), Arc::clone(&stop), Arc::clone(&mirror))
            .map_err(|e| fail(detached, runtime(anyhow::Error::new(e))))?;
    pipeline.attach(checkpoints);
    if first && args.full_first {
        log::info!("-r: full sync of every remote before live syncing");
        super::warm::full_syncs(&mirror, &counted);
    }
    if mirror.owed() > 0 {
        log::info!(
            "fail log {} holds {} entries from before; replaying",
            config.fail_log.display(),
            mirror.owed()
        );
        mirror.replay();
    }
    // The status document, for the control socket's `status` and the HTTP endpoint.
    let source: status::Source = {
        let (m, w, file, v) = (
            Arc::clone(&mirror),
            Arc::clone(&watches),
            config.file.display().to_string(),
            verifier.clone(),
        );
        Arc::new(move || {
            status::Status::new(m.snapshot(), w.load(Ordering::Relaxed), &file)
                .with_watch_unit(unit)
                .with_roots(roots.iter().map(|r| r.report()).collect())
                .with_verify(v.as_ref().map(|v| v.results()).unwrap_or_default())
                .with_progress(sync::progress::running())
                .with_plugin(runner.as_ref().map(|r| plugin_status(r.report())))
        })
    };
    if let Some((host, port)) = &config.host {
        // A port another process holds never stops sync: the status thread binds again.
        let status_thread = status::listen(
            host,
            *port,
            listener,
            Arc::clone(&source),
            Arc::clone(&stop),
        );
        if let Some(t) = status_thread {
            pipeline.attach(t);
        }
    }
    pipeline.start().map_err(|e| fail(detached, runtime(e)))?;
    let scheduler = schedule::spawn(
        config.replay_every,
        config.crontab.clone(),
        config.verify.clone().zip(verifier),
        Arc::clone(&mirror),
        Arc::clone(&stop),
    )
    .map_err(|e| fail(detached, runtime(e)))?;
    pipeline.attach(scheduler);
    let m = Arc::clone(&mirror);
    let control = control::serve(
        &cx.socket,
        Arc::new(move |request: &str| super::commands::answer(&m, &source, request)),
    )
    .inspect_err(|e| {
        log::error!(
            "control socket {} off: {e}; syncing goes on, but --status, --replay and \
             --wait-synced cannot reach this instance",
            cx.socket.display()
        )
    })
    .ok();
    // Said at start (not at the first push) when rsync must follow links in the trees.
    if let Some(root) = config.roots.first() {
        if sync::rsync::guarded(&root.path) {
            log::debug!("rsync reads the watch roots through a nosymfollow mount");
        }
    }
    log::info!(
        "live: {} watch root(s), {} remote(s), {} workers; remotes: {}",
        config.roots.len(),
        mirror.targets().len(),
        pipeline.workers(),
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
    if let Some(n) = &cx.notifier {
        let (m, w) = (Arc::clone(&mirror), Arc::clone(&watches));
        n.set_status(Some(Box::new(move || {
            let held: usize = (m.queue().held().iter())
                .filter(|h| h.any())
                .map(|h| h.deletes.max(1))
                .sum();
            let held = if held > 0 {
                format!("; DELETES HELD: {held} (sersync2 --release-deletes or --discard-deletes)")
            } else {
                String::new()
            };
            format!(
                "watching {} directories, {} remotes; {} owed{}{held}",
                w.load(Ordering::Relaxed),
                m.targets().len(),
                m.owed(),
                paused_status(&m)
            )
        })));
        n.ready();
    }

    let next = wait_for_signal(config, cx);
    drop(control);
    *paused = super::pause::paused_labels(&mirror);
    if let Next::Stop = next {
        super::pause::at_stop(paused);
    }
    match &next {
        Next::Stop => {
            if let Some(n) = &cx.notifier {
                n.stopping();
            }
            log::info!("stopping: no more events are read; running pushes finish");
        }
        Next::Reload(_) => {
            log::info!("reloading: the running pipeline stops; running pushes finish first")
        }
    }
    if let Some(n) = &cx.notifier {
        n.set_status(None);
    }
    let (stopped, next) = pipeline.stop(|done| wait_for_workers(done, next, cx));
    if let Next::Stop = next {
        let killed = crate::plugin::command::kill_running();
        if killed > 0 {
            log::warn!("plugin command: {killed} run(s) still running at the stop, killed");
        }
    }
    super::warm::finish(&index);
    log::debug!(
        "{} entries were queued or running at the stop",
        stopped.left
    );
    let left = stopped.owed;
    let entries = |n: usize| format!("{n} entr{}", if n == 1 { "y" } else { "ies" });
    let kept = match stopped.kept {
        Ok(()) => "kept",
        Err(e) => {
            // Not kept: say so, and at a stop exit 1 so that the service manager sees it.
            log::error!("{e}");
            if let Next::Stop = next {
                log::info!("stopped; pushed per remote: {:?}", stopped.pushed);
                return Err(runtime(anyhow::anyhow!(e)));
            }
            "NOT kept"
        }
    };
    match &next {
        Next::Stop => {
            if left > 0 {
                log::info!(
                    "{} owed, kept in the fail log {} (replayed at the next start)",
                    entries(left),
                    config.fail_log.display()
                );
            }
            log::info!("stopped; pushed per remote: {:?}", stopped.pushed);
        }
        Next::Reload(_) => {
            log::info!(
                "old pipeline stopped ({} owed, {kept} in the fail log {}); pushed per remote: {:?}",
                entries(left),
                config.fail_log.display(),
                stopped.pushed
            );
        }
    }
    Ok(next)
}

/// The sd_notify status's words for the paused remotes: `; paused: LABEL (N waiting),
/// ...`, or nothing.
fn paused_status(mirror: &sync::Mirror) -> String {
    let waiting = mirror.queue().waiting();
    let paused: Vec<String> = mirror
        .queue()
        .paused()
        .into_iter()
        .zip(mirror.targets())
        .zip(waiting)
        .filter(|((p, _), _)| *p)
        .map(|((_, t), n)| format!("{} ({n} waiting)", t.label()))
        .collect();
    if paused.is_empty() {
        String::new()
    } else {
        format!("; PAUSED: {}", paused.join(", "))
    }
}

/// Waits for SIGTERM/SIGINT, or a SIGHUP whose config passes its checks.
fn wait_for_signal(config: &Config, cx: &Ctx) -> Next {
    loop {
        match cx.signals.wait() {
            Signal::Stop => return Next::Stop,
            Signal::Reload => {
                log::info!(
                    "SIGHUP: log file reopened (if any); reloading the config {}",
                    cx.config_path.display()
                );
                if let Some(n) = &cx.notifier {
                    n.reloading();
                }
                match prepare_reload(config, cx) {
                    Ok(p) => return Next::Reload(Box::new(p)),
                    Err(e) => {
                        log::error!(
                            "SIGHUP: {e:#}; the config loaded before stays in use; fix the \
                             file and send SIGHUP again"
                        );
                        if let Some(n) = &cx.notifier {
                            n.ready();
                        }
                    }
                }
            }
        }
    }
}

/// After the queue closed (`Pipeline::stop`; `all_done`: whether every worker has
/// ended): at a stop, the workers get [`SHUTDOWN_GRACE`]; at a reload, they are waited
/// for (the fail log must have one writer), unless SIGTERM comes first.
fn wait_for_workers(all_done: &dyn Fn() -> bool, mut next: Next, cx: &Ctx) -> Next {
    let mut deadline = Instant::now() + SHUTDOWN_GRACE;
    let mut warned = false;
    while !all_done() {
        match next {
            Next::Stop if Instant::now() >= deadline => {
                log::warn!(
                    "pushes still running after {}s; exiting, they stay in the fail log",
                    SHUTDOWN_GRACE.as_secs()
                );
                // Not left behind as orphans: SIGTERM, then SIGKILL after 2 s.
                let n = sync::rsync::terminate_running(Duration::from_secs(2));
                if n > 0 {
                    log::warn!("terminated {n} rsync process(es) still running");
                }
                break;
            }
            Next::Stop => std::thread::sleep(Duration::from_millis(20)),
            Next::Reload(_) => {
                if cx.signals.stopped_within(Duration::from_millis(20)) {
                    if let Some(n) = &cx.notifier {
                        n.stopping();
                    }
                    log::info!(
                        "stopping during the reload: running pushes get {}s",
                        SHUTDOWN_GRACE.as_secs()
                    );
                    next = Next::Stop;
                    deadline = Instant::now() + SHUTDOWN_GRACE;
                } else if !warned && Instant::now() >= deadline {
                    log::warn!(
                        "reload: pushes still running after {}s; the new config starts when \
                         they end (an rsync without <timeout> can hang on a dead network)",
                        SHUTDOWN_GRACE.as_secs()
                    );
                    warned = true;
                }
            }
        }
    }
    next
}

/// The plugin's counts as the status document gives them.
fn plugin_status(r: crate::plugin::Report) -> status::PluginStatus {
    let at = r
        .last_failure
        .as_ref()
        .map(|(t, _)| crate::sys::time::rfc3339(crate::sys::time::unix_seconds(*t)));
    status::PluginStatus {
        name: r.name.to_owned(),
        mode: r.mode.to_owned(),
        runs: r.runs,
        failed: r.failed,
        dropped: r.dropped,
        waiting: r.waiting,
        last_failure: r.last_failure.map(|(_, text)| text),
        last_failure_at: at,
    }
}
