//! One instance per config, whatever the pid file, and the commands that ask it
//! (`--status`, `--wait-synced`, `--replay`): run as the shipped systemd unit runs the
//! agent (its ExecStart line, read from scripts/packaging/sersync2@.service), with a bad
//! config left on disk after a refused reload, and without `<host start="true">`. Real
//! agents, real rsync daemons.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::*;

/// The unit's `ExecStart=` and `ExecStartPre=` words for instance `name`: `%i` is
/// `name`, `/etc/sersync/` is `etc` (the test's stand-in), the program is the binary
/// under test. The pid file stays where the unit puts it, in /run/sersync2.
fn unit_command_line(key: &str, name: &str, etc: &Path) -> Vec<String> {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/packaging/sersync2@.service"),
    )
    .expect("read the unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}= line:\n{unit}"));
    let mut words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            w.replace("%i", name)
                .replace("%I", name)
                .replace("/etc/sersync/", &format!("{}/", etc.display()))
        })
        .collect();
    // systemd's prefixes for how a command runs (`-`, `+`, `!`, `@`, `:`).
    words[0] = words[0]
        .trim_start_matches(['-', '+', '!', '@', ':'])
        .to_owned();
    assert!(
        words[0].ends_with("/sersync2"),
        "{key} runs sersync2: {line}"
    );
    words.remove(0);
    words
}

