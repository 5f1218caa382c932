//! `--pause` and `--resume`: the operator holds back every push, or only the pushes to
//! the `--remote` ones (a mirror taken out for maintenance while the others keep
//! flowing), and lets them go again.
//!
//! The command line asks the running instance over its control socket (`pause
//! {"remotes":[..]}`, `resume {...}`; no remotes: every one), found from the config's
//! path alone like `--status`; the socket lets only the agent's user and root in. The
//! pause lives in the queue (`ledger::pause`): a paused remote is handed no work, while
//! events are still read and merged into what waits for it, a scheduled full sync or a
//! retry waits there too, and a stop owes all of it in the fail log as at any stop.
//! `--resume` hands it out at once.
//!
//! A pause survives a reload (SIGHUP: the new pipeline is paused for the same remote
//! labels before its workers start, [`carry`]) but not a restart: the pause is the
//! running instance's, the stop logs which remotes were paused and that the next start
//! pushes what waits ([`at_stop`]). docs/operations.md says why.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{runtime, usage, Exit};
use crate::cli::Args;
use crate::service::{control, daemon};
use crate::sync::{Mirror, RemoteId};

/// The control commands.
pub const PAUSE: &str = "pause";
pub const RESUME: &str = "resume";

/// How long the command line asks again while the instance is starting or reloading
/// (its socket away, or answering `starting`).
const STARTING_WAIT: Duration = Duration::from_secs(60);

/// The pause between two such asks.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long the answer may take (it comes at once).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// How long `--pause` waits for the pushes running at the pause to end (they end as
/// usual): once it returns 0, nothing is pushed to the paused remotes.
const RUNNING_WAIT: Duration = Duration::from_secs(60);

/// The pushes still running to the paused remotes in an answer.
fn running_to_paused(answer: &Value) -> u64 {
    (answer["remotes"].as_array().into_iter().flatten())
        .filter(|r| r["paused"].as_bool() == Some(true))
        .map(|r| r["running"].as_u64().unwrap_or(0))
        .sum()
}

/// What the command line asks.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// Remote labels (`host::module`, `host:dir`); empty means every remote.
    #[serde(default)]
    remotes: Vec<String>,
}

fn refused(command: &str, message: String) -> Value {
    json!({ "ok": false, "command": command, "usage": true, "error": message })
}

/// The remotes `labels` name (every one when empty), or the label that names none.
fn select(mirror: &Mirror, labels: &[String]) -> Result<Vec<RemoteId>, String> {
    let targets = mirror.targets();
    if labels.is_empty() {
        return Ok(mirror.all());
    }
    let known: BTreeSet<String> = targets.iter().map(|t| t.label()).collect();
    if let Some(bad) = labels.iter().find(|r| !known.contains(*r)) {
        return Err(format!(
            "no remote {bad:?} in this instance's config; its remotes are: {}",
            known.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(mirror
        .all()
        .into_iter()
        .filter(|t| labels.contains(&targets[t.index()].label()))
        .collect())
}

/// Each remote now, for the answer and the log.
fn remotes_now(mirror: &Mirror) -> Vec<Value> {
    let running = mirror.queue().running_jobs();
    mirror
        .snapshot()
        .remotes
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "running": running.get(i).copied().unwrap_or(0),
                "remote": r.remote,
                "root": r.root.display().to_string(),
                "paused": r.paused,
                "waiting": r.queued,
                "pending": r.pending,
                "owed": r.owed,
                "held_deletes": r.held_deletes,
                "held_full": r.held_full,
                "deletes_held": r.held_since.is_some(),
            })
        })
        .collect()
}

