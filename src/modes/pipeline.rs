//! One pipeline, built once from a `Config` and stopped in one place.
//!
//! [`Parts`] is what a config names, before anything runs: the agent's own files, one
//! `Target` per (watch root, remote), each knowing the own files in its root, and per
//! watch root its excludes and the remotes (pending sets) its changes go to. They are
//! built once per config: at start, and at a reload while the running pipeline still
//! runs (the new watches are set with these excludes). The fail log (the ledger of what
//! each remote owes) is read against these targets ([`Parts::load_fail_log`]).
//! `--verify` needs nothing more.
//!
//! [`Pipeline`] is the running part, built from the parts: the pending sets (`Queue`),
//! the `Mirror` holding the fail log, the filter thread's routes, the workers, and the
//! watch threads of watchers set beforehand. Live, `--replay` and the `-m` module each
//! build one; a reload stops the running one and builds another. [`Pipeline::stop`]
//! stops everything in one order: the stop raised, the watch threads and the filter
//! thread ended (what they read is queued), the threads attached to it (scheduler,
//! status) ended, the queue closed (what is waiting and running goes to the fail log),
//! the workers waited for as the caller says, the shared ssh connections closed, the
//! fail log written if its last write failed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};

use super::{usage, Exit};
use crate::config::{Config, Events};
use crate::filter::Excludes;
use crate::sync::intake::{Intake, Route};
use crate::sync::links::Links;
use crate::sync::{self, AfterPush, FailLog, Mirror, Queue, RemoteId, Target};
use crate::sys::{fsafe, Stop};
use crate::watch::{RootHealth, Watcher};

/// What a config names, before anything runs (see the module doc).
pub(crate) struct Parts {
    /// One per (watch root, remote), in config order; none for `-m`.
    pub targets: Vec<Target>,
    /// The watch roots, in order.
    roots: Vec<Root>,
    /// The `<filter>` excludes alone (the mirror adds each target's own files).
    filter: Excludes,
    /// How many pending sets: one per target, or for `-m` one per root.
    sets: usize,
}

/// One watch root of [`Parts`].
struct Root {
    path: PathBuf,
    /// The `<filter>` excludes, with the agent's own files in this root.
    excludes: Excludes,
    /// The pending sets its changes go to.
    remotes: Vec<RemoteId>,
}

impl Parts {
    /// A syncing config's parts: its roots and remotes; `own` are the agent's own files
    /// (absolute), never events and never pushed.
    pub fn new(config: &Config, own: &[PathBuf]) -> Parts {
        let mut targets = sync::targets(config);
        let mut roots: Vec<Root> = Vec::with_capacity(config.roots.len());
        for r in &config.roots {
            let rel = super::own_in(&r.path, own);
            roots.push(Root {
                path: r.path.clone(),
                excludes: Excludes::new(config.excludes.clone())
                    .with_rules(config.rules.clone())
                    .with_own(rel),
                remotes: sync::workers::remotes_of(&targets, &r.path),
            });
        }
        for t in &mut targets {
            t.set_own(super::own_in(&t.root, own));
        }
        Parts {
            sets: targets.len(),
            targets,
            roots,
            filter: Excludes::new(config.excludes.clone()).with_rules(config.rules.clone()),
        }
    }

    /// `-m`: the plugin's directories `roots`, each its own pending set, no remotes.
    pub fn watching(config: &Config, roots: &[PathBuf], own: &[PathBuf]) -> Parts {
        Parts {
            targets: Vec::new(),
            roots: roots
                .iter()
                .enumerate()
                .map(|(i, r)| Root {
                    path: r.clone(),
                    excludes: Excludes::new(config.excludes.clone())
                        .with_rules(config.rules.clone())
                        .with_own(super::own_in(r, own)),
                    remotes: vec![RemoteId(i)],
                })
                .collect(),
            filter: Excludes::new(config.excludes.clone()).with_rules(config.rules.clone()),
            sets: roots.len(),
        }
    }

