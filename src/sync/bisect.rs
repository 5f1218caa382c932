//! One poison path must not hold back the others. A call of several paths that failed
//! for a reason that is not the remote's (not a connection, timeout or spawn failure:
//! rsync exit 22, an exit 23 naming nothing the agent can owe alone, ...) is split in
//! two halves, each pushed on its own; a half that fails again is split again. So every
//! other path lands and only the culprit (a single path) stays owed. Bounded: at most
//! [`SPLIT_BUDGET`] splits per job taken from the queue; past that, a failing part is
//! owed whole as before.

use super::job::Job;
use super::recovery;

/// Splits at most per job: with one culprit among n paths a bisection costs about
/// 2·log2(n) calls (a batch of 1,000 paths: about 20), so this leaves room for a few.
pub const SPLIT_BUDGET: usize = 64;

/// Whether a call that failed with `status` may be split to land its other paths:
/// the remote answered (not unreachable, not a timeout, rsync started), and no signal
/// ended rsync (exit 20: a stop).
pub fn splits_on(status: i32) -> bool {
    status != 0 && status != 24 && status != 20 && !recovery::unreachable(status)
}

/// The two halves of a failed call of several paths, taking one split from `budget`;
/// `None` when it is not split (one path, not a list of paths, a failure that is the
/// remote's, or no budget left).
pub fn halves(call: &Job, status: i32, budget: &mut usize) -> Option<(Job, Job)> {
    let Job::Paths(paths) = call else {
        return None;
    };
    if paths.len() < 2 || !splits_on(status) || *budget == 0 {
        return None;
    }
    *budget -= 1;
    let (a, b) = paths.split_at(paths.len() / 2);
    Some((Job::Paths(a.to_vec()), Job::Paths(b.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::job::{plain_entries, Entry};
    use std::collections::VecDeque;
    use std::path::PathBuf;

    fn paths(n: usize) -> Vec<Entry> {
        plain_entries((0..n).map(|i| PathBuf::from(format!("p{i}"))))
    }

    /// Runs the split loop the workers run against a remote that fails every call
    /// holding one of `poison` with `status`: what landed, what is owed, and how many
    /// calls it took.
    fn run(n: usize, poison: &[usize], status: i32) -> (usize, Vec<Job>, usize) {
        let bad: Vec<PathBuf> = poison
            .iter()
            .map(|i| PathBuf::from(format!("p{i}")))
            .collect();
        let mut work = VecDeque::from([Job::Paths(paths(n))]);
        let (mut landed, mut owed, mut calls, mut budget) = (0, Vec::new(), 0, SPLIT_BUDGET);
        while let Some(call) = work.pop_front() {
            calls += 1;
            let Job::Paths(p) = &call else { unreachable!() };
            if !p.iter().any(|e| bad.contains(&e.path)) {
                landed += p.len();
                continue;
            }
            match halves(&call, status, &mut budget) {
                Some((a, b)) => {
                    work.push_front(b);
                    work.push_front(a);
                }
                None => owed.push(call),
            }
        }
        (landed, owed, calls)
    }

    #[test]
    fn one_poison_path_is_the_only_one_owed() {
        let (landed, owed, calls) = run(1000, &[637], 22);
        assert_eq!(landed, 999);
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].count(), 1);
        assert!(calls <= 2 * 10 + 1, "{calls} calls");
    }

    #[test]
    fn a_few_poison_paths_are_found_within_the_budget() {
        let (landed, owed, _) = run(500, &[0, 250, 499], 22);
        assert_eq!(landed, 497);
        assert_eq!(owed.iter().map(Job::count).sum::<usize>(), 3);
    }

    #[test]
    fn the_budget_bounds_the_calls_and_owes_the_rest_whole() {
        // Every path poison: no split finds a clean half.
        let (landed, owed, calls) = run(10_000, &(0..10_000).collect::<Vec<_>>(), 23);
        assert_eq!(landed, 0);
        assert_eq!(owed.iter().map(Job::count).sum::<usize>(), 10_000);
        assert!(calls <= 2 * SPLIT_BUDGET + 1, "{calls} calls");
    }

    #[test]
    fn a_remote_that_did_not_answer_is_not_split() {
        for status in [5, 10, 12, 30, 35, 255, -1, 20, 0, 24] {
            let mut budget = SPLIT_BUDGET;
            assert!(
                halves(&Job::Paths(paths(4)), status, &mut budget).is_none(),
                "{status}"
            );
        }
        let mut budget = SPLIT_BUDGET;
        assert!(halves(&Job::Paths(paths(1)), 22, &mut budget).is_none());
        assert!(halves(&Job::Full, 22, &mut budget).is_none());
        assert!(halves(&Job::Paths(paths(2)), 2, &mut budget).is_some());
        assert_eq!(budget, SPLIT_BUDGET - 1);
    }
}
