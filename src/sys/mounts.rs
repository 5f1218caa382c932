//! The mount table as the kernel shows it in `/proc/self/mountinfo`: parsing its lines
//! (mount points are octal-escaped: `\040` is a space), finding the mount points below a
//! directory, and a descriptor that `poll(2)` reports (POLLPRI) when the table changes.
//!
//! Pure functions where possible, so the parsing is tested without mounting anything.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// Where the kernel lists this process's mounts.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo: the fields this project uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Unique id of the mount (reused only after it is unmounted).
    pub id: u64,
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// The filesystem type (`tmpfs`, `nfs4`, `fuse.sshfs`, ...).
    pub fstype: String,
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash); anything that is not a valid three-digit escape is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Parses one mountinfo line:
/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
/// (id, parent id, major:minor, root, mount point, options, optional fields, `-`,
/// filesystem type, source, super options). None for a line of another shape.
pub fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty())
        .collect();
    let id = std::str::from_utf8(fields.first()?).ok()?.parse().ok()?;
    let mount_point = fields.get(4)?;
    let dash = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    let fstype = String::from_utf8_lossy(&unescape(fields.get(dash + 1)?)).into_owned();
    Some(Mount {
        id,
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        fstype,
    })
}

/// Every well-formed line of a mountinfo text, in the kernel's order (a mount stacked
/// over another comes after it).
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|b| *b == b'\n').filter_map(parse_line).collect()
}

/// The mount points strictly below `dir` (which should be canonical, as mountinfo's
/// paths are), relative to it, each with the mount now visible there (the last one
/// mounted on that point).
pub fn below(dir: &Path, mounts: &[Mount]) -> BTreeMap<PathBuf, Mount> {
    let mut out = BTreeMap::new();
    for m in mounts {
        if let Ok(rel) = m.mount_point.strip_prefix(dir) {
            if !rel.as_os_str().is_empty() {
                out.insert(rel.to_path_buf(), m.clone());
            }
        }
    }
    out
}

/// Filesystems where other hosts change files: inotify sees only the changes made
/// through this machine's kernel.
pub fn is_remote_fs(fstype: &str) -> bool {
    matches!(
        fstype,
        "nfs"
            | "nfs4"
            | "cifs"
            | "smb3"
            | "smbfs"
            | "9p"
            | "ceph"
            | "glusterfs"
            | "lustre"
            | "gpfs"
            | "afs"
            | "ocfs2"
            | "gfs2"
    ) || fstype.starts_with("fuse")
}

/// The mount table, read now.
pub fn read() -> io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read(MOUNTINFO)?))
}

/// An open mountinfo: its descriptor polls with POLLPRI (and POLLERR) whenever a mount
/// or unmount changed the table since the last poll.
pub struct Watch {
    file: File,
}

impl Watch {
    pub fn open() -> io::Result<Watch> {
        Ok(Watch {
            file: File::open(MOUNTINFO)?,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        36 22 0:30 / /srv/www/up\\040loads rw,nosuid shared:20 - tmpfs tmpfs rw,size=1024k\n\
        37 22 0:31 / /srv/wwwx rw - tmpfs tmpfs rw\n\
        38 36 0:32 / /srv/www/up\\040loads/nfs rw - nfs4 srv:/export rw\n\
        39 22 0:33 / /srv/www/a rw master:3 propagate_from:1 - tmpfs t rw\n\
        40 22 0:34 / /srv/www/a rw - xfs /dev/sdb rw\n\
        garbage line\n";

    #[test]
    fn unescape_turns_octal_escapes_into_bytes() {
        assert_eq!(unescape(b"a\\040b"), b"a b");
        assert_eq!(unescape(b"tab\\011nl\\012bs\\134"), b"tab\tnl\nbs\\");
        assert_eq!(unescape(b"plain"), b"plain");
        // Not an escape: kept as written.
        assert_eq!(unescape(b"a\\09b"), b"a\\09b");
        assert_eq!(unescape(b"end\\04"), b"end\\04");
        assert_eq!(unescape(b"\\"), b"\\");
        assert_eq!(unescape(b"\\777"), b"\\777", "over 255 is no byte");
    }

    #[test]
    fn parse_line_reads_id_mount_point_and_type() {
        let m = parse_line(
            b"36 35 98:0 /mnt1 /mnt/par\\040ent rw,noatime master:1 - ext3 /dev/root rw",
        )
        .expect("parses");
        assert_eq!(m.id, 36);
        assert_eq!(m.mount_point, PathBuf::from("/mnt/par ent"));
        assert_eq!(m.fstype, "ext3");
        // No optional fields at all.
        let m = parse_line(b"40 22 0:34 / /x rw - xfs /dev/sdb rw").expect("parses");
        assert_eq!(m.fstype, "xfs");
        assert_eq!(parse_line(b""), None);
        assert_eq!(parse_line(b"1 2 3 4"), None);
        assert_eq!(parse_line(b"x 22 0:34 / /x rw - xfs /dev/sdb rw"), None);
    }

    #[test]
    fn below_finds_mount_points_under_a_directory_only() {
        let mounts = parse(SAMPLE);
        assert_eq!(mounts.len(), 6, "the garbage line is skipped");
        let under = below(Path::new("/srv/www"), &mounts);
        let rels: Vec<&Path> = under.keys().map(|p| p.as_path()).collect();
        // Not /srv/wwwx (a sibling sharing a prefix), not / (above).
        assert_eq!(
            rels,
            [
                Path::new("a"),
                Path::new("up loads"),
                Path::new("up loads/nfs")
            ]
        );
        // Two mounts on one point: the later one is what is visible.
        assert_eq!(under[Path::new("a")].id, 40);
        assert_eq!(under[Path::new("up loads/nfs")].fstype, "nfs4");
        assert!(below(Path::new("/srv/www/up loads/nfs"), &mounts).is_empty());
    }

    #[test]
    fn remote_filesystems_are_recognised() {
        assert!(is_remote_fs("nfs4"));
        assert!(is_remote_fs("fuse.sshfs"));
        assert!(!is_remote_fs("tmpfs"));
        assert!(!is_remote_fs("ext4"));
    }

    #[test]
    fn this_process_mount_table_parses() {
        let mounts = read().expect("read mountinfo");
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
