//! The warm-restart index: per watch root, the tree as last pushed to every remote
//! (path, type, size, mtime and ctime in nanoseconds, inode and device, mode, link
//! target), so that a start without `-r` finds what changed while no agent ran by a
//! stat-only walk and pushes only that (see docs/guide.md, "Warm restart and the index").
//!
//! What an entry says is what every remote of its root was sent: the metadata taken
//! before the push that carried the path ([`Recorder::before`]), entered once every
//! remote of the root has had a push of the path with that same metadata land
//! ([`Recorder::landed`]). A change made during a push then shows as a difference at
//! the next start. A path the index has no word on (listings, renames, pushes that
//! saw different metadata on different remotes) keeps its older entry, which can only
//! make the next start push more, never less.
//!
//! The file is one checksummed snapshot (`<fail log>.index`), written atomically
//! through [`crate::sys::fsafe::write_atomic`] and read with the fail log's trust
//! checks ([`crate::sys::fsafe::read_trusted`]). A root is in it only once it is
//! level: `-r` walks the tree before its full syncs start and enters that walk when the
//! full sync has landed on every remote of the root.
//!
//! Pure parts ([`diff`], [`encode`], [`decode`]) are plain functions, tested alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

mod journal;
pub use journal::Stamp;
use journal::{Rec, What};

use super::job::{Entry, Job, RemoteId};
use super::queue::Item;
use super::rsync::Target;
use crate::filter::Excludes;

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
    fn code(self) -> u8 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::Link => 3,
            Kind::Other => 4,
            Kind::Unknown => 5,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
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

fn nanos(secs: i64, nsec: i64) -> i64 {
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
    fn same_but_ctime(&self, o: &Meta) -> bool {
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
const UNKNOWN: Meta = Meta {
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

/// A rename found by [`diff`]: the same inode and device at a new path, with (for a
/// directory) everything below it the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: PathBuf,
    pub to: PathBuf,
    pub dir: bool,
    /// For a directory: `to` and every path below it (see `Job::Rename`).
    pub below: Vec<PathBuf>,
}

/// What differs between the index and a walk of the tree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// New, or changed in any of type, size, mtime, ctime, inode, device, mode, target.
    pub changed: Vec<PathBuf>,
    /// Gone (whether it was a directory). Nothing below a gone directory is listed.
    pub deleted: Vec<(PathBuf, bool)>,
    pub renamed: Vec<Moved>,
}

impl Diff {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.deleted.is_empty() && self.renamed.is_empty()
    }

    /// As the queue takes them: renames, then deletes, then pushes.
    pub fn items(&self) -> Vec<Item> {
        let mut out: Vec<Item> = self
            .renamed
            .iter()
            .map(|m| Item::Rename {
                from: m.from.clone(),
                to: m.to.clone(),
                dir: m.dir,
                below: m.below.clone(),
            })
            .collect();
        out.extend(
            self.deleted
                .iter()
                .map(|(p, dir)| Item::Path(Entry::plain(p.clone()), *dir)),
        );
        out.extend((self.changed.iter()).map(|p| Item::Path(Entry::plain(p.clone()), false)));
        out
    }
}

