//! Hostile config files: whatever sits at the config's path, `-t` answers within its
//! deadline (exit 2 with the file and the cause, or 0 for a big but sane file), and a
//! SIGHUP that meets it keeps the running config and goes on syncing. Before, a fifo
//! hung `-t`, a link to `/dev/zero` and SIGHUP aborted the running agent, and 50,000
//! nested elements aborted `-t` on memory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::agent::{Agent, Conf, Setup};
use crate::support::*;

/// `sersync2 -t -o CONF` run to its end within [`DEADLINE`] (killed and failed past
/// it): (exit code, stdout, stderr).
fn check(dir: &Dir, conf: &Path) -> (i32, String, String) {
    let out_path = dir.join("t.out");
    let err_path = dir.join("t.err");
    let mut child = Command::new(sersync_bin())
        .args(["-t", "-o"])
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
    vec![
        ("fifo", fifo, "not a regular file but a fifo"),
        ("zero", zero, "not a regular file but a character device"),
        (
            "big",
            big,
            "4194305 bytes, over the limit of 4194304 bytes (4 MiB)",
        ),
        ("deep", deep, "<a> is nested more than 64 elements deep"),
    ]
}

#[test]
fn t_refuses_a_fifo_a_device_a_file_over_the_limit_and_deep_nesting() {
    let s = Setup::new("cfg-hostile-t");
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
    }
}

#[test]
fn t_accepts_a_huge_comment_and_many_elements() {
    let s = Setup::new("cfg-big-t");
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
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("OK"), "{out}");
    assert!(
        err.contains("unknown element <head/a> ignored")
            && err.contains("99900 more unknown elements ignored"),
        "{err}"
    );
    // Not 100,000 warnings.
    assert!(err.lines().count() < 200, "{} lines", err.lines().count());
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
    let s = Setup::new("cfg-hostile-hup");
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
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
