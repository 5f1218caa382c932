//! The scheduler thread: the timed fail-log replay and the crontab full syncs. Both only
//! queue work, so a flood of live events cannot starve them. While the last write of
//! the fail log failed, it also writes it again every `SAVE_RETRY`.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Crontab, Schedule};
use crate::sync::workers::SAVE_RETRY;
use crate::sync::Mirror;
use crate::sys::Stop;

/// Starts the scheduler; it ends when `stop` is raised.
pub fn spawn(
    replay_every: Duration,
    crontab: Option<Crontab>,
    mirror: Arc<Mirror>,
    stop: Arc<Stop>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("schedule".into())
        .spawn(move || run(replay_every, crontab, &mirror, &stop))
}

fn run(replay_every: Duration, crontab: Option<Crontab>, mirror: &Mirror, stop: &Stop) {
    let cron = match crontab.as_ref().map(|c| &c.schedule) {
        Some(Schedule::Cron(expr)) => crate::config::cron::parse_cron(expr).ok(),
        _ => None,
    };
    let every = match crontab.as_ref().map(|c| &c.schedule) {
        Some(Schedule::Every(d)) => Some(*d),
        _ => None,
    };
    let next_cron = |now: Instant| -> Option<Instant> {
        let s = cron.as_ref()?;
        let at = s.upcoming(chrono::Local).next()?;
        let wait = (at - chrono::Local::now()).to_std().unwrap_or_default();
        now.checked_add(wait)
    };
    // A period too long for the clock (the config bounds it, but be safe) means never.
    let now = Instant::now();
    let mut next_replay = now.checked_add(replay_every);
    let mut next_full = every
        .and_then(|d| now.checked_add(d))
        .or_else(|| next_cron(now));
    loop {
        let now = Instant::now();
        let due = match (next_replay, next_full) {
            (Some(r), Some(f)) => Some(r.min(f)),
            (r, f) => r.or(f),
        };
        let mut wait = due.map_or(IDLE, |d| d.saturating_duration_since(now));
        if mirror.unsaved() {
            // The last write of the fail log failed: try again soon.
            wait = wait.min(SAVE_RETRY);
        }
        if stop.wait_timeout(wait) {
            return;
        }
        mirror.retry_save();
        let now = Instant::now();
        if next_replay.is_some_and(|r| now >= r) {
            mirror.replay();
            next_replay = now.checked_add(replay_every);
        }
        if let Some(f) = next_full {
            if now >= f {
                log::info!("crontab: full sync of every remote");
                mirror.full_sync_all();
                next_full = every
                    .and_then(|d| now.checked_add(d))
                    .or_else(|| next_cron(now));
            }
        }
    }
}

/// How long the scheduler sleeps at a time when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);
