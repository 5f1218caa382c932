//! Directories' own attributes (mode, times) reach the remotes whatever `<attrib>` says.
//! Found by an outside attack run (fanotify, 1 of 10 rounds of `rm -rf app && cp -a
//! build/rel app`): `cp -a` makes each directory `0700` and gives it its mode only once
//! its entries are in; a push of the directory in between left `0700` on a remote for
//! good, while `--wait-synced` and `--status` said level. Runs on the backend the suite
//! runs on (scripts/test.sh runs it on both).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime};

use crate::support::*;

fn mode(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(0)
}

#[test]
fn a_directory_given_its_mode_after_its_entries_has_that_mode_on_every_remote() {
    let s = setup!();
    let conf = s.conf();
    // SAFETY: geteuid has no preconditions.
    if conf.backend == "fanotify" && unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: fanotify needs root (CAP_SYS_ADMIN)");
        return;
    }
    let agent = s.agent_with(&conf, &[]);
    // As `cp -a` makes it: the directories 0700 while their entries go in.
    fs::create_dir_all(s.p("rel/sub")).expect("mkdir");
    for d in ["rel", "rel/sub"] {
        fs::set_permissions(s.p(d), fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    s.write("rel/sub/f.js", "x\n");
    s.write("rel/g.js", "y\n");
    let out = wait_synced(&s.dir, 60);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for r in s.remotes() {
        assert_eq!(mode(&r.join("rel/sub")), 0o700, "pushed while 0700");
    }
    // Then their modes and times, last.
    fs::set_permissions(s.p("rel/sub"), fs::Permissions::from_mode(0o2775)).expect("chmod");
    fs::set_permissions(s.p("rel"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    fs::File::open(s.p("rel"))
        .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(then)))
        .expect("set the directory's mtime");
    let out = wait_synced(&s.dir, 60);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for r in s.remotes() {
        assert_eq!(
            (mode(&r.join("rel")), mode(&r.join("rel/sub"))),
            (0o755, 0o2775),
            "--wait-synced said synced with the modes of before on {}\n{}",
            r.display(),
            agent.log()
        );
        let mtime = fs::metadata(r.join("rel")).and_then(|m| m.modified()).ok();
        assert_eq!(
            mtime,
            Some(then),
            "the directory's mtime on {}",
            r.display()
        );
    }
}
