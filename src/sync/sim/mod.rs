//! A deterministic simulator of the pipeline: one seed decides one history of tree
//! changes, event deliveries, worker steps, push outcomes and faults, and the real
//! intake, queue, workers, argv building and fail log run it against a model of rsync
//! per remote ([`model`]). Invariants are checked by the harness, not read from logs.
//!
//! - The source is a real directory (the workers and argv building stat it, as they do
//!   in the agent); it changes only when the seed says, and every change's events go to
//!   a model kernel queue that the seed delivers in batches of its choosing (a
//!   directory's walk happens at delivery, as the watcher walks when it reads the
//!   event), or drops for an overflow.
//! - Workers are steps: the seed takes one job and runs it through `Mirror`'s own code;
//!   every rsync call lands in [`Runner::run`] here, which may first and afterwards run
//!   more steps (tree changes, deliveries, and other workers' whole pushes, nested): so
//!   pushes overlap each other and the tree changes while they run.
//! - Faults: a remote down and back (connection refused), a push that times out after
//!   its changes landed, a push that hangs until rsync's timeout (nothing or part of it
//!   landed), a kernel queue overflow, an agent stop (the fail log written to a real
//!   file) and a restart from it with or without `-r`, a reload, the watch root
//!   replaced. Which ones a history may draw: [`Faults`] (`SIM_FAULTS`).
//! - Time is the simulator's: it moves only when the seed says, in steps longer than any
//!   backoff, so a failed remote rests until then and its retry is due after.
//!
//! Invariants: after quiesce, every remote equals the source minus excluded and temp
//! names, and nothing is in flight or owed; a remote never holds an excluded or temp
//! name; a barrier (`--wait-synced`'s cookie and checkpoint) that says synced has every
//! path changed before it on every remote at that instant.
//!
//! `SIM_SEED=N` replays one history and prints it; `SIM_HISTORIES=N` runs more
//! (`scripts/sim.sh` runs a million).

mod model;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use self::model::{Node, Tree};
use super::intake::{Intake, Route, Unclosed};
use super::rsync::{Outcome, Runner, Target, Watch};
use super::{FailLog, Mirror, Queue, RemoteId};
use crate::config::{Events, Remote, RsyncOptions};
use crate::filter::{self, Excludes};
use crate::watch::{dir_id, Batch, Change, Op, RootHealth};

/// splitmix64: small, and the same sequence for a seed everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            v.get(self.below(v.len() as u64) as usize)
        }
    }
}

/// A change as the model kernel queue holds it; a directory's walk happens at delivery.
#[derive(Debug, Clone)]
enum Event {
    Change(Change),
    DirIn {
        path: PathBuf,
        moved: bool,
    },
    Renamed {
        from: PathBuf,
        to: PathBuf,
        dir: bool,
    },
    /// The watch root was removed or replaced (its DELETE_SELF or MOVE_SELF): read, the
    /// watcher drops every watch and looks for the root again.
    RootGone,
    /// A directory is at the root's path again and is watched whole.
    RootBack,
}

/// What one history is made of (chosen by the seed).
#[derive(Debug, Clone)]
struct Setup {
    remotes: usize,
    ssh: bool,
    delete: bool,
    batch: usize,
    collapse_at: usize,
}

/// One running pipeline (what a start or restart builds).
struct Pipeline {
    queue: Arc<Queue>,
    mirror: Arc<Mirror>,
    intake: Arc<Mutex<(Intake, Unclosed)>>,
}

struct State {
    rng: Rng,
    setup: Setup,
    /// The faults this history injects.
    faults: Faults,
    /// The watch root's health, as the watcher keeps it (workers check it).
    health: Arc<RootHealth>,
    /// Roots replaced so far (names of the old ones moved aside).
    replaced_roots: u64,
    /// Full syncs run so far (names of the copies of the source their file lists are).
    full_syncs: u64,
    root: PathBuf,
    fail_log: PathBuf,
    targets: Vec<Target>,
    excludes: Excludes,
    remotes: Vec<Tree>,
    down: Vec<bool>,
    events: Vec<Event>,
    history: Vec<String>,
    step: u64,
    /// The step at which each path last changed at the source.
    changed: HashMap<Vec<u8>, u64>,
    /// Barriers asked and not answered: cookie name, the step it was made at.
    barriers: Vec<(Vec<u8>, u64)>,
    cookies: u64,
    /// Nesting of runner calls (steps run inside a push).
    depth: usize,
    stopped: bool,
    /// The simulator's clock: `Instant` at start plus what the seed let pass.
    offset: Duration,
    base: Instant,
    /// mtimes of written files, in whole seconds: several writes share one.
    tick: u64,
    broken: Option<String>,
    steps_left: u64,
    /// Quiesce: no more changes or faults, only deliveries and pushes.
    quiet: bool,
}

/// The shared simulation: the runner's view and the driver's.
struct Sim {
    st: Mutex<State>,
    pipeline: Mutex<Option<Arc<Pipeline>>>,
}

