//! What to sync, in one type from the queue through rsync and the fail log and back.

use std::path::PathBuf;

/// One entry of a push: a relative path made equal on the remote (pushed if it exists,
/// deleted or skipped if not), or a directory's listing (`listing`: the directory and
/// its entries, and with deletes on what the remote holds there beyond them). A listing
/// is a value of its own, from the queue through the argv and the fail log; only at the
/// edges is it written `dir/` (rsync's argument, the fail log's text).
///
/// `tree`: a listing that goes all the way down, the directory and everything below it
/// (a full sync of that directory only): what a full sync owes for a directory rsync
/// could not read. It is pushed alone, recursively (`Target::argv`), and written to the
/// fail log under a `#recursive` line. A tree is always a listing too, so what holds
/// for a listing (its `/`, its excluded names) holds for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    pub path: PathBuf,
    pub listing: bool,
    pub tree: bool,
}

impl Entry {
    /// The path itself (a file, a directory alone, or what is gone there).
    pub fn plain(path: impl Into<PathBuf>) -> Entry {
        Entry {
            path: path.into(),
            listing: false,
            tree: false,
        }
    }

    /// The directory `path`'s listing.
    pub fn listing(path: impl Into<PathBuf>) -> Entry {
        Entry {
            path: path.into(),
            listing: true,
            tree: false,
        }
    }

    /// The directory `path` with everything below it.
    pub fn tree(path: impl Into<PathBuf>) -> Entry {
        Entry {
            path: path.into(),
            listing: true,
            tree: true,
        }
    }

    /// `path` as a listing (`listing`) or not, never a tree.
    pub fn with_listing(path: impl Into<PathBuf>, listing: bool) -> Entry {
        Entry {
            path: path.into(),
            listing,
            tree: false,
        }
    }
}

/// As logs name it: the path, `/` after a listing, and `/**` after a tree.
impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = match (self.listing, self.tree) {
            (_, true) => "/**",
            (true, false) => "/",
            (false, false) => "",
        };
        write!(f, "{}{tail}", self.path.display())
    }
}

impl From<PathBuf> for Entry {
    fn from(path: PathBuf) -> Entry {
        Entry::plain(path)
    }
}

#[cfg(test)]
impl From<&str> for Entry {
    fn from(path: &str) -> Entry {
        Entry::plain(path)
    }
}

/// Plain entries for these paths.
pub fn plain_entries(paths: impl IntoIterator<Item = PathBuf>) -> Vec<Entry> {
    paths.into_iter().map(Entry::plain).collect()
}

/// One remote of one watch root: an index into the targets, in config order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteId(pub(crate) usize);

impl RemoteId {
    pub fn index(self) -> usize {
        self.0
    }
}

/// What one rsync call makes equal on one remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// These entries: push what exists, delete (or skip) what does not; list the
    /// directories given as listings.
    Paths(Vec<Entry>),
    /// The whole tree (`./`), with `--delete` when deletes are on.
    Full,
    /// `from` was renamed to `to` inside the tree: `to` is pushed with `from` as the
    /// basis the remote already has, then `from` is deleted, so unchanged data is not
    /// sent again. `below` is what `to` held when the rename was seen (for a directory:
    /// `to` itself and every path below it; for a file: empty); with `from` and `to`
    /// it is the rename's plain form, what a plain push must carry when the rename
    /// cannot travel as one (see [`Job::plain_paths`]).
    Rename {
        from: PathBuf,
        to: PathBuf,
        dir: bool,
        below: Vec<PathBuf>,
    },
}

impl Job {
    /// How many entries it counts for (paths, or one full sync).
    pub fn count(&self) -> usize {
        match self {
            Job::Paths(p) => p.len(),
            Job::Full => 1,
            Job::Rename { .. } => 2,
        }
    }

