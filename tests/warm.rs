//! Warm restart: what changed while no agent ran reaches the remotes at a start without
//! `-r`, found by a stat walk against the index of what the remotes were sent; a torn
//! index is refused with its cause in the log. Real daemons, real inotify, a real
//! `sersync2` process stopped by SIGTERM or SIGKILL.

use std::fs;
use std::path::PathBuf;

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
    // Written at the next checkpoint with the root's entries (the seed's alone make
    // more than 1000 bytes; an index without the root is 45).
    wait_until("the index is written with the root", DEADLINE, || {
        fs::metadata(index_of(s)).is_ok_and(|m| m.len() > 1000)
    });
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
    let s = setup!();
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    change_offline(&s, true);
    let mut agent = s.agent(&[]);
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
    let mut agent = s.agent(&[]);
    let log = agent.log();
    assert!(
        log.contains("0 new or changed, 0 deleted, 0 renamed"),
        "log:\n{}",
        tail(&log, 40)
    );
    s.wait(&mut agent, "the second start");
}

// A file rewritten while stopped with its size and mtime restored, then a start with
// `-r`: the full sync's quick check skips it (same size and mtime on the remotes), so
// before, the remotes kept the old content for good while `--wait-synced` said synced.
// The level index tells it apart (its ctime), and it goes beside the full sync.
#[test]
fn a_file_rewritten_with_its_mtime_restored_reaches_the_remotes_at_a_start_with_r() {
    let s = setup!();
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    change_offline(&s, true);
    let mut agent = s.agent(&["-r"]);
    s.wait(&mut agent, "the -r start");
    for remote in s.remotes() {
        assert_eq!(
            fs::read_to_string(remote.join("same.txt")).ok().as_deref(),
            Some("9876543210"),
            "{}; log:\n{}",
            remote.display(),
            tail(&agent.log(), 40)
        );
    }
    assert!(
        agent
            .log()
            .contains("changed with their size and mtime as the index has them"),
        "log:\n{}",
        tail(&agent.log(), 40)
    );
    agent.stop();
}

// The same rewrite found by a start with `-r` and queued beside its full sync, that
// start killed before its full sync landed on every remote (one refuses pushes): the
// next start does not trust the index (a full sync), and still pushes the file beside
// it, by the entry the index kept while rebuilding. (Before, the index was written
// without the root's entry while rebuilding: the full sync's quick check skipped the
// file and the refusing remote kept the old content.)
#[test]
fn a_rewrite_with_its_mtime_restored_reaches_the_remotes_after_a_kill_before_the_rebuild_landed() {
    rewrite_after_a_kill_before_the_rebuild_landed(&[]);
}

// The same, the start after the kill with `-r`: it did not read what the index not
// trusted still holds, so the full syncs' quick check skipped the file (found while
// making full syncs after such an index compare nanoseconds, which a restored mtime
// does not change).
#[test]
fn a_rewrite_with_its_mtime_restored_reaches_the_remotes_at_r_after_a_kill_before_the_rebuild_landed(
) {
    rewrite_after_a_kill_before_the_rebuild_landed(&["-r"]);
}

fn rewrite_after_a_kill_before_the_rebuild_landed(second: &[&str]) {
    let s = setup!();
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    change_offline(&s, true);
    s.b.set_read_only(true);
    let mut agent = s.agent(&["-r"]);
    wait_until(
        "the rewrite on the remote that takes pushes",
        DEADLINE,
        || fs::read_to_string(s.a.data_dir().join("same.txt")).is_ok_and(|c| c == "9876543210"),
    );
    let (status, _) = agent.stop_with(libc::SIGKILL);
    assert!(!status.success());
    s.b.set_read_only(false);
    let mut agent = s.agent(second);
    s.wait(&mut agent, "the start after the kill");
    for remote in s.remotes() {
        assert_eq!(
            fs::read_to_string(remote.join("same.txt")).ok().as_deref(),
            Some("9876543210"),
            "{}; log:\n{}",
            remote.display(),
            tail(&agent.log(), 40)
        );
    }
    let log = agent.log();
    assert!(
        (log.contains("warm restart off") || second == ["-r"])
            && log.contains("changed with their size and mtime as the index has them"),
        "log:\n{}",
        tail(&log, 40)
    );
    agent.stop();
}

