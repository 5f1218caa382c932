//! fanotify with file handles, wrapped: a notification group that reports directory
//! file handles and names (`FAN_REPORT_DFID_NAME`), filesystem marks, the parse of the
//! event records, and the two handle calls (`name_to_handle_at`, `open_by_handle_at`).
//!
//! Every `unsafe` of the fanotify backend is in this file, each on one syscall or one
//! plain-data copy. A file handle travels as [`Fid`]: the filesystem id, the handle type
//! and the handle bytes, in the order the kernel writes them, so that a handle read from
//! an event and one asked for by path compare equal when they name the same directory.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A file handle as a map key: fsid (8 bytes), handle type (4), handle bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fid(Box<[u8]>);

const FSID_LEN: usize = 8;
/// `struct file_handle` without its bytes: handle_bytes (u32), handle_type (i32).
const HANDLE_HEAD: usize = 8;
/// The most handle bytes any filesystem uses (MAX_HANDLE_SZ).
const MAX_HANDLE: usize = 128;

impl Fid {
    /// The filesystem id part (what `statfs` calls f_fsid).
    pub fn fsid(&self) -> [u8; FSID_LEN] {
        let mut f = [0u8; FSID_LEN];
        f.copy_from_slice(&self.0[..FSID_LEN]);
        f
    }

    /// From the bytes of an event's info record after its header: fsid, then a
    /// `struct file_handle`. Returns the handle and the bytes after it (the name).
    fn from_record(rec: &[u8]) -> Option<(Fid, &[u8])> {
        let head = rec.get(FSID_LEN..FSID_LEN + HANDLE_HEAD)?;
        let n = u32::from_ne_bytes(head[..4].try_into().ok()?) as usize;
        let end = FSID_LEN + HANDLE_HEAD + n;
        let bytes = rec.get(FSID_LEN + HANDLE_HEAD..end)?;
        let mut key = Vec::with_capacity(FSID_LEN + 4 + n);
        key.extend_from_slice(&rec[..FSID_LEN]);
        key.extend_from_slice(&head[4..8]);
        key.extend_from_slice(bytes);
        Some((Fid(key.into_boxed_slice()), &rec[end..]))
    }

    /// For tests: a handle made of these parts.
    pub fn from_parts(fsid: [u8; FSID_LEN], handle_type: i32, bytes: &[u8]) -> Fid {
        let mut key = fsid.to_vec();
        key.extend_from_slice(&handle_type.to_ne_bytes());
        key.extend_from_slice(bytes);
        Fid(key.into_boxed_slice())
    }
}

/// Which side of an event a directory-and-name record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `FAN_EVENT_INFO_TYPE_DFID_NAME` (or a bare DFID: name empty).
    Plain,
    /// The old name of a `FAN_RENAME`.
    Old,
    /// The new name of a `FAN_RENAME`.
    New,
    /// `FAN_EVENT_INFO_TYPE_FID`: the object itself (with `FAN_REPORT_TARGET_FID`, the
    /// entry created, deleted or moved); no name.
    Target,
}

/// One directory-and-name record of an event. The name "." is the directory itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub side: Side,
    pub dir: Fid,
    pub name: &'a OsStr,
}

/// One event, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub mask: u64,
    pub pid: i32,
    pub entries: Vec<Entry<'a>>,
}

const METADATA_LEN: usize = std::mem::size_of::<libc::fanotify_event_metadata>();

/// Parses what one `read` of a fanotify group returned. Records of a kind this program
/// does not ask for are skipped; a truncated or malformed event ends the parse.
pub fn parse(buf: &[u8]) -> Vec<Event<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = buf.get(at..at + METADATA_LEN) {
        let event_len = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let vers = head[4];
        let metadata_len = u16::from_ne_bytes([head[6], head[7]]) as usize;
        let mask = u64::from_ne_bytes(head[8..16].try_into().unwrap_or([0; 8]));
        let pid = i32::from_ne_bytes(head[20..24].try_into().unwrap_or([0; 4]));
        if vers != libc::FANOTIFY_METADATA_VERSION
            || event_len < metadata_len
            || metadata_len < METADATA_LEN
        {
            break;
        }
        let Some(body) = buf.get(at + metadata_len..at + event_len) else {
            break;
        };
        out.push(Event {
            mask,
            pid,
            entries: entries(body),
        });
        at += event_len;
    }
    out
}

