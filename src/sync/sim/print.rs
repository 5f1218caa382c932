//! How a history is printed: tree nodes, changes, paths, command lines, fail log
//! lines.

use super::*;

pub(super) fn show(n: &Node) -> String {
    match n {
        Node::Dir => "dir".into(),
        Node::File { data, mtime, .. } => {
            format!("file {:?} @{}", String::from_utf8_lossy(data), mtime.0)
        }
        Node::Link(t) => format!("link -> {}", String::from_utf8_lossy(t)),
    }
}

/// The fail log's commands, each as its paths and destination, for the history.
pub(super) fn fail_log_lines(log: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(log)
        .lines()
        .filter(|l| l.starts_with("cd "))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| w.starts_with("'./") || w.starts_with("./") || w.starts_with("'127"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// A change in a few words, for the printed history.
pub(super) fn show_change(c: &Change) -> String {
    let p = |p: &Path| p.display().to_string();
    match c {
        Change::File { path, op } => format!("{op:?} {}", p(path)),
        Change::DirIn { path, moved, found } => {
            format!(
                "DirIn{} {} ({} found)",
                if *moved { " moved" } else { "" },
                p(path),
                found.len()
            )
        }
        Change::DirOut { path, moved } => {
            format!("DirOut{} {}", if *moved { " moved" } else { "" }, p(path))
        }
        Change::Renamed {
            from, to, found, ..
        } => {
            format!("Renamed {} -> {} ({} found)", p(from), p(to), found.len())
        }
        other => format!("{other:?}"),
    }
}

pub(super) fn show_path(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

pub(super) fn shown(program: &OsStr, argv: &[OsString]) -> String {
    let words: Vec<String> = argv
        .iter()
        .filter(|a| {
            let b = a.as_bytes();
            !(b.starts_with(b"--timeout")
                || b.starts_with(b"--contimeout")
                || b.starts_with(b"--sockopts")
                || b.starts_with(b"--exclude=")
                || b == b"-e"
                || b.starts_with(b"ssh"))
        })
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", program.to_string_lossy(), words.join(" "))
}
