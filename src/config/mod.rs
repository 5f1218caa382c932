//! The validated configuration the rest of the program uses.
//!
//! `raw` mirrors the XML; this module turns it into ready values (anchored regexes,
//! numbers, paths that exist, remotes with their destination) and refuses anything an
//! operator would otherwise discover only when the first file fails to sync. Every error
//! names the file, the line and the element or attribute.
//!
//! The `<rsync>` element is made ready in `rsync.rs`; the rest here.

mod bigfiles;
mod brake;
pub mod cron;
mod filter;
pub mod plugins;
#[cfg(not(test))]
mod raw;
#[cfg(test)]
pub(crate) mod raw;
mod rsync;
pub mod rules;
pub mod schema;
pub mod source;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::bytes::Regex;

use bigfiles::big_files;
pub use bigfiles::{show_size, BigFiles};
use brake::delete_brake;
pub use brake::DeleteBrake;
use filter::{excludes, filter_rules};
pub use raw::ConfigError;
use rsync::rsync;
// The next two: names the tests in tests.rs call.
#[cfg(test)]
use crate::sys::shell::split_str as split_words;
#[cfg(test)]
pub(crate) use rsync::{breaks_the_mirror, follows_links, judge_password_file, keeps_hard_links};

/// Which inotify events become syncs (`<inotify>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    pub delete: bool,
    pub create_folder: bool,
    pub create_file: bool,
    pub close_write: bool,
    pub move_from: bool,
    pub move_to: bool,
    pub attrib: bool,
    pub modify: bool,
}

impl Default for Events {
    /// The original's defaults.
    fn default() -> Self {
        Events {
            delete: true,
            create_folder: true,
            create_file: false,
            close_write: true,
            move_from: true,
            move_to: true,
            attrib: false,
            modify: false,
        }
    }
}

/// Which kernel interface watches the roots (`<watcher backend>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// fanotify where it can watch a root, inotify otherwise.
    #[default]
    Auto,
    Inotify,
    Fanotify,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Inotify => "inotify",
            Backend::Fanotify => "fanotify",
        }
    }
}

/// One `<remote ip name>`: a daemon module or, in ssh mode, a remote directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub ip: String,
    pub name: String,
}

/// One `<localpath watch>` with its remotes.
#[derive(Debug, Clone)]
pub struct WatchRoot {
    /// Absolute, without a trailing slash.
    pub path: PathBuf,
    pub remotes: Vec<Remote>,
    /// Per remote (same order), its own options when it sets any (`ssh=`, `port=`,
    /// `user=`, `passwordfile=`, `params=`, `timeout=`, `sshCommand=`): `<rsync>`'s
    /// with those put in their place. `None`: it uses `<rsync>`'s
    /// ([`Config::rsync_for`]).
    pub own: Vec<Option<RsyncOptions>>,
}

/// How rsync reaches the remotes (`<rsync>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncOptions {
    /// `commonParams`, split like a shell would split them (no expansion).
    pub params: Vec<String>,
    /// Auth user and password file, when `<auth start="true">`.
    pub auth: Option<(String, PathBuf)>,
    pub port: Option<u16>,
    pub timeout: Option<u32>,
    /// The remote shell command in ssh mode; `None` is daemon mode.
    pub ssh: Option<String>,
    /// Most paths one rsync call carries; 1 is the original one-call-per-path behaviour.
    pub batch: usize,
}

/// When full syncs run (`<crontab schedule>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(Duration),
    Cron(String),
}

