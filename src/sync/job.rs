//! What to sync, in one type from the queue through rsync and the fail log and back.

use std::path::PathBuf;

/// One remote of one watch root: an index into the targets, in config order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteId(pub(crate) usize);

impl RemoteId {
    pub fn index(self) -> usize {
        self.0
    }
}

/// What one rsync call makes equal on one remote. A rename will be a variant of its own
/// (the new path pushed with the old one as a basis, then the old one deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// These relative paths: push what exists, delete (or skip) what does not.
    Paths(Vec<PathBuf>),
    /// The whole tree (`./`), with `--delete` when deletes are on.
    Full,
}

impl Job {
    /// How many entries it counts for (paths, or one full sync).
    pub fn count(&self) -> usize {
        match self {
            Job::Paths(p) => p.len(),
            Job::Full => 1,
        }
    }
}
