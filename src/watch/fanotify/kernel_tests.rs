//! The fanotify backend against the kernel (skipped where fanotify cannot run).

use super::*;
use crate::watch::event_loop::recv_until;

fn file_at(c: &Change, p: &str) -> bool {
    matches!(c, Change::File { path, op: Op::ClosedWrite } if path == Path::new(p))
}

#[test]
fn events_map_to_paths_below_the_root_and_follow_directory_renames() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path().join("www");
    std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
    std::fs::create_dir_all(d.path().join("outside/sub")).expect("mkdir");
    let t = match FanotifyTree::new(root.clone(), 0, Excludes::default(), Events::default()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIP: fanotify cannot run here: {e}");
            return;
        }
    };
    let stop = crate::sys::Stop::manual().expect("stop");
    let (tx, rx) = crossbeam_channel::unbounded();
    let fd = stop.fd();
    let th = std::thread::spawn(move || t.run(fd, tx));
    let mut seen = Vec::new();
    std::fs::write(d.path().join("outside/sub/o.txt"), "x").expect("write outside");
    std::fs::write(root.join("a/b/f.txt"), "x").expect("write");
    assert!(
        recv_until(&rx, &mut seen, |c| file_at(c, "a/b/f.txt")),
        "{seen:?}"
    );
    std::fs::rename(root.join("a"), root.join("z")).expect("mv");
    assert!(
        recv_until(
            &rx,
            &mut seen,
            |c| matches!(c, Change::Renamed { from, to, dir: true, found }
            if from == Path::new("a") && to == Path::new("z")
                && found.contains(&PathBuf::from("z/b/f.txt")))
        ),
        "{seen:?}"
    );
    std::fs::write(root.join("z/b/g.txt"), "x").expect("write after the rename");
    assert!(
        recv_until(&rx, &mut seen, |c| file_at(c, "z/b/g.txt")),
        "{seen:?}"
    );
    std::fs::rename(d.path().join("outside"), root.join("in")).expect("mv in");
    assert!(
        recv_until(
            &rx,
            &mut seen,
            |c| matches!(c, Change::DirIn { path, moved: true, found }
            if path == Path::new("in") && found.contains(&PathBuf::from("in/sub/o.txt")))
        ),
        "{seen:?}"
    );
    std::fs::write(root.join("in/sub/p.txt"), "x").expect("write in the moved-in dir");
    assert!(
        recv_until(&rx, &mut seen, |c| file_at(c, "in/sub/p.txt")),
        "{seen:?}"
    );
    assert!(
        !format!("{seen:?}").contains("o.txt\", op"),
        "an event outside the root was sent: {seen:?}"
    );
    stop.trigger();
    th.join().expect("watch thread");
}

// An exchange (renameat2 RENAME_EXCHANGE) is two FAN_RENAME events, a -> b and
// b -> a, each with the moved directory's handle: both directories keep their
// paths in the cache, the pair goes out as one exchange, and files written below
// either side afterwards map to the new paths.
#[test]
fn exchanged_directories_map_to_their_new_paths() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path().join("www");
    for dir in ["XA/sub/deep", "XB/bsub", "P/Q/qsub"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    let t = match FanotifyTree::new(root.clone(), 0, Excludes::default(), Events::default()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIP: fanotify cannot run here: {e}");
            return;
        }
    };
    let stop = crate::sys::Stop::manual().expect("stop");
    let (tx, rx) = crossbeam_channel::unbounded();
    let fd = stop.fd();
    let th = std::thread::spawn(move || t.run(fd, tx));
    let mut seen = Vec::new();
    // Learn every handle before the exchange, as a running watcher would have.
    for rel in ["XA/sub/deep/0", "XB/bsub/0", "P/Q/qsub/0"] {
        std::fs::write(root.join(rel), "x").expect("write");
        assert!(recv_until(&rx, &mut seen, |c| file_at(c, rel)), "{seen:?}");
    }
    crate::sys::rename_exchange(&root.join("XA"), &root.join("XB")).expect("exchange");
    for rel in ["XB/sub/deep/f.txt", "XA/bsub/f.txt", "XA/f.txt", "XB/f.txt"] {
        std::fs::write(root.join(rel), "x").expect("write");
        assert!(
            recv_until(&rx, &mut seen, |c| file_at(c, rel)),
            "{rel}: {seen:?}"
        );
    }
    assert!(
        seen.iter().any(
            |c| matches!(c, Change::Exchanged { a, b, a_dir: true, b_dir: true, found }
            if a == Path::new("XA") && b == Path::new("XB")
                && found.contains(&PathBuf::from("XB/sub/deep/0"))
                && found.contains(&PathBuf::from("XA/bsub/0")))
        ),
        "{seen:?}"
    );
    crate::sys::rename_exchange(&root.join("XB/sub"), &root.join("P/Q"))
        .expect("exchange across parents");
    for rel in ["P/Q/deep/g.txt", "XB/sub/qsub/g.txt"] {
        std::fs::write(root.join(rel), "x").expect("write");
        assert!(
            recv_until(&rx, &mut seen, |c| file_at(c, rel)),
            "{rel}: {seen:?}"
        );
    }
    stop.trigger();
    th.join().expect("watch thread");
}

// Broke: the handle of a directory created after the start was learned by asking
// the kernel for its path when its first event was read; a rename still queued
// behind that event had already moved it, so its files were sent under the new
// name before the rename itself, and the remotes ended wrong.
#[test]
fn events_queued_before_a_rename_keep_the_path_they_had() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path().join("www");
    std::fs::create_dir_all(&root).expect("mkdir");
    let t = match FanotifyTree::new(root.clone(), 0, Excludes::default(), Events::default()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIP: fanotify cannot run here: {e}");
            return;
        }
    };
    // All queued before the watcher reads anything.
    std::fs::create_dir(root.join("a")).expect("mkdir a");
    std::fs::write(root.join("a/f.txt"), "x").expect("write a/f");
    std::fs::rename(root.join("a"), root.join("b")).expect("mv a b");
    std::fs::create_dir(root.join("a")).expect("mkdir a again");
    std::fs::write(root.join("a/g.txt"), "x").expect("write a/g");
    let stop = crate::sys::Stop::manual().expect("stop");
    let (tx, rx) = crossbeam_channel::unbounded();
    let fd = stop.fd();
    let th = std::thread::spawn(move || t.run(fd, tx));
    let mut seen = Vec::new();
    assert!(
        recv_until(&rx, &mut seen, |c| file_at(c, "a/g.txt")),
        "{seen:?}"
    );
    stop.trigger();
    th.join().expect("watch thread");
    let f = seen.iter().position(|c| file_at(c, "a/f.txt"));
    let mv = seen.iter().position(|c| {
        matches!(c, Change::Renamed { from, to, dir: true, .. }
            if from == Path::new("a") && to == Path::new("b"))
    });
    assert!(
        matches!((f, mv), (Some(f), Some(mv)) if f < mv),
        "a/f.txt, then the rename a -> b: {seen:?}"
    );
    assert!(
        !seen.iter().any(|c| file_at(c, "b/f.txt")),
        "sent under the name it had only later: {seen:?}"
    );
}