/// Paths strictly below `dir` in `tree`, in order.
fn below<'a, V>(
    tree: &'a BTreeMap<PathBuf, V>,
    dir: &'a Path,
) -> impl Iterator<Item = (&'a PathBuf, &'a V)> {
    tree.range::<Path, _>((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
        .take_while(move |(p, _)| p.starts_with(dir))
        .filter(move |(p, _)| p.as_path() != dir)
}

/// Is everything below `from` in `old` the same (ctime included) at the same place
/// below `to` in `new`, and nothing more?
fn same_subtree(old: &Tree, from: &Path, new: &Tree, to: &Path) -> bool {
    let mut a = below(old, from);
    let mut b = below(new, to);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some((pa, ma)), Some((pb, mb))) => {
                let (Ok(ra), Ok(rb)) = (pa.strip_prefix(from), pb.strip_prefix(to)) else {
                    return false;
                };
                if ra != rb || ma != mb {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// What differs between `old` (the index) and `new` (a walk). A path in both with any
/// field different, the ctime included, is changed: a file whose size and mtime match
/// but whose inode or ctime do not was written since. A path gone from `old` whose
/// inode and device are at a path new in `new` is a rename when the entry is the same
/// but for its ctime and, for a directory, everything below it is the same; otherwise
/// it is a delete and the new path is pushed. Pure.
pub fn diff(old: &Tree, new: &Tree) -> Diff {
    let mut out = Diff::default();
    let (old_side, new_side) = join(old, new);
    // Gone paths by (dev, ino): candidates for a rename.
    let mut gone: HashMap<(u64, u64), &Path> = HashMap::new();
    for (p, m, there) in &old_side {
        if there.is_none() {
            gone.insert((m.dev, m.ino), p);
        }
    }
    // Paths consumed by a rename (the `from` side and the `to` side, and below).
    let mut moved_from: std::collections::HashSet<&Path> = std::collections::HashSet::new();
    // At or below a path renamed away (by its ancestors: linear in the depth).
    let under =
        |set: &std::collections::HashSet<&Path>, p: &Path| p.ancestors().any(|a| set.contains(a));
    let mut moved_to: Option<&Path> = None;
    for &(p, m, was) in &new_side {
        if moved_to.is_some_and(|d| p.starts_with(d)) {
            continue;
        }
        moved_to = None;
        match was {
            Some(o) if o == m => continue,
            Some(_) => {
                out.changed.push(p.clone());
                continue;
            }
            None => {}
        }
        let from = gone
            .get(&(m.dev, m.ino))
            .copied()
            .filter(|f| old.get(*f).is_some_and(|o| o.same_but_ctime(m)))
            .filter(|f| m.kind != Kind::Dir || same_subtree(old, f, new, p))
            // Not into itself, and not twice.
            .filter(|f| !p.starts_with(f) && !under(&moved_from, f));
        match from {
            Some(f) => {
                let dir = m.kind == Kind::Dir;
                let below_to = if dir {
                    std::iter::once(p.clone())
                        .chain(below(new, p).map(|(q, _)| q.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                out.renamed.push(Moved {
                    from: f.to_path_buf(),
                    to: p.clone(),
                    dir,
                    below: below_to,
                });
                moved_from.insert(f);
                if dir {
                    moved_to = Some(p);
                }
            }
            None => out.changed.push(p.clone()),
        }
    }
    // Deletes: gone, not renamed away, not below something deleted or no longer a
    // directory.
    let mut covered: Option<&Path> = None;
    for &(p, m, now) in &old_side {
        if covered.is_some_and(|d| p.starts_with(d)) {
            continue;
        }
        covered = None;
        if under(&moved_from, p) {
            continue;
        }
        match now {
            Some(n) if n.kind == Kind::Dir || m.kind != Kind::Dir => {}
            Some(_) => covered = Some(p),
            None => {
                let dir = m.kind == Kind::Dir;
                out.deleted.push((p.clone(), dir));
                if dir {
                    covered = Some(p);
                }
            }
        }
    }
    out
}

/// Each entry of `old` with its match in `new`, and each entry of `new` with its match
/// in `old`, in order: one pass over both (they share their order), no lookups.
#[allow(clippy::type_complexity)]
fn join<'a>(
    old: &'a Tree,
    new: &'a Tree,
) -> (
    Vec<(&'a PathBuf, &'a Meta, Option<&'a Meta>)>,
    Vec<(&'a PathBuf, &'a Meta, Option<&'a Meta>)>,
) {
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    let (mut old_side, mut new_side) =
        (Vec::with_capacity(old.len()), Vec::with_capacity(new.len()));
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(&(po, mo)), None) => {
                old_side.push((po, mo, None));
                o.next();
            }
            (None, Some(&(pn, mn))) => {
                new_side.push((pn, mn, None));
                n.next();
            }
            (Some(&(po, mo)), Some(&(pn, mn))) => match po.cmp(pn) {
                std::cmp::Ordering::Less => {
                    old_side.push((po, mo, None));
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    new_side.push((pn, mn, None));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    old_side.push((po, mo, Some(mn)));
                    new_side.push((pn, mn, Some(mo)));
                    o.next();
                    n.next();
                }
            },
        }
    }
    (old_side, new_side)
}

/// One watch root's part of the index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub root: PathBuf,
    /// The remotes it is level with (their labels, in config order).
    pub remotes: Vec<String>,
    pub tree: Tree,
}

/// A section as [`encode`] writes it, borrowed.
pub struct SectionRef<'a> {
    pub root: &'a Path,
    pub remotes: &'a [String],
    pub tree: &'a Tree,
}

#[cfg(test)]
impl Section {
    pub fn view(&self) -> SectionRef<'_> {
        SectionRef {
            root: &self.root,
            remotes: &self.remotes,
            tree: &self.tree,
        }
    }
}

/// Version 2; version 1 (no stamp) is read too.
const MAGIC: &[u8; 16] = b"sersync2-index\n\x02";

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// [`encode_stamped`] with no stamp (tests).
#[cfg(test)]
pub fn encode(sections: &[SectionRef<'_>], running: bool) -> Vec<u8> {
    encode_stamped(sections, running, Stamp::default())
}

/// The file's bytes: a magic line with the format's version, whether an agent was
/// running when it was written (1) or it was written at a stop (0), the stamp its
/// journal names (run, checkpoint), the sections, then a CRC-32 of everything before
/// it.
pub fn encode_stamped(sections: &[SectionRef<'_>], running: bool, stamp: Stamp) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + sections.iter().map(|s| s.tree.len() * 80).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.push(u8::from(running));
    out.extend_from_slice(&stamp.run.to_le_bytes());
    out.extend_from_slice(&stamp.gen.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u64).to_le_bytes());
    for s in sections {
        put_bytes(&mut out, s.root.as_os_str().as_bytes());
        out.extend_from_slice(&(s.remotes.len() as u64).to_le_bytes());
        for r in s.remotes {
            put_bytes(&mut out, r.as_bytes());
        }
        out.extend_from_slice(&(s.tree.len() as u64).to_le_bytes());
        for (p, m) in s.tree {
            put_bytes(&mut out, p.as_os_str().as_bytes());
            out.push(m.kind.code());
            for v in [m.size, m.mtime as u64, m.ctime as u64, m.ino, m.dev] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&m.mode.to_le_bytes());
            match &m.link {
                Some(l) => {
                    out.push(1);
                    put_bytes(&mut out, l);
                }
                None => out.push(0),
            }
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    /// A length, bounded by what is left (so a torn length cannot allocate much).
    fn len(&mut self) -> Result<usize, String> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(format!(
                "a length of {n} at byte {} past the end",
                self.at - 8
            ));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.len()?;
        self.take(n)
    }
}

/// [`decode_stamped`] without the stamp (tests).
#[cfg(test)]
fn decode(bytes: &[u8]) -> Result<(Vec<Section>, bool), String> {
    decode_stamped(bytes)
        .map(|(s, running, _)| (s, running))
        .map_err(|e| e.why)
}

/// Why an index file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub why: String,
    /// Cut short or torn (a power cut, a full disk): not what an agent wrote whole.
    /// Otherwise not an index, or another version.
    pub torn: bool,
}

/// The sections of an index file, whether it was written while an agent ran (not at a
/// stop), and the stamp its journal must name (version 1 files have none); or why it
/// cannot be trusted (not an index, another version, torn, truncated, or its checksum
/// does not match).
pub fn decode_stamped(bytes: &[u8]) -> Result<(Vec<Section>, bool, Option<Stamp>), Bad> {
    let torn = |why: String| Bad { why, torn: true };
    let head = MAGIC.len() - 1;
    if bytes.len() < MAGIC.len() + 4 {
        let n = bytes.len().min(head);
        return Err(Bad {
            why: if bytes[..n] == MAGIC[..n] {
                format!("truncated to {} bytes", bytes.len())
            } else {
                "not a sersync2 index".into()
            },
            torn: bytes[..n] == MAGIC[..n],
        });
    }
    if bytes[..head] != MAGIC[..head] {
        return Err(Bad {
            why: "not a sersync2 index".into(),
            torn: false,
        });
    }
    let version = bytes[head];
    if version != 1 && version != MAGIC[head] {
        return Err(Bad {
            why: format!(
                "format version {version} (this agent reads 1 and {})",
                MAGIC[head]
            ),
            torn: false,
        });
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let mut want = [0u8; 4];
    want.copy_from_slice(tail);
    if crc32fast::hash(body) != u32::from_le_bytes(want) {
        return Err(torn("checksum mismatch (torn or truncated)".into()));
    }
    let mut r = Reader {
        bytes: body,
        at: MAGIC.len(),
    };
    let (sections, running, stamp) = read_body(&mut r, version).map_err(torn)?;
    if r.at != body.len() {
        return Err(torn("trailing bytes".into()));
    }
    Ok((sections, running, stamp))
}

#[allow(clippy::type_complexity)]
fn read_body(
    r: &mut Reader<'_>,
    version: u8,
) -> Result<(Vec<Section>, bool, Option<Stamp>), String> {
    let running = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err("a bad state byte".into()),
    };
    let stamp = if version >= 2 {
        Some(Stamp {
            run: r.u64()?,
            gen: r.u64()?,
        })
    } else {
        None
    };
    let n = r.len()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let root = PathBuf::from(std::ffi::OsString::from_vec(r.bytes()?.to_vec()));
        let nr = r.len()?;
        let mut remotes = Vec::new();
        for _ in 0..nr {
            let b = r.bytes()?;
            remotes.push(
                std::str::from_utf8(b)
                    .map_err(|_| "a remote label that is not UTF-8".to_owned())?
                    .to_owned(),
            );
        }
        let ne = r.len()?;
        // Written in order: collected, then built in one go (no search per entry).
        let mut entries = Vec::with_capacity(ne.min(1 << 20));
        for _ in 0..ne {
            let p = PathBuf::from(OsStr::from_bytes(r.bytes()?));
            let kind = Kind::from_code(r.u8()?).ok_or("an unknown entry type")?;
            let (size, mtime, ctime, ino, dev) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let mode = r.u32()?;
            let link = match r.u8()? {
                0 => None,
                1 => Some(r.bytes()?.to_vec().into_boxed_slice()),
                _ => return Err("a bad link flag".into()),
            };
            entries.push((
                p,
                Meta {
                    kind,
                    size,
                    mtime: mtime as i64,
                    ctime: ctime as i64,
                    ino,
                    dev,
                    mode,
                    link,
                },
            ));
        }
        let tree: Tree = entries.into_iter().collect();
        out.push(Section {
            root,
            remotes,
            tree,
        });
    }
    Ok((out, running, stamp))
}

/// The index file of a config: beside its fail log, `<fail log>.index`.
pub fn path_for(fail_log: &Path) -> PathBuf {
    let mut p = fail_log.as_os_str().to_owned();
    p.push(".index");
    PathBuf::from(p)
}

/// The entry at `root/rel` as lstat sees it (and its target if a link); `None` when
/// there is nothing there.
pub fn stat(root: &Path, rel: &Path) -> Option<Meta> {
    let full = root.join(rel);
    let md = std::fs::symlink_metadata(&full).ok()?;
    let link = md
        .file_type()
        .is_symlink()
        .then(|| {
            std::fs::read_link(&full)
                .ok()
                .map(|l| l.into_os_string().into_vec())
        })
        .flatten();
    Some(Meta::of(&md, link))
}

/// Walks the tree below `root` (stat only, in parallel, never following a link: each
/// directory is opened from its parent's descriptor with O_NOFOLLOW), leaving out what
/// `excludes` keep out and temporary names. A directory that cannot be read is left out
/// with what is below it (and so pushed or deleted as a difference: never skipped).
pub fn walk(root: &Path, excludes: &Excludes) -> std::io::Result<Tree> {
    use rayon::prelude::*;
    let top = crate::sys::fsafe::open_dir_beneath(root, Path::new(""))?;
    fn one(dir: &std::fs::File, rel: &Path, ex: &Excludes) -> Vec<(PathBuf, Meta)> {
        let Ok(rd) = crate::sys::fsafe::read_dir_of(dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut subdirs = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name();
            if crate::filter::is_temp_name(name.as_bytes()) {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            let p = rel.join(&name);
            if ex.excludes(&p, md.is_dir()) {
                continue;
            }
            let link = md
                .file_type()
                .is_symlink()
                .then(|| std::fs::read_link(e.path()).ok())
                .flatten()
                .map(|l| l.into_os_string().into_vec());
            if md.is_dir() {
                subdirs.push((name, p.clone()));
            }
            found.push((p, Meta::of(&md, link)));
        }
        let below: Vec<Vec<(PathBuf, Meta)>> = subdirs
            .par_iter()
            .map(
                |(name, p)| match crate::sys::fsafe::open_subdir(dir, name) {
                    Ok(d) => one(&d, p, ex),
                    Err(_) => Vec::new(),
                },
            )
            .collect();
        found.extend(below.into_iter().flatten());
        found
    }
    Ok(one(&top, Path::new(""), excludes).into_iter().collect())
}

/// The entries of the directory `root/dir` with their metadata, temporary names left
/// out: what its listing sends.
fn listed(root: &Path, dir: &Path) -> Before {
    let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| !crate::filter::is_temp_name(e.file_name().as_bytes()))
        .map(|e| {
            let p = dir.join(e.file_name());
            let m = stat(root, &p);
            (p, m)
        })
        .collect()
}

/// A push's paths with their metadata as taken before it ran.
pub type Before = Vec<(PathBuf, Option<Meta>)>;

/// One path pushed to some of a root's remotes with this metadata.
struct Pending {
    meta: Option<Meta>,
    /// Positions (in the root's remotes) it landed on.
    done: Vec<bool>,
}

struct RootState {
    root: PathBuf,
    /// The targets of this root, in config order.
    targets: Vec<RemoteId>,
    labels: Vec<String>,
    /// `None`: not level (no index at start): nothing is recorded.
    tree: Option<Tree>,
    /// Under `-r`: which remotes' full syncs landed; the tree is written once all have.
    rebuilding: Option<Vec<bool>>,
    /// Ordered, so that what is below a path is one range.
    pending: BTreeMap<PathBuf, Pending>,
}

impl RootState {
    fn level(&self) -> bool {
        self.tree.is_some() && self.rebuilding.is_none()
    }
}

struct State {
    roots: Vec<RootState>,
    /// Changed since the last checkpoint.
    dirty: bool,
}

/// The journal's side of the recorder: what is in the file, what pushes run.
struct Journal {
    path: PathBuf,
    /// Open for appending; `None` before [`Recorder::begin`] or after a write failed
    /// (the file is then removed: an index marked running without its journal is not
    /// trusted).
    file: Option<std::fs::File>,
    /// The stamp of the next checkpoint of the index.
    next: Stamp,
    /// What the file on disk holds (so that a record is appended once).
    in_file: HashSet<Rec>,
    /// Begun since the last checkpoint's snapshot.
    since: HashSet<Rec>,
    /// Running at the last checkpoint's snapshot.
    carry: Vec<Rec>,
    /// Pushes running: how many of each.
    running: HashMap<Rec, u32>,
    /// Listings a killed agent's journal named, to be pushed again: kept in every
    /// journal until a push of them begins.
    relist: HashSet<Rec>,
    /// A write failed and was said; said again when one works.
    failing: bool,
}

/// The live index: what pushes landed, checkpointed to its file, and its journal of
/// what pushes began since.
pub struct Recorder {
    path: PathBuf,
    state: Mutex<State>,
    journal: Mutex<Journal>,
    /// One checkpoint at a time (the index and then its journal).
    writing: Mutex<()>,
}

/// What was found at start for one root.
pub enum Found {
    /// The root's tree as last pushed to every one of its remotes (paths a push may
    /// have changed since, by the journal, as unknown), the directories whose listing
    /// a push may have changed (to be listed again), and the root's remotes the index
    /// was not made for (added to the config since: they need a full sync).
    Level(Tree, Vec<PathBuf>, Vec<RemoteId>),
    /// No usable entry for this root: why.
    Not(String),
    /// What the remotes hold cannot be known from the index (the last agent was killed
    /// and its journal is missing or not its own, a full sync was running, the file is
    /// torn): a full sync is needed. Why.
    Unclean(String),
}

/// The journal of the index at `index`: `<index>.journal`.
pub fn journal_for(index: &Path) -> PathBuf {
    let mut p = index.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

/// A number for this run, so that a journal of another run is never taken for this
/// one's.
fn run_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 40) | 1
}

