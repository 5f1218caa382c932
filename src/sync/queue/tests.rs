//! The shared queue: which remote a free worker serves, retries joining at their time,
//! second calls in a burst, the lock-order check. The ledger's own rules are tested in
//! `ledger/tests.rs`.

use super::*;
use crate::sync::job::{entry, shown_all};
use crate::sync::ledger::TRICKLE;

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
fn the_shared_queue_leaves_workers_for_other_remotes() {
    // 4 workers, 2 remotes: one remote may hold at most 2 calls in flight.
    let q = Queue::new(2, 1, 4);
    for i in 0..5 {
        q.push(&[RemoteId(0)], &p(&format!("slow{i}")), false);
    }
    q.push(&[RemoteId(1)], &p("fast"), false);
    let a = q.take().expect("work");
    let b = q.take().expect("work");
    let c = q.take().expect("work");
    let remotes: Vec<usize> = [&a, &b, &c].iter().map(|(t, _)| t.index()).collect();
    assert!(remotes.contains(&1), "remote 1 got a worker: {remotes:?}");
    assert!(remotes.iter().filter(|&&t| t == 0).count() <= 2);
}

#[test]
fn a_free_worker_takes_the_remote_that_has_waited_longest() {
    // 1 worker, 3 remotes: remote 2's change is the oldest, then remote 0's, then 1's.
    let q = Queue::new(3, 10, 1);
    // Distinct queue times: each push after the clock has moved on (no sleep).
    let tick = |before: Instant| while Instant::now() <= before {};
    q.push(&[RemoteId(2)], &p("first"), false);
    tick(Instant::now());
    q.push(&[RemoteId(0)], &p("second"), false);
    tick(Instant::now());
    q.push(&[RemoteId(1)], &p("third"), false);
    let mut order = Vec::new();
    for _ in 0..3 {
        let (t, job) = q.take().expect("work");
        order.push(t.index());
        q.finish(t, &job, None);
    }
    assert_eq!(order, [2, 0, 1]);
}

#[test]
fn a_retry_joins_the_pending_set_at_its_time_and_not_before() {
    let q = Queue::new(2, 10, 4);
    let start = Instant::now();
    let wait = Duration::from_millis(200);
    let owed = Job::Paths(vec![entry("owed/a"), entry("owed/b")]);
    q.owe(RemoteId(1), &owed, start, 23);
    q.retry_at(RemoteId(1), start + wait);
    assert!(q.is_idle(), "a retry waiting for its time is not work yet");
    // A sleeping worker wakes for it at its time, with nothing else to wake it.
    let (t, job) = q.take().expect("the retry");
    assert!(
        start.elapsed() >= wait,
        "handed out early: {:?}",
        start.elapsed()
    );
    assert_eq!(t, RemoteId(1));
    assert_eq!(paths(Some(job)), [p("owed/a"), p("owed/b")]);
}

#[test]
fn a_due_retry_merges_with_live_changes_and_a_cancelled_one_never_runs() {
    let q = Queue::new(2, 10, 4);
    q.owe(RemoteId(0), &Job::Full, Instant::now(), 23);
    q.owe(RemoteId(1), &Job::Full, Instant::now(), 23);
    q.retry_at(RemoteId(0), Instant::now());
    q.retry_at(RemoteId(1), Instant::now() + Duration::from_secs(3600));
    q.cancel_retry(RemoteId(1));
    q.push(&[RemoteId(0)], &p("live"), false);
    let (t, job) = q.take().expect("work");
    assert_eq!(
        (t, job),
        (RemoteId(0), Job::Full),
        "the full sync covers the change"
    );
    q.finish(RemoteId(0), &Job::Full, None);
    assert!(q.is_idle());
}

