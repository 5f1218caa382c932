//! Know your mirrors: replication lag per remote in `/status`, `/metrics` and `--status`,
//! and `--wait-synced`, the exact barrier a deploy script runs before it switches traffic.
//! Real agents, real rsync daemons, real inotify.

use std::time::Duration;

use crate::support::*;

/// A wait that covers the issue's "within a few seconds" on a loaded machine.
const LAG_DEADLINE: Duration = Duration::from_secs(30);

/// The value of one metric line, by its name and labels.
fn metric(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

fn label(d: &RsyncDaemon) -> String {
    format!("{}::{}", d.ip(), d.module())
}

// Broke: a deploy script had no way to know when the mirrors had its files; it slept
// and hoped, and switched traffic to servers still missing part of the release.
#[test]
fn wait_synced_returns_once_5000_files_are_on_every_remote() {
    let s = setup!();
    let mut conf = s.conf();
    conf.debug = false; // 5,000 events a round: keep the log small
    let mut agent = s.agent_with(&conf, &[]);
    for round in 0..3 {
        for i in 0..5000 {
            s.write(
                format!("r{round}/d{}/f{i}.txt", i % 50),
                format!("round {round} file {i}\n"),
            );
        }
        let out = wait_synced(&s.dir, 170);
        // Checked the moment it returns: no polling here.
        let snapshot = tree_snapshot(&s.src);
        for remote in s.remotes() {
            snapshots_equal(&snapshot, &tree_snapshot(&remote)).unwrap_or_else(|e| {
                panic!(
                    "round {round}: --wait-synced returned ({}) but {} differs: {e}\n{}",
                    text(&out),
                    remote.display(),
                    tail(&agent.log(), 40)
                )
            });
        }
        assert!(
            out.status.success(),
            "round {round}: {}\n{}",
            text(&out),
            tail(&agent.log(), 40)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("synced"),
            "{}",
            text(&out)
        );
    }
    // The cookies were never pushed.
    for remote in s.remotes() {
        let names: Vec<String> = std::fs::read_dir(&remote)
            .expect("read the remote")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(".sersync2-cookie")),
            "{names:?}"
        );
    }
    agent.assert_running();
    agent.stop();
}

// Broke: with a mirror down, the barrier must not pass (or hang): it gives up at its
// timeout with exit 1 and says which remote is behind.
#[test]
fn wait_synced_times_out_while_a_remote_is_down() {
    let mut s = setup!();
    let mut agent = s.agent(&[]);
    s.write("before.txt", "before\n");
    s.wait(&mut agent, "before the outage");
    s.b.stop();
    s.write("during.txt", "while b is down\n");
    let out = wait_synced(&s.dir, 3);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("behind: {}", label(&s.b))),
        "names b: {}",
        text(&out)
    );
    assert!(
        !stdout.contains(&format!("behind: {}", label(&s.a))),
        "a is level: {}",
        text(&out)
    );
    // Asking for a alone passes: it has every change.
    let a_only = label(&s.a);
    let out = sersync2(
        &s.dir,
        &[
            "-o",
            "sersync.xml",
            "--wait-synced",
            "--timeout",
            "60",
            "--remote",
            &a_only,
        ],
    );
    assert!(out.status.success(), "a alone: {}", text(&out));
    trees_equal(&s.src, s.a.data_dir()).expect("a has every change");
    // An unknown remote is a usage error.
    let out = sersync2(
        &s.dir,
        &[
            "-o",
            "sersync.xml",
            "--wait-synced",
            "--remote",
            "nowhere::x",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Once b is back, the barrier passes and b holds the change made while it was down.
    s.b.restart();
    let out = wait_synced(&s.dir, 60);
    assert!(out.status.success(), "b back: {}", text(&out));
    trees_equal(&s.src, s.b.data_dir()).expect("b has every change once the barrier passed");
    agent.stop();
}

// Broke: status showed counters only; nobody could tell how stale a mirror was.
#[test]
fn lag_is_reported_while_a_remote_is_down_and_zero_when_level() {
    let mut s = setup!();
    let port = free_port("127.0.0.1");
    let mut conf = s.conf();
    conf.status_port = Some(port);
    let mut agent = s.agent_with(&conf, &[]);
    s.write("level.txt", "level\n");
    s.wait(&mut agent, "level");
    wait_until("lag is 0 on both remotes when level", LAG_DEADLINE, || {
        let st = status_json(port);
        (0..2).all(|i| st["remotes"][i]["lag_seconds"].as_f64() == Some(0.0))
    });

    s.b.stop();
    s.write("during.txt", "while b is down\n");
    let (a, b) = (label(&s.a), label(&s.b));
    let mut last = serde_json::Value::Null;
    wait_until(
        "b's lag grows past 2 s while it is down",
        LAG_DEADLINE,
        || {
            last = status_json(port);
            last["remotes"][1]["lag_seconds"].as_f64().unwrap_or(0.0) >= 2.0
                && last["remotes"][1]["owed"].as_u64().unwrap_or(0) >= 1
        },
    );
    assert_eq!(last["remotes"][1]["remote"], b.as_str(), "{last}");
    assert_eq!(
        last["remotes"][0]["lag_seconds"], 0.0,
        "a stays level: {last}"
    );
    assert!(last["remotes"][1]["pending"].is_u64(), "{last}");
    let metrics = http_get(port, "/metrics");
    assert_metric_names(&metrics);
    let b_lag = metric(
        &metrics,
        &format!(
            "sersync2_remote_lag_seconds{{remote=\"{b}\",root=\"{}\"}}",
            s.src.display()
        ),
    )
    .unwrap_or_else(|| panic!("b's lag metric: {metrics}"));
    assert!(b_lag >= 2.0, "{metrics}");
    let a_lag = metric(
        &metrics,
        &format!(
            "sersync2_remote_lag_seconds{{remote=\"{a}\",root=\"{}\"}}",
            s.src.display()
        ),
    );
    assert_eq!(a_lag, Some(0.0), "{metrics}");
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.contains(&b) && l.contains("lag") && !l.contains("lag     0.0s")),
        "--status shows b's lag: {}",
        text(&out)
    );

    s.b.restart();
    s.wait_within(&mut agent, "b level after its return", LAG_DEADLINE);
    wait_until("lag back to 0 once b is level", LAG_DEADLINE, || {
        last = status_json(port);
        (0..2).all(|i| {
            last["remotes"][i]["lag_seconds"].as_f64() == Some(0.0)
                && last["remotes"][i]["pending"] == 0
                && last["remotes"][i]["owed"] == 0
        })
    });
    let metrics = http_get(port, "/metrics");
    assert_eq!(
        metric(
            &metrics,
            &format!(
                "sersync2_remote_lag_seconds{{remote=\"{b}\",root=\"{}\"}}",
                s.src.display()
            )
        ),
        Some(0.0),
        "{metrics}"
    );
    agent.stop();
}

