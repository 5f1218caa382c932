//! Queueing changes: a batch for several remotes, and a rename taken that goes back as
//! the changes it stands for, each change through one step (the brake's counts with it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{say_released, Item, Queue};
use crate::sync::job::{Job, RemoteId};
use crate::sync::ledger::{rebased, Ledger, Mark};

impl Queue {
    /// What each deleted directory of `changes` held, as the index knows it for the
    /// remote `t` (by the change's place; empty when none is a deleted directory or
    /// there is no index), read before the queue's lock is taken. A directory that a
    /// rename within the brake's window moved there (this batch's, or one the ledger
    /// counted) is looked up at its old name too, and the larger count is taken: until
    /// the rename lands the index (and the remote) hold its tree there (`mv data old
    /// && mkdir data && rm -rf old`, read on fanotify as the delete of `old` alone,
    /// counted nothing at `old` while `data`'s listing went out with `--delete`).
    fn held_below(&self, t: Option<RemoteId>, changes: &[Item]) -> Vec<usize> {
        let (Some(ix), Some(t)) = (self.index.get(), t) else {
            return Vec::new();
        };
        let renames = |c: &Item| matches!(c, Item::Rename { dir: true, .. });
        if !changes
            .iter()
            .any(|c| matches!(c, Item::Gone(_, true)) || renames(c))
        {
            return Vec::new();
        }
        let now = Instant::now();
        let (braking, origins): (bool, Vec<Option<PathBuf>>) = {
            let st = self.lock();
            let pending = &st.remotes[t.0].pending;
            let braking = pending.braking();
            let origins = if braking {
                (changes.iter().enumerate())
                    .map(|(i, c)| match c {
                        Item::Gone(p, true) => renamed_in_batch(&changes[..i], p)
                            .or_else(|| pending.renamed_from(p, now)),
                        _ => None,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (braking, origins)
        };
        (changes.iter().enumerate())
            .map(|(i, c)| match c {
                Item::Gone(p, true) => {
                    let there = origins.get(i).and_then(Option::as_ref);
                    ix(t, p).max(there.map_or(0, |o| ix(t, o)))
                }
                // A directory rename that goes as its plain form (queued while a full
                // sync runs): its old name's delete is weighed with what the index
                // holds there (see `queue_one`).
                Item::Rename {
                    from, dir: true, ..
                } if braking => ix(t, from),
                _ => 0,
            })
            .collect()
    }

    /// The tree's size as the index has it now, when `changes` delete anything (0: not
    /// known), read before the queue's lock is taken: the brake's share is of it, and
    /// the count it has otherwise is the last checkpoint's, up to seconds old (a
    /// release copied in just before the old one is deleted, `cp -a v1 v2 && ln -sfn
    /// v2 current && rm -rf v1`, was held: v1 was more than half of the tree before v2).
    /// A directory rename may delete too (its plain form, the delete of its old name:
    /// `cp -a build new && mv cur old && mv new cur && rm -rf old` was held when `mv
    /// new cur` came while part of `new` still waited, against the size before the
    /// copy).
    fn tree_now(&self, t: Option<RemoteId>, changes: &[Item]) -> usize {
        let deletes = |c: &Item| matches!(c, Item::Gone(..) | Item::Rename { dir: true, .. });
        match (self.index.get(), t) {
            (Some(ix), Some(t)) if changes.iter().any(deletes) => ix(t, Path::new("")),
            _ => 0,
        }
    }

    /// Queues one change for the remote `t` (its ledger `pending`), its mark at least
    /// as old as `carry`; `held_below`: what it held, when it is a deleted directory.
    /// `requeued`: a change queued before, sent back by a worker (see
    /// [`Queue::unrenamed`]): a path there is what is there now, not a write the brake
    /// has not counted (counted again, it could end a hold the delete beside it began).
    #[allow(clippy::too_many_arguments)]
    fn queue_one(
        &self,
        t: usize,
        pending: &mut Ledger,
        item: &Item,
        held_below: usize,
        now: Instant,
        carry: Option<Mark>,
        requeued: bool,
    ) {
        match item {
            Item::Path(e, gone_dir) => {
                pending.push_at_carrying(e.clone(), *gone_dir, now, carry);
                if requeued {
                    return;
                }
                if let Some(released) = pending.count_write(&e.path, now) {
                    say_released(t, released, self.brake_words.get());
                }
            }
            Item::Gone(p, dir) => {
                pending.push_gone_carrying(p.clone(), *dir, now, carry);
                if held_below > 0 {
                    pending.count_gone_below(p, held_below, now);
                }
            }
            Item::Blind(p) => pending.push_blind_at(p.clone(), now),
            Item::Rename {
                from,
                to,
                dir,
                below,
            } => {
                if *dir {
                    let n = below.len().max(1);
                    if let Some(released) = pending.count_moved(from, to, n, now) {
                        say_released(t, released, self.brake_words.get());
                    }
                }
                let plain =
                    pending.push_rename_at(from.clone(), to.clone(), *dir, below.clone(), now);
                if plain && *dir && held_below > 0 {
                    // Queued while a full sync runs, it goes as its plain form: its old
                    // name's delete (of the tree the remotes hold there) is weighed as
                    // the delete it is, as when a rename cannot travel as one (`mv data
                    // trash && rm -rf trash` just after a `-r` start emptied a remote:
                    // the new name's writes and deletes balanced, the old tree's delete
                    // counted as one).
                    pending.count_gone_below(from, held_below, now);
                }
            }
            Item::Linked(names) => pending.push_linked(names, now),
        }
    }

    /// Queues a batch of changes (in order) for each of the given remotes, with one lock.
    pub fn push_batch(&self, targets: &[RemoteId], changes: &[Item]) {
        if changes.is_empty() {
            return;
        }
        // One route: the targets share a root, and so the index's counts.
        let held_below = self.held_below(targets.first().copied(), changes);
        let tree = self.tree_now(targets.first().copied(), changes);
        let now = Instant::now();
        let mut st = self.lock();
        for &t in targets {
            let pending = &mut st.remotes[t.0].pending;
            if tree > 0 && pending.braking() {
                pending.set_tree(Some(tree));
            }
            for (i, item) in changes.iter().enumerate() {
                let n = held_below.get(i).copied().unwrap_or(0);
                self.queue_one(t.0, pending, item, n, now, None, false);
            }
            self.say_held(t.0, pending, now);
            // A collapse that merged nothing (only deleted directories wait there, kept
            // as their own listings) is not news.
            for (dir, n) in pending.take_collapsed().into_iter().filter(|(_, n)| *n > 0) {
                log::warn!(
                    "{n} changes waiting in {} for remote #{} collapsed into one push of the \
                     directory's entries (at {} waiting in one directory)",
                    dir.display(),
                    t.0 + 1,
                    pending.collapse_at()
                );
            }
        }
        self.wake_for(st, targets);
    }

    /// A directory rename taken for the remote `t` (`job`) that cannot land as one while
    /// the brake on mass deletes is on (its new name gone, or its old one made again):
    /// queued again as the changes it stands for (`changes`: the delete of the old
    /// name, counted and held as any delete, and what is there now), each carrying the
    /// rename's mark, before the worker books the job. Pushed plain by the worker, the
    /// delete of the old name bypassed the brake (`mv data trash && rm -rf trash`
    /// deleted `data` on every remote while the brake held `trash`'s deletes).
    pub fn unrenamed(&self, t: RemoteId, job: &Job, changes: &[Item]) {
        let mut held_below = self.held_below(Some(t), changes);
        counted_once(job, changes, &mut held_below);
        self.requeue_carrying(t, job, changes, &held_below);
    }

    /// [`Queue::unrenamed`] of the delete of a rename's old name alone (`changes`),
    /// counted as `lost` entries below it (what went from the new name while the
    /// rename was pushed), not as the index's count (most of the tree landed).
    pub fn unrenamed_counted(&self, t: RemoteId, job: &Job, changes: &[Item], lost: usize) {
        let held_below: Vec<usize> = changes.iter().map(|_| lost).collect();
        self.requeue_carrying(t, job, changes, &held_below);
    }

    /// Queues `changes` for `t` carrying the mark `job` (taken) is in flight with.
    fn requeue_carrying(&self, t: RemoteId, job: &Job, changes: &[Item], held_below: &[usize]) {
        let tree = self.tree_now(Some(t), changes);
        let now = Instant::now();
        let mut st = self.lock();
        let pending = &mut st.remotes[t.0].pending;
        if tree > 0 && pending.braking() {
            pending.set_tree(Some(tree));
        }
        let carry = match job {
            Job::Rename { from, .. } => pending.inflight_mark(from),
            _ => None,
        };
        for (i, item) in changes.iter().enumerate() {
            let n = held_below.get(i).copied().unwrap_or(0);
            self.queue_one(t.0, pending, item, n, now, carry, true);
        }
        self.say_held(t.0, pending, now);
        self.wake_for(st, &[t]);
    }
}

/// Where `path` stood before the latest directory rename of `earlier` (a batch's changes
/// before it) that moved it: rebased from the rename's new name onto its old one.
fn renamed_in_batch(earlier: &[Item], path: &Path) -> Option<PathBuf> {
    earlier.iter().rev().find_map(|c| match c {
        Item::Rename {
            from,
            to,
            dir: true,
            ..
        } => rebased(path, to, from),
        _ => None,
    })
}

/// The tree a directory rename (`job`) moved, sent back as the changes it stands for
/// (see [`Queue::unrenamed`]), is weighed once, where it is deleted: the delete of its
/// old name is the directory alone when that tree is at its new name now (pushed
/// there, its listing among the changes: it moved, nothing of it is gone) or when the
/// delete of its new name is weighed with it (the index, or a rename within the
/// window, knows it there). Weighed with the whole tree at the old name too, a release
/// swapped in by renames (`cp -a build new && mv cur old && mv new cur && rm -rf old`)
/// was held when a rename could not land: `new`'s tree counted as deleted though it
/// was at `cur`, or `cur`'s though `old`'s deletes had counted it.
fn counted_once(job: &Job, changes: &[Item], held_below: &mut [usize]) {
    let Job::Rename {
        from,
        to,
        dir: true,
        ..
    } = job
    else {
        return;
    };
    let Some(old) = (changes.iter()).position(|c| matches!(c, Item::Gone(p, true) if p == from))
    else {
        return;
    };
    let moved = changes.iter().enumerate().any(|(i, c)| match c {
        Item::Path(e, _) => e.listing && e.path == *to,
        Item::Gone(p, true) => p == to && held_below.get(i).is_some_and(|&n| n > 0),
        _ => false,
    });
    if moved {
        if let Some(n) = held_below.get_mut(old) {
            *n = 0;
        }
    }
}
