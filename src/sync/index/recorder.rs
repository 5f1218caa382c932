//! The [`Recorder`]: loads the index at start and enters what every remote of a root
//! has had land, through the journal, into the next snapshot.

use super::diff::below;
use super::entries::{agreed, below_mut, enter, entered_as, supersede};
use super::tree::UNKNOWN;
use super::walk::Looker;
use super::*;

/// One path pushed to some of a root's remotes with this metadata.
pub(super) struct Pending {
    pub(super) meta: Option<Meta>,
    /// Positions (in the root's remotes) it landed on.
    pub(super) done: Vec<bool>,
}

pub(super) struct RootState {
    root: PathBuf,
    /// The targets of this root, in config order.
    targets: Vec<RemoteId>,
    labels: Vec<String>,
    /// `None`: not level (no index at start): nothing is recorded.
    tree: Option<Tree>,
    /// Under `-r`: which remotes' full syncs landed; the tree is written once all have.
    rebuilding: Option<Vec<bool>>,
    /// Ordered, so that what is below a path is one range.
    pending: BTreeMap<PathBuf, Pending>,
    /// While rebuilding: the tree the index held for the root before (level, or not
    /// trusted at start), written as its entry until the rebuild lands, with no
    /// remotes (level with none of them), so no start trusts it; a start compares the
    /// tree walked with it for the files rsync's quick check cannot see (the blind
    /// ones, `Diff::blind`), which a full sync would skip.
    kept: Option<Tree>,
    /// The root's entry read at start from an index not trusted (see `kept`).
    untrusted: Option<Tree>,
    /// The root's excludes, for the walks a rebuild takes.
    excludes: Excludes,
    /// While rebuilding, per remote (by position): the tree walked when its full sync
    /// last began, what that full sync sends (see [`Recorder::announce`]).
    walks: Vec<Option<Tree>>,
    /// While rebuilding: the walks of the full syncs that landed, as one (see
    /// [`agreed`]).
    landed_walks: Option<Tree>,
    /// Found not trusted at start with its journal read: the paths the last run's
    /// pushes began to change after its last checkpoint (`true`: a directory's listing),
    /// for [`Recorder::journal_blind`].
    journaled: Vec<(PathBuf, bool)>,
    /// The index was found not trusted at start ([`Found::Unclean`]) and the root has
    /// not been level since: its full syncs compare mtimes to the nanosecond (see
    /// [`Recorder::exact_full`]).
    exact: bool,
}

impl RootState {
    fn level(&self) -> bool {
        self.tree.is_some() && self.rebuilding.is_none()
    }
}

pub(super) struct State {
    roots: Vec<RootState>,
    /// Changed since the last checkpoint.
    dirty: bool,
}

/// The journal's side of the recorder: what is in the file, what pushes run.
pub(super) struct Journal {
    path: PathBuf,
    /// Open for appending; `None` before [`Recorder::begin`] or after a write failed
    /// (the file is then removed: an index marked running without its journal is not
    /// trusted).
    file: Option<std::fs::File>,
    /// The stamp of the next checkpoint of the index.
    next: Stamp,
    /// What the file on disk holds (so that a record is appended once).
    in_file: HashSet<Rec>,
    /// Begun since the last checkpoint's snapshot.
    since: HashSet<Rec>,
    /// Running at the last checkpoint's snapshot.
    carry: Vec<Rec>,
    /// Pushes running: how many of each.
    running: HashMap<Rec, u32>,
    /// Listings a killed agent's journal named, to be pushed again: kept in every
    /// journal until a push of them begins.
    relist: HashSet<Rec>,
    /// Full syncs begun for a level root outside a rebuild (after a kernel queue
    /// overflow, the root found again, a fail log's): what they sent is not in the
    /// index (a path the remotes got from them and the index lacks would stay there
    /// after it is deleted while no agent runs). Kept in every journal, the file marked
    /// as written while running even at the stop, so that the next start does a full
    /// sync and rebuilds the index.
    full_ran: HashSet<Rec>,
    /// A write failed and was said; said again when one works.
    failing: bool,
}

/// The live index: what pushes landed, checkpointed to its file, and its journal of
/// what pushes began since.
pub struct Recorder {
    path: PathBuf,
    state: Mutex<State>,
    journal: Mutex<Journal>,
    /// One checkpoint at a time (the index and then its journal).
    writing: Mutex<()>,
}

