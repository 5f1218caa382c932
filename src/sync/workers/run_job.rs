//! One job taken from the queue, from its take to its booking: `Mirror::run_job`, the
//! guard that finishes it whatever happens (`Taken`), and trees split into calls of their own.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::big;
use super::full_progress::FullRun;
use super::listings::{
    excluded_directories, first_non_directory, listing_stamps, listings_added, listings_again,
    listings_changed, missing_listings, sent_paths,
};
use super::renames::{rename_to_paths, Renamed};
use super::Mirror;
use crate::sync::bigfiles::{Stamp, Transfer};
use crate::sync::cause::Cause;
use crate::sync::job::{Entry, Job, RemoteId};
use crate::sync::rsync::{self, Outcome};

impl Mirror {
    /// Pushes one job taken from the queue. The job is finished in the queue whatever
    /// happens (see [`Taken`]).
    pub(super) fn run_job(&self, t: RemoteId, job: Job) {
        let _running = self.stats[t.0].clock_in(matches!(job, Job::Full));
        let _full = matches!(job, Job::Full).then(|| {
            let target = &self.targets[t.0];
            FullRun::start(&self.stats[t.0], &target.root, target.label())
        });
        let mut taken = Taken {
            mirror: self,
            t,
            job,
            rest: None,
            accounted: false,
            again: Vec::new(),
        };
        if let Some(why) = self.root_unsafe(t) {
            self.defer(t, &taken.job, &why);
            taken.accounted = true;
            return;
        }
        // Of an empty root: run so that it deletes nothing (see `full_of_empty_root`).
        let no_deletes = matches!(taken.job, Job::Full) && self.full_of_empty_root(t);
        // In the index's journal on disk before anything runs; its end noted on return.
        let _announced = (self.index.get()).and_then(|ix| ix.announce(t, &taken.job));
        // Big files: each in a call of its own, as an append, in place or whole.
        let big = self.big_plan(t, &taken.job);
        let mut rest = None;
        let plain;
        let rename_before = match &taken.job {
            Job::Rename { .. } => self.index_before(t, &taken.job),
            _ => None,
        };
        let calls = match &taken.job {
            Job::Paths(paths) => split(paths, &big.big)
                .into_iter()
                .map(|(job, _)| {
                    let excluded = self.excluded_in_listings(t, &job);
                    (job, excluded)
                })
                .collect(),
            Job::Full => {
                self.say_temp_named(t);
                vec![(Job::Full, self.excluded_paths(t))]
            }
            Job::Rename { .. } if self.unrenamed(t, &taken.job, false) => {
                // Queued again as the changes it stands for, the brake weighing its
                // delete: booked as done, its mark carried by them.
                let done = nothing_ran();
                rest = self.account(t, &taken.job, &done);
                Vec::new()
            }
            Job::Rename { from, .. }
                if std::fs::symlink_metadata(self.targets[t.0].root.join(from)).is_ok() =>
            {
                // Not a rename any more (an exchange, or `from` made again): pushed as
                // it is now, see `Job::listing_paths`.
                plain = taken.job.listing_paths();
                split(&plain, &[])
            }
            Job::Rename { from, .. } => match self.rename(t, &taken.job) {
                Some(Renamed::Moved(outcome)) => {
                    // One remote `mv`: the old path is gone and the new one holds what
                    // the old one held there. For a directory that may lack what a push
                    // that ran while it was renamed here found gone: the paths below
                    // it are pushed again by quick check (sending only what differs).
                    // For a file, what the remote held at the old path may be another
                    // entry than the file renamed (a link or file made there again and
                    // pushed before the rename was read): the new path too is pushed
                    // again by quick check (the moved copy, if it is the file, stays).
                    let to_paths = rename_to_paths(&taken.job);
                    let settled = self.settle(t, &to_paths);
                    rest = self.account(t, &to_paths, &settled);
                    let from = Job::Paths(vec![Entry::plain(from.clone())]);
                    rest = rest.or(self.account(t, &from, &outcome));
                    if let (true, Some((ix, b))) = (settled.ok() && outcome.ok(), rename_before) {
                        ix.landed(t, b.0);
                    }
                    Vec::new()
                }
                Some(Renamed::Linked(outcome)) => {
                    // `to` is there; the old path is deleted by an ordinary call, a
                    // directory's as its listing: one made again there meanwhile is
                    // then listed, and what the remote holds of the old one goes
                    // (pushed plain, it went as a directory alone and the old entries
                    // stayed).
                    rest = self.account(t, &rename_to_paths(&taken.job), &outcome);
                    // The old path leaves the index with the listing's delete below.
                    if let (true, Some((ix, b))) = (outcome.ok(), rename_before) {
                        ix.landed(t, b.1);
                    }
                    let gone = Entry::with_listing(
                        from.clone(),
                        matches!(taken.job, Job::Rename { dir: true, .. }),
                    );
                    let job = Job::Paths(vec![gone]);
                    if self.lost_while_renamed(t, &taken.job) {
                        // What went from the new name while it was pushed did not land
                        // there: the old name's delete is weighed by the brake with it.
                        let done = nothing_ran();
                        rest = rest.or(self.account(t, &job, &done));
                        Vec::new()
                    } else {
                        let excluded = self.excluded_in_listings(t, &job);
                        vec![(job, excluded)]
                    }
                }
                None if self.unrenamed(t, &taken.job, true) => {
                    let done = nothing_ran();
                    rest = self.account(t, &taken.job, &done);
                    Vec::new()
                }
                None => {
                    plain = taken.job.plain_paths();
                    split(&plain, &[])
                }
            },
        };
        let mut calls: std::collections::VecDeque<_> = self.leave_out_too_long(t, calls).into();
        let mut split_budget = super::bisect::SPLIT_BUDGET;
        while let Some((call, excluded)) = calls.pop_front() {
            // A path that is an excluded directory now goes as its parent's listing.
            let target = &self.targets[t.0];
            let sent = sent_paths(&target.root, &self.excludes[t.0], target.delete, &call);
            let as_listings = excluded_directories(&target.root, &self.excludes[t.0], &call);
            let excluded = match &sent {
                Some(s) => self.excluded_in_listings(t, s),
                None => excluded,
            };
            // Listings of directories missing now go out as deletes (see
            // `Target::argv_with_args`); one made again before rsync read the tree is
            // then pushed as a directory only, and what the remote holds in it of the
            // old one stays. Such a listing goes out again, keeping its mark.
            let missing = missing_listings(&self.targets[t.0].root, &call);
            // Listings that are directories now, with their stamps: one whose entries
            // change before its prune ran goes out again (see `listings_changed`).
            let listed = if self.targets[t.0].delete {
                listing_stamps(&self.targets[t.0].root, &call)
            } else {
                Vec::new()
            };
            // The same for the listings the call sends that it does not name: the
            // parents of its gone or directory-excluded paths (see `sent_paths`). Such a
            // listing of a directory gone when the call was built goes out as its delete,
            // and one made again before rsync read the tree is sent as a directory only:
            // the remote's file below it stays (simulator seed 9007461).
            let added = sent.as_ref().map(|s| listings_added(&call, s));
            // Such a listing deletes on the remote what its directory lacks when rsync
            // reads it: nothing at or below it goes beside the call (simulator seed
            // 38837 of `reads`: a file made in the root after rsync read it, pushed
            // beside the root's listing, landed and was deleted by it).
            let _deleting = (added.as_ref())
                .map(Job::plain_paths)
                .filter(|a| !a.is_empty())
                .map(|a| self.deleting(t, a));
            let (added_missing, added_listed) = match &added {
                Some(a) => (
                    missing_listings(&self.targets[t.0].root, a),
                    if self.targets[t.0].delete {
                        listing_stamps(&self.targets[t.0].root, a)
                    } else {
                        Vec::new()
                    },
                ),
                None => (Vec::new(), Vec::new()),
            };
            let mut before = (self.index.get())
                .and_then(|ix| ix.before(t, &self.targets[t.0].root, &call))
                .map(|mut b| {
                    b.retain(|(p, _)| !excluded.contains(p));
                    b
                });
            let mut left_out = Vec::new();
            let planned = big::planned(&big, &call);
            let how = match (planned, &sent) {
                (Some((_, how, _)), None) => *how,
                (Some((_, how, _)), Some(s)) if *s == call => *how,
                _ => Transfer::Whole,
            };
            let mut outcome = match &sent {
                Some(Job::Paths(p)) if p.is_empty() => Outcome {
                    status: 0,
                    stderr: String::new(),
                    elapsed: Duration::ZERO,
                },
                Some(s) => self.push(t, s, &excluded, &mut left_out, false, how),
                None => self.push(t, &call, &excluded, &mut left_out, no_deletes, how),
            };
            if let Some((path, _, before)) = planned {
                let ok = outcome.ok() && left_out.is_empty();
                self.big_landed(t, &big, path, before, ok);
            }
            if no_deletes && sent.is_none() && self.hold_empty_full(t, &outcome) {
                // Held with the deletes (`ledger/brake.rs`): its end queues nothing again.
                self.big_done(t, &taken.job);
                taken.accounted = true;
                return;
            }
            if outcome.ok() {
                if let Some(failed) = self.prune(t, &call, &excluded) {
                    outcome = failed;
                }
            }
            if outcome.status == 23 && sent.is_none() {
                if let Some(again) = self.without_too_long(t, &call, &excluded) {
                    outcome = again;
                }
            }
            let partial = (left_out.is_empty() && self.root_unsafe(t).is_none())
                .then(|| self.partial(t, &call, &outcome, &excluded))
                .flatten();
            if let Some((failed, paid, ok)) = partial {
                // Paid but for what rsync named: those paths (a directory it could not
                // read with everything below it) are owed, and tried again on the
                // backoff schedule, not the whole call.
                let root = &self.targets[t.0].root;
                let mut paid = paid;
                let again = listings_again(root, missing);
                if let (false, Job::Paths(paths)) = (again.is_empty(), &mut paid) {
                    // As after a success: not paid, they go out again (see below).
                    paths.retain(|e| !(e.listing && again.contains(&e.path)));
                    taken.again.extend(again);
                }
                // The index enters what landed; the failed paths keep what it had.
                if let (Some(ix), Some(before), Job::Paths(f)) = (self.index.get(), before, &failed)
                {
                    let landed = before
                        .into_iter()
                        .filter(|(p, _)| !f.iter().any(|e| p.starts_with(&e.path)))
                        .collect();
                    ix.landed(t, landed);
                }
                rest = rest.or(self.account_landed_part(t, &paid, &ok));
                rest = rest.or(self.account(t, &failed, &outcome));
                continue;
            }
            let mut call = call;
            let mut redirect = Vec::new();
            if outcome.ok() {
                // What was left out below a file or link now is not paid by this call
                // but made equal by that file's push: it goes out again carrying their
                // oldest marks, and what they owe moves to it (see
                // `Ledger::paid_leaving`), so a barrier taken before waits for it (it
                // may have been pushed before they were left out, or be waiting with a
                // later mark). What went away since goes as a delete of the top of it
                // that is gone, and a path below only directories again goes out itself.
                let root = &self.targets[t.0].root;
                for p in left_out {
                    let a = first_non_directory(root, &p).unwrap_or_else(|| p.clone());
                    redirect.push((p, a));
                }
            }
            if outcome.ok() {
                // A path that became such an excluded directory after the call was built
                // was kept out by rsync (its pattern travels with the call), and what the
                // remote held there (a file, a link) stayed: not paid, it goes out again
                // with its mark, then as its parent's listing.
                let root = &self.targets[t.0].root;
                let raced: Vec<PathBuf> = excluded_directories(root, &self.excludes[t.0], &call)
                    .into_iter()
                    .filter(|p| !as_listings.contains(p))
                    .collect();
                if !raced.is_empty() && self.targets[t.0].delete {
                    if let Job::Paths(paths) = &mut call {
                        paths.retain(|e| !raced.contains(&e.path));
                    }
                    redirect.extend(raced.into_iter().map(|p| (p.clone(), p)));
                }
            }
            if outcome.ok() && !(added_missing.is_empty() && added_listed.is_empty()) {
                // A listing the call sent for some of its paths that did not make the
                // remote equal: those paths are not paid and go out again with their
                // marks (as their parent's listing again, while they are what they are).
                let root = &self.targets[t.0].root;
                let mut again = listings_again(root, added_missing);
                again.extend(listings_changed(root, added_listed));
                let unpaid: Vec<PathBuf> = as_listings
                    .iter()
                    .filter(|p| again.iter().any(|d| p.parent() == Some(d.as_path())))
                    .cloned()
                    .collect();
                if !unpaid.is_empty() {
                    if let Job::Paths(paths) = &mut call {
                        paths.retain(|e| !unpaid.contains(&e.path));
                    }
                    // The index keeps what it had for them: they did not land.
                    if let Some(b) = before.as_mut() {
                        b.retain(|(p, _)| !unpaid.iter().any(|u| p.starts_with(u)));
                    }
                    redirect.extend(unpaid.into_iter().map(|p| (p.clone(), p)));
                }
            }
            if outcome.ok() {
                let root = &self.targets[t.0].root;
                let mut again = listings_again(root, missing);
                again.extend(listings_changed(root, listed));
                if !again.is_empty() {
                    // Not paid: what they owe (in the fail log, with its older mark) stays
                    // owed until their listing lands.
                    if let Job::Paths(paths) = &mut call {
                        paths.retain(|e| !(e.listing && again.contains(&e.path)));
                    }
                    taken.again.extend(again);
                }
            }
            // The root went away while it ran: not the remote's failure.
            if let (false, Some(why)) = (outcome.ok(), self.root_unsafe(t)) {
                self.defer(t, &call, &why);
                continue;
            }
            if !outcome.ok() && !self.stopping.load(Ordering::Relaxed) {
                // One path rsync cannot take must not hold back the others: the halves
                // go out on their own, until only the culprit stays owed.
                if let Some((a, b)) =
                    super::bisect::halves(&call, outcome.status, &mut split_budget)
                {
                    log::info!(
                        remote = self.targets[t.0].label().as_str(), paths = call.count(),
                        rsync_exit = outcome.status;
                        "push of {} paths to {} failed ({}); pushing them in two halves to \
                         land all but the path(s) it fails on",
                        call.count(),
                        self.targets[t.0].label(),
                        Cause::of(outcome.status, &outcome.stderr).text
                    );
                    calls.push_front((b, excluded.clone()));
                    calls.push_front((a, excluded));
                    continue;
                }
            }
            if let (true, Some(ix)) = (outcome.ok(), self.index.get()) {
                match &call {
                    Job::Full => {
                        let unknown = ix.full_landed(t);
                        if !unknown.is_empty() {
                            let root = &self.targets[t.0].root;
                            let paths: Vec<Entry> = unknown.into_iter().map(Entry::plain).collect();
                            self.queue
                                .push_many(&super::remotes_of(&self.targets, root), &paths);
                        }
                    }
                    _ => ix.landed(t, before.unwrap_or_default()),
                }
            }
            rest = rest.or(self.book(t, &call, &outcome, true, &redirect));
        }
        self.big_done(t, &taken.job);
        taken.rest = rest;
        taken.accounted = true;
    }
}

