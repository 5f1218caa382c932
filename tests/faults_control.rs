//! `--replay` beside a running instance and the control socket it goes through
//! (beside the config's instance lock): the running agent replays at once and the command line reports
//! what is still owed; only the agent's user and root can use the socket; a stale socket
//! is replaced and a planted link is never followed. Real agents, real rsync daemons.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::support::*;

/// How the agent names b in its reports.
fn b_label(s: &Setup) -> String {
    format!("{}::{}", s.b.ip(), s.b.module())
}

/// Stops b, makes one change, and waits until b is owed it in the fail log.
fn owe_b_one_change(s: &mut Setup) -> PathBuf {
    s.b.stop();
    s.write("owed.txt", "owed while b was down\n");
    let fail_log = s.dir.join("fail.sh");
    let dest = b_dest(s);
    wait_until("b is owed the change in the fail log", DEADLINE, || {
        fs::read_to_string(&fail_log).is_ok_and(|t| t.contains(&dest))
    });
    fail_log
}

// The running instance held the lock, so `--replay` was refused outright ("another
// sersync2 already runs this config") and an operator could not bring a remote level on
// demand.
#[test]
fn replay_beside_a_running_instance_asks_it_and_reports() {
    let mut s = setup!();
    let mut agent = s.agent(&[]);
    s.write("before/a.txt", "a\n");
    s.wait(&mut agent, "before the outage");
    let fail_log = owe_b_one_change(&mut s);
    s.b.restart();

    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--replay"]);
    assert!(out.status.success(), "--replay: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("replayed by the running instance")
            && stdout.contains(&agent.pid().to_string()),
        "the running instance replayed: {}",
        text(&out)
    );
    // Level when --replay returns, not some time later.
    for remote in s.remotes() {
        trees_equal(&s.src, &remote).unwrap_or_else(|e| panic!("{}: {e}", remote.display()));
    }
    assert!(!fail_log.exists(), "nothing owed after the replay");
    assert!(agent.log().contains("replay asked on the control socket"));

    // The agent goes on syncing.
    s.write("after/b.txt", "b\n");
    s.wait(&mut agent, "after the replay");
    agent.stop();
}

// Same cause: with b still down there was no way to learn from the command line, while
// the agent ran, what b is owed.
#[test]
fn replay_beside_a_running_instance_exits_1_while_a_remote_is_down() {
    let mut s = setup!();
    let mut agent = s.agent(&[]);
    let fail_log = owe_b_one_change(&mut s);

    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--replay"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("still owed to {}: 1 entry", b_label(&s))),
        "prints what b is owed: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still owed"),
        "{}",
        text(&out)
    );
    assert!(fail_log.exists(), "b's entry stays owed");
    agent.assert_running();

    // Once b is back, the same command brings it level and exits 0.
    s.b.restart();
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--replay"]);
    assert!(out.status.success(), "--replay with b back: {}", text(&out));
    trees_equal(&s.src, s.b.data_dir()).expect("b level after the second replay");
    agent.stop();
}

/// A tiny client: connect, send `replay`, print the answer; exit 3 with the errno when
/// the connect itself is refused.
const PY_CLIENT: &str = "\
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print('connect errno', e.errno)
    sys.exit(3)
s.sendall(b'replay\\n')
data = b''
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(errors='replace'))
";

