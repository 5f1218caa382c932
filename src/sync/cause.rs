//! Why a call failed, in rsync's and ssh's own words: the end of what they wrote to
//! stderr (at most its last 4 KiB, [`rsync::STDERR_KEEP`](super::rsync)), with every
//! control character escaped so that it stays one log line and cannot drive a terminal,
//! and for the causes an operator meets most a short hint of what to check
//! ([`Kind`]). The hint never replaces rsync's words: both are in the line.
//!
//! [`Failures`] is a remote's record of them for the log and status: the last failure
//! and its time, and the run of failures a success ends (the "recovered" line).

use std::time::{Duration, SystemTime};

use super::rsync;
use crate::sys::time::{rfc3339, unix_seconds};

/// The causes with a hint, told by their words on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ssh: "Host key verification failed."
    HostKey,
    /// rsync daemon "@ERROR: auth failed on module", ssh "Permission denied (publickey)".
    Auth,
    /// rsync daemon "@ERROR: Unknown module 'x'".
    UnknownModule,
    /// "Connection refused", from rsync's connect or ssh's.
    ConnectionRefused,
    /// "No space left on device" (ENOSPC), on the remote or here.
    NoSpace,
    /// The remote's name did not resolve.
    NameResolution,
    /// Anything else: rsync's words alone.
    Other,
}

impl Kind {
    /// The kind of a failure, by the words on stderr (the first match in this order:
    /// the most specific words first).
    pub fn of(stderr: &str) -> Kind {
        let has = |needle: &str| stderr.contains(needle);
        if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            Kind::HostKey
        } else if has("@ERROR: Unknown module") {
            Kind::UnknownModule
        } else if has("@ERROR: auth failed")
            || has("Permission denied (publickey")
            || has("Permission denied (password")
            || has("Permission denied, please try again")
            || has("Too many authentication failures")
        {
            Kind::Auth
        } else if has("No space left on device") || has("Disk quota exceeded") {
            Kind::NoSpace
        } else if has("Connection refused") {
            Kind::ConnectionRefused
        } else if has("Could not resolve hostname")
            || has("Name or service not known")
            || has("Temporary failure in name resolution")
        {
            Kind::NameResolution
        } else {
            Kind::Other
        }
    }

    /// A short name for machines (the JSON log's `cause`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::HostKey => "host_key",
            Kind::Auth => "auth",
            Kind::UnknownModule => "unknown_module",
            Kind::ConnectionRefused => "connection_refused",
            Kind::NoSpace => "no_space",
            Kind::NameResolution => "name_resolution",
            Kind::Other => "other",
        }
    }

    /// What to check, for a person.
    pub fn hint(self) -> Option<&'static str> {
        Some(match self {
            Kind::HostKey => {
                "ssh does not know or no longer trusts the remote's host key: check the \
                 known_hosts of the agent's user (ssh-keyscan, ssh-keygen -R)"
            }
            Kind::Auth => {
                "the remote refused the login: check the user and password file of <auth> \
                 (daemon mode) or the ssh key of the agent's user (ssh mode)"
            }
            Kind::UnknownModule => {
                "the rsync daemon has no module of that name: check name= of the <remote> \
                 and the daemon's rsyncd.conf"
            }
            Kind::ConnectionRefused => {
                "nothing listens at the remote's address and port: the daemon or sshd is \
                 down, or the host or port is wrong"
            }
            Kind::NoSpace => "a disk is full (the remote's, as a rule): free space there",
            Kind::NameResolution => "the remote's host name does not resolve: check ip=",
            Kind::Other => return None,
        })
    }
}

/// `s` with every control character escaped (`\n`, `\t`, `\u{1b}`), so that it is one
/// line and no terminal or log reader takes any of it as a command.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One failed call, for the log line, status and the JSON log's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub kind: Kind,
    /// `rsync exit N (meaning); hint: ...; rsync said: <stderr, escaped>`.
    pub text: String,
}

impl Cause {
    /// The cause of a call that ended with `status` and wrote `stderr` (already bounded
    /// by the runner to its last 4 KiB).
    pub fn of(status: i32, stderr: &str) -> Cause {
        let kind = Kind::of(stderr);
        let mut text = format!("rsync exit {status} ({})", rsync::describe_status(status));
        if let Some(hint) = kind.hint() {
            text.push_str("; hint: ");
            text.push_str(hint);
        }
        let said = stderr.trim();
        if said.is_empty() {
            text.push_str("; nothing on stderr");
        } else {
            text.push_str("; rsync said: ");
            text.push_str(&escape(said));
        }
        Cause { kind, text }
    }
}

/// A remote's failures, as the log and status tell them.
#[derive(Debug, Clone, Default)]
pub struct Failures {
    /// The last failure: when, and what it said.
    last: Option<(SystemTime, String)>,
    /// The run of failures going on: how many calls failed, the first when.
    run: Option<(u64, SystemTime)>,
}

/// The end of a run of failures, for the "recovered" line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub failed_calls: u64,
    pub since: SystemTime,
    /// From the first failure of the run to the success.
    pub lasted: Duration,
}

impl Failures {
    /// A call failed at `at` with `message`.
    pub fn failed(&mut self, at: SystemTime, message: String) {
        self.last = Some((at, message));
        let run = self.run.get_or_insert((0, at));
        run.0 = run.0.saturating_add(1);
    }

