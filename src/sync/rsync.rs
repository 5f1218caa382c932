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

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::job::{Entry, Job};
use crate::config::{Remote, RsyncOptions};
use crate::sys::process::{self, exits_within, wait_unreaped};
use crate::sys::{fsafe, memfile, nosymfollow};

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
    /// The agent's own files inside `root` (log, fail log, pid file, control socket...),
    /// relative to it: never pushed, kept out of full syncs and listings (see
    /// [`Target::set_own`]).
    pub own: Vec<PathBuf>,
    /// ssh mode: a private (0700, the agent's own) directory for one ControlMaster
    /// socket per remote, so pushes reuse one ssh connection; `None`: no reuse.
    pub ssh_control: Option<PathBuf>,
}

impl Target {
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
        argv.push("./".into());
        argv.push(self.dest().into());
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
                argv.extend(args);
            }
            Job::Full => argv.push("./".into()),
            Job::Rename { .. } => {}
        }
        argv.push(self.dest().into());
        argv
    }

    /// Directories with everything below them ([`Entry::tree`]; the workers push them
    /// in calls of their own): a full sync of those directories only, `<params> -R -r`
    /// by quick check, with `--delete` and the full sync's exclude globs, each `./dir/`
    /// while it is a directory (or `keep_slash`); one that is not any more goes as
    /// `./dir`, its delete (`--delete-missing-args --force`) or its push.
    fn tree_argv(&self, dirs: &[Entry], keep_slash: bool) -> Vec<OsString> {
        let mut argv: Vec<OsString> = self.opts.params.iter().map(OsString::from).collect();
        argv.push("-R".into());
        argv.push("-r".into());
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

    /// The calls that carry a rename as one: the new path pushed into its place with
    /// the old one as the basis the remote already has, so unchanged data is not sent
    /// again. The old path is deleted by an ordinary call afterwards.
    ///
    /// - A directory: `rsync <opts> -R --no-recursive --dirs --link-dest=REL
    ///   ./to/./ ./to/./x ... DEST/to/`, every path that was below `to` listed (so the
    ///   excludes hold), with `REL` the old directory seen from the new one (a relative
    ///   `--link-dest` is relative to the destination directory). Unchanged files become
    ///   hard links to the old ones; others use them as the delta basis.
    /// - A file in the same directory: `--fuzzy` (rsync takes a file of the same size
    ///   and mtime in the destination directory as the basis: only a delta travels).
    /// - A file moved to another directory: `--fuzzy --fuzzy --link-dest=REL`, with
    ///   `REL` the old directory seen from the new one (the fuzzy search then also
    ///   looks there).
    ///
    /// `None` when the rename must travel plain: deletes are off, or a path that has
    /// to appear on the remote's command line (the destination directory, the basis)
    /// holds a byte a remote shell or an old daemon could split or expand.
    pub fn rename_argvs(
        &self,
        from: &Path,
        to: &Path,
        dir: bool,
        to_paths: &[PathBuf],
    ) -> Option<Vec<Vec<OsString>>> {
        if !self.delete {
            return None;
        }
        let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        let (dest_dir, basis_dir, names): (PathBuf, PathBuf, Vec<OsString>) = if dir {
            let names = to_paths
                .iter()
                .filter_map(|p| p.strip_prefix(to).ok())
                .map(|rest| {
                    let mut a = OsString::from("./");
                    a.push(to.as_os_str());
                    a.push("/./");
                    a.push(rest.as_os_str());
                    a
                })
                .collect();
            (to.to_path_buf(), from.to_path_buf(), names)
        } else {
            let mut a = OsString::from("./");
            let p = parent(to);
            if !p.as_os_str().is_empty() {
                a.push(p.as_os_str());
                a.push("/");
            }
            a.push("./");
            a.push(to.file_name()?);
            (p, parent(from), vec![a])
        };
        if !remote_safe(&dest_dir) || !remote_safe(&basis_dir) {
            return None;
        }
        let mut opts: Vec<OsString> = self.opts.params.iter().map(OsString::from).collect();
        opts.extend(["-R", "--no-recursive", "--dirs"].map(OsString::from));
        if dir {
            // The push lists the directory's entries as rsync finds them: a temp or
            // excluded name made there after the agent listed it stays out too (as in
            // listing pushes, see `argv_with_args`).
            for glob in crate::filter::temp_name_globs()
                .iter()
                .chain(&self.filter_globs)
            {
                opts.push(format!("--exclude={glob}").into());
            }
        }
        if !dir {
            // The remote may hold a file at the new name already (a swap through a temp
            // name: `b` renamed to `a` while the remote still has the old `a`): with the
            // same size and an mtime in the same tick, the quick check would keep it.
            // A new name it lacks costs nothing more: --fuzzy finds the basis.
            opts.push("--ignore-times".into());
        }
        if dir || dest_dir != basis_dir {
            let mut rel = OsString::from("--link-dest=");
            for _ in dest_dir.components() {
                rel.push("../");
            }
            rel.push(basis_dir.as_os_str());
            if !dir {
                opts.extend(["--fuzzy", "--fuzzy"].map(OsString::from));
            }
            opts.push(rel);
        } else {
            opts.push("--fuzzy".into());
        }
        self.connection_args(&mut opts);
        let dest = self.dest_below(&dest_dir);
        let names: Vec<PathBuf> = names.into_iter().map(PathBuf::from).collect();
        Some(
            split_for_args(&names, ARGS_BUDGET)
                .into_iter()
                .map(|run| {
                    let mut argv = opts.clone();
                    argv.extend(run.iter().map(|p| p.as_os_str().to_owned()));
                    argv.push(dest.clone());
                    argv
                })
                .collect(),
        )
    }
}

