//! One rsync call: its argv run (with its retries), logged, and settled.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::listings::{below_files, gone, gone_tops};
use super::partial::only_blocked_by_directories;
use super::Mirror;
use crate::sync::bigfiles::Transfer;
use crate::sync::cause::Cause;
use crate::sync::job::{Entry, Job, RemoteId};
use crate::sync::rsync::{self, Outcome};

impl Mirror {
    /// Runs rsync through the mirror's runner.
    pub(super) fn rsync(&self, cwd: &Path, argv: &[std::ffi::OsString], stdin: &[u8]) -> Outcome {
        self.runner.run(
            std::ffi::OsStr::new("rsync"),
            cwd,
            argv,
            stdin,
            rsync::Watch::LowerAfter(rsync::LONG_PUSH),
        )
    }

    /// ssh mode, after the remote `mv` of a rename: pushes the new path and what was
    /// below it by quick check ([`Target::settle_argv`]); the first failure, if any.
    pub(super) fn settle(&self, t: RemoteId, paths: &Job) -> Outcome {
        let target = &*self.target_for_call(t);
        let plain = paths.plain_paths();
        let mut last = Outcome {
            status: 0,
            stderr: String::new(),
            elapsed: Duration::ZERO,
        };
        for run in rsync::split_for_args(&plain, rsync::ARGS_BUDGET) {
            let mut argv = target.settle_argv(run);
            // A receiver that refuses `--delete-missing-args`: see `push`.
            let refusing = target.delete && self.refusing[t.0].load(Ordering::Relaxed);
            if refusing {
                rsync::ignoring_missing_args(&mut argv);
                if let Some(failed) = self.deletes_first(t, target, run) {
                    last = Outcome {
                        elapsed: last.elapsed + failed.elapsed,
                        ..failed
                    };
                    break;
                }
            }
            self.log_call(&format!("cd {} && rsync", target.root.display()), &argv);
            let outcome = self.rsync(&target.root, &argv, &[]);
            if !refusing && target.delete && rsync::refuses_missing_args(&outcome) {
                // Known from now on: the caller's retry goes without them.
                self.refusing[t.0].store(true, Ordering::Relaxed);
            }
            let elapsed = last.elapsed + outcome.elapsed;
            last = Outcome { elapsed, ..outcome };
            if !last.ok() {
                break;
            }
        }
        last
    }

    /// With `<debug start="true">`: the command line of a call, as info.
    pub(super) fn log_call(&self, head: &str, argv: &[std::ffi::OsString]) {
        if self.debug {
            let args: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
            log::info!("{head} {}", args.join(" "));
        }
    }