/// A job taken from the queue. Dropping it finishes the job in the queue, so its paths
/// never stay "in flight", whatever ended the push (a failed spawn, a panic). If the push
/// was not accounted for (it panicked), its paths are owed in the fail log, so they are
/// pushed again later.
struct Taken<'a> {
    mirror: &'a Mirror,
    t: RemoteId,
    job: Job,
    /// How long the remote rests before its next call.
    rest: Option<Duration>,
    accounted: bool,
    /// Listings (their directories) to push again, keeping their marks.
    again: Vec<PathBuf>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let m = self.mirror;
        if !self.accounted {
            // The push panicked before it was booked: book it as a failed run, so its
            // paths are owed and retried on the remote's schedule.
            let outcome = Outcome {
                status: -1,
                stderr: "the push ended abnormally".to_owned(),
                elapsed: Duration::ZERO,
            };
            self.rest = m.account(self.t, &self.job, &outcome);
        }
        m.queue
            .finish_again(self.t, &self.job, self.rest, &self.again);
    }
}

/// A job's paths in runs that fit one call's arguments; directories with everything
/// below them (trees) in runs of their own, after the others (a tree's call is
/// recursive, see `Target::argv`); the big files of `big` each alone, after those.
fn split(paths: &[Entry], big: &[(PathBuf, Transfer, Stamp)]) -> Vec<(Job, Vec<PathBuf>)> {
    let is_big = |e: &Entry| !e.listing && big.iter().any(|(p, _, _)| *p == e.path);
    let (bigs, rest): (Vec<Entry>, Vec<Entry>) = paths.iter().cloned().partition(is_big);
    let (trees, others): (Vec<Entry>, Vec<Entry>) = rest.into_iter().partition(|e| e.tree);
    [others, trees]
        .into_iter()
        .flat_map(runs_for_args)
        .map(|run| (Job::Paths(run), Vec::new()))
        .chain(bigs.into_iter().map(|e| (Job::Paths(vec![e]), Vec::new())))
        .collect()
}

