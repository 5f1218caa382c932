// The outside run: an overflow under `+ /public/***`, `- *` in a tree that held
// other names counted 0 entries, and its full sync was held as of an empty root.
#[test]
fn a_root_that_holds_only_names_its_rules_leave_out_is_judged_as_its_full_sync_runs() {
    assert_eq!(counted_for_brake(Some(0), true), None, "judged as it runs");
    assert_eq!(counted_for_brake(Some(0), false), Some(0), "an empty root");
    assert_eq!(counted_for_brake(Some(7), true), Some(7));
    assert_eq!(counted_for_brake(None, true), None);
}

use super::*;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// An intake of one watch root, `root`, for remote 0 of `queue`.
fn intake_on(root: &Path, queue: &Arc<Queue>, excludes: Excludes, hard_links: bool) -> Intake {
    Intake {
        routes: vec![Route {
            root: root.to_path_buf(),
            remotes: vec![RemoteId(0)],
            excludes,
        }],
        events: Events::default(),
        debug: false,
        queue: Arc::clone(queue),
        links: Default::default(),
        hard_links,
    }
}

/// The paths a job carries, sorted.
fn job_names(w: &crate::sync::job::Job) -> Vec<PathBuf> {
    let mut got: Vec<PathBuf> = match w {
        crate::sync::job::Job::Paths(e) => e.iter().map(|e| e.path.clone()).collect(),
        _ => Vec::new(),
    };
    got.sort();
    got
}

/// A created file without a CLOSE_WRITE is pushed once it has not changed for
/// UNCLOSED_AFTER; one still growing waits (a big copy is not pushed half done).
#[test]
fn a_created_file_is_pushed_once_it_stops_changing() {
    let d = tempfile::tempdir().expect("tempdir");
    let queue = Arc::new(Queue::new(1, 100, 1));
    let intake = intake_on(d.path(), &queue, Excludes::default(), false);
    std::fs::write(d.path().join("linked"), b"whole").expect("write");
    std::fs::write(d.path().join("growing"), b"part").expect("write");
    let long_ago = Instant::now()
        .checked_sub(UNCLOSED_AFTER * 2)
        .expect("a monotonic clock that has run a while");
    let mut unclosed: Unclosed = vec![HashMap::new()];
    for name in ["linked", "growing"] {
        let at = stamp(&d.path().join(name));
        unclosed[0].insert(p(name), (long_ago, at));
    }
    std::fs::write(d.path().join("growing"), b"part and more").expect("append");
    intake.settle_unclosed(&mut unclosed);
    assert_eq!(queue.waiting(), [1], "linked is pushed");
    assert_eq!(
        unclosed[0].keys().cloned().collect::<Vec<_>>(),
        [p("growing")],
        "growing waits"
    );
    intake.settle_unclosed(&mut unclosed);
    assert_eq!(
        unclosed.len(),
        1,
        "looked at again only after UNCLOSED_AFTER"
    );
}

// With the log file inside the tree, each log line was a change that logged a line
// (an event line at debug, an rsync call): 600-800 calls in 10 s with no outside
// change. The agent's own files are never events.
#[test]
fn the_agents_own_files_are_not_events() {
    let d = tempfile::tempdir().expect("tempdir");
    let queue = Arc::new(Queue::new(1, 100, 1));
    let mut intake = intake_on(
        d.path(),
        &queue,
        Excludes::default().with_own(vec![p("logs/agent.log"), p("fail.sh")]),
        false,
    );
    intake.debug = true;
    let file = |path: &str, op| Change::File { path: p(path), op };
    let batch = Batch {
        root: 0,
        changes: vec![
            file("logs/agent.log", Op::ClosedWrite),
            file("logs/agent.log", Op::Modified),
            file(".fail.sh.0123456789abcdef.tmp", Op::ClosedWrite),
            Change::Renamed {
                from: p(".fail.sh.0123456789abcdef.tmp"),
                to: p("fail.sh"),
                dir: false,
                found: vec![],
            },
            file("logs/other.log", Op::ClosedWrite),
        ],
    };
    intake.take(batch, &mut vec![HashMap::new()]);
    assert_eq!(queue.waiting(), [1], "only logs/other.log");
    // A log rotated away: the new name is an ordinary file.
    assert!(!own_only(
        &intake.routes[0].excludes,
        &Change::Renamed {
            from: p("logs/agent.log"),
            to: p("logs/agent.log.1"),
            dir: false,
            found: vec![],
        }
    ));
}

