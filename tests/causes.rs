//! Every failed push says its real cause: rsync's and ssh's own words (the end of their
//! stderr, control characters escaped) with a short hint for the common causes, in the
//! error line, the JSON log and status; a "recovered" line ends every run of failures.
//! One test per cause, each met for real: a daemon that is down, a module it lacks, a
//! refused password, a full disk under the module (tmpfs), an unknown ssh host key, a
//! refused ssh key.

use std::fs;
use std::process::Command;

use crate::support::*;

/// Waits until one line of the agent's log holds every needle; returns that line.
fn wait_line(agent: &mut Agent, what: &str, needles: &[&str]) -> String {
    let mut found = String::new();
    let start = std::time::Instant::now();
    loop {
        if let Some(l) = agent
            .log()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            found.push_str(l);
            return found;
        }
        if start.elapsed() >= DEADLINE {
            panic!(
                "timed out: {what} (a line with {needles:?}); log:\n{}",
                tail(&agent.log(), 60)
            );
        }
        agent.assert_running();
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

/// The error line of a failed push to `label` (after its retries), with `words`.
fn failed_push_line(agent: &mut Agent, label: &str, words: &[&str]) -> String {
    let head = format!("to {label} failed, written to the fail log");
    let mut needles = vec![head.as_str()];
    needles.extend_from_slice(words);
    let line = wait_line(
        agent,
        &format!("a failed push to {label} says why"),
        &needles,
    );
    assert!(line.contains("rsync said: "), "{line}");
    line
}

// Only rsync's last stderr line was kept: a refused connection read "error in socket IO
// (code 10)" in the log and status, with no word of the refusal; and nothing said when
// the remote worked again.
#[test]
fn a_refused_connection_is_named_in_the_json_log_and_status_and_a_recovered_line_follows() {
    let mut s = setup!();
    let port = free_port("127.0.0.1");
    let mut conf = s.conf();
    conf.status_port = Some(port);
    let mut agent = s.agent_with(&conf, &["--log-format", "json"]);
    let label = format!("{}::{}", s.b.ip(), s.b.module());
    s.b.stop();
    s.write("while-down.txt", "b is down\n");
    let line = wait_line(
        &mut agent,
        "the JSON error line of the failed push",
        &["\"level\":\"error\"", "\"cause\":\"connection_refused\""],
    );
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("to {label} failed"))
            && message.contains("hint: nothing listens")
            && message.contains("rsync said: rsync: [sender] failed to connect to")
            && message.contains("Connection refused (111)\\nrsync error: error in socket IO"),
        "{line}"
    );
    let stderr = v["stderr"].as_str().unwrap_or_default();
    assert!(
        stderr.contains("Connection refused (111)\nrsync error:"),
        "the raw stderr is a field of its own: {line}"
    );
    assert_eq!(v["rsync_exit"], 10, "{line}");

    let status = status_json(port);
    let b = &status["remotes"][1];
    let last = b["last_error"].as_str().unwrap_or_default();
    assert!(last.contains("Connection refused (111)"), "{status}");
    let at = b["last_error_at"].as_str().unwrap_or_default();
    let parsed = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap_or_else(|e| panic!("last_error_at {at:?} is RFC 3339: {e}; {status}"));
    let age = chrono::Utc::now().signed_duration_since(parsed);
    assert!(age.num_seconds().abs() < 3600, "{at} is about now");
    let out = sersync2(&s.dir, &["--status", "-o", "sersync.xml"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("last error at {at}: rsync exit 10"))
            && report.contains("Connection refused (111)"),
        "{}",
        text(&out)
    );

    s.b.restart();
    s.write("after.txt", "b is back\n");
    s.wait(&mut agent, "b is level again");
    wait_line(
        &mut agent,
        "a recovered line after the failures",
        &[&format!("recovered: a push to {label} succeeded after ")],
    );
    agent.stop();
}

#[test]
fn an_unknown_module_is_named_with_the_daemons_words() {
    let s = setup!();
    let mut conf = s.conf();
    conf.remotes[1].1 = "nosuchmodule".into();
    let mut agent = s.agent_with(&conf, &[]);
    s.write("f.txt", "x\n");
    let label = format!("{}::nosuchmodule", s.b.ip());
    failed_push_line(
        &mut agent,
        &label,
        &[
            "rsync exit 5 (",
            "hint: the rsync daemon has no module of that name",
            "@ERROR: Unknown module 'nosuchmodule'",
        ],
    );
    agent.stop();
}

