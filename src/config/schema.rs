//! Every element and attribute a config may hold, where, and what it means: the one
//! list the parser accepts names from (anything else is refused with its line and the
//! nearest known name, see [`unknown_element`] and [`unknown_attribute`]) and the
//! sersync2.xml(5) man page is written from ([`man_page`]).
//!
//! The compatibility list is part of it: what sersync 2.5.4's own confxml.xml holds and
//! this program does not use (`<head version>`, `<fileSystem xfs>`) is accepted and
//! marked [`Use::Ignored`]. A name not listed is a typo or a feature this program does
//! not have, and a typo can lose data (`<remotee>` is one remote never pushed to), so
//! the agent refuses to start on it, as `-t` does.

/// What the agent does with an element or attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Read as sersync 2.5 reads it.
    Compat,
    /// This program's own addition; sersync 2.5 ignores it.
    Added,
    /// Accepted because sersync 2.5.4's configs hold it; it changes nothing.
    Ignored,
}

/// One element: its place (`head/sersync/localpath`, as written in the shipped
/// example), what it means, and its attributes.
#[derive(Debug)]
pub struct Element {
    pub path: &'static str,
    pub what: &'static str,
    pub usage: Use,
    pub attributes: &'static [Attribute],
}

#[derive(Debug)]
pub struct Attribute {
    pub name: &'static str,
    pub what: &'static str,
    pub usage: Use,
}

const fn a(name: &'static str, what: &'static str) -> Attribute {
    Attribute {
        name,
        what,
        usage: Use::Compat,
    }
}

const fn added(name: &'static str, what: &'static str) -> Attribute {
    Attribute {
        name,
        what,
        usage: Use::Added,
    }
}

const START: Attribute = a("start", "\"true\" or \"false\": the switch.");
const EXPRESSION: Attribute = a(
    "expression",
    "A regular expression that must match the whole path relative to the watch root \
     (directories end in /).",
);

const fn el(path: &'static str, what: &'static str, attributes: &'static [Attribute]) -> Element {
    Element {
        path,
        what,
        usage: Use::Compat,
        attributes,
    }
}

/// An inotify event switch.
const fn event(path: &'static str, what: &'static str) -> Element {
    el(path, what, &[START])
}

