//! Files the agent trusts (the fail log, the pid/lock file, the log file): opened without
//! following a symbolic link, checked on the open descriptor (not on the path), and
//! written through a fresh temporary file in the same directory.
//!
//! A trusted file must be a regular file owned by the agent's effective user and not
//! writable by group or others; anything else at its path is refused with a message that
//! names the file, its owner and mode, and what to do. A missing file is fine: the agent
//! creates it. The directory a file is replaced in must not let anyone else rename it
//! away: owned by root or by the agent's user, and writable by group or others only with
//! the sticky bit (as /tmp is).
//!
//! The checks themselves are pure functions of (uid, mode) so they are tested alone;
//! the rest opens, fstats and applies them. The programs the agent runs are checked in
//! `fsafe/program.rs`; the unit tests are in `fsafe/tests.rs`.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

mod program;
pub use program::{check_program, check_trusted_file, find_program};

/// The agent's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The agent's real uid (what rsync's own "running as root" checks look at).
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// The login name of `uid`, when the user database knows it.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into `buf`,
        // which outlives every use below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf.len()` is its real size.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast::<libc::c_char>(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            let bigger = buf.len() * 2;
            buf.resize(bigger, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name points at a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// `uid 1001 (mallory)`, or `uid 1001` when the name is unknown.
pub fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// What kind of file a `st_mode` describes, in words.
pub fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symbolic link",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "special file",
    }
}

/// The verdict on a file the agent is about to trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileVerdict {
    Trusted,
    /// A symbolic link: never followed.
    Symlink,
    /// A directory, fifo, device or socket.
    NotRegular,
    /// Owned by a user other than the agent's.
    ForeignOwner,
    /// Writable by group or others.
    Writable,
}

/// Judges a file from its owner and `st_mode` (type bits included), for an agent whose
/// effective uid is `euid`.
pub fn judge_file(euid: u32, uid: u32, mode: u32) -> FileVerdict {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => FileVerdict::Symlink,
        libc::S_IFREG if uid != euid => FileVerdict::ForeignOwner,
        libc::S_IFREG if mode & 0o022 != 0 => FileVerdict::Writable,
        libc::S_IFREG => FileVerdict::Trusted,
        _ => FileVerdict::NotRegular,
    }
}

/// The verdict on the directory a trusted file is created and replaced in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirVerdict {
    Trusted,
    NotDir,
    /// Owned by a user who is neither root nor the agent's: that user can rename the
    /// file away and put another in its place.
    ForeignOwner,
    /// Writable by group or others without the sticky bit: anyone can rename the file.
    WritableNotSticky,
}

/// Judges the directory of a trusted file from its owner and `st_mode`. A sticky
/// world-writable directory (/tmp) passes: others may create files there but cannot
/// rename or remove the agent's.
pub fn judge_dir(euid: u32, uid: u32, mode: u32) -> DirVerdict {
    if mode & libc::S_IFMT != libc::S_IFDIR {
        DirVerdict::NotDir
    } else if uid != euid && uid != 0 {
        DirVerdict::ForeignOwner
    } else if mode & 0o022 != 0 && mode & libc::S_ISVTX == 0 {
        DirVerdict::WritableNotSticky
    } else {
        DirVerdict::Trusted
    }
}

/// The verdict on a directory the agent keeps to itself (the lock directory): a real
/// directory (not a link) owned by the agent's user, that nobody else can write; for a
/// non-root agent, that nobody else can even enter (mode 0700).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateDirVerdict {
    Trusted,
    Symlink,
    NotDir,
    ForeignOwner,
    /// Group or others have more access than allowed.
    Open,
}

pub fn judge_private_dir(euid: u32, uid: u32, mode: u32) -> PrivateDirVerdict {
    let allowed_to_others = if euid == 0 { 0o755 } else { 0o700 };
    match mode & libc::S_IFMT {
        libc::S_IFLNK => PrivateDirVerdict::Symlink,
        libc::S_IFDIR if uid != euid => PrivateDirVerdict::ForeignOwner,
        libc::S_IFDIR if mode & 0o7777 & !allowed_to_others != 0 => PrivateDirVerdict::Open,
        libc::S_IFDIR => PrivateDirVerdict::Trusted,
        _ => PrivateDirVerdict::NotDir,
    }
}

