use std::time::Duration;

use super::*;
use crate::sync::job::Job;

fn rule(percent: u8, count: usize) -> DeleteBrake {
    DeleteBrake {
        percent,
        count,
        window: Duration::from_secs(60),
        settle: Duration::ZERO,
    }
}

/// [`rule`] whose deletes wait `settle` before they go.
fn settling(percent: u8, count: usize, settle: Duration) -> DeleteBrake {
    DeleteBrake {
        settle,
        ..rule(percent, count)
    }
}

// The outside run: with a count of 3, the first deletes of an `rm -rf` went out at
// once, before the third was counted, so each remote lost a different few before
// the hold. A delete waits out the settle time first: the whole `rm -rf` is counted
// before any of it may go, and nothing of it reaches a remote.
#[test]
fn deletes_wait_out_the_settle_time_so_a_mass_delete_is_held_whole() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut l = braked(settling(0, 3, Duration::from_secs(2)), 100);
    l.push_gone_at(p("d/a"), false, t0);
    l.push_gone_at(p("d/b"), false, t0 + ms(1));
    assert!(l.take_at(1000, t0 + ms(5)).is_none(), "the deletes settle");
    assert_eq!(
        l.settle_due(),
        Some(t0 + ms(2001)),
        "2 s after the latest delete"
    );
    // A write flows meanwhile; the deletes still wait.
    l.push_at(Entry::plain("new.txt"), false, t0 + ms(6));
    match l.take_at(1000, t0 + ms(7)) {
        Some(Job::Paths(p)) => assert_eq!(names(&p), ["new.txt"]),
        other => panic!("expected the write alone, got {other:?}"),
    }
    l.finish(&Job::Paths(vec![Entry::plain("new.txt")]));
    // The third delete trips the brake: all three are held, none went out.
    l.push_gone_at(p("d"), true, t0 + ms(8));
    assert!(l.holding());
    assert_eq!(l.held().deletes, 1, "d holds what waited below it");
    assert!(l.take_at(1000, t0 + ms(5000)).is_none());
    // A few deletes under the threshold go once no delete came for the settle
    // time (an `rm -rf` whose events arrive slowly is counted whole first).
    let mut l = braked(settling(0, 3, Duration::from_secs(2)), 100);
    l.push_gone_at(p("x"), false, t0);
    l.push_gone_at(p("y"), false, t0 + ms(1500));
    assert!(
        l.take_at(1000, t0 + ms(2000)).is_none(),
        "y came within x's 2 s"
    );
    assert_eq!(l.settle_due(), Some(t0 + ms(3500)));
    match l.take_at(1000, t0 + ms(3500)) {
        Some(Job::Paths(p)) => assert_eq!(names(&p), ["x", "y"]),
        other => panic!("expected x and y, got {other:?}"),
    }
    // A steady trickle holds a delete back at most ten settle times.
    let mut l = braked(settling(0, 1000, Duration::from_secs(2)), 100_000);
    for i in 0..30u64 {
        l.push_gone_at(p(&format!("t{i}")), false, t0 + ms(i * 1000));
    }
    match l.take_at(1, t0 + ms(20_000)) {
        Some(Job::Paths(p)) => assert_eq!(names(&p), ["t0"]),
        other => panic!("expected t0 at its cap, got {other:?}"),
    }
    // Made again while it settles: the write goes at once, as what is there now.
    let mut l = braked(settling(0, 3, Duration::from_secs(2)), 100);
    l.push_gone_at(p("z"), false, t0);
    l.push_at(Entry::plain("z"), false, t0 + ms(1));
    assert!(l.take_at(1000, t0 + ms(2)).is_some());
    // Settle 0, or the brake off: at once.
    let mut l = braked(settling(0, 3, Duration::ZERO), 100);
    l.push_gone_at(p("x"), false, t0);
    assert!(l.take_at(1000, t0).is_some());
    let mut l = Ledger::with_collapse_at(0);
    l.push_gone_at(p("x"), false, t0);
    assert!(l.take_at(1000, t0).is_some());
}

// The simulator (the `brake` fault, seed 50): the operator released an empty
// root's held full sync, and it ran again with `--max-delete=0`, was held again,
// and never deleted anything: a release could never go through. The full sync the
// operator released is not guarded; the next one is again.
#[test]
fn a_released_full_sync_of_an_empty_root_deletes_as_asked() {
    let now = Instant::now();
    let mut l = braked(rule(0, 3), 10);
    l.push_full_checked(Some(0), now);
    assert!(l.holding() && l.held().full);
    assert!(l.take_at(1000, now).is_none());
    let held = l.release_deletes(now);
    assert!(held.full);
    assert_eq!(l.take_at(1000, now), Some(Job::Full));
    assert!(!l.guards_full(), "released: it deletes as asked");
    l.finish(&Job::Full);
    l.push_full_at(now);
    assert_eq!(l.take_at(1000, now), Some(Job::Full));
    assert!(l.guards_full(), "the next full sync is guarded again");
}

