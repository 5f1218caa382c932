//! The one event loop both backends run, and the root's health around it. A backend
//! (inotify, fanotify) implements [`WatchBackend`]: it reads its kernel queue into
//! [`Change`]s and knows how to watch the root and a mount below it; everything else is
//! written once here.
//!
//! The loop polls the backend's descriptor, the stop descriptor and the mount table;
//! reads and sends one [`Batch`] per read (in a burst it lets events gather a moment
//! first); at the stop it drains what the kernel queued before it. Every
//! [`CHECK_EVERY`] (or when the backend saw a hint) the root's device and inode are
//! compared with the path's: a root that is gone or replaced loses everything watched
//! (a moved-away tree's events no longer belong to the path), is reported in
//! [`RootHealth`], and is looked for again (100 ms doubling to 5 s, in the loop, so the
//! stop is never held up); once a directory is back at the path it is watched whole
//! and [`Change::RootBack`] asks for a full sync. Mounts below the root are found in
//! `/proc/self/mountinfo` (polled for POLLPRI, and re-read every [`CHECK_EVERY`]): a
//! new mount point is watched and its contents sent ([`Change::Mounted`]); an unmounted
//! one is reported ([`Change::Unmounted`]). What a mount covers, or an unmount takes
//! away, is gone from the source, so with deletes on the filter thread turns either into
//! a full sync.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{dir_id, Batch, Change, MountNote, RootHealth, RootState};
use crate::filter::{self, Excludes};
use crate::sys::mounts;

/// Reads closer together than this are a burst.
const BURST_GAP: Duration = Duration::from_millis(2);

/// In a burst, how long events gather before the next read.
const GATHER: Duration = Duration::from_millis(1);

/// How often the root's device and inode, and the mount table, are checked even when
/// nothing woke the watcher.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// First and longest pause between two looks for a missing root.
const LOST_FIRST: Duration = Duration::from_millis(100);
const LOST_MAX: Duration = Duration::from_secs(5);

/// The mounts below a root, by relative mount point.
pub(super) type Mounts = BTreeMap<PathBuf, mounts::Mount>;

/// A watch root that is gone: when to look for it next, and the pause after that.
pub(super) struct Lost {
    retry_at: Instant,
    backoff: Duration,
    /// The last reason re-watching failed (logged once, not at every try).
    last_error: Option<String>,
}

/// What a watcher keeps of its root, whichever backend watches it.
pub(super) struct RootWatch {
    pub(super) path: PathBuf,
    /// This root's index, sent with every batch.
    pub(super) id: usize,
    pub(super) excludes: Excludes,
    pub(super) health: Arc<RootHealth>,
    /// Device and inode of the root directory that is watched.
    pub(super) dev_ino: Option<(u64, u64)>,
    /// Set while the root is gone or replaced and not watched.
    pub(super) lost: Option<Lost>,
    /// The root's path was a symbolic link when watching began (the operator's own
    /// choice: a `current` link a deploy switches). A root that was a directory is never
    /// watched again through a link put at its path ([`retry_root`]).
    pub(super) link_at_start: bool,
    /// Mount points below the root (relative) and the id of the mount seen there.
    pub(super) mounts: BTreeMap<PathBuf, u64>,
    /// Polls for changes of the mount table (None if /proc is not there).
    pub(super) mount_watch: Option<mounts::Watch>,
    /// Watches of every root together, for status; this root's share is `reported`.
    pub(super) counter: Arc<AtomicUsize>,
    pub(super) reported: usize,
}

impl RootWatch {
    pub(super) fn new(
        path: PathBuf,
        id: usize,
        excludes: Excludes,
        counter: Arc<AtomicUsize>,
    ) -> RootWatch {
        RootWatch {
            health: Arc::new(RootHealth::new(path.clone())),
            path,
            id,
            excludes,
            dev_ino: None,
            lost: None,
            link_at_start: false,
            mounts: BTreeMap::new(),
            mount_watch: None,
            counter,
            reported: 0,
        }
    }

