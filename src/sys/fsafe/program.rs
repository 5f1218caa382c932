//! The programs the agent runs (plugins, the ssh command) are trusted like the fail
//! log: found as exec finds them ([`find_program`]), then checked the way exec reaches
//! them ([`check_program`]): every directory from `/` down, every link on the way, and
//! the file, owned by root or the agent's user and writable by nobody else.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{describe_user, euid, kind_name, refused};

/// The verdict on one entry of the path of a program the agent runs (the program, each
/// directory above it, each link on the way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramVerdict {
    Trusted,
    /// Owned by a user who is neither root nor the agent's: that user can change it.
    ForeignOwner,
    /// A file writable by group or others, or a directory they can write without the
    /// sticky bit: they can change the program or put another in its place.
    Writable,
    /// Not a regular file (the program) or not a directory (a step above it).
    WrongKind,
}

/// Judges one entry on the way to a program from its owner and `st_mode` (type bits
/// included): the program itself (`last`) must be a regular file, each step above it a
/// directory or a link, all owned by root or the agent's user. A file must not be
/// writable by group or others; a directory may be only with the sticky bit (as /tmp
/// is), where nobody else can rename or remove what root or the agent's user owns.
pub fn judge_program_entry(euid: u32, uid: u32, mode: u32, last: bool) -> ProgramVerdict {
    let kind = mode & libc::S_IFMT;
    let right_kind = match kind {
        libc::S_IFLNK => true,
        libc::S_IFREG => last,
        libc::S_IFDIR => !last,
        _ => false,
    };
    if !right_kind {
        ProgramVerdict::WrongKind
    } else if uid != euid && uid != 0 {
        ProgramVerdict::ForeignOwner
    } else if mode & 0o022 != 0
        && (kind == libc::S_IFREG || (kind == libc::S_IFDIR && mode & libc::S_ISVTX == 0))
    {
        ProgramVerdict::Writable
    } else {
        ProgramVerdict::Trusted
    }
}

/// How many links a program's path may go through (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Checks the program at `path` (absolute, or relative to the current directory) the way
/// exec will reach it: every directory from `/` down, every symbolic link on the way (and
/// the path each one points to), and the file itself must pass [`judge_program_entry`].
/// Returns the file's resolved path; a refusal (see [`is_refused`]) names the entry and
/// says why, any other error is the lookup's own (a missing file: `NotFound`).
pub fn check_program(path: &Path) -> io::Result<PathBuf> {
    let runs = format!("what the agent runs as {}", describe_user(euid()));
    check_path(path, ("program", &runs))
}

/// [`check_program`] for a file the agent reads and obeys (a `<rules file>`): the same
/// walk, the refusal saying that whoever can change it changes `what_for`.
pub fn check_trusted_file(path: &Path, what_for: &str) -> io::Result<PathBuf> {
    check_path(path, ("file", what_for))
}

/// `why`: what the file is called and what whoever can change it changes.
fn check_path(path: &Path, why: (&str, &str)) -> io::Result<PathBuf> {
    let me = euid();
    let start = std::path::absolute(path)?;
    // Names still to walk, the next one last.
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    let push_all = |pending: &mut Vec<std::ffi::OsString>, p: &Path| {
        use std::path::Component;
        let names: Vec<std::ffi::OsString> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        pending.extend(names.into_iter().rev());
    };
    push_all(&mut pending, &start);
    let mut current = PathBuf::from("/");
    let judge = |entry: &Path, m: &std::fs::Metadata, last: bool| -> io::Result<()> {
        match judge_program_entry(me, m.uid(), m.mode(), last) {
            ProgramVerdict::Trusted => Ok(()),
            v => Err(refused(program_message(
                path,
                entry,
                v,
                (m.uid(), m.mode()),
                why,
            ))),
        }
    };
    judge(&current, &std::fs::symlink_metadata(&current)?, false)?;
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            // The real parent, already judged on the way down.
            current.pop();
            continue;
        }
        let entry = current.join(&name);
        let m = std::fs::symlink_metadata(&entry)?;
        let last = pending.is_empty();
        if m.file_type().is_symlink() {
            judge(&entry, &m, last)?;
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = std::fs::read_link(&entry)?;
            if target.is_absolute() {
                current = PathBuf::from("/");
                judge(&current, &std::fs::symlink_metadata(&current)?, false)?;
            }
            push_all(&mut pending, &target);
            continue;
        }
        judge(&entry, &m, last)?;
        if last {
            return Ok(entry);
        }
        current = entry;
    }
    // The path ends in a directory.
    let m = std::fs::symlink_metadata(&current)?;
    judge(&current, &m, true)?;
    Ok(current)
}