/// A file or directory the agent refuses to trust; the message says what to do.
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, Refused(message))
}

/// Whether `e` is a refusal (a file or directory that failed the checks), as opposed to
/// an ordinary I/O error.
pub fn is_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Refused>())
}

fn file_message(path: &Path, verdict: FileVerdict, uid: u32, mode: u32) -> String {
    let me = euid();
    let who = describe_user(uid);
    let p = path.display();
    match verdict {
        FileVerdict::Trusted => format!("{p} is trusted"),
        FileVerdict::Symlink => {
            let target = std::fs::read_link(path)
                .map(|t| format!(" to {}", t.display()))
                .unwrap_or_default();
            format!(
                "{p} is a symbolic link{target} (owner {who}); the agent never follows a \
                 link for a file it trusts: remove it (the agent creates the file itself)"
            )
        }
        FileVerdict::NotRegular => format!(
            "{p} is a {} (owner {who}, mode {:04o}), not a regular file: remove it, or \
             choose another path",
            kind_name(mode),
            mode & 0o7777
        ),
        FileVerdict::ForeignOwner => format!(
            "{p} is owned by {who}, mode {:04o}, not by the agent's user {}: someone else \
             may have written it; remove it, or chown it to {} if its content is yours",
            mode & 0o7777,
            describe_user(me),
            user_name(me).unwrap_or_else(|| me.to_string())
        ),
        FileVerdict::Writable => format!(
            "{p} (owner {who}) has mode {:04o}, writable by group or others: anyone with \
             that access may have written it; remove it, or `chmod go-w` it if its content \
             is yours",
            mode & 0o7777
        ),
    }
}

fn dir_message(dir: &Path, file: &Path, verdict: DirVerdict, uid: u32, mode: u32) -> String {
    let me = describe_user(euid());
    let (d, f) = (dir.display(), file.display());
    match verdict {
        DirVerdict::Trusted => format!("{d} is trusted"),
        DirVerdict::NotDir => format!("{d}, the directory of {f}, is not a directory"),
        DirVerdict::ForeignOwner => format!(
            "{d}, the directory of {f}, is owned by {} (mode {:04o}): that user can rename \
             the file away and put another in its place; keep the file in a directory \
             owned by root or by {me}, such as /var/lib/sersync",
            describe_user(uid),
            mode & 0o7777
        ),
        DirVerdict::WritableNotSticky => format!(
            "{d}, the directory of {f}, has mode {:04o} (owner {}): writable by group or \
             others without the sticky bit, so anyone can rename the file away and put \
             another in its place; keep the file in a directory only root or {me} can \
             write, such as /var/lib/sersync (or set the sticky bit: chmod +t)",
            mode & 0o7777,
            describe_user(uid)
        ),
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: a path with a NUL byte", path.display()),
        )
    })
}

