//! Queued: a path, a rename or a full sync merged into what waits; a storm of a
//! directory's children collapsed into its listing, a rename flood turned plain.

use std::ops::Bound;
use std::path::PathBuf;
use std::time::Instant;

use super::{key, older, parent_key, related, to_path, Key, Ledger, Mark, Renamed};
use crate::sync::job::Entry;

impl Ledger {
    /// Queues a path or a listing. `gone_dir`: it was a directory and is gone (deleted
    /// or moved away), so nothing still waiting below it needs pushing.
    pub fn push(&mut self, entry: impl Into<Entry>, gone_dir: bool) {
        self.push_at(entry.into(), gone_dir, Instant::now());
    }

    /// [`Ledger::push`] of a change made at `now`.
    pub fn push_at(&mut self, entry: Entry, gone_dir: bool, now: Instant) {
        self.push_at_carrying(entry, gone_dir, now, None);
    }

    /// [`Ledger::push_at`] of a change whose mark is at least as old as `carry` (a
    /// rename taken, sent back as the changes it stands for: see `Queue::unrenamed`).
    pub fn push_at_carrying(
        &mut self,
        entry: Entry,
        gone_dir: bool,
        now: Instant,
        carry: Option<Mark>,
    ) {
        if self.full_pending && !self.full_inflight && !self.is_blind(&entry.path) {
            return; // the full sync that has not started yet covers it
        }
        // A listing: a directory that arrived whole, or one owed from before (the fail
        // log keeps it). The top (the empty path) is never a listing.
        let listing = entry.listing && !entry.path.as_os_str().is_empty();
        let tree = listing && entry.tree;
        let path = key(entry.path);
        // Queued again as a change of what is there now: not (only) a delete any more.
        self.gone.remove(&path);
        debug_assert!(path.last() != Some(&b'/'), "a path with a trailing /");
        self.dissolve_related(&path);
        // A collapsed directory waiting takes the changes of its direct children.
        if !gone_dir && !listing {
            if let Some(parent) = parent_key(&path) {
                if self.replaced.contains(parent) && self.by_path.contains_key(parent) {
                    return;
                }
            }
        }
        // A change of a directory whose listing is being pushed: that push may have
        // read it before the change (or found it missing, and pushed it as gone while
        // it came back: a release moved out and another moved in under its name), so
        // the next push is its listing too.
        if listing || self.listing_inflight.contains(&path) {
            self.replaced.insert(path.clone());
        }
        if tree {
            self.trees.insert(path.clone());
        }
        self.push_key(path, gone_dir, now, carry);
    }

    /// The mark `path` is in flight with, if it is (a taken job's).
    pub fn inflight_mark(&self, path: &std::path::Path) -> Option<Mark> {
        use std::os::unix::ffi::OsStrExt;
        self.inflight.get(path.as_os_str().as_bytes()).copied()
    }

    /// Queues the known names of one multi-linked file (with `-H`), to be handed out
    /// together, in one call (see the module doc). A name a collapsed directory waiting
    /// took in is there as that directory's listing.
    pub fn push_linked(&mut self, names: &[PathBuf], now: Instant) {
        for p in names {
            self.push_at(Entry::plain(p.clone()), false, now);
        }
        let keys: Vec<Key> = names
            .iter()
            .filter_map(|p| {
                let k = key(p.clone());
                if self.by_path.contains_key(&k) {
                    return Some(k);
                }
                let parent = parent_key(&k)?;
                (self.replaced.contains(parent) && self.by_path.contains_key(parent))
                    .then(|| parent.to_vec())
            })
            .collect();
        self.together.join(keys);
    }

    /// Queues a file changed with its size and mtime as before (see `Ledger::blind`):
    /// a full sync queued before or after does not cover it.
    pub fn push_blind_at(&mut self, path: PathBuf, now: Instant) {
        let k = key(path.clone());
        let m = Mark {
            seq: self.seq + 1,
            since: now,
        };
        let e = self.blind.entry(k.clone()).or_insert(m);
        *e = e.min(m);
        self.push_at(Entry::plain(path), false, now);
        if let Some((_, m)) = self.by_path.get(&k) {
            let m = *m;
            if let Some(e) = self.blind.get_mut(&k) {
                *e = e.min(m);
            }
        }
    }

