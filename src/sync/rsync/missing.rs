//! Deletes for a receiver that refuses `--delete-missing-args`.
//!
//! rsync sends an argument missing at the source as an entry of mode 0, its receiver's
//! signal to delete that name. A receiver with the file-mode check of a recent security
//! fix and without its exception for that entry (upstream 3.4.3; Debian's
//! 3.2.7-1+deb12u5; rsync issue #910) aborts the whole call before anything is sent:
//! `invalid file mode 00 for NAME [Receiver]`, exit 2. Every live push that carries a
//! delete would fail there, for good.
//!
//! For such a remote (found by that answer, [`refuses_missing_args`]) the paths missing
//! when a call is built go in a call of their own before it ([`Target::delete_argvs`]):
//! each one's directory as its listing (`./dir/`, `--dirs --delete`) with rules that let
//! only the names asked through (`+ /dir/name`, then `- /dir/*`). rsync deletes in a
//! listed directory what the source lacks there unless a rule excludes it, so exactly
//! those names go, whole, as `--delete-missing-args` deletes them; one made again
//! meanwhile is sent as it is then. The call itself runs with `--ignore-missing-args`
//! ([`ignoring_missing_args`]). A missing path whose directory is gone too needs no rule:
//! the top of what is gone above it is in the call (`workers::listings::gone_tops`), and
//! its delete takes it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{split_for_args, Outcome, Target, ARGS_BUDGET};

/// The call failed because its receiver refuses the entries `--delete-missing-args`
/// sends (see the module doc): exit 2 (over ssh the sender may see the connection close
/// first: 12), with the receiver's words.
pub fn refuses_missing_args(outcome: &Outcome) -> bool {
    matches!(outcome.status, 2 | 12) && outcome.stderr.contains("invalid file mode 00 for ")
}

/// Makes a push's `argv` skip its missing arguments (`--ignore-missing-args` for
/// `--delete-missing-args`): their deletes go in calls of their own first.
pub fn ignoring_missing_args(argv: &mut [OsString]) {
    for a in argv.iter_mut() {
        if a == "--delete-missing-args" {
            *a = "--ignore-missing-args".into();
        }
    }
}

/// An anchored rule for exactly `path` (`/path`, wildcards escaped; rsync reads `\` as
/// an escape only when a wildcard is present), after `prefix` (`+ `, `- `), with `tail`
/// (`/*`: a wildcard, so the path's bytes are escaped then) after it.
pub(super) fn rule_for(prefix: &[u8], path: &Path, tail: &[u8]) -> Vec<u8> {
    let bytes = path.as_os_str().as_bytes();
    let wild = tail
        .iter()
        .chain(bytes)
        .any(|b| matches!(b, b'*' | b'?' | b'['));
    let mut rule = prefix.to_vec();
    rule.push(b'/');
    for &b in bytes {
        if wild && matches!(b, b'*' | b'?' | b'[' | b'\\') {
            rule.push(b'\\');
        }
        rule.push(b);
    }
    rule.extend_from_slice(tail);
    rule
}

