//! The status document, its metrics and its report, checked together on made-up
//! snapshots.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::metrics::metrics;
use super::model::{exit_code, remote_state, FailLogStatus, RemoteStatus, Status};
use super::report::render;
use super::server::Source;

pub(super) fn source() -> Source {
    Arc::new(|| Status {
        version: "test".into(),
        config: "c.xml".into(),
        pid: 1,
        uptime_seconds: 0,
        started: String::new(),
        watches: 0,
        watch_unit: "directories".into(),
        fail_log: FailLogStatus {
            path: "f".into(),
            entries: 0,
            unknown_entries: 0,
        },
        last_full_sync: None,
        remotes: Vec::new(),
        roots: Vec::new(),
        verify: Vec::new(),
        progress: Vec::new(),
        plugin: None,
    })
}

#[test]
fn verify_results_are_in_metrics_and_the_report() {
    use crate::sync::verify::Verified;
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let v = |remote: &str, differing, error: Option<&str>| Verified {
        remote: remote.into(),
        root: "/www".into(),
        at,
        differing,
        missing: 1,
        extra: 0,
        first: vec!["missing a".into()],
        error: error.map(str::to_owned),
    };
    let s = source()().with_verify(vec![v("h::a", 2, None), v("h::b", 0, Some("rsync exit 5"))]);
    let m = metrics(&s);
    assert!(
        m.contains("sersync2_verify_differing_paths{remote=\"h::a\",root=\"/www\"} 3\n"),
        "{m}"
    );
    assert!(
        m.contains("sersync2_verify_differing_paths{remote=\"h::b\",root=\"/www\"} -1\n"),
        "{m}"
    );
    assert!(
        m.contains(
            "sersync2_verify_last_timestamp_seconds{remote=\"h::a\",root=\"/www\"} 1700000000\n"
        ),
        "{m}"
    );
    assert!(!s.verify[0].level && !s.verify[1].level);
    let r = render(&s);
    assert!(
        r.contains(
            "verified h::a at 2023-11-14T22:13:20Z: 2 differing, 1 missing, 0 extra (missing a)"
        ),
        "{r}"
    );
    assert!(
        r.contains("verified h::b at 2023-11-14T22:13:20Z: could not be checked: rsync exit 5"),
        "{r}"
    );
    assert_eq!(s.verify[0].at, "2023-11-14T22:13:20Z");
    assert!(!metrics(&source()()).contains("sersync2_verify"));
}

fn remote(name: &str, failing: bool, pending: usize, lag: f64) -> RemoteStatus {
    RemoteStatus {
        remote: name.into(),
        root: "/w".into(),
        pushed: 0,
        failed: u64::from(failing),
        queued: pending,
        state: remote_state(failing, false, pending, 0, lag).into(),
        failing,
        failing_since_unix: failing.then_some(1_700_000_000),
        failing_since: None,
        owed: 0,
        next_retry_unix: failing.then_some(1_700_000_060),
        next_retry: None,
        last_error: failing.then(|| "rsync exited 10".to_owned()),
        last_error_at: None,
        lag_seconds: lag,
        pending,
        longest_push_seconds: 0.0,
        full_sync_since: None,
        held_deletes: 0,
        held_full: false,
        held_since: None,
        paused: false,
    }
}

// `--status` exited 0 while a remote was FAILING and printed unix times.
#[test]
fn the_exit_status_is_1_only_when_a_remote_fails_or_a_root_is_lost() {
    use crate::watch::{RootReport, RootState};
    let mut s = source()();
    assert_eq!(exit_code(&s), 0, "no remotes");
    s.remotes.push(remote("level::m", false, 0, 0.0));
    s.remotes.push(remote("busy::m", false, 40, 3.5));
    assert_eq!(exit_code(&s), 0, "level and catching up");
    assert_eq!(
        (s.remotes[0].state.as_str(), s.remotes[1].state.as_str()),
        ("level", "catching up")
    );
    let text = render(&s);
    assert!(
        text.contains("ok (level)") && text.contains("ok (catching up)"),
        "{text}"
    );
    s.remotes.push(remote("down::m", true, 2, 9.0));
    assert_eq!(exit_code(&s), 1, "one failing");
    assert_eq!(s.remotes[2].state, "failing");
    let text = render(&s);
    assert!(
        text.contains("FAILING since 2023-11-14T22:13:20Z (next retry at 2023-11-14T22:14:20Z, last error: rsync exited 10)"),
        "{text}"
    );
    assert!(!text.contains("unix time"), "{text}");
    s.remotes.pop();
    let s = s.with_roots(vec![RootReport {
        path: "/gone".into(),
        state: RootState::Missing,
        since: UNIX_EPOCH,
        mounts: Vec::new(),
        rewalks: 0,
        too_long: Default::default(),
    }]);
    assert_eq!(exit_code(&s), 1, "a root lost");
}

