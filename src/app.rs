//! Wires the stages together for each mode: live sync, `--test-config`, `--replay`.
//!
//! Start-up order matters: config first (any error exits 2 before anything starts),
//! then every watch (so that changes made during the initial full sync are seen), then
//! the `-r` full sync and the replay of an existing fail log, then live syncing.

use std::ffi::OsString;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use crate::cli::Args;
use crate::config::{self, Config, Schedule};
use crate::daemon::{self, Detached, InstanceLock, LogFile, LogWriter};
use crate::failq::{self, FailLog};
use crate::filter::Excludes;
use crate::pool::Engine;
use crate::queue::Queue;
use crate::rsync::{Job, Target};
use crate::status;
use crate::watch::Watcher;

/// How long running pushes get to finish after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// An error with the exit status it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: e.into(),
    }
}

fn runtime(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 1,
        error: e.into(),
    }
}

fn init_logging(log_file: Option<&Path>) -> Result<(), Failure> {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_millis().format_target(false);
    if let Some(path) = log_file {
        let (file, reopen) = LogFile::open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))
            .map_err(usage)?;
        builder.target(env_logger::Target::Pipe(Box::new(LogWriter(Arc::new(
            file,
        )))));
        // SIGHUP: logrotate moved the file; the next record opens it again by name.
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen).map_err(runtime)?;
    }
    let _ = builder.try_init();
    Ok(())
}

/// One target per (watch root, remote), in config order.
pub fn targets(config: &Config) -> Vec<Target> {
    let full_excludes = config
        .crontab
        .as_ref()
        .map(|c| c.excludes.clone())
        .unwrap_or_default();
    config
        .roots
        .iter()
        .flat_map(|root| {
            let full_excludes = full_excludes.clone();
            root.remotes.iter().map(move |remote| Target {
                root: root.path.clone(),
                remote: remote.clone(),
                opts: config.rsync.clone(),
                delete: config.events.delete,
                full_excludes: full_excludes.clone(),
            })
        })
        .collect()
}

pub fn run(mut args: Args) -> Result<u8, Failure> {
    // A daemon runs from `/`: paths from the command line are fixed now.
    if let Ok(cwd) = std::env::current_dir() {
        for p in [&mut args.log_file, &mut args.pid_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        }
    }
    init_logging(args.log_file.as_deref())?;
    let mut config = config::load(&args.config).map_err(usage)?;
    for (element, line) in &config.unknown {
        log::warn!(
            "{}:{line}: unknown element <{element}> ignored",
            config.file.display()
        );
    }
    if let Some(b) = args.batch {
        config.rsync.batch = b as usize;
    }
    if config
        .rsync
        .params
        .iter()
        .any(|p| p == "--update" || (p.starts_with('-') && !p.starts_with("--") && p.contains('u')))
    {
        log::warn!(
            "{}: <commonParams> has -u (--update): a file replaced by an older copy (cp -a, \
             mv, tar x) is then skipped as newer on the remote and stays wrong there; drop -u \
             unless this is a two-way setup",
            config.file.display()
        );
    }
    if args.test_config || args.status {
        // Printing modes: a closed pipe (`| head`) ends the process quietly, as for any
        // Unix tool, instead of a panic in println!.
        // SAFETY: restoring the default disposition of one signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Some(m) = &args.module {
        // -m NAME: only that plugin over the watched tree, no rsync (with -t: just checked).
        let module = crate::plugin::Module::new(&config, m).map_err(|e| usage(anyhow!(e)))?;
        if !args.test_config {
            let detached = if args.daemon {
                Some(daemon::detach().map_err(|e| runtime(anyhow!(e)))?)
            } else {
                None
            };
            match (module.start(&config), detached) {
                (Err(e), Some(d)) => {
                    d.failed(&format!("{e:#}"));
                    return Err(runtime(e));
                }
                (Err(e), None) => return Err(runtime(e)),
                (Ok(running), d) => {
                    if let Some(d) = d {
                        d.ready();
                    }
                    running.wait();
                    return Ok(0);
                }
            }
        }
    }
    let targets = targets(&config);
    if args.test_config {
        print_test_config(&config, &targets);
        return Ok(0);
    }
    if args.status {
        let Some((host, port)) = &config.host else {
            return Err(usage(anyhow!(
                "{}: the status endpoint is off; enable it with <host hostip=\"127.0.0.1\" port=\"8008\" start=\"true\"/>",
                config.file.display()
            )));
        };
        let s = status::query(host, *port).map_err(|e| runtime(anyhow!(e)))?;
        print!("{}", status::render(&s));
        return Ok(0);
    }
    let pid_file = args
        .pid_file
        .clone()
        .unwrap_or_else(|| daemon::default_pid_file(&args.config));
    let mut lock = InstanceLock::acquire(&pid_file).map_err(|e| runtime(anyhow!(e)))?;
    let fail_log = FailLog::load(config.fail_log.clone(), &targets)
        .with_context(|| format!("cannot read the fail log {}", config.fail_log.display()))
        .map_err(usage)?;
    if args.replay {
        return replay_once(&config, targets, fail_log, args.workers as usize);
    }
    let detached = if args.daemon {
        if args.log_file.is_none() {
            log::warn!("-d without --log-file: logs are discarded once detached");
        }
        let d = daemon::detach().map_err(|e| runtime(anyhow!(e)))?;
        lock.write_pid().map_err(|e| runtime(anyhow!(e)))?;
        Some(d)
    } else {
        None
    };
    let result = live(&config, targets, fail_log, &args, detached);
    drop(lock);
    result
}

