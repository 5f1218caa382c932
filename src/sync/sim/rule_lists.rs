//! Random `<filter>` rule lists (`<rule>+ /docs/***</rule>`...), for histories with the
//! `rules` fault and for the differential test: includes and excludes, anchored or not,
//! `**`, `***`, directory-only `dir/`, classes, and the include-only shape
//! `+ /x/***` then `- *`. Parsed by the agent's own parser (`config::rules::parse`), as a
//! config's `<rule>` elements are.

use super::Rng;
use crate::config::rules::{self, Rules};

/// The names the rules speak of (the simulator's and the differential test's trees
/// use these, and more).
const WORDS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// One random pattern.
fn pattern(rng: &mut Rng) -> String {
    let w = |rng: &mut Rng| rng.pick(&WORDS).copied().unwrap_or("a");
    match rng.below(16) {
        0 => w(rng).to_owned(),
        1 => format!("/{}", w(rng)),
        2 => format!("{}/", w(rng)),
        3 => format!("/{}/", w(rng)),
        4 => format!("{}/{}", w(rng), w(rng)),
        5 => format!("/{}/{}", w(rng), w(rng)),
        6 => format!("{}/***", w(rng)),
        7 => format!("/{}/***", w(rng)),
        8 => format!("**/{}", w(rng)),
        9 => format!("{}/**", w(rng)),
        10 => format!("/{}/*", w(rng)),
        11 => "*/".to_owned(),
        12 => format!("{}*", w(rng)),
        13 => "[a-c]".to_owned(),
        14 => format!("?/{}", w(rng)),
        _ => format!("/{}/**/{}", w(rng), w(rng)),
    }
}

/// A random rule list of one to four rules, as the `<rule>` elements' texts; now and
/// then the include-only shape (`+ /x/***`, maybe `+ */` before it, then `- *`).
pub(super) fn random_rule_texts(rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::new();
    let include_only = rng.chance(25);
    for _ in 0..1 + rng.below(if include_only { 2 } else { 4 }) {
        let sign = if include_only || rng.chance(35) {
            '+'
        } else {
            '-'
        };
        out.push(format!("{sign} {}", pattern(rng)));
    }
    if include_only {
        if rng.chance(30) {
            out.insert(0, "+ */".to_owned());
        }
        out.push("- *".to_owned());
    }
    out
}

/// The texts parsed as a config's `<rule>`s are (each one the agent accepts).
pub(super) fn parse_rules(texts: &[String]) -> Result<Rules, String> {
    texts
        .iter()
        .map(|t| rules::parse(t.as_bytes()).map_err(|e| format!("rule {t:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map(Rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_rule_lists_are_rules_the_agent_accepts() {
        let mut rng = Rng(7);
        let mut include_only = 0;
        for _ in 0..500 {
            let texts = random_rule_texts(&mut rng);
            assert!(!texts.is_empty() && texts.len() <= 5, "{texts:?}");
            let parsed = parse_rules(&texts);
            assert!(parsed.is_ok(), "{parsed:?}");
            include_only += usize::from(texts.last().is_some_and(|t| t == "- *"));
        }
        assert!(include_only > 50, "{include_only}");
    }
}