    /// The mounts below the root now, by relative mount point; excluded ones left out.
    /// If the mount table cannot be read, the ones known are taken as still there.
    fn visible_mounts(&self) -> Mounts {
        let all = match mounts::read() {
            Ok(m) => m,
            Err(e) => {
                log::debug!("cannot read {}: {e}", mounts::MOUNTINFO);
                return self
                    .mounts
                    .iter()
                    .map(|(p, id)| {
                        (
                            p.clone(),
                            mounts::Mount {
                                id: *id,
                                mount_point: self.path.join(p),
                                fstype: String::new(),
                            },
                        )
                    })
                    .collect();
            }
        };
        let canonical = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let mut below = mounts::below(&canonical, &all);
        below.retain(|rel, _| !excluded_dir(&self.excludes, rel));
        below
    }
}

/// One kernel interface watching one root. The loop, the root's health and the mount
/// table are [`run`]'s; a backend reads its queue and watches what it is asked to.
pub(super) trait WatchBackend {
    /// The kernel interface, for log lines and status notes.
    const NAME: &'static str;
    /// What watching the root sets up, for log lines ("its watches were").
    const SET_UP: &'static str;

    fn root(&self) -> &RootWatch;
    fn root_mut(&mut self) -> &mut RootWatch;
    /// The descriptor events are read from.
    fn fd(&self) -> RawFd;
    /// One read of the kernel queue, as changes; None when it held nothing.
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<Option<Vec<Change>>>;
    /// How many watches this root holds (status adds up every root's).
    fn watched(&self) -> usize;
    /// What is watched, for the log.
    fn describe(&self) -> String;
    /// Watches the directory now at the root's path, whole (the root came back).
    fn watch_root(&mut self) -> Result<(), String>;
    /// Drops everything watched of the root: the tree it belongs to left the path.
    fn unwatch_root(&mut self);
    /// The mounts below the root when it is first watched (`start`) or back.
    fn cover_mounts(&mut self, visible: &Mounts, start: bool);
    /// Whether the mount point `rel` is watched (status notes).
    fn mount_watched(&self, rel: &Path) -> bool;
    /// A filesystem was unmounted from `rel`; false if that is not worth a change.
    fn unmounted(&mut self, rel: &Path) -> bool;
    /// A filesystem `m` was mounted on `rel`: watches it and returns what it holds, or
    /// None (logged) if it cannot be watched.
    fn mounted(&mut self, rel: &Path, m: &mounts::Mount) -> Option<Vec<PathBuf>>;
    /// True once after an event hinted that the root may have left its path.
    fn check_root_soon(&mut self) -> bool {
        false
    }
    /// When [`WatchBackend::retry`] has work due next, if any.
    fn next_retry(&self) -> Option<Instant> {
        None
    }
    /// Retries work that failed for a reason that passes; what it finds is sent.
    fn retry(&mut self) -> Vec<Change> {
        Vec::new()
    }

    /// The root's health, shared with the workers (which refuse to mirror a root that
    /// is not the watched one) and with status.
    fn health(&self) -> Arc<RootHealth> {
        Arc::clone(&self.root().health)
    }

    fn path(&self) -> &Path {
        &self.root().path
    }

    /// Reads the kernel queue and sends what happened until `stop_fd` becomes readable
    /// (or the receiving side is gone). Between reads it checks the root and the mount
    /// table (every [`CHECK_EVERY`], when the mount table changed, or when the backend
    /// asks), and looks for a lost root again when its pause is over.
    fn run(self, stop_fd: RawFd, tx: Sender<Batch>)
    where
        Self: Sized,
    {
        run(self, stop_fd, tx);
    }
}