/// A number for this run, so that a journal of another run is never taken for this
/// one's.
pub(super) fn run_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 40) | 1
}

/// What `job` may change on a remote of `root`.
pub(super) fn recs_of(root: &Path, job: &Job) -> Vec<Rec> {
    let rec = |what| Rec {
        root: root.to_path_buf(),
        what,
    };
    match job {
        Job::Full => vec![rec(What::Full)],
        // A rename: its old path (a directory's listing), its new one and below.
        _ => (job.plain_paths().into_iter())
            .map(|e| {
                rec(if e.listing {
                    What::Listing(e.path)
                } else {
                    What::Path(e.path)
                })
            })
            .collect(),
    }
}

/// A push begun (see [`Recorder::announce`]); its end is noted when this is dropped,
/// whatever the push's outcome.
pub struct Announced<'a> {
    rec: &'a Recorder,
    recs: Vec<Rec>,
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        let mut j = self.rec.journal();
        for r in self.recs.drain(..) {
            if let Some(n) = j.running.get_mut(&r) {
                *n -= 1;
                if *n == 0 {
                    j.running.remove(&r);
                }
            }
        }
    }
}

impl Recorder {
    /// Loads the index at `path` for these targets. Returns it with, per watch root
    /// (in the targets' order of roots), what was found there.
    pub fn load(path: PathBuf, targets: &[Target]) -> (Recorder, Vec<(PathBuf, Found)>) {
        let mut roots: Vec<RootState> = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            match roots.iter_mut().find(|r| r.root == t.root) {
                Some(r) => {
                    r.targets.push(RemoteId(i));
                    r.labels.push(t.label());
                }
                None => roots.push(RootState {
                    root: t.root.clone(),
                    targets: vec![RemoteId(i)],
                    labels: vec![t.label()],
                    tree: None,
                    rebuilding: None,
                    pending: BTreeMap::new(),
                    kept: None,
                    untrusted: None,
                    excludes: Excludes::default(),
                    walks: Vec::new(),
                    landed_walks: None,
                    journaled: Vec::new(),
                    exact: false,
                }),
            }
        }
        let journal_path = journal_for(&path);
        let loaded = match crate::sys::fsafe::read_trusted(&path) {
            Ok(bytes) => decode_stamped(&bytes).map_err(|e| {
                (
                    e.torn,
                    format!("index {} {}: {}", path.display(), torn_word(e.torn), e.why),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err((false, format!("no index at {}", path.display())))
            }
            Err(e) => {
                if crate::sys::fsafe::is_refused(&e) {
                    // Planted or opened up by someone else: as loud as the fail log's.
                    log::error!("{}", refused_line("index", &path, &e));
                }
                Err((false, format!("index {} not used: {e}", path.display())))
            }
        };
        // An index written while an agent ran: usable with its journal (what pushes
        // began after its checkpoint), else not.
        let journal: Result<Option<journal::Read>, String> = match &loaded {
            Ok((_, true, stamp)) => read_journal(&path, &journal_path, *stamp).map(Some),
            _ => Ok(None),
        };
        let mut found = Vec::new();
        let mut relisted = HashSet::new();
        let journaled: Vec<Rec> = match &journal {
            Ok(Some(j)) => j.recs.clone(),
            _ => Vec::new(),
        };
        match (loaded, journal) {
            (Ok((mut sections, _, _)), Err(why)) => {
                for r in &mut roots {
                    if let Some(i) = sections.iter().position(|s| s.root == r.root) {
                        r.untrusted = Some(sections.swap_remove(i).tree);
                    }
                    found.push((r.root.clone(), Found::Unclean(why.clone())));
                }
            }
            (Ok((mut sections, running, _)), Ok(journal)) => {
                for r in &mut roots {
                    // Written while it was rebuilt (see `RootState::kept`).
                    let kept =
                        (sections.iter()).position(|s| s.root == r.root && s.remotes.is_empty());
                    if let Some(i) = kept {
                        r.untrusted = Some(sections.swap_remove(i).tree);
                        let why = format!(
                            "index {} was being rebuilt (-r, or a start that did not trust \
                             it) and its full syncs had not all landed",
                            path.display()
                        );
                        found.push((r.root.clone(), Found::Unclean(why)));
                        continue;
                    }
                    let full = journal.as_ref().is_some_and(|j| {
                        j.recs
                            .iter()
                            .any(|x| x.root == r.root && x.what == What::Full)
                    });
                    let f = match sections.iter().position(|s| s.root == r.root) {
                        None if running => Found::Unclean(format!(
                            "index {} has no entry for this root and was written by an \
                             agent that did not stop (it may have been rebuilding it)",
                            path.display()
                        )),
                        None => Found::Not(format!(
                            "index {} has no entry for this root",
                            path.display()
                        )),
                        Some(i) if full => {
                            r.untrusted = Some(sections.swap_remove(i).tree);
                            Found::Unclean(format!(
                                "a full sync ran after the last checkpoint of the index {} (or \
                                 was running at it) and its agent did not stop, or ran outside a \
                                 rebuild of it or before its rebuild landed (what it sent is not \
                                 in the index)",
                                path.display()
                            ))
                        }
                        Some(i) => {
                            let mut s = sections.swap_remove(i);
                            // Remotes removed since are left out (each one kept holds
                            // what the entries say); remotes added get a full sync.
                            let added: Vec<RemoteId> = (r.targets.iter().zip(&r.labels))
                                .filter(|(_, l)| !s.remotes.contains(l))
                                .map(|(t, _)| *t)
                                .collect();
                            if added.len() == r.targets.len() {
                                Found::Not(format!(
                                    "index {} was made for other remotes ({})",
                                    path.display(),
                                    s.remotes.join(", ")
                                ))
                            } else {
                                let relist = journal
                                    .as_ref()
                                    .map(|j| unknown_since(&mut s.tree, &r.root, &j.recs))
                                    .unwrap_or_default();
                                r.tree = Some(s.tree.clone());
                                relisted.extend(relist.iter().map(|p| Rec {
                                    root: r.root.clone(),
                                    what: What::Listing(p.clone()),
                                }));
                                Found::Level(s.tree, relist, added)
                            }
                        }
                    };
                    found.push((r.root.clone(), f));
                }
            }
            (Err((torn, why)), _) => {
                for r in &roots {
                    let f = if torn {
                        Found::Unclean(why.clone())
                    } else {
                        Found::Not(why.clone())
                    };
                    found.push((r.root.clone(), f));
                }
            }
        }
        for (root, f) in &found {
            if let (Found::Unclean(_), Some(r)) = (f, roots.iter_mut().find(|r| r.root == *root)) {
                r.exact = true;
                r.journaled = (journaled.iter())
                    .filter(|x| x.root == r.root)
                    .filter_map(|x| match &x.what {
                        What::Path(p) => Some((p.clone(), false)),
                        What::Listing(p) => Some((p.clone(), true)),
                        What::Full => None,
                    })
                    .collect();
            }
        }
        let rec = Recorder {
            path,
            state: Mutex::new(State {
                roots,
                dirty: false,
            }),
            journal: Mutex::new(Journal {
                path: journal_path,
                file: None,
                next: Stamp {
                    run: run_id(),
                    gen: 1,
                },
                in_file: HashSet::new(),
                since: HashSet::new(),
                carry: Vec::new(),
                running: HashMap::new(),
                relist: relisted,
                full_ran: HashSet::new(),
                failing: false,
            }),
            writing: Mutex::new(()),
        };
        (rec, found)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many entries the index holds for `root` (or, under `-r`, the walk it is
    /// rebuilt from), when it has any: what the brake on mass deletes takes its share
    /// of.
    pub fn tree_len(&self, root: &Path) -> Option<usize> {
        let st = self.lock();
        let r = st.roots.iter().find(|r| r.root == root)?;
        r.tree.as_ref().map(|t| t.len())
    }

    /// How many entries the index holds below `rel` (not counting it; `rel` empty: the
    /// whole tree, in constant time) in the root that remote `t` mirrors: what a deleted directory held as far as the remotes know
    /// (the brake on mass deletes counts them; a watcher may not report each one).
    pub fn entries_below(&self, t: RemoteId, rel: &Path) -> usize {
        let st = self.lock();
        let Some(tree) = (st.roots.iter())
            .find(|r| r.targets.contains(&t))
            .and_then(|r| r.tree.as_ref())
        else {
            return 0;
        };
        if rel.as_os_str().is_empty() {
            // The whole tree, without walking it (the brake asks it per batch of
            // deletes): every entry but the root's own.
            return tree.len() - usize::from(tree.contains_key(rel));
        }
        below(tree, rel).count()
    }

    /// `-r`: `tree` (walked before the full syncs start) becomes the root's entry once
    /// every remote's full sync has landed; until then the file keeps the entry it had
    /// (see `RootState::kept`), level with no remote.
    pub fn rebuild(&self, root: &Path, tree: Tree) {
        self.rebuild_for(root, tree, None)
    }

    /// The root's entry in an index found not trusted at start (`Found::Unclean`),
    /// when it could be read: what the remotes were sent as far as it knew, to find
    /// the files a full sync's quick check would skip (`Diff::blind`).
    pub fn untrusted(&self, root: &Path) -> Option<Tree> {
        let st = self.lock();
        let r = st.roots.iter().find(|r| r.root == root)?;
        r.untrusted.clone()
    }

    /// Does a full sync to `t` compare mtimes to the nanosecond (`--modify-window=-1`)?
    /// While the index of its root was found not trusted at start (an agent killed, a
    /// torn file) and no rebuild has landed since: a remote may hold a copy of a file
    /// with its size and whole-second mtime that is not the source's (a push that landed
    /// after the last checkpoint, then the file rewritten within that second, the agent
    /// killed before the new version went), which rsync's quick check, comparing whole
    /// seconds, skips. A rebuild from a level index finds those from the index
    /// (`Diff::blind`), and a first start (no index) has no copy of ours to doubt: whole
    /// seconds, as rsync does by default.
    pub fn exact_full(&self, t: RemoteId) -> bool {
        let st = self.lock();
        st.roots.iter().any(|r| r.exact && r.targets.contains(&t))
    }

    /// The files of `tree` (the root walked at start) that a push of the last run may
    /// have left on a remote with their size and mtime but other bytes, when the index
    /// was found not trusted with its journal read: at or below each path its journal
    /// names, and directly in each directory whose listing it names. Pushed beside the
    /// full sync (with `--ignore-times`), as the blind files of [`Recorder::untrusted`]
    /// are: a `cp -a` rollback to a release of the same sizes and mtimes while no agent
    /// ran, after a kill before the first checkpoint that held the root, left every
    /// remote on the release pushed last (outside run).
    pub fn journal_blind(&self, root: &Path, tree: &Tree) -> std::collections::BTreeSet<PathBuf> {
        let st = self.lock();
        let Some(r) = st.roots.iter().find(|r| r.root == root) else {
            return Default::default();
        };
        super::diff::files_named(tree, &r.journaled)
    }

    /// The excludes of `root`, for the walks its rebuilds take when their full syncs
    /// begin (none until told).
    pub fn set_excludes(&self, root: &Path, excludes: &Excludes) {
        let mut st = self.lock();
        if let Some(r) = st.roots.iter_mut().find(|r| r.root == root) {
            r.excludes = excludes.clone();
        }
    }

    /// [`Recorder::rebuild`] waiting for the full syncs of `only` (remotes added since
    /// the index was made; the others hold what it says), or of every remote.
    pub fn rebuild_for(&self, root: &Path, tree: Tree, only: Option<&[RemoteId]>) {
        let mut st = self.lock();
        if let Some(r) = st.roots.iter_mut().find(|r| r.root == root) {
            let before = if r.level() { r.tree.take() } else { None };
            r.kept = (r.kept.take()).or(before).or_else(|| r.untrusted.take());
            r.rebuilding = Some(
                (r.targets.iter())
                    .map(|t| only.is_some_and(|o| !o.contains(t)))
                    .collect(),
            );
            r.tree = Some(tree);
            r.pending.clear();
            r.walks = vec![None; r.targets.len()];
            r.landed_walks = None;
        }
        st.dirty = true;
    }

    /// Before a push of `job` to `t` starts: what it may change is in the journal on
    /// disk (appended and fsynced unless there already) and its paths are unknown in
    /// the index until a push of them lands everywhere. `None` when the root is not
    /// recorded. Drop what is returned when the push ended, however it ended.
    pub fn announce(&self, t: RemoteId, job: &Job) -> Option<Announced<'_>> {
        let recs = {
            let mut st = self.lock();
            let r = st.roots.iter_mut().find(|r| r.targets.contains(&t))?;
            // A full sync of a root being rebuilt is the rebuild's: the root is in the
            // file only once they all landed, as what they sent. That is the tree as it
            // is when each begins (rsync reads it then), not as it was at the start: a
            // path made since and gone again before the next one began was sent by
            // this one alone, and must not be missing from the index.
            if matches!(job, Job::Full) && r.rebuilding.is_some() {
                let (root, excludes) = (r.root.clone(), r.excludes.clone());
                drop(st);
                let walked = walk(&root, &excludes)
                    .inspect_err(|e| {
                        log::warn!("cannot walk {} for its index: {e}", root.display())
                    })
                    .ok();
                let mut st = self.lock();
                let r = st.roots.iter_mut().find(|r| r.targets.contains(&t))?;
                let pos = r.targets.iter().position(|x| *x == t)?;
                if let Some(w) = r.walks.get_mut(pos) {
                    *w = walked;
                }
                return None;
            }
            // The tree keeps what it had for the paths until the push lands: a push
            // that lands as what every remote holds already changes nothing (the same
            // file pushed again to one remote). What a checkpoint writes while it runs
            // goes with the journal, which names its paths (unknown after a kill).
            r.tree.as_ref()?;
            recs_of(&r.root, job)
        };
        let mut j = self.journal();
        if matches!(job, Job::Full) {
            j.full_ran.extend(recs.iter().cloned());
        }
        for x in &recs {
            *j.running.entry(x.clone()).or_insert(0) += 1;
            j.since.insert(x.clone());
            j.relist.remove(x);
        }
        let new: Vec<&Rec> = recs.iter().filter(|x| !j.in_file.contains(*x)).collect();
        if !new.is_empty() && j.file.is_some() {
            let mut bytes = Vec::new();
            for x in &new {
                journal::record(&mut bytes, x);
            }
            let written = match j.file.as_mut() {
                Some(f) => {
                    use std::io::Write;
                    f.write_all(&bytes).and_then(|()| f.sync_data())
                }
                None => Ok(()),
            };
            match written {
                Ok(()) => {
                    let new: Vec<Rec> = new.into_iter().cloned().collect();
                    j.in_file.extend(new);
                }
                Err(e) => self.journal_lost(&mut j, &e),
            }
        }
        Some(Announced { rec: self, recs })
    }

    /// A journal write failed: the file goes (an unlink needs no free space), so that a
    /// start after a kill does a full sync rather than trust an index without it;
    /// written whole again at the next checkpoint.
    fn journal_lost(&self, j: &mut Journal, e: &std::io::Error) {
        j.file = None;
        j.in_file.clear();
        let removed = match std::fs::remove_file(&j.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if let Err(re) = removed {
            // Without the journal gone, the index must go.
            log::error!("cannot remove {}: {re}", j.path.display());
            let _ = std::fs::remove_file(&self.path);
        }
        if !j.failing {
            log::error!(
                "cannot write the index's journal {}: {e}; pushes go on, and a start after \
                 a kill before the next checkpoint does a full sync",
                j.path.display()
            );
            j.failing = true;
        }
    }

    /// The metadata of a job's paths, taken before its push to `t`; `None` when the
    /// root is not recorded. A listing (`listing: true`) is recorded as the delete of a
    /// directory gone, or as the push of each of its entries (what the remotes held
    /// there and it deleted keeps its entry: the next start may send more, never less).
    pub fn before(&self, t: RemoteId, root: &Path, job: &Job) -> Option<Before> {
        let Job::Paths(paths) = job else {
            return None;
        };
        {
            let st = self.lock();
            let r = st.roots.iter().find(|r| r.targets.contains(&t))?;
            r.tree.as_ref()?;
        }
        let mut out = Vec::with_capacity(paths.len());
        let mut look = Looker::new(root);
        for p in paths {
            if p.listing {
                // A listing of a directory gone: its delete. Of one there: the
                // directory itself, which it sends too (a directory known only from
                // its listing was not entered: pushed again at every start, and its
                // delete while no agent ran was lost).
                match look.stat(&p.path) {
                    None => out.push((p.path.clone(), None)),
                    Some(m) if !p.path.as_os_str().is_empty() => {
                        out.push((p.path.clone(), Some(m)))
                    }
                    Some(_) => {}
                }
                // Of one there: what it sends, its entries (the caller leaves out those
                // the excludes keep out of it).
                out.extend(look.listed(&p.path));
            } else {
                out.push((p.path.clone(), look.stat(&p.path)));
            }
        }
        Some(out)
    }

    /// A push to `t` landed: each path is entered once every remote of its root had a
    /// push land with the same metadata, and since then nothing around it (see
    /// [`supersede`]). A path that was gone before the push but is there now may have
    /// been there when rsync read the tree (a directory pushed alone then, what the
    /// remote held below it left as it was): it is unknown, and so is what is below it.
    pub fn landed(&self, t: RemoteId, before: Before) {
        let root = {
            let st = self.lock();
            st.roots
                .iter()
                .find(|r| r.targets.contains(&t))
                .map(|r| r.root.clone())
        };
        let Some(root) = root else { return };
        let mut look = Looker::new(&root);
        // What is below a path gone before the push and a directory now: rsync may
        // have read that directory and sent its entries (a listing of a directory
        // made again meanwhile), which the index has no word on.
        let mut sent_below: Vec<PathBuf> = Vec::new();
        let before: Before = (before.into_iter())
            .map(|(p, m)| match m {
                None => match look.stat(&p) {
                    Some(now) => {
                        if now.kind == Kind::Dir {
                            sent_below.extend(look.listed(&p).into_iter().map(|(q, _)| q));
                        }
                        (p, Some(UNKNOWN))
                    }
                    None => (p, None),
                },
                m => (p, m),
            })
            .collect();
        let mut st = self.lock();
        let Some(r) = st.roots.iter_mut().find(|r| r.targets.contains(&t)) else {
            return;
        };
        let Some(pos) = r.targets.iter().position(|x| *x == t) else {
            return;
        };
        let n = r.targets.len();
        let mut changed = false;
        if let Some(tree) = r.tree.as_mut() {
            for q in sent_below {
                r.pending.remove(&q);
                tree.insert(q, UNKNOWN);
                changed = true;
            }
        }
        for (p, meta) in before {
            let below_gone = supersede(&mut r.pending, &p, meta.as_ref(), pos);
            if !r.pending.contains_key(&p)
                && (r.tree.as_ref()).is_some_and(|tree| entered_as(tree, &p, meta.as_ref()))
            {
                // What every remote holds already, landed on this one again.
                continue;
            }
            if meta.as_ref().is_some_and(|m| m.kind == Kind::Unknown) {
                r.pending.remove(&p);
                if let Some(tree) = r.tree.as_mut() {
                    for (_, m) in below_mut(tree, &p) {
                        *m = UNKNOWN;
                    }
                    tree.insert(p, UNKNOWN);
                    changed = true;
                }
                continue;
            }
            let entry = r.pending.entry(p.clone()).or_insert_with(|| Pending {
                meta: meta.clone(),
                done: vec![false; n],
            });
            if entry.meta != meta {
                entry.meta = meta;
                entry.done = vec![false; n];
            }
            entry.done[pos] = true;
            if !entry.done.iter().all(|d| *d) {
                // Until every remote has it, what they hold is not known; nor what
                // they hold below it when it is gone or not a directory on this one.
                if let Some(tree) = r.tree.as_mut() {
                    if below_gone {
                        for (_, m) in below_mut(tree, &p) {
                            *m = UNKNOWN;
                        }
                    }
                    tree.insert(p, UNKNOWN);
                    changed = true;
                }
            } else {
                let Some(e) = r.pending.remove(&p) else {
                    continue;
                };
                let Some(tree) = r.tree.as_mut() else {
                    continue;
                };
                enter(tree, p, e.meta);
                changed = true;
            }
        }
        st.dirty |= changed;
    }

    /// A full sync to `t` landed (under `-r`). Returns, when it was the last of a
    /// rebuild, the paths the rebuilt index does not know (what changed while the full
    /// syncs ran, or was sent by some of them only): pushed again, they are entered as
    /// what every remote holds when they land, and a path gone there (a file below a
    /// directory swapped for a link) leaves the index instead of waiting to be deleted
    /// at the next start.
    pub fn full_landed(&self, t: RemoteId) -> Vec<PathBuf> {
        let mut st = self.lock();
        let Some(r) = st.roots.iter_mut().find(|r| r.targets.contains(&t)) else {
            return Vec::new();
        };
        let Some(pos) = r.targets.iter().position(|x| *x == t) else {
            return Vec::new();
        };
        if let Some(done) = r.rebuilding.as_mut() {
            // What this full sync sent: the walk taken when it began.
            let Some(sent) = r.walks.get_mut(pos).and_then(Option::take) else {
                log::warn!(
                    "index of {}: what the full sync to {} sent is not known (its tree \
                     could not be walked); the index waits for another",
                    r.root.display(),
                    r.labels.get(pos).map_or("?", String::as_str)
                );
                return Vec::new();
            };
            r.landed_walks = Some(match r.landed_walks.take() {
                Some(w) => agreed(&w, &sent),
                None => sent,
            });
            done[pos] = true;
            if done.iter().all(|d| *d) {
                r.rebuilding = None;
                r.kept = None;
                r.exact = false;
                // The walk at the start with what pushes beside the full syncs entered
                // (the remotes not rebuilt hold that), and what each full sync sent:
                // where they differ, what a remote holds is not known.
                if let (Some(sent), Some(tree)) = (r.landed_walks.take(), r.tree.as_ref()) {
                    r.tree = Some(agreed(tree, &sent));
                }
                let unknown: Vec<PathBuf> = (r.tree.iter())
                    .flat_map(|t| t.iter())
                    .filter(|(_, m)| m.kind == Kind::Unknown)
                    .map(|(p, _)| p.clone())
                    .collect();
                log::info!(
                    "index of {} rebuilt: {} entries{}",
                    r.root.display(),
                    r.tree.as_ref().map_or(0, |t| t.len()),
                    if unknown.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} changed while the full syncs ran, pushed again",
                            unknown.len()
                        )
                    }
                );
                st.dirty = true;
                return unknown;
            }
        }
        Vec::new()
    }

