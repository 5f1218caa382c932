//! A user who can write in the watched tree (an upload folder, a shared web root) against
//! the agent running as root (SPEC 12): the programs it runs, the records its socket
//! plugin sends, its own files, the `--wait-synced` barrier, names made to slip past an
//! exclude, and the shipped shell command plugin switched on. Each test plays that
//! user: an unprivileged user created for the test plants the names and files. Tests
//! that need root and `useradd` skip with a message elsewhere.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::support::*;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A two-daemon setup whose watched tree `src` belongs to `user` (and whose test
/// directory others can traverse).
fn setup_for(hint: &str, user: &User) -> Setup {
    let s = Setup::new(hint);
    chmod(s.dir.path(), 0o755);
    std::os::unix::fs::chown(&s.src, Some(user.uid), Some(user.gid)).expect("chown src");
    s
}

/// Creates `path` with some content, as `user`.
fn plant(user: &User, path: &Path) {
    user.run(
        "sh",
        &[
            "-c".as_ref(),
            "printf planted > \"$1\"".as_ref(),
            "sh".as_ref(),
            path.as_os_str(),
        ],
    );
}

/// The config `conf` renders, with `head` added to `<head>` and `sersync` to
/// `<sersync>`, written to `<dir>/sersync.xml`; its path.
fn write_config(s: &Setup, conf: &Conf, head: &str, sersync: &str) -> PathBuf {
    let xml = conf
        .render()
        .replace("  </sersync>\n", &format!("{sersync}  </sersync>\n"))
        .replace("</head>\n", &format!("{head}</head>\n"));
    let path = s.dir.join("sersync.xml");
    fs::write(&path, xml).expect("write sersync.xml");
    path
}

/// Starts the agent on `<dir>/sersync.xml` as written, and waits until it runs.
fn start(s: &Setup) -> Agent {
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o", "sersync.xml"]);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    agent
}

// ---------------------------------------------------------------------------
// The socket plugin's records
// ---------------------------------------------------------------------------

/// A TCP receiver that keeps what each connection carried.
fn receiver() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut bytes = Vec::new();
            let _ = conn.read_to_end(&mut bytes);
            keep.lock().expect("lock").push(bytes);
        }
    });
    (port, got)
}

// A file named `x\nINJECTED-RECORD` made the socket plugin's receiver read two records:
// the path up to the newline, then a record the uploader chose.
#[test]
fn a_name_cannot_add_a_record_to_the_socket_plugin() {
    let Some(attacker) = User::create("j") else {
        return;
    };
    let s = setup_for("socket-inject", &attacker);
    let (port, got) = receiver();
    let head = format!(
        "  <plugin name=\"socket\"><localpath watch=\"{}\"><deshost ip=\"127.0.0.1\" \
         port=\"{port}\"/></localpath></plugin>\n",
        esc(&s.src.display().to_string())
    );
    write_config(
        &s,
        &s.conf(),
        &head,
        "    <plugin start=\"true\" name=\"socket\"/>\n",
    );
    let mut agent = start(&s);
    plant(&attacker, &s.src.join("x\nINJECTED-RECORD"));
    plant(&attacker, &s.src.join("plain.txt"));
    wait_until("both files reach the receiver", DEADLINE, || {
        agent.assert_running();
        let got = got.lock().expect("lock");
        let seen = |needle: &[u8]| {
            got.iter()
                .any(|c| c.windows(needle.len()).any(|w| w == needle))
        };
        seen(b"INJECTED-RECORD") && seen(b"plain.txt")
    });
    let got = got.lock().expect("lock").clone();
    for conn in &got {
        let records: Vec<&[u8]> = conn.split(|&b| b == b'\n').collect();
        assert!(
            records.len() == 2 && records[1].is_empty(),
            "one connection carries exactly one record: {:?}",
            String::from_utf8_lossy(conn)
        );
        assert!(
            !records[0].starts_with(b"INJECTED"),
            "a record the uploader chose: {:?}",
            String::from_utf8_lossy(conn)
        );
    }
    let mut want = s.src.as_os_str().as_bytes().to_vec();
    want.extend_from_slice(b"/x\\nINJECTED-RECORD\n");
    assert!(
        got.contains(&want),
        "the name goes escaped: {:?}",
        got.iter()
            .map(|c| String::from_utf8_lossy(c))
            .collect::<Vec<_>>()
    );
    let mut plain = s.src.as_os_str().as_bytes().to_vec();
    plain.extend_from_slice(b"/plain.txt\n");
    assert!(got.contains(&plain), "an ordinary name goes as it is");
    agent.stop();
}

