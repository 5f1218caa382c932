//! The command plugin in batch mode (`<plugin name="command" mode="batch">`) over real
//! daemons: once per push to each remote, the push's paths on stdin (NUL after each),
//! the remote's label in `SERSYNC_REMOTE`; a hook that fails, hangs or never reads its
//! stdin is logged and counted and never holds sync back.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::support::*;

/// `conf` with a batch-mode command plugin running `hook` switched on; `attrs` are
/// more attributes of its `<plugin>` element (a timeout).
fn with_batch_hook(conf: &Conf, hook: &Path, attrs: &str) -> String {
    let block = format!(
        "  <plugin name=\"command\" mode=\"batch\"{attrs}>\n    \
         <param prefix=\"{}\"/>\n  </plugin>\n</head>\n",
        esc(&hook.display().to_string())
    );
    conf.render()
        .replace(
            "  </sersync>\n",
            "    <plugin start=\"true\" name=\"command\"/>\n  </sersync>\n",
        )
        .replace("</head>\n", &block)
}

/// The agent on `xml` (written to `<dir>/sersync.xml`), once live.
fn start_with(s: &Setup, xml: &str) -> Agent {
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, xml).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o"]).arg(&conf_path);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    agent
}

/// A hook script (0755) with `body` after `#!/bin/sh`.
fn hook(s: &Setup, name: &str, body: &str) -> PathBuf {
    let dir = s.dir.mkdir_p("hooks");
    let path = dir.join(name);
    write_with_mode(&path, format!("#!/bin/sh\n{body}").as_bytes(), 0o755);
    path
}

/// The labels the agent gives the two daemons (`--status`'s).
fn labels(s: &Setup) -> [String; 2] {
    [
        format!("{}::{}", s.a.ip(), s.a.module()),
        format!("{}::{}", s.b.ip(), s.b.module()),
    ]
}

/// `sersync2 --status --json` of the test's agent.
fn status_json(s: &Setup) -> serde_json::Value {
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--status", "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--status --json: {e}: {}", text(&out)))
}

/// What the `plugin` object of the status says for `key`.
fn plugin_count(s: &Setup, key: &str) -> u64 {
    status_json(s)["plugin"][key].as_u64().unwrap_or(0)
}

#[test]
fn a_batch_hook_gets_exactly_the_pushed_paths_nul_separated_and_the_remote_label() {
    let s = setup!();
    let runs = s.dir.mkdir_p("runs");
    // Each run: its stdin as read, and its environment, in files named by its pid.
    let h = hook(
        &s,
        "record",
        &format!(
            "out='{}'/$$\ncat > \"$out.tmp\"\nprintf '%s' \"$SERSYNC_REMOTE\" > \"$out.remote\"\n\
             printf '%s' \"$SERSYNC_ROOT\" > \"$out.root\"\nmv \"$out.tmp\" \"$out.paths\"\n",
            runs.display()
        ),
    );
    let mut agent = start_with(&s, &with_batch_hook(&s.conf(), &h, ""));
    let names: [&str; 3] = ["plain.txt", "a name with spaces", "new\nline"];
    for n in names {
        s.write(n, format!("{n}\n"));
    }
    s.wait(&mut agent, "the files on both remotes");

    // Every remote's runs together got each pushed path, NUL-terminated, and nothing else.
    let want: BTreeSet<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
    let mut got: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    wait_until("each remote's hook runs saw every path", DEADLINE, || {
        got.clear();
        for e in fs::read_dir(&runs).expect("runs").flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("paths") {
                continue;
            }
            let stdin = fs::read(&p).expect("paths");
            let remote = fs::read_to_string(p.with_extension("remote")).expect("remote");
            let root = fs::read(p.with_extension("root")).expect("root");
            assert_eq!(root, s.src.as_os_str().as_bytes(), "SERSYNC_ROOT");
            assert!(
                stdin.ends_with(b"\0"),
                "each path is followed by a NUL: {stdin:?}"
            );
            let paths = got.entry(remote).or_default();
            paths.extend(
                stdin[..stdin.len() - 1]
                    .split(|b| *b == 0)
                    .map(<[u8]>::to_vec),
            );
        }
        labels(&s).iter().all(|l| {
            got.get(l)
                .is_some_and(|p| p.iter().cloned().collect::<BTreeSet<_>>() == want)
        })
    });
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        labels(&s).to_vec(),
        "one label per remote, as --status names them"
    );
    for (remote, paths) in &got {
        let unique: BTreeSet<_> = paths.iter().collect();
        assert_eq!(
            unique.len(),
            paths.len(),
            "{remote}: a path twice: {paths:?}"
        );
    }
    assert_eq!(plugin_count(&s, "failed"), 0);
    assert_eq!(status_json(&s)["plugin"]["mode"], "batch");
    agent.stop();
}