    /// Writes the file if anything changed since the last write, marked as written
    /// while running, then its journal afresh.
    pub fn checkpoint(&self) -> std::io::Result<()> {
        self.write(true, false)
    }

    /// At start, before any push: the file marked as written while running, with an
    /// empty journal, so that a stop that never reaches [`Recorder::finish`] is seen at
    /// the next start and what was pushed after the last checkpoint is known. When it
    /// cannot be written, the file is removed (an unlink needs no free space): a file
    /// left marked as stopped would be trusted after this run pushed more.
    pub fn begin(&self) -> std::io::Result<()> {
        let written = self.write(true, true);
        if written.is_err() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    log::error!("cannot remove the index {}: {e}", self.path.display())
                }
                _ => {}
            }
        }
        written
    }

    /// At the stop, once the workers ended: the file marked as written at a stop, and
    /// its journal removed. Pushes still running (a worker that did not end in its
    /// grace time) keep it marked running, with its journal.
    pub fn finish(&self) -> std::io::Result<()> {
        let (running, full_ran) = {
            let j = self.journal();
            (j.running.len(), !j.full_ran.is_empty())
        };
        if running > 0 {
            log::warn!(
                "index {}: {running} path(s) still being pushed at the stop; kept with its \
                 journal, so the next start pushes them again",
                self.path.display()
            );
        }
        if full_ran {
            log::info!(
                "index {}: a full sync ran that it does not record; kept with its journal, \
                 so the next start does a full sync and rebuilds it",
                self.path.display()
            );
        }
        self.write(running > 0 || full_ran, true)
    }

    fn write(&self, running: bool, force: bool) -> std::io::Result<()> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if !self.lock().dirty && !force {
            return Ok(());
        }
        // The next journal holds what runs now and what begins from now on: taken
        // before the snapshot, so that anything landing in between is in both.
        let stamp = {
            let mut j = self.journal();
            let stamp = j.next;
            j.next.gen += 1;
            j.carry = j.running.keys().cloned().collect();
            j.since.clear();
            stamp
        };
        let (bytes, entries) = {
            let mut st = self.lock();
            st.dirty = false;
            // Level roots only; a path pushed to some remotes only is in as unknown.
            // A root being rebuilt keeps the entry it had, level with no remote (see
            // `RootState::kept`).
            let sections: Vec<SectionRef> = (st.roots.iter())
                .filter_map(|r| {
                    let (tree, remotes) = if r.level() {
                        (r.tree.as_ref()?, &r.labels[..])
                    } else {
                        (r.kept.as_ref().filter(|_| r.rebuilding.is_some())?, &[][..])
                    };
                    Some(SectionRef {
                        root: &r.root,
                        remotes,
                        tree,
                    })
                })
                .collect();
            let n: usize = sections.iter().map(|s| s.tree.len()).sum();
            (encode_stamped(&sections, running, stamp), n)
        };
        if let Err(e) = crate::sys::fsafe::write_atomic(&self.path, &bytes) {
            // Written again at the next checkpoint; the journal on disk goes on (it
            // names an older checkpoint than the file, and holds all since).
            self.lock().dirty = true;
            return Err(e);
        }
        log::debug!(
            "index {} written: {entries} entries, {} bytes",
            self.path.display(),
            bytes.len()
        );
        let mut j = self.journal();
        if !running {
            j.file = None;
            j.in_file.clear();
            match std::fs::remove_file(&j.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    log::warn!("cannot remove {}: {e}", j.path.display())
                }
                _ => {}
            }
            return Ok(());
        }
        let mut all: Vec<Rec> = (j.carry.iter())
            .chain(j.since.iter())
            .chain(j.relist.iter())
            .chain(j.full_ran.iter())
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        let mut bytes = journal::header(stamp);
        for x in &all {
            journal::record(&mut bytes, x);
        }
        let opened = crate::sys::fsafe::write_atomic(&j.path, &bytes).map(|()| {
            crate::sys::fsafe::open_trusted(&j.path, libc::O_WRONLY | libc::O_APPEND, 0o600)
        });
        match opened {
            Ok(Ok(f)) => {
                j.file = Some(f);
                j.in_file = all.into_iter().collect();
                if j.failing {
                    log::info!("index journal {} written again", j.path.display());
                    j.failing = false;
                }
            }
            // The new one is there but cannot be appended to.
            Ok(Err(e)) => self.journal_lost(&mut j, &e),
            // The old one stays, names an older checkpoint and is appended to.
            Err(e) if j.file.is_some() => {
                if !j.failing {
                    log::error!(
                        "cannot write the index's journal {} afresh: {e}; the old one goes on",
                        j.path.display()
                    );
                    j.failing = true;
                }
            }
            Err(e) => self.journal_lost(&mut j, &e),
        }
        Ok(())
    }
}

