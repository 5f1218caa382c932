//! The ledger's merging, ordering, conflict, marks and owed rules, by example and by
//! property.

use super::*;
use crate::sync::job::{entry, shown_all};
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn paths(w: Option<Job>) -> Vec<PathBuf> {
    match w {
        Some(Job::Paths(v)) => shown_all(&v),
        other => panic!("expected paths, got {other:?}"),
    }
}

#[test]
fn duplicates_merge_into_one_entry() {
    let mut q = Ledger::default();
    q.push(p("a"), false);
    q.push(p("a"), false);
    q.push(p("b"), false);
    assert_eq!(q.len(), 2);
    assert_eq!(paths(q.take(100)), [p("a"), p("b")]);
}

#[test]
fn a_lone_change_is_handed_out_at_once() {
    let mut q = Ledger::default();
    q.push(p("x"), false);
    assert_eq!(paths(q.take(100)), [p("x")]);
    assert!(q.take(100).is_none());
}

#[test]
fn batch_size_caps_one_call() {
    let mut q = Ledger::default();
    for i in 0..10 {
        q.push(p(&format!("f{i}")), false);
    }
    assert_eq!(paths(q.take(3)).len(), 3);
    assert_eq!(q.len(), 7);
}

#[test]
fn a_deleted_directory_cancels_what_waits_below_it() {
    let mut q = Ledger::default();
    q.push(p("d/a"), false);
    q.push(p("d/sub/b"), false);
    q.push(p("d2/c"), false);
    q.push(p("d"), true);
    assert_eq!(paths(q.take(100)), [p("d2/c"), p("d")]);
}

#[test]
fn a_path_in_flight_is_not_handed_out_again() {
    let mut q = Ledger::default();
    q.push(p("a"), false);
    let first = q.take(100).expect("work");
    q.push(p("a"), false);
    assert!(q.take(100).is_none(), "a is still being pushed");
    q.finish(&first);
    assert_eq!(paths(q.take(100)), [p("a")]);
}

#[test]
fn ancestors_and_descendants_in_flight_block() {
    let mut q = Ledger::default();
    q.push(p("a/b"), false);
    let w = q.take(100).expect("work");
    q.push(p("a"), true); // the directory went away while a/b is being pushed
    q.push(p("a/b/c"), false);
    q.push(p("z"), false);
    assert_eq!(paths(q.take(100)), [p("z")]);
    q.finish(&w);
    assert_eq!(paths(q.take(100)), [p("a"), p("a/b/c")]);
}

#[test]
fn full_sync_covers_pending_and_waits_for_running_work() {
    let mut q = Ledger::default();
    q.push(p("a"), false);
    let w = q.take(100).expect("work");
    q.push(p("b"), false);
    q.push_full();
    assert_eq!(q.len(), 1);
    q.push(p("c"), false); // covered by the full sync that has not started
    assert_eq!(q.len(), 1);
    assert!(q.take(100).is_none(), "full waits for a");
    q.finish(&w);
    assert_eq!(q.take(100), Some(Job::Full));
    q.push(p("d"), false); // during the full sync: pushed beside it, and after it
    let d = q.take(100);
    assert_eq!(paths(d.clone()), [p("d")]);
    q.finish(&d.expect("d"));
    assert!(
        q.take(100).is_none(),
        "d goes again once the full sync ends"
    );
    q.finish(&Job::Full);
    assert_eq!(paths(q.take(100)), [p("d")]);
}

#[test]
fn drain_returns_everything_waiting() {
    let mut q = Ledger::default();
    q.push(p("a"), false);
    q.push(p("b"), false);
    let (left, full) = q.drain();
    assert_eq!(shown_all(&left), [p("a"), p("b")]);
    assert!(!full);
    assert!(q.is_empty());
}

#[test]
fn oldest_waiting_is_the_first_change_still_waiting() {
    let mut s = Ledger::default();
    assert_eq!(s.oldest_waiting(), None);
    let t0 = Instant::now();
    s.push_at(entry("a"), false, t0);
    s.push_at(entry("b"), false, t0 + Duration::from_millis(5));
    assert_eq!(s.oldest_waiting(), Some(t0));
    let job = s.take(1).expect("a");
    assert_eq!(paths(Some(job.clone())), [p("a")]);
    assert_eq!(s.oldest_waiting(), Some(t0 + Duration::from_millis(5)));
    s.push_full_at(t0 + Duration::from_millis(9));
    assert_eq!(s.oldest_waiting(), Some(t0 + Duration::from_millis(5)));
}

/// One step of a random workload against one remote.
#[derive(Debug, Clone)]
enum Op {
    Push(usize, bool),
    Take(usize),
    Finish(usize),
    Full,
    /// A rename of one name to another (skipped where they nest); `true`: a directory.
    Rename(usize, usize, bool),
}

const NAMES: [&str; 8] = ["a", "a/b", "a/b/c", "a/d", "e", "e/f", "g", "a/b/c/h"];

/// Names renames use besides [`NAMES`]: siblings that nest in nothing, so that several
/// renames wait at once (and flood).
const FLAT: [&str; 6] = ["r/1", "r/2", "r/3", "r/4", "r/5", "r/6"];

fn rename_name(i: usize) -> &'static str {
    NAMES
        .get(i)
        .copied()
        .unwrap_or_else(|| FLAT[(i - NAMES.len()) % FLAT.len()])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..NAMES.len(), any::<bool>()).prop_map(|(i, g)| Op::Push(i, g)),
        3 => (1..4usize).prop_map(Op::Take),
        3 => (0..8usize).prop_map(Op::Finish),
        1 => Just(Op::Full),
        4 => (0..NAMES.len() + FLAT.len(), 0..NAMES.len() + FLAT.len(), any::<bool>())
            .prop_map(|(i, j, d)| Op::Rename(i, j, d)),
    ]
}