// A power cut after a start found a file rewritten with its size and mtime as the index
// has them, before its push landed (both remotes refused pushes): SIGKILL, and the index
// torn (its checksum fails). The next start cannot read the index (a full sync, whose
// quick check skips the file); the fail log's `#blind` line, written when the start
// queued the file, names it, so it goes beside the full sync. (Before, the fail log owed
// it as a path, which the full sync covered: the remotes kept the old content.)
#[test]
fn a_rewrite_with_its_mtime_restored_found_before_a_power_cut_reaches_the_remotes_despite_a_torn_index(
) {
    let s = setup!();
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    change_offline(&s, true);
    s.a.set_read_only(true);
    s.b.set_read_only(true);
    let mut agent = s.agent(&[]);
    let fail_log = s.dir.join("fail.sh");
    wait_until("a push of the catch-up failed", DEADLINE, || {
        agent.log().contains("written to the fail log")
            && fs::read_to_string(&fail_log).is_ok_and(|t| t.contains("same.txt"))
    });
    let (status, _) = agent.stop_with(libc::SIGKILL);
    assert!(!status.success());
    let bytes = fs::read(index_of(&s)).expect("read the index");
    fs::write(index_of(&s), &bytes[..bytes.len() / 2]).expect("truncate the index");
    s.a.set_read_only(false);
    s.b.set_read_only(false);
    let mut agent = s.agent(&[]);
    s.wait(&mut agent, "the start after the power cut");
    for remote in s.remotes() {
        assert_eq!(
            fs::read_to_string(remote.join("same.txt")).ok().as_deref(),
            Some("9876543210"),
            "{}; log:\n{}",
            remote.display(),
            tail(&agent.log(), 40)
        );
    }
    let log = agent.log();
    assert!(
        log.contains("checksum mismatch")
            && log.contains("changed with their size and mtime as before"),
        "log:\n{}",
        tail(&log, 40)
    );
    // The remotes may be level by the full sync before the file's own push (beside it)
    // ran: the barrier waits for that push too.
    let out = wait_synced(&s.dir, 120);
    assert!(out.status.success(), "{}", text(&out));
    agent.stop();
    // Landed everywhere: the fail log keeps it no more.
    assert!(
        !fs::read_to_string(&fail_log).is_ok_and(|t| t.contains("same.txt")),
        "{}",
        fs::read_to_string(&fail_log).unwrap_or_default()
    );
}

/// A burst of `n` small files below `dir`.
fn burst(s: &Setup, dir: &str, n: usize) {
    for i in 0..n {
        s.write(format!("{dir}/b{i:04}.txt"), format!("burst {i}"));
    }
}

fn assert_no_full_sync(agent: &Agent) {
    let log = agent.log();
    assert!(
        log.contains("catch-up of") && !log.contains("full sync of"),
        "a catch-up, no full sync; log:\n{}",
        tail(&log, 40)
    );
}

