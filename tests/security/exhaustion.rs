//! Resources taken away while changes arrive: a process limit that makes every fork
//! fail, and a descriptor limit that makes a new directory's listing fail. Real agent,
//! real rsync daemons, real cgroups and rlimits.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::support::*;

/// A pids cgroup (v1 `pids` hierarchy or v2) holding one process, whose limit the test
/// sets and lifts. Dropping it moves the process back and removes the group.
struct PidsLimit {
    dir: PathBuf,
    home: PathBuf,
    pid: libc::pid_t,
}

impl PidsLimit {
    /// Moves `pid` into a new pids cgroup; Err says why that is not possible here.
    fn enter(pid: libc::pid_t) -> Result<PidsLimit, String> {
        let own = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| format!("/proc/{pid}/cgroup: {e}"))?;
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let (mount, rel) = if v1.join("cgroup.procs").exists() {
            let rel = own
                .lines()
                .find_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
                    ctl.split(',').any(|c| c == "pids").then(|| path.to_owned())
                })
                .ok_or("no pids line in /proc/PID/cgroup")?;
            (v1.to_path_buf(), rel)
        } else {
            let v2 = Path::new("/sys/fs/cgroup");
            let controllers = fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "pids") {
                return Err("no pids controller (cgroup v1 or v2)".into());
            }
            // The root may hold processes and still delegate controllers.
            let _ = fs::write(v2.join("cgroup.subtree_control"), "+pids");
            let rel = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .ok_or("no cgroup v2 line in /proc/PID/cgroup")?
                .to_owned();
            (v2.to_path_buf(), rel)
        };
        let home = mount.join(rel.trim_start_matches('/'));
        let dir = mount.join(format!("sersync-test-{}-{pid}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let limit = PidsLimit { dir, home, pid };
        if !limit.dir.join("pids.max").exists() {
            return Err(format!("{} has no pids.max", limit.dir.display()));
        }
        fs::write(limit.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move pid {pid} into {}: {e}", limit.dir.display()))?;
        Ok(limit)
    }

    /// Tasks (threads and processes) in the group now.
    fn current(&self) -> u64 {
        fs::read_to_string(self.dir.join("pids.current"))
            .expect("read pids.current")
            .trim()
            .parse()
            .expect("pids.current is a number")
    }

    fn set_max(&self, max: &str) {
        fs::write(self.dir.join("pids.max"), max).expect("write pids.max");
    }
}

impl Drop for PidsLimit {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("pids.max"), "max");
        let _ = fs::write(self.home.join("cgroup.procs"), self.pid.to_string());
        // A child of the agent may still be exiting: rmdir succeeds once it is gone.
        let start = std::time::Instant::now();
        while fs::remove_dir(&self.dir).is_err() && start.elapsed() < DEADLINE {
            if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
                for p in procs.split_whitespace() {
                    let _ = fs::write(self.home.join("cgroup.procs"), p);
                }
            }
            std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
        }
    }
}

// Under a process limit, rsync's stderr-reader thread could not be spawned: the worker
// panicked and the path stayed "in flight", so later edits never reached that remote.
#[test]
fn push_under_a_process_limit_is_retried_and_lands() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    let limit = match PidsLimit::enter(agent.pid()) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipped push_under_a_process_limit_is_retried_and_lands: {why}");
            return;
        }
    };
    // Nothing can be forked: every push fails with EAGAIN.
    let idle = limit.current();
    limit.set_max(&idle.to_string());
    s.write("one.txt", "one\n");
    s.write("dir/two.txt", "two\n");
    wait_until("the failed spawn is logged and owed", DEADLINE, || {
        agent.assert_running();
        agent.log().contains("os error 11") && s.dir.join("fail.sh").exists()
    });
    // Room for one task: rsync starts, but nothing beside it (the old reader thread).
    limit.set_max(&(idle + 1).to_string());
    s.write("three.txt", "three\n");
    wait_until(
        "three.txt reaches a remote under the limit",
        DEADLINE,
        || {
            agent.assert_running();
            s.remotes().iter().any(|r| r.join("three.txt").exists())
        },
    );
    // The pressure is gone: every edit lands, later edits of the same files included.
    limit.set_max("max");
    agent.assert_running();
    s.write("one.txt", "one, again\n");
    s.write("three.txt", "three, again\n");
    s.write("four.txt", "four\n");
    s.wait(&mut agent, "every edit lands once the limit is lifted");
    drop(limit);
    agent.stop();
}

/// The lowest descriptor number free in process `pid`: with RLIMIT_NOFILE set to it,
/// the process's next open fails with EMFILE.
fn lowest_free_fd(pid: libc::pid_t) -> u64 {
    let used: std::collections::BTreeSet<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the agent's descriptors")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

/// Sets the soft RLIMIT_NOFILE of process `pid`; returns the old limits.
fn set_nofile(pid: libc::pid_t, soft: Option<u64>, restore: Option<libc::rlimit>) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: old is a valid out-pointer; a null new limit only reads.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit read: {}", std::io::Error::last_os_error());
    let new = match (soft, restore) {
        (Some(n), _) => libc::rlimit {
            rlim_cur: n,
            rlim_max: old.rlim_max,
        },
        (None, Some(r)) => r,
        (None, None) => return old,
    };
    // SAFETY: new is a valid limit; the old value is not wanted.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit set: {}", std::io::Error::last_os_error());
    old
}

// Under a low descriptor limit the watcher logged "cannot list .../bulk/d3: Too many
// open files" for a directory moved into the tree and never walked it again: its 21
// files never reached the remotes, with nothing queued, owed or in the fail log.
#[test]
fn a_directory_listed_while_out_of_descriptors_is_walked_again_and_pushed() {
    let s = setup!();
    s.dir.mkdir_p("src/bulk");
    for i in 0..21 {
        s.dir
            .write(format!("stage/d3/f{i}.txt"), format!("file {i}\n"));
    }
    let mut agent = s.agent(&["-r"]);
    s.wait(&mut agent, "the empty bulk directory is mirrored");
    // The start's work done, so that no descriptor it holds is closed after the limit
    // is set (a clean-clone run: the remotes were level, the index not yet rebuilt, and
    // the walk found a descriptor freed by then).
    let start_done = |log: &str| {
        log.contains("rebuilt: ")
            && (log.lines())
                .filter(|l| l.contains("full sync of") && l.contains(" done in "))
                .count()
                >= 2
    };
    wait_until("the start's full syncs and index done", DEADLINE, || {
        agent.assert_running();
        start_done(&agent.log())
    });
    let pid = agent.pid();
    // The agent's next open fails with "Too many open files" from here on.
    let old = set_nofile(pid, Some(lowest_free_fd(pid)), None);
    fs::rename(s.dir.join("stage/d3"), s.p("bulk/d3")).expect("move d3 into the tree");
    let waiting = wait_until_logged(&agent, "walking it again");
    set_nofile(pid, None, Some(old));
    assert!(
        waiting.contains("bulk/d3"),
        "the failed listing names the directory:\n{waiting}"
    );
    s.wait(
        &mut agent,
        "d3's files arrive once descriptors are free again",
    );
    assert!(
        agent.log().contains("walked ") && agent.log().contains("again: pushing its"),
        "the walk again is logged:\n{}",
        tail(&agent.log(), 40)
    );
}

/// Waits for a line containing `needle` in the agent's log; returns the log.
fn wait_until_logged(agent: &Agent, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let log = agent.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no `{needle}` in the agent log within {DEADLINE:?}:\n{}",
            tail(&log, 40)
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}
