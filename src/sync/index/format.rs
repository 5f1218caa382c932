//! The index file's format: sections of entries, encoded and decoded.

use super::*;

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
pub(super) const MAGIC: &[u8; 16] = b"sersync2-index\n\x02";

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
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

pub(super) struct Reader<'a> {
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
