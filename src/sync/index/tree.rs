//! The index's entries: what kind of thing a path is and the metadata a stat gives.

use super::*;

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
    /// Pushed to some of the root's remotes but not all (or with different metadata):
    /// what they hold is not known. Never equal to what a walk finds, so the next start
    /// pushes the path, or deletes it when it is gone.
    Unknown,
}

impl Kind {
    pub(super) fn code(self) -> u8 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::Link => 3,
            Kind::Other => 4,
            Kind::Unknown => 5,
        }
    }

    pub(super) fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Link,
            4 => Kind::Other,
            5 => Kind::Unknown,
            _ => return None,
        })
    }
}

/// One entry's metadata, as stat (not following a link) gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds since the epoch.
    pub ctime: i64,
    pub ino: u64,
    pub dev: u64,
    pub mode: u32,
    /// A link's target.
    pub link: Option<Box<[u8]>>,
}

pub(super) fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl Meta {
    /// From an lstat; `link` is the target when it is a link.
    pub fn of(md: &Metadata, link: Option<Vec<u8>>) -> Meta {
        let ft = md.file_type();
        let kind = if ft.is_symlink() {
            Kind::Link
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        Meta {
            kind,
            size: md.size(),
            mtime: nanos(md.mtime(), md.mtime_nsec()),
            ctime: nanos(md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
            mode: md.mode(),
            link: link.map(Vec::into_boxed_slice),
        }
    }

    /// Equal in everything but the ctime (a rename changes the moved entry's ctime).
    pub(super) fn same_but_ctime(&self, o: &Meta) -> bool {
        self.kind == o.kind
            && self.size == o.size
            && self.mtime == o.mtime
            && self.ino == o.ino
            && self.dev == o.dev
            && self.mode == o.mode
            && self.link == o.link
    }
}

/// What an entry is while some remotes of its root have a push of it that the others
/// lack (see [`Kind::Unknown`]).
pub(super) const UNKNOWN: Meta = Meta {
    kind: Kind::Unknown,
    size: 0,
    mtime: 0,
    ctime: 0,
    ino: 0,
    dev: 0,
    mode: 0,
    link: None,
};

/// Relative paths (no leading slash; the root itself is not in it) to their metadata.
pub type Tree = BTreeMap<PathBuf, Meta>;
