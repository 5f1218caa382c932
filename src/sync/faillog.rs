//! What a remote owes ([`Owed`]) and its on-disk form, the fail log: a shell script a
//! person can run.
//!
//! What is owed is kept per remote as a set of paths (plus "a full sync is owed"), so a
//! path that fails twice is one entry and any later successful push of that path clears
//! it ([`Owed::record`], [`Owed::clear`]). The running agent's one record of it is the
//! ledger (`ledger::Ledger`), which this file is written from. On disk it is
//! written in sersync 2.5's shape, one block per command:
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
//! file of the agent's own user that nobody else can write.
//!
//! The file is data, not code: anyone who could write it first (the default path is in
//! `/tmp`) must not get a command run as the agent's user. Loading keeps only the
//! `cd` directory (the watch root), the destination and the `./path` arguments (or the
//! bare `./` of a full sync) of each command; options, program names, `-e`,
//! `--rsync-path` and every other word are dropped, and the agent rebuilds the argument
//! vector from its own config. Entries for a root or remote the config does not name are
//! never run by the agent: they are kept (written back as `cd ROOT && rsync -R ./paths
//! DEST`, with no options), reported, and dropped only by `--replay --drop-unknown`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::job::{self, Job, RemoteId};
use super::rsync::Target;
use crate::sys::shell::{quote, split};

/// Paths per command line in the written script (keeps lines readable and under ARG_MAX).
const PATHS_PER_COMMAND: usize = 200;

/// What is owed to one remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owed {
    /// Each path owed, and whether it is owed as its listing (written `dir/`).
    pub paths: BTreeMap<PathBuf, bool>,
    /// Directories owed with everything below them ([`job::Entry::tree`]: what a push
    /// could not read there), written `dir/` under a `#recursive` line. A path is in
    /// `paths` or here, never in both.
    pub trees: BTreeSet<PathBuf>,
    pub full: bool,
    /// The last rsync status seen for this remote's failures.
    pub status: i32,
    /// Deletes the brake on mass deletes held at the stop (whether a directory), written
    /// under a [`HELD`] line; the next start holds them again. Not a job: only the
    /// operator's `--release-deletes` pushes them.
    pub held: BTreeMap<PathBuf, bool>,
    /// A full sync held with them.
    pub held_full: bool,
    /// Files changed with their size and mtime as before (the warm-restart catch-up's
    /// `Item::Blind`: rsync's quick check, and so a full sync, skips them) whose push
    /// has not landed yet, written under a [`BLIND`] line. The next start queues them
    /// again whatever its index says (a torn one says nothing). Not owed: a full sync
    /// neither covers nor pays them; a push of the path that lands does.
    pub blind: BTreeSet<PathBuf>,
}

