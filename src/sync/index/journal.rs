//! The index's write-ahead journal (`<index>.journal`): what each push is about to
//! change on a remote, appended and fsynced before the push starts, so that a start
//! after a SIGKILL, a crash or a power cut knows every path a remote may hold
//! differently from the index's last checkpoint (see docs/guide.md, "Warm restart and the index").
//!
//! The file is a header naming the index snapshot it goes with (the run and the
//! checkpoint's number), then records, each with its own CRC-32. It is written whole
//! (atomically) after each checkpoint of the index, holding what may still change
//! after that checkpoint (pushes running then, and every one begun since), and
//! appended to as pushes begin. A torn last record (a power cut mid-append) ends the
//! journal: its push had not started, as a push starts only once its record is on disk.
//!
//! Pure parts ([`header`], [`record`], [`decode`]) are plain functions, tested alone.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Which checkpoint of which run an index file or a journal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// A number chosen at each start.
    pub run: u64,
    /// The checkpoint's number in that run (1 at the start).
    pub gen: u64,
}

/// What a push may change on a remote.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum What {
    /// The path itself (made, replaced or deleted).
    Path(PathBuf),
    /// A directory's listing: its direct entries, whatever their names (deletes too).
    Listing(PathBuf),
    /// A full sync: anything in the root.
    Full,
}

/// One record: a watch root and what a push may change in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rec {
    pub root: PathBuf,
    pub what: What,
}

const MAGIC: &[u8; 16] = b"sersync2-jrnl\n\x00\x01";
const HEADER: usize = MAGIC.len() + 8 + 8 + 4;

/// The journal's first bytes: its magic, the stamp of the index it goes with, and a
/// CRC-32 of those.
pub fn header(stamp: Stamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&stamp.run.to_le_bytes());
    out.extend_from_slice(&stamp.gen.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends one record to `out`: its length, its body (kind, root, path), a CRC-32 of
/// the body.
pub fn record(out: &mut Vec<u8>, rec: &Rec) {
    let mut body = Vec::with_capacity(16 + rec.root.as_os_str().len());
    let (kind, path): (u8, &[u8]) = match &rec.what {
        What::Path(p) => (1, p.as_os_str().as_bytes()),
        What::Listing(p) => (2, p.as_os_str().as_bytes()),
        What::Full => (3, b""),
    };
    body.push(kind);
    put(&mut body, rec.root.as_os_str().as_bytes());
    put(&mut body, path);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&body);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_le_bytes(a))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn body(b: &[u8]) -> Option<Rec> {
    let kind = *b.first()?;
    let rl = u32_at(b, 1)? as usize;
    let root = b.get(5..5usize.checked_add(rl)?)?;
    let at = 5 + rl;
    let pl = u32_at(b, at)? as usize;
    let path = b.get(at + 4..(at + 4).checked_add(pl)?)?;
    if at + 4 + pl != b.len() {
        return None;
    }
    let root = PathBuf::from(OsStr::from_bytes(root));
    let p = PathBuf::from(OsStr::from_bytes(path));
    let what = match kind {
        1 => What::Path(p),
        2 => What::Listing(p),
        3 if path.is_empty() => What::Full,
        _ => return None,
    };
    Some(Rec { root, what })
}

/// A journal read back: its stamp, its records, and whether it ended in a torn record
/// (left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub stamp: Stamp,
    pub recs: Vec<Rec>,
    pub torn: bool,
}

/// Why a journal's header is not whole and good (the text follows the journal's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadJournal {
    /// Shorter than a header, or not a journal at all.
    #[error("is not a whole sersync2 journal")]
    NotAJournal,
    #[error("a cut header")]
    CutHeader,
    #[error("has a torn header (checksum mismatch)")]
    TornHeader,
}

/// Reads a journal; an error when its header is not whole and good. Records are read
/// up to the first one that is not whole or whose checksum fails.
pub fn decode(bytes: &[u8]) -> Result<Read, BadJournal> {
    if bytes.len() < HEADER || bytes[..MAGIC.len()] != MAGIC[..] {
        return Err(BadJournal::NotAJournal);
    }
    let crc = u32_at(bytes, HEADER - 4).ok_or(BadJournal::CutHeader)?;
    if crc32fast::hash(&bytes[..HEADER - 4]) != crc {
        return Err(BadJournal::TornHeader);
    }
    let stamp = Stamp {
        run: u64_at(bytes, MAGIC.len()).ok_or(BadJournal::CutHeader)?,
        gen: u64_at(bytes, MAGIC.len() + 8).ok_or(BadJournal::CutHeader)?,
    };
    let mut recs = Vec::new();
    let mut at = HEADER;
    let mut torn = false;
    while at < bytes.len() {
        let one = (|| {
            let n = u32_at(bytes, at)? as usize;
            let b = bytes.get(at + 4..(at + 4).checked_add(n)?)?;
            let crc = u32_at(bytes, at + 4 + n)?;
            (crc32fast::hash(b) == crc).then_some(())?;
            Some((body(b)?, at + 8 + n))
        })();
        match one {
            Some((rec, next)) => {
                recs.push(rec);
                at = next;
            }
            None => {
                torn = true;
                break;
            }
        }
    }
    Ok(Read { stamp, recs, torn })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs() -> Vec<Rec> {
        vec![
            Rec {
                root: "/www".into(),
                what: What::Path("a/b c".into()),
            },
            Rec {
                root: "/www".into(),
                what: What::Listing("d".into()),
            },
            Rec {
                root: "/srv".into(),
                what: What::Full,
            },
        ]
    }

    #[test]
    fn a_journal_round_trips_and_a_torn_tail_ends_it() {
        let stamp = Stamp { run: 7, gen: 3 };
        let mut bytes = header(stamp);
        for r in recs() {
            record(&mut bytes, &r);
        }
        let read = decode(&bytes).expect("good");
        assert_eq!(
            read,
            Read {
                stamp,
                recs: recs(),
                torn: false
            }
        );
        // Cut anywhere in the records: what is whole before the cut is read.
        let whole = header(stamp).len();
        let mut ends = vec![whole];
        for r in recs() {
            let mut b = Vec::new();
            record(&mut b, &r);
            ends.push(ends[ends.len() - 1] + b.len());
        }
        for cut in whole..bytes.len() {
            let read = decode(&bytes[..cut]).expect("header good");
            assert!(read.recs.len() < 3, "cut at {cut}");
            assert_eq!(read.recs[..], recs()[..read.recs.len()]);
            assert_eq!(read.torn, !ends.contains(&cut), "cut at {cut}");
        }
        // A flipped byte in a record ends the journal there.
        let mut torn = bytes.clone();
        let last = torn.len() - 6;
        torn[last] ^= 1;
        let read = decode(&torn).expect("header good");
        assert_eq!((read.recs.len(), read.torn), (2, true));
        // A header cut or torn is refused.
        for cut in 0..whole {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(decode(&bad).is_err_and(|e| e.to_string().contains("torn header")));
    }
}
