//! A full sync (`-r` at start, the scheduled one, a root's or a recovery's) does not
//! hold live changes back: they are pushed beside it, and once more after it, because
//! it may undo them (its `--delete` deletes what the list it made of a directory lacks;
//! it sends a file with the metadata its list holds, over a newer push). Real daemons,
//! a full sync made slow by `--bwlimit` (a lower bound on its time whatever the
//! machine's speed), every wait a poll.

use std::fs;
use std::path::Path;

use crate::support::*;

/// `len` bytes that do not compress (`-z` must not shorten the full sync).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A file's mtime in whole seconds.
fn mtime(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mtime()
}

/// rsync's temp file of `name` (`.name.XXXXXX`) is in `dir` on the remote: the full
/// sync has listed the tree and is sending that file.
fn receiving(dir: &Path, name: &str) -> bool {
    let prefix = format!(".{name}.");
    fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
    })
}

// Issue: a long `-r` held every live edit back until it ended (8-14 s in a 200k-file
// start), and said nothing meanwhile.
#[test]
fn a_live_edit_lands_while_a_full_sync_runs_and_the_remotes_end_equal() {
    let s = setup!();
    // 4 MiB at 128 KiB/s: the full sync to each remote runs at least 32 s.
    s.write("a/big.bin", noise(4 << 20));
    s.write("b/keep.txt", b"keep\n");
    let old = s.write("b/old.txt", b"old\n");
    make_old(&old);
    let mut conf = s.conf();
    // Without -u: a remote file newer than the full sync's list is not skipped.
    conf.params = "-artz --bwlimit=128".into();
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, conf.render()).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o"])
        .arg(&conf_path)
        .arg("-r")
        .env("SERSYNC2_FULL_PROGRESS_SECS", "1");
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    wait_until("both full syncs send a/big.bin", DEADLINE, || {
        agent.assert_running();
        s.remotes()
            .iter()
            .all(|r| receiving(&r.join("a"), "big.bin"))
    });
    let status = sersync2(&s.dir, &["-o", "sersync.xml", "--status"]);
    assert!(
        text(&status).contains("full sync running since"),
        "{}",
        text(&status)
    );
    // In a directory the full syncs have listed already: a new file, and a file whose
    // older content and mtime their lists hold.
    s.write("b/new.txt", b"made during the full sync\n");
    s.write("b/old.txt", b"changed during the full sync\n");
    wait_until("the live edits on both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes().iter().all(|r| {
            fs::read(r.join("b/new.txt")).is_ok_and(|b| b == b"made during the full sync\n")
                && fs::read(r.join("b/old.txt"))
                    .is_ok_and(|b| b == b"changed during the full sync\n")
        })
    });
    for r in s.remotes() {
        assert!(
            !r.join("a/big.bin").exists(),
            "the live edits landed only after the full sync to {}\n{}",
            r.display(),
            agent.log()
        );
    }
    wait_until("a line saying the full sync still runs", DEADLINE, || {
        agent.log().contains("still running")
    });
    // Once the full syncs ended, every remote equals the source: the new file kept,
    // the changed one with the source's mtime.
    wait_until("both full syncs done", BIG_DEADLINE, || {
        agent.assert_running();
        let log = agent.log();
        let done = log
            .lines()
            .filter(|l| l.contains("full sync of") && l.contains("done in"));
        done.count() >= 2
    });
    s.wait_within(&mut agent, "after the full syncs", BIG_DEADLINE);
    let out = wait_synced(&s.dir, 120);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for r in s.remotes() {
        trees_equal(&s.src, &r)
            .unwrap_or_else(|d| panic!("--wait-synced said synced: {d}\n{}", agent.log()));
        // The snapshots compare contents: the mtimes too, to the second.
        for f in ["b/old.txt", "b/new.txt", "b/keep.txt"] {
            assert_eq!(
                mtime(&r.join(f)),
                mtime(&s.p(f)),
                "{f}'s mtime on {}\n{}",
                r.display(),
                agent.log()
            );
        }
    }
    agent.stop();
}