    /// The watch roots in order, each with its excludes (for its watcher).
    pub fn roots(&self) -> impl Iterator<Item = (&Path, &Excludes)> {
        self.roots.iter().map(|r| (r.path.as_path(), &r.excludes))
    }

    /// The excludes of the watch root `root`.
    pub fn excludes(&self, root: &Path) -> Option<&Excludes> {
        self.roots
            .iter()
            .find(|r| r.path == root)
            .map(|r| &r.excludes)
    }

    /// The config's fail log, read and checked against these targets (a refused one is
    /// a usage error). One owned by another user (planted before the agent started, at
    /// the default /tmp path) is moved aside unread first (`fsafe::set_aside_foreign`):
    /// logged as an error naming both paths, kept for the operator, never run; the agent
    /// starts with a fresh one.
    pub fn load_fail_log(&self, config: &Config) -> Result<FailLog, Exit> {
        let path = &config.fail_log;
        let refused = |e: std::io::Error| {
            if fsafe::is_refused(&e) {
                usage(anyhow!("refusing the fail log {}: {e}", path.display()))
            } else {
                usage(anyhow!("cannot read the fail log {}: {e}", path.display()))
            }
        };
        let mut tries = 0;
        while let Some(aside) = fsafe::set_aside_foreign(path).map_err(refused)? {
            log::error!(
                "the fail log {} was {}, not the agent's: someone else may have planted it; \
                 moved aside unread to {} (kept for you to read, never run), starting with a \
                 fresh fail log",
                path.display(),
                aside.what,
                aside.to.display()
            );
            // The fresh one is made now, so that nobody plants another in between (in a
            // sticky directory, nobody else can then move ours).
            let fresh = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            match fsafe::open_trusted(path, fresh, 0o600) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => return Err(refused(e)),
            }
        }
        FailLog::load(path.clone(), &self.targets).map_err(refused)
    }

    /// The filter thread's routes: per watch root, where its changes go.
    fn routes(&self) -> Vec<Route> {
        self.roots
            .iter()
            .map(|r| Route {
                root: r.path.clone(),
                remotes: r.remotes.clone(),
                excludes: r.excludes.clone(),
            })
            .collect()
    }
}

/// The watch side of a pipeline: the watchers (their watches set already) and the stop
/// that ends their threads.
pub(crate) struct Watching {
    pub watchers: Vec<Watcher>,
    pub stop: Arc<Stop>,
}

/// How a syncing pipeline is run, beyond its config.
#[derive(Default)]
pub(crate) struct Options {
    /// `-n`: how many workers (else `workers::count`'s default).
    pub workers: Option<u16>,
    /// Runs after each push that landed (the live plugin).
    pub after_push: Option<Arc<dyn AfterPush>>,
    /// ssh: the instance's control socket, after which the directories of the shared
    /// connections' sockets are named, one per ssh command (see [`share_ssh`]);
    /// `None`: one connection per call.
    pub ssh_control: Option<PathBuf>,
}

/// What the workers are.
enum Work {
    /// `sync-N` threads running rsync for the mirror.
    Sync { mirror: Arc<Mirror>, count: usize },
    /// `-m`: one `plugin` thread that takes the queue's jobs.
    Plugin(Option<Box<dyn FnOnce(Arc<Queue>) + Send>>),
}

/// A pipeline: built from [`Parts`], started with [`Pipeline::start`], ended with
/// [`Pipeline::stop`] (see the module doc).
pub(crate) struct Pipeline {
    routes: Vec<Route>,
    events: Events,
    debug: bool,
    queue: Arc<Queue>,
    work: Work,
    /// Until [`Pipeline::start`] takes the watchers.
    watching: Option<Watching>,
    stop: Option<Arc<Stop>>,
    health: Vec<Arc<RootHealth>>,
    workers: Vec<JoinHandle<()>>,
    filter: Option<JoinHandle<()>>,
    watch_threads: Vec<JoinHandle<()>>,
    /// Threads that end on this pipeline's stop, joined before the queue closes.
    attached: Vec<JoinHandle<()>>,
    /// The names of multi-linked files, for the filter thread (`src/sync/links.rs`).
    links: Arc<Mutex<Links>>,
    /// `-H` in a remote's params: the names of a multi-linked file go in one call.
    hard_links: bool,
}