/// The directory-and-name records of one event's body.
fn entries(mut body: &[u8]) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    while body.len() >= 4 {
        let kind = body[0];
        let len = u16::from_ne_bytes([body[2], body[3]]) as usize;
        if len < 4 || len > body.len() {
            break;
        }
        let rec = &body[4..len];
        let side = match kind {
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME | libc::FAN_EVENT_INFO_TYPE_DFID => {
                Some(Side::Plain)
            }
            libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => Some(Side::Old),
            libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => Some(Side::New),
            libc::FAN_EVENT_INFO_TYPE_FID => Some(Side::Target),
            _ => None,
        };
        if let Some(side) = side {
            if let Some((dir, rest)) = Fid::from_record(rec) {
                // NUL-terminated, then padding to the record's length.
                let name = match side {
                    Side::Target => &[][..],
                    _ => rest.split(|b| *b == 0).next().unwrap_or_default(),
                };
                out.push(Entry {
                    side,
                    dir,
                    name: OsStr::from_bytes(name),
                });
            }
        }
        body = &body[len..];
    }
    out
}

fn last_error<T>() -> io::Result<T> {
    Err(io::Error::last_os_error())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// A fanotify notification group.
pub struct Group {
    fd: OwnedFd,
}

impl Group {
    /// `fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | extra, O_RDONLY)`.
    /// EPERM: no CAP_SYS_ADMIN; EINVAL: the kernel lacks a flag of `extra`.
    pub fn init(extra: libc::c_uint) -> io::Result<Group> {
        let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | extra;
        // SAFETY: a plain syscall with integer arguments.
        let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as libc::c_uint) };
        if fd < 0 {
            return last_error();
        }
        // SAFETY: fanotify_init returned a new descriptor that nothing else owns.
        Ok(Group {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adds `mask` to the mark of the filesystem that holds `path`.
    pub fn mark_filesystem(&self, path: &Path, mask: u64) -> io::Result<()> {
        self.mark(libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM, path, mask)
    }

    fn mark(&self, flags: libc::c_uint, path: &Path, mask: u64) -> io::Result<()> {
        let c = c_path(path)?;
        // SAFETY: `c` is a NUL-terminated string that outlives the call.
        let r = unsafe {
            libc::fanotify_mark(self.fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr())
        };
        if r < 0 {
            return last_error();
        }
        Ok(())
    }

    /// One read of the queue into `buf`: the bytes read (0 when nothing is queued).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The filesystem id of the filesystem holding `file` (statfs's f_fsid).
pub fn fsid_of(file: &File) -> io::Result<[u8; FSID_LEN]> {
    // SAFETY: statfs is plain data; zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes and the descriptor is open.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } < 0 {
        return last_error();
    }
    // SAFETY: fsid_t is two c_ints (8 bytes) with no padding, as the kernel writes it
    // into an event's record.
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, [u8; FSID_LEN]>(st.f_fsid) })
}

/// The handle of `path` (relative to `dir`, not following a last symlink), with the
/// fsid of `dir`'s filesystem (`fsid`: the caller knows it).
pub fn handle_at(dir: &File, path: &Path, fsid: [u8; FSID_LEN]) -> io::Result<Fid> {
    let c = c_path(if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    })?;
    let mut buf = [0u8; HANDLE_HEAD + MAX_HANDLE];
    buf[..4].copy_from_slice(&(MAX_HANDLE as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a `struct file_handle` with room for MAX_HANDLE bytes, as its
    // handle_bytes says; `c` and `mount_id` outlive the call.
    let r = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            0,
        )
    };
    if r < 0 {
        return last_error();
    }
    let n = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(MAX_HANDLE);
    let handle_type = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok(Fid::from_parts(
        fsid,
        handle_type,
        &buf[HANDLE_HEAD..HANDLE_HEAD + n],
    ))
}