fn conflicts(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

proptest! {
    /// Whatever the interleaving of events, takes and finishes:
    /// - no two calls in flight touch the same path or an ancestor/descendant of it;
    /// - when all is done, every path's last change is covered by a call that started
    ///   after it (the path itself, a gone directory above it, or a full sync);
    /// - a full sync starts only while nothing else is in flight, and every path of a
    ///   call that ran beside a full sync is covered by a call that started after that
    ///   full sync ended (the full sync may have undone it).
    #[test]
    fn last_change_of_every_path_is_pushed_after_it(
        ops in proptest::collection::vec(op(), 1..80),
        collapse in prop_oneof![Just(0usize), Just(2), Just(3)],
        flood in prop_oneof![Just(1usize), Just(2), Just(RENAME_FLOOD)],
    ) {
        // With a low threshold, storms collapse into listings all the time, and renames
        // flood into their plain form.
        let mut q = Ledger::with_rename_flood(collapse, flood);
        let mut clock = 0u64;
        let mut last_change: HashMap<PathBuf, u64> = HashMap::new();
        let mut gone_at: HashMap<PathBuf, u64> = HashMap::new();
        let mut started: Vec<(u64, Job)> = Vec::new();
        let mut inflight: Vec<Job> = Vec::new();
        // Paths of calls that ran beside a full sync, and when that full sync ended.
        let mut beside: Vec<PathBuf> = Vec::new();
        let mut must_follow: Vec<(PathBuf, u64)> = Vec::new();
        let run = |q: &mut Ledger, clock: &mut u64, max: usize, inflight: &mut Vec<Job>, started: &mut Vec<(u64, Job)>, beside: &mut Vec<PathBuf>| {
            if let Some(w) = q.take(max) {
                *clock += 1;
                if w == Job::Full {
                    assert!(inflight.is_empty(), "a full sync started beside other work");
                }
                if inflight.contains(&Job::Full) {
                    beside.extend(w.plain_paths().into_iter().map(|e| e.path));
                }
                for other in inflight.iter() {
                    if *other == Job::Full {
                        continue;
                    }
                    // A rename is in flight as its plain paths. `a/` (a listing) is `a`
                    // for conflicts: Path drops the `/`.
                    for x in &other.plain_paths() { for y in &w.plain_paths() {
                        assert!(!conflicts(&x.path, &y.path), "{x:?} and {y:?} in flight together");
                    }}
                }
                started.push((*clock, w.clone()));
                inflight.push(w);
            }
        };
        for o in ops {
            clock += 1;
            match o {
                Op::Push(i, gone) => {
                    let path = p(NAMES[i]);
                    last_change.insert(path.clone(), clock);
                    if gone { gone_at.insert(path.clone(), clock); }
                    q.push(path, gone);
                }
                Op::Full => {
                    for v in last_change.values_mut() { *v = clock; }
                    last_change.insert(p(""), clock);
                    q.push_full();
                }
                Op::Rename(i, j, dir) => {
                    let (from, to) = (p(rename_name(i)), p(rename_name(j)));
                    if conflicts(&from, &to) {
                        continue;
                    }
                    let below: Vec<PathBuf> = if dir {
                        NAMES.iter().chain(&FLAT).map(|n| p(n)).filter(|n| n.starts_with(&to)).collect()
                    } else {
                        Vec::new()
                    };
                    for x in [&from, &to].into_iter().chain(&below) {
                        last_change.insert(x.clone(), clock);
                    }
                    if dir { gone_at.insert(from.clone(), clock); }
                    q.push_rename(from, to, dir, below);
                }
                Op::Take(max) => run(&mut q, &mut clock, max, &mut inflight, &mut started, &mut beside),
                Op::Finish(i) => {
                    if !inflight.is_empty() {
                        let w = inflight.remove(i % inflight.len());
                        q.finish(&w);
                        if w == Job::Full {
                            must_follow.extend(beside.drain(..).map(|x| (x, clock)));
                        }
                    }
                }
            }
        }
        // Quiet period: drain everything.
        loop {
            while let Some(w) = inflight.pop() {
                q.finish(&w);
                if w == Job::Full {
                    must_follow.extend(beside.drain(..).map(|x| (x, clock)));
                }
            }
            run(&mut q, &mut clock, 3, &mut inflight, &mut started, &mut beside);
            if inflight.is_empty() { break; }
        }
        prop_assert!(q.is_empty());
        prop_assert!(beside.is_empty());
        let full_last_change = last_change.remove(&p(""));
        let mut owed: Vec<(PathBuf, u64)> = last_change.iter().map(|(p, t)| (p.clone(), *t)).collect();
        owed.extend(must_follow);
        for (path, t) in &owed {
            let covered = started.iter().any(|(s, w)| *s > *t && match w {
                Job::Full => true,
                // A rename pushes `to` and what is below it and deletes `from` (with
                // what is below it, for a directory): its plain paths.
                Job::Paths(_) | Job::Rename { .. } => w.plain_paths().iter().any(|x| x.path == *path
                    || (path.starts_with(&x.path) && gone_at.get(&x.path).is_some_and(|g| g >= t))
                    // A listing `d/` covers d's direct children, and what was below a
                    // child that went away (the listing deletes it on the remote).
                    || (x.listing
                        && (path.parent() == Some(x.path.as_path())
                            || gone_at.iter().any(|(g, gt)| g.parent() == Some(x.path.as_path())
                                && path.starts_with(g) && gt >= t)))),
            });
            prop_assert!(covered, "{path:?} changed at {t} but no later call covers it: {started:?}");
        }
        if let Some(t) = full_last_change {
            prop_assert!(started.iter().any(|(s, w)| *s > t && *w == Job::Full));
        }
    }
}

// --- Marks: lag and barrier checkpoints ---

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

#[test]
fn a_checkpoint_passes_once_every_earlier_change_is_pushed() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_at(entry("a"), false, t0);
    let w = q.take(100).expect("work");
    q.push_at(entry("b"), false, at(t0, 1));
    let cp = q.checkpoint();
    q.push_at(entry("a"), false, at(t0, 2)); // changed again after the checkpoint
    assert!(!q.passed(cp));
    q.finish(&w);
    assert!(!q.passed(cp), "b waits");
    let w = q.take(1).expect("work");
    assert_eq!(paths(Some(w.clone())), [p("b")]);
    q.finish(&w);
    assert!(
        q.passed(cp),
        "a re-queued after the checkpoint does not hold it"
    );
    assert!(!q.passed(q.checkpoint()));
}

#[test]
fn a_failed_push_holds_the_checkpoint_until_it_is_paid() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_at(entry("x"), false, t0);
    let cp = q.checkpoint();
    let w = q.take(100).expect("work");
    q.owe(&w, Mark { seq: 0, since: t0 }, 0);
    q.finish(&w);
    assert!(!q.passed(cp), "owed");
    assert_eq!(
        q.oldest().map(|m| m.since),
        Some(t0),
        "lag counts from the change"
    );
    q.push_at(entry("x"), false, at(t0, 500)); // the retry
    let w = q.take(100).expect("work");
    q.paid(&w);
    q.finish(&w);
    assert!(q.passed(cp));
    assert_eq!(q.oldest(), None, "level");
}

#[test]
fn a_deleted_directory_and_a_full_sync_keep_the_oldest_mark() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_at(entry("d/a"), false, t0);
    let cp = q.checkpoint();
    q.push_at(entry("d"), true, at(t0, 10));
    assert_eq!(q.oldest().map(|m| m.since), Some(t0));
    assert!(!q.passed(cp));
    q.push_full_at(at(t0, 20));
    assert_eq!(q.oldest().map(|m| m.since), Some(t0));
    let w = q.take(100).expect("the full sync");
    assert_eq!(w, Job::Full);
    assert!(!q.passed(cp), "running");
    q.finish(&w);
    assert!(q.passed(cp));
}

proptest! {
    // The oldest pending time is the minimum over the entries' first-queued times, and
    // a merge (a change of a path already waiting) never makes it younger.
    #[test]
    fn oldest_pending_is_the_min_and_never_increases_on_merge(
        ops in proptest::collection::vec((0usize..6, any::<bool>(), 0u64..1000), 1..60)
    ) {
        let names = ["a", "a/b", "a/b/c", "d", "d/e", "f"];
        let t0 = Instant::now();
        let mut q = Ledger::default();
        // What is waiting: path -> first-queued time, kept by hand.
        let mut model: std::collections::BTreeMap<&str, Instant> = Default::default();
        let mut clock = 0;
        for (i, gone, ms) in ops {
            let name = names[i];
            clock += ms; // time only moves forward
            let now = at(t0, clock);
            let before = q.oldest().map(|m| m.since);
            let merge = model.contains_key(name);
            q.push_at(entry(name), gone, now);
            let mut first = now;
            if gone {
                let prefix = format!("{name}/");
                let below: Vec<&str> =
                    model.keys().copied().filter(|k| k.starts_with(&prefix)).collect();
                for k in below {
                    first = first.min(model.remove(k).unwrap_or(now));
                }
            }
            let e = model.entry(name).or_insert(first);
            *e = (*e).min(first);
            let want = model.values().min().copied();
            prop_assert_eq!(q.oldest().map(|m| m.since), want);
            if merge {
                if let Some(b) = before {
                    prop_assert!(q.oldest().map(|m| m.since) <= Some(b));
                }
            }
        }
    }
}

