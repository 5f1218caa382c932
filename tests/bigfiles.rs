//! Big files (`<bigFiles>`): a file above the threshold that grew goes as an append
//! (`--append-verify`), and with `inplace="true"` any other change of it is written in
//! place (`--inplace`); after any mix of appends, truncations and rewrites every mirror's
//! copy equals the source's. Real agents, real rsync daemons. A mirror's file written in
//! place keeps its inode; rsync's whole transfer renames a new copy over it (a new
//! inode): that is how these tests see which transfer ran.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use crate::support::*;

const BIG: &str = "logs/big.bin";

/// `n` bytes that differ from one `seed` to another, and along the file.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}

/// The config of `s` with `big` (a `<bigFiles .../>` element) in `<sersync>`.
fn conf_with(s: &Setup, big: &str) -> String {
    s.conf()
        .render()
        .replace("  </sersync>", &format!("    {big}\n  </sersync>"))
}

/// The agent on the config of `s` with `big` (a `<bigFiles .../>` element) in
/// `<sersync>`.
fn start(s: &Setup, big: &str) -> Agent {
    let text = conf_with(s, big);
    let config = s.dir.join("sersync.xml");
    fs::write(&config, text).expect("write sersync.xml");
    let args: Vec<&std::ffi::OsStr> = vec!["-n".as_ref(), "4".as_ref()];
    let mut agent = Agent::launch(&s.dir, &config, &args, s.dir.join("agent.err"));
    agent.wait_live();
    agent
}

