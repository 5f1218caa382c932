//! The warm-restart index: per watch root, the tree as last pushed to every remote
//! (path, type, size, mtime and ctime in nanoseconds, inode and device, mode, link
//! target), so that a start without `-r` finds what changed while no agent ran by a
//! stat-only walk and pushes only that (see docs/guide.md, "Warm restart and the index").
//!
//! What an entry says is what every remote of its root was sent: the metadata taken
//! before the push that carried the path ([`Recorder::before`]), entered once every
//! remote of the root has had a push of the path with that same metadata land
//! ([`Recorder::landed`]). A change made during a push then shows as a difference at
//! the next start. A path the index has no word on (listings, renames, pushes that
//! saw different metadata on different remotes) keeps its older entry, which can only
//! make the next start push more, never less.
//!
//! The file is one checksummed snapshot (`<fail log>.index`), written atomically
//! through [`crate::sys::fsafe::write_atomic`] and read with the fail log's trust
//! checks ([`crate::sys::fsafe::read_trusted`]). A root is in it only once it is
//! level: `-r` walks the tree before its full syncs start and enters that walk when the
//! full sync has landed on every remote of the root.
//!
//! Pure parts ([`diff`], [`encode`], [`decode`]) are plain functions, tested alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

mod diff;
mod entries;
mod format;
mod journal;
mod recorder;
mod tree;
mod walk;
pub use diff::diff;
#[cfg(test)]
use diff::{below, Moved};
#[cfg(test)]
use entries::enter;
pub use format::{decode_stamped, encode_stamped, SectionRef};
#[cfg(test)]
use format::{encode, Section};
pub use journal::Stamp;
use journal::{Rec, What};
pub use recorder::Recorder;
pub use tree::{Kind, Meta, Tree};
#[cfg(test)]
pub use walk::stat;
pub use walk::{walk, walk_counted, Before};

use super::job::{Entry, Job, RemoteId};
use super::progress;
use super::queue::Item;
use super::rsync::Target;
use crate::filter::Excludes;

/// The index file of a config: beside its fail log, `<fail log>.index`.
pub fn path_for(fail_log: &Path) -> PathBuf {
    let mut p = fail_log.as_os_str().to_owned();
    p.push(".index");
    PathBuf::from(p)
}

/// [`decode_stamped`] without the stamp (tests).
#[cfg(test)]
fn decode(bytes: &[u8]) -> Result<(Vec<Section>, bool), String> {
    decode_stamped(bytes)
        .map(|(s, running, _)| (s, running))
        .map_err(|e| e.why)
}

/// What was found at start for one root.
pub enum Found {
    /// The root's tree as last pushed to every one of its remotes (paths a push may
    /// have changed since, by the journal, as unknown), the directories whose listing
    /// a push may have changed (to be listed again), and the root's remotes the index
    /// was not made for (added to the config since: they need a full sync).
    Level(Tree, Vec<PathBuf>, Vec<RemoteId>),
    /// No usable entry for this root: why.
    Not(String),
    /// What the remotes hold cannot be known from the index (the last agent was killed
    /// and its journal is missing or not its own, a full sync was running, the file is
    /// torn): a full sync is needed. Why.
    Unclean(String),
}

/// The journal of the index at `index`: `<index>.journal`.
pub fn journal_for(index: &Path) -> PathBuf {
    let mut p = index.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests;