/// The running instance's side of `pause` (`pause` true) and `resume`.
pub fn serve(mirror: &Mirror, pause: bool, body: &str) -> Value {
    let command = if pause { PAUSE } else { RESUME };
    let req: Request = if body.trim().is_empty() {
        Request {
            remotes: Vec::new(),
        }
    } else {
        match serde_json::from_str(body) {
            Ok(r) => r,
            Err(e) => return refused(command, format!("bad {command} request ({e})")),
        }
    };
    let selected = match select(mirror, &req.remotes) {
        Ok(s) => s,
        Err(e) => return refused(command, e),
    };
    let changed = mirror.queue().set_paused(&selected, pause);
    let waiting = mirror.queue().waiting();
    let labels: BTreeSet<String> = selected
        .iter()
        .zip(&changed)
        .filter(|(_, c)| **c)
        .map(|(t, _)| mirror.targets()[t.index()].label())
        .collect();
    for t in selected
        .iter()
        .zip(&changed)
        .filter(|(_, c)| **c)
        .map(|(t, _)| *t)
    {
        let target = &mirror.targets()[t.index()];
        let n = waiting.get(t.index()).copied().unwrap_or(0);
        if pause {
            log::warn!(
                remote = target.label().as_str(), root = target.root.display().to_string().as_str();
                "paused on the control socket: nothing is pushed to {} ({}) until sersync2 \
                 --resume; changes are still read and wait ({n} waiting now)",
                target.label(),
                target.root.display()
            );
        } else {
            log::info!(
                remote = target.label().as_str(), root = target.root.display().to_string().as_str();
                "resumed on the control socket: {} ({}) is pushed to again ({n} waiting)",
                target.label(),
                target.root.display()
            );
        }
    }
    json!({
        "ok": true,
        "command": command,
        "pid": std::process::id(),
        "changed": labels,
        "remotes": remotes_now(mirror),
    })
}

/// The labels of the paused remotes (each once), for a reload to carry over.
pub fn paused_labels(mirror: &Mirror) -> BTreeSet<String> {
    mirror
        .queue()
        .paused()
        .into_iter()
        .zip(mirror.targets())
        .filter(|(p, _)| *p)
        .map(|(_, t)| t.label())
        .collect()
}

