//! Hostile config files: whatever sits at the config's path, `-t` and the start answer
//! within the deadline (exit 2 with the file and the cause, or 0 for a big but sane
//! file), and a SIGHUP that meets it keeps the running config and goes on syncing.
//! Before, a fifo hung `-t`, a link to `/dev/zero` and SIGHUP aborted the running agent,
//! and 50,000 nested elements aborted `-t` on memory. Then what rsync itself would
//! refuse (password files, option-like names) and status addresses, refused by `-t`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

/// `sersync2 -t -o CONF` run to its end within [`DEADLINE`] (killed and failed past
/// it): (exit code, stdout, stderr).
fn check(dir: &Dir, conf: &Path) -> (i32, String, String) {
    run_within(dir, &["-t"], conf)
}

/// `sersync2 ARGS -o CONF`, as [`check`].
fn run_within(dir: &Dir, args: &[&str], conf: &Path) -> (i32, String, String) {
    let out_path = dir.join("t.out");
    let err_path = dir.join("t.err");
    let mut child = Command::new(sersync_bin())
        .args(args)
        .arg("-o")
        .arg(conf)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("t.out"))
        .stderr(fs::File::create(&err_path).expect("t.err"))
        .spawn()
        .expect("spawn sersync2 -t");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sersync2 -t -o {} did not end within {DEADLINE:?}",
                conf.display()
            );
        }
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    (
        status.code().unwrap_or(-1),
        read(&out_path),
        read(&err_path),
    )
}

/// A valid config text with `extra` just before `</head>`.
fn with_extra(conf: &Conf, extra: &str) -> String {
    let text = conf.render();
    let at = text.rfind("</head>").expect("</head>");
    format!("{}{extra}\n{}", &text[..at], &text[at..])
}

/// The hostile files, each (name, how to make it at `path` from a valid config text,
/// what the refusal must say).
type Make = fn(&Path, &str);

fn hostile() -> Vec<(&'static str, Make, &'static str)> {
    fn fifo(path: &Path, _: &str) {
        let made = Command::new("mkfifo").arg(path).status().expect("mkfifo");
        assert!(made.success());
    }
    fn zero(path: &Path, _: &str) {
        std::os::unix::fs::symlink("/dev/zero", path).expect("symlink to /dev/zero");
    }
    fn big(path: &Path, text: &str) {
        // Valid XML, a comment making it one byte over 4 MiB.
        let pad = 4 * 1024 * 1024 + 1 - text.len() - "<!--  -->\n".len();
        let at = text.find("<head").expect("<head");
        let body = format!(
            "{}<!-- {} -->\n{}",
            &text[..at],
            "x".repeat(pad),
            &text[at..]
        );
        assert_eq!(body.len(), 4 * 1024 * 1024 + 1);
        fs::write(path, body).expect("write the big config");
    }
    fn deep(path: &Path, text: &str) {
        let at = text.rfind("</head>").expect("</head>");
        let n = 50_000;
        let body = format!(
            "{}\n{}{}\n{}",
            &text[..at],
            "<a>".repeat(n),
            "</a>".repeat(n),
            &text[at..]
        );
        fs::write(path, body).expect("write the deep config");
    }
    fn typo(path: &Path, text: &str) {
        // One remote misspelt: refused, never a config with one remote fewer.
        let body = text.replacen("<remote ", "<remotee ", 1);
        assert_ne!(body, text);
        fs::write(path, body).expect("write the config with a typo");
    }
    fn misspelt(path: &Path, text: &str) {
        // An option rsync does not know: every push would fail with its usage error.
        let body = text.replacen(
            "<commonParams params=\"",
            "<commonParams params=\"--bwlimt=10 ",
            1,
        );
        assert_ne!(body, text);
        fs::write(path, body).expect("write the config with a misspelt option");
    }
    fn twice(path: &Path, text: &str) {
        let at = text.find("</sersync>").expect("</sersync>");
        let body = format!(
            "{}<deleteBrake count=\"10\"/>\n<deleteBrake count=\"20\"/>\n{}",
            &text[..at],
            &text[at..]
        );
        fs::write(path, body).expect("write the config with an element twice");
    }
    vec![
        (
            "misspelt",
            misspelt,
            "rsync refuses <commonParams>: --bwlimt=10: unknown option",
        ),
        (
            "twice",
            twice,
            "<deleteBrake> is written twice (also at line ",
        ),
        ("fifo", fifo, "not a regular file but a fifo"),
        ("zero", zero, "not a regular file but a character device"),
        (
            "big",
            big,
            "4194305 bytes, over the limit of 4194304 bytes (4 MiB)",
        ),
        ("deep", deep, "<a> is nested more than 64 elements deep"),
        (
            "typo",
            typo,
            "unknown element <remotee> in <localpath>: did you mean <remote>?",
        ),
    ]
}

