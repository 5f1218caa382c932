//! Attacks on the agent, made as the attacker would: a fail log planted before the agent
//! starts, and a process limit that makes every fork fail while changes arrive. Real
//! agent, real rsync daemons, real cgroups.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;

fn dest(d: &RsyncDaemon) -> String {
    format!("{}@{}::{}", d.user(), d.ip(), d.module())
}

/// A fail log as an attacker writes it: an entry for a remote the config does not name
/// whose `-e` runs a command, and an entry for a configured remote whose
/// `--rsync-path` and `-e` run others.
fn planted(s: &Setup, known_dest: &str, markers: &[PathBuf; 3]) -> String {
    let [m1, m2, m3] = markers.each_ref().map(|m| m.display().to_string());
    format!(
        "#errno 5\ncd '{dir}' && rsync '-e' 'sh -c \"touch {m1}\"' './planted.txt' 'x:/y'\n\n\
         #errno 5\ncd '{src}' && rsync '-artuz' '--rsync-path=touch {m2}' '-e' 'sh -c \"touch {m3}\"' '-R' './known.txt' '{known_dest}'\n\n",
        dir = s.dir.path().display(),
        src = s.src.display(),
    )
}

fn plant(path: &Path, script: &str) {
    write_with_mode(path, script.as_bytes(), 0o600);
}

fn assert_no_marker(markers: &[PathBuf; 3], when: &str) {
    for m in markers {
        assert!(!m.exists(), "{when}: {} was created", m.display());
    }
}

// A fail log planted at the default /tmp path had its own rsync options (`-e`) run as
// root at start-up, on every timed replay and by --replay.
#[test]
fn planted_fail_log_command_is_never_run() {
    let s = Setup::new("planted");
    let markers = [
        s.dir.join("pwned-unknown-e"),
        s.dir.join("pwned-rsync-path"),
        s.dir.join("pwned-known-e"),
    ];
    s.dir.write("planted.txt", "the unknown entry's path\n");
    s.write("known.txt", "known\n");
    let conf = s.conf();
    fs::write(s.dir.join("sersync.xml"), conf.render()).expect("write sersync.xml");
    let fail_log = s.dir.join("fail.sh");

    // --replay: the known entry is pushed with the config's options, the unknown one is
    // listed and kept, nothing planted runs.
    plant(&fail_log, &planted(&s, &dest(&s.a), &markers));
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--replay"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "unknown entry left: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("x:/y"),
        "--replay names the unknown remote: {}",
        text(&out)
    );
    assert_no_marker(&markers, "--replay");
    assert_eq!(
        fs::read(s.a.data_dir().join("known.txt")).ok().as_deref(),
        Some(&b"known\n"[..]),
        "the known entry's path reached its remote: {}",
        text(&out)
    );
    let kept = fs::read_to_string(&fail_log).expect("the fail log stays");
    assert!(
        kept.contains("'./planted.txt' 'x:/y'")
            && !kept.contains("touch")
            && !kept.contains("'-e'"),
        "the unknown entry is kept without its options:\n{kept}"
    );

    // The agent at start-up: the same, for the other remote.
    plant(&fail_log, &planted(&s, &dest(&s.b), &markers));
    let mut agent = Agent::start(&s.dir, &conf, &[]);
    wait_until("the known entry reaches b", DEADLINE, || {
        agent.assert_running();
        s.b.data_dir().join("known.txt").exists()
    });
    wait_until("the known entry leaves the fail log", DEADLINE, || {
        !fs::read_to_string(&fail_log)
            .unwrap_or_default()
            .contains(&dest(&s.b))
    });
    let kept = fs::read_to_string(&fail_log).expect("the fail log stays");
    assert!(kept.contains("'./planted.txt' 'x:/y'"), "{kept}");
    let log = agent.log();
    assert!(
        log.contains("x:/y") && log.contains("--drop-unknown"),
        "a warning names the unknown remote:\n{log}"
    );
    agent.stop();
    assert_no_marker(&markers, "agent start-up and replay");
    assert!(fs::read_to_string(&fail_log).is_ok_and(|t| t.contains("x:/y")));

    // Only the operator's word drops it.
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--replay", "--drop-unknown"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!fail_log.exists(), "nothing left after --drop-unknown");
    assert_no_marker(&markers, "--replay --drop-unknown");
}

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
    let s = Setup::new("pids-limit");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
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
