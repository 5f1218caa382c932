//! `<filter>`'s rsync rules against rsync itself over real remotes, for random trees and
//! random rule lists: after a `-r` full sync, after live changes of every kind (new files
//! and directories, writes, deletes, renames, a file replaced by a directory and the
//! reverse) made while the agent runs, and after changes made while it is stopped and a
//! `--once`, the remote holds exactly what `rsync -a --filter=RULE...` copies of the
//! source into a fresh directory; `--verify` says level. Seeded and deterministic: each
//! case prints its seed, rules and changes; `RULES_E2E_SEED=N` runs that one case,
//! `RULES_E2E_CASES=N` runs more (or fewer) cases.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::support::*;

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// The names trees are made of (none of them a temporary name the agent drops).
const NAMES: [&str; 9] = [
    "a", "b", "ab", "a.txt", "b.log", "c", "cache", "[x]", "d.txt",
];

/// A random rule: include or exclude, anchored or not, a directory-only one, `*`, `?`,
/// `**`, `***`, classes, an escaped wildcard.
fn random_rule(rng: &mut Rng) -> String {
    const SEGMENTS: [&str; 18] = [
        "a",
        "b",
        "ab",
        "a.txt",
        "*",
        "?",
        "a*",
        "*.txt",
        "*.log",
        "[ab]",
        "[!a]*",
        "**",
        "c",
        "cache",
        "?b",
        "[[:alpha:]]*",
        "\\[x]",
        "d.txt",
    ];
    let mut p = String::new();
    if rng.below(3) == 0 {
        p.push('/');
    }
    let n = 1 + usize::from(rng.below(5) == 0); // mostly one segment, sometimes two
    for i in 0..n {
        if i > 0 {
            p.push('/');
        }
        p.push_str(rng.pick(&SEGMENTS));
    }
    match rng.below(6) {
        0 => p.push_str("/***"),
        1 | 2 => p.push('/'),
        _ => {}
    }
    let kind = match rng.below(5) {
        0 | 1 => "+ ",
        2 | 3 => "- ",
        _ => "exclude ",
    };
    format!("{kind}{p}")
}

/// Where the agent pushes: a real rsync daemon, or a real sshd.
enum Target<'a> {
    Daemon(&'a RsyncDaemon),
    Ssh(&'a Sshd),
}

impl Target<'_> {
    fn data(&self) -> PathBuf {
        match self {
            Target::Daemon(d) => d.data_dir(),
            Target::Ssh(s) => s.dest_dir(),
        }
    }

    fn conf(&self, src: &Path, fail_log: &Path, backend: &str) -> Conf {
        let mut conf = match self {
            Target::Daemon(d) => Conf::daemons(src, &[d], fail_log),
            Target::Ssh(s) => Conf::ssh(src, s, fail_log),
        };
        conf.backend = backend.to_owned();
        conf
    }

    fn logs(&self) -> String {
        match self {
            Target::Daemon(d) => format!("--- rsyncd log (tail) ---\n{}", tail(&d.log(), 30)),
            Target::Ssh(s) => format!("--- sshd log (tail) ---\n{}", tail(&s.log(), 30)),
        }
    }
}

/// One case: its own watched tree and config, a remote emptied for it.
struct Case<'a> {
    seed: u64,
    rules: Vec<String>,
    dir: Dir,
    src: PathBuf,
    target: &'a Target<'a>,
    /// Every write makes a longer file than the one before (rsync's quick check of size
    /// and mtime can never take a rewrite for the old content).
    writes: usize,
    /// What was done so far, for the failure message.
    story: String,
}