#[test]
fn t_and_start_refuse_a_fifo_a_device_a_file_over_the_limit_and_deep_nesting() {
    let s = setup!();
    let text = s.conf().render();
    for (name, make, cause) in hostile() {
        let path = s.dir.join(format!("{name}.xml"));
        make(&path, &text);
        let (code, out, err) = check(&s.dir, &path);
        assert_eq!(code, 2, "{name}: want exit 2\n{out}\n{err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains(cause),
            "{name}: the error names the file and `{cause}`:\n{err}"
        );
        assert!(!out.contains("OK"), "{name}: {out}");
        // Nor does the agent start on it.
        let (code, out, err) = run_within(&s.dir, &["-n", "2"], &path);
        assert_eq!(code, 2, "{name}: the agent must not start\n{out}\n{err}");
        assert!(err.contains(cause), "{name}: {err}");
    }
}

#[test]
fn t_accepts_a_huge_comment_and_names_the_first_of_many_unknown_elements() {
    let s = setup!();
    let conf = s.conf();
    let comment = s.dir.join("comment.xml");
    fs::write(
        &comment,
        with_extra(&conf, &format!("<!-- {} -->", "x <a> & ".repeat(400_000))),
    )
    .expect("write");
    assert!(fs::metadata(&comment).expect("stat").len() > 3_000_000);
    let (code, out, err) = check(&s.dir, &comment);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("OK"), "{out}");
    let many = s.dir.join("many.xml");
    fs::write(&many, with_extra(&conf, &"<a/>\n".repeat(100_000))).expect("write");
    let (code, out, err) = check(&s.dir, &many);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("unknown element <a> in <head>")
            && err.contains("; and 99995 more unknown names"),
        "{err}"
    );
    // Not 100,000 errors.
    assert!(err.lines().count() < 5, "{} lines", err.lines().count());
}

/// Puts what `make` builds at the config's path, atomically (a rename over it).
fn replace_config(dir: &Dir, make: Make, text: &str) -> PathBuf {
    let path = dir.join("sersync.xml");
    let tmp = dir.join("sersync.xml.new");
    let _ = fs::remove_file(&tmp);
    make(&tmp, text);
    fs::rename(&tmp, &path).expect("replace the config");
    path
}

// A config replaced by a link to /dev/zero and SIGHUP aborted the running agent (it
// read without end); a fifo would have hung its reload, and with it every signal.
#[test]
fn sighup_with_a_hostile_config_keeps_the_running_one_and_syncing() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    let text = s.conf().render();
    for (i, (name, make, cause)) in hostile().into_iter().enumerate() {
        replace_config(&s.dir, make, &text);
        agent.signal(libc::SIGHUP);
        let what = format!("the {name} config is refused at SIGHUP");
        wait_until(&what, DEADLINE, || {
            agent.assert_running();
            agent.log().matches("stays in use").count() > i
        });
        let log = agent.log();
        let line = log
            .lines()
            .filter(|l| l.contains("stays in use"))
            .nth(i)
            .unwrap_or_default();
        assert!(
            line.contains("sersync.xml") && line.contains(cause),
            "{name}: the error names the file and `{cause}`: {line}"
        );
        assert_eq!(log.matches("live:").count(), 1, "nothing restarted:\n{log}");
        s.write(format!("after-{name}/f.txt"), format!("{name}\n"));
        s.wait(&mut agent, &format!("sync goes on after the {name} config"));
    }
    // A good file again: the next SIGHUP takes it.
    fs::remove_file(s.dir.join("sersync.xml")).expect("remove");
    fs::write(s.dir.join("sersync.xml"), &text).expect("write");
    agent.signal(libc::SIGHUP);
    wait_until("the good config is reloaded", DEADLINE, || {
        agent.assert_running();
        agent.log().matches("live:").count() == 2
    });
    agent.stop();
}

