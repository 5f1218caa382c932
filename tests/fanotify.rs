//! The fanotify backend's own cases; the shared end-to-end suite runs on it as well
//! (scripts/test.sh, `SERSYNC2_TEST_BACKEND=fanotify`). A filesystem mark sees the
//! whole filesystem, so what lies outside the root must never be pushed, a directory
//! renamed in from outside must arrive whole, a renamed directory must keep mapping
//! later events to its new path, and `auto` must fall back to inotify where fanotify
//! cannot run. Real daemons, real fanotify on the test's directory (as root).

use std::fs;
use std::process::Command;

use crate::support::*;

/// A config for `s` on `backend`, or None (printed) where fanotify needs what the
/// test process lacks.
fn conf_on(s: &Setup, backend: &str) -> Option<Conf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: fanotify needs root (CAP_SYS_ADMIN)");
        return None;
    }
    let mut conf = s.conf();
    conf.backend = backend.to_owned();
    Some(conf)
}

/// `setpriv` running the agent as root without CAP_SYS_ADMIN.
fn without_sys_admin(s: &Setup) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin"])
        .arg(sersync_bin())
        .current_dir(s.dir.path());
    c
}

#[test]
fn fanotify_events_outside_the_root_on_the_same_filesystem_are_not_pushed() {
    let s = setup!();
    let Some(conf) = conf_on(&s, "fanotify") else {
        return;
    };
    let mut agent = s.agent_with(&conf, &[]);
    assert!(agent.log().contains("with fanotify"), "{}", agent.log());
    // Beside the root, on its filesystem: a file, a directory, a rename.
    s.dir.write("beside/secret-a.txt", "x\n");
    fs::create_dir_all(s.dir.join("beside/secret-dir")).expect("mkdir");
    rename(
        s.dir.join("beside/secret-a.txt"),
        s.dir.join("beside/secret-b.txt"),
    );
    s.write("inside.txt", "1\n");
    s.wait(&mut agent, "the change inside is pushed");
    // The debug log names every change the watcher sent.
    let log = agent.log();
    assert!(log.contains("inside.txt"), "{log}");
    assert!(
        !log.contains("secret"),
        "a change outside the root was sent:\n{log}"
    );
    agent.stop();
}

#[test]
fn fanotify_a_directory_renamed_in_from_outside_is_pushed_whole() {
    let s = setup!();
    let Some(conf) = conf_on(&s, "fanotify") else {
        return;
    };
    let mut agent = s.agent_with(&conf, &[]);
    for i in 0..20 {
        s.dir
            .write(format!("staging/tree/d{i}/sub/f{i}.txt"), format!("{i}\n"));
    }
    rename(s.dir.join("staging/tree"), s.p("tree"));
    s.wait(&mut agent, "the moved-in tree arrives whole");
    // And it is watched: a later change deep inside arrives too.
    s.write("tree/d7/sub/later.txt", "later\n");
    s.wait(&mut agent, "a change inside the moved-in tree");
    agent.stop();
}

#[test]
fn fanotify_a_renamed_big_directory_keeps_later_events_mapped_to_its_new_path() {
    let s = setup!();
    let Some(conf) = conf_on(&s, "fanotify") else {
        return;
    };
    for i in 0..300 {
        s.write(format!("big/d{i}/inner/f.txt"), format!("{i}\n"));
    }
    let mut agent = s.agent_with(&conf, &["-r"]);
    s.wait(&mut agent, "-r initial push");
    // Events in these directories put them in the handle cache under the old path.
    s.write("big/d150/inner/before.txt", "b\n");
    s.write("big/d3/before.txt", "b\n");
    s.wait(&mut agent, "changes before the rename");
    rename(s.p("big"), s.p("moved"));
    s.write("moved/d150/inner/after.txt", "a\n");
    s.write("moved/d3/after.txt", "a\n");
    s.write("moved/d299/inner/after.txt", "a\n");
    s.wait(
        &mut agent,
        "changes after the rename land under the new path",
    );
    let log = agent.log();
    assert!(
        !log.contains("big/d150/inner/after.txt"),
        "an event after the rename was mapped to the old path:\n{}",
        tail(&log, 40)
    );
    agent.stop();
}

