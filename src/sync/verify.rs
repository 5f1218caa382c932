//! Verification: is a remote equal to the source? Answered without changing anything,
//! by the full sync's own rsync call ([`Target::argv`] with [`Job::Full`]: the same
//! options, `<filter>` excludes, temp-name globs, crontabfilter globs and, with deletes
//! on, `--delete`) plus `--dry-run --itemize-changes`. Files are compared as rsync's
//! quick check does, by size and mtime (never `--ignore-times`), or by content with
//! `--checksum`.
//!
//! rsync's itemized lines are sorted into three kinds ([`parse_line`]): a file or
//! directory the remote does not have (`+++++++++`: missing), one that differs
//! (content, size, mtime of a file, type, permissions: differing), and one only the
//! remote has (`*deleting`, only reported with deletes on: extra). A directory whose
//! only difference is its mtime is not counted: a directory's mtime moves whenever an
//! entry inside it is added or removed, live pushes do not carry it, and no content
//! differs.
//!
//! [`Verifier`] runs this on the agent's `<verify>` schedule on a thread of its own (the
//! scheduler only starts it), one remote after the other, keeps the last result per
//! remote for status and metrics, and repairs a drift by queueing the differing paths
//! like any change (a path gone from the source is a delete). A drift is looked at a
//! second time once the remote's queue is idle, and only paths that differ both times
//! count: a change that was being pushed during the first look is not a drift.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::job::{Job, RemoteId};
use super::rsync::{self, Target};
use super::workers::Mirror;
use crate::sys::{memfile, Stop};

/// How a path differs on a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Both have it; content, size, mtime, type or permissions differ.
    Differing,
    /// The source has it, the remote does not.
    Missing,
    /// The remote has it, the source does not (reported with deletes on).
    Extra,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Differing => "differs",
            Kind::Missing => "missing",
            Kind::Extra => "extra",
        }
    }
}

/// What one remote differs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    pub differing: usize,
    pub missing: usize,
    pub extra: usize,
    /// Every differing path, relative to the watch root, in rsync's order.
    pub paths: Vec<(Kind, PathBuf)>,
    /// What the tree holds that is never mirrored, one line each for the report (paths
    /// too long for rsync: how many, one of them shortened). Not a drift: it says why.
    pub unmirrorable: Vec<String>,
}

impl Drift {
    pub fn is_level(&self) -> bool {
        self.paths.is_empty()
    }

    /// The first `n` paths as `kind path`, for logs and reports.
    pub fn first(&self, n: usize) -> Vec<String> {
        self.paths
            .iter()
            .take(n)
            .map(|(k, p)| format!("{} {}", k.as_str(), p.display()))
            .collect()
    }

    fn add(&mut self, kind: Kind, path: PathBuf) {
        match kind {
            Kind::Differing => self.differing += 1,
            Kind::Missing => self.missing += 1,
            Kind::Extra => self.extra += 1,
        }
        self.paths.push((kind, path));
    }
}

/// One line of rsync's `--itemize-changes` output (`%i %n%L`): what it says about one
/// path, or `None` for a line that reports no difference (or is not an item at all,
/// such as rsync's `-v` chatter).
pub fn parse_line(line: &[u8]) -> Option<(Kind, PathBuf)> {
    // `*deleting` is padded to the 11 columns of the change string, then one space.
    if let Some(rest) = line.strip_prefix(b"*deleting  ") {
        let name = rest.strip_prefix(b" ")?;
        return path_of(name, false).map(|p| (Kind::Extra, p));
    }
    if line.len() < 13 || line[11] != b' ' {
        return None;
    }
    let (update, file_type, flags) = (line[0], line[1], &line[2..11]);
    if !matches!(update, b'<' | b'>' | b'c' | b'h' | b'.')
        || !matches!(file_type, b'f' | b'd' | b'L' | b'D' | b'S')
    {
        return None;
    }
    let path = path_of(&line[12..], file_type == b'L')?;
    if flags.iter().all(|&b| b == b'+') {
        return Some((Kind::Missing, path));
    }
    let quiet = |b: &u8| matches!(b, b'.' | b' ');
    if update == b'.' && flags.iter().all(quiet) {
        return None;
    }
    if update == b'.' && file_type == b'd' && flags.iter().all(|b| quiet(b) || *b == b't') {
        return None;
    }
    Some((Kind::Differing, path))
}