impl Owed {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
            && self.trees.is_empty()
            && !self.full
            && self.held.is_empty()
            && !self.held_full
            && self.blind.is_empty()
    }

    /// Entries it counts for (paths, trees, or one full sync; held deletes and a held
    /// full sync; files a full sync would skip that are not owed as paths too).
    pub fn len(&self) -> usize {
        self.paths.len()
            + self.trees.len()
            + usize::from(self.full)
            + self.held.len()
            + usize::from(self.held_full)
            + (self.blind.iter())
                .filter(|p| !self.paths.contains_key(*p))
                .count()
    }

    /// Records what the brake holds (see [`Owed::held`]).
    pub fn record_held(&mut self, entries: &[job::Entry], full: bool) {
        for e in entries {
            *self.held.entry(e.path.clone()).or_default() |= e.listing;
        }
        self.held_full |= full;
    }

    /// Records a failed job: a full sync covers every path.
    pub fn record(&mut self, job: &Job, status: i32) {
        self.status = status;
        match job {
            Job::Full => {
                self.full = true;
                self.paths.clear();
                self.trees.clear();
            }
            // A listing (a collapsed or replaced directory) stays one: replayed, it
            // pushes the directory's entries, not only the directory. One entry per
            // path: the tree wins, then the listing. A rename is owed as its two plain
            // halves (and what is below `to`), never as a rename.
            Job::Paths(_) | Job::Rename { .. } if !self.full => {
                for e in job.plain_paths() {
                    if e.tree {
                        self.paths.remove(&e.path);
                        self.trees.insert(e.path);
                    } else if !self.trees.contains(&e.path) {
                        *self.paths.entry(e.path).or_default() |= e.listing;
                    }
                }
            }
            Job::Paths(_) | Job::Rename { .. } => {}
        }
    }

    /// A push of `job` succeeded: what it pushed is no longer owed. Returns the entries
    /// it paid (for a full sync: every path, and the full sync itself was owed if
    /// `full` was set).
    pub fn clear(&mut self, job: &Job) -> Vec<job::Entry> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut paid = Vec::new();
        match job {
            Job::Full => {
                paid = self.entries();
                // What is held is not paid by a push: only released and pushed. Nor
                // are the files its quick check skips.
                let held = std::mem::take(&mut self.held);
                let held_full = self.held_full;
                let blind = std::mem::take(&mut self.blind);
                *self = Owed::default();
                self.held = held;
                self.held_full = held_full;
                self.blind = blind;
            }
            Job::Paths(_) | Job::Rename { .. } if !self.full => {
                for e in job.plain_paths() {
                    let p = &e.path;
                    if e.tree {
                        // The directory and everything below it went: whatever is owed
                        // there is paid, trees, listings and paths.
                        paid.extend(self.clear_below(p));
                        continue;
                    }
                    // A listing pushed pays the plain path owed too, but a plain push
                    // does not pay an owed listing (nor an owed tree).
                    match self.paths.get(p).copied() {
                        Some(listing) if e.listing || !listing => {
                            self.paths.remove(p);
                            paid.push(job::Entry::with_listing(p.clone(), listing));
                        }
                        _ => {}
                    }
                    // A listing pushed the directory's entries: the files owed directly
                    // in it were merged into it when the log was replayed, and are paid.
                    // (Owed listings of its subdirectories are not: it pushed those as
                    // directories only.)
                    if e.listing {
                        let below: Vec<PathBuf> = self
                            .paths
                            .range::<Path, _>((Bound::Excluded(p.as_path()), Bound::Unbounded))
                            .take_while(|(o, _)| o.starts_with(p))
                            .filter(|(o, listing)| o.parent() == Some(p.as_path()) && !**listing)
                            .map(|(o, _)| o.clone())
                            .collect();
                        for o in below {
                            self.paths.remove(&o);
                            paid.push(job::Entry::plain(o));
                        }
                    }
                }
            }
            Job::Paths(_) | Job::Rename { .. } => {}
        }
        paid
    }

    /// Takes out what is owed at `dir` and below it (paths and trees), as entries.
    fn clear_below(&mut self, dir: &Path) -> Vec<job::Entry> {
        let below = |o: &PathBuf| o.starts_with(dir);
        let paths: Vec<PathBuf> = self
            .paths
            .range::<Path, _>((Bound::Included(dir), Bound::Unbounded))
            .map(|(o, _)| o)
            .take_while(|o| below(o))
            .cloned()
            .collect();
        let trees: Vec<PathBuf> = self
            .trees
            .range::<Path, _>((Bound::Included(dir), Bound::Unbounded))
            .take_while(|o| below(o))
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(paths.len() + trees.len());
        for o in paths {
            if let Some(listing) = self.paths.remove(&o) {
                out.push(job::Entry::with_listing(o, listing));
            }
        }
        for o in trees {
            self.trees.remove(&o);
            out.push(job::Entry::tree(o));
        }
        out
    }

    /// What is owed as jobs: a full sync, or the paths (none when nothing is owed).
    pub fn jobs(&self) -> Vec<Job> {
        if self.full {
            vec![Job::Full]
        } else if self.paths.is_empty() && self.trees.is_empty() {
            Vec::new()
        } else {
            vec![Job::Paths(self.entries())]
        }
    }

    /// The entries owed, in path order.
    pub fn entries(&self) -> Vec<job::Entry> {
        let mut out: Vec<job::Entry> = self
            .paths
            .iter()
            .map(|(path, &listing)| job::Entry::with_listing(path.clone(), listing))
            .chain(self.trees.iter().cloned().map(job::Entry::tree))
            .collect();
        out.sort();
        out
    }
}