fn program_message(
    program: &Path,
    entry: &Path,
    verdict: ProgramVerdict,
    (uid, mode): (u32, u32),
    (noun, what_for): (&str, &str),
) -> String {
    let me = describe_user(euid());
    let (p, e) = (program.display(), entry.display());
    let what = if entry == program {
        format!("{p}")
    } else {
        format!("{e} (on the way to {p})")
    };
    let perms = mode & 0o7777;
    let who = describe_user(uid);
    match verdict {
        ProgramVerdict::Trusted => format!("{what} is trusted"),
        ProgramVerdict::ForeignOwner => format!(
            "{what} is owned by {who}, mode {perms:04o}, not by root or the agent's user \
             {me}: that user could change {what_for}; keep the {noun} and every directory \
             above it owned by root (chown root)"
        ),
        ProgramVerdict::Writable => format!(
            "{what} (owner {who}) has mode {perms:04o}, writable by group or others{}: they \
             could change {what_for}; `chmod go-w` it",
            if mode & libc::S_IFMT == libc::S_IFDIR {
                " without the sticky bit"
            } else {
                ""
            }
        ),
        ProgramVerdict::WrongKind => format!(
            "{what} is a {} (owner {who}, mode {perms:04o}), not a {}",
            kind_name(mode),
            if entry == program || mode & libc::S_IFMT == libc::S_IFDIR {
                "regular file"
            } else {
                "directory"
            }
        ),
    }
}

/// Where exec finds `program`: itself when it has a `/`, else the first executable
/// regular file of that name in the directories of `search` (`$PATH`; an empty entry is
/// the current directory). `None` when there is none.
pub fn find_program(program: &str, search: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    if program.is_empty() {
        return None;
    }
    std::env::split_paths(search?)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(program)
            } else {
                dir.join(program)
            }
        })
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fsafe::is_refused;

    const REG: u32 = libc::S_IFREG;
    const DIR: u32 = libc::S_IFDIR;
    const LNK: u32 = libc::S_IFLNK;

    #[test]
    fn a_program_and_what_leads_to_it_belong_to_root_or_the_agent() {
        use ProgramVerdict::*;
        assert_eq!(judge_program_entry(0, 0, REG | 0o755, true), Trusted);
        assert_eq!(judge_program_entry(1000, 1000, REG | 0o700, true), Trusted);
        assert_eq!(judge_program_entry(1000, 0, REG | 0o755, true), Trusted);
        assert_eq!(
            judge_program_entry(0, 1001, REG | 0o755, true),
            ForeignOwner
        );
        assert_eq!(judge_program_entry(0, 0, REG | 0o775, true), Writable);
        assert_eq!(judge_program_entry(0, 0, REG | 0o757, true), Writable);
        assert_eq!(judge_program_entry(0, 0, DIR | 0o755, true), WrongKind);
        assert_eq!(judge_program_entry(0, 0, REG | 0o755, false), WrongKind);
        assert_eq!(judge_program_entry(0, 0, DIR | 0o755, false), Trusted);
        assert_eq!(judge_program_entry(0, 0, DIR | 0o1777, false), Trusted);
        assert_eq!(judge_program_entry(0, 0, DIR | 0o777, false), Writable);
        assert_eq!(judge_program_entry(0, 0, DIR | 0o775, false), Writable);
        assert_eq!(
            judge_program_entry(0, 1001, DIR | 0o755, false),
            ForeignOwner
        );
        assert_eq!(judge_program_entry(0, 0, LNK | 0o777, false), Trusted);
        assert_eq!(
            judge_program_entry(0, 1001, LNK | 0o777, true),
            ForeignOwner
        );
        assert_eq!(
            judge_program_entry(0, 0, libc::S_IFIFO | 0o755, true),
            WrongKind
        );
    }

    #[test]
    fn a_program_is_found_as_exec_finds_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for dir in [&a, &b] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        std::fs::write(a.join("tool"), b"not executable").expect("write");
        std::fs::write(b.join("tool"), b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(
            b.join("tool"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let path = std::env::join_paths([&a, &b]).expect("PATH");
        assert_eq!(find_program("tool", Some(&path)), Some(b.join("tool")));
        assert_eq!(find_program("other", Some(&path)), None);
        assert_eq!(find_program("tool", None), None);
        let direct = b.join("tool").display().to_string();
        assert_eq!(find_program(&direct, None), Some(b.join("tool")));
    }

    #[test]
    fn a_program_behind_links_is_checked_all_the_way() {
        let me = euid();
        let d = tempfile::tempdir().expect("tempdir");
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let tool = bin.join("tool");
        std::fs::write(&tool, b"#!/bin/sh\n").expect("write");
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m))
                .expect("chmod")
        };
        mode(&tool, 0o755);
        let link = d.path().join("link");
        std::os::unix::fs::symlink("bin/../bin/tool", &link).expect("symlink");
        // The temporary directory and what is above it pass for the user running the
        // tests (its own, or root's, or sticky).
        assert_eq!(check_program(&link).expect("trusted"), tool);
        assert_eq!(check_program(&tool).expect("trusted"), tool);
        mode(&bin, 0o777);
        let err = check_program(&link).expect_err("an open directory on the way");
        assert!(is_refused(&err), "{err}");
        assert!(
            err.to_string().contains(&bin.display().to_string())
                && err.to_string().contains("0777"),
            "{err}"
        );
        mode(&bin, 0o755);
        mode(&tool, 0o775);
        let err = check_program(&tool).expect_err("a group-writable program");
        assert!(
            is_refused(&err) && err.to_string().contains("0775"),
            "{err}"
        );
        mode(&tool, 0o755);
        if me == 0 {
            std::os::unix::fs::chown(&tool, Some(4242), None).expect("chown");
            let err = check_program(&link).expect_err("another user's program");
            assert!(
                is_refused(&err) && err.to_string().contains("uid 4242"),
                "{err}"
            );
        }
        let err = check_program(&d.path().join("missing")).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