// ---------------------------------------------------------------------------
// --wait-synced's cookies
// ---------------------------------------------------------------------------

// A user who pre-created the barrier's cookie names (`.sersync2-cookie-<pid>-<n>`) made
// every --wait-synced time out ("File exists") while the remotes were level.
#[test]
fn planted_cookie_names_do_not_block_wait_synced() {
    let Some(attacker) = User::create("k") else {
        return;
    };
    let s = setup_for("cookie-squat", &attacker);
    let mut agent = s.agent(&[]);
    s.write("before.txt", "made before the barrier\n");
    let pid = agent.pid();
    // Every name the agent would have used, and more.
    attacker.run(
        "sh",
        &[
            "-c".as_ref(),
            "i=0; while [ $i -lt 300 ]; do : > \"$1/.sersync2-cookie-$2-$i\"; i=$((i+1)); done"
                .as_ref(),
            "sh".as_ref(),
            s.src.as_os_str(),
            OsStr::new(&pid.to_string()),
        ],
    );
    for round in 0..3 {
        let out = wait_synced(&s.dir, 20);
        assert!(
            out.status.success(),
            "round {round}: --wait-synced answers despite the planted names: {}",
            text(&out)
        );
    }
    for remote in s.remotes() {
        assert_eq!(
            fs::read(remote.join("before.txt")).ok().as_deref(),
            Some(&b"made before the barrier\n"[..]),
            "synced means the change is there"
        );
        let planted = fs::read_dir(&remote)
            .expect("list the remote")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().as_bytes().starts_with(b".sersync2-cookie-"))
            .count();
        assert_eq!(planted, 0, "cookie names are never pushed");
    }
    agent.stop();
}

// ---------------------------------------------------------------------------
// Programs the agent runs
// ---------------------------------------------------------------------------

/// A shell script at `path` that creates `marker` when run, with `mode`.
fn hook(path: &Path, marker: &Path, mode: u32) {
    write_with_mode(
        path,
        format!("#!/bin/sh\ntouch '{}'\n", marker.display()).as_bytes(),
        mode,
    );
}

/// As `user`: a shell script at `path` (0755) that touches `marker` when run.
fn plant_hook(user: &User, path: &Path, marker: &Path) {
    user.run(
        "sh",
        &[
            "-c".as_ref(),
            "printf '#!/bin/sh\\ntouch %s\\n' \"$2\" > \"$1\" && chmod 0755 \"$1\"".as_ref(),
            "sh".as_ref(),
            path.as_os_str(),
            marker.as_os_str(),
        ],
    );
}

/// `<plugin name="command">` running `prefix` for every changed file, switched on.
fn command_plugin(s: &Setup, prefix: &Path) -> PathBuf {
    let head = format!(
        "  <plugin name=\"command\"><param prefix=\"{}\" suffix=\"\" ignoreError=\"true\"/>\
         <filter start=\"false\"/></plugin>\n",
        esc(&prefix.display().to_string())
    );
    write_config(
        s,
        &s.conf(),
        &head,
        "    <plugin start=\"true\" name=\"command\"/>\n",
    )
}

/// `-t` on `<dir>/sersync.xml`: must refuse with exit 2, naming `names` in its message.
fn test_config_refuses(s: &Setup, names: &[&str]) -> String {
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "-t"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "-t refuses: {}", text(&out));
    for n in names {
        assert!(err.contains(n), "-t names {n}: {}", text(&out));
    }
    err
}