#[test]
fn a_rename_goes_alone_and_blocks_its_two_paths() {
    let mut q = Ledger::default();
    q.push_rename(p("old"), p("new"), true, vec![p("new"), p("new/f")]);
    let job = q.take(100).expect("the rename");
    assert!(matches!(&job, Job::Rename { from, to, .. } if *from == p("old") && *to == p("new")));
    // A change below either path waits for it.
    q.push(p("new/f"), false);
    q.push(p("old"), false);
    assert_eq!(q.take(100), None);
    q.finish(&job);
    assert_eq!(paths(q.take(100)), [p("new/f"), p("old")]);
}

#[test]
fn a_rename_meeting_pending_work_travels_plain() {
    // A swap through a temp name: three renames, each touching the one before.
    let mut q = Ledger::default();
    q.push_rename(p("A"), p("t"), true, vec![p("t"), p("t/x")]);
    q.push_rename(p("B"), p("A"), true, vec![p("A"), p("A/y")]);
    q.push_rename(p("t"), p("B"), true, vec![p("B"), p("B/x")]);
    let mut got: Vec<String> = paths(q.take(100))
        .iter()
        .map(|x| x.to_string_lossy().into_owned())
        .collect();
    got.sort();
    // Directories renamed in where others were renamed away go with a trailing `/`
    // (what the remote holds there is stale); `t` is only gone (`t/x/`, owed by the
    // rename into `t`, stays: pushed, it is only missing too).
    assert_eq!(got, ["A/", "A/y/", "B/", "B/x/", "t/", "t/x/"]);
    assert!(q.is_empty());
}

// An exchange of two directories whose two renames came in two reads, the first one
// already plain (something waited at its paths): the second took its old path for
// gone and cancelled the listings the first owed below it, so one side was never
// pushed below its top.
#[test]
fn the_second_half_of_a_split_exchange_keeps_what_the_first_owes() {
    let mut q = Ledger::default();
    q.push(p("XB/new.txt"), false);
    q.push_rename(
        p("XA"),
        p("XB"),
        true,
        vec![p("XB"), p("XB/sub"), p("XB/sub/f")],
    );
    q.push_rename(p("XB"), p("XA"), true, vec![p("XA"), p("XA/g")]);
    let mut got: Vec<String> = paths(q.take(100))
        .iter()
        .map(|x| x.to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["XA/", "XA/g/", "XB/", "XB/sub/", "XB/sub/f/"],
        "both sides and everything below them, as listings"
    );
    assert!(q.is_empty());
}

#[test]
fn a_rename_meeting_work_in_flight_travels_plain() {
    // A swap through a temp name seen in two batches: the first is in flight when the
    // last rename comes; what that call leaves at `B` on the remote is not known.
    let mut q = Ledger::default();
    q.push_rename(p("A"), p("t"), true, vec![p("t"), p("t/x")]);
    q.push_rename(p("B"), p("A"), true, vec![p("A"), p("A/y")]);
    let first = q.take(100).expect("the plain swap so far");
    assert!(matches!(first, Job::Paths(_)), "{first:?}");
    q.push_rename(p("t"), p("B"), true, vec![p("B"), p("B/x")]);
    assert_eq!(q.take(100), None, "t is in flight");
    q.finish(&first);
    let mut got: Vec<String> = paths(q.take(100))
        .iter()
        .map(|x| x.to_string_lossy().into_owned())
        .collect();
    got.sort();
    // `B` is pushed as a listing: what the remote held there goes; `t`, gone, goes as a
    // listing too (a push that deletes it, or lists it if it was made again).
    assert_eq!(got, ["B/", "B/x/", "t/"]);

    // Only the old path in flight (a write pushed just before): it waits, still a rename.
    let mut q = Ledger::default();
    q.push(p("old/f"), false);
    let write = q.take(100).expect("the write");
    q.push_rename(p("old"), p("new"), true, vec![p("new"), p("new/f")]);
    assert_eq!(q.take(100), None, "old/f is in flight");
    q.finish(&write);
    assert!(matches!(q.take(100), Some(Job::Rename { .. })));
}

#[test]
fn a_rename_carries_its_mark_waiting_in_flight_owed_and_plain() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_rename_at(p("old"), p("new"), true, vec![p("new"), p("new/f")], t0);
    let cp = q.checkpoint();
    assert_eq!(
        q.oldest().map(|m| m.since),
        Some(t0),
        "a waiting rename counts"
    );
    assert!(!q.passed(cp));
    let job = q.take(100).expect("the rename");
    let (mut flying, _) = q.in_flight();
    flying.sort();
    assert_eq!(shown_all(&flying), [p("new"), p("new/f"), p("old")]);
    assert!(!q.passed(cp), "in flight");
    q.owe(
        &job,
        Mark {
            seq: 0,
            since: at(t0, 99),
        },
        0,
    );
    q.finish(&job);
    assert!(!q.passed(cp), "owed");
    assert_eq!(
        q.oldest().map(|m| m.since),
        Some(t0),
        "owed with its own mark"
    );
    assert_eq!(q.outstanding(), 0);
    q.paid(&job);
    assert!(q.passed(cp));
    assert_eq!(q.oldest(), None);

    // Dissolved into its plain form, and then covered by a full sync: the mark stays.
    let mut q = Ledger::default();
    q.push_rename_at(p("a"), p("b"), false, vec![], t0);
    let cp = q.checkpoint();
    q.push_at(entry("b"), false, at(t0, 5));
    assert_eq!(q.len(), 2, "a and b, plain");
    assert_eq!(q.oldest().map(|m| m.since), Some(t0));
    q.push_full_at(at(t0, 10));
    assert_eq!(q.oldest().map(|m| m.since), Some(t0));
    let w = q.take(100).expect("the full sync");
    q.finish(&w);
    assert!(q.passed(cp));
}

#[test]
fn a_drained_rename_leaves_its_plain_paths() {
    let mut q = Ledger::default();
    q.push_rename(p("x"), p("y"), true, vec![p("y"), p("y/z")]);
    let (mut left, full) = q.drain();
    left.sort();
    assert_eq!(shown_all(&left), [p("x"), p("y"), p("y/z")]);
    assert!(!full);
    assert!(q.is_empty());
    assert_eq!(q.oldest(), None);
}

// --- Storms: a directory with too many entries waiting collapses into its listing ---

