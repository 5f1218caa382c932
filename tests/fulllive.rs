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

// Issue: a full sync of a big tree said only that it still ran; rsync's own progress
// (bytes and files transferred, percentage, rate) was not shown anywhere.
#[test]
fn a_full_sync_shows_rsyncs_own_figures_per_remote_in_its_progress_line_and_in_status() {
    let s = setup!();
    // 12 files of 128 KiB at 128 KiB/s: the full sync to each remote runs at least 12 s,
    // more than two progress periods of 1 s. Each file's bytes differ (rsync's
    // compression spans the files of a call: copies of one file would cost nothing).
    let bytes = noise(12 * (128 << 10));
    for (i, chunk) in bytes.chunks(128 << 10).enumerate() {
        s.write(format!("d/f{i:02}.bin"), chunk);
    }
    let mut conf = s.conf();
    conf.params = "-artz --bwlimit=128".into();
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, conf.render()).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-o"])
        .arg(&conf_path)
        .arg("-r")
        .env("SERSYNC2_PROGRESS_SECS", "1");
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    let remotes: Vec<String> = [&s.a, &s.b]
        .iter()
        .map(|d| format!("{}::{}", d.ip(), d.module()))
        .collect();
    // Each remote's progress line carries rsync's figures, a file transferred among them.
    wait_until(
        "a progress line with rsync's figures per remote",
        DEADLINE,
        || {
            agent.assert_running();
            let log = agent.log();
            remotes.iter().all(|r| {
                log.lines().any(|l| {
                    l.contains(&format!("to {r} still running"))
                        && l.contains("; rsync: ")
                        && l.contains("bytes (")
                        && l.contains("file(s) transferred")
                })
            })
        },
    );
    // Status shows them per remote while the full syncs run: the JSON's figures and the
    // text's line.
    wait_until(
        "rsync's figures in --status and --status --json",
        DEADLINE,
        || {
            agent.assert_running();
            let out = sersync2(&s.dir, &["-o", "sersync.xml", "--status", "--json"]);
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                return false;
            };
            let progress = doc["progress"].as_array().cloned().unwrap_or_default();
            let json = remotes.iter().all(|r| {
                progress.iter().any(|p| {
                    p["remote"].as_str() == Some(r.as_str())
                        && p["rsync"]["bytes"].as_u64().is_some_and(|b| b > 0)
                        && p["rsync"]["percent"].as_u64().is_some_and(|p| p <= 100)
                        && p["rsync"]["rate"]
                            .as_str()
                            .is_some_and(|r| r.ends_with("B/s"))
                        && p["line"].as_str().is_some_and(|l| l.contains("; rsync: "))
                })
            });
            let shown = text(&sersync2(&s.dir, &["-o", "sersync.xml", "--status"]));
            let text = remotes.iter().all(|r| {
                shown.lines().any(|l| {
                    l.starts_with("in progress: full sync of")
                        && l.contains(&format!("to {r} still running"))
                        && l.contains("; rsync: ")
                })
            });
            json && text
        },
    );
    wait_until("both full syncs done", BIG_DEADLINE, || {
        agent.assert_running();
        let log = agent.log();
        let done = log
            .lines()
            .filter(|l| l.contains("full sync of") && l.contains("done in"));
        done.count() >= 2
    });
    // What was pushed is the tree, as without the figures.
    for r in s.remotes() {
        trees_equal(&s.src, &r).unwrap_or_else(|d| panic!("{d}\n{}", agent.log()));
    }
    agent.stop();
}