#[test]
fn a_failing_or_missing_hook_is_logged_and_counted_and_sync_goes_on() {
    let s = setup!();
    let h = hook(&s, "fails", "echo 'hook broke' >&2\nexit 7\n");
    let mut agent = start_with(&s, &with_batch_hook(&s.conf(), &h, ""));
    s.write("one.txt", "1\n");
    s.wait(&mut agent, "the first file");
    wait_until("both runs failed and were counted", DEADLINE, || {
        plugin_count(&s, "failed") >= 2
    });
    let log = agent.log();
    assert!(
        log.contains("failed, exit 7: hook broke"),
        "the failure is logged with its exit and stderr:\n{}",
        tail(&log, 30)
    );
    let report = sersync2(&s.dir, &["-o", "sersync.xml", "--status"]);
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(
        report.contains("plugin command (mode batch):") && report.contains("hook broke"),
        "--status says it: {report}"
    );

    // Sync goes on; a hook gone since the start is a failure too.
    fs::remove_file(&h).expect("rm hook");
    let before = plugin_count(&s, "failed");
    s.write("two.txt", "2\n");
    s.wait(&mut agent, "the second file");
    wait_until("the missing hook is counted", DEADLINE, || {
        plugin_count(&s, "failed") >= before + 2
    });
    assert!(
        agent.log().contains("cannot run"),
        "says it could not run:\n{}",
        tail(&agent.log(), 30)
    );
    agent.stop();
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_and_sync_goes_on() {
    let s = setup!();
    let pids = s.dir.mkdir_p("pids");
    let h = hook(
        &s,
        "hangs",
        &format!("echo $$ > '{}'/$$\nexec sleep 600\n", pids.display()),
    );
    let mut agent = start_with(&s, &with_batch_hook(&s.conf(), &h, " timeout=\"1\""));
    s.write("one.txt", "1\n");
    s.wait(&mut agent, "the first file");
    s.write("two.txt", "2\n");
    s.wait(&mut agent, "the second file, while hooks hang");
    wait_until("a hung run is killed and counted", DEADLINE, || {
        plugin_count(&s, "failed") >= 1
    });
    assert!(
        agent.log().contains("still running after 1s, killed"),
        "{}",
        tail(&agent.log(), 30)
    );
    // The killed runs are gone, what they started with them.
    wait_until("every hung hook killed", DEADLINE, || {
        plugin_count(&s, "runs") >= 4
            && fs::read_dir(&pids).expect("pids").flatten().all(|e| {
                let pid = e.file_name().to_string_lossy().into_owned();
                !alive(&pid)
            })
    });
    agent.stop();
}

#[test]
fn a_hook_that_never_reads_its_stdin_does_not_block_with_100000_paths() {
    let s = setup!();
    let counts = s.dir.join("counts");
    // Never reads stdin: only counts what it was given.
    let h = hook(
        &s,
        "ignores-stdin",
        &format!(
            "echo \"$SERSYNC_REMOTE $SERSYNC_PATHS\" >> '{}'\n",
            counts.display()
        ),
    );
    // One remote: the point is the hook's stdin, not the fan-out.
    let mut conf = Conf::daemons(&s.src, &[&s.a], &s.dir.join("fail.sh"));
    conf.debug = false;
    let mut agent = start_with(&s, &with_batch_hook(&conf, &h, ""));
    // 100 directories of 1,000 files (fewer than a storm's collapse in each): every
    // file is a path of its own in the pushes.
    let staging = s.dir.mkdir_p("staging/tree");
    for d in 0..100 {
        let dir = staging.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..1000 {
            fs::write(dir.join(format!("f{f:04}")), b"x").expect("write");
        }
    }
    run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&staging)
            .arg(s.p("tree")),
    );
    let remotes = [s.a.data_dir()];
    wait_mirrored(
        &mut agent,
        &s.src,
        &remotes,
        "100,000 files on the remote",
        BIG_DEADLINE * 4,
        &|| s.logs(),
    );
    let total = |label: &str| -> u64 {
        fs::read_to_string(&counts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(r, _)| *r == label)
            .filter_map(|(_, n)| n.parse::<u64>().ok())
            .sum()
    };
    wait_until("the hook was given every path", BIG_DEADLINE, || {
        total(&labels(&s)[0]) >= 100_000
    });
    assert_eq!(plugin_count(&s, "failed"), 0);
    assert_eq!(plugin_count(&s, "dropped"), 0);
    // Still answering, and it stops as it should.
    s.write("after.txt", "after\n");
    wait_mirrored(
        &mut agent,
        &s.src,
        &remotes,
        "a change after",
        DEADLINE,
        &|| s.logs(),
    );
    agent.stop();
}

