//! A model of rsync, for exactly the command lines the agent builds (`Target::argv`,
//! `rename_argvs`, `prune_argv`, the ssh `mv` of a rename), applied to an in-memory
//! remote tree. An option or a shape it does not know is a simulator failure, never
//! ignored: the model must grow with the agent's command lines.
//!
//! What it models, from `man rsync`:
//! - `-R` with `./` arguments: the path after `./` (or after a later `/./`) is made at
//!   the destination, with the directories above it (implied directories);
//! - `--no-recursive --dirs`: a directory argument is made as a directory; with a
//!   trailing `/` (or `./` alone) its entries come too, directories as directories;
//!   `-r`: the whole subtree;
//! - `--delete`: in every directory whose entries were sent, what the remote holds
//!   beyond them goes, except what an exclude rule matches (excluded names are
//!   protected); `--delete-missing-args`: an argument missing at the source is deleted
//!   at the destination, whole; `--ignore-missing-args`: skipped; neither: exit 23;
//! - `--force`: a non-empty directory may give way to a non-directory; without it the
//!   entry fails ("could not make way"), exit 23;
//! - the quick check (same size and mtime: skipped) unless `--ignore-times`; mtimes are
//!   whole seconds here, so `--modify-window=-1` (nanoseconds) compares the same;
//!   `--existing`/`--ignore-existing` (both: nothing is made or updated, only deleted);
//! - `--exclude=PATTERN` and `--from0 --exclude-from=-` (`- /anchored` rules on
//!   stdin), matched against the path below the transfer's top (`/./` moves the top),
//!   a rule without `/` against the last component, a trailing `/` only directories;
//!   `--filter=+ PATTERN` / `--filter=- PATTERN` (`<filter>`'s `<rule>`s) in their place
//!   in the list, the first rule that matches deciding (a `+` lets a name in, and an
//!   included name is not protected from `--delete`); an argument a rule excludes is not
//!   sent, nor its implied directories (these are not matched themselves), a directory
//!   excluded is not entered; a missing argument (`--delete-missing-args`) a rule
//!   excludes is sent with its implied directories, and left whole by a receiver that
//!   has the rules (`--delete`: deleted otherwise);
//! - `--append-verify` (a big file's append, `sync::bigfiles`): a file whose remote copy
//!   is as long as the source's or longer is skipped, left as it is (bytes and mtime);
//!   any other lands whole (the appended tail, or, when the old bytes differ, the
//!   checksum's redo); `--inplace`: lands as without it (in the remote's own file);
//! - `--link-dest=DIR`: a file missing at the destination, or failing the quick check
//!   there, is linked from DIR when the quick check finds DIR's file equal (size and
//!   mtime), whatever its bytes; `--fuzzy` changes what travels, not what lands, and
//!   `--info=...` only what rsync prints: no effect here;
//! - `--max-delete=0`: every deletion is skipped, making way for a non-directory
//!   included (an empty directory's own removal is not counted), and said; the client
//!   exits 0 for it over a daemon, 25 otherwise;
//! - errors as rsync reports them: a source path unreadable but for ENOENT (below a
//!   file, a link loop) or an implied directory that is a dangling link is an I/O
//!   error (exit 23) that turns `--delete` off for the call; a missing argument whose
//!   parent is gone has vanished (exit 24); a deletion request below a non-directory
//!   in the file list aborts the receiver (exit 2); the receiver follows links on the
//!   remote where the filesystem does (a deletion request's parent, a prune's listed
//!   directory).
//!
//! `differential.rs` checks all this against real rsync and a loopback daemon.
//!
//! Source files are read when the call runs (one snapshot per call).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rules::Rule;
use tree::{
    delete_contents, delete_protected, fresh_link, has_children, put, read_names, resolve,
    through_link, Resolved,
};

mod args;
mod rules;
mod tree;

use args::{normalize, parse_arg, refused_entry};

pub use tree::{join, link_classes, read_node, read_tree, remove_tree, Node, Tree};

/// The options of one rsync command line that decide what lands.
#[derive(Debug, Default)]
struct Opts {
    recursive: bool,
    no_recursive: bool,
    dirs: bool,
    relative: bool,
    delete: bool,
    delete_missing: bool,
    ignore_missing: bool,
    force: bool,
    ignore_times: bool,
    existing: bool,
    ignore_existing: bool,
    times: bool,
    hard_links: bool,
    append: bool,
    /// `--link-dest=DIR` (relative to the destination directory).
    link_dest: Option<Vec<u8>>,
    /// `--max-delete=0`: every deletion skipped, and said (the only limit the agent
    /// passes: an empty root's full sync).
    delete_nothing: bool,
    /// The filter list in rsync's order: the first rule that matches decides.
    rules: Vec<Filter>,
    from0: bool,
    /// `--exclude-from=-`: where its rules go in the list.
    stdin_rules: Option<usize>,
    sources: Vec<Vec<u8>>,
    dest: Vec<u8>,
}