// The simulator (the `brake` fault, seed 2521): the delete of `a` held (read from
// the fail log), then `a` made again and a directory moved into it waiting as
// `a/a`; the release pushed `a` as its listing, which took in `a/a` and pushed one
// level of it: `a/a/a` never reached the remote, and a barrier passed. A held
// directory is released as its whole tree.
#[test]
fn a_released_directory_goes_as_its_whole_tree() {
    let now = Instant::now();
    let mut l = braked(rule(0, 3), 10);
    for name in ["x", "y", "z"] {
        l.push_gone_at(p(name), false, now);
    }
    l.push_gone_at(p("a"), true, now);
    assert!(l.holding());
    l.push_at(Entry::plain("a"), false, now);
    l.push_at(Entry::plain("a/a"), false, now);
    l.release_deletes(now);
    let job = taken(&mut l);
    let a = job.iter().find(|e| e.path == p("a")).expect("a goes");
    assert!(a.listing && a.tree, "a as its whole tree: {job:?}");
}

// The simulator (the brake beside every fault, seed 95003574): `mv b ../old` held
// the delete of `b`; a file `b` written ended the hold by itself, so `b` waited as
// its whole tree; that file deleted held `b` again, as a file's delete; `mkdir b`,
// and the release pushed `b` as the directory it was then, one level: the old tree's
// `b/b`, `b/d` stayed on the remote. A tree waiting at a name deleted again is held
// as a directory's delete, released as its whole tree.
#[test]
fn a_tree_waiting_where_a_file_is_deleted_is_held_as_a_directory() {
    let now = Instant::now();
    let mut l = braked(rule(0, 3), 10);
    for name in ["b/b", "b/d"] {
        l.push_gone_at(p(name), false, now);
    }
    l.push_gone_at(p("b"), true, now);
    assert!(l.holding());
    l.push_at(Entry::plain("b"), false, now);
    assert!(l.count_write(&p("b"), now).is_some(), "ended by the write");
    assert!(!l.holding());
    // The file `b` deleted, and two more (the count starts afresh at a release): past
    // the count again, held with what waits at `b`.
    for name in ["b", "x", "y"] {
        l.push_gone_at(p(name), false, now);
    }
    assert!(l.holding());
    let (held, _) = l.held_owed();
    let b = held.iter().find(|e| e.path == p("b")).expect("b held");
    assert!(b.listing, "held as a directory's delete: {held:?}");
    // `mkdir b`, then the release: `b` goes as its whole tree.
    l.push_at(Entry::plain("b"), false, now);
    l.release_deletes(now);
    let job = taken(&mut l);
    let b = job.iter().find(|e| e.path == p("b")).expect("b goes");
    assert!(b.listing && b.tree, "b as its whole tree: {job:?}");
}

// The outside run: with fanotify, `rm -rf big` (1,831 entries) after a restart came
// as one delete, of `big` (what was in it could not be named any more), and the
// brake never held it. A deleted directory counts what the index says it held,
// less what was counted below it already (inotify reports each entry).
#[test]
fn a_deleted_directory_counts_what_it_held_once() {
    let now = Instant::now();
    let mut l = braked(rule(0, 20), 100);
    l.push_gone_at(p("big"), true, now);
    assert!(!l.holding());
    l.count_gone_below(Path::new("big"), 50, now);
    assert!(l.holding(), "the 50 entries it held count");
    assert_eq!(l.take_held_news(now), Some(Tripped::Deletes(51)));
    // Each entry reported on its own: counted once, not again from the index.
    let mut l = braked(rule(0, 20), 100);
    for i in 0..10 {
        l.push_gone_at(p(&format!("d/sub/f{i}")), false, now);
    }
    l.push_gone_at(p("d/sub"), true, now);
    l.count_gone_below(Path::new("d/sub"), 10, now);
    l.push_gone_at(p("d"), true, now);
    l.count_gone_below(Path::new("d"), 30, now);
    assert!(
        !l.holding(),
        "12 deletes, fewer than 20: d's own were reported"
    );
    l.count_gone_below(Path::new("e"), 8, now);
    assert!(l.holding(), "20 with e's 8");
    // Counted from the index first, its entries' own deletes coming after (as
    // fanotify may report them): not counted again.
    let mut l = braked(rule(0, 20), 100);
    l.push_gone_at(p("big"), true, now);
    l.count_gone_below(Path::new("big"), 15, now);
    for i in 0..15 {
        l.push_gone_at(p(&format!("big/f{i}")), false, now);
    }
    assert!(!l.holding(), "16 deletes, fewer than 20");
    assert_eq!(l.brake.net(), 16);
}