#[derive(Debug, Clone)]
pub struct Crontab {
    pub schedule: Schedule,
    /// rsync glob patterns passed as `--exclude` to the full sync.
    pub excludes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub debug: bool,
    /// Anchored exclude regexes from `<filter>` when it is on; empty otherwise.
    pub excludes: Vec<Regex>,
    /// `<filter>`'s `<rule>` and `<rules file>` in order, rsync's filter rules, when it is
    /// on (after the regexes: a path they exclude stays out whatever the rules say).
    pub rules: rules::Rules,
    pub events: Events,
    /// `<watcher backend>`; `auto` when absent.
    pub watcher: Backend,
    pub roots: Vec<WatchRoot>,
    pub rsync: RsyncOptions,
    pub fail_log: PathBuf,
    pub replay_every: Duration,
    pub crontab: Option<Crontab>,
    /// `<verify start="true" schedule>`: when the agent compares its remotes with the
    /// source (and repairs what differs). The original's parser ignores the element.
    pub verify: Option<Schedule>,
    /// `<deleteBrake>`: the brake on mass deletes; `None` when `start="false"`.
    pub delete_brake: Option<DeleteBrake>,
    /// `<bigFiles>`: how big files are pushed; `None` when `start="false"`.
    pub big_files: Option<BigFiles>,
    /// `<host hostip port start="true">`: where the status endpoint listens (off unless
    /// start="true"; the original's <host> had no switch and did nothing).
    pub host: Option<(String, u16)>,
    /// `<host hostip>` while the endpoint is off: unused, but `-t` says when it does not
    /// resolve (it would fail the day the endpoint is switched on).
    pub host_unused: Option<String>,
    /// The `<plugin>` blocks and the one switched on by `<sersync><plugin start="true">`.
    pub plugins: plugins::Plugins,
}

impl Config {
    /// The options a push to remote `i` of `root` uses: its own, else `<rsync>`'s.
    pub fn rsync_for<'a>(&'a self, root: &'a WatchRoot, i: usize) -> &'a RsyncOptions {
        root.own
            .get(i)
            .and_then(Option::as_ref)
            .unwrap_or(&self.rsync)
    }

    /// Whether any remote's push keeps hard links (`-H` in its params).
    pub fn keeps_hard_links(&self) -> bool {
        self.roots.iter().any(|root| {
            (0..root.remotes.len())
                .any(|i| rsync::keeps_hard_links(&self.rsync_for(root, i).params))
        })
    }

    /// The distinct ssh commands of the remotes that go over ssh, in config order.
    pub fn ssh_commands(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for root in &self.roots {
            for i in 0..root.remotes.len() {
                let Some(cmd) = self.rsync_for(root, i).ssh.as_deref() else {
                    continue;
                };
                if !out.contains(&cmd) {
                    out.push(cmd);
                }
            }
        }
        out
    }
}

/// Most rules one filter may have: each exclude is tested on every change (and each
/// `<crontabfilter>` rule is one rsync argument), so a config of a hundred thousand
/// would stall the agent; real ones have a handful.
pub const MAX_FILTER_RULES: usize = 1000;

/// Most remotes in one config, all watch roots together: each is a queue, workers and
/// an rsync per change; a config of a hundred thousand would stall the start.
pub const MAX_REMOTES: usize = 1000;

/// Most compiled size of one filter expression (the regex crate's `size_limit`).
const MAX_REGEX_BYTES: usize = 1 << 20;

/// Default most paths in one rsync call.
pub const DEFAULT_BATCH: usize = 5000;

/// Where values come from (file, encoding), and the checks every element shares: the
/// plugin blocks use it too.
pub(crate) struct Ctx<'a> {
    file: &'a str,
    latin1: bool,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(file: &'a str, latin1: bool) -> Self {
        Ctx { file, latin1 }
    }

    /// The config file's name, for messages.
    pub(crate) fn file(&self) -> &'a str {
        self.file
    }

    pub(crate) fn err(&self, line: Option<u32>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn switch(
        &self,
        s: Option<&raw::Switch>,
        element: &str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match s {
            None => Ok(default),
            Some(s) => self.flag(s.start.as_deref(), s.line, element, "start", default),
        }
    }

    pub(crate) fn flag(
        &self,
        value: Option<&str>,
        line: Option<u32>,
        element: &str,
        attr: &str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(v) => Err(self.err(
                line,
                format!("<{element} {attr}=\"{v}\">: must be \"true\" or \"false\""),
            )),
        }
    }

    pub(crate) fn number<T: std::str::FromStr>(
        &self,
        value: Option<&str>,
        line: Option<u32>,
        element: &str,
        attr: &str,
    ) -> Result<T, ConfigError> {
        let v = value.ok_or_else(|| self.err(line, format!("<{element}>: missing {attr}=")))?;
        v.trim().parse().map_err(|_| {
            self.err(
                line,
                format!("<{element} {attr}=\"{v}\">: not a valid number"),
            )
        })
    }

    /// A filter (`<filter>`, `<crontabfilter>`, a plugin's `<filter>`) has at most
    /// [`MAX_FILTER_RULES`] rules.
    pub(crate) fn rule_count(&self, f: &raw::Filter, element: &str) -> Result<(), ConfigError> {
        let n = f.exclude.len() + f.include.len();
        if n > MAX_FILTER_RULES {
            return Err(self.err(
                f.line,
                format!("<{element}>: {n} rules, more than the {MAX_FILTER_RULES} allowed"),
            ));
        }
        Ok(())
    }

    /// A text's bytes: Latin-1 configs give back the bytes the file held.
    pub(crate) fn bytes(&self, value: &str) -> Vec<u8> {
        if self.latin1 && value.chars().all(|c| (c as u32) < 256) {
            value.chars().map(|c| c as u32 as u8).collect()
        } else {
            value.as_bytes().to_vec()
        }
    }

    /// A path attribute: Latin-1 configs give back the bytes the original would have used.
    /// Relative paths are made absolute now: a daemon later runs from `/`.
    pub(crate) fn path(&self, value: &str) -> PathBuf {
        let path = if self.latin1 && value.chars().all(|c| (c as u32) < 256) {
            PathBuf::from(OsString::from_vec(
                value.chars().map(|c| c as u32 as u8).collect(),
            ))
        } else {
            PathBuf::from(value)
        };
        let path: PathBuf = path.components().collect();
        match std::env::current_dir() {
            Ok(cwd) if path.is_relative() => cwd.join(path),
            _ => path,
        }
    }
}