// A file written as a temp name and renamed into place, then linked from outside
// the tree's mirrored names (`ln d e/e` in an excluded directory, `mv e/e c`): the
// rename's new side was not remembered as a file with one name, so a write through
// `c` left `d` stale on the remotes (simulator seed 11534, `linkwrites`).
#[test]
fn a_file_renamed_into_place_is_known_to_a_link_made_to_it_later() {
    let d = tempfile::tempdir().expect("tempdir");
    let queue = Arc::new(Queue::new(1, 100, 1));
    let intake = intake_on(d.path(), &queue, Excludes::default(), false);
    let file = |path: &str, op| Change::File { path: p(path), op };
    std::fs::write(d.path().join("d~"), b"one").expect("write");
    std::fs::rename(d.path().join("d~"), d.path().join("d")).expect("rename");
    let renamed = Change::Renamed {
        from: p("d~"),
        to: p("d"),
        dir: false,
        found: vec![],
    };
    intake.take(
        Batch {
            root: 0,
            changes: vec![
                file("d~", Op::Created),
                file("d~", Op::ClosedWrite),
                renamed,
            ],
        },
        &mut vec![HashMap::new()],
    );
    let (t, w) = queue.try_take_at(Instant::now()).expect("d");
    queue.finish(t, &w, None);
    // A link made where the agent does not look, moved in, then written through.
    std::fs::hard_link(d.path().join("d"), d.path().join("c")).expect("link");
    std::fs::write(d.path().join("c"), b"two").expect("write through c");
    intake.take(
        Batch {
            root: 0,
            changes: vec![file("c", Op::MovedIn), file("c", Op::ClosedWrite)],
        },
        &mut vec![HashMap::new()],
    );
    let (_, w) = queue.try_take_at(Instant::now()).expect("c and d");
    let mut got: Vec<PathBuf> = match &w {
        crate::sync::job::Job::Paths(e) => e.iter().map(|e| e.path.clone()).collect(),
        _ => Vec::new(),
    };
    got.sort();
    assert_eq!(got, [p("c"), p("d")], "d goes with c");
}

// A file that came with a directory moved in (`rm -rf a && cp -a build/a a`) was not
// remembered as a file seen with one name, as one written or renamed into place
// is: a link made to it later (`ln a/c e`) went alone, and was a file of its own on
// the remotes with -H (simulator seed 358, `all,linkwrites`); a write through the
// link left `a/c` stale there without -H. Names of one file in the directory (`cp
// -a` keeps them linked) go in one call with -H.
#[test]
fn a_file_that_came_with_a_directory_moved_in_is_known_to_a_link_made_later() {
    let names = job_names;
    for hard_links in [false, true] {
        let d = tempfile::tempdir().expect("tempdir");
        // One path a call, so that only a set of -H makes two go together.
        let queue = Arc::new(Queue::new(1, 1, 1));
        let intake = intake_on(d.path(), &queue, Excludes::default(), hard_links);
        let file = |path: &str, op| Change::File { path: p(path), op };
        let at = |rel: &str| d.path().join(rel);
        std::fs::create_dir(at("a")).expect("mkdir");
        std::fs::write(at("a/c"), b"one").expect("write");
        std::fs::write(at("a/x"), b"two").expect("write");
        std::fs::hard_link(at("a/x"), at("a/y")).expect("link");
        intake.take(
            Batch {
                root: 0,
                changes: vec![Change::DirIn {
                    path: p("a"),
                    moved: true,
                    found: vec![p("a"), p("a/c"), p("a/x"), p("a/y")],
                }],
            },
            &mut vec![HashMap::new()],
        );
        let mut calls = Vec::new();
        while let Some((t, w)) = queue.try_take_at(Instant::now()) {
            calls.push(names(&w));
            queue.finish(t, &w, None);
        }
        if hard_links {
            assert!(
                calls.contains(&vec![p("a/x"), p("a/y")]),
                "one file's names in one call: {calls:?}"
            );
        }
        std::fs::hard_link(at("a/c"), at("e")).expect("link");
        let mut changes = vec![file("e", Op::Created)];
        if !hard_links {
            std::fs::write(at("e"), b"three").expect("write through e");
            changes.push(file("e", Op::ClosedWrite));
        }
        intake.take(Batch { root: 0, changes }, &mut vec![HashMap::new()]);
        let mut got = Vec::new();
        while let Some((t, w)) = queue.try_take_at(Instant::now()) {
            got.extend(names(&w));
            if hard_links {
                assert_eq!(names(&w), [p("a/c"), p("e")], "one call");
            }
            queue.finish(t, &w, None);
        }
        got.sort();
        assert_eq!(
            got,
            [p("a/c"), p("e")],
            "a/c goes with e (-H: {hard_links})"
        );
    }
}

// A file no event showed since the start (sent by a full sync, or queued by the
// start's catch-up), then linked beside its name (`ln a c`): `a` was not known, so
// `c` went alone, a file of its own on the remotes with -H, and a write through `c`
// left `a` stale without -H (simulator seeds 319, 391 of `all,linkwrites`).
#[test]
fn a_link_made_beside_a_file_never_seen_finds_its_first_name() {
    for hard_links in [false, true] {
        let d = tempfile::tempdir().expect("tempdir");
        let queue = Arc::new(Queue::new(1, 1, 1));
        let intake = intake_on(d.path(), &queue, Excludes::default(), hard_links);
        let at = |rel: &str| d.path().join(rel);
        for name in ["a", "b", "x"] {
            std::fs::write(at(name), name).expect("write");
        }
        std::fs::hard_link(at("a"), at("c")).expect("link");
        let mut changes = vec![Change::File {
            path: p("c"),
            op: Op::Created,
        }];
        if !hard_links {
            std::fs::write(at("c"), b"through c").expect("write through c");
            changes.push(Change::File {
                path: p("c"),
                op: Op::ClosedWrite,
            });
        }
        intake.take(Batch { root: 0, changes }, &mut vec![HashMap::new()]);
        let mut got = Vec::new();
        while let Some((t, w)) = queue.try_take_at(Instant::now()) {
            let mut names: Vec<PathBuf> = match &w {
                crate::sync::job::Job::Paths(e) => e.iter().map(|e| e.path.clone()).collect(),
                _ => Vec::new(),
            };
            names.sort();
            if hard_links {
                assert_eq!(names, [p("a"), p("c")], "one call");
            }
            got.extend(names);
            queue.finish(t, &w, None);
        }
        got.sort();
        assert_eq!(got, [p("a"), p("c")], "a goes with c (-H: {hard_links})");
    }
}