// ---------------------------------------------------------------------------
// What rsync would refuse, refused by -t
// ---------------------------------------------------------------------------

/// Real rsync, as the agent runs it, pushing `src` to `daemon` with `password_file`:
/// (success, stderr).
fn rsync_with(daemon: &RsyncDaemon, src: &Path, password_file: &Path) -> (bool, String) {
    let out = Command::new("rsync")
        .args(["-r", "--contimeout=10"])
        .arg(format!("--port={}", daemon.port()))
        .arg(format!("--password-file={}", password_file.display()))
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", daemon.remote()))
        .stdin(Stdio::null())
        .output()
        .expect("run rsync");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// -t accepted a password file that rsync refuses (mode 0644, or not root's while rsync
// runs as root): every push then failed with rsync's "syntax or usage error". Each file
// here is given to real rsync too: -t must refuse exactly what rsync refuses.
#[test]
fn t_refuses_the_password_files_rsync_refuses_and_only_those() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup!();
    let pass = s.dir.join("copy.pas");
    fs::copy(s.a.password_file(), &pass).expect("copy the password file");
    let mut conf = s.conf();
    conf.transport = Transport::Daemon {
        port: s.a.port(),
        user: s.a.user().to_owned(),
        password_file: pass.clone(),
    };
    let conf_path = s.dir.write("pass.xml", conf.render());
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let root = me == 0;
    // (mode, owner uid, refused, what -t says)
    let mut cases = vec![
        (0o600, None, false, ""),
        (0o640, None, false, ""),
        (0o660, None, false, ""),
        (0o601, None, false, ""),
        (0o644, None, true, "mode 0644 lets others read or write it"),
        (0o604, None, true, "mode 0604 lets others read or write it"),
        (0o602, None, true, "mode 0602 lets others read or write it"),
    ];
    if root {
        cases.push((0o600, Some(65534), true, "owned by uid 65534"));
        cases.push((0o640, Some(65534), true, "owned by uid 65534"));
    }
    for (mode, owner, refused, says) in cases {
        fs::set_permissions(&pass, fs::Permissions::from_mode(mode)).expect("chmod");
        let uid = owner.unwrap_or(me);
        std::os::unix::fs::chown(&pass, Some(uid), None).expect("chown");
        let (pushed, rsync_err) = rsync_with(&s.a, &s.src, &pass);
        assert_eq!(
            pushed, !refused,
            "real rsync with mode {mode:o} owner {uid}: {rsync_err}"
        );
        let (code, out, err) = check(&s.dir, &conf_path);
        if refused {
            assert_eq!(code, 2, "mode {mode:o} owner {uid}:\n{out}\n{err}");
            assert!(
                err.contains(&conf_path.display().to_string())
                    && err.contains(&format!("<auth passwordfile=\"{}\">", pass.display()))
                    && err.contains(says),
                "mode {mode:o} owner {uid}: {err}"
            );
            // rsync's own words are quoted.
            let rsync_says = rsync_err
                .lines()
                .find_map(|l| l.strip_prefix("ERROR: "))
                .unwrap_or_default();
            assert!(
                !rsync_says.is_empty() && err.contains(rsync_says),
                "{rsync_err}\n{err}"
            );
        } else {
            assert_eq!(code, 0, "mode {mode:o} owner {uid}:\n{out}\n{err}");
        }
    }
}

