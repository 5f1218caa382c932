//! `--replay`: push everything the fail log owes once; exit 0 only if nothing is left.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;

use super::{lock_and_load, runtime, Exit};
use crate::cli::Args;
use crate::config::Config;
use crate::filter::Excludes;
use crate::sync::{self, Mirror, Queue};

pub fn replay(config: &Config, args: &Args) -> Result<u8, Exit> {
    super::require_rsync()?;
    let targets = sync::targets(config);
    let (_lock, fail_log) = lock_and_load(config, args, &targets)?;
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
    if left == 0 {
        println!(
            "fail log {}: replayed, nothing left",
            config.fail_log.display()
        );
        return Ok(0);
    }
    for (remote, n) in mirror.owed_summary() {
        println!(
            "still owed to {remote}: {n} entr{}",
            if n == 1 { "y" } else { "ies" }
        );
    }
    Err(runtime(anyhow!(
        "{} entr{} still owed, kept in {}",
        left,
        if left == 1 { "y" } else { "ies" },
        mirror.fail_log_path().display()
    )))
}