// `--wait-synced` failed at once ("no running sersync2 answers") while the instance's
// control socket was briefly gone, as during a SIGHUP reload, though its timeout had
// time left. It now asks again for a few seconds: started before the agent, it waits for
// it and returns synced.
#[test]
fn wait_synced_started_while_the_socket_is_away_waits_for_it() {
    let s = setup!();
    s.write("early.txt", "early\n");
    let conf_path = s.dir.join("sersync.xml");
    std::fs::write(&conf_path, s.conf().render()).expect("write sersync.xml");
    let client = command(&s.dir)
        .args(["-o", "sersync.xml", "--wait-synced", "--timeout", "120"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn --wait-synced");
    let mut agent = s.agent(&["-r"]);
    let out = client.wait_with_output().expect("wait for --wait-synced");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait(&mut agent, "level");
    agent.stop();
}

// Found by an outside attack run: a reload that waits for a push to a remote that hangs
// keeps the control socket away for longer than `--wait-synced`'s 10 s of asking again,
// and the client then said no agent ran ("nothing can be synced while none runs") though
// the instance was alive. While the instance holds its lock, the client now asks on
// until its timeout, and says what it saw. (The lock is held here by the test, standing
// for an instance between two pipelines.)
#[test]
fn wait_synced_waits_while_the_instance_holds_its_lock_without_a_socket() {
    use std::os::unix::io::AsRawFd;
    let s = Setup::new("lag-locked");
    std::fs::write(s.dir.join("sersync.xml"), s.conf().render()).expect("write sersync.xml");
    // The config's own instance lock, where the agent would hold it.
    let pid_file = lock_file(&s.dir.join("sersync.xml"));
    std::fs::create_dir_all("/run/sersync2").expect("the lock directory");
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(pid_file.clone());
    let lock = std::fs::File::create(&pid_file).expect("pid file");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).expect("pid");
    // SAFETY: flock on a valid open descriptor of ours.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let started = std::time::Instant::now();
    let out = command(&s.dir)
        .args(["-o", "sersync.xml", "--wait-synced", "--timeout", "13"])
        .output()
        .expect("run --wait-synced");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        took >= Duration::from_secs(12),
        "gave up after {took:?}, before its timeout: {err}"
    );
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(!err.contains("while none runs"), "{err}");
}

/// What `/metrics` serves follows one naming: the `sersync2_` prefix, a counter ends in
/// `_total`, and each name says its unit (what it counts, or seconds); `promtool check
/// metrics` (Prometheus' own linter) finds nothing, where it is installed. Metrics
/// mixed `sersync_` and `sersync2_`, and `pushed_total` counted paths while
/// `failed_total` counted calls.
fn assert_metric_names(response: &str) {
    let metrics = response
        .split_once("\r\n\r\n")
        .map_or(response, |(_, body)| body);
    // The unit words a name may end in (before `_total`), or a 0/1 state.
    const UNITS: &[&str] = &[
        "seconds", "paths", "calls", "entries", "watches", "failing", "paused", "held", "ok",
        "success",
    ];
    let mut kinds = std::collections::HashMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            kinds.insert(name.to_owned(), kind.to_owned());
        }
    }
    assert!(kinds.len() >= 10, "{metrics}");
    for (name, kind) in &kinds {
        assert!(
            name.starts_with("sersync2_"),
            "{name}: one prefix\n{metrics}"
        );
        let base = match kind.as_str() {
            "counter" => name
                .strip_suffix("_total")
                .unwrap_or_else(|| panic!("{name}: a counter ends in _total")),
            "gauge" => {
                assert!(!name.ends_with("_total"), "{name}: a gauge is not a _total");
                name
            }
            other => panic!("{name}: unexpected type {other}"),
        };
        assert!(
            UNITS.iter().any(|u| base.ends_with(&format!("_{u}"))),
            "{name}: the name says its unit (one of {UNITS:?})"
        );
    }
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Err(e) => eprintln!("promtool not run ({e}): the names were checked above only"),
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("promtool's stdin")
                .write_all(metrics.as_bytes())
                .expect("write to promtool");
            let out = child.wait_with_output().expect("promtool");
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && said.trim().is_empty(),
                "promtool check metrics: {said}\n{metrics}"
            );
        }
    }
}
