//! rsync's own progress of a full sync: the records `--info=progress2` writes on its
//! stdout, read as they come, the latest figures kept for the progress line and status.
//!
//! rsync (3.1.0 and later, the oldest the agent runs; the option is the client's own and
//! never sent to the remote) writes a record at most once a second while data flows and
//! one at the end of each file it transferred, each starting with `\r`:
//!
//! ```text
//! \r      1,234,567  12%    1.23MB/s    0:00:05  
//! \r      1,400,000  14%    1.25MB/s    0:00:06 (xfr#12, ir-chk=1000/2000)
//! ```
//!
//! bytes transferred so far, the percentage of the total size of the files listed so
//! far, the rate, a time, and after a file ended: files transferred, files still to
//! check of those listed (`ir-chk` while the file list is still growing, `to-chk` once
//! it is complete). What else stdout carries (names under `-v`) is not such a record and
//! is left alone: a name is printed after a `\n`, with its control characters escaped,
//! so it never reads as one.

use std::sync::Mutex;

/// The option that makes rsync write its records (placed by the caller before the
/// source and destination of a full sync).
pub const OPTION: &str = "--info=progress2";

/// The latest figures of one transfer, as rsync wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Figures {
    /// Bytes transferred so far, as rsync writes them (`1,234,567`; `1.23M` under `-hh`).
    pub transferred: String,
    /// The same as a number, when rsync wrote digits and separators.
    pub bytes: Option<u64>,
    /// Of the total size of the files listed so far.
    pub percent: u32,
    /// rsync's rate (`1.23MB/s`).
    pub rate: String,
    /// Files transferred so far (`xfr#`), once one ended.
    pub files: Option<u64>,
    /// Files still to check and files listed so far (`to-chk=A/B`), once a file ended.
    pub to_check: Option<(u64, u64)>,
    /// Whether the file list was complete then (`to-chk`) or still growing (`ir-chk`).
    pub list_complete: Option<bool>,
}

impl Figures {
    /// `1,234,567 bytes (12%), 1.23MB/s, 12 file(s) transferred, 1000 of 2000 listed
    /// still to check (list still growing)`. Pure.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} bytes ({}%), {}",
            self.transferred, self.percent, self.rate
        );
        if let Some(n) = self.files {
            s.push_str(&format!(", {n} file(s) transferred"));
        }
        if let Some((left, listed)) = self.to_check {
            s.push_str(&format!(", {left} of {listed} listed still to check"));
            if self.list_complete == Some(false) {
                s.push_str(" (list still growing)");
            }
        }
        s
    }
}

/// One record's fields: the first three always, the rest after a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    transferred: String,
    percent: u32,
    rate: String,
    /// (files transferred, still to check, listed, list complete)
    ended: Option<(u64, u64, u64, bool)>,
}

/// `1,234,567` (or with `.`, `'` or `_` between the digits) as a number.
fn digits(s: &str) -> Option<u64> {
    let d: String = s
        .chars()
        .filter(|c| !matches!(c, ',' | '.' | '\'' | '_'))
        .collect();
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    d.parse().ok()
}

/// One record (without its `\r`), or `None` when it is not one or is cut short. Pure.
fn parse(record: &str) -> Option<Record> {
    let mut words = record.split_whitespace();
    let transferred = words.next()?;
    let percent = words.next()?.strip_suffix('%')?.parse::<u32>().ok()?;
    let rate = words.next()?;
    let number = rate
        .strip_suffix("B/s")?
        .trim_end_matches(['k', 'M', 'G', 'T']);
    if number.is_empty()
        || !number
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b',')
    {
        return None;
    }
    if !transferred
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b",.'_".contains(&b))
        || percent > 100
    {
        return None;
    }
    let _time = words.next();
    let ended = match words.next() {
        None => None,
        Some(xfr) => {
            let files = digits(xfr.strip_prefix("(xfr#")?.strip_suffix(',')?)?;
            let chk = words.next()?.strip_suffix(')')?;
            let (kind, counts) = chk.split_once("-chk=")?;
            let complete = match kind {
                "to" => true,
                "ir" => false,
                _ => return None,
            };
            let (left, listed) = counts.split_once('/')?;
            Some((files, digits(left)?, digits(listed)?, complete))
        }
    };
    if words.next().is_some() {
        return None;
    }
    Some(Record {
        transferred: transferred.to_owned(),
        percent,
        rate: rate.to_owned(),
        ended,
    })
}

