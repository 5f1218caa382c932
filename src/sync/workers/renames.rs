//! A rename pushed as a remote `mv` (ssh) or, where that cannot be, as its plain form.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Mirror;
use crate::sync::cause::Cause;
use crate::sync::job::{Entry, Job, RemoteId};
use crate::sync::queue::Item;
use crate::sync::rsync::{self, Outcome};
use crate::watch::too_long_for_rsync;

impl Mirror {
    /// A directory rename taken for `t` that cannot land as one (its new name gone, or
    /// its old one made again; `tried`: or its call failed) while the brake on mass
    /// deletes is on: queued again as the changes it stands for, the delete of the old
    /// name among them, which the brake weighs as any delete (with what the index says
    /// the remote holds below it), each carrying the rename's mark (see
    /// `Queue::unrenamed`). Returns whether it was; the caller books the job as done.
    /// Pushed plain here instead, that delete bypassed the brake: `mv data trash &&
    /// rm -rf trash` (documented as held) deleted `data` on every remote while the
    /// brake held `trash`'s deletes, and `mv data old && mkdir data && rm -rf old`
    /// emptied it by `data`'s listing.
    pub(super) fn unrenamed(&self, t: RemoteId, job: &Job, tried: bool) -> bool {
        let Job::Rename {
            from,
            to,
            dir: true,
            below,
        } = job
        else {
            return false;
        };
        let root = &self.targets[t.0].root;
        let there = |p: &Path| std::fs::symlink_metadata(root.join(p)).is_ok();
        let (from_there, to_there) = (there(from), there(to));
        if !tried && !from_there && to_there {
            return false; // it may land as one: tried first
        }
        if !self.queue.braking(t) {
            return false;
        }
        let mut items = vec![Item::Gone(from.clone(), true)];
        if from_there {
            items.push(Item::Path(Entry::listing(from.clone()), false));
        }
        if to_there {
            items.push(Item::Path(Entry::listing(to.clone()), false));
            items.extend(
                (below.iter())
                    .filter(|p| *p != to)
                    .map(|p| Item::Path(Entry::listing(p.clone()), false)),
            );
        } else {
            items.push(Item::Gone(to.clone(), true));
        }
        log::info!(
            "the rename of {} to {} cannot reach {} as a rename ({}); queued again as the \
             delete of {} and what is there now, which the brake on mass deletes weighs",
            from.display(),
            to.display(),
            self.targets[t.0].label(),
            match (from_there, to_there) {
                (true, _) => "the old name is there again",
                (false, false) => "the new name is gone",
                (false, true) => "its call failed",
            },
            from.display()
        );
        self.queue.unrenamed(t, job, &items);
        true
    }

    /// A directory rename that reached `t` as one (pushed with the old name as its
    /// basis) while entries of the new name went (`mv data trash && rm -rf trash`, the
    /// push running while `trash` was emptied: missing arguments are deletion requests,
    /// and the call succeeds with part of the tree): while the brake on mass deletes is
    /// on, the delete of the old name that follows is queued again for the brake to
    /// weigh, counted as one and as many as went, carrying the rename's mark, instead of
    /// going out at once (it deleted `data` on a remote whose `trash` had part of it).
    /// Returns whether it was; the caller books that delete as done.
    pub(super) fn lost_while_renamed(&self, t: RemoteId, job: &Job) -> bool {
        let Job::Rename {
            from, dir: true, ..
        } = job
        else {
            return false;
        };
        if !self.queue.braking(t) {
            return false;
        }
        let root = &self.targets[t.0].root;
        let lost = (rename_to_paths(job).plain_paths().iter())
            .filter(|e| std::fs::symlink_metadata(root.join(&e.path)).is_err())
            .count();
        if lost == 0 {
            return false;
        }
        log::info!(
            "the rename of {} reached {} with {lost} of its entries gone meanwhile; the \
             delete of {} is weighed by the brake on mass deletes",
            from.display(),
            self.targets[t.0].label(),
            from.display()
        );
        self.queue
            .unrenamed_counted(t, job, &[Item::Gone(from.clone(), true)], lost);
        true
    }

