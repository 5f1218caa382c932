//! The module layering of `src/`: each top-level module imports only from the layers
//! before it, and no two modules import each other in a circle (also inside a layer).
//! Read from the `crate::` paths in the source, test code left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. A module may import only from modules listed before it.
const LAYERS: [&str; 9] = [
    "sys", "cli", "config", "filter", "watch", "sync", "plugin", "service", "modes",
];

/// Module path of a source file: `sync/queue.rs` → `sync::queue`, `sync/mod.rs` → `sync`.
fn module_of(rel: &str) -> String {
    let rel = rel.trim_end_matches(".rs");
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    rel.replace('/', "::")
}

/// Drops `#[cfg(test)] mod x { ... }` blocks.
pub(crate) fn strip_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else {
            return out;
        };
        let head = &after[..open];
        if !head.contains("mod ") || head.contains(';') {
            // An attribute on something else (a function, a `mod x;` line).
            let line_end = after.find('\n').unwrap_or(after.len());
            out.push_str(&after[..line_end]);
            rest = &after[line_end..];
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every `crate::a::b` path and `use crate::{a, b::c}` group member in `text`, and the
/// same with `super::`, resolved against `module` (the file's own module path).
fn crate_paths(text: &str, module: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    for (prefix, base) in [("crate::", ""), ("super::", parent)] {
        for (at, _) in text.match_indices(prefix) {
            if prefix == "crate::" && text[..at].ends_with("super::") {
                continue;
            }
            let tail = &text[at + prefix.len()..];
            let mut found = Vec::new();
            if let Some(group) = tail.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                found.extend(inner.split(',').map(|s| s.trim().to_owned()));
            } else {
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(tail.len());
                found.push(tail[..end].trim_end_matches(':').to_owned());
            }
            for f in found {
                out.push(if base.is_empty() {
                    f
                } else {
                    format!("{base}::{f}")
                });
            }
        }
    }
    out
}

/// Import edges between modules (`depth` path segments), test code left out.
fn edges(src: &Path, depth: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                files.push(p);
            }
        }
    }
    let cut = |m: &str| m.split("::").take(depth).collect::<Vec<_>>().join("::");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src").to_string_lossy();
        if rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        let module = module_of(&rel);
        let from = cut(&module);
        let text = strip_tests(&std::fs::read_to_string(&f).expect("read source"));
        let entry = graph.entry(from.clone()).or_default();
        for p in crate_paths(&text, &module) {
            let to = cut(&p);
            if !to.is_empty() && to != from && !to.starts_with(&format!("{from}::")) {
                entry.insert(to);
            }
        }
    }
    graph
}

