//! Include and exclude rules in rsync's own filter syntax (`<filter><rule>+ /docs/***</rule>`
//! and `<rules file="..."/>`): parsed here, and matched exactly as rsync 3 matches them
//! (`exclude.c`'s `rule_matches`, `wildmatch.c`), so that what the agent watches and pushes
//! and what rsync sends and deletes with the same rules as `--filter=` agree.
//!
//! The supported rules: `+ PATTERN` / `include PATTERN` and `- PATTERN` /
//! `exclude PATTERN` (one space or `_` after the rule's name). The first rule that matches
//! a path decides; a path no rule matches is included. A pattern starting with `/` is
//! anchored at the watch root; one with a `/` inside (not counting a trailing one) or a
//! `**` is matched against the whole path, else against its last component; a trailing `/`
//! matches directories only; `*` and `?` match anything but `/`, `**` anything, `[...]` a
//! class (`[!...]`, `[^...]`, ranges, `[:alpha:]`...), `\` quotes the next character of a
//! pattern with wildcards; `dir/***` matches `dir` and everything below it. As rsync
//! applies them while it descends, a path is selected only if every directory above it is
//! ([`Rules::selected`]): `+ *.txt` then `- *` keeps out the files in subdirectories,
//! because the subdirectories themselves are kept out.
//!
//! What rsync has beyond that (merge files, `:` per-directory merges, `P`/`R`/`H`/`S`,
//! `!`, modifiers such as `,s` or `/`) is refused with what to write instead.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// The longest pattern accepted (rsync discards longer ones: MAXPATHLEN).
pub const MAX_PATTERN: usize = 4095;

/// One rule: include or exclude, and its pattern as rsync compiles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub include: bool,
    /// The pattern as written (a trailing `/` included).
    pub written: Vec<u8>,
    /// The pattern without its trailing `/`.
    pattern: Vec<u8>,
    dir_only: bool,
    /// Slashes in `pattern` (a leading one included).
    slashes: usize,
    /// Holds `*`, `?` or `[`.
    wild: bool,
    /// Holds `**`.
    wild2: bool,
    /// Starts with `**`.
    wild2_prefix: bool,
    /// Ends with `***`.
    wild3_suffix: bool,
}

/// An ordered list of rules: the first that matches decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

impl Rule {
    /// The rule as rsync reads it in `--filter=`: `+ PATTERN` or `- PATTERN`.
    pub fn text(&self) -> Vec<u8> {
        let mut t = if self.include {
            b"+ ".to_vec()
        } else {
            b"- ".to_vec()
        };
        t.extend_from_slice(&self.written);
        t
    }

    /// Does this rule's pattern match `path` (relative to the root, no leading `/`)?
    pub fn matches(&self, path: &[u8], is_dir: bool) -> bool {
        if path.is_empty() {
            return false;
        }
        if !is_dir && self.dir_only {
            return false;
        }
        let mut name = path;
        let mut text: Vec<u8> = Vec::new();
        if self.slashes == 0 && !self.wild2 {
            if let Some(at) = name.iter().rposition(|&b| b == b'/') {
                name = &name[at + 1..];
            }
        } else if self.wild2_prefix {
            // "**/" may match at the start.
            text.push(b'/');
        }
        text.extend_from_slice(name);
        if is_dir && self.wild3_suffix {
            // "dir/***" matches the directory itself.
            text.push(b'/');
        }
        let (pattern, anchored) = match self.pattern.strip_prefix(b"/") {
            Some(p) => (p, true),
            None => (&self.pattern[..], false),
        };
        if self.wild {
            let where_ = if !anchored && self.slashes > 0 && !self.wild2 {
                Where::Trailing(self.slashes + 1)
            } else if !anchored && !self.wild2_prefix && self.wild2 {
                Where::AnySlash
            } else {
                Where::Start
            };
            wildmatch_array(pattern, &text, where_)
        } else if anchored {
            name == pattern
        } else {
            let (l1, l2) = (name.len(), pattern.len());
            l2 <= l1 && name.ends_with(pattern) && (l1 == l2 || name[l1 - l2 - 1] == b'/')
        }
    }
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What the first matching rule says of this one path (its ancestors not looked at):
    /// `Some(true)` included, `Some(false)` excluded, `None` no rule matches.
    pub fn decide(&self, path: &[u8], is_dir: bool) -> Option<bool> {
        self.0
            .iter()
            .find(|r| r.matches(path, is_dir))
            .map(|r| r.include)
    }