    /// Runs one job against one remote, with retries.
    /// `left_out`: the paths it left out as below what is a file or link now.
    /// `how`: a big file's transfer (`sync::bigfiles`); its retries go whole.
    pub(super) fn push(
        &self,
        t: RemoteId,
        job: &Job,
        excluded: &[PathBuf],
        left_out: &mut Vec<PathBuf>,
        no_deletes: bool,
        mut how: Transfer,
    ) -> Outcome {
        let target = &*self.target_for_call(t);
        let (mut argv, stdin) = target.argv_as(job, excluded, how);
        if no_deletes {
            rsync::deleting_nothing(&mut argv);
        }
        if matches!(job, Job::Full) && (self.index.get()).is_some_and(|ix| ix.exact_full(t)) {
            rsync::exact_times(&mut argv);
        }
        if self.debug {
            // The paths themselves were logged as events; the options are what matter.
            let shown: Vec<String> = argv
                .iter()
                .take(argv.len().saturating_sub(1))
                .filter(|a| !a.as_encoded_bytes().starts_with(b"./") || a.len() == 2)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let paths = match job {
                Job::Paths(p) => format!(" <{} path(s)>", p.len()),
                Job::Full | Job::Rename { .. } => String::new(),
            };
            log::info!(
                "cd {} && rsync {}{paths} {}",
                target.root.display(),
                shown.join(" "),
                target.dest()
            );
        }
        let mut attempt = 0;
        let (mut argv, mut stdin) = (argv, stdin);
        // Paths below what is a file or link now (a directory replaced while they
        // waited) cannot be pushed or deleted one by one, and need not be: the push of
        // the file or link replaces the directory on the remote. They are left out
        // before the call: where rsync reads the tree through links (no nosymfollow
        // view) it follows a link to a directory, `./d/x` pushes `d` as a directory
        // (rsync -R sends implied directories as directories, even when one is a link
        // at the source) and it replaces the remote's link, the call a success.
        let mut sent = job;
        let reachable;
        if let Job::Paths(paths) = job {
            if let Some(r) = self.leave_out_below_files(target, paths, left_out) {
                if r.is_empty() {
                    return Outcome {
                        status: 0,
                        stderr: String::new(),
                        elapsed: Duration::ZERO,
                    };
                }
                reachable = Job::Paths(r);
                sent = &reachable;
                (argv, stdin) = target.argv(sent, excluded);
                how = Transfer::Whole;
            }
        }
        // Deletes below a directory gone now go with the delete of the top of what is
        // gone, which the receiver does first: one below it could be resolved on the
        // remote through a link there (see `gone_tops`).
        // The ledger holds back what is at or below them until the call ends (see
        // `Ledger::deleting`); one made again before that booking goes as the
        // directory it is, and the requests below it are resolved in it.
        let with_tops;
        let mut _deleting = None;
        if let Job::Paths(paths) = sent {
            let tops = gone_tops(&target.root, paths);
            if !tops.is_empty() {
                let booked = self.deleting(t, tops);
                let still_gone: Vec<Entry> = (booked.tops.iter())
                    .filter(|e| gone(&target.root, &e.path))
                    .cloned()
                    .collect();
                _deleting = Some(booked);
                if !still_gone.is_empty() {
                    with_tops = Job::Paths(paths.iter().cloned().chain(still_gone).collect());
                    sent = &with_tops;
                    (argv, stdin) = target.argv(sent, excluded);
                    how = Transfer::Whole;
                }
            }
        }
        // A full sync writes rsync's own progress for its progress line and status.
        let showing = match job {
            Job::Full => self.stats[t.0].full_rsync().clone(),
            Job::Paths(_) | Job::Rename { .. } => None,
        };
        if showing.is_some() {
            rsync::show_progress(&mut argv);
        }
        let mut checked_below_files = false;
        loop {
            // A receiver that refuses `--delete-missing-args`: the deletes first, in
            // calls of their own (`rsync::missing`), then the call without them.
            let refusing = target.delete && self.refusing[t.0].load(Ordering::Relaxed);
            if refusing {
                rsync::ignoring_missing_args(&mut argv);
            }
            let first = match sent {
                Job::Paths(paths) if refusing => self.deletes_first(t, target, paths),
                _ => None,
            };
            let outcome = match (first, &showing) {
                (Some(failed), _) => failed,
                (None, Some(progress)) => self.runner.run_showing(
                    std::ffi::OsStr::new("rsync"),
                    &target.root,
                    &argv,
                    &stdin,
                    rsync::Watch::LowerAfter(rsync::LONG_PUSH),
                    progress,
                ),
                (None, None) => self.rsync(&target.root, &argv, &stdin),
            };
            if !refusing && target.delete && rsync::refuses_missing_args(&outcome) {
                // Nothing was sent: the receiver stopped at the file list.
                self.refusing[t.0].store(true, Ordering::Relaxed);
                log::warn!(
                    remote = target.label().as_str();
                    "{}'s rsync refuses --delete-missing-args (its receiver has a file-mode \
                     check without the exception for it: Debian's rsync 3.2.7-1+deb12u5, \
                     upstream 3.4.3; rsync issue #910): deletes go to it as their \
                     directories' listings from now on, one more call per push that \
                     deletes; update rsync there to drop that call (rsync: {})",
                    target.label(),
                    outcome.stderr.trim()
                );
                continue;
            }
            // A directory replaced by a file or link after that look: rsync says so
            // with exit 23 (it reads no link in its nosymfollow view; a file is not a
            // directory), or, when the file or link is itself in the call and the
            // path's deletion request is right below it, by aborting the receiver (exit
            // 2, "invalid path from sender"). Without them, and with each listing built
            // again (a listed directory that is a link now goes as the link), once.
            if matches!(outcome.status, 2 | 23) && !checked_below_files {
                checked_below_files = true;
                if let Job::Paths(paths) = sent {
                    let again = match self.leave_out_below_files(target, paths, left_out) {
                        Some(r) if r.is_empty() => {
                            return Outcome {
                                status: 0,
                                ..outcome
                            };
                        }
                        Some(r) => Job::Paths(r),
                        None => sent.clone(),
                    };
                    let again = target.argv(&again, excluded);
                    if again.0 != argv {
                        (argv, stdin) = again;
                        continue;
                    }
                }
            }
            if outcome.ok() {
                // One replaced by a link while rsync ran (the look above was before): it
                // may have followed the link and made a directory of it on the remote.
                // Not paid: it goes out again as the link (see `run_job`).
                if let Job::Paths(paths) = sent {
                    let known: HashSet<PathBuf> = left_out.iter().cloned().collect();
                    let below = below_files(&target.root, paths);
                    left_out.extend(below.into_iter().filter(|p| !known.contains(p)));
                }
            }
            if outcome.status == 23 && !target.delete && only_blocked_by_directories(&outcome) {
                // With deletes off a directory on the remote cannot give way to what
                // replaced it here: the remote keeps it, as it keeps deleted files.
                let why: Vec<&str> = outcome
                    .stderr
                    .lines()
                    .filter(|l| l.contains("could not make way for new "))
                    .take(3)
                    .collect();
                log::warn!(
                    remote = target.label().as_str();
                    "deletes are off: {} keeps a directory where the source has a file or \
                     link now, left as it is there (rsync: {})",
                    target.label(),
                    why.join("; ")
                );
                return Outcome {
                    status: 0,
                    ..outcome
                };
            }
            // A remote already failing is paced by its backoff schedule instead.
            // Deletes skipped by `--max-delete=0` (an empty root's full sync): no failure
            // to retry, the caller holds it (over ssh rsync exits 25 for it).
            if outcome.ok()
                || (no_deletes && rsync::deletes_skipped(&outcome))
                || attempt >= self.retry_delays.len()
                || self.stopping.load(Ordering::Relaxed)
                || self.queue.is_failing(t)
                || self.root_unsafe(t).is_some()
            {
                return outcome;
            }
            let cause = Cause::of(outcome.status, &outcome.stderr);
            log::warn!(
                remote = target.label().as_str(), paths = job.count(), rsync_exit = outcome.status,
                cause = cause.kind.as_str(), stderr = outcome.stderr.as_str();
                "push to {} failed, retrying: {}",
                target.label(),
                cause.text
            );
            self.stats[t.0]
                .failures()
                .failed(SystemTime::now(), cause.text);
            std::thread::sleep(self.retry_delays[attempt]);
            attempt += 1;
            if how != Transfer::Whole {
                // A failed append or in-place push is redone from the start, whole:
                // never appended onto what the failed transfer left.
                (argv, stdin) = target.argv(sent, excluded);
                how = Transfer::Whole;
            }
        }
    }