    /// A call succeeded at `at`: the run of failures it ends, if one was going on.
    pub fn succeeded(&mut self, at: SystemTime) -> Option<Recovered> {
        self.run.take().map(|(failed_calls, since)| Recovered {
            failed_calls,
            since,
            lasted: at.duration_since(since).unwrap_or_default(),
        })
    }

    /// The last failure (kept after a recovery, for status).
    pub fn last(&self) -> Option<&(SystemTime, String)> {
        self.last.as_ref()
    }

    /// Since when calls to the remote fail, while a run of failures goes on (a call
    /// failed, a retry of it included, and none has succeeded since).
    pub fn failing_since(&self) -> Option<SystemTime> {
        self.run.map(|(_, since)| since)
    }
}

/// The "recovered" line's text for `remote`.
pub fn recovered_line(remote: &str, r: &Recovered) -> String {
    format!(
        "recovered: a push to {remote} succeeded after {} failed call{} since {} ({:.1}s)",
        r.failed_calls,
        if r.failed_calls == 1 { "" } else { "s" },
        rfc3339(unix_seconds(r.since)),
        r.lasted.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The words below are rsync 3.2/3.4 and OpenSSH 9's, as each prints them.
    const REFUSED: &str = "rsync: [sender] failed to connect to 127.0.0.1 (127.0.0.1): \
                           Connection refused (111)\nrsync error: error in socket IO (code \
                           10) at clientserver.c(139) [sender=3.4.1]\n";
    const HOST_KEY: &str = "Host key verification failed.\r\nrsync: connection unexpectedly \
                            closed (0 bytes received so far) [sender]\nrsync error: \
                            unexplained error (code 255) at io.c(232) [sender=3.4.1]\n";

    #[test]
    fn each_common_cause_is_told_by_its_words() {
        let cases = [
            (REFUSED, Kind::ConnectionRefused),
            ("ssh: connect to host 10.0.0.2 port 22: Connection refused\r\n", Kind::ConnectionRefused),
            (HOST_KEY, Kind::HostKey),
            ("@ERROR: Unknown module 'www'\nrsync error: error starting client-server protocol (code 5)", Kind::UnknownModule),
            ("@ERROR: auth failed on module www\nrsync error: error starting client-server protocol (code 5)", Kind::Auth),
            ("root@10.0.0.2: Permission denied (publickey,password).\r\n", Kind::Auth),
            ("rsync: [receiver] write failed on \"/srv/a\" (in www): No space left on device (28)", Kind::NoSpace),
            ("ssh: Could not resolve hostname nohost: Name or service not known\r\n", Kind::NameResolution),
            ("rsync: [sender] link_stat \"/x\" failed: No such file or directory (2)", Kind::Other),
            ("", Kind::Other),
        ];
        for (stderr, kind) in cases {
            assert_eq!(Kind::of(stderr), kind, "{stderr:?}");
            assert_eq!(kind.hint().is_some(), kind != Kind::Other);
        }
    }

    #[test]
    fn the_cause_keeps_rsyncs_words_on_one_line_with_the_hint() {
        let c = Cause::of(255, HOST_KEY);
        assert_eq!(c.kind, Kind::HostKey);
        assert!(!c.text.contains(['\n', '\r']), "{}", c.text);
        assert!(c.text.starts_with("rsync exit 255 ("), "{}", c.text);
        assert!(c.text.contains("hint: ssh does not know"), "{}", c.text);
        assert!(
            c.text.contains(
                "rsync said: Host key verification failed.\\r\\nrsync: connection unexpectedly"
            ),
            "{}",
            c.text
        );
        assert!(c.text.ends_with("[sender=3.4.1]"), "{}", c.text);
        let c = Cause::of(23, "rsync: x\x1b[2J\x07 failed\n");
        assert!(!c.text.contains(['\x1b', '\x07']), "{}", c.text);
        assert!(c.text.contains("x\\u{1b}[2J\\u{7} failed"), "{}", c.text);
        assert!(!c.text.contains("hint"), "{}", c.text);
        assert!(Cause::of(-1, "").text.ends_with("nothing on stderr"));
    }

    #[test]
    fn a_run_of_failures_ends_with_one_recovery() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut f = Failures::default();
        assert_eq!(f.succeeded(t0), None, "no run: no recovered line");
        f.failed(t0, "one".into());
        f.failed(t0 + Duration::from_secs(2), "two".into());
        assert_eq!(f.last().map(|(_, m)| m.as_str()), Some("two"));
        let r = f.succeeded(t0 + Duration::from_secs(5)).expect("recovered");
        assert_eq!(r.failed_calls, 2);
        assert_eq!(r.since, t0);
        assert_eq!(r.lasted, Duration::from_secs(5));
        assert_eq!(f.succeeded(t0 + Duration::from_secs(6)), None, "said once");
        assert_eq!(f.last().map(|(_, m)| m.as_str()), Some("two"), "kept");
        let line = recovered_line("r::m", &r);
        assert_eq!(
            line,
            "recovered: a push to r::m succeeded after 2 failed calls since \
             2023-11-14T22:13:20Z (5.0s)"
        );
    }
}
