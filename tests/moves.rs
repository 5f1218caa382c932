//! Renames inside the tree travel as renames: the new path is pushed with the old one
//! as the basis the remote already has, then the old path is deleted, so unchanged
//! data is not sent again. Where the remote lacks the old path (or the new parent),
//! the push still lands and the remotes end equal to the source. Real daemons, real
//! inotify; bytes are read from the daemons' own logs ("received N bytes").

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::agent::*;
use crate::support::*;

/// Incompressible bytes (the config pushes with `-z`), different per seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Bytes the daemon received in the sessions logged after `from` (a log length).
fn received_since(log: &str, from: usize) -> u64 {
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("received ")? + "received ".len()..];
            let n: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(|c| *c != ',')
                .collect();
            n.parse::<u64>().ok()
        })
        .sum()
}

/// Each daemon's log length once every session it logged the start of has logged its
/// summary line too: a push that made the trees equal may log its bytes just after, and
/// they must not count for what follows.
fn log_lens(s: &Setup) -> (usize, usize) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (a, b) = (s.a.log(), s.b.log());
        if (sessions_ended(&a) && sessions_ended(&b)) || std::time::Instant::now() >= until {
            return (a.len(), b.len());
        }
        std::thread::sleep(std::time::Duration::from_millis(20)); // poll until the deadline
    }
}

/// Has every session in a daemon log that started (`rsync to`/`rsync on`) logged its
/// summary (`total size`)?
fn sessions_ended(log: &str) -> bool {
    let pid = |l: &str| -> Option<String> {
        let open = l.find(" [")?;
        let close = l[open..].find(']')? + open;
        Some(l[open + 2..close].to_owned())
    };
    let mut open = std::collections::HashSet::new();
    for l in log.lines() {
        if l.contains("] rsync to ") || l.contains("] rsync on ") {
            open.extend(pid(l));
        } else if l.contains("total size") {
            if let Some(p) = pid(l) {
                open.remove(&p);
            }
        }
    }
    open.is_empty()
}

/// Waits until the remotes are equal to the source and the daemons have logged the
/// sessions that made them so; returns the bytes each received since `at`.
fn received(s: &Setup, at: (usize, usize)) -> (u64, u64) {
    (
        received_since(&s.a.log(), at.0),
        received_since(&s.b.log(), at.1),
    )
}

const MB: usize = 1024 * 1024;

// A renamed directory was pushed again whole (every byte re-sent).
#[test]
fn renamed_directory_is_not_sent_again() {
    let s = Setup::new("mv-dir");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    for i in 0..6 {
        s.write(format!("old/sub{}/f{i}.bin", i % 2), noise(MB, i));
    }
    s.wait(&mut agent, "the directory before the rename");
    let at = log_lens(&s);
    fs::rename(s.p("old"), s.p("new")).expect("rename old -> new");
    s.wait(&mut agent, "the renamed directory");
    let data = 6 * MB as u64;
    // The sessions' summary lines may be logged just after the trees match.
    let mut got = (0, 0);
    wait_until("the daemons log the rename's sessions", DEADLINE, || {
        got = received(&s, at);
        got.0 > 0 && got.1 > 0
    });
    assert!(
        got.0 < data / 20 && got.1 < data / 20,
        "a rename of {data} bytes made the remotes receive {got:?} bytes:\n{}",
        s.logs()
    );
    for remote in s.remotes() {
        assert!(!remote.join("old").exists(), "old name left on {remote:?}");
        let nlink = fs::metadata(remote.join("new/sub0/f0.bin"))
            .expect("renamed file on the remote")
            .nlink();
        assert_eq!(nlink, 1, "the old directory is gone, its links with it");
    }
    agent.stop();
}

// A renamed file was pushed again whole, or its old name stayed on the remotes.
#[test]
fn renamed_file_arrives_and_old_name_is_gone() {
    let s = Setup::new("mv-file");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    s.write("a/same-dir.bin", noise(2 * MB, 1));
    // Not the same size: --fuzzy takes any file of the same size and mtime.
    s.write("a/other-dir.bin", noise(2 * MB + 4321, 2));
    s.write("b/keep.txt", "keep\n");
    s.wait(&mut agent, "the files before the renames");
    let at = log_lens(&s);
    fs::rename(s.p("a/same-dir.bin"), s.p("a/renamed.bin")).expect("rename in a/");
    s.wait(&mut agent, "a file renamed in its directory");
    let mut got = (0, 0);
    wait_until("the daemons log the rename's sessions", DEADLINE, || {
        got = received(&s, at);
        got.0 > 0 && got.1 > 0
    });
    let data = 2 * MB as u64;
    assert!(
        got.0 < data / 10 && got.1 < data / 10,
        "a same-directory rename of {data} bytes made the remotes receive {got:?}:\n{}",
        s.logs()
    );
    let at = log_lens(&s);
    fs::rename(s.p("a/other-dir.bin"), s.p("b/moved.bin")).expect("rename a/ -> b/");
    s.wait(&mut agent, "a file moved to another directory");
    wait_until("the daemons log the move's sessions", DEADLINE, || {
        got = received(&s, at);
        got.0 > 0 && got.1 > 0
    });
    assert!(
        got.0 < data / 10 && got.1 < data / 10,
        "a move of {data} bytes to another directory made the remotes receive {got:?}:\n{}",
        s.logs()
    );
    for remote in s.remotes() {
        assert!(!remote.join("a/same-dir.bin").exists(), "{remote:?}");
        assert!(!remote.join("a/other-dir.bin").exists(), "{remote:?}");
    }
    agent.stop();
}

