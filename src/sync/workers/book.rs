//! A call's outcome booked in the queue's ledger and the fail log written from it;
//! replay, close and the fail log's saves.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::partial::FAILED_PATHS_SHOWN;
use super::{FullSyncResult, Mirror, Ordered, SAVE_RETRY};
use crate::sync::cause::{self, Cause};
use crate::sync::faillog::{self, FailLog};
use crate::sync::job::{Job, RemoteId};
use crate::sync::lockorder::Lock;
use crate::sync::recovery;
use crate::sync::rsync::Outcome;

impl Mirror {
    /// Books an outcome: counters, fail queue, fail log. Returns how long the remote
    /// should rest before its next call.
    pub(super) fn account(&self, t: RemoteId, job: &Job, outcome: &Outcome) -> Option<Duration> {
        self.book(t, job, outcome, true, &[])
    }

    /// The part of a call that ended in exit 23 which landed: paid like a success, but
    /// the call failed, so it ends no run of failures (no "recovered" line); the failed
    /// part is booked with [`Mirror::account`].
    pub(super) fn account_landed_part(
        &self,
        t: RemoteId,
        job: &Job,
        outcome: &Outcome,
    ) -> Option<Duration> {
        self.book(t, job, outcome, false, &[])
    }

    /// Books an outcome; `left_out`: paths of `job` a success left out below a file
    /// or link, with that file or link (see `Ledger::paid_leaving`).
    pub(super) fn book(
        &self,
        t: RemoteId,
        job: &Job,
        outcome: &Outcome,
        ends_failures: bool,
        left_out: &[(PathBuf, PathBuf)],
    ) -> Option<Duration> {
        let stats = &self.stats[t.0];
        let target = &self.targets[t.0];
        if let Job::Full = job {
            *Ordered::lock(&self.last_full, Lock::LastFull) = Some(FullSyncResult {
                ended: SystemTime::now(),
                ok: outcome.ok(),
                seconds: outcome.elapsed.as_secs_f64(),
                remote: target.label(),
            });
        }
        if outcome.ok() {
            stats
                .pushed
                .fetch_add(job.count() as u64, Ordering::Relaxed);
            let label = target.label();
            if let (Some(after), Job::Paths(entries)) = (&self.after_push, job) {
                let first = self.targets.iter().position(|x| x.root == target.root) == Some(t.0);
                after.pushed(&super::Landed {
                    root: &target.root,
                    remote: &label,
                    first,
                    entries,
                });
            }
            // With <debug start="true"> beside the command lines; else at debug level.
            let level = if self.debug {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            if log::log_enabled!(level) {
                log::log!(
                    level,
                    remote = label.as_str(), paths = job.count(), rsync_exit = outcome.status;
                    "pushed {} path(s) to {label} in {:.3}s",
                    job.count(),
                    outcome.elapsed.as_secs_f64()
                );
            }
            if let Job::Full = job {
                log::info!(
                    remote = label.as_str(), rsync_exit = outcome.status;
                    "full sync of {} to {} done in {:.1}s",
                    target.root.display(),
                    target.label(),
                    outcome.elapsed.as_secs_f64()
                );
            }
            // The fail log's lock first, then the queue's (see ARCHITECTURE.md), so
            // the file is written in the order the ledger changed. The ledger pays,
            // follows the retry schedule and queues again what it owes when the remote
            // is back or no push of it is coming (see `Ledger::pushed`).
            let fl = self.fail_log();
            let pushed = self.queue.pushed(t, job, left_out);
            if pushed.changed || self.unsaved() {
                self.save(&fl);
            }
            drop(fl);
            let ended = (ends_failures)
                .then(|| stats.failures().succeeded(SystemTime::now()))
                .flatten();
            if let Some(r) = ended {
                log::info!(
                    remote = label.as_str(), failed_calls = r.failed_calls;
                    "{}",
                    cause::recovered_line(&label, &r)
                );
            }
            if pushed.recovered {
                log::info!(
                    "{} is reachable again; queueing what it owes",
                    target.label()
                );
            } else if pushed.orphaned > 0 {
                let n = pushed.orphaned;
                log::info!(
                    "{} owes {n} entr{} that no push waiting or running covers; queueing \
                     them again",
                    target.label(),
                    if n == 1 { "y" } else { "ies" }
                );
            } else if pushed.was_failing && !pushed.still_owes {
                log::info!("{} is level again: it owes nothing", target.label());
            }
            return None;
        }
        stats.failed.fetch_add(1, Ordering::Relaxed);
        let what = match job {
            Job::Paths(p) if p.len() == 1 => p[0].to_string(),
            Job::Paths(p) => format!("{} paths", p.len()),
            Job::Full => "full sync".to_owned(),
            Job::Rename { from, to, .. } => {
                format!("rename {} -> {}", from.display(), to.display())
            }
        };
        let cause = Cause::of(outcome.status, &outcome.stderr);
        let mut msg = cause.text;
        let (paths, more) = recovery::failed_paths(&outcome.stderr, FAILED_PATHS_SHOWN);
        if !paths.is_empty() {
            msg.push_str(&format!(
                "; rsync could not transfer {}{}",
                paths
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        let fl = self.fail_log();
        // Before the job is finished in the queue, so its entries are never neither in
        // flight nor owed (a barrier would pass them); the ledger sets the retry.
        let plan = self
            .queue
            .failed(t, job, outcome.status, crate::sys::random_u64());
        let saved = self.try_save(&fl);
        let path = fl.path.clone();
        drop(fl);
        let now = Instant::now();
        let plan = plan.unwrap_or(recovery::Plan {
            retry_at: now,
            rest: recovery::ANSWERED_REST,
        });
        let retry_in = plan.retry_at.saturating_duration_since(now);
        match saved {
            Ok(()) => log::error!(
                remote = target.label().as_str(), paths = job.count(), rsync_exit = outcome.status,
                cause = cause.kind.as_str(), stderr = outcome.stderr.as_str();
                "push of {what} to {} failed, written to the fail log {}: {msg}; what it \
                 owes is tried again in {:.1}s",
                target.label(),
                path.display(),
                retry_in.as_secs_f64()
            ),
            Err(e) => log::error!(
                remote = target.label().as_str(), paths = job.count(), rsync_exit = outcome.status,
                cause = cause.kind.as_str(), stderr = outcome.stderr.as_str();
                "push of {what} to {} failed and could NOT be written to the fail log {} \
                 ({e}): {msg}; it is kept in memory only, tried again in {:.1}s, and the fail \
                 log is written again at the next change and every {}s",
                target.label(),
                path.display(),
                retry_in.as_secs_f64(),
                SAVE_RETRY.as_secs()
            ),
        }
        stats.failures().failed(SystemTime::now(), msg);
        Some(plan.rest)
    }

    /// Writes the fail log from the ledger (under the fail log's lock), logging a
    /// failure the first time it is seen.
    pub(super) fn save(&self, fl: &FailLog) {
        let mut known = self.unsaved_note().clone();
        if let Err(e) = self.try_save(fl) {
            if known.take().as_deref() != Some(e.as_str()) {
                log::error!(
                    "cannot write the fail log {} ({e}): its {} entries are kept in memory \
                     only; writing it again at the next change and every {}s",
                    fl.path.display(),
                    self.owed() + fl.unknown_len(),
                    SAVE_RETRY.as_secs()
                );
            }
        }
    }

    /// Writes the fail log and records whether that worked; says when it works again.
    fn try_save(&self, fl: &FailLog) -> Result<(), String> {
        let owed = self.queue.owed();
        let result = fl.save(&owed, &self.targets).map_err(|e| e.to_string());
        let mut unsaved = self.unsaved_note();
        match &result {
            Ok(()) if unsaved.take().is_some() => log::info!(
                "the fail log {} is written again ({} entries)",
                fl.path.display(),
                owed.iter().map(faillog::Owed::len).sum::<usize>() + fl.unknown_len()
            ),
            Ok(()) => {}
            Err(e) => *unsaved = Some(e.clone()),
        }
        result
    }

    /// Queues owed work again (it stays owed until a push of it succeeds).
    fn requeue(&self, owed: Vec<(RemoteId, Job)>) {
        for (t, job) in owed {
            match job {
                Job::Full => self.queue.push_full(&[t]),
                job => self.queue.push_many(&[t], &job.plain_paths()),
            }
        }
    }

    /// The timed (or start-up) replay: owed work goes through the queue like any change,
    /// so it keeps the per-path order. Entries for roots or remotes the config does not
    /// name are never run here; they stay in the file.
    pub fn replay(&self) {
        let owed: Vec<(RemoteId, Job)> = self
            .all()
            .into_iter()
            .flat_map(|t| self.queue.owed_jobs(t).into_iter().map(move |job| (t, job)))
            .collect();
        if owed.is_empty() {
            return;
        }
        log::info!(
            "replaying the fail log: {} remote(s) with owed paths",
            owed.len()
        );
        self.requeue(owed);
    }

    /// Stops handing out work. What is still queued, and what is in flight, is written
    /// to the fail log now; a running push that then succeeds clears its entries, so
    /// nothing is lost even if the process must exit before it ends.
    pub fn close(&self) -> usize {
        self.stopping.store(true, Ordering::Relaxed);
        let fl = self.fail_log();
        // The queue owes what it had (see `Ledger::close`): a push still running that
        // succeeds pays its paths, but not a newer change of the same path that was
        // waiting behind it.
        let left = self.queue.close();
        let n: usize = (left.iter())
            .map(|left| usize::from(left.full) + left.waiting.len() + left.running.len())
            .sum();
        // Held by the brake on mass deletes: kept held, in the fail log, for the next
        // start (see `ledger/brake.rs`).
        let mut held = 0;
        for (t, left) in self.targets.iter().zip(&left) {
            if !left.held.any() {
                continue;
            }
            held += left.held.deletes + usize::from(left.held.full);
            log::warn!(
                remote = t.label().as_str();
                "{} to {} held by the brake on mass deletes: kept held in the fail log {}; the \
                 next start holds them again until released or discarded",
                left.held.what(),
                t.label(),
                fl.path.display()
            );
        }
        let n = n + held;
        if n > 0 || self.unsaved() {
            self.save(&fl);
        }
        n
    }

    /// Writes the fail log from the ledger now: the warm-restart start does, once it
    /// queued files a full sync would skip (`Owed::blind`), so a kill or a power cut
    /// before their pushes land does not lose them with a torn index.
    pub fn save_fail_log(&self) {
        let fl = self.fail_log();
        self.save(&fl);
    }

    /// Whether the last write of the fail log failed.
    pub fn unsaved(&self) -> bool {
        self.unsaved_note().is_some()
    }

    /// While the last write failed: writes the fail log again (the scheduler's timer).
    pub fn retry_save(&self) {
        if self.unsaved() {
            let fl = self.fail_log();
            self.save(&fl);
        }
    }

    /// At the stop: the fail log written if its last write failed. `Err` names the
    /// entries that could not be kept, the path and the error.
    pub fn final_save(&self) -> anyhow::Result<()> {
        if !self.unsaved() {
            return Ok(());
        }
        let fl = self.fail_log();
        self.try_save(&fl).map_err(|e| {
            let n = self.owed() + fl.unknown_len();
            anyhow::anyhow!(
                "{n} owed entr{} could NOT be kept: cannot write the fail log {} ({e}); \
                 they are lost with this process: run a full sync (-r) at the next start",
                if n == 1 { "y" } else { "ies" },
                fl.path.display()
            )
        })
    }

    /// Paths that were pushed, per remote (for logs).
    pub fn pushed(&self) -> Vec<u64> {
        self.stats
            .iter()
            .map(|s| s.pushed.load(Ordering::Relaxed))
            .collect()
    }
}
