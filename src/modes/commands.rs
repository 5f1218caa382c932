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
pub const COMMANDS: &[&str] = &["replay"];

/// Answers one control request.
pub fn answer(mirror: &Mirror, request: &str) -> Value {
    match request {
        "replay" => replay(mirror, REPLAY_WAIT),
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