/// The relative path of an item's name: a symlink's ` -> target` and a directory's
/// trailing `/` dropped, rsync's `\#ooo` escapes of unprintable bytes undone.
fn path_of(name: &[u8], link: bool) -> Option<PathBuf> {
    let name = match (link, find(name, b" -> ")) {
        (true, Some(at)) => &name[..at],
        _ => name,
    };
    let name = name.strip_suffix(b"/").unwrap_or(name);
    let name = name.strip_prefix(b"./").unwrap_or(name);
    if name.is_empty() {
        return Some(PathBuf::from("."));
    }
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let octal = |b: u8| (b'0'..=b'7').contains(&b);
        if name[i] == b'\\'
            && name.get(i + 1) == Some(&b'#')
            && name.len() >= i + 5
            && name[i + 2..i + 5].iter().all(|&b| octal(b))
        {
            let v = name[i + 2..i + 5]
                .iter()
                .fold(0u32, |a, &b| a * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(v).ok()?);
            i += 5;
        } else {
            out.push(name[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&out)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Everything rsync printed, sorted into a [`Drift`].
pub fn parse(output: &[u8]) -> Drift {
    let mut drift = Drift::default();
    for line in output.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some((kind, path)) = parse_line(line) {
            drift.add(kind, path);
        }
    }
    drift
}

/// The verify call for a target: the full sync's argument vector and stdin, with
/// `--dry-run --itemize-changes` (and `--checksum`) before the source and destination.
#[cfg(test)]
pub fn argv(target: &Target, excluded: &[PathBuf], checksum: bool) -> (Vec<OsString>, Vec<u8>) {
    argv_of(target, &Job::Full, excluded, checksum)
}

/// [`argv`] for a job: the full sync, or paths (the entries of a directory left out
/// for a name rsync cannot build, see `watch::left_out`).
fn argv_of(
    target: &Target,
    job: &Job,
    excluded: &[PathBuf],
    checksum: bool,
) -> (Vec<OsString>, Vec<u8>) {
    let (mut argv, stdin) = match job {
        Job::Full => target.argv(job, excluded),
        _ => target.quick_argv(job, excluded),
    };
    let mut extra: Vec<OsString> = vec![
        "--dry-run".into(),
        "--itemize-changes".into(),
        // The item format itself, whatever commonParams say about output.
        "--out-format=%i %n%L".into(),
    ];
    if checksum {
        extra.push("--checksum".into());
    }
    let at = match job {
        Job::Full => argv.len().saturating_sub(2),
        _ => 0,
    };
    argv.splice(at..at, extra);
    (argv, stdin)
}

/// Paths too long for rsync a verification leaves out at most.
const TOO_LONG_LEFT_OUT: usize = 10_000;

/// Most bytes of rsync's itemized output read (a drift of millions of paths).
const OUTPUT_KEEP: usize = 256 << 20;

/// Compares one remote with its watch root; nothing is changed on either side.
/// `Err` says why the remote could not be checked (the callers only report it).
/// `excludes`: the root's, to name the files never mirrored for their temp names
/// ([`crate::watch::temp_named`]).
pub fn check(
    target: &Target,
    excluded: &[PathBuf],
    excludes: &crate::filter::Excludes,
    checksum: bool,
) -> anyhow::Result<Drift> {
    if !target.root.is_dir() {
        anyhow::bail!(
            "the watch root {} is not a directory; nothing compared",
            target.root.display()
        );
    }
    // Paths too long for rsync are left out as a full sync leaves them out (rsync
    // would fail the whole comparison, exit 23), and named.
    let long = crate::watch::too_long_below(&target.root, TOO_LONG_LEFT_OUT);
    let out = crate::watch::left_out(&long);
    let mut without = excluded.to_vec();
    without.extend(out.excluded.iter().cloned());
    let run = |job: &Job| -> anyhow::Result<Drift> {
        let (argv, stdin) = argv_of(target, job, &without, checksum);
        let (status, out, err) =
            run_capturing(&target.root, &argv, &stdin).map_err(anyhow::Error::msg)?;
        if !rsync::is_success(status) {
            // rsync's and ssh's own words, with a hint for the common causes.
            return Err(anyhow::Error::msg(
                super::cause::Cause::of(status, &err).text,
            ));
        }
        Ok(parse(&out))
    };
    let mut drift = run(&Job::Full)?;
    for entries in super::workers::relisted(&target.root, &out, excluded) {
        for part in rsync::split_for_args(&entries, rsync::ARGS_BUDGET) {
            for (kind, path) in run(&Job::Paths(part.to_vec()))?.paths {
                drift.add(kind, path);
            }
        }
    }
    if let Some(first) = long.first() {
        drift.unmirrorable.push(format!(
            "{}{} path(s) not mirrorable: {} (e.g. {})",
            long.len(),
            if long.len() >= TOO_LONG_LEFT_OUT {
                "+"
            } else {
                ""
            },
            crate::watch::too_long_reason(),
            crate::watch::shorten(first)
        ));
    }
    if let Some(line) = crate::watch::temp_named(&target.root, excludes).line() {
        drift.unmirrorable.push(line);
    }
    Ok(drift)
}

/// Runs `rsync argv` in `cwd` (no shell, in its view that follows no link), stdout and
/// stderr into anonymous files.
fn run_capturing(
    cwd: &Path,
    argv: &[OsString],
    stdin: &[u8],
) -> Result<(i32, Vec<u8>, String), String> {
    let file = |name: &std::ffi::CStr| {
        memfile::create(name).map_err(|e| format!("cannot create a file for rsync's output: {e}"))
    };
    let (mut out, err) = (file(c"verify-stdout")?, file(c"verify-stderr")?);
    let input = if stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::from(
            memfile::with_contents(c"verify-stdin", stdin)
                .map_err(|e| format!("cannot create a file for rsync's stdin: {e}"))?,
        )
    };
    let dup = |f: &std::fs::File| {
        f.try_clone()
            .map_err(|e| format!("cannot create a file for rsync's output: {e}"))
    };
    // Confined as every push: a dry run reads the tree too.
    let mut child = rsync::command_in(cwd)
        .map_err(|e| format!("cannot run rsync in {}: {e}", cwd.display()))?
        .args(argv)
        .stdin(input)
        .stdout(dup(&out)?)
        .stderr(dup(&err)?)
        .spawn()
        .map_err(|e| format!("cannot run rsync in {}: {e}", cwd.display()))?;
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for rsync: {e}"))?
        .code()
        .unwrap_or(-1);
    let mut bytes = Vec::new();
    out.seek(SeekFrom::Start(0))
        .and_then(|_| (&mut out).take(OUTPUT_KEEP as u64).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read rsync's output: {e}"))?;
    let kept = rsync::condense(&memfile::tail(&err, rsync::STDERR_READ));
    Ok((status, bytes, kept))
}

/// The last verification of one remote, for status and metrics.
#[derive(Debug, Clone)]
pub struct Verified {
    pub remote: String,
    pub root: PathBuf,
    pub at: SystemTime,
    pub differing: usize,
    pub missing: usize,
    pub extra: usize,
    /// The first few paths (`kind path`).
    pub first: Vec<String>,
    /// Why it could not be checked.
    pub error: Option<String>,
}

impl Verified {
    /// Paths that were not level (all three kinds).
    pub fn total(&self) -> usize {
        self.differing + self.missing + self.extra
    }
}

/// Paths named in logs and status per remote.
pub const PATHS_SHOWN: usize = 5;

/// How long a second look waits for the remote's pushes to settle.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(30);

/// A drift larger than this is repaired by a full sync instead of path by path.
const REPAIR_PATHS_MAX: usize = 100_000;

/// The agent's scheduled verification (`<verify>`).
pub struct Verifier {
    mirror: Arc<Mirror>,
    results: Mutex<Vec<Option<Verified>>>,
    running: Arc<AtomicBool>,
}

impl Verifier {
    pub fn new(mirror: Arc<Mirror>) -> Verifier {
        let n = mirror.targets().len();
        Verifier {
            mirror,
            results: Mutex::new(vec![None; n]),
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The last result per remote (those verified at least once).
    pub fn results(&self) -> Vec<Verified> {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Starts a verification of every remote on a thread of its own, unless one is
    /// still running; returns at once.
    pub fn start(self: &Arc<Self>, stop: &Arc<Stop>) {
        if self.running.swap(true, Ordering::AcqRel) {
            log::warn!("verify: the previous verification is still running; this one is skipped");
            return;
        }
        let (me, stop) = (Arc::clone(self), Arc::clone(stop));
        let spawned = std::thread::Builder::new()
            .name("verify".into())
            .spawn(move || {
                me.run(&stop);
                me.running.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            self.running.store(false, Ordering::Release);
            log::error!("verify: cannot start its thread ({e}); tried again at the next time");
        }
    }

    /// Verifies every remote, one after the other, and queues what differs.
    fn run(&self, stop: &Stop) {
        let stopped = || stop.wait_timeout(std::time::Duration::ZERO);
        for (i, target) in self.mirror.targets().iter().enumerate() {
            if stopped() {
                return;
            }
            let t = RemoteId(i);
            let label = target.label();
            let result = self.check_confirmed(t, stop);
            let mut verified = Verified {
                remote: label.clone(),
                root: target.root.clone(),
                at: SystemTime::now(),
                differing: 0,
                missing: 0,
                extra: 0,
                first: Vec::new(),
                error: None,
            };
            if let Ok(drift) = &result {
                for line in &drift.unmirrorable {
                    log::warn!(remote = label.as_str(); "verify: {label}: {}: {line}", target.root.display());
                }
            }
            match result {
                Err(e) => {
                    log::warn!(remote = label.as_str(); "verify: {label} could not be checked: {e}");
                    verified.error = Some(e);
                }
                Ok(drift) if drift.is_level() => {
                    log::info!(remote = label.as_str(); "verify: {label} is level with {}", target.root.display());
                }
                Ok(drift) => {
                    verified.differing = drift.differing;
                    verified.missing = drift.missing;
                    verified.extra = drift.extra;
                    verified.first = drift.first(PATHS_SHOWN);
                    let total = drift.paths.len();
                    log::warn!(
                        remote = label.as_str(), paths = total;
                        "verify: {label} differs from {} in {total} path(s) ({} differing, {} \
                         missing, {} extra): {}{}; queued to be pushed again",
                        target.root.display(),
                        drift.differing,
                        drift.missing,
                        drift.extra,
                        verified.first.join(", "),
                        if total > PATHS_SHOWN { ", ..." } else { "" }
                    );
                    if !stopped() {
                        self.repair(t, drift);
                    }
                }
            }
            self.results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(verified);
        }
    }

    /// Checks one remote; a drift found is looked at again once the remote's queue is
    /// idle (up to [`SETTLE`]), and only the paths that differ both times are kept: a
    /// change being pushed during the first look is not a drift.
    fn check_confirmed(&self, t: RemoteId, stop: &Stop) -> Result<Drift, String> {
        let target = &self.mirror.targets()[t.0];
        let once = || match self.mirror.root_unsafe(t) {
            Some(why) => Err(format!("not verified: {why}")),
            None => check(
                target,
                &self.mirror.excluded_paths(t),
                self.mirror.excludes_of(t),
                false,
            )
            .map_err(|e| e.to_string()),
        };
        let first = once()?;
        if first.is_level() {
            return Ok(first);
        }
        let queue = self.mirror.queue();
        let settle_until = std::time::Instant::now() + SETTLE;
        while !queue.is_idle_for(t) && std::time::Instant::now() < settle_until {
            if stop.wait_timeout(std::time::Duration::from_millis(100)) {
                return Ok(first);
            }
        }
        let second = once()?;
        let seen: std::collections::HashSet<&PathBuf> =
            first.paths.iter().map(|(_, p)| p).collect();
        let mut confirmed = Drift {
            unmirrorable: second.unmirrorable,
            ..Drift::default()
        };
        for (kind, path) in second.paths {
            if seen.contains(&path) {
                confirmed.add(kind, path);
            }
        }
        Ok(confirmed)
    }

    /// Queues the paths of a drift (a path the source no longer has is pushed as a
    /// delete), or a full sync when there are very many.
    fn repair(&self, t: RemoteId, drift: Drift) {
        let queue = self.mirror.queue();
        if drift.paths.len() > REPAIR_PATHS_MAX {
            queue.push_full(&[t]);
            return;
        }
        let paths = super::job::plain_entries(drift.paths.into_iter().map(|(_, p)| p));
        queue.push_many(&[t], &paths);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Option<(Kind, String)> {
        parse_line(line.as_bytes()).map(|(k, p)| (k, p.display().to_string()))
    }

    /// Lines as rsync 3.x prints them for a push (`<`) and a local copy (`>`).
    #[test]
    fn rsyncs_itemized_lines_are_sorted_into_kinds() {
        let d = |p: &str| Some((Kind::Differing, p.to_owned()));
        let m = |p: &str| Some((Kind::Missing, p.to_owned()));
        let x = |p: &str| Some((Kind::Extra, p.to_owned()));
        assert_eq!(one(">f+++++++++ new"), m("new"));
        assert_eq!(one("<f+++++++++ dir/new file"), m("dir/new file"));
        assert_eq!(one(">f.st...... changed"), d("changed"));
        assert_eq!(one("<f..t...... touched"), d("touched"));
        assert_eq!(one("<fcs....... sum"), d("sum"));
        assert_eq!(one(".f...p..... mode"), d("mode"));
        assert_eq!(one("*deleting   old"), x("old"));
        assert_eq!(one("*deleting   olddir/"), x("olddir"));
        assert_eq!(one("*deleting    lead space"), x(" lead space"));
        assert_eq!(one("cd+++++++++ dir/"), m("dir"));
        assert_eq!(one("cL+++++++++ link -> x"), m("link"));
        assert_eq!(one("cLc.t...... link -> y"), d("link"));
        assert_eq!(one("<f+++++++++ a\\#012b"), m("a\nb"));
        // A directory whose only difference is its mtime is not counted.
        assert_eq!(one(".d..t...... dir/"), None);
        assert_eq!(one(".d..t...... ./"), None);
        assert_eq!(one(".d...p..... dir/"), d("dir"));
        // No change, and rsync's other chatter.
        assert_eq!(one(".f          same"), None);
        assert_eq!(one("sending incremental file list"), None);
        assert_eq!(one("sent 1,234 bytes  received 56 bytes"), None);
        assert_eq!(one("total size is 0  speedup is 0.00 (DRY RUN)"), None);
        assert_eq!(one(""), None);
    }

    #[test]
    fn output_is_counted_per_kind_in_order() {
        let out = b"*deleting   olddir/z\n*deleting   olddir/\n*deleting   old\n\
                    >f.st...... changed\ncL+++++++++ link -> x\n>f+++++++++ new\n\
                    .d..t...... d2/\ncd+++++++++ dir/\n>f+++++++++ dir/f\n";
        let d = parse(out);
        assert_eq!((d.differing, d.missing, d.extra), (1, 4, 3));
        assert_eq!(
            d.first(4),
            [
                "extra olddir/z",
                "extra olddir",
                "extra old",
                "differs changed"
            ]
        );
        assert!(parse(b"").is_level());
    }

    #[test]
    fn the_call_is_the_full_sync_dry_run_without_ignore_times() {
        let t = Target::daemon_for_test(Path::new("/www"), "10.0.0.2", "mod", "-artz");
        let (full, full_in) = t.argv(&Job::Full, &["a/.svn".into()]);
        let (v, v_in) = argv(&t, &["a/.svn".into()], true);
        assert_eq!(v_in, full_in, "the same exclude rules");
        let words: Vec<&str> = v.iter().map(|a| a.to_str().unwrap_or("?")).collect();
        assert!(words.contains(&"--delete"));
        assert!(words.contains(&"--dry-run") && words.contains(&"--itemize-changes"));
        assert!(words.contains(&"--checksum"));
        assert!(!words.contains(&"--ignore-times"));
        assert_eq!(&words[words.len() - 2..], ["./", "10.0.0.2::mod"]);
        assert_eq!(v.len(), full.len() + 4);
        let (v, _) = argv(&t, &[], false);
        assert!(!v.iter().any(|a| a == "--checksum"));
    }
}
