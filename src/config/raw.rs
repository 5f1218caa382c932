//! The serde mirror of confxml.xml, exactly as sersync 2.5 users write it.
//!
//! Nothing outside `config` sees these types: `config::Config` is built from them and
//! checked. Before serde sees the document it is normalised in one pass over quick-xml
//! events, because the files found in the wild are not what a strict deserializer
//! accepts: element and attribute names match case-insensitively (as in the original),
//! text between elements (tutorials paste `# comment` after tags) is dropped, a Latin-1
//! declaration is honoured, and every element gets a `_line` attribute so that later
//! errors can say where they are.

use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, Writer};
use serde::Deserialize;

use super::schema;

/// A config problem with the place it was found, shown as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The parsed document plus what the normalising pass learned about it.
#[derive(Debug)]
pub struct Document {
    pub head: Head,
    /// The file declared ISO-8859-1: path attributes map back to the same bytes.
    pub latin1: bool,
}

/// The deepest nesting of elements accepted. A sersync config is at most five deep
/// (`head/plugin/localpath/deshost`); deeper is refused, naming the line, so that a
/// hostile file cannot make the parser's stacks grow without end.
pub const MAX_DEPTH: usize = 64;

/// Most attributes one element may have (a sersync element has at most six): the XML
/// reader checks a tag's attributes for repeats pairwise, so a tag of a hundred thousand
/// took minutes.
pub const MAX_ATTRIBUTES: usize = 64;

/// Most unknown names (elements and attributes) named in the error one by one; the rest
/// are counted.
pub const MAX_UNKNOWN_LISTED: usize = 5;