/// After the backend's set-up: `before` is the root's device and inode from before it.
/// Settles the root's health, opens the mount table and watches the mounts below.
pub(super) fn start<B: WatchBackend>(b: &mut B, before: Option<(u64, u64)>) {
    let link_at_start = is_link(b.path());
    b.root_mut().link_at_start = link_at_start;
    match before {
        Some(id) if dir_id(b.path()) == Some(id) => {
            let r = b.root_mut();
            r.dev_ino = Some(id);
            r.health.set_ok(id);
        }
        // Replaced while it was set up: the run loop watches it again.
        _ => lose_root(b, &format!("replaced while {} set up", B::SET_UP)),
    }
    let r = b.root_mut();
    match mounts::Watch::open() {
        Ok(m) => r.mount_watch = Some(m),
        Err(e) => log::warn!(
            "cannot open {}: {e}; filesystems mounted inside {} are noticed only every {}s",
            mounts::MOUNTINFO,
            r.path.display(),
            CHECK_EVERY.as_secs()
        ),
    }
    let visible = r.visible_mounts();
    b.cover_mounts(&visible, true);
    b.root_mut().mounts = mount_ids(&visible);
    note_mounts(b, &visible);
    report_count(b);
}

/// The loop of [`WatchBackend::run`].
fn run<B: WatchBackend>(mut b: B, stop_fd: RawFd, tx: Sender<Batch>) {
    let mut buffer = vec![0u8; 256 * 1024];
    let fd = b.fd();
    let mut last_read: Option<Instant> = None;
    let mut next_check = Instant::now() + CHECK_EVERY;
    loop {
        let r = b.root();
        let mut due = match &r.lost {
            Some(l) => l.retry_at.min(next_check),
            None => next_check,
        };
        if let Some(at) = b.next_retry() {
            due = due.min(at);
        }
        let mut fds = vec![(fd, libc::POLLIN), (stop_fd, libc::POLLIN)];
        if let Some(m) = &r.mount_watch {
            fds.push((m.fd(), libc::POLLPRI));
        }
        let ready = match crate::sys::poll_many(&fds, due.saturating_duration_since(Instant::now()))
        {
            Ok(r) => r,
            Err(e) => {
                log::error!("poll on {} failed: {e}", B::NAME);
                return;
            }
        };
        if ready[1] != 0 {
            drain(&mut b, &mut buffer, &tx);
            return;
        }
        let mut changes = Vec::new();
        let mut burst = false;
        if ready[0] != 0 {
            let read = match b.read(&mut buffer) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("reading {} events failed: {e}", B::NAME);
                    return;
                }
            };
            // In a burst (reads back to back), let events gather a moment before the
            // next read: one read, one batch, one wake-up of the filter thread for many
            // events instead of one each. The first event after a quiet spell is read
            // and sent at once, so a single change is never held back.
            let now = Instant::now();
            burst = last_read.is_some_and(|at| now.duration_since(at) < BURST_GAP);
            last_read = Some(now);
            changes = read.unwrap_or_default();
        }
        let mount_table = ready.get(2).copied().unwrap_or(0);
        if mount_table & libc::POLLNVAL != 0 {
            b.root_mut().mount_watch = None;
        }
        let now = Instant::now();
        let soon = b.check_root_soon();
        if now >= next_check || mount_table != 0 || soon {
            if now >= next_check {
                next_check = now + CHECK_EVERY;
            }
            check_root(&mut b);
            changes.extend(check_mounts(&mut b));
        }
        changes.extend(retry_root(&mut b));
        changes.extend(b.retry());
        report_count(&mut b);
        if !send(&b, &tx, changes) {
            return;
        }
        if burst && crate::sys::readable_within(stop_fd, GATHER) {
            drain(&mut b, &mut buffer, &tx);
            return;
        }
    }
}

/// Sends a batch if there is anything in it; false once the receiving side is gone.
fn send<B: WatchBackend>(b: &B, tx: &Sender<Batch>, changes: Vec<Change>) -> bool {
    changes.is_empty()
        || tx
            .send(Batch {
                root: b.root().id,
                changes,
            })
            .is_ok()
}

