//! The `command` plugin: run `prefix <absolute path> suffix` for each change, or in
//! batch mode `prefix suffix` once per push with the push's paths on stdin.
//!
//! The original built one string and gave it to a shell, so a file named `$(reboot)`
//! ran `reboot`. Here `prefix` and `suffix` are split into words once, at start-up, the
//! way `sh` splits words but without any expansion, and the path is always exactly one
//! argument: no name, however strange, can change what runs. In batch mode no name is
//! an argument at all: each is on stdin, followed by a NUL byte (the one byte no name
//! holds).
//!
//! A run that outlives its timeout is killed with its whole process group, so one
//! stuck script cannot stop the plugin for every later change. `ignoreError="true"`
//! turns a non-zero exit into a debug line; a run that could not start or timed out is
//! always an error.
//!
//! Its stderr goes to an anonymous file read after it exits, and batch mode's stdin
//! comes from one written before it starts: no thread beside it, which could not be
//! started under a process limit, no pipe a background child could hold open, and no
//! pipe to write into: a hook that never reads its stdin, or exits before it did, can
//! neither block the plugin thread nor raise SIGPIPE in the agent.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::Failed;
use crate::config::plugins::Command;
use crate::sys::{memfile, process};

/// How much of the program's stderr is kept for the log.
const STDERR_KEEP: usize = 2048;

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Exit status, or 128 + signal; the tail of stderr.
    Failed(i32, String),
    TimedOut,
    /// The program could not be started.
    NotRun(String),
}

/// One push's paths for a batch-mode run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The watch root the paths are relative to (`SERSYNC_ROOT`).
    pub root: PathBuf,
    /// The remote's label, as status and the logs name it (`SERSYNC_REMOTE`); empty
    /// under `-m`, where no remote is pushed to.
    pub remote: String,
    /// Relative to the root; a directory pushed with what it directly holds ends in `/`.
    pub paths: Vec<PathBuf>,
}

impl Batch {
    /// What the run reads on stdin: each path followed by a NUL byte.
    pub fn stdin_bytes(&self) -> Vec<u8> {
        let len = self.paths.iter().map(|p| p.as_os_str().len() + 1).sum();
        let mut out = Vec::with_capacity(len);
        for p in &self.paths {
            out.extend_from_slice(p.as_os_str().as_bytes());
            out.push(0);
        }
        out
    }
}

/// The commands running now, and whether the agent is stopping: what [`kill_running`]
/// kills at the agent's stop.
struct Registry {
    /// The process groups of the commands running now (their leaders' pids).
    running: Vec<u32>,
    /// Commands being started: not in `running` yet.
    starting: usize,
    /// Set by [`kill_running`]: no command starts after it.
    stopping: bool,
}

static REGISTRY: std::sync::Mutex<Registry> = std::sync::Mutex::new(Registry {
    running: Vec::new(),
    starting: 0,
    stopping: false,
});

/// One command in [`REGISTRY`] while it runs.
struct Running(u32);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut r) = REGISTRY.lock() {
            r.running.retain(|p| *p != self.0);
        }
    }
}

/// Why a command is not started: the agent is stopping.
const STOPPING: &str = "not run: the agent is stopping";

/// Counts a command as being started, unless the agent is stopping.
fn starting() -> bool {
    match REGISTRY.lock() {
        Ok(mut r) if !r.stopping => {
            r.starting += 1;
            true
        }
        Ok(_) => false,
        // A thread panicked holding it: run the command all the same.
        Err(_) => true,
    }
}