/// One rule of a call's filter list: an `--exclude=` (or a stdin `- /path`), or a
/// `--filter=` rule (`+ PATTERN`, `- PATTERN`: `<filter>`'s `<rule>`s), matched as the
/// agent's `config::rules` matches them (which the differential test checks against
/// rsync's own matching).
#[derive(Debug)]
enum Filter {
    Exclude(Rule),
    Rsync(crate::config::rules::Rule),
}

impl Filter {
    /// `Some(include)` when the rule matches `rel` (below the transfer's top).
    fn decides(&self, rel: &[u8], is_dir: bool) -> Option<bool> {
        match self {
            Filter::Exclude(r) => r.matches(rel, is_dir).then_some(false),
            Filter::Rsync(r) => r.matches(rel, is_dir).then_some(r.include),
        }
    }
}

/// What one command did: its exit status and stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub status: i32,
    pub stderr: String,
}

/// The parts of a destination: which remote (`host::module` or `host:dir`) and the
/// directory below it the call writes into.
pub fn split_dest(dest: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (head, rest) = match dest.windows(2).position(|w| w == b"::") {
        Some(i) => {
            let after = &dest[i + 2..];
            match after.iter().position(|&b| b == b'/') {
                Some(j) => (dest[..i + 2 + j].to_vec(), after[j + 1..].to_vec()),
                None => (dest.to_vec(), Vec::new()),
            }
        }
        None => match dest.iter().position(|&b| b == b':') {
            Some(i) => {
                let after = &dest[i + 1..];
                match after.iter().position(|&b| b == b'/') {
                    Some(j) => (dest[..i + 1 + j].to_vec(), after[j + 1..].to_vec()),
                    None => (dest.to_vec(), Vec::new()),
                }
            }
            None => (dest.to_vec(), Vec::new()),
        },
    };
    let mut sub = rest;
    while sub.last() == Some(&b'/') {
        sub.pop();
    }
    (head, sub)
}

fn parse(argv: &[OsString], stdin: &[u8]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut args = argv.iter().map(|a| a.as_bytes()).peekable();
    let mut rest: Vec<Vec<u8>> = Vec::new();
    while let Some(a) = args.next() {
        if a.starts_with(b"./") || a == b"." {
            rest.push(a.to_vec());
            continue;
        }
        if let Some(long) = a.strip_prefix(b"--") {
            let (name, value) = match long.iter().position(|&b| b == b'=') {
                Some(i) => (&long[..i], Some(&long[i + 1..])),
                None => (long, None),
            };
            match (name, value) {
                (b"no-recursive", None) => o.no_recursive = true,
                (b"dirs", None) => o.dirs = true,
                (b"delete", None) => o.delete = true,
                (b"delete-missing-args", None) => o.delete_missing = true,
                (b"ignore-missing-args", None) => o.ignore_missing = true,
                (b"force", None) => o.force = true,
                (b"ignore-times", None) => o.ignore_times = true,
                (b"existing", None) => o.existing = true,
                (b"ignore-existing", None) => o.ignore_existing = true,
                (b"from0", None) => o.from0 = true,
                (b"exclude-from", Some(b"-")) => o.stdin_rules = Some(o.rules.len()),
                (b"exclude", Some(p)) => o.rules.push(Filter::Exclude(Rule::parse(p))),
                (b"filter", Some(r)) => match crate::config::rules::parse(r) {
                    Ok(r) => o.rules.push(Filter::Rsync(r)),
                    Err(e) => return Err(format!("a filter rule the model does not know: {e}")),
                },
                (b"append-verify", None) => o.append = true,
                (b"max-delete", Some(b"0")) => o.delete_nothing = true,
                // What lands is the same; only how the receiver writes it differs.
                (b"inplace", None) => {}
                (b"fuzzy", None) => {}
                // What rsync prints (a full sync's progress): nothing lands otherwise.
                (b"info", Some(_)) => {}
                // Nanosecond mtimes in the quick check (a full sync after an index not
                // trusted): the model's mtimes are whole seconds, compared whole.
                (b"modify-window", Some(b"-1")) => {}
                (b"link-dest", Some(d)) => o.link_dest = Some(d.to_vec()),
                (b"timeout", Some(_))
                | (b"contimeout", Some(_))
                | (b"sockopts", Some(_))
                | (b"password-file", Some(_))
                | (b"port", Some(_)) => {}
                _ => {
                    return Err(format!(
                        "the model does not know {}",
                        String::from_utf8_lossy(a)
                    ))
                }
            }
            continue;
        }
        if a == b"-e" {
            args.next();
            continue;
        }
        if let Some(short) = a.strip_prefix(b"-") {
            for &c in short {
                match c {
                    b'a' => {
                        o.recursive = true;
                        o.times = true;
                    }
                    b'r' => o.recursive = true,
                    b't' => o.times = true,
                    b'H' => o.hard_links = true,
                    b'R' => o.relative = true,
                    b'l' | b'p' | b'g' | b'o' | b'D' | b'z' | b'v' => {}
                    _ => return Err(format!("the model does not know -{}", c as char)),
                }
            }
            continue;
        }
        rest.push(a.to_vec());
    }
    let Some(dest) = rest.pop() else {
        return Err("no destination".into());
    };
    o.dest = dest;
    o.sources = rest;
    if o.no_recursive {
        o.recursive = false;
    }
    if !o.relative {
        return Err("the agent always passes -R".into());
    }
    if let Some(at) = o.stdin_rules {
        if !o.from0 {
            return Err("--exclude-from=- without --from0".into());
        }
        let mut read = Vec::new();
        for r in stdin.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            if r.starts_with(b"+ ") {
                // An include (`rsync::missing`'s deletes): rsync's own rule syntax.
                match crate::config::rules::parse(r) {
                    Ok(rule) => read.push(Filter::Rsync(rule)),
                    Err(e) => return Err(format!("a stdin rule the model does not know: {e}")),
                }
                continue;
            }
            let Some(p) = r.strip_prefix(b"- ") else {
                return Err(format!("a stdin rule the model does not know: {r:?}"));
            };
            read.push(Filter::Exclude(Rule::parse(p)));
        }
        o.rules.splice(at..at, read);
    }
    Ok(o)
}

