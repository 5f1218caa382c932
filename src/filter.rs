//! Which paths are never synced: editor and rsync temporary files, and `<filter>` excludes.
//!
//! One path form for every check: relative to the watch root, no leading slash. A
//! directory matches an exclude if the expression matches its path with or without a
//! trailing slash, so `(.*)\.svn` and `^info/*` both work as users wrote them. The same
//! test runs on live events, on directories found while adding watches, and on the walk
//! behind a full sync; an excluded directory is never watched, so nothing below it is
//! ever seen.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use regex::bytes::Regex;

use crate::config::rules::Rules;

/// The start of a sync cookie's name: the file `--wait-synced` has the agent create and
/// delete in a watch root to learn that every earlier event of that root was read. It is
/// never pushed, and full syncs exclude it.
pub const COOKIE_PREFIX: &str = ".sersync2-cookie-";

/// Is this file name a sync cookie (see [`COOKIE_PREFIX`])?
pub fn is_cookie(name: &[u8]) -> bool {
    name.starts_with(COOKIE_PREFIX.as_bytes())
}

/// Names that are temporary by construction: dropping them loses nothing, because the
/// real file arrives by its own event (a rename or a close). Sync cookies count too.
pub fn is_temp_name(name: &[u8]) -> bool {
    if name == b"4913" || name.ends_with(b"~") || is_cookie(name) {
        return true; // vim's write probe; vim and emacs backups
    }
    let Some(rest) = name.strip_prefix(b".") else {
        return false;
    };
    if rest.starts_with(b"#") {
        return true; // emacs lock .#name
    }
    if [&b".swp"[..], b".swx", b".swpx"]
        .iter()
        .any(|ext| rest.ends_with(ext) && rest.len() > ext.len())
    {
        return true; // vim swap .name.swp
    }
    is_rsync_temp(rest)
}

