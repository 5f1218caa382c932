//! `--replay`: push everything the fail log owes once; exit 0 only if nothing is left.
//!
//! Entries for a root or remote the config does not name are never run: they are listed
//! and stay in the file, and the exit status says something is left, until the operator
//! drops them with `--replay --drop-unknown`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;

use super::{lock_and_load, runtime, Exit};
use crate::cli::Args;
use crate::config::Config;
use crate::filter::Excludes;
use crate::sync::{self, Mirror, Queue};

fn entries(n: usize) -> &'static str {
    if n == 1 {
        "y"
    } else {
        "ies"
    }
}

pub fn replay(config: &Config, args: &Args) -> Result<u8, Exit> {
    let targets = sync::targets(config);
    let (_lock, mut fail_log) = lock_and_load(config, args, &targets)?;
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
            fail_log.save(&targets).map_err(|e| {
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
    let workers = args.workers as usize;
    let queue = Arc::new(Queue::new(targets.len(), config.rsync.batch, workers));
    let mirror = Arc::new(Mirror::new(
        targets,
        queue,
        Excludes::new(config.excludes.clone()),
        config.debug,
        fail_log,
        None,
    ));
    let handles = mirror.spawn_workers(workers).map_err(runtime)?;
    mirror.replay();
    while !mirror.queue().is_idle() {
        std::thread::sleep(Duration::from_millis(20));
    }
    mirror.close();
    for h in handles {
        let _ = h.join();
    }
    let left = mirror.owed();
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