pub(super) fn torn_word(torn: bool) -> &'static str {
    if torn {
        "is torn"
    } else {
        "not used"
    }
}

/// The journal of an index written while an agent ran, if it goes with it: this run's,
/// of the same or an older checkpoint (it is written afresh only after the index).
fn read_journal(index: &Path, path: &Path, stamp: Option<Stamp>) -> Result<journal::Read, String> {
    let killed = format!(
        "index {} was written by an agent that did not stop (killed, crashed or a power cut)",
        index.display()
    );
    let Some(stamp) = stamp else {
        return Err(format!("{killed} and has no journal (an older version)"));
    };
    let bytes = crate::sys::fsafe::read_trusted(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{killed} and its journal {} is missing: what it pushed after its last \
                 checkpoint is not known",
                path.display()
            )
        } else {
            if crate::sys::fsafe::is_refused(&e) {
                log::error!("{}", refused_line("index journal", path, &e));
            }
            format!("{killed} and its journal is not used: {e}")
        }
    })?;
    let read = journal::decode(&bytes)
        .map_err(|why| format!("{killed} and its journal {} {why}", path.display()))?;
    if read.stamp.run != stamp.run || read.stamp.gen > stamp.gen {
        return Err(format!(
            "{killed} and its journal {} is of another checkpoint",
            path.display()
        ));
    }
    Ok(read)
}