#[test]
fn a_storm_in_one_directory_collapses_into_its_listing() {
    let mut q = Ledger::with_collapse_at(3);
    let t0 = Instant::now();
    q.push_at(entry("d/1"), false, t0);
    q.push_at(entry("d/2"), false, at(t0, 1));
    q.push_at(entry("x"), false, at(t0, 2));
    assert_eq!(q.len(), 3, "below the threshold: one entry each");
    q.push_at(entry("d/3"), false, at(t0, 3));
    assert_eq!(q.len(), 2, "d's three entries are one now");
    assert_eq!(q.take_collapsed(), [(p("d"), 3)]);
    // It keeps the oldest mark of what it replaced.
    assert_eq!(q.oldest().map(|m| m.since), Some(t0));
    // Later changes of d's files merge into it while it waits.
    q.push_at(entry("d/4"), false, at(t0, 4));
    assert_eq!(q.len(), 2);
    assert_eq!(paths(q.take(100)), [p("x"), p("d/")]);
}

/// Found by an outside attack run: after a fail log was replayed, the files owed in a
/// directory whose listing was owed too merged into that listing; the listing's push paid
/// only its own path, and the files stayed owed: `--wait-synced` failed for up to the
/// timed replay's interval, the remotes long level.
#[test]
fn a_listing_pushed_pays_the_files_merged_into_it() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    let owed = Job::Paths(vec![
        entry("app/"),
        entry("app/s2/"),
        entry("app/s2/f1"),
        entry("app/s2/sub/"),
        entry("x"),
    ]);
    q.owe(&owed, Mark { seq: 0, since: t0 }, 0);
    for path in owed.plain_paths() {
        q.push(path, false);
    }
    let w = q.take(100).expect("work");
    q.paid(&w);
    q.finish(&w);
    while let Some(w) = q.take(100) {
        q.paid(&w);
        q.finish(&w);
    }
    assert_eq!(q.oldest(), None, "level: nothing owed is left");
}

/// Found by an outside attack run: a release moved out (`app` gone: its listing) and
/// another moved in under the same name while that listing was pushed. The push had
/// found `app` missing (a plain `./app`, to delete) and ran once it was back: it pushed
/// the directory alone, and what the remote held of the old release stayed.
#[test]
fn a_directory_changed_while_its_listing_is_pushed_goes_as_its_listing_again() {
    let mut q = Ledger::default();
    q.push(p("app"), true);
    let w = q.take(100).expect("work");
    assert_eq!(paths(Some(w.clone())), [p("app/")]);
    q.push(p("app"), false); // moved in again
    q.push(p("app/index.html"), false);
    q.finish(&w);
    assert_eq!(paths(q.take(100)), [p("app/")], "index.html merged into it");
}

/// Found by the property test below: a directory deleted and made again waits as its
/// listing, and a file made in it merges into that listing; a collapse of the parent
/// must not swallow the listing (the parent's listing pushes it only as a directory,
/// so the new file would never reach the remote).
#[test]
fn a_collapse_keeps_the_listings_waiting_below_it() {
    let mut q = Ledger::with_collapse_at(2);
    q.push(p("a/b"), true); // gone: waits as the listing `a/b/`
    q.push(p("a/b/c"), false); // made again with a file: merges into it
    assert_eq!(q.len(), 1);
    q.push(p("a/d"), false); // a has two children waiting: it collapses
    assert_eq!(q.take_collapsed(), [(p("a"), 1)], "a/d only");
    let mut got = paths(q.take(100));
    got.sort();
    assert_eq!(got, [p("a/"), p("a/b/")]);
}

/// Deleted directories are listings and are not merged into their parent's collapse; a
/// storm of them must not scan the parent again on every push.
#[test]
fn a_storm_of_deleted_directories_collapses_its_parent_once() {
    let mut q = Ledger::with_collapse_at(3);
    for i in 0..1000 {
        q.push(p(&format!("d/{i}")), true);
    }
    q.push(p("d/file"), false);
    assert_eq!(q.take_collapsed(), [(p("d"), 0)], "once, at the third");
    assert_eq!(q.len(), 1001, "the listings stay; the file merged into d/");
}

#[test]
fn deeper_entries_count_for_their_own_directory() {
    let mut q = Ledger::with_collapse_at(3);
    for n in ["d/s/1", "d/s2/1", "d/1", "d/s3/1", "d/t/u/1"] {
        q.push(p(n), false);
    }
    assert_eq!(q.len(), 5, "no directory has three direct children waiting");
    assert!(q.take_collapsed().is_empty());
    q.push(p("d/2"), false);
    q.push(p("d/3"), false);
    assert_eq!(q.take_collapsed(), [(p("d"), 3)]);
    let mut got = paths(q.take(100));
    got.sort();
    assert_eq!(
        got,
        [p("d/"), p("d/s/1"), p("d/s2/1"), p("d/s3/1"), p("d/t/u/1")]
    );
}

#[test]
fn the_top_directory_never_collapses() {
    let mut q = Ledger::with_collapse_at(2);
    for n in ["a", "b", "c"] {
        q.push(p(n), false);
    }
    assert_eq!(q.len(), 3);
}

#[test]
fn a_collapsed_directory_waits_for_its_children_in_flight() {
    let mut q = Ledger::with_collapse_at(3);
    q.push(p("d/1"), false);
    let first = q.take(100).expect("d/1");
    for n in ["d/2", "d/3", "d/4"] {
        q.push(p(n), false);
    }
    assert_eq!(q.len(), 1);
    assert!(q.take(100).is_none(), "d/1 is in flight below d");
    // d/1 changes again: merged into the waiting listing, pushed after it.
    q.push(p("d/1"), false);
    q.finish(&first);
    let listing = q.take(100).expect("the listing");
    assert_eq!(listing, Job::Paths(vec![entry("d/")]));
    assert_eq!(
        shown_all(&q.in_flight().0),
        [p("d/")],
        "in flight as a listing"
    );
    q.push(p("d/5"), false);
    assert!(q.take(100).is_none(), "d/5 waits for the listing in flight");
    q.finish(&listing);
    assert_eq!(paths(q.take(100)), [p("d/5")]);
}

#[test]
fn a_collapsed_directory_holds_the_checkpoint_until_its_listing_is_pushed() {
    let mut q = Ledger::with_collapse_at(2);
    q.push(p("d/1"), false);
    q.push(p("d/2"), false);
    let cp = q.checkpoint();
    q.push(p("d/3"), false); // merged, after the checkpoint
    assert!(!q.passed(cp));
    let w = q.take(100).expect("listing");
    assert!(!q.passed(cp), "in flight");
    q.owe(
        &w,
        Mark {
            seq: 0,
            since: Instant::now(),
        },
        0,
    );
    q.finish(&w);
    assert!(!q.passed(cp), "owed");
    q.paid(&w);
    assert!(q.passed(cp));
}

#[test]
fn a_deleted_collapsed_directory_goes_as_the_directory() {
    let mut q = Ledger::with_collapse_at(2);
    q.push(p("d/1"), false);
    q.push(p("d/2"), false);
    q.push(p("d"), true);
    // Handed out with its `/`; the push drops it once d is not a directory.
    assert_eq!(paths(q.take(100)), [p("d/")]);
}