// A rename whose old path (or new parent) the remote lacked never reached it.
#[test]
fn rename_to_a_path_the_remote_lacks_falls_back() {
    let s = Setup::new("mv-lacks");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    s.write("old/f.txt", "f\n");
    s.write("old/deep/g.txt", "g\n");
    s.write("file.txt", "file\n");
    s.write("x/y/here.txt", "here\n");
    s.wait(&mut agent, "before the remote loses paths");
    // Remote b loses the old paths and the new parent behind the agent's back.
    let b = s.b.data_dir();
    fs::remove_dir_all(b.join("old")).expect("remove old on b");
    fs::remove_file(b.join("file.txt")).expect("remove file.txt on b");
    fs::rename(s.p("old"), s.p("new")).expect("rename old -> new");
    fs::rename(s.p("file.txt"), s.p("renamed.txt")).expect("rename file.txt");
    s.write("old2/h.txt", "h\n");
    s.wait(&mut agent, "renames of paths b lacked");
    fs::remove_dir_all(b.join("x")).expect("remove x on b");
    fs::rename(s.p("old2"), s.p("x/y/new2")).expect("rename into a parent b lacks");
    // What else b lost under x/ comes back with its next change.
    s.write("x/y/here.txt", "here again\n");
    s.wait(&mut agent, "a rename into a parent b lacked");
    agent.stop();
}

// Swapping two names through a temporary name left a remote with stale or lost data.
#[test]
fn swap_through_a_temp_name_ends_equal() {
    let s = Setup::new("mv-swap");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    s.write("a.txt", "A\n");
    s.write("b.txt", "B\n");
    s.write("A/x.txt", "in A\n");
    s.write("B/x.txt", "in B\n");
    s.wait(&mut agent, "before the swaps");
    for round in 0..5 {
        for (one, two) in [("a.txt", "b.txt"), ("A", "B")] {
            fs::rename(s.p(one), s.p("swap.tmp")).expect("one -> tmp");
            fs::rename(s.p(two), s.p(one)).expect("two -> one");
            fs::rename(s.p("swap.tmp"), s.p(two)).expect("tmp -> two");
        }
        if round % 2 == 0 {
            s.wait(&mut agent, "after a round of swaps");
        }
    }
    // A chain a -> c -> d, and a directory renamed while files are written in it.
    fs::rename(s.p("a.txt"), s.p("c.txt")).expect("a -> c");
    fs::rename(s.p("c.txt"), s.p("d.txt")).expect("c -> d");
    for i in 0..20 {
        s.write(format!("A/w{i}.txt"), format!("{i}\n"));
        if i == 10 {
            fs::rename(s.p("A"), s.p("C")).expect("A -> C");
        }
    }
    s.wait(&mut agent, "after the chains");
    agent.stop();
}