/// One command of the fail log, as data. Only three things are kept from it: the `cd`
/// directory, the destination and the `./path` arguments. Every other word (options,
/// `-e`, `--rsync-path`, a program name, redirections) is dropped when it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub status: i32,
    /// The `cd` directory: the watch root (always absolute).
    pub cwd: PathBuf,
    /// The remote destination: `[user@]host::module`, `host:dir` or `rsync://...`.
    pub dest: OsString,
    /// The `./path` arguments (each a relative path with no `..`), or the single `./` of
    /// a full sync. Never anything else.
    pub argv: Vec<OsString>,
    /// The command came under a [`RECURSIVE`] line: its `dir/` arguments are
    /// directories with everything below them.
    pub recursive: bool,
    /// The command came under a [`HELD`] line: deletes the brake held.
    pub held: bool,
    /// The command came under a [`BLIND`] line: files a full sync would skip.
    pub blind: bool,
}

/// The comment line before a command whose `./dir/` arguments are directories owed
/// with everything below them ([`job::Entry::tree`]); the command itself is recursive
/// (`-r`, no `--no-recursive`), so run by hand it does the same. A fail log without it
/// (an older agent's, sersync 2.5's) reads as before: `dir/` is a listing.
pub const RECURSIVE: &str = "#recursive";

/// The comment line before a command of deletes the brake on mass deletes held (or,
/// its argument `./`, a full sync held with them): the next start holds them again
/// until `sersync2 --release-deletes` or `--discard-deletes`. Run by hand, the command
/// pushes them (the deletes happen). A fail log without it reads as before.
pub const HELD: &str = "#held";

/// The comment line before a command of files changed with their size and mtime as
/// before ([`Owed::blind`]): the next start queues them again, beside any full sync
/// (whose quick check would skip them). The command pushes them with
/// `--ignore-times`, as every push of paths does, so run by hand it sends them. A fail
/// log without it reads as before; an older agent reads the command as paths owed.
pub const BLIND: &str = "#blind";

impl Entry {
    /// What the entry asks for: a full sync, or these relative paths; a path written
    /// `dir/` is that directory's listing (under a [`RECURSIVE`] line: the directory
    /// with everything below it).
    pub fn job(&self) -> Job {
        if self.argv.iter().any(|a| a == "./") {
            return Job::Full;
        }
        Job::Paths(
            self.argv
                .iter()
                .filter_map(|a| a.as_bytes().strip_prefix(b"./"))
                .map(|rest| match rest.strip_suffix(b"/") {
                    Some(dir) if self.recursive => job::Entry::tree(OsStr::from_bytes(dir)),
                    Some(dir) => job::Entry::listing(OsStr::from_bytes(dir)),
                    None => job::Entry::plain(OsStr::from_bytes(rest)),
                })
                .collect(),
        )
    }
}

/// The fail log of one instance: its path, and what a file read held. The running
/// agent's record of what each remote owes is the ledger (`Queue`): `Mirror::new`
/// hands `owed` to it and leaves it empty, and every write renders the ledger's
/// state ([`FailLog::render`], [`FailLog::save`]).
#[derive(Debug, Default)]
pub struct FailLog {
    pub path: PathBuf,
    /// What the file held when it was read, per configured remote.
    pub owed: Vec<Owed>,
    /// What is owed to a (watch root, destination) the config does not name: kept in the
    /// file and reported, never run by the agent.
    pub foreign: BTreeMap<(PathBuf, OsString), Owed>,
}

impl FailLog {
    pub fn new(path: PathBuf, targets: usize) -> Self {
        FailLog {
            path,
            owed: vec![Owed::default(); targets],
            foreign: BTreeMap::new(),
        }
    }

    /// Entries (paths, full syncs) in the file, for configured remotes and unknown ones.
    pub fn len(&self) -> usize {
        self.owed.iter().map(Owed::len).sum::<usize>() + self.unknown_len()
    }

    /// Entries for a root or remote the config does not name.
    pub fn unknown_len(&self) -> usize {
        self.foreign.values().map(Owed::len).sum()
    }

    /// Drops the entries for roots or remotes the config does not name (the operator's
    /// `--replay --drop-unknown`); returns how many there were.
    pub fn drop_unknown(&mut self) -> usize {
        let n = self.unknown_len();
        self.foreign.clear();
        n
    }

