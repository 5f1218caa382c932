//! A rename's command lines: the remote `mv` over ssh where the remote shell cannot
//! misread it, and the pushes of both sides.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ssh::ssh_command;
use super::{split_for_args, Target, ARGS_BUDGET};

impl Target {
    /// The calls that carry a rename as one: the new path pushed into its place with
    /// the old one as the basis the remote already has, so unchanged data is not sent
    /// again. The old path is deleted by an ordinary call afterwards.
    ///
    /// - A directory: `rsync <opts> -R --no-recursive --dirs --link-dest=REL
    ///   ./to/./ ./to/./x ... DEST/to/`, every path that was below `to` listed (so the
    ///   excludes hold), with `REL` the old directory seen from the new one (a relative
    ///   `--link-dest` is relative to the destination directory). Unchanged files become
    ///   hard links to the old ones; others use them as the delta basis.
    /// - A file in the same directory: `--fuzzy` (rsync takes a file of the same size
    ///   and mtime in the destination directory as the basis: only a delta travels).
    /// - A file moved to another directory: `--fuzzy --fuzzy --link-dest=REL`, with
    ///   `REL` the old directory seen from the new one (the fuzzy search then also
    ///   looks there).
    ///
    /// `None` when the rename must travel plain: deletes are off, a directory with
    /// `<filter>` rules, or a path that has
    /// to appear on the remote's command line (the destination directory, the basis)
    /// holds a byte a remote shell or an old daemon could split or expand.
    pub fn rename_argvs(
        &self,
        from: &Path,
        to: &Path,
        dir: bool,
        to_paths: &[PathBuf],
    ) -> Option<Vec<Vec<OsString>>> {
        if !self.delete || (dir && !self.filter_rules.is_empty()) {
            // A directory's push names its entries from the new directory (`./to/./x`):
            // rsync would read anchored rules from there, not from the root.
            return None;
        }
        let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        let (dest_dir, basis_dir, names): (PathBuf, PathBuf, Vec<OsString>) = if dir {
            let names = to_paths
                .iter()
                .filter_map(|p| p.strip_prefix(to).ok())
                .map(|rest| {
                    let mut a = OsString::from("./");
                    a.push(to.as_os_str());
                    a.push("/./");
                    a.push(rest.as_os_str());
                    a
                })
                .collect();
            (to.to_path_buf(), from.to_path_buf(), names)
        } else {
            let mut a = OsString::from("./");
            let p = parent(to);
            if !p.as_os_str().is_empty() {
                a.push(p.as_os_str());
                a.push("/");
            }
            a.push("./");
            a.push(to.file_name()?);
            (p, parent(from), vec![a])
        };
        if !remote_safe(&dest_dir) || !remote_safe(&basis_dir) {
            return None;
        }
        let mut opts: Vec<OsString> = self.opts.params.iter().map(OsString::from).collect();
        opts.extend(["-R", "--no-recursive", "--dirs"].map(OsString::from));
        if dir {
            // The push lists the directory's entries as rsync finds them: a temp or
            // excluded name made there after the agent listed it stays out too (as in
            // listing pushes, see `argv_with_args`).
            for glob in crate::filter::temp_name_globs()
                .iter()
                .chain(&self.filter_globs)
            {
                opts.push(format!("--exclude={glob}").into());
            }
        }
        if !dir {
            // The remote may hold a file at the new name already (a swap through a temp
            // name: `b` renamed to `a` while the remote still has the old `a`): with the
            // same size and an mtime in the same tick, the quick check would keep it.
            // A new name it lacks costs nothing more: --fuzzy finds the basis.
            opts.push("--ignore-times".into());
        }
        if dir || dest_dir != basis_dir {
            let mut rel = OsString::from("--link-dest=");
            for _ in dest_dir.components() {
                rel.push("../");
            }
            rel.push(basis_dir.as_os_str());
            if !dir {
                opts.extend(["--fuzzy", "--fuzzy"].map(OsString::from));
            }
            opts.push(rel);
        } else {
            opts.push("--fuzzy".into());
        }
        self.connection_args(&mut opts);
        let dest = self.dest_below(&dest_dir);
        let names: Vec<PathBuf> = names.into_iter().map(PathBuf::from).collect();
        Some(
            split_for_args(&names, ARGS_BUDGET)
                .into_iter()
                .map(|run| {
                    let mut argv = opts.clone();
                    argv.extend(run.iter().map(|p| p.as_os_str().to_owned()));
                    argv.push(dest.clone());
                    argv
                })
                .collect(),
        )
    }
}

impl Target {
    /// ssh mode: the command that renames `from` to `to` on the remote in one step,
    /// over the shared connection: `<ssh command> HOST cd -- DIR && test ! -L a && ...
    /// && mv -T -- from to` (program, arguments). Every directory above `from` and `to`
    /// (below DIR) is checked not to be a symbolic link first, so a link planted on the
    /// remote cannot carry the rename outside DIR. `mv -T` fails rather than move into
    /// an existing directory or over a directory, and fails where the remote lacks
    /// `from` or `to`'s parent; the caller then pushes the rename plain.
    ///
    /// `None`: not ssh mode, deletes are off, `<filter>` rules are set, or a path, the remote directory or the
    /// host holds a byte the remote shell could split or expand.
    pub fn remote_rename_argv(&self, from: &Path, to: &Path) -> Option<(OsString, Vec<OsString>)> {
        let cmd = self.opts.ssh.as_ref()?;
        let base = Path::new(&self.remote.name);
        let host = &self.remote.ip;
        let safe = |p: &Path| remote_safe(p) && !p.as_os_str().is_empty() && p.is_relative();
        // With `<filter>` rules, what the remote holds below the old name (kept out by a
        // rule, or there alone) would move along and escape them: the rename goes plain.
        if !self.delete
            || !self.filter_rules.is_empty()
            || !safe(from)
            || !safe(to)
            || !(self.remote.name.is_empty() || remote_safe(base))
            || host.starts_with('-')
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:@[]%".contains(&b))
        {
            return None;
        }
        let words =
            crate::sys::shell::split_str(&ssh_command(cmd, self.ssh_control.as_deref())).ok()?;
        let (program, rest) = words.split_first()?;
        let mut argv: Vec<OsString> = rest.iter().map(OsString::from).collect();
        argv.push(host.into());
        // The remote shell reads the words after the host as one command line; every
        // word here is made of bytes it takes literally.
        if !self.remote.name.is_empty() {
            argv.extend(["cd", "--"].map(OsString::from));
            argv.push(base.as_os_str().to_owned());
            argv.push("&&".into());
        }
        let mut above: Vec<&Path> = from
            .ancestors()
            .skip(1)
            .chain(to.ancestors().skip(1))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        above.sort();
        above.dedup();
        for dir in above {
            argv.extend(["test", "!", "-L"].map(OsString::from));
            argv.push(dir.as_os_str().to_owned());
            argv.push("&&".into());
        }
        argv.extend(["mv", "-T", "--"].map(OsString::from));
        argv.push(from.as_os_str().to_owned());
        argv.push(to.as_os_str().to_owned());
        Some((program.into(), argv))
    }
}

/// A relative path that passes a remote shell and any rsync daemon as one word, as is:
/// letters, digits and `._-+,@=/`, no component `..`.
fn remote_safe(p: &Path) -> bool {
    p.as_os_str()
        .as_bytes()
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+,@=/".contains(b))
        && !p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}
