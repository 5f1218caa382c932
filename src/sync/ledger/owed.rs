//! What a remote owes after a failure, when that is retried, and how level the remote is:
//! its marks, checkpoints for barriers, and the one rule of what a successful push pays.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::{entry_key, older, Key, Ledger, Mark};
use crate::sync::faillog::Owed;
use crate::sync::job::{Entry, Job};
use crate::sync::recovery::{Plan, Recovery};

/// What a successful push changed, for the worker's fail log and log lines (see
/// [`Ledger::pushed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// What is owed changed: the fail log is written again.
    pub changed: bool,
    /// The remote had failed and not been level since, before this push.
    pub was_failing: bool,
    /// The remote did not answer before and does now: what it owes was queued again.
    pub recovered: bool,
    /// What it owes was queued again because no push waiting or running covers it
    /// (see [`Ledger::pushed`]): how many jobs.
    pub orphaned: usize,
    /// It still owes something.
    pub still_owes: bool,
}

impl Ledger {
    /// The checkpoint of this remote now: every change queued so far has a sequence
    /// number at most this.
    pub fn checkpoint(&self) -> u64 {
        self.seq
    }

    /// Every mark not yet on the remote: waiting, in flight, owed.
    fn marks(&self) -> impl Iterator<Item = Mark> + '_ {
        self.by_path
            .values()
            .map(|(_, m)| *m)
            .chain(self.renames.values().map(|r| r.mark))
            .chain(self.inflight.values().copied())
            .chain(self.owed_marks.values().copied())
            .chain(self.full_mark)
            .chain(self.full_running)
            .chain(self.owed_full)
            .chain(self.beside_full.values().map(|(_, m)| *m))
            .chain(self.held_marks())
    }

    /// The oldest change not yet on the remote (waiting, in flight or owed), if any.
    pub fn oldest(&self) -> Option<Mark> {
        self.marks().reduce(Mark::min)
    }

    /// Has every change up to `checkpoint` reached the remote?
    pub fn passed(&self, checkpoint: u64) -> bool {
        self.marks().all(|m| m.seq > checkpoint)
    }

    /// Entries waiting or in flight (paths, a full sync counting as one).
    pub fn outstanding(&self) -> usize {
        self.len() + self.inflight.len() + usize::from(self.full_inflight)
    }

    /// A push of `job` failed for good (rsync `status`): what it carried is owed until
    /// a push of it succeeds. Entries in flight keep their marks; others (a fail log
    /// read at start) get `fallback`.
    pub fn owe(&mut self, job: &Job, fallback: Mark, status: i32) {
        match job {
            Job::Full => {
                let mut m = older(self.owed_full, self.full_running.unwrap_or(fallback));
                for (_, o) in self.owed_marks.drain() {
                    m = m.min(o);
                }
                self.owed_full = Some(m);
            }
            Job::Paths(_) | Job::Rename { .. } => {
                for p in job.plain_paths() {
                    let k = entry_key(&p);
                    let m = self.inflight.get(k).copied().unwrap_or(fallback);
                    match &mut self.owed_full {
                        // A full sync is owed: it covers the path.
                        Some(f) => *f = f.min(m),
                        None => {
                            let e = self.owed_marks.entry(k.to_vec()).or_insert(m);
                            *e = e.min(m);
                        }
                    }
                }
            }
        }
        self.owed.record(job, status);
    }

    /// A push of `job` succeeded: what it carried is no longer owed (see
    /// [`Owed::clear`]). Returns whether what is owed changed.
    pub fn paid(&mut self, job: &Job) -> bool {
        if self.owed.is_empty() {
            return false;
        }
        let before = (self.owed.paths.len(), self.owed.trees.len(), self.owed.full);
        let paid = self.owed.clear(job);
        for e in &paid {
            self.owed_marks.remove(entry_key(e));
        }
        if let Job::Full = job {
            self.owed_full = None;
            self.owed_marks.clear();
        }
        // Waiting at the close: still owed, whatever was in flight then.
        if let (Job::Full, Some(m)) = (job, self.kept_full) {
            self.owe(&Job::Full, m, 0);
        }
        let kept: Vec<(Entry, Mark)> = if let Job::Full = job {
            self.kept_at_close.values().cloned().collect()
        } else {
            paid.into_iter()
                .filter_map(|e| {
                    let (_, m) = self.kept_at_close.get(entry_key(&e))?;
                    Some((e, *m))
                })
                .collect()
        };
        for (e, m) in kept {
            self.owe(&Job::Paths(vec![e]), m, 0);
        }
        before != (self.owed.paths.len(), self.owed.trees.len(), self.owed.full)
    }

    /// A push of `job` succeeded but left out the paths of `left_out` (each below what
    /// is a file or link now, with that file or link, or the top of it that is gone):
    /// [`Ledger::paid`] of the rest. A path left out is not paid: what the remote holds
    /// there is made equal by the push of the file or link, which waits once more with
    /// the oldest of the path's marks (owed and in flight), and what the path owes (the
    /// fail log's line) moves to it, in this one step. Returns whether what is owed
    /// changed.
    pub fn paid_leaving(
        &mut self,
        job: &Job,
        left_out: &[(PathBuf, PathBuf)],
        now: Instant,
    ) -> bool {
        let is_left_out = |e: &Entry| left_out.iter().any(|(p, _)| *p == e.path);
        let changed = match job {
            Job::Paths(entries) if entries.iter().any(is_left_out) => {
                let rest: Vec<Entry> = entries
                    .iter()
                    .filter(|e| !is_left_out(e))
                    .cloned()
                    .collect();
                !rest.is_empty() && self.paid(&Job::Paths(rest))
            }
            _ => self.paid(job),
        };
        let mut moved = false;
        for (p, a) in left_out {
            let k = p.as_os_str().as_bytes();
            let mut owed_mark = self.owed_marks.remove(k);
            let mut owed_entry = self.owed.paths.remove(p).is_some();
            let mut kept = self.kept_at_close.remove(k);
            // Left out as a listing (a directory collapsed from what it owed below it,
            // or owed as one): what its push would have paid (the plain paths owed
            // directly in it, see `Owed::clear`) moves to the file too. Left owed, they
            // would be queued again once the file's push is level, collapse into the
            // same listing, and be left out again, for ever (seed 3078568).
            let covered: Vec<Entry> = match job {
                Job::Paths(entries) => entries
                    .iter()
                    .filter(|e| e.path == *p && (e.listing || e.tree))
                    .flat_map(|e| self.owed.clear(&Job::Paths(vec![e.clone()])))
                    .collect(),
                _ => Vec::new(),
            };
            for e in &covered {
                owed_entry = true;
                let ck = e.path.as_os_str().as_bytes();
                owed_mark = [owed_mark, self.owed_marks.remove(ck)]
                    .into_iter()
                    .flatten()
                    .reduce(Mark::min);
                if let Some((_, km)) = self.kept_at_close.remove(ck) {
                    let m = kept.as_ref().map_or(km, |(_, m)| m.min(km));
                    kept = Some((Entry::plain(p.clone()), m));
                }
            }
            let m = [
                self.inflight.get(k).copied(),
                owed_mark,
                kept.as_ref().map(|(_, m)| *m),
            ]
            .into_iter()
            .flatten()
            .reduce(Mark::min);
            let Some(m) = m else {
                continue;
            };
            let ak = a.as_os_str().as_bytes().to_vec();
            if owed_entry || owed_mark.is_some() {
                // Owed as the file or link, plain, with the oldest mark: its push pays it.
                match &mut self.owed_full {
                    Some(f) => *f = f.min(m),
                    None => {
                        let e = self.owed_marks.entry(ak.clone()).or_insert(m);
                        *e = e.min(m);
                    }
                }
                let status = self.owed.status;
                self.owed
                    .record(&Job::Paths(vec![Entry::plain(a.clone())]), status);
                moved = true;
            }
            if let Some((_, km)) = kept {
                let e = self
                    .kept_at_close
                    .entry(ak.clone())
                    .or_insert((Entry::plain(a.clone()), km));
                e.1 = e.1.min(km);
            }
            if self.full_pending {
                // The full sync waiting covers it, from the older mark.
                self.full_mark = Some(older(self.full_mark, m));
                continue;
            }
            self.push_key(ak, false, now, Some(m));
        }
        changed || moved
    }

    /// A push of `job` failed for good (rsync `status`) at `now` (`wall` the same
    /// moment on the clock): what it carried is owed ([`Ledger::owe`], entries not in
    /// flight counting from `now`) and the remote goes on the backoff schedule
    /// ([`Recovery::failed`]; `random` places the retry in its jitter window). Returns
    /// when what is owed is queued again and how long the remote rests.
    pub fn failed(
        &mut self,
        job: &Job,
        status: i32,
        now: Instant,
        wall: SystemTime,
        random: u64,
    ) -> Plan {
        self.owe(job, Mark { seq: 0, since: now }, status);
        self.recovery.failed(now, wall, status, random)
    }

    /// A push of `job` succeeded at `now` (`left_out`: see [`Ledger::paid_leaving`]):
    /// what it carried is paid, and the retry schedule follows. Level (nothing owed):
    /// the schedule ends. Back from not answering: what is owed is queued now and the
    /// backoff starts again. Still owing, with nothing waiting, no retry set and this
    /// the last call in flight: no push of what is owed is coming (a listing or a
    /// deleted directory took its place while it waited, and paid only itself), so it
    /// would wait for the timed replay, and every barrier with it; it is queued now.
    pub fn pushed(&mut self, job: &Job, left_out: &[(PathBuf, PathBuf)], now: Instant) -> Pushed {
        // Landed with `--ignore-times`: a full sync covers them again, and the fail
        // log, which keeps them (`Owed::blind`), is written without them. A path left
        // out (below a file or link now, or gone) has nothing there a quick check could
        // skip: kept, it would stay in the fail log for good, left out at every start.
        let mut unblinded = false;
        if !self.blind.is_empty() {
            for e in job.plain_paths() {
                unblinded |= self.blind.remove(entry_key(&e)).is_some();
                if e.listing {
                    // A listing sent its directory's entries (all below it for a
                    // tree), with `--ignore-times` too: the files waiting in it landed.
                    let before = self.blind.len();
                    let dir = entry_key(&e);
                    self.blind.retain(|k, _| !listed_in(k, dir, e.tree));
                    unblinded |= self.blind.len() != before;
                }
            }
        }
        let changed = self.paid_leaving(job, left_out, now) || unblinded;
        if !matches!(job, Job::Full) {
            // Landed, though its job may have calls still to run: a close before they
            // end owes it no more (nothing would be left to pay it).
            for e in job.plain_paths() {
                let k = entry_key(&e);
                if self.inflight.contains_key(k) && !left_out.iter().any(|(p, _)| *p == e.path) {
                    self.landed.insert(k.to_vec());
                }
            }
        }
        if let (Job::Full, false) = (job, self.blind.is_empty()) {
            // The full sync's quick check skipped them: they go once more, with the
            // marks they had, so no barrier passes on them before that push lands.
            let blind: Vec<(Key, Mark)> = (self.blind.iter())
                .filter(|(k, _)| !self.by_path.contains_key(*k) && !self.inflight.contains_key(*k))
                .map(|(k, m)| (k.clone(), *m))
                .collect();
            for (k, m) in blind {
                self.push_key(k, false, now, Some(m));
            }
        }
        let still_owes = self.owes();
        let was_failing = self.recovery.is_failing();
        let recovered = self.recovery.succeeded(still_owes);
        let orphaned =
            !recovered && still_owes && self.is_empty() && self.running() <= 1 && !self.retrying();
        let mut requeued = 0;
        if recovered || orphaned {
            requeued = self.requeue_owed(now);
        }
        Pushed {
            changed,
            was_failing,
            recovered,
            orphaned: if orphaned { requeued } else { 0 },
            still_owes,
        }
    }

    /// What is owed is queued again at `at` (replacing a retry set before); nothing
    /// when nothing is owed. `None`: no retry. (The workers set it with
    /// [`Ledger::failed`].)
    #[cfg(test)]
    pub fn retry_at(&mut self, at: Option<Instant>) {
        match at.filter(|_| self.owes()) {
            Some(at) => self
                .recovery
                .set_retry(at, Instant::now(), SystemTime::now()),
            None => self.recovery.clear_retry(),
        }
    }

    /// A retry is set.
    pub fn retrying(&self) -> bool {
        self.recovery.retry().is_some()
    }

    /// The retry schedule: failing since, the next retry (for status).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Moves what is owed into the pending set when its retry is due; else returns
    /// when it is due.
    pub fn retry_due(&mut self, now: Instant) -> Option<Instant> {
        match self.recovery.retry() {
            Some(at) if at > now => Some(at),
            Some(_) => {
                self.recovery.clear_retry();
                self.requeue_owed(now);
                None
            }
            None => None,
        }
    }

    /// What is owed joins the pending set (it stays owed until a push of it succeeds).
    /// Returns how many jobs it was (a full sync, or the paths as one).
    fn requeue_owed(&mut self, now: Instant) -> usize {
        let jobs = self.owed.jobs();
        for job in &jobs {
            match job {
                Job::Full => self.push_full_at(now),
                job => {
                    for p in job.plain_paths() {
                        self.push_at(p, false, now);
                    }
                }
            }
        }
        jobs.len()
    }

    /// Is anything owed?
    pub fn owes(&self) -> bool {
        !self.owed.is_empty()
    }

    /// What is owed (the fail log's entries for this remote).
    pub fn owed(&self) -> &Owed {
        &self.owed
    }
}

/// Is `k` an entry a listing of `dir` sends: a direct child, or (`tree`) anything below?
/// The empty `dir` is the top.
pub(super) fn listed_in(k: &[u8], dir: &[u8], tree: bool) -> bool {
    let rest = if dir.is_empty() {
        k
    } else {
        match k.strip_prefix(dir).and_then(|r| r.strip_prefix(b"/")) {
            Some(r) => r,
            None => return false,
        }
    };
    !rest.is_empty() && (tree || !rest.contains(&b'/'))
}