/// Runs one rsync command line: reads the source below `root`, changes `remote`.
pub fn rsync(root: &Path, remote: &mut Tree, argv: &[OsString], stdin: &[u8]) -> Ran {
    rsync_on(root, remote, argv, stdin, false)
}

/// [`rsync`] against a receiver that `refuses` the entry `--delete-missing-args` sends
/// for an argument missing at the source (mode 0): it aborts at the file list, before
/// anything changes, exit 2 (Debian's 3.2.7-1+deb12u5, upstream 3.4.3: rsync issue
/// #910; see `rsync::missing`).
pub fn rsync_on(
    root: &Path,
    remote: &mut Tree,
    argv: &[OsString],
    stdin: &[u8],
    refuses: bool,
) -> Ran {
    let o = match parse(argv, stdin) {
        Ok(o) => o,
        Err(e) => {
            return Ran {
                status: 1,
                stderr: format!("model: {e}"),
            }
        }
    };
    if refuses && o.delete_missing {
        if let Some(rel) = refused_entry(root, &o) {
            return Ran {
                status: 2,
                stderr: format!(
                    "invalid file mode 00 for {} [Receiver]\nrsync error: protocol \
                     incompatibility (code 2) at flist.c(874) [Receiver=3.2.7]",
                    String::from_utf8_lossy(&rel)
                ),
            };
        }
    }
    let (_, sub) = split_dest(&o.dest);
    // `--existing --ignore-existing`: nothing is made or updated, only deleted.
    let only_delete = o.existing && o.ignore_existing;
    let mut errors: Vec<String> = Vec::new();
    let excluded = |rel: &[u8], is_dir: bool| {
        o.rules
            .iter()
            .find_map(|r| r.decides(rel, is_dir))
            .is_some_and(|include| !include)
    };
    // The file list: (path below the top, node), in the order rsync sends them, and
    // the directories whose entries were sent (for --delete).
    let mut list: Vec<(Vec<u8>, Node)> = Vec::new();
    let mut listed_dirs: Vec<Vec<u8>> = Vec::new();
    let mut missing: Vec<Vec<u8>> = Vec::new();
    let mut io_error = false;
    let mut vanished = false;
    // Deletions `--max-delete=0` skipped.
    let mut skipped = 0usize;
    // Where each sent directory is at the source.
    let mut dir_at: std::collections::HashMap<Vec<u8>, std::path::PathBuf> = Default::default();
    for a in &o.sources {
        let arg = parse_arg(a);
        let src = join(&arg.top, &arg.rel);
        // Implied directories above the argument.
        let mut above = Vec::new();
        for (i, &b) in arg.rel.iter().enumerate() {
            if b == b'/' {
                above.push(arg.rel[..i].to_vec());
            }
        }
        let node = if src.is_empty() {
            Some(Node::Dir)
        } else {
            match read_node(root, &src) {
                // `link/`: the path resolves through the link, to a directory.
                Some(Node::Link(_))
                    if arg.contents
                        && std::fs::metadata(root.join(std::ffi::OsStr::from_bytes(&src)))
                            .is_ok_and(|m| m.is_dir()) =>
                {
                    Some(Node::Dir)
                }
                other => other,
            }
        };
        let Some(node) = node else {
            // Only a path that does not exist (ENOENT) is a missing argument; one below
            // a file (ENOTDIR) is an I/O error, which also turns `--delete` off.
            let not_dir = std::fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(&src)))
                .is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound);
            if not_dir {
                io_error = true;
                errors.push(format!(
                    "rsync: [sender] link_stat \"{}\" failed (not ENOENT)",
                    String::from_utf8_lossy(&src)
                ));
            } else if o.delete_missing {
                // The deletion request goes with its implied directories: those there
                // are sent; one missing has vanished (exit 24, "parent dir is absent").
                // rsync follows a link there: one that leads nowhere is an I/O error.
                // The sender does not match it against the rules: the receiver does,
                // when it has them (below).
                for d in above {
                    let abs = root.join(std::ffi::OsStr::from_bytes(&join(&arg.top, &d)));
                    match std::fs::metadata(&abs) {
                        Ok(m) if m.is_dir() => {
                            dir_at.insert(d.clone(), abs.clone());
                            list.push((d, Node::Dir));
                        }
                        Err(_) if std::fs::symlink_metadata(&abs).is_ok() => {
                            io_error = true;
                            errors.push(format!(
                                "symlink has no referent: \"{}\"",
                                String::from_utf8_lossy(&d)
                            ));
                            break;
                        }
                        _ => {
                            vanished = true;
                            break;
                        }
                    }
                }
                missing.push(arg.rel.clone());
            } else if !o.ignore_missing {
                errors.push(format!(
                    "rsync: [sender] link_stat \"{}\" failed: No such file or directory (2)",
                    String::from_utf8_lossy(&src)
                ));
            }
            continue;
        };
        // An argument a rule excludes is not sent, nor its implied directories (those
        // are not matched against the rules themselves).
        let is_dir = node == Node::Dir;
        if !arg.rel.is_empty() && excluded(&arg.rel, is_dir) {
            continue;
        }
        // Implied directories: rsync follows a link there (it is sent as a directory).
        for d in above {
            let abs = root.join(std::ffi::OsStr::from_bytes(&join(&arg.top, &d)));
            if std::fs::metadata(&abs).is_ok_and(|m| m.is_dir()) {
                dir_at.insert(d.clone(), abs);
                list.push((d, Node::Dir));
            }
        }
        if !is_dir {
            list.push((arg.rel.clone(), node));
            continue;
        }
        if !o.recursive && !o.dirs {
            continue; // "skipping directory"
        }
        if !arg.rel.is_empty() {
            dir_at.insert(
                arg.rel.clone(),
                root.join(std::ffi::OsStr::from_bytes(&src)),
            );
            list.push((arg.rel.clone(), Node::Dir));
        }
        if !(o.recursive || arg.contents) {
            continue;
        }
        // Its entries (all the way down with -r).
        let mut stack = vec![arg.rel.clone()];
        while let Some(dir) = stack.pop() {
            listed_dirs.push(dir.clone());
            for name in read_names(root, &join(&arg.top, &dir)) {
                let rel = join(&dir, &name);
                let Some(n) = read_node(root, &join(&arg.top, &rel)) else {
                    continue; // vanished
                };
                let d = n == Node::Dir;
                if excluded(&rel, d) {
                    continue;
                }
                if d && o.recursive {
                    stack.push(rel.clone());
                }
                if d {
                    let abs = join(&arg.top, &rel);
                    dir_at.insert(rel.clone(), root.join(std::ffi::OsStr::from_bytes(&abs)));
                }
                list.push((rel, n));
            }
        }
    }
    let at = |rel: &[u8]| join(&sub, rel);
    // One entry per path: where two arguments name one path, the directory wins (as
    // rsync's file list keeps it).
    let mut seen: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    let mut deduped: Vec<(Vec<u8>, Node)> = Vec::with_capacity(list.len());
    for (rel, node) in list {
        match seen.get(&rel) {
            Some(&i) => {
                if node == Node::Dir {
                    deduped[i].1 = Node::Dir;
                }
            }
            None => {
                seen.insert(rel.clone(), deduped.len());
                deduped.push((rel, node));
            }
        }
    }
    let list = deduped;
    // The receiver goes through the list in order and stops at such a request.
    let mut abort: Option<Vec<u8>> = None;
    // A deletion request whose parent the file list holds as a non-directory (a link
    // that leads nowhere, sent as itself): the receiver aborts, exit 2. Only the
    // parent: one further up is not looked at (the parent is then absent from the
    // list, a warning of the sender's).
    for rel in &missing {
        let bad = rel.iter().rposition(|&b| b == b'/').is_some_and(|i| {
            seen.get(&rel[..i])
                .is_some_and(|&j| list.get(j).is_some_and(|(_, n)| *n != Node::Dir))
        });
        if bad && abort.as_ref().is_none_or(|a| rel < a) {
            abort = Some(rel.clone());
        }
    }
    // The destination directory (`DEST/dir/`) is made if missing, one level only.
    if !sub.is_empty() && remote.get(&sub).is_some_and(|n| *n != Node::Dir) {
        return Ran {
            status: 3,
            stderr: format!(
                "rsync: [Receiver] ERROR: cannot stat destination \"{}\": Not a directory (20)",
                String::from_utf8_lossy(&sub)
            ),
        };
    }
    if !sub.is_empty() && remote.get(&sub) != Some(&Node::Dir) {
        let parent_ok = match sub.iter().rposition(|&b| b == b'/') {
            Some(i) => remote.get(&sub[..i]) == Some(&Node::Dir),
            None => true,
        };
        if !parent_ok {
            return Ran {
                status: 11,
                stderr: format!(
                    "rsync: [Receiver] mkdir \"{}\" failed: No such file or directory (2)\n\
                     rsync error: error in file IO (code 11)",
                    String::from_utf8_lossy(&sub)
                ),
            };
        }
        remove_tree(remote, &sub);
        remote.insert(sub.clone(), Node::Dir);
    }
    // Deletes of missing arguments.
    // A directory's contents go (with `--force`) but for what an exclude rule protects,
    // when the receiver has the rules (`--delete`): then it stays, and that is no error.
    // The receiver finds the path as the filesystem does: through a link on the remote
    // (a chrooted daemon's absolute links start at the module's top).
    // An abort ends the receiver at its request: those sorted before it are done.
    // The receiver goes through the file list in order: a directory the list holds
    // above a deletion request (an implied directory) was made before it, replacing
    // what the remote had there (a link that leads elsewhere: `d -> .` on the remote
    // while the source's `d` is a directory); the request is then resolved in that
    // directory, not through the link (real rsync 3.5.0, checked by hand: the remote's
    // `e` stays after `--delete-missing-args ./d ./d/e` with `d -> .` there).
    // In the list's order: a request for `d` before those below it (`./d/e ./d`, both
    // missing, with `d -> .` on the remote: real rsync deletes the link, and `e` stays).
    missing.sort();
    let sent_dirs: std::collections::HashSet<&[u8]> = (list.iter())
        .filter(|(_, n)| *n == Node::Dir)
        .map(|(r, _)| r.as_slice())
        .collect();
    for rel in missing
        .iter()
        .filter(|r| abort.as_ref().is_none_or(|a| *r < a))
    {
        for (i, _) in rel.iter().enumerate().filter(|(_, &b)| b == b'/') {
            let above = &rel[..i];
            if sent_dirs.contains(above) {
                let dst = at(above);
                if remote.get(&dst).is_some_and(|n| *n != Node::Dir) {
                    remove_tree(remote, &dst);
                    remote.insert(dst, Node::Dir);
                }
            }
        }
    }
    for rel in missing
        .iter()
        .filter(|r| abort.as_ref().is_none_or(|a| *r < a))
    {
        if rel.is_empty() {
            continue;
        }
        let dst = at(rel);
        let (parent, name) = match dst.iter().rposition(|&b| b == b'/') {
            Some(i) => (&dst[..i], &dst[i + 1..]),
            None => (&b""[..], &dst[..]),
        };
        let Resolved::Dir(p) = resolve(remote, parent) else {
            continue;
        };
        let dst = join(&p, name);
        // The receiver matches the request against the rules when it has them (with
        // `--delete`: a daemon or a remote shell is sent them only then), as what it is
        // (nothing: a non-directory): one excluded is left whole.
        if o.delete && excluded(rel, false) {
            continue;
        }
        if o.delete_nothing {
            skipped += usize::from(remote.contains_key(&dst));
        } else if o.delete {
            delete_protected(remote, &dst, rel, &|r, d| excluded(r, d));
        } else {
            remove_tree(remote, &dst);
        }
    }
    // --delete in the directories whose entries were sent, unless the sender had an
    // I/O error ("IO error encountered -- skipping file deletion").
    if o.delete && io_error {
        errors.push("IO error encountered -- skipping file deletion".into());
    }
    if o.delete && !io_error && abort.is_none() {
        let sent: std::collections::HashSet<&[u8]> =
            list.iter().map(|(p, _)| p.as_slice()).collect();
        // In file-list order: a directory the receiver cannot read is an I/O error,
        // which turns deletion off for the rest of the call.
        let mut listed_dirs = listed_dirs.clone();
        listed_dirs.sort();
        listed_dirs.dedup();
        for dir in &listed_dirs {
            let mut rdir = at(dir);
            if only_delete
                && (remote.get(&rdir).is_some_and(|n| *n != Node::Dir)
                    || through_link(remote, &rdir))
            {
                // Nothing makes it a directory in this call: the receiver opens what
                // is there, following links (at it or above it: a prune of `e/` with
                // `e` a link to a directory deletes in that directory, and below it).
                // Not there: nothing to do.
                match resolve(remote, &rdir) {
                    Resolved::Missing => continue,
                    Resolved::NotDir | Resolved::Loop => {
                        errors.push(format!(
                            "rsync: [generator] opendir \"{}\" failed",
                            String::from_utf8_lossy(&rdir)
                        ));
                        break;
                    }
                    Resolved::Dir(p) => rdir = p,
                }
            }
            let mut prefix = rdir.clone();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            let children: Vec<Vec<u8>> = remote
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(k, _)| !k[prefix.len()..].contains(&b'/'))
                .map(|(k, _)| k[prefix.len()..].to_vec())
                .collect();
            for name in children {
                let rel = join(dir, &name);
                if sent.contains(rel.as_slice()) {
                    continue;
                }
                let is_dir = remote.get(&join(&rdir, &name)) == Some(&Node::Dir);
                if excluded(&rel, is_dir) {
                    continue;
                }
                if o.delete_nothing {
                    // rsync counts a deletion it skips when it reaches one: a directory
                    // that holds only what the rules protect is not empty, and is not
                    // one (nor is anything in it).
                    if !(is_dir
                        && only_protected(remote, &join(&rdir, &name), &rel, &|r, d| {
                            excluded(r, d)
                        }))
                    {
                        skipped += 1;
                    }
                    continue;
                }
                delete_protected(remote, &join(&rdir, &name), &rel, &|r, d| excluded(r, d));
            }
        }
    }
    if only_delete {
        // Nothing is made, but an entry whose remote parent is a file fails as the
        // receiver tries it (stat says ENOTDIR, not ENOENT).
        for (rel, _) in &list {
            let dst = at(rel);
            if remote.contains_key(&dst) {
                continue;
            }
            let blocked = dst
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'/')
                .any(|(i, _)| matches!(remote.get(&dst[..i]), Some(Node::File { .. })));
            if blocked {
                errors.push(format!(
                    "rsync: [generator] recv_generator: mkdir \"{}\" failed: Not a directory (20)",
                    String::from_utf8_lossy(&dst)
                ));
            }
        }
    }
    if only_delete && o.times {
        // rsync still sets a sent directory's mtime at the end, on whatever the remote
        // holds at its path: a file there takes the directory's mtime.
        for (rel, node) in &list {
            if *node != Node::Dir {
                continue;
            }
            let Some(Node::File { mtime, .. }) = remote.get_mut(&at(rel)) else {
                continue;
            };
            if let Some(m) = dir_at.get(rel).and_then(|a| std::fs::metadata(a).ok()) {
                *mtime = (m.mtime(), m.mtime_nsec());
            }
        }
    }
    // The names the receiver made or found up to date, for `-H`.
    let mut placed: std::collections::HashSet<Vec<u8>> = Default::default();
    if !only_delete {
        for (rel, node) in &list {
            if abort.as_ref().is_some_and(|a| rel >= a) {
                continue;
            }
            let dst = at(rel);
            let have = remote.get(&dst).cloned();
            if o.existing && have.is_none() {
                continue;
            }
            if o.ignore_existing && have.is_some() {
                continue;
            }
            // The directories above must be directories on the remote.
            let mut parent_ok = true;
            for (i, &b) in dst.iter().enumerate() {
                if b == b'/' {
                    match remote.get(&dst[..i]) {
                        Some(Node::Dir) => {}
                        _ => parent_ok = false,
                    }
                }
            }
            if !parent_ok {
                errors.push(format!(
                    "rsync: [receiver] mkstemp \"{}\" failed: No such file or directory (2)",
                    String::from_utf8_lossy(&dst)
                ));
                continue;
            }
            if matches!(node, Node::File { .. }) {
                placed.insert(rel.clone());
            }
            // `--link-dest`: a file the quick check finds equal there (size and mtime)
            // is linked from there, whatever its bytes.
            let alt = match (&o.link_dest, node) {
                (Some(ld), Node::File { data, mtime, .. }) if !o.ignore_times => {
                    normalize(&join(&join(&sub, ld), rel)).and_then(|c| match remote.get(&c) {
                        Some(
                            n @ Node::File {
                                data: d2,
                                mtime: m2,
                                ..
                            },
                        ) if d2.len() == data.len() && (!o.times || m2 == mtime) => Some(n.clone()),
                        _ => None,
                    })
                }
                _ => None,
            };
            match (node, have) {
                (Node::Dir, Some(Node::Dir)) => {}
                (Node::Dir, _) => {
                    remove_tree(remote, &dst);
                    remote.insert(dst, Node::Dir);
                }
                (n, Some(Node::Dir)) => {
                    // With deletions active (`--delete`), or `--force`, the directory's
                    // contents are deleted to make way, but for what an exclude rule
                    // protects; the receiver has the rules only with `--delete` (a
                    // daemon is sent them only then). What is left keeps the directory.
                    if o.delete_nothing {
                        // Making way deletes too: `--max-delete=0` skips it (an empty
                        // directory's own removal is not counted).
                        skipped += usize::from(has_children(remote, &dst));
                    } else if o.force || o.delete {
                        let protect = |r: &[u8], d: bool| o.delete && excluded(r, d);
                        let mut prefix = dst.clone();
                        prefix.push(b'/');
                        delete_contents(remote, &prefix, rel, &protect);
                    }
                    if has_children(remote, &dst) {
                        placed.remove(rel);
                        let kind = match n {
                            Node::Link(_) => "symlink",
                            _ => "regular file",
                        };
                        errors.push(format!(
                            "cannot delete non-empty directory: {0}\ncould not make way for new {kind}: {0}",
                            String::from_utf8_lossy(&dst),
                        ));
                        continue;
                    }
                    remove_tree(remote, &dst);
                    remote.insert(dst, put(n, o.times));
                }
                (Node::File { data, .. }, Some(Node::File { data: d2, .. }))
                    if o.append && d2.len() >= data.len() => {}
                (
                    Node::File { data, mtime, .. },
                    Some(Node::File {
                        data: d2,
                        mtime: m2,
                        ..
                    }),
                ) if !o.ignore_times && data.len() == d2.len() && (!o.times || *mtime == m2) => {
                    if !o.times && *data != d2 {
                        // Without -t the quick check still compares mtimes (of the
                        // remote's own): treat as unequal and update.
                        remote.insert(dst, put(node, o.times));
                    }
                }
                (Node::File { .. }, _) if alt.is_some() => {
                    if let Some(a) = alt {
                        remote.insert(dst, a);
                    }
                }
                (n, _) => {
                    remote.insert(dst, put(n, o.times));
                }
            }
        }
    }
    if o.hard_links {
        link_names(remote, &list, &placed, &at);
    }
    if let Some(rel) = abort {
        return Ran {
            status: 2,
            stderr: format!(
                "ABORTING due to invalid path from sender: {}\n\
                 rsync error: protocol incompatibility (code 2)",
                String::from_utf8_lossy(&rel)
            ),
        };
    }
    if skipped > 0 {
        // The receiver says it; where the receiver is the remote's (a daemon), the
        // client exits 0 for it, else 25 (rsync 3.5.0, checked by the differential test).
        let line = format!("Deletions stopped due to --max-delete limit ({skipped} skipped)");
        let daemon = o.dest.windows(2).any(|w| w == b"::");
        if errors.is_empty() && !vanished {
            return Ran {
                status: if daemon { 0 } else { 25 },
                stderr: line,
            };
        }
        if !daemon {
            // Over a daemon the client's error ends it, without the receiver's line.
            errors.insert(0, line);
        }
    }
    if errors.is_empty() && vanished {
        Ran {
            status: 24,
            stderr: "rsync warning: some files vanished before they could be transferred \
                     (code 24)"
                .into(),
        }
    } else if errors.is_empty() {
        Ran {
            status: 0,
            stderr: String::new(),
        }
    } else {
        errors.push(
            "rsync error: some files/attrs were not transferred (see previous errors) (code 23)"
                .into(),
        );
        Ran {
            status: 23,
            stderr: errors.join("\n"),
        }
    }
}

