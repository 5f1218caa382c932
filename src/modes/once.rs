//! `--once`: bring every remote level and exit, without watching (lsyncd's `-onepass`;
//! for cron jobs and deploy pipelines).
//!
//! As a start of the agent without the watches: the warm-restart index is loaded and
//! each watch root walked (stat only); what differs from the index is queued (a root
//! without a usable index, or every root under `-r`, gets a full sync of its remotes,
//! and its index is made from it); then the fail log is replayed. Once nothing is
//! waiting nor running, the pipeline stops as at SIGTERM: what could not be pushed is
//! kept in the fail log, and the index is written, for the next run. Exit 0 only if
//! nothing is left owed and every root could be walked.

use std::time::Duration;

use anyhow::anyhow;

use super::pipeline::{wait_all, Options, Parts, Pipeline};
use super::{runtime, Exit};
use crate::cli::Args;
use crate::config::Config;
use crate::sys::Signals;

/// How often the wait for the remotes looks whether the queue is idle.
const LOOK_EVERY: Duration = Duration::from_millis(20);

fn entries(n: usize) -> String {
    format!("{n} entr{}", if n == 1 { "y" } else { "ies" })
}

pub fn once(config: &Config, args: &Args) -> Result<u8, Exit> {
    super::require_rsync()?;
    let _instance = super::lock_instance(args)?;
    let signals = Signals::install()
        .map_err(|e| runtime(anyhow!("cannot handle SIGTERM, SIGINT and SIGHUP: {e}")))?;
    let parts = Parts::new(config, &super::own_files(config, args));
    let fail_log = parts.load_fail_log(config)?;
    let roots: Vec<_> = (parts.roots())
        .map(|(r, e)| (r.to_path_buf(), e.clone()))
        .collect();
    let opts = Options {
        workers: args.workers,
        ..Options::default()
    };
    let (mut pipeline, mirror) = Pipeline::sync(config, parts, fail_log, None, opts);
    let (index, unwalked, counted) = super::warm::start(
        &config.fail_log,
        &roots,
        &mirror,
        args.full_first,
        true,
        pipeline.links(),
    );
    if args.full_first {
        log::info!("--once -r: full sync of every remote");
        super::warm::full_syncs(&mirror, &counted);
    }
    if mirror.owed() > 0 {
        log::info!(
            "fail log {} holds {} from before; replaying",
            config.fail_log.display(),
            entries(mirror.owed())
        );
        mirror.replay();
    }
    pipeline.start().map_err(runtime)?;
    let mut stopped_early = false;
    let started = std::time::Instant::now();
    let mut said = started;
    while !pipeline.queue().is_idle() {
        if said.elapsed() >= crate::sync::progress::every() {
            said = std::time::Instant::now();
            log::info!(
                "--once: {} path(s) waiting for the remotes, pushed per remote so far: {:?} \
                 ({} so far)",
                pipeline.queue().waiting().iter().sum::<usize>(),
                mirror.pushed(),
                crate::sync::progress::took(started.elapsed())
            );
        }
        if signals.stopped_within(LOOK_EVERY) {
            log::info!("--once: stopping early (signal); what is left is kept in the fail log");
            stopped_early = true;
            break;
        }
    }
    let (stopped, ()) = pipeline.stop(wait_all);
    super::warm::finish(&index);
    if let Err(e) = &stopped.kept {
        log::error!("{e}");
    }
    let left = stopped.owed;
    let unknown = mirror.unknown();
    // Deletes the brake holds are kept in the fail log, not owed: the remote is not level.
    let held: Vec<(String, crate::sync::ledger::Holding)> = (mirror.targets().iter())
        .zip(mirror.queue().held())
        .filter(|(_, h)| h.any())
        .map(|(t, h)| (t.label(), h))
        .collect();
    if left == 0
        && held.is_empty()
        && unknown.is_empty()
        && unwalked == 0
        && !stopped_early
        && stopped.kept.is_ok()
    {
        println!(
            "every remote is level; pushed per remote: {:?}",
            stopped.pushed
        );
        return Ok(0);
    }
    // What the brake holds is in the fail log too, said on its own line below.
    for (remote, n) in mirror.owed_summary() {
        let held_here = (held.iter())
            .find(|(r, _)| *r == remote)
            .map_or(0, |(_, h)| h.deletes + usize::from(h.full));
        let n = n.saturating_sub(held_here);
        if n > 0 {
            println!("still owed to {remote}: {}", entries(n));
        }
    }
    for (remote, h) in &held {
        println!(
            "held by the brake on mass deletes for {remote}: {}, kept in the fail log; start \
             sersync2 on this config, then `sersync2 --release-deletes -o FILE` pushes them \
             (or --discard-deletes drops them)",
            h.what()
        );
    }
    for (root, dest, n) in &unknown {
        println!(
            "not in the config, kept and not run: {} for {} to {}",
            entries(*n),
            root.display(),
            dest.to_string_lossy()
        );
    }
    if unwalked > 0 {
        println!("{unwalked} watch root(s) could not be walked: what changed there is not known");
    }
    let held_for = format!("deletes held by the brake for {} remote(s)", held.len());
    let what = match (left, held.is_empty()) {
        (0, false) => held_for,
        (n, false) => format!("{} owed and {held_for}", entries(n)),
        (n, true) => format!("{} owed", entries(n)),
    };
    Err(runtime(anyhow!(
        "not every remote is level: {what}, kept in the fail log {} for the next run",
        mirror.fail_log_path().display()
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_are_counted_in_words() {
        assert_eq!(super::entries(1), "1 entry");
        assert_eq!(super::entries(3), "3 entries");
    }
}
