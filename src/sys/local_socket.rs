//! Unix stream sockets that only one user (and root) may use: bound mode 0600, checked
//! by the client before it trusts them, and checked on each connection by the server
//! (the peer's credentials from the kernel, `SO_PEERCRED`).
//!
//! A path is never followed through a symbolic link: a stale socket is removed only when
//! it is a socket owned by this user; anything else at the path (a link, a file, another
//! user's socket) is left alone and refused with a message that says what to do. A path
//! longer than `sun_path` allows is reached through its directory's descriptor
//! (`/proc/self/fd/N/name`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::fsafe;

/// Room in `sockaddr_un.sun_path`, the terminating NUL included.
const SUN_PATH: usize = 108;

/// Who may use a socket of this process: its own effective user and root.
pub fn is_allowed(uid: u32) -> bool {
    uid == 0 || uid == fsafe::euid()
}

/// The effective uid of the process at the other end of a connected socket.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, message)
}

/// Runs `f` with a path for `path` that fits in `sun_path`: the path itself, or the
/// name under `/proc/self/fd/N` of its directory opened for the purpose.
fn with_short_path<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() < SUN_PATH {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        ));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid NUL-terminated path; the descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned only here.
    let dir_fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut short = PathBuf::from(format!("/proc/self/fd/{}", dir_fd.as_raw_fd()));
    short.push(name);
    if short.as_os_str().len() >= SUN_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: the socket's name is too long for a unix socket",
                path.display()
            ),
        ));
    }
    let out = f(&short);
    drop(dir_fd);
    out
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= SUN_PATH || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not usable as a unix socket path", path.display()),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A bound socket's identity, to remove it later only if the path still names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    dev: u64,
    ino: u64,
}

/// Removes a stale socket at `path` if it is one of this user's; a missing path is
/// fine. Anything else there (a link, which is never followed, a file, another user's
/// socket) is left in place and refused.
pub fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kind = meta.mode() & libc::S_IFMT;
    if kind == libc::S_IFSOCK && meta.uid() == fsafe::euid() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    Err(refused(format!(
        "{} is a {} (owner {}, mode {:04o}), not a socket of this user left by an earlier \
         run; it was left alone: remove it",
        path.display(),
        fsafe::kind_name(meta.mode()),
        fsafe::describe_user(meta.uid()),
        meta.mode() & 0o7777
    )))
}

/// Binds a listening socket at `path`, mode 0600 from its creation, after removing a
/// stale one of this user's ([`remove_stale`]). The listener is non-blocking.
pub fn bind_private(path: &Path, backlog: i32) -> io::Result<(UnixListener, Bound)> {
    remove_stale(path)?;
    // SAFETY: plain syscall; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned only here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // On Linux the mode of an unbound socket's inode is the mode bind gives the file: it
    // is 0600 from the start, with no window and no process-wide umask change.
    // SAFETY: plain syscall on an owned descriptor.
    if unsafe { libc::fchmod(sock.as_raw_fd(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    with_short_path(path, |p| {
        let (addr, len) = sockaddr(p)?;
        // SAFETY: addr is a valid sockaddr_un of `len` bytes.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })?;
    let bound = std::fs::symlink_metadata(path).and_then(|m| {
        if m.mode() & libc::S_IFMT != libc::S_IFSOCK || m.uid() != fsafe::euid() {
            return Err(refused(format!(
                "{}: not the socket just bound",
                path.display()
            )));
        }
        Ok(Bound {
            dev: m.dev(),
            ino: m.ino(),
        })
    });
    let bound = match bound {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    // SAFETY: plain syscall on an owned, bound descriptor.
    if unsafe { libc::listen(sock.as_raw_fd(), backlog) } != 0 {
        let e = io::Error::last_os_error();
        remove_bound(path, bound);
        return Err(e);
    }
    Ok((UnixListener::from(sock), bound))
}

/// Removes the socket at `path` if the path still names the one bound.
pub fn remove_bound(path: &Path, bound: Bound) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.dev() == bound.dev && m.ino() == bound.ino {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Connects to the socket at `path` after checking that it is a socket owned by this
/// user or root (a link is not followed), then checks that the process answering runs
/// as this user or root. A missing socket is `NotFound`; a failed check is
/// `PermissionDenied` with a message.
pub fn connect_checked(path: &Path) -> io::Result<UnixStream> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.mode() & libc::S_IFMT != libc::S_IFSOCK {
        return Err(refused(format!(
            "{} is a {} (owner {}), not a socket: not connecting",
            path.display(),
            fsafe::kind_name(meta.mode()),
            fsafe::describe_user(meta.uid())
        )));
    }
    if !is_allowed(meta.uid()) {
        return Err(refused(format!(
            "{} is owned by {}, neither this user nor root: not connecting",
            path.display(),
            fsafe::describe_user(meta.uid())
        )));
    }
    let stream = with_short_path(path, |p| UnixStream::connect(OsStr::new(p)))?;
    let uid = peer_uid(stream.as_raw_fd())?;
    if !is_allowed(uid) {
        return Err(refused(format!(
            "the process behind {} runs as {}, neither this user nor root: not trusting it",
            path.display(),
            fsafe::describe_user(uid)
        )));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_bound_socket_is_private_and_its_peer_is_known() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("c.sock");
        let (listener, bound) = bind_private(&path, 4).expect("bind");
        let m = std::fs::symlink_metadata(&path).expect("socket");
        assert_eq!(m.mode() & 0o777, 0o600);
        let mut client = connect_checked(&path).expect("connect");
        listener.set_nonblocking(false).expect("blocking");
        let (mut server, _) = listener.accept().expect("accept");
        assert_eq!(peer_uid(server.as_raw_fd()).expect("peer"), fsafe::euid());
        client.write_all(b"x").expect("write");
        let mut b = [0u8; 1];
        server.read_exact(&mut b).expect("read");
        remove_bound(&path, bound);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_link_is_left_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("c.sock");
        let (old, _) = bind_private(&path, 4).expect("bind");
        drop(old);
        let (_new, _) = bind_private(&path, 4).expect("stale socket replaced");

        let target = d.path().join("target");
        std::fs::write(&target, "keep").expect("target");
        let link = d.path().join("l.sock");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        let err = bind_private(&link, 4).expect_err("a link is refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).expect("target"), "keep");
        assert!(std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink());
        let err = connect_checked(&link).expect_err("not followed");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_long_path_is_reached_through_its_directory() {
        let d = tempfile::tempdir().expect("tempdir");
        let deep = d.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).expect("mkdir");
        let path = deep.join("c.sock");
        assert!(path.as_os_str().len() >= SUN_PATH);
        let (_listener, bound) = bind_private(&path, 4).expect("bind a long path");
        let _client = connect_checked(&path).expect("connect a long path");
        remove_bound(&path, bound);
        assert!(!path.exists());
    }
}