impl Target {
    /// The calls that delete `names` (paths missing at the source whose directory is
    /// there) on a receiver that refuses `--delete-missing-args` (see the module doc):
    /// each lists the names' directories (`./dir/`, within [`ARGS_BUDGET`]) with the
    /// rules on stdin, NUL-separated: `+ /dir` for each directory listed (one may be in
    /// another's), `+ /dir/name` for each name, then `- /dir/*`. What the listing sends
    /// beside the names is kept out, and, excluded, kept on the remote. A name the
    /// agent keeps out (`kept_out`, as a directory and as anything else) as one type is
    /// let through only as the other (one made again meanwhile as an excluded directory
    /// is neither sent nor deleted, as the receiver of `--delete-missing-args` keeps what
    /// its rules exclude); one kept out as both is not let through. No
    /// `--ignore-missing-args`: a listed directory gone when rsync reads it fails the
    /// call (exit 23), whose retry deletes the top of what is gone.
    pub fn delete_argvs(
        &self,
        names: &[PathBuf],
        kept_out: &dyn Fn(&Path, bool) -> bool,
    ) -> Vec<(Vec<OsString>, Vec<u8>)> {
        let mut by_dir: std::collections::BTreeMap<PathBuf, Vec<&Path>> = Default::default();
        for n in names {
            let dir = n.parent().map(Path::to_path_buf).unwrap_or_default();
            by_dir.entry(dir).or_default().push(n);
        }
        let dirs: Vec<PathBuf> = by_dir.keys().cloned().collect();
        let mut calls = Vec::new();
        for run in split_for_args(&dirs, ARGS_BUDGET) {
            let mut argv: Vec<OsString> = self.opts.params.iter().map(OsString::from).collect();
            argv.extend(
                [
                    "-R",
                    "--no-recursive",
                    "--dirs",
                    "--delete",
                    "--from0",
                    "--exclude-from=-",
                ]
                .map(OsString::from),
            );
            self.connection_args(&mut argv);
            let listed: BTreeSet<&Path> = run.iter().map(PathBuf::as_path).collect();
            let mut stdin = Vec::new();
            let mut rule = |r: Vec<u8>| {
                stdin.extend_from_slice(&r);
                stdin.push(0);
            };
            for d in listed.iter().filter(|d| !d.as_os_str().is_empty()) {
                rule(rule_for(b"+ ", d, b""));
            }
            for d in &listed {
                for n in by_dir.get(*d).into_iter().flatten() {
                    match (kept_out(n, true), kept_out(n, false)) {
                        (true, true) => {}
                        (true, false) => {
                            rule(rule_for(b"- ", n, b"/"));
                            rule(rule_for(b"+ ", n, b""));
                        }
                        (false, true) => rule(rule_for(b"+ ", n, b"/")),
                        (false, false) => rule(rule_for(b"+ ", n, b"")),
                    }
                }
            }
            for d in &listed {
                if d.as_os_str().is_empty() {
                    rule(b"- /*".to_vec());
                } else {
                    rule(rule_for(b"- ", d, b"/*"));
                }
            }
            for d in &listed {
                let mut a = OsString::from("./");
                if !d.as_os_str().is_empty() {
                    a.push(d.as_os_str());
                    a.push("/");
                }
                argv.push(a);
            }
            argv.push(self.dest().into());
            calls.push((argv, stdin));
        }
        calls
    }
}