// A control socket anyone could connect to would let any local user drive the agent;
// the socket must be 0600 and the agent must check who is calling.
#[test]
fn control_socket_refuses_other_users() {
    let Some(user) = User::create("ctl") else {
        return;
    };
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        eprintln!("skipped: no /usr/bin/python3 for the other user's client");
        return;
    }
    let s = setup!();
    // The socket's directory (/run/sersync2, 0755) is one the other user can reach, so
    // that only the socket's own mode and the agent's check stand in the way.
    let run = test_dir!();
    let pid_file = run.join("agent.pid");
    let pid_arg = pid_file.display().to_string();
    let mut agent = s.agent(&["--pid-file", &pid_arg]);
    let socket = control_socket(&s.dir.join("sersync.xml"));
    let meta = fs::symlink_metadata(&socket).expect("the control socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600, "the socket is private");
    let sock_arg = socket.display().to_string();

    // Refused by the file mode.
    let out = user.output(
        "/usr/bin/python3",
        &["-c".as_ref(), PY_CLIENT.as_ref(), sock_arg.as_ref()],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("errno {}", libc::EACCES)),
        "{}",
        text(&out)
    );

    // With the mode opened up, the agent itself refuses the caller.
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).expect("chmod socket");
    let out = user.output(
        "/usr/bin/python3",
        &["-c".as_ref(), PY_CLIENT.as_ref(), sock_arg.as_ref()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("refused"),
        "the agent refuses another user: {}",
        text(&out)
    );
    wait_until("the agent logs the refused caller", DEADLINE, || {
        agent
            .log()
            .contains(&format!("refused a connection from uid {}", user.uid))
    });
    assert!(
        !agent.log().contains("replay asked on the control socket"),
        "nothing was done for the other user"
    );

    // The agent keeps working, and its own user (root) is still served.
    let out = sersync2(
        &s.dir,
        &["-o", "sersync.xml", "--replay", "--pid-file", &pid_arg],
    );
    assert!(out.status.success(), "root is served: {}", text(&out));
    s.write("after/x.txt", "x\n");
    s.wait(&mut agent, "after the refused caller");
    agent.stop();
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

// A socket left by a killed agent made the next start unable to bind, so `--replay`
// beside the new instance could not reach it.
#[test]
fn stale_control_socket_is_replaced_at_start() {
    let s = setup!();
    let run = s.dir.mkdir_p("run");
    let pid_file = run.join("agent.pid");
    fs::write(s.dir.join("sersync.xml"), s.conf().render()).expect("write sersync.xml");
    let socket = control_socket(&s.dir.join("sersync.xml"));
    fs::create_dir_all("/run/sersync2").expect("the lock directory");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("a stale socket"));
    let stale = std::os::unix::net::UnixStream::connect(&socket).expect_err("nobody listens");
    assert_eq!(stale.kind(), std::io::ErrorKind::ConnectionRefused);

    let pid_arg = pid_file.display().to_string();
    let mut agent = s.agent(&["--pid-file", &pid_arg]);
    let meta = fs::symlink_metadata(&socket).expect("the control socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600);

    let out = sersync2(
        &s.dir,
        &["-o", "sersync.xml", "--replay", "--pid-file", &pid_arg],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to replay (running instance"),
        "{}",
        text(&out)
    );
    agent.stop();
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

// Binding or removing through a link planted at the socket's path would let whoever
// planted it create a socket, or delete a file, wherever the link points.
#[test]
fn planted_symlink_at_the_control_socket_path_is_not_followed() {
    let s = Setup::new("ctl-link");
    let run = s.dir.mkdir_p("run");
    let pid_file = run.join("agent.pid");
    fs::write(s.dir.join("sersync.xml"), s.conf().render()).expect("write sersync.xml");
    let socket = control_socket(&s.dir.join("sersync.xml"));
    fs::create_dir_all("/run/sersync2").expect("the lock directory");
    // Whatever happens below, the planted link goes with the test.
    struct Unplant(PathBuf);
    impl Drop for Unplant {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }
    let _unplant = Unplant(socket.clone());
    let elsewhere = s.dir.mkdir_p("elsewhere");
    let dangling = elsewhere.join("created-through-the-link");
    std::os::unix::fs::symlink(&dangling, &socket).expect("plant a link");

    let pid_arg = pid_file.display().to_string();
    let mut agent = Agent::start(&s.dir, &s.conf(), &["--pid-file", &pid_arg]);
    assert!(
        agent.log().contains("control socket") && agent.log().contains("symbolic link"),
        "the agent says why its control socket is off: {}",
        agent.log()
    );
    assert!(!dangling.exists(), "nothing was created through the link");
    assert!(fs::symlink_metadata(&socket)
        .expect("the link is left alone")
        .file_type()
        .is_symlink());

    // --replay does not follow it either, and says what is wrong.
    let out = sersync2(
        &s.dir,
        &["-o", "sersync.xml", "--replay", "--pid-file", &pid_arg],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket"),
        "{}",
        text(&out)
    );

    // Syncing goes on; the link stays after the stop (it is not the agent's).
    s.write("x.txt", "x\n");
    s.wait(&mut agent, "with the control socket off");
    agent.stop();
    assert!(fs::symlink_metadata(&socket).is_ok());
    assert!(!dangling.exists());
}

// Found by an outside test run: `sersync2 --release-deletes -o F | head -1` panicked with
// a backtrace when the pipe closed (the release was applied): println! to a closed
// stdout. Every command that prints ends quietly there, as any Unix tool; the daemon
// itself still ignores SIGPIPE (it runs on).
#[test]
fn client_commands_printing_to_a_closed_pipe_end_quietly() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    let commands: [&[&str]; 7] = [
        &["--status"],
        &["--release-deletes"],
        &["--discard-deletes"],
        &["--pause"],
        &["--resume"],
        &["--replay"],
        &["-t"],
    ];
    let mut runs: Vec<Vec<&str>> = commands
        .iter()
        .map(|c| {
            ["-o", "sersync.xml"]
                .iter()
                .chain(c.iter())
                .copied()
                .collect()
        })
        .collect();
    runs.push(vec!["--help"]);
    for args in runs {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = command(&s.dir)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .output()
            .expect("run sersync2");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "{args:?} with a closed stdout: {}",
            text(&out)
        );
    }
    agent.assert_running();
    s.write("after.txt", "the daemon runs on\n");
    s.wait(&mut agent, "a change after the commands");
}
