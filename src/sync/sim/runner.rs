//! The simulated rsync: every call the mirror makes lands here and is applied to
//! the model of its remote.

use super::*;

impl Sim {
    /// A copy of the source as it is now, for a full sync's file list (see
    /// `SimRunner::run`); `None` when there is no source to copy (the root replaced:
    /// the call then reads the source as it is when it lands).
    pub(super) fn file_list(&self, full: bool) -> Option<(tempfile::TempDir, u64)> {
        let mut st = self.lock();
        st.full_syncs += 1;
        let n = st.full_syncs;
        let parent = st.root.parent()?.to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix(&format!("list{n}-"))
            .tempdir_in(parent)
            .ok()?;
        copy_tree(&st.root, &dir.path().join("src")).ok()?;
        st.history.push(if full {
            format!("  (full sync #{n} lists the source)")
        } else {
            format!("  (push #{n} reads the source, lands later)")
        });
        Some((dir, n))
    }

    /// One command against the model remote it names; a full sync reads its file list
    /// from `list` (a copy of the source made when it started) when given.
    pub(super) fn apply(
        &self,
        program: &OsStr,
        argv: &[OsString],
        stdin: &[u8],
        list: Option<(&Path, u64)>,
    ) -> Outcome {
        let mut st = self.lock();
        let outcome = |status: i32, stderr: String| Outcome {
            status,
            stderr,
            elapsed: Duration::ZERO,
        };
        let ssh = program != "rsync";
        // Which remote: the destination (rsync) or the host (ssh mv).
        let t = if ssh {
            st.targets
                .iter()
                .position(|t| argv.iter().any(|a| a.as_bytes() == t.remote.ip.as_bytes()))
        } else {
            let dest = argv
                .last()
                .map(|a| a.as_bytes().to_vec())
                .unwrap_or_default();
            let (head, _) = model::split_dest(&dest);
            st.targets.iter().position(|t| t.dest().as_bytes() == head)
        };
        let Some(t) = t else {
            let why = format!("a command for no known remote: {program:?} {argv:?}");
            st.broken.get_or_insert(why.clone());
            return outcome(1, why);
        };
        let line = shown(program, argv);
        if st.down[t] {
            st.history.push(format!("  remote {t} refuses: {line}"));
            return outcome(
                if ssh { 255 } else { 10 },
                "rsync: failed to connect to 127.0.0.1: Connection refused (111)".into(),
            );
        }
        let root = list.map_or_else(|| st.root.clone(), |(l, _)| l.join("src"));
        let line = match list {
            Some((_, n)) => format!("(#{n}) {line}"),
            None => line,
        };
        if st.faults.hangs && !st.quiet && st.rng.chance(2) {
            // The call hangs: rsync's `--timeout` ends it (exit 30), a remote `mv` is
            // killed by the agent (-1). Nothing landed, or part of it: rsync's entries
            // up to some point of its file list (taken here in path order, each parent
            // before what is below it), the `mv` whole.
            let partial = st.rng.chance(50);
            let mut landed = 0;
            if partial {
                let mut after = st.remotes[t].clone();
                let ran = if ssh {
                    model::remote_mv(&mut after, argv)
                } else {
                    model::rsync_on(&root, &mut after, argv, stdin, st.faults.refusing)
                };
                if ran.stderr.starts_with("model:") {
                    let why = format!("{}: {line}", ran.stderr);
                    st.broken.get_or_insert(why);
                }
                if ssh {
                    landed = usize::from(st.remotes[t] != after);
                    st.remotes[t] = after;
                } else {
                    let changed: Vec<Vec<u8>> = st.remotes[t]
                        .keys()
                        .chain(after.keys())
                        .filter(|k| st.remotes[t].get(*k) != after.get(*k))
                        .cloned()
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let n = st.rng.below(changed.len() as u64 + 1) as usize;
                    for k in changed.into_iter().take(n) {
                        land(&mut st.remotes[t], &after, &k);
                        landed += 1;
                    }
                }
            }
            let (status, stderr) = if ssh {
                (-1, "ssh killed after 60s without an answer".to_owned())
            } else {
                (
                    30,
                    "[receiver] io timeout after 60 seconds -- exiting\nrsync error: timeout in data send/receive (code 30)".to_owned(),
                )
            };
            st.history.push(format!(
                "  remote {t} hangs until the timeout, exit {status} ({landed} entries landed): {line}"
            ));
            return outcome(status, stderr);
        }
        let refusing = st.faults.refusing;
        let ran = if ssh {
            model::remote_mv(&mut st.remotes[t], argv)
        } else {
            model::rsync_on(&root, &mut st.remotes[t], argv, stdin, refusing)
        };
        if ran.stderr.starts_with("model:") {
            let why = format!("{}: {line}", ran.stderr);
            st.broken.get_or_insert(why);
        }
        // Landed, but the connection timed out before rsync could say so.
        let status = if ran.status == 0 && !st.quiet && st.faults.timeouts && st.rng.chance(3) {
            30
        } else {
            ran.status
        };
        st.history
            .push(format!("  remote {t} exit {status}: {line}"));
        let excludes = st.excludes.clone();
        if let Some(k) = st.remotes[t]
            .iter()
            .find(|(k, n)| !is_mirrored(&excludes, k, **n == Node::Dir))
            .map(|(k, _)| k.clone())
        {
            let why = format!(
                "remote {t} holds {}, an excluded or temp name",
                String::from_utf8_lossy(&k)
            );
            st.broken.get_or_insert(why);
        }
        outcome(status, ran.stderr)
    }
}