// ssh mode: renames travelled as a delete plus a push of every byte. Now a rename is one
// `mv` on the remote over the shared connection: the remote keeps the files' inodes, for
// a directory, a file in its directory and a file moved to another one. Where the
// remote lacks the old path, the rename travels as a push and still lands; rename
// chains and swaps end equal.
#[test]
fn renames_over_ssh_move_the_remote_files() {
    let dir = Dir::new("mv-ssh");
    let src = dir.mkdir_p("src");
    let sshd = Sshd::start();
    let conf = Conf::ssh(&src, &sshd, &dir.join("fail.sh"));
    let mut agent = Agent::start(&dir, &conf, &[]);
    let remotes = [sshd.dest_dir()];
    let remote = sshd.dest_dir();
    let logs = || format!("--- sshd log ---\n{}", tail(&sshd.log(), 40));
    for i in 0..4 {
        dir.write(format!("src/old/sub{}/f{i}.bin", i % 2), noise(MB / 4, i));
    }
    dir.write("src/a/moving.bin", noise(MB / 2, 9));
    dir.write("src/a/staying.bin", noise(MB / 2, 10));
    dir.write("src/b/keep.txt", "keep\n");
    dir.write("src/x.txt", "X\n");
    dir.write("src/y.txt", "Y\n");
    dir.write("src/gone/g.txt", "g\n");
    wait_mirrored(
        &mut agent,
        &src,
        &remotes,
        "before the renames",
        DEADLINE,
        &logs,
    );
    let ino = |rel: &str| {
        fs::metadata(remote.join(rel))
            .unwrap_or_else(|e| panic!("{rel} on the remote: {e}"))
            .ino()
    };
    let before = [
        ino("old/sub0/f0.bin"),
        ino("old/sub1/f3.bin"),
        ino("a/moving.bin"),
        ino("a/staying.bin"),
    ];
    fs::rename(src.join("old"), src.join("new")).expect("old -> new");
    fs::rename(src.join("a/moving.bin"), src.join("b/moved.bin")).expect("a/ -> b/");
    fs::rename(src.join("a/staying.bin"), src.join("a/renamed.bin")).expect("in a/");
    wait_mirrored(&mut agent, &src, &remotes, "the renames", DEADLINE, &logs);
    let after = [
        ino("new/sub0/f0.bin"),
        ino("new/sub1/f3.bin"),
        ino("b/moved.bin"),
        ino("a/renamed.bin"),
    ];
    assert_eq!(
        before,
        after,
        "the remote's files were not moved (received again):\n{}",
        tail(&agent.log(), 30)
    );
    // The remote lost the old path behind the agent's back: the rename still lands.
    fs::remove_dir_all(remote.join("gone")).expect("remove gone/ on the remote");
    fs::rename(src.join("gone"), src.join("back")).expect("gone -> back");
    wait_mirrored(
        &mut agent,
        &src,
        &remotes,
        "a rename the remote cannot move",
        DEADLINE,
        &logs,
    );
    // A swap through a temp name and a chain, in the same directory.
    fs::rename(src.join("x.txt"), src.join("t.tmp")).expect("x -> t");
    fs::rename(src.join("y.txt"), src.join("x.txt")).expect("y -> x");
    fs::rename(src.join("t.tmp"), src.join("y.txt")).expect("t -> y");
    fs::rename(src.join("new"), src.join("n2")).expect("new -> n2");
    fs::rename(src.join("n2"), src.join("n3")).expect("n2 -> n3");
    wait_mirrored(
        &mut agent,
        &src,
        &remotes,
        "swap and chain",
        DEADLINE,
        &logs,
    );
    agent.stop();
}

/// Sessions a daemon logged after `from` (a log length): how many started in all, and
/// how many had started when `name` was received.
fn sessions_until_received(log: &str, from: usize, name: &str) -> (usize, Option<usize>) {
    let mut started = 0;
    let mut at = None;
    for l in log.get(from..).unwrap_or("").lines() {
        if l.contains("] rsync to ") || l.contains("] rsync on ") {
            started += 1;
        } else if at.is_none() && l.contains(" recv ") && l.contains(name) {
            at = Some(started);
        }
    }
    (started, at)
}

// A flood of renames serialized a remote: one rename call (a push and a delete) after
// the other, and a change made after the flood waited behind all of them. Now a flood
// travels plain, batched, and the change is not held back.
#[test]
fn a_flood_of_renames_does_not_hold_back_other_changes() {
    const N: usize = 300;
    let s = Setup::new("mv-flood");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    for i in 0..N {
        s.write(format!("flood/f{i:03}.txt"), format!("file {i}\n"));
    }
    s.wait(&mut agent, "the files before the flood");
    let at = log_lens(&s);
    for i in 0..N {
        fs::rename(
            s.p(format!("flood/f{i:03}.txt")),
            s.p(format!("flood/g{i:03}.txt")),
        )
        .expect("rename in flood/");
    }
    s.write("other.txt", "unrelated\n");
    wait_until("the unrelated file on both remotes", DEADLINE, || {
        s.remotes().iter().all(|r| r.join("other.txt").exists())
    });
    s.wait(&mut agent, "the flood");
    log_lens(&s); // every session that made them equal has logged its end
    for (name, log, from) in [("a", s.a.log(), at.0), ("b", s.b.log(), at.1)] {
        let (sessions, before_other) = sessions_until_received(&log, from, "other.txt");
        let context = || {
            format!(
                "remote {name}: {sessions} sessions for the flood, {before_other:?} started \
                 when other.txt arrived\n--- agent log ---\n{}",
                tail(&agent.log(), 40)
            )
        };
        eprintln!("{}", context().lines().next().unwrap_or_default());
        // One by one, the renames took two sessions each (600). Batched, a few renames
        // may still go alone before the flood is seen; the bounds are generous.
        assert!(sessions < N / 2, "{}", context());
        let before_other = before_other.unwrap_or_else(|| panic!("{}", context()));
        assert!(before_other < N / 10, "{}", context());
    }
    assert!(
        agent.log().contains("travel as plain paths, batched"),
        "{}",
        tail(&agent.log(), 40)
    );
    agent.stop();
}