/// Loads and validates a config file.
/// Only a regular file of at most [`source::MAX_CONFIG_BYTES`] is read.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    parse(file, &source::read(file)?)
}

/// [`load`] for the modes that only talk to a running instance (`--status`,
/// `--wait-synced`): a watch root that is missing right now (renamed away, a mount not
/// there) is not an error, since that is when an operator asks.
pub fn load_for_client(file: &Path) -> Result<Config, ConfigError> {
    parse_with(file, &source::read(file)?, false)
}

/// Validates config bytes (the file name is only for messages and relative paths).
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    parse_with(file, bytes, true)
}

/// [`parse`]; `roots_must_exist`: a watch root that is not a directory now is an error.
fn parse_with(file: &Path, bytes: &[u8], roots_must_exist: bool) -> Result<Config, ConfigError> {
    let doc = raw::parse(file, bytes)?;
    let name = file.display().to_string();
    let cx = Ctx::new(&name, doc.latin1);
    let head = doc.head;
    let sersync = head
        .sersync
        .as_ref()
        .ok_or_else(|| cx.err(None, "missing <sersync> element"))?;

    let debug = cx.switch(head.debug.as_ref(), "debug", false)?;
    let excludes = excludes(&cx, head.filter.as_ref())?;
    let rules = filter_rules(&cx, head.filter.as_ref())?;
    let events = events(&cx, head.inotify.as_ref())?;
    let watcher = watcher(&cx, head.watcher.as_ref())?;
    let rsync = rsync(&cx, sersync.rsync.as_ref(), roots_must_exist)?;
    let roots = roots(&cx, sersync, roots_must_exist, &rsync)?;
    let plugins = plugins::Plugins::from_raw(&cx, &head)?;

    let (fail_log, replay_every) = match &sersync.fail_log {
        None => (
            PathBuf::from("/tmp/rsync_fail_log.sh"),
            Duration::from_secs(3600),
        ),
        Some(f) => {
            let path = match f.path.as_deref().map(str::trim) {
                None | Some("") => {
                    return Err(cx.err(f.line, "<failLog>: missing path="));
                }
                Some(p) => cx.path(p),
            };
            // Failures must have somewhere to go: refuse now rather than lose them later.
            match path.parent().map(std::fs::metadata) {
                Some(Ok(m)) if m.is_dir() => {}
                _ => {
                    return Err(cx.err(
                        f.line,
                        format!(
                            "<failLog path=\"{}\">: its directory does not exist",
                            path.display()
                        ),
                    ))
                }
            }
            if path.is_dir() {
                return Err(cx.err(
                    f.line,
                    format!("<failLog path=\"{}\">: is a directory", path.display()),
                ));
            }
            let minutes: u64 = match f.time_to_execute {
                None => 60,
                Some(_) => cx.number(
                    f.time_to_execute.as_deref(),
                    f.line,
                    "failLog",
                    "timeToExecute",
                )?,
            };
            if minutes == 0 {
                return Err(cx.err(
                    f.line,
                    "<failLog timeToExecute=\"0\">: must be at least 1 minute",
                ));
            }
            if minutes > MAX_MINUTES {
                return Err(cx.err(
                    f.line,
                    format!(
                        "<failLog timeToExecute=\"{minutes}\">: at most {MAX_MINUTES} minutes \
                         (one year)"
                    ),
                ));
            }
            (path, Duration::from_secs(minutes * 60))
        }
    };
    let crontab = crontab(&cx, sersync.crontab.as_ref())?;
    let verify = match &sersync.verify {
        Some(v) if cx.flag(v.start.as_deref(), v.line, "verify", "start", false)? => {
            Some(schedule(&cx, v.schedule.as_deref(), v.line, "verify")?)
        }
        _ => None,
    };
    let delete_brake = delete_brake(&cx, sersync.delete_brake.as_ref())?;
    let big_files = big_files(&cx, sersync.big_files.as_ref())?;
    let host = match &head.host {
        Some(h) if cx.flag(h.start.as_deref(), h.line, "host", "start", false)? => {
            let ip = match h.hostip.as_deref() {
                None => "127.0.0.1".to_owned(),
                Some(v) => status_host(v)
                    .map_err(|m| cx.err(h.line, format!("<host hostip=\"{v}\">: {m}")))?,
            };
            let port: u16 = match h.port {
                None => 8008,
                Some(_) => cx.number(h.port.as_deref(), h.line, "host", "port")?,
            };
            Some((ip, port))
        }
        _ => None,
    };
    let host_unused = match (&host, &head.host) {
        (None, Some(h)) => h.hostip.clone(),
        _ => None,
    };
    Ok(Config {
        file: file.to_path_buf(),
        debug,
        excludes,
        rules,
        events,
        watcher,
        roots,
        rsync,
        fail_log,
        replay_every,
        crontab,
        verify,
        delete_brake,
        big_files,
        host,
        host_unused,
        plugins,
    })
}

