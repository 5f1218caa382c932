//! The changes a history makes to the source, and the events they give the
//! watcher: drawn, made, resolved and delivered.

use super::print::{show_change, show_path};
use super::*;

impl Sim {
    /// One change while no agent runs (`warm`): any change the tree gets (its events
    /// go nowhere), a directory renamed, or (`restored`: only where the start will
    /// compare with the index; a full sync's quick check cannot see it) a file
    /// rewritten at the same size with its mtime put back (`touch -r`), in place (a
    /// new ctime) or through a new file renamed over it (a new inode too).
    pub(super) fn offline_change(&self, restored: bool) {
        let what = self.lock().rng.below(4);
        match what {
            0 if restored => self.rewrite_keeping_mtime(),
            1 => self.rename_dir(),
            _ => self.mutate(),
        }
        if let Some(last) = self.lock().history.last_mut() {
            if !last.ends_with("(while stopped)") {
                last.push_str(" (while stopped)");
            }
        }
    }

    /// A directory (and what is below it) renamed while no agent runs.
    pub(super) fn rename_dir(&self) {
        let mut st = self.lock();
        let root = st.root.clone();
        let tree = model::read_tree(&root);
        let dirs: Vec<Vec<u8>> = (tree.iter())
            .filter(|(_, n)| **n == Node::Dir)
            .map(|(k, _)| k.clone())
            .collect();
        let Some(from) = st.rng.pick(&dirs).cloned() else {
            return;
        };
        let parents: Vec<Vec<u8>> = std::iter::once(Vec::new())
            .chain(dirs.iter().cloned())
            .filter(|d| !(d == &from || d.starts_with(&from) && d.get(from.len()) == Some(&b'/')))
            .collect();
        let Some(parent) = st.rng.pick(&parents).cloned() else {
            return;
        };
        let name = NAMES[st.rng.below(NAMES.len() as u64) as usize].as_bytes();
        let to = model::join(&parent, name);
        if tree.contains_key(&to) {
            return;
        }
        let abs = |rel: &[u8]| root.join(OsStr::from_bytes(rel));
        if std::fs::rename(abs(&from), abs(&to)).is_err() {
            return;
        }
        let mut prefix = from.clone();
        prefix.push(b'/');
        for k in tree.keys() {
            if *k == from || k.starts_with(&prefix) {
                touch(&mut st, k);
                let moved =
                    model::join(&to, k[from.len()..].strip_prefix(b"/").unwrap_or_default());
                touch(&mut st, if *k == from { &to } else { &moved });
            }
        }
        st.history.push(format!(
            "mv {} {} (a directory)",
            show_path(&from),
            show_path(&to)
        ));
    }

