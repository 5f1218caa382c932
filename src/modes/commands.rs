//! What the control socket's commands do in a running instance (`service::control`
//! carries them): `replay`, the fail log now, answered once its pushes have ended;
//! `status`, the status document (`service::status::Status`, as `GET /status` serves it)
//! for `--status`; `wait-synced` (`super::wait_synced`); `pause` and `resume`
//! (`super::pause`).
//!
//! `replay` queues what the fail log owes, as the timed replay does, then waits, up to
//! [`REPLAY_WAIT`], until every remote that was owed something is settled: nothing
//! waiting and nothing in flight for it, or a push to it failed since the request and it
//! is still failing (it is down; what it is owed stays owed), or it is paused
//! (`--pause`: what it is owed waits for `--resume`). The answer says what is
//! still owed per remote; `ok` is true only when nothing is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::service::status;
use crate::sync::{Mirror, RemoteId};

/// Longest a `replay` waits for its pushes before it answers with what is still owed.
pub const REPLAY_WAIT: Duration = Duration::from_secs(60);

/// The commands the control socket knows.
pub const COMMANDS: &[&str] = &[
    "replay",
    STATUS,
    super::wait_synced::COMMAND,
    super::pause::PAUSE,
    super::pause::RESUME,
];

/// The control command `--status` sends.
pub const STATUS: &str = "status";

/// Answers one control request; `status` is the instance's status document.
pub fn answer(mirror: &Mirror, status: &status::Source, request: &str) -> Value {
    match request {
        "replay" => replay(mirror, REPLAY_WAIT),
        STATUS => starting(status, STATUS),
        r if r.split_whitespace().next() == Some(super::wait_synced::COMMAND) => {
            let body = r[super::wait_synced::COMMAND.len()..].trim();
            super::wait_synced::serve(mirror, body)
        }
        r if r.split_whitespace().next() == Some(super::pause::PAUSE) => {
            super::pause::serve(mirror, true, &r[super::pause::PAUSE.len()..])
        }
        r if r.split_whitespace().next() == Some(super::pause::RESUME) => {
            super::pause::serve(mirror, false, &r[super::pause::RESUME.len()..])
        }
        other => json!({
            "ok": false,
            "error": format!(
                "unknown command {:?}; this instance knows: {}",
                other.chars().take(64).collect::<String>(),
                COMMANDS.join(", ")
            ),
        }),
    }
}

/// What an instance answers while it is still starting (setting up its watches, before
/// its pipeline exists): `status` as always, every other command `starting` (not an
/// error of the request: `--wait-synced` asks again).
pub fn starting(status: &status::Source, request: &str) -> Value {
    if request == STATUS {
        return match serde_json::to_value(status()) {
            Ok(doc) => json!({ "ok": true, "command": STATUS, "status": doc }),
            Err(e) => json!({ "ok": false, "command": STATUS, "error": e.to_string() }),
        };
    }
    json!({
        "ok": false,
        "starting": true,
        "error": "the instance is still starting (setting up its watches); ask again once it runs",
    })
}

/// `replay`: queue what is owed, wait up to `wait` for it to be pushed or to fail.
pub fn replay(mirror: &Mirror, wait: Duration) -> Value {
    let started = Instant::now();
    let before = mirror.owed();
    let owed_remotes: Vec<RemoteId> = {
        let summary = mirror.owed_summary();
        mirror
            .targets()
            .iter()
            .enumerate()
            .filter(|(_, t)| summary.contains_key(&t.label()))
            .map(|(i, _)| RemoteId(i))
            .collect()
    };
    let failed_before: Vec<u64> = mirror.snapshot().remotes.iter().map(|r| r.failed).collect();
    if before > 0 {
        log::info!("replay asked on the control socket: {before} entries owed");
        mirror.replay();
    }
    let deadline = started + wait;
    let mut timed_out = false;
    loop {
        let snap = mirror.snapshot();
        let unsettled = owed_remotes.iter().any(|&t| {
            let down = snap.remotes.get(t.0).is_some_and(|r| {
                r.paused || (r.failing && r.failed > failed_before.get(t.0).copied().unwrap_or(0))
            });
            !down && !mirror.queue().is_idle_for(t)
        });
        if !unsettled {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20)); // poll interval, inside a deadline loop
    }
    let owed: BTreeMap<String, usize> = mirror.owed_summary();
    let left = mirror.owed();
    let per_remote: usize = owed.values().sum();
    json!({
        "ok": left == 0,
        "command": "replay",
        "pid": std::process::id(),
        "fail_log": mirror.fail_log_path().display().to_string(),
        "owed_before": before,
        "owed_entries": left,
        "owed": owed,
        "owed_other_commands": left.saturating_sub(per_remote),
        "timed_out": timed_out,
        "waited_seconds": started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::filter::Excludes;
    use crate::sync::{FailLog, Queue};

    fn idle_mirror(dir: &std::path::Path) -> Mirror {
        Mirror::new(
            Vec::new(),
            Arc::new(Queue::new(0, 10, 1)),
            Excludes::new(Vec::new()),
            false,
            FailLog::new(dir.join("fail.sh"), 0),
            None,
        )
    }

    fn status_source(mirror: Arc<Mirror>) -> status::Source {
        Arc::new(move || status::Status::new(mirror.snapshot(), 7, "c.xml"))
    }

    #[test]
    fn status_answers_the_status_document() {
        let d = tempfile::tempdir().expect("tempdir");
        let m = Arc::new(idle_mirror(d.path()));
        let v = answer(&m, &status_source(Arc::clone(&m)), "status");
        assert_eq!(v["ok"], true, "{v}");
        let doc: status::Status =
            serde_json::from_value(v["status"].clone()).expect("a status document");
        assert_eq!((doc.watches, doc.pid), (7, std::process::id()));
    }

    #[test]
    fn while_starting_only_status_is_answered() {
        let d = tempfile::tempdir().expect("tempdir");
        let m = Arc::new(idle_mirror(d.path()));
        let source = status_source(Arc::clone(&m));
        assert_eq!(starting(&source, "status")["ok"], true);
        let v = starting(&source, "replay");
        assert_eq!(
            (v["ok"].as_bool(), v["starting"].as_bool()),
            (Some(false), Some(true))
        );
    }

    #[test]
    fn an_unknown_command_is_refused_naming_the_known_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        let m = Arc::new(idle_mirror(d.path()));
        let v = answer(&m, &status_source(Arc::clone(&m)), "verify-everything");
        assert_eq!(v["ok"], false);
        let e = v["error"].as_str().expect("an error");
        assert!(
            e.contains("verify-everything") && e.contains("replay") && e.contains("status"),
            "{e}"
        );
    }

    #[test]
    fn a_replay_with_nothing_owed_answers_at_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let v = replay(&idle_mirror(d.path()), Duration::from_secs(60));
        assert_eq!(v["ok"], true);
        assert_eq!(v["owed_before"], 0);
        assert_eq!(v["owed_entries"], 0);
        assert_eq!(v["timed_out"], false);
    }
}
