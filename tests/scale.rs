//! Large trees and storms: the watch count status shows for a tree set up at start, and
//! a storm in one directory collapsing into one push of it (with a threshold lowered
//! through SERSYNC2_COLLAPSE_AT) that still leaves every remote equal to the source.

use std::fs;

use crate::support::*;

#[test]
fn status_counts_every_directory_of_the_tree_set_up_at_start() {
    let s = setup!();
    for top in 0..30 {
        for sub in 0..50 {
            fs::create_dir_all(s.p(format!("t{top:02}/s{sub:02}"))).expect("mkdir");
        }
    }
    let dirs = 1 + 30 + 30 * 50; // the root too
    let port = free_port("127.0.0.1");
    let mut conf = s.conf();
    conf.status_port = Some(port);
    let mut agent = s.agent_with(&conf, &[]);
    let mut last = String::new();
    wait_until("status counts every directory", DEADLINE, || {
        agent.assert_running();
        let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        drop(stream);
        let (_, body) = http_head_body(port, "/status");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        last = body;
        v["watches"].as_u64() == Some(dirs as u64)
    });
    assert!(last.contains("\"watches\""), "{last}");
    // One more directory is one more watch.
    fs::create_dir(s.p("t00/new")).expect("mkdir");
    wait_until("status counts the new directory", DEADLINE, || {
        let (_, body) = http_head_body(port, "/status");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["watches"].as_u64() == Some(dirs as u64 + 1)
    });
    agent.stop();
}

#[test]
fn a_storm_in_one_directory_collapses_and_every_remote_ends_equal() {
    let s = setup!();
    fs::create_dir_all(s.p("storm")).expect("mkdir");
    s.write("storm/old-1.txt", "old\n");
    s.write("storm/old-2.txt", "old\n");
    s.write("keep/other.txt", "other\n");
    let conf = s.conf();
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, conf.render()).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-r", "-o"])
        .arg(&conf_path)
        .env("SERSYNC2_COLLAPSE_AT", "50");
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    s.wait(&mut agent, "the first full sync");
    // The agent is stopped while the storm is written, so the kernel holds all of it
    // and the agent reads it at once: more than 50 entries wait in storm/ for sure.
    agent.signal(libc::SIGSTOP);
    for i in 0..400 {
        s.write(format!("storm/f{i:04}.txt"), format!("{i}\n"));
    }
    fs::remove_file(s.p("storm/old-1.txt")).expect("rm");
    fs::create_dir(s.p("storm/sub")).expect("mkdir");
    s.write("storm/sub/deep.txt", "deep\n");
    s.write("keep/other.txt", "changed\n");
    agent.signal(libc::SIGCONT);
    s.wait(&mut agent, "the storm on every remote");
    let log = agent.log();
    assert!(
        log.contains("collapsed into one push of the directory's entries"),
        "the collapse is logged:\n{}",
        tail(&log, 40)
    );
    // Later single changes in the directory are pushed as before.
    s.write("storm/after.txt", "after\n");
    s.wait(&mut agent, "a change after the storm");
    agent.stop();
}

// A collapsed push sent the directory's entries as they were, temp and excluded names
// included, and they stayed on the remotes for good. Now the names the filter keeps out
// are kept out of a listing push too.
#[test]
fn a_collapsed_storm_pushes_no_temp_or_excluded_name() {
    let s = setup!();
    fs::create_dir_all(s.p("storm")).expect("mkdir");
    let mut conf = s.conf();
    conf.excludes = Some(vec![r"(.*)\.tmp".into()]);
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, conf.render()).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o"])
        .arg(&conf_path)
        .env("SERSYNC2_COLLAPSE_AT", "50");
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    agent.signal(libc::SIGSTOP);
    for i in 0..200 {
        s.write(format!("storm/f{i:04}.txt"), format!("{i}\n"));
    }
    for i in 0..20 {
        s.write(format!("storm/.f{i}.swp"), "swap\n");
        s.write(format!("storm/f{i}~"), "backup\n");
        s.write(format!("storm/f{i}.tmp"), "tmp\n");
    }
    agent.signal(libc::SIGCONT);
    let kept_out =
        |name: &str| name.ends_with(".swp") || name.ends_with('~') || name.ends_with(".tmp");
    wait_until("the storm's files on every remote", DEADLINE, || {
        s.remotes().iter().all(|r| {
            fs::read_dir(r.join("storm"))
                .map(|d| {
                    d.flatten()
                        .filter(|e| !kept_out(&e.file_name().to_string_lossy()))
                        .count()
                })
                .unwrap_or(0)
                == 200
        })
    });
    assert!(
        agent.log().contains("collapsed into one push"),
        "{}",
        tail(&agent.log(), 30)
    );
    for r in s.remotes() {
        let leaked: Vec<String> = fs::read_dir(r.join("storm"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| kept_out(n))
            .collect();
        assert!(leaked.is_empty(), "{r:?} got {leaked:?}");
    }
    agent.stop();
}

