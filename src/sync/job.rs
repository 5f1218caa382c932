//! What to sync, in one type from the queue through rsync and the fail log and back.

use std::path::PathBuf;

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
    /// These relative paths: push what exists, delete (or skip) what does not.
    Paths(Vec<PathBuf>),
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
    /// rename. Other jobs: their paths (none for a full sync).
    pub fn plain_paths(&self) -> Vec<PathBuf> {
        match self {
            Job::Paths(p) => p.clone(),
            Job::Full => Vec::new(),
            Job::Rename {
                from, to, below, ..
            } => {
                let mut out = vec![from.clone(), to.clone()];
                out.extend(below.iter().filter(|p| *p != to).cloned());
                out
            }
        }
    }

    /// A rename whose old path holds something again when it is to run (the second
    /// half of an exchange came, or a new entry was made there): nothing is gone, and
    /// what the remote holds at either path may be stale. Its paths as listings (a
    /// trailing `/`, which the push keeps only on a directory and which deletes there
    /// what the source no longer holds): `from`, `to` and, for a directory, what is
    /// below `to`. Other jobs: their paths.
    pub fn listing_paths(&self) -> Vec<PathBuf> {
        let Job::Rename {
            from,
            to,
            dir,
            below,
        } = self
        else {
            return self.plain_paths();
        };
        let slash = |p: &PathBuf| {
            let mut s = p.clone().into_os_string();
            s.push("/");
            PathBuf::from(s)
        };
        let mut out = vec![slash(from)];
        if *dir {
            out.push(slash(to));
            out.extend(below.iter().filter(|p| *p != to).map(slash));
        } else {
            out.push(to.clone());
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
            dir.listing_paths(),
            [p("a/"), p("b/"), p("b/x/"), p("b/sub/")]
        );
        let file = Job::Rename {
            from: p("f"),
            to: p("g"),
            dir: false,
            below: Vec::new(),
        };
        assert_eq!(file.listing_paths(), [p("f/"), p("g")]);
        let paths = Job::Paths(vec![p("x")]);
        assert_eq!(paths.listing_paths(), [p("x")]);
    }
}