    /// Is this path kept out by the rules, its ancestors taken as let in (a walk that
    /// does not descend into what is kept out, a watch below let-in directories)?
    pub fn excludes(&self, path: &[u8], is_dir: bool) -> bool {
        self.decide(path, is_dir) == Some(false)
    }

    /// Is this path selected: neither it nor any directory above it kept out?
    pub fn selected(&self, path: &[u8], is_dir: bool) -> bool {
        if self.is_empty() {
            return true;
        }
        for (i, &b) in path.iter().enumerate() {
            if b == b'/' && i > 0 && self.excludes(&path[..i], true) {
                return false;
            }
        }
        !self.excludes(path, is_dir)
    }

    /// The rules as rsync arguments, in order: `--filter=+ PATTERN`...
    pub fn rsync_args(&self) -> Vec<OsString> {
        self.0
            .iter()
            .map(|r| {
                let mut a = b"--filter=".to_vec();
                a.extend_from_slice(&r.text());
                OsString::from_vec(a)
            })
            .collect()
    }
}

/// Parses one rule (a `<rule>` element's text, or a line of a rules file). The error
/// says what is wrong and what to write.
pub fn parse(text: &[u8]) -> Result<Rule, String> {
    const WRITE: &str =
        "write `+ PATTERN` or `- PATTERN` (or `include PATTERN`, `exclude PATTERN`)";
    let shown = String::from_utf8_lossy(text);
    if text.is_empty() {
        return Err(format!("an empty rule: {WRITE}"));
    }
    if text.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0) {
        return Err(format!(
            "rule {shown:?} holds a line break or NUL: one rule per <rule> or per line"
        ));
    }
    let long = |name: &str| -> Option<&[u8]> {
        let rest = text.strip_prefix(name.as_bytes())?;
        match rest.first() {
            None => Some(rest),
            Some(&c) if c.is_ascii_whitespace() || c == b'_' || c == b',' => Some(rest),
            _ => None,
        }
    };
    let unsupported = |what: &str, instead: &str| {
        Err(format!(
            "rule {shown:?}: {what} is not supported here; {instead}"
        ))
    };
    // (include, what follows the rule's name)
    let (include, rest): (bool, &[u8]) = if let Some(r) = long("include") {
        (true, r)
    } else if let Some(r) = long("exclude") {
        (false, r)
    } else if long("merge").is_some() || text.starts_with(b".") {
        return unsupported(
            "a merge file (`merge`, `.`)",
            "write <rules file=\"PATH\"/> at that place instead",
        );
    } else if long("dir-merge").is_some() || text.starts_with(b":") {
        return unsupported(
            "a per-directory merge file (`dir-merge`, `:`)",
            "list the rules in <rule> elements or a <rules file=\"PATH\"/>",
        );
    } else if long("clear").is_some() || text.starts_with(b"!") {
        return unsupported("`!` (clear the list)", "remove the rules before it instead");
    } else if long("protect").is_some()
        || long("risk").is_some()
        || long("hide").is_some()
        || long("show").is_some()
        || matches!(text.first(), Some(b'P' | b'R' | b'H' | b'S'))
    {
        return unsupported(
            "a one-sided rule (`P`/`protect`, `R`/`risk`, `H`/`hide`, `S`/`show`)",
            "write `- PATTERN` (kept out of every push, and kept on the remotes) or \
             `+ PATTERN`",
        );
    } else {
        match text.first() {
            Some(b'+') => (true, &text[1..]),
            Some(b'-') => (false, &text[1..]),
            _ => return Err(format!("rule {shown:?}: unknown rule: {WRITE}")),
        }
    };
    let pattern = match rest.first() {
        Some(b' ' | b'_') => &rest[1..],
        None => &rest[..0],
        Some(b',') => {
            return unsupported(
                "a modifier (`,s`, `,r`, `,p`, `,!`, `,x`, `,/`...)",
                "write the rule without it: `+ PATTERN` or `- PATTERN`",
            )
        }
        Some(_) => {
            return unsupported(
                "anything between the rule's name and the one space (or `_`) before its \
                 pattern (a modifier, or a tab)",
                WRITE,
            )
        }
    };
    if pattern.is_empty() {
        return Err(format!("rule {shown:?} has no pattern: {WRITE}"));
    }
    if pattern.len() > MAX_PATTERN {
        return Err(format!(
            "rule's pattern is {} bytes, longer than the {MAX_PATTERN} rsync accepts",
            pattern.len()
        ));
    }
    Ok(compile(include, pattern))
}