/// Every element, parents before their children.
pub const ELEMENTS: &[Element] = &[
    el(
        "head",
        "The root element.",
        &[Attribute {
            name: "version",
            what: "The config format's version (\"2.5\"); not read.",
            usage: Use::Ignored,
        }],
    ),
    el(
        "head/host",
        "The HTTP status endpoint (/status and /metrics). Off unless start=\"true\"; \
         sersync 2.5's <host> did nothing.",
        &[
            a("hostip", "The address or name to listen on (default 127.0.0.1)."),
            a("port", "The TCP port (default 8008)."),
            added("start", "\"true\" turns the endpoint on."),
        ],
    ),
    el(
        "head/debug",
        "start=\"true\" logs at debug level.",
        &[START],
    ),
    Element {
        path: "head/fileSystem",
        what: "sersync 2.5's XFS switch; not needed, not read.",
        usage: Use::Ignored,
        attributes: &[Attribute {
            name: "xfs",
            what: "Not read.",
            usage: Use::Ignored,
        }],
    },
    el(
        "head/filter",
        "Paths never watched, pushed or fully synced, when start=\"true\".",
        &[START],
    ),
    el("head/filter/exclude", "One excluded path pattern.", &[EXPRESSION]),
    Element {
        path: "head/filter/rule",
        what: "One include or exclude rule in rsync's filter syntax, as the element's text: \
               + PATTERN or - PATTERN (include, exclude). The <rule> and <rules> elements \
               form one ordered list, checked after the <exclude> expressions: the first \
               rule that matches a path decides, a path none matches is included.",
        usage: Use::Added,
        attributes: &[],
    },
    Element {
        path: "head/filter/rules",
        what: "rsync filter rules read from a file at this place in the list, one a line \
               (empty lines and lines starting with # or ; skipped). The file must be owned \
               by root or the agent's user and not writable by group or others.",
        usage: Use::Added,
        attributes: &[added("file", "The rules file's path.")],
    },
    el(
        "head/inotify",
        "Which kernel events are pushed (each child has start=).",
        &[],
    ),
    event("head/inotify/delete", "Deletions reach the remotes (default on); off means nothing is ever deleted on a remote, full syncs included."),
    event("head/inotify/createFolder", "New directories (default on)."),
    event("head/inotify/createFile", "New files, before they are written (default off)."),
    event("head/inotify/closeWrite", "Files closed after writing (default on)."),
    event("head/inotify/moveFrom", "Names moved away (default on)."),
    event("head/inotify/moveTo", "Names moved in (default on)."),
    event("head/inotify/attrib", "Mode, owner and time changes (default off)."),
    event("head/inotify/modify", "Every write (default off)."),
    Element {
        path: "head/watcher",
        what: "The kernel interface that watches the trees.",
        usage: Use::Added,
        attributes: &[added("backend", "auto (default), inotify or fanotify.")],
    },
    el("head/sersync", "What is watched and where it goes.", &[]),
    el(
        "head/sersync/localpath",
        "One watched tree; several are allowed, none inside another.",
        &[a("watch", "The directory to watch (must exist).")],
    ),
    el(
        "head/sersync/localpath/remote",
        "One destination of that tree; several are pushed to in parallel.",
        &[
            a("ip", "The remote host."),
            a(
                "name",
                "The rsync daemon module, or in ssh mode the directory on the remote host.",
            ),
            added(
                "ssh",
                "\"true\": this remote is reached over ssh (host:dir); \"false\": through an \
                 rsync daemon (host::module). Default: as <rsync><ssh start> says.",
            ),
            added(
                "port",
                "The rsync daemon's port, or over ssh ssh's port (-p). Default: \
                 <userDefinedPort> (daemon only).",
            ),
            added(
                "user",
                "The daemon user (user@host::module), or over ssh the login (-l). Default: \
                 <auth users> (daemon only).",
            ),
            added(
                "passwordfile",
                "The daemon password file (--password-file), checked like <auth \
                 passwordfile>; not for ssh. Default: <auth passwordfile>.",
            ),
            added(
                "params",
                "Extra rsync options for this remote, after commonParams (e.g. \
                 --bwlimit=2000), checked like commonParams.",
            ),
            added(
                "timeout",
                "rsync's I/O timeout in seconds (--timeout). Default: <timeout time>.",
            ),
            added(
                "sshCommand",
                "The remote shell of this ssh remote, e.g. \"ssh -i /root/.ssh/id_b\". \
                 Default: <ssh command>.",
            ),
        ],
    ),
    el("head/sersync/rsync", "How rsync is run.", &[]),
    el(
        "head/sersync/rsync/commonParams",
        "rsync's options.",
        &[a("params", "Split into words like sh does (no shell runs), e.g. -artuz.")],
    ),
    el(
        "head/sersync/rsync/auth",
        "rsync daemon authentication, when start=\"true\".",
        &[
            START,
            a("users", "The daemon user (user@host::module)."),
            a("passwordfile", "Passed as --password-file (must be readable, mode 600)."),
        ],
    ),
    el(
        "head/sersync/rsync/userDefinedPort",
        "The rsync daemon's port, when start=\"true\".",
        &[START, a("port", "Passed as --port.")],
    ),
    el(
        "head/sersync/rsync/timeout",
        "rsync's I/O timeout, when start=\"true\".",
        &[START, a("time", "Seconds, passed as --timeout.")],
    ),
    el(
        "head/sersync/rsync/ssh",
        "ssh mode (host:dir) instead of an rsync daemon, when start=\"true\".",
        &[
            START,
            added("command", "The remote shell, e.g. \"ssh -p 2222 -i /root/.ssh/id_sync\"."),
        ],
    ),
    Element {
        path: "head/sersync/rsync/batch",
        what: "How many paths one rsync call may carry.",
        usage: Use::Added,
        attributes: &[added("size", "At least 1 (default 5000).")],
    },
    el(
        "head/sersync/failLog",
        "Where failed pushes are kept (a replayable shell script) and how often it is replayed.",
        &[
            a("path", "The fail log (default /tmp/rsync_fail_log.sh)."),
            a("timeToExecute", "Minutes between timed replays (default 60)."),
        ],
    ),
    el(
        "head/sersync/crontab",
        "Periodic full syncs, when start=\"true\".",
        &[
            START,
            a(
                "schedule",
                "Minutes between full syncs, or a cron expression (5 fields, or 6-7 with seconds).",
            ),
        ],
    ),
    el(
        "head/sersync/crontab/crontabfilter",
        "Paths left out of full syncs, when start=\"true\".",
        &[START],
    ),
    el(
        "head/sersync/crontab/crontabfilter/exclude",
        "One rsync --exclude pattern.",
        &[a("expression", "An rsync glob pattern.")],
    ),
    el(
        "head/sersync/plugin",
        "Which <plugin> block runs after each push, when start=\"true\".",
        &[START, a("name", "command, socket or refreshCDN.")],
    ),
    Element {
        path: "head/sersync/verify",
        what: "Periodic comparison of the remotes with the source (what differs is pushed).",
        usage: Use::Added,
        attributes: &[
            added("start", "\"true\" or \"false\": the switch."),
            added("schedule", "Minutes, or a cron expression."),
        ],
    },
    Element {
        path: "head/sersync/deleteBrake",
        what: "The brake on mass deletes: more deletes for one remote within seconds= (net \
               of writes) than count= and than percent= of the tree's entries are held until \
               `sersync2 --release-deletes` or `--discard-deletes` (on by default: 50%, 1000, \
               60 s).",
        usage: Use::Added,
        attributes: &[
            added("start", "\"false\" turns the brake off (default \"true\")."),
            added(
                "percent",
                "A share of the tree's entries, 0 to 100 (default 50); 0: the count alone.",
            ),
            added("count", "At least this many deletes, 1 or more (default 1000)."),
            added("seconds", "The window the deletes are counted in, 1 to 86400 (default 60)."),
            added(
                "settle",
                "Seconds without a new delete before deletes go, so an rm -rf is counted whole \
                 first, 0 to 3600 (default 2); 0: at once.",
            ),
        ],
    },
    Element {
        path: "head/sersync/bigFiles",
        what: "Big files travel in proportion to the change: a regular file of size= or more \
               that grew since this agent last pushed it goes as an append (rsync \
               --append-verify), and with inplace=\"true\" any other change of it is written \
               in place (--inplace) (on by default: 64M, appends only).",
        usage: Use::Added,
        attributes: &[
            added("start", "\"false\" pushes every file whole, as rsync does (default \"true\")."),
            added(
                "size",
                "The smallest big file: bytes, or a number with K, M, G or T (powers of \
                 1024; default 64M).",
            ),
            added("append", "\"false\": no appends (default \"true\")."),
            added(
                "inplace",
                "\"true\": other changes of a big file are written in place, where a reader on \
                 the mirror may see it half updated (default \"false\").",
            ),
        ],
    },
    el(
        "head/plugin",
        "A plugin's settings, named by <sersync><plugin name>.",
        &[
            a("name", "command, socket or refreshCDN."),
            added(
                "mode",
                "command: \"file\" (once per changed file, the path as an argument) or \
                 \"batch\" (once per push to each remote, the paths on stdin).",
            ),
            added(
                "timeout",
                "command: seconds a run may take before it is killed (1 to 86400).",
            ),
        ],
    ),
    el(
        "head/plugin/param",
        "The command plugin's program.",
        &[
            a("prefix", "The program and its first words."),
            a("suffix", "Words after the path."),
            a("ignoreError", "\"true\": a failing run is not logged as an error."),
        ],
    ),
    el(
        "head/plugin/filter",
        "Which paths the plugin runs for, when start=\"true\".",
        &[START],
    ),
    el("head/plugin/filter/include", "Paths the plugin runs for.", &[EXPRESSION]),
    el("head/plugin/filter/exclude", "Paths the plugin skips.", &[EXPRESSION]),
    el(
        "head/plugin/localpath",
        "The socket and refreshCDN plugins' settings for one watch root.",
        &[a("watch", "The watch root these settings are for.")],
    ),
    el(
        "head/plugin/localpath/deshost",
        "Where the socket plugin sends each pushed path.",
        &[a("ip", "The host."), a("port", "The TCP port.")],
    ),
    el(
        "head/plugin/localpath/cdninfo",
        "The refreshCDN plugin's account.",
        &[
            a("domainname", "The CDN's API host."),
            a("port", "Its port."),
            a("username", "The account."),
            a("passwd", "Its password."),
        ],
    ),
    el(
        "head/plugin/localpath/sendurl",
        "The refreshCDN plugin's URL base.",
        &[a("base", "Prefixed to each pushed path.")],
    ),
    el(
        "head/plugin/localpath/regexurl",
        "The refreshCDN plugin's URL rewrite.",
        &[
            a("regex", "\"true\" turns the rewrite on."),
            a("match", "The regular expression."),
        ],
    ),
];

