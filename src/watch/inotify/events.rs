//! Reading inotify events: each kernel event of one read turned into a [`Change`], the
//! two halves of a rename paired by cookie, a directory a move lands on set aside with
//! its watches (the first half of an exchange), and a queue overflow.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use inotify::{EventMask, WatchDescriptor};

use super::InotifyTree;
use crate::filter;
use crate::watch::change::pair_exchanges;
use crate::watch::event_loop;
use crate::watch::{Change, Op};

/// One kernel event, copied out of the read buffer.
pub(super) struct RawEvent {
    pub(super) wd: WatchDescriptor,
    pub(super) mask: EventMask,
    pub(super) cookie: u32,
    pub(super) name: Option<OsString>,
}

/// A directory renamed away whose MOVED_TO has not been seen (yet).
struct MovedDir {
    rel: PathBuf,
    wds: Vec<WatchDescriptor>,
}

/// A watched directory a move landed on, set aside (detached, watches kept) under the
/// path it had: the first half of an exchange (renameat2 RENAME_EXCHANGE: `b` moved to
/// `a`'s place, and `a` moves to `b`'s next) or a rename over an empty directory (the
/// kernel then drops its watch).
pub(super) struct Aside {
    moved: MovedDir,
    /// Reads handled since it was set aside.
    reads: u8,
}

impl InotifyTree {
    /// Detaches a directory and everything below it from the tree (deleted or renamed
    /// away); their descriptors stay known under the old paths until IN_IGNORED or a
    /// MOVED_TO.
    fn detach_tree(&mut self, rel: &Path) -> Vec<WatchDescriptor> {
        self.tree.detach(rel)
    }

    /// A move lands on `rel`: a watched directory there is set aside, not dropped (see
    /// [`Aside`]).
    fn set_aside(&mut self, rel: &Path) {
        if !self.tree.contains(rel) {
            return;
        }
        let wds = self.detach_tree(rel);
        if let Some(i) = self.aside.iter().position(|a| a.moved.rel == rel) {
            let old = self.aside.swap_remove(i);
            self.unwatch(old.moved, None);
        }
        self.aside.push(Aside {
            moved: MovedDir {
                rel: rel.to_path_buf(),
                wds,
            },
            reads: 0,
        });
    }

    /// The descriptors of the directory set aside at `rel`, if one is and it is still
    /// watched.
    fn take_aside(&mut self, rel: &Path) -> Option<Vec<WatchDescriptor>> {
        let i = self.aside.iter().position(|a| {
            a.moved.rel == rel
                && a.moved
                    .wds
                    .first()
                    .is_some_and(|w| self.tree.is_detached(w.get_watch_descriptor_id()))
        })?;
        Some(self.aside.swap_remove(i).moved.wds)
    }

    /// After each read that held events: what was set aside a read ago and not taken is
    /// dropped.
    fn expire_aside(&mut self) {
        if self.aside.is_empty() {
            return;
        }
        let (old, keep): (Vec<Aside>, Vec<Aside>) = std::mem::take(&mut self.aside)
            .into_iter()
            .partition(|a| a.reads >= 1);
        self.aside = keep;
        for a in &mut self.aside {
            a.reads += 1;
        }
        for a in old {
            self.unwatch(a.moved, None);
        }
    }

    fn forget_wd(&mut self, wd: &WatchDescriptor) {
        if let Some(path) = self.tree.remove_wd(wd.get_watch_descriptor_id()) {
            if path.as_os_str().is_empty() {
                log::error!(
                    "the watch root {} was removed or unmounted; nothing more will be seen there",
                    self.root.path.display()
                );
            }
        }
    }