#[test]
fn a_second_burst_call_waits_while_enough_calls_run_elsewhere() {
    let now = Instant::now();
    let mut r = Remote::default();
    for i in 0..(TRICKLE + 5) {
        r.pending.push_at(entry(&format!("f{i}")), false, now);
    }
    let first = r.pending.take(4).expect("the first call");
    assert!(!r.pending.is_trickle(), "a burst");
    r.last_start = Some(now);
    let later = now + SECOND_CALL_AFTER + Duration::from_millis(1);
    assert_eq!(
        r.may_start(later, 2, 3),
        Ok(()),
        "a slow call gets a second one"
    );
    assert_eq!(
        r.may_start(later, 2, BURST_CALLS),
        Err(None),
        "not while the other remotes keep the machine busy"
    );
    assert_eq!(
        r.may_start(later, 1, 1),
        Err(None),
        "never past the per-remote cap"
    );
    // Single edits are not held back by the other remotes' calls.
    r.pending.finish(&first);
    let mut single = Remote::default();
    single.pending.push_at(entry("big"), false, now);
    single.pending.push_at(entry("edit"), false, now);
    let _big = single.pending.take(1).expect("the long call");
    single.last_start = Some(now);
    assert!(single.pending.is_trickle());
    assert_eq!(single.may_start(now, 2, 100), Ok(()));
}

#[test]
fn the_queue_lock_is_known_to_be_held_by_its_thread() {
    let q = Queue::new(1, 10, 1);
    assert!(!lock_held());
    let far = Instant::now() + Duration::from_secs(1);
    assert!(q.wait_for(far, |_| lock_held()));
    assert!(!lock_held());
}

#[test]
fn a_paused_remote_gets_no_worker_and_the_others_flow() {
    let q = Queue::new(2, 10, 4);
    assert_eq!(q.set_paused(&[RemoteId(0)], true), [true]);
    q.push(&[RemoteId(0), RemoteId(1)], &p("x"), false);
    q.push_full(&[RemoteId(0)]);
    let (t, job) = q.take().expect("work for the other remote");
    assert_eq!(t, RemoteId(1));
    assert_eq!(paths(Some(job.clone())), [p("x")]);
    q.finish(t, &job, None);
    assert!(
        q.try_take_at(Instant::now()).is_none(),
        "none for the paused one"
    );
    assert_eq!(q.paused(), [true, false]);
    assert_eq!(
        q.waiting(),
        [1, 0],
        "its full sync (covering its path) waits"
    );

    // A worker waiting for work is woken by the resume.
    let q = std::sync::Arc::new(q);
    let worker = {
        let q = std::sync::Arc::clone(&q);
        std::thread::spawn(move || q.take())
    };
    assert_eq!(q.set_paused(&[RemoteId(0)], false), [true]);
    let (t, job) = worker.join().expect("worker").expect("work once resumed");
    assert_eq!((t, job), (RemoteId(0), Job::Full));
}