    /// Carries a rename to `t` as one: in ssh mode as one `mv` on the remote
    /// ([`Target::remote_rename_argv`]); in daemon mode by pushing the new path with the
    /// old one as its basis ([`Target::rename_argvs`]). `Some` when it landed; `None`
    /// when the rename must travel in its plain form instead: it cannot be carried as
    /// one, the remote is failing already, or a call failed (the remote lacks the new
    /// parent directory, an old rsync, a network error: the plain push, with its
    /// retries and fail log, settles which).
    pub(super) fn rename(&self, t: RemoteId, job: &Job) -> Option<Renamed> {
        let Job::Rename { from, to, dir, .. } = job else {
            return None;
        };
        if self.queue.is_failing(t) {
            return None;
        }
        let root = &self.targets[t.0].root;
        if too_long_for_rsync(root, from, *dir) || too_long_for_rsync(root, to, *dir) {
            // Plain: the side that is too long is left out there.
            return None;
        }
        if self.excludes[t.0].excludes_only_as_directory(to) {
            // The new side has a name the `<filter>` excludes only as a directory: plain,
            // where it goes as its parent's listing if it is such a directory when its
            // call is built (see `sent_paths`) and is not sent (simulator seed 3080974).
            // Also when it is not one now: it may become one before rsync reads the
            // tree, and the rename's own call would send it (4080833).
            return None;
        }
        let target = &*self.target_for_call(t);
        if let Some((program, argv)) = target.remote_rename_argv(from, to) {
            self.log_call(&program.to_string_lossy(), &argv);
            let outcome = self.runner.run(
                &program,
                &target.root,
                &argv,
                &[],
                rsync::Watch::KillAfter(REMOTE_MV_LIMIT),
            );
            if outcome.status == 0 {
                return Some(Renamed::Moved(outcome));
            }
            log::debug!(
                "the remote mv of {} to {} on {} failed ({}); pushing it plain",
                from.display(),
                to.display(),
                target.label(),
                Cause::of(outcome.status, &outcome.stderr).text
            );
        }
        if target.opts.ssh.is_some() {
            // Over ssh no push with the old path as its basis: it names a directory on
            // the remote as the destination, and the receiving rsync follows a link
            // planted there (the plain push replaces one). Where `mv` cannot do the
            // rename, it travels plain.
            return None;
        }
        let to_paths: Vec<PathBuf> = rename_to_paths(job)
            .plain_paths()
            .into_iter()
            .map(|e| e.path)
            .collect();
        let argvs = target.rename_argvs(from, to, *dir, &to_paths)?;
        // A directory's push lists its entries (`./to/./`): the temp and excluded names
        // among them stay out, anchored at `to` (the transfer's top there).
        let excluded: Vec<PathBuf> = if *dir {
            self.excluded_in_listings(t, &Job::Paths(vec![Entry::listing(to.clone())]))
                .into_iter()
                .filter_map(|p| p.strip_prefix(to).ok().map(Path::to_path_buf))
                .collect()
        } else {
            Vec::new()
        };
        let mut last = None;
        for mut argv in argvs {
            let stdin = rsync::exclude_exactly(&mut argv, &excluded);
            self.log_call(&format!("cd {} && rsync", target.root.display()), &argv);
            let outcome = self.rsync(&target.root, &argv, &stdin);
            // Files that vanished while it ran (exit 24) are deletes: while the brake on
            // mass deletes is on they go to it (see `unrenamed`), not out with the
            // delete of the old path that follows a rename pushed this way.
            if !outcome.ok() || (outcome.status == 24 && self.queue.braking(t)) {
                log::info!(
                    "the rename of {} to {} did not reach {} as a rename ({}); pushing it \
                     plain",
                    from.display(),
                    to.display(),
                    target.label(),
                    Cause::of(outcome.status, &outcome.stderr).text
                );
                return None;
            }
            last = Some(outcome);
        }
        last.map(Renamed::Linked)
    }
}

/// How long the remote `mv` of a rename may take (connect included) before it is
/// killed and the rename pushed plain.
const REMOTE_MV_LIMIT: Duration = Duration::from_secs(30);

/// How a rename reached a remote as one.
pub(super) enum Renamed {
    /// ssh mode: one `mv` on the remote moved the old path to the new one.
    Moved(Outcome),
    /// The new path was pushed with the old one as its basis; the old one is still
    /// there, to be deleted.
    Linked(Outcome),
}

/// What a rename put on the remote: `to` and what was below it.
pub(super) fn rename_to_paths(job: &Job) -> Job {
    match job {
        Job::Rename { to, below, .. } => {
            let mut paths = vec![Entry::plain(to.clone())];
            paths.extend(below.iter().filter(|p| *p != to).cloned().map(Entry::plain));
            Job::Paths(paths)
        }
        other => other.clone(),
    }
}
