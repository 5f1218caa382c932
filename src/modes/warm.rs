//! Warm restart at start (docs/guide.md, "Warm restart and the index"): the index of what every remote was
//! sent (`src/sync/index.rs`) is loaded, each watch root walked (stat only) and what
//! differs queued; under `-r` the walk becomes the root's new index once its full
//! syncs landed. Then the index is checkpointed while the pipeline runs and at the stop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::filter::Excludes;
use crate::sync::index::{self, Found, Kind, Recorder};
use crate::sync::links::Links;
use crate::sync::progress::Task;

use crate::sync::job::Entry;
use crate::sync::queue::Item;
use crate::sync::workers::{self, Mirror};
use crate::sys::Stop;

/// How often the index is written while anything changed.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Loads the index beside `fail_log` (the config's), tells `mirror` to record in it, and per watch root
/// (`roots`, with their excludes): under `rebuild` (`-r`, before the full syncs are
/// queued) walks the tree as the root's index to be; else, with a usable index, walks
/// the tree and queues what differs from it; without one, says why in one line (and
/// under `full_without_index`, `--once`, queues a full sync of the root's remotes and
/// makes its index from it). What a walk finds under several names goes to `links` (the
/// filter thread's, by the root's place in `roots`). Returns the recorder and how many
/// roots could not be walked (so what changed there while stopped is not queued).
pub(crate) fn start(
    fail_log: &std::path::Path,
    roots: &[(PathBuf, Excludes)],
    mirror: &Mirror,
    rebuild: bool,
    full_without_index: bool,
    links: &Mutex<Links>,
) -> (Arc<Recorder>, usize, Counted) {
    let path = index::path_for(fail_log);
    let (rec, found) = Recorder::load(path, mirror.targets());
    let rec = Arc::new(rec);
    let mut unwalked = 0;
    // Under -r: per root, what its walk counted (for the brake to weigh its full sync)
    // and what the index held before.
    let mut counted: Counted = Vec::new();
    let mut held_before: Vec<(PathBuf, usize)> = Vec::new();
    // Files a full sync would skip were queued: the fail log keeps them.
    let mut blind = false;
    for (root, found) in found {
        let Some((at, (_, excludes))) = roots.iter().enumerate().find(|(_, (r, _))| *r == root)
        else {
            continue;
        };
        let started = Instant::now();
        rec.set_excludes(&root, excludes);
        // The index's tree, kept out of `found` for the walk to count changes against.
        let (old_tree, found) = match found {
            Found::Level(old, relist, added) => {
                (Some(old), Found::Level(index::Tree::new(), relist, added))
            }
            f => (None, f),
        };
        let old = old_tree.as_ref().filter(|_| !rebuild);
        let what = match old {
            Some(_) => format!("catch-up of {}", root.display()),
            None => format!("walk of {} for its index", root.display()),
        };
        let mut walked = || {
            let task = Task::start(what.clone(), true, None);
            let tree = index::walk_counted(&root, excludes, Some((task.counts(), old)))
                .inspect_err(|e| log::warn!("cannot walk {} for the index: {e}", root.display()));
            if let Ok(tree) = &tree {
                let files = tree
                    .iter()
                    .filter(|(_, m)| m.kind == Kind::File)
                    .map(|(p, m)| (p.as_path(), (m.dev, m.ino)));
                (links.lock().unwrap_or_else(|e| e.into_inner())).learn_walk(at, files);
            }
            if tree.is_err() {
                unwalked += 1;
            }
            tree
        };
        match (rebuild, found) {
            (false, Found::Unclean(why)) => {
                log::warn!(
                    "warm restart off for {}: {why}; full sync of its remotes, and the \
                     index rebuilt from it",
                    root.display()
                );
                if let Ok(tree) = walked() {
                    // What the untrusted index says the remotes were sent still tells
                    // the files rewritten with their size and mtime as it has them.
                    let mut files = rec.journal_blind(&root, &tree);
                    if let Some(old) = rec.untrusted(&root) {
                        files.extend(index::diff(&old, &tree).blind);
                    }
                    blind |= queue_blind(mirror, &root, files, "the full sync");
                    rec.rebuild(&root, tree);
                }
                mirror
                    .queue()
                    .push_full(&workers::remotes_of(mirror.targets(), &root));
            }
            (true, _) => {
                let tree = walked();
                let holds_names = excludes.has_rules()
                    && std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some());
                // An empty root is judged as its full sync runs (held only if the
                // remotes hold files: `Mirror::full_of_empty_root`).
                let entries = tree.as_ref().ok().map(|t| t.len()).filter(|&n| n > 0);
                counted.push((
                    root.clone(),
                    crate::sync::intake::counted_for_brake(entries, holds_names),
                ));
                if let Some(old) = old_tree.as_ref() {
                    held_before.push((root.clone(), old.len()));
                }
                if let Ok(tree) = tree {
                    log::info!(
                        "-r: index of {} rebuilt from {} entries once its full syncs land",
                        root.display(),
                        tree.len()
                    );
                    // Files rewritten with their size and mtime as the index has them:
                    // the full sync's quick check skips them, so they go beside it.
                    // (From an index not trusted at start too: what it holds still tells
                    // them.)
                    let untrusted = old_tree.is_none().then(|| rec.untrusted(&root)).flatten();
                    let mut files = rec.journal_blind(&root, &tree);
                    if let Some(old) = old_tree.as_ref().or(untrusted.as_ref()) {
                        files.extend(index::diff(old, &tree).blind);
                    }
                    blind |= queue_blind(mirror, &root, files, "-r's full sync");
                    rec.rebuild(&root, tree);
                }
            }
            (false, Found::Not(why)) if full_without_index => {
                log::info!(
                    "no warm-restart index for {}: {why}; full sync of its remotes, and \
                     the index made from it",
                    root.display()
                );
                if let Ok(tree) = walked() {
                    rec.rebuild(&root, tree);
                }
                mirror
                    .queue()
                    .push_full(&workers::remotes_of(mirror.targets(), &root));
            }
            (false, Found::Not(why)) => log::warn!(
                "warm restart off for {}: {why}; what changed while no agent ran reaches \
                 the remotes only by -r (which makes the index) or a full sync",
                root.display()
            ),
            (false, Found::Level(_, relist, added)) => {
                let Ok(tree) = walked() else { continue };
                let Some(old) = old else { continue };
                let d = index::diff(old, &tree);
                let unknown: Vec<&PathBuf> = (old.iter())
                    .filter(|(_, m)| m.kind == index::Kind::Unknown)
                    .map(|(p, _)| p)
                    .collect();
                if !unknown.is_empty() || !relist.is_empty() {
                    log::info!(
                        "catch-up of {}: {} path(s) unknown in the index (pushed to some \
                         remotes only, or begun after its last checkpoint by its \
                         journal){} and {} listing(s) pushed again",
                        root.display(),
                        unknown.len(),
                        first_few(unknown.iter().copied())
                            .map_or_else(String::new, |f| format!(" ({f})")),
                        relist.len()
                    );
                }
                log::info!(
                    "catch-up of {}: {} entries compared in {:.1}s; {} new or changed, {} \
                     deleted, {} renamed{}",
                    root.display(),
                    tree.len(),
                    started.elapsed().as_secs_f64(),
                    d.changed.len(),
                    d.deleted.len(),
                    d.renamed.len(),
                    first_few(d.deleted.iter().map(|(p, _)| p))
                        .map_or_else(String::new, |f| format!("; deleted: {f}")),
                );
                // Remotes added to the config since the index was made: a full sync for
                // them alone; the root's index waits for it (see `rebuild_for`).
                let targets: Vec<_> = workers::remotes_of(mirror.targets(), &root)
                    .into_iter()
                    .filter(|t| !added.contains(t))
                    .collect();
                blind |= !d.blind.is_empty();
                let mut items = d.items();
                // The brake's share is of the tree the remotes were last sent (the
                // index), told before the catch-up's deletes are queued: without it the
                // count alone decided, and a catch-up of 1,000 deletes in a tree of a
                // million was held.
                let trees: Vec<_> = targets.iter().map(|&t| (t, Some(old.len()))).collect();
                mirror.queue().set_trees(&trees);
                // What the deleted directories held counts for the brake on mass
                // deletes, beside the deletes queued one per top path.
                let below_deleted = d.deleted_entries(old).saturating_sub(d.deleted.len());
                mirror.queue().count_deletes(&targets, below_deleted);
                // The root itself, not what the rules select of it: a root that holds
                // only what `<filter>` keeps out is not an empty mount point, and its
                // deletes count like any others.
                let root_empty = std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_none());
                if root_empty && !old.is_empty() {
                    // The root is empty now (a filesystem not mounted at start, a
                    // directory made again): its index's entries never reach the
                    // remotes as deletes without the operator's word.
                    mirror.queue().hold_deletes(&targets);
                }
                items.extend((relist.into_iter()).map(|p| Item::Path(Entry::listing(p), false)));
                if !items.is_empty() {
                    mirror.queue().push_batch(&targets, &items);
                    // Every delete of the catch-up was found and counted before any
                    // was queued: they need not wait for more to come.
                    mirror.queue().settled(&targets);
                }
                if !added.is_empty() {
                    let labels: Vec<String> = (added.iter())
                        .map(|t| mirror.targets()[t.0].label())
                        .collect();
                    log::info!(
                        "index of {} was made without {}: full sync of {} alone; the \
                         other remotes catch up from the index",
                        root.display(),
                        labels.join(", "),
                        if labels.len() == 1 { "it" } else { "them" }
                    );
                    rec.rebuild_for(&root, tree, Some(&added));
                    mirror.queue().push_full(&added);
                }
            }
        }
    }
    if blind {
        // Before any push: a kill or a power cut that also tears the index leaves the
        // next start nothing else to tell them by (`Owed::blind`).
        mirror.save_fail_log();
    }
    if let Err(e) = rec.begin() {
        log::error!(
            "cannot write the index {}: {e}; the next start cannot catch up from it",
            rec.path().display()
        );
    }
    mirror.record_in(Arc::clone(&rec));
    tell_trees(&rec, mirror);
    // -r: the brake weighs the full syncs against what the remotes were last sent (the
    // index before the rebuild), not against the walk that is to replace it.
    for (root, n) in held_before {
        let trees: Vec<_> = workers::remotes_of(mirror.targets(), &root)
            .into_iter()
            .map(|t| (t, Some(n)))
            .collect();
        mirror.queue().set_trees(&trees);
    }
    (rec, unwalked, counted)
}

