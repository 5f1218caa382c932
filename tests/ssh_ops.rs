//! Pause and resume, the brake on mass deletes and batch hooks with an ssh remote
//! (`<remote ssh="true" sshCommand=...>`) beside two daemon remotes in one config: a
//! pause of the ssh remote alone holds it while the daemons keep getting changes; deletes
//! held for it reach it only once released; a batch hook runs for its pushes with its
//! label in `SERSYNC_REMOTE`. Real agents, real rsync daemons, a real sshd.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::*;

/// `conf` rendered with the sshd's directory as a third remote, over ssh with its own
/// command.
fn with_ssh_remote(s: &Setup, sshd: &Sshd, conf: &Conf) -> String {
    let text = conf.render();
    let last = format!("<remote ip=\"{}\" name=\"{}\"/>", s.b.ip(), s.b.module());
    assert!(text.contains(&last), "{text}");
    let more = format!(
        "{last}\n      <remote ip=\"{}\" name=\"{}\" ssh=\"true\" sshCommand=\"{}\"/>",
        sshd.host(),
        esc(&sshd.dest_dir().display().to_string()),
        esc(&sshd.ssh_command())
    );
    text.replacen(&last, &more, 1)
}

/// The label `--status` and `--remote` give the ssh remote.
fn ssh_label(sshd: &Sshd) -> String {
    format!("{}:{}", sshd.host(), sshd.dest_dir().display())
}

fn start(s: &Setup, xml: &str, extra: &[&str]) -> Agent {
    fs::write(s.dir.join("sersync.xml"), xml).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o", "sersync.xml"]).args(extra);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    agent
}

fn ask(s: &Setup, args: &[&str]) -> Output {
    let mut all = vec!["-o", "sersync.xml"];
    all.extend_from_slice(args);
    sersync2(&s.dir, &all)
}

/// The status of the remote named `label` (`--status --json`).
fn remote_status(s: &Setup, label: &str) -> Value {
    let out = ask(s, &["--status", "--json"]);
    let st: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (st["remotes"].as_array().into_iter().flatten())
        .find(|r| r["remote"] == label)
        .cloned()
        .unwrap_or_else(|| panic!("no remote {label} in {st}"))
}

/// The three remotes' directories: the daemons', then the sshd's.
fn all_remotes(s: &Setup, sshd: &Sshd) -> Vec<PathBuf> {
    vec![s.a.data_dir(), s.b.data_dir(), sshd.dest_dir()]
}

fn logs(s: &Setup, sshd: &Sshd) -> String {
    format!("{}\n--- sshd log ---\n{}", s.logs(), tail(&sshd.log(), 30))
}

/// Files below `root`.
fn files(root: &Path) -> usize {
    (tree_snapshot(root).values())
        .filter(|e| matches!(e, Entry::File(_)))
        .count()
}

// Maintenance on one mirror reached over ssh: it is paused alone; the daemon remotes
// keep getting every change; resumed, it gets what waited.
#[test]
fn a_pause_of_an_ssh_remote_holds_it_while_the_daemon_remotes_flow() {
    let s = setup!();
    let sshd = Sshd::start();
    let xml = with_ssh_remote(&s, &sshd, &s.conf());
    let mut agent = start(&s, &xml, &[]);
    let remotes = all_remotes(&s, &sshd);
    let logs = || logs(&s, &sshd);
    s.write("before.txt", "before\n");
    wait_mirrored(&mut agent, &s.src, &remotes, "before", DEADLINE, &logs);

    let label = ssh_label(&sshd);
    let out = ask(&s, &["--pause", "--remote", &label]);
    assert!(out.status.success(), "--pause: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{label} (")),
        "{}",
        text(&out)
    );
    s.write("held/one.txt", "1\n");
    fs::write(s.p("before.txt"), "changed while paused\n").expect("edit");
    // The daemons get them.
    wait_mirrored(
        &mut agent,
        &s.src,
        &remotes[..2],
        "the daemon remotes flow",
        DEADLINE,
        &logs,
    );
    // The ssh remote waits, and says so.
    wait_until("the ssh remote is paused with 2 waiting", DEADLINE, || {
        agent.assert_running();
        let r = remote_status(&s, &label);
        r["paused"] == true && r["state"] == "paused" && r["queued"].as_u64() >= Some(2)
    });
    let dest = sshd.dest_dir();
    assert!(
        !dest.join("held/one.txt").exists(),
        "the paused remote got it"
    );
    assert_eq!(
        fs::read_to_string(dest.join("before.txt")).expect("before.txt"),
        "before\n"
    );
    for d in [&s.a, &s.b] {
        let r = remote_status(&s, &format!("{}::{}", d.ip(), d.module()));
        assert_eq!(r["paused"], false, "{r}");
    }

    let out = ask(&s, &["--resume", "--remote", &label]);
    assert!(out.status.success(), "--resume: {}", text(&out));
    wait_mirrored(&mut agent, &s.src, &remotes, "resumed", DEADLINE, &logs);
    agent.stop();
}

