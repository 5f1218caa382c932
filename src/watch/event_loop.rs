//! What both backends share around their event loops: the pacing of reads, the checks
//! of the root and the mount table, the lost root's retries, the status notes of mounts.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{dir_id, MountNote, RootHealth, RootState};
use crate::filter::{self, Excludes};
use crate::sys::mounts;

/// Reads closer together than this are a burst.
pub(super) const BURST_GAP: Duration = Duration::from_millis(2);

/// In a burst, how long events gather before the next read.
pub(super) const GATHER: Duration = Duration::from_millis(1);

/// How often the root's device and inode, and the mount table, are checked even when
/// nothing woke the watcher.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// First and longest pause between two looks for a missing root.
pub(super) const LOST_FIRST: Duration = Duration::from_millis(100);
pub(super) const LOST_MAX: Duration = Duration::from_secs(5);

/// A watch root that is gone: when to look for it next, and the pause after that.
pub(super) struct Lost {
    pub(super) retry_at: Instant,
    pub(super) backoff: Duration,
    /// The last reason re-watching failed (logged once, not at every try).
    pub(super) last_error: Option<String>,
}

/// Moves this root's share of the shared watch counter from `reported` to `n`.
pub(super) fn report_into(counter: &AtomicUsize, reported: &mut usize, n: usize) {
    if n > *reported {
        counter.fetch_add(n - *reported, Ordering::Relaxed);
    } else {
        counter.fetch_sub(*reported - n, Ordering::Relaxed);
    }
    *reported = n;
}

/// The root is no longer the directory watched (`why`): reports it (missing, or another
/// directory at its path) and starts looking for it again.
pub(super) fn root_lost(root: &Path, health: &RootHealth, why: &str) -> Lost {
    let state = if dir_id(root).is_some() {
        RootState::Replaced
    } else {
        RootState::Missing
    };
    health.set_lost(state);
    log::error!(
        "the watch root {} was {why}; its old tree is no longer watched and nothing is \
         pushed from it. It is watched again as soon as a directory is at {} (then every \
         remote gets a full sync); until then no full sync runs for it, so the remotes \
         keep their copy. If the move was not intended, put the directory back",
        root.display(),
        root.display()
    );
    Lost {
        retry_at: Instant::now(),
        backoff: LOST_FIRST,
        last_error: None,
    }
}

/// Status notes for the mounts `visible` below a root: whether each is `watched`, and
/// what that means for its changes (`backend` names the kernel interface in the note).
pub(super) fn mount_notes(
    visible: &BTreeMap<PathBuf, mounts::Mount>,
    backend: &str,
    watched: impl Fn(&Path) -> bool,
) -> Vec<MountNote> {
    visible
        .iter()
        .map(|(rel, m)| {
            let watched = watched(rel);
            let note = if !watched {
                Some("not watched: changes there are not synced until a full sync".to_owned())
            } else if mounts::is_remote_fs(&m.fstype) {
                Some(format!(
                    "{} is a network filesystem: changes made by other hosts raise no \
                     {backend} events and reach the remotes only with a full sync",
                    m.fstype
                ))
            } else {
                None
            };
            MountNote {
                path: rel.clone(),
                fstype: m.fstype.clone(),
                watched,
                note,
            }
        })
        .collect()
}

/// Is `rel`, or a directory above it, left out by the excludes or as a temp name?
pub(super) fn excluded_dir(excludes: &Excludes, rel: &Path) -> bool {
    rel.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .any(|p| {
            let name = p.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            filter::skip(excludes, name, p, true)
        })
}