const NAMES: [&str; 7] = ["a", "b", "c", "d", "x.log", "t~", "e"];

impl Sim {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pipeline(&self) -> Option<Arc<Pipeline>> {
        self.pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn now(&self) -> Instant {
        let st = self.lock();
        st.base + st.offset
    }

    fn note(&self, line: String) {
        self.lock().history.push(line);
    }

    fn broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    fn fail(&self, why: String) {
        let mut st = self.lock();
        if st.broken.is_none() {
            st.broken = Some(why);
        }
    }

    /// Builds (or builds again, from the fail log) the pipeline.
    fn start(self: &Arc<Self>, full: bool) {
        let (targets, excludes, setup, fail_log, root, health) = {
            let st = self.lock();
            (
                st.targets.clone(),
                st.excludes.clone(),
                st.setup.clone(),
                st.fail_log.clone(),
                st.root.clone(),
                st.health.clone(),
            )
        };
        let log = match FailLog::load(fail_log.clone(), &targets) {
            Ok(l) => l,
            Err(e) => {
                self.fail(format!("the fail log could not be read back: {e}"));
                FailLog::new(fail_log, targets.len())
            }
        };
        let queue = Arc::new(Queue::new(targets.len(), setup.batch, 2 * targets.len()));
        queue.set_collapse_at(setup.collapse_at);
        let runner: Arc<dyn Runner> = Arc::new(SimRunner(Arc::downgrade(self)));
        let mirror = Arc::new(
            Mirror::new(
                targets.clone(),
                queue.clone(),
                excludes.clone(),
                false,
                log,
                None,
            )
            .simulated(runner),
        );
        mirror.guard_roots(vec![health]);
        let events = Events {
            delete: setup.delete,
            ..Events::default()
        };
        let intake = Intake {
            routes: vec![Route {
                root,
                remotes: (0..targets.len()).map(RemoteId).collect(),
                excludes,
            }],
            events,
            debug: false,
            queue: queue.clone(),
            links: Default::default(),
        };
        // Live mode's start walks the tree (the warm-restart catch-up, or -r's index)
        // and teaches the filter thread the files it found under several names.
        {
            use std::os::unix::fs::MetadataExt;
            let tree = model::read_tree(&intake.routes[0].root);
            let files = tree.iter().filter_map(|(k, n)| {
                let path = PathBuf::from(OsStr::from_bytes(k));
                let m = std::fs::symlink_metadata(intake.routes[0].root.join(&path)).ok()?;
                let kept = is_mirrored(&intake.routes[0].excludes, k, false);
                (kept && matches!(n, Node::File { .. })).then(|| (path, (m.dev(), m.ino())))
            });
            (intake.links.lock().unwrap_or_else(|e| e.into_inner())).learn_walk(0, files);
        }
        mirror.replay();
        if full {
            queue.push_full(&mirror.all());
        }
        *self.pipeline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Pipeline {
            queue,
            mirror,
            intake: Arc::new(Mutex::new((intake, vec![HashMap::new()]))),
        }));
        let mut st = self.lock();
        st.stopped = false;
        st.barriers.clear();
    }

    /// One step chosen by the seed. `inside`: run from within a push.
    fn step(self: &Arc<Self>, inside: bool) {
        let (roll, stopped, faults) = {
            let mut st = self.lock();
            if st.broken.is_some() || st.steps_left == 0 {
                return;
            }
            st.steps_left -= 1;
            st.step += 1;
            let roll = st.rng.below(100);
            if st.quiet {
                // Only what the agent does by itself.
                (if roll < 50 { 35 } else { 55 }, st.stopped, st.faults)
            } else {
                (roll, st.stopped, st.faults)
            }
        };
        match roll {
            0..=34 if !stopped => self.mutate(),
            35..=54 if !stopped => self.deliver(false),
            55..=84 => self.work(),
            85..=87 if !inside => self.advance(),
            88..=91 if faults.outages => self.toggle_remote(),
            92..=94 if !stopped => self.barrier(),
            95..=96 if !stopped && faults.overflows => self.overflow(),
            97 if !stopped && faults.stops => self.stop(),
            98 if !stopped && !inside && faults.reloads => self.reload(),
            99 if !stopped && faults.roots => self.replace_root(),
            _ => {}
        }
        self.check_barriers();
    }

    fn work(self: &Arc<Self>) {
        let Some(p) = self.pipeline() else {
            return;
        };
        let now = self.now();
        p.mirror.run_one_at(now);
    }

    fn advance(&self) {
        // Created files without a CLOSE_WRITE (linked into place) are queued once they
        // have not changed for a second (`Intake::run`); time passes here in steps much
        // longer than that, and nothing writes without closing.
        self.flush_unclosed();
        let mut st = self.lock();
        st.offset += Duration::from_secs(120);
        st.tick += 1;
        st.history.push("time passes (120 s)".into());
    }

    fn toggle_remote(&self) {
        let mut st = self.lock();
        let n = st.remotes.len() as u64;
        let t = st.rng.below(n) as usize;
        st.down[t] = !st.down[t];
        let what = if st.down[t] { "goes down" } else { "is back" };
        st.history.push(format!("remote {t} {what}"));
    }

    fn overflow(&self) {
        let mut st = self.lock();
        // The root's loss is not lost with the events: the watcher also compares the
        // root's device and inode with the path's every few seconds.
        // Nor its finding again (the watcher's own doing, not an event).
        let root: Vec<Event> = st
            .events
            .iter()
            .filter(|e| matches!(e, Event::RootGone | Event::RootBack))
            .cloned()
            .collect();
        st.events.clear();
        st.events.push(Event::Change(Change::Overflow));
        st.events.extend(root);
        st.history.push("kernel queue overflow".into());
    }

    /// The agent stops (SIGTERM): what the kernel queue holds is read first, then the
    /// queue closes and the fail log is written; pushes running go on to their end. The
    /// restart comes once no push runs.
    fn stop(self: &Arc<Self>) {
        self.close("agent stops");
    }

    /// A reload (SIGHUP) with the same config, as live mode does it: the new watches are
    /// set first, the running pipeline stops as at a stop (what the kernel queue holds
    /// is read by it, pending and owed work goes to the fail log) and everything is
    /// built again and replays the fail log; `-r` is not repeated. Only between pushes:
    /// live waits for running pushes before it builds again.
    fn reload(self: &Arc<Self>) {
        self.close("agent reloads");
        self.start(false);
    }

    /// Closes the running pipeline (its fail log written); `what` for the history.
    fn close(self: &Arc<Self>, what: &str) {
        self.deliver(true);
        // The intake queues what waits for a CLOSE_WRITE once the watchers hang up.
        self.flush_unclosed();
        let Some(p) = self.pipeline() else {
            return;
        };
        let n = p.mirror.close();
        let mut st = self.lock();
        st.stopped = true;
        let log = std::fs::read(&st.fail_log).unwrap_or_default();
        let owed = fail_log_lines(&log);
        st.history.push(format!(
            "{what} ({n} entries to the fail log: {})",
            owed.join(" | ")
        ));
    }

    /// The watch root replaced: moved aside (or removed) and another made at its path
    /// with a few files (`mv www www.old && cp -a build www`). The kernel reports the old
    /// root's MOVE_SELF or DELETE_SELF; changes in the new one are not seen until the
    /// watcher finds it (a full sync then covers them), and the workers refuse to push
    /// from it until then (`RootHealth::check`: not the directory watched).
    fn replace_root(&self) {
        let mut st = self.lock();
        let root = st.root.clone();
        let old = model::read_tree(&root);
        st.replaced_roots += 1;
        let aside = root.with_file_name(format!("src.old{}", st.replaced_roots));
        let moved = st.rng.chance(50);
        let gone = if moved {
            std::fs::rename(&root, &aside)
        } else {
            std::fs::remove_dir_all(&root)
        };
        if gone.is_err() || std::fs::create_dir(&root).is_err() {
            st.broken
                .get_or_insert("the simulator could not replace the root".into());
            return;
        }
        for k in old.keys() {
            touch(&mut st, k);
        }
        let files = st.rng.below(3);
        for i in 0..files {
            let f = NAMES[i as usize].as_bytes().to_vec();
            let tick = next_tick(&mut st);
            let byte = b'a' + st.rng.below(3) as u8;
            if write_file(&root.join(OsStr::from_bytes(&f)), &[byte], tick).is_ok() {
                touch(&mut st, &f);
            }
        }
        st.events.push(Event::RootGone);
        st.history.push(format!(
            "watch root replaced ({} the old one, {files} files in the new)",
            if moved { "moved aside" } else { "rm -rf" }
        ));
    }

    /// `--wait-synced`: a cookie made and deleted in the root, its events queued.
    fn barrier(&self) {
        let Some(p) = self.pipeline() else {
            return;
        };
        let mut st = self.lock();
        st.cookies += 1;
        let name = format!("{}sim-{}", filter::COOKIE_PREFIX, st.cookies).into_bytes();
        p.queue.expect_cookie(&name);
        let path = PathBuf::from(OsStr::from_bytes(&name));
        for op in [Op::Created, Op::ClosedWrite, Op::Deleted] {
            st.events.push(Event::Change(Change::File {
                path: path.clone(),
                op,
            }));
        }
        let step = st.step;
        st.barriers.push((name, step));
        let n = st.cookies;
        st.history.push(format!("barrier #{n} asked"));
    }

    /// Every barrier that says synced now: each remote must hold every path as the
    /// source has it, unless the path changed after the barrier was asked.
    fn check_barriers(&self) {
        let Some(p) = self.pipeline() else {
            return;
        };
        let names: Vec<(Vec<u8>, u64)> = self.lock().barriers.clone();
        for (name, asked) in names {
            let n = p.queue.remotes();
            // A closed queue answers "stopping", never synced (see `wait_synced`).
            let synced = p.queue.wait_for(Instant::now(), |v| {
                !v.closed()
                    && v.cookie(&name).is_some_and(|marks| {
                        marks.len() == n && marks.iter().all(|&(t, c)| v.passed(t, c))
                    })
            });
            if !synced {
                continue;
            }
            p.queue.forget_cookie(&name);
            let mut st = self.lock();
            st.barriers.retain(|(b, _)| *b != name);
            let source = model::read_tree(&st.root);
            let expected = mirrored(&st.excludes, &source);
            let mut wrong = None;
            'remotes: for (t, remote) in st.remotes.iter().enumerate() {
                let got = mirrored(&st.excludes, remote);
                let keys: std::collections::BTreeSet<&Vec<u8>> =
                    expected.keys().chain(got.keys()).collect();
                for k in keys {
                    let changed_since = st.changed.get(k).is_some_and(|&s| s >= asked);
                    // Deletes off: the remote keeps what the source deleted.
                    // and a directory where the source has a file or link now (rsync
                    // cannot make way without deleting; the agent warns and goes on).
                    let kept = !st.setup.delete
                        && (!expected.contains_key(k) || got.get(k) == Some(&Node::Dir));
                    if changed_since || kept || expected.get(k) == got.get(k) {
                        continue;
                    }
                    wrong = Some(format!(
                        "barrier asked at step {asked} said synced, but remote {t} has {:?} at \
                         {} where the source has {:?}",
                        got.get(k).map(show),
                        String::from_utf8_lossy(k),
                        expected.get(k).map(show)
                    ));
                    break 'remotes;
                }
            }
            if let Some(why) = wrong {
                st.history.push(format!("barrier said synced: {why}"));
                st.broken.get_or_insert(why);
                return;
            }
            st.history.push("barrier synced (checked)".into());
        }
    }

    fn flush_unclosed(&self) {
        let Some(p) = self.pipeline() else {
            return;
        };
        let mut intake = p.intake.lock().unwrap_or_else(|e| e.into_inner());
        let (intake, unclosed) = &mut *intake;
        intake.flush_unclosed(unclosed);
    }

    /// A change to the source tree, with the events the kernel would queue for it.
    fn mutate(&self) {
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
    fn deliver(&self, all: bool) {
        self.deliver_once(all);
        while all && !self.lock().events.is_empty() && !self.broken() {
            self.deliver_once(true);
        }
    }

    fn deliver_once(&self, all: bool) {
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

/// Does a history's tree hold this as the remote must? Entries below or at an excluded
/// or temp name are left out.
fn mirrored(excludes: &Excludes, tree: &Tree) -> Tree {
    tree.iter()
        .filter(|(k, n)| is_mirrored(excludes, k, **n == Node::Dir))
        .map(|(k, n)| (k.clone(), n.clone()))
        .collect()
}

fn is_mirrored(excludes: &Excludes, rel: &[u8], is_dir: bool) -> bool {
    let mut start = 0;
    for (i, &b) in rel.iter().enumerate() {
        if b == b'/' {
            let name = &rel[start..i];
            if filter::skip(
                excludes,
                name,
                Path::new(OsStr::from_bytes(&rel[..i])),
                true,
            ) {
                return false;
            }
            start = i + 1;
        }
    }
    !filter::skip(
        excludes,
        &rel[start..],
        Path::new(OsStr::from_bytes(rel)),
        is_dir,
    )
}

fn show(n: &Node) -> String {
    match n {
        Node::Dir => "dir".into(),
        Node::File { data, mtime } => {
            format!("file {:?} @{}", String::from_utf8_lossy(data), mtime.0)
        }
        Node::Link(t) => format!("link -> {}", String::from_utf8_lossy(t)),
    }
}

/// The fail log's commands, each as its paths and destination, for the history.
fn fail_log_lines(log: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(log)
        .lines()
        .filter(|l| l.starts_with("cd "))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| w.starts_with("'./") || w.starts_with("./") || w.starts_with("'127"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// A change in a few words, for the printed history.
fn show_change(c: &Change) -> String {
    let p = |p: &Path| p.display().to_string();
    match c {
        Change::File { path, op } => format!("{op:?} {}", p(path)),
        Change::DirIn { path, moved, found } => {
            format!(
                "DirIn{} {} ({} found)",
                if *moved { " moved" } else { "" },
                p(path),
                found.len()
            )
        }
        Change::DirOut { path, moved } => {
            format!("DirOut{} {}", if *moved { " moved" } else { "" }, p(path))
        }
        Change::Renamed {
            from, to, found, ..
        } => {
            format!("Renamed {} -> {} ({} found)", p(from), p(to), found.len())
        }
        other => format!("{other:?}"),
    }
}

fn show_path(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn file(path: PathBuf, op: Op) -> Event {
    Event::Change(Change::File { path, op })
}

/// The mtime (whole seconds) of the next write: every write a second of its own. rsync
/// compares whole seconds (`--modify-window` 0): a same-size rewrite within the second
/// of the copy a remote has is invisible to its quick check (full syncs, directory
/// renames), a limit of rsync that histories here stay clear of.
fn next_tick(st: &mut State) -> u64 {
    st.tick += 1;
    st.tick
}

/// The other names in `tree` of the file at `rel` (hard links: the same device and
/// inode).
fn other_names(root: &Path, tree: &Tree, rel: &[u8]) -> Vec<Vec<u8>> {
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

fn touch(st: &mut State, rel: &[u8]) {
    let step = st.step;
    st.changed.insert(rel.to_vec(), step);
}

fn write_file(abs: &Path, data: &[u8], tick: u64) -> std::io::Result<()> {
    let f = std::fs::File::create(abs)?;
    std::io::Write::write_all(&mut &f, data)?;
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + tick);
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
}

/// `rm -rf`: removes `victim` and queues the kernel's events, deepest first.
fn remove(st: &mut State, tree: &Tree, victim: &[u8]) {
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
fn resolve(root: &Path, excludes: &Excludes, e: Event) -> Option<Change> {
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

/// The runner the simulated mirror calls for every rsync (and remote `mv`).
struct SimRunner(std::sync::Weak<Sim>);

impl Runner for SimRunner {
    fn run(
        &self,
        program: &OsStr,
        _cwd: &Path,
        argv: &[OsString],
        stdin: &[u8],
        _watch: Watch,
    ) -> Outcome {
        let failed = |status: i32, stderr: &str| Outcome {
            status,
            stderr: stderr.to_owned(),
            elapsed: Duration::ZERO,
        };
        let Some(sim) = self.0.upgrade() else {
            return failed(-1, "the simulation is over");
        };
        // A full sync reads the source as its file list when it starts; what it makes
        // on the remote (deleting there what its list lacks, sending what its list
        // holds) lands after the steps run meanwhile: the live pushes beside it
        // included (see `Ledger`'s module doc). The harshest case of rsync's own
        // timing, which lists and deletes directory by directory as it goes.
        let list = is_full_sync(argv).then(|| sim.file_list()).flatten();
        // Other steps while this call starts (other pushes, changes, deliveries).
        let before = {
            let mut st = sim.lock();
            st.depth += 1;
            if st.depth > 3 {
                0
            } else {
                st.rng.below(3)
            }
        };
        for _ in 0..before {
            sim.step(true);
        }
        let ran = sim.apply(program, argv, stdin, list.as_ref().map(|d| d.path()));
        drop(list);
        let after = {
            let mut st = sim.lock();
            if st.depth > 3 {
                0
            } else {
                st.rng.below(2)
            }
        };
        for _ in 0..after {
            sim.step(true);
        }
        sim.lock().depth -= 1;
        ran
    }
}

impl Sim {
    /// A copy of the source as it is now, for a full sync's file list (see
    /// `SimRunner::run`); `None` when there is no source to copy (the root replaced:
    /// the call then reads the source as it is when it lands).
    fn file_list(&self) -> Option<tempfile::TempDir> {
        let mut st = self.lock();
        st.full_syncs += 1;
        let n = st.full_syncs;
        let parent = st.root.parent()?.to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix(&format!("list{n}-"))
            .tempdir_in(parent)
            .ok()?;
        copy_tree(&st.root, &dir.path().join("src")).ok()?;
        st.history
            .push(format!("  (full sync #{n} lists the source)"));
        Some(dir)
    }

    /// One command against the model remote it names; a full sync reads its file list
    /// from `list` (a copy of the source made when it started) when given.
    fn apply(
        &self,
        program: &OsStr,
        argv: &[OsString],
        stdin: &[u8],
        list: Option<&Path>,
    ) -> Outcome {
        let mut st = self.lock();
        let outcome = |status: i32, stderr: String| Outcome {
            status,
            stderr,
            elapsed: Duration::ZERO,
        };
        let ssh = program != "rsync";
        // Which remote: the destination (rsync) or the host (ssh mv).
        let t = if ssh {
            st.targets
                .iter()
                .position(|t| argv.iter().any(|a| a.as_bytes() == t.remote.ip.as_bytes()))
        } else {
            let dest = argv
                .last()
                .map(|a| a.as_bytes().to_vec())
                .unwrap_or_default();
            let (head, _) = model::split_dest(&dest);
            st.targets.iter().position(|t| t.dest().as_bytes() == head)
        };
        let Some(t) = t else {
            let why = format!("a command for no known remote: {program:?} {argv:?}");
            st.broken.get_or_insert(why.clone());
            return outcome(1, why);
        };
        let line = shown(program, argv);
        if st.down[t] {
            st.history.push(format!("  remote {t} refuses: {line}"));
            return outcome(
                if ssh { 255 } else { 10 },
                "rsync: failed to connect to 127.0.0.1: Connection refused (111)".into(),
            );
        }
        let root = list.map_or_else(|| st.root.clone(), |l| l.join("src"));
        if st.faults.hangs && !st.quiet && st.rng.chance(2) {
            // The call hangs: rsync's `--timeout` ends it (exit 30), a remote `mv` is
            // killed by the agent (-1). Nothing landed, or part of it: rsync's entries
            // up to some point of its file list (taken here in path order, each parent
            // before what is below it), the `mv` whole.
            let partial = st.rng.chance(50);
            let mut landed = 0;
            if partial {
                let mut after = st.remotes[t].clone();
                let ran = if ssh {
                    model::remote_mv(&mut after, argv)
                } else {
                    model::rsync(&root, &mut after, argv, stdin)
                };
                if ran.stderr.starts_with("model:") {
                    let why = format!("{}: {line}", ran.stderr);
                    st.broken.get_or_insert(why);
                }
                if ssh {
                    landed = usize::from(st.remotes[t] != after);
                    st.remotes[t] = after;
                } else {
                    let changed: Vec<Vec<u8>> = st.remotes[t]
                        .keys()
                        .chain(after.keys())
                        .filter(|k| st.remotes[t].get(*k) != after.get(*k))
                        .cloned()
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let n = st.rng.below(changed.len() as u64 + 1) as usize;
                    for k in changed.into_iter().take(n) {
                        land(&mut st.remotes[t], &after, &k);
                        landed += 1;
                    }
                }
            }
            let (status, stderr) = if ssh {
                (-1, "ssh killed after 60s without an answer".to_owned())
            } else {
                (
                    30,
                    "[receiver] io timeout after 60 seconds -- exiting\nrsync error: timeout in data send/receive (code 30)".to_owned(),
                )
            };
            st.history.push(format!(
                "  remote {t} hangs until the timeout, exit {status} ({landed} entries landed): {line}"
            ));
            return outcome(status, stderr);
        }
        let ran = if ssh {
            model::remote_mv(&mut st.remotes[t], argv)
        } else {
            model::rsync(&root, &mut st.remotes[t], argv, stdin)
        };
        if ran.stderr.starts_with("model:") {
            let why = format!("{}: {line}", ran.stderr);
            st.broken.get_or_insert(why);
        }
        // Landed, but the connection timed out before rsync could say so.
        let status = if ran.status == 0 && !st.quiet && st.faults.timeouts && st.rng.chance(3) {
            30
        } else {
            ran.status
        };
        st.history
            .push(format!("  remote {t} exit {status}: {line}"));
        let excludes = st.excludes.clone();
        if let Some(k) = st.remotes[t]
            .iter()
            .find(|(k, n)| !is_mirrored(&excludes, k, **n == Node::Dir))
            .map(|(k, _)| k.clone())
        {
            let why = format!(
                "remote {t} holds {}, an excluded or temp name",
                String::from_utf8_lossy(&k)
            );
            st.broken.get_or_insert(why);
        }
        outcome(status, ran.stderr)
    }
}

/// A full sync's command line (`./` whole, recursive), not a push of paths or a prune.
fn is_full_sync(argv: &[OsString]) -> bool {
    argv.iter().any(|a| a == "./")
        && !argv
            .iter()
            .any(|a| a == "--no-recursive" || a == "--existing")
}

/// Copies the tree at `from` to `to` (made), keeping files' contents and mtimes and
/// links' targets, as the model reads them.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let m = std::fs::symlink_metadata(&src)?;
        if m.is_dir() {
            copy_tree(&src, &dst)?;
        } else if m.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if m.is_file() {
            std::fs::copy(&src, &dst)?;
            let f = std::fs::File::options().write(true).open(&dst)?;
            f.set_times(
                std::fs::FileTimes::new()
                    .set_modified(m.modified()?)
                    .set_accessed(m.modified()?),
            )?;
        }
    }
    Ok(())
}

/// One entry of `after` made so in `remote` (a partial transfer): gone, or made, in
/// place of what was there and what was below it; not below what is not a directory.
fn land(remote: &mut Tree, after: &Tree, k: &[u8]) {
    match after.get(k) {
        None => model::remove_tree(remote, k),
        Some(n) => {
            let parent_ok = match k.iter().rposition(|&b| b == b'/') {
                Some(i) => remote.get(&k[..i]) == Some(&Node::Dir),
                None => true,
            };
            if !parent_ok {
                return;
            }
            if !(remote.get(k) == Some(&Node::Dir) && *n == Node::Dir) {
                model::remove_tree(remote, k);
            }
            remote.insert(k.to_vec(), n.clone());
        }
    }
}

fn shown(program: &OsStr, argv: &[OsString]) -> String {
    let words: Vec<String> = argv
        .iter()
        .filter(|a| {
            let b = a.as_bytes();
            !(b.starts_with(b"--timeout")
                || b.starts_with(b"--contimeout")
                || b.starts_with(b"--sockopts")
                || b.starts_with(b"--exclude=")
                || b == b"-e"
                || b.starts_with(b"ssh"))
        })
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", program.to_string_lossy(), words.join(" "))
}

/// Which faults histories inject, and which parts of the model they may draw
/// (`SIM_FAULTS`: a comma-separated subset of the names below, or `all`, the default;
/// see [`faults`]). A seed's history depends on this set: a part not drawn
/// takes nothing from the seed's random sequence.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// `stops`: the agent stops (fail log written) and starts again, with or without -r.
    stops: bool,
    /// `overflows`: the kernel queue overflows.
    overflows: bool,
    /// `outages`: a remote goes down (connection refused) and comes back.
    outages: bool,
    /// `timeouts`: a push lands and then times out (exit 30).
    timeouts: bool,
    /// `hangs`: a push hangs until rsync's timeout ends it (exit 30) with nothing or
    /// part of it landed; a remote `mv` until the agent kills it, done or not.
    hangs: bool,
    /// `reloads`: a reload (SIGHUP, the same config): the pipeline built again.
    reloads: bool,
    /// `roots`: the watch root removed or moved aside and another made at its path.
    roots: bool,
    /// `dironly`: a directory-only exclude (`e/`) beside `*.log`.
    dir_only: bool,
    /// `hardlinks`: files linked into place (`ln a b`).
    hard_links: bool,
    /// `symlinks`: symlinks to entries of the tree (to files, directories, through
    /// `..`), not only dangling ones.
    symlinks: bool,
    /// `linkwrites`: writes through a name of a file that has other names (hard links):
    /// every name gets the new content, the kernel's event names only the one written.
    /// Not in the default mix yet: its open seeds are in docs/sim-open-seeds.md.
    link_writes: bool,
}

impl Faults {
    /// Stops, overflows and timeouts: the mix the seeds named in regression tests were
    /// found with (a seed's history depends on which faults it may draw).
    pub const BASE: Faults = Faults {
        stops: true,
        overflows: true,
        outages: false,
        timeouts: true,
        hangs: false,
        reloads: false,
        roots: false,
        dir_only: false,
        hard_links: false,
        symlinks: false,
        link_writes: false,
    };

    /// What the test run draws: every fault and part of the model.
    pub const DEFAULT: Faults = Faults {
        outages: true,
        hangs: true,
        reloads: true,
        roots: true,
        dir_only: true,
        hard_links: true,
        symlinks: true,
        ..Faults::BASE
    };
}

pub fn faults() -> Faults {
    static F: std::sync::OnceLock<Faults> = std::sync::OnceLock::new();
    *F.get_or_init(|| match std::env::var("SIM_FAULTS") {
        Ok(v) => {
            let on = |n: &str| v.split(',').any(|w| w.trim() == n || w.trim() == "all");
            Faults {
                stops: on("stops"),
                overflows: on("overflows"),
                outages: on("outages"),
                timeouts: on("timeouts"),
                hangs: on("hangs"),
                reloads: on("reloads"),
                roots: on("roots"),
                dir_only: on("dironly"),
                hard_links: on("hardlinks"),
                symlinks: on("symlinks"),
                link_writes: on("linkwrites"),
            }
        }
        // Every fault (the directory-only exclude and symlinks to entries joined once
        // their seeds, 330 and 245 among them, were fixed).
        Err(_) => Faults::DEFAULT,
    })
}

/// Are `a` and `b` one file (hard links of one inode)? Read without following a link.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// What one history ended in.
pub struct Ended {
    pub broken: Option<String>,
    pub history: Vec<String>,
}

/// Runs the history of one seed, with the faults `SIM_FAULTS` names.
pub fn history(seed: u64, steps: u64) -> Ended {
    history_with(seed, steps, faults())
}

/// Runs the history of one seed with these faults.
pub fn history_with(seed: u64, steps: u64, faults: Faults) -> Ended {
    let mut rng = Rng(seed);
    let setup = Setup {
        remotes: 1 + rng.below(2) as usize,
        ssh: rng.chance(40),
        delete: rng.chance(85),
        batch: [1, 2, 100][rng.below(3) as usize],
        collapse_at: [0, 3, 5][rng.below(3) as usize],
    };
    let dir = match tempfile::Builder::new()
        .prefix("sersync2-sim-")
        .tempdir_in(sim_dir())
    {
        Ok(d) => d,
        Err(e) => {
            return Ended {
                broken: Some(format!("no temp directory: {e}")),
                history: Vec::new(),
            }
        }
    };
    let root = dir.path().join("src");
    if let Err(e) = std::fs::create_dir(&root) {
        return Ended {
            broken: Some(format!("cannot make the source: {e}")),
            history: Vec::new(),
        };
    }
    let opts = RsyncOptions {
        params: vec!["-a".into()],
        auth: None,
        port: None,
        timeout: None,
        ssh: setup.ssh.then(|| "ssh".to_owned()),
        batch: setup.batch,
    };
    let targets: Vec<Target> = (0..setup.remotes)
        .map(|i| Target {
            root: root.clone(),
            remote: Remote {
                ip: format!("127.0.0.{}", i + 1),
                name: format!("m{i}"),
            },
            opts: opts.clone(),
            delete: setup.delete,
            full_excludes: Vec::new(),
            filter_globs: Vec::new(),
            own: Vec::new(),
            ssh_control: None,
        })
        .collect();
    let mut rules = vec![r"^(?:(.*)\.log)$"];
    if faults.dir_only {
        // A directory named `e` is excluded, a file so named is not.
        rules.push(r"^(?:(.*/)?e/)$");
    }
    let excludes = match rules
        .into_iter()
        .map(regex::bytes::Regex::new)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(r) => Excludes::new(r),
        Err(e) => {
            return Ended {
                broken: Some(format!("bad regex: {e}")),
                history: Vec::new(),
            }
        }
    };
    let mut targets = targets;
    let globs = excludes.rsync_globs();
    for t in &mut targets {
        t.filter_globs = globs.clone();
    }
    let history = vec![format!("seed {seed}: {setup:?}")];
    let health = Arc::new(RootHealth::new(root.clone()));
    match dir_id(&root) {
        Some(id) => health.set_ok(id),
        None => {
            return Ended {
                broken: Some("the source is not a directory".into()),
                history,
            }
        }
    }
    let sim = Arc::new(Sim {
        st: Mutex::new(State {
            rng,
            faults,
            health,
            replaced_roots: 0,
            full_syncs: 0,
            root: root.clone(),
            fail_log: dir.path().join("fail.sh"),
            remotes: vec![Tree::new(); setup.remotes],
            down: vec![false; setup.remotes],
            setup,
            targets,
            excludes,
            events: Vec::new(),
            history,
            step: 0,
            changed: HashMap::new(),
            barriers: Vec::new(),
            cookies: 0,
            depth: 0,
            stopped: false,
            offset: Duration::ZERO,
            base: Instant::now(),
            tick: 0,
            broken: None,
            steps_left: steps,
            quiet: false,
        }),
        pipeline: Mutex::new(None),
    });
    sim.start(false);
    loop {
        let (left, stopped, broken) = {
            let st = sim.lock();
            (st.steps_left, st.stopped, st.broken.is_some())
        };
        if left == 0 || broken {
            break;
        }
        if stopped {
            let full = sim.lock().rng.chance(50);
            sim.note(format!(
                "agent starts again{}",
                if full { " with -r" } else { "" }
            ));
            sim.start(full);
        }
        sim.step(false);
    }
    if !sim.broken() {
        sim.quiesce();
    }
    let ended = {
        let mut st = sim.lock();
        Ended {
            broken: st.broken.take(),
            history: std::mem::take(&mut st.history),
        }
    };
    // The pipeline holds the runner, which holds the simulation weakly: no cycle.
    drop(sim);
    ended
}

/// Where histories keep their trees: tmpfs when there is one.
fn sim_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

impl Sim {
    /// No more changes; every remote up; the agent runs until nothing is left to do.
    /// Then every remote must equal the source.
    fn quiesce(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            st.steps_left = u64::MAX;
            st.quiet = true;
            for d in st.down.iter_mut() {
                *d = false;
            }
            st.history
                .push("quiesce: every remote up, no more changes".into());
        }
        if self.lock().stopped {
            self.start(false);
        }
        self.deliver(true);
        let Some(p) = self.pipeline() else {
            return;
        };
        let mut pushes = 0;
        for _ in 0..200 {
            // What waits for a CLOSE_WRITE is queued by then (see `advance`).
            self.flush_unclosed();
            while !self.broken() && pushes < 5_000 && p.mirror.run_one_at(self.now()) {
                pushes += 1;
            }
            if pushes >= 5_000 {
                self.fail("quiesce: 5,000 pushes and still not idle (a livelock)".into());
                return;
            }
            if p.queue.is_idle() && p.mirror.owed() == 0 {
                break;
            }
            self.advance();
        }
        self.lock().steps_left = 0;
        if self.broken() {
            return;
        }
        self.check_barriers();
        let mut st = self.lock();
        if !p.queue.is_idle() || p.mirror.owed() > 0 {
            let log = std::fs::read(&st.fail_log).unwrap_or_default();
            let owed = fail_log_lines(&log);
            let why = format!(
                "quiesce: still busy or owing after 200 rounds (owed {}, idle {}; fail log: {})",
                p.mirror.owed(),
                p.queue.is_idle(),
                owed.join(" | ")
            );
            st.broken.get_or_insert(why);
            return;
        }
        let source = model::read_tree(&st.root);
        let expected = mirrored(&st.excludes, &source);
        for (t, remote) in st.remotes.iter().enumerate() {
            let got = mirrored(&st.excludes, remote);
            let diff: Vec<String> = expected
                .keys()
                .chain(got.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| expected.get(*k) != got.get(*k))
                // Deletes off: the remote keeps what the source deleted, and a directory
                // where the source has a file or link now.
                .filter(|k| {
                    st.setup.delete
                        || (expected.contains_key(*k) && got.get(*k) != Some(&Node::Dir))
                })
                .take(5)
                .map(|k| {
                    format!(
                        "{}: source {:?}, remote {:?}",
                        String::from_utf8_lossy(k),
                        expected.get(k).map(show),
                        got.get(k).map(show)
                    )
                })
                .collect();
            if !diff.is_empty() {
                let why = format!("after quiesce remote {t} differs: {}", diff.join("; "));
                st.broken.get_or_insert(why);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod differential;