    /// Removes watches that still point into a tree that has left (moved out), and,
    /// with `seen` (the walk of its new place), those that came along but were not
    /// found there again (excluded now, gone).
    fn unwatch(&mut self, moved: MovedDir, seen: Option<&HashSet<i32>>) {
        for wd in moved.wds {
            let id = wd.get_watch_descriptor_id();
            let mut gone = self.tree.remove_wd_if_below(id, &moved.rel);
            if let Some(seen) = seen {
                if !seen.contains(&id) {
                    gone.extend(self.tree.remove_wd_tree(id));
                }
            }
            for wd in gone {
                // The directory may be gone already; the kernel then dropped the watch.
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    fn overflow(&mut self) {
        if self.root.lost.is_some() {
            return; // watched whole, and fully synced, once it is back
        }
        log::warn!(
            "inotify queue overflow under {}: events were lost; re-walking the tree and running a full sync",
            self.root.path.display()
        );
        // IN_IGNORED and rename events may be among the lost ones: rebuild the map from
        // the tree as it is now, and drop watches on whatever is no longer in it.
        let old = self.tree.take_all();
        self.aside.clear();
        if let Err(e) = self.add_whole_tree().and_then(|()| self.watch_root_self()) {
            log::error!("{e}");
        }
        for wd in old {
            if !self.tree.has_wd(wd.get_watch_descriptor_id()) {
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    /// Handles one batch of events as read from the kernel; returns the changes.
    pub(super) fn handle(&mut self, batch: Vec<RawEvent>) -> Vec<Change> {
        let read_any = !batch.is_empty();
        let mut out = Vec::with_capacity(batch.len());
        let mut moved_away: HashMap<u32, MovedDir> = HashMap::new();
        // Where the MOVED_FROM of each cookie went in `out`, to pair it with its MOVED_TO.
        let mut moved_from: HashMap<u32, usize> = HashMap::new();
        for e in batch {
            if e.mask.contains(EventMask::Q_OVERFLOW) {
                self.overflow();
                out.push(Change::Overflow);
                continue;
            }
            if self.root_wd.as_ref() == Some(&e.wd) {
                if e.mask.contains(EventMask::MOVE_SELF) {
                    event_loop::lose_root(self, "renamed or moved away");
                    continue;
                }
                if e.mask
                    .intersects(EventMask::DELETE_SELF | EventMask::IGNORED)
                {
                    event_loop::lose_root(self, "removed (or its filesystem unmounted)");
                    continue;
                }
            }
            if e.mask.contains(EventMask::IGNORED) {
                self.forget_wd(&e.wd);
                continue;
            }
            // A file's attribute change, asked for only for directories' (see
            // `watch_mask`), is dropped before anything is looked up.
            if e.mask == EventMask::ATTRIB && !self.events.attrib {
                continue;
            }
            let (Some(dir), Some(name)) = (
                self.tree.path_of(e.wd.get_watch_descriptor_id()),
                e.name.as_ref(),
            ) else {
                continue;
            };
            let rel = dir.join(name);
            if !e.mask.contains(EventMask::ISDIR) {
                if let Some(op) = op_of(e.mask) {
                    let change = Change::File { path: rel, op };
                    pair_rename(&mut out, &mut moved_from, e.cookie, change);
                }
                continue;
            }
            // Excluded and temp directories are never watched, so never reported.
            if filter::skip(&self.root.excludes, name.as_bytes(), &rel, true) {
                continue;
            }
            if let Some(c) = self.handle_dir(e.mask, e.cookie, rel, &mut moved_away) {
                pair_rename(&mut out, &mut moved_from, e.cookie, c);
            }
        }
        for (_, moved) in moved_away {
            self.unwatch(moved, None);
        }
        if read_any {
            self.expire_aside();
        }
        pair_exchanges(&mut out);
        out
    }

    fn handle_dir(
        &mut self,
        mask: EventMask,
        cookie: u32,
        rel: PathBuf,
        moved_away: &mut HashMap<u32, MovedDir>,
    ) -> Option<Change> {
        if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            let moved = mask.contains(EventMask::MOVED_TO);
            let renamed = if moved {
                moved_away.remove(&cookie)
            } else {
                None
            };
            let mut found = Vec::new();
            if renamed.is_some() {
                self.seen = Some(HashSet::new());
            }
            if moved {
                self.set_aside(&rel);
            }
            // A renamed directory's node moves here at its first watch, with what is
            // below it; the walk then finds most of it in place.
            if let Err(e) = self.add_tree(&rel, Some(&mut found)) {
                log::error!("{e}");
            }
            let seen = self.seen.take();
            // The tree was behind and the directory there was this one: it is back.
            self.aside.retain(|a| {
                a.moved
                    .wds
                    .first()
                    .is_some_and(|w| self.tree.is_detached(w.get_watch_descriptor_id()))
            });
            if let Some(moved) = renamed {
                // Watches that came along but were not found again (excluded now, gone).
                self.unwatch(moved, seen.as_ref());
            }
            Some(Change::DirIn {
                path: rel,
                moved,
                found,
            })
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            let moved = mask.contains(EventMask::MOVED_FROM);
            // The second half of an exchange: the directory that leaves `rel` is the one
            // set aside there, not the one that just came.
            let aside = if moved { self.take_aside(&rel) } else { None };
            let wds = match aside {
                Some(wds) => wds,
                None => self.detach_tree(&rel),
            };
            if moved {
                moved_away.insert(
                    cookie,
                    MovedDir {
                        rel: rel.clone(),
                        wds,
                    },
                );
            }
            Some(Change::DirOut { path: rel, moved })
        } else {
            op_of(mask).map(|op| Change::DirMeta { path: rel, op })
        }
    }
}

/// Appends a change to `out`; a move in whose MOVED_FROM (same cookie) is the change
/// just before it replaces that change with one [`Change::Renamed`]. Anything in
/// between (another event) leaves the two plain: they still make the remote equal.
fn pair_rename(
    out: &mut Vec<Change>,
    moved_from: &mut HashMap<u32, usize>,
    cookie: u32,
    change: Change,
) {
    let is_from = matches!(
        change,
        Change::File {
            op: Op::MovedOut,
            ..
        } | Change::DirOut { moved: true, .. }
    );
    if is_from && cookie != 0 {
        moved_from.insert(cookie, out.len());
        out.push(change);
        return;
    }
    let at = match change {
        Change::File {
            op: Op::MovedIn, ..
        }
        | Change::DirIn { moved: true, .. }
            if cookie != 0 =>
        {
            moved_from.remove(&cookie)
        }
        _ => None,
    };
    let from = match (at, out.last()) {
        (
            Some(i),
            Some(Change::File {
                path,
                op: Op::MovedOut,
            }),
        ) if i + 1 == out.len() => Some((path.clone(), false)),
        (Some(i), Some(Change::DirOut { path, moved: true })) if i + 1 == out.len() => {
            Some((path.clone(), true))
        }
        _ => None,
    };
    let renamed = match (from, change) {
        (Some((from, false)), Change::File { path, .. }) => Change::Renamed {
            from,
            to: path,
            dir: false,
            found: Vec::new(),
        },
        (Some((from, true)), Change::DirIn { path, found, .. }) => Change::Renamed {
            from,
            to: path,
            dir: true,
            found,
        },
        (_, change) => {
            out.push(change);
            return;
        }
    };
    out.pop();
    out.push(renamed);
}

/// The one operation an event stands for (a kernel event carries one).
fn op_of(mask: EventMask) -> Option<Op> {
    Some(if mask.contains(EventMask::CREATE) {
        Op::Created
    } else if mask.contains(EventMask::CLOSE_WRITE) {
        Op::ClosedWrite
    } else if mask.contains(EventMask::MODIFY) {
        Op::Modified
    } else if mask.contains(EventMask::ATTRIB) {
        Op::Attrib
    } else if mask.contains(EventMask::MOVED_TO) {
        Op::MovedIn
    } else if mask.contains(EventMask::MOVED_FROM) {
        Op::MovedOut
    } else if mask.contains(EventMask::DELETE) {
        Op::Deleted
    } else {
        return None;
    })
}