/// Waits until both remotes equal the source and every push of it was booked (the agent
/// records what a big file's push landed once it ended, and a change made before that
/// makes its next push whole, which the inode checks would see).
fn settled(s: &Setup, agent: &mut Agent, step: &str) {
    s.wait(agent, step);
    let out = sersync2(
        &s.dir,
        &["--wait-synced", "-o", "sersync.xml", "--timeout", "60"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{step}: --wait-synced: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The mirrors' copies are still the files `first` names (written into, not replaced).
fn assert_same_file(s: &Setup, agent: &Agent, first: &[u64], step: &str) {
    let now = inodes(s);
    assert_eq!(
        now,
        first,
        "{step}: written into the mirrors' file, not a new copy; log:\n{}",
        agent.log()
    );
}

/// The inode of the big file on each remote.
fn inodes(s: &Setup) -> Vec<u64> {
    s.remotes()
        .iter()
        .map(|r| fs::metadata(r.join(BIG)).expect("the mirror's copy").ino())
        .collect()
}

fn append(s: &Setup, data: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(s.p(BIG))
        .expect("open to append");
    f.write_all(data).expect("append");
}

/// Writes `data` at `at` in the file, in place.
fn overwrite(s: &Setup, at: u64, data: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(s.p(BIG))
        .expect("open to write");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(data).expect("write");
}

fn truncate(s: &Setup, len: u64) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(s.p(BIG))
        .expect("open to truncate");
    f.set_len(len).expect("truncate");
}

// The ask: a big log appended by a little costs a little on each mirror, not a whole
// new copy; whatever else happens to the file (truncated, rewritten, appended after a
// rewrite), the mirrors end equal to it.
#[test]
fn appends_to_a_big_file_are_written_as_appends_and_the_mirrors_stay_equal() {
    let s = setup!();
    let mut agent = start(
        &s,
        r#"<bigFiles size="16K" append="true" inplace="false"/>"#,
    );
    s.write("small.txt", "small\n");
    s.write(BIG, bytes(64 << 10, 1));
    settled(&s, &mut agent, "the big file's first push (whole)");
    let first = inodes(&s);

    append(&s, &bytes(8 << 10, 2));
    settled(&s, &mut agent, "an append");
    assert_same_file(&s, &agent, &first, "an append");
    append(&s, &bytes(1, 3));
    settled(&s, &mut agent, "a one-byte append");
    assert_same_file(&s, &agent, &first, "a one-byte append");

    // Shorter: never an append (rsync would skip it), pushed whole.
    truncate(&s, 20 << 10);
    settled(&s, &mut agent, "a truncation");
    // Grown again from what that push landed: an append.
    let after_truncation = inodes(&s);
    append(&s, &bytes(3 << 10, 4));
    settled(&s, &mut agent, "an append after the truncation");
    assert_same_file(
        &s,
        &agent,
        &after_truncation,
        "an append after the truncation",
    );

    // The same length, other bytes in the middle: pushed whole.
    overwrite(&s, 10 << 10, &bytes(2 << 10, 5));
    settled(&s, &mut agent, "a rewrite in the middle");

    // Longer but not an append (its old bytes changed too): --append-verify's checksum
    // fails and rsync sends it again; the mirrors end equal.
    s.write(BIG, bytes(40 << 10, 6));
    settled(&s, &mut agent, "a longer rewrite");

    // Below the threshold and back above it; a small file beside it as ever.
    truncate(&s, 1000);
    s.write("small.txt", "small, again\n");
    settled(&s, &mut agent, "truncated below the threshold");
    append(&s, &bytes(30 << 10, 7));
    settled(&s, &mut agent, "grown above it again");
    for i in 0..5u8 {
        append(&s, &bytes(1 << 10, 8 + i));
    }
    settled(&s, &mut agent, "five appends in a row");
    agent.stop();
}

// With inplace="true" (and no appends), every change of a big file is written into the
// mirrors' own file: the same inode through rewrites, truncations and appends.
#[test]
fn with_inplace_a_big_file_s_changes_are_written_in_place_and_the_mirrors_stay_equal() {
    let s = setup!();
    let mut agent = start(
        &s,
        r#"<bigFiles size="16K" append="false" inplace="true"/>"#,
    );
    s.write(BIG, bytes(64 << 10, 1));
    settled(&s, &mut agent, "the big file's first push");
    let first = inodes(&s);

    overwrite(&s, 30 << 10, &bytes(1 << 10, 2));
    settled(&s, &mut agent, "a rewrite in the middle");
    assert_same_file(&s, &agent, &first, "a rewrite in the middle");

    truncate(&s, 40 << 10);
    settled(&s, &mut agent, "a truncation");
    assert_same_file(&s, &agent, &first, "a truncation");

    append(&s, &bytes(5 << 10, 3));
    settled(&s, &mut agent, "an append");
    assert_same_file(&s, &agent, &first, "an append");

    overwrite(&s, 0, &bytes(45 << 10, 4));
    append(&s, &bytes(2 << 10, 5));
    settled(&s, &mut agent, "rewritten whole and appended to");
    assert_same_file(&s, &agent, &first, "rewritten whole and appended to");
    agent.stop();
}

// Off (`start="false"`): every push is whole, as before (a new copy each time).
#[test]
fn with_big_files_off_an_append_is_pushed_whole() {
    let s = setup!();
    let mut agent = start(&s, r#"<bigFiles start="false"/>"#);
    s.write(BIG, bytes(64 << 10, 1));
    settled(&s, &mut agent, "the big file's first push");
    let first = inodes(&s);
    append(&s, &bytes(8 << 10, 2));
    settled(&s, &mut agent, "an append");
    let now = inodes(&s);
    assert!(
        now.iter().zip(&first).all(|(a, b)| a != b),
        "a whole transfer makes a new copy: {first:?} then {now:?}"
    );
    agent.stop();
}

// `-t` says what is in force, and a bad value is refused with the file, the line and
// what to write.
#[test]
fn the_config_check_says_how_big_files_go_and_refuses_bad_values() {
    let s = setup!();
    let config = s.dir.join("sersync.xml");
    for (element, says) in [
        (
            "",
            "big files: 64M or more pushed as appends when they grew (the rest whole)",
        ),
        (
            r#"<bigFiles size="1G" inplace="true"/>"#,
            "big files: 1G or more pushed as appends when they grew, in place otherwise",
        ),
        (
            r#"<bigFiles append="false" inplace="true"/>"#,
            "big files: 64M or more pushed in place",
        ),
        (
            r#"<bigFiles start="false"/>"#,
            "big files: off (every file pushed whole)",
        ),
    ] {
        fs::write(&config, conf_with(&s, element)).expect("write");
        let out = sersync2(&s.dir, &["-t", "-o", "sersync.xml"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(says),
            "{element}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = conf_with(&s, r#"<bigFiles size="64MB"/>"#);
    let line = bad
        .lines()
        .position(|l| l.contains("bigFiles"))
        .expect("the line")
        + 1;
    fs::write(&config, &bad).expect("write");
    let out = sersync2(&s.dir, &["-t", "-o", "sersync.xml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("sersync.xml:{line}: "))
            && err.contains(r#"<bigFiles size="64MB">: must be a number of bytes from 1 to 1P"#)
            && err.contains(r#"write e.g. size="64M""#),
        "{err}"
    );
}
