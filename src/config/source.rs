//! Reading the config file: a regular file of at most [`MAX_CONFIG_BYTES`], nothing else.
//!
//! The file is root's, but it is read again at every SIGHUP, and a reload that meets a
//! bad file must leave the running config alone rather than stop sync. So whatever sits
//! at the path is judged before it is read: a fifo (which would block the read, and the
//! reload with it, for ever), a device (`/dev/zero` never ends), a directory or socket is
//! refused, as is a file over the limit. The path is checked first (links followed, as
//! `/etc/sersync.xml -> ...` is common), so nothing but a regular file is ever opened;
//! the file is then opened with `O_NONBLOCK` (a fifo swapped in between cannot block
//! the open) and judged again on the descriptor, so a swap between the two checks is
//! refused too. The read itself stops one byte past the limit whatever the size said.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::ConfigError;
use crate::sys::fsafe::kind_name;

/// The largest config file accepted: 4 MiB. The shipped example is 2 KiB and configs in
/// the wild are a few KiB; a config of thousands of excludes stays far below.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file cannot be a config, from its `st_mode` (type bits included) and size.
fn judge(mode: u32, size: u64) -> Result<(), String> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(format!(
            "not a regular file but a {}: a config is read from a regular file only",
            kind_name(mode)
        ));
    }
    if size > MAX_CONFIG_BYTES {
        return Err(too_big(size));
    }
    Ok(())
}

fn too_big(size: u64) -> String {
    format!(
        "{size} bytes, over the limit of {MAX_CONFIG_BYTES} bytes ({} MiB) for a config file",
        MAX_CONFIG_BYTES / (1024 * 1024)
    )
}

/// The config file's bytes, or why it is refused (the error names the file).
pub fn read(file: &Path) -> Result<Vec<u8>, ConfigError> {
    read_checked(file, false)
}

/// A rules file's bytes (`<filter><rules file>`), read as the config is, and refused
/// unless it and every directory above it are owned by root or the agent's user and
/// not writable by group or others (a directory may be, with the sticky bit):
/// whoever can write it decides what reaches the remotes and what is deleted there.
/// The error is the reason alone.
pub fn read_rules(file: &Path) -> Result<Vec<u8>, super::rules::Refused> {
    let bytes = read_checked(file, true).map_err(|e| super::rules::Refused(e.message))?;
    // Every directory above it too (and every link on the way): whoever can write one
    // of them can put another file in its place.
    use crate::sys::fsafe;
    match fsafe::check_trusted_file(file, "what reaches the remotes and what is deleted there") {
        Err(e) if fsafe::is_refused(&e) => Err(super::rules::Refused(e.to_string())),
        _ => Ok(bytes),
    }
}

/// Whether a rules file with this owner and `st_mode` may be read by an agent running
/// as `euid`.
#[cfg(test)]
pub fn judge_owner(euid: u32, uid: u32, mode: u32) -> Result<(), super::rules::Refused> {
    owner_text(euid, uid, mode).map_err(super::rules::Refused)
}

fn owner_text(euid: u32, uid: u32, mode: u32) -> Result<(), String> {
    if uid != 0 && uid != euid {
        return Err(format!(
            "owned by {}, neither root nor the agent's user {}: chown it",
            crate::sys::fsafe::describe_user(uid),
            crate::sys::fsafe::describe_user(euid)
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "mode {:04o}, writable by group or others: chmod go-w it",
            mode & 0o7777
        ));
    }
    Ok(())
}

fn read_checked(file: &Path, owned: bool) -> Result<Vec<u8>, ConfigError> {
    let fail = |message: String| ConfigError {
        file: file.display().to_string(),
        line: None,
        message,
    };
    let cannot = |e: std::io::Error| fail(format!("cannot read config: {e}"));
    let before = std::fs::metadata(file).map_err(cannot)?;
    judge(before.mode(), before.size()).map_err(&fail)?;
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(file)
        .map_err(cannot)?;
    let now = f.metadata().map_err(cannot)?;
    judge(now.mode(), now.size()).map_err(&fail)?;
    if owned {
        owner_text(crate::sys::fsafe::euid(), now.uid(), now.mode()).map_err(&fail)?;
    }
    if !same_file(&before, &now) {
        return Err(fail(
            "the file was replaced while it was opened; send SIGHUP again or run again".into(),
        ));
    }
    let mut bytes = Vec::with_capacity(now.size() as usize);
    (&mut f)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        // It grew while being read.
        return Err(fail(too_big(bytes.len() as u64)));
    }
    Ok(bytes)
}

fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_within_the_limit_is_a_config() {
        assert_eq!(judge(libc::S_IFREG | 0o644, 0), Ok(()));
        assert_eq!(judge(libc::S_IFREG | 0o600, MAX_CONFIG_BYTES), Ok(()));
        let over = judge(libc::S_IFREG | 0o644, MAX_CONFIG_BYTES + 1).unwrap_err();
        assert!(
            over.contains("over the limit of 4194304 bytes (4 MiB)"),
            "{over}"
        );
        for (mode, kind) in [
            (libc::S_IFIFO, "fifo"),
            (libc::S_IFCHR, "character device"),
            (libc::S_IFBLK, "block device"),
            (libc::S_IFDIR, "directory"),
            (libc::S_IFSOCK, "socket"),
        ] {
            let e = judge(mode | 0o644, 0).unwrap_err();
            assert!(
                e.contains(&format!("not a regular file but a {kind}")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_fifo_a_device_and_a_big_file_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A fifo with no writer: opening it for reading would wait for ever.
        let fifo = dir.path().join("fifo.xml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        let e = read(&fifo).unwrap_err();
        assert!(
            e.to_string()
                .contains("fifo.xml: not a regular file but a fifo"),
            "{e}"
        );
        // A link to /dev/zero: judged by what it points at, never read.
        let zero = dir.path().join("zero.xml");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let e = read(&zero).unwrap_err();
        assert!(e.message.contains("character device"), "{e}");
        let big = dir.path().join("big.xml");
        let f = File::create(&big).expect("create");
        f.set_len(MAX_CONFIG_BYTES + 1).expect("set_len");
        let e = read(&big).unwrap_err();
        assert!(e.message.contains("4194305 bytes, over the limit"), "{e}");
        let ok = dir.path().join("ok.xml");
        std::fs::write(&ok, "<head/>").expect("write");
        assert_eq!(read(&ok).expect("reads"), b"<head/>");
    }
}