    /// (root, destination, entries) for each unknown root or remote.
    pub fn unknown_summary(&self) -> Vec<(PathBuf, OsString, usize)> {
        self.foreign
            .iter()
            .map(|((root, dest), o)| (root.clone(), dest.clone(), o.len()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a failed job in what the file holds (a file being read).
    pub fn add(&mut self, target: RemoteId, job: &Job, status: i32) {
        self.owed[target.0].record(job, status);
    }

    /// A job succeeded: what it pushed is no longer owed in what the file holds.
    /// Returns whether anything changed.
    #[cfg(test)]
    pub fn clear(&mut self, target: RemoteId, job: &Job) -> bool {
        let before = self.owed[target.0].clone();
        self.owed[target.0].clear(job);
        before != self.owed[target.0]
    }

    /// The script text for `owed` (per configured remote, the ledger's state) and the
    /// entries kept for unknown remotes.
    pub fn render(&self, owed: &[Owed], targets: &[Target]) -> Vec<u8> {
        let mut out = Vec::new();
        for (owed, target) in owed.iter().zip(targets) {
            for job in held_jobs(owed) {
                let argv = target.fail_log_argv(&job);
                write_marked(&mut out, 0, Mark::Held, &target.root, &argv);
            }
            for job in blind_jobs(owed) {
                let argv = target.fail_log_argv(&job);
                write_marked(&mut out, 0, Mark::Blind, &target.root, &argv);
            }
            if owed.full {
                let argv = target.fail_log_argv(&Job::Full);
                write_block(&mut out, owed.status, false, &target.root, &argv);
                continue;
            }
            // Trees go in commands of their own, recursive (see `RECURSIVE`).
            let (trees, paths): (Vec<job::Entry>, Vec<job::Entry>) =
                owed.entries().into_iter().partition(|e| e.tree);
            for (recursive, entries) in [(false, paths), (true, trees)] {
                for chunk in entries.chunks(PATHS_PER_COMMAND) {
                    let argv = target.fail_log_argv(&Job::Paths(chunk.to_vec()));
                    write_block(&mut out, owed.status, recursive, &target.root, &argv);
                }
            }
        }
        // Unknown remotes: the config-independent form, `rsync -R ./paths DEST`, with no
        // options (none from the old file survive the load).
        for ((root, dest), owed) in &self.foreign {
            let with = |recursive: bool, args: &mut dyn Iterator<Item = OsString>| {
                let mut argv: Vec<OsString> = vec!["-R".into()];
                if recursive {
                    argv.push("-r".into());
                }
                argv.extend(args);
                argv.push(dest.clone());
                argv
            };
            for job in held_jobs(owed) {
                let argv = match &job {
                    Job::Paths(entries) => with(
                        false,
                        &mut entries.iter().map(|e| {
                            let mut a = OsString::from("./");
                            a.push(e.path.as_os_str());
                            if e.listing {
                                a.push("/");
                            }
                            a
                        }),
                    ),
                    _ => with(false, &mut std::iter::once(OsString::from("./"))),
                };
                write_marked(&mut out, 0, Mark::Held, root, &argv);
            }
            for job in blind_jobs(owed) {
                let mut argv = vec![OsString::from("-R"), "--ignore-times".into()];
                argv.extend(job.plain_paths().iter().map(|e| {
                    let mut a = OsString::from("./");
                    a.push(e.path.as_os_str());
                    a
                }));
                argv.push(dest.clone());
                write_marked(&mut out, 0, Mark::Blind, root, &argv);
            }
            if owed.full {
                let argv = with(false, &mut std::iter::once(OsString::from("./")));
                write_block(&mut out, owed.status, false, root, &argv);
                continue;
            }
            let (trees, paths): (Vec<job::Entry>, Vec<job::Entry>) =
                owed.entries().into_iter().partition(|e| e.tree);
            for (recursive, entries) in [(false, paths), (true, trees)] {
                for chunk in entries.chunks(PATHS_PER_COMMAND) {
                    let argv = with(
                        recursive,
                        &mut chunk.iter().map(|e| {
                            let mut a = OsString::from("./");
                            a.push(e.path.as_os_str());
                            if e.listing {
                                a.push("/");
                            }
                            a
                        }),
                    );
                    write_block(&mut out, owed.status, recursive, root, &argv);
                }
            }
        }
        out
    }

    /// Writes the script for `owed` atomically, mode 0600. With nothing owed the file
    /// is removed.
    pub fn save(&self, owed: &[Owed], targets: &[Target]) -> std::io::Result<()> {
        if owed.iter().all(Owed::is_empty) && self.unknown_len() == 0 {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let text = self.render(owed, targets);
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
        log.warn_unknown();
        let blind: usize = log.owed.iter().map(|o| o.blind.len()).sum();
        if blind > 0 {
            log::info!(
                "fail log {}: {blind} push(es) of files changed with their size and mtime \
                 as before, queued again (beside any full sync, whose quick check would \
                 skip them)",
                log.path.display()
            );
        }
        Ok(log)
    }

    /// Files an entry under its configured remote, or under the unknown ones.
    fn absorb(&mut self, cmd: Entry, targets: &[Target]) {
        let job = cmd.job();
        let found = targets
            .iter()
            .position(|t| t.root == cmd.cwd && cmd.dest == OsStr::new(&t.dest()));
        match found {
            Some(t) if cmd.blind => blind(&mut self.owed[t], &job),
            None if cmd.blind => blind(self.foreign.entry((cmd.cwd, cmd.dest)).or_default(), &job),
            Some(t) if cmd.held => hold(&mut self.owed[t], &job),
            Some(t) => self.add(RemoteId(t), &job, cmd.status),
            None if cmd.held => hold(self.foreign.entry((cmd.cwd, cmd.dest)).or_default(), &job),
            None => self
                .foreign
                .entry((cmd.cwd, cmd.dest))
                .or_default()
                .record(&job, cmd.status),
        }
    }

    /// One warning per unknown root and remote: they are kept, never run.
    fn warn_unknown(&self) {
        for (root, dest, n) in self.unknown_summary() {
            log::warn!(
                "fail log {}: {n} entr{} for {} to {}, which the config does not name: \
                 kept in the file and never run by the agent; push them by hand, or drop \
                 them with `sersync2 --replay --drop-unknown`",
                self.path.display(),
                if n == 1 { "y" } else { "ies" },
                root.display(),
                dest.to_string_lossy()
            );
        }
    }
}

/// A held command of a fail log read back: held again (see [`Owed::held`]).
fn hold(owed: &mut Owed, job: &Job) {
    match job {
        Job::Full => owed.held_full = true,
        job => owed.record_held(&job.plain_paths(), false),
    }
}

/// A blind command of a fail log read back (see [`Owed::blind`]): its paths, plain (a
/// full sync's `./` is not one: it is dropped).
fn blind(owed: &mut Owed, job: &Job) {
    if let Job::Paths(entries) = job {
        owed.blind.extend(entries.iter().map(|e| e.path.clone()));
    }
}

/// The files of `owed` a full sync would skip (see [`Owed::blind`]) as jobs of plain
/// paths.
fn blind_jobs(owed: &Owed) -> Vec<Job> {
    let entries: Vec<job::Entry> = owed.blind.iter().cloned().map(job::Entry::plain).collect();
    entries
        .chunks(PATHS_PER_COMMAND)
        .map(|c| Job::Paths(c.to_vec()))
        .collect()
}

/// What `owed` holds (see [`Owed::held`]) as jobs: its deletes, a full sync.
fn held_jobs(owed: &Owed) -> Vec<Job> {
    let mut jobs = Vec::new();
    let entries: Vec<job::Entry> = (owed.held.iter())
        .map(|(p, &dir)| job::Entry::with_listing(p.clone(), dir))
        .collect();
    for chunk in entries.chunks(PATHS_PER_COMMAND) {
        jobs.push(Job::Paths(chunk.to_vec()));
    }
    if owed.held_full {
        jobs.push(Job::Full);
    }
    jobs
}

/// The comment line a block starts with after `#errno`, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    None,
    Recursive,
    Held,
    Blind,
}

fn write_block(out: &mut Vec<u8>, status: i32, recursive: bool, cwd: &Path, argv: &[OsString]) {
    let mark = if recursive {
        Mark::Recursive
    } else {
        Mark::None
    };
    write_marked(out, status, mark, cwd, argv);
}

fn write_marked(out: &mut Vec<u8>, status: i32, mark: Mark, cwd: &Path, argv: &[OsString]) {
    out.extend_from_slice(format!("#errno {status}\n").as_bytes());
    match mark {
        Mark::None => {}
        Mark::Recursive => {
            out.extend_from_slice(RECURSIVE.as_bytes());
            out.push(b'\n');
        }
        Mark::Held => {
            out.extend_from_slice(HELD.as_bytes());
            out.push(b'\n');
        }
        Mark::Blind => {
            out.extend_from_slice(BLIND.as_bytes());
            out.push(b'\n');
        }
    }
    out.extend_from_slice(b"cd ");
    out.extend_from_slice(&quote(cwd.as_os_str()));
    out.extend_from_slice(b" && rsync");
    for a in argv {
        out.push(b' ');
        out.extend_from_slice(&quote(a));
    }
    out.extend_from_slice(b"\n\n");
}

/// Reads the entries out of a fail-log script: `#errno N` then `cd DIR && rsync ARGS`,
/// where a command may span lines inside quotes (names with newlines). Of each command
/// only the directory, the destination and the `./path` words are kept (see [`Entry`]);
/// a command without an absolute directory, a destination or a path is skipped.
pub fn parse_script(text: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut status = 0;
    // A `#recursive`, `#held` or `#blind` line: for the next command only.
    let mut recursive = false;
    let mut held = false;
    let mut blind = false;
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
        if line.trim_ascii() == RECURSIVE.as_bytes() {
            recursive = true;
            rest = rest.get(line_end + 1..).unwrap_or_default();
            continue;
        }
        if line.trim_ascii() == HELD.as_bytes() {
            held = true;
            rest = rest.get(line_end + 1..).unwrap_or_default();
            continue;
        }
        if line.trim_ascii() == BLIND.as_bytes() {
            blind = true;
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
        let recursive = std::mem::take(&mut recursive);
        let held = std::mem::take(&mut held);
        let blind = std::mem::take(&mut blind);
        let Ok(words) = split(strip_redirects(cmd)) else {
            log::warn!("fail log: cannot parse a command, skipped");
            continue;
        };
        match words.as_slice() {
            [cd, dir, and, rsync, args @ ..] if cd == "cd" && and == "&&" && rsync == "rsync" => {
                match entry(status, recursive, dir, args) {
                    Ok(e) => out.push(Entry { held, blind, ..e }),
                    Err(why) => {
                        log::warn!("fail log: {why}, skipped: {}", String::from_utf8_lossy(cmd))
                    }
                }
            }
            _ => log::warn!(
                "fail log: not a `cd DIR && rsync ...` command, skipped: {}",
                String::from_utf8_lossy(cmd)
            ),
        }
    }
    out
}

/// The data of one `cd DIR && rsync ARGS` command. The destination is the last word that
/// is neither an option nor a `./path` and names a host (has a `:`; the original put
/// `--password-file=F` after it). Paths must be relative with no `..`: the agent never
/// writes others, and they would reach outside the watch root.
fn entry(
    status: i32,
    recursive: bool,
    dir: &OsStr,
    args: &[OsString],
) -> Result<Entry, &'static str> {
    let cwd = PathBuf::from(dir);
    if !cwd.is_absolute() {
        return Err("the directory is not absolute");
    }
    let dest = args
        .iter()
        .rev()
        .find(|a| {
            let b = a.as_bytes();
            !b.starts_with(b"-") && !b.starts_with(b"./") && b.contains(&b':')
        })
        .ok_or("no remote destination")?
        .clone();
    let mut argv = Vec::new();
    for a in args {
        let Some(rest) = a.as_bytes().strip_prefix(b"./") else {
            continue;
        };
        if rest.is_empty() {
            argv = vec![OsString::from("./")];
            break;
        }
        if let Some(rel) = relative(rest) {
            let mut word = OsString::from("./");
            word.push(rel.as_os_str());
            argv.push(word);
        } else {
            log::warn!(
                "fail log: path {} leaves the watch root, ignored",
                String::from_utf8_lossy(a.as_bytes())
            );
        }
    }
    if argv.is_empty() {
        return Err("no ./path to push");
    }
    Ok(Entry {
        status,
        cwd,
        dest,
        argv,
        recursive,
        held: false,
        blind: false,
    })
}

/// `rest` as a relative path made of plain names only (no `/` first, no `..`).
fn relative(rest: &[u8]) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(rest)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if out.as_os_str().is_empty() {
        return None;
    }
    // A listing (`d/`: a replaced or collapsed directory, pushed with its entries) keeps
    // its `/`; read back without it, it would push the directory alone.
    if rest.ends_with(b"/") {
        out.as_mut_os_string().push("/");
    }
    Some(out)
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

/// Entries owed per remote label, for `--replay`'s report.
pub fn summary(owed: &[Owed], targets: &[Target]) -> BTreeMap<String, usize> {
    owed.iter()
        .zip(targets)
        .filter(|(o, _)| !o.is_empty())
        .map(|(o, t)| (t.label(), o.len()))
        .collect()
}

#[cfg(test)]
mod tests;