fn cname(name: &OsStr) -> io::Result<CString> {
    cpath(Path::new(name))
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by fstat on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the duration of the call; st is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn openat(dirfd: RawFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the returned descriptor is owned by the caller.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// After an open failed: when what is at `path` would be refused anyway (a link, which
/// O_NOFOLLOW turns into ELOOP; another user's file or link in a sticky directory, which
/// the kernel's protected_symlinks/protected_regular turn into EACCES; a fifo without a
/// reader or a device with nothing behind it, ENXIO), the refusal that says so; else `e`
/// as it is.
fn explain_open_error(path: &Path, e: io::Error) -> io::Error {
    if !matches!(
        e.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::EACCES) | Some(libc::ENXIO)
    ) {
        return e;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => match judge_file(euid(), m.uid(), m.mode()) {
            FileVerdict::Trusted => e,
            v => refused(file_message(path, v, m.uid(), m.mode())),
        },
        Err(_) => e,
    }
}

/// Checks an open descriptor against the rules for a trusted file.
fn check_file_fd(fd: RawFd, path: &Path) -> io::Result<()> {
    let st = fstat(fd)?;
    match judge_file(euid(), st.st_uid, st.st_mode) {
        FileVerdict::Trusted => Ok(()),
        v => Err(refused(file_message(path, v, st.st_uid, st.st_mode))),
    }
}

fn clear_nonblock(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The directory part and the name of a file path.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// An open, checked directory that trusted files are read from and replaced in.
pub struct TrustedDir {
    fd: OwnedFd,
}

impl TrustedDir {
    /// Opens `dir` (links in its own path are followed, as for /var/run) and checks the
    /// directory itself: see [`judge_dir`]. `file` only names the file in messages.
    pub fn open(dir: &Path, file: &Path) -> io::Result<TrustedDir> {
        let c = cpath(dir)?;
        let fd = openat(
            libc::AT_FDCWD,
            &c,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )?;
        let st = fstat(fd.as_raw_fd())?;
        match judge_dir(euid(), st.st_uid, st.st_mode) {
            DirVerdict::Trusted => Ok(TrustedDir { fd }),
            v => Err(refused(dir_message(dir, file, v, st.st_uid, st.st_mode))),
        }
    }
}

/// Reads a trusted file in full. A missing file is `NotFound`; a link, a non-regular
/// file, a file of another user or one writable by group or others is refused (see
/// [`is_refused`]), as is a directory another user could rename it in.
pub fn read_trusted(path: &Path) -> io::Result<Vec<u8>> {
    let (dir, name) = split(path)?;
    let dir = TrustedDir::open(dir, path)?;
    let fd = openat(
        dir.fd.as_raw_fd(),
        &cname(name)?,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        0,
    )
    .map_err(|e| explain_open_error(path, e))?;
    check_file_fd(fd.as_raw_fd(), path)?;
    let mut text = Vec::new();
    File::from(fd).read_to_end(&mut text)?;
    Ok(text)
}

/// Opens a trusted file (creating it with `mode` when `flags` has O_CREAT), never
/// following a link at its path, and checks what was opened before it is used.
pub fn open_trusted(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let fd = openat(
        libc::AT_FDCWD,
        &cpath(path)?,
        flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        mode,
    )
    .map_err(|e| explain_open_error(path, e))?;
    check_file_fd(fd.as_raw_fd(), path)?;
    clear_nonblock(fd.as_raw_fd())?;
    Ok(File::from(fd))
}

/// A file of another user found where a trusted file belongs, moved aside by
/// [`set_aside_foreign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Its new path, in the same directory.
    pub to: PathBuf,
    /// What it was: kind, owner and mode, for the log.
    pub what: String,
}

/// The name a foreign file is moved to: `<name>.foreign-<UTC time>-<8 random hex>`.
fn aside_name(name: &OsStr, time: &str, random: u32) -> OsString {
    let mut n = name.to_os_string();
    n.push(format!(".foreign-{time}-{random:08x}"));
    n
}

/// When what is at `path` (a link not followed) belongs to another user than the
/// agent's, renames it within its (checked) directory to
/// `<name>.foreign-<YYYYmmddTHHMMSSZ>-<random>`, never replacing anything there, and says
/// where: it is kept for the operator to read, and the agent's file can be made afresh.
/// Nothing at the path, or the agent's own file (good or not), is `None`. A directory
/// that fails [`judge_dir`], or a rename the kernel refuses (a non-root agent cannot
/// move another user's file out of a sticky directory), is a refusal ([`is_refused`])
/// that says so.
pub fn set_aside_foreign(path: &Path) -> io::Result<Option<SetAside>> {
    let (dir_path, name) = split(path)?;
    let dir = match TrustedDir::open(dir_path, path) {
        Ok(dir) => dir,
        // No directory, no file: whoever reads the file next says what is missing.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let dirfd = dir.fd.as_raw_fd();
    let cname_ = cname(name)?;
    // SAFETY: stat is plain data, filled by fstatat on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dirfd is open, the name NUL-terminated, st a valid out-pointer.
    if unsafe { libc::fstatat(dirfd, cname_.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::NotFound => Ok(None),
            _ => Err(e),
        };
    }
    if st.st_uid == euid() {
        return Ok(None);
    }
    let what = format!(
        "a {} owned by {}, mode {:04o}",
        kind_name(st.st_mode),
        describe_user(st.st_uid),
        st.st_mode & 0o7777
    );
    let time = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut attempt = 0;
    loop {
        let mut random = [0u8; 4];
        // SAFETY: getrandom writes at most random.len() bytes into the buffer.
        let n = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
        if n != random.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let new = aside_name(name, &time, u32::from_ne_bytes(random));
        let cnew = cname(&new)?;
        // SAFETY: both names NUL-terminated, relative to one open directory; renameat2
        // moves the entry itself (a link is moved, not followed) and with
        // RENAME_NOREPLACE never replaces what is at the new name.
        let rc = unsafe {
            libc::renameat2(
                dirfd,
                cname_.as_ptr(),
                dirfd,
                cnew.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            // SAFETY: fsync on an open directory descriptor.
            unsafe { libc::fsync(dirfd) };
            return Ok(Some(SetAside {
                to: dir_path.join(new),
                what,
            }));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::AlreadyExists if attempt < 16 => attempt += 1,
            // Gone in between (its owner removed it): nothing is left to trust.
            io::ErrorKind::NotFound => return Ok(None),
            _ => {
                return Err(refused(format!(
                    "{} is {what}, not the agent's, and cannot be moved aside: {e}; \
                     remove it",
                    path.display()
                )))
            }
        }
    }
}

/// A name nobody can guess for a temporary file beside `name`.
fn temp_name(name: &OsStr) -> io::Result<CString> {
    let mut random = [0u8; 8];
    // SAFETY: getrandom writes at most random.len() bytes into the buffer.
    let n = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if n != random.len() as isize {
        return Err(io::Error::last_os_error());
    }
    let mut bytes = b".".to_vec();
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(b'.');
    for b in random {
        bytes.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    bytes.extend_from_slice(b".tmp");
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

/// Is `tmp` the name of a temporary file [`write_atomic`] makes for a file named `name`
/// (`.NAME.<16 hex digits>.tmp`)?
pub fn is_temp_of(tmp: &[u8], name: &[u8]) -> bool {
    let Some(rest) = tmp
        .strip_prefix(b".")
        .and_then(|r| r.strip_prefix(name))
        .and_then(|r| r.strip_prefix(b"."))
        .and_then(|r| r.strip_suffix(b".tmp"))
    else {
        return false;
    };
    rest.len() == 16 && rest.iter().all(|b| b.is_ascii_hexdigit())
}

/// Replaces `path` with `bytes`, mode 0600: a new temporary file with a random name in
/// the same (checked) directory, created with O_EXCL|O_NOFOLLOW, written, fsynced, then
/// renamed over `path`, and the directory fsynced. Whatever was at `path` (a link
/// included) is replaced, never followed or written through.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (dir_path, name) = split(path)?;
    let dir = TrustedDir::open(dir_path, path)?;
    let dirfd = dir.fd.as_raw_fd();
    let (tmp, fd) = {
        let mut attempt = 0;
        loop {
            let tmp = temp_name(name)?;
            match openat(
                dirfd,
                &tmp,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            ) {
                Ok(fd) => break (tmp, fd),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "cannot create a temporary file in {}: {e}",
                            dir_path.display()
                        ),
                    ))
                }
            }
        }
    };
    let unlink_tmp = || {
        // SAFETY: unlinkat on a NUL-terminated name relative to an open directory.
        unsafe { libc::unlinkat(dirfd, tmp.as_ptr(), 0) };
    };
    let mut file = File::from(fd);
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())));
    drop(file);
    if let Err(e) = written {
        unlink_tmp();
        return Err(e);
    }
    let target = cname(name)?;
    // SAFETY: both names are NUL-terminated and relative to the same open directory.
    if unsafe { libc::renameat(dirfd, tmp.as_ptr(), dirfd, target.as_ptr()) } != 0 {
        let e = io::Error::last_os_error();
        unlink_tmp();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot replace {}: {e}", path.display()),
        ));
    }
    // SAFETY: fsync on an open directory descriptor.
    if unsafe { libc::fsync(dirfd) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot sync {}: {e}", dir_path.display()),
        ));
    }
    Ok(())
}