// `--status` said "1 directories watched" under fanotify, where the count is of
// filesystem marks.
#[test]
fn the_watch_count_says_what_it_counts() {
    let s = source()();
    assert!(
        render(&s).contains("0 directories watched"),
        "{}",
        render(&s)
    );
    let mut s = s.with_watch_unit("filesystem marks");
    s.watches = 1;
    let text = render(&s);
    assert!(text.contains("1 filesystem mark (fanotify"), "{text}");
    assert!(!text.contains("directories watched"), "{text}");
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["watch_unit"], "filesystem marks");
}

#[test]
fn roots_that_are_not_ok_and_mount_notes_are_shown() {
    use crate::watch::{MountNote, RootReport, RootState};
    let report = |path: &str, state| RootReport {
        path: path.into(),
        state,
        since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        mounts: vec![MountNote {
            path: "share".into(),
            fstype: "nfs4".into(),
            watched: true,
            note: Some("a network filesystem".into()),
        }],
        rewalks: 0,
        too_long: Default::default(),
    };
    let s = source()().with_roots(vec![
        report("/www", RootState::Missing),
        report("/up", RootState::Ok),
    ]);
    assert_eq!(s.roots[0].state, "missing");
    assert_eq!(s.roots[0].since, 1_700_000_000);
    let text = render(&s);
    assert!(text.contains("watch root /www is missing"), "{text}");
    assert!(!text.contains("watch root /up"), "{text}");
    assert!(text.contains("mount /www/share (nfs4)"), "{text}");
    assert!(metrics(&s).contains("sersync2_root_ok{root=\"/www\"} 0"));
    assert!(metrics(&s).contains("sersync2_root_ok{root=\"/up\"} 1"));
}

#[test]
fn directories_waiting_for_a_walk_again_are_shown() {
    use crate::watch::{RootReport, RootState};
    let s = source()().with_roots(vec![RootReport {
        path: "/busy".into(),
        state: RootState::Ok,
        since: UNIX_EPOCH,
        mounts: Vec::new(),
        rewalks: 3,
        too_long: Default::default(),
    }]);
    assert_eq!(s.roots[0].rewalks, 3);
    let text = render(&s);
    assert!(
        text.contains("watch root /busy: 3 directories could not be listed"),
        "{text}"
    );
}

/// A user's path too long for rsync is named, not hidden: status counts it, says why
/// and shows it shortened; it does not make the exit status 1 (nothing is owed).
#[test]
fn paths_too_long_for_rsync_are_counted_and_named() {
    use crate::watch::{RootReport, RootState};
    let last = format!("up/{}...(4600 bytes).../f", "y".repeat(20));
    let s = source()().with_roots(vec![RootReport {
        path: "/www".into(),
        state: RootState::Ok,
        since: UNIX_EPOCH,
        mounts: Vec::new(),
        rewalks: 0,
        too_long: crate::watch::TooLongReport {
            paths: 2,
            last: Some(last.clone()),
        },
    }]);
    assert_eq!(s.roots[0].skipped_paths, 2);
    assert!(s.roots[0]
        .skipped_reason
        .as_deref()
        .is_some_and(|r| r.contains("longer than rsync's 4096-byte limit")));
    let text = render(&s);
    assert!(
        text.contains(
            "watch root /www: 2 path(s) not mirrorable: longer than rsync's 4096-byte limit"
        ) && text.contains(&last),
        "{text}"
    );
    assert_eq!(crate::service::status::exit_code(&s), 0);
}

