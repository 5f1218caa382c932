//! Making remotes equal to the tree: targets, the one job type, the pending set per
//! remote, rsync argument vectors and runs, the fail log, and the workers.
//!
//! Changes come in through [`intake`] (the filter thread: temp names, excludes, event
//! switches, merging into the pending sets) and leave through the workers in
//! [`workers`]; what fails goes to the fail log in [`faillog`] and is tried again on
//! the [`backoff`] schedule ([`recovery`]). [`version`] checks the rsync on PATH.

pub mod backoff;
pub mod bigfiles;
pub mod bisect;
pub mod cause;
pub mod faillog;
pub mod index;
pub mod intake;
pub mod job;
pub mod ledger;
pub mod links;
pub mod lockorder;
pub mod progress;
pub mod queue;
pub mod recovery;
pub mod rsync;
#[cfg(test)]
mod sim;
pub mod verify;
pub mod version;
pub mod workers;

pub use faillog::FailLog;
pub use job::{Job, RemoteId};
pub use queue::Queue;
pub use rsync::Target;
pub use workers::{AfterPush, Landed, Mirror, Snapshot};

use crate::config::Config;

/// One target per (watch root, remote), in config order.
pub fn targets(config: &Config) -> Vec<Target> {
    let full_excludes = config
        .crontab
        .as_ref()
        .map(|c| c.excludes.clone())
        .unwrap_or_default();
    let filter_globs = crate::filter::Excludes::new(config.excludes.clone()).rsync_globs();
    let filter_rules = config.rules.rsync_args();
    config
        .roots
        .iter()
        .flat_map(|root| {
            let full_excludes = full_excludes.clone();
            let filter_globs = filter_globs.clone();
            let filter_rules = filter_rules.clone();
            root.remotes
                .iter()
                .enumerate()
                .map(move |(i, remote)| Target {
                    root: root.path.clone(),
                    remote: remote.clone(),
                    opts: config.rsync_for(root, i).clone(),
                    delete: config.events.delete,
                    full_excludes: full_excludes.clone(),
                    filter_globs: filter_globs.clone(),
                    filter_rules: filter_rules.clone(),
                    own: Vec::new(),
                    ssh_control: None,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    use super::*;

    fn words(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    // Every call a remote gets (live pushes, full syncs, trees, listings' clean-up, the
    // probe, renames, the remote `mv` and closing the shared connection over ssh) is
    // built from its own options; what it does not set is <rsync>'s.
    #[test]
    fn each_remote_s_calls_carry_its_own_options() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let pass = d.path().join("b.pas");
        std::fs::write(&pass, "pw\n").expect("write");
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let text = format!(
            r#"<head><sersync><localpath watch="{}">
<remote ip="10.0.0.1" name="a"/>
<remote ip="10.0.0.2" name="b" port="8730" user="bee" passwordfile="{}" params="--bwlimit=2000" timeout="30"/>
<remote ip="10.0.0.3" name="/srv/c" ssh="true" sshCommand="ssh -i /k" port="2222" user="sync" params="-z"/>
</localpath><rsync><commonParams params="-a"/><userDefinedPort start="true" port="874"/></rsync></sersync></head>"#,
            d.path().display(),
            pass.display()
        );
        let config = crate::config::parse(Path::new("t.xml"), text.as_bytes()).expect("loads");
        let mut ts = targets(&config);
        let dir = PathBuf::from("/run/x/ssh-1");
        ts[2].ssh_control = Some(dir.clone());
        let jobs = [
            Job::Paths(vec![job::Entry::plain(PathBuf::from("f"))]),
            Job::Full,
        ];
        for job in &jobs {
            let a = words(&ts[0].argv(job, &[]).0);
            assert!(a.contains(&"--port=874".to_owned()), "{a:?}");
            assert!(!a.iter().any(|w| w.starts_with("--password-file")), "{a:?}");
            assert_eq!(a.last().map(String::as_str), Some("10.0.0.1::a"));

            let b = words(&ts[1].argv(job, &[]).0);
            for w in [
                "--port=8730".to_owned(),
                format!("--password-file={}", pass.display()),
                "--bwlimit=2000".to_owned(),
                "--timeout=30".to_owned(),
            ] {
                assert!(b.contains(&w), "{w} not in {b:?}");
            }
            assert!(!b.contains(&"--port=874".to_owned()), "{b:?}");
            assert_eq!(b.last().map(String::as_str), Some("bee@10.0.0.2::b"));

            let c = words(&ts[2].argv(job, &[]).0);
            let e = c.iter().position(|w| w == "-e").expect("-e");
            assert!(
                c[e + 1].starts_with("ssh -i /k -p 2222 -l sync -o ConnectTimeout=10")
                    && c[e + 1].contains("ControlPath=/run/x/ssh-1/%C"),
                "{c:?}"
            );
            assert!(c.contains(&"-z".to_owned()), "{c:?}");
            assert!(!c.iter().any(|w| w.starts_with("--port")), "{c:?}");
            assert_eq!(c.last().map(String::as_str), Some("10.0.0.3:/srv/c"));
        }
        let probe = words(&ts[1].probe_argv());
        assert!(probe.contains(&"--port=8730".to_owned()), "{probe:?}");
        let tree =
            words(&ts[1].argv_with_args(&Job::Paths(vec![job::Entry::tree(PathBuf::from("d"))])));
        assert!(tree.contains(&"--bwlimit=2000".to_owned()), "{tree:?}");
        let (prune, _) = ts[1].prune_argv(&[PathBuf::from("d")], &[]);
        assert!(words(&prune).contains(&"--timeout=30".to_owned()));
        let renames = ts[1]
            .rename_argvs(Path::new("x"), Path::new("y"), false, &[])
            .expect("a rename");
        assert!(words(&renames[0]).contains(&"--port=8730".to_owned()));
        // Over ssh: the remote mv and the connection's close use the remote's ssh.
        let (program, mv) = ts[2]
            .remote_rename_argv(Path::new("x"), Path::new("y"))
            .expect("an mv");
        assert_eq!(program, "ssh");
        let mv = words(&mv);
        assert_eq!(mv[..6], ["-i", "/k", "-p", "2222", "-l", "sync"], "{mv:?}");
        assert!(mv.contains(&"10.0.0.3".to_owned()), "{mv:?}");
        let (_, exit) = ts[2].ssh_exit_argv().expect("ours");
        let exit = words(&exit);
        assert_eq!(
            exit[..6],
            ["-i", "/k", "-p", "2222", "-l", "sync"],
            "{exit:?}"
        );
        // The daemon remotes have no ssh to close.
        assert!(
            ts[0].ssh_exit_argv().is_none()
                && ts[1]
                    .remote_rename_argv(Path::new("x"), Path::new("y"))
                    .is_none()
        );
    }
}