/// Compiles a filter expression that must match the whole of a path, as bytes: a file
/// name may hold any byte but `/` and NUL, so `.` matches any byte (newline and bytes
/// that are not UTF-8 included), classes such as `\w`, `\d` and `\s` are ASCII, and a
/// non-ASCII character written in the expression matches its UTF-8 bytes. Unicode
/// classes (`\pL`) and non-ASCII characters inside `[...]` are refused.
pub fn path_regex(expr: &str) -> Result<Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(&format!("^(?:{expr})$"))
        .unicode(false)
        .dot_matches_new_line(true)
        .size_limit(MAX_REGEX_BYTES)
        .build()
}

fn events(cx: &Ctx, inotify: Option<&raw::Inotify>) -> Result<Events, ConfigError> {
    let d = Events::default();
    let Some(i) = inotify else {
        return Ok(d);
    };
    Ok(Events {
        delete: cx.switch(i.delete.as_ref(), "delete", d.delete)?,
        create_folder: cx.switch(i.create_folder.as_ref(), "createFolder", d.create_folder)?,
        create_file: cx.switch(i.create_file.as_ref(), "createFile", d.create_file)?,
        close_write: cx.switch(i.close_write.as_ref(), "closeWrite", d.close_write)?,
        move_from: cx.switch(i.move_from.as_ref(), "moveFrom", d.move_from)?,
        move_to: cx.switch(i.move_to.as_ref(), "moveTo", d.move_to)?,
        attrib: cx.switch(i.attrib.as_ref(), "attrib", d.attrib)?,
        modify: cx.switch(i.modify.as_ref(), "modify", d.modify)?,
    })
}

fn watcher(cx: &Ctx, w: Option<&raw::Watcher>) -> Result<Backend, ConfigError> {
    let Some(w) = w else {
        return Ok(Backend::Auto);
    };
    match w.backend.as_deref().map(str::trim) {
        None | Some("auto") => Ok(Backend::Auto),
        Some("inotify") => Ok(Backend::Inotify),
        Some("fanotify") => Ok(Backend::Fanotify),
        Some(other) => Err(cx.err(
            w.line,
            format!("<watcher backend=\"{other}\">: must be \"auto\", \"inotify\" or \"fanotify\""),
        )),
    }
}