impl Target {
    /// ssh mode: the command that renames `from` to `to` on the remote in one step,
    /// over the shared connection: `<ssh command> HOST cd -- DIR && test ! -L a && ...
    /// && mv -T -- from to` (program, arguments). Every directory above `from` and `to`
    /// (below DIR) is checked not to be a symbolic link first, so a link planted on the
    /// remote cannot carry the rename outside DIR. `mv -T` fails rather than move into
    /// an existing directory or over a directory, and fails where the remote lacks
    /// `from` or `to`'s parent; the caller then pushes the rename plain.
    ///
    /// `None`: not ssh mode, deletes are off, or a path, the remote directory or the
    /// host holds a byte the remote shell could split or expand.
    pub fn remote_rename_argv(&self, from: &Path, to: &Path) -> Option<(OsString, Vec<OsString>)> {
        let cmd = self.opts.ssh.as_ref()?;
        let base = Path::new(&self.remote.name);
        let host = &self.remote.ip;
        let safe = |p: &Path| remote_safe(p) && !p.as_os_str().is_empty() && p.is_relative();
        if !self.delete
            || !safe(from)
            || !safe(to)
            || !(self.remote.name.is_empty() || remote_safe(base))
            || host.starts_with('-')
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:@[]%".contains(&b))
        {
            return None;
        }
        let words =
            crate::sys::shell::split_str(&ssh_command(cmd, self.ssh_control.as_deref())).ok()?;
        let (program, rest) = words.split_first()?;
        let mut argv: Vec<OsString> = rest.iter().map(OsString::from).collect();
        argv.push(host.into());
        // The remote shell reads the words after the host as one command line; every
        // word here is made of bytes it takes literally.
        if !self.remote.name.is_empty() {
            argv.extend(["cd", "--"].map(OsString::from));
            argv.push(base.as_os_str().to_owned());
            argv.push("&&".into());
        }
        let mut above: Vec<&Path> = from
            .ancestors()
            .skip(1)
            .chain(to.ancestors().skip(1))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        above.sort();
        above.dedup();
        for dir in above {
            argv.extend(["test", "!", "-L"].map(OsString::from));
            argv.push(dir.as_os_str().to_owned());
            argv.push("&&".into());
        }
        argv.extend(["mv", "-T", "--"].map(OsString::from));
        argv.push(from.as_os_str().to_owned());
        argv.push(to.as_os_str().to_owned());
        Some((program.into(), argv))
    }
}

impl Target {
    /// ssh mode with the agent's own shared connection: `<ssh command> -O exit HOST`,
    /// which asks that connection's master to close. `None` where the ssh command sets
    /// its own ControlPath or ControlMaster (that connection is the user's) or there is
    /// no control directory.
    pub fn ssh_exit_argv(&self) -> Option<(OsString, Vec<OsString>)> {
        let cmd = self.opts.ssh.as_ref()?;
        let ours = ssh_command(cmd, self.ssh_control.as_deref());
        if ours == ssh_command(cmd, None) {
            return None;
        }
        let words = crate::sys::shell::split_str(&ours).ok()?;
        let (program, rest) = words.split_first()?;
        let mut argv: Vec<OsString> = rest.iter().map(OsString::from).collect();
        argv.extend(["-O", "exit"].map(OsString::from));
        argv.push(self.remote.ip.clone().into());
        Some((program.into(), argv))
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

/// A relative path that passes a remote shell and any rsync daemon as one word, as is:
/// letters, digits and `._-+,@=/`, no component `..`.
fn remote_safe(p: &Path) -> bool {
    p.as_os_str()
        .as_bytes()
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+,@=/".contains(b))
        && !p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// How long a call waits for the remote to accept its connection (rsync daemon or ssh)
/// unless `commonParams` or the ssh command say otherwise.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a call waits on a remote that sends nothing when `<timeout>` is not set.
pub const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The ssh command with `-o ConnectTimeout=N` added, unless it sets one already.
/// The ssh command for `-e`: the connect timeout, and with a control directory one
/// persistent connection per remote (ControlMaster), unless the command sets its own
/// ControlPath or ControlMaster. rsync splits `-e` on blanks: a directory whose path
/// has blanks or quotes gets no reuse.
pub fn ssh_command(cmd: &str, control: Option<&Path>) -> String {
    let mut out = ssh_with_connect_timeout(cmd);
    let lower = cmd.to_ascii_lowercase();
    let Some(dir) = control else { return out };
    let plain = dir
        .as_os_str()
        .as_bytes()
        .iter()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'\'' | b'"' | b'\\' | b'%'));
    if plain && !lower.contains("controlpath") && !lower.contains("controlmaster") {
        out.push_str(&format!(
            " -o ControlMaster=auto -o ControlPath={}/%C -o ControlPersist={}",
            dir.display(),
            SSH_PERSIST.as_secs()
        ));
    }
    out
}

/// How long an idle ssh master connection stays up after the last push.
pub const SSH_PERSIST: std::time::Duration = std::time::Duration::from_secs(60);

pub fn ssh_with_connect_timeout(cmd: &str) -> String {
    if cmd.to_ascii_lowercase().contains("connecttimeout") {
        return cmd.to_owned();
    }
    format!("{cmd} -o ConnectTimeout={}", CONNECT_TIMEOUT.as_secs())
}

/// Bytes of path arguments one rsync call may carry: well inside ARG_MAX (2 MiB on
/// Linux, shared with the environment).
pub const ARGS_BUDGET: usize = 512 * 1024;

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
    let bytes = path.as_os_str().as_bytes();
    let wild = bytes.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    let mut rule = b"- /".to_vec();
    for &b in bytes {
        if wild && matches!(b, b'*' | b'?' | b'[' | b'\\') {
            rule.push(b'\\');
        }
        rule.push(b);
    }
    rule
}