fn shell_words(words: &[OsString]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.as_encoded_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=./:@,+%".contains(b));
            if plain {
                w.to_string_lossy().into_owned()
            } else {
                String::from_utf8_lossy(&failq::quote(w)).into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_test_config(config: &Config, targets: &[Target]) {
    println!("config {}: OK", config.file.display());
    for root in &config.roots {
        println!("watch {}", root.path.display());
        for t in targets.iter().filter(|t| t.root == root.path) {
            println!("  remote {}", t.dest());
            let (mut live, _) = t.argv(&Job::Paths(vec![]));
            let dest = live.pop().unwrap_or_default();
            println!(
                "    live:  cd {} && rsync {} ./PATH... {}",
                shell_words(&[t.root.clone().into()]),
                shell_words(&live),
                shell_words(&[dest])
            );
            let (full, _) = t.argv(&Job::Full { excluded: vec![] });
            println!(
                "    full:  cd {} && rsync {}",
                shell_words(&[t.root.clone().into()]),
                shell_words(&full)
            );
        }
    }
    let on = |b: bool| if b { "on" } else { "off" };
    let e = config.events;
    println!(
        "events: delete {} createFolder {} createFile {} closeWrite {} moveFrom {} moveTo {} attrib {} modify {}",
        on(e.delete), on(e.create_folder), on(e.create_file), on(e.close_write),
        on(e.move_from), on(e.move_to), on(e.attrib), on(e.modify)
    );
    println!("filter: {} exclude rule(s)", config.excludes.len());
    println!(
        "fail log: {} (replayed every {} min)",
        config.fail_log.display(),
        config.replay_every.as_secs() / 60
    );
    match &config.crontab {
        Some(c) => match &c.schedule {
            Schedule::Every(d) => println!("crontab: full sync every {} min", d.as_secs() / 60),
            Schedule::Cron(expr) => println!("crontab: full sync at \"{expr}\""),
        },
        None => println!("crontab: off"),
    }
    println!("batch: up to {} paths per rsync call", config.rsync.batch);
}

fn engine(config: &Config, targets: Vec<Target>, fail_log: FailLog, workers: usize) -> Arc<Engine> {
    let queue = Queue::new(targets.len(), config.rsync.batch, workers);
    let mut engine = Engine::new(
        targets,
        queue,
        Excludes::new(config.excludes.clone()),
        config.debug,
        fail_log,
    );
    engine.plugins = config.plugins.for_engine();
    Arc::new(engine)
}

/// `--replay`: push everything owed once; exit 0 only if nothing is left.
fn replay_once(
    config: &Config,
    targets: Vec<Target>,
    fail_log: FailLog,
    workers: usize,
) -> Result<u8, Failure> {
    if fail_log.is_empty() {
        println!("fail log {}: nothing to replay", config.fail_log.display());
        return Ok(0);
    }
    let engine = engine(config, targets, fail_log, workers);
    let handles = engine.spawn_workers(workers);
    engine.replay();
    while !engine.queue.is_idle() {
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.close();
    for h in handles {
        let _ = h.join();
    }
    let fl = engine.fail_log();
    if fl.is_empty() {
        println!(
            "fail log {}: replayed, nothing left",
            config.fail_log.display()
        );
        Ok(0)
    } else {
        for (remote, n) in failq::summary(&fl, &engine.targets) {
            println!(
                "still owed to {remote}: {n} entr{}",
                if n == 1 { "y" } else { "ies" }
            );
        }
        Err(runtime(anyhow!(
            "{} entr{} still owed, kept in {}",
            fl.len(),
            if fl.len() == 1 { "y" } else { "ies" },
            fl.path.display()
        )))
    }
}

fn live(
    config: &Config,
    targets: Vec<Target>,
    fail_log: FailLog,
    args: &Args,
    mut detached: Option<Detached>,
) -> Result<u8, Failure> {
    // In a detached child, a start-up failure is reported to the waiting parent.
    let fail = |detached: &mut Option<Detached>, f: Failure| -> Failure {
        if let Some(d) = detached.take() {
            d.failed(&format!("{:#}", f.error));
        }
        f
    };
    let workers = args.workers as usize;
    let engine = engine(config, targets, fail_log, workers);

    // SIGTERM/SIGINT make this socket readable; every thread polls it, nobody reads it.
    let (stop_rx, stop_tx) = UnixStream::pair().map_err(|e| fail(&mut detached, runtime(e)))?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let tx = stop_tx
            .try_clone()
            .map_err(|e| fail(&mut detached, runtime(e)))?;
        signal_hook::low_level::pipe::register(sig, tx)
            .map_err(|e| fail(&mut detached, runtime(e)))?;
    }

    let started = Instant::now();
    let mut watchers = Vec::new();
    for root in &config.roots {
        let ids: Vec<usize> = engine
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.root == root.path)
            .map(|(i, _)| i)
            .collect();
        let mut w = Watcher::new(
            root.path.clone(),
            ids,
            Arc::clone(&engine.queue),
            Excludes::new(config.excludes.clone()),
            config.events,
            config.debug,
        )
        .map_err(|e| fail(&mut detached, runtime(e)))?;
        w.count_into(Arc::clone(&engine.watches));
        log::info!(
            "watching {}: {} directories in {:.2}s",
            w.root().display(),
            w.watched(),
            started.elapsed().as_secs_f64()
        );
        watchers.push(w);
    }
    if args.full_first {
        log::info!("-r: full sync of every remote before live syncing");
        engine
            .queue
            .push_full(&(0..engine.targets.len()).collect::<Vec<_>>());
    }
    if !engine.fail_log().is_empty() {
        log::info!(
            "fail log {} holds {} entries from before; replaying",
            config.fail_log.display(),
            engine.fail_log().len()
        );
        engine.replay();
    }
    if let Some((host, port)) = &config.host {
        let listener = std::net::TcpListener::bind((host.as_str(), *port))
            .with_context(|| format!("cannot listen for status on {host}:{port}"))
            .map_err(|e| fail(&mut detached, runtime(e)))?;
        log::info!("status on http://{host}:{port}/status and /metrics");
        status::serve(
            listener,
            Arc::clone(&engine),
            config.file.display().to_string(),
        );
    }
    let handles = engine.spawn_workers(workers);
    let stop_fd = stop_rx.as_raw_fd();
    let watch_threads: Vec<_> = watchers
        .into_iter()
        .map(|w| {
            std::thread::Builder::new()
                .name("watch".into())
                .spawn(move || w.run(stop_fd))
                .map_err(runtime)
        })
        .collect::<Result<_, _>>()?;
    let scheduler = spawn_scheduler(config, Arc::clone(&engine), stop_fd);
    log::info!(
        "live: {} watch root(s), {} remote(s), {} workers; remotes: {}",
        config.roots.len(),
        engine.targets.len(),
        workers,
        engine
            .targets
            .iter()
            .map(Target::label)
            .collect::<Vec<_>>()
            .join(", ")
    );

    if let Some(d) = detached.take() {
        d.ready();
    }
    wait_readable(stop_fd);
    log::info!("stopping: no more events are read; running pushes finish");
    for t in watch_threads {
        let _ = t.join();
    }
    let _ = scheduler.join();
    let left = engine.close();
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
    let left = engine.fail_log().len();
    if left > 0 {
        log::info!(
            "{left} entr{} owed, kept in the fail log {} (replayed at the next start)",
            if left == 1 { "y" } else { "ies" },
            config.fail_log.display()
        );
    }
    log::info!("stopped; pushed per remote: {:?}", engine.pushed());
    Ok(0)
}

/// Blocks until `fd` is readable (or polling fails).
pub(crate) fn wait_readable(fd: i32) {
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n > 0
            || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
        {
            return;
        }
    }
}

