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
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use regex::bytes::Regex;

use super::Cx;
use crate::config::{raw, ConfigError};
use crate::sys::shell::split_str as split_words;

/// How long one run may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Command {
    pub(crate) prefix: Vec<String>,
    pub(crate) suffix: Vec<String>,
    pub(crate) ignore_error: bool,
    /// `<filter start="true">`: anchored regexes on the absolute path.
    pub(crate) include: Option<Vec<Regex>>,
    pub(crate) exclude: Vec<Regex>,
    pub(crate) timeout: Duration,
}

impl Command {
    pub(crate) fn from_raw(cx: &Cx, def: &raw::PluginDef) -> Result<Command, ConfigError> {
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

    /// What it runs, for people: `/bin/sh <changed file> suffix…`.
    pub fn describe(&self) -> String {
        self.prefix
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("<changed file>"))
            .chain(self.suffix.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Does it run every changed file as a script? Its program is a shell or an
    /// interpreter that takes the changed file as the script to run (no operand before
    /// it in the prefix, `env` looked through), and no include filter narrows the files.
    pub fn runs_changed_files(&self) -> bool {
        let filtered = self.include.as_ref().is_some_and(|i| !i.is_empty());
        !filtered && runs_its_operand(&self.prefix)
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