// An exchange travelled as two renames: the second took the first's new path for
// gone and cancelled the pushes below it, and one side stayed stale on the remotes.
#[test]
fn an_exchange_queues_both_sides_as_listings_and_nothing_as_gone() {
    let items = exchange_items(
        &Excludes::default(),
        [(p("a"), true), (p("b"), false)],
        vec![p("a"), p("a/x.txt"), p("a/sub"), p("b")],
    );
    assert_eq!(
        items,
        [
            Item::Path(Entry::listing("a"), false),
            Item::Path(Entry::plain("b"), false),
            Item::Path(Entry::listing("a/x.txt"), false),
            Item::Path(Entry::listing("a/sub"), false),
        ]
    );
    // A temp name on one side: only the other side is mirrored.
    let items = exchange_items(
        &Excludes::default(),
        [(p("f.txt"), false), (p(".f.txt.swp"), false)],
        vec![p("f.txt"), p(".f.txt.swp")],
    );
    assert_eq!(items, [Item::Path(Entry::plain("f.txt"), false)]);
}

// CI at 2470093 (fanotify, -H, the brake's settle 2 s): round n of `echo > h/a; rm -f
// h/b; ln h/a h/b; echo >> h/b`. h/a went alone at its write (h/b not linked yet), then
// fanotify reported h/b as one merged event (Created, ClosedWrite, Deleted): h/b went
// alone after the settle, a file of its own on the remotes. Once h/a's call ends, one
// call carries both names at once.
#[test]
fn a_name_unlinked_and_linked_again_in_one_merged_event_goes_with_its_set() {
    let names = job_names;
    let d = tempfile::tempdir().expect("tempdir");
    let queue = Arc::new(Queue::new(1, 100, 1));
    queue.set_brake(
        Some(crate::config::DeleteBrake {
            percent: 0,
            count: 1000,
            window: std::time::Duration::from_secs(60),
            settle: std::time::Duration::from_secs(2),
        }),
        vec!["r".into()],
        Path::new("c.xml"),
    );
    let intake = intake_on(d.path(), &queue, Excludes::default(), true);
    let file = |path: &str, op| Change::File { path: p(path), op };
    let at = |rel: &str| d.path().join(rel);
    std::fs::create_dir(at("h")).expect("mkdir");
    std::fs::write(at("h/a"), b"base0").expect("write");
    std::fs::hard_link(at("h/a"), at("h/b")).expect("link");
    let mut unclosed = vec![HashMap::new()];
    intake.take(
        Batch {
            root: 0,
            changes: vec![
                file("h/a", Op::Created),
                file("h/a", Op::ClosedWrite),
                file("h/b", Op::Created),
                file("h/b", Op::ClosedWrite),
            ],
        },
        &mut unclosed,
    );
    while let Some((t, w)) = queue.try_take_at(Instant::now()) {
        assert_eq!(names(&w), [p("h/a"), p("h/b")], "round 0: one call");
        queue.finish(t, &w, None);
    }
    // Round 1: h/a written while h/b is away.
    std::fs::write(at("h/a"), b"base1").expect("write");
    std::fs::remove_file(at("h/b")).expect("rm");
    intake.take(
        Batch {
            root: 0,
            changes: vec![file("h/a", Op::ClosedWrite)],
        },
        &mut unclosed,
    );
    let (ta, wa) = queue.try_take_at(Instant::now()).expect("h/a at its write");
    assert_eq!(names(&wa), [p("h/a")]);
    std::fs::hard_link(at("h/a"), at("h/b")).expect("link");
    std::fs::write(at("h/b"), b"base1through1").expect("write through h/b");
    intake.take(
        Batch {
            root: 0,
            changes: vec![
                file("h/b", Op::Created),
                file("h/b", Op::ClosedWrite),
                file("h/b", Op::Deleted),
            ],
        },
        &mut unclosed,
    );
    assert!(queue.try_take_at(Instant::now()).is_none(), "h/a in flight");
    queue.finish(ta, &wa, None);
    let (t, w) = queue.try_take_at(Instant::now()).expect("the set, at once");
    assert_eq!(names(&w), [p("h/a"), p("h/b")], "one call");
    queue.finish(t, &w, None);
    assert!(
        queue.try_take_at(Instant::now()).is_none(),
        "nothing after it"
    );
}