/// Waits up to `d` for `fd` to become readable; true if it did.
fn readable_within(fd: i32, d: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = d.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Timed fail-log replay and crontab full syncs, until `stop_fd` is readable. Both only
/// queue work, so a flood of live events cannot starve them.
fn spawn_scheduler(
    config: &Config,
    engine: Arc<Engine>,
    stop_fd: i32,
) -> std::thread::JoinHandle<()> {
    let replay_every = config.replay_every;
    let crontab = config.crontab.clone();
    std::thread::spawn(move || {
        let cron = match crontab.as_ref().map(|c| &c.schedule) {
            Some(Schedule::Cron(expr)) => crate::schedule::parse_cron(expr).ok(),
            _ => None,
        };
        let every = match crontab.as_ref().map(|c| &c.schedule) {
            Some(Schedule::Every(d)) => Some(*d),
            _ => None,
        };
        let next_cron = |now: Instant| -> Option<Instant> {
            let s = cron.as_ref()?;
            let at = s.upcoming(chrono::Local).next()?;
            let wait = (at - chrono::Local::now()).to_std().unwrap_or_default();
            Some(now + wait)
        };
        let now = Instant::now();
        let mut next_replay = now + replay_every;
        let mut next_full = every.map(|d| now + d).or_else(|| next_cron(now));
        loop {
            let now = Instant::now();
            let due = next_full.map_or(next_replay, |f| f.min(next_replay));
            if readable_within(stop_fd, due.saturating_duration_since(now)) {
                return;
            }
            let now = Instant::now();
            if now >= next_replay {
                engine.replay();
                next_replay = now + replay_every;
            }
            if let Some(f) = next_full {
                if now >= f {
                    log::info!("crontab: full sync of every remote");
                    engine
                        .queue
                        .push_full(&(0..engine.targets.len()).collect::<Vec<_>>());
                    next_full = every.map(|d| now + d).or_else(|| next_cron(now));
                }
            }
        }
    })
}