/// At the stop: what the kernel queued before it is read and sent, so it is pushed or
/// written to the fail log with the rest. At a reload the new watches were set before
/// this stop, but a change made between the last read and then is only in this queue.
fn drain<B: WatchBackend>(b: &mut B, buffer: &mut [u8], tx: &Sender<Batch>) {
    loop {
        let changes = match b.read(buffer) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                log::error!("reading {} events failed: {e}", B::NAME);
                return;
            }
        };
        if !send(b, tx, changes) {
            return;
        }
    }
}

/// Moves this root's share of the shared watch counter to what the backend holds now.
pub(super) fn report_count<B: WatchBackend>(b: &mut B) {
    let n = b.watched();
    let r = b.root_mut();
    report_into(&r.counter, &mut r.reported, n);
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

/// The root is no longer the directory watched (`why`): drops what is watched of it,
/// reports it (missing, or another directory at its path) and starts looking for it
/// again from the run loop.
pub(super) fn lose_root<B: WatchBackend>(b: &mut B, why: &str) {
    b.unwatch_root();
    let r = b.root_mut();
    r.dev_ino = None;
    r.mounts.clear();
    let state = if dir_id(&r.path).is_some() {
        RootState::Replaced
    } else {
        RootState::Missing
    };
    r.health.set_lost(state);
    log::error!(
        "the watch root {} was {why}; its old tree is no longer watched and nothing is \
         pushed from it. It is watched again as soon as a directory is at {} (then every \
         remote gets a full sync); until then no full sync runs for it, so the remotes \
         keep their copy. If the move was not intended, put the directory back",
        r.path.display(),
        r.path.display()
    );
    r.lost = Some(Lost {
        retry_at: Instant::now(),
        backoff: LOST_FIRST,
        last_error: None,
    });
    report_count(b);
}

/// Compares the path's device and inode with the watched root's.
fn check_root<B: WatchBackend>(b: &mut B) {
    let r = b.root();
    if r.lost.is_some() {
        return;
    }
    let now = dir_id(&r.path);
    if now != r.dev_ino {
        lose_root(
            b,
            if now.is_some() {
                "replaced: another directory (or a mount) is at its path now"
            } else {
                "removed, or renamed or moved away (perhaps with a parent directory)"
            },
        );
    }
}

/// Whether `path` itself is a symbolic link (not followed).
fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// While the root is lost: watches it again if a directory is at its path (through a
/// link only if the root was a link when watching began).
fn retry_root<B: WatchBackend>(b: &mut B) -> Option<Change> {
    let r = b.root_mut();
    let lost = r.lost.as_mut()?;
    let now = Instant::now();
    if now < lost.retry_at {
        return None;
    }
    lost.retry_at = now + lost.backoff;
    lost.backoff = (lost.backoff * 2).min(LOST_MAX);
    let Some(id) = dir_id(&r.path) else {
        r.health.set_lost(RootState::Missing);
        return None;
    };
    r.health.set_lost(RootState::Replaced);
    if !r.link_at_start && is_link(&r.path) {
        // A user who can write in the root's parent put a link there (`mv pub old;
        // ln -s /etc pub`): following it would mirror what it points to, read as root.
        let to = std::fs::read_link(&r.path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        let err = format!(
            "{} is a symbolic link now (to {to}), where a directory was: not followed, \
             since whoever can write in {} could point it anywhere the agent can read. \
             Put the directory back, or, if a link is meant, restart the agent (a root that \
             is a link when the agent starts is followed)",
            r.path.display(),
            r.path.parent().unwrap_or(Path::new("/")).display()
        );
        if let Some(lost) = r.lost.as_mut() {
            if lost.last_error.as_deref() != Some(err.as_str()) {
                log::error!("cannot watch the new {}: {err}", r.path.display());
                lost.last_error = Some(err);
            }
        }
        return None;
    }
    let failed = match b.watch_root() {
        Err(e) => Some(e),
        Ok(()) if dir_id(b.path()) != Some(id) => {
            Some(format!("it changed again while {} set up", B::SET_UP))
        }
        Ok(()) => None,
    };
    if let Some(err) = failed {
        b.unwatch_root();
        report_count(b);
        let r = b.root_mut();
        if let Some(lost) = r.lost.as_mut() {
            if lost.last_error.as_deref() != Some(err.as_str()) {
                log::error!(
                    "cannot watch the new {} yet: {err}; trying again",
                    r.path.display()
                );
                lost.last_error = Some(err);
            }
        }
        return None;
    }
    let r = b.root_mut();
    r.lost = None;
    r.dev_ino = Some(id);
    r.health.set_ok(id);
    let visible = r.visible_mounts();
    b.cover_mounts(&visible, false);
    b.root_mut().mounts = mount_ids(&visible);
    note_mounts(b, &visible);
    report_count(b);
    log::warn!(
        "the watch root {} is back ({}): running a full sync of every remote of it",
        b.path().display(),
        b.describe()
    );
    Some(Change::RootBack)
}

/// Re-reads the mount table: watches and pushes new mounts, reports unmounted ones.
fn check_mounts<B: WatchBackend>(b: &mut B) -> Vec<Change> {
    let r = b.root();
    if r.lost.is_some() {
        return Vec::new();
    }
    let visible = r.visible_mounts();
    let now = mount_ids(&visible);
    if now == r.mounts {
        return Vec::new();
    }
    let mut out = Vec::new();
    let gone: Vec<PathBuf> = r
        .mounts
        .keys()
        .filter(|p| !now.contains_key(*p))
        .cloned()
        .collect();
    for rel in gone {
        if b.unmounted(&rel) {
            out.push(Change::Unmounted { path: rel });
        }
    }
    // Parents first: a mount inside a new mount is walked after it.
    for (rel, m) in &visible {
        if b.root().mounts.get(rel) == Some(&m.id) {
            continue;
        }
        let Some(found) = b.mounted(rel, m) else {
            continue;
        };
        log::warn!(
            "a {} filesystem was mounted on {}: watching it and pushing its {} entries",
            m.fstype,
            b.path().join(rel).display(),
            found.len()
        );
        out.push(Change::Mounted {
            path: rel.clone(),
            found,
        });
    }
    b.root_mut().mounts = now;
    note_mounts(b, &visible);
    report_count(b);
    out
}

fn mount_ids(visible: &Mounts) -> BTreeMap<PathBuf, u64> {
    visible.iter().map(|(p, m)| (p.clone(), m.id)).collect()
}

/// Status notes for the mounts `visible` below the root: whether each is watched, and
/// what that means for its changes.
fn note_mounts<B: WatchBackend>(b: &B, visible: &Mounts) {
    let notes = visible
        .iter()
        .map(|(rel, m)| {
            let watched = b.mount_watched(rel);
            let note = if !watched {
                Some("not watched: changes there are not synced until a full sync".to_owned())
            } else if mounts::is_remote_fs(&m.fstype) {
                Some(format!(
                    "{} is a network filesystem: changes made by other hosts raise no \
                     {} events and reach the remotes only with a full sync",
                    m.fstype,
                    B::NAME
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
        .collect();
    b.root().health.set_mounts(notes);
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

/// Receives batches until one holds a change `want` accepts, or 30 s pass (the tests of
/// both backends).
#[cfg(test)]
pub(super) fn recv_until(
    rx: &crossbeam_channel::Receiver<Batch>,
    seen: &mut Vec<Change>,
    want: impl Fn(&Change) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(batch) = rx.recv_timeout(left) else {
            return false;
        };
        let hit = batch.changes.iter().any(&want);
        seen.extend(batch.changes);
        if hit {
            return true;
        }
    }
    false
}