/// rsync writes `.name.XXXXXX` (six random letters and digits) and renames it into
/// place. An all-lowercase suffix is not taken for one (`.htaccess.backup` is a real
/// file); the rare rsync temp file that looks like that is pushed and then deleted by
/// its rename, which is harmless.
fn is_rsync_temp(rest: &[u8]) -> bool {
    let Some(dot) = rest.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let (stem, suffix) = (&rest[..dot], &rest[dot + 1..]);
    !stem.is_empty()
        && suffix.len() == 6
        && suffix.iter().all(u8::is_ascii_alphanumeric)
        && suffix
            .iter()
            .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// [`is_temp_name`] as rsync exclude patterns, for full syncs: without them a full sync
/// that runs while an editor or rsync holds a temp file pushes it, and its later rename
/// (a dropped event) would leave it on the remote for good.
pub fn temp_name_globs() -> Vec<String> {
    let mut globs: Vec<String> = ["4913", "*~", ".#*", ".?*.swp", ".?*.swx", ".?*.swpx"]
        .iter()
        .map(|g| g.to_string())
        .collect();
    globs.push(format!("{COOKIE_PREFIX}*"));
    // `.name.XXXXXX`: six letters or digits, at least one of them a digit or capital.
    for special in 0..6 {
        let mut g = String::from(".?*.");
        for i in 0..6 {
            g.push_str(if i == special {
                "[0-9A-Z]"
            } else {
                "[A-Za-z0-9]"
            });
        }
        globs.push(g);
    }
    globs
}

/// A `<filter>` expression (as compiled: `^(?:EXPR)$` over the whole relative path) as
/// the rsync pattern that excludes the same paths, for the shapes configs use:
/// `(.*)\.log` or `.*\.log` (a name ending so, anywhere: `*.log`), `(.*/)?cache` (a
/// name, anywhere: `cache`), `^info/*` or `info` (a top-level name: `/info`); with a
/// trailing `/` (`cache/`, `(.*/)?cache/`) only directories match, and the pattern keeps
/// its `/` (`/cache/`, `cache/`): rsync's own directory-only form. Passed
/// as `--exclude`, the rule also keeps such names that exist only on a remote from
/// being deleted there, which the exact excludes found by walking the source cannot.
/// `None` for anything else (those still go as the exact excludes of a walk).
pub fn rsync_glob(compiled: &str) -> Option<String> {
    let expr = compiled.strip_prefix("^(?:")?.strip_suffix(")$")?;
    let expr = expr.strip_prefix('^').unwrap_or(expr);
    let expr = expr.strip_suffix('$').unwrap_or(expr);
    enum Kind {
        /// A name ending so, at any depth: `*NAME`.
        Suffix,
        /// A name at any depth: `NAME`.
        Name,
        /// A top-level name: `/NAME`.
        Top,
    }
    let (kind, rest) = if let Some(r) = expr
        .strip_prefix("(.*)")
        .or_else(|| expr.strip_prefix(".*"))
    {
        (Kind::Suffix, r)
    } else if let Some(r) = expr
        .strip_prefix("(.*/)?")
        .or_else(|| expr.strip_prefix("(?:.*/)?"))
    {
        (Kind::Name, r)
    } else {
        (Kind::Top, expr)
    };
    // A trailing `/` matches directories only (they are tested with one, see
    // [`Excludes::excludes`]); rsync reads a pattern ending in `/` the same way. `/*` and
    // `/?` also match without the `/`: files too.
    let (rest, dir_only) = match rest.strip_suffix('/') {
        Some(r) if !r.ends_with('\\') => (r, true),
        _ => (rest, false),
    };
    let rest = if matches!(kind, Kind::Top) && !dir_only {
        rest.strip_suffix("/*")
            .or_else(|| rest.strip_suffix("/?"))
            .unwrap_or(rest)
    } else {
        rest
    };
    // A plain name: escaped characters taken as they are, no other regex syntax, nothing
    // rsync would read as a wildcard, no directory separator.
    let mut name = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next()?;
                if e.is_ascii_alphanumeric() {
                    return None; // \d, \w, \b: classes, not characters
                }
                name.push(e);
            }
            '.' | '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => {
                return None
            }
            c => name.push(c),
        }
    }
    if name.is_empty()
        || name
            .chars()
            .any(|c| matches!(c, '/' | '*' | '?' | '[' | '\\') || c.is_control())
    {
        return None;
    }
    let slash = if dir_only { "/" } else { "" };
    Some(match kind {
        Kind::Suffix => format!("*{name}{slash}"),
        Kind::Name => format!("{name}{slash}"),
        Kind::Top => format!("/{name}{slash}"),
    })
}

/// The `<filter>` excludes, compiled and anchored, its rsync rules, and the agent's own
/// files inside one watch root. The order: the agent's own files and the `<exclude>`
/// expressions first (what they keep out stays out), then the rules (`<rule>`,
/// `<rules file>`: the first that matches decides; none: the path is in).
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    rules: Vec<Regex>,
    /// `<filter>`'s rsync rules; rsync gets them too (`Target::filter_rules`).
    filter: Arc<Rules>,
    /// The agent's own files (log, fail log, pid file, control socket...) that lie in
    /// this watch root, relative to it: never events, never pushed.
    own: Vec<PathBuf>,
}