// `rm -rf app && cp -a build app` (a deploy) left the old tree's files below app/ on
// every remote, and --wait-synced said synced: the delete and the new tree merged into a
// push of the directory as itself. A directory that goes away now goes out as its
// listing, and a listing of a directory that holds directories is preceded by a call
// that deletes what the remote holds below it beyond the source.
#[test]
fn a_directory_deleted_and_made_again_ends_equal_on_every_remote() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    let build = s.dir.mkdir_p("build");
    for v in 1..=5 {
        let _ = fs::remove_dir_all(&build);
        for (dir, name) in [("css", "app.css"), ("js", "app.js"), ("", "index.html")] {
            let d = build.join(dir);
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join(format!("v{v}.{name}")), format!("{v}\n")).expect("write");
        }
        fs::create_dir_all(build.join(format!("js/only-v{v}/deeper"))).expect("mkdir");
        replace_by_copy(&build, &s.p("app"));
        s.wait(&mut agent, &format!("deploy v{v}"));
    }
    // The smaller form: the directory made again at once, with a file below.
    s.write("d/old/one.txt", "1\n");
    s.wait(&mut agent, "d/ before");
    fs::remove_dir_all(s.p("d")).expect("rm d");
    fs::create_dir_all(s.p("d/sub")).expect("mkdir d/sub");
    s.write("d/sub/new.txt", "new\n");
    s.wait(&mut agent, "d/ made again");
    agent.stop();
}

// Found by an outside attack run: a directory replaced by a file of the same name while
// changes below it waited (`rm -rf app && echo > app`): the remotes got the file, but
// the waiting paths below it failed (rsync exit 23: not a directory) and stayed owed,
// retried for as long as `app` was a file; `--wait-synced` timed out and the lag grew.
#[test]
fn a_directory_replaced_by_a_file_leaves_nothing_owed() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    for round in 0..3 {
        for i in 0..8 {
            for j in 0..15 {
                s.write(format!("app/sub{i}/f{j}"), format!("v{round} {i} {j}\n"));
            }
        }
        s.wait(&mut agent, "app as a directory");
        for i in 0..8 {
            for j in 0..15 {
                s.write(
                    format!("app/sub{i}/f{j}"),
                    format!("rewritten {round} {i} {j}\n"),
                );
            }
        }
        std::fs::remove_dir_all(s.p("app")).expect("rm -rf app");
        std::fs::write(s.p("app"), "now a file\n").expect("app as a file");
        let out = wait_synced(&s.dir, 30);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            agent.log()
        );
        for r in s.remotes() {
            trees_equal(&s.src, &r).unwrap_or_else(|d| panic!("round {round}: {d}"));
        }
        std::fs::remove_file(s.p("app")).expect("rm app");
    }
    agent.stop();
}

// Found by an outside attack run: the old release moved out of the tree and the new one
// moved in under the same name (`mv src/app /outside/old && mv /outside/new src/app`)
// left files of the old release on every remote, and `--wait-synced` said synced.
#[test]
fn a_release_moved_out_and_another_moved_in_ends_equal() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    for round in 0..4 {
        for i in 0..4 {
            s.write(
                format!("app/sub{i}/old-{round}-{i}.txt"),
                format!("old {round} {i}\n"),
            );
        }
        s.wait(&mut agent, "the old release");
        // With directories in it, and without (then only the remotes have directories
        // below app/).
        s.dir.write("new/index.html", format!("new {round}\n"));
        if round % 2 == 0 {
            for i in 0..4 {
                s.dir.write(
                    format!("new/sub{i}/new-{round}-{i}.txt"),
                    format!("new {round} {i}\n"),
                );
            }
        }
        std::fs::rename(s.p("app"), s.dir.join("old")).expect("mv app out");
        std::fs::rename(s.dir.join("new"), s.p("app")).expect("mv new in");
        let out = wait_synced(&s.dir, 60);
        assert_eq!(out.status.code(), Some(0), "round {round}: {out:?}");
        for r in s.remotes() {
            trees_equal(&s.src, &r)
                .unwrap_or_else(|d| panic!("round {round}: {d}\n{}", agent.log()));
        }
        std::fs::remove_dir_all(s.dir.join("old")).expect("rm old");
    }
    agent.stop();
}