    /// A rename as plain paths: the delete of `from`, the push of `to` and of what is
    /// below it. The fail log and every fallback owe a rename in this form, never as a
    /// rename. A directory's `from` is owed as its listing: a directory made again at
    /// the old name before the push reads the tree is listed, and what the remote
    /// holds of the old one is deleted (as the queue's own plain form has it), not
    /// left there for good. Other jobs: their paths (none for a full sync).
    pub fn plain_paths(&self) -> Vec<Entry> {
        match self {
            Job::Paths(p) => p.clone(),
            Job::Full => Vec::new(),
            Job::Rename {
                from,
                to,
                dir,
                below,
            } => {
                let from = if *dir {
                    Entry::listing(from.clone())
                } else {
                    Entry::plain(from.clone())
                };
                let mut out = vec![from, Entry::plain(to.clone())];
                out.extend(below.iter().filter(|p| *p != to).cloned().map(Entry::plain));
                out
            }
        }
    }

    /// [`Job::plain_paths`], borrowed when the job is paths already (not copied per
    /// call where only read).
    pub fn plain_entries(&self) -> std::borrow::Cow<'_, [Entry]> {
        match self {
            Job::Paths(p) => std::borrow::Cow::Borrowed(p),
            Job::Full | Job::Rename { .. } => std::borrow::Cow::Owned(self.plain_paths()),
        }
    }

    /// A rename whose old path holds something again when it is to run (the second
    /// half of an exchange came, or a new entry was made there): nothing is gone, and
    /// what the remote holds at either path may be stale. Its paths as listings (which
    /// the push lists only where a directory is, and which delete there what the source
    /// no longer holds): `from`, `to` and, for a directory, what is below `to`. Other
    /// jobs: their paths.
    pub fn listing_paths(&self) -> Vec<Entry> {
        let Job::Rename {
            from,
            to,
            dir,
            below,
        } = self
        else {
            return self.plain_paths();
        };
        let mut out = vec![Entry::listing(from.clone())];
        if *dir {
            out.push(Entry::listing(to.clone()));
            out.extend(
                below
                    .iter()
                    .filter(|p| *p != to)
                    .cloned()
                    .map(Entry::listing),
            );
        } else {
            out.push(Entry::plain(to.clone()));
        }
        out
    }

    /// The job with a rename turned into its plain form.
    pub fn plain(self) -> Job {
        match self {
            Job::Rename { .. } => Job::Paths(self.plain_paths()),
            other => other,
        }
    }
}

/// An entry as the fail log and rsync's argument write it (`dir/` for a listing), for
/// tests that compare entries with that text.
#[cfg(test)]
pub fn shown(e: &Entry) -> PathBuf {
    let mut s = e.path.clone().into_os_string();
    if e.listing {
        s.push("/");
    }
    PathBuf::from(s)
}

/// The entry a test writes as the fail log does: `dir/` is a listing.
#[cfg(test)]
pub fn entry(s: &str) -> Entry {
    match s.strip_suffix('/') {
        Some(dir) => Entry::listing(dir),
        None => Entry::plain(s),
    }
}

/// [`shown`] of each entry.
#[cfg(test)]
pub fn shown_all(entries: &[Entry]) -> Vec<PathBuf> {
    entries.iter().map(shown).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn a_rename_whose_old_path_is_taken_again_goes_as_listings() {
        let dir = Job::Rename {
            from: p("a"),
            to: p("b"),
            dir: true,
            below: vec![p("b"), p("b/x"), p("b/sub")],
        };
        assert_eq!(
            shown_all(&dir.listing_paths()),
            [p("a/"), p("b/"), p("b/x/"), p("b/sub/")]
        );
        let file = Job::Rename {
            from: p("f"),
            to: p("g"),
            dir: false,
            below: Vec::new(),
        };
        assert_eq!(shown_all(&file.listing_paths()), [p("f/"), p("g")]);
        let paths = Job::Paths(vec![Entry::plain("x")]);
        assert_eq!(shown_all(&paths.listing_paths()), [p("x")]);
    }
}