#[test]
fn a_listing_left_at_the_stop_or_owed_stays_a_listing() {
    let mut q = Ledger::with_collapse_at(2);
    q.push(p("d/1"), false);
    q.push(p("d/2"), false);
    let (left, full) = q.drain();
    assert!(!full);
    assert_eq!(shown_all(&left), [p("d/")]);
    // Queued again from the fail log (which keeps the `/`), it is a listing again.
    let mut q = Ledger::with_collapse_at(0);
    q.push(entry("d/"), false);
    q.push(p("d/1"), false);
    assert_eq!(q.len(), 1, "d/1 merges into the listing waiting");
    assert_eq!(paths(q.take(100)), [p("d/")]);
}

#[test]
fn collapse_is_off_at_zero() {
    let mut q = Ledger::with_collapse_at(0);
    for i in 0..50 {
        q.push(p(&format!("d/{i}")), false);
    }
    assert_eq!(q.len(), 50);
}

// --- Rename floods: many renames never serialize a remote ---

fn renames_in(q: &mut Ledger, dir: &str, n: usize) {
    for i in 0..n {
        q.push_rename(
            p(&format!("{dir}/f{i}")),
            p(&format!("{dir}/g{i}")),
            false,
            vec![],
        );
    }
}

#[test]
fn a_few_renames_still_travel_as_renames() {
    let mut q = Ledger::default();
    renames_in(&mut q, "d", RENAME_FLOOD);
    for i in 0..RENAME_FLOOD {
        let job = q.take(1000).expect("a rename");
        assert!(
            matches!(&job, Job::Rename { to, .. } if *to == p(&format!("d/g{i}"))),
            "{job:?}"
        );
        q.finish(&job);
    }
    assert_eq!(q.take_flooded(), 0);
    assert!(q.is_empty());
}

#[test]
fn a_flood_of_renames_travels_plain_in_batches() {
    let mut q = Ledger::default();
    renames_in(&mut q, "d", 300);
    let mut handed = Vec::new();
    while let Some(job) = q.take(250) {
        assert!(matches!(job, Job::Paths(_)), "a rename went alone: {job:?}");
        handed.extend(paths(Some(job.clone())));
        q.finish(&job);
    }
    assert_eq!(q.take_flooded(), 300);
    assert_eq!(handed.len(), 600, "every old and new name, in three calls");
    for i in 0..300 {
        assert!(handed.contains(&p(&format!("d/f{i}"))));
        assert!(handed.contains(&p(&format!("d/g{i}"))));
    }
    assert!(q.is_empty());
    assert_eq!(q.oldest(), None);
}

#[test]
fn an_unrelated_path_is_not_held_behind_waiting_renames() {
    // Fewer than a flood: they stay renames, and the path goes right after the one
    // rename handed out before it, not after all of them.
    let mut q = Ledger::default();
    renames_in(&mut q, "d", RENAME_FLOOD);
    let first = q.take(1000).expect("the oldest rename");
    assert!(matches!(first, Job::Rename { .. }));
    q.push(p("other.txt"), false);
    assert_eq!(paths(q.take(1000)), [p("other.txt")]);
    // Then renames and paths take turns.
    q.push(p("later.txt"), false);
    let second = q.take(1000).expect("the next rename");
    assert!(matches!(second, Job::Rename { .. }), "{second:?}");
    assert_eq!(paths(q.take(1000)), [p("later.txt")]);

    // A flood: the path is in the first batch, however many renames wait.
    let mut q = Ledger::default();
    renames_in(&mut q, "d", 2000);
    q.push(p("other.txt"), false);
    assert_eq!(paths(q.take(2)), [p("other.txt"), p("d/f0")]);
}

#[test]
fn a_flood_keeps_the_renames_marks_and_their_order_per_path() {
    let t0 = Instant::now();
    let mut q = Ledger::with_rename_flood(0, 2);
    q.push_rename_at(p("a"), p("b"), false, vec![], t0);
    let cp = q.checkpoint();
    q.push_rename_at(p("c"), p("d"), false, vec![], at(t0, 1));
    q.push_rename_at(p("e"), p("f"), false, vec![], at(t0, 2));
    q.push(p("x/y"), false);
    // The flood turns all three plain, with their marks.
    let job = q.take(3).expect("a batch");
    assert_eq!(paths(Some(job.clone())), [p("x/y"), p("a"), p("b")]);
    assert_eq!(q.oldest().map(|m| m.since), Some(t0));
    // A path in flight holds back a later change of it.
    q.push(p("b"), false);
    let rest = q.take(100).expect("the rest");
    assert_eq!(paths(Some(rest.clone())), [p("c"), p("d"), p("e"), p("f")]);
    assert_eq!(q.take(100), None, "b waits for the call carrying it");
    q.finish(&job);
    assert!(
        q.passed(cp),
        "the rename a -> b went plain; b changed again later"
    );
    assert_eq!(paths(q.take(100)), [p("b")]);
}

/// A directory deleted (its listing went out as a delete) and made again before rsync
/// read the tree was pushed as a directory only; it waits again as its listing, with the
/// mark it had, so a barrier taken before does not pass (found by the simulator, seed
/// 593: the old directory's file stayed on the remote and --wait-synced said synced).
#[test]
fn a_listing_pushed_again_keeps_its_mark_and_its_slash() {
    let mut q = Ledger::default();
    q.push(p("b"), true);
    let checkpoint = q.checkpoint();
    let job = q.take(100).expect("the listing");
    assert_eq!(paths(Some(job.clone())), [p("b/")]);
    q.finish_again(&job, &[p("b")], Instant::now());
    assert!(
        !q.passed(checkpoint),
        "the barrier must wait for the listing"
    );
    assert_eq!(paths(q.take(100)), [p("b/")]);
}

/// The queue's owed marks agree with the fail log on listings (found by the simulator,
/// seed 6368): a listing `e/b/` owed was paid in the queue by the push of its parent's
/// listing `e/` (which pushes `e/b` as a directory only), so a barrier passed while the
/// fail log still owed it and the remote lacked its files.
#[test]
fn an_owed_listing_is_paid_only_by_its_own_listing() {
    let mut q = Ledger::default();
    let since = Instant::now();
    q.owe(
        &Job::Paths(vec![entry("e/"), entry("e/b/"), entry("e/f")]),
        Mark { seq: 1, since },
        0,
    );
    q.paid(&Job::Paths(vec![entry("e/")]));
    assert!(!q.passed(1), "e/b/ is still owed");
    q.paid(&Job::Paths(vec![entry("e/b")]));
    assert!(!q.passed(1), "a plain push of e/b does not pay its listing");
    q.paid(&Job::Paths(vec![entry("e/b/")]));
    assert!(q.passed(1));
}

/// The ledger at a stop: what waited is owed with what was in flight, and a push that
/// was in flight and succeeds after the close pays only what it carried, not a newer
/// change of its path that waited behind it, nor a full sync that waited (a full sync
/// in flight and a full sync waiting: the stop's fail log held only the waiting one's
/// `./`, which the running one then paid, found by the simulator, seed 10557).
#[test]
fn what_waited_at_the_close_stays_owed_after_a_push_in_flight_succeeds() {
    let mut q = Ledger::default();
    q.push(p("a"), false);
    let running = q.take(10).expect("a");
    q.push(p("a"), false); // changed again while its push runs
    q.push(entry("d/"), false);
    let left = q.close();
    assert_eq!(shown_all(&left.waiting), [p("a"), p("d/")]);
    assert_eq!(shown_all(&left.running), [p("a")]);
    assert!(!q.paid(&running), "a waited behind its push: still owed");
    q.finish(&running);
    assert_eq!(shown_all(&q.owed().entries()), [p("a"), p("d/")]);
    assert!(!q.passed(q.checkpoint()));

    let mut q = Ledger::default();
    q.push_full();
    let full = q.take(10).expect("the full sync");
    q.push_full(); // an overflow while it runs
    let left = q.close();
    assert!(left.full);
    assert!(!q.paid(&full), "the waiting full sync is still owed");
    assert!(q.owed().full);
}