    /// The files a full sync does not cover whose push has not landed yet (see
    /// `Ledger::blind`): what the fail log keeps of them (`Owed::blind`).
    pub fn blind_paths(&self) -> std::collections::BTreeSet<PathBuf> {
        (self.blind.keys())
            .map(|k| super::to_path(k.clone()))
            .collect()
    }

    /// Whether `path` is a file a full sync does not cover (see `Ledger::blind`).
    pub(super) fn is_blind(&self, path: &std::path::Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        !self.blind.is_empty() && self.blind.contains_key(path.as_os_str().as_bytes())
    }

    /// Turns every waiting rename into its plain form (a flood), oldest first.
    pub(super) fn flood(&mut self) {
        let renames = std::mem::take(&mut self.renames);
        self.rename_keys.clear();
        self.flooded += renames.len();
        for r in renames.into_values() {
            let since = r.mark.since;
            self.push_plain(r, since);
        }
    }

    /// Removes a waiting entry (keeps the per-directory counts).
    pub(super) fn remove_entry(&mut self, p: &[u8]) -> Option<(u64, Mark)> {
        let (s, m) = self.by_path.remove(p)?;
        self.by_seq.remove(&s);
        if !self.together.is_empty() {
            self.together.leave(&p.to_vec());
        }
        if let Some(parent) = parent_key(p) {
            if let Some(n) = self.children.get_mut(parent) {
                *n -= 1;
                if *n == 0 {
                    self.children.remove(parent);
                }
            }
        }
        Some((s, m))
    }

