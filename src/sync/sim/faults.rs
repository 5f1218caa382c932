//! The fault steps of a history: a remote down and back, an overflow, an agent
//! stop, kill and restart, a torn index, a reload, the watch root replaced.

use super::changes::{next_tick, touch, write_file};
use super::print::fail_log_lines;
use super::*;

impl Sim {
    pub(super) fn toggle_remote(&self) {
        let mut st = self.lock();
        let n = st.remotes.len() as u64;
        let t = st.rng.below(n) as usize;
        st.down[t] = !st.down[t];
        let what = if st.down[t] { "goes down" } else { "is back" };
        st.history.push(format!("remote {t} {what}"));
    }

    pub(super) fn overflow(&self) {
        let mut st = self.lock();
        // The root's loss is not lost with the events: the watcher also compares the
        // root's device and inode with the path's every few seconds.
        // Nor its finding again (the watcher's own doing, not an event).
        let root: Vec<Event> = st
            .events
            .iter()
            .filter(|e| matches!(e, Event::RootGone | Event::RootBack))
            .cloned()
            .collect();
        st.events.clear();
        st.events.push(Event::Change(Change::Overflow));
        st.events.extend(root);
        st.history.push("kernel queue overflow".into());
    }

    /// The agent stops (SIGTERM): what the kernel queue holds is read first, then the
    /// queue closes and the fail log is written; pushes running go on to their end. The
    /// restart comes once no push runs. With `warm`, or it is killed (SIGKILL).
    pub(super) fn stop(self: &Arc<Self>) {
        let kill = {
            let mut st = self.lock();
            st.faults.warm && st.rng.chance(50)
        };
        if kill {
            self.kill();
            return;
        }
        self.close("agent stops");
        let mut st = self.lock();
        if st.faults.warm {
            st.how = Some(Stopped::Term);
        }
    }

    /// The agent is killed (SIGKILL, a crash, a power cut): the kernel queue, the
    /// queue and what the intake waits for are lost, nothing more is written (its
    /// files are kept as they are now and put back at the restart); rsync calls
    /// running go on to their end.
    pub(super) fn kill(self: &Arc<Self>) {
        let files = {
            let st = self.lock();
            let ix = index::path_for(&st.fail_log);
            let journal = index::journal_for(&ix);
            [st.fail_log.clone(), ix, journal]
        };
        let kept = files
            .into_iter()
            .map(|f| {
                let b = std::fs::read(&f).ok();
                (f, b)
            })
            .collect();
        *self.pipeline.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut st = self.lock();
        st.events.clear();
        st.stopped = true;
        st.how = Some(Stopped::Kill(kept));
        st.history.push("agent killed (SIGKILL)".into());
    }

    /// The index checkpointed, as its thread does every 5 s (`warm`).
    pub(super) fn checkpoint(&self) {
        let Some(ix) = self.pipeline().and_then(|p| p.index.clone()) else {
            return;
        };
        if let Err(e) = ix.checkpoint() {
            self.fail(format!("the simulator's index could not be written: {e}"));
        }
        self.note("  (index checkpoint)".into());
    }

