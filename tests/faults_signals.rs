//! Signals and the service manager: SIGHUP (reopen and reload, never a stop), syslog
//! when detached without a log file, and sd_notify (READY, STATUS, RELOADING, STOPPING,
//! WATCHDOG). Real daemons, real inotify, a real `sersync2` process; the supervisor and
//! the log daemon are datagram sockets the tests bind.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Like `Agent::start`, with extra environment variables.
fn start_with_env(dir: &Dir, conf: &Conf, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    let conf_path = dir.join("sersync.xml");
    fs::write(&conf_path, conf.render()).expect("write sersync.xml");
    let mut cmd = command(dir);
    cmd.args(["-n", "4", "-o"])
        .arg(&conf_path)
        .args(extra)
        .envs(env.iter().copied());
    let mut agent = Agent::spawn(cmd, dir.join("agent.err"));
    agent.wait_live();
    agent
}

/// A datagram socket the test listens on (the supervisor's or the log daemon's).
fn listen(path: &Path) -> UnixDatagram {
    let sock = UnixDatagram::bind(path).expect("bind a datagram socket");
    sock.set_nonblocking(true).expect("non-blocking");
    sock
}

/// Appends every datagram waiting on `sock` to `into`.
fn drain(sock: &UnixDatagram, into: &mut Vec<String>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = sock.recv(&mut buf) {
        into.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

/// Writes the test's config file again (the agent reads it at SIGHUP).
fn rewrite(dir: &Dir, conf: &Conf) {
    let path = dir.join("sersync.xml");
    let tmp = dir.join("sersync.xml.new");
    fs::write(&tmp, conf.render()).expect("write the new config");
    fs::rename(&tmp, &path).expect("replace the config");
}

/// Waits until the agent has logged `needle` at least `n` times.
fn wait_logged(agent: &mut Agent, needle: &str, n: usize) {
    let what = format!("the agent logs `{needle}` {n} time(s)");
    let start = std::time::Instant::now();
    loop {
        if agent.log().matches(needle).count() >= n {
            return;
        }
        if start.elapsed() >= DEADLINE {
            panic!("timed out: {what}; log:\n{}", tail(&agent.log(), 60));
        }
        agent.assert_running();
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

// SIGHUP killed the agent (status 129) unless --log-file was given, and both the unit's
// ExecReload and the logrotate snippet send it.
#[test]
fn sighup_without_a_log_file_does_not_kill_the_agent() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    agent.signal(libc::SIGHUP);
    wait_logged(&mut agent, "live:", 2);
    agent.signal(libc::SIGHUP);
    agent.signal(libc::SIGHUP);
    s.write("after-hup/a.txt", "after the HUP\n");
    s.wait(&mut agent, "a change after SIGHUP arrives");
    agent.stop();
}

// SIGHUP did not reload the config: a remote added to the file was never pushed to
// until a restart.
#[test]
fn sighup_reloads_a_changed_config() {
    let s = setup!();
    let fail_log = s.dir.join("fail.sh");
    let port = free_port("127.0.0.1");
    let mut only_a = Conf::daemons(&s.src, &[&s.a], &fail_log);
    only_a.status_port = Some(port);
    let mut agent = s.agent_with(&only_a, &["--batch", "1"]);
    // Work still queued or running at the HUP must come through the reload.
    for i in 0..300 {
        s.write(
            format!("before/d{}/f{i}.txt", i % 10),
            format!("before {i}\n"),
        );
    }
    let uptime = || {
        let text = http_get(port, "/status");
        let (_, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(body).ok()?["uptime_seconds"].as_u64()
    };
    let mut before = 0;
    wait_until("an uptime of 2 s before the HUP", DEADLINE, || {
        before = uptime().unwrap_or(0);
        before >= 2
    });
    let mut both = s.conf();
    both.status_port = Some(port);
    rewrite(&s.dir, &both);
    agent.signal(libc::SIGHUP);
    wait_logged(&mut agent, "live:", 2);
    // The process did not restart: its uptime goes on (it started from 0 again).
    let mut after = None;
    wait_until("status answers after the reload", DEADLINE, || {
        after = uptime();
        after.is_some()
    });
    assert!(
        after >= Some(before),
        "uptime {before} s before the HUP, {after:?} after"
    );
    let log = agent.log();
    assert!(
        log.contains("2 remote(s)"),
        "the new config is live:\n{log}"
    );
    assert!(
        log.contains("old pipeline stopped"),
        "the old pipeline was stopped first:\n{log}"
    );
    s.write("after/y.txt", "after the reload\n");
    wait_mirrored(
        &mut agent,
        &s.src,
        &[s.a.data_dir()],
        "remote a has everything, the burst before the HUP included",
        DEADLINE,
        &|| s.logs(),
    );
    let b = s.b.data_dir();
    wait_until("the added remote b gets the change", DEADLINE, || {
        fs::read(b.join("after/y.txt")).is_ok_and(|c| c == b"after the reload\n")
    });
    // The status endpoint was bound again, on the same port, for the new config.
    let status = http_get(port, "/status");
    assert!(
        status.contains("127.0.0.1::mod") && status.contains("127.0.0.2::mod"),
        "{status}"
    );
    agent.stop();
}

// A config broken while the agent ran: SIGHUP must keep the running config, say why
// (file:line) and go on syncing.
#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    let mut broken = s.conf();
    broken.timeout_start = "perhaps".into();
    rewrite(&s.dir, &broken);
    agent.signal(libc::SIGHUP);
    wait_logged(&mut agent, "the config loaded before stays in use", 1);
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("stays in use"))
        .unwrap_or_default();
    assert!(
        line.contains("ERROR") && line.contains("sersync.xml:") && line.contains("perhaps"),
        "the error names file, line and value: {line}"
    );
    assert_eq!(log.matches("live:").count(), 1, "nothing restarted:\n{log}");
    s.write("still/syncing.txt", "x\n");
    s.wait(&mut agent, "sync goes on after a refused reload");
    // Fixed: the next SIGHUP takes it.
    rewrite(&s.dir, &s.conf());
    agent.signal(libc::SIGHUP);
    wait_logged(&mut agent, "live:", 2);
    agent.stop();
}

// Type=notify needs READY=1 only once the watches are set; STOPPING=1, STATUS= and the
// watchdog keep systemd informed.
#[test]
fn sd_notify_ready_status_stopping_are_sent() {
    let mut s = setup!();
    let sock_path = s.dir.join("notify.sock");
    let sock = listen(&sock_path);
    let socket_env = sock_path.display().to_string();
    let env = [
        ("NOTIFY_SOCKET", socket_env.as_str()),
        ("WATCHDOG_USEC", "200000"),
    ];
    let mut agent = start_with_env(&s.dir, &s.conf(), &[], &env);
    let mut got = Vec::new();
    wait_until("READY=1 arrives", DEADLINE, || {
        drain(&sock, &mut got);
        got.iter().any(|m| m.lines().any(|l| l == "READY=1"))
    });
    let ready = got
        .iter()
        .find(|m| m.lines().any(|l| l == "READY=1"))
        .cloned()
        .unwrap_or_default();
    assert!(
        ready.contains("STATUS=watching 1 directories, 2 remotes; 0 owed"),
        "READY carries the status: {ready:?}"
    );
    // Ready means watching: a change made right now (no -r) arrives.
    s.write("ready/now.txt", "made at READY\n");
    s.wait(&mut agent, "a change made at READY=1 arrives");
    wait_until("WATCHDOG=1 arrives repeatedly", DEADLINE, || {
        drain(&sock, &mut got);
        got.iter().filter(|m| m.as_str() == "WATCHDOG=1").count() >= 5
    });
    // The status follows what is owed.
    s.b.stop();
    s.write("owed/x.txt", "owed to b\n");
    wait_until("a STATUS= line with something owed", DEADLINE, || {
        drain(&sock, &mut got);
        got.iter()
            .any(|m| m.starts_with("STATUS=watching") && !m.ends_with("; 0 owed"))
    });
    agent.signal(libc::SIGHUP);
    wait_until("RELOADING=1 then READY=1", DEADLINE, || {
        drain(&sock, &mut got);
        let reloading = got.iter().position(|m| m.starts_with("RELOADING=1\n"));
        reloading.is_some_and(|r| got[r..].iter().any(|m| m.starts_with("READY=1")))
    });
    agent.stop();
    drain(&sock, &mut got);
    assert!(
        got.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "STOPPING=1 at SIGTERM: {got:?}"
    );
}

// With -d and no --log-file, every log line after the detach was thrown away.
#[test]
fn detached_without_log_file_logs_to_syslog() {
    let mut s = setup!();
    fs::write(s.dir.join("sersync.xml"), s.conf().render()).expect("config");
    let sock_path = s.dir.join("log.sock");
    let sock = listen(&sock_path);
    let pid_file = s.dir.join("agent.pid");
    let out = Command::new(sersync_bin())
        .args(["-d", "-o", "sersync.xml", "--pid-file"])
        .arg(&pid_file)
        .current_dir(s.dir.path())
        .env("RUST_LOG", "info")
        .env("SERSYNC2_SYSLOG_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2 -d");
    assert!(
        out.status.success(),
        "-d returns 0 once ready: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = read_pid(&pid_file);
    let daemon = Detached(pid);
    let ident = format!(" sersync2[{pid}]: ");
    let mut got = Vec::new();
    wait_until(
        "the `live:` line reaches syslog as daemon.info",
        DEADLINE,
        || {
            drain(&sock, &mut got);
            got.iter()
                .any(|m| m.starts_with("<30>") && m.contains(&ident) && m.contains("live:"))
        },
    );
    s.b.stop();
    s.write("fails/for-b.txt", "b is down\n");
    wait_until(
        "a failed push reaches syslog as daemon.err",
        DEADLINE,
        || {
            drain(&sock, &mut got);
            got.iter()
                .any(|m| m.starts_with("<27>") && m.contains(&ident) && m.contains("failed"))
        },
    );
    drop(daemon);
    wait_until("the daemon exits", Duration::from_secs(40), || {
        !pid_file.exists()
    });
    drain(&sock, &mut got);
    assert!(
        got.iter().any(|m| m.contains("stopped; pushed per remote")),
        "the stop is logged too: {got:?}"
    );
}

// `-m` has no reload, but SIGHUP (logrotate, `systemctl reload`) killed it all the same.
#[test]
fn sighup_in_module_mode_does_not_kill_it() {
    let s = setup!();
    let plugin = "  <plugin name=\"command\">\n    \
                  <param prefix=\"/bin/sh\" suffix=\"\" ignoreError=\"true\"/>\n    \
                  <filter start=\"false\"/>\n  </plugin>\n</head>\n";
    let xml = s.conf().render().replace("</head>\n", plugin);
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, xml).expect("config");
    let mut cmd = command(&s.dir);
    cmd.args(["-m", "command", "-o"]).arg(&conf_path);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    wait_logged(&mut agent, "running the plugin", 1);
    agent.signal(libc::SIGHUP);
    // The plugin runs each changed file with /bin/sh: this one leaves a mark.
    let mark = s.dir.join("plugin-ran");
    s.write(
        "hook.sh",
        format!("touch '{}'\n", mark.display()).into_bytes(),
    );
    wait_until("the plugin runs after the SIGHUP", DEADLINE, || {
        agent.assert_running();
        mark.exists()
    });
    agent.stop();
}

// Found by an outside attack run: changes made before a SIGHUP (a storm of rewrites and
// `rm -rf app && cp -a build app`, all finished before the signal) were missing on the
// remotes after the reload, for good, and `--wait-synced` said synced. Two causes: a
// listing (`app/s2/`, the files made in it merged into it) lost its `/` when the fail log
// was read back, so the replay pushed the directory alone; and a push still running at
// the stop that then succeeded paid the fail-log entry of a newer change of the same
// path that was waiting behind it.
fn changes_made_before(signal: libc::c_int) {
    let s = Setup::new("sig-drain");
    let conf = s.conf();
    let mut agent = Agent::start(&s.dir, &conf, &[]);
    let tree = |root: &str, tag: &str| {
        for i in 0..10 {
            for j in 0..40 {
                s.dir
                    .write(format!("{root}/s{i}/f{j}"), format!("{tag} {i} {j}\n"));
            }
        }
    };
    tree("src/app", "v1");
    tree("build", "v2");
    s.wait(&mut agent, "app v1");
    let src = s.src.clone();
    let storm = std::thread::spawn(move || {
        for n in 0..1500 {
            fs::write(src.join(format!("site-s{}", n % 300)), format!("{n}\n")).expect("write");
        }
    });
    replace_by_copy(&s.dir.join("build"), &s.p("app"));
    storm.join().expect("storm");
    // Every change is made; the signal comes now.
    if signal == libc::SIGHUP {
        agent.signal(libc::SIGHUP);
        wait_logged(&mut agent, "live:", 2);
    } else {
        agent.stop();
        // No -r: only the fail log brings what was left.
        agent = Agent::start(&s.dir, &conf, &[]);
    }
    let out = wait_synced(&s.dir, 120);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for r in s.remotes() {
        trees_equal(&s.src, &r).unwrap_or_else(|d| {
            panic!(
                "--wait-synced said synced, but {}: {d}\n{}",
                r.display(),
                agent.log()
            )
        });
    }
    agent.stop();
}

#[test]
fn changes_made_before_a_reload_all_arrive() {
    changes_made_before(libc::SIGHUP);
}

#[test]
fn changes_made_before_a_stop_all_arrive_after_a_restart() {
    changes_made_before(libc::SIGTERM);
}