/// The elements by their lower-case path, made once.
fn index() -> &'static std::collections::HashMap<String, &'static Element> {
    static INDEX: std::sync::OnceLock<std::collections::HashMap<String, &'static Element>> =
        std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        ELEMENTS
            .iter()
            .map(|e| (e.path.to_ascii_lowercase(), e))
            .collect()
    })
}

/// The element at `path` (its names from `head` down, lower case), if any.
pub fn element(path: &[String]) -> Option<&'static Element> {
    index().get(&path.join("/")).copied()
}

/// The element's own name, as the example writes it.
pub fn name(e: &Element) -> &'static str {
    e.path.rsplit('/').next().unwrap_or(e.path)
}

/// The children `parent` may have.
fn children(parent: &[String]) -> impl Iterator<Item = &'static Element> + '_ {
    ELEMENTS.iter().filter(move |e| {
        let mut names = e.path.split('/');
        parent
            .iter()
            .all(|p| names.next().is_some_and(|n| n.eq_ignore_ascii_case(p)))
            && names.next().is_some()
            && names.next().is_none()
    })
}

/// Whether `parent` may hold `child` (lower-case names).
pub fn known_child(parent: &[String], child: &str) -> bool {
    if parent.is_empty() {
        return child == "head";
    }
    let mut key = parent.join("/");
    key.push('/');
    key.push_str(child);
    index().contains_key(&key)
}