impl Case<'_> {
    fn describe(&self) -> String {
        format!(
            "case RULES_E2E_SEED={} rules {:?}\n{}",
            self.seed, self.rules, self.story
        )
    }

    fn write(&mut self, rel: &str) {
        self.writes += 1;
        let mut body = format!("{rel} #{}\n", self.writes);
        body.push_str(&"x".repeat(self.writes));
        let path = self.src.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir -p");
        }
        fs::write(&path, body).unwrap_or_else(|e| panic!("write {rel}: {e}"));
    }

    /// The directories of the source (the root as "").
    fn dirs(&self) -> Vec<String> {
        let mut out = vec![String::new()];
        for (p, e) in tree_snapshot(&self.src) {
            if matches!(e, Entry::Dir) {
                out.push(p.display().to_string());
            }
        }
        out
    }

    fn join(dir: &str, name: &str) -> String {
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    }

    /// A random tree of files and directories, three levels deep at most.
    fn random_tree(&mut self, rng: &mut Rng, dir: &str, depth: usize) {
        let n = if depth == 0 {
            4 + rng.below(4)
        } else {
            rng.below(4)
        };
        for _ in 0..n {
            let rel = Self::join(dir, rng.pick(&NAMES));
            if self.src.join(&rel).symlink_metadata().is_ok() {
                continue;
            }
            if depth < 3 && rng.below(2) == 0 {
                fs::create_dir(self.src.join(&rel)).expect("mkdir");
                self.random_tree(rng, &rel, depth + 1);
            } else {
                self.write(&rel);
            }
        }
    }

    /// One random change to the source; says what it did.
    fn random_change(&mut self, rng: &mut Rng) -> String {
        let snap = tree_snapshot(&self.src);
        let entries: Vec<(String, bool)> = snap
            .iter()
            .map(|(p, e)| (p.display().to_string(), matches!(e, Entry::Dir)))
            .collect();
        let dirs = self.dirs();
        let parent = dirs[rng.below(dirs.len())].clone();
        let fresh = Self::join(&parent, rng.pick(&NAMES));
        let taken = self.src.join(&fresh).symlink_metadata().is_ok();
        let some = (!entries.is_empty()).then(|| entries[rng.below(entries.len())].clone());
        match (rng.below(6), some) {
            (0, _) if snap.get(Path::new(&fresh)) != Some(&Entry::Dir) => {
                self.write(&fresh);
                format!("write {fresh}")
            }
            (1, _) if !taken => {
                let child = Self::join(&fresh, rng.pick(&NAMES));
                self.write(&child);
                format!("mkdir {fresh}, write {child}")
            }
            (2, Some((rel, is_dir))) => {
                let path = self.src.join(&rel);
                if is_dir {
                    fs::remove_dir_all(&path).expect("rm -rf");
                    format!("rm -rf {rel}")
                } else {
                    fs::remove_file(&path).expect("rm");
                    format!("rm {rel}")
                }
            }
            (3, Some((rel, _)))
                if !taken && !format!("{fresh}/").starts_with(&format!("{rel}/")) =>
            {
                fs::rename(self.src.join(&rel), self.src.join(&fresh)).expect("mv");
                format!("mv {rel} {fresh}")
            }
            (4, Some((rel, true))) => {
                fs::remove_dir_all(self.src.join(&rel)).expect("rm -rf");
                self.write(&rel);
                format!("replace directory {rel} by a file")
            }
            (5, Some((rel, false))) => {
                fs::remove_file(self.src.join(&rel)).expect("rm");
                let child = Self::join(&rel, rng.pick(&NAMES));
                self.write(&child);
                format!("replace file {rel} by a directory holding {child}")
            }
            _ => {
                // The change drawn does not fit the tree: a write of a new name instead.
                let rel = Self::join(&parent, &format!("n{}.txt", self.writes));
                self.write(&rel);
                format!("write {rel}")
            }
        }
    }

    fn changes(&mut self, rng: &mut Rng, what: &str) {
        let _ = writeln!(self.story, "{what}:");
        for _ in 0..3 + rng.below(6) {
            let done = self.random_change(rng);
            let _ = writeln!(self.story, "  {done}");
        }
    }

    /// What rsync itself copies of the source with the rules as `--filter=`.
    fn rsync_selects(&self) -> Snapshot {
        let dest = self.dir.join("expected");
        let _ = fs::remove_dir_all(&dest);
        fs::create_dir(&dest).expect("mkdir expected");
        let mut cmd = Command::new("rsync");
        cmd.current_dir(&self.src).arg("-a");
        for r in &self.rules {
            cmd.arg(format!("--filter={r}"));
        }
        let out = cmd
            .arg("./")
            .arg(&dest)
            .stdin(Stdio::null())
            .output()
            .expect("run rsync");
        assert!(out.status.success(), "{}\n{}", self.describe(), text(&out));
        tree_snapshot(&dest)
    }

    /// Polls until the remote holds exactly what rsync selects of the source.
    fn wait_level(&self, agent: Option<&mut Agent>, step: &str) {
        let mut agent = agent;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let want = self.rsync_selects();
            let got = tree_snapshot(self.target.data());
            let Err(diff) = snapshots_equal(&want, &got) else {
                return;
            };
            let log = agent.as_ref().map(|a| a.log()).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "{step}: the remote is not what rsync selects: {diff}\n{}\n\
                 --- sersync2 (tail) ---\n{}\n{}",
                self.describe(),
                tail(&log, 60),
                self.target.logs()
            );
            if let Some(a) = agent.as_mut() {
                a.assert_running();
            }
            std::thread::sleep(TREE_POLL); // poll interval, inside a deadline loop
        }
    }

    fn verify_level(&self) {
        let out = sersync2(&self.dir, &["--verify", "-o", "sersync.xml"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "--verify: {}\n{}",
            self.describe(),
            text(&out)
        );
    }
}

/// The config `conf` with `<filter start="true">` holding `rules` as `<rule>`s.
fn render_with_rules(conf: &mut Conf, rules: &[String]) -> String {
    conf.excludes = Some(Vec::new());
    let mut inside = String::new();
    for r in rules {
        let escaped = r.replace('&', "&amp;").replace('<', "&lt;");
        inside.push_str(&format!("    <rule>{escaped}</rule>\n"));
    }
    conf.render().replacen(
        "  <filter start=\"true\">\n",
        &format!("  <filter start=\"true\">\n{inside}"),
        1,
    )
}