/// `paths` in runs that fit one call's arguments ([`rsync::split_for_args`]), moved
/// into them (not copied a second time: 20,000 paths in a burst).
fn runs_for_args(paths: Vec<Entry>) -> Vec<Vec<Entry>> {
    let lens: Vec<usize> = rsync::split_for_args(&paths, rsync::ARGS_BUDGET)
        .iter()
        .map(|run| run.len())
        .collect();
    let mut rest = paths.into_iter();
    lens.into_iter()
        .map(|n| rest.by_ref().take(n).collect())
        .collect()
}

/// The outcome of a job booked as done without a call of its own (a rename sent back
/// to the queue as the changes it stands for).
fn nothing_ran() -> Outcome {
    Outcome {
        status: 0,
        stderr: String::new(),
        elapsed: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_go_in_calls_of_their_own() {
        let calls = split(
            &[
                Entry::tree("t"),
                Entry::plain("f"),
                Entry::listing("d"),
                Entry::tree("u"),
            ],
            &[],
        );
        let jobs: Vec<Job> = calls.into_iter().map(|(j, _)| j).collect();
        assert_eq!(
            jobs,
            [
                Job::Paths(vec![Entry::plain("f"), Entry::listing("d")]),
                Job::Paths(vec![Entry::tree("t"), Entry::tree("u")]),
            ]
        );
    }
}
