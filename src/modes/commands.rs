//! What the control socket's commands do in a running instance (`service::control`
//! carries them): `replay`, the fail log now, answered once its pushes have ended.
//!
//! `replay` queues what the fail log owes, as the timed replay does, then waits, up to
//! [`REPLAY_WAIT`], until every remote that was owed something is settled: nothing
//! waiting and nothing in flight for it, or a push to it failed since the request and it
//! is still failing (it is down; what it is owed stays owed). The answer says what is
//! still owed per remote; `ok` is true only when nothing is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sync::{Mirror, RemoteId};

/// Longest a `replay` waits for its pushes before it answers with what is still owed.
pub const REPLAY_WAIT: Duration = Duration::from_secs(60);

/// The commands the control socket knows.
pub const COMMANDS: &[&str] = &["replay", super::wait_synced::COMMAND];

/// Answers one control request.
pub fn answer(mirror: &Mirror, request: &str) -> Value {
    match request {
        "replay" => replay(mirror, REPLAY_WAIT),
        r if r.split_whitespace().next() == Some(super::wait_synced::COMMAND) => {
            let body = r[super::wait_synced::COMMAND.len()..].trim();
            super::wait_synced::serve(mirror, body)
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
                r.failing && r.failed > failed_before.get(t.0).copied().unwrap_or(0)
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

    #[test]
    fn an_unknown_command_is_refused_naming_the_known_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        let v = answer(&idle_mirror(d.path()), "verify-everything");
        assert_eq!(v["ok"], false);
        let e = v["error"].as_str().expect("an error");
        assert!(
            e.contains("verify-everything") && e.contains("replay"),
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