/// What `job` may change on a remote of `root`.
fn recs_of(root: &Path, job: &Job) -> Vec<Rec> {
    let rec = |what| Rec {
        root: root.to_path_buf(),
        what,
    };
    match job {
        Job::Full => vec![rec(What::Full)],
        // A rename: its old path (a directory's listing), its new one and below.
        _ => (job.plain_paths().into_iter())
            .map(|e| {
                rec(if e.listing {
                    What::Listing(e.path)
                } else {
                    What::Path(e.path)
                })
            })
            .collect(),
    }
}

/// A push begun (see [`Recorder::announce`]); its end is noted when this is dropped,
/// whatever the push's outcome.
pub struct Announced<'a> {
    rec: &'a Recorder,
    recs: Vec<Rec>,
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        let mut j = self.rec.journal();
        for r in self.recs.drain(..) {
            if let Some(n) = j.running.get_mut(&r) {
                *n -= 1;
                if *n == 0 {
                    j.running.remove(&r);
                }
            }
        }
    }
}

impl Recorder {
    /// Loads the index at `path` for these targets. Returns it with, per watch root
    /// (in the targets' order of roots), what was found there.
    pub fn load(path: PathBuf, targets: &[Target]) -> (Recorder, Vec<(PathBuf, Found)>) {
        let mut roots: Vec<RootState> = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            match roots.iter_mut().find(|r| r.root == t.root) {
                Some(r) => {
                    r.targets.push(RemoteId(i));
                    r.labels.push(t.label());
                }
                None => roots.push(RootState {
                    root: t.root.clone(),
                    targets: vec![RemoteId(i)],
                    labels: vec![t.label()],
                    tree: None,
                    rebuilding: None,
                    pending: BTreeMap::new(),
                }),
            }
        }
        let journal_path = journal_for(&path);
        let loaded = match crate::sys::fsafe::read_trusted(&path) {
            Ok(bytes) => decode_stamped(&bytes).map_err(|e| {
                (
                    e.torn,
                    format!("index {} {}: {}", path.display(), torn_word(e.torn), e.why),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err((false, format!("no index at {}", path.display())))
            }
            Err(e) => Err((false, format!("index {} not used: {e}", path.display()))),
        };
        // An index written while an agent ran: usable with its journal (what pushes
        // began after its checkpoint), else not.
        let journal: Result<Option<journal::Read>, String> = match &loaded {
            Ok((_, true, stamp)) => read_journal(&path, &journal_path, *stamp).map(Some),
            _ => Ok(None),
        };
        let mut found = Vec::new();
        let mut relisted = HashSet::new();
        match (loaded, journal) {
            (Ok(_), Err(why)) => {
                for r in &roots {
                    found.push((r.root.clone(), Found::Unclean(why.clone())));
                }
            }
            (Ok((mut sections, running, _)), Ok(journal)) => {
                for r in &mut roots {
                    let full = journal.as_ref().is_some_and(|j| {
                        j.recs
                            .iter()
                            .any(|x| x.root == r.root && x.what == What::Full)
                    });
                    let f = match sections.iter().position(|s| s.root == r.root) {
                        None if running => Found::Unclean(format!(
                            "index {} has no entry for this root and was written by an \
                             agent that did not stop (it may have been rebuilding it)",
                            path.display()
                        )),
                        None => Found::Not(format!(
                            "index {} has no entry for this root",
                            path.display()
                        )),
                        Some(_) if full => Found::Unclean(format!(
                            "a full sync ran after the last checkpoint of the index {} (or \
                             was running at it) and its agent did not stop",
                            path.display()
                        )),
                        Some(i) => {
                            let mut s = sections.swap_remove(i);
                            // Remotes removed since are left out (each one kept holds
                            // what the entries say); remotes added get a full sync.
                            let added: Vec<RemoteId> = (r.targets.iter().zip(&r.labels))
                                .filter(|(_, l)| !s.remotes.contains(l))
                                .map(|(t, _)| *t)
                                .collect();
                            if added.len() == r.targets.len() {
                                Found::Not(format!(
                                    "index {} was made for other remotes ({})",
                                    path.display(),
                                    s.remotes.join(", ")
                                ))
                            } else {
                                let relist = journal
                                    .as_ref()
                                    .map(|j| unknown_since(&mut s.tree, &r.root, &j.recs))
                                    .unwrap_or_default();
                                r.tree = Some(s.tree.clone());
                                relisted.extend(relist.iter().map(|p| Rec {
                                    root: r.root.clone(),
                                    what: What::Listing(p.clone()),
                                }));
                                Found::Level(s.tree, relist, added)
                            }
                        }
                    };
                    found.push((r.root.clone(), f));
                }
            }
            (Err((torn, why)), _) => {
                for r in &roots {
                    let f = if torn {
                        Found::Unclean(why.clone())
                    } else {
                        Found::Not(why.clone())
                    };
                    found.push((r.root.clone(), f));
                }
            }
        }
        let rec = Recorder {
            path,
            state: Mutex::new(State {
                roots,
                dirty: false,
            }),
            journal: Mutex::new(Journal {
                path: journal_path,
                file: None,
                next: Stamp {
                    run: run_id(),
                    gen: 1,
                },
                in_file: HashSet::new(),
                since: HashSet::new(),
                carry: Vec::new(),
                running: HashMap::new(),
                relist: relisted,
                failing: false,
            }),
            writing: Mutex::new(()),
        };
        (rec, found)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `-r`: `tree` (walked before the full syncs start) becomes the root's entry once
    /// every remote's full sync has landed; until then the file has no entry for it.
    pub fn rebuild(&self, root: &Path, tree: Tree) {
        self.rebuild_for(root, tree, None)
    }

    /// [`Recorder::rebuild`] waiting for the full syncs of `only` (remotes added since
    /// the index was made; the others hold what it says), or of every remote.
    pub fn rebuild_for(&self, root: &Path, tree: Tree, only: Option<&[RemoteId]>) {
        let mut st = self.lock();
        if let Some(r) = st.roots.iter_mut().find(|r| r.root == root) {
            r.rebuilding = Some(
                (r.targets.iter())
                    .map(|t| only.is_some_and(|o| !o.contains(t)))
                    .collect(),
            );
            r.tree = Some(tree);
            r.pending.clear();
        }
        st.dirty = true;
    }

    /// Before a push of `job` to `t` starts: what it may change is in the journal on
    /// disk (appended and fsynced unless there already) and its paths are unknown in
    /// the index until a push of them lands everywhere. `None` when the root is not
    /// recorded. Drop what is returned when the push ended, however it ended.
    pub fn announce(&self, t: RemoteId, job: &Job) -> Option<Announced<'_>> {
        let recs = {
            let mut st = self.lock();
            let r = st.roots.iter_mut().find(|r| r.targets.contains(&t))?;
            // A full sync of a root being rebuilt is the rebuild's: the root is in the
            // file only once they all landed.
            if matches!(job, Job::Full) && r.rebuilding.is_some() {
                return None;
            }
            let root = r.root.clone();
            let tree = r.tree.as_mut()?;
            let recs = recs_of(&root, job);
            for x in &recs {
                match &x.what {
                    What::Path(p) if !p.as_os_str().is_empty() => {
                        tree.insert(p.clone(), UNKNOWN);
                    }
                    _ => {}
                }
            }
            st.dirty = true;
            recs
        };
        let mut j = self.journal();
        for x in &recs {
            *j.running.entry(x.clone()).or_insert(0) += 1;
            j.since.insert(x.clone());
            j.relist.remove(x);
        }
        let new: Vec<&Rec> = recs.iter().filter(|x| !j.in_file.contains(*x)).collect();
        if !new.is_empty() && j.file.is_some() {
            let mut bytes = Vec::new();
            for x in &new {
                journal::record(&mut bytes, x);
            }
            let written = match j.file.as_mut() {
                Some(f) => {
                    use std::io::Write;
                    f.write_all(&bytes).and_then(|()| f.sync_data())
                }
                None => Ok(()),
            };
            match written {
                Ok(()) => {
                    let new: Vec<Rec> = new.into_iter().cloned().collect();
                    j.in_file.extend(new);
                }
                Err(e) => self.journal_lost(&mut j, &e),
            }
        }
        Some(Announced { rec: self, recs })
    }

    /// A journal write failed: the file goes (an unlink needs no free space), so that a
    /// start after a kill does a full sync rather than trust an index without it;
    /// written whole again at the next checkpoint.
    fn journal_lost(&self, j: &mut Journal, e: &std::io::Error) {
        j.file = None;
        j.in_file.clear();
        let removed = match std::fs::remove_file(&j.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if let Err(re) = removed {
            // Without the journal gone, the index must go.
            log::error!("cannot remove {}: {re}", j.path.display());
            let _ = std::fs::remove_file(&self.path);
        }
        if !j.failing {
            log::error!(
                "cannot write the index's journal {}: {e}; pushes go on, and a start after \
                 a kill before the next checkpoint does a full sync",
                j.path.display()
            );
            j.failing = true;
        }
    }

    /// The metadata of a job's paths, taken before its push to `t`; `None` when the
    /// root is not recorded. A listing (`listing: true`) is recorded as the delete of a
    /// directory gone, or as the push of each of its entries (what the remotes held
    /// there and it deleted keeps its entry: the next start may send more, never less).
    pub fn before(&self, t: RemoteId, root: &Path, job: &Job) -> Option<Before> {
        let Job::Paths(paths) = job else {
            return None;
        };
        {
            let st = self.lock();
            let r = st.roots.iter().find(|r| r.targets.contains(&t))?;
            r.tree.as_ref()?;
        }
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            if p.listing {
                // A listing of a directory gone: its delete.
                if stat(root, &p.path).is_none() {
                    out.push((p.path.clone(), None));
                }
                // Of one there: what it sends, its entries (the caller leaves out those
                // the excludes keep out of it).
                out.extend(listed(root, &p.path));
            } else {
                out.push((p.path.clone(), stat(root, &p.path)));
            }
        }
        Some(out)
    }

    /// A push to `t` landed: each path is entered once every remote of its root had a
    /// push land with the same metadata, and since then nothing around it (see
    /// [`supersede`]). A path that was gone before the push but is there now may have
    /// been there when rsync read the tree (a directory pushed alone then, what the
    /// remote held below it left as it was): it is unknown, and so is what is below it.
    pub fn landed(&self, t: RemoteId, before: Before) {
        let root = {
            let st = self.lock();
            st.roots
                .iter()
                .find(|r| r.targets.contains(&t))
                .map(|r| r.root.clone())
        };
        let Some(root) = root else { return };
        let before: Before = (before.into_iter())
            .map(|(p, m)| match m {
                None if stat(&root, &p).is_some() => (p, Some(UNKNOWN)),
                m => (p, m),
            })
            .collect();
        let mut st = self.lock();
        let Some(r) = st.roots.iter_mut().find(|r| r.targets.contains(&t)) else {
            return;
        };
        let Some(pos) = r.targets.iter().position(|x| *x == t) else {
            return;
        };
        let n = r.targets.len();
        let mut changed = false;
        for (p, meta) in before {
            let below_gone = supersede(&mut r.pending, &p, meta.as_ref(), pos);
            if meta.as_ref().is_some_and(|m| m.kind == Kind::Unknown) {
                r.pending.remove(&p);
                if let Some(tree) = r.tree.as_mut() {
                    for (_, m) in below_mut(tree, &p) {
                        *m = UNKNOWN;
                    }
                    tree.insert(p, UNKNOWN);
                    changed = true;
                }
                continue;
            }
            let entry = r.pending.entry(p.clone()).or_insert_with(|| Pending {
                meta: meta.clone(),
                done: vec![false; n],
            });
            if entry.meta != meta {
                entry.meta = meta;
                entry.done = vec![false; n];
            }
            entry.done[pos] = true;
            if !entry.done.iter().all(|d| *d) {
                // Until every remote has it, what they hold is not known; nor what
                // they hold below it when it is gone or not a directory on this one.
                if let Some(tree) = r.tree.as_mut() {
                    if below_gone {
                        for (_, m) in below_mut(tree, &p) {
                            *m = UNKNOWN;
                        }
                    }
                    tree.insert(p, UNKNOWN);
                    changed = true;
                }
            } else {
                let Some(e) = r.pending.remove(&p) else {
                    continue;
                };
                let Some(tree) = r.tree.as_mut() else {
                    continue;
                };
                enter(tree, p, e.meta);
                changed = true;
            }
        }
        st.dirty |= changed;
    }

    /// A full sync to `t` landed (under `-r`).
    pub fn full_landed(&self, t: RemoteId) {
        let mut st = self.lock();
        let Some(r) = st.roots.iter_mut().find(|r| r.targets.contains(&t)) else {
            return;
        };
        let Some(pos) = r.targets.iter().position(|x| *x == t) else {
            return;
        };
        if let Some(done) = r.rebuilding.as_mut() {
            done[pos] = true;
            if done.iter().all(|d| *d) {
                r.rebuilding = None;
                log::info!(
                    "index of {} rebuilt: {} entries",
                    r.root.display(),
                    r.tree.as_ref().map_or(0, |t| t.len())
                );
                st.dirty = true;
            }
        }
    }

    /// Writes the file if anything changed since the last write, marked as written
    /// while running, then its journal afresh.
    pub fn checkpoint(&self) -> std::io::Result<()> {
        self.write(true, false)
    }

    /// At start, before any push: the file marked as written while running, with an
    /// empty journal, so that a stop that never reaches [`Recorder::finish`] is seen at
    /// the next start and what was pushed after the last checkpoint is known. When it
    /// cannot be written, the file is removed (an unlink needs no free space): a file
    /// left marked as stopped would be trusted after this run pushed more.
    pub fn begin(&self) -> std::io::Result<()> {
        let written = self.write(true, true);
        if written.is_err() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    log::error!("cannot remove the index {}: {e}", self.path.display())
                }
                _ => {}
            }
        }
        written
    }

    /// At the stop, once the workers ended: the file marked as written at a stop, and
    /// its journal removed. Pushes still running (a worker that did not end in its
    /// grace time) keep it marked running, with its journal.
    pub fn finish(&self) -> std::io::Result<()> {
        let running = self.journal().running.len();
        if running > 0 {
            log::warn!(
                "index {}: {running} path(s) still being pushed at the stop; kept with its \
                 journal, so the next start pushes them again",
                self.path.display()
            );
        }
        self.write(running > 0, true)
    }

    fn write(&self, running: bool, force: bool) -> std::io::Result<()> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if !self.lock().dirty && !force {
            return Ok(());
        }
        // The next journal holds what runs now and what begins from now on: taken
        // before the snapshot, so that anything landing in between is in both.
        let stamp = {
            let mut j = self.journal();
            let stamp = j.next;
            j.next.gen += 1;
            j.carry = j.running.keys().cloned().collect();
            j.since.clear();
            stamp
        };
        let (bytes, entries) = {
            let mut st = self.lock();
            st.dirty = false;
            // Level roots only; a path pushed to some remotes only is in as unknown.
            let sections: Vec<SectionRef> = (st.roots.iter())
                .filter(|r| r.level())
                .filter_map(|r| {
                    Some(SectionRef {
                        root: &r.root,
                        remotes: &r.labels,
                        tree: r.tree.as_ref()?,
                    })
                })
                .collect();
            let n: usize = sections.iter().map(|s| s.tree.len()).sum();
            (encode_stamped(&sections, running, stamp), n)
        };
        if let Err(e) = crate::sys::fsafe::write_atomic(&self.path, &bytes) {
            // Written again at the next checkpoint; the journal on disk goes on (it
            // names an older checkpoint than the file, and holds all since).
            self.lock().dirty = true;
            return Err(e);
        }
        log::debug!(
            "index {} written: {entries} entries, {} bytes",
            self.path.display(),
            bytes.len()
        );
        let mut j = self.journal();
        if !running {
            j.file = None;
            j.in_file.clear();
            match std::fs::remove_file(&j.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    log::warn!("cannot remove {}: {e}", j.path.display())
                }
                _ => {}
            }
            return Ok(());
        }
        let mut all: Vec<Rec> = (j.carry.iter())
            .chain(j.since.iter())
            .chain(j.relist.iter())
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        let mut bytes = journal::header(stamp);
        for x in &all {
            journal::record(&mut bytes, x);
        }
        let opened = crate::sys::fsafe::write_atomic(&j.path, &bytes).map(|()| {
            crate::sys::fsafe::open_trusted(&j.path, libc::O_WRONLY | libc::O_APPEND, 0o600)
        });
        match opened {
            Ok(Ok(f)) => {
                j.file = Some(f);
                j.in_file = all.into_iter().collect();
                if j.failing {
                    log::info!("index journal {} written again", j.path.display());
                    j.failing = false;
                }
            }
            // The new one is there but cannot be appended to.
            Ok(Err(e)) => self.journal_lost(&mut j, &e),
            // The old one stays, names an older checkpoint and is appended to.
            Err(e) if j.file.is_some() => {
                if !j.failing {
                    log::error!(
                        "cannot write the index's journal {} afresh: {e}; the old one goes on",
                        j.path.display()
                    );
                    j.failing = true;
                }
            }
            Err(e) => self.journal_lost(&mut j, &e),
        }
        Ok(())
    }
}

