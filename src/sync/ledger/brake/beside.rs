//! What went beside a full sync, when it ends or the queue closes, under the brake:
//! covered by a held delete, or waiting again as the delete it is.

use std::time::Instant;

use super::super::{Key, Ledger, Mark};

impl Ledger {
    /// Does a held delete cover `k` (`k` itself, or a directory above it)? Then it
    /// takes `mark` if older, and `k` needs no push of its own: the release pushes it
    /// as it is then.
    pub(in crate::sync::ledger) fn held_covers(&mut self, k: &[u8], mark: Mark) -> bool {
        if self.brake.held.is_empty() {
            return false;
        }
        let at = if self.brake.held.contains_key(k) {
            Some(k.to_vec())
        } else {
            super::super::ancestors(k)
                .find(|a| self.brake.held.get(*a).is_some_and(|(dir, _)| *dir))
                .map(<[u8]>::to_vec)
        };
        let Some(at) = at else { return false };
        if let Some(e) = self.brake.held.get_mut(&at) {
            e.1 = e.1.min(mark);
        }
        true
    }

    /// A delete handed out beside a full sync waits again when that full sync ends, as
    /// the delete it is: held while deletes are held, else settling first (it was
    /// counted when it came).
    pub(in crate::sync::ledger) fn requeue_gone(
        &mut self,
        k: Key,
        dir: bool,
        now: Instant,
        mark: Mark,
    ) {
        if self.brake.holding() {
            self.hold_key(k, dir, mark);
            return;
        }
        self.push_key(k.clone(), dir, now, Some(mark));
        if self.by_path.contains_key(&k) {
            self.gone.insert(k, (dir, now));
        }
    }
}
