//! `--replay`: push everything the fail log owes once; exit 0 only if nothing is left.
//!
//! Entries for a root or remote the config does not name are never run: they are listed
//! and stay in the file, and the exit status says something is left, until the operator
//! drops them with `--replay --drop-unknown`.
//!
//! With no instance running, this process replays by itself. With one running (it holds
//! the config's instance lock, `daemon::lock_file`, whatever `--pid-file` it was given),
//! it asks that instance over the control socket beside the lock (`service::control`)
//! and prints its answer: the instance replays now, waits for those pushes (up to a
//! minute) and says what is still owed per remote. Asking needs no valid config on disk:
//! the file is read only when this process replays by itself.

use std::time::Duration;

use anyhow::anyhow;

use super::pipeline::{wait_all, Options, Parts, Pipeline};
use super::{lock_or_holder, runtime, Exit, Locked};
use crate::cli::Args;
use crate::service::{control, daemon};

fn entries(n: usize) -> &'static str {
    if n == 1 {
        "y"
    } else {
        "ies"
    }
}

/// How long the client waits for the running instance's answer: its own wait for the
/// pushes, plus a margin.
const ANSWER_WAIT: Duration = Duration::from_secs(super::commands::REPLAY_WAIT.as_secs() + 60);

pub fn replay(args: &Args) -> Result<u8, Exit> {
    let lock = daemon::lock_file(&args.config);
    if let Ok(pid) = daemon::InstanceLock::running(&lock) {
        let message = format!(
            "another sersync2 already runs this config (pid {}, lock {})",
            pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            lock.display()
        );
        if args.drop_unknown {
            return Err(runtime(anyhow!(
                "--drop-unknown: {message}; it holds the fail log, stop it first"
            )));
        }
        return ask_running(&lock, &message);
    }
    let config = &super::config(args)?;
    super::require_rsync()?;
    let _lock = match lock_or_holder(args)? {
        Locked::Ours(lock) => lock,
        Locked::Held { message, .. } if args.drop_unknown => {
            return Err(runtime(anyhow!(
                "--drop-unknown: {message}; it holds the fail log, stop it first"
            )))
        }
        Locked::Held { message, lock } => return ask_running(&lock, &message),
    };
    let parts = Parts::new(config, &super::own_files(config, args));
    let mut fail_log = parts.load_fail_log(config)?;
    if args.drop_unknown {
        for (root, dest, n) in fail_log.unknown_summary() {
            println!(
                "dropped {n} entr{} for {} to {} (not in the config)",
                entries(n),
                root.display(),
                dest.to_string_lossy()
            );
        }
        if fail_log.drop_unknown() > 0 {
            fail_log.save(&fail_log.owed, &parts.targets).map_err(|e| {
                runtime(anyhow!(
                    "cannot write the fail log {}: {e}",
                    config.fail_log.display()
                ))
            })?;
        }
    }
    if fail_log.is_empty() {
        println!("fail log {}: nothing to replay", config.fail_log.display());
        return Ok(0);
    }
    let opts = Options {
        workers: args.workers,
        ..Options::default()
    };
    let (mut pipeline, mirror) = Pipeline::sync(config, parts, fail_log, None, opts);
    pipeline.start().map_err(runtime)?;
    mirror.replay();
    while !pipeline.queue().is_idle() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (stopped, ()) = pipeline.stop(wait_all);
    if let Err(e) = &stopped.kept {
        log::error!("{e}");
    }
    let left = stopped.owed;
    let unknown = mirror.unknown();
    if left == 0 && unknown.is_empty() {
        println!(
            "fail log {}: replayed, nothing left",
            config.fail_log.display()
        );
        return Ok(0);
    }
    for (remote, n) in mirror.owed_summary() {
        println!("still owed to {remote}: {n} entr{}", entries(n));
    }
    let mut kept = 0;
    for (root, dest, n) in &unknown {
        kept += n;
        println!(
            "not in the config, kept and not run: {n} entr{} for {} to {} \
             (push them by hand, or drop them with --replay --drop-unknown)",
            entries(*n),
            root.display(),
            dest.to_string_lossy()
        );
    }
    Err(runtime(anyhow!(
        "{} entr{} still owed, {} kept for remotes not in the config, in {}",
        left,
        entries(left),
        kept,
        mirror.fail_log_path().display()
    )))
}

/// `--replay` beside a running instance: ask it, print its answer.
fn ask_running(lock: &std::path::Path, held: &str) -> Result<u8, Exit> {
    let socket = control::socket_path(lock);
    let answer = match control::ask(&socket, "replay", ANSWER_WAIT) {
        Ok(v) => v,
        Err(control::AskError::Missing(e)) => {
            return Err(runtime(anyhow!(
                "{held}, and it has no control socket at {} ({e}): it is an older \
                 sersync2, or still starting; stop it and run --replay again, or let it \
                 replay at its next timed replay",
                socket.display()
            )))
        }
        Err(control::AskError::Refused(e)) => {
            return Err(runtime(anyhow!("{held}; refusing its control socket: {e}")))
        }
        Err(control::AskError::Closed(m) | control::AskError::Failed(m)) => {
            return Err(runtime(anyhow!(
                "{held}; asking it to replay over {} failed: {m}; what is owed stays in \
                 the fail log",
                socket.display()
            )))
        }
    };
    report(&answer)
}

/// Prints the running instance's answer to `replay`; exit 0 only if nothing is owed.
fn report(answer: &serde_json::Value) -> Result<u8, Exit> {
    if let Some(e) = answer.get("error").and_then(|e| e.as_str()) {
        return Err(runtime(anyhow!("the running instance refused: {e}")));
    }
    let fail_log = answer["fail_log"].as_str().unwrap_or("?");
    let pid = answer["pid"].as_u64().unwrap_or(0);
    let left = answer["owed_entries"].as_u64().unwrap_or(0);
    if answer["ok"].as_bool() == Some(true) {
        if answer["owed_before"].as_u64().unwrap_or(0) == 0 {
            println!("fail log {fail_log}: nothing to replay (running instance, pid {pid})");
        } else {
            println!(
                "fail log {fail_log}: replayed by the running instance (pid {pid}), nothing left"
            );
        }
        return Ok(0);
    }
    if let Some(owed) = answer["owed"].as_object() {
        for (remote, n) in owed {
            let n = n.as_u64().unwrap_or(0);
            println!(
                "still owed to {remote}: {n} entr{}",
                if n == 1 { "y" } else { "ies" }
            );
        }
    }
    let other = answer["owed_other_commands"].as_u64().unwrap_or(0);
    if other > 0 {
        println!("still owed: {other} other command(s) kept as written");
    }
    if answer["timed_out"].as_bool() == Some(true) {
        println!(
            "the running instance (pid {pid}) was still pushing after {}s; it goes on, see its log",
            super::commands::REPLAY_WAIT.as_secs()
        );
    }
    Err(runtime(anyhow!(
        "{left} entr{} still owed, kept in {fail_log} by the running instance (pid {pid}), \
         which retries them",
        if left == 1 { "y" } else { "ies" }
    )))
}