/// Per watch root, the entries `-r`'s walk found, as the brake counts them (`None`: not
/// counted; see [`full_syncs`]).
pub(crate) type Counted = Vec<(PathBuf, Option<usize>)>;

/// `-r`'s full sync of every remote, each root's checked against the brake on mass
/// deletes with what its walk counted: a start with `-r` on a tree that lost most of its
/// entries while no agent ran (a half-mounted volume, an `rm -rf` in the wrong place)
/// holds the full sync as the live agent holds such deletes, instead of deleting them
/// from every remote.
pub(crate) fn full_syncs(mirror: &Mirror, counted: &Counted) {
    let mut roots: Vec<&std::path::Path> = Vec::new();
    for t in mirror.targets() {
        if !roots.contains(&t.root.as_path()) {
            roots.push(&t.root);
        }
    }
    for root in roots {
        let entries = counted
            .iter()
            .find(|(r, _)| r == root)
            .and_then(|(_, n)| *n);
        mirror
            .queue()
            .push_full_checked(&workers::remotes_of(mirror.targets(), root), entries);
    }
}

/// Queues beside a full sync (`what`, for the log) the files of `root` its quick check
/// would skip while a remote may hold other bytes (`Item::Blind`: rewritten with their
/// size and mtime as what the remotes were sent has them, or named by the journal of an
/// index not trusted). Returns whether there were any.
fn queue_blind(
    mirror: &Mirror,
    root: &std::path::Path,
    blind: std::collections::BTreeSet<PathBuf>,
    what: &str,
) -> bool {
    if blind.is_empty() {
        return false;
    }
    log::info!(
        "{} file(s) of {} changed with their size and mtime as the index has them, or \
         pushed by the last run after its last checkpoint; pushed beside {what}, whose \
         quick check would skip them",
        blind.len(),
        root.display()
    );
    let items: Vec<Item> = blind.into_iter().map(Item::Blind).collect();
    mirror
        .queue()
        .push_batch(&workers::remotes_of(mirror.targets(), root), &items);
    true
}