fn roots(
    cx: &Ctx,
    sersync: &raw::Sersync,
    roots_must_exist: bool,
    global: &RsyncOptions,
) -> Result<Vec<WatchRoot>, ConfigError> {
    if sersync.localpath.is_empty() {
        return Err(cx.err(
            sersync.line,
            "<sersync>: missing <localpath watch=...> element",
        ));
    }
    let mut roots: Vec<WatchRoot> = Vec::new();
    // Each root's text and line, for messages.
    let mut watches: Vec<(&str, Option<u32>)> = Vec::new();
    let mut remote_count = 0usize;
    for lp in &sersync.localpath {
        let watch = lp
            .watch
            .as_deref()
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| cx.err(lp.line, "<localpath>: missing watch="))?;
        let path = normalise_watch(&cx.path(watch));
        if !path.is_absolute() {
            return Err(cx.err(
                lp.line,
                format!("<localpath watch=\"{watch}\">: must be an absolute path"),
            ));
        }
        match std::fs::metadata(&path) {
            _ if !roots_must_exist => {}
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(cx.err(
                    lp.line,
                    format!("<localpath watch=\"{watch}\">: not a directory"),
                ))
            }
            Err(e) => {
                return Err(cx.err(
                    lp.line,
                    format!("<localpath watch=\"{watch}\">: watch directory unusable: {e}"),
                ))
            }
        }
        if lp.remote.is_empty() {
            return Err(cx.err(
                lp.line,
                format!("<localpath watch=\"{watch}\">: no <remote ip=... name=...> inside"),
            ));
        }
        remote_count += lp.remote.len();
        if remote_count > MAX_REMOTES {
            return Err(cx.err(
                lp.line,
                format!(
                    "<localpath watch=\"{watch}\">: more than {MAX_REMOTES} <remote> elements \
                     in all"
                ),
            ));
        }
        let mut remotes: Vec<Remote> = Vec::new();
        let mut own: Vec<Option<RsyncOptions>> = Vec::new();
        // Each remote's first line, to find a repeated one in linear time.
        let mut lines: HashMap<(&str, &str), Option<u32>> = HashMap::new();
        for r in &lp.remote {
            let ip =
                r.ip.as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| cx.err(r.line, "<remote>: missing ip="))?;
            let name = r
                .name
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| cx.err(r.line, "<remote>: missing name="))?;
            if ip.starts_with('-') || ip.contains(['/', ' ', ':']) && !ip.starts_with('[') {
                return Err(cx.err(
                    r.line,
                    format!("<remote ip=\"{ip}\">: not a host name or address"),
                ));
            }
            if name.starts_with('-') {
                return Err(cx.err(
                    r.line,
                    format!(
                        "<remote name=\"{name}\">: a module or directory name must not begin \
                         with \"-\": the remote rsync would take it for an option"
                    ),
                ));
            }
            if let Some(first) = lines.get(&(ip, name)) {
                let first = first.map_or_else(|| "?".to_owned(), |l| l.to_string());
                return Err(cx.err(
                    r.line,
                    format!(
                        "<remote ip=\"{ip}\" name=\"{name}\">: the same remote as line {first} \
                         in <localpath watch=\"{watch}\">; remove one of them"
                    ),
                ));
            }
            own.push(rsync::remote(
                cx,
                global,
                sersync.rsync.as_ref(),
                r,
                roots_must_exist,
            )?);
            remotes.push(Remote {
                ip: ip.to_owned(),
                name: name.to_owned(),
            });
            lines.insert((ip, name), r.line);
        }
        roots.push(WatchRoot { path, remotes, own });
        watches.push((watch, lp.line));
    }
    if let Some((later, earlier)) = overlap(&roots) {
        let (watch, line) = watches[later];
        return Err(cx.err(
            line,
            format!(
                "<localpath watch=\"{watch}\">: overlaps the watch {}",
                roots[earlier].path.display()
            ),
        ));
    }
    Ok(roots)
}