// Deletes of many children of one directory collapse into its listing (pushed with
// `--delete`): the listing waits out the settle time as the deletes would have.
#[test]
fn a_listing_that_took_in_deletes_waits_out_the_settle_time() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut l = Ledger::with_collapse_at(3);
    l.set_brake(Some(settling(0, 100, Duration::from_secs(2))));
    l.set_tree(Some(1000));
    for (i, name) in ["d/a", "d/b", "d/c", "d/e"].iter().enumerate() {
        l.push_gone_at(p(name), false, t0 + ms(i as u64));
    }
    assert!(
        l.take_at(1000, t0 + ms(10)).is_none(),
        "the listing settles"
    );
    assert_eq!(l.settle_due(), Some(t0 + ms(2003)));
    match l.take_at(1000, t0 + ms(2003)) {
        Some(Job::Paths(paths)) => {
            assert!(
                paths.iter().any(|e| e.path == p("d") && e.listing),
                "{paths:?}"
            )
        }
        other => panic!("expected d's listing, got {other:?}"),
    }
}

/// A ledger with the brake `rule` over a tree of `tree` entries.
fn braked(rule: DeleteBrake, tree: usize) -> Ledger {
    let mut l = Ledger::with_collapse_at(0);
    l.set_brake(Some(rule));
    l.set_tree(Some(tree));
    l
}

fn taken(l: &mut Ledger) -> Vec<Entry> {
    match l.take(1000) {
        Some(Job::Paths(p)) => p,
        other => panic!("expected paths, got {other:?}"),
    }
}

