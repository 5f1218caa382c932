//! The watch root removed, renamed away or replaced under a running agent, and a
//! filesystem mounted inside the watched tree after start. Real daemons, real inotify,
//! a real tmpfs mount (skipped where mounting is not permitted).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn root_state(port: u16) -> String {
    status_json(port)["roots"][0]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Every path under `dir` whose name contains `needle`.
fn names_with(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                out.push(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out
}

// Broke: after `rm -rf root; mkdir root` the agent ran on, watching nothing, and no
// change in the new root ever reached the remotes.
#[test]
fn root_removed_and_recreated_is_rewatched_and_fully_synced() {
    let s = setup!();
    s.write("a/one.txt", "1\n");
    s.write("two.txt", "2\n");
    let port = free_port("127.0.0.1");
    let mut conf = s.conf();
    conf.status_port = Some(port);
    let mut agent = s.agent_with(&conf, &["-r"]);
    s.wait(&mut agent, "initial tree");
    assert_eq!(root_state(port), "ok");

    remove_dir_all(&s.src);
    wait_until("status shows the root missing", DEADLINE, || {
        agent.assert_running();
        root_state(port) == "missing"
    });
    // The state is set before the error line is written: wait for the line too.
    wait_until("the log names the removed root", DEADLINE, || {
        agent.log().contains("was removed")
    });
    // `--status` refused to run while the root was missing (the config's check of the
    // watch directory), exactly when an operator asks.
    let out = sersync2(&s.dir, &["-o", "sersync.xml", "--status"]);
    assert_ne!(out.status.code(), Some(2), "--status: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("missing"),
        "--status shows the root missing: {}",
        text(&out)
    );
    assert!(
        agent.log().contains("was removed"),
        "the log names the removed root:\n{}",
        tail(&agent.log(), 40)
    );

    // Made again with what it holds (an empty root found again is held by the brake on
    // mass deletes: tests/brake.rs).
    let again = s.dir.mkdir_p("src.again");
    s.dir.write("src.again/new.txt", "new\n");
    rename(&again, &s.src);
    // With delete on, the remotes end equal to the new tree: the old files are gone.
    s.wait(&mut agent, "the new root, fully synced");
    wait_until("status shows the root ok again", DEADLINE, || {
        root_state(port) == "ok"
    });
    // The new root is watched live, directories included.
    s.write("later/deep.txt", "deep\n");
    s.wait(&mut agent, "a later change in the new root");
    agent.stop();
}

// Broke: the deploy `mv root root.old; mv root.new root` logged nothing and left the
// agent watching the old tree, so the new one was never synced.
#[test]
fn root_renamed_away_and_replaced_by_a_new_tree_is_synced() {
    let s = setup!();
    s.write("old/page.html", "old\n");
    s.write("index.html", "old\n");
    let mut agent = s.agent(&["-r"]);
    s.wait(&mut agent, "initial tree");

    let new = s.dir.mkdir_p("src.new");
    s.dir.write("src.new/index.html", "new index\n");
    s.dir.write("src.new/assets/app.js", "js\n");
    rename(&s.src, s.dir.join("src.old"));
    rename(&new, &s.src);
    s.wait(&mut agent, "the remotes equal the new tree");
    assert!(
        agent.log().contains("renamed or moved away") || agent.log().contains("replaced"),
        "the log names the replaced root:\n{}",
        tail(&agent.log(), 40)
    );
    s.write("assets/later.css", "css\n");
    s.write("fresh/x.txt", "x\n");
    s.wait(&mut agent, "a later change in the new root");
    agent.stop();
}

// Broke: a root renamed away kept its watches, so its events (now of another tree)
// were still read as changes of the path.
#[test]
fn edits_in_the_old_root_after_mv_are_not_pushed() {
    let s = setup!();
    s.write("sub/keep.txt", "keep\n");
    let mut conf = s.conf();
    // Delete off: nothing the full sync of the new root does could hide a leaked push.
    conf.delete = false;
    let mut agent = s.agent_with(&conf, &["-r"]);
    s.wait(&mut agent, "initial tree");

    let old = s.dir.join("src.old");
    rename(&s.src, &old);
    wait_until("the agent notices the root moved away", DEADLINE, || {
        agent.assert_running();
        agent.log().contains("renamed or moved away")
    });
    fs::write(old.join("leak.txt"), "leak\n").expect("write in the old root");
    fs::write(old.join("sub/leak2.txt"), "leak\n").expect("write in the old root");
    fs::write(old.join("sub/keep.txt"), "leaked edit\n").expect("edit in the old root");
    fs::create_dir(old.join("leakdir")).expect("mkdir in the old root");

    let new = s.dir.mkdir_p("src.new");
    s.dir.write("src.new/marker.txt", "marker\n");
    rename(&new, &s.src);
    s.write("after.txt", "after\n");
    s.wait_superset_within(&mut agent, "the new root's files arrive", DEADLINE);

    for r in s.remotes() {
        let leaked = names_with(&r, "leak");
        assert!(leaked.is_empty(), "pushed from the old root: {leaked:?}");
        assert_eq!(
            fs::read_to_string(r.join("sub/keep.txt")).expect("keep.txt stays"),
            "keep\n",
            "the old root's edit reached {}",
            r.display()
        );
    }
    let log = agent.log();
    assert!(
        !log.contains("leak"),
        "events of the old root were still read:\n{}",
        tail(&log, 60)
    );
    agent.stop();
}

/// Unmounts (lazily) on drop, so a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

// Broke: a filesystem mounted inside the tree after start was never synced, with no
// warning: the watch stayed on the directory it covered.
#[test]
fn tmpfs_mounted_inside_the_tree_is_watched_and_pushed() {
    let s = setup!();
    s.write("top.txt", "top\n");
    s.write("mnt/under.txt", "covered by the mount\n");
    let mut agent = s.agent(&["-r"]);
    s.wait(&mut agent, "initial tree");

    let point = s.p("mnt");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&point)
        .output();
    let _guard = match mounted {
        Ok(o) if o.status.success() => Mounted(point.clone()),
        Ok(o) => {
            eprintln!(
                "SKIP tmpfs_mounted_inside_the_tree_is_watched_and_pushed: mount is not permitted here ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!(
                "SKIP tmpfs_mounted_inside_the_tree_is_watched_and_pushed: cannot run mount ({e})"
            );
            return;
        }
    };
    s.write("mnt/a.txt", "on tmpfs\n");
    s.write("mnt/d/b.txt", "deeper on tmpfs\n");
    // With delete on, the covered file leaves the remotes: the source shows the mount.
    s.wait(&mut agent, "the mount's files arrive");
    assert!(
        agent.log().contains("tmpfs filesystem was mounted on"),
        "the log names the mount:\n{}",
        tail(&agent.log(), 40)
    );
    s.write("mnt/a.txt", "edited on tmpfs\n");
    s.write("mnt/d/c.txt", "new on tmpfs\n");
    s.wait(&mut agent, "a later edit in the mount arrives");

    let out = Command::new("umount")
        .arg(&point)
        .output()
        .expect("run umount");
    assert!(
        out.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait(&mut agent, "after the unmount, what it covered is back");
    agent.stop();
}

// Found by an outside run: `--wait-synced` while the watch root was deleted waited for
// its whole timeout, then said only that the remotes were behind. Nothing is pushed
// from a root that is gone, so the barrier cannot pass: it answers at once (exit 1),
// saying the watch root is gone.
#[test]
fn wait_synced_while_the_root_is_gone_says_so_at_once() {
    let s = setup!();
    s.write("one.txt", "1\n");
    let mut agent = s.agent(&["-r"]);
    s.wait(&mut agent, "initial tree");
    remove_dir_all(&s.src);
    wait_until("the log names the removed root", DEADLINE, || {
        agent.assert_running();
        agent.log().contains("was removed")
    });
    let timeout = 300;
    let started = std::time::Instant::now();
    let out = wait_synced(&s.dir, timeout);
    let took = started.elapsed();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("watch root") && all.contains(&s.src.display().to_string()),
        "names the watch root: {all}"
    );
    assert!(
        all.contains("missing") || all.contains("does not exist"),
        "says it is gone: {all}"
    );
    assert!(!all.contains("not synced within"), "not a timeout: {all}");
    assert!(
        took < std::time::Duration::from_secs(timeout as u64 / 2),
        "answered in {took:?}, not at the end of its {timeout}s timeout: {all}"
    );
    agent.stop();
}