/// One cycle in the graph, if there is any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        v: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == v) {
            let mut cycle = path[i..].to_vec();
            cycle.push(v.to_owned());
            return Some(cycle);
        }
        if done.contains(v) {
            return None;
        }
        path.push(v.to_owned());
        for w in graph.get(v).into_iter().flatten() {
            // A module's own parent counts as the same room (`sync::queue` → `sync`).
            if v.starts_with(&format!("{w}::")) {
                continue;
            }
            if let Some(c) = visit(w, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(v.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for v in graph.keys() {
        if let Some(c) = visit(v, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_imports_only_from_the_layers_before_it() {
    let graph = edges(&src(), 1);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (from, tos) in &graph {
        let Some(f) = rank(from) else {
            wrong.push(format!("{from} is in no layer: add it to LAYERS"));
            continue;
        };
        for to in tos {
            match rank(to) {
                Some(t) if t < f => {}
                _ => wrong.push(format!("{from} -> {to}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering {LAYERS:?}:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycles_between_modules_or_submodules() {
    for depth in [1, 2] {
        let graph = edges(&src(), depth);
        assert!(graph.len() > 5, "the source was read: {graph:?}");
        if let Some(c) = find_cycle(&graph) {
            panic!("import cycle (depth {depth}): {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(d.path().join("b")).expect("mkdir");
    std::fs::write(d.path().join("a.rs"), "use crate::b::x;\n").expect("write");
    std::fs::write(
        d.path().join("b/mod.rs"),
        "use crate::{c, a};\n#[cfg(test)]\nmod tests { use crate::z; }\n",
    )
    .expect("write");
    std::fs::write(d.path().join("c.rs"), "fn f() { crate::a::y(); }\n").expect("write");
    std::fs::write(d.path().join("b/x.rs"), "use super::y::Y;\n").expect("write");
    std::fs::write(d.path().join("b/y.rs"), "use super::x::X;\n").expect("write");
    let graph = edges(d.path(), 1);
    assert_eq!(graph["b"], BTreeSet::from(["a".to_owned(), "c".to_owned()]));
    let cycle = find_cycle(&graph).expect("a -> b -> a is found");
    assert_eq!(cycle.first(), cycle.last());
    let inner = edges(d.path(), 2);
    assert_eq!(inner["b::x"], BTreeSet::from(["b::y".to_owned()]));
    assert!(find_cycle(&inner).is_some());
}

/// Every `pub` function (`pub(crate)` and `pub(super)` too) under `dir` whose return type
/// holds a `Result<_, String>`, as `file: fn name`; test code left out (inline
/// `#[cfg(test)] mod x { }` blocks, `tests.rs` files and files of `#[cfg(test)] mod x;`).
/// ARCHITECTURE.md, "Errors": a caller gets a typed error or an `anyhow::Error`.
fn string_errors(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut test_only = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        // The folder a `mod x;` of this file names x in: `a/mod.rs`, `lib.rs` → `a/`,
        // `src/`; `a/b.rs` → `a/b/`.
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let base = if ["mod", "lib", "main"].contains(&stem) {
            f.parent().expect("in a folder").to_path_buf()
        } else {
            f.with_extension("")
        };
        for (at, _) in text.match_indices("#[cfg(test)]") {
            let after = text[at + "#[cfg(test)]".len()..].trim_start();
            let after = after
                .strip_prefix("pub(crate) ")
                .or_else(|| after.strip_prefix("pub(super) "))
                .or_else(|| after.strip_prefix("pub "))
                .unwrap_or(after);
            let Some(rest) = after.strip_prefix("mod ") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if rest[name.len()..].trim_start().starts_with(';') {
                test_only.insert(base.join(&name));
            }
        }
    }
    let mut found = Vec::new();
    for f in files {
        let is_test = f.file_name().is_some_and(|n| n == "tests.rs")
            || test_only
                .iter()
                .any(|t| f.with_extension("") == *t || f.starts_with(t));
        if is_test {
            continue;
        }
        let text = strip_tests(&std::fs::read_to_string(&f).expect("read source"));
        let rel = f
            .strip_prefix(dir)
            .expect("under dir")
            .display()
            .to_string();
        for (at, _) in text.match_indices("fn ") {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            // Only a visibility and qualifiers before `fn` on its line: `pub fn`,
            // `pub(crate) const fn`, ...
            let head = text[line_start..at].split_whitespace().collect::<Vec<_>>();
            let qualifier = |w: &&str| ["const", "async", "unsafe", "extern", "\"C\""].contains(w);
            if !head.first().is_some_and(|w| w.starts_with("pub"))
                || !head[1..].iter().all(qualifier)
            {
                continue;
            }
            if let Some((name, ret)) = return_type(&text[at + 3..]) {
                if holds_string_error(ret) {
                    found.push(format!("{rel}: fn {name}"));
                }
            }
        }
    }
    found.sort();
    found
}

/// The name and return type of the signature `text` starts with (after `fn `).
fn return_type(text: &str) -> Option<(&str, &str)> {
    let name_end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let open = text.find('(')?;
    let mut depth = 0;
    let mut close = None;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let rest = text[close? + 1..].trim_start();
    let ret = rest.strip_prefix("->")?;
    let end = ret.find(['{', ';']).unwrap_or(ret.len());
    let ret = ret[..end].split(" where ").next().unwrap_or("");
    Some((&text[..name_end], ret))
}

/// Whether a type holds `Result<T, String>` anywhere in it.
fn holds_string_error(ty: &str) -> bool {
    ty.match_indices("Result<").any(|(at, _)| {
        let inner = &ty[at + "Result<".len()..];
        let mut depth = 0;
        let mut args = vec![String::new()];
        for c in inner.chars() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' if depth == 0 => break,
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    args.push(String::new());
                    continue;
                }
                _ => {}
            }
            if let Some(last) = args.last_mut() {
                last.push(c);
            }
        }
        args.len() == 2 && ["String", "std::string::String"].contains(&args[1].trim())
    })
}

#[test]
fn no_public_function_returns_a_string_as_its_error() {
    let found = string_errors(&src());
    assert!(
        found.is_empty(),
        "public functions returning Result<_, String> (ARCHITECTURE.md, \"Errors\": a typed \
         error where a caller decides on the kind, anyhow::Error where it only reports, or \
         not public):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_string_error_check_finds_planted_ones() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(d.path().join("m")).expect("mkdir");
    std::fs::write(
        d.path().join("lib.rs"),
        "pub fn a() -> Result<(), String> { Ok(()) }\n\
         pub(crate) fn b(\n    x: u8,\n) -> Result<Vec<u8>, String> {\n    todo!()\n}\n\
         pub fn c(f: impl Fn() -> Result<(), String>) -> Vec<(String, Result<u16, String>)> {}\n\
         fn private() -> Result<(), String> { Ok(()) }\n\
         pub fn fine() -> Result<String, std::io::Error> { todo!() }\n\
         pub fn fine_too(f: impl Fn() -> Result<(), String>) -> Result<(), Error> { todo!() }\n\
         // pub fn commented() -> Result<(), String>\n\
         #[cfg(test)]\nmod tests { pub fn t() -> Result<(), String> { Ok(()) } }\n\
         pub(crate) const fn d() -> Result<u8, String> { Ok(0) }\n\
         let pub_fn = 1; fn not_pub() -> Result<(), String> { Ok(()) }\n\
         #[cfg(test)]\npub(crate) mod m;\n",
    )
    .expect("write");
    std::fs::write(
        d.path().join("m/x.rs"),
        "pub fn test_only() -> Result<(), String> { Ok(()) }\n",
    )
    .expect("write");
    std::fs::write(
        d.path().join("tests.rs"),
        "pub fn test_file() -> Result<(), String> { Ok(()) }\n",
    )
    .expect("write");
    assert_eq!(
        string_errors(d.path()),
        [
            "lib.rs: fn a",
            "lib.rs: fn b",
            "lib.rs: fn c",
            "lib.rs: fn d"
        ]
    );
}