/// Tells the queue how many entries each remote's tree has in the index: the brake on
/// mass deletes takes its share of that (`sync::ledger`'s brake).
pub(crate) fn tell_trees(rec: &Recorder, mirror: &Mirror) {
    let trees: Vec<_> = (mirror.targets().iter().enumerate())
        .map(|(i, t)| (crate::sync::RemoteId(i), rec.tree_len(&t.root)))
        .collect();
    mirror.queue().set_trees(&trees);
}

/// At the stop, once the workers ended: the index written as stopped.
pub(crate) fn finish(rec: &Recorder) {
    if let Err(e) = rec.finish() {
        log::error!(
            "cannot write the index {} at the stop: {e}; the next start does a full sync",
            rec.path().display()
        );
    }
}

/// The thread that checkpoints the index every [`CHECKPOINT_EVERY`] until `stop`.
/// After each, the queue learns the trees' sizes ([`tell_trees`]).
pub(crate) fn checkpoints(
    rec: Arc<Recorder>,
    stop: Arc<Stop>,
    mirror: Arc<Mirror>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("index".into())
        .spawn(move || {
            let mut failing = false;
            while !stop.wait_timeout(CHECKPOINT_EVERY) {
                failing = save(&rec, failing);
                tell_trees(&rec, &mirror);
            }
        })
}

/// Writes the index if it changed; says so once when a write fails and once when one
/// works again. Returns whether it is failing.
fn save(rec: &Recorder, failing: bool) -> bool {
    match rec.checkpoint() {
        Ok(()) => {
            if failing {
                log::info!("index {} written again", rec.path().display());
            }
            false
        }
        Err(e) => {
            if !failing {
                log::error!(
                    "cannot write the index {}: {e}; it keeps its last good state (a \
                     restart then pushes what changed since)",
                    rec.path().display()
                );
            }
            true
        }
    }
}

/// The first few of `paths`, for a log line: `a, b, c ...`; `None` for none.
fn first_few<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Option<String> {
    const SHOWN: usize = 3;
    let mut paths = paths.peekable();
    paths.peek()?;
    let shown: Vec<String> = (paths.by_ref().take(SHOWN))
        .map(|p| p.display().to_string())
        .collect();
    let more = if paths.next().is_some() { " ..." } else { "" };
    Some(format!("{}{more}", shown.join(", ")))
}
