//! rsync's exclude rules as the model reads them: anchored or not, directory-only,
//! wildcards.

use super::tree::last;

/// One exclude rule.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pattern: Vec<u8>,
    anchored: bool,
    dir_only: bool,
}

impl Rule {
    pub(super) fn parse(text: &[u8]) -> Rule {
        let mut pattern = text.to_vec();
        let dir_only = pattern.len() > 1 && pattern.last() == Some(&b'/');
        if dir_only {
            pattern.pop();
        }
        let anchored = pattern.first() == Some(&b'/');
        if anchored {
            pattern.remove(0);
        }
        Rule {
            pattern,
            anchored,
            dir_only,
        }
    }

    /// Does the rule match `rel` (below the transfer's top)?
    pub(super) fn matches(&self, rel: &[u8], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.anchored || self.pattern.contains(&b'/') {
            if self.anchored {
                return glob(&self.pattern, rel, true);
            }
            // An unanchored pattern with a `/` matches the end of the path at a
            // component boundary.
            let mut starts = vec![0];
            starts.extend(
                rel.iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'/')
                    .map(|(i, _)| i + 1),
            );
            return starts
                .into_iter()
                .any(|s| glob(&self.pattern, &rel[s..], true));
        }
        glob(&self.pattern, last(rel), true)
    }
}

/// rsync's wildcard match: `*` any run without `/`, `**` any run, `?` one byte but
/// `/`, `[...]` a class, `\` escapes (only when the pattern has a wildcard).
fn glob(pat: &[u8], text: &[u8], _whole: bool) -> bool {
    let wild = pat.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    if !wild {
        return pat == text;
    }
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') => {
                let double = p.get(1) == Some(&b'*');
                let rest = if double { &p[2..] } else { &p[1..] };
                for i in 0..=t.len() {
                    if go(rest, &t[i..]) {
                        return true;
                    }
                    if i < t.len() && !double && t[i] == b'/' {
                        return false;
                    }
                }
                false
            }
            Some(b'?') => !t.is_empty() && t[0] != b'/' && go(&p[1..], &t[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                    return !t.is_empty() && t[0] == b'[' && go(&p[1..], &t[1..]);
                };
                let Some(&c) = t.first() else {
                    return false;
                };
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some(b'!') | Some(b'^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != neg && c != b'/' && go(&p[end + 1..], &t[1..])
            }
            Some(b'\\') if p.len() > 1 => !t.is_empty() && t[0] == p[1] && go(&p[2..], &t[1..]),
            Some(&c) => !t.is_empty() && t[0] == c && go(&p[1..], &t[1..]),
        }
    }
    go(pat, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_as_rsync_reads_them() {
        let r = Rule::parse(b"*~");
        assert!(r.matches(b"a/b~", false));
        assert!(!r.matches(b"a~/b", false));
        let anchored = Rule::parse(b"/a/b");
        assert!(anchored.matches(b"a/b", true));
        assert!(!anchored.matches(b"x/a/b", true));
        let dir_only = Rule::parse(b"cache/");
        assert!(dir_only.matches(b"x/cache", true));
        assert!(!dir_only.matches(b"x/cache", false));
        let class = Rule::parse(b".?*.[A-Za-z0-9][0-9A-Z]");
        assert!(class.matches(b".f.a1", false));
        assert!(!class.matches(b".f.ab", false));
        let escaped = Rule::parse(b"/a\\*b");
        assert!(escaped.matches(b"a*b", false));
        assert!(!escaped.matches(b"axb", false));
    }
}