#[test]
fn fanotify_auto_picks_fanotify_as_root_and_inotify_without_cap_sys_admin() {
    let s = setup!();
    let Some(conf) = conf_on(&s, "auto") else {
        return;
    };
    fs::write(s.dir.join("sersync.xml"), conf.render()).expect("write config");
    let out = sersync2(&s.dir, &["-t", "-o", "sersync.xml"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("watcher: fanotify (auto"),
        "-t as root: {}",
        text(&out)
    );

    let out = without_sys_admin(&s)
        .args(["-t", "-o", "sersync.xml"])
        .output()
        .expect("run setpriv");
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("setpriv") {
        eprintln!("skipped the part without CAP_SYS_ADMIN: {}", text(&out));
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("watcher: inotify (auto: ") && stdout.contains("CAP_SYS_ADMIN"),
        "-t without CAP_SYS_ADMIN: {}",
        text(&out)
    );

    // Live, without the capability: inotify, and it pushes.
    let mut cmd = without_sys_admin(&s);
    cmd.args(["-n", "4", "-o", "sersync.xml"]);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    let log = agent.log();
    assert!(log.contains("with inotify (auto)"), "{log}");
    s.write("pushed.txt", "x\n");
    s.wait(&mut agent, "pushed by the inotify fallback");

    // A reload to a forced fanotify it cannot run keeps the running config.
    let mut forced = conf;
    forced.backend = "fanotify".into();
    fs::write(s.dir.join("sersync.xml"), forced.render()).expect("rewrite config");
    agent.signal(libc::SIGHUP);
    wait_until("the reload is refused", DEADLINE, || {
        agent.assert_running();
        let log = agent.log();
        log.contains("SIGHUP: ") && log.contains("CAP_SYS_ADMIN") && log.contains("stays in use")
    });
    s.write("after-reload.txt", "x\n");
    s.wait(&mut agent, "still pushed after the refused reload");
    agent.stop();

    // Forced fanotify without the capability at the start: a clear reason, exit 2.
    fs::write(s.dir.join("forced.xml"), forced.render()).expect("write config");
    let out = without_sys_admin(&s)
        .args(["-o", "forced.xml"])
        .output()
        .expect("run setpriv");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fanotify") && stderr.contains("CAP_SYS_ADMIN"),
        "{}",
        text(&out)
    );
    // And `-t` of that config says so and exits 2 too (it exited 0).
    let out = without_sys_admin(&s)
        .args(["-t", "-o", "forced.xml"])
        .output()
        .expect("run setpriv");
    assert_eq!(out.status.code(), Some(2), "-t: {}", text(&out));
    assert!(text(&out).contains("would not start"), "-t: {}", text(&out));
}

#[test]
fn fanotify_a_bad_watcher_backend_is_refused_naming_line_and_value() {
    let s = setup!();
    let mut conf = s.conf();
    conf.backend = "dnotify".into();
    fs::write(s.dir.join("sersync.xml"), conf.render()).expect("write config");
    let out = sersync2(&s.dir, &["-t", "-o", "sersync.xml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sersync.xml:") && stderr.contains("backend=\"dnotify\""),
        "{}",
        text(&out)
    );
}

#[test]
fn fanotify_queue_overflow_rescans_and_full_syncs() {
    let s = setup!();
    let Some(conf) = conf_on(&s, "fanotify") else {
        return;
    };
    s.write("pre/existing.txt", "pre\n");
    let mut agent = s.agent_with(&conf, &["-r"]);
    s.wait(&mut agent, "-r initial push");
    // The default queue holds 16384 events: 20000 new files (a create and a
    // close-write each) while the agent cannot read overflow it.
    agent.signal(libc::SIGSTOP);
    for d in 0..20 {
        let dir = s.dir.mkdir_p(format!("src/flood/{d}"));
        for i in 0..1000 {
            fs::write(dir.join(format!("f{i}")), b"x").expect("write");
        }
    }
    remove_file(s.p("pre/existing.txt"));
    agent.signal(libc::SIGCONT);
    s.wait_within(&mut agent, "convergence after an overflow", BIG_DEADLINE);
    let log = agent.log();
    assert!(
        log.contains("overflow"),
        "the overflow is logged:\n{}",
        tail(&log, 40)
    );
    agent.stop();
}

// `--status` said "N directories watched" under fanotify, where the count is of
// filesystem marks (one for the whole tree).
#[test]
fn fanotify_status_counts_filesystem_marks_not_directories() {
    let s = setup!();
    let Some(conf) = conf_on(&s, "fanotify") else {
        return;
    };
    for i in 0..5 {
        s.write(format!("d{i}/f.txt"), "x\n");
    }
    let mut agent = s.agent_with(&conf, &[]);
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--status"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("1 filesystem mark (fanotify") && !shown.contains("directories watched"),
        "{shown}"
    );
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (doc["watches"].as_u64(), doc["watch_unit"].as_str()),
        (Some(1), Some("filesystem marks")),
        "{doc}"
    );
    agent.stop();
}
