//! A full sync while it runs: shown in status, and a line every
//! [`crate::sync::progress::every`] says it still runs, with rsync's own figures.

use std::path::Path;
use std::time::SystemTime;

use super::Stats;

/// While a full sync runs: it shows in status, and a line says it still runs every
/// [`crate::sync::progress::every`] (a full sync of a big tree runs for minutes; the log
/// would otherwise say nothing from its start to its end).
pub(super) struct FullRun<'a> {
    stats: &'a Stats,
    _progress: crate::sync::progress::Task,
}

impl<'a> FullRun<'a> {
    pub(super) fn start(stats: &'a Stats, root: &Path, label: String) -> FullRun<'a> {
        *stats.full_since() = Some(SystemTime::now());
        log::info!(
            remote = label.as_str();
            "full sync of {} to {label} started; live changes are pushed beside it",
            root.display()
        );
        let what = format!("full sync of {} to {label}", root.display());
        let progress = crate::sync::progress::Task::start(what, false, Some(label));
        // The full sync's rsync writes its figures there (see `Mirror::push`).
        *stats.full_rsync() = Some(std::sync::Arc::clone(progress.rsync()));
        FullRun {
            stats,
            _progress: progress,
        }
    }
}

impl Drop for FullRun<'_> {
    fn drop(&mut self) {
        *self.stats.full_since() = None;
        *self.stats.full_rsync() = None;
    }
}