    /// The stop ends (`warm`): after a SIGTERM, once its pushes ended, the index is
    /// written as stopped (`warm::finish`); after a SIGKILL, the agent's files are put
    /// back as they were at the kill.
    pub(super) fn stopped_for_good(&self) {
        let how = self.lock().how.take();
        match how {
            Some(Stopped::Term) => {
                if let Some(ix) = self.pipeline().and_then(|p| p.index.clone()) {
                    crate::modes::warm::finish(&ix);
                }
            }
            Some(Stopped::Kill(kept)) => {
                for (f, bytes) in kept {
                    let put = match bytes {
                        Some(b) => crate::sys::fsafe::write_atomic(&f, &b),
                        None => match std::fs::remove_file(&f) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                            _ => Ok(()),
                        },
                    };
                    if let Err(e) = put {
                        self.fail(format!(
                            "the simulator could not put back {}: {e}",
                            f.display()
                        ));
                    }
                }
            }
            None => {}
        }
    }

    /// A restart (`warm`) after the stop: the stop ends; unless quiescing, some
    /// changes are made while no agent runs (nothing sees their events) and the
    /// index or its journal may be torn (a power cut, a disk full); then the agent
    /// starts, with -r half the time, and always where the index cannot bring the
    /// remotes level (none, or none for this root: what changed while stopped would
    /// wait, as the agent says it does).
    pub(super) fn restart(self: &Arc<Self>) {
        let killed_or_changed = matches!(self.lock().how, Some(Stopped::Kill(_)));
        self.stopped_for_good();
        let quiet = self.lock().quiet;
        let (offline, torn) = if quiet {
            (0, false)
        } else {
            let mut st = self.lock();
            (st.rng.below(4), st.rng.chance(10))
        };
        if torn {
            self.tear();
        }
        let found = self.peek_index();
        let level = matches!(found, Some(Found::Level(..)));
        let full = !quiet && self.lock().rng.chance(50)
            || matches!(found, None | Some(Found::Not(_))) && (killed_or_changed || offline > 0);
        for _ in 0..offline {
            self.offline_change(level && !full);
        }
        // Nothing reads the kernel queue of a stopped agent.
        self.lock().events.clear();
        let word = match &found {
            Some(Found::Level(..)) => "index level",
            Some(Found::Unclean(_)) => "index not trusted: full sync",
            _ => "no index",
        };
        self.note(format!(
            "agent starts again{} ({word})",
            if full { " with -r" } else { "" }
        ));
        self.start(full);
    }

    /// What a start would find in the index for the root (read only).
    pub(super) fn peek_index(&self) -> Option<Found> {
        let (ix, targets) = {
            let st = self.lock();
            (index::path_for(&st.fail_log), st.targets.clone())
        };
        let (_, found) = Recorder::load(ix, &targets);
        found.into_iter().next().map(|(_, f)| f)
    }

    /// A power cut or a full disk leaves the index or its journal torn: the index cut
    /// short or a byte of it changed (its checksum fails), the journal's header cut, a
    /// record cut short at its end (an append the cut stopped: its push had not begun),
    /// or the journal gone (removed when a write of it failed).
    pub(super) fn tear(&self) {
        let mut st = self.lock();
        let ix = index::path_for(&st.fail_log);
        let journal = index::journal_for(&ix);
        let how = st.rng.below(5);
        let (path, what) = if how < 2 {
            (ix, "index")
        } else {
            (journal, "journal")
        };
        let Ok(mut bytes) = std::fs::read(&path) else {
            return;
        };
        let done = match how {
            0 if !bytes.is_empty() => {
                let n = st.rng.below(bytes.len() as u64) as usize;
                bytes.truncate(n);
                format!("cut to {n} bytes")
            }
            1 if !bytes.is_empty() => {
                let at = st.rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << st.rng.below(8);
                format!("byte {at} changed")
            }
            2 => {
                let n = st.rng.below(bytes.len().min(36) as u64) as usize;
                bytes.truncate(n);
                format!("cut to {n} bytes (its header)")
            }
            3 => {
                let junk = [0x20, 0, 0, 0, 1, 9];
                let n = 1 + st.rng.below(junk.len() as u64 - 1) as usize;
                bytes.extend_from_slice(&junk[..n]);
                format!("{n} bytes of a record cut short at its end")
            }
            _ => {
                if std::fs::remove_file(&path).is_ok() {
                    st.history.push("  the index's journal is gone".into());
                }
                return;
            }
        };
        if let Err(e) = crate::sys::fsafe::write_atomic(&path, &bytes) {
            st.broken.get_or_insert(format!(
                "the simulator could not tear {}: {e}",
                path.display()
            ));
            return;
        }
        st.history
            .push(format!("  the index's {what} is torn: {done}"));
    }

    /// A reload (SIGHUP) with the same config, as live mode does it: the new watches are
    /// set first, the running pipeline stops as at a stop (what the kernel queue holds
    /// is read by it, pending and owed work goes to the fail log) and everything is
    /// built again and replays the fail log; `-r` is not repeated. Only between pushes:
    /// live waits for running pushes before it builds again.
    pub(super) fn reload(self: &Arc<Self>) {
        self.close("agent reloads");
        if self.lock().faults.warm {
            // Each run of live mode writes its index at its end and loads it again.
            self.lock().how = Some(Stopped::Term);
            self.stopped_for_good();
        }
        self.start(false);
    }

    /// Closes the running pipeline (its fail log written); `what` for the history.
    pub(super) fn close(self: &Arc<Self>, what: &str) {
        self.deliver(true);
        // The intake queues what waits for a CLOSE_WRITE once the watchers hang up.
        self.flush_unclosed();
        let Some(p) = self.pipeline() else {
            return;
        };
        let n = p.mirror.close();
        let mut st = self.lock();
        st.stopped = true;
        let log = std::fs::read(&st.fail_log).unwrap_or_default();
        let owed = fail_log_lines(&log);
        st.history.push(format!(
            "{what} ({n} entries to the fail log: {})",
            owed.join(" | ")
        ));
    }

    /// The watch root replaced: moved aside (or removed) and another made at its path
    /// with a few files (`mv www www.old && cp -a build www`). The kernel reports the old
    /// root's MOVE_SELF or DELETE_SELF; changes in the new one are not seen until the
    /// watcher finds it (a full sync then covers them), and the workers refuse to push
    /// from it until then (`RootHealth::check`: not the directory watched).
    pub(super) fn replace_root(&self) {
        let mut st = self.lock();
        let root = st.root.clone();
        let old = model::read_tree(&root);
        st.replaced_roots += 1;
        let aside = root.with_file_name(format!("src.old{}", st.replaced_roots));
        let moved = st.rng.chance(50);
        let gone = if moved {
            std::fs::rename(&root, &aside)
        } else {
            std::fs::remove_dir_all(&root)
        };
        if gone.is_err() || std::fs::create_dir(&root).is_err() {
            st.broken
                .get_or_insert("the simulator could not replace the root".into());
            return;
        }
        for k in old.keys() {
            touch(&mut st, k);
        }
        let files = st.rng.below(3);
        for i in 0..files {
            let f = NAMES[i as usize].as_bytes().to_vec();
            let tick = next_tick(&mut st);
            let byte = b'a' + st.rng.below(3) as u8;
            if write_file(&root.join(OsStr::from_bytes(&f)), &[byte], tick).is_ok() {
                touch(&mut st, &f);
            }
        }
        st.events.push(Event::RootGone);
        st.history.push(format!(
            "watch root replaced ({} the old one, {files} files in the new)",
            if moved { "moved aside" } else { "rm -rf" }
        ));
    }
}
