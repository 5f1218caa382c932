//! Advisory locks on open files (flock(2)), without waiting: the instance lock and the
//! probe `--status` uses to tell whether an instance holds it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn flock(file: &File, how: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor `file` keeps open for the whole call.
    if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes an exclusive lock on `file` now, or fails (another holds one: `EWOULDBLOCK`).
/// It is held until the file is closed.
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_EX)
}

/// Whether another holds an exclusive lock on the file: a shared lock is taken for an
/// instant and released at once; false when it could be taken.
pub fn held_elsewhere(file: &File) -> bool {
    if flock(file, libc::LOCK_SH).is_err() {
        return true;
    }
    let _ = flock(file, libc::LOCK_UN);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_seen_from_another_open_file_until_it_is_closed() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("lock");
        let holder = File::create(&path).expect("create");
        let probe = File::open(&path).expect("open");
        assert!(!held_elsewhere(&probe), "nobody holds it");
        lock_exclusive(&holder).expect("locked");
        assert!(held_elsewhere(&probe), "held");
        let second = File::open(&path).expect("open");
        assert!(lock_exclusive(&second).is_err(), "one holder at a time");
        drop(holder);
        assert!(!held_elsewhere(&probe), "released at the close");
        lock_exclusive(&second).expect("free again");
    }
}