/// How a pipeline ended ([`Pipeline::stop`]).
pub(crate) struct Stopped {
    /// Entries written to the fail log at the close: what was queued or running then.
    pub left: usize,
    /// Entries the fail log holds for configured remotes once the wait ended.
    pub owed: usize,
    /// The last write of the fail log: `Err` says what could not be kept.
    pub kept: Result<(), String>,
    /// Paths pushed, per remote.
    pub pushed: Vec<u64>,
    /// Whether every worker had ended when the wait returned.
    pub finished: bool,
}

impl Pipeline {
    /// A syncing pipeline (live, `--replay`): the targets of `parts` (in ssh mode with
    /// their shared connections), the pending sets, the mirror holding `fail_log` (what
    /// it owes is owed again now), the workers (not started), and the roots of
    /// `watching` guarded. Returns the mirror too, for the callers that ask it.
    pub fn sync(
        config: &Config,
        parts: Parts,
        fail_log: FailLog,
        watching: Option<Watching>,
        opts: Options,
    ) -> (Pipeline, Arc<Mirror>) {
        let routes = parts.routes();
        let mut targets = parts.targets;
        if let Some(socket) = &opts.ssh_control {
            share_ssh(&mut targets, socket);
        }
        let count = sync::workers::count(opts.workers, targets.len());
        let queue = Arc::new(Queue::new(parts.sets, config.rsync.batch, count));
        queue.set_brake(
            config.delete_brake,
            targets.iter().map(Target::label).collect(),
            &config.file,
        );
        let mirror = Arc::new(Mirror::new(
            targets,
            Arc::clone(&queue),
            parts.filter,
            config.debug,
            fail_log,
            opts.after_push,
        ));
        mirror.push_big_files(config.big_files);
        mirror.say_held_at_start(&config.file);
        let health: Vec<_> = watching
            .iter()
            .flat_map(|w| w.watchers.iter().map(|w| w.health()))
            .collect();
        if watching.is_some() {
            mirror.guard_roots(health.clone());
        }
        let pipeline = Pipeline {
            routes,
            events: config.events,
            debug: config.debug,
            queue,
            work: Work::Sync {
                mirror: Arc::clone(&mirror),
                count,
            },
            stop: watching.as_ref().map(|w| Arc::clone(&w.stop)),
            watching,
            health,
            workers: Vec::new(),
            filter: None,
            watch_threads: Vec::new(),
            attached: Vec::new(),
            links: Arc::default(),
            hard_links: config.keeps_hard_links(),
        };
        (pipeline, mirror)
    }

    /// `-m`: the watched directories of `parts` into one pending set each, taken by one
    /// `plugin` thread that runs `work` over the queue.
    pub fn plugin(
        config: &Config,
        parts: Parts,
        watching: Watching,
        work: impl FnOnce(Arc<Queue>) + Send + 'static,
    ) -> Pipeline {
        // One pending set per root: the plugin's own merging and ordering.
        let queue = Arc::new(Queue::new(parts.sets, 1000, 1));
        Pipeline {
            routes: parts.routes(),
            events: config.events,
            debug: config.debug,
            queue,
            work: Work::Plugin(Some(Box::new(work))),
            stop: Some(Arc::clone(&watching.stop)),
            health: watching.watchers.iter().map(|w| w.health()).collect(),
            watching: Some(watching),
            workers: Vec::new(),
            filter: None,
            watch_threads: Vec::new(),
            attached: Vec::new(),
            links: Arc::default(),
            hard_links: false,
        }
    }