/// Empties the remote for the next case.
fn empty(dir: &Path) {
    for entry in fs::read_dir(dir).expect("read the remote") {
        let path = entry.expect("entry").path();
        if path.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(&path).expect("rm -rf");
        } else {
            fs::remove_file(&path).expect("rm");
        }
    }
}

/// One case: a random tree (or the given rules, else random ones), `-r`, live changes,
/// `--verify`, a stop, changes while stopped, `--once`; the remote checked after each.
fn run_case(target: &Target, backend: &str, seed: u64, rules: Option<&[&str]>) {
    let mut rng = Rng(seed);
    empty(&target.data());
    let dir = Dir::new(&format!("rules-e2e-{seed}"));
    let src = dir.mkdir_p("src");
    let rules: Vec<String> = match rules {
        Some(r) => r.iter().map(|s| (*s).to_owned()).collect(),
        None => (0..1 + rng.below(5))
            .map(|_| random_rule(&mut rng))
            .collect(),
    };
    let mut case = Case {
        seed,
        rules,
        dir,
        src,
        target,
        writes: 0,
        story: String::new(),
    };
    case.random_tree(&mut rng, "", 0);
    let _ = writeln!(
        case.story,
        "tree: {:?}",
        tree_snapshot(&case.src).keys().collect::<Vec<_>>()
    );
    eprintln!("{}", case.describe());
    let mut conf = target.conf(&case.src, &case.dir.join("fail.sh"), backend);
    let xml = render_with_rules(&mut conf, &case.rules);
    fs::write(case.dir.join("sersync.xml"), xml).expect("write sersync.xml");
    let mut cmd = command(&case.dir);
    cmd.args(["-n", "4", "-o", "sersync.xml", "-r"]);
    let mut agent = Agent::spawn(cmd, case.dir.join("agent.err"));
    agent.wait_live();
    case.wait_level(Some(&mut agent), "after -r");

    case.changes(&mut rng, "live");
    case.wait_level(Some(&mut agent), "after the live changes");
    let out = wait_synced(&case.dir, 60);
    assert!(out.status.success(), "{}\n{}", case.describe(), text(&out));
    case.verify_level();
    agent.stop();

    case.changes(&mut rng, "while stopped, then --once");
    let out = sersync2(&case.dir, &["--once", "-o", "sersync.xml"]);
    assert!(
        out.status.success(),
        "--once: {}\n{}",
        case.describe(),
        text(&out)
    );
    let _ = writeln!(case.story, "--once said: {}", text(&out));
    case.wait_level(None, "after --once");
    case.verify_level();
}

/// The seeds to run: `RULES_E2E_SEED` alone, or `RULES_E2E_CASES` (else `default`) of
/// them from `base`.
fn seeds(base: u64, default: u64) -> Vec<u64> {
    let env = |n: &str| std::env::var(n).ok().and_then(|v| v.parse::<u64>().ok());
    match env("RULES_E2E_SEED") {
        Some(s) => vec![s],
        None => (base..base + env("RULES_E2E_CASES").unwrap_or(default)).collect(),
    }
}

/// A rule list with includes, excludes, directory-only and anchored rules, `***`.
const MIXED: [&str; 7] = [
    "- /cache/",
    "+ /a/***",
    "- *.log",
    "- c/",
    "+ */",
    "+ *.txt",
    "- *",
];

#[test]
fn random_rule_lists_over_a_daemon_select_what_rsync_selects() {
    let d = RsyncDaemon::start("127.0.0.1");
    let target = Target::Daemon(&d);
    for seed in seeds(0, 30) {
        run_case(&target, &test_backend(), seed, None);
    }
}

/// Cases that found a disagreement once, run every time. Seed 41: a catch-up (`--once`)
/// of a root left holding only what the rules keep out took it for an empty mount point
/// and held its deletes for good, while `--once` said every remote was level.
const REGRESSIONS: [u64; 1] = [41];

#[test]
fn rule_lists_that_once_disagreed_with_rsync_agree() {
    let d = RsyncDaemon::start("127.0.0.1");
    let target = Target::Daemon(&d);
    for seed in REGRESSIONS {
        run_case(&target, &test_backend(), seed, None);
    }
}

#[test]
fn random_rule_lists_over_ssh_select_what_rsync_selects() {
    let sshd = Sshd::start();
    let target = Target::Ssh(&sshd);
    run_case(&target, &test_backend(), 1000, Some(&MIXED));
    for seed in seeds(1001, 4) {
        run_case(&target, &test_backend(), seed, None);
    }
}

#[test]
fn random_rule_lists_on_fanotify_select_what_rsync_selects() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: fanotify needs root (CAP_SYS_ADMIN)");
        return;
    }
    let d = RsyncDaemon::start("127.0.0.1");
    let target = Target::Daemon(&d);
    run_case(&target, "fanotify", 2000, Some(&MIXED));
    for seed in seeds(2001, 4) {
        run_case(&target, "fanotify", seed, None);
    }
}