#[test]
fn t_refuses_user_and_module_names_that_begin_with_a_dash() {
    let s = setup!();
    let mut conf = s.conf();
    conf.transport = Transport::Daemon {
        port: s.a.port(),
        user: "-oProxyCommand=x".to_owned(),
        password_file: s.a.password_file(),
    };
    let path = s.dir.write("user.xml", conf.render());
    let (code, out, err) = check(&s.dir, &path);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("<auth users=\"-oProxyCommand=x\">: a user name must not begin with \"-\""),
        "{err}"
    );
    let mut conf = s.conf();
    conf.remotes[1].1 = "--delete".to_owned();
    let path = s.dir.write("module.xml", conf.render());
    let (code, out, err) = check(&s.dir, &path);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains(&format!("{}:", path.display()))
            && err
                .contains("<remote name=\"--delete\">: a module or directory name must not begin"),
        "{err}"
    );
}

/// The test's config with the status endpoint on `port` at `hostip`.
fn with_hostip(s: &Setup, hostip: &str, port: u16) -> String {
    let mut conf = s.conf();
    conf.status_port = Some(port);
    let text = conf.render();
    assert!(text.contains("hostip=\"127.0.0.1\""));
    text.replace("hostip=\"127.0.0.1\"", &format!("hostip=\"{hostip}\""))
}

// `hostip="[::1]"` passed -t and then never bound; `localhostx` passed too.
#[test]
fn t_checks_the_status_address_and_ipv6_prints_with_brackets() {
    let s = setup!();
    let port = free_port("::1");
    for (hostip, url) in [
        ("[::1]", format!("http://[::1]:{port}/status")),
        ("::1", format!("http://[::1]:{port}/status")),
        ("127.0.0.1", format!("http://127.0.0.1:{port}/status")),
    ] {
        let path = s.dir.write("host.xml", with_hostip(&s, hostip, port));
        let (code, out, err) = check(&s.dir, &path);
        assert_eq!(code, 0, "{hostip}:\n{out}\n{err}");
        assert!(
            out.contains(&format!("status: {url} and /metrics")),
            "{out}"
        );
    }
    for (hostip, says) in [
        ("localhostx", "cannot resolve localhostx"),
        // Documentation range: no host has it, so nothing can listen there.
        ("[2001:db8::1]", "cannot listen on 2001:db8::1"),
        (
            "[127.0.0.1]",
            "brackets hold an IPv6 address and nothing else",
        ),
        (
            "[::1]:8008",
            "brackets hold an IPv6 address and nothing else",
        ),
    ] {
        let path = s.dir.write("host.xml", with_hostip(&s, hostip, port));
        let (code, out, err) = check(&s.dir, &path);
        assert_eq!(code, 2, "{hostip}:\n{out}\n{err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains(says),
            "{hostip}: {err}"
        );
    }
}