    /// A file rewritten at the same size, its mtime put back: only its ctime (in
    /// place) or its inode and ctime (a new file renamed over it) tell.
    pub(super) fn rewrite_keeping_mtime(&self) {
        use std::os::unix::fs::MetadataExt;
        let mut st = self.lock();
        let root = st.root.clone();
        let tree = model::read_tree(&root);
        let files: Vec<(Vec<u8>, Vec<u8>)> = (tree.iter())
            .filter_map(|(k, n)| match n {
                Node::File { data, .. } if !data.is_empty() => Some((k.clone(), data.clone())),
                _ => None,
            })
            .collect();
        let Some((rel, data)) = st.rng.pick(&files).cloned() else {
            return;
        };
        let abs = root.join(OsStr::from_bytes(&rel));
        let Ok(before) = std::fs::symlink_metadata(&abs) else {
            return;
        };
        let Ok(mtime) = before.modified() else {
            return;
        };
        let byte = (data[0] - b'a' + 1 + st.rng.below(2) as u8) % 3 + b'a';
        let new = vec![byte; data.len()];
        let renamed = st.rng.chance(50);
        let times = std::fs::FileTimes::new()
            .set_modified(mtime)
            .set_accessed(mtime);
        let written = if renamed {
            let tmp = root.with_file_name("rewrite.tmp");
            std::fs::write(&tmp, &new)
                .and_then(|()| {
                    std::fs::File::options()
                        .write(true)
                        .open(&tmp)?
                        .set_times(times)
                })
                .and_then(|()| std::fs::rename(&tmp, &abs))
        } else {
            std::fs::File::options()
                .write(true)
                .open(&abs)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, &new)?;
                    f.set_times(times)
                })
        };
        if written.is_err() {
            st.broken
                .get_or_insert("the simulator could not rewrite a file".into());
            return;
        }
        // The kernel stamps ctimes from a clock that moves by ticks: until it has
        // moved, the rewrite would look like no change at all (to the agent as to
        // anything that compares ctimes), which no rewrite outside a test is quick
        // enough to meet.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ctime = |m: &std::fs::Metadata| (m.ctime(), m.ctime_nsec());
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if ctime(&m) != ctime(&before) => break,
                Ok(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                    let f = std::fs::File::options().write(true).open(&abs);
                    if f.and_then(|f| f.set_times(times)).is_err() {
                        break;
                    }
                }
                _ => {
                    st.broken
                        .get_or_insert("the simulator's rewrite kept its ctime".into());
                    return;
                }
            }
        }
        touch(&mut st, &rel);
        for other in other_names(&root, &tree, &rel) {
            touch(&mut st, &other);
        }
        st.history.push(format!(
            "rewrite {} ({} x {}) with its mtime restored{}",
            show_path(&rel),
            data.len(),
            byte as char,
            if renamed {
                ", a new file renamed over it"
            } else {
                " (touch -r)"
            }
        ));
    }

    pub(super) fn flush_unclosed(&self) {
        let Some(p) = self.pipeline() else {
            return;
        };
        let mut intake = p.intake.lock().unwrap_or_else(|e| e.into_inner());
        let (intake, unclosed) = &mut *intake;
        intake.flush_unclosed(unclosed);
    }

    /// A change to the source tree, with the events the kernel would queue for it.
    pub(super) fn mutate(&self) {
        let mut st = self.lock();
        let root = st.root.clone();
        let tree = model::read_tree(&root);
        let dirs: Vec<Vec<u8>> = std::iter::once(Vec::new())
            .chain(
                tree.iter()
                    .filter(|(k, n)| {
                        **n == Node::Dir && k.iter().filter(|&&b| b == b'/').count() < 2
                    })
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        let entries: Vec<Vec<u8>> = tree.keys().cloned().collect();
        let roll = st.rng.below(100);
        let Some(parent) = st.rng.pick(&dirs).cloned() else {
            return;
        };
        let name = NAMES[st.rng.below(NAMES.len() as u64) as usize]
            .as_bytes()
            .to_vec();
        let new = model::join(&parent, &name);
        let abs = |rel: &[u8]| root.join(OsStr::from_bytes(rel));
        let path = |rel: &[u8]| PathBuf::from(OsStr::from_bytes(rel));
        match roll {
            // Write a file (new or over one).
            0..=39 => {
                let existed = match tree.get(&new) {
                    // A write through a link lands at its target: not this change.
                    Some(Node::Dir) | Some(Node::Link(_)) => return,
                    // A file with other names (hard links) is written in place: every
                    // name has the new content, and the kernel's events name only the
                    // one written through (as inotify and fanotify do). Only with
                    // `linkwrites` (see `Faults`).
                    // Not through an excluded or temp name (`x.log`, `t~`, below `e/`)
                    // either: the agent reads nothing of such a name's events, by
                    // design, so the other names of a file written through one stay as
                    // they were on the remotes until a full sync (docs/guide.md, "Hard links";
                    // seeds 213 and 1439).
                    Some(_)
                        if std::fs::symlink_metadata(abs(&new))
                            .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 1)
                            && (!st.faults.link_writes
                                || !is_mirrored(&st.excludes, &new, false)) =>
                    {
                        return
                    }
                    Some(_) => true,
                    None => false,
                };
                let len = 1 + st.rng.below(3) as usize;
                let byte = b'a' + st.rng.below(3) as u8;
                let tick = next_tick(&mut st);
                if write_file(&abs(&new), &vec![byte; len], tick).is_err() {
                    return;
                }
                if !existed {
                    st.events.push(file(path(&new), Op::Created));
                }
                st.events.push(file(path(&new), Op::ClosedWrite));
                touch(&mut st, &new);
                for other in other_names(&root, &tree, &new) {
                    touch(&mut st, &other);
                }
                st.history.push(format!(
                    "write {} ({len} x {})",
                    show_path(&new),
                    byte as char
                ));
            }
            // Make a directory.
            40..=54 => {
                if tree.contains_key(&new) || std::fs::create_dir(abs(&new)).is_err() {
                    return;
                }
                touch(&mut st, &new);
                // Or a release moved in from outside the tree, files and all (its
                // name often one a release moved out had).
                let moved = st.rng.chance(30);
                let files = if moved { 1 + st.rng.below(3) } else { 0 };
                for i in 0..files {
                    let f = model::join(&new, NAMES[i as usize].as_bytes());
                    let tick = next_tick(&mut st);
                    let byte = b'a' + st.rng.below(3) as u8;
                    if write_file(&abs(&f), &[byte], tick).is_ok() {
                        touch(&mut st, &f);
                    }
                }
                st.events.push(Event::DirIn {
                    path: path(&new),
                    moved,
                });
                st.history.push(if moved {
                    format!("mv ../build/{0} {0} ({files} files)", show_path(&new))
                } else {
                    format!("mkdir {}", show_path(&new))
                });
            }
            // Delete something (rm, rm -rf).
            55..=69 => {
                let Some(victim) = st.rng.pick(&entries).cloned() else {
                    return;
                };
                remove(&mut st, &tree, &victim);
                st.history.push(format!("rm -rf {}", show_path(&victim)));
            }
            // Rename inside the tree.
            70..=84 => {
                let Some(from) = st.rng.pick(&entries).cloned() else {
                    return;
                };
                let dir = tree.get(&from) == Some(&Node::Dir);
                if new == from || (new.starts_with(&from) && new.get(from.len()) == Some(&b'/')) {
                    return;
                }
                match tree.get(&new) {
                    None => {}
                    Some(Node::Dir) => return,
                    Some(_) if dir => return,
                    Some(_) => {}
                }
                // Two hard links of one file: rename(2) does nothing and the kernel
                // says nothing (both names stay), so no event may be made up for it.
                if same_file(&abs(&from), &abs(&new)) {
                    return;
                }
                if std::fs::rename(abs(&from), abs(&new)).is_err() {
                    return;
                }
                for (k, _) in tree.iter() {
                    if k == &from || (k.starts_with(&from) && k.get(from.len()) == Some(&b'/')) {
                        touch(&mut st, k);
                        let moved = model::join(
                            &new,
                            k[from.len()..].strip_prefix(b"/").unwrap_or_default(),
                        );
                        touch(&mut st, if k == &from { &new } else { &moved });
                    }
                }
                touch(&mut st, &new);
                if st.rng.chance(70) {
                    st.events.push(Event::Renamed {
                        from: path(&from),
                        to: path(&new),
                        dir,
                    });
                } else if dir {
                    st.events.push(Event::Change(Change::DirOut {
                        path: path(&from),
                        moved: true,
                    }));
                    st.events.push(Event::DirIn {
                        path: path(&new),
                        moved: true,
                    });
                } else {
                    st.events.push(file(path(&from), Op::MovedOut));
                    st.events.push(file(path(&new), Op::MovedIn));
                }
                st.history
                    .push(format!("mv {} {}", show_path(&from), show_path(&new)));
            }
            // A file linked into place (`ln a b`: IN_CREATE only, no write).
            85..=89 if st.faults.hard_links && st.rng.chance(40) => {
                let files: Vec<&Vec<u8>> = tree
                    .iter()
                    .filter(|(_, n)| matches!(n, Node::File { .. }))
                    .map(|(k, _)| k)
                    .collect();
                let Some(from) = st.rng.pick(&files).map(|k| (*k).clone()) else {
                    return;
                };
                if tree.contains_key(&new) || std::fs::hard_link(abs(&from), abs(&new)).is_err() {
                    return;
                }
                st.events.push(file(path(&new), Op::Created));
                touch(&mut st, &new);
                st.history.push(format!(
                    "ln {} {} (hard link)",
                    show_path(&from),
                    show_path(&new)
                ));
            }
            // A symlink: dangling, or to an entry of the tree (a file, a directory,
            // through `..`).
            85..=89 => {
                let to: &str = if st.faults.symlinks {
                    ["target", "a", "../a", "b/c", "."][st.rng.below(5) as usize]
                } else {
                    "target"
                };
                if tree.contains_key(&new) || std::os::unix::fs::symlink(to, abs(&new)).is_err() {
                    return;
                }
                st.events.push(file(path(&new), Op::Created));
                touch(&mut st, &new);
                st.history.push(format!("ln -s {to} {}", show_path(&new)));
            }
            // A deploy: rm -rf d && cp -a build/d d, or a release moved out of the tree
            // and another moved in under its name (mv d ../old && mv ../build/d d: one
            // event each, none for what is below).
            _ => {
                let Some(d) = st.rng.pick(&dirs[1..]).cloned() else {
                    return;
                };
                // 0: rm -rf && cp -a; 1: moved out and in; 2: moved out only (another
                // may be moved in by a later step, see "Make a directory").
                let kind = st.rng.below(3);
                let moved = kind > 0;
                if moved {
                    if std::fs::remove_dir_all(abs(&d)).is_err() {
                        return;
                    }
                    let mut prefix = d.clone();
                    prefix.push(b'/');
                    for k in tree.keys() {
                        if *k == d || k.starts_with(&prefix) {
                            touch(&mut st, k);
                        }
                    }
                    st.events.push(Event::Change(Change::DirOut {
                        path: path(&d),
                        moved: true,
                    }));
                } else {
                    remove(&mut st, &tree, &d);
                }
                if kind == 2 {
                    st.history.push(format!("mv {} ../old", show_path(&d)));
                    return;
                }
                if std::fs::create_dir(abs(&d)).is_err() {
                    return;
                }
                touch(&mut st, &d);
                let files = 1 + st.rng.below(3);
                for i in 0..files {
                    let f = model::join(&d, NAMES[i as usize].as_bytes());
                    let tick = next_tick(&mut st);
                    let byte = b'a' + st.rng.below(3) as u8;
                    if write_file(&abs(&f), &[byte], tick).is_ok() {
                        touch(&mut st, &f);
                    }
                }
                st.events.push(Event::DirIn {
                    path: path(&d),
                    moved,
                });
                st.history.push(if moved {
                    format!(
                        "mv {0} ../old && mv ../build/{0} {0} ({files} files)",
                        show_path(&d)
                    )
                } else {
                    format!(
                        "rm -rf {0} && cp -a build/{0} {0} ({files} files)",
                        show_path(&d)
                    )
                });
            }
        }
    }

    /// Delivers a prefix of the kernel queue as one batch (`all`: the whole of it, and
    /// again while something is left: the root found again after its loss).
    pub(super) fn deliver(&self, all: bool) {
        self.deliver_once(all);
        while all && !self.lock().events.is_empty() && !self.broken() {
            self.deliver_once(true);
        }
    }

    pub(super) fn deliver_once(&self, all: bool) {
        let Some(p) = self.pipeline() else {
            return;
        };
        let (changes, n) = {
            let mut st = self.lock();
            if st.events.is_empty() {
                return;
            }
            let n = if all {
                st.events.len()
            } else {
                let len = st.events.len() as u64;
                1 + st.rng.below(len) as usize
            };
            let mut taken: Vec<Event> = st.events.drain(..n).collect();
            let root = st.root.clone();
            // The root's loss ends what this read delivers: every watch is dropped, and
            // what is queued after it belongs to watches that are gone (or to the new
            // root, not watched yet). The watcher then looks for the root again.
            if let Some(i) = taken.iter().position(|e| matches!(e, Event::RootGone)) {
                taken.truncate(i);
                st.events.clear();
                st.health.set_lost(crate::watch::RootState::Replaced);
                st.events.push(Event::RootBack);
                st.history.push("the watcher loses the root".into());
            }
            let mut changes = Vec::new();
            for e in taken {
                if let Event::RootBack = e {
                    // Watched again (the walk sets every watch first): a full sync.
                    match dir_id(&root) {
                        Some(id) => st.health.set_ok(id),
                        None => continue,
                    }
                    changes.push(Change::RootBack);
                } else if let Some(c) = resolve(&root, &st.excludes, e) {
                    changes.push(c);
                }
            }
            (changes, n)
        };
        let shown: Vec<String> = changes.iter().map(show_change).collect();
        self.note(format!("deliver {n} event(s): {}", shown.join(", ")));
        let mut intake = p.intake.lock().unwrap_or_else(|e| e.into_inner());
        let (intake, unclosed) = &mut *intake;
        intake.take(Batch { root: 0, changes }, unclosed);
    }
}

