//! rsync command lines for each remote, and running them without a shell.
//!
//! The command keeps the original's shape (cwd = watch root, `-R`, the options from
//! `<rsync>`), but paths never pass through a shell: rsync is exec'd with an argument
//! vector and every path is one `./path` argument, so no name, however strange, can read
//! as an option or change the command. (Paths are not fed with `--files-from=- --from0`:
//! rsync reads that list one byte per read(2), which doubled its CPU time on a burst.)
//! A path that no longer exists when rsync runs becomes a deletion
//! request (`--delete-missing-args --force`), or is skipped when deletes are off, so
//! one call carries pushes and deletes alike and whatever lands is the state at the time
//! of the call.
//!
//! Every rsync that reads a tree runs in a view of its watch root where the kernel
//! follows no symbolic link ([`command_in`], `sys::nosymfollow`): a user who can write in
//! the tree cannot swap a directory of a waiting path for a link and have rsync read
//! through it. Where that view cannot be made (not root, no CAP_SYS_ADMIN, Linux before
//! 5.12), rsync runs as before and one warning says so ([`link_guard`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::bigfiles::Transfer;
use super::job::{Entry, Job};
use crate::config::{Remote, RsyncOptions};

mod missing;
mod outcome;
pub mod progress2;
mod renames;
mod run;
mod ssh;
mod view;

pub use missing::{ignoring_missing_args, missing_in_place, refuses_missing_args};
pub use outcome::{condense, describe_status, is_success, Outcome, STDERR_KEEP, STDERR_READ};
pub use run::{terminate_running, Processes, Runner, Watch, LONG_PUSH};
pub use ssh::{ssh_command, CONNECT_TIMEOUT, IO_TIMEOUT, SSH_PERSIST};
pub use view::{command_in, exec_in_view, guarded, link_guard, unguarded_warning, IN_VIEW, VIEW};

/// One remote of one watch root: everything needed to build its command lines.
#[derive(Debug, Clone)]
pub struct Target {
    pub root: PathBuf,
    pub remote: Remote,
    pub opts: RsyncOptions,
    /// `<inotify><delete start>`: false means nothing is ever deleted remotely.
    pub delete: bool,
    /// crontabfilter globs, passed to full syncs as `--exclude`.
    pub full_excludes: Vec<String>,
    /// The `<filter>` excludes that are rsync patterns too ([`crate::filter::rsync_glob`]):
    /// passed wherever rsync reads or deletes a directory's entries (full syncs, listings,
    /// their clean-up), so such names that exist only on a remote are kept there.
    pub filter_globs: Vec<String>,
    /// `<filter>`'s rsync rules (`<rule>`, `<rules file>`) as `--filter=` arguments, in
    /// order: passed to every call that reads the tree from its root (pushes, listings,
    /// trees, their clean-up, full syncs, `--verify`), after every exclude above, so rsync
    /// selects what the agent selects and keeps on the remotes what the rules keep out.
    pub filter_rules: Vec<OsString>,
    /// The agent's own files inside `root` (log, fail log, pid file, control socket...),
    /// relative to it: never pushed, kept out of full syncs and listings (see
    /// [`Target::set_own`]).
    pub own: Vec<PathBuf>,
    /// ssh mode: a private (0700, the agent's own) directory for one ControlMaster
    /// socket per remote, so pushes reuse one ssh connection; `None`: no reuse.
    pub ssh_control: Option<PathBuf>,
}

impl Target {
    /// A daemon target for tests: `ip::name`, the tree at `root`, `params`, deletes on,
    /// no auth, port, timeout, excludes or rules.
    #[cfg(test)]
    pub fn daemon_for_test(root: &Path, ip: &str, name: &str, params: &str) -> Target {
        Target {
            root: root.to_path_buf(),
            remote: crate::config::Remote {
                ip: ip.into(),
                name: name.into(),
            },
            opts: crate::config::RsyncOptions {
                params: vec![params.into()],
                auth: None,
                port: None,
                timeout: None,
                ssh: None,
                batch: 100,
            },
            delete: true,
            full_excludes: Vec::new(),
            filter_globs: Vec::new(),
            filter_rules: Vec::new(),
            own: Vec::new(),
            ssh_control: None,
        }
    }

