//! A full sync while it runs: shown in status, and a line every
//! [`full_progress_every`] says it still runs.

use std::path::Path;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::Stats;

/// While a full sync runs: it shows in status, and a line says it still runs every
/// [`full_progress_every`] (a full sync of a big tree runs for minutes; the log would
/// otherwise say nothing from its start to its end).
pub(super) struct FullRun<'a> {
    stats: &'a Stats,
    /// Dropped at the end, which ends the progress thread.
    done: Option<crossbeam_channel::Sender<()>>,
    progress: Option<JoinHandle<()>>,
}

impl<'a> FullRun<'a> {
    pub(super) fn start(stats: &'a Stats, root: &Path, label: String) -> FullRun<'a> {
        *stats.full_since() = Some(SystemTime::now());
        let started = Instant::now();
        log::info!(
            remote = label.as_str();
            "full sync of {} to {label} started; live changes are pushed beside it",
            root.display()
        );
        let (done, ended) = crossbeam_channel::bounded::<()>(0);
        let root = root.to_path_buf();
        let every = full_progress_every();
        let progress = std::thread::Builder::new()
            .name("full-progress".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    ended.recv_timeout(every)
                {
                    log::info!(
                        remote = label.as_str();
                        "{}",
                        full_progress_line(&root, &label, started.elapsed())
                    );
                }
            })
            .ok();
        FullRun {
            stats,
            done: Some(done),
            progress,
        }
    }
}

impl Drop for FullRun<'_> {
    fn drop(&mut self) {
        *self.stats.full_since() = None;
        drop(self.done.take());
        if let Some(h) = self.progress.take() {
            let _ = h.join();
        }
    }
}

/// How often a running full sync says it still runs: 30 s, or
/// `SERSYNC2_FULL_PROGRESS_SECS` (read once; for tests and tuning; at least 1 s).
pub fn full_progress_every() -> Duration {
    static EVERY: OnceLock<Duration> = OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("SERSYNC2_FULL_PROGRESS_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(FULL_PROGRESS_EVERY, |s| Duration::from_secs(s.max(1)))
    })
}

/// See [`full_progress_every`].
pub const FULL_PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The line a full sync running for `elapsed` logs (see [`FullRun`]).
fn full_progress_line(root: &Path, label: &str, elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    let took = match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    };
    format!(
        "full sync of {} to {label} still running ({took} so far)",
        root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_full_sync_says_how_long_it_has_run() {
        let line = |s| full_progress_line(Path::new("/www"), "h::m", Duration::from_secs(s));
        assert_eq!(
            line(30),
            "full sync of /www to h::m still running (30s so far)"
        );
        assert_eq!(
            line(90),
            "full sync of /www to h::m still running (1m30s so far)"
        );
        assert_eq!(
            line(3_725),
            "full sync of /www to h::m still running (1h02m05s so far)"
        );
    }
}
