//! The `command` plugin: run `prefix <absolute path> suffix` for each change.
//!
//! The original built one string and gave it to a shell, so a file named `$(reboot)`
//! ran `reboot`. Here `prefix` and `suffix` are split into words once, at start-up, the
//! way `sh` splits words but without any expansion, and the path is always exactly one
//! argument: no name, however strange, can change what runs.
//!
//! `<plugin name="command" mode="batch">` runs it once per push instead (`prefix suffix`,
//! no path argument), the push's paths on stdin; see [`Mode`].
//!
//! A run that outlives its timeout (`timeout="SECONDS"`, else `DEFAULT_TIMEOUT`) is
//! killed with its whole process group, so one stuck script cannot stop the plugin for
//! every later change. `ignoreError="true"` turns a non-zero exit into a debug line; a
//! run that could not start or timed out is always an error.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use regex::bytes::Regex;

use super::Cx;
use crate::config::{raw, ConfigError};
use crate::sys::fsafe;
use crate::sys::shell::split_str as split_words;

/// How long one run may take before it is killed, unless `timeout=` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `timeout=` accepted: a day.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// When the command runs (`<plugin name="command" mode=...>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `file` (sersync 2.5's, the default): once per changed file, after the watch
    /// root's first remote has it, the file's absolute path as an argument.
    File,
    /// `batch`: once per rsync call that landed, to each remote, the call's paths on
    /// stdin (relative to the watch root, each followed by a NUL byte), the remote's
    /// label and the watch root in the environment.
    Batch,
}

impl Mode {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::File => "file",
            Mode::Batch => "batch",
        }
    }

    /// A `mode=` value; the error says what to write.
    fn parse(written: &str) -> Result<Mode, String> {
        match written.trim().to_ascii_lowercase().as_str() {
            "file" => Ok(Mode::File),
            "batch" => Ok(Mode::Batch),
            _ => Err(format!(
                "<plugin name=\"command\" mode=\"{written}\">: unknown mode; write \
                 mode=\"file\" (once per changed file, its path as an argument: the default) \
                 or mode=\"batch\" (once per push to each remote, the paths on stdin)"
            )),
        }
    }
}

/// A `timeout=` value in seconds, 1 to [`MAX_TIMEOUT_SECS`]; the error says what to write.
fn parse_timeout(written: &str) -> Result<Duration, String> {
    match written.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_TIMEOUT_SECS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "<plugin name=\"command\" timeout=\"{written}\">: not a number of seconds from 1 \
             to {MAX_TIMEOUT_SECS}; write e.g. timeout=\"{}\" (the default)",
            DEFAULT_TIMEOUT.as_secs()
        )),
    }
}

#[derive(Debug)]
pub struct Command {
    pub(crate) prefix: Vec<String>,
    pub(crate) suffix: Vec<String>,
    pub(crate) ignore_error: bool,
    /// `<filter start="true">`: anchored regexes on the absolute path.
    pub(crate) include: Option<Vec<Regex>>,
    pub(crate) exclude: Vec<Regex>,
    pub(crate) timeout: Duration,
    pub(crate) mode: Mode,
}

