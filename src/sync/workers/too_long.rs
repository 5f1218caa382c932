//! Paths too long for rsync: left out of a call or a full sync, and said as such.

use std::path::{Path, PathBuf};

use super::Mirror;
use crate::sync::bigfiles::Transfer;
use crate::sync::job::{Entry, Job, RemoteId};
use crate::sync::rsync::Outcome;
use crate::watch::too_long_for_rsync;

impl Mirror {
    /// The calls without the paths too long for rsync (see `watch::too_long_for_rsync`):
    /// those are never put in a call with others (rsync would fail the whole call, exit
    /// 22, or read a truncated name). They are paid, not pushed (no push of them can ever
    /// land, so owing them would hold the remote failing and every barrier for ever),
    /// warned about and counted in the root's status.
    pub(super) fn leave_out_too_long(
        &self,
        t: RemoteId,
        calls: Vec<(Job, Vec<PathBuf>)>,
    ) -> Vec<(Job, Vec<PathBuf>)> {
        let root = &self.targets[t.0].root;
        let mut long = Vec::new();
        let mut out = Vec::with_capacity(calls.len());
        for (call, excluded) in calls {
            match call {
                Job::Paths(paths) => {
                    let (over, fit) = too_long_entries(root, paths);
                    long.extend(over);
                    if !fit.is_empty() {
                        out.push((Job::Paths(fit), excluded));
                    }
                }
                other => out.push((other, excluded)),
            }
        }
        if !long.is_empty() {
            self.skip_too_long(t, long);
        }
        out
    }

    /// A call that lists directories (a full sync, or paths with trees) that ended in
    /// exit 23: if the tree below it holds paths too long for rsync (rsync could not
    /// open them, "File name too long", or could not even name one while listing its
    /// directory, "filename overflows max-path len by N", and skipped every deletion),
    /// the call again without them (see `watch::left_out`: a directory holding a name
    /// rsync cannot build is left out, and its other entries go in a call of their own
    /// after it); its outcome, a success when everything else landed. They are noted
    /// like live ones: not mirrorable, not owed, counted in status while they are there.
    pub(super) fn without_too_long(
        &self,
        t: RemoteId,
        call: &Job,
        excluded: &[PathBuf],
    ) -> Option<Outcome> {
        let target = &self.targets[t.0];
        let root = &target.root;
        let long: Vec<PathBuf> = match call {
            Job::Full => crate::watch::too_long_below(root, TOO_LONG_EXCLUDED),
            Job::Paths(entries) => entries
                .iter()
                .filter(|e| e.tree)
                .flat_map(|e| crate::watch::too_long_below_in(root, &e.path, TOO_LONG_EXCLUDED))
                .take(TOO_LONG_EXCLUDED)
                .collect(),
            Job::Rename { .. } => return None,
        };
        if long.is_empty() {
            return None;
        }
        let out = crate::watch::left_out(&long);
        let what = match call {
            Job::Full => format!("full sync of {}", root.display()),
            other => format!("push of {} path(s) from {}", other.count(), root.display()),
        };
        log::info!(
            "{what} to {}: {} path(s) in the tree not mirrorable: {} (e.g. {}); running it \
             again without them{}",
            target.label(),
            long.len(),
            crate::watch::too_long_reason(),
            crate::watch::shorten(&long[0]),
            match out.relisted.len() {
                0 => String::new(),
                n => format!(
                    ", the {n} director(ies) holding a name rsync cannot build left out and \
                     their other entries pushed on their own"
                ),
            }
        );
        let mut without = excluded.to_vec();
        without.extend(out.excluded.iter().cloned());
        self.skip_too_long(t, crate::sync::job::plain_entries(long));
        let again = self.push(t, call, &without, &mut Vec::new(), false, Transfer::Whole);
        if !again.ok() {
            return Some(again);
        }
        for entries in relisted(root, &out, excluded) {
            let budget = crate::sync::rsync::ARGS_BUDGET;
            for run in crate::sync::rsync::split_for_args(&entries, budget) {
                let job = Job::Paths(run.to_vec());
                let pushed = self.push(t, &job, &without, &mut Vec::new(), false, Transfer::Whole);
                if !pushed.ok() {
                    return Some(pushed);
                }
            }
        }
        Some(again)
    }

    /// Pays `long` (paths too long for rsync) without a push, and notes them.
    fn skip_too_long(&self, t: RemoteId, long: Vec<Entry>) {
        let target = &self.targets[t.0];
        let health = self
            .roots
            .get()
            .and_then(|r| r.iter().find(|h| h.path() == target.root.as_path()));
        for e in &long {
            let what = format!("left out of the push to {}", target.label());
            match health {
                Some(h) => h.note_too_long(&e.path, &what),
                None => log::warn!(
                    "{}/{} is too long for rsync: {what}; it is not mirrored and not owed",
                    target.root.display(),
                    crate::watch::shorten(&e.path)
                ),
            }
        }
        let job = Job::Paths(long);
        // The fail log's lock first, then the queue's (see ARCHITECTURE.md).
        let fl = self.fail_log();
        if self.queue.paid_without_push(t, &job) || self.unsaved() {
            self.save(&fl);
        }
    }
}

/// Paths too long for rsync a full sync leaves out at most (each is an exclude rule of
/// some 4 KiB read from rsync's stdin).
const TOO_LONG_EXCLUDED: usize = 10_000;

/// `paths` as (too long for rsync, the rest), each in its order.
fn too_long_entries(root: &Path, paths: Vec<Entry>) -> (Vec<Entry>, Vec<Entry>) {
    paths
        .into_iter()
        .partition(|e| too_long_for_rsync(root, &e.path, e.listing))
}

/// The entries of the directories a full sync leaves out for a name rsync cannot build
/// (see `watch::relisted_entries`): the files, then the directories with what is below
/// them, each kind in calls of its own.
pub fn relisted(root: &Path, out: &crate::watch::LeftOut, skip: &[PathBuf]) -> [Vec<Entry>; 2] {
    let (mut files, mut trees) = (Vec::new(), Vec::new());
    for (p, dir) in crate::watch::relisted_entries(root, out, skip) {
        if dir {
            trees.push(Entry::tree(p));
        } else {
            files.push(Entry::plain(p));
        }
    }
    [files, trees]
}