/// A push of `p` as `meta` landed on the remote at `pos` of its root: what that remote
/// was counted as having had land of the paths around `p` (in `pending`) may be true
/// there no longer. When `p` is gone or not a directory there, nothing is below it:
/// the pushes below `p` that landed on it before no longer count there (a delete
/// excepted). When `p` is there, its ancestors are directories there: a delete of one,
/// or its push as a file or link, no longer counts there, so that the ancestor's entry
/// (which removes what is below it from the index) is not made while this remote holds
/// `p`. Returns whether nothing is below `p` on that remote now.
fn supersede(
    pending: &mut BTreeMap<PathBuf, Pending>,
    p: &Path,
    meta: Option<&Meta>,
    pos: usize,
) -> bool {
    let not_dir = |m: Option<&Meta>| m.is_none_or(|m| m.kind != Kind::Dir);
    if meta.is_some() {
        for a in p.ancestors().skip(1) {
            if let Some(e) = pending.get_mut(a).filter(|e| not_dir(e.meta.as_ref())) {
                e.done[pos] = false;
            }
        }
    }
    if !not_dir(meta) {
        return false;
    }
    for (_, e) in below_mut(pending, p) {
        if e.meta.is_some() {
            e.done[pos] = false;
        }
    }
    true
}

/// The paths strictly below `dir` in `map`, to change.
fn below_mut<'a, V>(
    map: &'a mut BTreeMap<PathBuf, V>,
    dir: &'a Path,
) -> impl Iterator<Item = (&'a PathBuf, &'a mut V)> {
    map.range_mut::<Path, _>((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
        .take_while(move |(q, _)| q.starts_with(dir))
}

fn torn_word(torn: bool) -> &'static str {
    if torn {
        "is torn"
    } else {
        "not used"
    }
}

/// The journal of an index written while an agent ran, if it goes with it: this run's,
/// of the same or an older checkpoint (it is written afresh only after the index).
fn read_journal(index: &Path, path: &Path, stamp: Option<Stamp>) -> Result<journal::Read, String> {
    let killed = format!(
        "index {} was written by an agent that did not stop (killed, crashed or a power cut)",
        index.display()
    );
    let Some(stamp) = stamp else {
        return Err(format!("{killed} and has no journal (an older version)"));
    };
    let bytes = crate::sys::fsafe::read_trusted(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{killed} and its journal {} is missing: what it pushed after its last \
                 checkpoint is not known",
                path.display()
            )
        } else {
            format!("{killed} and its journal is not used: {e}")
        }
    })?;
    let read = journal::decode(&bytes)
        .map_err(|why| format!("{killed} and its journal {} {why}", path.display()))?;
    if read.stamp.run != stamp.run || read.stamp.gen > stamp.gen {
        return Err(format!(
            "{killed} and its journal {} is of another checkpoint",
            path.display()
        ));
    }
    Ok(read)
}