    /// Sets the agent's own files inside the root (relative paths): their rsync
    /// patterns join the `<filter>` ones, so that a full sync, a listing and their
    /// clean-up neither push them nor delete them on the remote.
    pub fn set_own(&mut self, own: Vec<PathBuf>) {
        for rel in &own {
            self.filter_globs.extend(crate::filter::own_globs(rel));
        }
        self.own = own;
    }

    /// `[user@]ip::module` for daemon mode, `ip:dir` for ssh mode.
    pub fn dest(&self) -> String {
        match (&self.opts.ssh, &self.opts.auth) {
            (Some(_), _) => format!("{}:{}", self.remote.ip, self.remote.name),
            (None, Some((user, _))) => format!("{user}@{}::{}", self.remote.ip, self.remote.name),
            (None, None) => format!("{}::{}", self.remote.ip, self.remote.name),
        }
    }

    /// A short name for logs: `dest` without the user.
    pub fn label(&self) -> String {
        match self.opts.ssh {
            Some(_) => format!("{}:{}", self.remote.ip, self.remote.name),
            None => format!("{}::{}", self.remote.ip, self.remote.name),
        }
    }

    /// The options every call to this remote carries, after `commonParams` and `-R`.
    /// A remote that never answers must hold up only its own work, so every call has
    /// a connect timeout ([`CONNECT_TIMEOUT`]: `--contimeout`, or ssh's ConnectTimeout)
    /// and an I/O timeout (`<timeout>`, else [`IO_TIMEOUT`]), unless `commonParams` or
    /// the ssh command already set them.
    fn connection_args(&self, argv: &mut Vec<OsString>) {
        let has = |opt: &str| {
            self.opts
                .params
                .iter()
                .any(|p| p == opt || p.starts_with(&format!("{opt}=")))
        };
        match &self.opts.ssh {
            Some(cmd) => {
                argv.push("-e".into());
                argv.push(ssh_command(cmd, self.ssh_control.as_deref()).into());
            }
            None => {
                if let Some((_, file)) = &self.opts.auth {
                    let mut a = OsString::from("--password-file=");
                    a.push(file.as_os_str());
                    argv.push(a);
                }
                if let Some(port) = self.opts.port {
                    argv.push(format!("--port={port}").into());
                }
                // The daemon protocol's small writes otherwise wait on Nagle and delayed
                // ACKs: a one-file push took 97 ms without this and 12 ms with it.
                if !self.opts.params.iter().any(|p| p.starts_with("--sockopts")) {
                    argv.push("--sockopts=TCP_NODELAY".into());
                }
                if !has("--contimeout") {
                    argv.push(format!("--contimeout={}", CONNECT_TIMEOUT.as_secs()).into());
                }
            }
        }
        match self.opts.timeout {
            Some(t) => argv.push(format!("--timeout={t}").into()),
            None if !has("--timeout") => {
                argv.push(format!("--timeout={}", IO_TIMEOUT.as_secs()).into())
            }
            None => {}
        }
    }

    /// `commonParams -R` and the options that say what a job does, before its paths.
    fn job_args(&self, job: &Job) -> Vec<OsString> {
        self.job_args_checked(job, true)
    }

    /// [`Target::job_args`]; `ignore_times` false: listed paths go by rsync's quick check.
    fn job_args_checked(&self, job: &Job, ignore_times: bool) -> Vec<OsString> {
        let mut argv: Vec<OsString> = self.opts.params.iter().map(OsString::from).collect();
        argv.push("-R".into());
        match job {
            Job::Paths(_) | Job::Rename { .. } => {
                // commonParams usually holds -a or -r; each listed directory is pushed
                // as itself, its contents come as their own entries.
                argv.push("--no-recursive".into());
                // A listed path is known to have changed. rsync's quick check compares
                // size and whole-second mtimes, so a same-size rewrite within one second
                // would be skipped and the remote left wrong.
                if ignore_times {
                    argv.push("--ignore-times".into());
                }
                if self.delete {
                    argv.push("--delete-missing-args".into());
                    argv.push("--force".into());
                } else {
                    argv.push("--ignore-missing-args".into());
                }
            }
            Job::Full => {
                if self.delete {
                    argv.push("--delete".into());
                }
                for glob in crate::filter::temp_name_globs() {
                    argv.push(format!("--exclude={glob}").into());
                }
                for glob in self.full_excludes.iter().chain(&self.filter_globs) {
                    argv.push(format!("--exclude={glob}").into());
                }
            }
        }
        self.connection_args(&mut argv);
        argv
    }