    /// `dir` has too many direct children waiting: they become one listing push of it.
    fn collapse(&mut self, dir: Key, now: Instant) {
        let mut prefix = dir.clone();
        prefix.push(b'/');
        let kids: Vec<Key> = self
            .by_path
            .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p[prefix.len()..].contains(&b'/'))
            // A child waiting as a listing itself stays: it owes its own entries (a
            // directory deleted and made again, the changes of its children merged into
            // it), and the parent's listing pushes it only as a directory.
            .filter(|(p, _)| !self.replaced.contains(*p))
            .map(|(p, _)| p.clone())
            .collect();
        // Names that go together with a child go together with the listing.
        let sets: Vec<Vec<Key>> = kids
            .iter()
            .filter_map(|k| self.together.members(k).map(<[Key]>::to_vec))
            .collect();
        let mut mark: Option<Mark> = None;
        let mut deleted: Option<Instant> = None;
        for k in &kids {
            if let Some((_, m)) = self.remove_entry(k) {
                mark = Some(older(mark, m));
            }
            if let Some((_, at)) = self.gone.get(k) {
                deleted = Some(deleted.map_or(*at, |d| d.max(*at)));
            }
        }
        if let Some(at) = deleted {
            let e = self.gone_below.entry(dir.clone()).or_insert(at);
            *e = (*e).max(at);
        }
        self.collapsed.push((dir.clone(), kids.len()));
        self.dissolve_related(&dir);
        self.replaced.insert(dir.clone());
        self.push_key(dir.clone(), false, now, mark);
        for set in sets {
            let keys = set
                .into_iter()
                .filter(|k| self.by_path.contains_key(k))
                .chain(std::iter::once(dir.clone()));
            self.together.join(keys.collect::<Vec<Key>>());
        }
    }

    /// Queues a rename, or its plain form when something waits at, above or below either
    /// path, a call for `to` (or above or below it) is in flight, or a full sync waits or
    /// runs.
    #[cfg(test)]
    pub fn push_rename(&mut self, from: PathBuf, to: PathBuf, dir: bool, below: Vec<PathBuf>) {
        let _ = self.push_rename_at(from, to, dir, below, Instant::now());
    }

    /// [`Ledger::push_rename`] of a rename made at `now`.
    /// Returns whether it went as its plain form at once (see `push_plain`), its old
    /// name's delete among the changes waiting.
    pub fn push_rename_at(
        &mut self,
        from: PathBuf,
        to: PathBuf,
        dir: bool,
        below: Vec<PathBuf>,
        now: Instant,
    ) -> bool {
        if self.full_pending && !self.full_inflight {
            return false; // the full sync that has not started yet covers it
        }
        let (from, to) = (key(from), key(to));
        // A call in flight at, above or below `to`: the remote may end up holding what
        // that call found there (a swap through a temp name seen in two batches), which
        // a rename's push (no `--ignore-times`, no listing) would not put right. (One in
        // flight at `from` only delays the rename: it then moves what that call left.)
        let busy = self.full_pending
            || self.full_inflight
            || self.blocked(&to)
            || !related(&self.by_path, &from).is_empty()
            || !related(&self.by_path, &to).is_empty()
            || !related(&self.rename_keys, &from).is_empty()
            || !related(&self.rename_keys, &to).is_empty()
            // Deletes held at, above or below either name: moved as one on the remote,
            // what they stand for would move out from under them (simulator seed
            // 95005538: `mv -T e/d d` took `e/d/e`, held, to `d/e` for good).
            || !related(self.held_map(), &from).is_empty()
            || !related(self.held_map(), &to).is_empty();
        if busy {
            self.dissolve_related(&from);
            self.dissolve_related(&to);
            self.push_plain(
                Renamed {
                    from,
                    to,
                    dir,
                    below,
                    mark: Mark {
                        seq: self.seq + 1,
                        since: now,
                    },
                },
                now,
            );
            return true;
        }
        self.seq += 1;
        let mark = Mark {
            seq: self.seq,
            since: now,
        };
        self.rename_keys.insert(from.clone(), self.seq);
        self.rename_keys.insert(to.clone(), self.seq);
        self.renames.insert(
            self.seq,
            Renamed {
                from,
                to,
                dir,
                below,
                mark,
            },
        );
        false
    }

    /// Turns every waiting rename with a path at, above or below `p` into its plain form.
    fn dissolve_related(&mut self, p: &[u8]) {
        for k in related(&self.rename_keys, p) {
            let Some(seq) = self.rename_keys.get(&k).copied() else {
                continue; // dissolved already, through its other path
            };
            if let Some(r) = self.renames.remove(&seq) {
                self.rename_keys.remove(&r.from);
                self.rename_keys.remove(&r.to);
                let since = r.mark.since;
                self.push_plain(r, since);
            }
        }
    }

    /// A rename's plain form as ordinary entries: `from` (gone), `to` and what is below,
    /// each keeping the rename's mark.
    fn push_plain(&mut self, r: Renamed, now: Instant) {
        let carry = Some(r.mark);
        // `from` is gone, but listings owed below it by an earlier rename into it stay:
        // if this one is the second half of an exchange that came in two reads (not
        // paired into one by the watcher), `from` holds what that rename put there.
        let kept = if r.dir {
            self.take_listings_below(&r.from)
        } else {
            Vec::new()
        };
        if r.dir && self.braking() {
            // The old name's delete, weighed by the brake on mass deletes as any delete
            // (it settles first, and a hold takes it): pushed as an ordinary listing it
            // could go out before the deletes that came with it were counted (`mv data
            // trash && rm -rf trash` read in two batches: `data` went on a remote).
            self.push_gone_carrying(to_path(r.from.clone()), true, now, carry);
        } else {
            self.push_key(r.from, r.dir, now, carry);
        }
        for (k, m) in kept {
            self.push_key(k, false, now, Some(m));
        }
        if r.dir {
            self.replaced.insert(r.to.clone());
        }
        self.push_key(r.to.clone(), false, now, carry);
        for b in r.below {
            let b = key(b);
            if b != r.to {
                if r.dir {
                    self.replaced.insert(b.clone());
                }
                self.push_key(b, false, now, carry);
            }
        }
    }

    /// Takes the waiting listings (see `replaced`) below `dir` out, with their marks;
    /// they stay in `replaced`.
    fn take_listings_below(&mut self, dir: &[u8]) -> Vec<(Key, Mark)> {
        let mut prefix = dir.to_vec();
        prefix.push(b'/');
        let below: Vec<Key> = self
            .by_path
            .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| self.replaced.contains(*p))
            .map(|(p, _)| p.clone())
            .collect();
        below
            .into_iter()
            .filter_map(|k| self.remove_entry(&k).map(|(_, m)| (k, m)))
            .collect()
    }

    /// Queues one key; its mark is at least as old as `carry`.
    pub(super) fn push_key(
        &mut self,
        path: Key,
        gone_dir: bool,
        now: Instant,
        carry: Option<Mark>,
    ) {
        // What a deleted directory cancels below it is not on the remote either: the
        // directory's entry keeps the oldest of their marks.
        let mut inherited: Option<Mark> = carry;
        if gone_dir {
            // Goes out as its listing: still gone then, the push deletes it; made again
            // meanwhile (`rm -rf app && cp -a build app`), the push lists the new
            // directory and deletes what the remote still holds of the old one. What
            // waits below it is cancelled, but for what was queued after the change
            // the delete stands for (`carry`: a rename taken and sent back, or one
            // dissolved): that is of the directory made again there, which its listing
            // (one level) does not send (`cp -a build/r2 app.new && mv app app.old &&
            // mv app.new app`: the second rename's files, queued plain while the first
            // ran, went, and a remote kept the old release below `app`).
            self.replaced.insert(path.clone());
            let mut prefix = path.clone();
            prefix.push(b'/');
            let below: Vec<Key> = self
                .by_path
                .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(&prefix))
                .filter(|(_, (seq, _))| carry.is_none_or(|c| *seq <= c.seq))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                if let Some((_, m)) = self.remove_entry(&p) {
                    inherited = Some(older(inherited, m));
                }
            }
        }
        if let Some((_, m)) = self.by_path.get_mut(&path) {
            if let Some(i) = inherited {
                *m = m.min(i);
            }
            return;
        }
        self.seq += 1;
        let mark = older(
            inherited,
            Mark {
                seq: self.seq,
                since: now,
            },
        );
        self.by_seq.insert(self.seq, path.clone());
        let parent = parent_key(&path).map(<[u8]>::to_vec);
        self.by_path.insert(path, (self.seq, mark));
        if let Some(parent) = parent {
            let n = self.children.entry(parent.clone()).or_default();
            *n += 1;
            // A parent collapsed and still waiting has nothing left to collapse: its
            // plain children merge into it (see `push_at`), and the listings kept below
            // it would otherwise be scanned again on every push.
            let waiting_listing =
                self.replaced.contains(&parent) && self.by_path.contains_key(&parent);
            if self.collapse_at > 0 && *n >= self.collapse_at && !waiting_listing {
                self.collapse(parent, now);
            }
        }
    }

    /// Queues a full sync; it covers every path still waiting.
    pub fn push_full(&mut self) {
        self.push_full_at(Instant::now());
    }

    /// [`Ledger::push_full`] asked at `now`.
    pub fn push_full_at(&mut self, now: Instant) {
        if self.holding() {
            // It would delete what is held: held with them (see `brake.rs`).
            self.push_full_checked(None, now);
            return;
        }
        self.seq += 1;
        let mut mark = older(
            self.full_mark,
            Mark {
                seq: self.seq,
                since: now,
            },
        );
        for (_, m) in self.by_path.values() {
            mark = mark.min(*m);
        }
        for r in self.renames.values() {
            mark = mark.min(r.mark);
        }
        self.full_mark = Some(mark);
        self.full_pending = true;
        // What rsync's quick check cannot see keeps waiting, with its mark.
        let blind: Vec<(Key, Mark)> = (self.blind.keys())
            .filter_map(|k| self.by_path.get(k).map(|(_, m)| (k.clone(), *m)))
            .collect();
        self.by_path.clear();
        self.by_seq.clear();
        self.children.clear();
        self.renames.clear();
        self.rename_keys.clear();
        self.replaced.clear();
        self.trees.clear();
        self.gone.clear();
        self.gone_below.clear();
        self.together.clear();
        for (k, m) in blind {
            self.push_key(k, false, now, Some(m));
        }
    }
}
