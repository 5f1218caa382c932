//! The rsync model checked against real rsync: each case (one seed) makes a random
//! source tree and a random remote tree, builds one command line with the agent's own
//! builders (`Target::argv` for paths, listings, trees and full syncs, `fail_log_argv`,
//! `prune_argv`, `rename_argvs` for a file and a directory, `settle_argv`, `argv_as` of a
//! big file's append and in-place push), runs it with
//! real rsync against a loopback `rsync --daemon` whose module holds the remote tree,
//! and runs [`model::rsync`] on the same remote tree in memory. The two resulting trees
//! (kinds, file contents and mtimes, link targets; with `-H`, drawn for a share of the
//! cases, which names are one file) and exit statuses (0, 23, other) must agree.
//! A share of the cases ([`RULES_PERCENT`]) has a random `<filter>` rule list
//! (`sim::rule_lists`): the agent's filter and its command lines (`--filter=`) get it, as
//! a config gives it, so the model's filter handling (what is sent, entered, deleted and
//! protected) is checked against rsync's too.
//!
//! Not covered here: the ssh remote `mv` of a rename ([`model::remote_mv`]), which no
//! daemon runs; ssh mode's rsync calls have the same shapes as the daemon's.
//!
//! `SIM_DIFF_CASES=N` runs more cases (default 200; the [`FIXED_SEEDS`] always come too),
//! `SIM_DIFF_SEED=N` one, printed.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::model::{self, Node, Tree};
use super::rule_lists::{parse_rules, random_rule_texts};
use super::Rng;
use crate::config::{Remote, RsyncOptions};
use crate::filter::{self, Excludes};
use crate::sync::bigfiles::Transfer;
use crate::sync::job::{Entry, Job};
use crate::sync::rsync::{exclude_exactly, Target};

mod trees;
use trees::{empty, materialise, materialise_linked, random_remote, random_tree};

/// Names entries take: plain ones, an excluded one (`*.log`) and a temp one.
const NAMES: [&[u8]; 7] = [b"a", b"b", b"c", b"d", b"e", b"x.log", b"t~"];
/// File contents: `hello` and `world` have one size, so the quick check can be fooled.
const DATA: [&[u8]; 6] = [b"", b"1", b"22", b"hello", b"world", b"a longer text"];
const MTIMES: [i64; 3] = [1_600_000_000, 1_600_000_001, 1_600_000_002];
const LINKS: [&[u8]; 4] = [b"a", b"../b", b"/etc", b"nowhere/x"];

/// Seeds that once disagreed, run on every test run beside the range:
/// 1923, 3184, 3348: an argument a rule excludes (`./c/c/` with `--exclude=c`) sends
/// nothing, not even its implied directories (the model made `c`);
/// 242, 944: a missing argument a rule excludes is still a deletion request (the
/// sender does not match it), which a receiver without the rules (no `--delete`)
/// carries out;
/// 1589: with `--max-delete=0`, a directory holding only names the rules protect is
/// not a skipped deletion (rsync said none, the model two).
const FIXED_SEEDS: [u64; 6] = [1923, 3184, 3348, 242, 944, 1589];