#[test]
fn what_waits_for_a_paused_remote_is_owed_at_the_close() {
    let q = Queue::new(2, 10, 4);
    q.set_paused(&[RemoteId(0), RemoteId(1)], true);
    q.push(&[RemoteId(0), RemoteId(1)], &p("a"), false);
    q.push(&[RemoteId(1)], &p("b"), false);
    let left = q.close();
    assert_eq!(
        left.iter().map(|l| l.waiting.len()).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(q.owed_counts(), [1, 2]);
}

// A file a full sync would skip (`Owed::blind`), read from the fail log with a full
// sync owed: queued again beside that full sync, kept in what the fail log is written
// from until its own push lands (through a close too), then gone from it.
#[test]
fn a_blind_file_from_the_fail_log_goes_beside_the_full_sync_and_stays_kept_until_it_lands() {
    let q = Queue::new(1, 10, 2);
    let owed = Owed {
        full: true,
        blind: [p("b")].into(),
        ..Owed::default()
    };
    q.restore(RemoteId(0), &owed, Instant::now());
    assert_eq!(q.owed()[0].blind, [p("b")].into());
    // The replay of what is owed: the full sync.
    for job in q.owed_jobs(RemoteId(0)) {
        assert_eq!(job, Job::Full);
        q.push_full(&[RemoteId(0)]);
    }
    let (_, full) = q.take().expect("the full sync");
    assert_eq!(full, Job::Full);
    let (_, beside) = q.take().expect("the blind file beside it");
    assert_eq!(paths(Some(beside.clone())), [p("b")]);
    // The full sync lands first: its quick check skipped the file, still kept.
    q.pushed(RemoteId(0), &full, &[]);
    q.finish(RemoteId(0), &full, None);
    assert_eq!(
        q.owed()[0].blind,
        [p("b")].into(),
        "a full sync does not pay it"
    );
    let pushed = q.pushed(RemoteId(0), &beside, &[]);
    q.finish(RemoteId(0), &beside, None);
    assert!(pushed.changed, "the fail log is written again without it");
    assert!(q.owed()[0].blind.is_empty());
    // Through a close: still waiting, still kept.
    q.restore(RemoteId(0), &owed, Instant::now());
    q.close();
    assert_eq!(q.owed()[0].blind, [p("b")].into());
}

// The outside run: `mv data old && mkdir data && rm -rf old`, read on fanotify as the
// rename, `data` made, and the delete of `old` alone (what was in it cannot be named
// once it is gone). The index knew the tree at `data` (the rename had not landed), so
// `old` counted nothing, and `data`'s listing went out with `--delete`: `data` emptied
// on every remote (1 run in 5). A tree a rename moved within the window is counted
// where it came from, in the rename's batch or a later one.
#[test]
fn a_tree_renamed_away_and_deleted_is_counted_where_the_index_knows_it() {
    for same_batch in [true, false] {
        // More than half of 10 entries and at least 3; the remote holds 8 entries in
        // `data`, nothing at `old`.
        let q = braked_with_data(50, 3, Duration::from_secs(2), 8);
        q.set_trees(&[(RemoteId(0), Some(10))]);
        let rename = Item::Rename {
            from: p("data"),
            to: p("old"),
            dir: true,
            below: vec![p("old")],
        };
        let made = Item::Path(entry("data"), false);
        let gone = Item::Gone(p("old"), true);
        if same_batch {
            q.push_batch(&[RemoteId(0)], &[rename, made, gone]);
        } else {
            q.push_batch(&[RemoteId(0)], &[rename, made]);
            q.push_batch(&[RemoteId(0)], &[gone]);
        }
        let held = q.held();
        assert!(
            held[0].deletes > 0,
            "same batch {same_batch}: old's tree counted at data: {held:?}"
        );
        // Nothing that deletes under `data` goes out, settled or not.
        let later = Instant::now() + Duration::from_secs(30);
        while let Some((_, job)) = q.try_take_at(later) {
            if let Job::Paths(v) = &job {
                assert!(
                    !v.iter().any(|e| e.listing || e.path == p("old")),
                    "same batch {same_batch}: {job:?}"
                );
            }
            q.finish(RemoteId(0), &job, None);
        }
    }
}

// The outside run (`mv data old && mkdir data && rm -rf old`, fanotify): the rename
// could not land (`old` gone), went back to the queue as the delete of `data` and
// what is there now; the delete began a hold, and the new `data` beside it, counted
// as a write, ended it at once ("released by themselves"): `data`'s listing emptied
// a remote. What a worker sends back was counted when it was first queued.
#[test]
fn a_rename_sent_back_does_not_end_the_hold_its_delete_began() {
    // The remote holds 9 entries below `data`: with `data` itself, 10 deletes.
    let q = braked_with_data(0, 10, Duration::ZERO, 9);
    let job = Job::Rename {
        from: p("data"),
        to: p("old"),
        dir: true,
        below: vec![p("old")],
    };
    let items = [
        Item::Gone(p("data"), true),
        Item::Path(crate::sync::job::Entry::listing(p("data")), false),
        Item::Gone(p("old"), true),
    ];
    q.unrenamed(RemoteId(0), &job, &items);
    let held = q.held();
    assert!(held[0].deletes > 0, "the delete of data is held: {held:?}");
    while let Some((_, job)) = q.try_take_at(Instant::now()) {
        if let Job::Paths(v) = &job {
            assert!(!v.iter().any(|e| e.listing), "{job:?}");
        }
        q.finish(RemoteId(0), &job, None);
    }
}

/// A queue for one remote with the brake on (`percent`, `count`, a window of a minute,
/// `settle`), whose index says the remote holds `in_data` entries below `data` and
/// none anywhere else.
fn braked_with_data(percent: u8, count: usize, settle: Duration, in_data: usize) -> Queue {
    let q = Queue::new(1, 1000, 1);
    let rule = crate::config::DeleteBrake {
        percent,
        count,
        window: Duration::from_secs(60),
        settle,
    };
    q.set_brake(Some(rule), vec!["r".into()], std::path::Path::new("c.xml"));
    q.count_from(Box::new(move |_, rel: &std::path::Path| {
        if rel == std::path::Path::new("data") {
            in_data
        } else {
            0
        }
    }));
    q
}

// The outside run: a release swapped in by a link (`cp -a releases/v1 releases/v2 && ln
// -sfn releases/v2 current && rm -rf releases/v1`) was held: the brake's share was of
// the tree's size at the last checkpoint, before v2 came, so v1's deletes were more
// than half of it. The size is the index's as the deletes are queued.
#[test]
fn a_release_swapped_in_by_a_link_is_weighed_against_the_tree_as_it_is_now() {
    // The last checkpoint: v1 (60 entries) and 40 others; the index now: `tree_now`.
    let deleting_v1 = |tree_now: usize| {
        let q = Queue::new(1, 1000, 1);
        let rule = crate::config::DeleteBrake {
            percent: 50,
            count: 10,
            window: Duration::from_secs(60),
            settle: Duration::ZERO,
        };
        q.set_brake(Some(rule), vec!["r".into()], std::path::Path::new("c.xml"));
        q.set_trees(&[(RemoteId(0), Some(100))]);
        q.count_from(Box::new(move |_, rel: &std::path::Path| {
            match rel.to_str() {
                Some("") => tree_now,
                Some("releases/v1") => 59,
                _ => 0,
            }
        }));
        q.push_batch(&[RemoteId(0)], &[Item::Gone(p("releases/v1"), true)]);
        q.held()[0].clone()
    };
    // v2 landed beside them.
    let held = deleting_v1(160);
    assert!(!held.any(), "60 of 160 entries: not held: {held:?}");
    // Half of the tree as it is now is still held.
    assert!(deleting_v1(100).any(), "60 of 100 entries: held");
}

// The outside run: `mv data trash && rm -rf trash` just after a `-r` start emptied a
// remote. The rename, queued while that remote's full sync ran, went as its plain form:
// its old name's delete was counted as one delete, and the new name's pushes and
// deletes balanced, so nothing tripped the brake. The old name's delete is weighed with
// what the index holds there, as when a rename cannot travel as one.
#[test]
fn a_directory_rename_queued_beside_a_full_sync_weighs_the_old_trees_delete() {
    let q = braked_with_data(0, 10, Duration::from_secs(2), 50);
    q.push_full(&[RemoteId(0)]);
    let full = q.try_take_at(Instant::now());
    assert!(matches!(full, Some((_, Job::Full))), "{full:?}");
    let below: Vec<PathBuf> = std::iter::once(p("trash"))
        .chain((1..50).map(|i| p(&format!("trash/f{i}"))))
        .collect();
    q.push_batch(
        &[RemoteId(0)],
        &[Item::Rename {
            from: p("data"),
            to: p("trash"),
            dir: true,
            below,
        }],
    );
    let held = q.held()[0].clone();
    assert!(
        held.any(),
        "the old tree's delete is weighed and held: {held:?}"
    );
    while let Some((_, job)) = q.try_take_at(Instant::now()) {
        assert!(
            !job.plain_paths().iter().any(|e| e.path == p("data")),
            "data's delete went out: {job:?}"
        );
        q.finish(RemoteId(0), &job, None);
    }
}

// An outside run (`cp -a build/rN app.new && mv app app.old && mv app.new app && rm -rf
// app.old`, two releases with the same names, 2 of 10 rounds): the rename of `app`
// could not land (`app.old` gone meanwhile) and went back as the delete of `app` and
// its listing; the second rename, queued plain while the first ran, had its files below
// `app` waiting, and the delete cancelled them: the listing sent `app`'s direct entries
// only, and a remote kept the old release below it while a barrier passed.
#[test]
fn a_rename_sent_back_keeps_what_was_queued_below_its_old_name_after_it() {
    let q = braked_with_data(50, 1000, Duration::ZERO, 3);
    let first = Item::Rename {
        from: p("app"),
        to: p("app.old"),
        dir: true,
        below: vec![p("app.old"), p("app.old/d"), p("app.old/d/f")],
    };
    q.push_batch(&[RemoteId(0)], &[first]);
    let later = Instant::now() + Duration::from_secs(30);
    let (_, taken) = q.try_take_at(later).expect("the first rename");
    assert!(matches!(taken, Job::Rename { .. }), "{taken:?}");
    // Queued while the first runs: plain (its new name is in flight).
    let second = Item::Rename {
        from: p("app.new"),
        to: p("app"),
        dir: true,
        below: vec![p("app"), p("app/d"), p("app/d/f")],
    };
    q.push_batch(&[RemoteId(0)], &[second]);
    let items = [
        Item::Gone(p("app"), true),
        Item::Path(crate::sync::job::Entry::listing(p("app")), false),
        Item::Gone(p("app.old"), true),
    ];
    q.unrenamed(RemoteId(0), &taken, &items);
    q.finish(RemoteId(0), &taken, None);
    let mut sent = Vec::new();
    while let Some((_, job)) = q.try_take_at(later) {
        sent.extend(job.plain_paths().into_iter().map(|e| e.path));
        q.finish(RemoteId(0), &job, None);
    }
    assert!(sent.contains(&p("app/d/f")), "{sent:?}");
    assert!(sent.contains(&p("app/d")), "{sent:?}");
}

// The outside run (issue 23, B2): the README's rename-swap deploy with new names, `cp -a
// build new && mv cur old && mv new cur && rm -rf old`, was held and stayed held (inotify,
// 1 to 4 rounds of 5): the rename of `cur` to `old` could not land (`old` gone), went back
// to the queue as the delete of `cur` and what is there now, and the delete of `cur` was
// weighed with the index's whole tree below it, though that same tree had been counted
// already as the deletes below `old` (and offset by the release renamed into `cur`).
// The tree a rename moved is counted once.
#[test]
fn a_release_swapped_in_by_renames_whose_first_rename_comes_back_is_not_held() {
    let n = 20;
    // The tree: `cur` with n entries below it, 2 others; more than half of it and at
    // least 10 entries deleted within the window are held.
    let q = braked_counting("cur", n, n + 3, n + 3);
    let out = Item::Rename {
        from: p("cur"),
        to: p("old"),
        dir: true,
        below: vec![p("old")],
    };
    let swapped_in = Item::Rename {
        from: p("new"),
        to: p("cur"),
        dir: true,
        below: tree_of("cur", n),
    };
    // The worker takes the first rename; meanwhile the second and `rm -rf old`, each
    // entry named.
    q.push_batch(&[RemoteId(0)], &[out]);
    let (_, taken) = q.try_take_at(Instant::now()).expect("the first rename");
    assert!(matches!(taken, Job::Rename { .. }), "{taken:?}");
    q.push_batch(&[RemoteId(0)], &[swapped_in]);
    let mut gone: Vec<Item> = (0..n)
        .map(|i| Item::Gone(p(&format!("old/f{i}")), false))
        .collect();
    gone.push(Item::Gone(p("old"), true));
    q.push_batch(&[RemoteId(0)], &gone);
    assert!(!q.held()[0].any(), "balanced by the release renamed in");
    // It cannot land (`old` is gone): sent back as what it stands for.
    let items = [
        Item::Gone(p("cur"), true),
        Item::Path(crate::sync::job::Entry::listing(p("cur")), false),
        Item::Gone(p("old"), true),
    ];
    q.unrenamed(RemoteId(0), &taken, &items);
    let held = q.held();
    assert!(!held[0].any(), "the tree at cur counted twice: {held:?}");
}

// The same deploy, the outside run after the fix above (inotify, 3 rounds of 10): the
// rename of `new` to `cur` could not land as one (part of `new` had landed, the rest
// was still being pushed), went back as the delete of `new` (weighed with what the
// index had below it, 1,150 entries) and the tree at `cur`, pushed: held, though
// nothing of that tree was gone.
#[test]
fn a_directory_rename_sent_back_with_its_tree_at_the_new_name_deletes_nothing_of_it() {
    let n = 20;
    let q = braked_counting("new", n, n + 3, n + 3);
    let below = tree_of("cur", n);
    q.push_batch(
        &[RemoteId(0)],
        &[Item::Rename {
            from: p("new"),
            to: p("cur"),
            dir: true,
            below: below.clone(),
        }],
    );
    let (_, taken) = q.try_take_at(Instant::now()).expect("the rename");
    assert!(matches!(taken, Job::Rename { .. }), "{taken:?}");
    let mut items = vec![
        Item::Gone(p("new"), true),
        Item::Path(crate::sync::job::Entry::listing(p("cur")), false),
    ];
    items.extend(
        (below.iter().skip(1)).map(|b| Item::Path(crate::sync::job::Entry::listing(b), false)),
    );
    q.unrenamed(RemoteId(0), &taken, &items);
    let held = q.held();
    assert!(!held[0].any(), "new's tree is at cur: {held:?}");
    // Deleted after all (`rm -rf cur`): weighed then, and held.
    let mut gone: Vec<Item> = (0..n)
        .map(|i| Item::Gone(p(&format!("cur/f{i}")), false))
        .collect();
    gone.push(Item::Gone(p("cur"), true));
    q.push_batch(&[RemoteId(0)], &gone);
    assert!(q.held()[0].any(), "the tree deleted where it went");
}

// The same deploy, traced (inotify, 1 round of 8 after the fix above): `mv new cur` came
// while part of the copy into `new` still waited to be pushed, so the rename went as its
// plain form at once and the delete of `new` was weighed with what the index had below
// it (1,679 entries, landed). The brake's share was of the tree as the last batch with a
// delete had it, before the copy (2,022 entries): held. A batch with a directory rename
// reads the tree's size as the index has it now too (3,701 entries: not half).
#[test]
fn a_directory_rename_gone_plain_is_weighed_against_the_tree_as_it_is_now() {
    let (old, copied) = (20, 18);
    // The size the brake had: before the copy.
    let q = braked_counting("new", copied, old + copied, old);
    // The last file of the copy still waits to be pushed.
    q.push_batch(
        &[RemoteId(0)],
        &[Item::Path(
            crate::sync::job::Entry::plain(p("new/last")),
            false,
        )],
    );
    let below = tree_of("cur", copied);
    q.push_batch(
        &[RemoteId(0)],
        &[Item::Rename {
            from: p("new"),
            to: p("cur"),
            dir: true,
            below,
        }],
    );
    let held = q.held();
    assert!(!held[0].any(), "18 of 38 entries: {held:?}");
}

/// A queue of one remote whose brake holds more than half of the tree and at least 10
/// deletes within a minute, at once (no settle time); the index counts `below` entries
/// below `dir`, `tree` in the whole tree, and the brake's size of the tree is `size`.
fn braked_counting(dir: &'static str, below: usize, tree: usize, size: usize) -> Queue {
    let q = Queue::new(1, 1000, 1);
    let rule = crate::config::DeleteBrake {
        percent: 50,
        count: 10,
        window: Duration::from_secs(60),
        settle: Duration::ZERO,
    };
    q.set_brake(Some(rule), vec!["r".into()], std::path::Path::new("c.xml"));
    q.count_from(Box::new(move |_, rel: &std::path::Path| {
        if rel == std::path::Path::new(dir) {
            below
        } else if rel.as_os_str().is_empty() {
            tree
        } else {
            0
        }
    }));
    q.set_trees(&[(RemoteId(0), Some(size))]);
    q
}

/// `top` and `n` files below it, `top/f0` onwards.
fn tree_of(top: &str, n: usize) -> Vec<PathBuf> {
    std::iter::once(p(top))
        .chain((0..n).map(|i| p(&format!("{top}/f{i}"))))
        .collect()
}
