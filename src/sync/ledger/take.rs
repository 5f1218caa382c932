//! Taken: the free entries handed out as one call, never beside what is in flight at,
//! above or below them.

use std::cell::Cell;
use std::collections::HashSet;
use std::time::Instant;

use super::{ancestors, entry_key, key, to_path, Key, Ledger, RENAME_FLOOD, TRICKLE};
use crate::sync::job::{Entry, Job};
use crate::sync::links::pick;

/// The watch root's key: an ancestor of every other path.
const ROOT: &[u8] = b"";

impl Ledger {
    /// Only a few paths are in flight and waiting: single edits, not a burst.
    /// A full sync running does not count: a single edit goes beside it at once.
    pub fn is_trickle(&self) -> bool {
        self.running_paths + self.len() <= TRICKLE
    }

    pub(super) fn blocked(&self, p: &[u8]) -> bool {
        self.inflight.contains_key(p)
            || self.inflight_below.contains_key(p)
            || ancestors(p).any(|a| self.inflight.contains_key(a))
            || (!p.is_empty() && self.listing_inflight.contains(ROOT))
            || (!self.deleting.is_empty()
                && (self.deleting.contains_key(p)
                    || self.deleting.contains_key(ROOT)
                    || ancestors(p).any(|a| self.deleting.contains_key(a))))
    }

    /// A call in flight deletes on the remote what `tops` name (the worker added them
    /// to it): directories gone above the paths it carries, all below them with them
    /// (see `workers::listings::gone_tops`), or listings of the parents of paths that
    /// are directories excluded as such now (see `workers::listings::sent_paths`),
    /// which delete there what those parents do not hold when rsync reads them. Until
    /// [`Ledger::deleted`] nothing at or below them is handed out (the root's: nothing
    /// at all): a push of a file made in a directory made again there (`mv d d.old;
    /// mkdir d; ...`), or made in such a parent after rsync read it, could land before
    /// that call's receiver deletes it there, paid and then deleted for good.
    pub fn deleting(&mut self, tops: &[Entry]) {
        for e in tops {
            *self.deleting.entry(entry_key(e).to_vec()).or_default() += 1;
        }
    }

