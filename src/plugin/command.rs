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

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use regex::bytes::Regex;

use super::Cx;
use crate::config::{raw, split_words, ConfigError};

/// How long one run may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of the program's stderr is kept for the log.
const STDERR_KEEP: usize = 2048;

#[derive(Debug)]
pub struct Command {
    prefix: Vec<String>,
    suffix: Vec<String>,
    pub(super) ignore_error: bool,
    /// `<filter start="true">`: anchored regexes on the absolute path.
    include: Option<Vec<Regex>>,
    exclude: Vec<Regex>,
    pub(super) timeout: Duration,
}

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
    pub(super) fn from_raw(cx: &Cx, def: &raw::PluginDef) -> Result<Command, ConfigError> {
        let param = def.param.as_ref().ok_or_else(|| {
            cx.err(
                def.line,
                "<plugin name=\"command\">: missing <param prefix=...>",
            )
        })?;
        let text = cx.required(param.prefix.as_deref(), param.line, "param", "prefix")?;
        let mut prefix = split_words(text)
            .map_err(|m| cx.err(param.line, format!("<param prefix=\"{text}\">: {m}")))?;
        let Some(program) = prefix.first_mut() else {
            return Err(cx.err(param.line, "<param>: missing prefix="));
        };
        // A daemon runs from `/`: `./hook.sh` means the one next to where it was started.
        if program.contains('/') && Path::new(program.as_str()).is_relative() {
            if let Some(abs) = std::env::current_dir()
                .ok()
                .and_then(|cwd| cwd.join(&*program).to_str().map(str::to_owned))
            {
                *program = abs;
            }
        }
        let program = &*program;
        if !runnable(program) {
            return Err(cx.err(
                param.line,
                format!("<param prefix=\"{text}\">: program {program} not found or not executable"),
            ));
        }
        let suffix_text = param.suffix.as_deref().unwrap_or("");
        let suffix = split_words(suffix_text)
            .map_err(|m| cx.err(param.line, format!("<param suffix=\"{suffix_text}\">: {m}")))?;
        let ignore_error = cx.flag(
            param.ignore_error.as_deref(),
            param.line,
            "param",
            "ignoreError",
            false,
        )?;
        let (include, exclude) = match &def.filter {
            Some(f) if cx.flag(f.start.as_deref(), f.line, "filter", "start", false)? => (
                Some(
                    f.include
                        .iter()
                        .map(|e| cx.anchored(e, "include"))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                f.exclude
                    .iter()
                    .map(|e| cx.anchored(e, "exclude"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => (None, Vec::new()),
        };
        Ok(Command {
            prefix,
            suffix,
            ignore_error,
            include,
            exclude,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// With the filter on: the path must match an include (if any) and no exclude.
    pub fn wants(&self, abs: &Path) -> bool {
        let Some(include) = &self.include else {
            return true;
        };
        let bytes = abs.as_os_str().as_bytes();
        (include.is_empty() || include.iter().any(|r| r.is_match(bytes)))
            && !self.exclude.iter().any(|r| r.is_match(bytes))
    }

    /// `prefix… <abs> suffix…`, one word each.
    pub fn argv(&self, abs: &Path) -> Vec<OsString> {
        self.prefix
            .iter()
            .map(OsString::from)
            .chain(std::iter::once(abs.as_os_str().to_owned()))
            .chain(self.suffix.iter().map(OsString::from))
            .collect()
    }

    /// Runs the command for one path and waits for it, up to the timeout.
    pub fn run(&self, abs: &Path) -> Outcome {
        let argv = self.argv(abs);
        let mut child = match std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return Outcome::NotRun(format!("cannot run {}: {e}", self.prefix[0])),
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        if let Some(mut pipe) = child.stderr.take() {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= self.timeout => {
                    // SAFETY: signalling the child's own process group.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
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
        // A background child may keep stderr open: do not wait for it long.
        let err = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        let tail = &err[err.len().saturating_sub(STDERR_KEEP)..];
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Outcome::Failed(code, String::from_utf8_lossy(tail).trim().to_owned())
    }

    pub(super) fn run_logged(&self, abs: &Path) {
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

/// Is `program` an executable file, by path or on `$PATH`?
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}
