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

/// Whether these params keep hard links (`-H`, alone or in a cluster such as `-artzH`,
/// or `--hard-links`), the last of those and `--no-hard-links`/`--no-H` deciding. A
/// cluster is read as [`follows_links`] reads it.
pub(crate) fn keeps_hard_links(words: &[String]) -> bool {
    let mut on = false;
    for w in words {
        if let Some(long) = w.strip_prefix("--") {
            match long {
                "hard-links" => on = true,
                "no-hard-links" | "no-H" => on = false,
                _ => {}
            }
            continue;
        }
        let Some(cluster) = w.strip_prefix('-') else {
            continue;
        };
        for c in cluster.chars() {
            if c == 'H' {
                on = true;
            }
            if matches!(c, 'e' | 'B' | 'f' | 'T' | 'M' | '@') {
                break;
            }
        }
    }
    on
}

/// The first of `commonParams`' (or a remote's `params=`) words that would break what
/// the agent promises of a mirror, with why: a push that sends nothing while the agent
/// counts it landed (`-n`/`--dry-run`, `--list-only`, the batch modes), one that deletes
/// the watched files once sent (`--remove-source-files`, `--remove-sent-files`), one that
/// leaves new or changed files out (`--existing`, `--ignore-non-existing`,
/// `--ignore-existing`, `--max-size`, `--min-size`), one that
/// takes its paths from elsewhere (`--files-from`), and rsync's internal modes. Short
/// options are read in clusters as [`follows_links`] reads them.
pub(crate) fn breaks_the_mirror(words: &[String]) -> Option<(String, &'static str)> {
    const NOTHING: &str = "rsync would send nothing, while the agent counts each push landed \
                           and --wait-synced says synced";
    const LONG: [(&str, &str); 16] = [
        ("dry-run", NOTHING),
        ("list-only", NOTHING),
        ("only-write-batch", NOTHING),
        (
            "write-batch",
            "rsync would write every push to a batch file as well",
        ),
        (
            "read-batch",
            "rsync would apply a batch file instead of the watched tree",
        ),
        (
            "remove-source-files",
            "rsync would delete the watched files once sent (and the agent would then delete \
             them on the remotes)",
        ),
        // rsync's older name of the same option.
        (
            "remove-sent-files",
            "rsync would delete the watched files once sent (and the agent would then delete \
             them on the remotes)",
        ),
        ("existing", "rsync would leave every new file out"),
        // rsync's other name of --existing.
        (
            "ignore-non-existing",
            "rsync would leave every new file out",
        ),
        (
            "ignore-existing",
            "rsync would leave every changed file out",
        ),
        ("max-size", "rsync would leave larger files out"),
        ("min-size", "rsync would leave smaller files out"),
        (
            "files-from",
            "the agent names the paths of each push itself",
        ),
        ("server", "an rsync-internal option"),
        ("sender", "an rsync-internal option"),
        ("daemon", "it would start an rsync daemon instead of a push"),
    ];
    for w in words {
        if let Some(long) = w.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            if let Some((_, why)) = LONG.iter().find(|(l, _)| *l == name) {
                return Some((format!("--{name}"), why));
            }
            continue;
        }
        let Some(cluster) = w.strip_prefix('-') else {
            continue;
        };
        for c in cluster.chars() {
            if c == 'n' {
                return Some(("-n".to_owned(), NOTHING));
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
        Some(p) => params(
            cx,
            p.line,
            &format!(
                "<commonParams params=\"{}\">",
                p.params.as_deref().unwrap_or("")
            ),
            p.params.as_deref().unwrap_or(""),
        )?,
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
            // In ssh mode rsync is not given the file.
            let path = password_file(
                cx,
                a.line,
                &format!("<auth passwordfile=\"{file}\">"),
                file,
                !ssh_on,
            )?;
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
            Some(port_number(
                cx,
                p.port.as_deref(),
                p.line,
                "userDefinedPort",
            )?)
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
        Some(s) if cx.flag(s.start.as_deref(), s.line, "ssh", "start", false)? => {
            Some(default_ssh_command(Some(r)))
        }
        _ => None,
    };
    if let (Some(command), Some(s), true) = (&ssh, &r.ssh, check_ssh) {
        trusted_ssh(command)
            .map_err(|m| cx.err(s.line, format!("<ssh command=\"{command}\">: {m}")))?;
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

/// rsync options written as one attribute (`commonParams`, a remote's `params=`), split
/// into words like sh splits them (no expansion). `what` names the attribute with its
/// value, for messages. Refused: a word that is not an option, an option that takes
/// its value from the next word (which would be the agent's own `-R`), and one that
/// makes rsync follow the tree's links.
fn params(cx: &Ctx, line: Option<u32>, what: &str, text: &str) -> Result<Vec<String>, ConfigError> {
    let words = split_words(text).map_err(|m| cx.err(line, format!("{what}: {m}")))?;
    if let Some(bad) = words.iter().find(|w| !w.starts_with('-')) {
        return Err(cx.err(
            line,
            format!("{what}: \"{bad}\" is not an option (each word must start with -)"),
        ));
    }
    if let Some(opt) = words.iter().find(|w| takes_next_word(w)) {
        return Err(cx.err(
            line,
            format!(
                "{what}: {opt} takes its value from the next word, which would be the option \
                 the agent puts after commonParams (-R): write it with = (--exclude=PATTERN) \
                 or attached (-eCMD)"
            ),
        ));
    }
    if let Some((opt, why)) = breaks_the_mirror(&words) {
        return Err(cx.err(
            line,
            format!("{what}: {opt} breaks the mirror: {why}; drop {opt}"),
        ));
    }
    if let Some(opt) = follows_links(&words) {
        return Err(cx.err(
            line,
            format!(
                "{what}: {opt} makes rsync follow the links in the tree, so whoever can write \
                 there can have any file this user can read sent to the remotes; rsync reads \
                 the watch roots without following links and copies links as links: drop {opt}"
            ),
        ));
    }
    Ok(words)
}

/// A daemon password file (`<auth passwordfile>`, a remote's `passwordfile=`): it must
/// open, and with `judge` pass [`judge_password_file`] (rsync refuses it otherwise, at
/// every push). `what` names the attribute with its value, for messages.
fn password_file(
    cx: &Ctx,
    line: Option<u32>,
    what: &str,
    file: &str,
    judge: bool,
) -> Result<std::path::PathBuf, ConfigError> {
    let path = cx.path(file);
    check_password_file(cx, line, what, &path, judge)?;
    Ok(path)
}

/// [`password_file`] for a path already made absolute.
fn check_password_file(
    cx: &Ctx,
    line: Option<u32>,
    what: &str,
    path: &std::path::Path,
    judge: bool,
) -> Result<(), ConfigError> {
    let meta = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .and_then(|f| f.metadata());
    let meta = meta.map_err(|e| cx.err(line, format!("{what}: password file unreadable: {e}")))?;
    if judge {
        judge_password_file(fsafe::uid(), meta.uid(), meta.mode())
            .map_err(|m| cx.err(line, format!("{what}: {m}")))?;
    }
    Ok(())
}

/// The ssh command when none is given for a remote: `<ssh command>` if written (whether
/// `<ssh start>` is on or not), else `RSYNC_RSH`, else `ssh`.
fn default_ssh_command(r: Option<&raw::Rsync>) -> String {
    r.and_then(|r| r.ssh.as_ref())
        .and_then(|s| s.command.clone())
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            std::env::var("RSYNC_RSH")
                .ok()
                .filter(|c| !c.trim().is_empty())
        })
        .unwrap_or_else(|| "ssh".to_owned())
}

/// A login or daemon user written in a config: one word that no shell, ssh or rsync
/// reads as anything else.
fn plain_user(user: &str) -> bool {
    !user.is_empty()
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-$".contains(&b))
}

/// One `<remote>`'s own options: `None` when it sets none (it uses `<rsync>`'s, `global`,
/// as every sersync 2.5 config does), else `global` with what it sets put in its place.
/// `raw_rsync` is the `<rsync>` element `global` came from (the ssh command a remote
/// turning ssh on takes, and the `<auth>` line a password file it inherits is judged
/// at); `check_ssh` as for [`rsync`].
pub(super) fn remote(
    cx: &Ctx,
    global: &RsyncOptions,
    raw_rsync: Option<&raw::Rsync>,
    r: &raw::Remote,
    check_ssh: bool,
) -> Result<Option<RsyncOptions>, ConfigError> {
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim)
    }
    let (ssh, port, user, file, extra, timeout, command) = (
        set(&r.ssh),
        set(&r.port),
        set(&r.user),
        set(&r.password_file),
        set(&r.params),
        set(&r.timeout),
        set(&r.ssh_command),
    );
    if [ssh, port, user, file, extra, timeout, command]
        .iter()
        .all(Option::is_none)
    {
        return Ok(None);
    }
    let line = r.line;
    let ssh_on = match ssh {
        None => global.ssh.is_some(),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(cx.err(
                    line,
                    format!(
                        "<remote ssh=\"{v}\">: must be \"true\" (this remote over ssh, \
                         host:dir) or \"false\" (through an rsync daemon, host::module)"
                    ),
                ))
            }
        },
    };
    let mut opts = global.clone();
    if let Some(text) = extra {
        let words = params(cx, line, &format!("<remote params=\"{text}\">"), text)?;
        opts.params.extend(words);
    }
    if let Some(t) = timeout {
        opts.timeout = Some(cx.number(Some(t), line, "remote", "timeout")?);
    }
    let port: Option<u16> = match port {
        None => None,
        Some(p) => Some(port_number(cx, Some(p), line, "remote")?),
    };
    if let Some(u) = user {
        if !plain_user(u) {
            return Err(cx.err(
                line,
                format!(
                    "<remote user=\"{u}\">: a user name is letters, digits and ._-$, not \
                     beginning with \"-\""
                ),
            ));
        }
    }
    if ssh_on {
        if let Some(f) = file {
            return Err(cx.err(
                line,
                format!(
                    "<remote passwordfile=\"{f}\">: a password file is for an rsync daemon; \
                     over ssh the key authenticates: drop passwordfile= or write ssh=\"false\""
                ),
            ));
        }
        let mut cmd = match command {
            Some("") => {
                return Err(cx.err(
                    line,
                    "<remote sshCommand=\"\">: empty: write the remote shell, e.g. \
                     sshCommand=\"ssh -i /root/.ssh/id_sync\", or drop it",
                ))
            }
            Some(c) => c.to_owned(),
            None => match &global.ssh {
                Some(c) => c.clone(),
                None => default_ssh_command(raw_rsync),
            },
        };
        if check_ssh && (command.is_some() || global.ssh.is_none()) {
            trusted_ssh(&cmd)
                .map_err(|m| cx.err(line, format!("<remote sshCommand=\"{cmd}\">: {m}")))?;
        }
        // Added to the command, so that every ssh the agent runs for this remote (rsync's,
        // the remote `mv` of a rename, closing the shared connection) has them.
        if let Some(p) = port {
            cmd.push_str(&format!(" -p {p}"));
        }
        if let Some(u) = user {
            cmd.push_str(&format!(" -l {u}"));
        }
        opts.ssh = Some(cmd);
        // Over ssh the daemon's port and user do not apply.
        opts.port = None;
        opts.auth = None;
    } else {
        if let Some(c) = command {
            return Err(cx.err(
                line,
                format!(
                    "<remote sshCommand=\"{c}\">: this remote goes through an rsync daemon: \
                     write ssh=\"true\" with it, or drop sshCommand="
                ),
            ));
        }
        opts.ssh = None;
        if port.is_some() {
            opts.port = port;
        }
        let inherited = opts.auth.clone();
        let auth = match (user, file, inherited) {
            (None, None, auth) => {
                // `<auth>`'s file was not judged when `<rsync>` is in ssh mode; this
                // remote gives it to rsync.
                if let (Some((_, path)), Some(_)) = (&auth, &global.ssh) {
                    let a = raw_rsync.and_then(|r| r.auth.as_ref());
                    check_password_file(
                        cx,
                        a.and_then(|a| a.line),
                        &format!("<auth passwordfile=\"{}\">", path.display()),
                        path,
                        true,
                    )?;
                }
                auth
            }
            (Some(u), Some(f), _) => Some((
                u.to_owned(),
                password_file(cx, line, &format!("<remote passwordfile=\"{f}\">"), f, true)?,
            )),
            (Some(u), None, Some((_, path))) => {
                if global.ssh.is_some() {
                    check_password_file(
                        cx,
                        line,
                        &format!("<auth passwordfile=\"{}\">", path.display()),
                        &path,
                        true,
                    )?;
                }
                Some((u.to_owned(), path))
            }
            (None, Some(f), Some((u, _))) => Some((
                u,
                password_file(cx, line, &format!("<remote passwordfile=\"{f}\">"), f, true)?,
            )),
            (Some(u), None, None) => {
                return Err(cx.err(
                    line,
                    format!(
                        "<remote user=\"{u}\">: a daemon user needs its password file: add \
                         passwordfile=\"/etc/rsync.pass\" (mode 600), or <auth start=\"true\">"
                    ),
                ))
            }
            (None, Some(f), None) => {
                return Err(cx.err(
                    line,
                    format!(
                        "<remote passwordfile=\"{f}\">: a password file needs the daemon user \
                         it is for: add user=\"NAME\", or <auth start=\"true\" users=...>"
                    ),
                ))
            }
        };
        opts.auth = auth;
    }
    Ok(Some(opts))
}