    /// The call that [`Ledger::deleting`] booked `tops` for has ended.
    pub fn deleted(&mut self, tops: &[Entry]) {
        for e in tops {
            let k = entry_key(e);
            if let Some(n) = self.deleting.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    self.deleting.remove(k);
                }
            }
        }
    }

    /// Hands out the next work, if any is free to run: a full sync once nothing is in
    /// flight, else up to `max` waiting paths (oldest first) that conflict with nothing
    /// in flight. Nothing while the remote is paused.
    #[cfg(test)]
    pub fn take(&mut self, max: usize) -> Option<Job> {
        self.take_at(max, Instant::now())
    }

    /// [`Ledger::take`] at `now`: a delete waits out the brake's settle time first.
    pub fn take_at(&mut self, max: usize, now: Instant) -> Option<Job> {
        self.settle_due = None;
        if self.paused {
            return None;
        }
        let job = self.take_inner(max, now)?;
        if self.full_inflight && job != Job::Full {
            // It may be undone by the full sync running: it goes again once that ends.
            for e in job.plain_paths() {
                let k = entry_key(&e).to_vec();
                let Some(m) = self.inflight.get(&k).copied() else {
                    continue;
                };
                let listing = e.listing || self.listing_inflight.contains(&k);
                let b = self.beside_full.entry(k).or_insert((listing, m));
                b.0 |= listing;
                b.1 = b.1.min(m);
            }
        }
        Some(job)
    }

    fn take_inner(&mut self, max: usize, now: Instant) -> Option<Job> {
        if self.full_pending {
            if self.running > 0 {
                return None;
            }
            self.full_pending = false;
            self.full_inflight = true;
            self.full_running = self.full_mark.take();
            self.full_taken();
            self.running += 1;
            return Some(Job::Full);
        }
        let flood_at = match self.rename_flood {
            0 => RENAME_FLOOD,
            n => n,
        };
        if self.renames.len() > flood_at {
            self.flood();
        }
        // The oldest rename free to run goes alone, unless a path waiting since before
        // it is free too, or the latest call was a rename and any path is free (those
        // go first, batched). Waiting paths never touch a waiting rename (see
        // `push_at` and `push_rename_at`), so the order per path holds either way.
        let rename = self
            .renames
            .iter()
            .find(|(_, r)| !self.blocked(&r.from) && !self.blocked(&r.to))
            .map(|(s, _)| *s);
        if let Some(seq) = rename {
            let paths_first = if self.rename_last {
                self.by_seq.values().any(|p| !self.blocked(p))
            } else {
                self.by_seq.range(..seq).any(|(_, p)| !self.blocked(p))
            };
            if !paths_first {
                if let Some(r) = self.renames.remove(&seq) {
                    self.rename_keys.remove(&r.from);
                    self.rename_keys.remove(&r.to);
                    let mark = r.mark;
                    let job = r.job();
                    // In flight as its plain paths: `from`, `to` and what is below it.
                    let plain: Vec<Key> =
                        job.plain_paths().into_iter().map(|e| key(e.path)).collect();
                    for p in &plain {
                        for a in ancestors(p) {
                            *self.inflight_below.entry(a.to_vec()).or_default() += 1;
                        }
                    }
                    for p in plain {
                        self.inflight.insert(p, mark);
                    }
                    self.running += 1;
                    self.running_paths += job.count();
                    self.rename_last = true;
                    return Some(job);
                }
            }
        }
        // While deletes are held, a listing (pushed with `--delete`) waits too; a delete
        // waits out the brake's settle time (the soonest end of one is kept).
        let holding = self.holding();
        let settle_due: Cell<Option<Instant>> = Cell::new(None);
        let picked: Vec<Key> = pick(
            self.by_seq.values(),
            max,
            |p| {
                let held_back = holding && self.replaced.contains(p);
                if held_back || self.blocked(p) {
                    return false;
                }
                // A name of a multi-linked file waiting with its set goes with it: the
                // set is one file on the remote only if its names go in one call.
                let linked = self.together.members(p).is_some();
                let deleted = (self.gone.get(p).map(|&(_, at)| at))
                    .or_else(|| self.gone_below.get(p).copied())
                    .filter(|_| !linked);
                let until = deleted.and_then(|at| self.settling(at, now));
                if let Some(until) = until {
                    settle_due.set(Some(settle_due.get().map_or(until, |s| s.min(until))));
                    return false;
                }
                true
            },
            &self.together,
        );
        if picked.is_empty() {
            self.settle_due = settle_due.get();
            return None;
        }
        if self.full_inflight && !self.together.is_empty() {
            // The sets handed out beside the full sync wait again as sets when it ends.
            let mut seen: HashSet<&Key> = HashSet::new();
            for p in &picked {
                if let Some(set) = self.together.members(p) {
                    if seen.insert(&set[0]) {
                        self.beside_together.push(set.to_vec());
                    }
                }
            }
        }
        self.rename_last = false;
        let mut marks = Vec::with_capacity(picked.len());
        for p in &picked {
            if let Some((_, m)) = self.remove_entry(p) {
                marks.push(m);
            }
            if let Some((dir, _)) = self.gone.remove(p) {
                if self.full_inflight {
                    self.beside_gone.insert(p.clone(), dir);
                }
            }
            self.gone_below.remove(p);
            for a in ancestors(p) {
                *self.inflight_below.entry(a.to_vec()).or_default() += 1;
            }
        }
        // Insert after counting ancestors: paths of one batch may nest.
        for (p, m) in picked.iter().zip(marks) {
            self.inflight.insert(p.clone(), m);
        }
        self.running += 1;
        self.running_paths += picked.len();
        let paths = picked
            .into_iter()
            .map(|p| {
                let listing = self.replaced.remove(&p);
                let tree = self.trees.remove(&p) && listing;
                if listing {
                    self.listing_inflight.insert(p.clone());
                }
                if tree {
                    self.tree_inflight.insert(p.clone());
                }
                Entry {
                    path: to_path(p),
                    listing,
                    tree,
                }
            })
            .collect();
        Some(Job::Paths(paths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shown(w: Option<Job>) -> Vec<PathBuf> {
        match w {
            Some(Job::Paths(v)) => v.into_iter().map(|e| e.path).collect(),
            other => panic!("expected paths, got {other:?}"),
        }
    }

    #[test]
    fn what_is_at_or_below_a_directory_a_call_deletes_waits_until_that_call_ends() {
        let mut q = Ledger::default();
        q.push(PathBuf::from("burst/f1"), false);
        let first = q.take(100).expect("work");
        // The worker found `burst` gone (moved away) and deletes it with the call; a
        // new `burst` is made and a file written in it before the call lands.
        let tops = [Entry::plain(PathBuf::from("burst"))];
        q.deleting(&tops);
        q.push(PathBuf::from("burst/new"), false);
        q.push(PathBuf::from("burst"), false);
        q.push(PathBuf::from("other"), false);
        assert_eq!(shown(q.take(100)), [PathBuf::from("other")]);
        assert!(
            q.take(100).is_none(),
            "burst and burst/new wait for the delete"
        );
        q.deleted(&tops);
        q.finish(&first);
        assert_eq!(
            shown(q.take(100)),
            [PathBuf::from("burst/new"), PathBuf::from("burst")]
        );
    }

    #[test]
    fn a_directory_two_calls_delete_waits_for_both() {
        let mut q = Ledger::default();
        let tops = [Entry::plain(PathBuf::from("d"))];
        q.deleting(&tops);
        q.deleting(&tops);
        q.push(PathBuf::from("d/x"), false);
        q.deleted(&tops);
        assert!(q.take(100).is_none(), "one call still deletes d");
        q.deleted(&tops);
        assert_eq!(shown(q.take(100)), [PathBuf::from("d/x")]);
        // Released more often than booked: nothing goes wrong.
        q.deleted(&tops);
        q.push(PathBuf::from("d/y"), false);
        assert_eq!(shown(q.take(100)), [PathBuf::from("d/y")]);
    }

    #[test]
    fn while_a_call_sends_the_roots_listing_nothing_else_goes() {
        let mut q = Ledger::default();
        let root = [Entry::listing(PathBuf::new())];
        q.deleting(&root);
        q.push(PathBuf::from("c"), false);
        q.push(PathBuf::from("d/x"), false);
        assert!(
            q.take(100).is_none(),
            "the root's listing deletes what it lacks"
        );
        q.deleted(&root);
        assert_eq!(
            shown(q.take(100)),
            [PathBuf::from("c"), PathBuf::from("d/x")]
        );
    }
}