/// What the deletes of `paths` (relative to `root`) missing now are, as
/// [`Target::delete_argvs`] takes them: each one whose directory is there (the root
/// for a top-level name), and for one whose directory is gone too, the top of what is
/// gone above it (its delete takes the path with it, as the call's top of what is gone
/// does, `workers::listings::gone_tops`). One below a file or link is none.
pub fn missing_in_place(root: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    let gone = |p: &Path| {
        std::fs::symlink_metadata(root.join(p))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    };
    let mut dirs: std::collections::HashMap<PathBuf, bool> = Default::default();
    let mut is_dir = |d: &Path| {
        d.as_os_str().is_empty()
            || *dirs.entry(d.to_path_buf()).or_insert_with(|| {
                std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir())
            })
    };
    let mut out = Vec::new();
    for p in paths {
        if !gone(p) {
            continue;
        }
        // Up to the first directory that is there: what is below it on the way is gone.
        let mut top = p.as_path();
        loop {
            let dir = top.parent().unwrap_or(Path::new(""));
            if is_dir(dir) {
                out.push(top.to_path_buf());
                break;
            }
            if !gone(dir) {
                // Below a file or link: nothing to delete by listing.
                break;
            }
            top = dir;
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(stdin: &[u8]) -> Vec<String> {
        (stdin.split(|&b| b == 0))
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    #[test]
    fn the_refusal_is_known_by_its_answer() {
        let refused = Outcome {
            status: 2,
            stderr: "invalid file mode 00 for a/f [Receiver]\nrsync error: protocol \
                     incompatibility (code 2) at flist.c(874) [Receiver=3.2.7]\n"
                .into(),
            elapsed: std::time::Duration::ZERO,
        };
        assert!(refuses_missing_args(&refused));
        // Another protocol error, or another mode, is not it.
        let other = Outcome {
            stderr: "invalid file mode 0170000 for a/f [Receiver]".into(),
            ..refused.clone()
        };
        assert!(!refuses_missing_args(&other));
        let exit23 = Outcome {
            status: 23,
            ..refused
        };
        assert!(!refuses_missing_args(&exit23));
    }

    #[test]
    fn deletes_go_as_their_directories_listings_with_only_their_names_let_through() {
        let t = Target::daemon_for_test(Path::new("/w"), "127.0.0.1", "m", "-a");
        let names: Vec<PathBuf> = ["top", "a/b/x", "a/y", "a/b/z"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let calls = t.delete_argvs(&names, &|_, _| false);
        assert_eq!(calls.len(), 1);
        let (argv, stdin) = &calls[0];
        let words: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
        for w in ["-R", "--no-recursive", "--dirs", "--delete"] {
            assert!(words.iter().any(|a| a == w), "{w}: {words:?}");
        }
        assert!(!words.iter().any(|a| a.ends_with("-missing-args")));
        assert_eq!(
            words[words.len() - 4..],
            ["./", "./a/", "./a/b/", "127.0.0.1::m"]
        );
        // Every `+` before every `-`: a listed directory inside another is let through.
        assert_eq!(
            rules(stdin),
            [
                "+ /a", "+ /a/b", "+ /top", "+ /a/y", "+ /a/b/x", "+ /a/b/z", "- /*", "- /a/*",
                "- /a/b/*"
            ]
        );
    }

    #[test]
    fn a_name_kept_out_as_one_type_is_let_through_only_as_the_other() {
        let t = Target::daemon_for_test(Path::new("/w"), "127.0.0.1", "m", "-a");
        let names: Vec<PathBuf> = ["d/e", "d/f", "d/x.log", "d/plain"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        // `e/` as a directory only; `f` as a file only; `*.log` as both.
        let kept_out = |p: &Path, dir: bool| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            match name.as_deref() {
                Some("e") => dir,
                Some("f") => !dir,
                Some(n) => n.ends_with(".log"),
                None => false,
            }
        };
        let calls = t.delete_argvs(&names, &kept_out);
        assert_eq!(
            rules(&calls[0].1),
            [
                "+ /d",
                "- /d/e/",
                "+ /d/e",
                "+ /d/f/",
                "+ /d/plain",
                "- /d/*"
            ]
        );
    }

    #[test]
    fn names_with_wildcards_are_matched_exactly() {
        // Without a wildcard rsync takes `\` as itself; with one, as an escape.
        assert_eq!(rule_for(b"+ ", Path::new("a\\b"), b""), b"+ /a\\b");
        assert_eq!(rule_for(b"+ ", Path::new("a[1]*"), b""), b"+ /a\\[1]\\*");
        assert_eq!(rule_for(b"- ", Path::new("d\\x"), b"/*"), b"- /d\\\\x/*");
        assert_eq!(rule_for(b"- ", Path::new("d?"), b"/*"), b"- /d\\?/*");
        assert_eq!(rule_for(b"- ", Path::new("e"), b"/"), b"- /e/");
    }

    #[test]
    fn what_is_missing_goes_from_the_first_directory_still_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir(root.join("d")).expect("d");
        std::fs::write(root.join("d/here"), b"x").expect("here");
        std::fs::write(root.join("file"), b"x").expect("file");
        let paths: Vec<PathBuf> = [
            "d/here",
            "d/gone",
            "gone",
            "nodir/gone",
            "file/below",
            "d/gone",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        // `nodir/gone` as the top of what is gone; nothing below the file.
        assert_eq!(
            missing_in_place(root, &paths),
            [
                PathBuf::from("d/gone"),
                PathBuf::from("gone"),
                PathBuf::from("nodir")
            ]
        );
    }
}