// SIGKILL while a burst is being pushed: what was pushed after the index's last
// checkpoint is named in its journal (appended and fsynced before each push), so a
// file pushed then and deleted while no agent ran is deleted on the remotes, and the
// start needs no full sync. (Before the journal: "warm restart off", a full sync.)
#[test]
fn after_sigkill_mid_burst_changes_made_while_stopped_reach_the_remotes_without_a_full_sync() {
    let s = setup!();
    seed(&s);
    let mut agent = start_level(&s);
    s.write("live.txt", "made while running");
    burst(&s, "early", 50);
    s.wait(&mut agent, "the live change");
    // Killed mid-burst: some of it pushed, some not, some in flight.
    burst(&s, "burst", 300);
    let (status, _) = agent.stop_with(libc::SIGKILL);
    assert!(!status.success());
    change_offline(&s, true);
    fs::remove_file(s.p("live.txt")).expect("rm live.txt");
    fs::remove_dir_all(s.p("early")).expect("rm -r early");
    for i in (0..300).step_by(3) {
        fs::remove_file(s.p(format!("burst/b{i:04}.txt"))).expect("rm a burst file");
    }
    let mut agent = s.agent(&[]);
    s.wait(&mut agent, "the catch-up after SIGKILL");
    assert_no_full_sync(&agent);
    agent.stop();
    // And from there on as after any stop.
    s.write("n/later.txt", "later");
    let mut agent = s.agent(&[]);
    s.wait(&mut agent, "the catch-up after that");
    assert_no_full_sync(&agent);
}

/// Is a temporary file of the index or of its journal in `dir` (a checkpoint being
/// written)?
fn checkpoint_temp_in(dir: &std::path::Path) -> bool {
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(".fail.sh.index.") && n.ends_with(".tmp")
        })
    })
}

// SIGKILL in the middle of a checkpoint: the agent is stopped (SIGSTOP) while a
// temporary file of the index or its journal is there, then killed. The file it was
// writing is left half-made; the index and journal on disk still go together, and the
// next start catches up without a full sync.
#[test]
fn a_kill_in_the_middle_of_a_checkpoint_leaves_a_start_that_catches_up() {
    let s = setup!();
    seed(&s);
    // An index big enough that its write takes a while.
    for d in 0..20 {
        for f in 0..150 {
            s.write(format!("big/d{d:02}/f{f:03}"), "x");
        }
    }
    let mut agent = start_level(&s);
    let mut caught = false;
    for round in 0..20 {
        s.write(format!("round/r{round}.txt"), "a change to checkpoint");
        // Spin (no sleep) until a checkpoint's temporary file shows, then stop the
        // agent at once; caught when the file is still there once it is stopped.
        let start = std::time::Instant::now();
        let mut seen = false;
        while start.elapsed() < std::time::Duration::from_secs(12) {
            if checkpoint_temp_in(s.dir.path()) {
                agent.signal(libc::SIGSTOP);
                seen = true;
                break;
            }
        }
        if seen && checkpoint_temp_in(s.dir.path()) {
            caught = true;
            break;
        }
        if seen {
            agent.signal(libc::SIGCONT);
        }
    }
    if !caught {
        eprintln!("note: no checkpoint was caught mid-write; killed between two instead");
    }
    let (status, _) = agent.stop_with(libc::SIGKILL);
    assert!(!status.success());
    change_offline(&s, false);
    fs::remove_dir_all(s.p("round")).expect("rm -r round");
    let mut agent = s.agent(&[]);
    s.wait(&mut agent, "the catch-up after a kill mid-checkpoint");
    assert_no_full_sync(&agent);
}

/// A tmpfs mounted for a test, unmounted (lazily) when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

/// Bytes free on the filesystem of `p`.
fn free_bytes(p: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    st.f_bavail as u64 * st.f_frsize as u64
}

