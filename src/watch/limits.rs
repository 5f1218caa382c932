//! The kernel's inotify limits: reading them, what to raise one to, raising it (as
//! root), and how many directories a tree needs watched.

use std::path::{Path, PathBuf};

use crate::filter::Excludes;

/// Reads /proc/sys/fs/inotify/<name>.
pub fn read_limit(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What to raise a limit to so that `needed` more fit: never lower, at least double.
pub fn suggested_limit(current: u64, needed: u64) -> u64 {
    current
        .saturating_mul(2)
        .max(current.saturating_add(needed + needed / 4))
}

/// Writes /proc/sys/fs/inotify/<name> if that raises it (never lowers it). The caller
/// only logs why not, so it is an [`anyhow::Error`].
pub fn raise_limit(name: &str, to: u64) -> anyhow::Result<Option<(u64, u64)>> {
    let current =
        read_limit(name).ok_or_else(|| anyhow::anyhow!("cannot read fs.inotify.{name}"))?;
    if to <= current {
        return Ok(None);
    }
    std::fs::write(format!("/proc/sys/fs/inotify/{name}"), to.to_string()).map_err(|e| {
        anyhow::anyhow!("cannot raise fs.inotify.{name} from {current} to {to}: {e}")
    })?;
    Ok(Some((current, to)))
}

/// Directories under `root` that would be watched (the excludes keep some out).
pub fn count_dirs(root: &Path, excludes: &Excludes) -> usize {
    let mut n = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        n += 1;
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let rel = dir.join(entry.file_name());
                if !excludes.excludes(&rel, true) {
                    stack.push(rel);
                }
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn count_dirs_skips_excluded_directories() {
        let d = tempfile::tempdir().expect("tempdir");
        for p in ["a/b", "a/.svn/x", "c"] {
            std::fs::create_dir_all(d.path().join(p)).expect("mkdir");
        }
        std::fs::write(d.path().join("a/file"), "f").expect("write");
        let all = count_dirs(d.path(), &Excludes::default());
        assert_eq!(all, 6, "root, a, a/b, a/.svn, a/.svn/x, c");
        let ex = Excludes::new(vec![
            regex::bytes::Regex::new(r"^(?:(.*)\.svn)$").expect("re")
        ]);
        assert_eq!(count_dirs(d.path(), &ex), 4);
    }

    proptest! {
        /// A raised limit fits what is needed and never lowers the current one.
        #[test]
        fn suggested_limit_never_lowers(current in 0u64..u64::MAX / 4, needed in 0u64..10_000_000) {
            let s = suggested_limit(current, needed);
            prop_assert!(s >= current);
            prop_assert!(s >= current + needed);
        }
    }
}