/// Whether the element at `path` takes attribute `attr` (lower case).
pub fn known_attribute(path: &[String], attr: &str) -> bool {
    element(path).is_some_and(|e| {
        e.attributes
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case(attr))
    })
}

/// The edit distance between two names, case ignored: insertions, deletions,
/// substitutions and swaps of two neighbours (`nmae`) count one each.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<u8> = a.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<u8> = b.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[(i - 2) * w + j - 2] + 1);
                }
                v
            };
        }
    }
    d[a.len() * w + b.len()]
}

/// The candidate nearest to `written`, if it is near enough to be a typo of it: at most
/// a third of its letters differ (at least one), or one is the other with more letters.
pub fn nearest<'a>(
    written: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let written_lc = written.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let d = distance(written, c);
            let c_lc = c.to_ascii_lowercase();
            let contained =
                written_lc.len() >= 3 && (c_lc.contains(&written_lc) || written_lc.contains(&c_lc));
            (d, contained, c)
        })
        .filter(|&(d, contained, c)| contained || d <= (written.len().max(c.len()) / 3).max(1))
        .min_by_key(|&(d, _, _)| d)
        .map(|(_, _, c)| c)
}

/// "one of <a>, <b>" / "only <a>" / "no elements".
fn listing(names: &[String]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => format!("only {one}"),
        _ => format!("one of {}", names.join(", ")),
    }
}

/// The message for an element not known at `parent/child`.
pub fn unknown_element(parent: &[String], child: &str) -> String {
    let parent_name = parent
        .last()
        .and_then(|_| element(parent).map(name))
        .unwrap_or("?");
    let siblings: Vec<&'static str> = children(parent).map(name).collect();
    let hint = match nearest(child, siblings.iter().copied()) {
        Some(n) => format!("did you mean <{n}>?"),
        None => {
            // The same name elsewhere: written at the wrong level.
            let elsewhere: Vec<String> = ELEMENTS
                .iter()
                .filter(|e| name(e).eq_ignore_ascii_case(child))
                .map(|e| format!("<{}>", e.path.rsplit_once('/').map_or(e.path, |p| p.0)))
                .collect();
            let listed: Vec<String> = siblings.iter().map(|s| format!("<{s}>")).collect();
            if elsewhere.is_empty() {
                format!("<{parent_name}> holds {}", listing(&listed))
            } else {
                format!(
                    "<{child}> belongs in {}; <{parent_name}> holds {}",
                    elsewhere.join(" or "),
                    listing(&listed)
                )
            }
        }
    };
    format!(
        "unknown element <{child}> in <{parent_name}>: {hint} (an unknown name is refused: \
         a typo would silently drop what it was meant to say)"
    )
}

