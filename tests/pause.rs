//! `sersync2 --pause` and `--resume`, of every remote or of one (`--remote LABEL`), asked
//! over the running instance's control socket: while paused, changes are read and wait
//! (status, /metrics, sd_notify and --wait-synced say so) and nothing reaches the paused
//! remote; resumed, it gets them; a reload keeps the pause, a stop keeps what waits in the
//! fail log and the restart (not paused) delivers it; no agent and another user are
//! refused. Real agents, real rsync daemons.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::*;

fn label(d: &RsyncDaemon) -> String {
    format!("{}::{}", d.ip(), d.module())
}

/// `sersync2 -o sersync.xml ARGS` in the test's directory.
fn ask(s: &Setup, args: &[&str]) -> Output {
    let mut all = vec!["-o", "sersync.xml"];
    all.extend_from_slice(args);
    sersync2(&s.dir, &all)
}

/// The running instance's status document (`--status --json`).
fn status(s: &Setup) -> Value {
    let out = ask(s, &["--status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The status of the remote named `label`.
fn remote<'a>(st: &'a Value, label: &str) -> &'a Value {
    st["remotes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["remote"] == label))
        .unwrap_or_else(|| panic!("no remote {label} in {st}"))
}

/// Waits until the status says `label` is paused with at least `n` entries waiting.
fn wait_paused_waiting(s: &Setup, agent: &Agent, label: &str, n: u64) -> Value {
    let start = std::time::Instant::now();
    loop {
        let st = status(s);
        let r = remote(&st, label);
        if r["paused"] == true && r["state"] == "paused" && r["queued"].as_u64() >= Some(n) {
            return st;
        }
        if start.elapsed() >= DEADLINE {
            panic!(
                "timed out: {label} paused with {n} waiting; status {st}\nlog:\n{}",
                tail(&agent.log(), 40)
            );
        }
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

fn drain(sock: &UnixDatagram, into: &mut Vec<String>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = sock.recv(&mut buf) {
        into.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

// Operators asked for a way to hold sync during maintenance (lsyncd #432, clsync's
// standby file): everything waits, merged, and is said to wait; resumed, it arrives.
#[test]
fn pause_holds_every_push_and_resume_delivers() {
    let s = setup!();
    let port = free_port("127.0.0.1");
    let mut conf = s.conf();
    conf.status_port = Some(port);
    let notify = s.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind the notify socket");
    sock.set_nonblocking(true).expect("non-blocking");
    fs::write(s.dir.join("sersync.xml"), conf.render()).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-o", "sersync.xml"])
        .env("NOTIFY_SOCKET", &notify);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    s.write("before/a.txt", "a\n");
    s.wait(&mut agent, "before the pause");

    let out = ask(&s, &["--pause"]);
    assert!(out.status.success(), "--pause: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for d in [&s.a, &s.b] {
        assert!(
            stdout.contains(&format!("{} ({}): paused", label(d), s.src.display())),
            "{}",
            text(&out)
        );
    }
    assert!(agent.log().contains("paused on the control socket"));
    // It returns once nothing is pushed to them: a push running at the pause (the
    // write's second event, pushed again) had ended. Before, it could still run and
    // read the edit below (seen once in a full test run).
    let st = status(&s);
    for d in [&s.a, &s.b] {
        assert_eq!(
            remote(&st, &label(d))["longest_push_seconds"].as_f64(),
            Some(0.0),
            "a push still runs after --pause: {st}"
        );
    }

    s.write("held/one.txt", "1\n");
    s.write("held/two.txt", "2\n");
    fs::write(s.p("before/a.txt"), "a, changed while paused\n").expect("edit");
    // Read and merged: both remotes have them waiting. Once queued while paused nothing
    // is handed out, so the remotes lack them now and stay so until the resume.
    let st = wait_paused_waiting(&s, &agent, &label(&s.a), 3);
    assert_eq!(remote(&st, &label(&s.b))["paused"], true, "{st}");
    for r in s.remotes() {
        assert!(!r.join("held/one.txt").exists(), "{} got it", r.display());
        assert_eq!(
            fs::read_to_string(r.join("before/a.txt")).expect("a.txt"),
            "a\n",
            "{}",
            r.display()
        );
    }
    // Said in --status, /metrics and sd_notify.
    let out = ask(&s, &["--status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a pause is not a failure: {}",
        text(&out)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(report.matches("PAUSED: ").count(), 2, "{report}");
    assert!(
        report.contains("waiting, nothing is pushed to it until sersync2 --resume"),
        "{report}"
    );
    let metrics = http_get(port, "/metrics");
    assert!(
        metrics.contains(&format!(
            "sersync2_remote_paused{{remote=\"{}\",root=\"{}\"}} 1",
            label(&s.a),
            s.src.display()
        )),
        "{metrics}"
    );
    let mut got = Vec::new();
    wait_until("an sd_notify STATUS saying paused", DEADLINE, || {
        drain(&sock, &mut got);
        got.iter().any(|m| {
            m.contains("STATUS=watching")
                && m.contains(&format!("; PAUSED: {} (", label(&s.a)))
                && m.contains(&format!(", {} (", label(&s.b)))
                && m.ends_with(" waiting)")
        })
    });
    // A barrier does not say synced while they wait; it says why.
    let out = wait_synced(&s.dir, 2);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("paused: nothing is pushed to it until sersync2 --resume"),
        "{}",
        text(&out)
    );

    let out = ask(&s, &["--resume"]);
    assert!(out.status.success(), "--resume: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{} (", label(&s.b))),
        "{}",
        text(&out)
    );
    s.wait(&mut agent, "after the resume");
    let st = status(&s);
    assert_eq!(remote(&st, &label(&s.a))["paused"], false, "{st}");
    let out = wait_synced(&s.dir, 60);
    assert!(out.status.success(), "{}", text(&out));
    agent.stop();
}

// Taking one mirror out for maintenance must not hold back the others; the pause is an
// operator's act and survives a reload.
#[test]
fn a_remote_paused_alone_waits_while_the_other_flows_and_a_reload_keeps_it() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    let (a, b) = (label(&s.a), label(&s.b));

    let out = ask(&s, &["--pause", "--remote", "nowhere::x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nowhere::x") && err.contains(&a) && err.contains(&b),
        "the labels that exist: {}",
        text(&out)
    );

    let out = ask(&s, &["--pause", "--remote", &b]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{b} (")) && stdout.contains("): paused"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains(&format!("{a} (")) && stdout.contains("): pushing"));

    s.write("m/one.txt", "1\n");
    // a gets it; by then b has it waiting and lacks it.
    wait_trees_equal(&s.src, s.a.data_dir(), DEADLINE);
    wait_paused_waiting(&s, &agent, &b, 1);
    assert!(!s.b.data_dir().join("m/one.txt").exists());
    assert_eq!(remote(&status(&s), &a)["paused"], false);

    // A reload keeps b paused (the new pipeline is paused before it starts).
    agent.signal(libc::SIGHUP);
    wait_until("the reload keeps the pause", DEADLINE, || {
        agent.log().contains("reloaded: still paused") && agent.log().matches("live:").count() >= 2
    });
    s.write("m/two.txt", "2\n");
    wait_trees_equal(&s.src, s.a.data_dir(), DEADLINE);
    wait_paused_waiting(&s, &agent, &b, 2);
    for f in ["m/one.txt", "m/two.txt"] {
        assert!(!s.b.data_dir().join(f).exists(), "b got {f}");
    }
    // Only b's barrier waits.
    let out = sersync2(
        &s.dir,
        &[
            "-o",
            "sersync.xml",
            "--wait-synced",
            "--remote",
            &a,
            "--timeout",
            "60",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = ask(&s, &["--resume", "--remote", &b]);
    assert!(out.status.success(), "{}", text(&out));
    s.wait(&mut agent, "b resumed");
    agent.stop();
}

// A stop while paused owes what waits (as any stop does) and says the next start is not
// paused; that start delivers it.
#[test]
fn a_stop_while_paused_keeps_what_waits_in_the_fail_log_and_the_restart_delivers() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    let out = ask(&s, &["--pause"]);
    assert!(out.status.success(), "{}", text(&out));
    s.write("kept/x.txt", "x\n");
    s.write("kept/y.txt", "y\n");
    wait_paused_waiting(&s, &agent, &label(&s.b), 2);
    agent.stop();
    let log = agent.log();
    assert!(
        log.contains("stopping while paused")
            && log.contains("a pause does not survive a restart: the next start pushes it"),
        "{log}"
    );
    let fail_log = fs::read_to_string(s.fail_log()).expect("the fail log holds what waited");
    for f in ["kept/x.txt", "kept/y.txt"] {
        assert_eq!(
            fail_log.matches(f).count(),
            2,
            "{f} owed to both: {fail_log}"
        );
    }
    for r in s.remotes() {
        assert!(!r.join("kept/x.txt").exists(), "{} got it", r.display());
    }

    let mut agent = s.agent(&[]);
    s.wait(&mut agent, "the restart delivers what waited");
    wait_until("nothing owed after the restart", DEADLINE, || {
        !s.fail_log().exists()
    });
    agent.stop();
}

#[test]
fn pause_with_no_agent_running_says_so() {
    let s = setup!();
    fs::write(s.dir.join("sersync.xml"), s.conf().render()).expect("write sersync.xml");
    for flag in ["--pause", "--resume"] {
        let out = ask(&s, &[flag]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{flag}: no sersync2 runs")),
            "{}",
            text(&out)
        );
    }
    let out = ask(&s, &["--remote", "h::m"]);
    assert_eq!(out.status.code(), Some(2), "--remote alone: {}", text(&out));
}

/// A client for another user: connect, send the line, print the answer; exit 3 with the
/// errno when the connect itself is refused.
const PY_CLIENT: &str = "\
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print('connect errno', e.errno)
    sys.exit(3)
s.sendall(sys.argv[2].encode() + b'\\n')
data = b''
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(errors='replace'))
";

// Another local user must not be able to stop the mirroring.
#[test]
fn pause_by_another_user_is_refused() {
    let Some(user) = User::create("pse") else {
        return;
    };
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        eprintln!("skipped: no /usr/bin/python3 for the other user's client");
        return;
    }
    let s = setup!();
    let mut agent = s.agent(&[]);
    let socket = control_socket(&s.dir.join("sersync.xml"));
    let sock_arg = socket.display().to_string();
    let client = |line: &str| {
        user.output(
            "/usr/bin/python3",
            &[
                "-c".as_ref(),
                PY_CLIENT.as_ref(),
                sock_arg.as_ref(),
                line.as_ref(),
            ],
        )
    };
    // Refused by the socket's mode.
    let out = client("pause");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // With the mode opened up, the agent itself refuses the caller.
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).expect("chmod socket");
    for line in [
        "pause",
        &format!("pause {{\"remotes\":[\"{}\"]}}", label(&s.b)),
    ] {
        let out = client(line);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("refused"),
            "{}",
            text(&out)
        );
    }
    wait_until("the agent logs the refused caller", DEADLINE, || {
        agent
            .log()
            .contains(&format!("refused a connection from uid {}", user.uid))
    });
    assert!(!agent.log().contains("paused on the control socket"));
    let st = status(&s);
    for d in [&s.a, &s.b] {
        assert_eq!(remote(&st, &label(d))["paused"], false, "{st}");
    }
    s.write("after/x.txt", "x\n");
    s.wait(&mut agent, "still pushing after the refused pause");
    agent.stop();
}