/// The command started (`Some`) or could not start (`None`): registered in
/// [`REGISTRY`], or, when the agent began stopping meanwhile, killed with what it
/// started and reaped (the error).
fn started(child: Option<&mut std::process::Child>) -> Result<Option<Running>, ()> {
    let Ok(mut r) = REGISTRY.lock() else {
        return Ok(child.map(|c| Running(c.id())));
    };
    r.starting = r.starting.saturating_sub(1);
    let Some(child) = child else { return Ok(None) };
    if r.stopping {
        drop(r);
        let _ = process::kill_group(child.id(), libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        return Err(());
    }
    r.running.push(child.id());
    Ok(Some(Running(child.id())))
}

/// Kills the commands still running, with what they started (their process groups),
/// and starts no more: at the agent's stop, so that no hook outlives it (one left
/// hanging kept running after the stop, its timeout never reached; one a push landing
/// during the stop started after this ran did too). Returns how many it killed. Waits
/// (up to two seconds) for the threads that ran them to reap them, so that none is
/// left a zombie for an init that may not reap orphans (a container's).
pub fn kill_running() -> usize {
    let pids = match REGISTRY.lock() {
        Ok(mut r) => {
            r.stopping = true;
            r.running.clone()
        }
        Err(_) => Vec::new(),
    };
    for &pid in &pids {
        let _ = process::kill_group(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && REGISTRY
            .lock()
            .map(|r| r.starting > 0 || r.running.iter().any(|p| pids.contains(p)))
            .unwrap_or(false)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    pids.len()
}

impl Command {
    /// Runs the command for one path and waits for it, up to the timeout.
    pub fn run(&self, abs: &Path) -> Outcome {
        self.spawn_and_wait(&self.argv(abs), None, &[])
    }

    /// Runs the command once for a push's paths and waits for it, up to the timeout.
    pub fn run_batch(&self, batch: &Batch) -> Outcome {
        let input = match memfile::with_contents(c"plugin-stdin", &batch.stdin_bytes()) {
            Ok(f) => f,
            Err(e) => return Outcome::NotRun(format!("cannot create a file for stdin: {e}")),
        };
        let count = batch.paths.len().to_string();
        let env: [(&str, &OsStr); 3] = [
            ("SERSYNC_REMOTE", OsStr::new(&batch.remote)),
            ("SERSYNC_ROOT", batch.root.as_os_str()),
            ("SERSYNC_PATHS", OsStr::new(&count)),
        ];
        self.spawn_and_wait(&self.batch_argv(), Some(input), &env)
    }

    /// Runs `argv` in a process group of its own, registered in [`RUNNING`] while it
    /// runs, and waits for it up to the timeout.
    fn spawn_and_wait(
        &self,
        argv: &[OsString],
        stdin: Option<std::fs::File>,
        env: &[(&str, &OsStr)],
    ) -> Outcome {
        let err_file = match memfile::create(c"plugin-stderr") {
            Ok(f) => f,
            Err(e) => return Outcome::NotRun(format!("cannot create a file for stderr: {e}")),
        };
        let err_out = match err_file.try_clone() {
            Ok(f) => f,
            Err(e) => return Outcome::NotRun(format!("cannot create a file for stderr: {e}")),
        };
        let stdin = stdin.map_or_else(Stdio::null, Stdio::from);
        if !starting() {
            return Outcome::NotRun(STOPPING.to_owned());
        }
        let spawned = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(err_out)
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = started(None);
                return Outcome::NotRun(format!("cannot run {}: {e}", self.prefix[0]));
            }
        };
        let Ok(_running) = started(Some(&mut child)) else {
            return Outcome::NotRun(STOPPING.to_owned());
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= self.timeout => {
                    // The child's own process group: what it started goes too.
                    let _ = process::kill_group(child.id(), libc::SIGKILL);
                    let _ = child.kill();
                    let _ = child.wait();
                    return Outcome::TimedOut;
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Outcome::NotRun(format!("cannot wait for it: {e}")),
            }
        };
        if status.success() {
            return Outcome::Ok;
        }
        let tail = memfile::tail(&err_file, STDERR_KEEP);
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Outcome::Failed(code, String::from_utf8_lossy(&tail).trim().to_owned())
    }

    /// Runs it for one path and logs the outcome; the error is the failure as logged.
    pub(crate) fn run_logged(&self, abs: &Path) -> Result<(), Failed> {
        let shown = self
            .argv(abs)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        self.log_outcome(&shown, None, self.run(abs))
    }

    /// Runs it for one push's paths and logs the outcome; the error is the failure as
    /// logged.
    pub(crate) fn run_batch_logged(&self, batch: &Batch) -> Result<(), Failed> {
        let program = self
            .batch_argv()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let to = if batch.remote.is_empty() {
            String::new()
        } else {
            format!(" to {}", batch.remote)
        };
        let shown = format!(
            "{program} (batch of {} path(s) pushed{to})",
            batch.paths.len()
        );
        self.log_outcome(&shown, Some(&batch.remote), self.run_batch(batch))
    }

    fn log_outcome(
        &self,
        shown: &str,
        remote: Option<&str>,
        outcome: Outcome,
    ) -> Result<(), Failed> {
        let remote = remote.unwrap_or("");
        let failure = match outcome {
            Outcome::Ok => {
                log::debug!("plugin command: {shown} ok");
                return Ok(());
            }
            Outcome::Failed(code, err) => {
                let text = if err.is_empty() {
                    format!("{shown} failed, exit {code}")
                } else {
                    format!("{shown} failed, exit {code}: {err}")
                };
                if self.ignore_error {
                    log::debug!("plugin command: {text} (ignored)");
                    return Err(Failed(text));
                }
                text
            }
            Outcome::TimedOut => format!(
                "{shown} still running after {}s, killed",
                self.timeout.as_secs()
            ),
            Outcome::NotRun(why) => format!("{shown}: {why}"),
        };
        if remote.is_empty() {
            log::error!("plugin command: {failure}");
        } else {
            log::error!(remote = remote; "plugin command: {failure}");
        }
        Err(Failed(failure))
    }
}
