//! Log set-up: timestamped, levelled records to stderr or to a log file that logrotate
//! can move (reopened on SIGHUP); once detached (`-d`) without a log file, to syslog
//! (facility daemon, `sersync2[PID]`; `SERSYNC2_SYSLOG_SOCKET` names another socket
//! than /dev/log).
//!
//! `--log-format json` writes one JSON object per line instead: `time` (RFC 3339, UTC,
//! milliseconds), `level`, `message`, and the record's key-values (`remote`, `paths`,
//! `rsync_exit`, `root`, ...) as fields; to syslog, the message part is that object.
//!
//! SIGHUP never kills the process: it is handled from the moment logging is set up, in
//! every mode (live mode also reloads its config on it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::daemon::{LogFile, LogWriter};
use crate::cli::LogFormat;
use crate::sys::syslog::{self, Severity, Syslog};

/// The environment variable naming the syslog socket (tests; default /dev/log).
pub const SYSLOG_SOCKET_ENV: &str = "SERSYNC2_SYSLOG_SOCKET";

/// Records are JSON objects (`--log-format json`).
static JSON: AtomicBool = AtomicBool::new(false);

/// Set once the process has detached with stderr as its log target.
static SYSLOG: OnceLock<Syslog> = OnceLock::new();
/// Whether records go to stderr (no log file): those move to syslog when detached.
static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// env_logger's filter and format, or syslog once detached.
struct Logger {
    inner: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.inner.matches(record) {
            return;
        }
        match SYSLOG.get() {
            Some(s) if JSON.load(Ordering::Relaxed) => {
                s.send(severity(record.level()), &json_line(record))
            }
            Some(s) => s.send(severity(record.level()), &record.args().to_string()),
            None => self.inner.log(record),
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

fn severity(level: log::Level) -> Severity {
    match level {
        log::Level::Error => Severity::Err,
        log::Level::Warn => Severity::Warning,
        log::Level::Info => Severity::Info,
        log::Level::Debug | log::Level::Trace => Severity::Debug,
    }
}

/// One record as one JSON object (no newline): time, level, message, then its
/// key-values; a key-value never replaces the first three.
pub fn json_line(record: &log::Record) -> String {
    let mut obj = serde_json::Map::new();
    let time = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    obj.insert("time".into(), time.into());
    obj.insert(
        "level".into(),
        record.level().as_str().to_ascii_lowercase().into(),
    );
    obj.insert("message".into(), record.args().to_string().into());
    let mut fields = Fields(&mut obj);
    let _ = record.key_values().visit(&mut fields);
    serde_json::Value::Object(obj).to_string()
}

/// Collects a record's key-values into the JSON object.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let key = key.as_str();
        if matches!(key, "time" | "level" | "message") {
            return Ok(());
        }
        let v: serde_json::Value = if let Some(b) = value.to_bool() {
            b.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(f) = value.to_f64() {
            serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
        } else {
            value.to_string().into()
        };
        self.0.insert(key.to_owned(), v);
        Ok(())
    }
}

/// Sets up the logger; with a log file, SIGHUP reopens it by name.
pub fn init(log_file: Option<&Path>, format: LogFormat) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_millis().format_target(false);
    if format == LogFormat::Json {
        JSON.store(true, Ordering::Relaxed);
        builder.format(|buf, record| writeln!(buf, "{}", json_line(record)));
    }
    // Without a log file SIGHUP only has to leave the process alive (live mode adds the
    // reload); the flag is read by nobody.
    let mut reopen = Arc::new(AtomicBool::new(false));
    if let Some(path) = log_file {
        let (file, flag) = LogFile::open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(LogWriter(Arc::new(
            file,
        )))));
        // SIGHUP: logrotate moved the file; the next record opens it again by name.
        reopen = flag;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen)
        .context("cannot handle SIGHUP")?;
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
        TO_STDERR.store(log_file.is_none(), Ordering::Relaxed);
    }
    Ok(())
}

/// Called in the detached child: records meant for stderr (now /dev/null) go to syslog.
pub fn detached() {
    if !TO_STDERR.load(Ordering::Relaxed) {
        return;
    }
    let path = std::env::var_os(SYSLOG_SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(syslog::DEFAULT_SOCKET), PathBuf::from);
    let _ = SYSLOG.set(Syslog::new(&path, "sersync2", syslog::LOG_DAEMON));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_object_with_its_fields() {
        let args = format_args!("push failed");
        let kvs: [(&str, log::kv::Value); 4] = [
            ("remote", log::kv::Value::from("10.0.0.2::mod")),
            ("paths", log::kv::Value::from(3usize)),
            ("rsync_exit", log::kv::Value::from(-1i32)),
            ("message", log::kv::Value::from("not this")),
        ];
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Error)
            .key_values(&kvs)
            .build();
        let line = json_line(&record);
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["level"], "error");
        assert_eq!(v["message"], "push failed");
        assert_eq!(v["remote"], "10.0.0.2::mod");
        assert_eq!(v["paths"], 3);
        assert_eq!(v["rsync_exit"], -1);
        let time = v["time"].as_str().expect("time");
        // 2026-01-02T03:04:05.678Z
        assert_eq!(time.len(), 24, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
    }
}