/// The share of cases (percent) given a `<filter>` rule list.
const RULES_PERCENT: u64 = 40;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A real `rsync --daemon` on 127.0.0.1 with one writable module, for the whole test.
struct Daemon {
    child: std::process::Child,
    port: u16,
    module: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start() -> Result<Daemon, String> {
        let dir = tempfile::Builder::new()
            .prefix("sersync2-simdiff-")
            .tempdir_in(super::sim_dir())
            .map_err(|e| format!("no temp directory: {e}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| format!("mkdir data: {e}"))?;
        let module = format!("simdiff{}", std::process::id());
        // Chrooted, so that received symlink targets are kept as sent.
        let conf = format!(
            "use chroot = yes\nuid = root\ngid = root\npid file = {pid}\nlog file = {log}\n\
             \n[{module}]\n\tpath = {data}\n\tread only = no\n\tlist = yes\n\
             \tmunge symlinks = no\n",
            pid = dir.path().join("rsyncd.pid").display(),
            log = dir.path().join("rsyncd.log").display(),
            data = data.display(),
        );
        let conf_path = dir.path().join("rsyncd.conf");
        std::fs::write(&conf_path, conf).map_err(|e| format!("write rsyncd.conf: {e}"))?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let _ = std::fs::remove_file(dir.path().join("rsyncd.pid"));
            let mut child = Command::new("rsync")
                .arg("--daemon")
                .arg("--no-detach")
                .arg(format!("--config={}", conf_path.display()))
                .arg("--address=127.0.0.1")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run rsync --daemon: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    // Lost the port to another process: another one.
                    last = format!("rsync --daemon on port {port} exited");
                    break;
                }
                if serves(port, &module) {
                    return Ok(Daemon {
                        child,
                        port,
                        module,
                        data,
                        _dir: dir,
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("rsync --daemon on port {port} never answered"));
                }
                // Polling for readiness, within the deadline above.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last)
    }
}

/// Does our module answer on `port` (not another test's daemon)?
fn serves(port: u16, module: &str) -> bool {
    Command::new("rsync")
        .arg("--list-only")
        .arg("--contimeout=5")
        .arg("--timeout=10")
        .arg(format!("--port={port}"))
        .arg(format!("127.0.0.1::{module}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn path(rel: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(rel))
}

/// The entries directly in `dir` (a source directory) that the agent keeps out of a
/// listing of it (as `Mirror::excluded_in_listings` finds them).
fn excluded_in(source: &Tree, excludes: &Excludes, dir: &[u8]) -> Vec<PathBuf> {
    let mut prefix = dir.to_vec();
    if !prefix.is_empty() {
        prefix.push(b'/');
    }
    source
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains(&b'/'))
        .filter(|(k, n)| {
            let (name, is_dir) = (&k[prefix.len()..], **n == Node::Dir);
            filter::is_temp_name(name)
                || (excludes.excludes(&path(k), is_dir)
                    && excludes.needs_anchored_rule(&path(k), is_dir))
        })
        .map(|(k, _)| path(k))
        .collect()
}

/// Below `dir` (not itself), in the source.
fn below(source: &Tree, dir: &[u8]) -> Vec<Vec<u8>> {
    let mut prefix = dir.to_vec();
    prefix.push(b'/');
    source
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .collect()
}

/// Is `rel` kept out by the agent's filter (itself or an ancestor)?
fn skipped(excludes: &Excludes, rel: &[u8], is_dir: bool) -> bool {
    let mut at = 0;
    for (i, &b) in rel.iter().enumerate() {
        if b == b'/' {
            if filter::skip(excludes, &rel[at..i], &path(&rel[..i]), true) {
                return true;
            }
            at = i + 1;
        }
    }
    filter::skip(excludes, &rel[at..], &path(rel), is_dir)
}

/// The simulator's `<filter>`: `.log` names, and with `dir_only` directories named `e`
/// (`e/`, a directory-only rule: a file so named is not excluded).
fn sim_excludes(dir_only: bool) -> Excludes {
    let mut rules = vec![r"^(?:(.*)\.log)$"];
    if dir_only {
        rules.push(r"^(?:(.*/)?e/)$");
    }
    Excludes::new(
        rules
            .into_iter()
            .filter_map(|r| regex::bytes::Regex::new(r).ok())
            .collect(),
    )
}

/// One case's command lines (run one after the other) and their stdin, and a name.
struct Shape {
    name: String,
    calls: Vec<(Vec<OsString>, Vec<u8>)>,
}

fn pick_paths(rng: &mut Rng, excludes: &Excludes, source: &Tree, remote: &Tree) -> Vec<Entry> {
    let mut pool: Vec<Vec<u8>> = source
        .keys()
        .chain(remote.keys())
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    pool.extend([b"e".to_vec(), b"a/e".to_vec(), b"d/a/e".to_vec()]);
    // The agent's paths never hold a temp or excluded name (its intake drops them), but
    // for a name excluded only as a directory (`e/`): queued as a file, it may be such a
    // directory when rsync reads it (the agent sends one it sees so as its parent's
    // listing, `Mirror::run_job`).
    pool.retain(|p| {
        let is_dir = source.get(p).or(remote.get(p)) == Some(&Node::Dir);
        !skipped(excludes, p, is_dir) || (is_dir && !skipped(excludes, p, false))
    });
    let n = 1 + rng.below(4);
    let mut out: Vec<Entry> = Vec::new();
    for _ in 0..n {
        let Some(p) = rng.pick(&pool).cloned() else {
            break;
        };
        let e = Entry::with_listing(path(&p), rng.chance(35));
        if !out.iter().any(|o| o.path == e.path) {
            out.push(e);
        }
    }
    // The root's listing (`.//`): a path at the top that is such an excluded directory
    // goes so. Alone: beside a deletion request that aborts the receiver (below a link
    // that leads nowhere), what real rsync's generator deleted before the receiver died
    // depends on the two processes' timing (seen: a directory's entries deleted while
    // making way for a file, then "could not make way").
    if rng.chance(10) {
        return vec![Entry::listing("")];
    }
    out
}

fn shape(
    rng: &mut Rng,
    t: &mut Target,
    excludes: &Excludes,
    source: &Tree,
    remote: &Tree,
    listing_deletes: bool,
) -> Shape {
    let dirs: Vec<Vec<u8>> = source
        .iter()
        .filter(|(k, n)| **n == Node::Dir && !skipped(excludes, k, true))
        .map(|(k, _)| k.clone())
        .collect();
    let leaves: Vec<Vec<u8>> = source
        .iter()
        .filter(|(k, n)| **n != Node::Dir && !skipped(excludes, k, false))
        .map(|(k, _)| k.clone())
        .collect();
    loop {
        match rng.below(8) {
            0 | 1 => {
                let paths = pick_paths(rng, excludes, source, remote);
                let excluded: Vec<PathBuf> = paths
                    .iter()
                    .filter(|e| e.listing)
                    .map(|e| e.path.as_os_str().as_bytes())
                    .filter(|d| d.is_empty() || source.get(*d) == Some(&Node::Dir))
                    .flat_map(|d| excluded_in(source, excludes, d))
                    .collect();
                let names: Vec<PathBuf> = paths.iter().map(|e| e.path.clone()).collect();
                let (mut argv, stdin) = t.argv(&Job::Paths(paths), &excluded);
                if listing_deletes && t.delete {
                    // As the workers push to a receiver that refuses
                    // `--delete-missing-args` (`rsync::missing`): the deletes first, as
                    // listings, then the call with its missing arguments skipped.
                    let missing = crate::sync::rsync::missing_in_place(&t.root, &names);
                    let mut calls = t.delete_argvs(&missing, &|p, dir| kept_out(excludes, p, dir));
                    crate::sync::rsync::ignoring_missing_args(&mut argv);
                    calls.push((argv, stdin));
                    return Shape {
                        name: "paths, deletes as listings".into(),
                        calls,
                    };
                }
                return Shape {
                    name: "paths".into(),
                    calls: vec![(argv, stdin)],
                };
            }
            2 => {
                let paths = pick_paths(rng, excludes, source, remote);
                return Shape {
                    name: "fail log paths".into(),
                    calls: vec![(t.fail_log_argv(&Job::Paths(paths)), Vec::new())],
                };
            }
            3 => {
                let excluded = crate::watch::excluded_paths(&t.root, excludes);
                // As the workers run it: with rsync's progress records on stdout.
                let (mut argv, stdin) = t.argv(&Job::Full, &excluded);
                crate::sync::rsync::show_progress(&mut argv);
                // An empty root's full sync with the brake on deletes nothing.
                let nothing = t.delete && rng.chance(25);
                if nothing {
                    crate::sync::rsync::deleting_nothing(&mut argv);
                }
                // After an index not trusted at start: nanosecond mtimes.
                let exact = rng.chance(25);
                if exact {
                    crate::sync::rsync::exact_times(&mut argv);
                }
                return Shape {
                    name: match (nothing, exact) {
                        (true, true) => "full, deleting nothing, exact times",
                        (true, false) => "full, deleting nothing",
                        (false, true) => "full, exact times",
                        (false, false) => "full",
                    }
                    .into(),
                    calls: vec![(argv, stdin)],
                };
            }
            4 => {
                t.delete = true;
                let mut chosen: Vec<Vec<u8>> = Vec::new();
                for _ in 0..1 + rng.below(2) {
                    if let Some(d) = rng.pick(&dirs) {
                        if !chosen.contains(d) {
                            chosen.push(d.clone());
                        }
                    }
                }
                // A link to a directory, as a prune meets it when the directory was
                // replaced by such a link after the agent looked (it prunes only what
                // is a directory then, `workers::prunable`): rsync reads the link's
                // target and deletes through the remote's link of that name.
                let mut name = "prune";
                if rng.chance(25) {
                    let links: Vec<&Vec<u8>> = source
                        .iter()
                        // Not `/etc`: the sender would read the machine's.
                        .filter(|(k, n)| {
                            matches!(n, Node::Link(to) if !to.starts_with(b"/"))
                                && !skipped(excludes, k, false)
                        })
                        .map(|(k, _)| k)
                        .filter(|k| {
                            std::fs::metadata(t.root.join(path(k))).is_ok_and(|m| m.is_dir())
                        })
                        .collect();
                    if let Some(l) = rng.pick(&links) {
                        chosen.push((*l).clone());
                        name = "prune through a link";
                    }
                }
                if chosen.is_empty() {
                    continue;
                }
                let excluded: Vec<PathBuf> = chosen
                    .iter()
                    .flat_map(|d| excluded_in(source, excludes, d))
                    .collect();
                let dirs: Vec<PathBuf> = chosen.iter().map(|d| path(d)).collect();
                let (argv, stdin) = t.prune_argv(&dirs, &excluded);
                return Shape {
                    name: name.into(),
                    calls: vec![(argv, stdin)],
                };
            }
            5 => {
                // A rename: to a source directory (its paths below listed) or a file.
                t.delete = true;
                let dir = rng.chance(50);
                let Some(to) = rng.pick(if dir { &dirs } else { &leaves }).cloned() else {
                    continue;
                };
                let from_pool: Vec<Vec<u8>> = remote
                    .keys()
                    .cloned()
                    .chain([b"old".to_vec(), b"a/old".to_vec()])
                    .filter(|k| *k != to)
                    .collect();
                let Some(from) = rng.pick(&from_pool).cloned() else {
                    continue;
                };
                let to_paths: Vec<PathBuf> = std::iter::once(to.clone())
                    .chain(
                        below(source, &to)
                            .into_iter()
                            .filter(|k| !skipped(excludes, k, source.get(k) == Some(&Node::Dir))),
                    )
                    .map(|k| path(&k))
                    .collect();
                let Some(argvs) = t.rename_argvs(&path(&from), &path(&to), dir, &to_paths) else {
                    continue;
                };
                let excluded: Vec<PathBuf> = if dir {
                    excluded_in(source, excludes, &to)
                        .into_iter()
                        .filter_map(|p| p.strip_prefix(path(&to)).ok().map(Path::to_path_buf))
                        .collect()
                } else {
                    Vec::new()
                };
                let calls = argvs
                    .into_iter()
                    .map(|mut argv| {
                        let stdin = exclude_exactly(&mut argv, &excluded);
                        (argv, stdin)
                    })
                    .collect();
                return Shape {
                    name: format!("rename {}", if dir { "dir" } else { "file" }),
                    calls,
                };
            }
            6 => {
                // Directories owed with everything below them (a full sync could not
                // read them): one call, recursive; one that is not a directory now goes
                // as its path.
                let mut chosen: Vec<Vec<u8>> = Vec::new();
                for _ in 0..1 + rng.below(2) {
                    let pool = if rng.chance(75) { &dirs } else { &leaves };
                    if let Some(d) = rng.pick(pool) {
                        if !chosen.contains(d) {
                            chosen.push(d.clone());
                        }
                    }
                }
                if rng.chance(15) {
                    chosen.push(b"e".to_vec());
                }
                if chosen.is_empty() {
                    continue;
                }
                let excluded: Vec<PathBuf> = chosen
                    .iter()
                    .flat_map(|d| crate::watch::excluded_paths_below(&t.root, &path(d), excludes))
                    .collect();
                let trees: Vec<Entry> = chosen.iter().map(|d| Entry::tree(path(d))).collect();
                let (argv, stdin) = t.argv(&Job::Paths(trees), &excluded);
                return Shape {
                    name: "tree".into(),
                    calls: vec![(argv, stdin)],
                };
            }
            _ => {
                // ssh mode's push after a remote `mv`: the new path and what is below.
                let Some(to) = rng.pick(&dirs).cloned() else {
                    continue;
                };
                let paths: Vec<Entry> = std::iter::once(to.clone())
                    .chain(below(source, &to))
                    .filter(|k| !skipped(excludes, k, source.get(k) == Some(&Node::Dir)))
                    .map(|k| Entry::plain(path(&k)))
                    .collect();
                return Shape {
                    name: "settle".into(),
                    calls: vec![(t.settle_argv(&paths), Vec::new())],
                };
            }
        }
    }
}

/// A big file's push as the agent makes it: a regular file of the source with one name
/// that its filter keeps, as an append or in place; the remote's copy made a prefix of
/// it (the append the agent expects), longer than it, or left as drawn.
fn big_file(
    seed: u64,
    excludes: &Excludes,
    source: &Tree,
    links: &[(Vec<u8>, Vec<u8>)],
    remote: &mut Tree,
) -> Option<(Vec<u8>, Transfer)> {
    let mut rng = Rng(seed ^ 0x6269_6766_696c_6573);
    let files: Vec<(&Vec<u8>, &Vec<u8>)> = source
        .iter()
        .filter_map(|(k, n)| match n {
            Node::File { data, .. } => Some((k, data)),
            _ => None,
        })
        .filter(|(k, _)| !links.iter().any(|(a, b)| a == *k || b == *k))
        .filter(|(k, _)| !skipped(excludes, k, false))
        .collect();
    let (p, data) = rng.pick(&files).copied()?;
    let how = if rng.chance(60) {
        Transfer::Append
    } else {
        Transfer::InPlace
    };
    let mtime = (rng.pick(&MTIMES).copied().unwrap_or(MTIMES[0]), 0);
    let copy = match rng.below(10) {
        0..=3 => Some(data[..rng.below(data.len() as u64 + 1) as usize].to_vec()),
        4..=5 => Some([data.as_slice(), b"tail"].concat()),
        _ => None,
    };
    if let Some(copy) = copy {
        // Where the remote has a file there, or nothing with its parent a directory.
        let parent_dir = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => remote.get(&p[..i]) == Some(&Node::Dir),
            None => true,
        };
        if matches!(remote.get(p), Some(Node::File { .. }))
            || (remote.get(p).is_none() && parent_dir)
        {
            remote.insert(
                p.clone(),
                Node::File {
                    data: copy,
                    mtime,
                    link: 0,
                },
            );
        }
    }
    Some((p.clone(), how))
}

fn class(status: i32) -> &'static str {
    match status {
        0 => "0",
        23 => "23",
        _ => "other",
    }
}

fn show_tree(tree: &Tree) -> String {
    tree.iter()
        .map(|(k, n)| format!("  {} {}", String::from_utf8_lossy(k), super::show(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn differences(real: &Tree, model: &Tree) -> Vec<String> {
    real.keys()
        .chain(model.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| real.get(*k) != model.get(*k))
        .map(|k| {
            format!(
                "  {}: rsync {:?}, model {:?}",
                String::from_utf8_lossy(k),
                real.get(k).map(super::show),
                model.get(k).map(super::show)
            )
        })
        .collect()
}

/// The calls of `shape` as the workers send them to a receiver that refuses
/// `--delete-missing-args` (`rsync::missing`): a call with it goes as the deletes of its
/// missing arguments first, as listings, then itself with them skipped.
fn as_to_a_refusing_receiver(t: &Target, excludes: &Excludes, shape: Shape) -> Shape {
    let mut calls = Vec::new();
    for (mut argv, stdin) in shape.calls {
        if argv.iter().any(|a| a == "--delete-missing-args") {
            let names: Vec<PathBuf> = (argv.iter())
                .filter_map(|a| a.as_bytes().strip_prefix(b"./"))
                .filter(|a| !a.is_empty())
                .map(|a| path(a.strip_suffix(b"/").unwrap_or(a)))
                .collect();
            let missing = crate::sync::rsync::missing_in_place(&t.root, &names);
            calls.extend(t.delete_argvs(&missing, &|p, dir| kept_out(excludes, p, dir)));
            crate::sync::rsync::ignoring_missing_args(&mut argv);
        }
        calls.push((argv, stdin));
    }
    Shape {
        name: shape.name,
        calls,
    }
}

/// What the agent keeps out, as the workers ask it for [`Target::delete_argvs`].
fn kept_out(excludes: &Excludes, p: &Path, dir: bool) -> bool {
    let name = p.file_name().map_or(&[][..], |n| n.as_encoded_bytes());
    crate::filter::skip(excludes, name, p, dir)
}

/// Does the daemon's rsync refuse the entry `--delete-missing-args` sends for a missing
/// argument (`rsync::missing`)? One push of a name that exists on neither side.
fn refuses_missing_args(daemon: &Daemon, scratch: &Path) -> Result<bool, String> {
    let root = scratch.join("probe");
    std::fs::create_dir_all(&root).map_err(|e| format!("mkdir probe: {e}"))?;
    let argv: Vec<OsString> = [
        "-a".to_owned(),
        "-R".to_owned(),
        "--delete-missing-args".to_owned(),
        format!("--port={}", daemon.port),
        "./sersync2-probe-missing".to_owned(),
        format!("127.0.0.1::{}", daemon.module),
    ]
    .map(OsString::from)
    .to_vec();
    let (status, stderr) = run_rsync(&root, &argv, &[])?;
    let outcome = crate::sync::rsync::Outcome {
        status,
        stderr,
        elapsed: std::time::Duration::ZERO,
    };
    let _ = std::fs::remove_dir_all(&root);
    match status {
        0 => Ok(false),
        _ if crate::sync::rsync::refuses_missing_args(&outcome) => Ok(true),
        _ => Err(format!("exit {status}: {}", outcome.stderr.trim())),
    }
}

/// Runs real rsync: cwd the source root, `stdin` fed.
fn run_rsync(root: &Path, argv: &[OsString], stdin: &[u8]) -> Result<(i32, String), String> {
    let mut child = Command::new("rsync")
        .args(argv)
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run rsync: {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        // rsync may exit without reading it all: a broken pipe is its answer, not ours.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("rsync: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn shown(argv: &[OsString], stdin: &[u8]) -> String {
    let mut s = super::shown(OsStr::new("rsync"), argv);
    // The simulator's printing leaves out `--exclude=`: here they decide the case.
    for a in argv
        .iter()
        .filter(|a| a.as_bytes().starts_with(b"--exclude="))
    {
        s.push_str(&format!(" {}", a.to_string_lossy()));
    }
    if !stdin.is_empty() {
        let rules: Vec<String> = stdin
            .split(|&b| b == 0)
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        s.push_str(&format!(" <stdin: {}>", rules.join(", ")));
    }
    s
}

/// One case: `Err` with the whole story when rsync and the model disagree.
fn case(seed: u64, daemon: &Daemon, scratch: &Path, refusing: bool) -> Result<String, String> {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut source = random_tree(&mut rng);
    let mut remote = random_remote(&mut rng, &source);
    // Files linked into place under other names (`ln a b`): without `-H` rsync sends
    // each name as a file of its own.
    let mut links: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if rng.chance(30) {
        let files: Vec<Vec<u8>> = source
            .iter()
            .filter(|(_, n)| matches!(n, Node::File { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        let dirs: Vec<Vec<u8>> = std::iter::once(Vec::new())
            .chain(
                source
                    .iter()
                    .filter(|(_, n)| **n == Node::Dir)
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        for _ in 0..1 + rng.below(2) {
            let (Some(from), Some(d), Some(name)) =
                (rng.pick(&files), rng.pick(&dirs), rng.pick(&NAMES))
            else {
                break;
            };
            let to = model::join(d, name);
            if source.contains_key(&to) {
                continue;
            }
            if let Some(n) = source.get(from).cloned() {
                source.insert(to.clone(), n);
                links.push((from.clone(), to));
            }
        }
    }
    let root = scratch.join(format!("src{seed}"));
    std::fs::create_dir(&root).map_err(|e| format!("mkdir source: {e}"))?;
    let excludes = sim_excludes(rng.chance(50));
    // `<filter>` rules (`sim::rule_lists`) in a case of its own draw, from a sequence of
    // its own (the cases drawn before it keep their trees).
    let rules = if Rng(seed ^ 0x5255_4c45_5344).chance(RULES_PERCENT) {
        let texts = random_rule_texts(&mut Rng(seed ^ 0x5255_4c45_5354));
        match parse_rules(&texts) {
            Ok(r) => r,
            Err(e) => return Err(format!("seed {seed}: {e}")),
        }
    } else {
        Default::default()
    };
    let ruled = !rules.is_empty();
    let filter_rules = rules.rsync_args();
    let excludes = excludes.with_rules(rules);
    // `-H` in a case of its own draw (the cases drawn before it stay as they were): the
    // names of one file in a call are one file on the remote.
    let hard = Rng(seed ^ 0x4848_4848).chance(40);
    let mut t = Target {
        root: root.clone(),
        remote: Remote {
            ip: "127.0.0.1".into(),
            name: daemon.module.clone(),
        },
        opts: RsyncOptions {
            params: vec![if hard { "-aH" } else { "-a" }.into()],
            auth: None,
            port: Some(daemon.port),
            timeout: None,
            ssh: None,
            batch: 100,
        },
        delete: rng.chance(60),
        full_excludes: if rng.chance(20) {
            vec!["c".into()]
        } else {
            Vec::new()
        },
        filter_globs: excludes.rsync_globs(),
        filter_rules,
        own: Vec::new(),
        ssh_control: None,
    };
    // A big file's push (`sync::bigfiles`) in a case of its own draw, the remote's copy
    // often a prefix of the source's or longer than it.
    let big = Rng(seed ^ 0x4249_4746_494c_4553).chance(25);
    let big = if big {
        big_file(seed, &excludes, &source, &links, &mut remote)
    } else {
        None
    };
    let made = materialise_linked(&root, &source, &links)
        .and_then(|()| empty(&daemon.data))
        .and_then(|()| materialise(&daemon.data, &remote));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&root);
        return Err(format!("seed {seed}: cannot make the trees: {e}"));
    }
    let shape = match big {
        Some((p, how)) => Shape {
            name: format!("big file {how:?}"),
            calls: vec![t.argv_as(&Job::Paths(vec![Entry::plain(path(&p))]), &[], how)],
        },
        // Deletes as listings where the receiver refuses `--delete-missing-args`, as
        // the workers push then, and in a third of the cases anyway.
        None => shape(
            &mut rng,
            &mut t,
            &excludes,
            &source,
            &remote,
            refusing || seed.is_multiple_of(3),
        ),
    };
    let shape = if refusing {
        as_to_a_refusing_receiver(&t, &excludes, shape)
    } else {
        shape
    };
    let mut modelled = remote.clone();
    let mut story = format!(
        "seed {seed} ({}, deletes {}):\nsource:\n{}\nremote before:\n{}\n",
        shape.name,
        if t.delete { "on" } else { "off" },
        show_tree(&source),
        show_tree(&remote)
    );
    let mut result = Ok(format!(
        "{}{}{}",
        shape.name,
        if hard { " -H" } else { "" },
        if ruled { " rules" } else { "" }
    ));
    for (argv, stdin) in &shape.calls {
        let (status, stderr) = match run_rsync(&root, argv, stdin) {
            Ok(r) => r,
            Err(e) => {
                result = Err(format!("seed {seed}: {e}"));
                break;
            }
        };
        let ran = model::rsync_on(&root, &mut modelled, argv, stdin, refusing);
        if ran.stderr.starts_with("model:") {
            // A case the model says it does not know (the simulator fails on it too).
            result = Ok(format!("not modelled ({})", ran.stderr));
            break;
        }
        let real = model::read_tree(&daemon.data);
        story.push_str(&format!(
            "{}\n  rsync exit {status}: {}\n  model exit {}: {}\n",
            shown(argv, stdin),
            stderr.trim().replace('\n', "\n    "),
            ran.status,
            ran.stderr.trim().replace('\n', "\n    ")
        ));
        let mut diff = differences(&real, &modelled);
        // With -H, which names are one file (but for `--link-dest`, which links what it
        // finds in the old place: the model does not track that).
        let link_dest = argv
            .iter()
            .any(|a| a.as_bytes().starts_with(b"--link-dest"));
        if hard && !link_dest {
            let (r, m) = (
                model::link_classes(&real, |_| true),
                model::link_classes(&modelled, |_| true),
            );
            if r != m {
                let show = |c: &BTreeSet<Vec<Vec<u8>>>| {
                    c.iter()
                        .map(|names| {
                            names
                                .iter()
                                .map(|n| String::from_utf8_lossy(n).into_owned())
                                .collect::<Vec<_>>()
                                .join("=")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                diff.push(format!(
                    "  one file: rsync [{}], model [{}]",
                    show(&r),
                    show(&m)
                ));
            }
        }
        let blocked = |s: &str| s.contains("could not make way for new ");
        // What the agent reads of `--max-delete=0` (`rsync::deletes_skipped`).
        let skipped = |status: i32, stderr: &str| {
            crate::sync::rsync::deletes_skipped(&crate::sync::rsync::Outcome {
                status,
                stderr: stderr.to_owned(),
                elapsed: Duration::ZERO,
            })
        };
        if !diff.is_empty()
            || class(status) != class(ran.status)
            // (With an error, exit 23, a daemon's client may or may not print the
            // receiver's line: it races with the error.)
            || (status != 23 && skipped(status, &stderr) != skipped(ran.status, &ran.stderr))
            // What the agent reads in a 23 (`only_blocked_by_directories`).
            || (status == 23 && blocked(&stderr) != blocked(&ran.stderr))
        {
            story.push_str(&format!(
                "trees differ ({} entries):\n{}\n",
                diff.len(),
                diff.join("\n")
            ));
            result = Err(story.clone());
            break;
        }
        if status != 0 {
            // What follows a failed call is not run (the agent pushes plain instead).
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    if env_u64("SIM_DIFF_SEED").is_some() {
        println!("{story}");
    }
    result
}

#[test]
fn the_rsync_model_agrees_with_real_rsync() {
    let daemon = match Daemon::start() {
        Ok(d) => d,
        Err(e) => panic!("the differential test needs rsync: {e}"),
    };
    let scratch = match tempfile::Builder::new()
        .prefix("sersync2-simdiff-src-")
        .tempdir_in(super::sim_dir())
    {
        Ok(d) => d,
        Err(e) => panic!("no temp directory: {e}"),
    };
    let seeds: Vec<u64> = match env_u64("SIM_DIFF_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("SIM_DIFF_FIRST").unwrap_or(1);
            let mut seeds: Vec<u64> =
                (first..first + env_u64("SIM_DIFF_CASES").unwrap_or(200)).collect();
            let fixed: Vec<u64> = FIXED_SEEDS
                .into_iter()
                .filter(|s| !seeds.contains(s))
                .collect();
            seeds.extend(fixed);
            seeds
        }
    };
    let refusing = match refuses_missing_args(&daemon, scratch.path()) {
        Ok(r) => r,
        Err(e) => panic!("cannot ask rsync about --delete-missing-args: {e}"),
    };
    println!(
        "this rsync {} --delete-missing-args",
        if refusing { "refuses" } else { "takes" }
    );
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut shapes: std::collections::BTreeMap<String, usize> = Default::default();
    for &seed in &seeds {
        match case(seed, &daemon, scratch.path(), refusing) {
            Ok(name) => *shapes.entry(name).or_default() += 1,
            Err(story) => {
                failures.push(story);
                if failures.len() >= 3 {
                    break;
                }
            }
        }
    }
    println!(
        "{} case(s) in {:.1}s, agreeing: {shapes:?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "real rsync and the model disagree:\n\n{}",
        failures.join("\n\n")
    );
}