    /// Starts the workers, then the filter thread and one watch thread per watcher.
    pub fn start(&mut self) -> anyhow::Result<()> {
        match &mut self.work {
            Work::Sync { mirror, count } => {
                self.workers = mirror
                    .spawn_workers(*count)
                    .context("cannot start the workers")?;
            }
            Work::Plugin(work) => {
                if let Some(work) = work.take() {
                    let q = Arc::clone(&self.queue);
                    self.workers.push(
                        std::thread::Builder::new()
                            .name("plugin".into())
                            .spawn(move || work(q))
                            .context("cannot start the plugin thread")?,
                    );
                }
            }
        }
        let Some(Watching { watchers, stop }) = self.watching.take() else {
            return Ok(());
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let intake = Intake {
            routes: std::mem::take(&mut self.routes),
            events: self.events,
            debug: self.debug,
            queue: Arc::clone(&self.queue),
            links: Arc::clone(&self.links),
            hard_links: self.hard_links,
        };
        self.filter = Some(
            std::thread::Builder::new()
                .name("filter".into())
                .spawn(move || intake.run(rx))
                .context("cannot start the filter thread")?,
        );
        for w in watchers {
            let (tx, stop_fd) = (tx.clone(), stop.fd());
            self.watch_threads.push(
                std::thread::Builder::new()
                    .name("watch".into())
                    .spawn(move || w.run(stop_fd, tx))
                    .context("cannot start a watch thread")?,
            );
        }
        Ok(())
    }

    /// The stop that ends this pipeline's threads (none without watchers).
    pub fn stop_signal(&self) -> Option<&Arc<Stop>> {
        self.stop.as_ref()
    }

    /// The watch roots' health, in order.
    pub fn roots_health(&self) -> &[Arc<RootHealth>] {
        &self.health
    }

    /// How many workers run (or will).
    pub fn workers(&self) -> usize {
        match &self.work {
            Work::Sync { count, .. } => *count,
            Work::Plugin(_) => 1,
        }
    }

    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// The names of multi-linked files the filter thread keeps: a walk of the tree
    /// before it starts feeds them (`warm::start`).
    pub fn links(&self) -> &Arc<Mutex<Links>> {
        &self.links
    }

    /// A thread that ends on this pipeline's stop (scheduler, status server): joined by
    /// [`Pipeline::stop`] after the filter thread, before the queue closes.
    pub fn attach(&mut self, thread: JoinHandle<()>) {
        self.attached.push(thread);
    }

    /// Stops the pipeline (see the module doc). `wait` is given whether every worker
    /// has ended and returns when the caller is done waiting for them; what it returns
    /// is handed back.
    pub fn stop<R>(mut self, wait: impl FnOnce(&dyn Fn() -> bool) -> R) -> (Stopped, R) {
        if let Some(stop) = &self.stop {
            stop.trigger();
        }
        for t in self.watch_threads.drain(..) {
            let _ = t.join();
        }
        // The filter thread ends once the watchers have hung up and it has queued the rest.
        if let Some(t) = self.filter.take() {
            let _ = t.join();
        }
        for t in self.attached.drain(..) {
            let _ = t.join();
        }
        let left = match &self.work {
            Work::Sync { mirror, .. } => mirror.close(),
            Work::Plugin(_) => {
                self.queue.close();
                0
            }
        };
        let workers = std::mem::take(&mut self.workers);
        let waited = wait(&|| workers.iter().all(JoinHandle::is_finished));
        let finished = workers.iter().all(JoinHandle::is_finished);
        for w in workers {
            if w.is_finished() {
                let _ = w.join();
            }
        }
        let stopped = match &self.work {
            Work::Sync { mirror, .. } => {
                // The shared ssh connections close with the pipeline: a reload may change
                // the ssh command (another key, stricter host checks), and a stop leaves
                // nothing behind.
                mirror.close_ssh_masters();
                Stopped {
                    left,
                    owed: mirror.owed(),
                    kept: mirror.final_save().map_err(|e| e.to_string()),
                    pushed: mirror.pushed(),
                    finished,
                }
            }
            Work::Plugin(_) => Stopped {
                left,
                owed: 0,
                kept: Ok(()),
                pushed: Vec::new(),
                finished,
            },
        };
        (stopped, waited)
    }
}

/// Waits until every worker has ended (polling: a worker's end is not an event).
pub(crate) fn wait_all(done: &dyn Fn() -> bool) {
    while !done() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// ssh: one ssh connection per remote, its socket in a directory only we control, next
/// to the instance lock (`socket`), one per ssh command ([`ssh_control_dir`]:
/// remotes with their own `sshCommand=` never share a connection another command
/// opened), named short: a unix socket path holds 107 bytes, and ssh adds a 40-character
/// hash and a temporary suffix of 17 to it. Where a directory cannot be used, a warning,
/// and each call of its remotes connects by itself.
fn share_ssh(targets: &mut [Target], socket: &Path) {
    // Each directory made (Some) or refused (None) once.
    let mut made: Vec<(PathBuf, bool)> = Vec::new();
    for t in targets.iter_mut() {
        let Some(cmd) = t.opts.ssh.as_deref() else {
            continue;
        };
        let dir = ssh_control_dir(socket, cmd);
        let usable = match made.iter().find(|(d, _)| *d == dir) {
            Some((_, ok)) => *ok,
            None => {
                let fits = dir.as_os_str().len() + 1 + 40 + 17 <= 107;
                let ok = match fsafe::private_dir(&dir, 0o700) {
                    Ok(_) if fits => true,
                    Ok(_) => {
                        log::warn!(
                            "ssh connections are not reused: {} is too long a directory for \
                             ssh's control socket",
                            dir.display()
                        );
                        false
                    }
                    Err(e) => {
                        log::warn!("ssh connections are not reused: {e}");
                        false
                    }
                };
                made.push((dir.clone(), ok));
                ok
            }
        };
        if usable {
            t.ssh_control = Some(dir);
        }
    }
}

/// `<lock dir>/ssh-<hash>`: one directory per instance and ssh command, hashed from the
/// control socket's path and the command, so a reload that changes the command (another
/// key, other options) never reuses a connection the old one opened.
pub(super) fn ssh_control_dir(socket: &std::path::Path, ssh_command: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    // FNV-1a: short and stable; only has to tell this instance's files apart.
    let hash = socket
        .as_os_str()
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(ssh_command.as_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    socket
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .join(format!("ssh-{:08x}", hash as u32))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;

    fn load(text: &str) -> Config {
        crate::config::parse(Path::new("test.xml"), text.as_bytes()).expect("config loads")
    }

    /// Two watch roots, `a` with two remotes and `b` with one, `*.tmp` excluded, the
    /// fail log in `dir`.
    fn two_roots(dir: &Path) -> Config {
        for r in ["a", "b"] {
            std::fs::create_dir_all(dir.join(r)).expect("mkdir");
        }
        load(&format!(
            r#"<head><filter start="true"><exclude expression=".*\.tmp"/></filter><sersync>
  <localpath watch="{d}/a"><remote ip="127.0.0.1" name="one"/><remote ip="127.0.0.1" name="two"/></localpath>
  <localpath watch="{d}/b"><remote ip="127.0.0.1" name="three"/></localpath>
  <failLog path="{d}/fail.sh" timeToExecute="60"/>
</sersync></head>"#,
            d = dir.display()
        ))
    }

    #[test]
    fn parts_route_each_root_to_its_own_remotes_and_keep_the_agents_files_out() {
        let d = tempfile::tempdir().expect("tempdir");
        let config = two_roots(d.path());
        let own = vec![d.path().join("a/agent.log"), d.path().join("elsewhere.pid")];
        let parts = Parts::new(&config, &own);
        let labels: Vec<String> = parts.targets.iter().map(Target::label).collect();
        assert_eq!(parts.targets.len(), 3, "{labels:?}");
        // The own file in root a is known to a's targets only.
        assert_eq!(parts.targets[0].own, [PathBuf::from("agent.log")]);
        assert_eq!(parts.targets[1].own, [PathBuf::from("agent.log")]);
        assert!(parts.targets[2].own.is_empty());
        let routes = parts.routes();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].remotes, [RemoteId(0), RemoteId(1)]);
        assert_eq!(routes[1].remotes, [RemoteId(2)]);
        // One set of excludes per root, the same for its watcher and its route.
        let a = parts.excludes(&d.path().join("a")).expect("root a");
        assert!(a.excludes(Path::new("agent.log"), false));
        assert!(a.excludes(Path::new("x.tmp"), false));
        assert!(!a.excludes(Path::new("x.txt"), false));
        assert!(routes[0].excludes.excludes(Path::new("agent.log"), false));
        let b = parts.excludes(&d.path().join("b")).expect("root b");
        assert!(!b.excludes(Path::new("agent.log"), false));
        assert!(b.excludes(Path::new("x.tmp"), false));
        let roots: Vec<&Path> = parts.roots().map(|(r, _)| r).collect();
        assert_eq!(roots, [d.path().join("a"), d.path().join("b")]);
        assert!(parts.excludes(Path::new("/not/a/root")).is_none());
    }

    #[test]
    fn parts_for_a_module_give_each_directory_its_own_pending_set() {
        let d = tempfile::tempdir().expect("tempdir");
        let config = two_roots(d.path());
        let dirs = [d.path().join("x"), d.path().join("y")];
        let parts = Parts::watching(&config, &dirs, &[d.path().join("y/agent.log")]);
        assert!(parts.targets.is_empty());
        assert_eq!(parts.sets, 2);
        let routes = parts.routes();
        assert_eq!(routes[0].remotes, [RemoteId(0)]);
        assert_eq!(routes[1].remotes, [RemoteId(1)]);
        assert!(!routes[0].excludes.excludes(Path::new("agent.log"), false));
        assert!(routes[1].excludes.excludes(Path::new("agent.log"), false));
    }

    #[test]
    fn the_stop_writes_what_was_waiting_to_the_fail_log_and_says_so() {
        let d = tempfile::tempdir().expect("tempdir");
        let config = two_roots(d.path());
        let parts = Parts::new(&config, &[]);
        let fail_log = parts.load_fail_log(&config).expect("no fail log yet");
        let (pipeline, mirror) = Pipeline::sync(&config, parts, fail_log, None, Options::default());
        // Never started: what is queued is still waiting at the stop.
        pipeline.queue().push_full(&[RemoteId(2)]);
        let (stopped, waited) = pipeline.stop(|done| done());
        assert!(waited, "no worker was started, so none runs");
        assert!(stopped.finished);
        assert_eq!(stopped.left, 1);
        assert_eq!(stopped.owed, 1);
        assert_eq!(stopped.kept, Ok(()));
        assert_eq!(stopped.pushed, [0, 0, 0]);
        // Owed to the third remote only, and on disk: read back against the same config.
        let third = mirror.targets()[2].label();
        let owed = mirror.owed_summary();
        assert_eq!(owed.keys().collect::<Vec<_>>(), [&third], "{owed:?}");
        let again = Parts::new(&config, &[]);
        let fl = again.load_fail_log(&config).expect("reads back");
        assert_eq!((fl.len(), fl.unknown_len()), (1, 0));
    }

    #[test]
    fn the_caller_decides_how_long_the_stop_waits_for_the_workers() {
        let d = tempfile::tempdir().expect("tempdir");
        let config = two_roots(d.path());
        let parts = Parts::watching(&config, &[d.path().join("a")], &[]);
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        let watching = Watching {
            watchers: Vec::new(),
            stop: Arc::new(Stop::manual().expect("stop")),
        };
        let mut pipeline = Pipeline::plugin(&config, parts, watching, move |_q| {
            // A plugin run that does not end until released.
            let _ = held.recv();
        });
        pipeline.start().expect("starts");
        let started = Instant::now();
        let (stopped, ()) = pipeline.stop(|done| {
            while !done() && started.elapsed() < Duration::from_millis(100) {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert!(!stopped.finished, "the worker is still held");
        assert!(stopped.kept.is_ok());
        drop(release);
    }
}
