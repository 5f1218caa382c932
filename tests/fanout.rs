//! Many remotes and relay trees: a hung remote among several holds back only itself,
//! and a mirror that runs its own agent over its module path passes every change on,
//! never rsync's temp files. Real agents, real rsync daemons, real inotify.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// Long enough for a loaded 2-core machine; nothing here depends on speed.
const FAN_DEADLINE: Duration = Duration::from_secs(60);

/// Starts `sersync2 -o sersync.xml` with the default worker count (no `-n`).
fn start_default_workers(dir: &Dir, conf: &Conf) -> Agent {
    let path = dir.join("sersync.xml");
    fs::write(&path, conf.render()).expect("write sersync.xml");
    let mut cmd = command(dir);
    cmd.arg("-o").arg(&path);
    let mut agent = Agent::spawn(cmd, dir.join("agent.err"));
    agent.wait_live();
    agent
}

/// Is this file name one of rsync's temporary names (`.name.XXXXXX`)?
fn rsync_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    match rest.rsplit_once('.') {
        Some((stem, suffix)) => {
            !stem.is_empty()
                && suffix.len() == 6
                && suffix.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// The paths a daemon's transfer log says it received (`recv` lines).
fn received(daemon: &RsyncDaemon) -> Vec<String> {
    daemon
        .log()
        .lines()
        .filter_map(|l| {
            let (_, after) = l.split_once(" recv ")?;
            // `recv HOST [IP] MODULE (USER) PATH SIZE`
            let (_, path) = after.split_once(") ")?;
            let path = path.rsplit_once(' ').map_or(path, |(p, _)| p);
            Some(path.to_owned())
        })
        .collect()
}

#[test]
fn the_rsync_temp_name_check_of_this_test_matches_rsyncs_names() {
    assert!(rsync_temp_name(".a.txt.Xy12zQ"));
    assert!(rsync_temp_name(".big.bin.abcdef"));
    assert!(!rsync_temp_name("a.txt"));
    assert!(!rsync_temp_name(".htaccess"));
    assert!(!rsync_temp_name(".a.txt.toolong7"));
}

// Broke: with ten workers and more remotes, remotes waited for free workers, and a
// remote that accepted connections and never answered held workers the others needed.
#[test]
fn one_hung_remote_among_five_holds_back_only_itself() {
    let ips = [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
    ];
    let daemons = RsyncDaemon::start_many(&ips);
    let dir = test_dir!();
    let src = dir.mkdir_p("src");
    let refs: Vec<&RsyncDaemon> = daemons.iter().collect();
    let mut conf = Conf::daemons(&src, &refs, &dir.join("fail.log"));
    let port = free_port("127.0.0.1");
    conf.status_port = Some(port);
    let mut agent = start_default_workers(&dir, &conf);
    assert!(
        agent.log().contains("10 workers"),
        "five remotes get the default of 10 workers:\n{}",
        agent.log()
    );

    dir.write("src/before.txt", "before\n");
    for d in &daemons {
        wait_trees_equal(&src, d.data_dir(), FAN_DEADLINE);
    }

    // The last daemon hangs: the kernel accepts its connections, nobody answers.
    let hung = &daemons[4];
    hung.pause();
    // Changes one after the other (each its own push), more than the hung remote's
    // share of the workers could carry.
    for i in 0..12 {
        dir.write(format!("src/d{}/f{i}.txt", i % 3), format!("change {i}\n"));
        wait_until(
            &format!("change {i} on the four remotes that answer"),
            FAN_DEADLINE,
            || {
                agent.assert_running();
                daemons[..4]
                    .iter()
                    .all(|d| d.data_dir().join(format!("d{}/f{i}.txt", i % 3)).is_file())
            },
        );
    }
    for d in &daemons[..4] {
        trees_equal(&src, d.data_dir()).expect("the remotes that answer are level");
    }
    let mut last = serde_json::Value::Null;
    wait_until(
        "status shows the hung remote behind and the others level",
        FAN_DEADLINE,
        || {
            last = status_json(port);
            let r = &last["remotes"];
            (0..4).all(|i| {
                r[i]["lag_seconds"].as_f64() == Some(0.0)
                    && r[i]["longest_push_seconds"].as_f64() == Some(0.0)
            }) && r[4]["lag_seconds"].as_f64().unwrap_or(0.0) > 0.0
                && r[4]["pending"].as_u64().unwrap_or(0) >= 1
                // Its call hangs: status says how long it has run.
                && r[4]["longest_push_seconds"].as_f64().unwrap_or(0.0) > 0.5
        },
    );
    assert_eq!(
        last["remotes"][4]["remote"],
        format!("{}::{}", hung.ip(), hung.module()).as_str(),
        "{last}"
    );

    // Once it answers again, it catches up on its own.
    hung.resume();
    wait_trees_equal(&src, hung.data_dir(), FAN_DEADLINE);
    agent.stop();
}

// Broke (what a relay must never do): a mirror that passes changes on saw the rsync
// receiver's temp files and renames, and could push a `.name.XXXXXX` on or push twice.
#[test]
fn a_relay_of_two_hops_converges_and_passes_on_no_rsync_temp_name() {
    let a = RsyncDaemon::start("127.0.0.1");
    let b = RsyncDaemon::start("127.0.0.2");
    let dir = test_dir!();
    let src = dir.mkdir_p("src");
    let hop1 = test_dir!();
    let hop2 = test_dir!();
    // Agent 1: the source to daemon A. Agent 2: daemon A's module path to daemon B.
    let conf1 = Conf::daemons(&src, &[&a], &hop1.join("fail.log"));
    let mut agent1 = start_default_workers(&hop1, &conf1);
    let conf2 = Conf::daemons(&a.data_dir(), &[&b], &hop2.join("fail.log"));
    let mut agent2 = start_default_workers(&hop2, &conf2);

    let converge = |agent1: &mut Agent, agent2: &mut Agent, step: &str| {
        wait_until(
            &format!("{step}: B equals the source"),
            FAN_DEADLINE,
            || {
                agent1.assert_running();
                agent2.assert_running();
                trees_equal(&src, b.data_dir()).is_ok() && trees_equal(&src, a.data_dir()).is_ok()
            },
        );
    };

    // Created: files (one large enough that rsync's temp file lives a while on A), a
    // directory tree.
    dir.write("src/a.txt", "a\n");
    dir.write("src/big.bin", vec![7u8; 8 << 20]);
    for i in 0..20 {
        dir.write(format!("src/tree/sub{}/f{i}.txt", i % 4), format!("f{i}\n"));
    }
    converge(&mut agent1, &mut agent2, "created");
    // Modified.
    dir.write("src/a.txt", "a, modified\n");
    dir.write("src/big.bin", vec![9u8; 8 << 20]);
    dir.write("src/tree/sub1/f1.txt", "f1, modified\n");
    converge(&mut agent1, &mut agent2, "modified");
    // Renamed: a file and a directory.
    fs::rename(src.join("a.txt"), src.join("a2.txt")).expect("rename a file");
    fs::rename(src.join("tree/sub2"), src.join("tree/sub2-renamed")).expect("rename a dir");
    converge(&mut agent1, &mut agent2, "renamed");
    // Deleted: a file and a directory.
    fs::remove_file(src.join("big.bin")).expect("delete a file");
    fs::remove_dir_all(src.join("tree/sub3")).expect("delete a dir");
    converge(&mut agent1, &mut agent2, "deleted");
    trees_equal(&src, b.data_dir()).expect("B ends equal to the source");

    let got = received(&b);
    assert!(
        !got.is_empty(),
        "B's transfer log lists what it received:\n{}",
        b.log()
    );
    let temps: Vec<&String> = got
        .iter()
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| rsync_temp_name(&n.to_string_lossy()))
        })
        .collect();
    assert!(
        temps.is_empty(),
        "rsync temp names reached B: {temps:?}\nB's log:\n{}\nhop 2's log:\n{}",
        b.log(),
        tail(&agent2.log(), 40)
    );
    agent2.stop();
    agent1.stop();
}