/// Does the remote directory `dst` (the source's `rel`) hold something, and only names
/// `excluded` protects?
fn only_protected(
    remote: &Tree,
    dst: &[u8],
    rel: &[u8],
    excluded: &dyn Fn(&[u8], bool) -> bool,
) -> bool {
    let mut prefix = dst.to_vec();
    prefix.push(b'/');
    let mut children = remote
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(k, _)| !k[prefix.len()..].contains(&b'/'))
        .peekable();
    children.peek().is_some()
        && children.all(|(k, n)| excluded(&join(rel, &k[prefix.len()..]), *n == Node::Dir))
}

/// `-H`: the names of one source file (same inode, more than one link) in the file list
/// are one file on the remote: each of them the receiver made or found up to date takes
/// the first one's (in the file list's sorted order: its leader) content and identity
/// (rsync links the others to the leader).
fn link_names(
    remote: &mut Tree,
    list: &[(Vec<u8>, Node)],
    placed: &std::collections::HashSet<Vec<u8>>,
    at: &dyn Fn(&[u8]) -> Vec<u8>,
) {
    let mut by: std::collections::BTreeMap<u64, Vec<&Vec<u8>>> = Default::default();
    for (rel, n) in list {
        if let Node::File { link, .. } = n {
            if *link != 0 && placed.contains(rel) {
                by.entry(*link).or_default().push(rel);
            }
        }
    }
    for mut names in by.into_values().filter(|n| n.len() > 1) {
        names.sort();
        let Some(Node::File { data, mtime, link }) = remote.get(&at(names[0])).cloned() else {
            continue;
        };
        // A leader the model never gave an identity (a remote tree made by a test).
        let link = if link == 0 { fresh_link() } else { link };
        let leader = Node::File { data, mtime, link };
        remote.insert(at(names[0]), leader.clone());
        for rel in &names[1..] {
            remote.insert(at(rel), leader.clone());
        }
    }
}