/// How an rsync run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit status; -1 when rsync could not be started or was killed by a signal.
    pub status: i32,
    /// The end of what rsync wrote to stderr, for the log.
    pub stderr: String,
    pub elapsed: std::time::Duration,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        is_success(self.status)
    }
}

/// rsync's exit 24 ("some files vanished before they could be transferred") is what a
/// live tree does all the time, and the vanished path has its own event: success.
pub fn is_success(status: i32) -> bool {
    status == 0 || status == 24
}

/// What a failed status means, for the log.
pub fn describe_status(status: i32) -> &'static str {
    match status {
        0 => "success",
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files, dirs",
        5 => "error starting client-server protocol (remote down, bad module or auth?)",
        10 => "error in socket I/O (remote unreachable?)",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream",
        20 => "received SIGUSR1 or SIGINT",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        127 => "rsync not found",
        -1 => "could not run rsync",
        _ => "rsync error",
    }
}

/// Keep this much of rsync's stderr for the log.
pub const STDERR_KEEP: usize = 4096;

/// Runs the commands a worker needs (rsync, and the remote `mv` of a rename over ssh).
/// The agent runs processes ([`Processes`]); the simulator (`sync::sim`) answers them
/// from its model of rsync, so the same worker code runs under both.
pub trait Runner: Send + Sync {
    fn run(
        &self,
        program: &OsStr,
        cwd: &Path,
        argv: &[OsString],
        stdin: &[u8],
        watch: Watch,
    ) -> Outcome;
}

/// Runs each command as a child process, never through a shell.
///
/// No thread and no pipe: stdin comes from an anonymous file holding `stdin`, stderr
/// goes to another, whose tail is read after rsync exits. Anything that keeps rsync from
/// starting (no temp file, fork refused under a process limit, too many open files) is
/// an ordinary failed run, status -1, with the OS error in `stderr`.
pub struct Processes;

impl Runner for Processes {
    fn run(
        &self,
        program: &OsStr,
        cwd: &Path,
        argv: &[OsString],
        stdin: &[u8],
        watch: Watch,
    ) -> Outcome {
        // rsync reads a tree: in its nosymfollow view ([`command_in`]); the remote
        // `mv` of a rename (ssh) reads nothing here.
        launch(program, cwd, argv, stdin, watch, program == "rsync")
    }
}

/// The answer of [`link_guard`] once known for this process.
static LINK_GUARD: OnceLock<Result<(), Unguarded>> = OnceLock::new();

/// Why rsync cannot read the trees through the nosymfollow view ([`link_guard`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unguarded {
    /// Not root: no mounts (`user` as `fsafe::describe_user` writes it).
    #[error("the agent runs as {user}, not as root; it needs root (CAP_SYS_ADMIN)")]
    NotRoot { user: String },
    /// The mount point cannot be made (`why`: the error).
    #[error("no mount point: {why}")]
    NoMountPoint { why: String },
    /// The kernel cannot make the view here (`why`: the error with what would help).
    #[error("{why}")]
    Unsupported { why: String },
}

/// Where rsync sees the watch root in its own mount namespace: an empty directory in
/// root's own `/run/sersync2` (nobody else can replace it), shared by every instance
/// (each mount is private to one rsync). rsync's messages name paths below it.
pub const VIEW: &str = "/run/sersync2/view";

/// Can rsync read the trees through a view that follows no symbolic link (a private
/// `nosymfollow` bind mount of the watch root at [`VIEW`], see `sys::nosymfollow`)?
/// Tried once per process, on `root`. `Err` (why not) when it cannot work here: not
/// root, no CAP_SYS_ADMIN, or a kernel before 5.12; rsync then runs as before
/// ([`guarded`] warns once). A failure that may pass (the root missing just now, no
/// memory) is not remembered and answers `Ok`: the runs stay confined, and fail and are
/// retried until it works.
pub fn link_guard(root: &Path) -> Result<(), Unguarded> {
    if let Some(known) = LINK_GUARD.get() {
        return known.clone();
    }
    let uid = fsafe::euid();
    if uid != 0 {
        // Mounts need CAP_SYS_ADMIN, and the mount point lives in root's /run/sersync2.
        return LINK_GUARD
            .get_or_init(|| {
                Err(Unguarded::NotRoot {
                    user: fsafe::describe_user(uid),
                })
            })
            .clone();
    }
    let view = Path::new(VIEW);
    // Its parent first, as the lock directory is made (0755, root's own).
    let made = view
        .parent()
        .map_or(Ok(PathBuf::new()), |p| fsafe::private_dir(p, 0o755))
        .and_then(|_| fsafe::private_dir(view, 0o755));
    if let Err(e) = made {
        let why = Unguarded::NoMountPoint { why: e.to_string() };
        return if fsafe::is_refused(&e) {
            // Something only root can have put there: said, and tried again next time.
            Err(why)
        } else if e.kind() == std::io::ErrorKind::PermissionDenied {
            LINK_GUARD.get_or_init(|| Err(why)).clone()
        } else {
            // Passing (no space, /run read-only for now): the runs fail and are retried.
            Ok(())
        };
    }
    match nosymfollow::probe(root, view) {
        Ok(()) => LINK_GUARD.get_or_init(|| Ok(())).clone(),
        Err(e) if nosymfollow::is_unsupported(&e) => LINK_GUARD
            .get_or_init(|| {
                Err(Unguarded::Unsupported {
                    why: unguarded_reason(&e),
                })
            })
            .clone(),
        Err(e) => {
            log::debug!("the nosymfollow view of {} failed now: {e}", root.display());
            Ok(())
        }
    }
}