// The brake on mass deletes holds an `rm -rf` for the ssh remote too; creates still
// reach it; --release-deletes pushes the deletes to it.
#[test]
fn deletes_held_for_an_ssh_remote_reach_it_once_released() {
    let s = setup!();
    let sshd = Sshd::start();
    for d in 0..4 {
        for f in 0..5 {
            s.write(format!("d{d}/f{f}.txt"), format!("{d}/{f}\n"));
        }
    }
    let xml = with_ssh_remote(&s, &sshd, &s.conf()).replace(
        "  </sersync>",
        "    <deleteBrake percent=\"0\" count=\"3\" seconds=\"600\"/>\n  </sersync>",
    );
    let mut agent = start(&s, &xml, &["-r"]);
    let remotes = all_remotes(&s, &sshd);
    let logs = || logs(&s, &sshd);
    wait_mirrored(&mut agent, &s.src, &remotes, "the tree", DEADLINE, &logs);
    let label = ssh_label(&sshd);
    for d in 0..4 {
        remove_dir_all(s.p(format!("d{d}")));
    }
    wait_until("the ssh remote's deletes are held", DEADLINE, || {
        agent.assert_running();
        let r = remote_status(&s, &label);
        r["state"] == "deletes held" && r["held_deletes"].as_u64() > Some(0)
    });
    assert_eq!(files(&sshd.dest_dir()), 20, "held deletes went out");
    // Creates flow meanwhile.
    s.write("during.txt", "during\n");
    wait_until("the create reaches the ssh remote", DEADLINE, || {
        agent.assert_running();
        sshd.dest_dir().join("during.txt").exists()
    });
    assert_eq!(files(&sshd.dest_dir()), 21, "held deletes went out");
    let out = ask(&s, &["--release-deletes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("to {label}: pushed now")),
        "{}",
        text(&out)
    );
    wait_mirrored(&mut agent, &s.src, &remotes, "released", DEADLINE, &logs);
    agent.stop();
}

// A batch hook runs for the ssh remote's pushes as for the daemons', with that remote's
// label in SERSYNC_REMOTE and the pushed paths on stdin.
#[test]
fn a_batch_hook_runs_for_an_ssh_remote_with_its_label() {
    let s = setup!();
    let sshd = Sshd::start();
    let runs = s.dir.mkdir_p("runs");
    let hook = s.dir.join("hook");
    write_with_mode(
        &hook,
        format!(
            "#!/bin/sh\nout='{}'/$$\ncat > \"$out.tmp\"\n\
             printf '%s' \"$SERSYNC_REMOTE\" > \"$out.remote\"\nmv \"$out.tmp\" \"$out.paths\"\n",
            runs.display()
        )
        .as_bytes(),
        0o755,
    );
    let block = format!(
        "  <plugin name=\"command\" mode=\"batch\">\n    <param prefix=\"{}\"/>\n  \
         </plugin>\n</head>\n",
        esc(&hook.display().to_string())
    );
    let xml = with_ssh_remote(&s, &sshd, &s.conf())
        .replace(
            "  </sersync>\n",
            "    <plugin start=\"true\" name=\"command\"/>\n  </sersync>\n",
        )
        .replace("</head>\n", &block);
    let mut agent = start(&s, &xml, &[]);
    let remotes = all_remotes(&s, &sshd);
    let logs = || logs(&s, &sshd);
    for n in ["one.txt", "two.txt"] {
        s.write(n, format!("{n}\n"));
    }
    wait_mirrored(&mut agent, &s.src, &remotes, "the files", DEADLINE, &logs);
    let label = ssh_label(&sshd);
    let want: BTreeSet<&[u8]> = [&b"one.txt"[..], b"two.txt"].into_iter().collect();
    wait_until(
        "the ssh remote's hook runs saw both paths",
        DEADLINE,
        || {
            let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
            for e in fs::read_dir(&runs).expect("runs").flatten() {
                let p = e.path();
                if p.extension().and_then(|x| x.to_str()) != Some("paths") {
                    continue;
                }
                if fs::read_to_string(p.with_extension("remote"))
                    .ok()
                    .as_deref()
                    != Some(&label)
                {
                    continue;
                }
                let stdin = fs::read(&p).expect("paths");
                seen.extend(
                    stdin
                        .split(|b| *b == 0)
                        .filter(|x| !x.is_empty())
                        .map(<[u8]>::to_vec),
                );
            }
            want.iter().all(|w| seen.contains(*w))
        },
    );
    agent.stop();
}

// `-t` shows each of them in one config: the rules in order and on every remote's
// command lines, the brake's threshold, the batch hook's mode and timeout, and the ssh
// remote's own argv beside the daemons'.
#[test]
fn test_config_shows_the_rules_the_brake_the_hook_and_each_remotes_argv() {
    let s = setup!();
    let mut conf = s.conf();
    conf.excludes = Some(Vec::new());
    let last = format!("<remote ip=\"{}\" name=\"{}\"/>", s.b.ip(), s.b.module());
    let dest = s.dir.join("ssh-dest");
    let xml = conf
        .render()
        .replacen(
            "  <filter start=\"true\">\n",
            "  <filter start=\"true\">\n    <rule>+ /public/***</rule>\n    <rule>- *</rule>\n",
            1,
        )
        .replacen(
            &last,
            &format!(
                "{last}\n      <remote ip=\"127.0.0.1\" name=\"{}\" ssh=\"true\" \
                 sshCommand=\"ssh -p 2222\"/>",
                esc(&dest.display().to_string())
            ),
            1,
        )
        .replace(
            "  </sersync>\n",
            "    <deleteBrake percent=\"40\" count=\"10\" seconds=\"30\"/>\n    \
             <plugin start=\"true\" name=\"command\"/>\n  </sersync>\n",
        )
        .replace(
            "</head>\n",
            "  <plugin name=\"command\" mode=\"batch\" timeout=\"7\">\n    \
             <param prefix=\"/bin/true\"/>\n  </plugin>\n</head>\n",
        );
    fs::write(s.dir.join("sersync.xml"), &xml).expect("write");
    let out = sersync2(&s.dir, &["-t", "-o", "sersync.xml"]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    let rules = "'--filter=+ /public/***' '--filter=- *'";
    for remote in [
        format!("{}::{}", s.a.ip(), s.a.module()),
        format!("{}::{}", s.b.ip(), s.b.module()),
        format!("127.0.0.1:{}", dest.display()),
    ] {
        let at = shown
            .find(&format!("  remote {remote}\n"))
            .unwrap_or_else(|| panic!("no remote {remote} in:\n{shown}"));
        let section: Vec<&str> = shown[at..].lines().skip(1).take(2).collect();
        for line in &section {
            assert!(line.contains(rules), "{remote}: {line}");
            assert!(line.trim_end().ends_with(&remote), "{remote}: {line}");
        }
        if remote.contains(":/") {
            assert!(
                section
                    .iter()
                    .all(|l| l.contains("-e 'ssh -p 2222") && !l.contains("--password-file")),
                "{section:?}"
            );
        } else {
            assert!(
                section
                    .iter()
                    .all(|l| l.contains("--password-file=") && !l.contains(" -e ")),
                "{section:?}"
            );
        }
    }
    for want in [
        "filter rules (after the excludes; the first that matches decides, none: included):\n    + /public/***\n    - *\n",
        "delete brake: deletes held when more than 40% of the tree and 10 or more within 30 s",
        "mode=\"batch\"",
        "killed after 7s",
    ] {
        assert!(shown.contains(want), "`{want}` not in:\n{shown}");
    }
}

// The outside run: a start on an empty root with an ssh remote holding files logged
// two "push ... failed, retrying: rsync exit 25" warnings before the hold (over ssh rsync
// exits 25 when `--max-delete=0` skipped deletes; over a daemon it exits 0). The skipped
// deletes are no failure: held at once, nothing retried.
#[test]
fn an_empty_root_against_an_ssh_remote_holding_files_is_held_without_retries() {
    let s = setup!();
    let sshd = Sshd::start();
    fs::write(sshd.dest_dir().join("kept.txt"), "on the remote\n").expect("write the remote");
    let mut agent = start(&s, &with_ssh_remote(&s, &sshd, &s.conf()), &["-r"]);
    let label = ssh_label(&sshd);
    wait_until("the ssh remote's full sync is held", DEADLINE, || {
        agent.assert_running();
        remote_status(&s, &label)["state"] == "deletes held"
    });
    assert!(sshd.dest_dir().join("kept.txt").exists(), "kept");
    let log = agent.log();
    assert!(!log.contains("failed, retrying"), "{}", tail(&log, 20));
    agent.stop();
}
