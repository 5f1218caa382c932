//! The rules' parser and matcher: examples from rsync's manual, properties, and the
//! differential test against rsync itself (the same rules as `--filter=`, the same random
//! trees: the paths rsync selects are the paths [`Rules::selected`] selects).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::*;

fn rules(list: &[&str]) -> Rules {
    Rules(
        list.iter()
            .map(|r| parse(r.as_bytes()).unwrap_or_else(|e| panic!("{r}: {e}")))
            .collect(),
    )
}

fn sel(r: &Rules, path: &str, dir: bool) -> bool {
    r.selected(path.as_bytes(), dir)
}

#[test]
fn the_first_matching_rule_decides_and_no_match_includes() {
    let r = rules(&["+ /docs/***", "- *.tmp", "- /cache/"]);
    assert!(sel(&r, "docs", true));
    assert!(sel(&r, "docs/x.tmp", false), "the include came first");
    assert!(!sel(&r, "a/x.tmp", false));
    assert!(!sel(&r, "cache", true));
    assert!(sel(&r, "cache", false), "directory-only");
    assert!(sel(&r, "a/cache", true), "anchored at the root");
    assert!(sel(&r, "other", false));
}

#[test]
fn an_include_only_mirror_selects_only_its_tree() {
    let r = rules(&["+ /public/***", "- *"]);
    assert!(sel(&r, "public", true));
    assert!(sel(&r, "public/a/b.txt", false));
    assert!(!sel(&r, "private", true));
    assert!(!sel(&r, "x.txt", false));
    assert!(!sel(&r, "publicx", false));
}

#[test]
fn an_excluded_directory_keeps_out_what_is_below_it() {
    // rsync's own example: `+ *.txt` `- *` keeps only the top level's .txt files.
    let r = rules(&["+ *.txt", "- *"]);
    assert!(sel(&r, "a.txt", false));
    assert!(!sel(&r, "d/a.txt", false), "d itself is excluded");
    assert!(!r.excludes(b"d/a.txt", false), "alone, the path is let in");
    // Directories let in by `+ */`: then they are.
    let r = rules(&["+ */", "+ *.txt", "- *"]);
    assert!(sel(&r, "d/e/a.txt", false));
    assert!(!sel(&r, "d/e/a.log", false));
}

#[test]
fn patterns_match_as_rsync_s_manual_says() {
    // (pattern, path, is_dir, matches)
    let cases: &[(&str, &str, bool, bool)] = &[
        ("*.o", "a/b.o", false, true),
        ("foo", "a/foo", false, true),
        ("foo", "a/xfoo", false, false),
        ("/foo", "foo", false, true),
        ("/foo", "a/foo", false, false),
        ("foo/bar", "x/foo/bar", false, true),
        ("foo/bar", "foo/bar", false, true),
        ("foo/bar", "xfoo/bar", false, false),
        ("foo/*/bar", "foo/a/bar", false, true),
        ("foo/*/bar", "foo/a/b/bar", false, false),
        ("foo/**/bar", "foo/a/b/bar", false, true),
        ("/foo/**", "foo/a/b", false, true),
        ("/foo/**", "foo", true, false),
        ("/foo/***", "foo", true, true),
        ("/foo/***", "foo", false, false),
        ("/foo/***", "foo/x/y", false, true),
        ("**/foo", "foo", false, true),
        ("**/foo", "a/b/foo", false, true),
        ("dir/", "a/dir", true, true),
        ("dir/", "a/dir", false, false),
        ("?.c", "a.c", false, true),
        ("?.c", "ab.c", false, false),
        ("[ab].c", "b.c", false, true),
        ("[!ab].c", "b.c", false, false),
        ("[^ab].c", "c.c", false, true),
        ("[a-c]x", "bx", false, true),
        ("[[:digit:]]*", "7up", false, true),
        ("[[:digit:]]*", "up", false, false),
        ("\\*x", "*x", false, true),
        ("\\*x", "ax", false, false),
        ("a\\b", "a\\b", false, true),
        ("*", "a/b", false, true),
        ("/*", "a/b", false, false),
        ("/*/b", "a/b", false, true),
        ("a*", "ab/c", false, false),
        ("a/**", "x/a/b/c", false, true),
    ];
    for &(pattern, path, dir, want) in cases {
        let r = compile(false, pattern.as_bytes());
        assert_eq!(
            r.matches(path.as_bytes(), dir),
            want,
            "{pattern} on {path} (directory: {dir})"
        );
    }
}

