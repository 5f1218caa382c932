//! What the binary does, one function per mode; `main` picks one with [`Mode::of`].
//!
//! Every mode starts the same way ([`prepare`]): paths from the command line made
//! absolute (a daemon runs from `/`), logging set up. The modes that run something then
//! load and check the config ([`config`]; any error exits 2 before anything starts).
//! The modes that ask the running instance (`--status`, `--wait-synced`, `--pause`,
//! `--resume`, `--replay` beside an instance, `--release-deletes`, `--discard-deletes`) find it from the config's path alone (`daemon::lock_file`) and
//! never need the file to be valid: a bad config left on disk after a refused reload
//! does not keep the operator from asking.

mod ask_status;
mod commands;
mod held;
mod live;
pub(crate) mod module;
mod once;
mod pause;
mod pipeline;
mod replay;
mod test_config;
mod verify;
mod wait_synced;
pub(crate) mod warm;

use std::path::PathBuf;

use anyhow::anyhow;

use crate::cli::Args;
use crate::config::{self, Config};
use crate::service::{daemon, logging};
use crate::sync;
use crate::sys::fsafe;

pub use ask_status::status;
pub use held::held;
pub use live::live;
pub use once::once;
pub use pause::pause;
pub use replay::replay;
pub use test_config::test_config;
pub use verify::verify;
pub use wait_synced::wait_synced;

/// What to do, from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `-t`: check the config (and the `-m` module, if named), print, exit.
    TestConfig { module: Option<String> },
    /// `--status`: ask the running instance.
    Status,
    /// `--release-deletes` (true) or `--discard-deletes` (false): ask the running
    /// instance to push or drop what the brake on mass deletes holds.
    Held(bool),
    /// `-m NAME`: one plugin over the tree, no rsync.
    Module(String),
    /// `--replay`: the fail log once.
    Replay,
    /// `--wait-synced`: ask the running instance, wait until its remotes are level.
    WaitSynced,
    /// `--pause` (true) or `--resume`: ask the running instance to hold back its
    /// pushes, or to let them go.
    Pause(bool),
    /// `--verify`: compare every remote with the source, change nothing.
    Verify,
    /// `--once`: bring every remote level and exit.
    Once,
    /// Watch and sync.
    Live,
}

impl Mode {
    pub fn of(args: &Args) -> Mode {
        if args.test_config {
            Mode::TestConfig {
                module: args.module.clone(),
            }
        } else if let Some(m) = &args.module {
            Mode::Module(m.clone())
        } else if args.status {
            Mode::Status
        } else if args.release_deletes || args.discard_deletes {
            Mode::Held(args.release_deletes)
        } else if args.verify {
            Mode::Verify
        } else if args.replay {
            Mode::Replay
        } else if args.wait_synced {
            Mode::WaitSynced
        } else if args.pause || args.resume {
            Mode::Pause(args.pause)
        } else if args.once {
            Mode::Once
        } else {
            Mode::Live
        }
    }
}

/// Why a mode failed, and so the exit status.
#[derive(Debug)]
pub enum Exit {
    /// Bad flags or config: exit 2, nothing was started.
    Usage(anyhow::Error),
    /// Something failed at run time: exit 1.
    Runtime(anyhow::Error),
}

impl Exit {
    pub fn code(&self) -> u8 {
        match self {
            Exit::Usage(_) => 2,
            Exit::Runtime(_) => 1,
        }
    }

    pub fn error(&self) -> &anyhow::Error {
        match self {
            Exit::Usage(e) | Exit::Runtime(e) => e,
        }
    }
}

pub(crate) fn usage(e: impl Into<anyhow::Error>) -> Exit {
    Exit::Usage(e.into())
}

pub(crate) fn runtime(e: impl Into<anyhow::Error>) -> Exit {
    Exit::Runtime(e.into())
}

/// SIGPIPE's default action back, as the binary starts (see `main`).
pub fn default_sigpipe() {
    crate::sys::process::default_sigpipe();
}

/// What every mode does first: paths made absolute, logging set up.
pub fn prepare(args: &mut Args) -> Result<(), Exit> {
    // Starts the clock of status's uptime (a reload does not reset it).
    crate::sys::uptime();
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
    logging::init(args.log_file.as_deref(), args.log_format).map_err(usage)?;
    if matches!(Mode::of(args), Mode::Live) {
        // The binary starts with SIGPIPE's default action (see `main`), for the client
        // commands; the daemon ignores it: a remote or client gone is an error of the
        // write, never the agent's end.
        crate::sys::process::ignore_sigpipe();
    }
    Ok(())
}

/// The config of `-o`, loaded and checked, for the modes that run something.
pub fn config(args: &Args) -> Result<Config, Exit> {
    load(&args.config, args)
}

