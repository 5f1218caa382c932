//! Deletes the brake on mass deletes holds (`ledger/brake.rs`), as the operator meets
//! them: said at start when the fail log held them, released or discarded on the
//! operator's word (`--release-deletes`, `--discard-deletes`), and a full sync of a
//! watch root that is empty now held instead of run.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Mirror;
use crate::sync::job::RemoteId;
use crate::sync::queue::Holding;
use crate::sync::rsync;

/// What one remote held when the operator released or discarded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub remote: String,
    pub deletes: usize,
    pub full: bool,
}

impl Released {
    /// What it held, in words.
    fn what(&self) -> String {
        crate::sync::ledger::held_words(self.deletes as u64, self.full)
    }
}

impl Mirror {
    /// At start: says, at error level, which remotes hold deletes the fail log kept
    /// held at the last stop, and how to release or discard them.
    pub fn say_held_at_start(&self, config: &Path) {
        for (t, held) in self.targets.iter().zip(self.queue.held()) {
            if !held.restored {
                continue;
            }
            let label = t.label();
            log::error!(
                remote = label.as_str(), held = held.deletes;
                "deletes to {label} were held by the brake on mass deletes at the last stop \
                 ({}, kept in the fail log {}): still held; creates and edits flow; \
                 `sersync2 --release-deletes -o {}` pushes them, `sersync2 \
                 --discard-deletes -o {}` drops them",
                held.what(),
                self.fail_log_path().display(),
                config.display(),
                config.display(),
            );
        }
    }

    /// The operator releases every held delete: they are queued (see
    /// `Ledger::release_deletes`). Returns what each remote that held any held.
    pub fn release_deletes(&self) -> Vec<Released> {
        let released = self.report(self.queue.release_deletes());
        for r in &released {
            log::info!(
                remote = r.remote.as_str();
                "the held {} to {} released by the operator: pushed now",
                r.what(),
                r.remote
            );
        }
        self.save(&self.fail_log());
        released
    }

    /// The operator discards every held delete: the remotes keep those entries (see
    /// `Ledger::discard_deletes`). Returns what each remote that held any held.
    pub fn discard_deletes(&self) -> Vec<Released> {
        let discarded = self.report(self.queue.discard_deletes());
        for r in &discarded {
            log::warn!(
                remote = r.remote.as_str();
                "the held {} to {} discarded by the operator: the remote keeps those entries; a \
                 later full sync (-r, <crontab>, a replayed one) deletes them unless the \
                 source has them again",
                r.what(),
                r.remote
            );
        }
        self.save(&self.fail_log());
        discarded
    }

    fn report(&self, held: Vec<Holding>) -> Vec<Released> {
        (self.targets.iter().zip(held))
            .filter(|(_, h)| h.any())
            .map(|(t, h)| Released {
                remote: t.label(),
                deletes: h.deletes,
                full: h.full,
            })
            .collect()
    }

    /// A full sync of `t` taken while its watch root is empty, or holds nothing its
    /// `<filter>` rsync rules select (an include-only list whose names are not there:
    /// only with such rules, so what the regex excludes and the agent's own files leave
    /// out is judged as before), with the brake
    /// on: it would delete everything the remote holds of what the rules select (an
    /// unmounted filesystem's empty mount point, a directory made again at the root's
    /// path). It runs with `--max-delete=0`: a remote that holds nothing to delete is
    /// level by it, one that does makes rsync skip every delete and exit 25, and the
    /// full sync is then held ([`Mirror::hold_empty_full`]). An overflow's full sync of
    /// a root whose rules select nothing there is judged here too (the intake does not
    /// count it: `intake::counted_for_brake`).
    /// Not a full sync the operator released (`--release-deletes`): that one deletes as
    /// asked.
    pub(super) fn full_of_empty_root(&self, t: RemoteId) -> bool {
        let root = &self.targets[t.0].root;
        let excludes = &self.excludes[t.0];
        // The walk of a root (`index::walk`) leaves out, with what is below them, the
        // entries of the top directory that are temporary names or excluded: when each
        // is, it counts nothing.
        let selects_nothing = |d: std::fs::ReadDir| {
            d.flatten().all(|e| {
                let name = e.file_name();
                crate::filter::is_temp_name(name.as_bytes())
                    || e.metadata()
                        .is_ok_and(|md| excludes.excludes(Path::new(&name), md.is_dir()))
            })
        };
        let empty = if excludes.has_rules() {
            std::fs::read_dir(root).is_ok_and(selects_nothing)
        } else {
            std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_none())
        };
        empty && self.queue.guards_full(t)
    }

    /// The full sync of an empty root ([`Mirror::full_of_empty_root`]) ended with
    /// `outcome`: true when rsync skipped deletes and it is held now, with every delete
    /// waiting.
    pub(super) fn hold_empty_full(&self, t: RemoteId, outcome: &rsync::Outcome) -> bool {
        rsync::deletes_skipped(outcome) && self.queue.hold_full(t)
    }
}
