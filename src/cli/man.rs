//! The sersync2(1) man page, generated from the same definition as `--help`: the flags of
//! [`Args`] (clap_mangen) and the sections of [`AFTER_HELP`] (DESCRIPTION, EXIT STATUS,
//! SIGNALS, FILES, ...), so the page and `--help` cannot drift apart. Built only for the
//! `sersync2-man` generator (feature `man`) and the tests; the daemon never carries it.

use clap::CommandFactory;
use roff::{roman, Roff};

use super::{Args, AFTER_HELP};

/// One titled section of the long help: its heading and its lines, the help's indent
/// removed.
#[derive(Debug, PartialEq, Eq)]
struct Section<'a> {
    title: &'a str,
    lines: Vec<&'a str>,
}

/// Splits the long help into sections: a line at column 0 is a heading, the indented
/// lines under it are its body.
fn sections(help: &str) -> Vec<Section<'_>> {
    let mut out: Vec<Section> = Vec::new();
    for line in help.lines() {
        if !line.is_empty() && !line.starts_with(char::is_whitespace) {
            out.push(Section {
                title: line.trim_end(),
                lines: Vec::new(),
            });
        } else if let Some(section) = out.last_mut() {
            section
                .lines
                .push(line.strip_prefix("    ").unwrap_or(line));
        }
    }
    for section in &mut out {
        while section.lines.last().is_some_and(|l| l.trim().is_empty()) {
            section.lines.pop();
        }
    }
    out
}

/// A section's body as roff: prose is filled into paragraphs; a body with aligned
/// columns (two spaces inside a line) is kept line for line, as in `--help`.
fn render_section(roff: &mut Roff, section: &Section) {
    roff.control("SH", [section.title]);
    let columns = section.lines.iter().any(|l| l.trim().contains("  "));
    if columns {
        roff.control("nf", []);
    }
    for line in &section.lines {
        if line.trim().is_empty() {
            roff.control(if columns { "sp" } else { "PP" }, []);
        } else {
            roff.text([roman(*line)]);
        }
    }
    if columns {
        roff.control("fi", []);
    }
}

/// The man page in roff: NAME, SYNOPSIS, DESCRIPTION, OPTIONS, then the other sections
/// of the long help in their order, then SEE ALSO.
pub fn page() -> std::io::Result<String> {
    let man = clap_mangen::Man::new(Args::command())
        .title("SERSYNC2")
        .manual("sersync2 manual");
    let sections = sections(AFTER_HELP);
    let (description, rest): (Vec<_>, Vec<_>) =
        sections.iter().partition(|s| s.title == "DESCRIPTION");

    // Each clap_mangen part starts with the same two-line preamble; keep the first.
    let preamble = Roff::new().render();
    let mut out = String::new();
    let mut part = |render: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        render(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        match text.strip_prefix(&preamble) {
            Some(body) if !out.is_empty() => out.push_str(body),
            _ => out.push_str(&text),
        }
        std::io::Result::Ok(())
    };
    part(&|w| man.render_title(w))?;
    part(&|w| man.render_name_section(w))?;
    part(&|w| man.render_synopsis_section(w))?;
    part(&|w| {
        let mut roff = Roff::new();
        for section in &description {
            render_section(&mut roff, section);
        }
        roff.to_writer(w)
    })?;
    part(&|w| man.render_options_section(w))?;
    part(&|w| {
        let mut roff = Roff::new();
        for section in &rest {
            render_section(&mut roff, section);
        }
        roff.control("SH", ["SEE ALSO"]);
        roff.text([roman(
            "sersync2.xml(5) for every element of the config file, rsync(1), \
             rsyncd.conf(5), systemctl(1), logrotate(8); the README of the sersync2 sources",
        )]);
        roff.to_writer(w)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page as a reader sees it, roff escapes undone, for matching help text.
    fn plain(page: &str) -> String {
        page.replace("\\*(Aq", "'")
            .replace("\\-", "-")
            .replace("\\(aq", "'")
            .replace("\\&", "")
            .replace("\\(ga", "`")
            .replace("\\e", "\\")
    }

    #[test]
    fn the_man_page_carries_the_exit_status_section_of_the_long_help() {
        let page = plain(&page().expect("renders"));
        assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
        let exit = sections(AFTER_HELP)
            .into_iter()
            .find(|s| s.title == "EXIT STATUS")
            .expect("--help has EXIT STATUS");
        assert!(exit.lines.len() >= 3, "{exit:?}");
        for line in exit.lines.iter().filter(|l| !l.trim().is_empty()) {
            assert!(page.contains(line), "man page lacks {line:?}:\n{page}");
        }
        assert!(page.contains("runtime failure: another instance holds this config's lock"));
    }

    #[test]
    fn every_section_of_the_long_help_and_every_flag_is_in_the_man_page() {
        let page = plain(&page().expect("renders"));
        for s in sections(AFTER_HELP) {
            let heading = if s.title.contains(' ') {
                format!(".SH \"{}\"", s.title)
            } else {
                format!(".SH {}", s.title)
            };
            assert!(page.contains(&heading), "no {heading}:\n{page}");
        }
        for title in ["NAME", "SYNOPSIS", "OPTIONS", "\"SEE ALSO\""] {
            assert!(page.contains(&format!(".SH {title}")), "no {title}");
        }
        for flag in [
            "--test-config",
            "--replay",
            "--drop-unknown",
            "--pid-file",
            "--batch",
        ] {
            assert!(page.contains(flag), "no {flag}");
        }
        assert_eq!(page.matches(".SH DESCRIPTION").count(), 1);
        assert_eq!(page.matches(".ds Aq").count(), 2, "one preamble (.ie/.el)");
    }

    #[test]
    fn the_long_help_splits_into_titled_sections() {
        let s = sections("A\n    one\n\n    two\nB C\n    x  y\n\n");
        assert_eq!(
            s,
            vec![
                Section {
                    title: "A",
                    lines: vec!["one", "", "two"]
                },
                Section {
                    title: "B C",
                    lines: vec!["x  y"]
                },
            ]
        );
    }
}