/// The config at `path`, checked, with the flags that override it applied and its
/// warnings logged (at start-up and at each SIGHUP reload).
pub(crate) fn load(path: &std::path::Path, args: &Args) -> Result<Config, Exit> {
    let mut config = config::load(path).map_err(usage)?;
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
    let no_timeout = (config.roots.iter())
        .flat_map(|root| (0..root.remotes.len()).map(move |i| (root, i)))
        .any(|(root, i)| {
            let o = config.rsync_for(root, i);
            o.timeout == Some(0) || o.params.iter().any(|p| p == "--timeout=0")
        });
    if no_timeout {
        log::warn!(
            "{}: a timeout of 0 (<timeout time=\"0\">, a remote's timeout=\"0\" or \
             --timeout=0) leaves rsync without an I/O timeout: a remote that hangs holds \
             its pushes for ever, and what it is owed (and --wait-synced) waits with them; \
             set a time in seconds",
            config.file.display()
        );
    }
    if matches!(
        Mode::of(args),
        Mode::Live | Mode::Once | Mode::Replay | Mode::Verify | Mode::TestConfig { .. }
    ) {
        rsync_takes_params(&config).map_err(usage)?;
    }
    if matches!(Mode::of(args), Mode::Live | Mode::Once) {
        if let Some(warning) = plugin_warning(&config) {
            log::warn!("{warning}");
        }
        for warning in own_files_warnings(&config, args) {
            log::warn!("{warning}");
        }
    }
    Ok(config)
}

/// Every distinct set of rsync options the remotes' pushes use, asked of the rsync on
/// PATH (see [`sync::version::takes`]): a misspelt option in `commonParams` or a
/// remote's `params=` would make every push to those remotes fail with rsync's usage
/// error, the changes piling up in the fail log.
fn rsync_takes_params(config: &Config) -> anyhow::Result<()> {
    let mut asked: Vec<&[String]> = Vec::new();
    for root in &config.roots {
        for (i, remote) in root.remotes.iter().enumerate() {
            let params = config.rsync_for(root, i).params.as_slice();
            if asked.contains(&params) {
                continue;
            }
            asked.push(params);
            if let Err(why) = sync::version::takes(params) {
                let whose = if root.own.get(i).is_some_and(Option::is_some) {
                    format!("the options of <remote ip=\"{}\" name=\"{}\"> (<commonParams> and its params=)", remote.ip, remote.name)
                } else {
                    "<commonParams>".to_owned()
                };
                anyhow::bail!(
                    "{}: rsync refuses {whose}: {why}; every push with them would fail",
                    config.file.display()
                );
            }
        }
    }
    Ok(())
}

/// The active command plugin runs every changed file as a script: said at start and by
/// `-t`, since whoever can write into the tree then runs code as this user.
pub(crate) fn plugin_warning(config: &Config) -> Option<String> {
    let Some(config::plugins::Plugin::Command(c)) = config.plugins.active().map(|p| &**p) else {
        return None;
    };
    if !c.runs_changed_files() {
        return None;
    }
    let uid = fsafe::euid();
    let user = fsafe::user_name(uid).unwrap_or_else(|| format!("uid {uid}"));
    Some(format!(
        "{}: plugin command: {} runs every changed file as a script as user {user}; set \
         <filter start=\"true\"> with an <include> or use a dedicated program",
        config.file.display(),
        c.describe()
    ))
}

/// The agent's own files: the fail log and its warm-restart index and journal, the instance lock and its control socket, the
/// `--pid-file`, the log file, and in ssh mode the directory of the shared ssh
/// connections. Each is also
/// listed as resolved (links in its directory followed), so that a watch root named
/// through a link still finds it. They never become events and are never pushed.
pub(crate) fn own_files(config: &Config, args: &Args) -> Vec<PathBuf> {
    let lock = daemon::lock_file(&args.config);
    let socket = crate::service::control::socket_path(&lock);
    let mut files = vec![
        config.fail_log.clone(),
        sync::index::path_for(&config.fail_log),
        sync::index::journal_for(&sync::index::path_for(&config.fail_log)),
        lock,
        socket.clone(),
    ];
    files.extend(args.pid_file.clone());
    files.extend(args.log_file.clone());
    files.extend(logging::fallback_file());
    for ssh in config.ssh_commands() {
        files.push(pipeline::ssh_control_dir(&socket, ssh));
    }
    let mut files: Vec<PathBuf> = files
        .into_iter()
        .map(|f| std::path::absolute(&f).unwrap_or(f))
        .collect();
    let resolved: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| {
            Some(
                std::fs::canonicalize(f.parent()?)
                    .ok()?
                    .join(f.file_name()?),
            )
        })
        .collect();
    files.extend(resolved);
    files.sort();
    files.dedup();
    files
}