#[test]
fn an_ipv6_status_address_serves_and_is_logged_as_a_url() {
    let s = setup!();
    let port = free_port("::1");
    fs::write(s.dir.join("sersync.xml"), with_hostip(&s, "[::1]", port)).expect("write");
    let mut cmd = crate::support::command(&s.dir);
    cmd.args(["-n", "4", "-o"]).arg(s.dir.join("sersync.xml"));
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    wait_until("the status endpoint is up on [::1]", DEADLINE, || {
        agent.assert_running();
        agent.log().contains(&format!(
            "status on http://[::1]:{port}/status and /metrics"
        ))
    });
    let out = Command::new(sersync_bin())
        .args(["--status", "-o"])
        .arg(s.dir.join("sersync.xml"))
        .current_dir(s.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run --status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("127.0.0.1::mod"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.stop();
}

// `-t` passed a config with `<remotee>` (a typo: that remote was never pushed to) and
// ignored attributes it does not know (`bwlimit=` on `<remote>`); the agent started on
// both with a warning at most. Both are refused now, by -t and at start, naming the
// file, the line and the nearest known name.
#[test]
fn t_and_start_refuse_an_unknown_element_or_attribute_naming_line_and_nearest_name() {
    let s = setup!();
    let text = s.conf().render();
    let second = format!("<remote ip=\"{}\"", s.b.ip());
    assert!(text.contains(&second), "{text}");
    let line = text[..text.find(&second).expect("second remote")]
        .matches('\n')
        .count()
        + 1;
    let cases = [
        (
            "element",
            text.replacen(&second, &format!("<remotee ip=\"{}\"", s.b.ip()), 1),
            "unknown element <remotee> in <localpath>: did you mean <remote>?",
        ),
        (
            "attribute",
            text.replacen(&second, &format!("{second} bwlimit=\"2000\""), 1),
            "unknown attribute bwlimit= on <remote>: <remote> takes one of ip=, name=, ssh=",
        ),
    ];
    for (name, body, says) in cases {
        let path = s.dir.write(format!("{name}.xml"), &body);
        let want = format!("{}:{line}: {says}", path.display());
        let (code, out, err) = check(&s.dir, &path);
        assert_eq!(code, 2, "{name}: -t must refuse it\n{out}\n{err}");
        assert!(err.contains(&want), "{name}: want `{want}`:\n{err}");
        let (code, out, err) = run_within(&s.dir, &["-n", "2"], &path);
        assert_eq!(code, 2, "{name}: the agent must not start\n{out}\n{err}");
        assert!(err.contains(&want), "{name}: {err}");
    }
}

// What sersync 2.5.4 ships (../shared/compat holds its confxml.xml byte for byte) keeps
// loading: every name in it is known, <fileSystem xfs> and <head version> included.
#[test]
fn t_accepts_sersync_2_5_4_s_own_config() {
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/confxml-2.5.4.xml");
    let Ok(bytes) = fs::read(&original) else {
        eprintln!("skipped: {} not present", original.display());
        return;
    };
    let dir = test_dir!();
    let src = dir.mkdir_p("src");
    // Latin-1 declared, ASCII only: the paths can be swapped as text.
    let text = String::from_utf8_lossy(&bytes)
        .replace("/opt/tongbu", &src.display().to_string())
        .replace(
            "/tmp/rsync_fail_log.sh",
            &dir.join("fail.sh").display().to_string(),
        );
    let path = dir.write("confxml.xml", text);
    let (code, out, err) = check(&dir, &path);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("OK"), "{out}");
    assert!(!err.contains("unknown"), "{err}");
}

// `hostip="localhostx"` passed -t while the endpoint was off, and so did a remote whose
// name does not resolve: every push to it then failed. -t warns (a warning: the unit
// runs -t before each start, and a resolver not up yet at boot must not keep the agent
// from starting).
#[test]
fn t_warns_of_a_remote_or_hostip_that_does_not_resolve() {
    let s = setup!();
    let mut conf = s.conf();
    conf.remotes[1].0 = "nosuchhost.invalid".to_owned();
    let text = conf.render().replacen(
        "<debug ",
        "<host hostip=\"localhostx.invalid\" port=\"8008\"/>\n  <debug ",
        1,
    );
    let path = s.dir.write("resolve.xml", text);
    let (code, out, err) = check(&s.dir, &path);
    assert_eq!(code, 0, "{out}\n{err}");
    let remote = format!(
        "warning: remote nosuchhost.invalid::{}: nosuchhost.invalid ",
        s.b.module()
    );
    assert!(out.contains(&remote), "want `{remote}`:\n{out}");
    assert!(
        out.contains("warning: <host hostip=\"localhostx.invalid\">: ")
            && out.contains("unused while <host start> is not \"true\""),
        "{out}"
    );
    assert!(
        !out.contains(&format!("warning: remote {}::", s.a.ip())),
        "a name that resolves is not warned about:\n{out}"
    );
}

// `-t --probe` asks each remote, over real daemons and a real sshd: every one that
// answers says so; a module that does not exist, a wrong password, a port nobody
// listens on and an ssh directory that does not exist each fail with rsync's own
// words, and the exit is 1.
#[test]
fn t_probe_asks_each_remote_and_names_what_did_not_answer() {
    let s = setup!();
    let probe = |conf: &Conf, name: &str| {
        let path = s.dir.write(format!("{name}.xml"), conf.render());
        run_within(&s.dir, &["-t", "--probe"], &path)
    };
    let conf = s.conf();
    let (code, out, err) = probe(&conf, "good");
    assert_eq!(code, 0, "{out}\n{err}");
    for d in [&s.a, &s.b] {
        let line = format!("probe {}::{}: answers", d.ip(), d.module());
        assert!(out.contains(&line), "want `{line}`:\n{out}");
    }

    let mut conf = s.conf();
    conf.remotes[1].1 = "nomod".to_owned();
    let (code, out, err) = probe(&conf, "module");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains(&format!("probe {}::{}: answers", s.a.ip(), s.a.module())),
        "{out}"
    );
    assert!(
        out.contains(&format!("probe {}::nomod: FAILED: rsync exit 5", s.b.ip()))
            && out.contains("@ERROR: Unknown module 'nomod'"),
        "{out}"
    );
    assert!(err.contains("1 of 2 remote(s) did not answer"), "{err}");

    let wrong = s.dir.write("wrong.pas", "not-the-password\n");
    fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let mut conf = s.conf();
    conf.transport = Transport::Daemon {
        port: s.a.port(),
        user: s.a.user().to_owned(),
        password_file: wrong,
    };
    let (code, out, err) = probe(&conf, "auth");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("@ERROR: auth failed on module"), "{out}");
    assert!(err.contains("2 of 2 remote(s) did not answer"), "{err}");

    let mut conf = s.conf();
    conf.transport = Transport::Daemon {
        port: free_port("127.0.0.1"),
        user: s.a.user().to_owned(),
        password_file: s.a.password_file(),
    };
    conf.remotes.truncate(1);
    conf.remotes[0].0 = "127.0.0.1".to_owned();
    let (code, out, err) = probe(&conf, "refused");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("Connection refused"), "{out}");

    let sshd = Sshd::start();
    let conf = Conf::ssh(&s.src, &sshd, &s.dir.join("fail.sh"));
    let (code, out, err) = probe(&conf, "ssh");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(": answers"), "{out}");
    let mut conf = Conf::ssh(&s.src, &sshd, &s.dir.join("fail.sh"));
    conf.remotes[0].1 = sshd.dest_dir().join("missing").display().to_string();
    let (code, out, err) = probe(&conf, "ssh-missing");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("FAILED") && out.contains("missing"), "{out}");
}

