//! The `<rsync>` element made ready: `commonParams` as words (refusing an option that
//! would take the agent's `-R` as its value or make rsync follow the tree's links), the
//! daemon's user and password file (checked as rsync will check it), the port, the
//! timeout, the ssh command (its program trusted like a plugin's) and the batch size.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use super::{raw, ConfigError, Ctx, RsyncOptions, DEFAULT_BATCH};
use crate::sys::fsafe;
use crate::sys::shell::split_str as split_words;

/// Does this `commonParams` word take its value from the next word (`--exclude PATTERN`,
/// `-e CMD`, a cluster ending in such a letter: `-ae`)? Each word of commonParams starts
/// with `-`, so the next word would be another option, or the agent's own `-R`.
pub(crate) fn takes_next_word(w: &str) -> bool {
    const LONG: [&str; 52] = [
        "rsh",
        "rsync-path",
        "exclude",
        "include",
        "exclude-from",
        "include-from",
        "filter",
        "files-from",
        "temp-dir",
        "compare-dest",
        "copy-dest",
        "link-dest",
        "partial-dir",
        "backup-dir",
        "suffix",
        "chmod",
        "chown",
        "usermap",
        "groupmap",
        "log-file",
        "log-file-format",
        "out-format",
        "password-file",
        "port",
        "sockopts",
        "timeout",
        "contimeout",
        "bwlimit",
        "max-size",
        "min-size",
        "max-delete",
        "block-size",
        "checksum-choice",
        "compress-choice",
        "compress-level",
        "skip-compress",
        "modify-window",
        "iconv",
        "write-batch",
        "read-batch",
        "only-write-batch",
        "protocol",
        "info",
        "debug",
        "address",
        "outbuf",
        "stop-after",
        "stop-at",
        "max-alloc",
        "checksum-seed",
        "remote-option",
        "early-input",
    ];
    if let Some(long) = w.strip_prefix("--") {
        return !long.contains('=') && LONG.contains(&long);
    }
    let Some(cluster) = w.strip_prefix('-') else {
        return false;
    };
    // The first letter that takes a value takes the rest of the word, or the next word
    // when it is the last letter.
    match cluster.find(['e', 'B', 'f', 'T', 'M', '@']) {
        Some(i) => i + 1 == cluster.len(),
        None => false,
    }
}

/// The first of `commonParams`' words that makes the sending rsync follow links in the
/// tree: `-L`/`--copy-links`, `--copy-unsafe-links`, `-k`/`--copy-dirlinks` (alone or in
/// a cluster such as `-aL`; a cluster ends at a letter that takes a value, `-e`, `-B`,
/// `-f`, `-T`, `-M`, `-@`).
pub(crate) fn follows_links(words: &[String]) -> Option<String> {
    const LONG: [&str; 3] = ["--copy-links", "--copy-unsafe-links", "--copy-dirlinks"];
    for w in words {
        if let Some(long) = w.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            if LONG.iter().any(|l| l[2..] == *name) {
                return Some(format!("--{name}"));
            }
            continue;
        }
        let Some(cluster) = w.strip_prefix('-') else {
            continue;
        };
        for c in cluster.chars() {
            if matches!(c, 'L' | 'k') {
                return Some(format!("-{c}"));
            }
            if matches!(c, 'e' | 'B' | 'f' | 'T' | 'M' | '@') {
                break;
            }
        }
    }
    None
}