/// A job goes out as several calls (its plain paths, then its trees, then each big file),
/// each booked as it lands, and the job leaves flight when the last one ends. At a
/// stop between two of them, what an earlier call landed is not owed: no push is left
/// to pay it, so the fail log kept it, to be pushed again at the next start (the write
/// `during.txt` went in one job with the trees of four released deletes, its call
/// landed, and the stop came while the trees' call ran: the fail log of
/// brake::a_stop_while_held_keeps_them_held_at_the_next_start, 9 of 231 runs on
/// fanotify, 5 of 100 on inotify). What is still to land is owed, and so is a newer
/// change of a landed path.
#[test]
fn what_a_call_landed_is_not_owed_at_a_close_before_its_job_ends() {
    let now = Instant::now();
    let mut q = Ledger::default();
    q.push(p("during.txt"), false);
    q.push(p("d0"), false);
    q.push(p("d1"), false);
    let job = q.take(100).expect("one job");
    assert_eq!(
        paths(Some(job.clone())),
        [p("during.txt"), p("d0"), p("d1")]
    );
    // Its first call lands; the stop comes while the second runs.
    let first = Job::Paths(vec![entry("during.txt")]);
    let second = Job::Paths(vec![entry("d0"), entry("d1")]);
    q.pushed(&first, &[], now);
    let left = q.close();
    let mut running = shown_all(&left.running);
    running.sort();
    assert_eq!(running, [p("d0"), p("d1")], "in flight and not landed");
    assert_eq!(shown_all(&q.owed().entries()), [p("d0"), p("d1")]);
    q.pushed(&second, &[], now);
    q.finish(&job);
    assert!(!q.owes(), "owed: {:?}", shown_all(&q.owed().entries()));
    assert!(q.passed(q.checkpoint()));

    // The second call fails after the close: what it carried stays owed, not the
    // first call's path.
    let mut q = Ledger::default();
    q.push(p("during.txt"), false);
    q.push(p("d0"), false);
    let job = q.take(100).expect("one job");
    q.pushed(&first, &[], now);
    q.close();
    q.failed(
        &Job::Paths(vec![entry("d0")]),
        10,
        now,
        std::time::SystemTime::now(),
        0,
    );
    q.finish(&job);
    assert_eq!(shown_all(&q.owed().entries()), [p("d0")]);

    // Changed again after its call landed: the newer change waits, and is owed.
    let mut q = Ledger::default();
    q.push(p("during.txt"), false);
    q.push(p("d0"), false);
    let job = q.take(100).expect("one job");
    q.pushed(&first, &[], now);
    q.push(p("during.txt"), false);
    let left = q.close();
    assert_eq!(shown_all(&left.waiting), [p("during.txt")]);
    q.pushed(&Job::Paths(vec![entry("d0")]), &[], now);
    q.finish(&job);
    assert_eq!(shown_all(&q.owed().entries()), [p("during.txt")]);
}

/// A path left out of a call (below what is a file now) is not paid by it: what it owes
/// moves to the file with the oldest of its marks, owed and in flight (found by the
/// simulator, seed 14395: the call that left `d/c/a` out paid its owed entry, the
/// redirect to `d/c` carried only the newer mark it had in flight, and a barrier taken
/// between the two passed while the remote still held `d/c/a`).
#[test]
fn a_path_left_out_below_a_file_moves_what_it_owes_to_the_file() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_at(entry("d/c/a"), false, t0);
    q.push_at(entry("b"), false, t0);
    let w = q.take(100).expect("work");
    q.owe(&w, Mark { seq: 0, since: t0 }, 10);
    q.finish(&w);
    let checkpoint = q.checkpoint();
    // The retry takes them again, with newer marks.
    q.retry_at(Some(at(t0, 1)));
    q.retry_due(at(t0, 2));
    let w = q.take(100).expect("the retry");
    assert_eq!(paths(Some(w.clone())), [p("b"), p("d/c/a")]);
    // d/c is a file now: the call succeeds without d/c/a.
    let changed = q.paid_leaving(&w, &[(p("d/c/a"), p("d/c"))], at(t0, 3));
    q.finish(&w);
    assert!(
        changed,
        "what is owed changed: the fail log is written again"
    );
    assert_eq!(
        shown_all(&q.owed().entries()),
        [p("d/c")],
        "d/c/a's owed entry moved to the file"
    );
    assert!(
        !q.passed(checkpoint),
        "the barrier waits for the file's push"
    );
    assert_eq!(q.oldest().map(|m| m.since), Some(t0), "the oldest mark");
    let w = q.take(100).expect("the file");
    assert_eq!(paths(Some(w.clone())), [p("d/c")]);
    assert!(q.paid_leaving(&w, &[], at(t0, 4)));
    q.finish(&w);
    assert!(q.passed(checkpoint));
    assert!(!q.owes());
}

/// A listing left out of a call (its directory below what is a file now) moves what
/// its push would have paid, the plain paths owed in it, to the file with it (found by
/// the simulator, seed 3078568: `d/x` and `d/y` owed, queued again once the remote was
/// level, collapsed into the listing `d/`, which was left out below the file `a`; the
/// file's push paid, they stayed owed and were queued again, for ever).
#[test]
fn a_listing_left_out_below_a_file_moves_what_it_covers_to_the_file() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_at(entry("a/d/x"), false, t0);
    q.push_at(entry("a/d/y"), false, t0);
    let w = q.take(100).expect("work");
    q.owe(&w, Mark { seq: 0, since: t0 }, 10);
    q.finish(&w);
    let checkpoint = q.checkpoint();
    // Queued again as the directory's listing (as a collapse makes it).
    q.push_at(entry("a/d/"), false, at(t0, 1));
    let w = q.take(100).expect("the listing");
    assert_eq!(paths(Some(w.clone())), [p("a/d")]);
    // a is a file now: the call succeeds without the listing.
    assert!(q.paid_leaving(&w, &[(p("a/d"), p("a"))], at(t0, 2)));
    q.finish(&w);
    assert_eq!(
        shown_all(&q.owed().entries()),
        [p("a")],
        "what the listing covered moved to the file"
    );
    assert!(
        !q.passed(checkpoint),
        "the barrier waits for the file's push"
    );
    assert_eq!(q.oldest().map(|m| m.since), Some(t0), "the oldest mark");
    let w = q.take(100).expect("the file");
    assert_eq!(paths(Some(w.clone())), [p("a")]);
    let pushed = q.pushed(&w, &[], at(t0, 3));
    q.finish(&w);
    assert!(
        !pushed.still_owes && pushed.orphaned == 0,
        "level: nothing queued again"
    );
    assert!(q.passed(checkpoint));
    assert!(q.is_empty());
}