/// The mtime (whole seconds) of the next write: every write a second of its own. rsync
/// compares whole seconds (`--modify-window` 0): a same-size rewrite within the second
/// of the copy a remote has is invisible to its quick check (full syncs, directory
/// renames), a limit of rsync that histories here stay clear of.
pub(super) fn next_tick(st: &mut State) -> u64 {
    st.tick += 1;
    st.tick
}

/// The other names in `tree` of the file at `rel` (hard links: the same device and
/// inode).
pub(super) fn other_names(root: &Path, tree: &Tree, rel: &[u8]) -> Vec<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let id = |rel: &[u8]| {
        let m = std::fs::symlink_metadata(root.join(OsStr::from_bytes(rel))).ok()?;
        (m.file_type().is_file() && m.nlink() > 1).then(|| (m.dev(), m.ino()))
    };
    let Some(me) = id(rel) else {
        return Vec::new();
    };
    tree.iter()
        .filter(|(k, n)| matches!(n, Node::File { .. }) && k.as_slice() != rel)
        .filter(|(k, _)| id(k) == Some(me))
        .map(|(k, _)| k.clone())
        .collect()
}

pub(super) fn touch(st: &mut State, rel: &[u8]) {
    let step = st.step;
    st.changed.insert(rel.to_vec(), step);
}