/// The error line for an index file (or its journal) refused as not the agent's own:
/// its cause (`e` names the file, its owner and mode, and what to do) and what the
/// start does without it.
fn refused_line(what: &str, path: &Path, e: &std::io::Error) -> String {
    format!(
        "refusing the warm-restart {what} {}: {e}; it is not read, and the agent's own \
         replaces it (without a usable index, what changed while no agent ran reaches the \
         remotes only by -r or a full sync)",
        path.display()
    )
}

/// What the journal says pushes may have changed in `root` after the checkpoint:
/// those paths unknown in `tree` (pushed again, or deleted when gone), and the
/// directories whose listing may have changed (returned: listed again).
pub(super) fn unknown_since(tree: &mut Tree, root: &Path, recs: &[Rec]) -> Vec<PathBuf> {
    let mut relist = Vec::new();
    for r in recs.iter().filter(|r| r.root == root) {
        match &r.what {
            // Never the root itself.
            What::Path(p) if !p.as_os_str().is_empty() => {
                tree.insert(p.clone(), UNKNOWN);
            }
            What::Path(_) => {}
            // Listed again (a gone directory's listing goes as its delete).
            What::Listing(p) => relist.push(p.clone()),
            What::Full => {}
        }
    }
    relist.sort();
    relist.dedup();
    relist
}
