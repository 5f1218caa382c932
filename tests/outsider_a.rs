//! Regressions for what an outside tester found: the status endpoint squatted, a
//! `--status` client that trusted whatever answered, a fail log reported as written when
//! it was not, rsync children left behind at the exit, and a shell command plugin that
//! nothing warned about.

use std::fs;
use std::process::{Command, Stdio};

use std::time::Duration;

use crate::support::*;

/// `sersync2 ARGS -o CONF` run to its end: (exit code, stdout, stderr).
fn run(dir: &Dir, conf: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sersync_bin())
        .args(args)
        .arg("-o")
        .arg(conf)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// The shipped example's `/bin/sh` command plugin, switched on, ran every changed file as
// a root shell script, and `-t` did not even mention plugins.
#[test]
fn shipped_shell_command_plugin_switched_on_is_shown_and_warned_about_by_t() {
    let dir = Dir::new("outsider-plugin");
    let watch = dir.mkdir_p("tongbu");
    let example =
        fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("confxml.xml"))
            .expect("read confxml.xml");
    let text = example
        .replace("/opt/tongbu", &watch.display().to_string())
        .replace(
            "<plugin start=\"false\" name=\"command\"/>",
            "<plugin start=\"true\" name=\"command\"/>",
        );
    assert_ne!(
        text,
        example.replace("/opt/tongbu", &watch.display().to_string())
    );
    let conf = dir.write("conf.xml", text);
    let (code, out, err) = run(&dir, &conf, &["-t"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("plugin: command: /bin/sh <changed file>"),
        "{out}"
    );
    assert!(
        out.contains("runs every changed file as a script as user"),
        "{out}"
    );
    assert!(
        out.contains("<filter start=\"true\"> with an <include>"),
        "{out}"
    );
    // Switched off (as shipped): said so, no warning.
    let conf = dir.write(
        "off.xml",
        example.replace("/opt/tongbu", &watch.display().to_string()),
    );
    let (code, out, err) = run(&dir, &conf, &["-t"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("plugin: off"), "{out}");
    assert!(!out.contains("as a script"), "{out}");
}

// A local user who bound `<host port>` first made the agent exit 1 at start (a restart
// loop under systemd), and `--status` then printed whatever that user answered.
#[test]
fn squatted_status_port_neither_stops_sync_nor_fools_the_status_client() {
    use std::io::{Read, Write};
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind squatter");
    let port = squatter.local_addr().expect("addr").port();
    let setup = Setup::new("outsider-squat");
    let mut conf = setup.conf();
    conf.status_port = Some(port);
    let mut agent = Agent::start(&setup.dir, &conf, &[]);
    let log = agent.log();
    assert!(
        log.contains(&format!("cannot listen for status on 127.0.0.1:{port}"))
            && log.contains("in use"),
        "{log}"
    );
    setup.write("a.txt", "synced without the endpoint");
    setup.wait(&mut agent, "a change while the status port is squatted");

    // `--status` asks the instance over its control socket, so the squatter (who would
    // answer with its own JSON: another pid, terminal escapes) is never asked.
    let conf_path = setup.dir.join("sersync.xml");
    let (code, out, err) = run(&setup.dir, &conf_path, &["--status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("(pid {})", agent.pid())), "{out}");
    squatter
        .set_nonblocking(true)
        .expect("non-blocking squatter");
    assert!(
        squatter.accept().is_err(),
        "--status connected to the squatted port"
    );
    drop(squatter);

    // The agent binds the freed port by itself; /status then answers from it.
    wait_until(
        "the agent's endpoint answers on the freed port",
        Duration::from_secs(30),
        || {
            let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.write_all(b"GET /status HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = c.read_to_string(&mut body);
            body.contains(&format!("\"pid\": {}", agent.pid()))
        },
    );
    assert!(agent.log().contains("(bound now)"), "{}", agent.log());
    agent.stop();
}

// A fail log whose directory had gone was logged as "written to the fail log", and the
// stop said "1 entry owed, kept in the fail log" and exited 0 while no file existed.
#[test]
fn unwritable_fail_log_is_reported_as_not_written_retried_and_fails_the_stop() {
    let mut setup = Setup::new("outsider-faillog");
    let fl_dir = setup.dir.mkdir_p("fl");
    let fail_log = fl_dir.join("fail.sh");
    let mut conf = setup.conf();
    conf.fail_log = fail_log.clone();
    setup.a.stop();
    setup.b.stop();
    let mut agent = Agent::start(&setup.dir, &conf, &[]);
    let gone = setup.dir.join("fl.gone");
    fs::rename(&fl_dir, &gone).expect("move the fail log's directory away");

    setup.write("a.txt", "owed");
    wait_until(
        "the failed push is reported as not written",
        DEADLINE,
        || {
            agent.assert_running();
            agent.log().contains("could NOT be written to the fail log")
        },
    );
    assert!(
        !agent.log().contains("failed, written to the fail log"),
        "{}",
        agent.log()
    );

    // The directory is back: the fail log is written again without another change.
    fs::rename(&gone, &fl_dir).expect("put the directory back");
    wait_until(
        "the fail log is written again",
        Duration::from_secs(30),
        || fail_log.exists() && agent.log().contains("is written again"),
    );
    assert!(
        fs::read_to_string(&fail_log)
            .expect("read the fail log")
            .contains("a.txt"),
        "the entry kept in memory is in the file"
    );

    // Gone again at the stop: the stop says what was not kept and exits 1.
    fs::rename(&fl_dir, &gone).expect("move it away again");
    setup.write("b.txt", "owed too");
    wait_until("the second failure is reported", DEADLINE, || {
        agent.log().matches("could NOT be written").count() >= 2
            || agent.log().contains("cannot write the fail log")
    });
    let (status, _) = agent.stop_with(libc::SIGTERM);
    let log = agent.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("could NOT be kept"), "{log}");
    assert!(log.contains(&fail_log.display().to_string()), "{log}");
    assert!(!log.contains("kept in the fail log"), "{log}");
}

// With a remote that accepts and never answers, SIGTERM exited after the grace but left
// the stuck rsync processes running as orphans (PPID 1) until their own timeout.
#[test]
fn rsync_children_stuck_on_a_silent_remote_are_not_left_behind_at_exit() {
    use crate::support::{Conf, Transport};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let s = Setup::new("outsider-orphans");
    // A third loopback address on the daemons' port: it accepts and says nothing.
    let listener = std::net::TcpListener::bind(("127.0.0.3", s.a.port())).expect("bind");
    let done = Arc::new(AtomicBool::new(false));
    let silent = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                held.extend(conn.ok());
            }
        })
    };
    let conf = Conf::new(
        &s.src,
        vec![("127.0.0.3".to_string(), "mod".to_string())],
        Transport::Daemon {
            port: s.a.port(),
            user: s.a.user().to_string(),
            password_file: s.a.password_file(),
        },
        &s.dir.join("fail.sh"),
    );
    let mut agent = Agent::start(&s.dir, &conf, &[]);
    s.write("a.txt", "stuck\n");
    let mut stuck: Vec<libc::pid_t> = Vec::new();
    wait_until("an rsync to the silent remote runs", DEADLINE, || {
        stuck = rsync_children(agent.pid());
        !stuck.is_empty()
    });
    // One wait for the agent's whole 30 s grace.
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit("the agent exits after its grace", Duration::from_secs(45));
    let log = agent.log();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    assert!(log.contains("terminated 1 rsync process"), "{log}");
    wait_until("the stuck rsync is gone", Duration::from_secs(10), || {
        stuck.iter().all(|&pid| !alive(pid))
    });
    done.store(true, Ordering::Relaxed);
    let _ = std::net::TcpStream::connect(("127.0.0.3", s.a.port()));
    let _ = silent.join();
}

/// The rsync children of `pid`, from /proc.
fn rsync_children(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let ppid: libc::pid_t = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid && head.ends_with("(rsync"))
                .then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie waiting for its reaper).
fn alive(pid: libc::pid_t) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}
