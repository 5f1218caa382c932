//! The model's source arguments: `./path`, `./top/./rel`, a trailing `/`; and which
//! one a receiver that refuses mode-0 entries stops at.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{join, Opts};

/// The missing argument a receiver that refuses mode-0 entries stops at, if any: the
/// first one that does not exist (ENOENT), excluded or not. (Real rsync lets one
/// through now and then, where the sender writes no mode for the entry; the agent,
/// once refused, sends none: `differential.rs` sends such a receiver only what the
/// agent does.)
pub(super) fn refused_entry(root: &Path, o: &Opts) -> Option<Vec<u8>> {
    o.sources.iter().map(|a| parse_arg(a)).find_map(|arg| {
        let src = join(&arg.top, &arg.rel);
        let missing = !src.is_empty()
            && std::fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(&src)))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        missing.then_some(arg.rel)
    })
}

/// `path` with its `.` and `..` components resolved (`None`: above the top).
pub(super) fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join(&b'/'))
}

/// One source argument: its directory at the source (the transfer's top) and the path
/// below it; `contents`: a trailing `/` (or `.`), its entries are sent too.
pub(super) struct Arg {
    pub(super) top: Vec<u8>,
    pub(super) rel: Vec<u8>,
    pub(super) contents: bool,
}

pub(super) fn parse_arg(a: &[u8]) -> Arg {
    let a = a
        .strip_prefix(b"./")
        .unwrap_or(if a == b"." { b"" } else { a });
    let (top, rel) = match a.windows(3).rposition(|w| w == b"/./") {
        Some(i) => (a[..i].to_vec(), a[i + 3..].to_vec()),
        // `././name`: the top is the root itself (a file renamed in the top directory).
        None if a.starts_with(b"./") => (Vec::new(), a[2..].to_vec()),
        None => match a.strip_suffix(b"/.") {
            Some(t) => (t.to_vec(), Vec::new()),
            None => (Vec::new(), a.to_vec()),
        },
    };
    let mut rel = rel;
    let contents = rel.is_empty() || rel.last() == Some(&b'/');
    while rel.last() == Some(&b'/') {
        rel.pop();
    }
    Arg { top, rel, contents }
}