/// At a reload: the new pipeline's remotes with these labels paused before its workers
/// start; a paused remote the new config no longer names is said so.
pub fn carry(mirror: &Mirror, labels: &BTreeSet<String>) {
    if labels.is_empty() {
        return;
    }
    let targets = mirror.targets();
    let selected: Vec<RemoteId> = mirror
        .all()
        .into_iter()
        .filter(|t| labels.contains(&targets[t.index()].label()))
        .collect();
    mirror.queue().set_paused(&selected, true);
    let kept: BTreeSet<String> = selected
        .iter()
        .map(|t| targets[t.index()].label())
        .collect();
    if !kept.is_empty() {
        log::warn!(
            "reloaded: still paused (an operator's pause survives a reload): {}; \
             sersync2 --resume lets them go",
            kept.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let gone: Vec<&String> = labels.difference(&kept).collect();
    if !gone.is_empty() {
        log::info!(
            "reloaded: {} paused, not in the new config: the pause ends with them",
            gone.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// At a stop while remotes are paused: which, and that the next start is not paused.
pub fn at_stop(labels: &BTreeSet<String>) {
    if labels.is_empty() {
        return;
    }
    log::warn!(
        "stopping while paused: {}; what waits for them is kept in the fail log, and a \
         pause does not survive a restart: the next start pushes it (run sersync2 --pause \
         again once it runs to keep them held)",
        labels.iter().cloned().collect::<Vec<_>>().join(", ")
    );
}

/// `sersync2 --pause|--resume -o FILE [--remote LABEL ...]`: asks the running instance,
/// prints each remote's state after it.
pub fn pause(args: &Args, pause: bool) -> Result<u8, Exit> {
    let command = if pause { PAUSE } else { RESUME };
    let flag = format!("--{command}");
    let lock = daemon::lock_file(&args.config);
    let socket = control::socket_path(&lock);
    let request = format!(
        "{command} {}",
        json!(Request {
            remotes: args.remote.clone(),
        })
    );
    if request.len() >= control::MAX_REQUEST {
        return Err(usage(anyhow!(
            "--remote: the labels are too long together (over {} bytes); give fewer at a time",
            control::MAX_REQUEST
        )));
    }
    let started = Instant::now();
    let answer = loop {
        let running = daemon::InstanceLock::running(&lock);
        let again = started.elapsed() < STARTING_WAIT && running.is_ok();
        match control::ask(&socket, &request, ANSWER_WAIT) {
            Ok(a) if a["starting"].as_bool() == Some(true) && again => {
                std::thread::sleep(RETRY_PAUSE)
            }
            Ok(a) => break a,
            // A reload closes the socket for a moment.
            Err(control::AskError::Missing(_) | control::AskError::Closed(_)) if again => {
                std::thread::sleep(RETRY_PAUSE)
            }
            Err(control::AskError::Refused(e)) => {
                return Err(runtime(anyhow!("{flag}: refusing the control socket: {e}")))
            }
            Err(e) => {
                return Err(runtime(match running {
                    Err(why) => anyhow!(
                        "{flag}: no sersync2 runs {}: {why}; nothing to {command}",
                        args.config.display()
                    ),
                    Ok(pid) => anyhow!(
                        "{flag}: the instance running {} (pid {}) did not answer on {}: {e}",
                        args.config.display(),
                        pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
                        socket.display()
                    ),
                }))
            }
        }
    };
    if !pause || answer["ok"].as_bool() != Some(true) || running_to_paused(&answer) == 0 {
        return report(&answer, &flag, &answer);
    }
    // A push running at the pause ends as usual: wait for it, so that a maintenance
    // script that goes on after `--pause` finds the remotes still (asking again
    // changes nothing: the remotes are paused already).
    eprintln!(
        "{flag}: waiting for {} push(es) running at the pause to end",
        running_to_paused(&answer)
    );
    let mut last = answer.clone();
    let waited = Instant::now();
    while running_to_paused(&last) > 0 && waited.elapsed() < RUNNING_WAIT {
        std::thread::sleep(RETRY_PAUSE);
        match control::ask(&socket, &request, ANSWER_WAIT) {
            Ok(a) if a["ok"].as_bool() == Some(true) => last = a,
            Ok(_) | Err(_) => break,
        }
    }
    let code = report(&answer, &flag, &last)?;
    let still = running_to_paused(&last);
    if still > 0 {
        eprintln!(
            "{flag}: paused, but {still} push(es) running at the pause still run after {}s \
             (they end as usual; see --status)",
            RUNNING_WAIT.as_secs()
        );
        return Ok(1);
    }
    Ok(code)
}

/// Prints the instance's answer (what changed) and each remote as `now` gives it,
/// paused or not, and what waits for it.
fn report(answer: &Value, flag: &str, now: &Value) -> Result<u8, Exit> {
    if answer["ok"].as_bool() != Some(true) {
        let e = answer["error"].as_str().unwrap_or("no reason given");
        if answer["usage"].as_bool() == Some(true) {
            return Err(usage(anyhow!("{flag}: {e}")));
        }
        return Err(runtime(anyhow!(
            "{flag}: the running instance refused: {e}"
        )));
    }
    let pid = answer["pid"].as_u64().unwrap_or(0);
    let changed: Vec<&str> = answer["changed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if changed.is_empty() {
        println!("nothing changed (running instance, pid {pid})");
    }
    for r in now["remotes"].as_array().into_iter().flatten() {
        let name = crate::service::status::printable(r["remote"].as_str().unwrap_or("?"));
        let root = crate::service::status::printable(r["root"].as_str().unwrap_or("?"));
        let waiting = r["waiting"].as_u64().unwrap_or(0);
        let owed = r["owed"].as_u64().unwrap_or(0);
        // Deletes the brake on mass deletes holds are not among those waiting.
        let held = if r["deletes_held"].as_bool() == Some(true) {
            format!(
                ", {} held by the brake on mass deletes (sersync2 --release-deletes or \
                 --discard-deletes)",
                crate::sync::ledger::held_words(
                    r["held_deletes"].as_u64().unwrap_or(0),
                    r["held_full"].as_bool() == Some(true),
                )
            )
        } else {
            String::new()
        };
        if r["paused"].as_bool() == Some(true) {
            println!("{name} ({root}): paused, {waiting} waiting, {owed} owed{held}");
        } else {
            println!("{name} ({root}): pushing, {waiting} waiting, {owed} owed{held}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::filter::Excludes;
    use crate::sync::{FailLog, Queue};

    fn mirror(dir: &std::path::Path) -> Mirror {
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
    fn an_unknown_remote_is_refused_as_a_usage_error() {
        let d = tempfile::tempdir().expect("tempdir");
        let m = mirror(d.path());
        let v = serve(&m, true, r#"{"remotes":["nowhere::x"]}"#);
        assert_eq!(
            (v["ok"].as_bool(), v["usage"].as_bool()),
            (Some(false), Some(true))
        );
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("nowhere::x")),
            "{v}"
        );
        let v = serve(&m, true, "{not json");
        assert_eq!(v["usage"], true, "{v}");
        let v = serve(&m, false, "");
        assert_eq!(v["ok"], true, "no remotes asked: every one, {v}");
    }
}
