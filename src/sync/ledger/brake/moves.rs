//! The brake's rename accounting: a directory renamed within the window moves its
//! entries; where a tree was renamed away from, what is put there since replaces the
//! deletes of that tree to come (a release swapped in: `mv cur old && mv new cur && rm
//! -rf old`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{rebased, Brake, DELETED_AT_MAX};

impl Brake {
    /// Notes the rename of the directory `from` to `to` at `now`: `from` is vacated,
    /// and what stands at `to` came from `from` (see [`Brake::offset_moved`]).
    pub(super) fn moved(&mut self, from: &Path, to: &Path, now: Instant) {
        let Some(rule) = self.rule else {
            return;
        };
        let fresh = |at: Instant| now.saturating_duration_since(at) < rule.window;
        if self.came_from.len() >= DELETED_AT_MAX {
            self.came_from.retain(|_, (at, _)| fresh(*at));
        }
        if self.vacated.len() >= DELETED_AT_MAX {
            self.vacated.retain(|_, (at, _)| fresh(*at));
        }
        self.came_from
            .insert(to.to_path_buf(), (now, from.to_path_buf()));
        // What was put at `from` before belonged to the tree that just left it.
        self.vacated.insert(from.to_path_buf(), (now, 0));
    }

    /// `n` entries were put at `path` at `now` (renamed or written in): if that is at
    /// or below a name a directory was renamed away from within the window, they
    /// replace that tree's deletes to come (see [`Brake::offset_moved`]). Returns
    /// whether they did.
    pub(super) fn fill(&mut self, path: &Path, n: usize, now: Instant) -> bool {
        let Some(rule) = self.rule else {
            return false;
        };
        if self.vacated.is_empty() {
            return false;
        }
        let fresh = |at: Instant| now.saturating_duration_since(at) < rule.window;
        for a in path.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            if let Some((at, put)) = self.vacated.get_mut(a) {
                if fresh(*at) {
                    *put = put.saturating_add(n);
                    return true;
                }
            }
        }
        false
    }

    /// Where the tree at `path` stood before a directory rename within the window moved
    /// it: `path` rebased from the nearest renamed directory at or above it onto that
    /// directory's old name (`old/x` after `mv data old`: `data/x`), if any.
    pub(super) fn origin(&self, path: &Path, now: Instant) -> Option<PathBuf> {
        let rule = self.rule?;
        if self.came_from.is_empty() {
            return None;
        }
        let fresh = |at: Instant| now.saturating_duration_since(at) < rule.window;
        (path.ancestors())
            .filter(|a| !a.as_os_str().is_empty())
            .find_map(|a| match self.came_from.get(a) {
                Some((at, from)) if fresh(*at) => rebased(path, a, from),
                _ => None,
            })
    }

    /// Weighs `n` deletes at or below `path` at `now` against a release swapped in by
    /// renames (`mv cur old && mv new cur && rm -rf old`): when `path` is in a tree
    /// renamed away from a name within the window, what was put at that name since
    /// (a directory renamed in, files written in: see [`Brake::fill`]) replaces these
    /// deletes, each entry once, counted as writes. A tree renamed and then deleted
    /// (`mv data trash && rm -rf trash`) is offset by nothing, nor one whose place
    /// was left empty.
    pub(super) fn offset_moved(&mut self, path: &Path, n: usize, now: Instant) {
        let Some(rule) = self.rule else {
            return;
        };
        if n == 0 || self.vacated.is_empty() || self.came_from.is_empty() {
            return;
        }
        let fresh = |at: Instant| now.saturating_duration_since(at) < rule.window;
        // The name its tree was renamed away from (the nearest renamed directory at
        // or above it).
        let Some(origin) = (path.ancestors())
            .filter(|a| !a.as_os_str().is_empty())
            .find_map(|a| match self.came_from.get(a) {
                Some((at, from)) if fresh(*at) => Some(from.clone()),
                _ => None,
            })
        else {
            return;
        };
        let offset = match self.vacated.get_mut(&origin) {
            Some((at, put)) if fresh(*at) && *put > 0 => {
                let k = n.min(*put);
                *put -= k;
                k
            }
            _ => 0,
        };
        if offset > 0 {
            self.add(0, offset, now);
        }
    }

    /// Deletes at or below `dir` within the window not weighed against what was put
    /// there since (`dir` itself counts when it was deleted), taking up to `n` of them:
    /// a directory renamed into a name deleted within the window (`rm -rf app && mv
    /// build app`) replaces them, each once.
    pub(super) fn take_deleted_at(&mut self, dir: &Path, n: usize, now: Instant) -> usize {
        let Some(rule) = self.rule else {
            return 0;
        };
        let fresh = |at: Instant| now.saturating_duration_since(at) < rule.window;
        let mut taken = 0;
        if let Some((at, true)) = self.deleted_at.get(dir).copied() {
            if fresh(at) && n > 0 {
                // Once: the name stays deleted for `replaces`, not for this count.
                self.deleted_at.insert(dir.to_path_buf(), (at, false));
                taken = 1;
            }
        }
        if let Some((at, below)) = self.below.get_mut(dir) {
            if fresh(*at) {
                let k = (n - taken).min(*below);
                *below -= k;
                taken += k;
            }
        }
        taken
    }
}