// A command plugin whose program another user owned, or that sat in a directory others
// can write (and could be replaced after the start), was accepted by -t without a word
// and ran as root.
#[test]
fn a_plugin_program_another_user_controls_is_refused() {
    let Some(attacker) = User::create("p") else {
        return;
    };
    let s = setup_for("plugin-owner", &attacker);
    let shared = s.dir.mkdir_p("shared");
    chmod(&shared, 0o1777);
    let marker = s.dir.join("ran-as-root");

    // The attacker's own program.
    let evil_dir = shared.join("evil");
    attacker.run(
        "mkdir",
        &["-m".as_ref(), "0755".as_ref(), evil_dir.as_os_str()],
    );
    let evil = evil_dir.join("hook");
    plant_hook(&attacker, &evil, &marker);
    command_plugin(&s, &evil);
    let err = test_config_refuses(&s, &[&evil.display().to_string(), "owned by uid"]);
    assert!(err.contains(&attacker.name), "names the owner: {err}");
    // The agent does not start either.
    let out = sersync2(&s.dir, &["-o", "sersync.xml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the start fails: {}",
        text(&out)
    );

    // Root's program in a directory others can write: replaceable at any time.
    let open = s.dir.mkdir_p("open");
    chmod(&open, 0o777);
    let replaceable = open.join("hook");
    hook(&replaceable, &marker, 0o755);
    command_plugin(&s, &replaceable);
    test_config_refuses(&s, &[&open.display().to_string(), "0777"]);

    // A program found on PATH is checked where PATH finds it.
    let mut cmd = command(&s.dir);
    cmd.args(["-o", "sersync.xml", "-t"])
        .env("PATH", format!("{}:/usr/bin:/bin", evil_dir.display()));
    command_plugin(&s, Path::new("hook"));
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run -t");
    assert_eq!(out.status.code(), Some(2), "found on PATH: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&evil.display().to_string()),
        "names the file PATH finds: {}",
        text(&out)
    );

    // A script an interpreter runs is a program too.
    command_plugin(&s, Path::new(&format!("/bin/sh {}", evil.display())));
    test_config_refuses(&s, &[&evil.display().to_string()]);
    assert!(!marker.exists(), "the attacker's program never ran");
}

// A hook script or an ssh program that did not exist yet, in a sticky directory others
// can write (/tmp-like), passed -t and the start; any user could then create it and have
// it run as root at the next push (the outside run did, through both). Refused now,
// before and after the attacker plants it (planted, it is the attacker's file).
#[test]
fn a_missing_hook_script_or_ssh_program_in_a_shared_directory_is_refused() {
    let Some(attacker) = User::create("m") else {
        return;
    };
    let s = setup_for("missing-program", &attacker);
    let shared = s.dir.mkdir_p("shared");
    chmod(&shared, 0o1777);
    let marker = s.dir.join("ran-as-root");
    let script = shared.join("h.sh");
    command_plugin(&s, Path::new(&format!("/bin/sh {}", script.display())));
    let err = test_config_refuses(&s, &[&script.display().to_string(), "does not exist"]);
    assert!(err.contains("sersync.xml:"), "names the line: {err}");
    let out = sersync2(&s.dir, &["-o", "sersync.xml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the start fails: {}",
        text(&out)
    );
    plant_hook(&attacker, &script, &marker);
    test_config_refuses(&s, &[&script.display().to_string(), "owned by uid"]);

    // The ssh command's program, likewise.
    let myssh = shared.join("myssh");
    let mut conf = s.conf();
    conf.remotes.truncate(1);
    let xml = conf.render().replace(
        "<ssh start=\"false\"/>",
        &format!(
            "<ssh start=\"true\" command=\"{} -p 22\"/>",
            myssh.display()
        ),
    );
    fs::write(s.dir.join("sersync.xml"), xml).expect("write sersync.xml");
    test_config_refuses(&s, &[&myssh.display().to_string(), "not found"]);
    plant_hook(&attacker, &myssh, &marker);
    test_config_refuses(&s, &[&myssh.display().to_string(), "owned by uid"]);
    assert!(!marker.exists(), "the attacker's program never ran");
}

// The same check holds at a reload: a config that now names the attacker's program is
// refused, the running one stays, and the attacker's program never runs.
#[test]
fn a_reload_to_a_plugin_program_another_user_controls_keeps_the_running_config() {
    let Some(attacker) = User::create("q") else {
        return;
    };
    let s = setup_for("plugin-reload", &attacker);
    let hooks = s.dir.mkdir_p("hooks");
    let good_marker = s.dir.join("good-ran");
    let good = hooks.join("good");
    hook(&good, &good_marker, 0o755);
    command_plugin(&s, &good);
    let mut agent = start(&s);

    let shared = s.dir.mkdir_p("shared");
    chmod(&shared, 0o1777);
    let evil_marker = s.dir.join("evil-ran");
    let evil = shared.join("evil-hook");
    plant_hook(&attacker, &evil, &evil_marker);
    command_plugin(&s, &evil);
    agent.signal(libc::SIGHUP);
    agent.wait_reload_refused();
    assert!(
        agent.log().contains(&evil.display().to_string()),
        "the log names the program: {}",
        agent.log()
    );
    s.write("after-reload.txt", "x\n");
    wait_until("the running plugin runs", DEADLINE, || {
        agent.assert_running();
        good_marker.exists()
    });
    assert!(!evil_marker.exists(), "the attacker's program never ran");
    agent.stop();
}

// The ssh command runs as the agent's user too (rsync starts it): one another user owns
// is refused like a plugin program.
#[test]
fn an_ssh_program_another_user_controls_is_refused() {
    let Some(attacker) = User::create("r") else {
        return;
    };
    let s = setup_for("ssh-owner", &attacker);
    let shared = s.dir.mkdir_p("shared");
    chmod(&shared, 0o1777);
    let evil = shared.join("ssh");
    attacker.run(
        "sh",
        &[
            "-c".as_ref(),
            "printf '#!/bin/sh\\nexit 1\\n' > \"$1\" && chmod 0755 \"$1\"".as_ref(),
            "sh".as_ref(),
            evil.as_os_str(),
        ],
    );
    let conf = Conf::new(
        &s.src,
        vec![("127.0.0.1".into(), "/nonexistent".into())],
        Transport::Ssh {
            command: format!("{} -p 22", evil.display()),
        },
        &s.dir.join("fail.sh"),
    );
    write_config(&s, &conf, "", "");
    test_config_refuses(&s, &[&evil.display().to_string(), "owned by uid"]);
}

// ---------------------------------------------------------------------------
// The agent's own files
// ---------------------------------------------------------------------------

/// Every path of the tree at `root`, relative, as text.
fn listing(root: &Path) -> Vec<String> {
    tree_snapshot(root)
        .keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

// With --log-file inside the watched tree (and modify or debug on) each log line was a
// change that logged a line: 600-800 rsync calls in 10 s with no outside change. A fail
// log inside the tree was pushed and owed an entry for itself; full syncs pushed the
// log, the pid file and the fail log to every remote.
#[test]
fn the_agent_never_watches_or_pushes_its_own_files() {
    let Some(uploader) = User::create("s") else {
        return;
    };
    let mut s = setup!();
    chmod(s.dir.path(), 0o755);
    chmod(&s.src, 0o755);
    let up = s.dir.mkdir_p("src/up");
    std::os::unix::fs::chown(&up, Some(uploader.uid), Some(uploader.gid)).expect("chown up");
    let logs = s.dir.mkdir_p("src/logs");
    let state = s.dir.mkdir_p("src/state");
    chmod(&state, 0o700);
    let log_file = logs.join("agent.log");
    let pid_file = state.join("agent.pid");
    let mut conf = s.conf();
    conf.fail_log = state.join("fail.sh");
    let xml = conf
        .render()
        .replace("<modify start=\"false\"/>", "<modify start=\"true\"/>");
    fs::write(s.dir.join("sersync.xml"), xml).expect("write sersync.xml");
    let flags = [
        "--log-file".as_ref(),
        log_file.as_os_str(),
        "--pid-file".as_ref(),
        pid_file.as_os_str(),
    ];

    // -t names each of them.
    let out = command(&s.dir)
        .args(["-o", "sersync.xml", "-t"])
        .args(flags)
        .output()
        .expect("run -t");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "-t: {}", text(&out));
    for f in [&log_file, &pid_file, &state.join("fail.sh")] {
        assert!(
            said.lines().any(|l| l.starts_with("warning: ")
                && l.contains(&f.display().to_string())
                && l.contains("inside the watch root")),
            "-t warns about {}:\n{said}",
            f.display()
        );
    }

    // -r: a full sync once the watches are set, when the log and pid file exist.
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-r", "-o", "sersync.xml"]).args(flags);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.stderr = log_file.clone();
    agent.wait_live();
    plant(&uploader, &up.join("a.txt"));
    wait_until("up/a.txt reaches both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes().iter().all(|r| r.join("up/a.txt").exists())
    });
    // One remote down: the fail log (inside the tree) is written, and paid later.
    s.b.stop();
    plant(&uploader, &up.join("b.txt"));
    wait_until("the fail log is written", DEADLINE, || {
        agent.assert_running();
        state.join("fail.sh").exists()
    });
    s.b.restart();
    let out = command(&s.dir)
        .args(["-o", "sersync.xml", "--wait-synced", "--timeout", "120"])
        .args(flags)
        .output()
        .expect("run --wait-synced");
    assert!(out.status.success(), "--wait-synced: {}", text(&out));
    for remote in s.remotes() {
        let held = listing(&remote);
        assert!(
            held.iter().any(|p| p == "up/b.txt"),
            "{}: the upload arrived: {held:?}",
            remote.display()
        );
        let own: Vec<&String> = held
            .iter()
            .filter(|p| {
                p.starts_with("logs/") || (p.starts_with("state/") && p.as_str() != "state/")
            })
            .collect();
        assert!(
            own.is_empty(),
            "{}: the agent's own files were pushed: {own:?}",
            remote.display()
        );
    }
    let log = fs::read_to_string(&log_file).expect("the log");
    let fed: Vec<&str> = log
        .lines()
        .filter(|l| {
            [
                "\"logs/agent.log\"",
                "./logs/agent.log",
                "\"state/",
                "./state/",
            ]
            .iter()
            .any(|n| l.contains(n))
        })
        .collect();
    assert!(
        fed.is_empty(),
        "events or pushes of the agent's own files:\n{}",
        fed.join("\n")
    );
    agent.stop();
}

// The shipped example's `/bin/sh` command plugin, switched on, ran every changed file as
// a root shell script, and `-t` did not even mention plugins.
#[test]
fn shipped_shell_command_plugin_switched_on_is_shown_and_warned_about_by_t() {
    let dir = test_dir!();
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
    let (code, out, err) = run_on(&dir, &conf, &["-t"]);
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
    let (code, out, err) = run_on(&dir, &conf, &["-t"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("plugin: off"), "{out}");
    assert!(!out.contains("as a script"), "{out}");
}

fn byte_name(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

/// The names a `(.*)\.key` exclude must keep out, whatever their bytes.
fn key_names(prefix: &str) -> Vec<PathBuf> {
    let mut invalid = prefix.as_bytes().to_vec();
    invalid.extend_from_slice(b"\xff.key");
    let mut newline = prefix.as_bytes().to_vec();
    newline.extend_from_slice(b"nl\nx.key");
    vec![
        byte_name(&invalid),
        byte_name(&newline),
        PathBuf::from(format!("{prefix}plain.key")),
    ]
}

fn assert_absent_on_remotes(s: &Setup, names: &[PathBuf], agent: &Agent) {
    for remote in s.remotes() {
        for n in names {
            assert!(
                fs::symlink_metadata(remote.join(n)).is_err(),
                "{:?} was pushed to {} despite the exclude; agent log:\n{}",
                n,
                remote.display(),
                tail(&agent.log(), 60)
            );
        }
    }
}

// `<exclude expression="(.*)\.key"/>` did not match names with a newline or bytes that
// are not UTF-8 (regexes in Unicode mode), so such keys were pushed by the full sync
// and by live events.
#[test]
fn key_names_with_newline_or_invalid_utf8_are_not_pushed_despite_the_exclude() {
    let s = setup!();
    let mut conf = s.conf();
    conf.excludes = Some(vec![r"(.*)\.key".to_owned()]);
    let at_start = key_names("start-");
    for n in &at_start {
        s.write(n, "secret\n");
    }
    s.write("start-marker.txt", "marker\n");
    let mut agent = s.agent_with(&conf, &["-r"]);
    wait_until("the start marker reaches both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes()
            .iter()
            .all(|r| r.join("start-marker.txt").exists())
    });
    let live = key_names("live-");
    for n in &live {
        s.write(n, "secret\n");
    }
    s.write("live-marker.txt", "marker\n");
    wait_until("the live marker reaches both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes()
            .iter()
            .all(|r| r.join("live-marker.txt").exists())
    });
    // Whatever was queued is pushed or written to the fail log by the stop.
    agent.stop();
    assert_absent_on_remotes(&s, &at_start, &agent);
    assert_absent_on_remotes(&s, &live, &agent);
}

// An outside test run (3 of 3): with the watch root in a directory its user can write
// (`/home/mallory/pub`), `mv pub pub.old && ln -s /etc pub` made the agent take the
// link for the root coming back: it watched the link's target and full-synced it, and
// /etc/shadow landed on the mirrors. A root that was a directory is never watched
// again through a link put at its path.
#[test]
fn a_root_swapped_for_a_link_by_its_parents_owner_is_not_followed() {
    let Some(attacker) = User::create("r") else {
        return;
    };
    let s = Setup::new("root-link-swap");
    chmod(s.dir.path(), 0o755);
    let home = s.dir.mkdir_p("home");
    std::os::unix::fs::chown(&home, Some(attacker.uid), Some(attacker.gid)).expect("chown");
    let root = home.join("pub");
    attacker.run("mkdir", &[root.as_os_str()]);
    plant(&attacker, &root.join("page.html"));
    // What the link will point to: a directory only root can read.
    let secret = s.dir.mkdir_p("secret");
    chmod(&secret, 0o700);
    fs::write(secret.join("shadow"), "root-only\n").expect("write");
    chmod(&secret.join("shadow"), 0o600);
    let conf = Conf::daemons(&root, &[&s.a, &s.b], &s.dir.join("fail.sh"));
    let mut agent = s.agent_with(&conf, &["-r"]);
    wait_until("page.html on both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes().iter().all(|r| r.join("page.html").exists())
    });
    let old = home.join("pub.old");
    attacker.run("mv", &[root.as_os_str(), old.as_os_str()]);
    attacker.run("ln", &["-s".as_ref(), secret.as_os_str(), root.as_os_str()]);
    wait_until("the log refuses the link", DEADLINE, || {
        agent.assert_running();
        agent.log().contains("is a symbolic link now")
    });
    // The next tries (backoff 1 s, 2 s ...) while --wait-synced waits refuse it too,
    // said once, and nothing of it is sent.
    let out = wait_synced(&s.dir, 5);
    assert!(
        !out.status.success(),
        "--wait-synced does not say synced while the root is not watched"
    );
    assert_eq!(
        agent.log().matches("symbolic link now").count(),
        1,
        "said once:\n{}",
        agent.log()
    );
    for r in s.remotes() {
        assert!(
            !r.join("shadow").exists(),
            "the link's target reached {}:\n{}",
            r.display(),
            agent.log()
        );
    }
    // The directory put back is watched again and synced.
    attacker.run("rm", &[root.as_os_str()]);
    attacker.run("mv", &[old.as_os_str(), root.as_os_str()]);
    plant(&attacker, &root.join("after.html"));
    wait_until("after.html on both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes().iter().all(|r| r.join("after.html").exists())
    });
    for r in s.remotes() {
        assert!(!r.join("shadow").exists(), "{}", r.display());
    }
    agent.stop();
}

