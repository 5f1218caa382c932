//! Anonymous in-memory files for a child's stdin and stderr, instead of pipes.
//!
//! A pipe needs a thread beside the child (to drain stderr while feeding stdin, or the
//! two can deadlock), and a thread that cannot be started under a process or thread
//! limit used to be a panic. A memfd needs no reader: the child writes into it, and the
//! tail is read once the child has exited. It has no name on disk, so nobody else can
//! open or replace it.

use std::ffi::CStr;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// A new empty anonymous file (close-on-exec; a child gets it through `Stdio`).
pub fn create(name: &CStr) -> std::io::Result<File> {
    // SAFETY: `name` is a valid C string; the flags are plain bits.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// An anonymous file holding `bytes`, positioned at its start (for a child's stdin).
pub fn with_contents(name: &CStr, bytes: &[u8]) -> std::io::Result<File> {
    let mut f = create(name)?;
    f.write_all(bytes)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// The last `keep` bytes written to `f` (by a child that has exited).
pub fn tail(f: &File, keep: usize) -> Vec<u8> {
    let len = f.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(keep as u64);
    let mut buf = vec![0; (len - start) as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], start + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_writes_and_the_tail_is_read_after_it_exits() {
        let err = create(c"test-stderr").expect("memfd");
        let input = with_contents(c"test-stdin", b"hello\n").expect("memfd");
        let status = std::process::Command::new("sh")
            .args(["-c", "cat >&2; echo done >&2"])
            .stdin(input)
            .stderr(err.try_clone().expect("dup"))
            .status()
            .expect("sh runs");
        assert!(status.success());
        assert_eq!(tail(&err, 4096), b"hello\ndone\n");
        assert_eq!(tail(&err, 5), b"done\n");
    }
}