/// What the journal says pushes may have changed in `root` after the checkpoint:
/// those paths unknown in `tree` (pushed again, or deleted when gone), and the
/// directories whose listing may have changed (returned: listed again).
fn unknown_since(tree: &mut Tree, root: &Path, recs: &[Rec]) -> Vec<PathBuf> {
    let mut relist = Vec::new();
    for r in recs.iter().filter(|r| r.root == root) {
        match &r.what {
            // Never the root itself.
            What::Path(p) if !p.as_os_str().is_empty() => {
                tree.insert(p.clone(), UNKNOWN);
            }
            What::Path(_) => {}
            // Listed again (a gone directory's listing goes as its delete).
            What::Listing(p) => relist.push(p.clone()),
            What::Full => {}
        }
    }
    relist.sort();
    relist.dedup();
    relist
}

/// Enters what a path was pushed as: its metadata, or (gone) it and everything below
/// it removed.
fn enter(tree: &mut Tree, p: PathBuf, meta: Option<Meta>) {
    match meta {
        Some(m) => {
            if m.kind != Kind::Dir {
                let gone: Vec<PathBuf> = below(tree, &p).map(|(q, _)| q.clone()).collect();
                for q in gone {
                    tree.remove(&q);
                }
            }
            tree.insert(p, m);
        }
        None => {
            let gone: Vec<PathBuf> = below(tree, &p).map(|(q, _)| q.clone()).collect();
            for q in gone {
                tree.remove(&q);
            }
            tree.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests;