// The state directory fills up: the checkpoint cannot write the index. The agent says
// so, keeps syncing (its journal, small, is still appended), and a start after a kill
// catches up from the last index it wrote and the journal, without a full sync.
#[test]
fn a_full_disk_while_checkpointing_is_logged_the_agent_goes_on_and_the_next_start_catches_up() {
    let s = setup!();
    let state = s.dir.mkdir_p("state");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"])
        .arg(&state)
        .output();
    let _guard = match mounted {
        Ok(o) if o.status.success() => Mounted(state.clone()),
        Ok(o) => {
            eprintln!(
                "SKIP a_full_disk_while_checkpointing: mount is not permitted here ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIP a_full_disk_while_checkpointing: {e}");
            return;
        }
    };
    let conf = Conf::daemons(&s.src, &[&s.a, &s.b], &state.join("fail.sh"));
    let index = state.join("fail.sh.index");
    seed(&s);
    for f in 0..2000 {
        s.write(format!("many/f{f:04}"), "x");
    }
    let mut agent = s.agent_with(&conf, &["-r"]);
    s.wait(&mut agent, "the -r start");
    wait_until("the index is rebuilt", DEADLINE, || {
        agent.log().contains("rebuilt:")
    });
    wait_until("the rebuilt index is written", DEADLINE, || {
        fs::metadata(&index).is_ok_and(|m| m.len() > 2000 * 50)
    });
    // Fill the disk but for 32 KiB: the journal's appends fit, a new index (more than
    // 100 KB) does not.
    let filler = state.join("filler");
    let keep = 32 * 1024;
    let fill = free_bytes(&state).saturating_sub(keep);
    fs::write(&filler, vec![0u8; fill as usize]).expect("fill the disk");
    s.write("pushed.txt", "pushed while the disk is full");
    s.wait(&mut agent, "the push while the disk is full");
    wait_until("the checkpoint's failure is logged", DEADLINE, || {
        agent.log().contains("cannot write the index")
    });
    let log = agent.log();
    assert!(
        log.contains("No space left on device"),
        "the cause is named; log:\n{}",
        tail(&log, 40)
    );
    // It goes on syncing.
    s.write("after.txt", "after the failed checkpoint");
    s.wait(&mut agent, "syncing after the failed checkpoint");
    let (status, _) = agent.stop_with(libc::SIGKILL);
    assert!(!status.success());
    fs::remove_file(&filler).expect("free the disk");
    fs::remove_file(s.p("pushed.txt")).expect("rm pushed.txt");
    change_offline(&s, false);
    let mut agent = s.agent_with(&conf, &[]);
    s.wait(&mut agent, "the catch-up after the full disk");
    assert_no_full_sync(&agent);
    agent.stop();
}