/// `<rsync>`; `check_ssh`: the ssh command's program, when found, must be one nobody
/// else can change (see `fsafe::check_program`), like a command plugin's.
pub(super) fn rsync(
    cx: &Ctx,
    r: Option<&raw::Rsync>,
    check_ssh: bool,
) -> Result<RsyncOptions, ConfigError> {
    let default = raw::Rsync::default();
    let r = r.unwrap_or(&default);
    let params = match &r.common_params {
        None => vec!["-artuz".to_owned()],
        Some(p) => {
            let text = p.params.as_deref().unwrap_or("");
            let words = split_words(text)
                .map_err(|m| cx.err(p.line, format!("<commonParams params=\"{text}\">: {m}")))?;
            if let Some(bad) = words.iter().find(|w| !w.starts_with('-')) {
                return Err(cx.err(
                    p.line,
                    format!("<commonParams params=\"{text}\">: \"{bad}\" is not an option (each word must start with -)"),
                ));
            }
            if let Some(opt) = words.iter().find(|w| takes_next_word(w)) {
                return Err(cx.err(
                    p.line,
                    format!(
                        "<commonParams params=\"{text}\">: {opt} takes its value from the next \
                         word, which would be the option the agent puts after commonParams (-R): \
                         write it with = (--exclude=PATTERN) or attached (-eCMD)"
                    ),
                ));
            }
            if let Some(opt) = follows_links(&words) {
                return Err(cx.err(
                    p.line,
                    format!(
                        "<commonParams params=\"{text}\">: {opt} makes rsync follow the links in \
                         the tree, so whoever can write there can have any file this user can \
                         read sent to the remotes; rsync reads the watch roots without \
                         following links and copies links as links: drop {opt}"
                    ),
                ));
            }
            words
        }
    };
    let ssh_on = match &r.ssh {
        Some(s) => cx.flag(s.start.as_deref(), s.line, "ssh", "start", false)?,
        None => false,
    };
    let auth = match &r.auth {
        Some(a) if cx.flag(a.start.as_deref(), a.line, "auth", "start", false)? => {
            let user = a
                .users
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| cx.err(a.line, "<auth>: missing users="))?;
            let file = a
                .password_file
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| cx.err(a.line, "<auth>: missing passwordfile="))?;
            if user.starts_with('-') {
                return Err(cx.err(
                    a.line,
                    format!("<auth users=\"{user}\">: a user name must not begin with \"-\""),
                ));
            }
            let path = cx.path(file);
            let meta = std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&path)
                .and_then(|f| f.metadata());
            let meta = meta.map_err(|e| {
                cx.err(
                    a.line,
                    format!("<auth passwordfile=\"{file}\">: password file unreadable: {e}"),
                )
            })?;
            // In ssh mode rsync is not given the file.
            if !ssh_on {
                judge_password_file(fsafe::uid(), meta.uid(), meta.mode())
                    .map_err(|m| cx.err(a.line, format!("<auth passwordfile=\"{file}\">: {m}")))?;
            }
            Some((user.to_owned(), path))
        }
        _ => None,
    };
    let port = match &r.user_defined_port {
        Some(p)
            if cx.flag(
                p.start.as_deref(),
                p.line,
                "userDefinedPort",
                "start",
                false,
            )? =>
        {
            let port: u16 = cx.number(p.port.as_deref(), p.line, "userDefinedPort", "port")?;
            if port == 0 {
                return Err(cx.err(p.line, "<userDefinedPort port=\"0\">: not a usable port"));
            }
            Some(port)
        }
        _ => None,
    };
    let timeout = match &r.timeout {
        Some(t) if cx.flag(t.start.as_deref(), t.line, "timeout", "start", false)? => {
            Some(cx.number(t.time.as_deref(), t.line, "timeout", "time")?)
        }
        _ => None,
    };
    let ssh = match &r.ssh {
        Some(s) if cx.flag(s.start.as_deref(), s.line, "ssh", "start", false)? => Some(
            s.command
                .clone()
                .filter(|c| !c.trim().is_empty())
                .or_else(|| {
                    std::env::var("RSYNC_RSH")
                        .ok()
                        .filter(|c| !c.trim().is_empty())
                })
                .unwrap_or_else(|| "ssh".to_owned()),
        ),
        _ => None,
    };
    if let (Some(command), Some(s), true) = (&ssh, &r.ssh, check_ssh) {
        trusted_ssh(command).map_err(|m| cx.err(s.line, m))?;
    }
    let batch = match &r.batch {
        None => DEFAULT_BATCH,
        Some(b) => {
            let n: usize = cx.number(b.size.as_deref(), b.line, "batch", "size")?;
            if n == 0 {
                return Err(cx.err(b.line, "<batch size=\"0\">: must be at least 1"));
            }
            n
        }
    };
    Ok(RsyncOptions {
        params,
        auth,
        port,
        timeout,
        ssh,
        batch,
    })
}

/// The ssh command's program, found as exec finds it, must be one nobody but root or the
/// agent's user can change: rsync runs it as the agent's user. One that is not found is
/// left to rsync to report, as before.
fn trusted_ssh(command: &str) -> Result<(), String> {
    let Some(program) = split_words(command).ok().and_then(|w| w.into_iter().next()) else {
        return Ok(());
    };
    let Some(path) = fsafe::find_program(&program, std::env::var_os("PATH").as_deref()) else {
        return Ok(());
    };
    match fsafe::check_program(&path) {
        Ok(_) => Ok(()),
        Err(e) if fsafe::is_refused(&e) => Err(format!(
            "<ssh command=\"{command}\">: refusing to run {}: {e}",
            path.display()
        )),
        Err(e) => Err(format!(
            "<ssh command=\"{command}\">: cannot check {}: {e}",
            path.display()
        )),
    }
}

/// Why rsync would refuse a daemon password file ([`judge_password_file`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordFileRefused {
    /// Anything but a regular file (`mode`: its `st_mode`).
    #[error("not a regular file but a {}", crate::sys::fsafe::kind_name(*.mode))]
    NotRegular { mode: u32 },
    /// Others may read or write it.
    #[error(
        "mode {:04o} lets others read or write it, and rsync refuses such a file \
         (\"password file must not be other-accessible\"): chmod o-rwx it",
        .mode & 0o7777
    )]
    OtherAccessible { mode: u32 },
    /// rsync runs as root and root does not own it.
    #[error(
        "owned by {}, and rsync run as root refuses a password file root does not own \
         (\"password file must be owned by root when running as root\"): chown root it",
        crate::sys::fsafe::describe_user(*.owner)
    )]
    NotRootOwned { owner: u32 },
}

/// What rsync refuses in a daemon password file (its authenticate.c), for rsync run by
/// real uid `running`: a file that others may read or write (`mode & 006`), and, when
/// run as root, a file not owned by root. Group bits are allowed, as rsync allows them.
/// Anything but a regular file is refused too (a fifo would hang every push).
pub fn judge_password_file(running: u32, owner: u32, mode: u32) -> Result<(), PasswordFileRefused> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(PasswordFileRefused::NotRegular { mode });
    }
    if mode & 0o006 != 0 {
        return Err(PasswordFileRefused::OtherAccessible { mode });
    }
    if running == 0 && owner != 0 {
        return Err(PasswordFileRefused::NotRootOwned { owner });
    }
    Ok(())
}
