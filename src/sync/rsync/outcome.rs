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
}
