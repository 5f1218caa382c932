//! Per-remote options (`<remote ssh port user passwordfile params timeout sshCommand>`)
//! over real daemons and a real sshd: one config mixing an ssh remote and daemon
//! remotes, each reached with its own settings, and `-t` printing each one's own
//! command lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

/// `sersync2 -t -o CONF` in `dir`: (exit code, stdout, stderr).
fn check(dir: &Dir, conf: &Path) -> (i32, String, String) {
    let out = Command::new(sersync_bin())
        .args(["-t", "-o"])
        .arg(conf)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2 -t");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The config: `<rsync>` for daemon `a` (its port, user and password file); `b`, another
/// daemon on another port with another password, set on its `<remote>` with extra
/// options and a timeout; the sshd's directory as an ssh remote with its own command.
fn mixed(src: &Path, dir: &Dir, a: &RsyncDaemon, b: &RsyncDaemon, sshd: &Sshd) -> String {
    let text = Conf::daemons(src, &[a], &dir.join("fail.sh")).render();
    let first = format!("<remote ip=\"{}\" name=\"{}\"/>", a.ip(), a.module());
    assert!(text.contains(&first), "{text}");
    let more = format!(
        "{first}\n      <remote ip=\"{}\" name=\"{}\" port=\"{}\" user=\"{}\" \
         passwordfile=\"{}\" params=\"--bwlimit=50000\" timeout=\"90\"/>\n      \
         <remote ip=\"{}\" name=\"{}\" ssh=\"true\" sshCommand=\"{}\"/>",
        b.ip(),
        b.module(),
        b.port(),
        b.user(),
        esc(&b.password_file().display().to_string()),
        sshd.host(),
        esc(&sshd.dest_dir().display().to_string()),
        esc(&sshd.ssh_command())
    );
    text.replacen(&first, &more, 1)
}

// One config pushes to an rsync daemon as <rsync> says, to a second daemon on another
// port with another user's password file and its own options, and to an ssh remote
// with its own ssh command: every change (a create, an edit, a rename of a directory,
// a delete) reaches all three, and -t prints each remote's own command lines.
#[test]
fn one_config_mixes_ssh_and_daemon_remotes_each_with_its_own_options() {
    let dir = Dir::new("remotes-mixed");
    let src = dir.mkdir_p("src");
    let a = RsyncDaemon::start("127.0.0.1");
    let b = RsyncDaemon::start("127.0.0.2");
    assert_ne!(a.port(), b.port(), "two daemons, two ports");
    assert_ne!(a.password(), b.password(), "two daemons, two passwords");
    let sshd = Sshd::start();
    let text = mixed(&src, &dir, &a, &b, &sshd);
    let path = dir.write("sersync.xml", &text);

    let (code, out, err) = check(&dir, &path);
    assert_eq!(code, 0, "{out}\n{err}\n{text}");
    let section = |dest: &str| -> String {
        let at = out
            .find(&format!("  remote {dest}\n"))
            .unwrap_or_else(|| panic!("no `remote {dest}` in:\n{out}"));
        out[at..].lines().take(3).collect::<Vec<_>>().join("\n")
    };
    let sa = section(&format!("{}::{}", a.ip(), a.module()));
    assert!(sa.contains(&format!("--port={}", a.port())), "{sa}");
    assert!(!sa.contains("--bwlimit"), "{sa}");
    let sb = section(&format!("{}::{}", b.ip(), b.module()));
    for w in [
        format!("--port={}", b.port()),
        format!("--password-file={}", b.password_file().display()),
        "--bwlimit=50000".to_owned(),
        "--timeout=90".to_owned(),
    ] {
        assert!(sb.contains(&w), "{w} not in:\n{sb}");
    }
    let sc = section(&format!("{}:{}", sshd.host(), sshd.dest_dir().display()));
    assert!(sc.contains(" -e "), "{sc}");
    assert!(
        !sc.contains("--port") && !sc.contains("--password-file"),
        "{sc}"
    );

    let mut cmd = command(&dir);
    cmd.args(["-n", "4", "-o"]).arg(&path);
    let mut agent = Agent::spawn(cmd, dir.join("agent.err"));
    agent.wait_live();
    let remotes: Vec<PathBuf> = vec![a.data_dir(), b.data_dir(), sshd.dest_dir()];
    let logs = || {
        format!(
            "--- b's log ---\n{}\n--- sshd log ---\n{}",
            tail(&b.log(), 30),
            tail(&sshd.log(), 30)
        )
    };
    dir.write("src/one.txt", b"one\n");
    dir.write("src/d/e/two.txt", b"two\n");
    wait_mirrored(&mut agent, &src, &remotes, "create", DEADLINE, &logs);
    dir.write("src/one.txt", b"one, edited\n");
    wait_mirrored(&mut agent, &src, &remotes, "edit", DEADLINE, &logs);
    rename(src.join("d"), src.join("moved"));
    wait_mirrored(
        &mut agent,
        &src,
        &remotes,
        "rename a directory",
        DEADLINE,
        &logs,
    );
    remove_file(src.join("moved/e/two.txt"));
    wait_mirrored(&mut agent, &src, &remotes, "delete", DEADLINE, &logs);
    // Each remote's calls carried its own options (debug logs every argv).
    let log = agent.log();
    assert!(log.contains("--bwlimit=50000"), "{}", tail(&log, 30));
    agent.stop();
}

// A bad per-remote value stops -t and the start, naming the file, the line and what to
// write: an unknown transport, a negative timeout, an option that follows links.
#[test]
fn t_refuses_a_bad_per_remote_value_with_file_line_and_what_to_write() {
    let dir = Dir::new("remotes-bad");
    let src = dir.mkdir_p("src");
    let text = Conf::new(
        &src,
        vec![("127.0.0.1".into(), "mod".into())],
        Transport::Ssh {
            command: "ssh".into(),
        },
        &dir.join("fail.sh"),
    )
    .render();
    let first = "<remote ip=\"127.0.0.1\" name=\"mod\"/>";
    let line = text[..text.find(first).expect("the remote")]
        .matches('\n')
        .count()
        + 1;
    for (attrs, says) in [
        (
            "ssh=\"rsh\"",
            "<remote ssh=\"rsh\">: must be \"true\" (this remote over ssh, host:dir) or \
             \"false\" (through an rsync daemon, host::module)",
        ),
        (
            "timeout=\"-1\"",
            "<remote timeout=\"-1\">: not a valid number",
        ),
        (
            "params=\"-aL\"",
            "<remote params=\"-aL\">: -L makes rsync follow the links in the tree",
        ),
        // Accepted by -t before, then --wait-synced said synced with nothing sent, or
        // the watched files were deleted once sent.
        (
            "params=\"--dry-run\"",
            "<remote params=\"--dry-run\">: --dry-run breaks the mirror",
        ),
        (
            "params=\"--remove-source-files\"",
            "<remote params=\"--remove-source-files\">: --remove-source-files breaks the mirror",
        ),
    ] {
        let path = dir.write(
            "bad.xml",
            text.replacen(
                first,
                &format!("<remote ip=\"127.0.0.1\" name=\"mod\" {attrs}/>"),
                1,
            ),
        );
        let (code, out, err) = check(&dir, &path);
        assert_eq!(code, 2, "{attrs}: -t must refuse it\n{out}\n{err}");
        let want = format!("{}:{line}: {says}", path.display());
        assert!(err.contains(&want), "{attrs}: want `{want}`:\n{err}");
    }
}
