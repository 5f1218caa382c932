//! How an rsync run ended: its exit status read as success or failure, and described.

/// How an rsync run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit status; -1 when rsync could not be started or was killed by a signal.
    pub status: i32,
    /// The end of what rsync wrote to stderr, for the log.
    pub stderr: String,
    pub elapsed: std::time::Duration,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        is_success(self.status)
    }
}

/// rsync's exit 24 ("some files vanished before they could be transferred") is what a
/// live tree does all the time, and the vanished path has its own event: success.
pub fn is_success(status: i32) -> bool {
    status == 0 || status == 24
}

/// What a failed status means, for the log.
pub fn describe_status(status: i32) -> &'static str {
    match status {
        0 => "success",
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files, dirs",
        5 => "error starting client-server protocol (remote down, bad module or auth?)",
        10 => "error in socket I/O (remote unreachable?)",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream",
        20 => "received SIGUSR1 or SIGINT",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        127 => "rsync not found",
        -1 => "could not run rsync",
        _ => "rsync error",
    }
}

/// Keep this much of rsync's stderr for the log.
pub const STDERR_KEEP: usize = 4096;

/// Read at most this much of the end of rsync's stderr before [`condense`] keeps
/// [`STDERR_KEEP`] of it.
pub const STDERR_READ: usize = 256 << 10;

/// A line longer than this is shortened in its middle by [`condense`].
const LINE_KEEP: usize = 400;

/// The end of rsync's stderr as the log and status keep it: each line longer than
/// [`LINE_KEEP`] bytes shortened in its middle (its start and end kept, its length
/// said), then the last [`STDERR_KEEP`] bytes. A single line naming a path of 4 KiB
/// ("filename overflows max-path len by 34: up/yyy...") otherwise pushed rsync's own
/// words, the cause, out of what was kept. A line naming a failed path in quotes
/// (`rsync: ... "path" failed: ...`, read back by `recovery::failed_paths`) stays
/// whole: a shortened path would name another file.
pub fn condense(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len().min(2 * STDERR_KEEP));
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        if body.len() > LINE_KEEP && !names_failed_path(body) {
            out.push_str(&shorten_middle(body));
            if line.len() > body.len() {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    let t = out.trim();
    let mut start = t.len().saturating_sub(STDERR_KEEP);
    while !t.is_char_boundary(start) {
        start += 1;
    }
    t[start..].to_owned()
}

/// Does rsync's `line` name a failed path in quotes (see `recovery::failed_paths`)?
fn names_failed_path(line: &str) -> bool {
    let line = line.trim();
    line.starts_with("rsync:") && line.contains("failed") && line.contains('"')
}

/// `line`'s first 240 and last 120 bytes (at character boundaries) around its length.
fn shorten_middle(line: &str) -> String {
    let mut head = 240.min(line.len());
    while !line.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = line.len().saturating_sub(120).max(head);
    while !line.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}...({} bytes)...{}",
        &line[..head],
        line.len(),
        &line[tail..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_24_is_success_23_is_not() {
        assert!(is_success(0));
        assert!(is_success(24));
        assert!(!is_success(23));
        assert!(!is_success(5));
    }

    #[test]
    fn a_long_path_on_stderr_leaves_rsyncs_words_whole() {
        let long = format!("up/{}/{}", "y/".repeat(2100), "z".repeat(250));
        let raw = format!(
            "filename overflows max-path len by 34: {long}\n\
             rsync error: some files/attrs were not transferred (see previous errors) \
             (code 23) at main.c(1394) [sender=3.2.7]\n"
        );
        let kept = condense(raw.as_bytes());
        assert!(kept.len() < 1000, "{kept}");
        assert!(
            kept.starts_with("filename overflows max-path len by 34: up/y/y/"),
            "{kept}"
        );
        assert!(
            kept.contains(&format!("({} bytes)", long.len() + 39)),
            "{kept}"
        );
        assert!(kept.contains(&"z".repeat(100)), "{kept}");
        assert!(kept.ends_with("[sender=3.2.7]"), "{kept}");
        // A failed path in quotes is kept whole; short lines are untouched.
        let failed =
            format!("rsync: [sender] opendir \"/www/{long}\" failed: Permission denied (13)");
        assert_eq!(
            condense(failed.as_bytes()).len(),
            STDERR_KEEP.min(failed.len())
        );
        assert_eq!(condense(b"  a\nb  \n"), "a\nb");
        // Never more than STDERR_KEEP bytes, cut at a character's boundary.
        let many = "\u{e9}".repeat(3000);
        let kept = condense(format!("{many}\n{many}\n").as_bytes());
        assert!(kept.len() <= STDERR_KEEP, "{}", kept.len());
        let many_short = "ab\n".repeat(5000);
        assert_eq!(condense(many_short.as_bytes()).len(), STDERR_KEEP);
    }
}