/// The message for an attribute `attr` the element at `path` does not take.
pub fn unknown_attribute(path: &[String], attr: &str) -> String {
    let Some(e) = element(path) else {
        return format!("unknown attribute {attr}=");
    };
    let names: Vec<&'static str> = e.attributes.iter().map(|a| a.name).collect();
    let hint = match nearest(attr, names.iter().copied()) {
        Some(n) => format!("did you mean {n}=?"),
        None => {
            let listed: Vec<String> = names.iter().map(|n| format!("{n}=")).collect();
            if listed.is_empty() {
                format!("<{}> takes no attributes", name(e))
            } else {
                format!("<{}> takes {}", name(e), listing(&listed))
            }
        }
    };
    format!("unknown attribute {attr}= on <{}>: {hint}", name(e))
}

/// Escapes text for roff: backslashes, and a leading dot or quote.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// sersync2.xml(5), in roff: the format, every element and attribute from [`ELEMENTS`].
pub fn man_page(version: &str) -> String {
    let mut p = String::new();
    p.push_str(&format!(
        ".TH SERSYNC2.XML 5 \"\" \"sersync2 {}\" \"File Formats\"\n",
        roff(version)
    ));
    p.push_str(".SH NAME\nsersync2.xml \\- the sersync2 configuration file (confxml.xml)\n");
    p.push_str(".SH SYNOPSIS\n/etc/sersync/\\fINAME\\fR.xml\n");
    p.push_str(
        ".SH DESCRIPTION\nOne XML file per \\fBsersync2\\fR(1) instance: \\fBsersync2 \\-o \
         \\fIFILE\\fR. The format is sersync 2.5's confxml.xml: element and attribute names \
         match case\\-insensitively, an ISO\\-8859\\-1 declaration is honoured, text between \
         elements is ignored, and switches are written start=\"true\".\n.PP\nA name not \
         listed below is an error with its line and the nearest known name, at \\fB\\-t\\fR \
         and at start (a typo such as <remotee> would otherwise silently drop a remote). \
         What sersync 2.5.4's own configs hold is accepted; what this program does not use \
         is marked \\fI(ignored)\\fR, and what sersync 2.5 does not know is marked \
         \\fI(sersync2)\\fR.\n.PP\n\\fBsersync2 \\-t \\-o \\fIFILE\\fR checks a file \
         without starting.\n",
    );
    p.push_str(".SH ELEMENTS\n");
    for e in ELEMENTS {
        let mark = match e.usage {
            Use::Compat => "",
            Use::Added => " \\fI(sersync2)\\fR",
            Use::Ignored => " \\fI(ignored)\\fR",
        };
        p.push_str(&format!(".SS <{}>{mark}\n", roff(e.path)));
        p.push_str(&format!("{}\n", roff(e.what)));
        for at in e.attributes {
            let mark = match at.usage {
                Use::Compat => "",
                Use::Added => " \\fI(sersync2)\\fR",
                Use::Ignored => " \\fI(ignored)\\fR",
            };
            p.push_str(&format!(
                ".TP\n\\fB{}\\fR={mark}\n{}\n",
                roff(at.name),
                roff(at.what)
            ));
        }
    }
    p.push_str(
        ".SH EXAMPLE\nThe package installs /etc/sersync/example.xml; sersync 2.5.4's \
         confxml.xml loads as it is.\n.SH FILES\n.TP\n/etc/sersync/\\fINAME\\fR.xml\nThe \
         config of instance \\fINAME\\fR (systemctl enable \\-\\-now sersync2@\\fINAME\\fR).\n\
         .SH \"SEE ALSO\"\n\\fBsersync2\\fR(1), \\fBrsync\\fR(1), \\fBrsyncd.conf\\fR(5)\n",
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('/').map(str::to_ascii_lowercase).collect()
    }

    #[test]
    fn every_parent_is_listed_before_its_children_and_names_are_unique() {
        for (i, e) in ELEMENTS.iter().enumerate() {
            if let Some((parent, _)) = e.path.rsplit_once('/') {
                assert!(
                    ELEMENTS[..i].iter().any(|p| p.path == parent),
                    "{} comes before its parent",
                    e.path
                );
            }
            assert!(
                !ELEMENTS[..i]
                    .iter()
                    .any(|p| p.path.eq_ignore_ascii_case(e.path)),
                "{} twice",
                e.path
            );
            for (j, at) in e.attributes.iter().enumerate() {
                assert!(!e.attributes[..j]
                    .iter()
                    .any(|b| b.name.eq_ignore_ascii_case(at.name)));
            }
        }
    }

    #[test]
    fn a_typo_names_the_nearest_known_name() {
        let m = unknown_element(&path("head/sersync/localpath"), "remotee");
        assert!(m.contains("did you mean <remote>?"), "{m}");
        let m = unknown_element(&path("head/sersync"), "localpth");
        assert!(m.contains("did you mean <localpath>?"), "{m}");
        let m = unknown_element(&path("head/sersync/rsync"), "userdefineport");
        assert!(m.contains("did you mean <userDefinedPort>?"), "{m}");
        let m = unknown_attribute(&path("head/sersync/localpath/remote"), "nmae");
        assert!(m.contains("did you mean name=?"), "{m}");
        // Nothing near: what the element takes.
        let m = unknown_attribute(&path("head/sersync/localpath/remote"), "frobnicate");
        assert!(m.contains("<remote> takes one of ip=, name=, ssh="), "{m}");
        let m = unknown_element(&path("head/sersync/localpath"), "frobnicate");
        assert!(m.contains("<localpath> holds only <remote>"), "{m}");
        // The right name at the wrong level.
        let m = unknown_element(&path("head"), "remote");
        assert!(
            m.contains("<remote> belongs in <head/sersync/localpath>"),
            "{m}"
        );
    }

    #[test]
    fn nearest_takes_only_names_near_enough() {
        assert_eq!(nearest("remotee", ["remote", "rsync"]), Some("remote"));
        assert_eq!(nearest("xyz", ["remote", "rsync"]), None);
        assert_eq!(nearest("timeout", ["time"]), Some("time"));
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("nmae", "NAME"), 1);
    }

    // The list and the serde mirror in raw.rs agree on attributes: one the list has and
    // serde does not read would be accepted and silently do nothing, the very loss an
    // unknown name is refused for; one serde reads and the list lacks could never be set.
    #[test]
    fn every_listed_attribute_is_read_and_every_read_attribute_is_listed() {
        let raw = include_str!("raw.rs");
        let read: std::collections::BTreeSet<String> = raw
            .split("rename = \"@")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|name| !name.starts_with('_'))
            .map(str::to_owned)
            .collect();
        let names = |ignored: bool| -> std::collections::BTreeSet<String> {
            ELEMENTS
                .iter()
                .flat_map(|e| e.attributes.iter())
                .filter(|a| ignored || a.usage != Use::Ignored)
                .map(|a| a.name.to_ascii_lowercase())
                .collect()
        };
        let used = names(false);
        assert!(
            used.is_subset(&read),
            "listed, not read: {:?}",
            used.difference(&read)
        );
        let all = names(true);
        assert!(
            read.is_subset(&all),
            "read, not listed: {:?}",
            read.difference(&all)
        );
    }

    // docs/config.md is the operator's reference: every element the parser accepts has
    // a heading of its own there (its path, as this list writes it), and the section
    // under it names each of its attributes. A name added here without its entry there
    // fails this test.
    #[test]
    fn the_config_reference_lists_every_element_and_attribute() {
        let doc = include_str!("../../docs/config.md");
        for e in ELEMENTS {
            let heading = format!("\n### `<{}>`\n", e.path);
            let Some(start) = doc.find(&heading) else {
                panic!("docs/config.md has no heading ### `<{}>`", e.path);
            };
            let rest = &doc[start + heading.len()..];
            let section = &rest[..rest.find("\n#").unwrap_or(rest.len())];
            for at in e.attributes {
                assert!(
                    section.contains(&format!("| `{}=` |", at.name)),
                    "docs/config.md: the section of <{}> has no row for {}=",
                    e.path,
                    at.name
                );
            }
        }
    }

    #[test]
    fn the_man_page_lists_every_element_and_attribute() {
        let page = man_page("1.0");
        for e in ELEMENTS {
            assert!(
                page.contains(&format!(".SS <{}>", roff(e.path))),
                "{}",
                e.path
            );
            for at in e.attributes {
                assert!(page.contains(&format!("\\fB{}\\fR=", roff(at.name))));
            }
        }
        assert!(page.starts_with(".TH SERSYNC2.XML 5"));
    }
}