/// Two watch roots of which one is inside the other (or the same), as (the later one's
/// index, the earlier one's), the first such later one in the file; in O(n log n).
/// Sorted by components, a root's descendants directly follow it, so if any two roots
/// overlap, two neighbours do.
fn overlap(roots: &[WatchRoot]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..roots.len()).collect();
    order.sort_by(|&a, &b| roots[a].path.cmp(&roots[b].path).then(a.cmp(&b)));
    order
        .windows(2)
        .filter(|w| roots[w[1]].path.starts_with(&roots[w[0]].path))
        .map(|w| (w[0].max(w[1]), w[0].min(w[1])))
        .min()
}

/// `/opt/tongbu/` and `/opt/tongbu` are the same watch.
fn normalise_watch(path: &Path) -> PathBuf {
    path.components().collect()
}

/// A `<host hostip>`: an IPv4 or IPv6 address (bare, `::1`, or in brackets, `[::1]`) or
/// a host name, given back without brackets (as a socket address takes it). Whether a
/// name resolves and the address is this host's is for `-t` to find out: start-up
/// never waits on the network.
fn status_host(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("empty: give an address such as 127.0.0.1 or ::1".into());
    }
    if let Some(inner) = v.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(a) if a.parse::<std::net::Ipv6Addr>().is_ok() => Ok(a.to_owned()),
            _ => Err(
                "brackets hold an IPv6 address and nothing else, as in [::1] (the port \
                      goes in port=)"
                    .into(),
            ),
        };
    }
    if v.parse::<std::net::IpAddr>().is_ok() {
        return Ok(v.to_owned());
    }
    if v.contains(':') {
        return Err(
            "not an address: an IPv6 address is written ::1 or [::1], and the port \
                    goes in port="
                .into(),
        );
    }
    let name_ok = v.strip_suffix('.').unwrap_or(v).split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !name_ok {
        return Err("not a host name or address".into());
    }
    Ok(v.to_owned())
}

/// `host:port` for messages and URLs, with an IPv6 address in brackets (`[::1]:8008`).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The longest period in minutes (`timeToExecute`, a numeric `<crontab schedule>`):
/// one year. Anything longer means "never" in practice and overflows the clock.
pub const MAX_MINUTES: u64 = 525_600;

/// A `schedule=` attribute: minutes, or a cron expression.
fn schedule(
    cx: &Ctx,
    text: Option<&str>,
    line: Option<u32>,
    element: &str,
) -> Result<Schedule, ConfigError> {
    let text = text
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| cx.err(line, format!("<{element}>: missing schedule=")))?;
    Ok(if text.chars().all(|ch| ch.is_ascii_digit()) {
        let minutes: u64 = cx.number(Some(text), line, element, "schedule")?;
        if minutes == 0 {
            return Err(cx.err(
                line,
                format!("<{element} schedule=\"0\">: must be at least 1 minute"),
            ));
        }
        if minutes > MAX_MINUTES {
            return Err(cx.err(
                line,
                format!(
                    "<{element} schedule=\"{minutes}\">: at most {MAX_MINUTES} minutes (one year)"
                ),
            ));
        }
        Schedule::Every(Duration::from_secs(minutes * 60))
    } else {
        cron::parse_cron(text)
            .map_err(|m| cx.err(line, format!("<{element} schedule=\"{text}\">: {m}")))?;
        Schedule::Cron(text.to_owned())
    })
}

fn crontab(cx: &Ctx, c: Option<&raw::Crontab>) -> Result<Option<Crontab>, ConfigError> {
    let Some(c) = c else { return Ok(None) };
    if !cx.flag(c.start.as_deref(), c.line, "crontab", "start", false)? {
        return Ok(None);
    }
    let schedule = schedule(cx, c.schedule.as_deref(), c.line, "crontab")?;
    let mut excludes = Vec::new();
    if let Some(f) = &c.crontab_filter {
        if cx.flag(f.start.as_deref(), f.line, "crontabfilter", "start", false)? {
            cx.rule_count(f, "crontabfilter")?;
            for e in &f.exclude {
                let expr = e
                    .expression
                    .as_deref()
                    .ok_or_else(|| cx.err(e.line, "<exclude>: missing expression="))?;
                excludes.push(expr.to_owned());
            }
        }
    }
    Ok(Some(Crontab { schedule, excludes }))
}

#[cfg(test)]
pub(crate) mod tests;