    /// The argument vector (without the program name) for a job, and what goes to stdin.
    /// Paths are arguments (`./name`: no name can read as an option, and no shell ever
    /// sees them); a full sync's exclude rules travel on stdin, NUL-separated. Paths are
    /// not sent with `--files-from=-`: rsync reads that list one byte per read(2), which
    /// doubled its CPU on a 20,000-path burst. Callers keep a job's paths within
    /// [`ARGS_BUDGET`] (see [`split_for_args`]).
    /// `excluded`: for a full sync, the relative paths the `<filter>` excludes keep out
    /// (found by a walk of the tree); for paths, those among the entries of the
    /// directories the job lists (`d/`).
    pub fn argv(&self, job: &Job, excluded: &[PathBuf]) -> (Vec<OsString>, Vec<u8>) {
        let mut stdin = Vec::new();
        let Job::Full = job else {
            let mut argv = self.argv_with_args(job);
            // Listings (`d/`) push a directory's entries: the temp and excluded names
            // among them stay out (and, being excluded, are not deleted either).
            let stdin = exclude_exactly(&mut argv, excluded);
            return (argv, stdin);
        };
        let mut argv = self.job_args(job);
        if !excluded.is_empty() {
            // rsync reads the rules while parsing --exclude-from: --from0 first.
            argv.push("--from0".into());
            argv.push("--exclude-from=-".into());
            for p in excluded {
                stdin.extend_from_slice(&anchored_rule(p));
                stdin.push(0);
            }
        }
        // After every exclude (the exact ones above included): the `<exclude>`
        // expressions come first, the rules decide the rest.
        argv.extend(self.filter_rules.iter().cloned());
        argv.push("./".into());
        argv.push(self.dest().into());
        (argv, stdin)
    }

    /// [`Target::argv`] of a big file's call ([`crate::sync::bigfiles`]): with the
    /// option of its transfer (`--append-verify`, `--inplace`) after `-R`.
    pub fn argv_as(
        &self,
        job: &Job,
        excluded: &[PathBuf],
        how: Transfer,
    ) -> (Vec<OsString>, Vec<u8>) {
        let (mut argv, stdin) = self.argv(job, excluded);
        if let (Some(opt), Job::Paths(_)) = (how.option(), job) {
            let at = argv.iter().position(|a| a == "-R").map_or(0, |i| i + 1);
            argv.insert(at, opt.into());
        }
        (argv, stdin)
    }