pub(super) fn write_file(abs: &Path, data: &[u8], tick: u64) -> std::io::Result<()> {
    let f = std::fs::File::create(abs)?;
    std::io::Write::write_all(&mut &f, data)?;
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + tick);
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
}

/// `rm -rf`: removes `victim` and queues the kernel's events, deepest first.
pub(super) fn remove(st: &mut State, tree: &Tree, victim: &[u8]) {
    let abs = st.root.join(OsStr::from_bytes(victim));
    let dir = tree.get(victim) == Some(&Node::Dir);
    let ok = if dir {
        std::fs::remove_dir_all(&abs).is_ok()
    } else {
        std::fs::remove_file(&abs).is_ok()
    };
    if !ok {
        return;
    }
    let mut prefix = victim.to_vec();
    prefix.push(b'/');
    let mut gone: Vec<(&Vec<u8>, &Node)> = tree
        .iter()
        .filter(|(k, _)| k.as_slice() == victim || k.starts_with(&prefix))
        .collect();
    gone.reverse();
    for (k, n) in gone {
        let path = PathBuf::from(OsStr::from_bytes(k));
        st.events.push(if *n == Node::Dir {
            Event::Change(Change::DirOut { path, moved: false })
        } else {
            file(path, Op::Deleted)
        });
        let step = st.step;
        st.changed.insert(k.clone(), step);
    }
}