fn names(entries: &[Entry]) -> Vec<String> {
    let mut v: Vec<String> = (entries.iter())
        .map(|e| e.path.display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn deletes_past_the_threshold_are_held_and_edits_still_flow() {
    let now = Instant::now();
    // More than 50% of 10 entries and at least 3: the sixth delete trips it.
    let mut l = braked(rule(50, 3), 10);
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        l.push_gone_at(
            PathBuf::from(name),
            false,
            now + Duration::from_millis(i as u64),
        );
        assert!(!l.holding(), "{name}: 5 of 10 is not more than half");
    }
    l.push_gone_at(PathBuf::from("dir"), true, now);
    assert!(l.holding());
    assert_eq!(l.take_held_news(now), Some(Tripped::Deletes(6)));
    assert_eq!(l.take_held_news(now), None, "said once");
    assert_eq!(l.held().deletes, 6);
    assert!(l.take(1000).is_none(), "every waiting delete is held");
    // Later deletes are held as they come; a file written flows.
    l.push_gone_at(PathBuf::from("f"), false, now);
    l.push_at(Entry::plain("new.txt"), false, now);
    assert_eq!(names(&taken(&mut l)), ["new.txt"]);
    assert_eq!(l.held().deletes, 7);
    // A rename flows too: it deletes nothing.
    l.push_rename_at(p("r1"), p("r2"), false, Vec::new(), now);
    assert!(matches!(l.take(1000), Some(Job::Rename { .. })));
    // Not level while held: the marks of what is held stay.
    assert!(!l.passed(l.checkpoint()));
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn a_few_deletes_or_a_deploy_that_replaces_a_share_are_not_held() {
    let now = Instant::now();
    let mut l = braked(rule(50, 3), 100);
    // A deploy replaces 5 of 100 files: deleted, then written again.
    for i in 0..5 {
        l.push_gone_at(p(&format!("f{i}")), false, now);
        l.push_at(Entry::plain(format!("f{i}")), false, now);
    }
    assert!(!l.holding());
    assert_eq!(taken(&mut l).len(), 5);
    // Deletes spread wider than the window never add up.
    let mut l = braked(rule(0, 3), 100);
    for i in 0..10u64 {
        l.push_gone_at(
            p(&format!("g{i}")),
            false,
            now + Duration::from_secs(i * 30),
        );
    }
    assert!(!l.holding());
    assert_eq!(taken(&mut l).len(), 10);
    // The brake off: nothing is ever held.
    let mut l = Ledger::with_collapse_at(0);
    for i in 0..10 {
        l.push_gone_at(p(&format!("h{i}")), false, now);
    }
    assert!(!l.holding());
}

#[test]
fn a_deploy_that_deletes_a_release_and_writes_the_next_is_released_by_itself() {
    let now = Instant::now();
    let mut l = braked(rule(50, 3), 10);
    // `rm -rf app`: held at once.
    for name in ["app/a", "app/b", "app/c", "app/d", "app/e"] {
        l.push_gone_at(p(name), false, now);
    }
    l.push_gone_at(p("app"), true, now);
    assert!(l.holding());
    // `cp -a build app`: written again, the hold ends by itself.
    l.push_at(Entry::plain("app"), false, now);
    let released = l
        .count_write(&p("app"), now)
        .expect("released by the write");
    assert_eq!(released.deletes, 1, "app, with what was held below it");
    assert!(
        !l.holding(),
        "released once the writes balanced the deletes"
    );
    assert!(taken(&mut l)
        .iter()
        .any(|e| e.path == p("app") && e.listing));
    // A hold of an empty root, or from the fail log, never ends by itself.
    let mut l = braked(rule(50, 3), 10);
    l.push_full_checked(Some(0), now);
    for _ in 0..100 {
        assert_eq!(l.count_write(&p("app"), now), None);
    }
    assert!(l.holding());
}

// The outside run: 2,100 files written in `junk/`, then `rm -rf old*` of 2,000
// entries: the brake counted the deletes net of every write in the tree, never
// held, and every remote lost them. Only writes that replace what was deleted (at
// or below a directory deleted, or in a directory deletes happened in) count.
#[test]
fn writes_elsewhere_in_the_tree_do_not_offset_deletes() {
    let now = Instant::now();
    let mut l = braked(rule(50, 3), 10);
    // Written before any delete: nothing to offset.
    for i in 0..20 {
        assert_eq!(l.count_write(&p(&format!("junk/f{i}")), now), None);
    }
    for name in ["old/a", "old/b", "old/c", "old/d", "old/e"] {
        l.push_gone_at(p(name), false, now);
    }
    l.push_gone_at(p("old"), true, now);
    assert!(l.holding());
    // Writes elsewhere, at the root or in another directory: still held.
    for i in 0..20 {
        assert_eq!(l.count_write(&p(&format!("junk/g{i}")), now), None);
        assert_eq!(l.count_write(&p(&format!("top{i}")), now), None);
    }
    assert!(l.holding());
    // Writes that replace it (`cp -a build old`, new names in it): released.
    assert!(l.count_write(&p("old/new/x"), now).is_some());
    assert!(!l.holding());
    // A delete in a directory that stays: a write beside it offsets, one in a
    // directory next to it does not.
    let mut l = braked(rule(50, 3), 10);
    for name in ["www/a", "www/b", "www/c", "www/d", "www/e", "www/f"] {
        l.push_gone_at(p(name), false, now);
    }
    assert!(l.holding());
    assert_eq!(l.count_write(&p("www2/a"), now), None);
    assert!(l.count_write(&p("www/a2"), now).is_some());
    // Outside the window, nothing offsets.
    let mut l = braked(rule(50, 3), 10);
    l.push_gone_at(p("d/a"), false, now);
    let later = now + Duration::from_secs(120);
    assert!(!l.brake.replaces(&p("d/b"), later));
}

#[test]
fn release_hands_them_out_and_the_count_starts_afresh() {
    let now = Instant::now();
    let mut l = braked(rule(0, 3), 10);
    for name in ["a", "b", "c"] {
        l.push_gone_at(p(name), false, now);
    }
    l.push_gone_at(p("d"), true, now);
    assert!(l.holding());
    let held = l.release_deletes(now);
    assert_eq!((held.deletes, held.full), (4, false));
    assert!(!l.holding());
    let out = taken(&mut l);
    assert_eq!(names(&out), ["a", "b", "c", "d"]);
    assert!(
        out.iter().any(|e| e.path == p("d") && e.listing),
        "a directory as its listing"
    );
    // What was released is not counted again: two more deletes flow.
    l.push_gone_at(p("x"), false, now);
    l.push_gone_at(p("y"), false, now);
    assert!(!l.holding());
}

#[test]
fn discard_drops_them_and_the_remote_counts_as_level() {
    let now = Instant::now();
    let mut l = braked(rule(0, 2), 10);
    l.push_gone_at(p("a"), false, now);
    l.push_gone_at(p("b"), false, now);
    assert!(l.holding());
    let held = l.discard_deletes();
    assert_eq!(held.deletes, 2);
    assert!(!l.holding() && l.held().deletes == 0);
    assert!(l.take(1000).is_none(), "nothing to push");
    assert!(l.passed(l.checkpoint()));
}

#[test]
fn close_keeps_them_held_and_a_restore_holds_them_again() {
    let now = Instant::now();
    let mut l = braked(rule(0, 2), 10);
    l.push_gone_at(p("a"), false, now);
    l.push_gone_at(p("d"), true, now);
    l.push_at(Entry::plain("w"), false, now);
    let left = l.close();
    assert_eq!(left.held.deletes, 2, "kept held, not owed as work");
    assert_eq!(names(&left.waiting), ["w"]);
    let (held, full) = l.held_owed();
    assert_eq!((names(&held), full), (vec!["a".into(), "d".into()], false));
    assert!(held.iter().any(|e| e.path == p("d") && e.listing));
    assert!(
        !l.owed().paths.contains_key(&p("a")),
        "not a job the fail log replays"
    );
    // The fail log's record of them, read at the next start: held again.
    let mut owed = Owed::default();
    owed.record_held(&held, full);
    let mut next = braked(rule(50, 1000), 10);
    next.hold_restored(&owed, now);
    let h = next.held();
    assert!(h.restored && h.deletes == 2);
    assert!(next.take(1000).is_none());
    next.release_deletes(now);
    assert_eq!(names(&taken(&mut next)), ["a", "d"]);
}

#[test]
fn full_syncs_and_listings_wait_while_deletes_are_held() {
    let now = Instant::now();
    let mut l = braked(rule(0, 2), 10);
    l.push_at(Entry::listing("coll"), false, now);
    l.push_gone_at(p("a"), false, now);
    l.push_gone_at(p("b"), false, now);
    assert!(l.holding());
    // A full sync asked meanwhile (a crontab one, an overflow's) is held, and does
    // not swallow what is written after it.
    l.push_full_at(now);
    l.push_at(Entry::plain("e"), false, now);
    assert!(l.held().full);
    assert_eq!(
        names(&taken(&mut l)),
        ["e"],
        "the listing waits, the edit flows"
    );
    l.finish(&Job::Paths(vec![Entry::plain("e")]));
    assert!(l.is_settled(), "only a listing held back waits");
    let held = l.release_deletes(now);
    assert!(held.full);
    assert_eq!(
        l.take(1000),
        Some(Job::Full),
        "the full sync covers them all now"
    );
}

#[test]
fn a_full_sync_of_an_emptied_root_or_past_the_threshold_is_held() {
    let now = Instant::now();
    let mut l = braked(rule(50, 1000), 10);
    l.push_full_checked(Some(0), now);
    assert!(l.holding() && l.held().full);
    assert_eq!(l.take_held_news(now), Some(Tripped::EmptyRoot));
    assert!(l.take(1000).is_none());
    // 3000 of 4000 entries gone: held; 10 of 4000: queued.
    let mut l = braked(rule(50, 1000), 4000);
    l.push_full_checked(Some(1000), now);
    assert_eq!(l.take_held_news(now), Some(Tripped::Full(3000)));
    let mut l = braked(rule(50, 1000), 4000);
    l.push_full_checked(Some(3990), now);
    assert!(!l.holding());
    assert_eq!(l.take(1000), Some(Job::Full));
    // One in flight found its root empty: held, and its end queues nothing again.
    let mut l = braked(rule(50, 1000), 10);
    l.push_full_at(now);
    assert_eq!(l.take(1000), Some(Job::Full));
    assert!(l.hold_full(now));
    l.finish(&Job::Full);
    assert!(l.held().full && l.take(1000).is_none());
}

// CI at 2470093 (fanotify, `-H`, settle 2 s): `h/a` in flight at its write; then `rm
// h/b; ln h/a h/b; echo >> h/b` came as a delete of h/b and its set with h/a. When h/a's
// call ended, both names must go in one call at once: a name waiting with its set does
// not wait out the settle time (pushed alone after it, h/b became a file of its own).
#[test]
fn a_deleted_name_linked_again_goes_with_its_set_without_settling() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut l = braked(settling(0, 1000, Duration::from_secs(2)), 100);
    l.push_at(Entry::plain(p("h/a")), false, t0);
    let wa = l.take_at(1000, t0).expect("h/a at its write");
    l.push_gone_at(p("h/b"), false, t0 + ms(1));
    l.push_linked(&[p("h/b"), p("h/a")], t0 + ms(1));
    l.push_linked(&[p("h/b"), p("h/a")], t0 + ms(3));
    assert!(l.take_at(1000, t0 + ms(5)).is_none(), "h/a is in flight");
    l.finish(&wa);
    let mut got: Vec<PathBuf> = match l.take_at(1000, t0 + ms(60)) {
        Some(Job::Paths(p)) => p.into_iter().map(|e| e.path).collect(),
        other => panic!("expected the set, got {other:?}"),
    };
    got.sort();
    assert_eq!(got, [p("h/a"), p("h/b")]);
}

/// The rename of the directory `from` to `to` holding `entries` entries, queued at
/// `now` as the queue does it (counted, then queued).
fn rename_dir(l: &mut Ledger, from: &str, to: &str, entries: usize, now: Instant) {
    let _ = l.count_moved(&p(from), &p(to), entries, now);
    let below: Vec<PathBuf> = std::iter::once(p(to))
        .chain((1..entries).map(|i| p(&format!("{to}/f{i}"))))
        .collect();
    l.push_rename_at(p(from), p(to), true, below, now);
}

/// `rm -rf dir` of a directory of `files` files, as inotify reports it (each file,
/// then the directory).
fn rm_rf(l: &mut Ledger, dir: &str, files: usize, now: Instant) {
    for i in 1..=files {
        l.push_gone_at(p(&format!("{dir}/f{i}")), false, now);
    }
    l.push_gone_at(p(dir), true, now);
}

// The outside run: a release swapped in by renames every few seconds (`cp -a build
// new && mv cur old && mv new cur && rm -rf old`) tripped the brake: the writes went
// to `new`, before any delete, and `old`'s deletes were offset by nothing. What was
// put where a tree was renamed away from replaces that tree's deletes.
#[test]
fn a_release_swapped_in_by_renames_is_not_held() {
    let t0 = Instant::now();
    // A tree of 10: `cur` (a directory of 5 files), 4 others.
    let mut l = braked(rule(50, 3), 10);
    for round in 0..5u64 {
        let now = t0 + Duration::from_secs(round);
        for i in 1..=5 {
            let f = format!("new/f{i}");
            l.push_at(Entry::plain(f.clone()), false, now);
            assert_eq!(l.count_write(&p(&f), now), None);
        }
        rename_dir(&mut l, "cur", "old", 6, now);
        rename_dir(&mut l, "new", "cur", 6, now);
        rm_rf(&mut l, "old", 5, now);
        assert!(
            !l.holding(),
            "round {round}: a release swapped in is not held"
        );
        while l.take(1000).is_some() {}
    }
    // Moved in from outside the tree (each entry written at `cur`): the same.
    let mut l = braked(rule(50, 3), 10);
    rename_dir(&mut l, "cur", "old", 6, t0);
    for i in 1..=5 {
        let f = format!("cur/f{i}");
        l.push_at(Entry::plain(f.clone()), false, t0);
        assert_eq!(l.count_write(&p(&f), t0), None);
    }
    rm_rf(&mut l, "old", 5, t0);
    assert!(!l.holding());
}

// What a rename must not let through: a tree renamed and deleted, a place left
// empty, a release moved in and then away and deleted, and a rename into a name
// whose small delete came first (the rename's entries replace only what was
// deleted there).
#[test]
fn a_tree_renamed_and_deleted_is_still_held() {
    let t0 = Instant::now();
    // `mv data trash && rm -rf trash`.
    let mut l = braked(rule(50, 3), 8);
    rename_dir(&mut l, "data", "trash", 6, t0);
    rm_rf(&mut l, "trash", 5, t0);
    assert!(l.holding(), "a tree renamed and deleted");
    // `mv cur old && mkdir cur && rm -rf old`: one entry put back of six.
    let mut l = braked(rule(50, 3), 8);
    rename_dir(&mut l, "cur", "old", 6, t0);
    l.push_at(Entry::plain("cur"), false, t0);
    assert_eq!(l.count_write(&p("cur"), t0), None);
    rm_rf(&mut l, "old", 5, t0);
    assert!(l.holding(), "a place left nearly empty");
    // `mv new cur && mv cur old && rm -rf old`: nothing was put at `cur` after its
    // tree left.
    let mut l = braked(rule(50, 3), 8);
    rename_dir(&mut l, "new", "cur", 6, t0);
    rename_dir(&mut l, "cur", "old", 6, t0);
    rm_rf(&mut l, "old", 5, t0);
    assert!(l.holding(), "moved in, then away and deleted");
    // `rm -rf small && mv data small && rm -rf small`: one delete replaced, not six.
    let mut l = braked(rule(50, 3), 8);
    l.push_gone_at(p("small"), true, t0);
    rename_dir(&mut l, "data", "small", 6, t0);
    rm_rf(&mut l, "small", 5, t0);
    assert!(
        l.holding(),
        "a tree renamed over a small delete, then deleted"
    );
    // Outside the window, a swap's renames offset nothing.
    let mut l = braked(rule(50, 3), 8);
    rename_dir(&mut l, "cur", "old", 6, t0);
    rename_dir(&mut l, "new", "cur", 6, t0);
    rm_rf(&mut l, "old", 5, t0 + Duration::from_secs(120));
    assert!(l.holding(), "the renames were outside the window");
}

// `rm -rf app && mv build app`: held while only the deletes are in, released by the
// rename that puts a release where they were, as `cp -a build app` is.
#[test]
fn a_release_renamed_into_a_deleted_name_releases_the_hold() {
    let t0 = Instant::now();
    let mut l = braked(rule(50, 3), 8);
    rm_rf(&mut l, "app", 5, t0);
    assert!(l.holding());
    let released = l
        .count_moved(&p("build"), &p("app"), 6, t0)
        .expect("released by the rename");
    assert_eq!(released.deletes, 1, "app, with what was held below it");
    assert!(!l.holding());
}

// The outside run: every deploy that tripped the brake (`rm -rf app && cp -a build/app
// app` past the threshold) logged an ERROR line, and 0.1 s later, at info level, that
// the copy had released it. A hold by the count is said once it has lasted the settle
// time; one a deploy's writes end before that is never said at error level.
#[test]
fn a_hold_is_said_once_it_has_lasted_the_settle_time() {
    let t0 = Instant::now();
    let settle = Duration::from_secs(2);
    let mut l = braked(settling(50, 3, settle), 8);
    rm_rf(&mut l, "app", 5, t0);
    assert!(l.holding());
    assert_eq!(l.held_news_due(), Some(t0 + settle));
    assert_eq!(
        l.take_held_news(t0 + Duration::from_secs(1)),
        None,
        "not yet"
    );
    assert_eq!(
        l.take_held_news(t0 + settle),
        Some(Tripped::Deletes(5)),
        "still held after the settle time (tripped by the fifth of 8)"
    );
    assert_eq!(l.held_news_due(), None, "said once");
    // Released by the deploy's writes within the settle time: never said.
    let mut l = braked(settling(50, 3, settle), 8);
    rm_rf(&mut l, "app", 5, t0);
    for i in 1..=6 {
        let f = format!("app/g{i}");
        l.push_at(Entry::plain(f.clone()), false, t0);
        let _ = l.count_write(&p(&f), t0);
    }
    assert!(!l.holding(), "released by the copy");
    assert_eq!(l.held_news_due(), None);
    assert_eq!(l.take_held_news(t0 + settle), None);
    // An empty root's full sync is said at once.
    let mut l = braked(settling(50, 3, settle), 8);
    l.push_full_checked(Some(0), t0);
    assert_eq!(l.take_held_news(t0), Some(Tripped::EmptyRoot));
}

// Within moments of a `-r` start: a tree renamed while the full sync runs (handed out
// beside it), then deleted past the threshold (held). When the full sync ended, what
// went beside it waited again as plain paths and went at once: the renamed tree's
// paths, gone now, were pushed as their deletes, unweighed, and a remote lost the tree
// the brake held. They go with the held delete now; so does a delete handed out beside
// the full sync, which waits again as the delete it is (held while deletes are held).
#[test]
fn what_went_beside_a_full_sync_waits_again_under_the_brake() {
    let t0 = Instant::now();
    let mut l = braked(rule(50, 3), 8);
    l.push_full_at(t0);
    assert_eq!(l.take(1000), Some(Job::Full));
    l.push_gone_at(p("one.txt"), false, t0);
    let beside_delete = taken(&mut l);
    assert_eq!(names(&beside_delete), ["one.txt"]);
    l.finish(&Job::Paths(beside_delete));
    rename_dir(&mut l, "data", "trash", 6, t0);
    // Beside a full sync a rename goes as its plain paths (listings).
    let rename = l.take(1000).expect("the rename, beside the full sync");
    assert!(
        rename.plain_paths().iter().any(|e| e.path == p("trash/f1")),
        "{rename:?}"
    );
    l.finish(&rename);
    rm_rf(&mut l, "trash", 5, t0);
    assert!(l.holding(), "a tree renamed and deleted");
    l.finish(&Job::Full);
    let mut out = Vec::new();
    while let Some(job) = l.take(1000) {
        out.extend(job.plain_paths());
        l.finish(&job);
    }
    let names = names(&out);
    assert!(
        names
            .iter()
            .all(|n| n != "trash" && !n.starts_with("trash/")),
        "nothing of the held tree is pushed: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "one.txt"),
        "the delete beside it is held with the others: {names:?}"
    );
    assert!(l.held().deletes >= 2, "{:?}", l.held());
    // At a close the same: under `#held`, not owed as plain paths.
    let mut l = braked(rule(50, 3), 8);
    l.push_full_at(t0);
    assert_eq!(l.take(1000), Some(Job::Full));
    rename_dir(&mut l, "data", "trash", 6, t0);
    let rename = l.take(1000).expect("the rename");
    l.finish(&rename);
    rm_rf(&mut l, "trash", 5, t0);
    assert!(l.holding());
    let _ = l.close();
    let owed: Vec<String> = (l.owed().entries().iter())
        .map(|e| e.path.display().to_string())
        .collect();
    assert!(
        owed.iter()
            .all(|n| n != "trash" && !n.starts_with("trash/")),
        "owed as plain paths: {owed:?}"
    );
}

// A warm-restart catch-up finds every delete before it queues any: they were weighed
// together, so they go without waiting out the settle time (at a million files the
// 1,000 deletes of the benchmark waited 2 s, half of the restart), and past the
// threshold they are held as ever.
#[test]
fn deletes_counted_together_go_without_settling_and_are_held_past_the_threshold() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let mut l = braked(settling(0, 3, Duration::from_secs(2)), 100);
    l.push_gone_at(p("x"), false, t0);
    l.push_gone_at(p("d"), true, t0);
    assert!(l.take_at(1000, t0).is_none(), "they settle");
    l.settled(t0);
    let job = l.take_at(1000, t0).expect("settled: they go");
    assert_eq!(names(&job.plain_paths()), ["d", "x"]);
    // Past the threshold: held, settled or not.
    let mut l = braked(settling(0, 3, Duration::from_secs(2)), 100);
    for f in ["a", "b", "c", "e"] {
        l.push_gone_at(p(f), false, t0);
    }
    l.settled(t0);
    assert!(l.holding());
    assert!(l.take_at(1000, t0 + Duration::from_secs(5)).is_none());
}