/// Those of the agent's files `own` that lie inside the watch root `root`, relative to
/// it (the root taken as named and as resolved).
pub(crate) fn own_in(root: &std::path::Path, own: &[PathBuf]) -> Vec<PathBuf> {
    let mut rel = crate::filter::own_inside(root, own);
    if let Ok(real) = std::fs::canonicalize(root) {
        rel.extend(crate::filter::own_inside(&real, own));
    }
    rel.sort();
    rel.dedup();
    rel
}

/// Warnings for the agent's own files that lie inside a watch root: they are left out
/// of events and pushes, but belong elsewhere.
pub(crate) fn own_files_warnings(config: &Config, args: &Args) -> Vec<String> {
    let own = own_files(config, args);
    let mut out = Vec::new();
    for root in &config.roots {
        for rel in own_in(&root.path, &own) {
            out.push(format!(
                "{} lies inside the watch root {}: the agent leaves it out of what it \
                 watches and pushes, but keep it outside the tree",
                root.path.join(&rel).display(),
                root.path.display()
            ));
        }
    }
    out
}

/// The helper that becomes rsync in a nosymfollow view of a watch root, when `sersync2`
/// is started as `sersync2 --rsync-in-view ROOT VIEW -- ARGS` by the agent itself
/// (`main` checks `args[1]` first). Returns the exit status when it could not.
pub fn rsync_in_view(args: &[std::ffi::OsString]) -> Option<u8> {
    let (first, rest) = args.split_first()?;
    (first == sync::rsync::IN_VIEW).then(|| sync::rsync::exec_in_view(rest))
}

/// The modes that sync first check the rsync on PATH (found, 3.1 or later): a usage
/// error (exit 2) before anything starts. Returns `rsync --version`'s first line.
pub(crate) fn require_rsync() -> Result<String, Exit> {
    sync::version::require().map_err(usage)
}

/// `-m NAME`: run one plugin over the watched tree until SIGTERM or SIGINT.
pub fn module(config: &Config, name: &str, args: &Args) -> Result<u8, Exit> {
    let detach = args.daemon;
    let module = module::Module::new(config, name)
        .map_err(usage)?
        .with_own(own_files(config, args));
    let detached = if detach {
        let d = daemon::detach().map_err(|e| runtime(anyhow!(e)))?;
        logging::detached();
        Some(d)
    } else {
        None
    };
    match (module.start(config), detached) {
        (Err(e), Some(d)) => {
            d.failed(&format!("{e:#}"));
            Err(runtime(e))
        }
        (Err(e), None) => Err(runtime(e)),
        (Ok(running), d) => {
            if let Some(d) = d {
                d.ready();
            }
            running.wait();
            Ok(0)
        }
    }
}

/// The instance locks, for the modes that sync.
fn lock_instance(args: &Args) -> Result<daemon::Instance, Exit> {
    match lock_or_holder(args)? {
        Locked::Ours(instance) => Ok(instance),
        Locked::Held { message, .. } => Err(runtime(anyhow!(message))),
    }
}

/// Who has this config's instance lock.
enum Locked {
    /// This process now: the locks.
    Ours(daemon::Instance),
    /// A running instance (the message names its pid), and its lock file.
    Held { message: String, lock: PathBuf },
}

/// Prepares the private lock directory (a refused one is a usage error, exit 2).
fn lock_dir() -> Result<PathBuf, Exit> {
    daemon::prepare_default_lock_dir().map_err(|e| {
        if fsafe::is_refused(&e) {
            usage(anyhow!("refusing the lock directory: {e}"))
        } else {
            runtime(anyhow!("the lock directory: {e}"))
        }
    })
}

/// The instance locks, or, if another instance holds this config's lock, which. The
/// lock is the config's ([`daemon::lock_file`]), with or without `--pid-file`: one
/// instance per config.
fn lock_or_holder(args: &Args) -> Result<Locked, Exit> {
    // Files the agent trusts that fail their checks are usage errors (exit 2): the
    // operator has to remove or fix them; nothing has started.
    lock_dir()?;
    match daemon::Instance::acquire(&args.config, args.pid_file.as_deref()) {
        Ok(instance) => Ok(Locked::Ours(instance)),
        Err(daemon::LockError::Held(message)) => Ok(Locked::Held {
            message,
            lock: daemon::lock_file(&args.config),
        }),
        Err(daemon::LockError::Refused(m)) => Err(usage(anyhow!(m))),
        Err(daemon::LockError::Failed(m)) => Err(runtime(anyhow!(m))),
    }
}