/// An event as the watcher hands it over when it reads it: a directory that came is
/// walked now (what is mirrored below it, itself first); one gone already is not
/// reported (its watch could not be added).
pub(super) fn resolve(root: &Path, excludes: &Excludes, e: Event) -> Option<Change> {
    let walk = |rel: &Path| -> Option<Vec<PathBuf>> {
        let bytes = rel.as_os_str().as_bytes();
        if model::read_node(root, bytes) != Some(Node::Dir) {
            return None;
        }
        let mut found = vec![rel.to_path_buf()];
        let tree = model::read_tree(&root.join(rel));
        for (k, n) in tree {
            let full = model::join(bytes, &k);
            if is_mirrored(excludes, &full, n == Node::Dir) {
                found.push(PathBuf::from(OsStr::from_bytes(&full)));
            }
        }
        Some(found)
    };
    // The watcher never watches an excluded or temp directory, so nothing in or below
    // one is reported, nor the directory itself coming or going.
    let watched = |p: &Path, is_dir: bool| {
        let b = p.as_os_str().as_bytes();
        let parent = match b.iter().rposition(|&c| c == b'/') {
            Some(i) => is_mirrored(excludes, &b[..i], true),
            None => true,
        };
        parent && (!is_dir || is_mirrored(excludes, b, true))
    };
    match e {
        Event::Change(c) => {
            let keep = match &c {
                Change::File { path, .. } => watched(path, false),
                Change::DirOut { path, .. } => watched(path, true),
                _ => true,
            };
            keep.then_some(c)
        }
        Event::DirIn { path, moved } => {
            if !watched(&path, true) {
                return None;
            }
            let found = walk(&path)?;
            Some(Change::DirIn { path, moved, found })
        }
        // Handled by the delivery itself.
        Event::RootGone | Event::RootBack => None,
        Event::Renamed { from, to, dir } => {
            // A side the watcher does not see is only the other half.
            match (watched(&from, dir), watched(&to, dir)) {
                (true, true) => {}
                (false, false) => return None,
                (true, false) => {
                    return Some(if dir {
                        Change::DirOut {
                            path: from,
                            moved: true,
                        }
                    } else {
                        Change::File {
                            path: from,
                            op: Op::MovedOut,
                        }
                    })
                }
                (false, true) => {
                    return Some(if dir {
                        Change::DirIn {
                            found: walk(&to)?,
                            path: to,
                            moved: true,
                        }
                    } else {
                        Change::File {
                            path: to,
                            op: Op::MovedIn,
                        }
                    })
                }
            }
            let found = if dir {
                walk(&to).unwrap_or_default()
            } else {
                Vec::new()
            };
            Some(Change::Renamed {
                from,
                to,
                dir,
                found,
            })
        }
    }
}

pub(super) fn file(path: PathBuf, op: Op) -> Event {
    Event::Change(Change::File { path, op })
}

/// Are `a` and `b` one file (hard links of one inode)? Read without following a link.
pub(super) fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}