/// A file whose change rsync's quick check cannot see (`Item::Blind`): a full sync
/// queued after it does not cover it, one that lands queues it again with its mark,
/// and once its own push lands a full sync covers it again.
#[test]
fn a_blind_file_is_not_covered_by_a_full_sync() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_blind_at(p("b"), t0);
    q.push(p("other"), false);
    let checkpoint = q.checkpoint();
    q.push_full_at(at(t0, 1));
    let w = q.take(100).expect("the full sync first");
    assert_eq!(w, Job::Full);
    // Beside the running full sync: only the blind file still waits.
    let beside = q.take(100).expect("the blind file beside it");
    assert_eq!(paths(Some(beside.clone())), [p("b")]);
    q.pushed(&beside, &[], at(t0, 2));
    q.finish(&beside);
    q.pushed(&w, &[], at(t0, 3));
    q.finish(&w);
    // Pushed beside the full sync: it waits once more (as every path beside one does).
    assert!(!q.passed(checkpoint), "the barrier waits for it");
    let again = q.take(100).expect("once more after the full sync");
    assert_eq!(paths(Some(again.clone())), [p("b")]);
    q.pushed(&again, &[], at(t0, 4));
    q.finish(&again);
    assert!(q.passed(checkpoint));
    // Landed: an ordinary path again, covered by the next full sync.
    q.push(p("b"), false);
    q.push_full_at(at(t0, 5));
    assert_eq!(q.take(100), Some(Job::Full));
    assert!(q.take(100).is_none(), "covered by the full sync");
}

/// A blind file still waiting when a full sync lands (it could not go beside it) is
/// queued again with its own mark, and a barrier asked before waits for it.
#[test]
fn a_blind_file_waiting_through_a_full_sync_goes_after_it() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_full_at(t0);
    let w = q.take(100).expect("the full sync");
    q.push_blind_at(p("b"), at(t0, 1));
    let checkpoint = q.checkpoint();
    q.pushed(&w, &[], at(t0, 2));
    q.finish(&w);
    assert!(!q.passed(checkpoint));
    let b = q.take(100).expect("the blind file");
    assert_eq!(paths(Some(b.clone())), [p("b")]);
    q.pushed(&b, &[], at(t0, 3));
    q.finish(&b);
    assert!(q.passed(checkpoint));
}

/// What the fail log keeps of the blind files (`blind_paths`, `Owed::blind`): until a
/// push of each lands, through a full sync's landing; one left out of its push (below
/// a file now) leaves it too, as nothing there can be skipped by a quick check.
#[test]
fn a_blind_file_is_kept_for_the_fail_log_until_a_push_of_it_lands_or_leaves_it_out() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_blind_at(p("b"), t0);
    q.push_blind_at(p("d/c"), t0);
    q.push_full_at(at(t0, 1));
    let full = q.take(100).expect("the full sync");
    let beside = q.take(100).expect("the blind files beside it");
    q.pushed(&full, &[], at(t0, 2));
    q.finish(&full);
    assert_eq!(q.blind_paths(), [p("b"), p("d/c")].into());
    let left_out = [(p("d/c"), p("d"))];
    let pushed = q.pushed(&beside, &left_out, at(t0, 3));
    q.finish(&beside);
    assert!(pushed.changed, "the fail log is written without them");
    assert!(q.blind_paths().is_empty());
}

/// A blind file queued while its directory waits as its listing (the warm-restart
/// catch-up pushes a directory the index knows only as unknown as its listing) goes in
/// that listing, which sends it with `--ignore-times`: its landing leaves the file out
/// of what the fail log keeps (found by warm::once_with_a_remote_down_...: an exit 0
/// with the fail log still naming the files).
#[test]
fn a_blind_file_sent_by_its_directorys_listing_leaves_the_fail_log_when_it_lands() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_at(Entry::listing("d"), false, t0);
    q.push_blind_at(p("d/c"), t0);
    let job = q.take(100).expect("the listing");
    assert_eq!(
        job,
        Job::Paths(vec![Entry::listing("d")]),
        "d/c went into it"
    );
    assert_eq!(q.blind_paths(), [p("d/c")].into());
    let pushed = q.pushed(&job, &[], at(t0, 1));
    q.finish(&job);
    assert!(pushed.changed, "the fail log is written without d/c");
    assert!(q.blind_paths().is_empty());
}

#[test]
fn a_listing_sends_its_direct_entries_and_a_tree_all_below() {
    use super::owed::listed_in;
    assert!(listed_in(b"d/c", b"d", false));
    assert!(!listed_in(b"d/e/f", b"d", false));
    assert!(listed_in(b"d/e/f", b"d", true));
    assert!(!listed_in(b"de/g", b"d", true));
    assert!(!listed_in(b"d", b"d", true));
    assert!(listed_in(b"x", b"", false));
    assert!(!listed_in(b"x/y", b"", false));
}

/// The ledger keeps the retry schedule of what is owed (no other record of it): a
/// failure sets the retry on the backoff, a remote that did not answer and answers
/// again has what it owes queued at once (its retry dropped), and once it is level its
/// schedule ends.
#[test]
fn the_ledger_keeps_the_retry_schedule_of_what_is_owed() {
    use std::time::SystemTime;
    let t0 = Instant::now();
    let w0 = SystemTime::now();
    let mut q = Ledger::default();
    q.push_at(entry("a"), false, t0);
    let w = q.take(10).expect("a");
    let plan = q.failed(&w, 10, t0, w0, 0); // the remote did not answer
    q.finish(&w);
    assert_eq!(plan.retry_at, at(t0, 800), "the first step of the backoff");
    assert_eq!(plan.rest, Duration::from_millis(800), "it rests until then");
    assert!(q.retrying() && q.recovery().is_failing());
    assert_eq!(q.retry_due(at(t0, 799)), Some(at(t0, 800)));
    assert!(q.is_empty(), "not queued before its time");
    // A live push succeeds: the remote answers again, what it owes is queued now.
    q.push_at(entry("b"), false, at(t0, 100));
    let w = q.take(10).expect("b");
    let pushed = q.pushed(&w, &[], at(t0, 100));
    q.finish(&w);
    assert!(pushed.was_failing && pushed.recovered && pushed.still_owes);
    assert!(!q.retrying(), "its retry is dropped");
    let w = q.take(10).expect("what it owes");
    assert_eq!(paths(Some(w.clone())), [p("a")]);
    let pushed = q.pushed(&w, &[], at(t0, 200));
    q.finish(&w);
    assert!(pushed.changed && !pushed.still_owes);
    assert!(!q.recovery().is_failing(), "level: the schedule ends");
    assert_eq!(q.recovery().next_retry(t0), None);
    assert!(q.passed(q.checkpoint()));
}

/// A directory owed with everything below it (a full sync could not read it) stays one
/// through the retry, the take, flight and the close: what it was owed as is what goes
/// out, and only its push pays it.
#[test]
fn a_tree_owed_stays_a_tree_until_its_push_pays_it() {
    let now = std::time::Instant::now();
    let mut q = Ledger::default();
    let tree = Job::Paths(vec![Entry::tree("locked"), Entry::plain("secret.txt")]);
    q.owe(&tree, Mark { seq: 0, since: now }, 23);
    q.retry_at(Some(now));
    assert_eq!(q.retry_due(now), None);
    let Some(Job::Paths(taken)) = q.take(10) else {
        panic!("the owed entries are handed out");
    };
    assert_eq!(taken, [Entry::tree("locked"), Entry::plain("secret.txt")]);
    // In flight at a stop: owed as a tree still.
    q.close();
    assert!(q.owed().trees.contains(&p("locked")));
    // A listing of it pays nothing; its push pays it.
    assert!(!q.paid(&Job::Paths(vec![Entry::listing("locked")])));
    assert!(q.paid(&Job::Paths(vec![Entry::tree("locked")])));
    assert!(!q.owed().trees.contains(&p("locked")));
}

