//! The rsync the agent runs: found on PATH and new enough, or a start-up error.
//!
//! Live pushes need `--delete-missing-args` (rsync 3.1.0); an older rsync would fail
//! every push. The modes that sync check this before anything starts.

use std::process::{Command, Stdio};

/// The oldest rsync that has every option the agent passes.
pub const MIN: Version = Version(3, 1, 0);

/// An rsync version, major.minor.patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The version in `rsync --version`'s first line (`rsync  version 3.2.7  protocol
/// version 31`); a suffix such as `3.4.1dev` or `3.2.7-r1` is ignored.
fn parse(first_line: &str) -> Result<Version, String> {
    let mut words = first_line.split_whitespace();
    if words.next() != Some("rsync") {
        return Err(format!("not rsync's version line: {first_line:?}"));
    }
    let Some(v) = words.skip_while(|w| *w != "version").nth(1) else {
        return Err(format!("no version in {first_line:?}"));
    };
    let mut nums = v.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    match (nums.next().flatten(), nums.next().flatten(), nums.next()) {
        (Some(major), Some(minor), patch) => {
            Ok(Version(major, minor, patch.flatten().unwrap_or(0)))
        }
        _ => Err(format!("cannot read the version {v:?} in {first_line:?}")),
    }
}

/// Whether this version can run the agent's commands; the error says why not.
fn check(v: Version) -> Result<(), String> {
    if v >= MIN {
        Ok(())
    } else {
        Err(format!(
            "rsync {v} is too old: sersync2 needs rsync {MIN} or later (for \
             --delete-missing-args); install a newer rsync"
        ))
    }
}

/// Runs `rsync --version` from PATH and checks it; returns its first line. The caller
/// only reports why not, so it is an [`anyhow::Error`].
pub fn require() -> anyhow::Result<String> {
    let out = version_with(&[], Stdio::piped(), Stdio::null()).map_err(|e| {
        let path = std::env::var("PATH").unwrap_or_default();
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "rsync not found in PATH ({path}): install rsync {MIN} or later \
                     (Debian: apt-get install rsync) or put it on PATH"
            )
        } else {
            anyhow::anyhow!("cannot run rsync --version (PATH {path}): {e}")
        }
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("").trim().to_owned();
    let v = parse(&first).map_err(|e| anyhow::anyhow!("rsync --version: {e}"))?;
    check(v).map_err(anyhow::Error::msg)?;
    Ok(first)
}

/// Whether the rsync on PATH takes `params` (`commonParams`, with a remote's own
/// `params=`): `rsync PARAMS --version` parses every option first and prints nothing
/// but the error for one it does not know or whose value is bad. `Err`: rsync's own
/// words; every push with these options would fail so. An rsync that cannot be run
/// is [`require`]'s business: `Ok`.
pub fn takes(params: &[String]) -> anyhow::Result<()> {
    match version_with(params, Stdio::null(), Stdio::piped()) {
        Ok(o) if !o.status.success() => {
            let text = String::from_utf8_lossy(&o.stderr);
            let why: Vec<&str> = (text.lines())
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("rsync error:"))
                .map(|l| l.strip_prefix("rsync: ").unwrap_or(l))
                .take(3)
                .collect();
            Err(anyhow::anyhow!(if why.is_empty() {
                format!("rsync exits {} on them", o.status)
            } else {
                why.join("; ")
            }))
        }
        _ => Ok(()),
    }
}

/// `rsync PARAMS --version` from PATH, run to its end: the one place the version check
/// starts rsync (every push goes through `rsync::command_in`).
fn version_with(
    params: &[String],
    out: Stdio,
    err: Stdio,
) -> std::io::Result<std::process::Output> {
    Command::new("rsync")
        .args(params)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .output()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> bool {
        parse(line).and_then(check).is_ok()
    }

    #[test]
    fn versions_before_3_1_are_refused() {
        assert_eq!(
            parse("rsync  version 3.0.9  protocol version 30"),
            Ok(Version(3, 0, 9))
        );
        assert!(!ok("rsync  version 3.0.9  protocol version 30"));
        assert!(!ok("rsync  version 2.6.9  protocol version 29"));
        let e = parse("rsync  version 3.0.9  protocol version 30")
            .and_then(check)
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("3.0.9") && e.contains("3.1.0"),
            "names both versions: {e}"
        );
    }

    #[test]
    fn versions_from_3_1_are_accepted() {
        assert!(ok("rsync  version 3.1.0  protocol version 31"));
        assert!(ok("rsync  version 3.2.7  protocol version 31"));
        assert!(ok("rsync  version 3.4.1  protocol version 32"));
        assert!(ok("rsync  version 3.5.0  protocol version 32"));
        assert_eq!(
            parse("rsync  version 3.4.1dev  protocol version 32"),
            Ok(Version(3, 4, 1))
        );
        assert_eq!(parse("rsync version 3.2"), Ok(Version(3, 2, 0)));
    }

    #[test]
    fn options_rsync_does_not_know_are_named_with_rsyncs_words() {
        if require().is_err() {
            return; // no rsync here: nothing to ask
        }
        let words = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(takes(&words(&["-artz", "--bwlimit=10"])).is_ok());
        let e = takes(&words(&["-artz", "--bwlimt=10"]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("--bwlimt=10") && e.contains("unknown option"),
            "{e}"
        );
        let e = takes(&words(&["--max-size=1x"]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--max-size=1x"), "{e}");
    }

    #[test]
    fn garbage_is_an_error() {
        for line in [
            "",
            "garbage",
            "openrsync: protocol version 29",
            "rsync  version",
            "rsync  version x.y.z",
            "rsync  version 3",
        ] {
            assert!(parse(line).is_err(), "{line:?}");
        }
    }
}
