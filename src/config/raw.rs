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
    /// Elements this program does not know, with their line: warned about, not fatal.
    pub unknown: Vec<(String, u32)>,
}

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

/// Which children each element may have: anything else is reported as unknown.
fn known_child(parent: &[String], child: &str) -> bool {
    let parent: Vec<&str> = parent.iter().map(String::as_str).collect();
    let allowed: &[&str] = match parent.as_slice() {
        [] => &["head"],
        ["head"] => &[
            "host",
            "debug",
            "filesystem",
            "filter",
            "inotify",
            "watcher",
            "sersync",
            "plugin",
        ],
        ["head", "filter"] => &["exclude"],
        ["head", "inotify"] => &[
            "delete",
            "createfolder",
            "createfile",
            "closewrite",
            "movefrom",
            "moveto",
            "attrib",
            "modify",
        ],
        ["head", "sersync"] => &[
            "localpath",
            "rsync",
            "faillog",
            "crontab",
            "plugin",
            "verify",
        ],
        ["head", "sersync", "localpath"] => &["remote"],
        ["head", "sersync", "rsync"] => &[
            "commonparams",
            "auth",
            "userdefinedport",
            "timeout",
            "ssh",
            "batch",
        ],
        ["head", "sersync", "crontab"] => &["crontabfilter"],
        ["head", "sersync", "crontab", "crontabfilter"] => &["exclude"],
        ["head", "plugin"] => &["param", "filter", "localpath"],
        ["head", "plugin", "filter"] => &["include", "exclude"],
        ["head", "plugin", "localpath"] => &["deshost", "cdninfo", "sendurl", "regexurl"],
        _ => &[],
    };
    allowed.contains(&child)
}

fn line_of(text: &str, pos: usize) -> u32 {
    let pos = pos.min(text.len());
    1 + text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u32
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

/// Rewrites one start tag: lower-case names, unescaped values re-escaped, `_line` added.
fn normalise_tag(tag: &BytesStart, line: u32, name: &str) -> Result<BytesStart<'static>, String> {
    let mut out = BytesStart::new(name.to_owned());
    for attr in tag.attributes() {
        let attr = attr.map_err(|e| format!("bad attribute in <{name}>: {e}"))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).to_ascii_lowercase();
        if key == "_line" {
            continue;
        }
        let value = attr
            .unescape_value()
            .map_err(|e| format!("bad value of {key} in <{name}>: {e}"))?;
        out.push_attribute((key.as_str(), value.as_ref()));
    }
    out.push_attribute(("_line", line.to_string().as_str()));
    Ok(out)
}

/// Turns the file's bytes into the normalised text serde reads, noting unknown elements.
fn normalise(file: &str, text: &str) -> Result<(String, Vec<(String, u32)>), ConfigError> {
    let err = |line: u32, message: String| ConfigError {
        file: file.to_owned(),
        line: Some(line),
        message,
    };
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut writer = Writer::new(Vec::new());
    let mut stack: Vec<String> = Vec::new();
    let mut unknown = Vec::new();
    let mut saw_root = false;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| {
            let pos = reader.error_position() as usize;
            err(line_of(text, pos), format!("malformed XML: {e}"))
        })?;
        // The tag itself starts after any whitespace the reader skipped.
        let skipped = text[before..].len() - text[before..].trim_start().len();
        let line = line_of(text, before + skipped);
        let written = match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                let name = String::from_utf8_lossy(tag.name().as_ref()).to_ascii_lowercase();
                if stack.is_empty() {
                    if saw_root {
                        return Err(err(line, format!("second root element <{name}>")));
                    }
                    saw_root = true;
                }
                if !known_child(&stack, &name) {
                    if stack.is_empty() {
                        return Err(err(
                            line,
                            format!("not a sersync config: the root element is <{name}>, expected <head>"),
                        ));
                    }
                    unknown.push((format!("{}/{}", stack.join("/"), name), line));
                }
                let tag_out = normalise_tag(tag, line, &name).map_err(|m| err(line, m))?;
                let is_start = matches!(event, Event::Start(_));
                if is_start {
                    stack.push(name);
                    writer.write_event(Event::Start(tag_out))
                } else {
                    writer.write_event(Event::Empty(tag_out))
                }
            }
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                writer.write_event(Event::End(quick_xml::events::BytesEnd::new(name)))
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
            line: Some(line_of(text, text.len())),
            message: format!("malformed XML: <{open}> is never closed"),
        });
    }
    let out = String::from_utf8(writer.into_inner()).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: None,
        message: format!("internal: normalised text is not UTF-8: {e}"),
    })?;
    Ok((out, unknown))
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
    let (normalised, unknown) = normalise(&name, &text)?;
    let head: Head = quick_xml::de::from_str(&normalised).map_err(|e| ConfigError {
        file: name.clone(),
        line: None,
        message: format!("unexpected structure: {e}"),
    })?;
    Ok(Document {
        head,
        latin1,
        unknown,
    })
}
