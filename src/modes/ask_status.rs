//! `--status`: the running instance's state, for people (text) and scripts (`--json`),
//! with an exit status for monitors: 0 when every remote is level, catching up or
//! paused, 1 when one is failing, stalled or holds deletes, a watch root is lost, or no
//! instance answers (`status::exit_code`).
//!
//! The instance is found from the config's path alone (`daemon::lock_file`), with or
//! without the `--pid-file` it was started with, and asked over its control socket
//! (`status`): no `<host start="true">` is needed, and the config on disk is not read, so
//! a bad file left after a refused reload does not stop the question. A starting
//! instance answers with its watch count so far. While the socket is away (a reload
//! between two pipelines) and the instance holds its lock, the question is asked again
//! for [`SOCKET_GRACE`]; then, if the config names a status endpoint, that is asked
//! instead, its answer checked against the lock's pid.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::{runtime, Exit};
use crate::cli::Args;
use crate::config;
use crate::service::{control, daemon, status};

/// How long the answer may take.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// How long `--status` asks again while the instance holds its lock but its control
/// socket is away.
const SOCKET_GRACE: Duration = Duration::from_secs(10);

/// The pause between two such asks.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub fn status(args: &Args) -> Result<u8, Exit> {
    let lock = daemon::lock_file(&args.config);
    let socket = control::socket_path(&lock);
    let started = Instant::now();
    loop {
        let asked = control::ask(&socket, super::commands::STATUS, ANSWER_WAIT);
        let retry = matches!(
            asked,
            Err(control::AskError::Missing(_) | control::AskError::Closed(_))
        ) && started.elapsed() < SOCKET_GRACE
            && daemon::InstanceLock::running(&lock).is_ok();
        match asked {
            // An instance of an older version, started before an upgrade, knows no
            // `status`: its endpoint, if the config names one, still answers.
            Ok(answer) if older(&answer) => {
                let e = control::AskError::Failed(
                    "an older sersync2 that does not know `status`; restart it".to_owned(),
                );
                return not_answered(e, args, &lock, &socket);
            }
            Ok(answer) => return show(&document(&answer, &socket)?, args.json),
            Err(_) if retry => std::thread::sleep(RETRY_PAUSE),
            Err(e) => return not_answered(e, args, &lock, &socket),
        }
    }
}

/// Whether the answer says the instance does not know the `status` command.
fn older(answer: &serde_json::Value) -> bool {
    answer["ok"].as_bool() != Some(true)
        && answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("unknown command"))
}

/// The status document in the instance's answer.
fn document(answer: &serde_json::Value, socket: &Path) -> Result<status::Status, Exit> {
    if answer["ok"].as_bool() != Some(true) {
        let e = answer["error"].as_str().unwrap_or("no error given");
        return Err(runtime(anyhow!(
            "the instance on {} refused `status`: {e}",
            socket.display()
        )));
    }
    serde_json::from_value(answer["status"].clone()).map_err(|e| {
        runtime(anyhow!(
            "the instance on {} answered `status` with an unexpected document: {e}",
            socket.display()
        ))
    })
}

/// Prints the document and returns the exit status it calls for.
fn show(s: &status::Status, json: bool) -> Result<u8, Exit> {
    if json {
        let text = serde_json::to_string_pretty(s).map_err(|e| runtime(anyhow!(e)))?;
        println!("{text}");
    } else {
        print!("{}", status::render(s));
    }
    Ok(status::exit_code(s))
}

/// No answer on the control socket: why, or the status endpoint's answer when the config
/// names one.
fn not_answered(e: control::AskError, args: &Args, lock: &Path, socket: &Path) -> Result<u8, Exit> {
    let holder = daemon::InstanceLock::running(lock);
    if let control::AskError::Refused(e) = &e {
        return Err(runtime(anyhow!("refusing the control socket: {e}")));
    }
    let endpoint = config::load_for_client(&args.config)
        .ok()
        .and_then(|c| c.host);
    match (holder, endpoint) {
        (Ok(pid), Some((host, port))) => from_endpoint(&host, port, pid, socket, &e, args.json),
        (Ok(pid), None) if matches!(e, control::AskError::Failed(_)) => Err(runtime(anyhow!(
            "the instance running {} (pid {}) did not answer on {}: {e}",
            args.config.display(),
            pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            socket.display()
        ))),
        (Ok(pid), None) => Err(runtime(anyhow!(
            "the instance running {} (pid {}) does not answer on {} ({e}): it may be \
             reloading and waiting for running pushes; ask again",
            args.config.display(),
            pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            socket.display()
        ))),
        (Err(why), _) => Err(runtime(anyhow!(
            "no sersync2 runs {}: {why}",
            args.config.display()
        ))),
    }
}

/// Asks the HTTP endpoint (while the control socket is away); the answer counts only if
/// it comes from the process holding this config's lock.
fn from_endpoint(
    host: &str,
    port: u16,
    pid: Option<u32>,
    socket: &Path,
    why: &control::AskError,
    json: bool,
) -> Result<u8, Exit> {
    let at = config::host_port(host, port);
    let s = status::query(host, port).map_err(|e| {
        runtime(anyhow!(
            "no answer on the control socket {} ({why}) nor on {at}: {e}",
            socket.display()
        ))
    })?;
    if pid != Some(s.pid) {
        return Err(runtime(anyhow!(
            "the answer on {at} (pid {}) does not come from this config's running instance \
             (pid {}), whose control socket {} does not answer ({why}); another process may \
             hold the port",
            s.pid,
            pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            socket.display()
        )));
    }
    show(&s, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // What an instance started before an upgrade (no `status` command) answers.
    #[test]
    fn an_older_instance_is_told_apart() {
        let old = json!({
            "ok": false,
            "error": "unknown command \"status\"; this instance knows: replay, wait-synced",
        });
        assert!(older(&old));
        assert!(!older(&json!({ "ok": true, "status": {} })));
        assert!(!older(
            &json!({ "ok": false, "starting": true, "error": "starting" })
        ));
        assert!(document(&old, Path::new("/run/x.sock")).is_err());
    }
}