    /// `-t --probe`: a listing of the remote's top directory that changes nothing and
    /// lists only `.` however big the module is: it checks what a push needs (the host
    /// answers, the module or directory exists, the user and password or the ssh key
    /// are taken), with the connection options every push has.
    pub fn probe_argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> =
            vec!["--list-only".into(), "--dirs".into(), "--exclude=?*".into()];
        self.connection_args(&mut argv);
        argv.push(format!("{}/", self.dest()).into());
        argv
    }

    /// `--probe`'s second question, asked once the remote answered a listing: would it
    /// take a push? A dry run (nothing is changed on the remote) of the watch root's
    /// top directory alone, run in the root: a module `read only = yes` refuses it
    /// (`ERROR: module is read only`), as it refuses every push.
    pub fn probe_push_argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> =
            vec!["--dry-run".into(), "--dirs".into(), "--exclude=?*".into()];
        self.connection_args(&mut argv);
        argv.push("./".into());
        argv.push(format!("{}/", self.dest()).into());
        argv
    }

    /// The job with every path and rule as an argument, as the fail log writes it:
    /// `./path`, so that no name can read as an option.
    pub fn argv_with_args(&self, job: &Job) -> Vec<OsString> {
        self.argv_with_args_checked(job, true, false)
    }

    /// The job as the fail log writes it: [`Target::argv_with_args`], but a listing
    /// keeps its `/` whatever the tree holds now (a directory deleted and not made again
    /// yet is still owed as its listing: read back, its `/` says so).
    pub fn fail_log_argv(&self, job: &Job) -> Vec<OsString> {
        self.argv_with_args_checked(job, true, true)
    }

    /// The paths `job` names (all files, or all trees) with `excluded` kept out, by
    /// rsync's quick check as a full sync compares them (no `--ignore-times`): for
    /// `--verify` of a directory's entries a full sync pushes on their own.
    pub fn quick_argv(&self, job: &Job, excluded: &[PathBuf]) -> (Vec<OsString>, Vec<u8>) {
        let mut argv = self.argv_with_args_checked(job, false, false);
        let stdin = exclude_exactly(&mut argv, excluded);
        (argv, stdin)
    }

    /// ssh mode, after the remote `mv` of a directory ([`Target::remote_rename_argv`]):
    /// the push of the new path and of what was below it (`paths`, plain, within
    /// [`ARGS_BUDGET`]) as an ordinary push, but by rsync's quick check (size and
    /// mtime) instead of `--ignore-times`. What the `mv` moved unchanged costs a
    /// listing; what the remote lacks there is sent: an entry whose push ran while its
    /// ancestor was renamed here found it gone, and the `mv` then moved the old tree
    /// without it. (Daemon mode's rename push lists the same paths.)
    pub fn settle_argv(&self, paths: &[Entry]) -> Vec<OsString> {
        self.argv_with_args_checked(&Job::Paths(paths.to_vec()), false, false)
    }

    fn argv_with_args_checked(
        &self,
        job: &Job,
        ignore_times: bool,
        keep_slash: bool,
    ) -> Vec<OsString> {
        if let Job::Rename { .. } = job {
            return self.argv_with_args_checked(&job.clone().plain(), ignore_times, keep_slash);
        }
        if let Job::Paths(paths) = job {
            if !paths.is_empty() && paths.iter().all(|e| e.tree) {
                return self.tree_argv(paths, keep_slash);
            }
        }
        let mut argv = self.job_args_checked(job, ignore_times);
        match job {
            Job::Paths(paths) => {
                // A listed directory is pushed as itself (its contents are entries of
                // their own), not skipped.
                argv.push("--dirs".into());
                // A listing is a directory that replaced another one, or a collapsed
                // one (see `queue`): it goes as `./dir/`, so its listing is pushed and,
                // with deletes on, what the remote holds there beyond it is deleted.
                // It goes so only while it is a directory (the fail log keeps it).
                let mut listed = false;
                let mut args = Vec::with_capacity(paths.len());
                for e in paths {
                    let mut a = OsString::from("./");
                    a.push(e.path.as_os_str());
                    if e.listing
                        && (keep_slash
                            || std::fs::symlink_metadata(self.root.join(&e.path))
                                .is_ok_and(|m| m.is_dir()))
                    {
                        a.push("/");
                        listed = true;
                    }
                    args.push(a);
                }
                if listed && self.delete {
                    argv.push("--delete".into());
                }
                if listed {
                    // A listing sends the entries rsync finds when it reads the
                    // directory: a temp file made after the agent listed the excluded
                    // names there stays out too (and is not deleted on the remote).
                    for glob in crate::filter::temp_name_globs()
                        .iter()
                        .chain(&self.filter_globs)
                    {
                        argv.push(format!("--exclude={glob}").into());
                    }
                } else {
                    // A directory-only exclude (`e/`) depends on what the path is when
                    // rsync reads it: a file queued here and replaced by such a
                    // directory after the call was built stays out (a missing one is
                    // still deleted on the remote). Other excluded names are never
                    // queued.
                    for glob in self.filter_globs.iter().filter(|g| g.ends_with('/')) {
                        argv.push(format!("--exclude={glob}").into());
                    }
                }
                // The rules as rsync applies them: a name that changed type since it was
                // queued (a directory-only rule), or one rsync finds in a listing, is
                // selected as a full sync selects it; what they keep out is not deleted.
                argv.extend(self.filter_rules.iter().cloned());
                argv.extend(args);
            }
            Job::Full => {
                argv.extend(self.filter_rules.iter().cloned());
                argv.push("./".into());
            }
            Job::Rename { .. } => {}
        }
        argv.push(self.dest().into());
        argv
    }

    /// Directories with everything below them ([`Entry::tree`]; the workers push them
    /// in calls of their own): a full sync of those directories only, `<params> -R -r`
    /// with `--ignore-times` (what waited below such a directory, taken into it, was
    /// written: a deploy's files may have the size and mtime of those they replace,
    /// `cp -a` of a build with fixed mtimes, which a quick check skips), with
    /// `--delete` and the full sync's exclude globs, each `./dir/`
    /// while it is a directory (or `keep_slash`); one that is not any more goes as
    /// `./dir`, its delete (`--delete-missing-args --force`) or its push.
    fn tree_argv(&self, dirs: &[Entry], keep_slash: bool) -> Vec<OsString> {
        let mut argv: Vec<OsString> = self.opts.params.iter().map(OsString::from).collect();
        argv.push("-R".into());
        argv.push("-r".into());
        argv.push("--ignore-times".into());
        if self.delete {
            argv.extend(["--delete", "--delete-missing-args", "--force"].map(OsString::from));
        } else {
            argv.push("--ignore-missing-args".into());
        }
        for glob in crate::filter::temp_name_globs() {
            argv.push(format!("--exclude={glob}").into());
        }
        for glob in self.full_excludes.iter().chain(&self.filter_globs) {
            argv.push(format!("--exclude={glob}").into());
        }
        argv.extend(self.filter_rules.iter().cloned());
        self.connection_args(&mut argv);
        for e in dirs {
            let mut a = OsString::from("./");
            a.push(e.path.as_os_str());
            if keep_slash
                || std::fs::symlink_metadata(self.root.join(&e.path)).is_ok_and(|m| m.is_dir())
            {
                a.push("/");
            }
            argv.push(a);
        }
        argv.push(self.dest().into());
        argv
    }

    /// The destination with a directory below it: `[user@]ip::module/dir/`.
    fn dest_below(&self, dir: &Path) -> OsString {
        let mut d = OsString::from(self.dest());
        if !dir.as_os_str().is_empty() {
            d.push("/");
            d.push(dir.as_os_str());
        }
        d.push("/");
        d
    }
}