/// The runner the simulated mirror calls for every rsync (and remote `mv`).
pub(super) struct SimRunner(pub(super) std::sync::Weak<Sim>);

impl Runner for SimRunner {
    fn run(
        &self,
        program: &OsStr,
        _cwd: &Path,
        argv: &[OsString],
        stdin: &[u8],
        _watch: Watch,
    ) -> Outcome {
        let failed = |status: i32, stderr: &str| Outcome {
            status,
            stderr: stderr.to_owned(),
            elapsed: Duration::ZERO,
        };
        let Some(sim) = self.0.upgrade() else {
            return failed(-1, "the simulation is over");
        };
        // A full sync reads the source as its file list when it starts; what it makes
        // on the remote (deleting there what its list lacks, sending what its list
        // holds) lands after the steps run meanwhile: the live pushes beside it
        // included (see `Ledger`'s module doc). The harshest case of rsync's own
        // timing, which lists and deletes directory by directory as it goes.
        let full = is_full_sync(argv);
        let list = full.then(|| sim.file_list(true)).flatten();
        // Other steps while this call starts (other pushes, changes, deliveries).
        let (before, reads) = {
            let mut st = sim.lock();
            st.depth += 1;
            let before = if st.depth > 3 { 0 } else { st.rng.below(3) };
            // A push of paths that read the source before them (`Faults::reads`).
            let reads =
                before > 0 && !full && program == "rsync" && st.faults.reads && st.rng.chance(40);
            // Such a call runs longer: more happens while it does.
            let before = if reads {
                before + st.rng.below(3)
            } else {
                before
            };
            (before, reads)
        };
        let list = match list {
            Some(l) => Some(l),
            None if reads => sim.file_list(false),
            None => None,
        };
        for _ in 0..before {
            sim.step(true);
        }
        let ran = sim.apply(
            program,
            argv,
            stdin,
            list.as_ref().map(|(d, n)| (d.path(), *n)),
        );
        drop(list);
        let after = {
            let mut st = sim.lock();
            if st.depth > 3 {
                0
            } else {
                st.rng.below(2)
            }
        };
        for _ in 0..after {
            sim.step(true);
        }
        sim.lock().depth -= 1;
        ran
    }
}

/// A full sync's command line (`./` whole, recursive), not a push of paths or a prune.
pub(super) fn is_full_sync(argv: &[OsString]) -> bool {
    argv.iter().any(|a| a == "./")
        && !argv
            .iter()
            .any(|a| a == "--no-recursive" || a == "--existing")
}

/// Copies the tree at `from` to `to` (made), keeping files' contents and mtimes and
/// links' targets, as the model reads them.
pub(super) fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    copy_linked(from, to, &mut std::collections::HashMap::new())
}

/// [`copy_tree`], keeping the names of one multi-linked file one file in the copy (a
/// full sync with `-H` reads its file list from it: names copied apart would reach
/// the remotes as files of their own; seed 49 of `all,linkwrites`).
fn copy_linked(
    from: &Path,
    to: &Path,
    copied: &mut std::collections::HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let m = std::fs::symlink_metadata(&src)?;
        if m.is_dir() {
            copy_linked(&src, &dst, copied)?;
        } else if m.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if m.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = copied.get(&(m.dev(), m.ino())) {
                    std::fs::hard_link(first, &dst)?;
                    continue;
                }
                copied.insert((m.dev(), m.ino()), dst.clone());
            }
            std::fs::copy(&src, &dst)?;
            let f = std::fs::File::options().write(true).open(&dst)?;
            f.set_times(
                std::fs::FileTimes::new()
                    .set_modified(m.modified()?)
                    .set_accessed(m.modified()?),
            )?;
        }
    }
    Ok(())
}

/// One entry of `after` made so in `remote` (a partial transfer): gone, or made, in
/// place of what was there and what was below it; not below what is not a directory.
pub(super) fn land(remote: &mut Tree, after: &Tree, k: &[u8]) {
    match after.get(k) {
        None => model::remove_tree(remote, k),
        Some(n) => {
            let parent_ok = match k.iter().rposition(|&b| b == b'/') {
                Some(i) => remote.get(&k[..i]) == Some(&Node::Dir),
                None => true,
            };
            if !parent_ok {
                return;
            }
            if !(remote.get(k) == Some(&Node::Dir) && *n == Node::Dir) {
                model::remove_tree(remote, k);
            }
            remote.insert(k.to_vec(), n.clone());
        }
    }
}