// A power cut in the middle of writing the index cannot leave it torn (it is replaced
// by a rename), but a disk that lost a write can: SIGKILL, then the index cut short.
// The start cannot trust it: it says why in one line and runs a full sync, which
// rebuilds the index; the next start catches up from it again.
#[test]
fn a_torn_index_after_a_kill_falls_back_to_a_full_sync_and_says_why() {
    let s = setup!();
    seed(&s);
    let mut agent = start_level(&s);
    s.write("live.txt", "made while running");
    s.wait(&mut agent, "the live change");
    let (status, _) = agent.stop_with(libc::SIGKILL);
    assert!(!status.success());
    let bytes = fs::read(index_of(&s)).expect("read the index");
    fs::write(index_of(&s), &bytes[..bytes.len() / 2]).expect("truncate the index");
    change_offline(&s, false);
    fs::remove_file(s.p("live.txt")).expect("rm live.txt");
    let mut agent = s.agent(&[]);
    let log = agent.log();
    assert!(
        log.contains("warm restart off for") && log.contains("checksum mismatch"),
        "log:\n{}",
        tail(&log, 40)
    );
    assert!(!log.contains("catch-up of"));
    s.wait(&mut agent, "the full sync after a torn index");
    wait_until("the index is rebuilt", DEADLINE, || {
        agent.log().contains("rebuilt:")
    });
    assert!(agent.log().contains("full sync of"));
    agent.stop();
    s.write("n/later.txt", "later");
    let mut agent = s.agent(&[]);
    s.wait(&mut agent, "the catch-up from the rebuilt index");
    assert_no_full_sync(&agent);
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
    let s = setup!();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let shared = s.dir.mkdir_p("shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let conf = Conf::daemons(&s.src, &[&s.a, &s.b], &shared.join("fail.sh"));
    let index = shared.join("fail.sh.index");
    seed(&s);
    let mut agent = s.agent_with(&conf, &["-r"]);
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
    let mut agent = s.agent_with(&conf, &[]);
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
    let s = setup!();
    seed(&s);
    let mut agent = start_level(&s);
    fs::rename(s.p("d"), s.p("e")).expect("mv d e");
    fs::remove_file(s.p("a/y.txt")).expect("rm a/y.txt");
    s.wait(&mut agent, "the live rename and delete");
    agent.stop();
    let mut agent = s.agent(&[]);
    let log = agent.log();
    assert!(
        log.contains("catch-up of") && log.contains(" 0 deleted, 0 renamed"),
        "log:\n{}",
        tail(&log, 40)
    );
    s.wait(&mut agent, "the start after");
}

// The config's remotes change between runs: a remote added gets a full sync alone, the
// others catch up from the index; a remote removed leaves the index good for the rest.
#[test]
fn a_remote_added_to_the_config_gets_a_full_sync_alone_and_the_others_catch_up() {
    let dir = test_dir!();
    let src = dir.mkdir_p("src");
    let mut all = RsyncDaemon::start_many(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]).into_iter();
    let (Some(a), Some(b), Some(c)) = (all.next(), all.next(), all.next()) else {
        unreachable!("one daemon per address")
    };
    let s = Setup { dir, src, a, b };
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    change_offline(&s, false);
    let three = Conf::daemons(&s.src, &[&s.a, &s.b, &c], &s.dir.join("fail.sh"));
    let remotes = vec![s.a.data_dir(), s.b.data_dir(), c.data_dir()];
    let mut agent = s.agent_with(&three, &[]);
    wait_mirrored(
        &mut agent,
        &s.src,
        &remotes,
        "three remotes",
        DEADLINE,
        &|| s.logs(),
    );
    let label = format!("{}::{}", c.ip(), c.module());
    // The new remote's tree can be level before the agent has seen its rsync end.
    wait_until("the new remote's full sync is booked", DEADLINE, || {
        agent.log().contains(&format!("to {label} done"))
    });
    let log = agent.log();
    assert!(
        log.contains("catch-up of")
            && log.contains(&format!("made without {label}: full sync of it alone"))
            && log.contains(&format!("to {label} done"))
            && !log.contains(&format!("to {}::mod done", s.a.ip()))
            && !log.contains(&format!("to {}::mod done", s.b.ip())),
        "a full sync of the new remote only; log:\n{}",
        tail(&log, 40)
    );
    wait_until("the index is rebuilt", DEADLINE, || {
        agent.log().contains("rebuilt:")
    });
    agent.stop();
    // With the new remote in it, the next start catches up on all three.
    s.write("n/later.txt", "later");
    let mut agent = s.agent_with(&three, &[]);
    wait_mirrored(
        &mut agent,
        &s.src,
        &remotes,
        "the next start",
        DEADLINE,
        &|| s.logs(),
    );
    assert_no_full_sync(&agent);
    agent.stop();
    // A remote removed: the rest catch up, no full sync.
    s.write("n/last.txt", "last");
    fs::remove_file(s.p("a/x.txt")).expect("rm a/x.txt");
    let two = Conf::daemons(&s.src, &[&s.a, &c], &s.dir.join("fail.sh"));
    let mut agent = s.agent_with(&two, &[]);
    wait_mirrored(
        &mut agent,
        &s.src,
        &[s.a.data_dir(), c.data_dir()],
        "a remote removed",
        DEADLINE,
        &|| s.logs(),
    );
    assert_no_full_sync(&agent);
    agent.stop();
}