/// A remote that accepts connections and stopped answering read "ok" until rsync's
/// I/O timeout (120 s by default) ended its call.
#[test]
fn a_push_running_long_is_named_beside_ok() {
    let remote = |name: &str, secs: f64, owed: usize| RemoteStatus {
        remote: name.into(),
        root: "/w".into(),
        pushed: 3,
        failed: 0,
        queued: 1,
        state: String::new(),
        failing: false,
        failing_since_unix: None,
        failing_since: None,
        owed,
        next_retry_unix: None,
        next_retry: None,
        last_error: None,
        last_error_at: None,
        lag_seconds: secs,
        pending: 1,
        longest_push_seconds: secs,
        full_sync_since: None,
        held_deletes: 0,
        held_full: false,
        held_since: None,
        paused: false,
    };
    let mut s = source()();
    s.remotes.push(remote("hung::m", 45.2, 0));
    s.remotes.push(remote("busy::m", 12.0, 2));
    s.remotes.push(remote("quick::m", 0.4, 0));
    let text = render(&s);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("hung::m").ends_with(
            "ok (catching up), a push running for 45s (a big transfer, or the remote stopped answering)"
        ),
        "{text}"
    );
    assert!(
        line("busy::m").ends_with(
            "running for 12s (a big transfer, or the remote stopped answering), owes 2 entries"
        ),
        "{text}"
    );
    assert!(line("quick::m").ends_with(" ok (catching up)"), "{text}");
    // A full sync running says so, and since when.
    let mut full = remote("full::m", 75.0, 0);
    full.full_sync_since = Some(crate::sys::time::rfc3339(1_700_000_000));
    s.remotes.push(full);
    let text = render(&s);
    let full = text
        .lines()
        .find(|l| l.contains("full::m"))
        .unwrap_or_default();
    assert!(
        full.ends_with(
            "ok (catching up), full sync running since 2023-11-14T22:13:20Z, a push running for 75s (a big transfer, or the remote stopped answering)"
        ),
        "{text}"
    );
    let m = metrics(&s);
    assert!(
        m.contains("sersync2_remote_longest_push_seconds{remote=\"hung::m\",root=\"/w\"} 45.200"),
        "{m}"
    );
}

#[test]
fn status_client_escapes_control_characters_from_the_answer() {
    // --status printed attacker JSON with raw terminal escapes.
    let mut s = source()();
    s.config = "c.xml\x1b[2J\x1b]0;owned\x07".into();
    s.remotes.push(RemoteStatus {
        remote: "r\nFAKE LINE".into(),
        root: "/w".into(),
        pushed: 0,
        failed: 1,
        queued: 0,
        state: "failing".into(),
        failing: true,
        failing_since_unix: Some(1),
        failing_since: None,
        owed: 0,
        next_retry_unix: None,
        next_retry: None,
        last_error: Some("\x1b[31mred".into()),
        last_error_at: Some("2026-01-02T03:04:05Z\x1b[2J".into()),
        lag_seconds: 0.0,
        pending: 0,
        longest_push_seconds: 0.0,
        full_sync_since: None,
        held_deletes: 0,
        held_full: false,
        held_since: None,
        paused: false,
    });
    let text = render(&s);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(text.contains("c.xml\\u{1b}[2J"), "{text}");
    assert!(
        text.contains("last error at 2026-01-02T03:04:05Z\\u{1b}[2J: \\u{1b}[31mred"),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("FAKE LINE")), "{text}");
}

// A paused remote (`sersync2 --pause`) says so, with what waits for it, in the text, the
// document's state and the metrics; it is not a failure for monitors.
#[test]
fn a_paused_remote_says_so_and_what_waits() {
    let mut s = source()();
    let mut paused = remote("held::m", false, 3, 12.0);
    paused.paused = true;
    paused.owed = 1;
    paused.state = remote_state(false, true, 3, 1, 12.0).into();
    s.remotes.push(paused);
    s.remotes.push(remote("flowing::m", false, 0, 0.0));
    assert_eq!(s.remotes[0].state, "paused");
    assert_eq!(exit_code(&s), 0, "an operator's pause is not a failure");
    let text = render(&s);
    let line = text
        .lines()
        .find(|l| l.contains("held::m"))
        .unwrap_or_default();
    assert!(
        line.ends_with(
            "PAUSED: 3 waiting, owes 1 entry; nothing is pushed to it until sersync2 --resume"
        ),
        "{text}"
    );
    assert!(text.contains("ok (level)"), "{text}");
    let m = metrics(&s);
    assert!(
        m.contains("sersync2_remote_paused{remote=\"held::m\",root=\"/w\"} 1")
            && m.contains("sersync2_remote_paused{remote=\"flowing::m\",root=\"/w\"} 0"),
        "{m}"
    );
}
