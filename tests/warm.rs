//! Warm restart: what changed while no agent ran reaches the remotes at a start without
//! `-r`, found by a stat walk against the index of what the remotes were sent; a torn
//! index is refused with its cause in the log. Real daemons, real inotify, a real
//! `sersync2` process stopped by SIGTERM or SIGKILL.

use std::fs;
use std::path::PathBuf;

use crate::agent::*;
use crate::support::*;

fn index_of(s: &Setup) -> PathBuf {
    s.dir.join("fail.sh.index")
}

/// Starts with `-r` on the tree as it is, waits until both remotes are level and the
/// index was rebuilt and written.
fn start_level(s: &Setup) -> Agent {
    let mut agent = Agent::start(&s.dir, &s.conf(), &["-r"]);
    s.wait(&mut agent, "the -r start");
    wait_until("the index is rebuilt", DEADLINE, || {
        agent.log().contains("rebuilt:")
    });
    wait_until("the index is written", DEADLINE, || index_of(s).exists());
    agent
}

fn seed(s: &Setup) {
    s.write("a/x.txt", "x one");
    s.write("a/y.txt", "y one");
    s.write("same.txt", "0123456789");
    for i in 0..20 {
        s.write(format!("d/sub/f{i}.txt"), format!("file {i}"));
    }
}

/// The changes made while stopped: a new file, a modified one, a deleted one, a renamed
/// directory, and with `restored` a file rewritten with its size and mtime restored
/// (`touch -r`: a full sync's quick check does not see it, the index's ctime does).
fn change_offline(s: &Setup, restored: bool) {
    s.write("n/new.txt", "new while stopped");
    s.write("a/x.txt", "x two, longer");
    fs::remove_file(s.p("a/y.txt")).expect("rm a/y.txt");
    fs::rename(s.p("d"), s.p("e")).expect("mv d e");
    if !restored {
        return;
    }
    let stamp = s.dir.join("stamp");
    let status = std::process::Command::new("touch")
        .arg("-r")
        .arg(s.p("same.txt"))
        .arg(&stamp)
        .status()
        .expect("touch");
    assert!(status.success());
    fs::write(s.p("same.txt"), "9876543210").expect("rewrite same.txt");
    let status = std::process::Command::new("touch")
        .arg("-r")
        .arg(&stamp)
        .arg(s.p("same.txt"))
        .status()
        .expect("touch -r");
    assert!(status.success());
}

#[test]
fn changes_made_while_stopped_reach_the_remotes_at_a_start_without_r() {
    let s = Setup::new("warm-term");
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    change_offline(&s, true);
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    let log = agent.log();
    assert!(
        log.contains("new or changed, 1 deleted, 1 renamed"),
        "catch-up line; log:\n{}",
        tail(&log, 40)
    );
    s.wait(&mut agent, "the catch-up");
    assert!(
        !agent.log().contains("full sync of"),
        "no full sync; log:\n{}",
        tail(&agent.log(), 40)
    );
    agent.stop();
    // The catch-up's pushes were entered: the next start finds nothing to do.
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    let log = agent.log();
    assert!(
        log.contains("0 new or changed, 0 deleted, 0 renamed"),
        "log:\n{}",
        tail(&log, 40)
    );
    s.wait(&mut agent, "the second start");
}

// What a killed agent pushed after its last checkpoint is not in the index: a file made
// and pushed then, deleted while stopped, would stay on the remotes if the next start
// trusted it. The index says it was written while running: full sync, index rebuilt.
#[test]
fn after_sigkill_the_start_falls_back_to_a_full_sync_and_says_why_then_catches_up_again() {
    let s = Setup::new("warm-kill");
    seed(&s);
    let mut agent = start_level(&s);
    s.write("live.txt", "made while running");
    s.wait(&mut agent, "the live change");
    let (status, _) = agent.stop_with(libc::SIGKILL);
    assert!(!status.success());
    change_offline(&s, false);
    fs::remove_file(s.p("live.txt")).expect("rm live.txt");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    let log = agent.log();
    assert!(
        log.contains("warm restart off for") && log.contains("did not stop"),
        "log:\n{}",
        tail(&log, 40)
    );
    s.wait(&mut agent, "the full sync after SIGKILL");
    wait_until("the index is rebuilt", DEADLINE, || {
        agent.log().contains("rebuilt:")
    });
    agent.stop();
    s.write("n/later.txt", "later");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    assert!(
        agent.log().contains("catch-up of") && !agent.log().contains("full sync of"),
        "log:\n{}",
        tail(&agent.log(), 40)
    );
    s.wait(&mut agent, "the catch-up after the rebuild");
}

