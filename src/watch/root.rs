//! The health of one watch root, shared between its watch thread (which writes it), the
//! sync workers (which refuse to mirror a root that is not the one watched) and status.
//!
//! A root is `ok` while the directory at its path is the one whose inode is watched. It
//! is `missing` once it was removed or renamed away and nothing is at the path, and
//! `replaced` while another directory stands at the path but is not watched yet. Mount
//! points found below the root are kept here too, so status can show which are watched.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use super::toolong::TooLong;
use super::toolong::TooLongReport;

/// Where a watch root stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootState {
    Ok,
    Missing,
    Replaced,
}

impl RootState {
    pub fn as_str(self) -> &'static str {
        match self {
            RootState::Ok => "ok",
            RootState::Missing => "missing",
            RootState::Replaced => "replaced",
        }
    }
}

/// Why a root must not be mirrored now ([`RootHealth::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootUnsafe {
    /// The watcher lost it (`missing` or `replaced`) and watches nothing there yet.
    #[error("the watch root {} is {}", .path.display(), .state.as_str())]
    Lost { path: PathBuf, state: RootState },
    /// Another directory stands at the path than the one watched, and the watcher has
    /// not noticed yet.
    #[error(
        "the watch root {} is no longer the directory watched (removed, renamed or replaced)",
        .path.display()
    )]
    NotTheWatched { path: PathBuf },
}

/// A filesystem mounted below a watch root, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountNote {
    /// The mount point, relative to the root.
    pub path: PathBuf,
    pub fstype: String,
    /// Its directories are watched.
    pub watched: bool,
    /// What the operator should know (not watched and why, or a network filesystem).
    pub note: Option<String>,
}

/// A root's state as one value.
#[derive(Debug, Clone)]
pub struct RootReport {
    pub path: PathBuf,
    pub state: RootState,
    pub since: SystemTime,
    pub mounts: Vec<MountNote>,
    /// Directories that could not be watched or listed (too many open files, ...) and
    /// wait to be walked again.
    pub rewalks: usize,
    /// Paths left out because they are too long for rsync (and for the kernel's path
    /// calls): never pushed, never owed.
    pub too_long: TooLongReport,
}

#[derive(Debug)]
struct Inner {
    state: RootState,
    since: SystemTime,
    /// Device and inode of the directory that is watched (while `Ok`).
    id: Option<(u64, u64)>,
    mounts: Vec<MountNote>,
    rewalks: usize,
    too_long: TooLong,
}

/// One watch root's health. The watch thread writes it; anyone reads it.
#[derive(Debug)]
pub struct RootHealth {
    path: PathBuf,
    inner: Mutex<Inner>,
}

/// Device and inode of what is at `path` now, if it is a directory.
pub fn dir_id(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    m.is_dir().then(|| (m.dev(), m.ino()))
}

impl RootHealth {
    pub fn new(path: PathBuf) -> RootHealth {
        RootHealth {
            path,
            inner: Mutex::new(Inner {
                state: RootState::Missing,
                since: SystemTime::now(),
                id: None,
                mounts: Vec::new(),
                rewalks: 0,
                too_long: TooLong::default(),
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory with this device and inode is watched now.
    pub(crate) fn set_ok(&self, id: (u64, u64)) {
        let mut i = self.inner();
        if i.state != RootState::Ok || i.id != Some(id) {
            i.since = SystemTime::now();
        }
        i.state = RootState::Ok;
        i.id = Some(id);
    }

    /// The watched directory is gone from the path.
    pub(crate) fn set_lost(&self, state: RootState) {
        let mut i = self.inner();
        if i.state != state {
            i.since = SystemTime::now();
        }
        i.state = state;
        i.id = None;
        i.mounts.clear();
    }

    pub(crate) fn set_rewalks(&self, n: usize) {
        self.inner().rewalks = n;
    }

    /// `rel` (below this root) is left out as too long for rsync (`what`: what could not
    /// be done with it). Counted for status; one warning per directory, rate-limited.
    pub fn note_too_long(&self, rel: &Path, what: &str) {
        let warn = self.inner().too_long.note(rel, Instant::now());
        if let Some(suppressed) = warn {
            super::toolong::warn(&self.path, rel, what, suppressed);
        }
    }

    pub(crate) fn set_mounts(&self, mounts: Vec<MountNote>) {
        self.inner().mounts = mounts;
    }

    /// Whether the remotes may be made equal to what is at the path now: only while the
    /// directory there is the one watched. Otherwise, why not (for the log).
    pub fn check(&self) -> Result<(), RootUnsafe> {
        let (state, id) = {
            let i = self.inner();
            (i.state, i.id)
        };
        if state != RootState::Ok {
            return Err(RootUnsafe::Lost {
                path: self.path.clone(),
                state,
            });
        }
        if id.is_some() && dir_id(&self.path) != id {
            return Err(RootUnsafe::NotTheWatched {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Drops from the count of too-long paths those no longer in the tree (deleted, or
    /// renamed short), at most every `toolong::RECHECK_EVERY`; read outside the lock.
    fn recheck_too_long(&self) {
        let Some(kept) = self.inner().too_long.recheck_due(Instant::now()) else {
            return;
        };
        let gone: Vec<PathBuf> = kept
            .into_iter()
            .filter(|p| !super::toolong::still_there(&self.path, p))
            .collect();
        if !gone.is_empty() {
            self.inner().too_long.forget(&gone);
        }
    }

    pub fn report(&self) -> RootReport {
        self.recheck_too_long();
        let i = self.inner();
        RootReport {
            path: self.path.clone(),
            state: i.state,
            since: i.since,
            mounts: i.mounts.clone(),
            rewalks: i.rewalks,
            too_long: i.too_long.report(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_refuses_a_root_that_is_not_the_watched_directory() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("www");
        std::fs::create_dir(&root).expect("mkdir");
        let h = RootHealth::new(root.clone());
        assert!(h.check().is_err(), "not watched yet");
        h.set_ok(dir_id(&root).expect("id"));
        assert_eq!(h.check(), Ok(()));
        // Replaced behind the watcher's back: refused before the watcher noticed.
        std::fs::rename(&root, d.path().join("old")).expect("mv");
        assert!(h.check().is_err(), "missing path");
        std::fs::create_dir(&root).expect("mkdir again");
        assert_eq!(
            h.check().unwrap_err().to_string(),
            format!(
                "the watch root {} is no longer the directory watched (removed, renamed or \
                 replaced)",
                root.display()
            ),
            "another directory"
        );
        h.set_lost(RootState::Replaced);
        assert_eq!(h.report().state, RootState::Replaced);
        assert_eq!(
            h.check().unwrap_err().to_string(),
            format!("the watch root {} is replaced", root.display())
        );
        h.set_ok(dir_id(&root).expect("id"));
        assert_eq!(h.check(), Ok(()));
    }
}