/// Makes sure `dir` is a directory only the agent controls: created with `mode` when
/// missing; otherwise a real directory (not a link), owned by the agent's user, that
/// nobody else can write (see [`judge_private_dir`]). Returns its path for messages.
pub fn private_dir(dir: &Path, mode: u32) -> io::Result<PathBuf> {
    let c = cpath(dir)?;
    let mkdir = || {
        // SAFETY: mkdir with a NUL-terminated path.
        if unsafe { libc::mkdir(c.as_ptr(), mode as libc::mode_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    let mut made = mkdir();
    if let (Err(e), Some(parent)) = (&made, dir.parent()) {
        // A missing parent (/run in a bare container) is created as any directory is.
        if e.kind() == io::ErrorKind::NotFound && std::fs::create_dir_all(parent).is_ok() {
            made = mkdir();
        }
    }
    if let Err(e) = made {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create the directory {}: {e}", dir.display()),
            ));
        }
    }
    let opened = openat(
        libc::AT_FDCWD,
        &c,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    );
    let (uid, st_mode) = match opened {
        Ok(fd) => {
            let st = fstat(fd.as_raw_fd())?;
            (st.st_uid, st.st_mode)
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            let m = std::fs::symlink_metadata(dir)?;
            (m.uid(), m.mode())
        }
        Err(e) => return Err(e),
    };
    let me = describe_user(euid());
    let d = dir.display();
    let who = describe_user(uid);
    let perms = st_mode & 0o7777;
    let message = match judge_private_dir(euid(), uid, st_mode) {
        PrivateDirVerdict::Trusted => return Ok(dir.to_path_buf()),
        PrivateDirVerdict::Symlink => format!(
            "{d} is a symbolic link (owner {who}), not the agent's own directory: someone \
             may be redirecting the lock and pid file; remove it (the agent creates the \
             directory itself)"
        ),
        PrivateDirVerdict::NotDir => format!(
            "{d} is a {} (owner {who}), not a directory: remove it (the agent creates the \
             directory itself)",
            kind_name(st_mode)
        ),
        PrivateDirVerdict::ForeignOwner => format!(
            "{d} is owned by {who} (mode {perms:04o}), not by the agent's user {me}: that \
             user controls the lock and pid file there; remove the directory (the agent \
             creates it itself)"
        ),
        PrivateDirVerdict::Open => format!(
            "{d} (owner {who}) has mode {perms:04o}: others may reach the lock and pid file; \
             `chmod {:o} {d}` or remove it (the agent creates it itself)",
            mode & 0o777
        ),
    };
    Err(refused(message))
}