// Found by an outside run: `--probe` said a module with `read only = yes` "answers",
// and every push to it then failed. It now asks for a dry-run push too: such a module
// is named read only, with what to change, and the exit is 1.
#[test]
fn t_probe_names_a_read_only_module_and_exits_1() {
    let s = setup!();
    s.b.set_read_only(true);
    let path = s.dir.write("ro.xml", s.conf().render());
    let (code, out, err) = run_within(&s.dir, &["-t", "--probe"], &path);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains(&format!("probe {}::{}: answers", s.a.ip(), s.a.module())),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("probe {}::{}:", s.b.ip(), s.b.module())))
        .unwrap_or_else(|| panic!("no probe line for b:\n{out}"));
    assert!(
        line.contains("READ-ONLY")
            && line.contains("read only = yes")
            && line.contains("every push will fail"),
        "{line}"
    );
    assert!(
        err.contains("refuse pushes") && err.contains(&format!("{}::{}", s.b.ip(), s.b.module())),
        "{err}"
    );
    // Nothing was written to it.
    assert_eq!(fs::read_dir(s.b.data_dir()).expect("data").count(), 0);
    s.b.set_read_only(false);
    let (code, out, err) = run_within(&s.dir, &["-t", "--probe"], &path);
    assert_eq!(code, 0, "writable again: {out}\n{err}");
}

// Found by an outside run: `-t` named a remote `user@host::module` while `--status`,
// the logs and `--wait-synced --remote` name it `host::module`. One label now.
#[test]
fn t_names_each_remote_as_status_does() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    let (code, out, err) = check(&s.dir, &s.dir.join("sersync.xml"));
    assert_eq!(code, 0, "{out}\n{err}");
    let status = sersync2(&s.dir, &["-o", "sersync.xml", "--status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("--status --json: {e}: {}", text(&status)));
    let labels: Vec<&str> = doc["remotes"]
        .as_array()
        .expect("remotes")
        .iter()
        .filter_map(|r| r["remote"].as_str())
        .collect();
    assert_eq!(labels.len(), 2, "{doc}");
    for l in labels {
        assert!(
            out.contains(&format!("  remote {l}\n")),
            "-t names {l} as --status does:\n{out}"
        );
    }
    agent.stop();
}