// An outside test run (3 of 3 on fanotify, 88 entries on inotify): as a user who can
// write in the tree, `mkdir e$i; echo z > e$i/s; rm -rf e$i; ln -s /etc e$i` in a loop
// put what the links pointed to into the warm-restart index as entries of the tree
// (a listing of `e$i` read through the link), and the next start's catch-up found
// thousands of "deletes", which the brake held until an operator released them.
#[test]
fn directories_swapped_for_links_leave_nothing_of_their_targets_in_the_index() {
    let Some(attacker) = User::create("w") else {
        return;
    };
    let s = setup_for("swap-walk", &attacker);
    let outside = s.dir.mkdir_p("outside");
    for n in 0..20 {
        fs::write(outside.join(format!("phantom-{n}")), "x\n").expect("write");
    }
    s.dir.mkdir_p("outside/phantom-dir");
    let mut agent = s.agent(&["-r"]);
    attacker.run(
        "sh",
        &[
            "-c".as_ref(),
            "i=0; while [ $i -lt 150 ]; do mkdir \"$1/e$i\" && echo z > \"$1/e$i/s\" && \
             rm -rf \"$1/e$i\" && ln -s \"$2\" \"$1/e$i\"; i=$((i+1)); done"
                .as_ref(),
            "sh".as_ref(),
            s.src.as_os_str(),
            outside.as_os_str(),
        ],
    );
    let out = wait_synced(&s.dir, 120);
    assert!(out.status.success(), "{}", text(&out));
    agent.stop();
    let first = agent.log();
    // The next start compares the tree with the index: nothing of the links' target
    // was ever in it, so nothing is deleted and nothing is held.
    let mut agent = s.agent(&[]);
    wait_until("the catch-up line", DEADLINE, || {
        agent.assert_running();
        agent.log().contains("entries compared in")
    });
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("entries compared in"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains(", 0 deleted"),
        "{line}\n{log}\nthe first run's log:\n{first}"
    );
    assert!(!log.contains("phantom"), "{log}");
    for r in s.remotes() {
        for i in [0, 75, 149] {
            let e = r.join(format!("e{i}"));
            assert!(
                fs::symlink_metadata(&e).is_ok_and(|m| m.file_type().is_symlink()),
                "{} is the link on the remote",
                e.display()
            );
        }
    }
    agent.stop();
}
