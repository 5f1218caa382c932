//! `<filter>`'s rsync rules (`<rule>`, `<rules file>`) over real daemons: what reaches the
//! remotes, live and in `-r` full syncs, is what rsync itself selects with the same rules
//! as `--filter=` (an include-only mirror among them), what the rules keep out stays on
//! the remotes, and `--verify` says level.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

/// The config of `s` with `<filter start="true">` holding these rules as `<rule>`s.
fn with_rules(s: &Setup, rules: &[&str]) -> String {
    let mut conf = s.conf();
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

fn start(s: &Setup, xml: &str, extra: &[&str]) -> Agent {
    fs::write(s.dir.join("sersync.xml"), xml).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o"])
        .arg(s.dir.join("sersync.xml"))
        .args(extra);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    agent
}

/// What rsync itself makes of the source with these rules: the tree a fresh copy with
/// `rsync -a --filter=RULE...` holds.
fn rsync_selects(s: &Setup, rules: &[&str]) -> Snapshot {
    let dest = s.dir.join("expected");
    let _ = fs::remove_dir_all(&dest);
    fs::create_dir(&dest).expect("mkdir expected");
    let mut cmd = Command::new("rsync");
    cmd.current_dir(&s.src).arg("-a");
    for r in rules {
        cmd.arg(format!("--filter={r}"));
    }
    let out = cmd
        .arg("./")
        .arg(&dest)
        .stdin(Stdio::null())
        .output()
        .expect("run rsync");
    assert!(out.status.success(), "{}", text(&out));
    tree_snapshot(&dest)
}

/// Waits until every remote holds exactly `want` (plus `extra` on the first).
fn wait_for_remotes(s: &Setup, agent: &mut Agent, want: &Snapshot, extra: &Snapshot, what: &str) {
    let mut last = String::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        agent.assert_running();
        let mut all = true;
        for (i, r) in s.remotes().iter().enumerate() {
            let mut w = want.clone();
            if i == 0 {
                w.extend(extra.clone());
            }
            if let Err(e) = snapshots_equal(&w, &tree_snapshot(r)) {
                last = format!("{}: {e}", r.display());
                all = false;
            }
        }
        if all {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the remotes are not what rsync selects: {last}\n{}\n{}",
            tail(&agent.log(), 60),
            s.logs()
        );
        std::thread::sleep(POLL_INTERVAL); // poll interval, inside a deadline loop
    }
}