// The outside run (issue 23, B4): `rsync -a --delete build/ app/` where the new
// release has new directory names was held and stayed held (2 of 2): rsync deletes
// `app/d0/...` and writes `app/n0/...`; only the new directories themselves were in a
// directory deletes happened in, not the files written in them. What is written in a
// directory written there (where it replaced deletes) replaces too, at any depth; a
// directory that was there before does not become such a place.
#[test]
fn a_release_with_new_directory_names_written_where_one_was_deleted_is_released_by_itself() {
    let now = Instant::now();
    let mut l = braked(rule(50, 3), 12);
    for d in ["d0", "d1"] {
        for f in ["a", "b", "c", "d"] {
            l.push_gone_at(p(&format!("app/{d}/{f}")), false, now);
        }
        l.push_gone_at(p(&format!("app/{d}")), true, now);
    }
    assert!(l.holding(), "10 of 12 entries deleted");
    let mut released = None;
    for d in ["n0", "n1"] {
        released = released.or(l.count_write(&p(&format!("app/{d}")), now));
        released = released.or(l.count_write(&p(&format!("app/{d}/sub")), now));
        for f in ["a", "b", "c"] {
            released = released.or(l.count_write(&p(&format!("app/{d}/sub/{f}")), now));
        }
    }
    assert!(released.is_some(), "released by the new release's writes");
    assert!(!l.holding());
    // An upload into a directory that was there before does not offset an `rm -rf`
    // beside it: `keep/` was not written where deletes happened.
    let mut l = braked(rule(50, 3), 12);
    for f in ["a", "b", "c", "d", "e", "f", "g"] {
        l.push_gone_at(p(&format!("app/data/{f}")), false, now);
    }
    l.push_gone_at(p("app/data"), true, now);
    assert!(l.holding());
    for i in 0..20 {
        assert_eq!(l.count_write(&p(&format!("app/keep/u{i}")), now), None);
    }
    assert!(l.holding(), "writes in an old directory beside it");
}