/// Longest text kept between two separators: a record is under 100 bytes; what is
/// longer (a long name under `-v`) is not one and is skipped.
const RECORD_MAX: usize = 256;

/// rsync's stdout read in pieces of any size: the records found, the latest figures.
#[derive(Debug, Default)]
pub struct Feed {
    /// The text since the last separator (at most [`RECORD_MAX`] bytes).
    pending: Vec<u8>,
    /// The text since the last separator is too long to be a record.
    overlong: bool,
    /// Whether the last separator was a `\r` (a record follows).
    after_cr: bool,
    figures: Option<Figures>,
}

impl Feed {
    /// Reads one piece; true when the figures changed. A record cut at the end of the
    /// piece counts once it parses whole (rsync writes a record at once, but the one
    /// after a file ended may wait in its buffer).
    pub fn push(&mut self, piece: &[u8]) -> bool {
        let mut changed = false;
        for &b in piece {
            if b == b'\r' || b == b'\n' {
                changed |= self.take_pending();
                self.after_cr = b == b'\r';
            } else if self.pending.len() < RECORD_MAX {
                self.pending.push(b);
            } else {
                self.overlong = true;
            }
        }
        // The record at the end may be whole already (the last one written).
        if self.after_cr && !self.overlong {
            changed |= self.merge_pending();
        }
        changed
    }

    fn take_pending(&mut self) -> bool {
        let changed = self.after_cr && !self.overlong && self.merge_pending();
        self.pending.clear();
        self.overlong = false;
        changed
    }

    fn merge_pending(&mut self) -> bool {
        let Some(r) = std::str::from_utf8(&self.pending).ok().and_then(parse) else {
            return false;
        };
        let mut f = self.figures.clone().unwrap_or_default();
        f.bytes = digits(&r.transferred);
        f.transferred = r.transferred;
        f.percent = r.percent;
        f.rate = r.rate;
        if let Some((files, left, listed, complete)) = r.ended {
            f.files = Some(files);
            f.to_check = Some((left, listed));
            f.list_complete = Some(complete);
        }
        if self.figures.as_ref() == Some(&f) {
            return false;
        }
        self.figures = Some(f);
        true
    }

    /// The latest figures, once a record came.
    pub fn figures(&self) -> Option<&Figures> {
        self.figures.as_ref()
    }
}

/// The latest figures of a running transfer, shared between the thread reading rsync's
/// stdout and whoever shows them.
#[derive(Debug, Default)]
pub struct Latest(Mutex<Option<Figures>>);

