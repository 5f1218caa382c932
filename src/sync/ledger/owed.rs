//! What a remote owes after a failure, when that is retried, and how level the remote is:
//! its marks, checkpoints for barriers, and the one rule of what a successful push pays.

use std::time::Instant;

use super::{entry_key, older, to_path, Ledger, Mark};
use crate::sync::faillog::Owed;
use crate::sync::job::{Entry, Job};

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
        let before = (self.owed.paths.len(), self.owed.full);
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
            self.kept_at_close
                .iter()
                .map(|(k, (listing, m))| {
                    let e = Entry {
                        path: to_path(k.clone()),
                        listing: *listing,
                    };
                    (e, *m)
                })
                .collect()
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
        before != (self.owed.paths.len(), self.owed.full)
    }

    /// What is owed is queued again at `at` (replacing a retry set before); nothing
    /// when nothing is owed. `None`: no retry.
    pub fn retry_at(&mut self, at: Option<Instant>) {
        self.retry = at.filter(|_| self.owes());
    }

    /// A retry is set.
    pub fn retrying(&self) -> bool {
        self.retry.is_some()
    }

    /// Moves what is owed into the pending set when its retry is due; else returns
    /// when it is due.
    pub fn retry_due(&mut self, now: Instant) -> Option<Instant> {
        match self.retry {
            Some(at) if at > now => Some(at),
            Some(_) => {
                self.retry = None;
                for job in self.owed.jobs() {
                    match job {
                        Job::Full => self.push_full_at(now),
                        job => {
                            for p in job.plain_paths() {
                                self.push_at(p, false, now);
                            }
                        }
                    }
                }
                None
            }
            None => None,
        }
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