// Found by an outside attack run: with deletes off, a directory replaced by a file of
// the same name could not be pushed (rsync would have to delete the directory) and was
// retried for ever; `--wait-synced` never returned 0 while the file existed.
#[test]
fn with_deletes_off_a_directory_replaced_by_a_file_is_left_as_it_is() {
    let s = setup!();
    let mut conf = s.conf();
    conf.delete = false;
    let mut agent = s.agent_with(&conf, &[]);
    s.write("app/sub/f", "in the directory\n");
    s.write("other.txt", "1\n");
    wait_until("app on both remotes", DEADLINE, || {
        agent.assert_running();
        s.remotes().iter().all(|r| r.join("app/sub/f").is_file())
    });
    std::fs::remove_dir_all(s.p("app")).expect("rm -rf app");
    std::fs::write(s.p("app"), "now a file\n").expect("app as a file");
    s.write("other.txt", "2\n");
    let out = wait_synced(&s.dir, 30);
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", agent.log());
    for r in s.remotes() {
        assert!(
            r.join("app/sub/f").is_file(),
            "deletes are off: the directory stays"
        );
        assert_eq!(std::fs::read(r.join("other.txt")).expect("other"), b"2\n");
    }
    assert!(agent.log().contains("deletes are off"), "{}", agent.log());
    agent.stop();
}

// Found by an outside attack run: remote b down during a deploy (`rm -rf app && cp -a
// build app`), the agent stopped and started again without -r once b was back: b ended
// level, but the files owed in the replaced directories stayed owed (merged into the
// directories' listings, paid only with the timed replay an hour later), and
// `--wait-synced` failed all that time.
#[test]
fn a_deploy_owed_to_a_remote_that_was_down_is_paid_after_a_restart() {
    let mut s = setup!();
    let conf = s.conf();
    let tree = |root: &str, tag: &str| {
        for i in 0..6 {
            for j in 0..30 {
                s.dir
                    .write(format!("{root}/s{i}/f{j}"), format!("{tag} {i} {j}\n"));
            }
        }
    };
    let mut agent = s.agent_with(&conf, &[]);
    tree("src/app", "v1");
    tree("build", "v2");
    s.wait(&mut agent, "app v1");
    s.b.stop();
    replace_by_copy(&s.dir.join("build"), &s.p("app"));
    wait_trees_equal(&s.src, s.a.data_dir(), DEADLINE);
    agent.stop();
    s.b.restart();
    let mut agent = s.agent_with(&conf, &[]);
    let out = wait_synced(&s.dir, 60);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    for r in s.remotes() {
        trees_equal(&s.src, &r).unwrap_or_else(|d| panic!("{d}"));
    }
    agent.stop();
}

/// Five releases of `d`, each 200 directories of a few files named after the release
/// (half of the directories keep their names from release to release, half are the
/// release's own), deployed back to back with `rm -rf d && cp -a build/d d`.
fn deploy_five_releases(s: &Setup) {
    let build = s.dir.join("build");
    for v in 1..=5 {
        let _ = fs::remove_dir_all(&build);
        for k in 0..200 {
            let d = if k % 2 == 0 {
                build.join(format!("d/m{k:03}"))
            } else {
                build.join(format!("d/r{v}-m{k:03}"))
            };
            fs::create_dir_all(&d).expect("mkdir");
            for f in 0..3 {
                fs::write(d.join(format!("v{v}-{f}.txt")), format!("{v} {k} {f}\n"))
                    .expect("write");
            }
            fs::write(d.join("same.txt"), format!("release {v}\n")).expect("write");
        }
        replace_by_copy(&build.join("d"), &s.p("d"));
    }
}

// Reported by an outside attack run: deploys that replace directories (`rm -rf d && cp
// -a build/d d`, five releases of 200 directories, deletes on) left one to four files of
// an older release on a remote for good, with no warning (`--verify` then reported them
// as extra). The barrier's promise is checked at once: synced means equal.
#[test]
fn five_releases_deployed_back_to_back_leave_no_old_file() {
    let s = setup!();
    let mut agent = s.agent(&[]);
    s.write("keep.txt", "keep\n");
    s.wait(&mut agent, "before the releases");
    deploy_five_releases(&s);
    let out = wait_synced(&s.dir, 120);
    assert!(out.status.success(), "{}", text(&out));
    let snapshot = tree_snapshot(&s.src);
    for remote in s.remotes() {
        snapshots_equal(&snapshot, &tree_snapshot(&remote)).unwrap_or_else(|e| {
            panic!(
                "--wait-synced returned ({}) but {} differs: {e}\n{}",
                text(&out),
                remote.display(),
                tail(&agent.log(), 60)
            )
        });
    }
    agent.stop();
}