/// The ssh command's program, found as exec finds it, must be one nobody but root or the
/// agent's user can change: rsync runs it as the agent's user. One that is not found is
/// refused: a user who can write where it would be found (a sticky directory such as
/// /tmp, a directory on PATH) could put one there later and have it run as the agent's
/// user. The message names no attribute.
fn trusted_ssh(command: &str) -> Result<(), String> {
    let Some(program) = split_words(command).ok().and_then(|w| w.into_iter().next()) else {
        return Ok(());
    };
    let Some(path) = fsafe::find_program(&program, std::env::var_os("PATH").as_deref()) else {
        return Err(format!(
            "program {program} not found or not executable (a missing program is refused: \
             whoever can write where it would be could put one there); write the path of an \
             installed ssh"
        ));
    };
    match fsafe::check_program(&path) {
        Ok(_) => Ok(()),
        Err(e) if fsafe::is_refused(&e) => Err(format!("refusing to run {}: {e}", path.display())),
        Err(e) => Err(format!("cannot check {}: {e}", path.display())),
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

/// A TCP port (`port=` of `<userDefinedPort>` or a `<remote>`): 1 to 65535, said so
/// when out of range.
fn port_number(
    cx: &Ctx,
    value: Option<&str>,
    line: Option<u32>,
    element: &str,
) -> Result<u16, ConfigError> {
    let n: u64 = cx.number(value, line, element, "port")?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(cx.err(
            line,
            format!("<{element} port=\"{n}\">: not a port (a port is 1 to 65535)"),
        )),
    }
}
