//! The fail log: its exact format (golden file), quoting, parsing back, dedup, clearing.

use super::*;
use crate::config::{Remote, RsyncOptions};
use crate::sync::job::RemoteId;
use std::os::unix::fs::PermissionsExt;

fn target(root: &str, ip: &str) -> Target {
    Target {
        root: PathBuf::from(root),
        remote: Remote {
            ip: ip.into(),
            name: "mod".into(),
        },
        opts: RsyncOptions {
            params: vec!["-artuz".into()],
            auth: Some(("user".into(), PathBuf::from("/etc/rsync.pas"))),
            port: None,
            timeout: None,
            ssh: None,
            batch: 100,
        },
        delete: true,
        full_excludes: vec![],
    }
}

fn hostile() -> Vec<PathBuf> {
    [
        &b"a b.txt"[..],
        b"it's \"quoted\"",
        b"$(touch pwned)`id`",
        b"line\nbreak",
        b"-rf",
        b"bad\xffutf8",
    ]
    .iter()
    .map(|b| PathBuf::from(OsStr::from_bytes(b)))
    .collect()
}

#[test]
fn golden_fail_log_format() {
    let targets = vec![target("/www", "10.0.0.2"), target("/www", "10.0.0.3")];
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 2);
    log.add(RemoteId(0), &Job::Paths(hostile()), 5);
    log.add(RemoteId(1), &Job::Full, 10);
    let text = log.render(&targets);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fail_log.sh");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).expect("write golden");
    }
    let want = std::fs::read(&golden).expect("golden file tests/golden/fail_log.sh");
    assert_eq!(
        String::from_utf8_lossy(&text),
        String::from_utf8_lossy(&want),
        "fail log format changed; if intended, rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn quoting_round_trips_any_bytes() {
    for p in hostile() {
        let q = quote(p.as_os_str());
        let words = split(&q).expect("parses");
        assert_eq!(words, [p.as_os_str().to_owned()]);
    }
}

#[test]
fn rendered_log_parses_back_to_the_same_owed_paths() {
    let targets = vec![target("/www", "10.0.0.2")];
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    log.add(RemoteId(0), &Job::Paths(hostile()), 5);
    let text = log.render(&targets);
    let mut back = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for cmd in parse_script(&text) {
        back.absorb(cmd, &targets);
    }
    assert_eq!(back.owed, log.owed);
    assert!(back.foreign.is_empty());
}

#[test]
fn the_originals_entries_are_understood() {
    let text = b"#errno 2560\ncd /www && rsync -artuz -R \"./a/b c.txt\" user@10.0.0.2::mod --password-file=/etc/rsync.pas >/dev/null 2>&1\n\n";
    let cmds = parse_script(text);
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].status, 2560);
    assert_eq!(cmds[0].cwd, Path::new("/www"));
    assert!(cmds[0].argv.iter().any(|a| a == "./a/b c.txt"));
}

#[test]
fn commands_for_unknown_remotes_are_kept_verbatim() {
    let targets = vec![target("/www", "10.0.0.2")];
    let text = b"#errno 5\ncd '/other' && rsync '-a' './x' 'h::m'\n\n";
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    for cmd in parse_script(text) {
        log.absorb(cmd, &targets);
    }
    assert_eq!(log.foreign.len(), 1);
    assert_eq!(log.render(&targets), text);
}

#[test]
fn a_path_failing_twice_is_one_entry_and_success_clears_it() {
    let mut log = FailLog::new(PathBuf::from("/tmp/x"), 1);
    log.add(RemoteId(0), &Job::Paths(vec!["a".into(), "b".into()]), 5);
    log.add(RemoteId(0), &Job::Paths(vec!["a".into()]), 10);
    assert_eq!(log.len(), 2);
    assert_eq!(log.owed[0].status, 10);
    assert!(log.clear(RemoteId(0), &Job::Paths(vec!["a".into()])));
    assert_eq!(log.len(), 1);
    assert!(log.clear(RemoteId(0), &Job::Full));
    assert!(log.is_empty());
}

#[test]
fn saved_file_is_private_and_removed_when_empty() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("fail.sh");
    let targets = vec![target("/www", "10.0.0.2")];
    let mut log = FailLog::new(path.clone(), 1);
    log.add(RemoteId(0), &Job::Paths(vec!["a".into()]), 5);
    log.save(&targets).expect("save");
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let loaded = FailLog::load(path.clone(), &targets).expect("load");
    assert_eq!(loaded.owed, log.owed);
    log.clear(RemoteId(0), &Job::Paths(vec!["a".into()]));
    log.save(&targets).expect("save");
    assert!(!path.exists());
}

#[test]
fn sh_runs_the_log_without_running_any_name() {
    // The rendered script, run by sh with a fake rsync first on PATH, passes each name
    // through as one argument and executes nothing inside a name.
    let d = tempfile::tempdir().expect("tempdir");
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let fake = bin.join("rsync");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> {}/args\n",
            d.path().display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let www = d.path().join("www");
    std::fs::create_dir(&www).expect("mkdir");
    let targets = vec![target(&www.display().to_string(), "10.0.0.2")];
    let mut log = FailLog::new(d.path().join("fail.sh"), 1);
    log.add(RemoteId(0), &Job::Paths(hostile()), 5);
    log.save(&targets).expect("save");
    let status = std::process::Command::new("sh")
        .arg(d.path().join("fail.sh"))
        .current_dir(d.path())
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .status()
        .expect("sh runs");
    assert!(status.success());
    assert!(!d.path().join("pwned").exists() && !www.join("pwned").exists());
    let args = std::fs::read(d.path().join("args")).expect("fake rsync ran");
    for p in hostile() {
        let mut want = b"./".to_vec();
        want.extend_from_slice(p.as_os_str().as_bytes());
        want.push(0);
        assert!(
            args.windows(want.len()).any(|w| w == want.as_slice()),
            "{p:?} was not passed as one argument"
        );
    }
}