/// `sersync2 -n 4 -o sersync.xml --once` (with `conf` written there) in the test's
/// directory, to completion: its output, and its log (stderr).
fn once(s: &Setup, conf: &Conf, extra: &[&str]) -> (std::process::Output, String) {
    fs::write(s.dir.join("sersync.xml"), conf.render()).expect("write sersync.xml");
    let mut args = vec!["-n", "4", "-o", "sersync.xml", "--once"];
    args.extend(extra);
    let out = std::process::Command::new(sersync_bin())
        .args(&args)
        .current_dir(s.dir.path())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sersync2 --once");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, log)
}

fn assert_level(s: &Setup) {
    for remote in s.remotes() {
        trees_equal(&s.src, &remote).unwrap_or_else(|e| panic!("{}: {e}", remote.display()));
    }
}

// --once with an index: what changed while no agent ran (new, changed, deleted, a
// renamed directory, a file rewritten with its mtime restored) is on both remotes when
// it exits 0, without a full sync; a second --once finds nothing to do.
#[test]
fn once_brings_the_remotes_level_from_the_index_and_exits_0() {
    let s = Setup::new("warm-once");
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    change_offline(&s, true);
    let (out, log) = once(&s, &s.conf(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        log.contains("new or changed, 1 deleted, 1 renamed") && !log.contains("full sync of"),
        "a catch-up, no full sync; log:\n{}",
        tail(&log, 40)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("every remote is level"));
    assert_level(&s);
    let (out, log) = once(&s, &s.conf(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        log.contains("0 new or changed, 0 deleted, 0 renamed"),
        "the index holds what the first --once pushed; log:\n{}",
        tail(&log, 40)
    );
}

// --once without an index: a full sync of every remote, and the index made from it, so
// the next --once catches up from it.
#[test]
fn once_without_an_index_runs_a_full_sync_and_makes_the_index() {
    let s = Setup::new("warm-once-none");
    seed(&s);
    let (out, log) = once(&s, &s.conf(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        log.contains("no warm-restart index for") && log.contains("full sync of"),
        "log:\n{}",
        tail(&log, 40)
    );
    assert_level(&s);
    assert!(index_of(&s).exists(), "the index is written at the end");
    change_offline(&s, false);
    let (out, log) = once(&s, &s.conf(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        log.contains("catch-up of") && log.contains("1 renamed") && !log.contains("full sync of"),
        "log:\n{}",
        tail(&log, 40)
    );
    assert_level(&s);
}

// --once with a remote down: exit 1, naming what is still owed; the fail log holds it,
// and the next --once, with the remote back, brings it level and exits 0.
#[test]
fn once_with_a_remote_down_exits_1_and_the_fail_log_holds_what_is_owed() {
    let mut s = Setup::new("warm-once-down");
    seed(&s);
    let mut agent = start_level(&s);
    agent.stop();
    change_offline(&s, false);
    s.b.stop();
    let (out, log) = once(&s, &s.conf(), &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\nlog:\n{}",
        text(&out),
        tail(&log, 40)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("still owed to {}::{}", s.b.ip(), s.b.module())),
        "{}",
        text(&out)
    );
    let fail_log = fs::read_to_string(s.dir.join("fail.sh")).expect("the fail log");
    assert!(fail_log.contains(&b_dest(&s)), "b is owed:\n{fail_log}");
    trees_equal(&s.src, s.a.data_dir()).expect("a is level");
    s.b.restart();
    let (out, log) = once(&s, &s.conf(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nlog:\n{}",
        text(&out),
        tail(&log, 40)
    );
    assert_level(&s);
    assert!(
        !s.dir.join("fail.sh").exists(),
        "nothing owed; the fail log:\n{}\nlog:\n{}",
        fs::read_to_string(s.dir.join("fail.sh")).unwrap_or_default(),
        tail(&log, 40)
    );
}

/// `count` releases in `<dir>/build/r<n>/app`: forty directories, each with files named
/// after their release (a file of an older release left on a remote shows as one).
fn releases(s: &Setup, count: usize) {
    for n in 0..count {
        for d in 0..40 {
            for f in 0..5 {
                s.dir.write(
                    format!("build/r{n}/app/d{d}/r{n}-{f}.txt"),
                    format!("release {n} file {f}"),
                );
            }
        }
    }
}

/// `rm -rf src/app/d<i> && cp -a build/r<n>/app/d<i> src/app/d<i>` for every directory,
/// for each release in `from..to`, one after the other, in a shell of its own (the
/// caller waits for it).
fn deploy(s: &Setup, from: usize, to: usize) -> std::process::Child {
    let script: Vec<String> = (from..to)
        .map(|n| {
            format!(
                "for d in $(ls build/r{n}/app); do rm -rf src/app/$d && cp -a build/r{n}/app/$d src/app/$d; done"
            )
        })
        .collect();
    std::process::Command::new("sh")
        .arg("-ec")
        .arg(format!("mkdir -p src/app\n{}", script.join("\n")))
        .current_dir(s.dir.join("."))
        .spawn()
        .expect("spawn the deploy")
}

// SIGTERM while a deploy replaces directories (`rm -rf d && cp -a build/d d`, several
// releases in a row) is being pushed, the deploy going on after the stop, then a start
// without -r: every remote ends equal to the source, no file of an older release left
// on one.
//
// Ignored in the test command: it fails in about half of the whole integration runs
// here (2 of 3 clean-clone runs this stop after two fixes of the index), a remote
// keeping files of a release that a listing push sent while the deploy raced it; the
// cause is not found yet (issue 22; docs/operations.md, "Warm restart"). Run it with
// `cargo test --test integration -- --ignored warm::a_sigterm`, or as a soak with
// `SERSYNC2_TEST_DEPLOY_ROUNDS=40`.
#[test]
#[ignore = "open defect: a remote may keep a release's files after a SIGTERM mid-deploy (issue 22)"]
fn a_sigterm_in_the_middle_of_a_deploy_and_a_start_without_r_leave_every_remote_equal() {
    let s = Setup::new("warm-deploy");
    // More rounds for a local soak of this race: `SERSYNC2_TEST_DEPLOY_ROUNDS=40`.
    let rounds = std::env::var("SERSYNC2_TEST_DEPLOY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    releases(&s, 1 + 3 * rounds);
    let mut first = deploy(&s, 0, 1);
    assert!(first.wait().expect("wait for the deploy").success());
    let mut agent = start_level(&s);
    for round in 0..rounds {
        let from = 1 + 3 * round;
        let mut running = deploy(&s, from, from + 3);
        // Stopped once the pushes of the deploy have begun to land: a file of any of
        // its releases on a remote (a slow machine may see a release replaced before
        // its push, so waiting for the first one alone could wait for ever).
        let landed: Vec<_> = (from..from + 3)
            .map(|n| s.a.data_dir().join(format!("app/d0/r{n}-0.txt")))
            .collect();
        wait_until("the deploy begins to reach a remote", DEADLINE, || {
            landed.iter().any(|p| p.exists())
        });
        agent.stop();
        // What the stopped agent did, for a failure below: the index and its journal
        // are its work.
        let stopped = agent.log();
        assert!(running.wait().expect("wait for the deploy").success());
        agent = Agent::start(&s.dir, &s.conf(), &[]);
        let log = agent.log();
        assert!(
            log.contains("catch-up of"),
            "round {round}: a catch-up from the index; log:\n{}",
            tail(&log, 40)
        );
        wait_mirrored(
            &mut agent,
            &s.src,
            &s.remotes(),
            &format!("round {round}: the restart after the deploy"),
            DEADLINE,
            &|| {
                // Without its event lines (debug logging): its pushes and its stop.
                let pushes: Vec<&str> = (stopped.lines())
                    .filter(|l| !l.contains("] event "))
                    .collect();
                format!(
                    "--- the agent stopped before (tail, no event lines) ---\n{}\n{}",
                    tail(&pushes.join("\n"), 150),
                    s.logs()
                )
            },
        );
    }
    agent.stop();
}

// Found by an outside run: an index another user owns was refused with an INFO line
// under --once (and with no line at all under -r), while the same problem with the fail
// log is an ERROR. Now it is an ERROR naming the file, its owner and what to do.
#[test]
fn an_index_another_user_owns_is_refused_with_an_error_under_once_and_r() {
    use std::os::unix::fs::PermissionsExt;
    let Some(attacker) = User::create("x") else {
        return;
    };
    let s = setup!();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let shared = s.dir.mkdir_p("shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let conf = Conf::daemons(&s.src, &[&s.a, &s.b], &shared.join("fail.sh"));
    let index = shared.join("fail.sh.index");
    seed(&s);
    let plant = || {
        let _ = fs::remove_file(&index);
        attacker.run(
            "sh",
            &[
                "-c".as_ref(),
                "echo planted > \"$1\"".as_ref(),
                "sh".as_ref(),
                index.as_os_str(),
            ],
        );
    };
    let loud = |log: &str| -> bool {
        log.lines().any(|l| {
            (l.contains("ERROR") || l.contains("WARN"))
                && l.contains(&index.display().to_string())
                && l.contains(&attacker.name)
                && l.contains("remove it")
        })
    };
    plant();
    let (out, log) = once(&s, &conf, &[]);
    assert!(out.status.success(), "--once: {}", tail(&log, 40));
    assert!(
        loud(&log),
        "--once: an error line with the cause; log:\n{}",
        tail(&log, 40)
    );
    plant();
    let mut agent = s.agent_with(&conf, &["-r"]);
    let log = agent.log();
    assert!(
        loud(&log),
        "-r: an error line with the cause; log:\n{}",
        tail(&log, 40)
    );
    agent.stop();
}

/// Sets the mtime of `path` to `secs` and `nanos` after the epoch.
fn set_mtime(path: &std::path::Path, secs: u64, nanos: u32) {
    let at = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    (fs::File::options().write(true).open(path))
        .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(at)))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
}

// Outside run: after a SIGKILL soon after a first `-r` start (before its rebuild was
// written), the next start's full sync left a file rewritten at its size within the
// second of the copy a remote had: rsync's quick check compares whole seconds, so the
// remote kept the old bytes and `--verify` said level. A start that does not trust the
// index (here: killed, its journal lost) runs its full syncs with nanosecond mtimes.
// The remote's copy is made by hand as that push would have left it: same size, same
// second, other nanoseconds, other bytes; the index holds the source's file as it is,
// so nothing but the full sync can find it.
#[test]
fn a_full_sync_after_an_index_not_trusted_sends_a_copy_that_differs_in_nanoseconds_only() {
    let s = setup!();
    seed(&s);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 100;
    set_mtime(&s.p("same.txt"), secs, 123_456_789);
    let mut agent = start_level(&s);
    let (status, _) = agent.stop_with(libc::SIGKILL);
    assert!(!status.success());
    let journal = s.dir.join("fail.sh.index.journal");
    fs::remove_file(&journal).expect("rm the journal");
    let remote = s.a.data_dir().join("same.txt");
    fs::write(&remote, "9876543210").expect("write the remote's copy");
    set_mtime(&remote, secs, 987_654_321);
    let mut agent = s.agent(&[]);
    wait_until("the start says the index is not trusted", DEADLINE, || {
        agent.log().contains("warm restart off")
    });
    s.wait(&mut agent, "the full sync after an index not trusted");
    agent.stop();
    // Level since: the next full sync (-r, from a level index) is rsync's usual one.
    let mut agent = s.agent(&["-r"]);
    s.wait(&mut agent, "-r from the rebuilt index");
    assert!(
        !agent.log().contains("warm restart off"),
        "trusted after the rebuild: {}",
        tail(&agent.log(), 20)
    );
    agent.stop();
}
