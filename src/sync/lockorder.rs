//! The lock order of the push path (ARCHITECTURE.md "Lock order"), checked: the fail
//! log's lock first, then at most one of the others at a time (the queue's, the fail
//! log's `unsaved` note, a remote's failures or running calls, the last full sync's, a
//! remote's known big files),
//! each taken and released, never two of them together and never the fail log's under
//! one of them. Every such lock is taken through [`Hold::new`], which counts it as held
//! by this thread until it is dropped and, in debug builds, asserts the order.

use std::cell::Cell;

/// A lock of the push path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// `Mirror::fail_log`: first, if at all.
    FailLog,
    /// The queue's lock (every remote's `Ledger`).
    Queue,
    /// `Mirror::unsaved`: the last failed write of the fail log.
    Unsaved,
    /// A remote's run of failures (`Stats::failures`).
    Failures,
    /// A remote's running calls (`Stats::running`).
    Running,
    /// The last full sync's result.
    LastFull,
    /// A remote's known big-file lengths (`Mirror::known`, `sync::bigfiles`).
    BigFiles,
}

impl Lock {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// May `lock` be taken while the locks in `held` (a set of [`Lock::bit`]s) are held?
/// `Err` says what breaks the order.
fn check(held: u8, lock: Lock) -> Result<(), String> {
    let others = held & !Lock::FailLog.bit();
    match lock {
        Lock::FailLog if held != 0 => Err(format!(
            "the fail log's lock is taken first, never under another ({held:#b} held)"
        )),
        Lock::FailLog => Ok(()),
        _ if others != 0 => Err(format!(
            "{lock:?} taken while another lock after the fail log's is held ({held:#b}): \
             at most one of them at a time"
        )),
        _ => Ok(()),
    }
}

thread_local! {
    /// The locks of the push path this thread holds now.
    static HELD: Cell<u8> = const { Cell::new(0) };
}

/// Does this thread hold `lock` now?
#[cfg(test)]
pub fn held(lock: Lock) -> bool {
    HELD.with(|h| h.get() & lock.bit() != 0)
}

/// One lock of the push path counted as held by this thread while it lives; take it
/// just before the lock itself.
pub struct Hold(Lock);

impl Hold {
    pub fn new(lock: Lock) -> Hold {
        HELD.with(|h| {
            let held = h.get();
            let order = check(held, lock);
            debug_assert!(
                order.is_ok(),
                "lock order: {}",
                order.err().unwrap_or_default()
            );
            h.set(held | lock.bit());
        });
        Hold(lock)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get() & !self.0.bit()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(locks: &[Lock]) -> u8 {
        locks.iter().fold(0, |s, l| s | l.bit())
    }

    #[test]
    fn the_fail_log_first_then_at_most_one_other_lock() {
        let others = [
            Lock::Queue,
            Lock::Unsaved,
            Lock::Failures,
            Lock::Running,
            Lock::LastFull,
            Lock::BigFiles,
        ];
        assert!(check(0, Lock::FailLog).is_ok());
        for &a in &others {
            assert!(check(0, a).is_ok(), "{a:?} alone");
            assert!(
                check(set(&[Lock::FailLog]), a).is_ok(),
                "{a:?} under the fail log"
            );
            assert!(
                check(set(&[a]), Lock::FailLog).is_err(),
                "the fail log under {a:?}"
            );
            for &b in &others {
                assert!(check(set(&[a]), b).is_err(), "{b:?} under {a:?}");
                assert!(
                    check(set(&[Lock::FailLog, a]), b).is_err(),
                    "{b:?} under the fail log and {a:?}"
                );
            }
        }
    }

    #[test]
    fn a_hold_counts_while_it_lives() {
        assert!(!held(Lock::Queue));
        {
            let _fl = Hold::new(Lock::FailLog);
            let _q = Hold::new(Lock::Queue);
            assert!(held(Lock::FailLog) && held(Lock::Queue));
        }
        assert!(!held(Lock::FailLog) && !held(Lock::Queue));
        // Taken and released one after the other: in order.
        drop(Hold::new(Lock::Unsaved));
        drop(Hold::new(Lock::Queue));
        assert!(!held(Lock::Unsaved));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order")]
    fn two_locks_after_the_fail_log_together_break_the_order() {
        let _q = Hold::new(Lock::Queue);
        let _u = Hold::new(Lock::Unsaved);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order")]
    fn the_fail_log_under_the_queue_breaks_the_order() {
        let _q = Hold::new(Lock::Queue);
        let _fl = Hold::new(Lock::FailLog);
    }
}