/// The rule as rsync's `add_rule` compiles it.
pub fn compile(include: bool, written: &[u8]) -> Rule {
    let (pattern, dir_only) = match written.strip_suffix(b"/") {
        Some(p) if written.len() > 1 => (p.to_vec(), true),
        _ => (written.to_vec(), false),
    };
    let slashes = pattern.iter().filter(|&&b| b == b'/').count();
    let wild = pattern.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    let star2 = pattern.windows(2).position(|w| w == b"**");
    let wild2 = wild && star2.is_some();
    Rule {
        include,
        written: written.to_vec(),
        wild2_prefix: wild2 && star2 == Some(0),
        wild3_suffix: wild2 && pattern.ends_with(b"***"),
        pattern,
        dir_only,
        slashes,
        wild,
        wild2,
    }
}

/// The lines of a rules file as rsync reads a merge file: a line ends at LF, CR or CR LF;
/// empty lines and those starting with `#` or `;` are skipped. Each is (line number, rule).
pub fn file_lines(bytes: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut line = 0u32;
    let mut rest = bytes;
    while !rest.is_empty() {
        line = line.saturating_add(1);
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let text = &rest[..end];
        let mut next = end;
        if rest.get(end) == Some(&b'\r') && rest.get(end + 1) == Some(&b'\n') {
            next += 2;
        } else if end < rest.len() {
            next += 1;
        }
        rest = &rest[next..];
        if !text.is_empty() && text[0] != b'#' && text[0] != b';' {
            out.push((line, text));
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Where {
    /// At the start only.
    Start,
    /// The last N components.
    Trailing(usize),
    /// At the start or after any `/`.
    AnySlash,
}

const TRUE: i8 = 1;
const FALSE: i8 = 0;
const ABORT_ALL: i8 = -1;
const ABORT_TO_STARSTAR: i8 = -2;

/// wildmatch.c's `wildmatch_array` over one text (the strings it joins, joined).
fn wildmatch_array(pattern: &[u8], text: &[u8], where_: Where) -> bool {
    let text = match where_ {
        Where::Trailing(n) => match trailing_elements(text, n) {
            Some(t) => t,
            None => return false,
        },
        _ => text,
    };
    let mut matched = dowild(pattern, text);
    if matched != TRUE && matches!(where_, Where::AnySlash) && matched != ABORT_ALL {
        let mut found = false;
        for (i, &b) in text.iter().enumerate() {
            if b == b'/' {
                matched = dowild(pattern, &text[i + 1..]);
                if matched != FALSE && matched != ABORT_TO_STARSTAR {
                    found = true;
                    break;
                }
            }
        }
        if !found {
            return false;
        }
    }
    matched == TRUE
}

/// The last `count` `/`-separated elements of `text`, if it has that many.
fn trailing_elements(text: &[u8], count: usize) -> Option<&[u8]> {
    let mut left = count;
    for (i, &b) in text.iter().enumerate().rev() {
        if b == b'/' {
            left -= 1;
            if left == 0 {
                return Some(&text[i + 1..]);
            }
        }
    }
    (left == 1).then_some(text)
}

/// wildmatch.c's `dowild`: TRUE, FALSE, ABORT_ALL or ABORT_TO_STARSTAR.
fn dowild(p: &[u8], text: &[u8]) -> i8 {
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let (mut pi, mut ti) = (0usize, 0usize);
    while pi < p.len() {
        let mut p_ch = p[pi];
        let t_ch = at(text, ti);
        if t_ch == 0 && p_ch != b'*' {
            return ABORT_ALL;
        }
        match p_ch {
            b'?' => {
                if t_ch == b'/' {
                    return FALSE;
                }
            }
            b'*' => {
                pi += 1;
                let special = at(p, pi) == b'*';
                while at(p, pi) == b'*' {
                    pi += 1;
                }
                if pi >= p.len() {
                    // A trailing "**" matches everything, a trailing "*" no more '/'.
                    if !special && text[ti..].contains(&b'/') {
                        return FALSE;
                    }
                    return TRUE;
                }
                let rest = &p[pi..];
                while ti < text.len() {
                    let m = dowild(rest, &text[ti..]);
                    if m != FALSE {
                        if !special || m != ABORT_TO_STARSTAR {
                            return m;
                        }
                    } else if !special && text[ti] == b'/' {
                        return ABORT_TO_STARSTAR;
                    }
                    ti += 1;
                }
                return ABORT_ALL;
            }
            b'[' => {
                pi += 1;
                p_ch = at(p, pi);
                if p_ch == b'^' {
                    p_ch = b'!';
                }
                let negated = p_ch == b'!';
                if negated {
                    pi += 1;
                    p_ch = at(p, pi);
                }
                let mut prev_ch = 0u8;
                let mut matched = false;
                loop {
                    if p_ch == 0 {
                        return ABORT_ALL;
                    }
                    if p_ch == b'\\' {
                        pi += 1;
                        p_ch = at(p, pi);
                        if p_ch == 0 {
                            return ABORT_ALL;
                        }
                        if t_ch == p_ch {
                            matched = true;
                        }
                    } else if p_ch == b'-'
                        && prev_ch != 0
                        && at(p, pi + 1) != 0
                        && at(p, pi + 1) != b']'
                    {
                        pi += 1;
                        p_ch = at(p, pi);
                        if p_ch == b'\\' {
                            pi += 1;
                            p_ch = at(p, pi);
                            if p_ch == 0 {
                                return ABORT_ALL;
                            }
                        }
                        if t_ch <= p_ch && t_ch >= prev_ch {
                            matched = true;
                        }
                        p_ch = 0;
                    } else if p_ch == b'[' && at(p, pi + 1) == b':' {
                        pi += 2;
                        let s = pi;
                        while at(p, pi) != 0 && at(p, pi) != b']' {
                            pi += 1;
                        }
                        if at(p, pi) == 0 {
                            return ABORT_ALL;
                        }
                        if pi < s + 1 || p[pi - 1] != b':' {
                            // No ":]": a plain '[' in the set.
                            pi = s - 2;
                            p_ch = b'[';
                            if t_ch == p_ch {
                                matched = true;
                            }
                        } else {
                            let class = &p[s..pi - 1];
                            let hit = match class {
                                b"alnum" => t_ch.is_ascii_alphanumeric(),
                                b"alpha" => t_ch.is_ascii_alphabetic(),
                                b"blank" => t_ch == b' ' || t_ch == b'\t',
                                b"cntrl" => t_ch.is_ascii_control(),
                                b"digit" => t_ch.is_ascii_digit(),
                                b"graph" => t_ch.is_ascii_graphic(),
                                b"lower" => t_ch.is_ascii_lowercase(),
                                b"print" => (0x20..=0x7e).contains(&t_ch),
                                b"punct" => t_ch.is_ascii_punctuation(),
                                b"space" => {
                                    matches!(t_ch, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
                                }
                                b"upper" => t_ch.is_ascii_uppercase(),
                                b"xdigit" => t_ch.is_ascii_hexdigit(),
                                _ => return ABORT_ALL,
                            };
                            if hit {
                                matched = true;
                            }
                            p_ch = 0;
                        }
                    } else if t_ch == p_ch {
                        matched = true;
                    }
                    prev_ch = p_ch;
                    pi += 1;
                    p_ch = at(p, pi);
                    if p_ch == b']' {
                        break;
                    }
                }
                if matched == negated || t_ch == b'/' {
                    return FALSE;
                }
            }
            _ => {
                if p_ch == b'\\' {
                    pi += 1;
                    p_ch = at(p, pi);
                }
                if t_ch != p_ch {
                    return FALSE;
                }
            }
        }
        pi += 1;
        ti += 1;
    }
    if ti < text.len() {
        FALSE
    } else {
        TRUE
    }
}

#[cfg(test)]
mod tests;