impl Command {
    pub(crate) fn from_raw(cx: &Cx, def: &raw::PluginDef) -> Result<Command, ConfigError> {
        let mode = match def.mode.as_deref() {
            None => Mode::File,
            Some(m) => Mode::parse(m).map_err(|e| cx.err(def.line, e))?,
        };
        let timeout = match def.timeout.as_deref() {
            None => DEFAULT_TIMEOUT,
            Some(t) => parse_timeout(t).map_err(|e| cx.err(def.line, e))?,
        };
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
        if fsafe::find_program(program, std::env::var_os("PATH").as_deref()).is_none() {
            return Err(cx.err(
                param.line,
                format!("<param prefix=\"{text}\">: program {program} not found or not executable"),
            ));
        }
        for file in runs(&prefix) {
            trusted(file)
                .map_err(|m| cx.err(param.line, format!("<param prefix=\"{text}\">: {m}")))?;
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
                    cx.rule_count(f, "filter")
                        .map(|()| f.include.iter())?
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
            timeout,
            mode,
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

    /// What it runs, for people: `/bin/sh <changed file> suffix…`, or in batch mode
    /// `hook suffix… < paths`.
    pub fn describe(&self) -> String {
        let path = match self.mode {
            Mode::File => Some("<changed file>"),
            Mode::Batch => None,
        };
        let mut words = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain(path)
            .chain(self.suffix.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        if self.mode == Mode::Batch {
            words.push_str(" < paths");
        }
        words
    }

    /// When it runs and its timeout, for `-t`: `mode="batch": once per push ...`.
    pub fn describe_mode(&self) -> String {
        let when = match self.mode {
            Mode::File => "once per changed file, after the watch root's first remote has it",
            Mode::Batch => {
                "once per push to each remote, its paths on stdin (NUL after each), \
                 SERSYNC_REMOTE and SERSYNC_ROOT set"
            }
        };
        format!(
            "mode=\"{}\": {when}; killed after {}s",
            self.mode.as_str(),
            self.timeout.as_secs()
        )
    }

    /// When it runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How long a run may take before it is killed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Does it run every changed file as a script? Its program is a shell or an
    /// interpreter that takes the changed file as the script to run (no operand before
    /// it in the prefix, `env` looked through), and no include filter narrows the files.
    /// In batch mode no path is an argument: never.
    pub fn runs_changed_files(&self) -> bool {
        let filtered = self.include.as_ref().is_some_and(|i| !i.is_empty());
        self.mode == Mode::File && !filtered && runs_its_operand(&self.prefix)
    }

    /// `prefix… suffix…`: what batch mode runs, one word each.
    pub fn batch_argv(&self) -> Vec<OsString> {
        self.prefix
            .iter()
            .chain(&self.suffix)
            .map(OsString::from)
            .collect()
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
}

/// Programs that run their first operand as a script (`python*` too).
const INTERPRETERS: [&str; 10] = [
    "sh", "bash", "dash", "zsh", "ksh", "perl", "ruby", "php", "node", "env",
];

/// With `prefix` as the words before the changed file: is the changed file the script an
/// interpreter runs (or, through `env`, the program)?
fn runs_its_operand(prefix: &[String]) -> bool {
    let Some((program, rest)) = prefix.split_first() else {
        return false;
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    if !(INTERPRETERS.contains(&base) || base.starts_with("python")) {
        return false;
    }
    if base == "env" {
        // env [-i] [NAME=value]... [program args...]: the first other word is the program.
        let after: Vec<String> = rest
            .iter()
            .skip_while(|w| w.starts_with('-') || w.contains('='))
            .cloned()
            .collect();
        return after.is_empty() || runs_its_operand(&after);
    }
    // An operand (not an option) before the changed file is the script; `-c` code too.
    rest.iter()
        .all(|w| w.starts_with('-') && w != "-c" && w != "-e")
}

/// A file a prefix makes the agent run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runs<'a> {
    /// A program, found as exec finds it (on `$PATH` when it has no `/`).
    Program(&'a str),
    /// The script an interpreter is given, when it names a file.
    Script(&'a str),
}

/// What `prefix` runs: its program and, for an interpreter, the script operand it is
/// given before the changed file (none after `-c` or `-e`: those take code); through
/// `env`, the program it starts, and so on.
fn runs(prefix: &[String]) -> Vec<Runs<'_>> {
    let Some((program, rest)) = prefix.split_first() else {
        return Vec::new();
    };
    let mut out = vec![Runs::Program(program.as_str())];
    let base = program.rsplit('/').next().unwrap_or(program);
    if base == "env" {
        let after = rest
            .iter()
            .position(|w| !(w.starts_with('-') || w.contains('=')))
            .map_or(&[][..], |i| &rest[i..]);
        out.extend(runs(after));
    } else if INTERPRETERS.contains(&base) || base.starts_with("python") {
        for w in rest {
            if w == "-c" || w == "-e" || w == "-m" {
                break;
            }
            if !w.starts_with('-') {
                out.push(Runs::Script(w.as_str()));
                break;
            }
        }
    }
    out
}

/// Checks one file the prefix runs (see [`fsafe::check_program`]): the agent runs it,
/// as root usually, so nobody else may be able to change it. A script operand that
/// names no file is not a file to check.
fn trusted(file: Runs) -> Result<(), String> {
    let path = match file {
        Runs::Program(p) => fsafe::find_program(p, std::env::var_os("PATH").as_deref())
            .ok_or_else(|| format!("program {p} not found or not executable"))?,
        Runs::Script(s) => {
            let p = Path::new(s);
            if !p.is_file() {
                return Ok(());
            }
            p.to_path_buf()
        }
    };
    match fsafe::check_program(&path) {
        Ok(_) => Ok(()),
        Err(e) if fsafe::is_refused(&e) => Err(format!("refusing to run {}: {e}", path.display())),
        Err(e) => Err(format!("cannot check {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::{runs, Runs};

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn what_a_prefix_runs() {
        use Runs::*;
        assert_eq!(
            runs(&words(&["/usr/local/bin/hook"])),
            [Program("/usr/local/bin/hook")]
        );
        assert_eq!(
            runs(&words(&["/bin/sh", "/opt/hooks/purge.sh"])),
            [Program("/bin/sh"), Script("/opt/hooks/purge.sh")]
        );
        assert_eq!(
            runs(&words(&["bash", "-x", "hook.sh", "--flag"])),
            [Program("bash"), Script("hook.sh")]
        );
        assert_eq!(
            runs(&words(&["/bin/sh", "-c", "echo \"$1\"", "sh"])),
            [Program("/bin/sh")]
        );
        assert_eq!(
            runs(&words(&["python3", "-m", "tool"])),
            [Program("python3")]
        );
        assert_eq!(
            runs(&words(&["/usr/bin/env", "-i", "A=1", "perl", "x.pl"])),
            [Program("/usr/bin/env"), Program("perl"), Script("x.pl")]
        );
        assert_eq!(runs(&words(&["/bin/sh"])), [Program("/bin/sh")]);
    }
}
