//! Finished: a call's entries out of flight; drained and closed at a stop (`Left`).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use super::{ancestors, entry_key, older, to_path, Key, Ledger, Mark};
use crate::sync::job::{Entry, Job};

impl Ledger {
    /// Marks work handed out by `take` as finished (whatever its outcome).
    #[cfg(test)]
    pub fn finish(&mut self, work: &Job) {
        self.finish_at(work, Instant::now());
    }

    /// [`Ledger::finish`] at `now`: a full sync ending queues again what was handed
    /// out beside it (see the module doc).
    fn finish_at(&mut self, work: &Job, now: Instant) {
        self.running = self.running.saturating_sub(1);
        match work {
            Job::Full => {
                self.full_inflight = false;
                self.full_running = None;
                let beside = std::mem::take(&mut self.beside_full);
                let mut gone = std::mem::take(&mut self.beside_gone);
                let mut beside: Vec<(Key, (bool, Mark))> = beside.into_iter().collect();
                beside.sort_by_key(|(_, (_, m))| m.seq);
                for (k, (listing, m)) in beside {
                    // At or below a delete the brake holds (a tree renamed beside the
                    // full sync, then deleted): pushed again as it is now, it would be
                    // that delete, unweighed. It goes with the held delete's release.
                    if self.held_covers(&k, m) {
                        continue;
                    }
                    if self.full_pending && !self.blind.contains_key(&k) {
                        // The full sync waiting covers it, from the older mark.
                        self.full_mark = Some(older(self.full_mark, m));
                        continue;
                    }
                    if let Some(dir) = gone.remove(&k) {
                        self.requeue_gone(k, dir, now, m);
                        continue;
                    }
                    if listing {
                        self.replaced.insert(k.clone());
                    }
                    self.push_key(k, false, now, Some(m));
                }
                for set in std::mem::take(&mut self.beside_together) {
                    let waiting: Vec<Key> = (set.into_iter())
                        .filter(|k| self.by_path.contains_key(k))
                        .collect();
                    self.together.join(waiting);
                }
            }
            Job::Paths(_) | Job::Rename { .. } => {
                self.running_paths = self.running_paths.saturating_sub(work.count());
                for p in work.plain_entries().iter() {
                    let p = entry_key(p);
                    self.inflight.remove(p);
                    self.landed.remove(p);
                    self.listing_inflight.remove(p);
                    self.tree_inflight.remove(p);
                    for a in ancestors(p) {
                        if let Some(n) = self.inflight_below.get_mut(a) {
                            *n -= 1;
                            if *n == 0 {
                                self.inflight_below.remove(a);
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`Ledger::finish`], then the listings `again` (directories `work` listed) wait
    /// once more with the marks they had in flight, so a barrier is not passed
    /// on them.
    pub fn finish_again(&mut self, work: &Job, again: &[PathBuf], now: Instant) {
        let marks: Vec<(Key, Mark)> = again
            .iter()
            .filter_map(|d| {
                let k = d.as_os_str().as_bytes().to_vec();
                self.inflight.get(&k).map(|m| (k, *m))
            })
            .collect();
        self.finish_at(work, now);
        for (k, m) in marks {
            if self.full_pending && !self.blind.contains_key(&k) {
                // The full sync waiting covers it, from the older mark.
                self.full_mark = Some(older(self.full_mark, m));
                continue;
            }
            self.replaced.insert(k.clone());
            self.push_key(k, false, now, Some(m));
        }
    }

    /// What is being pushed right now: paths, and whether a full sync is running.
    /// A rename in flight counts as its plain form.
    pub fn in_flight(&self) -> (Vec<Entry>, bool) {
        (
            self.inflight
                .keys()
                .map(|k| Entry {
                    path: to_path(k.clone()),
                    listing: self.listing_inflight.contains(k),
                    tree: self.tree_inflight.contains(k),
                })
                .collect(),
            self.full_inflight,
        )
    }

    /// Everything still waiting, oldest first, leaving nothing behind; `true` if a full
    /// sync was waiting too.
    #[cfg(test)]
    pub fn drain(&mut self) -> (Vec<Entry>, bool) {
        let (waiting, full) = self.drain_marked();
        (
            waiting.into_iter().map(|(e, _)| e).collect(),
            full.is_some(),
        )
    }

    /// [`Ledger::drain`], with each entry's mark and the full sync's.
    fn drain_marked(&mut self) -> (Vec<(Entry, Mark)>, Option<Mark>) {
        let full = std::mem::take(&mut self.full_pending);
        let full_mark = self.full_mark.take().filter(|_| full);
        let by_path = std::mem::take(&mut self.by_path);
        self.children.clear();
        self.together.clear();
        self.beside_together.clear();
        self.rename_keys.clear();
        let replaced = std::mem::take(&mut self.replaced);
        let trees = std::mem::take(&mut self.trees);
        self.gone.clear();
        self.gone_below.clear();
        // A listing waiting stays a listing: what it stands for is its listing.
        let mut paths: Vec<(Entry, Mark)> = std::mem::take(&mut self.by_seq)
            .into_values()
            .filter_map(|k| {
                let (_, m) = by_path.get(&k)?;
                let listing = replaced.contains(&k);
                let e = Entry {
                    listing,
                    tree: listing && trees.contains(&k),
                    path: to_path(k),
                };
                Some((e, *m))
            })
            .collect();
        for r in std::mem::take(&mut self.renames).into_values() {
            let m = r.mark;
            paths.extend(r.job().plain_paths().into_iter().map(|e| (e, m)));
        }
        (
            paths,
            full.then(|| {
                full_mark.unwrap_or(Mark {
                    seq: 0,
                    since: Instant::now(),
                })
            }),
        )
    }

    /// The queue closes (a stop or a reload): everything waiting and in flight is owed
    /// (status 0), keeping its marks; what was waiting is not paid by a push that was
    /// in flight and succeeds. What a call of a job still in flight landed already is
    /// not owed: its job's other calls do not carry it, so nothing would pay it, and
    /// the fail log would keep it for the next start. Returns what was waiting and
    /// what is in flight and not landed.
    pub fn close(&mut self) -> Left {
        let (waiting, full_waiting) = self.drain_marked();
        let (mut running, full_running) = self.in_flight();
        running.retain(|e| !self.landed.contains(entry_key(e)));
        let full = full_waiting.is_some() || full_running;
        if let Some(m) = full_waiting.or(self.full_running) {
            self.owe(&Job::Full, m, 0);
        }
        self.kept_full = full_waiting;
        for (e, m) in &waiting {
            self.kept_at_close
                .insert(entry_key(e).to_vec(), (e.clone(), *m));
            self.owe(&Job::Paths(vec![e.clone()]), *m, 0);
        }
        // Handed out beside the full sync running: owed like what waited, and not paid
        // by their own push if it succeeds, nor by that full sync's.
        self.beside_gone.clear();
        for (k, (listing, m)) in std::mem::take(&mut self.beside_full) {
            // Under a held delete: written with it, under `#held` (a plain path owed
            // there would be replayed at the next start as that delete, unweighed).
            if self.held_covers(&k, m) {
                continue;
            }
            let e = Entry {
                path: to_path(k.clone()),
                listing,
                tree: false,
            };
            let kept = self.kept_at_close.entry(k).or_insert((e.clone(), m));
            kept.0.listing |= listing;
            kept.1 = kept.1.min(m);
            self.owe(&Job::Paths(vec![e]), m, 0);
        }
        if !running.is_empty() {
            // In flight: they keep the marks they have there.
            let now = Mark {
                seq: self.seq,
                since: Instant::now(),
            };
            self.owe(&Job::Paths(running.clone()), now, 0);
        }
        Left {
            waiting: waiting.into_iter().map(|(e, _)| e).collect(),
            running,
            full,
            held: self.held(),
        }
    }
}

/// What one remote still had when its ledger closed (see [`Ledger::close`]).
#[derive(Debug, Default)]
pub struct Left {
    /// Waiting, oldest first.
    pub waiting: Vec<Entry>,
    /// In flight and not landed: these calls may yet succeed or fail.
    pub running: Vec<Entry>,
    /// A full sync was waiting or running.
    pub full: bool,
    /// Deletes held by the brake: kept held, in the fail log (see `brake.rs`).
    pub held: super::Holding,
}