/// The ssh `mv -T -- from to` of a rename (see `Target::remote_rename_argv`), applied to
/// `remote` (the remote directory is the tree's top): checks every `test ! -L dir`.
pub fn remote_mv(remote: &mut Tree, argv: &[OsString]) -> Ran {
    let words: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
    let fail = |why: &str| Ran {
        status: 1,
        stderr: format!("mv: {why}"),
    };
    let Some(mv) = words.windows(3).position(|w| w == [b"mv", b"-T", b"--"]) else {
        return fail("the model does not know this remote command");
    };
    let (Some(from), Some(to)) = (words.get(mv + 3), words.get(mv + 4)) else {
        return fail("missing operands");
    };
    for w in words.windows(4) {
        if w[0] == b"test" && w[1] == b"!" && w[2] == b"-L" {
            if let Some(Node::Link(_)) = remote.get(w[3]) {
                return fail("a link above the rename");
            }
        }
    }
    let (from, to) = (from.to_vec(), to.to_vec());
    let Some(node) = remote.get(&from).cloned() else {
        return fail("cannot stat: No such file or directory");
    };
    if let Some(i) = to.iter().rposition(|&b| b == b'/') {
        if remote.get(&to[..i]) != Some(&Node::Dir) {
            return fail("cannot move: No such file or directory");
        }
    }
    if to.starts_with(&from) && to.get(from.len()) == Some(&b'/') {
        return fail("cannot move a directory into itself");
    }
    match (remote.get(&to), &node) {
        (Some(Node::Dir), Node::Dir) if has_children(remote, &to) => {
            return fail("cannot overwrite: Directory not empty")
        }
        (Some(Node::Dir), n) if *n != Node::Dir => {
            return fail("cannot overwrite directory with non-directory")
        }
        (Some(n), Node::Dir) if *n != Node::Dir => {
            return fail("cannot overwrite non-directory with directory")
        }
        _ => {}
    }
    let mut prefix = from.clone();
    prefix.push(b'/');
    let moved: Vec<(Vec<u8>, Node)> = remote
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, n)| (k.clone(), n.clone()))
        .collect();
    remove_tree(remote, &from);
    remove_tree(remote, &to);
    remote.insert(to.clone(), node);
    for (k, n) in moved {
        remote.insert(join(&to, &k[prefix.len()..]), n);
    }
    Ran {
        status: 0,
        stderr: String::new(),
    }
}

#[cfg(test)]
mod tests;
