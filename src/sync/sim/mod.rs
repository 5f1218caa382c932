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

mod changes;
mod faults;
mod invariants;
mod model;
mod print;
mod runner;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use self::invariants::is_mirrored;
use self::model::{Node, Tree};
use self::print::{show, shown};
use self::runner::SimRunner;
use super::index::{self, Found, Recorder};
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
    /// With `brake`: the brake on mass deletes (a small count, settle 0 or 60 s).
    brake: Option<crate::config::DeleteBrake>,
}

/// One running pipeline (what a start or restart builds).
struct Pipeline {
    queue: Arc<Queue>,
    mirror: Arc<Mirror>,
    intake: Arc<Mutex<(Intake, Unclosed)>>,
    /// The warm-restart index it records in (`warm`: see [`Faults`]).
    index: Option<Arc<Recorder>>,
}

/// How the agent last stopped (`warm`).
#[derive(Debug, Clone)]
enum Stopped {
    /// SIGTERM (or a reload): the index is written as stopped once its pushes ended.
    Term,
    /// SIGKILL: nothing is written after it. The agent's files as they were at the
    /// kill (their bytes, or `None` when absent), put back before the next start:
    /// what the dead pipeline's pushes still running do after it never reaches them.
    Kill(Vec<(PathBuf, Option<Vec<u8>>)>),
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
    /// With `warm`: how the agent stopped, until it starts again.
    how: Option<Stopped>,
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
        let fail_log_path = fail_log.clone();
        let log = match FailLog::load(fail_log.clone(), &targets) {
            Ok(l) => l,
            Err(e) => {
                self.fail(format!("the fail log could not be read back: {e}"));
                FailLog::new(fail_log, targets.len())
            }
        };
        let queue = Arc::new(Queue::new(targets.len(), setup.batch, 2 * targets.len()));
        queue.set_collapse_at(setup.collapse_at);
        if setup.brake.is_some() {
            queue.set_brake(
                setup.brake,
                targets.iter().map(Target::label).collect(),
                &fail_log_path,
            );
        }
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
        let big_files = self.lock().faults.big_files;
        if big_files {
            // In place too for a share of the histories, by the setup (no draw: the
            // history's random sequence stays as it was).
            mirror.push_big_files(Some(crate::config::BigFiles {
                size: 2,
                append: true,
                inplace: setup.collapse_at.is_multiple_of(2),
            }));
        }
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
            hard_links: self.lock().hard_links(),
        };
        let index = if self.lock().faults.warm {
            // As live mode starts (`modes::live::run`): the index loaded, the tree
            // walked and compared with it, what differs queued (or under -r the walk
            // kept as the index to be); the files found under several names taught to
            // the filter thread; then -r's full syncs and the fail log's replay. A new
            // agent watches the root it finds.
            if let Some(id) = dir_id(&intake.routes[0].root) {
                self.lock().health.set_ok(id);
            }
            let roots = vec![(
                intake.routes[0].root.clone(),
                intake.routes[0].excludes.clone(),
            )];
            let (rec, _, counted) = crate::modes::warm::start(
                &fail_log_path,
                &roots,
                &mirror,
                full,
                false,
                &intake.links,
            );
            if full {
                crate::modes::warm::full_syncs(&mirror, &counted);
            }
            if mirror.owed() > 0 {
                mirror.replay();
            }
            Some(rec)
        } else {
            None
        };
        // Live mode's start walks the tree (the warm-restart catch-up, or -r's index)
        // and teaches the filter thread the files it found under several names.
        if index.is_none() {
            use std::os::unix::fs::MetadataExt;
            let tree = model::read_tree(&intake.routes[0].root);
            let files = tree.iter().filter_map(|(k, n)| {
                let path = PathBuf::from(OsStr::from_bytes(k));
                let m = std::fs::symlink_metadata(intake.routes[0].root.join(&path)).ok()?;
                let kept = is_mirrored(&intake.routes[0].excludes, k, false);
                (kept && matches!(n, Node::File { .. })).then(|| (path, (m.dev(), m.ino())))
            });
            (intake.links.lock().unwrap_or_else(|e| e.into_inner())).learn_walk(0, files);
            mirror.replay();
            if full {
                queue.push_full(&mirror.all());
            }
        }
        *self.pipeline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Pipeline {
            queue,
            mirror,
            intake: Arc::new(Mutex::new((intake, vec![HashMap::new()]))),
            index,
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
            // The index's checkpoint thread runs beside everything, pushes included.
            let checkpoint = st.faults.warm && !st.stopped && st.rng.chance(8);
            drop(st);
            if checkpoint {
                self.checkpoint();
            }
            let mut st = self.lock();
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
        // The index is checkpointed every 5 s while anything changed.
        if self.lock().faults.warm && !self.lock().stopped {
            self.checkpoint();
        }
        let mut st = self.lock();
        st.offset += Duration::from_secs(120);
        st.tick += 1;
        st.history.push("time passes (120 s)".into());
        let release = st.setup.brake.is_some() && !st.stopped && st.rng.chance(35);
        drop(st);
        if release {
            self.release_held();
        }
    }

    /// The operator releases what the brake holds (`--release-deletes`).
    /// The operator's `--release-deletes`: true when something was held.
    fn release_held(&self) -> bool {
        let Some(p) = self.pipeline() else {
            return false;
        };
        let released = p.mirror.release_deletes();
        let any = !released.is_empty();
        if any {
            let what: Vec<String> = (released.iter())
                .map(|r| {
                    format!(
                        "{}: {}{}",
                        r.remote,
                        r.deletes,
                        if r.full { " + full" } else { "" }
                    )
                })
                .collect();
            self.note(format!(
                "operator releases held deletes ({})",
                what.join(", ")
            ));
        }
        any
    }
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
    /// `warm`: every start goes through the agent's warm-restart code (the index
    /// loaded from its file and journal, the tree walked and compared with it, what
    /// differs queued; `modes::warm::start`), checkpoints at any step, pushes
    /// recorded in it; a stop is a SIGTERM (the index written at the end) or a
    /// SIGKILL (nothing written after it), the tree changes while no agent runs (a
    /// directory renamed, a file rewritten with its mtime restored), and the index or
    /// its journal may be torn before the start (the agent falls back to a full sync).
    warm: bool,
    /// `bigfiles`: `<bigFiles>` on with a threshold of 2 bytes (appends, and in place
    /// for every other history): most files go in calls of their own, as appends
    /// (`--append-verify`) when they grew since their last push landed, or in place.
    /// Not in the default mix: the seeds of the mix stay as they were.
    big_files: bool,
    /// `brake`: the brake on mass deletes on, with a count of 2 to 5 deletes and a
    /// settle time of 0 or 60 s: deletes are held, a full sync of an empty root runs
    /// with `--max-delete=0`, the operator releases what is held now and then (as time
    /// passes) and at quiesce; held deletes go through stops (the fail log's `#held`).
    brake: bool,
    /// `rules`: a random `<filter>` rule list (`<rule>`s: includes, excludes, anchored,
    /// `**`, `***`, directory-only, `+ /x/***` then `- *`; `sim::rule_lists`) given to
    /// the agent's filter and to rsync (`--filter=`), as a config gives them. Drawn
    /// from a sequence of its own: the rest of a seed's history stays as it was. Not
    /// in the default mix: its own test runs it.
    rules: bool,
    /// `reads`: a push of paths reads the source when it starts (rsync's sender
    /// builds its file list first) and lands after other steps ran (changes, other
    /// pushes), as a full sync always does here: what the call sends or deletes is the
    /// tree as it was when it started. Not in the default mix: its own test runs it.
    reads: bool,
    /// `refusing`: every remote's rsync refuses the entries `--delete-missing-args`
    /// sends (exit 2, nothing changed: Debian's 3.2.7-1+deb12u5, upstream 3.4.3), so
    /// the agent finds that out and deletes through listings (`rsync::missing`). Takes
    /// nothing from the seed's random sequence. Not in the default mix: its own test
    /// runs it.
    refusing: bool,
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
        warm: false,
        big_files: false,
        brake: false,
        rules: false,
        reads: false,
        refusing: false,
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
                warm: on("warm"),
                big_files: on("bigfiles"),
                brake: on("brake"),
                rules: on("rules"),
                reads: on("reads"),
                refusing: on("refusing"),
            }
        }
        // Every fault (the directory-only exclude and symlinks to entries joined once
        // their seeds, 330 and 245 among them, were fixed).
        Err(_) => Faults::DEFAULT,
    })
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
        brake: None,
    };
    let mut setup = setup;
    if faults.brake {
        setup.brake = Some(crate::config::DeleteBrake {
            percent: 0,
            count: 2 + rng.below(4) as usize,
            window: Duration::from_secs(600),
            settle: Duration::from_secs([0, 60][rng.below(2) as usize]),
        });
    }
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
        // With `linkwrites`, -H: the names of a file must be one file on the remotes too.
        params: vec![if faults.link_writes { "-aH" } else { "-a" }.into()],
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
            filter_rules: Vec::new(),
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
    let mut history = vec![format!("seed {seed}: {setup:?}")];
    let mut excludes = excludes;
    if faults.rules {
        let texts = rule_lists::random_rule_texts(&mut Rng(seed ^ 0x5255_4c45_535f_5349));
        let rules = match rule_lists::parse_rules(&texts) {
            Ok(r) => r,
            Err(e) => {
                return Ended {
                    broken: Some(format!("a rule the agent refuses: {e}")),
                    history,
                }
            }
        };
        for t in &mut targets {
            t.filter_rules = rules.rsync_args();
        }
        excludes = excludes.with_rules(rules);
        history.push(format!("filter rules: {}", texts.join(", ")));
    }
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
            how: None,
            offset: Duration::ZERO,
            base: Instant::now(),
            tick: 0,
            broken: None,
            steps_left: steps,
            quiet: false,
        }),
        pipeline: Mutex::new(None),
    });
    // With `warm`, the first start makes the index half the time (-r, as the README
    // tells): without it, the index stays off until a -r.
    let first_full = {
        let mut st = sim.lock();
        st.faults.warm && st.rng.chance(50)
    };
    sim.start(first_full);
    loop {
        let (left, stopped, broken) = {
            let st = sim.lock();
            (st.steps_left, st.stopped, st.broken.is_some())
        };
        if left == 0 || broken {
            break;
        }
        if stopped && sim.lock().faults.warm {
            sim.restart();
        } else if stopped {
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod differential;

mod rule_lists;