#[derive(Debug, Default, Deserialize)]
pub struct Switch {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Head {
    /// Read so that the mirror is complete; nothing depends on it.
    #[allow(dead_code)]
    #[serde(rename = "@version")]
    pub version: Option<String>,
    pub host: Option<Host>,
    pub debug: Option<Switch>,
    pub filter: Option<Filter>,
    pub inotify: Option<Inotify>,
    /// `<watcher backend="auto|inotify|fanotify"/>`: unknown to the original, which
    /// ignores it.
    pub watcher: Option<Watcher>,
    pub sersync: Option<Sersync>,
    #[serde(default)]
    pub plugin: Vec<PluginDef>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Watcher {
    #[serde(rename = "@backend")]
    pub backend: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Host {
    #[serde(rename = "@hostip")]
    pub hostip: Option<String>,
    #[serde(rename = "@port")]
    pub port: Option<String>,
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    #[serde(default)]
    pub exclude: Vec<Expression>,
    #[serde(default)]
    pub include: Vec<Expression>,
    /// `<rule>+ /docs/***</rule>`: one rsync filter rule (its text is the `_text` the
    /// normalising pass makes of the element's text).
    #[serde(default)]
    pub rule: Vec<RuleText>,
    /// `<rules file="PATH"/>`: rsync filter rules, one a line, read at that place.
    #[serde(default)]
    pub rules: Vec<RulesFile>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RuleText {
    #[serde(rename = "@_text")]
    pub text: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    /// The element's place among its siblings (`<rule>` and `<rules>` keep their order).
    #[serde(rename = "@_seq")]
    pub seq: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RulesFile {
    #[serde(rename = "@file")]
    pub file: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    #[serde(rename = "@_seq")]
    pub seq: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Expression {
    #[serde(rename = "@expression")]
    pub expression: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Inotify {
    pub delete: Option<Switch>,
    #[serde(rename = "createfolder")]
    pub create_folder: Option<Switch>,
    #[serde(rename = "createfile")]
    pub create_file: Option<Switch>,
    #[serde(rename = "closewrite")]
    pub close_write: Option<Switch>,
    #[serde(rename = "movefrom")]
    pub move_from: Option<Switch>,
    #[serde(rename = "moveto")]
    pub move_to: Option<Switch>,
    pub attrib: Option<Switch>,
    pub modify: Option<Switch>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Sersync {
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    #[serde(default)]
    pub localpath: Vec<LocalPath>,
    pub rsync: Option<Rsync>,
    #[serde(rename = "faillog")]
    pub fail_log: Option<FailLog>,
    pub crontab: Option<Crontab>,
    pub plugin: Option<PluginSwitch>,
    pub verify: Option<Verify>,
    #[serde(rename = "deletebrake")]
    pub delete_brake: Option<DeleteBrake>,
    #[serde(rename = "bigfiles")]
    pub big_files: Option<BigFiles>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LocalPath {
    #[serde(rename = "@watch")]
    pub watch: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    #[serde(default)]
    pub remote: Vec<Remote>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Remote {
    #[serde(rename = "@ip")]
    pub ip: Option<String>,
    #[serde(rename = "@name")]
    pub name: Option<String>,
    /// This program's own per-remote options (sersync 2.5 ignores them); what a remote
    /// does not set comes from `<rsync>`.
    #[serde(rename = "@ssh")]
    pub ssh: Option<String>,
    #[serde(rename = "@port")]
    pub port: Option<String>,
    #[serde(rename = "@user")]
    pub user: Option<String>,
    #[serde(rename = "@passwordfile")]
    pub password_file: Option<String>,
    #[serde(rename = "@params")]
    pub params: Option<String>,
    #[serde(rename = "@timeout")]
    pub timeout: Option<String>,
    #[serde(rename = "@sshcommand")]
    pub ssh_command: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Rsync {
    #[allow(dead_code)]
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    #[serde(rename = "commonparams")]
    pub common_params: Option<CommonParams>,
    pub auth: Option<Auth>,
    #[serde(rename = "userdefinedport")]
    pub user_defined_port: Option<Port>,
    pub timeout: Option<Timeout>,
    pub ssh: Option<Ssh>,
    pub batch: Option<Batch>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CommonParams {
    #[serde(rename = "@params")]
    pub params: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Auth {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@users")]
    pub users: Option<String>,
    #[serde(rename = "@passwordfile")]
    pub password_file: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Port {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@port")]
    pub port: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Timeout {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@time")]
    pub time: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

/// `<ssh start="true" command="ssh -p 2222 -i /root/.ssh/id_sync"/>`: `command` is ours.
#[derive(Debug, Default, Deserialize)]
pub struct Ssh {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@command")]
    pub command: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

/// `<batch size="1000"/>`: ours; how many paths one rsync call may carry.
#[derive(Debug, Default, Deserialize)]
pub struct Batch {
    #[serde(rename = "@size")]
    pub size: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FailLog {
    #[serde(rename = "@path")]
    pub path: Option<String>,
    #[serde(rename = "@timetoexecute")]
    pub time_to_execute: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Crontab {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@schedule")]
    pub schedule: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    #[serde(rename = "crontabfilter")]
    pub crontab_filter: Option<Filter>,
}

/// `<verify start schedule>`: this program's own; sersync 2.5 ignores it.
#[derive(Debug, Default, Deserialize)]
pub struct Verify {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@schedule")]
    pub schedule: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

/// `<deleteBrake start percent count seconds settle>`: this program's own; sersync 2.5 ignores it.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteBrake {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@percent")]
    pub percent: Option<String>,
    #[serde(rename = "@count")]
    pub count: Option<String>,
    #[serde(rename = "@seconds")]
    pub seconds: Option<String>,
    #[serde(rename = "@settle")]
    pub settle: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

/// `<bigFiles start size append inplace>`: this program's own; sersync 2.5 ignores it.
#[derive(Debug, Default, Deserialize)]
pub struct BigFiles {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@size")]
    pub size: Option<String>,
    #[serde(rename = "@append")]
    pub append: Option<String>,
    #[serde(rename = "@inplace")]
    pub inplace: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PluginSwitch {
    #[serde(rename = "@start")]
    pub start: Option<String>,
    #[serde(rename = "@name")]
    pub name: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

/// A `<plugin name=...>` block at the end of `<head>`; kept whole for the plugin stage.
#[derive(Debug, Default, Deserialize)]
pub struct PluginDef {
    #[serde(rename = "@name")]
    pub name: Option<String>,
    #[serde(rename = "@mode")]
    pub mode: Option<String>,
    #[serde(rename = "@timeout")]
    pub timeout: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    pub param: Option<PluginParam>,
    pub filter: Option<Filter>,
    #[serde(default)]
    pub localpath: Vec<PluginLocalPath>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PluginParam {
    #[serde(rename = "@prefix")]
    pub prefix: Option<String>,
    #[serde(rename = "@suffix")]
    pub suffix: Option<String>,
    #[serde(rename = "@ignoreerror")]
    pub ignore_error: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PluginLocalPath {
    #[serde(rename = "@watch")]
    pub watch: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
    #[serde(default)]
    pub deshost: Vec<HostPort>,
    pub cdninfo: Option<CdnInfo>,
    pub sendurl: Option<SendUrl>,
    pub regexurl: Option<RegexUrl>,
}

#[derive(Debug, Default, Deserialize)]
pub struct HostPort {
    #[serde(rename = "@ip")]
    pub ip: Option<String>,
    #[serde(rename = "@port")]
    pub port: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CdnInfo {
    #[serde(rename = "@domainname")]
    pub domain_name: Option<String>,
    #[serde(rename = "@port")]
    pub port: Option<String>,
    #[serde(rename = "@username")]
    pub username: Option<String>,
    #[serde(rename = "@passwd")]
    pub passwd: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SendUrl {
    #[serde(rename = "@base")]
    pub base: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RegexUrl {
    #[serde(rename = "@regex")]
    pub regex: Option<String>,
    #[serde(rename = "@match")]
    pub pattern: Option<String>,
    #[serde(rename = "@_line")]
    pub line: Option<u32>,
}

fn line_of(text: &str, pos: usize) -> u32 {
    Lines::new(text).at(pos)
}

/// Line numbers for positions met in order: each byte is counted once, so the whole
/// file costs time linear in its size (finding each line from the start again made
/// 100,000 elements take minutes).
struct Lines<'a> {
    text: &'a [u8],
    pos: usize,
    line: u32,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines {
            text: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    /// The line of byte `pos`; a position before the last one asked counts again from
    /// the start (only an error position can do that, once).
    fn at(&mut self, pos: usize) -> u32 {
        let pos = pos.min(self.text.len());
        if pos < self.pos {
            self.pos = 0;
            self.line = 1;
        }
        let newlines = self.text[self.pos..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line = self
            .line
            .saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX));
        self.pos = pos;
        self.line
    }
}

/// Reads the declared encoding out of `<?xml ... encoding="X"?>`, if any.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(200)];
    let text = String::from_utf8_lossy(head);
    let decl_end = text.find("?>")?;
    let decl = &text[..decl_end];
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start();
    let quote = rest.chars().next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let value = &rest[1..];
    let end = value.find(quote)?;
    Some(value[..end].to_ascii_lowercase())
}

/// Decodes the file to text: UTF-8, or Latin-1 when declared (one byte, one char).
fn decode(file: &str, bytes: &[u8]) -> Result<(String, bool), ConfigError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let latin1 = matches!(
        declared_encoding(bytes).as_deref(),
        Some("iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" | "l1" | "windows-1252" | "cp1252")
    );
    if latin1 {
        return Ok((bytes.iter().map(|&b| b as char).collect(), true));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok((s.to_owned(), false)),
        Err(e) => {
            let line = line_of(&String::from_utf8_lossy(bytes), e.valid_up_to());
            Err(ConfigError {
                file: file.to_owned(),
                line: Some(line),
                message:
                    "the file is not valid UTF-8; declare encoding=\"ISO-8859-1\" if it is Latin-1"
                        .to_owned(),
            })
        }
    }
}

/// A character no attribute value may hold: NUL (a path, module, host or argv word
/// cannot carry it: the value was cut there or refused only by `--probe`'s rsync call)
/// and the other ASCII control characters (DEL too) but tab, newline and carriage
/// return (which a value written over lines holds).
fn refused_char(c: char) -> bool {
    c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Rewrites one start tag: lower-case names, unescaped values re-escaped, `_line` added.
/// A name given twice (in any case) is refused: which one would count is a guess. An
/// attribute `path` (the element's place) does not take goes into `unknown`.
fn normalise_tag(
    tag: &BytesStart,
    line: u32,
    path: &[String],
    unknown: &mut Vec<String>,
) -> Result<BytesStart<'static>, String> {
    let name = path.last().map(String::as_str).unwrap_or_default();
    let mut out = BytesStart::new(name.to_owned());
    // quick-xml's own duplicate check compares each attribute with every one before it
    // (quadratic in a hostile tag's length); a set does it in linear time.
    let mut seen = std::collections::HashSet::new();
    for attr in tag.attributes().with_checks(false) {
        let attr = attr.map_err(|e| format!("bad attribute in <{name}>: {e}"))?;
        let written = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let key = written.to_ascii_lowercase();
        if !seen.insert(key.clone()) {
            return Err(format!("bad attribute in <{name}>: {key}= is given twice"));
        }
        if seen.len() > MAX_ATTRIBUTES {
            return Err(format!(
                "<{name}> has more than {MAX_ATTRIBUTES} attributes: not a sersync config"
            ));
        }
        if !schema::known_attribute(path, &key) {
            unknown.push(schema::unknown_attribute(path, &written));
            continue;
        }
        let value = attr
            .unescape_value()
            .map_err(|e| format!("bad value of {key} in <{name}>: {e}"))?;
        if let Some(c) = value.chars().find(|&c| refused_char(c)) {
            return Err(format!(
                "{key}= of <{name}> holds the control character U+{:04X} (written raw or as \
                 &#{};): no path, module name, host, command or rsync argument can carry it; \
                 remove it from the value",
                c as u32, c as u32
            ));
        }
        out.push_attribute((key.as_str(), value.as_ref()));
    }
    out.push_attribute(("_line", line.to_string().as_str()));
    Ok(out)
}

/// Turns the file's bytes into the normalised text serde reads. A name [`schema`] does
/// not list (an element, or an attribute of a known element) is an error, after the
/// whole file was read as XML: the first one gives the line, and the message names up
/// to [`MAX_UNKNOWN_LISTED`] and counts the rest. Of an unknown element only it is
/// reported, not what it holds. Time and memory are linear in the file's size: nesting
/// stops at [`MAX_DEPTH`], lines are counted as the reader goes.
fn normalise(file: &str, text: &str) -> Result<String, ConfigError> {
    let err = |line: u32, message: String| ConfigError {
        file: file.to_owned(),
        line: Some(line),
        message,
    };
    let mut lines = Lines::new(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut writer = Writer::new(Vec::new());
    let mut stack: Vec<String> = Vec::new();
    // The depth of the stack below the unknown element being skipped, while in one.
    let mut skipping: Option<usize> = None;
    // (line, message) of the first unknown names, and how many there were in all.
    let mut unknown: Vec<(u32, String)> = Vec::new();
    let mut unknown_count = 0usize;
    let mut tag_unknown: Vec<String> = Vec::new();
    let mut saw_root = false;
    // `<rule>`'s start tag, held back until its text is read (written as `_text`).
    let mut rule: Option<(BytesStart<'static>, String)> = None;
    // Elements met so far: `<rule>` and `<rules>` carry their place as `_seq`.
    let mut seq = 0u32;
    loop {
        let before = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let pos = reader.error_position() as usize;
                return Err(err(lines.at(pos), format!("malformed XML: {e}")));
            }
        };
        // The tag itself starts after any whitespace the reader skipped.
        let rest = text.get(before..).unwrap_or("");
        let skipped = rest.len() - rest.trim_start().len();
        let line = lines.at(before + skipped);
        let written = match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                let name = String::from_utf8_lossy(tag.name().as_ref()).to_ascii_lowercase();
                let is_start = matches!(event, Event::Start(_));
                if stack.is_empty() {
                    if saw_root {
                        return Err(err(line, format!("second root element <{name}>")));
                    }
                    saw_root = true;
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(err(
                        line,
                        format!(
                            "<{name}> is nested more than {MAX_DEPTH} elements deep: not a \
                             sersync config"
                        ),
                    ));
                }
                if skipping.is_none() && !schema::known_child(&stack, &name) {
                    if stack.is_empty() {
                        return Err(err(
                            line,
                            format!("not a sersync config: the root element is <{name}>, expected <head>"),
                        ));
                    }
                    unknown_count += 1;
                    if unknown.len() < MAX_UNKNOWN_LISTED {
                        unknown.push((line, schema::unknown_element(&stack, &name)));
                    }
                    if is_start {
                        skipping = Some(stack.len());
                        stack.push(name);
                    }
                    continue;
                }
                if skipping.is_some() {
                    if is_start {
                        stack.push(name);
                    }
                    continue;
                }
                stack.push(name);
                let mut tag_out =
                    normalise_tag(tag, line, &stack, &mut tag_unknown).map_err(|m| err(line, m))?;
                seq = seq.saturating_add(1);
                let in_filter = stack.len() == 3 && stack[..2] == ["head", "filter"];
                if in_filter && matches!(stack[2].as_str(), "rule" | "rules") {
                    tag_out.push_attribute(("_seq", seq.to_string().as_str()));
                }
                for m in tag_unknown.drain(..) {
                    unknown_count += 1;
                    if unknown.len() < MAX_UNKNOWN_LISTED {
                        unknown.push((line, m));
                    }
                }
                if in_filter && is_start && stack[2] == "rule" {
                    rule = Some((tag_out, String::new()));
                    continue;
                }
                if is_start {
                    writer.write_event(Event::Start(tag_out))
                } else {
                    stack.pop();
                    writer.write_event(Event::Empty(tag_out))
                }
            }
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                if let Some(depth) = skipping {
                    if stack.len() == depth {
                        skipping = None;
                    }
                    continue;
                }
                match rule.take() {
                    Some((mut tag, text)) if name == "rule" => {
                        tag.push_attribute(("_text", text.as_str()));
                        writer.write_event(Event::Empty(tag))
                    }
                    _ => writer.write_event(Event::End(quick_xml::events::BytesEnd::new(name))),
                }
            }
            // A `<rule>`'s text: its rsync filter rule.
            Event::Text(ref t) if rule.is_some() => {
                let text = t
                    .unescape()
                    .map_err(|e| err(line, format!("bad text in <rule>: {e}")))?;
                if let Some((_, r)) = rule.as_mut() {
                    r.push_str(&text);
                }
                Ok(())
            }
            Event::CData(ref t) if rule.is_some() => {
                if let Some((_, r)) = rule.as_mut() {
                    r.push_str(&String::from_utf8_lossy(t));
                }
                Ok(())
            }
            Event::Eof => break,
            // Text between elements, comments, declarations: nothing the config reads.
            _ => Ok(()),
        };
        written.map_err(|e| err(line, format!("cannot normalise: {e}")))?;
    }
    if !saw_root {
        return Err(ConfigError {
            file: file.to_owned(),
            line: None,
            message: "empty config: no <head> element".to_owned(),
        });
    }
    if let Some(open) = stack.last() {
        return Err(ConfigError {
            file: file.to_owned(),
            line: Some(lines.at(text.len())),
            message: format!("malformed XML: <{open}> is never closed"),
        });
    }
    if let Some((line, first)) = unknown.first() {
        let mut message = first.clone();
        for (l, m) in &unknown[1..] {
            message.push_str(&format!("; line {l}: {m}"));
        }
        let more = unknown_count - unknown.len();
        if more > 0 {
            message.push_str(&format!("; and {more} more unknown names"));
        }
        return Err(err(*line, message));
    }
    String::from_utf8(writer.into_inner()).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: None,
        message: format!("internal: normalised text is not UTF-8: {e}"),
    })
}

/// Parses a config file's bytes into the raw mirror.
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Document, ConfigError> {
    let name = file.display().to_string();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError {
            file: name,
            line: None,
            message: "empty config file".to_owned(),
        });
    }
    let (text, latin1) = decode(&name, bytes)?;
    let normalised = normalise(&name, &text)?;
    let head: Head = quick_xml::de::from_str(&normalised).map_err(|e| {
        let e = e.to_string();
        match duplicate(&text, &e) {
            Some((line, message)) => ConfigError {
                file: name.clone(),
                line: Some(line),
                message,
            },
            None => ConfigError {
                file: name.clone(),
                line: None,
                message: format!("unexpected structure: {e}"),
            },
        }
    })?;
    Ok(Document { head, latin1 })
}

/// The parser's "duplicate field `x`" (an element the config holds once, written
/// twice) said with the element's name as written and the lines of both: the line of
/// the second, and the message.
fn duplicate(text: &str, error: &str) -> Option<(u32, String)> {
    let name = error.split("duplicate field `").nth(1)?.split('`').next()?;
    let lower = text.to_ascii_lowercase();
    let mut lines = Lines::new(text);
    let mut found: Vec<(u32, &str)> = Vec::new();
    let mut from = 0;
    while let Some(i) = lower[from..].find('<').map(|i| from + i) {
        if lower[i..].starts_with("<!--") {
            from = lower[i..].find("-->").map_or(lower.len(), |j| i + j + 3);
            continue;
        }
        let after = i + 1 + name.len();
        if lower.get(i + 1..after) == Some(name)
            && (lower[after..]
                .starts_with(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>'))
        {
            found.push((lines.at(i), &text[i + 1..after]));
        }
        from = i + 1;
    }
    let (first, second) = (found.first()?, found.get(1)?);
    Some((
        second.0,
        format!(
            "<{}> is written twice (also at line {}): the config holds one; remove one of them",
            second.1, first.0
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(text: &str, pos: usize) -> u32 {
        let pos = pos.min(text.len());
        1 + text.as_bytes()[..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u32
    }

    proptest! {
        // Counted as the reader goes, or again after a step back: the same line as
        // counting from the start each time.
        #[test]
        fn lines_counted_as_the_reader_goes_match_counting_from_the_start(
            text in "[a\n]{0,300}",
            mut positions in proptest::collection::vec(0usize..320, 0..40),
            back in 0usize..320,
        ) {
            positions.sort_unstable();
            let mut lines = Lines::new(&text);
            for &p in &positions {
                prop_assert_eq!(lines.at(p), naive(&text, p));
            }
            prop_assert_eq!(lines.at(back), naive(&text, back));
        }
    }

    #[test]
    fn an_element_written_twice_is_named_with_both_lines() {
        let text = "<head version=\"2.5\">\n<sersync>\n<!-- <failLog path=\"/x\"/> -->\n\
                    <failLog path=\"/a\"/>\n<deleteBrake count=\"10\"/>\n\
                    <DeleteBrake count=\"20\"/>\n</sersync>\n</head>\n";
        let e = match parse(Path::new("c.xml"), text.as_bytes()) {
            Ok(_) => panic!("a second <deleteBrake> is refused"),
            Err(e) => e,
        };
        assert_eq!(e.line, Some(6), "{e:?}");
        assert!(
            e.message
                .contains("<DeleteBrake> is written twice (also at line 5)"),
            "{e:?}"
        );
        assert!(
            duplicate(text, "duplicate field `faillog`").is_none(),
            "one outside comments"
        );
    }
}