impl Target {
    /// The call that makes the remote hold nothing below the listed directories `dirs`
    /// (relative, each a directory now) beyond what the source holds there: `rsync
    /// <params> -R -r --delete --existing --ignore-existing` (nothing is created or
    /// updated, only deleted), with the temp-name globs, the crontab filter and the
    /// `excluded` paths (anchored rules on stdin) kept out, so the excluded names are
    /// neither pushed nor deleted.
    pub fn prune_argv(&self, dirs: &[PathBuf], excluded: &[PathBuf]) -> (Vec<OsString>, Vec<u8>) {
        let mut argv: Vec<OsString> = self.opts.params.iter().map(OsString::from).collect();
        argv.extend(
            [
                "-R",
                "-r",
                "--delete",
                "--force",
                "--existing",
                "--ignore-existing",
            ]
            .map(OsString::from),
        );
        for glob in crate::filter::temp_name_globs() {
            argv.push(format!("--exclude={glob}").into());
        }
        for glob in self.full_excludes.iter().chain(&self.filter_globs) {
            argv.push(format!("--exclude={glob}").into());
        }
        argv.extend(self.filter_rules.iter().cloned());
        self.connection_args(&mut argv);
        let stdin = exclude_exactly(&mut argv, excluded);
        for d in dirs {
            let mut a = OsString::from("./");
            a.push(d.as_os_str());
            a.push("/");
            argv.push(a);
        }
        argv.push(self.dest().into());
        (argv, stdin)
    }
}

/// Makes a full sync's `argv` (ending in `./` and the destination) delete nothing on the
/// remote: with `--max-delete=0` rsync skips every deletion and says how many (rsync
/// 3.0.0 and later; see [`deletes_skipped`]).
pub fn deleting_nothing(argv: &mut Vec<OsString>) {
    let at = argv.len().saturating_sub(2);
    argv.insert(at, "--max-delete=0".into());
}

