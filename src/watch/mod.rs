//! Watching the trees: one watcher per watch root turns kernel events into [`Change`]s
//! sent down a channel. A watcher knows no remote and no queue: it only reads the kernel
//! queue, keeps its bookkeeping, and sends; it never blocks on a lock.
//!
//! This file chooses the backend ([`choose`], [`Watcher`]); each job has a file of its
//! own:
//!
//! - `change.rs`: what a watcher sends ([`Change`], [`Batch`]), the same from both
//!   backends;
//! - `event_loop.rs`: the one loop both backends run (poll, read, drain at the stop),
//!   the root's health (`root.rs` holds the state status reads) and the mounts below
//!   it, behind the small trait a backend implements;
//! - `inotify.rs`: one watch per directory (events in `inotify/events.rs`), the tree of
//!   them in `tree.rs`, the parallel walk that sets them up in `walk.rs`, directories
//!   to walk again in `rewalk.rs`;
//! - `fanotify.rs`: one mark per filesystem, directory handles mapped to paths in
//!   `dircache.rs`;
//! - `limits.rs`: the kernel's inotify limits; `error.rs`: why watching failed.

use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::config::{Backend, Events};
use crate::filter::Excludes;

mod change;
mod dircache;
mod error;
mod event_loop;
mod fanotify;
mod inotify;
mod limits;
mod rewalk;
mod root;
mod toolong;
mod tree;
mod walk;
pub use change::{Batch, Change, Op};
pub use error::WatchError;
use event_loop::WatchBackend;
use inotify::InotifyTree;
pub use root::{dir_id, MountNote, RootHealth, RootReport, RootState};
#[cfg(test)]
pub use toolong::TooLongReport;
pub use toolong::{
    left_out, reason as too_long_reason, relisted_entries, shorten, too_long_below,
    too_long_below_in, too_long_for_rsync, LeftOut,
};
pub use walk::{excluded_paths, excluded_paths_below, temp_named};

/// The watch of one root, by whichever kernel interface watches it. Both send the same
/// [`Change`]s; nothing after the watcher knows which one runs.
pub enum Watcher {
    /// One inotify watch per directory.
    Inotify(InotifyTree),
    /// One fanotify mark per filesystem.
    Fanotify(fanotify::FanotifyTree),
}

/// Which backend `choice` gives for `root`, and why: `auto` is fanotify where it can
/// watch the root (the process has CAP_SYS_ADMIN, the kernel reports directory handles
/// and names, the root's filesystem takes a mark), inotify otherwise. A forced backend
/// is what it says, checked or not (its `new` fails if it cannot run).
pub fn choose(root: &Path, choice: Backend) -> (Backend, String) {
    match choice {
        Backend::Inotify => (Backend::Inotify, "asked for by <watcher>".to_owned()),
        Backend::Fanotify => match fanotify::probe(root) {
            Ok(()) => (Backend::Fanotify, "asked for by <watcher>".to_owned()),
            Err(why) => (
                Backend::Fanotify,
                format!("asked for, but unavailable: {why}"),
            ),
        },
        Backend::Auto => match fanotify::probe(root) {
            Ok(()) => (
                Backend::Fanotify,
                "auto: fanotify can mark its filesystem".to_owned(),
            ),
            Err(why) => (Backend::Inotify, format!("auto: {why}")),
        },
    }
}

impl Watcher {
    /// Watches `root` with the backend `choice` asks for (see [`choose`]); logs which
    /// one and why. A forced fanotify that cannot run is [`WatchError::Unavailable`].
    pub fn new(
        root: PathBuf,
        root_id: usize,
        excludes: Excludes,
        events: Events,
        choice: Backend,
    ) -> Result<Watcher, WatchError> {
        Self::new_counted(
            root,
            root_id,
            excludes,
            events,
            choice,
            Arc::new(AtomicUsize::new(0)),
        )
    }

    /// [`Watcher::new`], counting its watches (inotify: directories; fanotify: filesystem
    /// marks) into `counter` (shared by all roots) from the first one on: status shows a
    /// large tree's count while it is set up.
    pub fn new_counted(
        root: PathBuf,
        root_id: usize,
        excludes: Excludes,
        events: Events,
        choice: Backend,
        counter: Arc<AtomicUsize>,
    ) -> Result<Watcher, WatchError> {
        let fanotify = |root: PathBuf, excludes: Excludes, counter: Arc<AtomicUsize>| {
            fanotify::FanotifyTree::new_counted(root, root_id, excludes, events, counter)
        };
        match choice {
            Backend::Inotify => {
                log::info!(
                    "watching {} with inotify: asked for by <watcher>",
                    root.display()
                );
                InotifyTree::new_counted(root, root_id, excludes, events, counter)
                    .map(Watcher::Inotify)
            }
            Backend::Fanotify => {
                let t = fanotify(root, excludes, counter)?;
                log::info!(
                    "watching {} with fanotify: asked for by <watcher>",
                    t.path().display()
                );
                Ok(Watcher::Fanotify(t))
            }
            Backend::Auto => match fanotify(root.clone(), excludes.clone(), Arc::clone(&counter)) {
                Ok(t) => {
                    log::info!(
                        "watching {} with fanotify (auto): one mark per filesystem",
                        root.display()
                    );
                    Ok(Watcher::Fanotify(t))
                }
                Err(WatchError::Unavailable { why, .. }) => {
                    log::info!("watching {} with inotify (auto): {why}", root.display());
                    InotifyTree::new_counted(root, root_id, excludes, events, counter)
                        .map(Watcher::Inotify)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// The root's health, shared with the workers and with status.
    pub fn health(&self) -> Arc<RootHealth> {
        match self {
            Watcher::Inotify(w) => w.health(),
            Watcher::Fanotify(w) => w.health(),
        }
    }

    pub fn root(&self) -> &Path {
        match self {
            Watcher::Inotify(w) => w.path(),
            Watcher::Fanotify(w) => w.path(),
        }
    }

    /// What the start-up log says was set up.
    pub fn describe(&self) -> String {
        match self {
            Watcher::Inotify(w) => w.describe(),
            Watcher::Fanotify(w) => w.describe(),
        }
    }

    /// Reads the kernel queue and sends what happened until `stop_fd` becomes readable.
    pub fn run(self, stop_fd: RawFd, tx: Sender<Batch>) {
        match self {
            Watcher::Inotify(w) => w.run(stop_fd, tx),
            Watcher::Fanotify(w) => w.run(stop_fd, tx),
        }
    }
}