fn verify_level(s: &Setup) {
    let out = Command::new(sersync_bin())
        .args(["--verify", "-o", "sersync.xml"])
        .current_dir(s.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2 --verify");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The tree every case starts from.
fn first_tree(s: &Setup) {
    for rel in [
        "public/a.txt",
        "public/sub/b.txt",
        "public/x.tmp",
        "private/c.txt",
        "top.txt",
        "top.tmp",
        "cache/k.txt",
        "a/cache",
        "docs/r.md",
        "docs/n.txt",
        "docs/sub/x.md",
        "bb/z.txt",
        "ab",
    ] {
        s.write(rel, format!("{rel}\n"));
    }
}

/// Live edits of every kind: new files and directories, writes, deletes, a rename.
fn live_edits(s: &Setup) {
    for rel in [
        "public/new.txt",
        "public/d2/deep/y.txt",
        "private/n.txt",
        "docs/new.md",
        "docs/sub2/q.md",
        "cache/k2.txt",
        "x/y/z.txt",
        "top2.tmp",
        "public/a.txt",
    ] {
        s.write(rel, format!("{rel} (live)\n"));
    }
    fs::remove_file(s.p("public/sub/b.txt")).expect("rm");
    fs::remove_file(s.p("docs/r.md")).expect("rm");
    fs::rename(s.p("top.txt"), s.p("moved.txt")).expect("mv");
    fs::rename(s.p("public/sub"), s.p("public/sub3")).expect("mv");
}

/// One rule list: `-r` over a tree, then live edits; each time the remotes must be
/// what rsync itself selects, and `--verify` must say level.
fn agrees_with_rsync(s: &Setup, rules: &[&str]) {
    first_tree(s);
    let xml = with_rules(s, rules);
    let mut agent = start(s, &xml, &["-r"]);
    let none = Snapshot::new();
    let want = rsync_selects(s, rules);
    wait_for_remotes(s, &mut agent, &want, &none, "after -r");
    let out = wait_synced(&s.dir, 60);
    assert!(out.status.success(), "{}", text(&out));
    verify_level(s);
    live_edits(s);
    let want = rsync_selects(s, rules);
    wait_for_remotes(s, &mut agent, &want, &none, "after live edits");
    let out = wait_synced(&s.dir, 60);
    assert!(out.status.success(), "{}", text(&out));
    verify_level(s);
    agent.stop();
}

#[test]
fn files_by_suffix_in_every_directory_reach_the_remotes_as_rsync_selects_them() {
    let s = setup!();
    agrees_with_rsync(&s, &["- *.tmp", "+ */", "+ *.txt", "- *"]);
}

#[test]
fn anchored_directory_only_and_double_star_rules_reach_the_remotes_as_rsync_selects_them() {
    let s = setup!();
    agrees_with_rsync(
        &s,
        &[
            "- /cache/",
            "+ /docs/*.md",
            "- /docs/**",
            "exclude b?",
            "- *.tmp",
        ],
    );
}

// The include-only mirror operators ask for (lsyncd #102, sersync #9): only public/
// reaches the remotes, live and in full syncs; what the rules keep out stays on them
// (rsync's own reading of an excluded name: protected from deletion).
#[test]
fn an_include_only_mirror_sends_only_its_tree() {
    let s = setup!();
    let rules = ["+ /public/***", "- *"];
    let a = s.remotes()[0].clone();
    fs::write(a.join("remote-only.txt"), "kept: the rules keep it out\n").expect("write");
    fs::create_dir_all(a.join("public")).expect("mkdir");
    fs::write(a.join("public/stale.txt"), "not in the source\n").expect("write");
    first_tree(&s);
    let xml = with_rules(&s, &rules);
    let mut agent = start(&s, &xml, &["-r"]);
    let mut kept = Snapshot::new();
    kept.insert(
        "remote-only.txt".into(),
        Entry::File(b"kept: the rules keep it out\n".to_vec()),
    );
    let want = rsync_selects(&s, &rules);
    assert!(
        want.keys().all(|p| p.starts_with("public")),
        "rsync's own selection: {:?}",
        want.keys()
    );
    wait_for_remotes(&s, &mut agent, &want, &kept, "after -r");
    live_edits(&s);
    let want = rsync_selects(&s, &rules);
    wait_for_remotes(&s, &mut agent, &want, &kept, "after live edits");
    for r in s.remotes() {
        assert!(!r.join("private").exists() && !Path::new(&r.join("moved.txt")).exists());
    }
    let out = wait_synced(&s.dir, 60);
    assert!(out.status.success(), "{}", text(&out));
    verify_level(&s);
    agent.stop();
}

// `-t` prints the rules in order, and the full sync's command line carries them.
#[test]
fn test_config_prints_the_rules() {
    let s = setup!();
    let xml = with_rules(&s, &["+ /public/***", "exclude *"]);
    fs::write(s.dir.join("sersync.xml"), xml).expect("write");
    let out = sersync2(&s.dir, &["-t", "-o", "sersync.xml"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let at = all.find("filter rules").expect(&all);
    assert!(all[at..].contains("    + /public/***\n    - *\n"), "{all}");
    assert!(
        all.contains("'--filter=+ /public/***' '--filter=- *'"),
        "{all}"
    );
}

/// Under `prefix`: the file `f/cache` replaced by a directory, the directory `d/cache`
/// by a file.
fn swap_types(s: &Setup, prefix: &str) {
    fs::remove_file(s.p(format!("{prefix}/f/cache"))).expect("rm");
    s.write(format!("{prefix}/f/cache/y.txt"), "now a directory\n");
    fs::remove_dir_all(s.p(format!("{prefix}/d/cache"))).expect("rm -rf");
    s.write(format!("{prefix}/d/cache"), "now a file\n");
}

/// A name the rules keep out only as a directory or only as a file, replaced by the
/// other type: live, before a `-r` full sync, and before a `--once`; each time the
/// remotes hold what rsync selects and `--verify` says level.
fn type_swaps_agree_with_rsync(s: &Setup, rules: &[&str]) {
    for prefix in ["live", "full", "once"] {
        s.write(format!("{prefix}/f/cache"), "a file\n");
        s.write(format!("{prefix}/d/cache/x.txt"), "in a directory\n");
    }
    s.write("keep.txt", "keep\n");
    let xml = with_rules(s, rules);
    let none = Snapshot::new();
    let mut agent = start(s, &xml, &["-r"]);
    wait_for_remotes(s, &mut agent, &rsync_selects(s, rules), &none, "after -r");
    swap_types(s, "live");
    wait_for_remotes(s, &mut agent, &rsync_selects(s, rules), &none, "live");
    let out = wait_synced(&s.dir, 60);
    assert!(out.status.success(), "{}", text(&out));
    verify_level(s);
    agent.stop();

    swap_types(s, "full");
    let mut agent = start(s, &xml, &["-r"]);
    wait_for_remotes(s, &mut agent, &rsync_selects(s, rules), &none, "full sync");
    let out = wait_synced(&s.dir, 60);
    assert!(out.status.success(), "{}", text(&out));
    verify_level(s);
    agent.stop();

    swap_types(s, "once");
    let out = sersync2(&s.dir, &["--once", "-o", "sersync.xml"]);
    assert!(out.status.success(), "--once: {}", text(&out));
    let want = rsync_selects(s, rules);
    for r in s.remotes() {
        if let Err(e) = snapshots_equal(&want, &tree_snapshot(&r)) {
            panic!("after --once, {}: {e}\n{}", r.display(), text(&out));
        }
    }
    verify_level(s);
}

#[test]
fn a_name_kept_out_only_as_a_directory_changing_type_agrees_with_rsync() {
    let s = setup!();
    type_swaps_agree_with_rsync(&s, &["- cache/"]);
}

#[test]
fn a_name_kept_out_only_as_a_file_changing_type_agrees_with_rsync() {
    let s = setup!();
    type_swaps_agree_with_rsync(&s, &["+ cache/", "- cache"]);
}

// A malformed rule, an unknown transport, a negative threshold or hook timeout: `-t`
// and the start refuse each, naming the file, the line and what to write.
#[test]
fn bad_values_are_refused_with_file_line_and_what_to_write() {
    let s = setup!();
    let good = with_rules(&s, &["+ /public/***", "- *"]);
    let hook = "  <plugin name=\"command\" mode=\"batch\" timeout=\"-1\">\n    \
                <param prefix=\"/bin/true\"/>\n  </plugin>\n</head>\n";
    let remote = format!("<remote ip=\"{}\" name=\"{}\"/>", s.a.ip(), s.a.module());
    for (bad, marker, says) in [
        (
            good.replace("- *</rule>", "-,s *.tmp</rule>"),
            "-,s *.tmp",
            "write the rule without it: `+ PATTERN` or `- PATTERN`",
        ),
        (
            good.replace("- *</rule>", "protect /keep</rule>"),
            "protect /keep",
            "write `- PATTERN`",
        ),
        (
            good.replacen(
                &remote,
                &format!(
                    "<remote ip=\"{}\" name=\"{}\" ssh=\"maybe\"/>",
                    s.a.ip(),
                    s.a.module()
                ),
                1,
            ),
            "ssh=\"maybe\"",
            "<remote ssh=\"maybe\">: must be \"true\" (this remote over ssh, host:dir) or \
             \"false\" (through an rsync daemon, host::module)",
        ),
        (
            good.replace(
                "  </sersync>",
                "    <deleteBrake percent=\"-1\"/>\n  </sersync>",
            ),
            "deleteBrake",
            "must be a whole number from 0 to 100; write e.g. percent=\"50\"",
        ),
        (
            good.replace(
                "  </sersync>\n",
                "    <plugin start=\"true\" name=\"command\"/>\n  </sersync>\n",
            )
            .replace("</head>\n", hook),
            "timeout=\"-1\"",
            "write e.g. timeout=\"60\"",
        ),
    ] {
        let line = bad
            .lines()
            .position(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("{marker} not in {bad}"))
            + 1;
        fs::write(s.dir.join("sersync.xml"), &bad).expect("write");
        for args in [&["-t", "-o", "sersync.xml"][..], &["-o", "sersync.xml"][..]] {
            let out = sersync2(&s.dir, args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{marker} {args:?}: {}",
                text(&out)
            );
            assert!(
                err.contains(&format!("sersync.xml:{line}: ")) && err.contains(says),
                "{marker} {args:?}: want line {line} and `{says}`:\n{err}"
            );
        }
    }
}
