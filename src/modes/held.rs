//! `--release-deletes` and `--discard-deletes`: what the brake on mass deletes holds
//! (`sync::ledger`'s brake, `<deleteBrake>`) pushed or dropped, on the operator's word.
//!
//! Asked of the running instance over its control socket (found from `-o FILE` alone,
//! `daemon::lock_file`; the socket's owner and the caller's credentials are checked as
//! for `--replay` and `--status`, `service::control`). It answers at once with what each
//! remote held; released deletes are then pushed like any change. Held deletes live in
//! the running instance (and, after a stop, in its fail log under `#held` lines, held
//! again at the next start), so without an instance there is nothing to ask: start it,
//! then release or discard.

use std::time::Duration;

use anyhow::anyhow;
use serde_json::{json, Value};

use super::{runtime, Exit};
use crate::cli::Args;
use crate::service::{control, daemon};
use crate::sync::Mirror;

/// The control command of `--release-deletes`.
pub const RELEASE: &str = "release-deletes";
/// The control command of `--discard-deletes`.
pub const DISCARD: &str = "discard-deletes";

/// How long the answer may take.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// The running instance's side: releases (`release`) or discards what is held and says
/// what each remote held.
pub fn serve(mirror: &Mirror, release: bool) -> Value {
    let done = if release {
        mirror.release_deletes()
    } else {
        mirror.discard_deletes()
    };
    let remotes: Vec<Value> = (done.iter())
        .map(|r| json!({ "remote": r.remote, "deletes": r.deletes, "full_sync": r.full }))
        .collect();
    json!({
        "ok": true,
        "command": if release { RELEASE } else { DISCARD },
        "pid": std::process::id(),
        "remotes": remotes,
    })
}

/// The command line's side: asks the running instance, prints its answer.
pub fn held(args: &Args, release: bool) -> Result<u8, Exit> {
    let command = if release { RELEASE } else { DISCARD };
    let lock = daemon::lock_file(&args.config);
    let socket = control::socket_path(&lock);
    let answer = match control::ask(&socket, command, ANSWER_WAIT) {
        Ok(v) => v,
        Err(control::AskError::Missing(e)) => {
            let running = daemon::InstanceLock::running(&lock).is_ok();
            return Err(runtime(anyhow!(
                "{}: no control socket at {} ({e}); {}",
                args.config.display(),
                socket.display(),
                if running {
                    "the instance is still starting or reloading, or an older sersync2: ask again"
                } else {
                    "no sersync2 runs this config: deletes held at its last stop stay held \
                     in its fail log; start it, then ask again"
                }
            )));
        }
        Err(control::AskError::Refused(e)) => {
            return Err(runtime(anyhow!("refusing the control socket: {e}")))
        }
        Err(control::AskError::Closed(m) | control::AskError::Failed(m)) => {
            return Err(runtime(anyhow!(
                "asking the instance over {} failed: {m}; what is held stays held",
                socket.display()
            )))
        }
    };
    report(&answer, release)
}

/// Prints the instance's answer.
fn report(answer: &Value, release: bool) -> Result<u8, Exit> {
    if answer["ok"].as_bool() != Some(true) {
        let e = answer["error"].as_str().unwrap_or("no error given");
        return Err(runtime(anyhow!("the running instance refused: {e}")));
    }
    let pid = answer["pid"].as_u64().unwrap_or(0);
    let remotes = answer["remotes"].as_array().cloned().unwrap_or_default();
    if remotes.is_empty() {
        println!("no deletes were held (running instance, pid {pid})");
        return Ok(0);
    }
    for r in &remotes {
        let what = crate::sync::ledger::held_words(
            r["deletes"].as_u64().unwrap_or(0),
            r["full_sync"].as_bool() == Some(true),
        );
        let remote = r["remote"].as_str().unwrap_or("?");
        if release {
            println!("released the held {what} to {remote}: pushed now");
        } else {
            println!(
                "discarded the held {what} to {remote}: the remote keeps those entries (a \
                 later full sync deletes them unless the source has them again)"
            );
        }
    }
    Ok(0)
}