    /// For a receiver that refuses `--delete-missing-args`: deletes the paths of `paths`
    /// missing now whose directory is there, in calls of their own
    /// ([`rsync::Target::delete_argvs`]); the first failure, if any.
    fn deletes_first(
        &self,
        t: RemoteId,
        target: &rsync::Target,
        paths: &[Entry],
    ) -> Option<Outcome> {
        let names: Vec<PathBuf> = paths.iter().map(|e| e.path.clone()).collect();
        let missing = rsync::missing_in_place(&target.root, &names);
        let excludes = &self.excludes[t.0];
        let kept_out = |p: &Path, dir: bool| {
            let name = p.file_name().map_or(&[][..], |n| n.as_encoded_bytes());
            crate::filter::skip(excludes, name, p, dir)
        };
        for (argv, stdin) in target.delete_argvs(&missing, &kept_out) {
            self.log_call(&format!("cd {} && rsync", target.root.display()), &argv);
            let outcome = self.rsync(&target.root, &argv, &stdin);
            if !outcome.ok() {
                return Some(outcome);
            }
        }
        None
    }

    /// The paths of `paths` that are below a file or link now are added to `left_out`
    /// (and said); the rest, or `None` when none is.
    fn leave_out_below_files(
        &self,
        target: &rsync::Target,
        paths: &[Entry],
        left_out: &mut Vec<PathBuf>,
    ) -> Option<Vec<Entry>> {
        let below = below_files(&target.root, paths);
        if below.is_empty() {
            return None;
        }
        log::info!(
            "{} path(s) below what is a file or link now left out of the push to {} (the \
             file or link replaces the directory there)",
            below.len(),
            target.label()
        );
        let gone: HashSet<&Path> = below.iter().map(PathBuf::as_path).collect();
        let reachable = paths
            .iter()
            .filter(|e| !gone.contains(e.path.as_path()))
            .cloned()
            .collect();
        left_out.extend(below);
        Some(reachable)
    }
}

