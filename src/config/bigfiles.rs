//! `<bigFiles>`: which files are pushed as appends or in place, read and checked; the
//! size syntax it takes (`64M`).

use super::{raw, ConfigError, Ctx};

/// `<bigFiles>`: a regular file of `size` bytes or more is pushed in a call of its own,
/// as an append (`--append-verify`) when it grew since this agent's last push of it to
/// that remote landed and `append` is on, else in place (`--inplace`) when `inplace` is
/// on, else whole as any other file (`sync::bigfiles`). On unless `start="false"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigFiles {
    /// The smallest big file, in bytes (1 or more).
    pub size: u64,
    pub append: bool,
    pub inplace: bool,
}

impl Default for BigFiles {
    /// 64 MiB, appends only: logs, dumps and images are that big, a page or a script
    /// is not; writing in place shows a reader on the mirror a half-updated file, so
    /// the operator asks for it (README, "Big files").
    fn default() -> Self {
        BigFiles {
            size: 64 << 20,
            append: true,
            inplace: false,
        }
    }
}

/// The largest `<bigFiles size>`: 1 PiB.
pub const MAX_BIG_FILE_SIZE: u64 = 1 << 50;

/// `<bigFiles>`: on with the defaults when absent; `size` bytes or a number with K, M, G
/// or T, the switches "true" or "false", else refused with what to write.
pub(super) fn big_files(
    cx: &Ctx,
    b: Option<&raw::BigFiles>,
) -> Result<Option<BigFiles>, ConfigError> {
    let Some(b) = b else {
        return Ok(Some(BigFiles::default()));
    };
    if !cx.flag(b.start.as_deref(), b.line, "bigFiles", "start", true)? {
        return Ok(None);
    }
    let mut big = BigFiles::default();
    if let Some(v) = b.size.as_deref() {
        big.size = match size_in_bytes(v) {
            Some(n) if (1..=MAX_BIG_FILE_SIZE).contains(&n) => n,
            _ => {
                return Err(cx.err(
                    b.line,
                    format!(
                        "<bigFiles size=\"{v}\">: must be a number of bytes from 1 to 1P, \
                         alone or with K, M, G or T (powers of 1024); write e.g. size=\"64M\""
                    ),
                ))
            }
        };
    }
    big.append = cx.flag(b.append.as_deref(), b.line, "bigFiles", "append", true)?;
    big.inplace = cx.flag(b.inplace.as_deref(), b.line, "bigFiles", "inplace", false)?;
    Ok(Some(big))
}

/// `123`, `64K`, `64M`, `2G`, `1T`, `1P` (powers of 1024, either case): the bytes, or
/// `None` for anything else or a number past `u64`.
pub fn size_in_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                _ => return None,
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// A size as `<bigFiles size>` takes it: the largest unit that divides it (`64M`).
pub fn show_size(bytes: u64) -> String {
    for (shift, unit) in [(50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}
