//! Why watching a root could not start or continue.

use std::io;
use std::path::PathBuf;

use super::limits::{read_limit, suggested_limit};

/// Why watching could not start or continue.
#[derive(Debug)]
pub enum WatchError {
    /// The kernel's per-user watch limit is reached.
    Limit {
        dir: PathBuf,
        watched: usize,
        /// Directories the whole tree needs watched.
        needed: usize,
    },
    Io {
        dir: PathBuf,
        err: io::Error,
    },
    /// fanotify cannot watch this root (no CAP_SYS_ADMIN, an old kernel, a filesystem
    /// without file handles).
    Unavailable {
        dir: PathBuf,
        why: String,
    },
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Limit {
                dir,
                watched,
                needed,
            } => write!(
                f,
                "cannot watch {}: the inotify watch limit fs.inotify.max_user_watches ({}) is \
                 reached after {watched} directories, and this tree needs {needed}; raise it as \
                 root with `sysctl fs.inotify.max_user_watches={}` (and in /etc/sysctl.d/ to keep it)",
                dir.display(),
                read_limit("max_user_watches").map_or("unknown".to_owned(), |n| n.to_string()),
                suggested_limit(read_limit("max_user_watches").unwrap_or(8192), *needed as u64)
            ),
            WatchError::Io { dir, err } => write!(f, "cannot watch {}: {err}", dir.display()),
            WatchError::Unavailable { dir, why } => write!(
                f,
                "cannot watch {} with fanotify: {why} (<watcher backend=\"fanotify\"/> asks \
                 for it; \"auto\" or \"inotify\" work without it)",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for WatchError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_error_names_the_sysctl_and_what_the_tree_needs() {
        let e = WatchError::Limit {
            dir: PathBuf::from("/www/deep"),
            watched: 8190,
            needed: 120_000,
        };
        let text = e.to_string();
        assert!(text.contains("fs.inotify.max_user_watches"), "{text}");
        assert!(text.contains("120000"), "{text}");
        assert!(text.contains("/www/deep"), "{text}");
    }
}