/// A unique instance name, so that /run/sersync2/<name>.pid is this test's own.
fn instance_name(hint: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{hint}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `sersync2 ARGS` run from `cwd`, to completion.
fn run_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(sersync_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2")
}

/// The agent as the unit starts it (cwd `/`, as systemd runs it).
fn start_as_the_unit(s: &Setup, name: &str) -> (Agent, PathBuf, PathBuf) {
    let etc = s.dir.mkdir_p("etc/sersync");
    let config = etc.join(format!("{name}.xml"));
    let mut conf = s.conf();
    conf.status_port = None;
    fs::write(&config, conf.render()).expect("write the config");
    let pre = unit_command_line("ExecStartPre", name, &etc);
    let out = run_in(
        Path::new("/"),
        &pre.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "ExecStartPre {pre:?}: {}", text(&out));
    let words = unit_command_line("ExecStart", name, &etc);
    let pid_file = words
        .iter()
        .position(|w| w == "--pid-file")
        .and_then(|i| words.get(i + 1))
        .map(PathBuf::from)
        .expect("the unit gives --pid-file");
    assert!(
        pid_file.starts_with("/run/sersync2"),
        "{}",
        pid_file.display()
    );
    let mut cmd = Command::new(sersync_bin());
    cmd.args(&words).current_dir("/");
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    (agent, config, pid_file)
}

/// Asserts a start refused because the instance `pid` runs the config.
fn assert_refused(out: &std::process::Output, pid: i32, how: &str) {
    assert_eq!(out.status.code(), Some(1), "{how}: {}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("already runs this config (pid {pid}")),
        "{how}: the refusal names the running pid: {}",
        text(out)
    );
}

// Under the shipped unit (`--pid-file /run/sersync2/%i.pid`) the instance lock and the
// control socket were keyed by that pid file: `--status -o /etc/sersync/web.xml` said the
// answer was not from this config's instance (and needed <host start="true">),
// `--wait-synced` said no agent ran, and a second start of the config without
// `--pid-file` was not refused (two instances mirrored one config).
#[test]
fn the_units_instance_is_found_by_every_command_and_a_second_start_is_refused() {
    let s = setup!();
    let name = instance_name("u");
    let (mut agent, config, pid_file) = start_as_the_unit(&s, &name);
    let pid = agent.pid();
    let conf_arg = config.display().to_string();
    s.write("one.txt", "1\n");
    s.wait(&mut agent, "the first change");

    // --status, no --pid-file, no status endpoint in the config.
    let out = run_in(s.dir.path(), &["--status", "-o", &conf_arg]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains(&format!("(pid {pid})")), "{shown}");
    // One directory (inotify) or one filesystem mark (fanotify), said as such.
    let (phrase, unit) = if test_backend() == "fanotify" {
        ("1 filesystem mark (fanotify", "filesystem marks")
    } else {
        ("1 directory watched", "directories")
    };
    assert!(shown.contains(phrase), "{shown}");
    let mut doc = serde_json::Value::Null;
    wait_until("--status --json shows both remotes level", DEADLINE, || {
        let out = run_in(s.dir.path(), &["--status", "--json", "-o", &conf_arg]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        doc = serde_json::from_slice(&out.stdout).expect("JSON");
        doc["remotes"]
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["state"] == "level"))
    });
    assert_eq!(doc["pid"], pid, "{doc}");
    assert_eq!(doc["watch_unit"], unit, "{doc}");
    // --wait-synced, from another directory, through a relative path.
    s.write("two.txt", "2\n");
    let out = run_in(
        s.dir.path(),
        &[
            "--wait-synced",
            "-o",
            &format!("etc/sersync/{name}.xml"),
            "--timeout",
            "60",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for remote in s.remotes() {
        assert_eq!(
            fs::read(remote.join("two.txt")).ok().as_deref(),
            Some(&b"2\n"[..])
        );
    }

    // A second start, in every combination: the unit's own line again, no --pid-file,
    // another --pid-file, the config through a linked directory.
    let etc = config.parent().expect("etc").to_path_buf();
    let again = unit_command_line("ExecStart", &name, &etc);
    let out = run_in(
        Path::new("/"),
        &again.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_refused(&out, pid, "the unit's command line again");
    let out = run_in(s.dir.path(), &["-o", &conf_arg]);
    assert_refused(&out, pid, "without --pid-file");
    let other = s.dir.join("other.pid").display().to_string();
    let out = run_in(
        s.dir.path(),
        &[
            "-o",
            &format!("etc/sersync/{name}.xml"),
            "--pid-file",
            &other,
        ],
    );
    assert_refused(&out, pid, "with another --pid-file");
    std::os::unix::fs::symlink(&etc, s.dir.join("linked")).expect("symlink");
    let out = run_in(s.dir.path(), &["-d", "-o", &format!("linked/{name}.xml")]);
    assert_refused(&out, pid, "-d, through a linked directory");
    assert_eq!(
        fs::read_to_string(&pid_file)
            .expect("the unit's pid file")
            .trim(),
        pid.to_string(),
        "the unit's pid file still names the running instance"
    );

    agent.stop();
    assert!(!pid_file.exists(), "the pid file goes with the instance");
    let out = run_in(s.dir.path(), &["--status", "-o", &conf_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no sersync2 runs"),
        "{}",
        text(&out)
    );
}

// While a bad config sat on disk after a refused reload, `--status`, `--wait-synced` and
// `--replay` parsed the file again and exited 2, though the instance ran on with the
// config it had.
#[test]
fn a_bad_config_on_disk_after_a_refused_reload_does_not_stop_the_commands() {
    let s = setup!();
    let name = instance_name("b");
    let (mut agent, config, _pid_file) = start_as_the_unit(&s, &name);
    let pid = agent.pid();
    let conf_arg = config.display().to_string();
    fs::write(&config, "<head><sersync></head>").expect("a bad config");
    agent.signal(libc::SIGHUP);
    agent.wait_reload_refused();
    s.write("after.txt", "after the refused reload\n");

    let out = run_in(s.dir.path(), &["--status", "-o", &conf_arg]);
    assert_eq!(out.status.code(), Some(0), "--status: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("(pid {pid})")),
        "{}",
        text(&out)
    );
    let out = run_in(
        s.dir.path(),
        &["--wait-synced", "-o", &conf_arg, "--timeout", "60"],
    );
    assert_eq!(out.status.code(), Some(0), "--wait-synced: {}", text(&out));
    let out = run_in(s.dir.path(), &["--replay", "-o", &conf_arg]);
    assert_eq!(out.status.code(), Some(0), "--replay: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("nothing to replay (running instance, pid {pid})")),
        "{}",
        text(&out)
    );
    s.wait(&mut agent, "the change after the refused reload");
    agent.stop();
}

// `--status` exited 0 while a remote was FAILING, and printed unix times.
#[test]
fn status_exits_1_while_a_remote_fails_and_0_once_it_caught_up() {
    let mut s = setup!();
    let mut agent = s.agent(&[]);
    s.b.stop();
    s.write("while-b-is-down.txt", "x\n");
    let status = |json: bool| {
        let mut args = vec!["-o", "sersync.xml", "--status"];
        if json {
            args.push("--json");
        }
        sersync2(&s.dir, &args)
    };
    let mut shown = String::new();
    wait_until("--status exits 1 with b failing", DEADLINE, || {
        agent.assert_running();
        let out = status(false);
        shown = text(&out);
        out.status.code() == Some(1) && shown.contains("FAILING")
    });
    let b = format!("{}::{}", s.b.ip(), s.b.module());
    let line = shown
        .lines()
        .find(|l| l.contains(&b))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        line.contains("FAILING since 20") && !shown.contains("unix time"),
        "RFC 3339 times: {shown}"
    );
    let out = status(true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let remotes = doc["remotes"].as_array().expect("remotes");
    let b_doc = remotes
        .iter()
        .find(|r| r["remote"] == b.as_str())
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(b_doc["state"], "failing", "{doc}");
    let since = b_doc["failing_since"].as_str().expect("failing_since");
    assert!(
        since.len() == 20 && since.ends_with('Z') && since.as_bytes()[10] == b'T',
        "{since}"
    );
    assert!(
        doc["started"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{doc}"
    );

    s.b.restart();
    s.wait(&mut agent, "b caught up");
    wait_until("--status exits 0 once b is back", DEADLINE, || {
        status(false).status.code() == Some(0)
    });
    agent.stop();
}

// `-o /x/a/b.xml` and `-o /x/a_b.xml` mapped to one default pid file (`/` → `_`): the
// second was refused as "another sersync2 already runs this config".
#[test]
fn configs_a_slash_b_and_a_underscore_b_do_not_share_an_instance_lock() {
    let s = setup!();
    let conf = s.conf().render();
    let nested = s.dir.mkdir_p("a").join("b.xml");
    let flat = s.dir.join("a_b.xml");
    fs::write(&nested, &conf).expect("write a/b.xml");
    fs::write(&flat, &conf).expect("write a_b.xml");
    let mut one = Agent::launch(&s.dir, &nested, &[], s.dir.join("one.err"));
    one.wait_live();
    let mut two = Agent::launch(&s.dir, &flat, &[], s.dir.join("two.err"));
    two.wait_live();
    two.stop_with(libc::SIGTERM);
    one.stop_with(libc::SIGTERM);
}
