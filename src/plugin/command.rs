//! The `command` plugin: run `prefix <absolute path> suffix` for each change.
//!
//! The original built one string and gave it to a shell, so a file named `$(reboot)`
//! ran `reboot`. Here `prefix` and `suffix` are split into words once, at start-up, the
//! way `sh` splits words but without any expansion, and the path is always exactly one
//! argument: no name, however strange, can change what runs.
//!
//! A run that outlives `DEFAULT_TIMEOUT` is killed with its whole process group, so one
//! stuck script cannot stop the plugin for every later change. `ignoreError="true"`
//! turns a non-zero exit into a debug line; a run that could not start or timed out is
//! always an error.
//!
//! Its stderr goes to an anonymous file read after it exits: no reader thread, which
//! could not be started under a process limit, and no pipe a background child could
//! hold open.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

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

impl Command {
    /// Runs the command for one path and waits for it, up to the timeout.
    pub fn run(&self, abs: &Path) -> Outcome {
        let argv = self.argv(abs);
        let err_file = match memfile::create(c"plugin-stderr") {
            Ok(f) => f,
            Err(e) => return Outcome::NotRun(format!("cannot create a file for stderr: {e}")),
        };
        let err_out = match err_file.try_clone() {
            Ok(f) => f,
            Err(e) => return Outcome::NotRun(format!("cannot create a file for stderr: {e}")),
        };
        let mut child = match std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_out)
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return Outcome::NotRun(format!("cannot run {}: {e}", self.prefix[0])),
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

    pub(crate) fn run_logged(&self, abs: &Path) {
        let shown = || {
            self.argv(abs)
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self.run(abs) {
            Outcome::Ok => log::debug!("plugin command: {} ok", shown()),
            Outcome::Failed(code, err) if self.ignore_error => {
                log::debug!("plugin command: {} exit {code} (ignored): {err}", shown())
            }
            Outcome::Failed(code, err) => {
                log::error!("plugin command: {} failed, exit {code}: {err}", shown())
            }
            Outcome::TimedOut => log::error!(
                "plugin command: {} still running after {}s, killed",
                shown(),
                self.timeout.as_secs()
            ),
            Outcome::NotRun(why) => log::error!("plugin command: {}: {why}", shown()),
        }
    }
}