/// The paths of `own` (absolute) that lie inside `root`, relative to it. `root` itself
/// is not one of them.
pub fn own_inside(root: &Path, own: &[PathBuf]) -> Vec<PathBuf> {
    own.iter()
        .filter_map(|p| p.strip_prefix(root).ok())
        .filter(|rel| !rel.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect()
}

/// Is `rel` one of `own`, or a temporary file the agent writes one of them through?
pub fn is_own(own: &[PathBuf], rel: &Path) -> bool {
    own.iter().any(|o| {
        if o == rel {
            return true;
        }
        match (o.file_name(), rel.file_name()) {
            (Some(name), Some(tmp)) => {
                o.parent() == rel.parent()
                    && crate::sys::fsafe::is_temp_of(tmp.as_bytes(), name.as_bytes())
            }
            _ => false,
        }
    })
}

/// The rsync patterns that keep one own file (relative to the watch root) and its
/// temporary files out of what rsync reads or deletes: `/path` and
/// `/dir/.name.*.tmp`, with wildcards in the names escaped.
pub fn own_globs(rel: &Path) -> Vec<String> {
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if matches!(c, '*' | '?' | '[' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    let Some(text) = rel.to_str() else {
        // rsync arguments are bytes, but `--exclude=` here is built as text; a name that
        // is not UTF-8 is left to the exact rules a walk finds.
        return Vec::new();
    };
    let exact = if text.contains(['*', '?', '[']) {
        format!("/{}", escape(text))
    } else {
        format!("/{text}")
    };
    let mut globs = vec![exact];
    if let (Some(name), parent) = (rel.file_name().and_then(|n| n.to_str()), rel.parent()) {
        let dir = parent
            .and_then(Path::to_str)
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/", escape(d)))
            .unwrap_or_default();
        globs.push(format!("/{dir}.{}.*.tmp", escape(name)));
    }
    globs
}

impl Excludes {
    pub fn new(rules: Vec<Regex>) -> Self {
        Excludes {
            rules,
            filter: Arc::default(),
            own: Vec::new(),
        }
    }

    /// `<filter>` carries rsync rules (`<rule>`, `<rules file>`).
    pub fn has_rules(&self) -> bool {
        !self.filter.is_empty()
    }

    /// These excludes with `<filter>`'s rsync rules after them.
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.filter = Arc::new(rules);
        self
    }

    /// These excludes for one watch root, with the agent's own files inside it (`own`,
    /// relative to it: see [`own_inside`]).
    pub fn with_own(mut self, own: Vec<PathBuf>) -> Self {
        self.own = own;
        self
    }

    /// The agent's own files inside this watch root, relative to it.
    pub fn own(&self) -> &[PathBuf] {
        &self.own
    }

    /// Is this relative path one of the agent's own files (or a temporary file of one)?
    pub fn is_own(&self, rel: &Path) -> bool {
        !self.own.is_empty() && is_own(&self.own, rel)
    }

    /// Does a full sync need a walk of the tree to find what these keep out? Not for the
    /// agent's own files alone: their rsync patterns ([`own_globs`]) say it, except for a
    /// path that is not UTF-8.
    pub fn needs_walk(&self) -> bool {
        !self.rules.is_empty() || self.own.iter().any(|p| p.to_str().is_none())
    }

    /// The rules [`rsync_glob`] can say as rsync patterns.
    pub fn rsync_globs(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter_map(|r| rsync_glob(r.as_str()))
            .collect()
    }

    /// Is this relative path excluded? Only the path itself is tested: its ancestors
    /// were tested when their watches were made (a walk does not descend into what is
    /// kept out, and a directory renamed to an excluded name loses its watches).
    pub fn excludes(&self, rel: &Path, is_dir: bool) -> bool {
        self.excluded_by_expression(rel, is_dir)
            || self.filter.excludes(rel.as_os_str().as_bytes(), is_dir)
    }

    /// Is this relative path kept out by the agent's own files or an `<exclude>`
    /// expression (the rsync rules not looked at)?
    fn excluded_by_expression(&self, rel: &Path, is_dir: bool) -> bool {
        if self.is_own(rel) {
            return true;
        }
        if self.rules.is_empty() {
            return false;
        }
        let bytes = rel.as_os_str().as_bytes();
        if self.rules.iter().any(|r| r.is_match(bytes)) {
            return true;
        }
        if is_dir {
            let mut with_slash = Vec::with_capacity(bytes.len() + 1);
            with_slash.extend_from_slice(bytes);
            with_slash.push(b'/');
            return self.rules.iter().any(|r| r.is_match(&with_slash));
        }
        false
    }
}

impl Excludes {
    /// Must an anchored rule (`- /path`, a full sync's or a listing's exact excludes)
    /// keep out this excluded path? Not when the path is excluded only as a directory
    /// (`e/`) and a rule that travels as an rsync pattern ([`rsync_glob`]) says so: the
    /// pattern keeps the directory out by itself, while the anchored rule, which matches
    /// any type, would also keep a file or link of that name on a remote from being
    /// deleted (a file replaced here by an excluded directory stayed there for good).
    /// A path kept out by the rsync rules alone needs none: rsync gets them itself.
    pub fn needs_anchored_rule(&self, rel: &Path, is_dir: bool) -> bool {
        if !self.excluded_by_expression(rel, is_dir) {
            return false;
        }
        if !is_dir || self.is_own(rel) {
            return true;
        }
        let bytes = rel.as_os_str().as_bytes();
        if self.rules.iter().any(|r| r.is_match(bytes)) {
            return true;
        }
        let mut with_slash = Vec::with_capacity(bytes.len() + 1);
        with_slash.extend_from_slice(bytes);
        with_slash.push(b'/');
        !self
            .rules
            .iter()
            .any(|r| r.is_match(&with_slash) && rsync_glob(r.as_str()).is_some())
    }

    /// Is this path, as a directory, excluded only as a directory (by a rule ending in
    /// `/`), a file or link of that name not?
    pub fn excludes_only_as_directory(&self, rel: &Path) -> bool {
        !self.excludes(rel, false) && self.excludes(rel, true)
    }
}

/// Should this entry (name within its directory, full relative path) be skipped? Temp
/// names count for directories too, as they do in a full sync's exclude patterns.
pub fn skip(excludes: &Excludes, name: &[u8], rel: &Path, is_dir: bool) -> bool {
    is_temp_name(name) || excludes.excludes(rel, is_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(exprs: &[&str]) -> Excludes {
        Excludes::new(
            exprs
                .iter()
                .map(|e| crate::config::path_regex(e).expect("regex"))
                .collect(),
        )
    }

    #[test]
    fn vim_save_sequence_leaves_only_the_file() {
        for temp in [
            &b"4913"[..],
            b"a.log~",
            b".a.log.swp",
            b".a.log.swx",
            b".a.log.swpx",
        ] {
            assert!(is_temp_name(temp), "{}", String::from_utf8_lossy(temp));
        }
        assert!(!is_temp_name(b"a.log"));
    }

    #[test]
    fn rsync_and_emacs_temps_are_dropped_but_dotfiles_sync() {
        assert!(is_temp_name(b".index.html.a8Xk2Q"));
        assert!(is_temp_name(b".#notes.txt"));
        assert!(!is_temp_name(b".htaccess"));
        assert!(!is_temp_name(b".htaccess.backup"));
        assert!(!is_temp_name(b".swp"));
        assert!(!is_temp_name(b".env"));
        assert!(!is_temp_name(b"49130"));
    }

    #[test]
    fn the_agents_own_files_and_their_temporary_files_are_excluded() {
        let own = own_inside(
            Path::new("/www"),
            &[
                PathBuf::from("/www/logs/agent.log"),
                PathBuf::from("/www/fail.sh"),
                PathBuf::from("/var/lib/sersync/x.pid"),
                PathBuf::from("/www"),
                PathBuf::from("/wwwx/y"),
            ],
        );
        assert_eq!(
            own,
            [PathBuf::from("logs/agent.log"), PathBuf::from("fail.sh")]
        );
        let ex = Excludes::default().with_own(own);
        assert!(ex.excludes(Path::new("logs/agent.log"), false));
        assert!(ex.excludes(Path::new("fail.sh"), false));
        assert!(ex.excludes(Path::new(".fail.sh.0123456789abcdef.tmp"), false));
        assert!(!ex.excludes(Path::new("logs/.fail.sh.0123456789abcdef.tmp"), false));
        assert!(!ex.excludes(Path::new("logs/agent.log.1"), false));
        assert!(!ex.excludes(Path::new("logs"), true));
        assert!(!ex.excludes(Path::new("agent.log"), false));
        assert!(skip(&ex, b"agent.log", Path::new("logs/agent.log"), false));
        assert!(!ex.needs_walk(), "their rsync patterns are enough");
        assert!(ex
            .clone()
            .with_own(vec![PathBuf::from(std::ffi::OsStr::from_bytes(b"\xff"))])
            .needs_walk());
    }

    #[test]
    fn own_files_become_anchored_rsync_patterns() {
        assert_eq!(
            own_globs(Path::new("logs/agent.log")),
            ["/logs/agent.log", "/logs/.agent.log.*.tmp"]
        );
        assert_eq!(
            own_globs(Path::new("fail.sh")),
            ["/fail.sh", "/.fail.sh.*.tmp"]
        );
        assert_eq!(
            own_globs(Path::new("a[1]/f*.sh")),
            ["/a\\[1]/f\\*.sh", "/a\\[1]/.f\\*.sh.*.tmp"]
        );
    }

    #[test]
    fn sync_cookies_are_dropped_and_kept_out_of_full_syncs() {
        assert!(is_temp_name(b".sersync2-cookie-42-7"));
        assert!(is_cookie(b".sersync2-cookie-42-7"));
        assert!(!is_cookie(b"sersync2-cookie-42-7"));
        assert!(temp_name_globs().contains(&".sersync2-cookie-*".to_owned()));
    }

    /// Found by an outside attack run: a mirror's own `cache/` and `*.log`, excluded
    /// by `<filter>`, were deleted by full syncs and listing pushes (only the excluded
    /// names found in the source were passed to rsync).
    #[test]
    fn common_filter_expressions_become_rsync_patterns_matching_the_same_paths() {
        let cases: [(&str, Option<&str>); 12] = [
            (r"(.*)\.log", Some("*.log")),
            (r".*\.gz", Some("*.gz")),
            (r"(.*)\.svn", Some("*.svn")),
            (r"(.*/)?cache", Some("cache")),
            (r"(.*/)?node_modules", Some("node_modules")),
            (r"^info/*", Some("/info")),
            (r"static", Some("/static")),
            (r"(.*)\.(gz|zip)", None),
            (r"^info/(.*)", None),
            (r"(.*)\d+", None),
            (r"a/b", None),
            (r"(.*)", None),
        ];
        for (expr, want) in cases {
            let re = crate::config::path_regex(expr).expect("regex");
            assert_eq!(rsync_glob(re.as_str()).as_deref(), want, "{expr}");
        }
        // What each pattern excludes, the expression excludes too.
        let e = ex(&[r"(.*)\.log", r"(.*/)?cache", r"^info/*"]);
        for (path, dir) in [
            ("x.log", false),
            ("a/b/x.log", false),
            ("cache", true),
            ("a/cache", true),
            ("info", true),
        ] {
            assert!(e.excludes(Path::new(path), dir), "{path}");
        }
        for path in ["a/info", "a/cachex", "x.log.txt"] {
            assert!(!e.excludes(Path::new(path), true), "{path}");
        }
        assert_eq!(e.rsync_globs(), ["*.log", "cache", "/info"]);
    }

    /// rsync's reading of the patterns [`rsync_glob`] makes, for one path (relative to
    /// the transfer's top): `/NAME` anchored at the top, `NAME` and `*NAME` against the
    /// last component; a trailing `/` matches directories only.
    fn rsync_excludes(glob: &str, path: &str, is_dir: bool) -> bool {
        let (glob, dir_only) = match glob.strip_suffix('/') {
            Some(g) => (g, true),
            None => (glob, false),
        };
        if dir_only && !is_dir {
            return false;
        }
        let last = path.rsplit('/').next().unwrap_or(path);
        if let Some(top) = glob.strip_prefix('/') {
            top == path
        } else if let Some(suffix) = glob.strip_prefix('*') {
            last.ends_with(suffix)
        } else {
            glob == last
        }
    }

    /// Found by an outside attack run: `ead/` (directories named `ead` at the top) became
    /// the rsync pattern `/ead`, which matches a file too: a regular file `ead` was kept
    /// out of every full sync (and listing, and verify) while live pushes sent it.
    #[test]
    fn a_directory_only_exclude_stays_directory_only_as_an_rsync_pattern() {
        let cases: [(&str, Option<&str>); 6] = [
            ("ead/", Some("/ead/")),
            ("^ead/$", Some("/ead/")),
            (r"(.*/)?ead/", Some("ead/")),
            (r"(.*)\.d/", Some("*.d/")),
            ("ead/*", Some("/ead")),
            (r"ead\/", None),
        ];
        for (expr, want) in cases {
            let re = crate::config::path_regex(expr).expect("regex");
            assert_eq!(rsync_glob(re.as_str()).as_deref(), want, "{expr}");
        }
    }

    /// Found by the simulator (seed 1167, directory-only excludes): a full sync's walk
    /// listed the excluded directory `e` as the anchored rule `- /e`, which also kept a
    /// file `e` on the remote (pushed before the file was replaced by the directory)
    /// from being deleted, for good. A directory excluded only as a directory by a rule
    /// that travels as an rsync pattern (`e/`) needs no anchored rule; one excluded
    /// whatever its type, or by a rule with no pattern, keeps it.
    #[test]
    fn a_directory_excluded_only_as_a_directory_by_a_pattern_needs_no_anchored_rule() {
        let e = ex(&[r"(.*/)?e/", r"(.*)\.log", r"a.+z/"]);
        assert!(!e.needs_anchored_rule(Path::new("e"), true));
        assert!(!e.needs_anchored_rule(Path::new("d/e"), true));
        assert!(e.excludes_only_as_directory(Path::new("d/e")));
        assert!(!e.excludes_only_as_directory(Path::new("x.log")));
        // Excluded whatever its type: the anchored rule stays.
        assert!(e.needs_anchored_rule(Path::new("x.log"), true));
        assert!(e.needs_anchored_rule(Path::new("x.log"), false));
        // Only as a directory, but by an expression with no rsync pattern: it stays.
        assert!(rsync_glob(crate::config::path_regex("a.+z/").expect("regex").as_str()).is_none());
        assert!(e.needs_anchored_rule(Path::new("abz"), true));
        // The agent's own files keep theirs.
        let own = ex(&[r"(.*/)?e/"]).with_own(vec![PathBuf::from("e")]);
        assert!(own.needs_anchored_rule(Path::new("e"), true));
    }

    /// Every pattern [`rsync_glob`] makes excludes exactly the paths its expression
    /// excludes, files and directories, so live pushes and full syncs agree.
    #[test]
    fn rsync_patterns_exclude_what_their_expressions_exclude() {
        let exprs = [
            "ead/",
            "ead",
            "ead/*",
            "ead/?",
            r"(.*/)?ead/",
            r"(.*/)?ead",
            r"(.*)\.d/",
            r"(.*)\.d",
            r".*\.log",
            r"^info/*",
        ];
        let paths = [
            "ead", "a/ead", "a/b/ead", "eadx", "xead", "x.d", "a/x.d", ".d", "x.log", "a/x.log",
            "info", "a/info", "a",
        ];
        for expr in exprs {
            let re = crate::config::path_regex(expr).expect("regex");
            let glob = rsync_glob(re.as_str()).unwrap_or_else(|| panic!("{expr}: no pattern"));
            let e = Excludes::new(vec![re]);
            for path in paths {
                for is_dir in [false, true] {
                    assert_eq!(
                        rsync_excludes(&glob, path, is_dir),
                        e.excludes(Path::new(path), is_dir),
                        "{expr} as {glob}: {path} (directory: {is_dir})"
                    );
                }
            }
        }
    }

    /// The rsync rules come after the `<exclude>` expressions and the agent's own files:
    /// what those keep out stays out whatever the rules say (every existing config means
    /// what it meant); the rules decide the rest. A path the rules alone keep out needs
    /// no exact rule in a full sync: rsync gets the rules themselves.
    #[test]
    fn rsync_rules_come_after_the_expressions_and_need_no_exact_rule() {
        let rules = crate::config::rules::Rules(
            ["+ *.log", "+ /public/***", "- cache/", "- *"]
                .iter()
                .map(|r| crate::config::rules::parse(r.as_bytes()).expect("rule"))
                .collect(),
        );
        let e = ex(&[r"(.*)\.log"])
            .with_rules(rules)
            .with_own(vec![PathBuf::from("public/agent.pid")]);
        assert!(
            e.excludes(Path::new("public/x.log"), false),
            "the expression first"
        );
        assert!(
            e.excludes(Path::new("public/agent.pid"), false),
            "own files first"
        );
        assert!(!e.excludes(Path::new("public"), true));
        assert!(!e.excludes(Path::new("public/a/b"), false));
        assert!(e.excludes(Path::new("private"), true));
        assert!(e.excludes(Path::new("top.txt"), false));
        assert!(e.needs_anchored_rule(Path::new("public/x.log"), false));
        assert!(!e.needs_anchored_rule(Path::new("private"), true));
        assert!(!e.needs_anchored_rule(Path::new("top.txt"), false));
        // A directory-only rule: the machinery of `e/` applies to it.
        let d = Excludes::default().with_rules(crate::config::rules::Rules(vec![
            crate::config::rules::parse(b"- cache/").expect("rule"),
        ]));
        assert!(d.excludes_only_as_directory(Path::new("a/cache")));
        assert!(!d.needs_anchored_rule(Path::new("a/cache"), true));
        assert!(!d.needs_walk(), "rsync applies the rules itself");
        assert!(skip(&d, b"cache", Path::new("cache"), true));
        assert!(!skip(&d, b"cache", Path::new("cache"), false));
    }

    #[test]
    fn excludes_match_the_whole_relative_path() {
        let e = ex(&[r"(.*)\.svn", r"^info/*", r"(.*)\.gz"]);
        assert!(e.excludes(Path::new("a/b/.svn"), true));
        assert!(e.excludes(Path::new(".svn"), true));
        assert!(e.excludes(Path::new("info"), true));
        assert!(!e.excludes(Path::new("information"), true));
        assert!(e.excludes(Path::new("x/y.tar.gz"), false));
        assert!(!e.excludes(Path::new("x/y.gz.txt"), false));
    }

    #[test]
    fn trailing_slash_form_works_for_directories_only() {
        let e = ex(&[r"cache/"]);
        assert!(e.excludes(Path::new("cache"), true));
        assert!(!e.excludes(Path::new("cache"), false));
    }

    #[test]
    fn no_rules_exclude_nothing() {
        assert!(!Excludes::default().excludes(Path::new("anything"), true));
    }

    // A name with a newline or bytes that are not UTF-8 slipped past `(.*)\.key`.
    #[test]
    fn a_name_with_a_newline_or_invalid_utf8_is_still_excluded() {
        use std::os::unix::ffi::OsStrExt;
        let e = ex(&[r"(.*)\.key"]);
        for name in [
            &b"live\xff.key"[..],
            b"nl\nx.key",
            b"\n.key",
            b"a/b\xc3/\n\x80.key",
        ] {
            let p = Path::new(std::ffi::OsStr::from_bytes(name));
            assert!(e.excludes(p, false), "{:?}", String::from_utf8_lossy(name));
        }
        assert!(!e.excludes(Path::new("live.key.txt"), false));
    }

    #[test]
    fn non_ascii_literals_match_their_utf8_bytes_and_classes_are_ascii() {
        let e = ex(&["données/.*", r"\w+\.tmp"]);
        assert!(e.excludes(Path::new("données/x"), false));
        assert!(!e.excludes(Path::new("donnees/x"), false));
        assert!(e.excludes(Path::new("ab_9.tmp"), false));
        // \w is [0-9A-Za-z_]: a non-ASCII letter is not a word character.
        assert!(!e.excludes(Path::new("é.tmp"), false));
        assert!(crate::config::path_regex(r"\pL").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_name_ending_in_key_is_excluded(name in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            use std::os::unix::ffi::OsStrExt;
            let e = ex(&[r"(.*)\.key"]);
            let mut full = b"x".to_vec();
            full.extend_from_slice(&name);
            full.extend_from_slice(b".key");
            let p = Path::new(std::ffi::OsStr::from_bytes(&full));
            proptest::prop_assert!(e.excludes(p, false));
        }
    }
}
