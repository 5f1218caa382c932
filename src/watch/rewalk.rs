//! Directories whose watch or listing failed for a reason that passes (too many open
//! files, out of memory, an interrupted call): they are remembered here and walked again
//! by the watch thread, [`FIRST`] after the failure, the pause doubling to [`MAX`] while
//! it keeps failing. What a successful walk finds is pushed (`Change::Rewalked`): those
//! paths exist and were never pushed. A failure that does not pass (permission denied,
//! gone) is logged and not retried; the watch limit (ENOSPC) has its own handling.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first pause before a directory is walked again, and the longest.
pub const FIRST: Duration = Duration::from_millis(100);
pub const MAX: Duration = Duration::from_secs(5);

/// Whether a failed watch or listing may succeed if simply tried again.
pub fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE)
            | Some(libc::ENFILE)
            | Some(libc::ENOMEM)
            | Some(libc::EINTR)
            | Some(libc::EAGAIN)
    )
}

#[derive(Debug, Clone, Copy)]
struct Wait {
    at: Instant,
    backoff: Duration,
}

/// The directories (relative to the root) waiting to be walked again.
#[derive(Debug, Default)]
pub struct Rewalks {
    waiting: BTreeMap<PathBuf, Wait>,
}

impl Rewalks {
    /// `rel` could not be watched or listed: walk it again [`FIRST`] from `now`. A
    /// directory already waiting keeps its time and pause.
    pub fn note(&mut self, rel: &Path, now: Instant) {
        self.waiting.entry(rel.to_path_buf()).or_insert(Wait {
            at: now + FIRST,
            backoff: FIRST,
        });
    }

    /// The directories whose pause is over, parents first.
    pub fn due(&self, now: Instant) -> Vec<PathBuf> {
        self.waiting
            .iter()
            .filter(|(_, w)| w.at <= now)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Takes `rel` off the list before it is walked again; returns its last pause.
    pub fn take(&mut self, rel: &Path) -> Option<Duration> {
        self.waiting.remove(rel).map(|w| w.backoff)
    }

    /// Whether `rel` waits (for instance: its walk again just failed again).
    pub fn contains(&self, rel: &Path) -> bool {
        self.waiting.contains_key(rel)
    }

    /// `rel` failed again after a pause of `prev`: the next pause is twice as long, up
    /// to [`MAX`].
    pub fn again(&mut self, rel: &Path, prev: Duration, now: Instant) {
        let backoff = (prev * 2).min(MAX);
        self.waiting.insert(
            rel.to_path_buf(),
            Wait {
                at: now + backoff,
                backoff,
            },
        );
    }

    /// When the next directory is due, if any waits.
    pub fn next_at(&self) -> Option<Instant> {
        self.waiting.values().map(|w| w.at).min()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes in what `other` noted (entries already here keep their time and pause).
    pub fn absorb(&mut self, other: Rewalks) {
        for (p, w) in other.waiting {
            self.waiting.entry(p).or_insert(w);
        }
    }

    /// Forgets every directory (the root's watches are gone; a whole walk follows).
    pub fn clear(&mut self) {
        self.waiting.clear();
    }
}

/// One round of walks again over `list` at `now`: each due directory is taken off and
/// handed to `walk`, which returns what it found, or `Err` if it failed again (then the
/// directory waits twice as long). `walk` may also note other directories (below it)
/// that failed. Returns each directory walked with what it found.
pub fn retry_due<W>(list: &mut Rewalks, now: Instant, mut walk: W) -> Vec<(PathBuf, Vec<PathBuf>)>
where
    W: FnMut(&mut Rewalks, &Path) -> Result<Vec<PathBuf>, ()>,
{
    let mut done = Vec::new();
    for rel in list.due(now) {
        let Some(prev) = list.take(&rel) else {
            continue;
        };
        match walk(list, &rel) {
            Ok(_) if list.contains(&rel) => list.again(&rel, prev, now),
            Ok(found) => done.push((rel, found)),
            Err(()) => list.again(&rel, prev, now),
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn only_passing_failures_are_retried() {
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::EINTR,
            libc::EAGAIN,
        ] {
            assert!(is_transient(&err(code)), "{code}");
        }
        for code in [libc::EACCES, libc::ENOENT, libc::ENOTDIR, libc::ENOSPC] {
            assert!(!is_transient(&err(code)), "{code}");
        }
    }

    // A walk that failed with "Too many open files" was never tried again, and the
    // files of that directory never reached the remotes.
    #[test]
    fn a_directory_whose_listing_failed_is_walked_again_with_backoff_until_it_succeeds() {
        let mut list = Rewalks::default();
        let t0 = Instant::now();
        list.note(Path::new("bulk/d3"), t0);
        assert_eq!(list.len(), 1);
        assert!(list.due(t0).is_empty(), "not before the first pause");
        assert_eq!(list.next_at(), Some(t0 + FIRST));

        // A fake lister: fails (EMFILE) the first three times, then lists 21 files.
        let mut failures_left = 3;
        let mut calls = Vec::new();
        let mut lister = |_: &mut Rewalks, rel: &Path| -> Result<Vec<PathBuf>, ()> {
            calls.push(rel.to_path_buf());
            if failures_left > 0 {
                failures_left -= 1;
                return Err(());
            }
            Ok((0..21).map(|i| rel.join(format!("f{i}"))).collect())
        };
        let mut now = t0;
        let mut pauses = Vec::new();
        let mut found = Vec::new();
        for _ in 0..10 {
            let Some(at) = list.next_at() else { break };
            pauses.push(at - now);
            now = at;
            found.extend(retry_due(&mut list, now, &mut lister));
        }
        assert_eq!(
            pauses,
            [FIRST, FIRST * 2, FIRST * 4, FIRST * 8],
            "100 ms, doubling"
        );
        assert!(list.is_empty(), "nothing waits once the walk succeeded");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Path::new("bulk/d3"));
        assert_eq!(found[0].1.len(), 21, "everything it found is pushed");
        assert_eq!(calls.len(), 4);
    }

    #[test]
    fn the_pause_stops_growing_at_the_maximum_and_noting_again_keeps_it() {
        let mut list = Rewalks::default();
        let t0 = Instant::now();
        list.note(Path::new("a"), t0);
        let mut now = t0;
        for _ in 0..20 {
            now = list.next_at().expect("waits");
            let done = retry_due(&mut list, now, |_, _| Err(()));
            assert!(done.is_empty());
        }
        assert_eq!(list.next_at(), Some(now + MAX));
        list.note(Path::new("a"), now);
        assert_eq!(
            list.next_at(),
            Some(now + MAX),
            "noting again keeps the pause"
        );
    }

    #[test]
    fn a_walk_that_lists_but_fails_below_keeps_the_directory_below_waiting() {
        let mut list = Rewalks::default();
        let t0 = Instant::now();
        list.note(Path::new("a"), t0);
        let now = t0 + FIRST;
        let done = retry_due(&mut list, now, |l, rel| {
            l.note(&rel.join("deep"), now);
            Ok(vec![rel.to_path_buf()])
        });
        assert_eq!(done.len(), 1, "what was found is pushed");
        assert!(!list.contains(Path::new("a")));
        assert!(list.contains(Path::new("a/deep")));
    }
}