#[test]
fn a_torn_index_is_refused_with_its_cause_and_the_start_goes_on_as_without_one() {
    let s = Setup::new("warm-torn");
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    // A power cut mid-write: the file cut short.
    let bytes = fs::read(index_of(&s)).expect("read the index");
    fs::write(index_of(&s), &bytes[..bytes.len() / 2]).expect("truncate the index");
    s.write("n/new.txt", "new while stopped");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    let log = agent.log();
    assert!(
        log.contains("warm restart off for") && log.contains("checksum mismatch"),
        "log:\n{}",
        tail(&log, 40)
    );
    assert!(!log.contains("catch-up of"));
    agent.stop();
    // -r makes it again, and the next start catches up from it.
    let mut agent = start_level(&s);
    agent.stop();
    s.write("n/later.txt", "later");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    assert!(
        agent.log().contains("catch-up of") && !agent.log().contains("full sync of"),
        "log:\n{}",
        tail(&agent.log(), 40)
    );
    s.wait(&mut agent, "the catch-up from the rebuilt index");
}

// An index is trusted like the fail log: one another user planted (here a copy of a
// good one, which would make the agent skip what it lists as level) is not read; the
// start says why, goes on as without an index, and replaces the file with its own.
#[test]
fn an_index_planted_by_another_user_is_not_read_and_is_replaced() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(attacker) = User::create("w") else {
        return;
    };
    let s = Setup::new("warm-planted");
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let shared = s.dir.mkdir_p("shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let conf = Conf::daemons(&s.src, &[&s.a, &s.b], &shared.join("fail.sh"));
    let index = shared.join("fail.sh.index");
    seed(&s);
    let mut agent = Agent::start(&s.dir, &conf, &["-r"]);
    s.wait(&mut agent, "the -r start");
    wait_until("the index is rebuilt", DEADLINE, || {
        agent.log().contains("rebuilt:")
    });
    agent.stop();
    let copy = s.dir.join("copy");
    fs::copy(&index, &copy).expect("copy the index");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::remove_file(&index).expect("rm the index");
    attacker.run("cp", &[copy.as_os_str(), index.as_os_str()]);
    assert_eq!(fs::metadata(&index).expect("planted").uid(), attacker.uid);
    s.write("n/new.txt", "new while stopped");
    let mut agent = Agent::start(&s.dir, &conf, &[]);
    let log = agent.log();
    assert!(
        log.contains("warm restart off for") && log.contains(&attacker.name),
        "the refusal names the owner; log:\n{}",
        tail(&log, 40)
    );
    assert!(!log.contains("catch-up of"), "log:\n{}", tail(&log, 40));
    let m = fs::symlink_metadata(&index).expect("the agent's index");
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    agent.stop();
}

// A directory renamed while the agent runs is entered under its new name once the rename
// landed on both remotes: the next start finds nothing renamed or deleted (the parent
// directories whose mtime moved are pushed again, which is cheap).
#[test]
fn a_rename_made_while_running_is_entered_and_not_found_again_at_the_next_start() {
    let s = Setup::new("warm-live-mv");
    seed(&s);
    let mut agent = start_level(&s);
    fs::rename(s.p("d"), s.p("e")).expect("mv d e");
    fs::remove_file(s.p("a/y.txt")).expect("rm a/y.txt");
    s.wait(&mut agent, "the live rename and delete");
    agent.stop();
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    let log = agent.log();
    assert!(
        log.contains("catch-up of") && log.contains(" 0 deleted, 0 renamed"),
        "log:\n{}",
        tail(&log, 40)
    );
    s.wait(&mut agent, "the start after");
}
