//! Paused: the operator took the remote out (`sersync2 --pause`, for maintenance of a
//! mirror). Nothing is handed out for it ([`Ledger::take`] returns nothing, a full sync
//! included); everything else goes on as ever: changes are queued and merged, what is in
//! flight at the pause finishes and is paid or owed, a retry falls due and queues what
//! is owed, the marks stay (so a barrier does not pass), and a close owes what waits.
//! Resumed, what waits is handed out as if it had just been queued.

use super::Ledger;

impl Ledger {
    /// Nothing is handed out from now on, until [`Ledger::resume`]. Returns whether it
    /// was running before.
    pub fn pause(&mut self) -> bool {
        !std::mem::replace(&mut self.paused, true)
    }

    /// What waits may be handed out again. Returns whether it was paused before.
    pub fn resume(&mut self) -> bool {
        std::mem::replace(&mut self.paused, false)
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;
    use crate::sync::job::{shown_all, Job};

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn paths(w: Option<Job>) -> Vec<PathBuf> {
        match w {
            Some(Job::Paths(v)) => shown_all(&v),
            other => panic!("expected paths, got {other:?}"),
        }
    }

    #[test]
    fn nothing_is_handed_out_while_paused_and_everything_still_waits() {
        let mut q = Ledger::default();
        q.push(p("a"), false);
        assert!(q.pause(), "it was running");
        assert!(!q.pause(), "a second pause changes nothing");
        q.push(p("b"), false);
        q.push(p("a"), false);
        let _ = q.push_rename_at(p("r1"), p("r2"), false, Vec::new(), Instant::now());
        q.push_full();
        assert!(q.is_paused());
        assert!(
            q.take(100).is_none(),
            "nothing while paused, not even a full sync"
        );
        assert!(!q.is_empty(), "what waits still waits");
        assert!(q.oldest().is_some(), "its marks stay");
        assert!(!q.passed(q.checkpoint()), "a barrier does not pass on it");

        assert!(q.resume(), "it was paused");
        assert!(!q.resume());
        assert_eq!(q.take(100), Some(Job::Full), "the full sync waited too");
    }

    #[test]
    fn resumed_it_hands_out_what_waited_merged() {
        let mut q = Ledger::default();
        q.pause();
        for _ in 0..3 {
            q.push(p("x"), false);
        }
        q.push(p("y"), false);
        assert!(q.take(100).is_none());
        assert_eq!(q.len(), 2, "merged while paused");
        q.resume();
        assert_eq!(paths(q.take(100)), [p("x"), p("y")]);
        q.finish(&Job::Paths(vec![p("x").into(), p("y").into()]));
        assert!(q.is_empty());
    }

    #[test]
    fn a_push_in_flight_at_the_pause_ends_as_ever() {
        let mut q = Ledger::default();
        q.push(p("a"), false);
        let job = q.take(100).expect("a call");
        q.pause();
        q.push(p("b"), false);
        assert_eq!(q.running(), 1);
        let _ = q.pushed(&job, &[], Instant::now());
        q.finish(&job);
        assert_eq!(q.running(), 0);
        assert!(q.take(100).is_none(), "still paused");
        assert_eq!(q.len(), 1, "b waits");
    }

    #[test]
    fn a_full_sync_waiting_while_paused_is_owed_at_the_close() {
        let mut q = Ledger::default();
        q.pause();
        q.push(p("a"), false);
        q.push_full();
        let left = q.close();
        assert!(left.full);
        let owed = q.owed();
        assert!(owed.full, "the full sync waiting is owed");
        assert!(q.is_empty(), "nothing waits after the close");
        assert!(!q.passed(q.checkpoint()), "owed: still not on the remote");
    }

    #[test]
    fn what_waits_while_paused_is_owed_at_the_close_path_by_path() {
        let mut q = Ledger::default();
        q.pause();
        q.push(p("a"), false);
        q.push(p("d/b"), false);
        q.close();
        let owed: Vec<&PathBuf> = q.owed().paths.keys().collect();
        assert_eq!(owed, [&p("a"), &p("d/b")]);
    }
}
