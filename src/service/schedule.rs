//! The scheduler thread: the timed fail-log replay, the crontab full syncs and the
//! `<verify>` verifications. All only queue work or start it elsewhere (a verification
//! runs on a thread of its own), so a flood of live events cannot starve them and a
//! slow remote cannot hold them up. While the last write of the fail log failed, it also
//! writes it again every `SAVE_RETRY`.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Crontab, Schedule};
use crate::sync::verify::Verifier;
use crate::sync::workers::SAVE_RETRY;
use crate::sync::Mirror;
use crate::sys::Stop;

/// Starts the scheduler; it ends when `stop` is raised.
pub fn spawn(
    replay_every: Duration,
    crontab: Option<Crontab>,
    verify: Option<(Schedule, Arc<Verifier>)>,
    mirror: Arc<Mirror>,
    stop: Arc<Stop>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("schedule".into())
        .spawn(move || run(replay_every, crontab, verify, &mirror, &stop))
}

/// When a schedule next comes due, from `now`.
struct Timer {
    every: Option<Duration>,
    cron: Option<cron::Schedule>,
}

impl Timer {
    fn new(schedule: Option<&Schedule>) -> Timer {
        match schedule {
            Some(Schedule::Every(d)) => Timer {
                every: Some(*d),
                cron: None,
            },
            Some(Schedule::Cron(expr)) => Timer {
                every: None,
                cron: crate::config::cron::parse_cron(expr).ok(),
            },
            None => Timer {
                every: None,
                cron: None,
            },
        }
    }

    fn next(&self, now: Instant) -> Option<Instant> {
        // A period too long for the clock (the config bounds it, but be safe) means never.
        if let Some(d) = self.every {
            return now.checked_add(d);
        }
        let at = self.cron.as_ref()?.upcoming(chrono::Local).next()?;
        let wait = (at - chrono::Local::now()).to_std().unwrap_or_default();
        now.checked_add(wait)
    }
}

fn run(
    replay_every: Duration,
    crontab: Option<Crontab>,
    verify: Option<(Schedule, Arc<Verifier>)>,
    mirror: &Mirror,
    stop: &Arc<Stop>,
) {
    let full_timer = Timer::new(crontab.as_ref().map(|c| &c.schedule));
    let verify_timer = Timer::new(verify.as_ref().map(|(s, _)| s));
    let now = Instant::now();
    let mut next_replay = now.checked_add(replay_every);
    let mut next_full = full_timer.next(now);
    let mut next_verify = verify_timer.next(now);
    loop {
        let now = Instant::now();
        let due = [next_replay, next_full, next_verify]
            .into_iter()
            .flatten()
            .min();
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
                next_full = full_timer.next(now);
            }
        }
        if let (Some(v), Some((_, verifier))) = (next_verify, &verify) {
            if now >= v {
                verifier.start(stop);
                next_verify = verify_timer.next(now);
            }
        }
    }
}

/// How long the scheduler sleeps at a time when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);