/// Makes a full sync's `argv` (ending in `./` and the destination) compare mtimes to
/// the nanosecond (`--modify-window=-1`, receivers of rsync 3.1.3 and later; older ones
/// compare whole seconds, as without it): a copy on the remote with the source's size
/// and whole-second mtime but other nanoseconds is sent again, where rsync's quick check
/// by default takes it for the same file. Left as it is when the operator's parameters
/// set a window of their own (`--modify-window`, `-@`: a remote whose filesystem keeps
/// coarser mtimes).
pub fn exact_times(argv: &mut Vec<OsString>) {
    let own = argv.iter().any(|a| {
        let a = a.as_encoded_bytes();
        a.starts_with(b"--modify-window")
            || (a.starts_with(b"-")
                && !a.starts_with(b"--")
                && !a.starts_with(b"./")
                && a.contains(&b'@'))
    });
    if !own {
        let at = argv.len().saturating_sub(2);
        argv.insert(at, "--modify-window=-1".into());
    }
}

/// Did rsync skip deletes for `--max-delete`? Where the client deletes (a local
/// receiver) it exits 25; where the remote's rsync does (a daemon, ssh), the client
/// exits 0 and only the receiver's line says so: "Deletions stopped due to
/// --max-delete limit (N skipped)" (rsync 3.5.0 over a daemon, checked by a test).
pub fn deletes_skipped(outcome: &Outcome) -> bool {
    outcome.status == 25
        || outcome
            .stderr
            .contains("Deletions stopped due to --max-delete limit")
}

/// Bytes of path arguments one rsync call may carry: well inside ARG_MAX (2 MiB on
/// Linux, shared with the environment).
pub const ARGS_BUDGET: usize = 512 * 1024;

/// A full sync's argument vector ([`Target::argv`] of [`Job::Full`]) made to write
/// rsync's progress records on stdout ([`progress2::OPTION`], before the source and
/// destination). It changes only what rsync prints, not what it sends; rsync (3.1.0 or
/// later, see `sync::version`) keeps it to itself, whatever the remote runs.
pub fn show_progress(argv: &mut Vec<OsString>) {
    let at = argv.len().saturating_sub(2);
    argv.insert(at, progress2::OPTION.into());
}

/// Splits paths into runs whose `./path` arguments fit `budget` bytes each (a single
/// path longer than the budget still gets a run of its own).
pub fn split_for_args<P: ArgLen>(paths: &[P], budget: usize) -> Vec<&[P]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, p) in paths.iter().enumerate() {
        let cost = p.arg_len() + 3; // "./" and the terminating NUL
        if used + cost > budget && i > start {
            out.push(&paths[start..i]);
            start = i;
            used = 0;
        }
        used += cost;
    }
    if start < paths.len() {
        out.push(&paths[start..]);
    }
    out
}

/// How long a path is as one argument, without its `./`.
pub trait ArgLen {
    fn arg_len(&self) -> usize;
}

impl ArgLen for PathBuf {
    fn arg_len(&self) -> usize {
        self.as_os_str().len()
    }
}

impl ArgLen for Entry {
    /// A listing's argument ends in `/`.
    fn arg_len(&self) -> usize {
        self.path.as_os_str().len() + usize::from(self.listing)
    }
}

/// Puts `--from0 --exclude-from=-` first in `argv` and returns what its stdin then
/// carries: one [`anchored_rule`] per path of `excluded` (nothing when it is empty).
pub fn exclude_exactly(argv: &mut Vec<OsString>, excluded: &[PathBuf]) -> Vec<u8> {
    let mut stdin = Vec::new();
    if excluded.is_empty() {
        return stdin;
    }
    argv.splice(0..0, ["--from0", "--exclude-from=-"].map(OsString::from));
    for p in excluded {
        stdin.extend_from_slice(&anchored_rule(p));
        stdin.push(0);
    }
    stdin
}

/// An rsync filter rule that excludes exactly this relative path: `- /path`, with
/// wildcards escaped (rsync treats `\` as an escape only when a wildcard is present).
pub fn anchored_rule(path: &Path) -> Vec<u8> {
    missing::rule_for(b"- ", path, b"")
}

#[cfg(test)]
mod tests;