/// Why the nosymfollow view is impossible, with what would make it work.
fn unguarded_reason(e: &nosymfollow::SetupError) -> String {
    let hint = match e.errno {
        libc::ENOSYS => "it needs Linux 5.12 or later",
        libc::EPERM | libc::EACCES => "it needs CAP_SYS_ADMIN: run the agent as root",
        _ => "it needs Linux 5.12 or later and CAP_SYS_ADMIN",
    };
    format!("{e}; {hint}")
}

/// The one warning of an agent whose rsync follows links in the tree.
pub fn unguarded_warning(why: &str) -> String {
    format!(
        "rsync reads the watch roots without the nosymfollow guard ({why}): a user who can \
         write in a tree can swap a directory for a link while a push waits, and rsync then \
         sends what the link points to, as this user can read it"
    )
}

/// [`link_guard`], with one warning per process when rsync must read the trees without
/// it (at start, or at the first push).
pub fn guarded(root: &Path) -> bool {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    match link_guard(root) {
        Ok(()) => true,
        Err(why) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!("{}", unguarded_warning(&why.to_string()));
            }
            false
        }
    }
}

/// `rsync`, ready to run in `cwd` (its arguments to be added): where [`link_guard`]
/// allows it, confined to a view of `cwd` that follows no symbolic link. Used by every
/// rsync that reads a tree.
///
/// The view is made by a fresh copy of this program (`/proc/self/exe` [`IN_VIEW`] ROOT
/// VIEW `--`, see [`exec_in_view`]), which sets it up in itself and becomes rsync: the
/// agent spawns it without forking (posix_spawn), as it spawns rsync otherwise. A hook
/// run between fork and exec in the agent itself would fork the whole agent for every
/// call, whose page tables grow with the tree (6 ms more per call at 120 MB).
pub fn command_in(cwd: &Path) -> std::io::Result<Command> {
    if !guarded(cwd) {
        let mut cmd = Command::new("rsync");
        cmd.current_dir(cwd);
        return Ok(cmd);
    }
    let view = Path::new(VIEW);
    if !view.is_dir() {
        // Removed while the agent runs: made again (checked as at start), else the
        // spawn says what is missing instead of failing on a bare ENOENT.
        fsafe::private_dir(view, 0o755).map_err(|e| {
            std::io::Error::new(e.kind(), format!("no mount point for rsync's view: {e}"))
        })?;
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.current_dir(cwd)
        .arg(IN_VIEW)
        .arg(cwd)
        .arg(view)
        .arg("--");
    Ok(cmd)
}

/// The first argument that makes `sersync2` the helper of [`command_in`] (not an option
/// of its command line: `main` looks for it before parsing).
pub const IN_VIEW: &str = "--rsync-in-view";

/// The helper of [`command_in`]: `args` are ROOT VIEW `--` and rsync's arguments. Sets up
/// the nosymfollow view of ROOT at VIEW in this process and becomes `rsync ARGS`; returns
/// only when that failed, with the exit status to leave with (its reason on stderr):
/// 126 when the view could not be made, 127 when rsync is not found.
pub fn exec_in_view(args: &[OsString]) -> u8 {
    let [root, view, dashes, rsync_args @ ..] = args else {
        eprintln!("sersync2: {IN_VIEW} ROOT VIEW -- RSYNC-ARGS...");
        return 2;
    };
    if dashes != "--" {
        eprintln!("sersync2: {IN_VIEW} ROOT VIEW -- RSYNC-ARGS...");
        return 2;
    }
    if let Err(e) = nosymfollow::enter_here(Path::new(root), Path::new(view)) {
        eprintln!(
            "sersync2: cannot make the nosymfollow view of {} at {}: {e}",
            Path::new(root).display(),
            Path::new(view).display()
        );
        return 126;
    }
    use std::os::unix::process::CommandExt;
    let e = Command::new("rsync").args(rsync_args).exec();
    eprintln!("sersync2: cannot run rsync: {e}");
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// What the worker does while its child runs, besides waiting.
#[derive(Debug, Clone, Copy)]
pub enum Watch {
    /// A push still running after this long is lowered (see [`LONG_PUSH`]).
    LowerAfter(Duration),
    /// A short command (the remote `mv` of a rename) still running after this long is
    /// killed: a hung remote must not hold the paths it names.
    KillAfter(Duration),
}

/// Runs `program argv` in `cwd` for [`Processes`]: `confined`, rsync in its view of
/// `cwd` ([`command_in`]).
fn launch(
    program: &OsStr,
    cwd: &Path,
    argv: &[OsString],
    stdin: &[u8],
    watch: Watch,
    confined: bool,
) -> Outcome {
    let started = Instant::now();
    let failed = |what: &str, e: std::io::Error| Outcome {
        status: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            -1
        },
        stderr: format!("{what}: {e}"),
        elapsed: started.elapsed(),
    };
    let err_file = match memfile::create(c"rsync-stderr") {
        Ok(f) => f,
        Err(e) => return failed("cannot create a file for rsync's stderr", e),
    };
    let input = if stdin.is_empty() {
        Stdio::null()
    } else {
        match memfile::with_contents(c"rsync-stdin", stdin) {
            Ok(f) => Stdio::from(f),
            Err(e) => return failed("cannot create a file for rsync's stdin", e),
        }
    };
    let err_out = match err_file.try_clone() {
        Ok(f) => f,
        Err(e) => return failed("cannot create a file for rsync's stderr", e),
    };
    let cmd = if confined {
        command_in(cwd)
    } else {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd);
        Ok(cmd)
    };
    let mut cmd = match cmd {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                status: -1,
                stderr: format!("cannot run rsync in {}: {e}", cwd.display()),
                elapsed: started.elapsed(),
            }
        }
    };
    let child = cmd
        .args(argv)
        .stdin(input)
        .stdout(Stdio::null())
        .stderr(err_out)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if !cwd.is_dir() => {
            // A missing working directory fails the spawn with ENOENT too: that is the
            // watch root gone, not rsync missing.
            return Outcome {
                status: -1,
                stderr: format!("cannot run rsync in {}: {e}", cwd.display()),
                elapsed: started.elapsed(),
            };
        }
        Err(e) => return failed(&format!("cannot run {}", program.to_string_lossy()), e),
    };
    let pid = child.id();
    running().push(pid);
    let killed = match watch {
        Watch::LowerAfter(after) => {
            if !exits_within(pid, after) {
                lower(pid, after);
            }
            None
        }
        Watch::KillAfter(after) => (!exits_within(pid, after)).then(|| {
            // `pid` is our unreaped child (in the registry).
            let _ = process::kill(pid, libc::SIGKILL);
            after
        }),
    };
    wait_unreaped(pid);
    // Still unreaped: its pid cannot have been reused while it was in the registry.
    running().retain(|p| *p != pid);
    let status = match child.wait() {
        Ok(s) => s.code().unwrap_or(-1),
        Err(_) => -1,
    };
    let tail = memfile::tail(&err_file, STDERR_KEEP);
    let mut stderr = String::from_utf8_lossy(&tail).trim().to_owned();
    if let Some(after) = killed {
        stderr.push_str(&format!(
            "\n{} killed after {}s without an answer",
            program.to_string_lossy(),
            after.as_secs()
        ));
    }
    Outcome {
        status,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// The pids of the rsync children running now (spawned, not yet reaped), so that the
/// stop can end them ([`terminate_running`]).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn running() -> MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A push still running after this long is a big one: it is lowered to
/// [`LONG_PUSH_NICE`], so that the short pushes started beside it (a small edit while a
/// 1 GB file travels) get the CPU first. Its own speed changes only while the CPU is
/// contended.
pub const LONG_PUSH: Duration = Duration::from_millis(200);

/// The CPU niceness of a push that has run longer than [`LONG_PUSH`].
pub const LONG_PUSH_NICE: libc::c_int = 10;

/// Lowers the CPU and I/O priority of child `pid`, a push that has run `after` already.
fn lower(pid: u32, after: Duration) {
    // Only rsync itself, which does the reading, checksums and compression. In ssh mode
    // the ssh it starts may become the master connection that every later push of the
    // remote shares: that one keeps its priority.
    // `pid` is our unreaped child, so it names no other process.
    let _ = process::set_nice(pid, LONG_PUSH_NICE);
    // The lowest best-effort I/O priority too (it matters where the disk's scheduler
    // honours it: bfq).
    let _ = process::lowest_io_priority(pid);
    log::debug!(
        "rsync (pid {pid}) still running after {after:?}: lowered to nice {LONG_PUSH_NICE}"
    );
}

/// How many rsync children are running now.
pub fn running_count() -> usize {
    running().len()
}

/// At a stop whose grace has ended: SIGTERM to every running rsync child, SIGKILL to
/// those still there after `grace`. Returns how many were signalled. Their work is
/// already in the fail log.
pub fn terminate_running(grace: Duration) -> usize {
    let signal_all = |signal: libc::c_int| {
        let pids = running();
        for &pid in pids.iter() {
            // `pid` is our child and not reaped (it is in the registry, and is
            // removed before it is reaped), so it names no other process.
            let _ = process::kill(pid, signal);
        }
        pids.len()
    };
    let n = signal_all(libc::SIGTERM);
    if n == 0 {
        return 0;
    }
    let deadline = Instant::now() + grace;
    while running_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20)); // polling the workers' registry
    }
    if signal_all(libc::SIGKILL) > 0 {
        let deadline = Instant::now() + grace;
        while running_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20)); // polling the workers' registry
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn remote_rename_is_one_mv_over_the_ssh_command() {
        let mut t = target(Some("ssh -p 2222 -i '/k/id key'"), false);
        t.remote.name = "/srv/www".into();
        let (program, argv) = t
            .remote_rename_argv(Path::new("a/old"), Path::new("b/new"))
            .expect("ssh mode renames on the remote");
        assert_eq!(program, "ssh");
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(&argv[..3], ["-p", "2222", "-i"]);
        assert_eq!(
            argv[3], "/k/id key",
            "the ssh command's quoting is honoured"
        );
        let at = argv.iter().position(|a| a == "10.0.0.2").expect("the host");
        assert_eq!(
            argv[at..].join(" "),
            "10.0.0.2 cd -- /srv/www && test ! -L a && test ! -L b && mv -T -- a/old b/new",
            "every directory above the two paths is checked not to be a link"
        );
        let deep = t
            .remote_rename_argv(Path::new("x/y/old"), Path::new("x/new"))
            .expect("rename")
            .1
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            deep.ends_with("test ! -L x && test ! -L x/y && mv -T -- x/y/old x/new"),
            "{deep}"
        );
        assert!(argv.contains(&"ConnectTimeout=10".to_owned()));
    }

    #[test]
    fn remote_rename_only_where_the_remote_shell_cannot_misread_it() {
        let ssh = target(Some("ssh"), false);
        let ok = |t: &Target, from: &str, to: &str| {
            t.remote_rename_argv(Path::new(from), Path::new(to))
                .is_some()
        };
        assert!(ok(&ssh, "a", "b"));
        assert!(
            !ok(&target(None, true), "a", "b"),
            "daemon mode has no remote mv"
        );
        for bad in [
            "a b",
            "a;touch x",
            "$(id)",
            "a/../b",
            "`x`",
            "a*",
            "~x",
            "a\nb",
            "",
        ] {
            assert!(!ok(&ssh, bad, "b"), "from {bad:?}");
            assert!(!ok(&ssh, "b", bad), "to {bad:?}");
        }
        let mut off = ssh.clone();
        off.delete = false;
        assert!(
            !ok(&off, "a", "b"),
            "deletes off: the old path stays on the remote"
        );
        let mut host = ssh.clone();
        host.remote.ip = "-oProxyCommand=x".into();
        assert!(!ok(&host, "a", "b"));
        let mut dir = ssh.clone();
        dir.remote.name = "/srv/my www".into();
        assert!(!ok(&dir, "a", "b"));
    }

    fn target(ssh: Option<&str>, auth: bool) -> Target {
        Target {
            root: PathBuf::from("/www"),
            remote: Remote {
                ip: "10.0.0.2".into(),
                name: "mod".into(),
            },
            opts: RsyncOptions {
                params: vec!["-artuz".into()],
                auth: auth.then(|| ("user".to_owned(), PathBuf::from("/etc/rsync.pas"))),
                port: Some(874),
                timeout: Some(100),
                ssh: ssh.map(str::to_owned),
                batch: 100,
            },
            delete: true,
            full_excludes: vec!["*.php".into()],
            filter_globs: vec!["*.log".into()],
            own: vec![],
            ssh_control: None,
        }
    }

    fn words(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn daemon_live_push_passes_paths_as_dot_slash_arguments() {
        let t = target(None, true);
        let (argv, stdin) = t.argv(&Job::Paths(vec!["a b".into(), "-x".into()]), &[]);
        assert_eq!(
            words(&argv),
            [
                "-artuz",
                "-R",
                "--no-recursive",
                "--ignore-times",
                "--delete-missing-args",
                "--force",
                "--password-file=/etc/rsync.pas",
                "--port=874",
                "--sockopts=TCP_NODELAY",
                "--contimeout=10",
                "--timeout=100",
                "--dirs",
                "./a b",
                "./-x",
                "user@10.0.0.2::mod"
            ]
        );
        assert!(stdin.is_empty());
    }

    #[test]
    fn user_sockopts_are_not_overridden() {
        let mut t = target(None, false);
        t.opts.params.push("--sockopts=SO_SNDBUF=65536".into());
        let (argv, _) = t.argv(&Job::Paths(vec!["a".into()]), &[]);
        assert!(!words(&argv).contains(&"--sockopts=TCP_NODELAY".to_owned()));
    }

    #[test]
    fn without_timeout_calls_get_default_connect_and_io_timeouts() {
        let mut t = target(None, false);
        t.opts.timeout = None;
        let (argv, _) = t.argv(&Job::Paths(vec!["a".into()]), &[]);
        let w = words(&argv);
        assert!(w.contains(&"--contimeout=10".to_owned()), "{w:?}");
        assert!(w.contains(&"--timeout=120".to_owned()), "{w:?}");
        // The user's own choices win.
        t.opts.params.push("--contimeout=3".into());
        t.opts.params.push("--timeout=7".into());
        let (argv, _) = t.argv(&Job::Full, &[]);
        let w = words(&argv);
        assert_eq!(
            w.iter().filter(|a| a.starts_with("--contimeout")).count(),
            1
        );
        assert_eq!(w.iter().filter(|a| a.starts_with("--timeout")).count(), 1);
        // ssh: the I/O timeout, and a connect timeout in the ssh command.
        let mut t = target(Some("ssh -i /k"), false);
        t.opts.timeout = None;
        let w = words(&t.argv(&Job::Paths(vec!["a".into()]), &[]).0);
        assert!(
            w.contains(&"ssh -i /k -o ConnectTimeout=10".to_owned()),
            "{w:?}"
        );
        assert!(w.contains(&"--timeout=120".to_owned()), "{w:?}");
        assert!(
            !w.iter().any(|a| a.starts_with("--contimeout")),
            "daemon only"
        );
        assert_eq!(
            ssh_with_connect_timeout("ssh -o connectTimeout=3"),
            "ssh -o connectTimeout=3"
        );
    }

    #[test]
    fn paths_split_to_fit_the_argument_budget() {
        let paths: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("d/f{i:03}")))
            .collect();
        // "./d/f000" + NUL = 9 bytes each: 10 fit in 95.
        let runs = split_for_args(&paths, 95);
        assert!(
            runs.iter().all(|r| r.len() == 10),
            "{:?}",
            runs.iter().map(|r| r.len()).collect::<Vec<_>>()
        );
        assert_eq!(runs.concat(), paths, "every path once, in order");
        assert_eq!(split_for_args(&paths, ARGS_BUDGET).len(), 1);
        let long = vec![PathBuf::from("x".repeat(200))];
        assert_eq!(
            split_for_args(&long, 10).len(),
            1,
            "a long path still gets a run"
        );
        assert!(split_for_args::<PathBuf>(&[], 10).is_empty());
    }

    /// After the remote `mv` of a directory, what was below it goes by quick check: the
    /// live push's options otherwise, so what the remote lacks is sent and what it has
    /// costs a listing.
    #[test]
    fn a_settling_push_is_a_live_push_by_quick_check() {
        let t = target(Some("ssh"), true);
        let paths: Vec<Entry> = vec!["b".into(), "b/v/i/x".into(), "-f".into()];
        let settle = words(&t.settle_argv(&paths));
        let live = words(&t.argv(&Job::Paths(paths), &[]).0);
        assert!(!settle.contains(&"--ignore-times".to_owned()));
        let without: Vec<String> = live.into_iter().filter(|a| a != "--ignore-times").collect();
        assert_eq!(settle, without);
        assert!(settle.contains(&"./-f".to_owned()));
    }

    #[test]
    fn delete_off_never_asks_for_deletion() {
        let mut t = target(None, false);
        t.delete = false;
        let (argv, _) = t.argv(&Job::Paths(vec!["a".into()]), &[]);
        let w = words(&argv);
        assert!(w.contains(&"--ignore-missing-args".to_owned()));
        assert!(!w.iter().any(|a| a.starts_with("--delete")));
        let (argv, _) = t.argv(&Job::Full, &[]);
        assert!(!words(&argv).iter().any(|a| a.starts_with("--delete")));
    }

    #[test]
    fn ssh_mode_uses_remote_shell_and_dir() {
        let t = target(Some("ssh -p 2222"), true);
        let (argv, _) = t.argv(&Job::Full, &[]);
        let w: Vec<String> = words(&argv)
            .into_iter()
            .filter(|a| {
                !crate::filter::temp_name_globs()
                    .iter()
                    .any(|g| *a == format!("--exclude={g}"))
            })
            .collect();
        assert_eq!(
            w,
            [
                "-artuz",
                "-R",
                "--delete",
                "--exclude=*.php",
                "--exclude=*.log",
                "-e",
                "ssh -p 2222 -o ConnectTimeout=10",
                "--timeout=100",
                "./",
                "10.0.0.2:mod"
            ]
        );
    }

    #[test]
    fn full_sync_keeps_temp_files_out() {
        let t = target(None, true);
        let (argv, _) = t.argv(&Job::Full, &[]);
        let w = words(&argv);
        for g in crate::filter::temp_name_globs() {
            assert!(w.contains(&format!("--exclude={g}")), "{g}");
        }
    }

    /// Found by an outside attack run: a temp file made in a directory between the
    /// agent's listing of its excluded names and rsync's read of it went along with the
    /// directory's listing push.
    #[test]
    fn a_listing_push_keeps_temp_names_out_and_a_plain_one_needs_no_rule() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("d")).expect("mkdir");
        let mut t = target(None, true);
        t.root = root.path().to_path_buf();
        let listing = words(
            &t.argv(&Job::Paths(vec![Entry::listing("d"), "x".into()]), &[])
                .0,
        );
        for g in crate::filter::temp_name_globs() {
            assert!(
                listing.contains(&format!("--exclude={g}")),
                "{g}: {listing:?}"
            );
        }
        assert!(listing.contains(&"./d/".to_owned()), "{listing:?}");
        let plain = words(&t.argv(&Job::Paths(vec!["d".into(), "x".into()]), &[]).0);
        assert!(
            !plain.iter().any(|w| w.starts_with("--exclude")),
            "{plain:?}"
        );
    }

    /// Found by the simulator (seed 385, directory-only excludes): a file `e` queued,
    /// renamed away and replaced by a directory `e` (excluded as `e/`) after the call was
    /// built; `--dirs ./e` made the excluded directory on the remote. A plain push carries
    /// the directory-only patterns (rsync then keeps such a directory out, and still
    /// deletes a missing `e`), and no other rule.
    #[test]
    fn a_plain_push_carries_the_directory_only_patterns() {
        let mut t = target(None, true);
        t.filter_globs = vec!["*.log".into(), "e/".into(), "/top/".into()];
        let plain = words(&t.argv(&Job::Paths(vec!["e".into()]), &[]).0);
        let rules: Vec<&String> = plain
            .iter()
            .filter(|w| w.starts_with("--exclude"))
            .collect();
        assert_eq!(rules, ["--exclude=e/", "--exclude=/top/"], "{plain:?}");
        let logged = words(&t.fail_log_argv(&Job::Paths(vec!["e".into()])));
        assert!(logged.contains(&"--exclude=e/".to_owned()), "{logged:?}");
    }

    /// Found in a clean-clone CI run (the swap test on fanotify): `swap.tmp` renamed to
    /// `b.txt` went as a rename push, the remote's old `b.txt` had the same size and an
    /// mtime in the same tick, and the quick check kept it.
    #[test]
    fn a_file_rename_push_compares_contents_and_a_directory_one_keeps_hard_links() {
        let t = target(None, true);
        let file = t
            .rename_argvs(Path::new("swap.tmp"), Path::new("b.txt"), false, &[])
            .expect("a rename push");
        assert!(
            words(&file[0]).contains(&"--ignore-times".to_owned()),
            "{:?}",
            file[0]
        );
        assert!(words(&file[0]).contains(&"--fuzzy".to_owned()));
        let dir = t
            .rename_argvs(
                Path::new("old"),
                Path::new("new"),
                true,
                &[PathBuf::from("new"), PathBuf::from("new/f")],
            )
            .expect("a rename push");
        let w = words(&dir[0]);
        assert!(!w.contains(&"--ignore-times".to_owned()), "{w:?}");
        assert!(w.iter().any(|a| a.starts_with("--link-dest=")), "{w:?}");
    }

    /// A directory's rename push lists its entries as rsync finds them: a temp file made
    /// there after the agent listed the excluded names went along (found by the
    /// simulator: a link named `x.log`, excluded, made in a directory while its rename
    /// was pushed, reached the remote).
    #[test]
    fn a_directory_rename_push_keeps_temp_and_excluded_names_out() {
        let mut t = target(None, true);
        t.filter_globs = vec!["*.log".into()];
        let dir = t
            .rename_argvs(
                Path::new("old"),
                Path::new("new"),
                true,
                &[PathBuf::from("new")],
            )
            .expect("a rename push");
        let w = words(&dir[0]);
        assert!(w.contains(&"--exclude=*.log".to_owned()), "{w:?}");
        assert!(w.contains(&"--exclude=*~".to_owned()), "{w:?}");
    }

    #[test]
    fn full_sync_excludes_are_anchored_and_escaped() {
        let t = target(None, false);
        let (argv, stdin) = t.argv(&Job::Full, &["a/.svn".into(), "b/x*y".into()]);
        assert!(words(&argv).contains(&"--exclude-from=-".to_owned()));
        assert_eq!(stdin, b"- /a/.svn\0- /b/x\\*y\0");
    }

    /// A directory with everything below it goes as a full sync of that directory: `-r`,
    /// by quick check, `--delete` and the full sync's excludes; as `./dir` (its delete)
    /// when it is not a directory now.
    #[test]
    fn a_tree_is_pushed_recursive_with_the_full_syncs_rules() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("locked")).expect("mkdir");
        let mut t = target(None, true);
        t.root = root.path().to_path_buf();
        t.full_excludes = vec!["*.bak".into()];
        let job = Job::Paths(vec![Entry::tree("locked"), Entry::tree("gone")]);
        let (argv, stdin) = t.argv(&job, &[PathBuf::from("locked/skip")]);
        let w = words(&argv);
        for want in [
            "-R",
            "-r",
            "--delete",
            "--delete-missing-args",
            "--exclude=*.bak",
        ] {
            assert!(w.contains(&want.to_owned()), "{want}: {w:?}");
        }
        for not in ["--no-recursive", "--dirs", "--ignore-times"] {
            assert!(!w.contains(&not.to_owned()), "{not}: {w:?}");
        }
        assert_eq!(w[w.len() - 3..], ["./locked/", "./gone", &t.dest()]);
        assert_eq!(stdin, b"- /locked/skip\0");
    }

    #[test]
    fn fail_log_form_prefixes_every_path() {
        let t = target(None, false);
        let argv = t.argv_with_args(&Job::Paths(vec!["-rf".into(), "a".into()]));
        let w = words(&argv);
        assert!(w.contains(&"./-rf".to_owned()));
        assert_eq!(w.last().map(String::as_str), Some("10.0.0.2::mod"));
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever bytes a name holds, it is exactly one `./name` argument, after every
        /// option and before the destination, and the options are the same as for any
        /// other name: no name can add, drop or change an option.
        #[test]
        fn any_name_is_one_argument_and_never_an_option(
            names in proptest::collection::vec(
                proptest::collection::vec(1u8..=255, 1..40)
                    .prop_filter("relative", |b| b[0] != b'/')
                    // The watcher's paths never end in `/`.
                    .prop_filter("no trailing slash", |b| b.last() != Some(&b'/')),
                1..6,
            )
        ) {
            let t = target(None, true);
            let paths: Vec<PathBuf> = names
                .iter()
                .map(|b| PathBuf::from(OsStr::from_bytes(b)))
                .collect();
            let (argv, stdin) =
                t.argv(&Job::Paths(crate::sync::job::plain_entries(paths.clone())), &[]);
            prop_assert!(stdin.is_empty());
            let (plain, _) = t.argv(&Job::Paths(vec![]), &[]);
            let n = plain.len() - 1;
            prop_assert_eq!(&argv[..n], &plain[..n], "options unchanged");
            prop_assert_eq!(argv.last(), plain.last(), "destination last");
            for (arg, p) in argv[n..argv.len() - 1].iter().zip(&paths) {
                let mut want = b"./".to_vec();
                want.extend_from_slice(p.as_os_str().as_bytes());
                prop_assert_eq!(arg.as_bytes(), &want[..]);
            }
            prop_assert_eq!(argv.len() - 1 - n, paths.len());
        }
    }

    #[test]
    fn exit_24_is_success_23_is_not() {
        assert!(is_success(0));
        assert!(is_success(24));
        assert!(!is_success(23));
        assert!(!is_success(5));
    }
}
