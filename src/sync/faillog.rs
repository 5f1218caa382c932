//! The fail queue and its on-disk form, the fail log: a shell script a person can run.
//!
//! In memory, failures are kept per remote as a set of paths (plus "a full sync is owed"),
//! so a path that fails twice is one entry and any later successful push of that path
//! clears it. On disk they are written in sersync 2.5's shape, one block per command:
//!
//! ```text
//! #errno 5
//! cd '/www' && rsync '-artuz' '-R' ... './a b.txt' 'user@10.0.0.2::mod'
//! <blank line>
//! ```
//!
//! with every word single-quoted, so `sh rsync_fail_log.sh` is safe whatever the names.
//! The file is mode 0600 and replaced atomically through a fresh temporary file
//! (`sys::fsafe`: O_EXCL|O_NOFOLLOW, fsync, rename); it is read only when it is a regular
//! file of the agent's own user that nobody else can write. Loading parses
//! the same words back; commands for remotes no longer in the config are kept verbatim
//! and replayed as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::job::{Job, RemoteId};
use super::rsync::Target;
use crate::sys::shell::{quote, split};

/// Paths per command line in the written script (keeps lines readable and under ARG_MAX).
const PATHS_PER_COMMAND: usize = 200;

/// What is owed to one remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owed {
    pub paths: BTreeSet<PathBuf>,
    pub full: bool,
    /// The last rsync status seen for this remote's failures.
    pub status: i32,
}

impl Owed {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.full
    }
}

/// A command from the file that names no configured remote: kept and replayed as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub status: i32,
    pub cwd: PathBuf,
    pub argv: Vec<OsString>,
}

/// The fail queue of one instance.
#[derive(Debug, Default)]
pub struct FailLog {
    pub path: PathBuf,
    pub owed: Vec<Owed>,
    pub foreign: Vec<Foreign>,
}

impl FailLog {
    pub fn new(path: PathBuf, targets: usize) -> Self {
        FailLog {
            path,
            owed: vec![Owed::default(); targets],
            foreign: Vec::new(),
        }
    }