// --- Live changes beside a full sync ---

/// A change made while a full sync runs is pushed at once, beside it; its push may be
/// undone by that full sync (deleted by its delete pass, or taken back to what its file
/// list held), so it goes again once the full sync ends, and a barrier taken after the
/// change passes only once that second push landed.
#[test]
fn a_change_beside_a_full_sync_goes_at_once_and_again_after_it() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_full_at(t0);
    assert_eq!(q.take(100), Some(Job::Full));
    q.push_at(entry("d/new"), false, at(t0, 1));
    q.push_at(entry("gone/"), true, at(t0, 1));
    let cp = q.checkpoint();
    let live = q.take(100).expect("pushed beside the full sync");
    assert_eq!(paths(Some(live.clone())), [p("d/new"), p("gone/")]);
    assert!(q.is_trickle(), "a single edit is not a burst");
    q.finish(&live);
    assert!(
        q.take(100).is_none(),
        "nothing waits while the full sync runs"
    );
    q.finish_again(&Job::Full, &[], at(t0, 5));
    assert!(!q.passed(cp), "the full sync may have undone the live push");
    let again = q.take(100).expect("pushed again after the full sync");
    assert_eq!(paths(Some(again.clone())), [p("d/new"), p("gone/")]);
    assert_eq!(q.oldest().map(|m| m.since), Some(at(t0, 1)), "marks kept");
    q.finish(&again);
    assert!(q.passed(cp));
    assert!(q.take(100).is_none(), "once is enough");
}

/// A push beside a full sync that is still in flight when the full sync ends goes again
/// after its own end (never two calls for one path at once); one that failed is owed
/// and goes again too.
#[test]
fn a_push_still_running_when_the_full_sync_ends_goes_again_after_it() {
    let mut q = Ledger::default();
    q.push_full();
    let full = q.take(100).expect("full");
    q.push(p("a"), false);
    let a = q.take(100).expect("a beside the full sync");
    q.push(p("b"), false);
    let b = q.take(100).expect("b beside the full sync");
    q.owe(
        &b,
        Mark {
            seq: 0,
            since: Instant::now(),
        },
        10,
    );
    q.finish(&b);
    q.finish(&full);
    assert_eq!(paths(q.take(100)), [p("b")], "a is still in flight");
    q.finish(&a);
    assert_eq!(paths(q.take(100)), [p("a")]);
}

/// A second full sync asked while one runs covers what went beside the first: nothing
/// goes again beside it, its mark holds the barrier.
#[test]
fn a_full_sync_waiting_covers_what_went_beside_the_running_one() {
    let mut q = Ledger::default();
    q.push_full();
    let full = q.take(100).expect("full");
    q.push(p("a"), false);
    let cp = q.checkpoint();
    let a = q.take(100).expect("a");
    q.finish(&a);
    q.push_full();
    q.finish(&full);
    assert!(!q.passed(cp));
    assert_eq!(q.take(100), Some(Job::Full));
    q.finish(&Job::Full);
    assert!(q.passed(cp));
    assert!(q.take(100).is_none());
}

/// At a stop while a full sync runs, what went beside it is owed; neither its own push
/// nor the full sync, landing after the close, pays it.
#[test]
fn what_went_beside_a_full_sync_stays_owed_at_the_close() {
    let mut q = Ledger::default();
    q.push_full();
    let full = q.take(100).expect("full");
    q.push(p("a"), false);
    let a = q.take(100).expect("a");
    q.finish(&a);
    q.push(p("b"), false);
    let b = q.take(100).expect("b");
    let left = q.close();
    assert!(left.full);
    assert!(!q.paid(&b), "b's push ran beside the full sync");
    q.finish(&b);
    q.paid(&full);
    q.finish(&full);
    let owed = q.owed();
    assert!(!owed.full);
    let mut owed: Vec<PathBuf> = owed.paths.keys().cloned().collect();
    owed.sort();
    assert_eq!(owed, [p("a"), p("b")]);
    assert!(!q.passed(q.checkpoint()));
}

// --- The names of one multi-linked file, with -H (see `links.rs`) ---

// The outside run's round (`echo > h/a; rm h/b; ln h/a h/b; echo >> h/b`): `h/a` went
// out at its write, the delete of `h/b` beside it, then both names were queued again and
// each went as soon as its own call ended: two calls, two files on the remote. Queued as
// one set, they wait for both calls and go in one, and the barrier waits for it.
#[test]
fn the_names_of_one_file_go_in_one_call_after_every_call_in_flight_for_them() {
    let t0 = Instant::now();
    let mut q = Ledger::default();
    q.push_at(entry("h/a"), false, t0);
    let wa = q.take(100).expect("h/a");
    q.push_at(entry("h/b"), false, at(t0, 1));
    let wb = q.take(100).expect("the delete of h/b");
    q.push_at(entry("x"), false, at(t0, 2));
    q.push_linked(&[p("h/b"), p("h/a")], at(t0, 3));
    let cp = q.checkpoint();
    let wx = q.take(100).expect("x");
    assert_eq!(
        paths(Some(wx.clone())),
        [p("x")],
        "the set waits for both calls"
    );
    q.finish(&wx);
    q.finish(&wa);
    assert!(q.take(100).is_none(), "h/b is still in flight");
    q.finish(&wb);
    assert!(!q.passed(cp));
    let w = q.take(1).expect("the set");
    let mut got = paths(Some(w.clone()));
    got.sort();
    assert_eq!(got, [p("h/a"), p("h/b")], "one call, past the batch size");
    q.paid(&w);
    q.finish(&w);
    assert!(q.passed(cp));
    // A collapse keeps a name of a set with the others: the listing goes with them.
    let mut q = Ledger::with_collapse_at(3);
    q.push_linked(&[p("d/a"), p("e/b")], t0);
    q.push(p("d/x"), false);
    q.push(p("d/y"), false);
    let w = q.take(1).expect("the listing of d and e/b");
    assert_eq!(w.plain_paths().len(), 2, "{w:?}");
    // Without a set: the first free one alone.
    let mut q = Ledger::default();
    q.push(p("h/b"), false);
    q.push(p("h/a"), false);
    assert_eq!(paths(q.take(1)), [p("h/b")]);
}

// Handed out beside a full sync, a set waits again as a set when the full sync ends.
#[test]
fn a_set_handed_out_beside_a_full_sync_waits_again_as_a_set() {
    let mut q = Ledger::default();
    q.push_full();
    let full = q.take(100).expect("the full sync");
    q.push_linked(&[p("a"), p("b")], Instant::now());
    let w = q.take(100).expect("beside it");
    q.finish(&w);
    q.finish(&full);
    let mut got = paths(q.take(1));
    got.sort();
    assert_eq!(got, [p("a"), p("b")], "again, and as a set");
}