impl Latest {
    pub fn set(&self, f: Figures) {
        // Only whole values are stored under it: never inconsistent.
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    pub fn get(&self) -> Option<Figures> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(pieces: &[&[u8]]) -> Option<Figures> {
        let mut f = Feed::default();
        for p in pieces {
            f.push(p);
        }
        f.figures().cloned()
    }

    #[test]
    fn a_record_while_data_flows_gives_bytes_percent_and_rate() {
        let f = fed(&[b"\r         32,768   0%    0.00kB/s    0:00:00  "]).expect("figures");
        assert_eq!(f.transferred, "32,768");
        assert_eq!(f.bytes, Some(32_768));
        assert_eq!(f.percent, 0);
        assert_eq!(f.rate, "0.00kB/s");
        assert_eq!((f.files, f.to_check, f.list_complete), (None, None, None));
        assert_eq!(f.text(), "32,768 bytes (0%), 0.00kB/s");
    }

    #[test]
    fn a_record_after_a_file_ended_gives_files_and_what_is_left_to_check() {
        let f = fed(&[
            b"\r        200,000   3%   22.78MB/s    0:00:00 (xfr#1, ir-chk=29/31)",
            b"\r      1,400,000  23%    2.30MB/s    0:00:00 (xfr#7, to-chk=23/31)",
        ])
        .expect("figures");
        assert_eq!(f.bytes, Some(1_400_000));
        assert_eq!(f.files, Some(7));
        assert_eq!(f.to_check, Some((23, 31)));
        assert_eq!(f.list_complete, Some(true));
        assert_eq!(
            f.text(),
            "1,400,000 bytes (23%), 2.30MB/s, 7 file(s) transferred, 23 of 31 listed still \
             to check"
        );
        let f = fed(&[b"\r 5 1% 1.00kB/s 0:00:01 (xfr#1, ir-chk=9/10)"]).expect("figures");
        assert!(f
            .text()
            .ends_with("9 of 10 listed still to check (list still growing)"));
    }

    #[test]
    fn a_later_record_without_file_counts_keeps_the_last_ones() {
        let f = fed(&[
            b"\r 1,000 10% 1.00MB/s 0:00:01 (xfr#3, to-chk=5/9)\r 2,000 20% 1.10MB/s 0:00:02  ",
        ])
        .expect("figures");
        assert_eq!(
            (f.bytes, f.percent, f.rate.as_str()),
            (Some(2_000), 20, "1.10MB/s")
        );
        assert_eq!((f.files, f.to_check), (Some(3), Some((5, 9))));
    }

    #[test]
    fn records_cut_anywhere_between_reads_give_the_same_figures() {
        let text: &[u8] =
            b"f1\n\r         32,768   0%    0.00kB/s    0:00:00  \r        200,000   3%   \
              22.78MB/s    0:00:00 (xfr#1, to-chk=29/31)\nf10\n\r        400,000   6%   \
              50.03MB/s    0:00:00 (xfr#2, to-chk=28/31)\n";
        let whole = fed(&[text]).expect("figures");
        assert_eq!((whole.bytes, whole.files), (Some(400_000), Some(2)));
        for cut in 0..text.len() {
            let mut f = Feed::default();
            f.push(&text[..cut]);
            f.push(&text[cut..]);
            assert_eq!(f.figures(), Some(&whole), "cut at {cut}");
        }
    }

    #[test]
    fn a_record_cut_short_is_not_taken_until_it_is_whole() {
        let mut f = Feed::default();
        f.push(b"\r  1,000 10% 1.00MB/s 0:00:01  \r  2,000 20% 1.10MB/s 0:00:02 (xfr#3, to-");
        let now = f.figures().cloned().expect("the first record");
        assert_eq!((now.bytes, now.files), (Some(1_000), None));
        f.push(b"chk=5/9)");
        let now = f.figures().cloned().expect("figures");
        assert_eq!((now.bytes, now.files), (Some(2_000), Some(3)));
        // Cut inside the rate: not a record yet.
        let mut f = Feed::default();
        f.push(b"\r  1,000 10% 1.0");
        assert!(f.figures().is_none());
        f.push(b"0MB/s  ");
        assert_eq!(f.figures().map(|f| f.rate.as_str()), Some("1.00MB/s"));
    }

    #[test]
    fn names_and_other_output_are_not_records() {
        // Under -v names come after a `\n`, even one that reads like a record.
        assert_eq!(
            fed(&[b"sending incremental file list\n./\n  1,000 10% 1.00MB/s 0:00:01  \n"]),
            None
        );
        for junk in [
            &b"\rrsync: some error"[..],
            b"\r1,000",
            b"\r1,000 10%",
            b"\r1,000 10% fast",
            b"\r1,000 110% 1.00MB/s",
            b"\r1,000 10% 1.00MB/s 0:00:01 (xfr#1, zz-chk=1/2)",
            b"\r1,000 10% 1.00MB/s 0:00:01 (xfr#1, to-chk=1/2) more",
            b"\r\xff\xfe 10% 1.00MB/s",
        ] {
            assert_eq!(
                fed(&[junk, b"\r"]),
                None,
                "{:?}",
                String::from_utf8_lossy(junk)
            );
        }
        // A long line between records is skipped, the records around it kept.
        let mut f = Feed::default();
        f.push(b"\r 1,000 10% 1.00MB/s 0:00:01  \n");
        f.push(&[b'x'; 10_000]);
        f.push(b"\n\r 3,000 30% 1.00MB/s 0:00:01  ");
        assert_eq!(f.figures().and_then(|f| f.bytes), Some(3_000));
    }

    #[test]
    fn human_readable_sizes_are_kept_as_written() {
        let f = fed(&[b"\r          1.23M  12%    1.23MB/s    0:00:05  "]).expect("figures");
        assert_eq!((f.transferred.as_str(), f.bytes), ("1.23M", None));
        assert_eq!(digits("1.234.567"), Some(1_234_567));
        assert_eq!(digits("1'234"), Some(1_234));
    }
}