#[test]
fn long_names_and_the_underscore_are_rsync_s_spellings() {
    for (text, include, pattern) in [
        ("+ a b", true, "a b"),
        ("-_x/", false, "x/"),
        ("include *.txt", true, "*.txt"),
        ("exclude_/tmp/", false, "/tmp/"),
        ("-  lead", false, " lead"),
    ] {
        let r = parse(text.as_bytes()).expect(text);
        assert_eq!(
            (r.include, &r.written[..]),
            (include, pattern.as_bytes()),
            "{text}"
        );
    }
    assert_eq!(
        rules(&["include /a/***", "exclude *"]).rsync_args(),
        ["--filter=+ /a/***", "--filter=- *"].map(std::ffi::OsString::from)
    );
}

#[test]
fn unsupported_rules_are_refused_saying_what_to_write() {
    for (text, says) in [
        ("", "an empty rule"),
        ("+", "no pattern"),
        ("+ ", "no pattern"),
        ("+x", "between the rule's name"),
        ("-\tx", "between the rule's name"),
        ("-,s x", "modifier"),
        ("+/ x", "between the rule's name"),
        ("exclude,! x", "modifier"),
        ("merge /etc/r", "<rules file="),
        (". /etc/r", "<rules file="),
        ("dir-merge .rsync-filter", "per-directory"),
        (": .rsync-filter", "per-directory"),
        ("!", "clear"),
        ("clear", "clear"),
        ("P /x", "one-sided"),
        ("protect /x", "one-sided"),
        ("R x", "one-sided"),
        ("H x", "one-sided"),
        ("S x", "one-sided"),
        ("hide x", "one-sided"),
        ("x", "unknown rule"),
        ("+ a\nb", "line break"),
    ] {
        let e = parse(text.as_bytes()).expect_err(text);
        assert!(e.contains(says), "{text:?}: {e}");
        assert!(
            e.contains('`') || e.contains('<'),
            "{text:?}: says what to write: {e}"
        );
    }
}

#[test]
fn a_rules_file_is_read_as_rsync_reads_a_merge_file() {
    let text = b"# comment\n+ /a/***\r\n\n; also a comment\n- *\r- b \n";
    let lines = file_lines(text);
    assert_eq!(
        lines,
        vec![(2, &b"+ /a/***"[..]), (5, b"- *"), (6, b"- b ")]
    );
}

proptest::proptest! {
    /// A path is selected only if every directory above it is.
    #[test]
    fn a_selected_path_has_every_ancestor_selected(
        picks in proptest::collection::vec((0usize..RULE_PATTERNS.len(), proptest::bool::ANY), 0..5),
        path in proptest::collection::vec(0usize..NAMES.len(), 1..5),
        dir in proptest::bool::ANY,
    ) {
        let r = Rules(picks.iter().map(|&(i, inc)| compile(inc, RULE_PATTERNS[i].as_bytes())).collect());
        let parts: Vec<&str> = path.iter().map(|&i| NAMES[i]).collect();
        let full = parts.join("/");
        if r.selected(full.as_bytes(), dir) {
            for n in 1..parts.len() {
                let above = parts[..n].join("/");
                proptest::prop_assert!(r.selected(above.as_bytes(), true), "{above} above {full}");
            }
        }
        // No rules: everything.
        proptest::prop_assert!(Rules::default().selected(full.as_bytes(), dir));
    }
}

/// Names of the random trees.
const NAMES: [&str; 7] = ["a", "b", "ab", "a.txt", "b.log", "c", "[x]"];
/// Patterns the property test picks from.
const RULE_PATTERNS: [&str; 10] = [
    "*", "a", "/a", "a/", "*.txt", "/a/***", "**/b", "a/*", "[ab]*", "c/",
];

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