#[test]
fn a_refused_password_is_named_with_the_daemons_words() {
    let s = setup!();
    let mut conf = s.conf();
    let wrong = s.dir.join("wrong.pass");
    write_with_mode(&wrong, b"not-the-password", 0o600);
    if let Transport::Daemon { password_file, .. } = &mut conf.transport {
        *password_file = wrong;
    }
    let mut agent = s.agent_with(&conf, &[]);
    s.write("f.txt", "x\n");
    let label = format!("{}::{}", s.a.ip(), s.a.module());
    failed_push_line(
        &mut agent,
        &label,
        &[
            "hint: the remote refused the login",
            &format!("@ERROR: auth failed on module {}", s.a.module()),
        ],
    );
    agent.stop();
}

/// Unmounts (lazily: a daemon child may still be inside) at the end of the test.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[test]
fn a_full_disk_on_the_remote_is_named_with_rsyncs_words() {
    let s = setup!();
    let module = s.b.data_dir();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&module)
        .output();
    let _guard = match mounted {
        Ok(o) if o.status.success() => Mounted(module.clone()),
        Ok(o) => {
            eprintln!(
                "SKIP a_full_disk_on_the_remote_is_named_with_rsyncs_words: mount is not \
                 permitted here ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIP a_full_disk_on_the_remote_is_named_with_rsyncs_words: {e}");
            return;
        }
    };
    let mut agent = s.agent(&[]);
    // 1 MiB that does not fit in 64 KiB.
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    s.write("big.bin", &big);
    let label = format!("{}::{}", s.b.ip(), s.b.module());
    failed_push_line(
        &mut agent,
        &label,
        &["hint: a disk is full", "No space left on device"],
    );
    agent.stop();
}

/// An ssh-mode config whose ssh command is changed by `edit`.
fn ssh_conf(s: &Dir, sshd: &Sshd, edit: impl Fn(String) -> String) -> Conf {
    let src = s.mkdir_p("src");
    let mut conf = Conf::ssh(&src, sshd, &s.join("fail.sh"));
    if let Transport::Ssh { command } = &mut conf.transport {
        *command = edit(command.clone());
    }
    conf
}

#[test]
fn an_unknown_ssh_host_key_is_named_with_sshs_words() {
    let sshd = Sshd::start();
    let dir = test_dir!();
    let conf = ssh_conf(&dir, &sshd, |c| {
        let strict = c.replace("StrictHostKeyChecking=no", "StrictHostKeyChecking=yes");
        assert_ne!(strict, c, "the fixture's ssh command changed: {c}");
        strict
    });
    let mut agent = Agent::start(&dir, &conf, &[]);
    dir.write("src/f.txt", "x\n");
    let label = format!("{}:{}", sshd.host(), sshd.dest_dir().display());
    failed_push_line(
        &mut agent,
        &label,
        &[
            "rsync exit 255 (",
            "hint: ssh does not know or no longer trusts the remote's host key",
            "Host key verification failed.",
        ],
    );
    agent.stop();
}

#[test]
fn a_refused_ssh_key_is_named_with_sshs_words() {
    let sshd = Sshd::start();
    let dir = test_dir!();
    let other = dir.join("other_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "{}", text(&out));
    let key = sshd.key_path().display().to_string();
    let conf = ssh_conf(&dir, &sshd, |c| {
        let swapped = c.replace(&key, &other.display().to_string());
        assert_ne!(swapped, c, "the fixture's ssh command changed: {c}");
        swapped
    });
    let mut agent = Agent::start(&dir, &conf, &[]);
    fs::write(dir.join("src/f.txt"), "x\n").expect("write");
    let label = format!("{}:{}", sshd.host(), sshd.dest_dir().display());
    failed_push_line(
        &mut agent,
        &label,
        &[
            "hint: the remote refused the login",
            "Permission denied (publickey",
        ],
    );
    agent.stop();
}