    /// Entries (paths, full syncs, foreign commands) still owed.
    pub fn len(&self) -> usize {
        self.owed
            .iter()
            .map(|o| o.paths.len() + usize::from(o.full))
            .sum::<usize>()
            + self.foreign.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a failed job.
    pub fn add(&mut self, target: RemoteId, job: &Job, status: i32) {
        let owed = &mut self.owed[target.0];
        owed.status = status;
        match job {
            Job::Full => {
                owed.full = true;
                owed.paths.clear();
            }
            Job::Paths(paths) if !owed.full => owed.paths.extend(paths.iter().cloned()),
            Job::Paths(_) => {}
        }
    }

    /// A job succeeded: what it pushed is no longer owed. Returns whether anything changed.
    pub fn clear(&mut self, target: RemoteId, job: &Job) -> bool {
        let owed = &mut self.owed[target.0];
        if owed.is_empty() {
            return false;
        }
        match job {
            Job::Full => {
                *owed = Owed::default();
                true
            }
            Job::Paths(paths) if !owed.full => {
                let before = owed.paths.len();
                for p in paths {
                    owed.paths.remove(p);
                }
                before != owed.paths.len()
            }
            Job::Paths(_) => false,
        }
    }

    /// The script text for the current state.
    pub fn render(&self, targets: &[Target]) -> Vec<u8> {
        let mut out = Vec::new();
        for (owed, target) in self.owed.iter().zip(targets) {
            if owed.full {
                let argv = target.argv_with_args(&Job::Full);
                write_block(&mut out, owed.status, &target.root, &argv);
                continue;
            }
            let paths: Vec<PathBuf> = owed.paths.iter().cloned().collect();
            for chunk in paths.chunks(PATHS_PER_COMMAND) {
                let argv = target.argv_with_args(&Job::Paths(chunk.to_vec()));
                write_block(&mut out, owed.status, &target.root, &argv);
            }
        }
        for f in &self.foreign {
            write_block(&mut out, f.status, &f.cwd, &f.argv);
        }
        out
    }

    /// Writes the script atomically, mode 0600. With nothing owed the file is removed.
    pub fn save(&self, targets: &[Target]) -> std::io::Result<()> {
        if self.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let text = self.render(targets);
        crate::sys::fsafe::write_atomic(&self.path, &text)
    }

    /// Loads an existing fail log, matching its commands to the configured remotes.
    pub fn load(path: PathBuf, targets: &[Target]) -> std::io::Result<Self> {
        let mut log = FailLog::new(path, targets.len());
        let text = match crate::sys::fsafe::read_trusted(&log.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(log),
            Err(e) => return Err(e),
        };
        for cmd in parse_script(&text) {
            log.absorb(cmd, targets);
        }
        Ok(log)
    }

    fn absorb(&mut self, cmd: Foreign, targets: &[Target]) {
        let dest = cmd.argv.last().map(|d| d.to_string_lossy().into_owned());
        let found = targets
            .iter()
            .position(|t| t.root == cmd.cwd && Some(t.dest()) == dest);
        let Some(t) = found else {
            if !self.foreign.contains(&cmd) {
                self.foreign.push(cmd);
            }
            return;
        };
        let args = &cmd.argv[..cmd.argv.len().saturating_sub(1)];
        let full = args.iter().any(|a| a == "./");
        let paths: Vec<PathBuf> = args
            .iter()
            .filter_map(|a| a.as_bytes().strip_prefix(b"./"))
            .filter(|rest| !rest.is_empty())
            .map(|rest| PathBuf::from(OsStr::from_bytes(rest)))
            .collect();
        let job = if full { Job::Full } else { Job::Paths(paths) };
        self.add(RemoteId(t), &job, cmd.status);
    }
}

fn write_block(out: &mut Vec<u8>, status: i32, cwd: &Path, argv: &[OsString]) {
    out.extend_from_slice(format!("#errno {status}\n").as_bytes());
    out.extend_from_slice(b"cd ");
    out.extend_from_slice(&quote(cwd.as_os_str()));
    out.extend_from_slice(b" && rsync");
    for a in argv {
        out.push(b' ');
        out.extend_from_slice(&quote(a));
    }
    out.extend_from_slice(b"\n\n");
}

/// Reads the commands out of a fail-log script: `#errno N` then `cd DIR && rsync ARGS`,
/// where a command may span lines inside quotes (names with newlines).
pub fn parse_script(text: &[u8]) -> Vec<Foreign> {
    let mut out = Vec::new();
    let mut status = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        if let Some(n) = line.strip_prefix(b"#errno ") {
            status = std::str::from_utf8(n)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            rest = rest.get(line_end + 1..).unwrap_or_default();
            continue;
        }
        if line.trim_ascii().is_empty() || line.starts_with(b"#") {
            rest = rest.get(line_end + 1..).unwrap_or_default();
            continue;
        }
        // A command ends at the first newline outside quotes.
        let end = command_end(rest);
        let cmd = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        let Ok(words) = split(strip_redirects(cmd)) else {
            log::warn!("fail log: cannot parse a command, skipped");
            continue;
        };
        match words.as_slice() {
            [cd, dir, and, rsync, args @ ..] if cd == "cd" && and == "&&" && rsync == "rsync" => {
                out.push(Foreign {
                    status,
                    cwd: PathBuf::from(dir),
                    argv: args.to_vec(),
                })
            }
            _ => log::warn!(
                "fail log: not a `cd DIR && rsync ...` command, skipped: {}",
                String::from_utf8_lossy(cmd)
            ),
        }
    }
    out
}

/// The original appended `>/dev/null 2>&1`; those words are not rsync's.
fn strip_redirects(cmd: &[u8]) -> &[u8] {
    let trimmed = cmd.trim_ascii_end();
    trimmed.strip_suffix(b">/dev/null 2>&1").unwrap_or(trimmed)
}

fn command_end(text: &[u8]) -> usize {
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(b'"') if b == b'\\' => i += 1,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'\\' => i += 1,
            None if b == b'\n' => return i,
            None => {}
        }
        i += 1;
    }
    text.len()
}

/// Runs one kept-verbatim command (no shell).
pub fn run_foreign(f: &Foreign) -> super::rsync::Outcome {
    super::rsync::run(&f.cwd, &f.argv, &[])
}

/// All owed entries as (target, job) pairs, for replay through the queue.
pub fn owed_jobs(log: &FailLog) -> Vec<(RemoteId, Job)> {
    let mut out = Vec::new();
    for (t, owed) in log.owed.iter().enumerate() {
        let t = RemoteId(t);
        if owed.full {
            out.push((t, Job::Full));
        } else if !owed.paths.is_empty() {
            out.push((t, Job::Paths(owed.paths.iter().cloned().collect())));
        }
    }
    out
}

/// Entries owed per remote label, for `--replay`'s report.
pub fn summary(log: &FailLog, targets: &[Target]) -> BTreeMap<String, usize> {
    log.owed
        .iter()
        .zip(targets)
        .filter(|(o, _)| !o.is_empty())
        .map(|(o, t)| (t.label(), o.paths.len() + usize::from(o.full)))
        .collect()
}

#[cfg(test)]
mod tests;