/// A random rule from the supported grammar.
fn random_rule(rng: &mut Rng) -> String {
    const SEGMENTS: [&str; 16] = [
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
        "?b",
        "[[:alpha:]]*",
        "\\[x]",
    ];
    let mut p = String::new();
    if rng.below(3) == 0 {
        p.push('/');
    }
    let n = 1 + rng.below(3);
    for i in 0..n {
        if i > 0 {
            p.push('/');
        }
        p.push_str(rng.pick(&SEGMENTS));
    }
    match rng.below(6) {
        0 => p.push_str("/***"),
        1 => p.push('/'),
        _ => {}
    }
    let kind = match rng.below(4) {
        0 => "+ ",
        1 => "- ",
        2 => "include ",
        _ => "exclude_",
    };
    format!("{kind}{p}")
}

/// A random tree under `dir`: (relative path, is a directory) of everything made.
fn random_tree(rng: &mut Rng, root: &Path, dir: &str, depth: usize, out: &mut Vec<(String, bool)>) {
    let n = if depth == 0 {
        3 + rng.below(4)
    } else {
        rng.below(4)
    };
    for _ in 0..n {
        let name = rng.pick(&NAMES);
        let rel = if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        };
        if out.iter().any(|(p, _)| *p == rel) {
            continue;
        }
        let is_dir = depth < 3 && rng.below(2) == 0;
        if is_dir {
            std::fs::create_dir(root.join(&rel)).expect("mkdir");
            out.push((rel.clone(), true));
            random_tree(rng, root, &rel, depth + 1, out);
        } else {
            std::fs::write(root.join(&rel), b"x").expect("write");
            out.push((rel, false));
        }
    }
}

/// What rsync sends of `root` with `rules` as `--filter=` arguments: relative paths,
/// directories without their trailing `/`.
fn rsync_selects(root: &Path, dest: &Path, rules: &Rules) -> Result<BTreeSet<String>, String> {
    let out = Command::new("rsync")
        .current_dir(root)
        .args(["-r", "--dry-run", "--out-format=%n"])
        .args(rules.rsync_args())
        .arg("./")
        .arg(dest)
        .output()
        .map_err(|e| format!("cannot run rsync: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rsync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty() && l != ".")
        .collect())
}

/// For random trees and random rule lists, the paths rsync selects with the rules as
/// `--filter=` are exactly the paths [`Rules::selected`] selects. `RULES_DIFF_CASES=N`
/// runs more cases (default 300), `RULES_DIFF_SEED=N` one.
#[test]
fn the_rules_select_what_rsync_selects() {
    if Command::new("rsync").arg("--version").output().is_err() {
        eprintln!("no rsync on PATH: skipped");
        return;
    }
    let env = |n: &str| std::env::var(n).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env("RULES_DIFF_SEED") {
        Some(s) => vec![s],
        None => (0..env("RULES_DIFF_CASES").unwrap_or(300)).collect(),
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let dest = scratch.path().join("dest");
    // Cases where the rules kept some but not all of the tree out: the test is not empty.
    let mut telling = 0usize;
    let cases = seeds.len();
    for seed in seeds {
        let mut rng = Rng(seed);
        let root = scratch.path().join(format!("case{seed}"));
        std::fs::create_dir(&root).expect("mkdir");
        let mut tree = Vec::new();
        random_tree(&mut rng, &root, "", 0, &mut tree);
        let texts: Vec<String> = (0..1 + rng.below(5))
            .map(|_| random_rule(&mut rng))
            .collect();
        let r = Rules(
            texts
                .iter()
                .map(|t| parse(t.as_bytes()).unwrap_or_else(|e| panic!("seed {seed}: {t}: {e}")))
                .collect(),
        );
        let ours: BTreeSet<String> = tree
            .iter()
            .filter(|(p, d)| r.selected(p.as_bytes(), *d))
            .map(|(p, _)| p.clone())
            .collect();
        let theirs = rsync_selects(&root, &dest, &r).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(
            ours, theirs,
            "seed {seed} (RULES_DIFF_SEED={seed}): rules {texts:?}\ntree {tree:?}"
        );
        if !ours.is_empty() && ours.len() < tree.len() {
            telling += 1;
        }
        std::fs::remove_dir_all(&root).expect("clean up");
    }
    assert!(
        cases < 100 || telling * 10 > cases,
        "only {telling} of {cases} cases kept part of the tree out"
    );
}