/// What a call deletes that the ledger did not hand out (the top of what is gone above
/// its paths, the parents' listings it sends), booked in the ledger while the call runs
/// (see `Ledger::deleting`), released when it ends however it ends.
pub(super) struct Deleting<'a> {
    mirror: &'a Mirror,
    t: RemoteId,
    tops: Vec<Entry>,
}

impl Mirror {
    /// Books `tops` as deleted by a call to `t` until what it returns is dropped.
    pub(super) fn deleting(&self, t: RemoteId, tops: Vec<Entry>) -> Deleting<'_> {
        self.queue.deleting(t, &tops);
        Deleting {
            mirror: self,
            t,
            tops,
        }
    }
}

impl Drop for Deleting<'_> {
    fn drop(&mut self) {
        self.mirror.queue.deleted(self.t, &self.tops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Excludes;
    use crate::sync::rsync::{Runner, Target, Watch};
    use crate::sync::{FailLog, Queue};
    use std::ffi::{OsStr, OsString};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// A call that, while it runs, sees a directory made again where the call deletes
    /// the one that was gone, a file written in it and queued, and asks the queue for
    /// work as another worker would: what it was given, by call.
    struct Meanwhile {
        root: PathBuf,
        queue: Arc<Queue>,
        calls: Mutex<Vec<(Vec<OsString>, Option<Job>)>>,
    }

    impl Runner for Meanwhile {
        fn run(&self, _: &OsStr, _: &Path, argv: &[OsString], _: &[u8], _: Watch) -> Outcome {
            let _ = std::fs::create_dir_all(self.root.join("burst"));
            let _ = std::fs::write(self.root.join("burst/new"), b"new");
            self.queue
                .push(&[RemoteId(0)], Path::new("burst/new"), false);
            let other = self.queue.try_take_at(Instant::now()).map(|(_, j)| j);
            if let Ok(mut c) = self.calls.lock() {
                c.push((argv.to_vec(), other));
            }
            Outcome {
                status: 0,
                stderr: String::new(),
                elapsed: Duration::ZERO,
            }
        }
    }

    #[test]
    fn a_file_made_where_a_call_deletes_a_gone_directory_waits_until_that_call_ends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("src");
        std::fs::create_dir(&root).expect("root");
        let target = Target::daemon_for_test(&root, "127.0.0.1", "m", "-a");
        let queue = Arc::new(Queue::new(1, 100, 2));
        let runner = Arc::new(Meanwhile {
            root: root.clone(),
            queue: Arc::clone(&queue),
            calls: Mutex::new(Vec::new()),
        });
        let mirror = Mirror::new(
            vec![target],
            Arc::clone(&queue),
            Excludes::new(Vec::new()),
            false,
            FailLog::new(dir.path().join("fail.sh"), 1),
            None,
        )
        .simulated(runner.clone());
        // A file pushed before its directory was moved away (`mv burst "burst moved"`).
        queue.push(&[RemoteId(0)], Path::new("burst/old"), false);
        assert!(mirror.run_one_at(Instant::now()));
        let calls = runner.calls.lock().map(|c| c.clone()).unwrap_or_default();
        let (argv, other) = calls.first().expect("one call");
        assert!(
            argv.iter().any(|a| a == "./burst"),
            "the call deletes the gone directory: {argv:?}"
        );
        assert_eq!(
            *other, None,
            "burst/new went out beside the delete of burst"
        );
        // Once it ended, the new file goes.
        let (_, next) = queue.try_take_at(Instant::now()).expect("burst/new waits");
        assert_eq!(
            next,
            Job::Paths(vec![Entry::plain(PathBuf::from("burst/new"))])
        );
    }
}