#[test]
fn bad_modes_and_timeouts_are_refused_by_t_with_the_line() {
    let s = setup!();
    let h = hook(&s, "ok", "exit 0\n");
    let conf_path = s.dir.join("sersync.xml");
    for (attrs, says) in [
        (" mode=\"batches\"", "write mode=\"file\""),
        (" timeout=\"-1\"", "write e.g. timeout=\"60\""),
    ] {
        let xml = with_batch_hook(&s.conf(), &h, attrs).replace(" mode=\"batch\" mode", " mode");
        fs::write(&conf_path, &xml).expect("write");
        let out = sersync2(&s.dir, &["-o", "sersync.xml", "-t"]);
        let err = String::from_utf8_lossy(&out.stderr);
        let line = xml
            .lines()
            .position(|l| l.contains("<plugin name=\"command\""))
            .expect("the line")
            + 1;
        assert_eq!(out.status.code(), Some(2), "{attrs}: {}", text(&out));
        assert!(
            err.contains(&format!("sersync.xml:{line}:")) && err.contains(says),
            "{attrs}: {err}"
        );
    }
    // A good one: -t shows the mode and the timeout.
    fs::write(&conf_path, with_batch_hook(&s.conf(), &h, " timeout=\"5\"")).expect("write");
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "-t"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && shown.contains("mode=\"batch\"")
            && shown.contains("killed after 5s"),
        "{}",
        text(&out)
    );
}

// The outside run: SIGTERM while a batch hook hung (timeout 60 s): the agent stopped in
// 0.3 s and the hook and what it started kept running, with nothing in the log. A stop
// now kills what still runs, and says so.
#[test]
fn a_hook_still_running_at_the_stop_is_killed_with_what_it_started() {
    let s = setup!();
    let pids = s.dir.mkdir_p("pids");
    let h = hook(
        &s,
        "hangs-long",
        &format!("echo $$ > '{}'/$$\nexec sleep 600\n", pids.display()),
    );
    let mut agent = start_with(&s, &with_batch_hook(&s.conf(), &h, " timeout=\"600\""));
    s.write("one.txt", "1\n");
    s.wait(&mut agent, "the file");
    wait_until("a hook runs", DEADLINE, || {
        fs::read_dir(&pids)
            .expect("pids")
            .flatten()
            .next()
            .is_some()
    });
    agent.stop();
    let log = agent.log();
    assert!(
        log.contains("still running at the stop, killed"),
        "{}",
        tail(&log, 20)
    );
    wait_until("no hook outlives the agent", DEADLINE, || {
        fs::read_dir(&pids).expect("pids").flatten().all(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            !alive(&pid)
        })
    });
}

/// Whether the process runs: it exists and is not a zombie (one reaped by nobody is dead
/// all the same; the agent reaps what it killed, but an orphan's init may not).
fn alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}