/// Opens the directory `rel` (relative, plain components; empty: `root` itself) below
/// `root` without following a symbolic link in any component below `root`: each one is
/// opened with `O_NOFOLLOW | O_DIRECTORY` from the one before, so a link swapped in
/// anywhere fails (ELOOP or ENOTDIR) instead of leading outside the tree.
pub fn open_dir_beneath(root: &Path, rel: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    for component in rel.components() {
        match component {
            std::path::Component::Normal(name) => dir = open_subdir(&dir, name)?,
            std::path::Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", rel.display()),
                ))
            }
        }
    }
    Ok(dir)
}

/// The directory `name` in the open directory `parent`, not following a link there.
pub fn open_subdir(parent: &File, name: &OsStr) -> io::Result<File> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a name"))?;
    // SAFETY: `parent` is an open descriptor and `c` a NUL-terminated string, both alive
    // for the call; a descriptor returned is owned by the File made from it alone.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The path of the entry `name` in the open directory `dir`, through `/proc/self/fd`:
/// it names that entry of that directory whatever the directory's own path holds now
/// (a link swapped in on the way is not followed). `name` itself, if a link, is
/// followed or not as the call given this path chooses (`symlink_metadata` does not).
pub fn path_in(dir: &File, name: &OsStr) -> PathBuf {
    fd_path(dir).join(name)
}

/// The path of the open file `f` itself through `/proc/self/fd`: a call that follows
/// its last component (inotify_add_watch without IN_DONT_FOLLOW) reaches that file,
/// whatever its own path holds now.
pub fn fd_path(f: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// The entries of an open directory (read through `/proc/self/fd`, which names that
/// directory itself, whatever its path holds now).
pub fn read_dir_of(dir: &File) -> io::Result<std::fs::ReadDir> {
    std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

#[cfg(test)]
mod tests;