/// Where the directory `fid` is now, opened through `mount` (any descriptor on its
/// filesystem). ESTALE: it is gone. The path is as `/proc/self/fd` shows it: " (deleted)"
/// at the end of a removed directory's.
pub fn path_of(mount: &File, fid: &Fid) -> io::Result<PathBuf> {
    let bytes = &fid.0[FSID_LEN + 4..];
    if bytes.len() > MAX_HANDLE {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut buf = [0u8; HANDLE_HEAD + MAX_HANDLE];
    buf[..4].copy_from_slice(&(bytes.len() as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&fid.0[FSID_LEN..FSID_LEN + 4]);
    buf[HANDLE_HEAD..HANDLE_HEAD + bytes.len()].copy_from_slice(bytes);
    // SAFETY: `buf` is a complete `struct file_handle` (header and bytes) that outlives
    // the call; the kernel only reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return last_error();
    }
    // SAFETY: a new descriptor that nothing else owns; closed when dropped.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event as the kernel lays it out: metadata, then records.
    fn event(mask: u64, records: &[(u8, &Fid, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, fid, name) in records {
            let handle = &fid.0[FSID_LEN + 4..];
            let mut rec = Vec::new();
            rec.extend_from_slice(&fid.0[..FSID_LEN]);
            rec.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
            rec.extend_from_slice(&fid.0[FSID_LEN..FSID_LEN + 4]);
            rec.extend_from_slice(handle);
            rec.extend_from_slice(name);
            rec.push(0);
            while (rec.len() + 4) % 4 != 0 {
                rec.push(0);
            }
            body.push(*kind);
            body.push(0);
            body.extend_from_slice(&((rec.len() + 4) as u16).to_ne_bytes());
            body.extend_from_slice(&rec);
        }
        let mut e = Vec::new();
        e.extend_from_slice(&((METADATA_LEN + body.len()) as u32).to_ne_bytes());
        e.push(libc::FANOTIFY_METADATA_VERSION);
        e.push(0);
        e.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        e.extend_from_slice(&mask.to_ne_bytes());
        e.extend_from_slice(&(-1i32).to_ne_bytes());
        e.extend_from_slice(&42i32.to_ne_bytes());
        e.extend_from_slice(&body);
        e
    }

    #[test]
    fn a_rename_event_has_its_old_and_new_records() {
        let a = Fid::from_parts([1; 8], 1, &[9, 9, 9, 9, 9, 9, 9, 9]);
        let b = Fid::from_parts([1; 8], 1, &[7; 12]);
        let mut buf = event(
            libc::FAN_CREATE,
            &[(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, &a, b"new.txt")],
        );
        buf.extend(event(
            libc::FAN_RENAME | libc::FAN_ONDIR,
            &[
                (libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, &a, b"x"),
                (libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, &b, b"y\nz"),
                (libc::FAN_EVENT_INFO_TYPE_FID, &a, b""),
            ],
        ));
        let got = parse(&buf);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].mask, libc::FAN_CREATE);
        assert_eq!(got[0].pid, 42);
        assert_eq!(got[0].entries[0].dir, a);
        assert_eq!(got[0].entries[0].name, OsStr::new("new.txt"));
        assert_eq!(got[1].entries.len(), 3);
        assert_eq!(got[1].entries[2].side, Side::Target);
        assert_eq!(got[1].entries[2].dir, a);
        assert_eq!(got[1].entries[0].side, Side::Old);
        assert_eq!(got[1].entries[1].side, Side::New);
        assert_eq!(got[1].entries[1].dir, b);
        assert_eq!(got[1].entries[1].name, OsStr::new("y\nz"));
    }

    #[test]
    fn a_truncated_buffer_ends_the_parse_without_panicking() {
        let a = Fid::from_parts([2; 8], 1, &[1; 8]);
        let buf = event(
            libc::FAN_CLOSE_WRITE,
            &[(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, &a, b"f")],
        );
        for cut in 0..buf.len() {
            let got = parse(&buf[..cut]);
            assert!(got.is_empty(), "cut at {cut}: {got:?}");
        }
        assert_eq!(parse(&buf).len(), 1);
    }

    #[test]
    fn a_handle_asked_for_by_path_equals_itself_and_differs_from_a_sibling() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("a")).expect("mkdir");
        std::fs::create_dir_all(d.path().join("b")).expect("mkdir");
        let dir = File::open(d.path()).expect("open");
        let Ok(fsid) = fsid_of(&dir) else { return };
        let (Ok(a1), Ok(a2), Ok(b)) = (
            handle_at(&dir, Path::new("a"), fsid),
            handle_at(&dir, Path::new("a"), fsid),
            handle_at(&dir, Path::new("b"), fsid),
        ) else {
            eprintln!("SKIP: this filesystem has no file handles");
            return;
        };
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        match path_of(&dir, &a1) {
            Ok(p) => assert_eq!(p, std::fs::canonicalize(d.path().join("a")).expect("c")),
            // open_by_handle_at needs CAP_DAC_READ_SEARCH.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }
}
