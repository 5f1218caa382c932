//! `<filter>`: the sersync regex excludes and the rsync filter rules (`<rule>`,
//! `<rules file>`), read and checked in the order written.

use regex::bytes::Regex;

use super::{path_regex, raw, rules, source, ConfigError, Ctx, MAX_FILTER_RULES};

pub(super) fn excludes(cx: &Ctx, filter: Option<&raw::Filter>) -> Result<Vec<Regex>, ConfigError> {
    let Some(filter) = filter else {
        return Ok(Vec::new());
    };
    if !cx.flag(
        filter.start.as_deref(),
        filter.line,
        "filter",
        "start",
        false,
    )? {
        return Ok(Vec::new());
    }
    cx.rule_count(filter, "filter")?;
    filter
        .exclude
        .iter()
        .map(|e| {
            let expr = e
                .expression
                .as_deref()
                .ok_or_else(|| cx.err(e.line, "<exclude>: missing expression="))?;
            // Anchored: the expression must match the whole relative path.
            path_regex(expr).map_err(|err| {
                cx.err(
                    e.line,
                    format!("<exclude expression=\"{expr}\">: bad regular expression: {err}"),
                )
            })
        })
        .collect()
}

/// `<filter>`'s rsync rules, `<rule>` and `<rules file>` in the order written.
pub(super) fn filter_rules(
    cx: &Ctx,
    filter: Option<&raw::Filter>,
) -> Result<rules::Rules, ConfigError> {
    let Some(filter) = filter else {
        return Ok(rules::Rules::default());
    };
    if !cx.flag(
        filter.start.as_deref(),
        filter.line,
        "filter",
        "start",
        false,
    )? {
        return Ok(rules::Rules::default());
    }
    enum Item<'a> {
        Rule(&'a raw::RuleText),
        File(&'a raw::RulesFile),
    }
    let mut items: Vec<(u32, Item)> = filter
        .rule
        .iter()
        .map(|r| (r.seq.unwrap_or(0), Item::Rule(r)))
        .chain(
            filter
                .rules
                .iter()
                .map(|f| (f.seq.unwrap_or(0), Item::File(f))),
        )
        .collect();
    items.sort_by_key(|(seq, _)| *seq);
    let mut out = Vec::new();
    for (_, item) in items {
        match item {
            Item::Rule(r) => {
                let text = r.text.as_deref().unwrap_or("").trim();
                let rule = rules::parse(&cx.bytes(text))
                    .map_err(|e| cx.err(r.line, format!("<rule>: {e}")))?;
                out.push(rule);
            }
            Item::File(f) => {
                let name = f
                    .file
                    .as_deref()
                    .ok_or_else(|| cx.err(f.line, "<rules>: missing file=\"PATH\""))?;
                let path = cx.path(name);
                let bytes = source::read_rules(&path)
                    .map_err(|e| cx.err(f.line, format!("<rules file=\"{name}\">: {e}")))?;
                for (line, text) in rules::file_lines(&bytes) {
                    let rule = rules::parse(text).map_err(|e| ConfigError {
                        file: path.display().to_string(),
                        line: Some(line),
                        message: format!(
                            "{e} (a rules file, read for <rules> at {}:{})",
                            cx.file,
                            f.line.unwrap_or(0)
                        ),
                    })?;
                    out.push(rule);
                }
            }
        }
        if out.len() > MAX_FILTER_RULES {
            return Err(cx.err(
                filter.line,
                format!(
                    "<filter>: more than the {MAX_FILTER_RULES} rules allowed in <rule> and <rules>"
                ),
            ));
        }
    }
    Ok(rules::Rules(out))
}
